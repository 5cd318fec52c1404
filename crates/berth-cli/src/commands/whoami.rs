//! `berth whoami`: the token in use, its role, and the server it was checked with.

use berth_api::WhoAmI;

use crate::client::{Client, Result};
use crate::ctx::Ctx;

pub(crate) async fn run(client: &Client, ctx: &mut Ctx<'_>) -> Result<i32> {
    let me: WhoAmI = client.get("/whoami").await?;
    ctx.print(&format!(
        "{} ({}), role {}, at {} (berth {})\n",
        me.token_name,
        me.token_id,
        me.role,
        client.base(),
        me.server_version
    ))?;
    Ok(0)
}
