//! The MCP endpoint's service: sessions (bound to their caller, capped, expiring) and the
//! handling of one POST, with a scripted [`Api`] standing in for the server's router.

use std::sync::Arc;

use async_trait::async_trait;
use berth_domain::{ErrorCode, Role};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::*;
use crate::test_support::route_state;

fn actor(id: &str) -> Actor {
    Actor {
        id: id.into(),
        name: id.into(),
        role: Role::Member,
        tenant: Some(berth_domain::Name::parse("acme").unwrap()),
    }
}

/// Answers every request with the request itself; `hold` makes every call wait forever.
struct Echo {
    hold: bool,
}

#[async_trait]
impl Api for Echo {
    async fn send(&self, req: berth_mcp::Request) -> Result<Value, ToolError> {
        if self.hold {
            std::future::pending::<()>().await;
        }
        Ok(json!({"method": req.method.as_str(), "path": req.path, "body": req.body}))
    }
}

fn echo() -> Arc<dyn Api> {
    Arc::new(Echo { hold: false })
}

fn init() -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
           "params": {"protocolVersion": "2025-03-26", "capabilities": {}}})
    .to_string()
    .into_bytes()
}

async fn answers(ex: Exchange) -> Vec<Value> {
    ex.answers.collect().await
}

fn code(r: ApiResult<Exchange>) -> ErrorCode {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.code,
    }
}

/// Opens a session for `who`; returns its id.
async fn open(state: &AppState, who: &str) -> String {
    let ex = post(state, &actor(who), Headers::default(), &init(), echo()).unwrap();
    let id = ex.session.clone().unwrap();
    let a = answers(ex).await;
    assert_eq!(a[0]["result"]["protocolVersion"], "2025-03-26", "{a:?}");
    assert_eq!(a[0]["result"]["serverInfo"]["name"], "berth");
    id
}

fn with(session: &str) -> Headers<'_> {
    Headers {
        session: Some(session),
        version: Some("2025-03-26"),
    }
}

#[tokio::test]
async fn initialize_opens_a_session_that_only_its_caller_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = route_state(dir.path()).await;
    let id = open(&state, "tok_a").await;
    assert!(id.starts_with("mcp_") && id.len() == 36, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_graphic()));

    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let ex = post(&state, &actor("tok_a"), with(&id), list.as_bytes(), echo()).unwrap();
    assert!(!ex.calls && !ex.batch && ex.session.is_none());
    let a = answers(ex).await;
    assert!(a[0]["result"]["tools"].as_array().unwrap().len() >= 15);

    // Another token naming it: as if it did not exist. No header at all: 400.
    let other = post(&state, &actor("tok_b"), with(&id), list.as_bytes(), echo());
    assert_eq!(code(other), ErrorCode::NotFound);
    let none = post(
        &state,
        &actor("tok_a"),
        Headers::default(),
        list.as_bytes(),
        echo(),
    );
    assert_eq!(code(none), ErrorCode::InvalidArgument);
    let made_up = post(
        &state,
        &actor("tok_a"),
        with("mcp_nope"),
        list.as_bytes(),
        echo(),
    );
    assert_eq!(code(made_up), ErrorCode::NotFound);

    // Ending it: only its caller; then it is gone.
    assert_eq!(
        end(&state, &actor("tok_b"), Some(&id)).unwrap_err().code,
        ErrorCode::NotFound
    );
    end(&state, &actor("tok_a"), Some(&id)).unwrap();
    let gone = post(&state, &actor("tok_a"), with(&id), list.as_bytes(), echo());
    assert_eq!(code(gone), ErrorCode::NotFound);
    assert_eq!(
        end(&state, &actor("tok_a"), None).unwrap_err().code,
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn bodies_that_are_no_json_rpc_and_unknown_versions_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = route_state(dir.path()).await;
    let id = open(&state, "tok_a").await;
    let a = actor("tok_a");
    for body in [&b"not json"[..], b"42", b"\"x\"", b"[]"] {
        let r = post(&state, &a, with(&id), body, echo());
        assert_eq!(code(r), ErrorCode::InvalidArgument, "{body:?}");
    }
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let big = Value::Array(vec![ping.clone(); MAX_BATCH + 1]).to_string();
    assert_eq!(
        code(post(&state, &a, with(&id), big.as_bytes(), echo())),
        ErrorCode::InvalidArgument
    );
    let future = Headers {
        session: Some(&id),
        version: Some("2099-01-01"),
    };
    let r = post(&state, &a, future, ping.to_string().as_bytes(), echo());
    assert_eq!(code(r), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn notifications_alone_get_nothing_and_batches_get_an_array() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = route_state(dir.path()).await;
    let id = open(&state, "tok_a").await;
    let a = actor("tok_a");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let ex = post(&state, &a, with(&id), note.as_bytes(), echo()).unwrap();
    assert_eq!(ex.count, 0);

    let batch = json!([
        {"jsonrpc": "2.0", "id": "p", "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
        {"jsonrpc": "2.0", "id": 9, "method": "initialize", "params": {}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "list_workspaces", "arguments": {"tenant": "acme"}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
         "params": {"name": "remove_workspace", "arguments": {"workspace": "acme/web"}}},
    ])
    .to_string();
    let ex = post(&state, &a, with(&id), batch.as_bytes(), echo()).unwrap();
    assert!(ex.batch && ex.calls);
    assert_eq!(ex.count, 4);
    let all = answers(ex).await;
    let by_id = |id: Value| all.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by_id(json!("p"))["result"], json!({}));
    assert_eq!(by_id(json!(9))["error"]["code"], -32600);
    // The tool call went through the API with the tool's request.
    let listed = by_id(json!(3))["result"].clone();
    assert_eq!(listed["isError"], false, "{listed}");
    let text: Value = serde_json::from_str(listed["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text["path"], "/workspaces?tenant=acme");
    // The confirm rule holds here as on stdio: no request is made.
    let refused = by_id(json!(4))["result"].clone();
    assert_eq!(refused["isError"], true);
    assert!(refused["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("confirm"));
}

#[tokio::test]
async fn tool_calls_in_flight_are_capped_per_session() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = route_state(dir.path()).await;
    let id = open(&state, "tok_a").await;
    let a = actor("tok_a");
    let call = |n: usize| {
        json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
               "params": {"name": "list_inbox", "arguments": {}}})
    };
    let held: Arc<dyn Api> = Arc::new(Echo { hold: true });
    // Eight calls held in flight (their exchanges kept alive, not polled to the end).
    let mut in_flight = Vec::new();
    for n in 0..MAX_CALLS_PER_SESSION {
        let ex = post(
            &state,
            &a,
            with(&id),
            call(n).to_string().as_bytes(),
            held.clone(),
        );
        let mut ex = ex.unwrap();
        let poll = tokio::time::timeout(Duration::from_millis(20), ex.answers.next()).await;
        assert!(poll.is_err(), "a held call answered");
        in_flight.push(ex);
    }
    let ex = post(
        &state,
        &a,
        with(&id),
        call(99).to_string().as_bytes(),
        echo(),
    )
    .unwrap();
    let r = answers(ex).await;
    assert_eq!(r[0]["error"]["code"], -32000, "{r:?}");
    // A busy session is not replaced when its caller opens more than its share.
    for _ in 0..MAX_SESSIONS_PER_CALLER - 1 {
        open(&state, "tok_a").await;
    }
    let extra = open(&state, "tok_a").await;
    assert!(post(
        &state,
        &a,
        with(&id),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
        echo()
    )
    .is_ok());
    assert!(post(
        &state,
        &a,
        with(&extra),
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
        echo()
    )
    .is_ok());
    // Dropping the exchanges (a client gone) frees the permits.
    drop(in_flight);
    let ex = post(
        &state,
        &a,
        with(&id),
        call(100).to_string().as_bytes(),
        echo(),
    )
    .unwrap();
    let r = answers(ex).await;
    assert_eq!(r[0]["result"]["isError"], false, "{r:?}");
}

#[tokio::test]
async fn sessions_are_capped_per_caller_and_in_all_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = route_state(dir.path()).await;
    let ping = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}";
    // A caller's 17th session replaces its least recently used one.
    let first = open(&state, "tok_a").await;
    let mut rest = Vec::new();
    for _ in 1..MAX_SESSIONS_PER_CALLER {
        rest.push(open(&state, "tok_a").await);
    }
    post(&state, &actor("tok_a"), with(&first), ping, echo()).unwrap(); // now the newest use
    open(&state, "tok_a").await;
    assert_eq!(state.web.mcp.len(), MAX_SESSIONS_PER_CALLER);
    assert!(post(&state, &actor("tok_a"), with(&first), ping, echo()).is_ok());
    assert_eq!(
        code(post(&state, &actor("tok_a"), with(&rest[0]), ping, echo())),
        ErrorCode::NotFound
    );

    // The server's cap: one caller per session slot, then 429 for a new caller.
    let mut n = 0;
    while state.web.mcp.len() < MAX_SESSIONS {
        open(&state, &format!("tok_{n}")).await;
        n += 1;
    }
    let full = post(
        &state,
        &actor("tok_new"),
        Headers::default(),
        &init(),
        echo(),
    );
    assert_eq!(code(full), ErrorCode::RateLimited);

    // Idle sessions expire and make room.
    let later = Instant::now() + SESSION_IDLE + Duration::from_secs(1);
    state.web.mcp.open_at("tok_new", later).unwrap();
    assert_eq!(state.web.mcp.len(), 1);
    assert_eq!(
        code(post(&state, &actor("tok_a"), with(&first), ping, echo())),
        ErrorCode::NotFound
    );
}
