//! `berth whoami`: the token in use (name, role, tenant, expiry) and the server it was checked
//! with.

use berth_api::WhoAmI;

use crate::client::{Client, Result};
use crate::ctx::Ctx;

pub(crate) async fn run(client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let me: WhoAmI = client.get("/whoami").await?;
    let tenant = me
        .tenant
        .as_deref()
        .map_or_else(|| "all tenants".to_owned(), |t| format!("tenant {t}"));
    let expiry = me.expires_at.as_deref().map_or_else(
        || "does not expire".to_owned(),
        |at| format!("expires {at}"),
    );
    ctx.print(&format!(
        "{} ({}), role {}, {tenant}, {expiry}, at {} (berth {})\n",
        me.token_name,
        me.token_id,
        me.role,
        client.base(),
        me.server_version
    ))?;
    Ok(0)
}
