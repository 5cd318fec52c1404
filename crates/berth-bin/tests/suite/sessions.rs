//! Persistent terminal sessions: they outlive clients and a SIGKILL of the server, keep their
//! scrollback, and serve several clients at once.

use std::time::Duration;

use berth_test_support::{ensure_image, read_until, send_input, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::bin;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn session_survives_detach_and_server_kill9_with_scrollback() {
    ensure_image().await;
    let mut s = TestServer::start(bin()).await;
    s.create_workspace(json!({"name": "term", "tenant": "acme", "memory": "256m"}))
        .await;
    let (st, sess) = s
        .call(
            "POST",
            "/api/v1/workspaces/acme%2Fterm/sessions",
            Some(json!({"name": "build"})),
        )
        .await;
    assert_eq!(st, 201, "{sess}");
    assert_eq!(sess["name"], "build");
    assert_eq!(sess["state"], "running");

    let mut ws = s
        .ws("/api/v1/workspaces/acme%2Fterm/sessions/build/attach?cols=100&rows=30")
        .await;
    send_input(&mut ws, "echo first-$((6*7))\n").await;
    read_until(&mut ws, "first-42", T).await;
    // Something that keeps producing output while nobody is attached.
    send_input(
        &mut ws,
        "for i in 1 2 3; do echo tick-$i; sleep 0.3; done; echo loop-$((1+1))-done\n",
    )
    .await;
    // Seeing the loop start proves the input reached the shell before the server dies.
    read_until(&mut ws, "tick-1", T).await;
    ws.close(None).await.unwrap();

    s.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.restart().await;

    let list = s.get("/api/v1/workspaces/acme%2Fterm/sessions").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "build");
    assert_eq!(list[0]["state"], "running");
    assert_eq!(list[0]["attached"], 0);

    // Attach again: the replay holds everything, including what ran while detached.
    let mut ws = s
        .ws("/api/v1/workspaces/acme%2Fterm/sessions/build/attach")
        .await;
    let replay = read_until(&mut ws, "loop-2-done", T).await;
    assert_eq!(
        replay.matches("first-42").count(),
        1,
        "output replayed exactly once: {replay:?}"
    );
    for i in 1..=3 {
        assert!(replay.contains(&format!("tick-{i}")), "{replay:?}");
    }
    // And the shell is alive.
    send_input(&mut ws, "echo after-$((2*50))\n").await;
    read_until(&mut ws, "after-100", T).await;
    ws.close(None).await.unwrap();

    // Browsers cannot set headers on WebSockets: the token may come as a subprotocol instead.
    {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}/api/v1/workspaces/acme%2Fterm/sessions/build/attach",
            s.url.replacen("http://", "ws://", 1)
        );
        let mut req = url.clone().into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            format!("berth.bearer, {}", s.token).parse().unwrap(),
        );
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], "berth.bearer");
        read_until(&mut ws, "after-100", T).await;
        ws.close(None).await.unwrap();
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "sec-websocket-protocol",
            "berth.bearer, wrong-token-wrong".parse().unwrap(),
        );
        assert!(tokio_tungstenite::connect_async(req).await.is_err());
    }

    // Capture without attaching.
    let resp = s
        .http()
        .get(format!(
            "{}/api/v1/workspaces/acme%2Fterm/sessions/build/scrollback",
            s.url
        ))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = String::from_utf8_lossy(&resp.bytes().await.unwrap()).into_owned();
    assert!(
        text.contains("first-42") && text.contains("after-100"),
        "{text:?}"
    );
}

#[tokio::test]
async fn several_clients_resize_exit_and_errors() {
    ensure_image().await;
    let s = TestServer::start(bin()).await;
    s.create_workspace(json!({"name": "multi", "memory": "256m"}))
        .await;
    let base = "/api/v1/workspaces/multi/sessions";
    let (st, first) = s.call("POST", base, Some(json!({}))).await;
    assert_eq!((st, first["name"].as_str()), (201, Some("main")), "{first}");
    // Names are unique.
    let (st, v) = s.call("POST", base, Some(json!({"name": "main"}))).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    let (st, v) = s.call("POST", base, Some(json!({"cols": 0}))).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );

    let mut a = s.ws(&format!("{base}/main/attach")).await;
    let mut b = s.ws(&format!("{base}/main/attach")).await;
    send_input(&mut a, "echo both-$((3*3))\n").await;
    read_until(&mut a, "both-9", T).await;
    read_until(&mut b, "both-9", T).await;
    let listed = s.get(&format!("{base}/main")).await;
    assert_eq!(listed["attached"], 2);

    // Resize follows the (last) client.
    let resize = json!({"type": "resize", "cols": 132, "rows": 43}).to_string();
    b.send(Message::Text(resize)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_input(&mut b, "echo size=$(stty size)\n").await;
    read_until(&mut b, "size=43 132", T).await;

    // A session whose command ends reports its exit code to attached clients.
    let (st, job) = s
        .call(
            "POST",
            base,
            Some(json!({"name": "job", "cmd": ["sh", "-c", "read x; echo got-$x; exit 3"]})),
        )
        .await;
    assert_eq!(st, 201, "{job}");
    let mut j = s.ws(&format!("{base}/job/attach")).await;
    send_input(&mut j, "ping\n").await;
    let mut exit = None;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, async {
        while let Some(Ok(m)) = j.next().await {
            match m {
                Message::Binary(b) => out.extend_from_slice(&b),
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] == "exit" {
                        exit = v["code"].as_i64();
                        break;
                    }
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(String::from_utf8_lossy(&out).contains("got-ping"));
    assert_eq!(exit, Some(3));
    let job = s.get(&format!("{base}/job")).await;
    assert_eq!(
        (job["state"].as_str(), job["exit_code"].as_i64()),
        (Some("exited"), Some(3))
    );

    // Removing forgets it; unknown sessions are 404.
    let (st, _) = s.call("DELETE", &format!("{base}/job"), None).await;
    assert_eq!(st, 204);
    let (st, v) = s.call("GET", &format!("{base}/job"), None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let resp = s
        .http()
        .get(format!("{}{base}/nope/attach", s.url))
        .bearer_auth(&s.token)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}
