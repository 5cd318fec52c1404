//! `berth mcp`: the tools' schemas, the argument check, the JSON-RPC handling, and a whole
//! session on (fake) stdin against a fake server that refuses a create with 403.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{authorized, err, run_full, TOKEN};
use crate::client::CliError;
use crate::commands::mcp::tools::{self, check_call, create_body, turn_settled, ToolError};
use crate::commands::mcp::{handle, take_lines, tool_result, tools_list, Handled};

const NAMES: [&str; 15] = [
    "list_workspaces",
    "create_workspace",
    "start_workspace",
    "stop_workspace",
    "remove_workspace",
    "run_task",
    "task_status",
    "task_events",
    "send_message",
    "task_diff",
    "cancel_task",
    "list_inbox",
    "decide_approval",
    "usage",
    "egress_log",
];

fn schema_of(name: &str) -> Value {
    tools::list()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap()
        .schema
}

fn refused(name: &str, args: Value) -> ToolError {
    check_call(name, &args).expect_err(&format!("{name} {args} was accepted"))
}

#[test]
fn tools_are_listed_with_closed_object_schemas() {
    let list = tools_list();
    let names: Vec<&str> = list["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, NAMES);
    for t in list["tools"].as_array().unwrap() {
        let s = &t["inputSchema"];
        assert_eq!(s["type"], "object", "{t}");
        assert_eq!(s["additionalProperties"], false, "{t}");
        assert!(!t["description"].as_str().unwrap().is_empty());
        for r in s["required"].as_array().unwrap() {
            assert!(s["properties"].get(r.as_str().unwrap()).is_some(), "{t}");
        }
        // Every pattern compiles (the argument check uses them).
        for p in s["properties"].as_object().unwrap().values() {
            if let Some(pat) = p["pattern"].as_str() {
                regex::Regex::new(pat).unwrap();
            }
        }
    }
    let create = schema_of("create_workspace");
    assert_eq!(create["required"], json!(["name"]));
    assert_eq!(
        create["properties"]["name"]["pattern"],
        "^[a-z](-?[a-z0-9])*$"
    );
    let run = schema_of("run_task");
    assert_eq!(run["required"], json!(["workspace", "agent", "prompt"]));
    assert_eq!(
        run["properties"]["agent"]["enum"],
        json!(["claude", "codex", "gemini", "opencode"])
    );
    assert_eq!(run["properties"]["timeout_seconds"]["maximum"], 600);
    assert_eq!(
        schema_of("remove_workspace")["required"],
        json!(["workspace", "confirm"])
    );
    assert_eq!(
        schema_of("decide_approval")["properties"]["decision"]["enum"],
        json!(["approve", "deny"])
    );
    assert_eq!(
        schema_of("task_events")["properties"]["limit"]["maximum"],
        500
    );
}

#[test]
fn arguments_are_checked_against_the_schema() {
    assert!(check_call("create_workspace", &json!({"name": "web"})).is_ok());
    assert!(check_call(
        "create_workspace",
        &json!({"name": "web", "tenant": "acme", "memory": "2g", "cpus": "0.5",
                "template": "node", "params": {"repo": "x"}})
    )
    .is_ok());
    let e = refused("create_workspace", json!({}));
    assert_eq!(e.code, "invalid_arguments");
    assert!(e.message.contains("`name`"), "{}", e.message);
    let e = refused("create_workspace", json!({"name": "Web_1"}));
    assert!(e.message.contains("argument `name`"), "{}", e.message);
    assert!(
        refused("create_workspace", json!({"name": "w", "memory": "lots"}))
            .message
            .contains("memory")
    );
    assert!(refused("create_workspace", json!({"name": "w", "cpus": 2}))
        .message
        .contains("string"));
    assert!(
        refused("create_workspace", json!({"name": "w", "params": {"a": 1}}))
            .message
            .contains("`a`")
    );
    let e = refused("create_workspace", json!({"name": "w", "image": "x"}));
    assert!(
        e.message.contains("unknown argument `image`"),
        "{}",
        e.message
    );
    assert_eq!(
        refused("create_workspace", json!([1])).code,
        "invalid_arguments"
    );

    let run = json!({"workspace": "acme/web", "agent": "claude", "prompt": "hi"});
    assert!(check_call("run_task", &run).is_ok());
    let mut bad = run.clone();
    bad["agent"] = json!("cursor");
    assert!(refused("run_task", bad)
        .message
        .contains("one of claude, codex"));
    let mut bad = run.clone();
    bad["prompt"] = json!("   ");
    assert!(refused("run_task", bad).message.contains("prompt"));
    let mut bad = run.clone();
    bad["timeout_seconds"] = json!(601);
    assert!(refused("run_task", bad)
        .message
        .contains("between 1 and 600"));
    let mut bad = run;
    bad["wait"] = json!("yes");
    assert!(refused("run_task", bad).message.contains("true or false"));
    assert!(refused(
        "run_task",
        json!({"workspace": "a/b/c", "agent": "claude", "prompt": "x"})
    )
    .message
    .contains("workspace"));

    let d = json!({"task": "t1", "request": "r1", "decision": "maybe"});
    assert!(refused("decide_approval", d)
        .message
        .contains("approve, deny"));
    assert!(refused("usage", json!({"by": "hour"}))
        .message
        .contains("by"));
    assert!(check_call("usage", &json!({"since": "7d", "by": "model"})).is_ok());
    assert!(refused("task_events", json!({"task": "t", "limit": 501}))
        .message
        .contains("limit"));
    assert_eq!(refused("nope", json!({})).code, "unknown_tool");
}

#[test]
fn remove_workspace_needs_confirm_true() {
    for args in [
        json!({"workspace": "acme/web"}),
        json!({"workspace": "acme/web", "confirm": false}),
    ] {
        let e = refused("remove_workspace", args);
        assert!(
            ["confirm_required", "invalid_arguments"].contains(&e.code.as_str()),
            "{e:?}"
        );
        assert!(e.message.contains("confirm"), "{e:?}");
    }
    assert_eq!(
        refused(
            "remove_workspace",
            json!({"workspace": "acme/web", "confirm": false})
        )
        .code,
        "confirm_required"
    );
    assert!(check_call(
        "remove_workspace",
        &json!({"workspace": "acme/web", "confirm": true})
    )
    .is_ok());
}

#[test]
fn api_errors_keep_code_message_and_status() {
    let e = ToolError::from(CliError::Api {
        status: 403,
        code: "forbidden".into(),
        message: "a viewer token cannot create workspaces".into(),
    });
    let r = tool_result(Err(e));
    assert_eq!(r["isError"], true);
    let body: Value = serde_json::from_str(r["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(body["error"]["status"], 403);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("viewer"));
    let ok = tool_result(Ok(json!({"a": 1})));
    assert_eq!(ok["isError"], false);
    assert_eq!(ok["content"][0]["type"], "text");
}

#[test]
fn create_body_and_turn_settled() {
    let b = create_body(&json!({"name": "w", "tenant": null, "memory": "1g"}));
    assert_eq!(b, json!({"name": "w", "memory": "1g"}));
    for (state, settled) in [
        ("queued", false),
        ("running", false),
        ("waiting", true),
        ("completed", true),
        ("failed", true),
    ] {
        assert_eq!(turn_settled(&json!({"state": state})), settled, "{state}");
    }
}

#[test]
fn json_rpc_methods() {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let Handled::Reply(r) = handle(&init) else {
        panic!()
    };
    assert_eq!(r["id"], 1);
    assert_eq!(r["result"]["protocolVersion"], "2025-03-26");
    assert_eq!(r["result"]["serverInfo"]["name"], "berth");
    assert!(r["result"]["capabilities"]["tools"].is_object());
    let future = json!({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"protocolVersion": "2099-01-01"}});
    let Handled::Reply(r) = handle(&future) else {
        panic!()
    };
    assert_eq!(r["result"]["protocolVersion"], "2025-06-18");

    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(handle(&note), Handled::Nothing);
    let Handled::Reply(r) = handle(&json!({"jsonrpc": "2.0", "id": "p", "method": "ping"})) else {
        panic!()
    };
    assert_eq!(r, json!({"jsonrpc": "2.0", "id": "p", "result": {}}));
    let Handled::Reply(r) = handle(&json!({"jsonrpc": "2.0", "id": 3, "method": "resources/list"}))
    else {
        panic!()
    };
    assert_eq!(r["error"]["code"], -32601);
    let call = |name: &str, args: Value| {
        handle(
            &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": name, "arguments": args}}),
        )
    };
    let Handled::Reply(r) = call("nope", json!({})) else {
        panic!()
    };
    assert_eq!(r["error"]["code"], -32602);
    let Handled::Reply(r) = call("remove_workspace", json!({"workspace": "w"})) else {
        panic!()
    };
    assert_eq!(r["result"]["isError"], true);
    assert!(r["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("confirm"));
    match call("list_workspaces", json!({})) {
        Handled::Call { id, name, .. } => {
            assert_eq!((id, name.as_str()), (json!(4), "list_workspaces"))
        }
        other => panic!("{other:?}"),
    }
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
