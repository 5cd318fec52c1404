//! The memory cap holds: a process allocating past it is killed, the workspace records `oom`,
//! and a neighbour workspace is untouched.

use std::time::Duration;

use berth_test_support::{ensure_image, eventually, TestServer};
use serde_json::json;

use crate::bin;

#[tokio::test]
async fn memory_cap_kills_the_hog_and_spares_the_neighbour() {
    ensure_image().await;
    let s = TestServer::start(bin()).await;
    s.create_workspace(json!({"name": "hog", "memory": "128m"}))
        .await;
    s.create_workspace(json!({"name": "neighbour", "memory": "128m"}))
        .await;
    s.exec("neighbour", &["sh", "-c", "echo calm > ~/state"])
        .await;

    let out = s
        .exec(
            "hog",
            &[
                "python3",
                "-c",
                "b = bytearray(1 << 30); print('allocated', len(b))",
            ],
        )
        .await;
    assert_eq!(out["exit_code"], 137, "{out}");
    assert!(!out["stdout"].as_str().unwrap().contains("allocated"));

    let hog = eventually(Duration::from_secs(20), "oom recorded", || async {
        let v = s.get("/api/v1/workspaces/hog").await;
        (v["oom_kills"].as_u64().unwrap_or(0) >= 1).then_some(v)
    })
    .await;
    assert_eq!(hog["last_failure"]["reason"], "oom", "{hog}");
    // The workspace itself (its daemon) survives a killed process.
    assert_eq!(hog["state"], "running");
    assert_eq!(
        s.exec("hog", &["echo", "still-here"]).await["stdout"],
        "still-here\n"
    );

    let n = s.get("/api/v1/workspaces/neighbour").await;
    assert_eq!(n["state"], "running");
    assert_eq!(n["oom_kills"], 0);
    assert!(n.get("last_failure").is_none(), "{n}");
    assert_eq!(
        s.exec("neighbour", &["cat", "/home/agent/state"]).await["stdout"],
        "calm\n"
    );

    let audit = s.get("/api/v1/audit?target=default/hog").await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "workspace.oom"),
        "{audit}"
    );
}
