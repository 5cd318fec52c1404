//! A template's `[[mcp]]` servers become the workspace's `mcp_servers` (which every agent's
//! driver writes into its CLI's configuration: suite::mcp); a server the request names itself
//! wins over the template's of the same name.

use berth_test_support::{ensure_image, TestServer};
use serde_json::json;

use crate::bin;

#[tokio::test]
async fn template_mcp_servers_join_the_workspace() {
    ensure_image().await;
    let s = TestServer::start(bin()).await;
    let source = "description = \"with tools\"\n\n[[mcp]]\nname = \"notes\"\ntype = \"stdio\"\ncommand = \"node\"\nargs = [\"/opt/notes.js\"]\n\n[[mcp]]\nname = \"docs\"\ntype = \"http\"\nurl = \"https://docs.example.invalid/mcp\"\n";
    let (st, v) = s
        .call(
            "PUT",
            "/api/v1/templates/default/tools",
            Some(json!({ "source": source })),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let w = s
        .create_workspace(json!({
            "name": "tooled", "template": "tools",
            "mcp_servers": [{"name": "docs", "type": "http", "url": "https://mine.example.invalid/mcp"}]
        }))
        .await;
    let servers = w["mcp_servers"].as_array().expect("mcp_servers").clone();
    let by = |n: &str| servers.iter().find(|m| m["name"] == n).cloned();
    let notes = by("notes").unwrap_or_else(|| panic!("the template's server is missing: {w}"));
    assert_eq!(notes["command"], "node", "{notes}");
    assert_eq!(notes["args"], json!(["/opt/notes.js"]), "{notes}");
    let docs = by("docs").unwrap();
    assert_eq!(
        docs["url"], "https://mine.example.invalid/mcp",
        "the request's own wins: {docs}"
    );
    assert_eq!(servers.len(), 2, "{servers:?}");
}
