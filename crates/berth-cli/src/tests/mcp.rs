//! `berth mcp`, the stdio transport: line splitting, CLI errors as tool errors, and a whole
//! session on (fake) stdin against a fake server that refuses a create with 403. The tools
//! themselves are tested in the `berth-mcp` crate.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{authorized, err, run_full, TOKEN};
use crate::client::CliError;
use crate::commands::mcp::{take_lines, tool_error};

#[test]
fn cli_errors_become_tool_errors_with_code_message_and_status() {
    let e = tool_error(CliError::Api {
        status: 403,
        code: "forbidden".into(),
        message: "a viewer token cannot create workspaces".into(),
    });
    assert_eq!(
        (e.code.as_str(), e.status),
        ("forbidden", Some(403)),
        "{e:?}"
    );
    let e = tool_error(CliError::Unreachable {
        url: "http://127.0.0.1:1".into(),
        cause: "connection refused".into(),
    });
    assert_eq!((e.code.as_str(), e.status), ("unreachable", None));
    let e = tool_error(CliError::Api {
        status: 502,
        code: String::new(),
        message: "bad gateway".into(),
    });
    assert_eq!(e.code, "http_error");
}

#[test]
fn lines_are_split_at_newlines_only() {
    let mut buf = b"{\"a\":1}\n{\"b\":\n".to_vec();
    let mut more = b"2}\n{\"c\"".to_vec();
    assert_eq!(
        take_lines(&mut buf),
        vec![b"{\"a\":1}".to_vec(), b"{\"b\":".to_vec()]
    );
    buf.append(&mut more);
    assert_eq!(take_lines(&mut buf), vec![b"2}".to_vec()]);
    assert_eq!(buf, b"{\"c\"".to_vec());
}

/// What the fake server received: method, path and body of each request.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

async fn fake(State(seen): State<Seen>, h: HeaderMap, body: Option<Json<Value>>) -> Response {
    if !authorized(&h) {
        return err(StatusCode::UNAUTHORIZED, "unauthorized", "no");
    }
    let body = body.map(|b| b.0).unwrap_or(Value::Null);
    let created = body.is_object();
    seen.lock().unwrap().push(("workspaces".into(), body));
    if created {
        return err(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a viewer token cannot do that",
        );
    }
    Json(json!([{"name": "web", "tenant": "acme"}])).into_response()
}

#[tokio::test]
async fn a_whole_session_on_stdin() {
    let seen = Seen::default();
    let app = Router::new()
        .route("/api/v1/workspaces", get(fake).post(fake))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let stdin = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        "not json",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_workspaces","arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"create_workspace","arguments":{"name":"web"}}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"create_workspace","arguments":{}}}"#,
    ]
    .join("\n");
    let o = run_full(
        &["mcp", "--url", &url, "--token", TOKEN],
        stdin.as_bytes(),
        None,
        Arc::default(),
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(
        !o.err.contains(TOKEN),
        "the token is never printed: {}",
        o.err
    );
    let replies: Vec<Value> = o
        .out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_id = |id: Value| replies.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(replies.len(), 5, "{}", o.out);
    assert_eq!(by_id(json!(1))["result"]["serverInfo"]["name"], "berth");
    assert_eq!(by_id(Value::Null)["error"]["code"], -32700);
    let list = by_id(json!(2))["result"].clone();
    assert_eq!(list["isError"], false);
    assert!(list["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("\"web\""));
    let denied = by_id(json!(3))["result"].clone();
    assert_eq!(denied["isError"], true);
    assert!(denied["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("\"forbidden\""));
    assert_eq!(by_id(json!(4))["result"]["isError"], true);
    // The refused call never reached the server; the others did, with the body given.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].1, json!({"name": "web"}));
}
