//! Wire types of berth's REST API, version 1 (`/api/v1`).
//!
//! The server serializes these, the CLI deserializes them; both sides share this crate so they
//! cannot drift. Every type has an OpenAPI schema (served at `/api/v1/openapi.json`).
//!
//! Conventions: JSON objects carry `id`; workspaces carry `state`; timestamps are
//! [`berth_domain::Timestamp`]s, RFC 3339 UTC strings with milliseconds (in the schema
//! `#[schema(value_type = String, format = DateTime)]` on each field keeps them inline strings);
//! errors are `{"error":{"code":"…","message":"…"}}` with a stable `code`.

use std::collections::BTreeMap;

use berth_domain::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod mcp;
mod notify;
mod sso;
mod templates;
pub use mcp::{mcp_servers_to_domain, McpServer, McpServerType};
pub use notify::{
    CreateSubscription, CreatedSubscription, DeliveriesQuery, Delivery, DeliveryAttempt,
    NotificationBudget, NotificationEvent, NotificationStreamQuery, NotificationTask, PushKeys,
    Subscription, TestResult, WebPushInfo, MAX_NOTIFY_URL, NOTIFY_CHANNELS, NOTIFY_KINDS,
};
pub use sso::{AuthConfig, SessionInfo, User};
pub use templates::{
    ProvisionStatus, ProvisionStep, Reprovision, SetTemplate, TemplateParam, TemplateQuery,
    TemplateRevisionQuery, WorkspaceTemplate,
};

/// Path prefix of the API.
pub const API_PREFIX: &str = "/api/v1";

/// A `limit` query parameter's range: every list route takes `1..=max` and refuses anything
/// else with 400 `invalid_argument` (the OpenAPI document gives the same bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit {
    /// Used when `limit` is absent.
    pub default: i64,
    pub max: i64,
}

impl PageLimit {
    /// The limit to apply, or why `limit` is refused.
    pub fn check(self, limit: Option<i64>) -> Result<i64, String> {
        match limit {
            None => Ok(self.default),
            Some(n) if (1..=self.max).contains(&n) => Ok(n),
            Some(n) => Err(format!(
                "limit {n} is out of range: it must be between 1 and {}",
                self.max
            )),
        }
    }
}

/// `GET /api/v1/audit?limit=`.
pub const AUDIT_LIMIT: PageLimit = PageLimit {
    default: 100,
    max: 1000,
};
/// `GET /api/v1/usage/calls?limit=`.
pub const CALLS_LIMIT: PageLimit = PageLimit {
    default: 100,
    max: 1000,
};
/// `GET /api/v1/workspaces/{ws}/egress/log?limit=`.
pub const EGRESS_LOG_LIMIT: PageLimit = PageLimit {
    default: 1000,
    max: 10_000,
};
/// `GET /api/v1/tasks/{task}/events?limit=`.
pub const EVENTS_LIMIT: PageLimit = PageLimit {
    default: 10_000,
    max: 10_000,
};

/// The error body of every non-2xx response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_argument`, `engine_unavailable`.
    pub code: String,
    /// One human-readable sentence.
    pub message: String,
}

/// `POST /api/v1/workspaces`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// Workspace name, unique within its tenant: lowercase letters, digits, inner dashes.
    pub name: String,
    /// Tenant (client) the workspace belongs to; created on first use. Default `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Memory cap, e.g. `512m`, `2g`. Default from the server config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPU cap as a decimal string, e.g. `1` or `0.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// Maximum number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Image to run; default is berth's base image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Engine network mode: `none` (no network; the only way out is berth's egress proxy) or
    /// `bridge` (the engine's unfiltered network: bypasses egress rules and secrets placeholders;
    /// only an `admin` token may ask for it, others get 403 `forbidden`). Default from the server
    /// config (`none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Initial egress rules, e.g. `["allow registry.npmjs.org", "allow *.github.com:443"]`.
    /// Default: none (all egress denied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<String>>,
    /// Egress templates to attach, in evaluation order: the tenant's own or built-ins
    /// (`npm`, `pypi`, `crates`, `github`, `debian`). An unknown name fails the create (404)
    /// before anything is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_templates: Option<Vec<String>>,
    /// Secrets of the tenant this workspace may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<UseSecret>>,
    /// The approval policy its tasks get unless they ask for another: `never` (default),
    /// `on-request` or `always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(never|on-request|always)$")]
    pub approval: Option<String>,
    /// MCP servers every agent of the workspace can use (at most 32, unique names); a malformed
    /// one fails the create with 422 `invalid_mcp_server` naming the server and the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Vec<McpServer>>,
    /// A workspace template of the tenant to provision from (its newest revision): its
    /// resources, image, secrets, egress and environment apply where this request gives none
    /// (secrets, egress rules and templates are added to the request's), then its repositories
    /// are cloned and its setup steps run (`GET /workspaces/{ws}/provision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z]([a-z0-9-]*[a-z0-9])?$")]
    pub template: Option<String>,
    /// The template's parameters (`{{name}}` in the template). A missing required one is 422
    /// `param_missing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<BTreeMap<String, String>>,
}

/// `PATCH /api/v1/workspaces/{ws}`: change a workspace after creation. Every field is
/// optional; what is left out stays as it is. The answer says what changed and what applies
/// only at the workspace's next start ([`WorkspaceUpdate`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkspace {
    /// Memory cap, e.g. `512m`, `2g` (live where the engine allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPU cap as a decimal string, e.g. `1` or `0.5` (live where the engine allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// Maximum number of processes (live where the engine allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// Secret bindings to add, or to replace (same name), shaped as at create. A placeholder
    /// binding is swapped by the egress proxy at once; `env` and `file` deliveries enter the
    /// workspace at its next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<UseSecret>>,
    /// Names of secret bindings to remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_secrets: Option<Vec<String>>,
    /// The egress templates to attach, in evaluation order: the full list (templates missing
    /// from it are detached; `[]` detaches all). Applies at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_templates: Option<Vec<String>>,
    /// The approval policy new tasks get unless they ask for another: `never`, `on-request`
    /// or `always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(never|on-request|always)$")]
    pub approval: Option<String>,
    /// The MCP servers every agent of the workspace can use: the full list (from the next
    /// turn on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Vec<McpServer>>,
}

/// The answer to `PATCH /api/v1/workspaces/{ws}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceUpdate {
    /// The workspace as stored now.
    pub workspace: Workspace,
    /// The fields whose value changed (`memory`, `cpus`, `pids`, `secrets`,
    /// `egress_templates`, `approval`, `mcp_servers`); empty when nothing did.
    pub changed: Vec<String>,
    /// Of those, the ones that take effect only at the workspace's next start (a stopped
    /// workspace, an engine that cannot change limits live, `env`/`file` secret deliveries).
    pub pending_restart: Vec<String>,
    /// Why the limits could not be applied live, when they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_error: Option<String>,
    /// The placeholders of newly bound `placeholder` secrets: the proxy swaps them from now
    /// on, and they enter the workspace's environment (as the secret's name) at its next start.
    #[serde(default)]
    pub placeholders: BTreeMap<String, String>,
}

/// A tenant secret a workspace uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UseSecret {
    /// The secret's name; also the environment variable the workspace sees.
    pub name: String,
    /// `placeholder` (default: the workspace holds a placeholder, berth's egress proxy swaps the
    /// real value into requests to `hosts` only), `env` or `file` (the real value enters the
    /// workspace: marked exposed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// Hosts the real value is sent to (placeholder delivery), e.g. `["github.com", "api.github.com"]`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Request headers the real value may be swapped into (placeholder delivery), e.g.
    /// `["x-api-key"]`; empty or absent: `Authorization` only. Swapping happens only inside
    /// TLS that berth's proxy opens to a bound host, never in plain HTTP, bodies or URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    pub memory_bytes: i64,
    /// CPUs as a decimal number.
    pub cpus: f64,
    pub pids: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Failure {
    /// `oom`, `exited`, `vanished`, `daemon_unreachable` or `start_failed`.
    pub reason: String,
    pub message: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

/// Live resource usage of a running workspace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub cpu_percent: f64,
    pub pids: u64,
}

/// What the server knows of the daemon inside a running workspace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DaemonStatus {
    /// Whether the daemon answered just now.
    pub reachable: bool,
    /// Protocol version the daemon speaks (when reachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// True when the daemon is older than this server; restart the workspace to upgrade it.
    pub outdated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub tenant: String,
    /// `creating`, `starting`, `running`, `stopping`, `stopped`, `removing` or `failed`.
    pub state: String,
    pub image: String,
    pub limits: Limits,
    pub network: String,
    /// Engine volume mounted at /home/agent.
    pub volume: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// Why the workspace failed, or the last thing that went wrong inside it (e.g. an OOM kill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    /// Processes the kernel killed for exceeding the memory cap since the workspace was created.
    pub oom_kills: u64,
    /// Present in `GET /workspaces/{ws}` for running workspaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonStatus>,
    /// The MCP servers its agents use, as declared (`env`/`headers` values as given).
    #[serde(default)]
    pub mcp_servers: Vec<McpServer>,
}

/// `DELETE /api/v1/workspaces/{ws}?volume=true` removes the home volume too.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct RemoveWorkspaceQuery {
    #[serde(default)]
    pub volume: bool,
}

/// `GET /api/v1/workspaces/{ws}/backup` options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BackupQuery {
    /// Pause (freeze) a running workspace for the copy, so the archive is one point in time.
    /// Default: copy live (files changing during the copy may be caught mid-write).
    #[serde(default)]
    pub pause: bool,
}

/// `POST /api/v1/backups/restore` options: where the restored workspace goes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RestoreQuery {
    /// New workspace name (or `tenant/name`); default: the name in the archive.
    #[serde(default)]
    pub name: Option<String>,
    /// Tenant; default: the tenant in the archive.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// The first entry of a backup archive (`berth-backup.json`): what the workspace was.
/// Secrets appear by name and delivery only, never their values.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupManifest {
    /// Archive format version (1).
    pub format: u32,
    /// berth version that wrote the archive.
    pub berth_version: String,
    /// When the copy started (RFC 3339 UTC).
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// `tenant/name` of the workspace backed up.
    pub workspace: String,
    /// The workspace's image reference.
    pub image: String,
    /// Whether the workspace was paused for the copy (a point-in-time copy).
    pub paused: bool,
    /// The workspace as a create request: limits, network, egress rules and templates,
    /// secret bindings (names only).
    pub spec: CreateWorkspace,
}

/// The last entry of a backup archive (`berth-backup-end.json`); an archive without it is
/// truncated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupTrailer {
    /// Entries of the home volume in the archive.
    pub entries: u64,
    /// Bytes of file contents in the archive (uncompressed).
    pub bytes: u64,
    /// Sockets, FIFOs and device nodes left out.
    pub skipped: u64,
}

/// `POST /api/v1/workspaces/{ws}/exec`: run a command to completion and return its output.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// argv; the first element is looked up in PATH.
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Text fed to the command's stdin (UTF-8); stdin is empty otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    pub exit_code: i32,
    /// stdout, lossily decoded as UTF-8, truncated at 4 MiB.
    pub stdout: String,
    pub stderr: String,
    /// True when stdout or stderr was truncated.
    pub truncated: bool,
}

/// First (text) message a client sends on the exec WebSocket
/// `GET /api/v1/workspaces/{ws}/exec/ws`. After it, binary messages from the client are stdin
/// bytes and the text message `{"type":"eof"}` closes stdin. The server sends binary messages
/// whose first byte is the stream (1 = stdout, 2 = stderr) followed by the data, and finally the
/// text message `{"type":"exit","code":N}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecStart {
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// Stream tags on the exec WebSocket's binary messages.
pub const EXEC_STDOUT: u8 = 1;
pub const EXEC_STDERR: u8 = 2;

/// Control messages (text frames) on the exec and attach WebSockets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WsControl {
    /// Client → server: the terminal size changed.
    Resize { cols: u16, rows: u16 },
    /// Client → server: close stdin (exec only).
    Eof,
    /// Server → client: the process ended with this exit code.
    Exit { code: i32 },
    /// Server → client: something went wrong; the socket closes after this.
    Error { code: String, message: String },
}

/// `POST /api/v1/workspaces/{ws}/sessions`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Unique among the workspace's sessions; default `main`, then `shell-2`, `shell-3`, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Command to run; default is a login shell. Not with `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Runs this agent's interactive TUI instead of a command: `claude`, `codex`, `gemini` or
    /// `opencode`, configured like a task (the gateway with a per-session virtual key, no real
    /// key in the workspace, first-run dialogs answered, autonomous mode). Not with `cmd` or
    /// `env`; `cwd` is the agent's directory (`~/…` allowed, default `~`); the name defaults to
    /// the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The model of an agent session (default: the agent's, as for tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// A persistent terminal session inside a workspace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub command: Vec<String>,
    /// `running`, `exited`, or `ended`: its processes died when the workspace restarted (a host
    /// reboot, a stop and a start); no exit code is known. Ended sessions stay listed until
    /// removed (`DELETE`), or until a new session takes the name.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Clients attached right now.
    pub attached: u32,
    pub cols: u16,
    pub rows: u16,
    pub scrollback_bytes: u64,
    /// The agent of an agent session (in the answer that created it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// berth's id of an agent session (`as_…`): its gateway calls are counted under it
    /// (`GET /api/v1/usage?session=…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session: Option<String>,
    /// The task an agent session took over (`POST /api/v1/tasks/{task}/attach`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// `POST /api/v1/tasks/{task}/attach`: take over a task interactively.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachTask {
    /// Name of the terminal session; default `task-<task id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
}

/// `GET /api/v1/audit`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// Token id of the caller (or a system actor: `reconciler`, `egress`).
    pub actor: String,
    /// The token's name, role and tenant when it acted (absent for system actors and rows
    /// written before berth recorded them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_tenant: Option<String>,
    /// The tenant of the target (absent for server-wide targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// e.g. `workspace.create`.
    pub action: String,
    /// e.g. `acme/web`.
    pub target: String,
    /// `ok`, or the error code.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Maximum entries, newest first (default 100, max 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Only entries whose target is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One check of `GET /api/v1/doctor` (and `berth doctor`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// One-line fix when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DoctorReport {
    pub ok: bool,
    pub checks: Vec<Check>,
}

/// `GET /api/v1/image`: the workspace base image this server uses.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageStatus {
    /// Content-addressed tag, e.g. `localhost/berth-workspace:3f2a…`.
    pub tag: String,
    pub present: bool,
}

/// `POST /api/v1/image/build`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildImage {
    /// Rebuild even when the tag exists.
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/v1/image/prune`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneImages {
    /// Only say what would be removed.
    #[serde(default)]
    pub dry_run: bool,
}

/// What `POST /api/v1/image/prune` removed and kept of the derived images berth built for
/// templates' `[image]` extras (`localhost/berth-derived:…`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ImagePrune {
    /// Removed (with `dry_run`: would be removed).
    pub removed: Vec<PrunedImage>,
    /// Kept, with why.
    pub kept: Vec<KeptImage>,
    /// The removed images' size in bytes (shared layers may free less).
    pub freed_bytes: u64,
    pub dry_run: bool,
}

/// A derived image `POST /api/v1/image/prune` removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PrunedImage {
    pub tag: String,
    pub size_bytes: u64,
}

/// A derived image `POST /api/v1/image/prune` kept.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeptImage {
    pub tag: String,
    pub size_bytes: u64,
    /// `tenant/name` of each workspace on it (any state: a stopped one starts on it again).
    pub workspaces: Vec<String>,
    /// Why it stays: `used by workspaces`, `being built`, or `used by a container`.
    pub reason: String,
}

/// One line of the newline-delimited JSON stream answered by `POST /api/v1/image/build`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BuildEvent {
    /// Progress: `step` is `debootstrap`, `import` or `build`.
    Progress {
        step: String,
        line: String,
    },
    Done {
        tag: String,
        skipped: bool,
        seconds: f64,
    },
    Error {
        code: String,
        message: String,
    },
}

/// `GET /api/v1/whoami`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub token_id: String,
    pub token_name: String,
    /// `admin`, `owner`, `member` or `viewer`.
    pub role: String,
    /// The token's tenant; absent for admin tokens (server-wide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// When the token stops working; absent when it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    pub server_version: String,
}

/// `GET /api/v1/tokens`: a token as stored (never the token itself).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    /// `admin`, `owner`, `member` or `viewer`.
    pub role: String,
    /// Absent for admin tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    /// Updated at most once a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
    /// For a remembered device's token: the id of the token it was derived from (revoking that
    /// one revokes this one too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_of: Option<String>,
}

/// `POST /api/v1/tokens`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Who or what the token is for, e.g. `alice`.
    pub name: String,
    /// `admin` (admins only, no tenant), `owner`, `member` or `viewer`.
    pub role: String,
    /// Required for every role but admin; an owner may only name its own tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Lifetime: `30d`, `12h`, `90m`. Absent: the token does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// The answer to `POST /api/v1/tokens`: the token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The bearer token. berth stores only its hash: it cannot be shown again.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// `GET /api/v1/tenants`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantInfo {
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    pub quota: TenantQuota,
    pub used: QuotaUsage,
}

/// A tenant's quota; an absent field is no limit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantQuota {
    /// Workspaces that may exist at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workspaces: Option<u32>,
    /// Memory of the running workspaces together, e.g. `8g`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPUs of the running workspaces together, e.g. `4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// Tasks at work (queued, starting, running, waiting) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks: Option<u32>,
}

/// What a tenant holds, as its quota counts it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct QuotaUsage {
    pub workspaces: u32,
    pub memory: String,
    pub cpus: String,
    pub tasks: u32,
}

/// `GET /api/v1/tenants/{tenant}/quota`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantQuotaReport {
    pub tenant: String,
    pub quota: TenantQuota,
    pub used: QuotaUsage,
}

/// `GET /api/v1/version` (authenticated like every route).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerInfo {
    pub version: String,
    /// Short id of this server; prefixes and labels (`berth.server`) its engine objects.
    #[serde(default)]
    pub server_id: String,
    /// Workspace daemon protocol this server speaks.
    pub daemon_protocol: u32,
    pub engine_endpoint: String,
    pub image: String,
}

/// `POST /api/v1/tasks`: hand a coding agent a prompt in a workspace.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// Workspace reference (`tenant/name`, bare name, or id). It must be running.
    pub workspace: String,
    /// `claude`, `codex`, `gemini` or `opencode`.
    pub agent: String,
    /// The first user message. Must not be empty.
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Working directory inside the workspace (default `/home/agent`); `~` means the home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Run in a new git worktree of the repo in `dir`, on a new branch of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    /// When the agent must ask before acting: `never` (runs unattended), `on-request` (the
    /// agent's own permission requests are surfaced) or `always` (every command, edit and tool
    /// call asks). Default: the workspace's policy (`never` unless set). Only `claude` supports
    /// a policy other than `never` (400 `invalid` for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(never|on-request|always)$")]
    pub approval: Option<String>,
}

/// A task's usage so far: the sum of the LLM calls the gateway recorded for it (its turns and
/// any interactive take-over), the same numbers `GET /api/v1/usage?by=task` gives. Calls are
/// recorded as each one ends, so this grows during a turn.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TaskUsage {
    /// Calls through the gateway.
    #[serde(default)]
    pub calls: u64,
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's cache (part of `input_tokens`).
    pub cached_input_tokens: u64,
    /// Prompt tokens written to the provider's cache (part of `input_tokens`).
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// `cost` as a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The exact cost in USD as a decimal string (e.g. `0.00056`).
    #[serde(default)]
    pub cost: String,
    /// Calls priced at the fallback price because no price table lists their model.
    #[serde(default)]
    pub fallback_calls: u64,
    /// What the agent CLI itself reported (informational, never billed: the agent runs inside
    /// the workspace, and some CLIs report cumulative figures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_reported: Option<AgentReportedUsage>,
}

/// Usage as the agent CLI reported it in its own events.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct AgentReportedUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// An exact amount of nano-USD (10⁻⁹ USD) as a decimal string in USD: at least two decimals,
/// at most nine, no trailing zeros beyond two (`0.00`, `0.00056`, `12.50`, `0.000000001`).
pub fn usd_decimal(nusd: u64) -> String {
    let whole = nusd / 1_000_000_000;
    let frac = format!("{:09}", nusd % 1_000_000_000);
    let keep = frac.trim_end_matches('0').len().max(2);
    format!("{whole}.{}", &frac[..keep])
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub id: String,
    /// `tenant/name` of the workspace.
    pub workspace: String,
    pub workspace_id: String,
    pub agent: String,
    /// `queued`, `starting`, `running`, `waiting`, `completed`, `interrupted`, `failed` or `cancelled`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    /// The first prompt.
    pub prompt: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// Sequence number of the newest stored event.
    pub last_seq: u64,
    pub usage: TaskUsage,
    /// The newest complete assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
    /// Why the task failed, was interrupted or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The agent's own conversation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session_id: Option<String>,
    /// The task's approval policy: `never`, `on-request` or `always`.
    #[serde(default)]
    pub approval: String,
    /// Present (`true`) when the workspace the task ran in (`workspace_id`) was removed: a task
    /// stays with the workspace it ran in, so a workspace created since under the same name does
    /// not list it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workspace_removed: bool,
    /// The task's last push (`berth task push`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<TaskPush>,
    /// The pull (merge) request opened for the task (`berth task pr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<TaskPullRequest>,
}

/// A git remote's name, as `POST /tasks/{task}/push|pr` take it.
pub const REMOTE_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
/// A branch name, as `POST /tasks/{task}/push|pr` take it (git's own rules, e.g. no `..`, are
/// checked too: 422 `git_branch_missing`).
pub const BRANCH_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9_./-]{0,99}$";
/// A secret's name.
pub const SECRET_NAME_PATTERN: &str = "^[A-Z_][A-Z0-9_]{0,63}$";

/// A push of a task's work.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskPush {
    /// The remote's name in the task's repository, e.g. `origin`.
    pub remote: String,
    /// The branch on the remote.
    pub branch: String,
    /// The commit pushed.
    pub commit: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

/// A pull (merge) request opened for a task.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskPullRequest {
    /// `github`, `gitlab` or `azure`.
    pub provider: String,
    /// The pull request's web page.
    pub url: String,
    /// Its number (GitHub, Azure DevOps) or IID (GitLab).
    pub number: u64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

/// `POST /api/v1/tasks/{task}/push`: push the task's branch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushTask {
    /// The remote to push to [default: `origin`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub remote: Option<String>,
    /// The branch to push to on the remote [default: the task's branch].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9_][A-Za-z0-9_./-]{0,99}$")]
    pub branch: Option<String>,
}

/// `POST /api/v1/tasks/{task}/pr`: open a pull (merge) request for the task's pushed branch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePullRequest {
    /// Title [default: the first line of the task's prompt].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub title: Option<String>,
    /// Open it as a draft.
    #[serde(default)]
    pub draft: bool,
    /// The remote whose repository gets the pull request [default: `origin`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub remote: Option<String>,
    /// The branch with the task's work [default: the task's last push, else its branch].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9_][A-Za-z0-9_./-]{0,99}$")]
    pub branch: Option<String>,
    /// The branch to merge into [default: the remote's default branch].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9_][A-Za-z0-9_./-]{0,99}$")]
    pub base: Option<String>,
    /// The secret bound to the workspace to call the provider's API with [default: the one
    /// bound secret whose hosts name the API host].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Z_][A-Z0-9_]{0,63}$")]
    pub secret: Option<String>,
}

/// `POST /api/v1/tasks/{task}/approvals/{req}`: the decision on a pending permission request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    /// `approve` or `deny`.
    #[schema(pattern = "^(approve|deny)$")]
    pub decision: String,
    /// With `approve`: approve every later request of the same tool in this task without asking.
    #[serde(default)]
    pub always_for_task: bool,
    /// Told to the agent with a denial; recorded with either decision (at most 4096 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One permission request of a task's agent (the task is `waiting` while one is pending).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    /// The request's id (the agent's own), unique within the task.
    pub id: String,
    pub task: String,
    /// `tenant/name` of the task's workspace.
    pub workspace: String,
    pub agent: String,
    /// The `seq` of the `approval_request` event.
    pub seq: u64,
    /// `command`, `file_edit`, `tool_call` or `mcp_call`.
    pub kind: String,
    /// The agent's name for the tool, e.g. `Bash`, `Write`.
    pub tool: String,
    /// One line saying what would happen.
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A file edit's change, as `-`/`+` lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// The tool's arguments.
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// Why, when the agent said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_reason: Option<String>,
    /// Hints for the reviewer: `network`, `deletes files`, `privileged`, `git push`,
    /// `writes outside the working directory`.
    pub risks: Vec<String>,
    /// `pending`, `approved`, `denied` or `expired` (the turn ended first).
    pub state: String,
    /// Who decided: the token's name, `always-for-this-task` or `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The decision's reason (what a denied agent was told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub decided_at: Option<Timestamp>,
}

/// `GET /api/v1/inbox`: everything waiting for a person's decision across the caller's tenant's
/// workspaces (every tenant's for an admin).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Inbox {
    /// Agents' pending permission requests, oldest first.
    pub approvals: Vec<Approval>,
    /// Open access requests (egress a workspace was denied or asked for, secrets it asked for),
    /// newest sighting first.
    pub access_requests: Vec<AccessRequest>,
}

/// `GET /api/v1/access-requests`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct AccessRequestsQuery {
    /// Only requests of this workspace (a reference: `tenant/name`, a name or an id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Only requests in this state (`open`, `approved`, `denied`, `expired`); default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(pattern = "^(open|approved|denied|expired)$")]
    pub state: Option<String>,
}

/// `POST /api/v1/workspaces/{ws}/access-requests/{req}`: the decision on an open access request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideAccess {
    /// `approve` or `deny`.
    #[schema(pattern = "^(approve|deny)$")]
    pub decision: String,
    /// With `approve` of an egress request: `once` (default: an allow rule that expires after
    /// `ttl_seconds`), `always` (a rule of the workspace's own) or `template` (a rule added to
    /// the tenant's egress template `template`, for every workspace that attaches it). A secret
    /// request is approved `always` (the secret is bound to the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(once|always|template)$")]
    pub scope: Option<String>,
    /// With scope `once`: how long the rule lasts, in seconds (default 3600, at most 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2592000)]
    pub ttl_seconds: Option<u64>,
    /// With scope `template`: the tenant's egress template the rule goes into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Recorded with the decision (at most 1024 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /api/v1/workspaces/{ws}/access-requests/{req}/comments`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessComment {
    /// The comment (1 to 1024 bytes).
    pub text: String,
}

/// A comment on an access request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccessRequestComment {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// Who wrote it: `name (role)`.
    pub author: String,
    pub text: String,
}

/// Something a workspace was denied or asked for: egress to a host (recorded when the egress
/// proxy's rules deny an attempt, or asked with `berth request egress`), or a secret bound to a
/// host (`berth request secret`). Everything but the decision comes from inside the workspace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccessRequest {
    pub id: String,
    /// `tenant/name` of the workspace.
    pub workspace: String,
    /// `egress` or `secret`.
    pub kind: String,
    /// `denied` (seen by the egress proxy) or `explicit` (asked with `berth request`).
    pub source: String,
    pub host: String,
    /// Egress requests: the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Secret requests: the secret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The last denied attempt's method and path (none for a CONNECT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The rule that denied it; none when no rule allowed it (default deny).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The agent's justification (explicit requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_reason: Option<String>,
    /// Attempts and requests it stands for.
    pub count: u64,
    #[schema(value_type = String, format = DateTime)]
    pub first_seen: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: Timestamp,
    /// `open`, `approved`, `denied` or `expired` (an approval `once` whose rule is gone).
    pub state: String,
    /// Approved: `once`, `always` or `template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The allow rule the approval added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_rule: Option<String>,
    /// Approved once: when the rule goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Timestamp>,
    /// Who decided: `name (role)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub decided_at: Option<Timestamp>,
    /// The decider's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub comments: Vec<AccessRequestComment>,
}

/// `GET /api/v1/tasks/{task}/approvals`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct ApprovalsQuery {
    /// Only the pending requests (default false: all, oldest first).
    #[serde(default)]
    pub pending: Option<bool>,
}

/// `GET /api/v1/tasks`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct TaskQuery {
    /// Only tasks of this workspace (the one that has this name or id now; tasks of a removed
    /// workspace of the same name are not its tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Only tasks in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// `POST /api/v1/tasks/{task}/messages`: the next turn of the same conversation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    pub text: String,
    /// Stop the turn in flight first and start the next turn with this message at once (the
    /// task stays `running`); without a turn in flight, a plain follow-up. Default false: a turn
    /// in flight refuses the message (409).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupt: bool,
}

/// `GET /api/v1/workspaces/{ws}/provision/stream?after=N`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct ProvisionStreamQuery {
    /// Resume after this event id (or send `Last-Event-ID`): a status not newer is not sent
    /// again (default 0: the current status first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
}

/// `GET /api/v1/tasks/{task}/events?after=N` and the SSE stream `…/events/stream?after=N`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Only events with a larger sequence number (default 0: from the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Maximum number of events, 1 to 10000 (non-streaming only; default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// A task event: `{"seq":N,"at":"…","type":"…",…}`; see `berth_domain::EventKind` for the
/// types (`status`, `session`, `user_message`, `message_delta`, `message`, `reasoning`,
/// `tool_call`, `tool_output`, `tool_result`, `file_change`, `usage`, `error`, `turn_completed`,
/// `turn_interrupted`, `log`, `raw`).
pub type TaskEvent = berth_domain::TaskEvent;

/// `GET /api/v1/usage`: LLM usage through the gateway.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct UsageQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Workspace reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// RFC 3339 time, a date (`2026-11-01`), or a duration back from now (`24h`, `7d`, `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only the calls of this agent session (`as_…`, see `Session.agent_session`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// `session`: the same as `by=session` (kept for older clients; `by` wins when both are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// One row per `task`, `workspace`, `tenant`, `model` (provider × model), `day` (UTC) or
    /// `session` (workspace × provider × model × agent session); default: workspace ×
    /// provider × model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Only calls before this time: the same forms as `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Only the calls of this task (its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// Totals of one group (see `UsageQuery.by`); the fields the grouping does not use are empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UsageRow {
    pub tenant: String,
    pub workspace: String,
    /// The agent session of the row (with `by=session`; absent for task turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The task of the row (with `by=task`; empty for calls of an interactive agent session
    /// of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The UTC day of the row (with `by=day`), `2026-12-04`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub calls: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// `cost` as a number (absent when no call of the row has a cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The exact sum of the calls' costs in USD, a decimal string (e.g. `0.00056`).
    #[serde(default)]
    pub cost: String,
    /// Calls priced at the fallback price because no price table lists their model.
    #[serde(default)]
    pub fallback_calls: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// The `since` bound applied, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub since: Option<Timestamp>,
    /// The `until` bound applied, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub until: Option<Timestamp>,
    /// The grouping applied (`by`); absent: workspace × provider × model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub rows: Vec<UsageRow>,
    /// Sum of all rows (tenant/workspace/provider empty).
    pub total: UsageRow,
}

/// A token and/or cost budget of a tenant or a workspace.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Budget {
    /// `tenant` or `workspace`.
    pub scope: String,
    /// Tenant name, or the workspace's `tenant/name`.
    pub target: String,
    /// `day`, `month` or `total`.
    pub period: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    /// Spent in the current period (input + output tokens).
    pub spent_tokens: u64,
    pub spent_cost_usd: f64,
}

/// The largest `max_tokens` of a budget (the store keeps it as a signed 64-bit integer).
pub const MAX_BUDGET_TOKENS: u64 = i64::MAX as u64;

/// `PUT /api/v1/budgets`: set (replace) the budget of one tenant or one workspace.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// `day` (default), `month` or `total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
}

/// `DELETE /api/v1/budgets?tenant=T` or `?workspace=W`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct BudgetTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

/// `GET/PUT /api/v1/workspaces/{ws}/egress/rules`: the workspace's egress policy, first match
/// wins, anything unmatched is denied. Rule syntax: `allow|deny HOST[:PORT] [METHOD] [/PATH-PREFIX]`
/// where HOST is exact, `*.suffix` or `*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressRules {
    pub rules: Vec<String>,
}

/// `POST /api/v1/workspaces/{ws}/egress/rules`: add one rule (at the top by default, so it wins
/// over older ones; `position` is 0-based).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddEgressRule {
    pub rule: String,
    /// 0-based; at most the number of rules (that many appends). Default 0 (the top).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
}

/// One egress attempt.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct EgressLogEntry {
    pub id: i64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `allow` or `deny`.
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub reason: String,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub intercepted: bool,
}

/// `GET /api/v1/workspaces/{ws}/egress/log?after=ID&limit=N` (and `…/egress/log/stream`, SSE).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct EgressLogQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// An egress template: a named, ordered rule list (the syntax of a workspace's rules) that
/// workspaces attach. A workspace's effective policy is its own rules, then each attached
/// template's rules in attach order; first match wins, anything unmatched is denied.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct EgressTemplate {
    pub name: String,
    /// The owning tenant; absent for built-ins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Defined by berth: read-only, usable by every tenant, its name reserved.
    pub builtin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub rules: Vec<String>,
    /// Workspaces (`tenant/name`) that attach it (for a built-in listed without `tenant`: of
    /// every tenant).
    #[serde(default)]
    pub used_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub created_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub updated_at: Option<Timestamp>,
}

/// `POST /api/v1/egress/templates`: create a tenant's template (409 `conflict` when the name
/// is taken in the tenant or by a built-in).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEgressTemplate {
    /// Created on first use.
    pub tenant: String,
    /// Lowercase letters, digits and inner dashes, starting with a letter.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub rules: Vec<String>,
}

/// `PUT /api/v1/egress/templates/{tenant}/{name}`: create or replace a template. The rules are
/// replaced as a whole; the description only when given (`""` clears it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEgressTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub rules: Vec<String>,
}

/// `GET /api/v1/egress/templates?tenant=T`: the built-ins and the templates of one tenant (all
/// tenants' without `tenant`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct EgressTemplateQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// `DELETE /api/v1/egress/templates/{tenant}/{name}?force=true` detaches the template from
/// every workspace first; without `force`, an attached template is refused with 409 `in_use`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct RemoveEgressTemplateQuery {
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/v1/workspaces/{ws}/egress/templates`: attach a template after the others (a
/// template attached already stays where it is).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachEgressTemplate {
    /// A template of the workspace's tenant, or a built-in.
    pub template: String,
}

/// One rule of a workspace's effective egress policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct EffectiveEgressRule {
    /// `workspace` (the workspace's own rule), `template`, or `access` (a grant of an access
    /// request approved once, until it expires).
    pub source: String,
    /// The template the rule comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Position within its source: for own rules, the index `DELETE …/egress/rules/{index}`
    /// takes.
    pub index: usize,
    pub rule: String,
    /// How the egress log's `rule` names it, e.g. `template npm: allow registry.npmjs.org:443`.
    pub label: String,
}

/// `GET /api/v1/workspaces/{ws}/egress/effective`: the whole policy in evaluation order — the
/// workspace's own rules, then each attached template's; first match wins, anything unmatched
/// is denied.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct EffectiveEgress {
    /// Attached templates, in evaluation order.
    pub templates: Vec<String>,
    pub rules: Vec<EffectiveEgressRule>,
}

/// `PUT /api/v1/secrets/{tenant}/{name}`: create or replace a secret's value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    pub value: String,
}

/// Where a secret is used.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SecretUsage {
    pub workspace: String,
    pub delivery: String,
    pub hosts: Vec<String>,
    /// Headers the placeholder is swapped into (placeholder delivery; `["authorization"]`
    /// by default).
    #[serde(default)]
    pub headers: Vec<String>,
    /// True when the real value enters the workspace (`env`/`file` delivery).
    pub exposed: bool,
}

/// A secret's metadata; the value is never returned.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SecretInfo {
    pub tenant: String,
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    pub used_by: Vec<SecretUsage>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct SecretQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// `GET /api/v1/tasks/{task}/diff`: what the task changed in its repository (working tree
/// against `HEAD`, untracked files included).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TaskDiff {
    /// The directory diffed (the task's worktree, or its `dir`).
    pub dir: String,
    /// False when the directory is not inside a git repository (then `diff` is empty).
    pub git: bool,
    /// Unified diff text (with `stat`: git's per-file summary instead).
    pub diff: String,
    pub truncated: bool,
    /// The commit the task started from (absent: no snapshot, or a repository without commits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    /// The turn this diff covers; absent for the whole task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u32>,
    /// The turns with a snapshot, which `turn` may name (empty: the task predates snapshots or
    /// its directory is not in git, and only the whole diff against HEAD is available).
    #[serde(default)]
    pub turns: Vec<u32>,
}

/// `GET /api/v1/tasks/{task}/diff` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// One turn (1-based) instead of the whole task.
    #[param(minimum = 1, maximum = 100000)]
    pub turn: Option<u32>,
    /// git's per-file summary (`--stat`) instead of the diff.
    #[serde(default)]
    pub stat: Option<bool>,
}

/// `GET /api/v1/tasks/{task}/patch` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PatchQuery {
    /// `diff` (default): one `git apply`-able patch of everything the task changed; `mbox`: the
    /// agent's commits since the task's base commit, for `git am`.
    #[param(inline)]
    pub format: Option<PatchFormat>,
}

/// The form of a task's patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatchFormat {
    Diff,
    Mbox,
}

/// One call through the LLM gateway (`GET /api/v1/usage/calls`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct LlmCall {
    pub id: i64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub workspace: String,
    pub tenant: String,
    pub task: String,
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub path: String,
    pub status: u16,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The exact cost in USD, a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    /// Which price applied: `operator` (the operator's price table), `default` (berth's
    /// shipped table) or `fallback` (no table lists the model); absent for a call without
    /// tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priced: Option<String>,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The request and response were recorded (prompt recording on).
    pub recorded: bool,
}

/// `GET /api/v1/usage/calls/{id}`: a call with its recorded request and response, if any.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct LlmCallDetail {
    pub call: LlmCall,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct CallsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Newest first; default 100, max 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_rejects_unknown_fields() {
        let err = serde_json::from_str::<CreateWorkspace>(r#"{"name":"a","memroy":"1g"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `memroy`"), "{err}");
    }

    #[test]
    fn template_bodies_reject_unknown_fields_and_need_rules() {
        let err = serde_json::from_str::<SetEgressTemplate>(r#"{"rules":[],"rule":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `rule`"), "{err}");
        let err = serde_json::from_str::<SetEgressTemplate>(r#"{"description":"d"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `rules`"), "{err}");
        let c: CreateEgressTemplate =
            serde_json::from_str(r#"{"tenant":"acme","name":"ci"}"#).unwrap();
        assert!(c.rules.is_empty());
    }

    #[test]
    fn ws_control_wire_form() {
        let s = serde_json::to_string(&WsControl::Resize { cols: 80, rows: 24 }).unwrap();
        assert_eq!(s, r#"{"type":"resize","cols":80,"rows":24}"#);
        let e: WsControl = serde_json::from_str(r#"{"type":"exit","code":3}"#).unwrap();
        assert_eq!(e, WsControl::Exit { code: 3 });
    }
}
