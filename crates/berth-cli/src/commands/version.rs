//! `berth version`: the client's version (printed first, so it shows even when the server
//! cannot be reached), then the server's.

use berth_api::ServerInfo;

use crate::client::Result;
use crate::ctx::Ctx;
use crate::ConnArgs;

pub(crate) async fn run(conn: &ConnArgs, ctx: &mut Ctx<'_>) -> Result<i32> {
    ctx.print(&format!("client: berth {}\n", env!("CARGO_PKG_VERSION")))?;
    let client = conn.client(ctx)?;
    let info: ServerInfo = client.get("/version").await?;
    ctx.print(&format!(
        "server: berth {} at {} (daemon protocol {}, engine {}, image {})\n",
        info.version,
        client.base(),
        info.daemon_protocol,
        info.engine_endpoint,
        info.image
    ))?;
    Ok(0)
}
