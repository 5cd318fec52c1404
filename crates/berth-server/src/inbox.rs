//! The inbox: everything in the caller's tenant (every tenant for an admin) that waits for a
//! person — agents' pending permission requests ([`crate::approvals`]) and open access requests
//! ([`crate::access_requests`]) — in one answer, for the UI's Inbox page, `berth task inbox` and
//! `berth mcp`'s `list_inbox`.

use berth_api as api;

use crate::auth::Actor;
use crate::error::ApiResult;
use crate::state::AppState;

/// What waits for a decision, as the caller may see it.
pub async fn inbox(state: &AppState, actor: &Actor) -> ApiResult<api::Inbox> {
    let approvals = crate::approvals::pending(state, actor).await?;
    let open = api::AccessRequestsQuery {
        workspace: None,
        state: Some("open".into()),
    };
    let access_requests = crate::access_requests::list(state, actor, &open).await?;
    Ok(api::Inbox {
        approvals,
        access_requests,
    })
}
