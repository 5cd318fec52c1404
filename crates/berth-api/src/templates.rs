//! Wire types of workspace templates (`/templates…`) and of a workspace's provisioning from one
//! (`/workspaces/{ws}/provision`).

use std::collections::BTreeMap;

use berth_domain::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One parameter a template takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TemplateParam {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// A revision of a tenant's workspace template.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceTemplate {
    pub tenant: String,
    pub name: String,
    /// This revision (every `set` stores a new one, counting from 1).
    pub revision: i64,
    /// The newest revision.
    pub latest_revision: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub params: Vec<TemplateParam>,
    /// The default agent, if the template names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Whether provisioning ends by starting an interactive session of `agent`.
    pub auto_session: bool,
    /// The TOML file as stored.
    pub source: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Workspaces (`tenant/name`) provisioned from any revision of it.
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// `PUT /api/v1/templates/{tenant}/{name}`: store a new revision.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTemplate {
    /// The template file (TOML, see docs/templates.md); at most 256 KiB.
    pub source: String,
}

/// `GET /api/v1/templates?tenant=T`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct TemplateQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// `GET /api/v1/templates/{tenant}/{name}?revision=N` (default: the newest).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct TemplateRevisionQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
}

/// One step of a workspace's provisioning.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ProvisionStep {
    pub index: i64,
    /// `image` (build the derived image of the template's extras and move the workspace onto
    /// it), `container` (an upgrade remakes the container), `git`, `clone`, `setup` or `session`.
    pub kind: String,
    pub name: String,
    /// `pending`, `running`, `done`, `failed` or `skipped`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why it failed (or was skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The tail of the step's output (at most 64 KiB).
    pub log: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
}

/// `GET /api/v1/workspaces/{ws}/provision`: what a workspace was made from and how far its
/// provisioning got.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ProvisionStatus {
    /// `tenant/name`.
    pub workspace: String,
    pub template: String,
    pub revision: i64,
    /// The template's newest revision (`None` once the template is removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<i64>,
    pub params: BTreeMap<String, String>,
    /// `pending`, `running`, `done` or `failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub steps: Vec<ProvisionStep>,
    /// The interactive session started at the end (auto_session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// `POST /api/v1/workspaces/{ws}/provision`: resume a failed provisioning (`retry`) or move to
/// the template's newest revision (`upgrade`); exactly one of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reprovision {
    #[serde(default)]
    pub retry: bool,
    #[serde(default)]
    pub upgrade: bool,
}
