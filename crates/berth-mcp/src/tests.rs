//! The tools' schemas, the argument check, the JSON-RPC handling, and the API requests each
//! tool makes (through a recording [`Api`]).

use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::protocol::{handle, tool_result, tools_list, Handled};
use crate::tools::{self, check_call, create_body, turn_settled, ToolError};
use crate::{Api, Method, Request};

const NAMES: [&str; 16] = [
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
    "decide_access_request",
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
    let a = json!({"workspace": "w", "request": "../../tokens", "decision": "approve"});
    assert!(refused("decide_access_request", a)
        .message
        .contains("request"));
    let a = json!({"workspace": "w", "request": format!("ar_{}", "f".repeat(32)),
                   "decision": "approve", "scope": "forever"});
    assert!(refused("decide_access_request", a)
        .message
        .contains("scope"));
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
    let e = ToolError::api(403, "forbidden", "a viewer token cannot create workspaces");
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

/// An [`Api`] that records each request and answers from a script: `(method, path prefix)` →
/// the answer.
#[derive(Default)]
struct Recording {
    seen: Mutex<Vec<Request>>,
    answers: Vec<(Method, &'static str, Result<Value, ToolError>)>,
}

#[async_trait]
impl Api for Recording {
    async fn send(&self, req: Request) -> Result<Value, ToolError> {
        self.seen.lock().unwrap().push(req.clone());
        self.answers
            .iter()
            .find(|(m, p, _)| *m == req.method && req.path.starts_with(p))
            .map(|(_, _, a)| a.clone())
            .unwrap_or(Ok(Value::Null))
    }
}

async fn requests_of(name: &str, args: Value) -> Vec<Request> {
    let api = Recording::default();
    check_call(name, &args).unwrap();
    tools::call(&api, name, &args).await.unwrap();
    api.seen.into_inner().unwrap()
}

fn req(method: Method, path: &str, body: Option<Value>) -> Request {
    Request {
        method,
        path: path.into(),
        body,
    }
}

#[tokio::test]
async fn each_tool_is_one_api_request_with_encoded_references() {
    use Method::{Delete, Get, Post};
    for (name, args, want) in [
        ("list_workspaces", json!({}), req(Get, "/workspaces", None)),
        (
            "list_workspaces",
            json!({"tenant": "acme"}),
            req(Get, "/workspaces?tenant=acme", None),
        ),
        (
            "create_workspace",
            json!({"name": "web", "tenant": "acme", "params": {"repo": "r"}}),
            req(
                Post,
                "/workspaces",
                Some(json!({"name": "web", "tenant": "acme", "params": {"repo": "r"}})),
            ),
        ),
        (
            "start_workspace",
            json!({"workspace": "acme/web"}),
            req(Post, "/workspaces/acme%2Fweb/start", None),
        ),
        (
            "stop_workspace",
            json!({"workspace": "web"}),
            req(Post, "/workspaces/web/stop", None),
        ),
        (
            "remove_workspace",
            json!({"workspace": "acme/web", "confirm": true, "volume": true}),
            req(Delete, "/workspaces/acme%2Fweb?volume=true", None),
        ),
        (
            "task_status",
            json!({"task": "tsk_1"}),
            req(Get, "/tasks/tsk_1", None),
        ),
        (
            "task_events",
            json!({"task": "tsk_1", "after": 4}),
            req(Get, "/tasks/tsk_1/events?after=4&limit=100", None),
        ),
        (
            "task_diff",
            json!({"task": "tsk_1", "stat": true, "turn": 2}),
            req(Get, "/tasks/tsk_1/diff?stat=true&turn=2", None),
        ),
        (
            "cancel_task",
            json!({"task": "tsk_1"}),
            req(Post, "/tasks/tsk_1/cancel", None),
        ),
        ("list_inbox", json!({}), req(Get, "/inbox", None)),
        (
            "decide_approval",
            json!({"task": "tsk_1", "request": "toolu:1", "decision": "deny", "reason": "no",
                   "always_for_task": true}),
            req(
                Post,
                "/tasks/tsk_1/approvals/toolu%3A1",
                Some(json!({"decision": "deny", "reason": "no"})),
            ),
        ),
        (
            "decide_access_request",
            json!({"workspace": "acme/web", "request": format!("ar_{}", "0a".repeat(16)),
                   "decision": "approve", "scope": "once", "ttl_seconds": 600, "reason": "docs"}),
            req(
                Post,
                &format!(
                    "/workspaces/acme%2Fweb/access-requests/ar_{}",
                    "0a".repeat(16)
                ),
                Some(
                    json!({"decision": "approve", "scope": "once", "ttl_seconds": 600,
                            "reason": "docs"}),
                ),
            ),
        ),
        (
            "usage",
            json!({"since": "7d", "by": "model", "workspace": "acme/web"}),
            req(Get, "/usage?since=7d&by=model&workspace=acme%2Fweb", None),
        ),
        (
            "egress_log",
            json!({"workspace": "acme/web", "after": 9, "limit": 5}),
            req(
                Get,
                "/workspaces/acme%2Fweb/egress/log?limit=5&after=9",
                None,
            ),
        ),
    ] {
        assert_eq!(
            requests_of(name, args.clone()).await,
            [want],
            "{name} {args}"
        );
    }
}

#[tokio::test]
async fn run_task_waits_until_the_turn_is_over_and_errors_pass_through() {
    let api = Recording {
        answers: vec![
            (
                Method::Post,
                "/tasks",
                Ok(json!({"id": "tsk_9", "state": "queued"})),
            ),
            (
                Method::Get,
                "/tasks/tsk_9",
                Ok(json!({"id": "tsk_9", "state": "completed", "last_message": "DONE"})),
            ),
        ],
        ..Default::default()
    };
    let args = json!({"workspace": "acme/web", "agent": "claude", "prompt": "hi", "wait": true,
                      "timeout_seconds": 30});
    let r = tools::call(&api, "run_task", &args).await.unwrap();
    assert_eq!(r["task"], "tsk_9");
    assert_eq!(r["state"], "completed");
    assert_eq!(r["last_message"], "DONE");
    assert_eq!(r["timed_out"], false);
    let seen = api.seen.into_inner().unwrap();
    assert_eq!(
        seen[0],
        req(
            Method::Post,
            "/tasks",
            Some(json!({"workspace": "acme/web", "agent": "claude", "prompt": "hi"}))
        )
    );
    assert_eq!(seen[1], req(Method::Get, "/tasks/tsk_9", None));

    let refused = Recording {
        answers: vec![(
            Method::Post,
            "/workspaces",
            Err(ToolError::api(403, "forbidden", "needs the member role")),
        )],
        ..Default::default()
    };
    let e = tools::call(&refused, "create_workspace", &json!({"name": "w"}))
        .await
        .unwrap_err();
    assert_eq!((e.code.as_str(), e.status), ("forbidden", Some(403)));
}
