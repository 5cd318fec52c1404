//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    backups, egress, egress_templates, secrets, system, tasks, terminal, usage, workspaces,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "berth API", version = "1", description = "Isolated, persistent workspaces for coding agents."),
    paths(
        system::version, system::whoami, system::doctor, system::audit,
        system::image_status, system::image_build,
        workspaces::list, workspaces::create, workspaces::show, workspaces::remove,
        workspaces::start, workspaces::stop, backups::backup, backups::restore,
        terminal::exec, terminal::exec_ws, terminal::list_sessions, terminal::create_session,
        terminal::get_session, terminal::remove_session, terminal::scrollback, terminal::attach,
        tasks::create, tasks::list, tasks::show, tasks::send, tasks::cancel, tasks::events,
        tasks::stream, tasks::diff,
        usage::usage, usage::calls, usage::call, usage::list_budgets, usage::set_budget, usage::remove_budget,
        egress::rules, egress::set_rules, egress::add_rule, egress::remove_rule, egress::log,
        egress::log_stream, egress::effective,
        egress_templates::list, egress_templates::create, egress_templates::show,
        egress_templates::set, egress_templates::remove, egress_templates::attached,
        egress_templates::attach, egress_templates::detach,
        secrets::set, secrets::list, secrets::remove,
        openapi_json,
    ),
    components(schemas(berth_api::WsControl, berth_api::ExecStart, berth_api::BackupManifest,
        berth_api::BackupTrailer)),
    modifiers(&Bearer),
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system",
    responses((status = 200, description = "OpenAPI 3.1 document")), security(("bearer" = [])))]
pub async fn openapi_json() -> impl IntoResponse {
    axum::Json(ApiDoc::openapi())
}

pub async fn serve() -> impl IntoResponse {
    openapi_json().await
}
