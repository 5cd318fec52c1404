//! Who may call which route. Every API route is registered through [`Api`] together with its
//! [`Access`], so a route cannot exist without one; [`Api`] keeps the table ([`RouteSpec`]) that
//! the OpenAPI document, the tests and the authorization matrix read.
//!
//! The check runs after routing and before the handler (so before a WebSocket upgrade): the
//! tenant of the object the path names (`{ws}`, `{task}`, `{tenant}`, a token's `{id}`, `{call}`) is
//! resolved first, and an object of another tenant is a 404 as if it did not exist; then the
//! role is checked, a lacking one being a 403 naming the role needed. Admins pass both. Lists,
//! request bodies and query filters are narrowed to the caller's tenant by the handlers, and
//! the request runs in the caller's tenant scope ([`crate::lifecycle::with_scope`]), so a
//! workspace reference anywhere in it resolves only within that tenant.

use std::sync::Arc;

use axum::extract::{RawPathParams, Request};
use axum::handler::Handler;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use axum::RequestExt;
use axum::Router;
use berth_domain::Permission;

use crate::auth::Actor;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// What a route asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Admin tokens only (server settings, images, backups, quotas, the doctor).
    Admin,
    /// A tenant's token holding this permission, for objects of its own tenant (or an admin).
    Tenant(Permission),
}

impl Access {
    /// The lowest role that passes, for documentation (`admin`, `owner`, `member`, `viewer`).
    pub fn min_role(self) -> berth_domain::Role {
        match self {
            Self::Admin => berth_domain::Role::Admin,
            Self::Tenant(p) => p.min_role(),
        }
    }
}

/// One registered route: method, path (as in the OpenAPI document, without `/api/v1`) and access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

/// The API router under construction, and the table of what was registered.
pub struct Api {
    router: Router<Arc<AppState>>,
    table: Vec<RouteSpec>,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }
}

impl Api {
    /// Registers `handler` for `method path`, behind the check of `access`.
    pub fn route<H, T>(
        mut self,
        method: &'static str,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        let filter = match method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "PATCH" => MethodFilter::PATCH,
            _ => MethodFilter::DELETE,
        };
        let check =
            axum::middleware::from_fn(move |req: Request, next: Next| authorize(access, req, next));
        let mr = axum::routing::on(filter, handler).route_layer(check);
        self.router = self.router.route(path, mr);
        self.table.push(RouteSpec {
            method,
            path,
            access,
        });
        self
    }

    pub fn get<H: Handler<T, Arc<AppState>>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self {
        self.route("GET", path, access, handler)
    }

    pub fn post<H: Handler<T, Arc<AppState>>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self {
        self.route("POST", path, access, handler)
    }

    pub fn put<H: Handler<T, Arc<AppState>>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self {
        self.route("PUT", path, access, handler)
    }

    pub fn patch<H: Handler<T, Arc<AppState>>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self {
        self.route("PATCH", path, access, handler)
    }

    pub fn delete<H: Handler<T, Arc<AppState>>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self {
        self.route("DELETE", path, access, handler)
    }

    pub fn into_parts(self) -> (Router<Arc<AppState>>, Vec<RouteSpec>) {
        (self.router, self.table)
    }
}

/// The per-route check (see the module docs). The caller and the state were put into the
/// request by `auth::require_token`.
async fn authorize(access: Access, req: Request, next: Next) -> Response {
    let (Some(actor), Some(state)) = (
        req.extensions().get::<Actor>().cloned(),
        req.extensions().get::<Arc<AppState>>().cloned(),
    ) else {
        return ApiError::internal("route reached without authentication").into_response();
    };
    let mut req = req;
    let params = match req.extract_parts::<RawPathParams>().await {
        Ok(p) => p
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<Vec<_>>(),
        Err(e) => return ApiError::invalid(format!("path: {}", e.body_text())).into_response(),
    };
    if let Err(e) = check(&state, &actor, access, &params).await {
        return e.into_response();
    }
    match actor.scope() {
        Some(t) => crate::lifecycle::with_scope(t.to_owned(), next.run(req)).await,
        None => next.run(req).await,
    }
}

/// The decision for one request: the object's tenant first (404), then the role (403).
pub async fn check(
    state: &AppState,
    actor: &Actor,
    access: Access,
    params: &[(String, String)],
) -> ApiResult<()> {
    if actor.is_admin() {
        return Ok(());
    }
    for (name, value) in params {
        if let Some(tenant) = param_tenant(state, actor, name, value).await? {
            actor.check_tenant(&tenant, || describe(name, value))?;
        }
    }
    match access {
        Access::Admin => actor.require_admin(),
        Access::Tenant(p) => actor.require(p),
    }
}

fn describe(param: &str, value: &str) -> String {
    match param {
        "ws" => format!("workspace {value}"),
        "call" => format!("LLM call {value}"),
        "sub" => format!("subscription {value}"),
        other => format!("{other} {value}"),
    }
}

/// The tenant of the object a path parameter names (`None`: the parameter names a part of an
/// object another parameter names, e.g. a session of `{ws}`). A parameter this function does
/// not know is an error, so a new kind of route cannot slip past the check.
async fn param_tenant(
    state: &AppState,
    actor: &Actor,
    name: &str,
    value: &str,
) -> ApiResult<Option<String>> {
    let nf = || ApiError::not_found(format!("{} not found", describe(name, value)));
    match name {
        "ws" => {
            // A bare name is looked up in the caller's tenant only.
            let w = crate::lifecycle::resolve_in(state, value, actor.scope()).await?;
            Ok(Some(w.tenant.to_string()))
        }
        "task" => {
            let t = crate::tasks::find(state, value).await?;
            let w = state
                .store
                .find_workspace_by_id(&t.workspace_id)
                .await?
                .ok_or_else(nf)?;
            Ok(Some(w.tenant.to_string()))
        }
        "tenant" => Ok(Some(value.to_owned())),
        // The only `{id}` route is a token's (`/tokens/{id}`).
        "id" => {
            let id = berth_domain::TokenId::parse(value).ok_or_else(nf)?;
            let t = state.store.token(&id).await?.ok_or_else(nf)?;
            // Admin tokens belong to no tenant: no tenant's caller sees them.
            Ok(Some(t.tenant.map_or_else(String::new, |n| n.to_string())))
        }
        "call" => {
            let n: i64 = value.parse().map_err(|_| nf())?;
            let (_, c, _) = state.store.llm_call(n).await?.ok_or_else(nf)?;
            Ok(Some(c.tenant.to_string()))
        }
        // A person known from single sign-on; server-wide users belong to no tenant.
        "user" => {
            let u = state.store.find_user(value).await?.ok_or_else(nf)?;
            Ok(Some(u.tenant.unwrap_or_default()))
        }
        // A notification subscription: its tenant (its owner is checked by the service).
        "sub" => {
            let s = state
                .store
                .notify_subscription(value)
                .await?
                .ok_or_else(nf)?;
            Ok(Some(s.tenant))
        }
        // A permission request of the `{task}` the path names.
        "session" | "index" | "name" | "req" => Ok(None),
        other => Err(ApiError::internal(format!(
            "route parameter {other:?} has no tenant resolution in routes::access"
        ))),
    }
}
