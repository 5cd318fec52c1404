//! The API's contract at the HTTP layer: every refusal is JSON with a stable code, whatever part
//! of the stack refuses (router, body limit, media type, path decoding, WebSocket handshake).

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use tower::ServiceExt;

use crate::test_support::{route_state, TOKEN};

async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("{status}: not JSON: {:?}", String::from_utf8_lossy(&bytes)));
    (status, headers, v)
}

const AUTH: &str = "authorization";

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

async fn app() -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = route_state(dir.path()).await;
    (super::router(state), dir)
}

#[tokio::test]
async fn wrong_method_is_json_405_with_allow() {
    let (app, _dir) = app().await;
    let b = bearer();
    let (st, h, v) = send(&app, "PATCH", "/api/v1/workspaces", &[(AUTH, &b)], vec![]).await;
    assert_eq!(st, 405, "{v}");
    assert_eq!(v["error"]["code"], "method_not_allowed");
    let allow = h.get("allow").unwrap().to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn unknown_route_is_json_404() {
    let (app, _dir) = app().await;
    let b = bearer();
    let (st, _, v) = send(&app, "GET", "/api/v1/nope/x", &[(AUTH, &b)], vec![]).await;
    assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn oversized_body_is_json_413() {
    let (app, _dir) = app().await;
    let b = bearer();
    let big = format!("{{\"name\":\"{}\"}}", "a".repeat(super::MAX_BODY_BYTES));
    let (st, _, v) = send(
        &app,
        "POST",
        "/api/v1/workspaces",
        &[(AUTH, &b), ("content-type", "application/json")],
        big.into_bytes(),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
}

#[tokio::test]
async fn bodies_that_are_not_json_are_415() {
    let (app, _dir) = app().await;
    let b = bearer();
    let body = br#"{"name":"web"}"#.to_vec();
    for ct in [
        Some("text/plain"),
        Some("application/xml"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut headers = vec![(AUTH, b.as_str())];
        if let Some(ct) = ct {
            headers.push(("content-type", ct));
        }
        let (st, _, v) = send(&app, "POST", "/api/v1/workspaces", &headers, body.clone()).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (415, Some("unsupported_media_type")),
            "{ct:?}: {v}"
        );
    }
    // JSON with parameters, and +json types, are JSON.
    for ct in [
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ] {
        let (st, _, v) = send(
            &app,
            "PUT",
            "/api/v1/budgets",
            &[(AUTH, &b), ("content-type", ct)],
            br#"{"tenant":"acme","max_tokens":5}"#.to_vec(),
        )
        .await;
        assert_eq!(st, 200, "{ct}: {v}");
    }
}

#[tokio::test]
async fn a_path_that_is_not_utf8_is_json_400() {
    let (app, _dir) = app().await;
    let b = bearer();
    let (st, _, v) = send(&app, "GET", "/api/v1/workspaces/%FF", &[(AUTH, &b)], vec![]).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
}

#[tokio::test]
async fn websocket_routes_answer_json_before_the_upgrade() {
    let (app, _dir) = app().await;
    let b = bearer();
    // An unknown workspace is a 404 whatever the handshake.
    for uri in [
        "/api/v1/workspaces/nope/exec/ws",
        "/api/v1/workspaces/nope/sessions/main/attach",
    ] {
        let (st, _, v) = send(&app, "GET", uri, &[(AUTH, &b)], vec![]).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{uri}: {v}"
        );
    }
}

#[tokio::test]
async fn a_qualified_name_in_name_is_refused() {
    let (app, _dir) = app().await;
    let b = bearer();
    let (st, _, v) = send(
        &app,
        "POST",
        "/api/v1/workspaces",
        &[(AUTH, &b), ("content-type", "application/json")],
        br#"{"name":"a/b"}"#.to_vec(),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
}

#[tokio::test]
async fn limits_out_of_range_are_400_everywhere() {
    let (app, _dir) = app().await;
    let b = bearer();
    for uri in [
        "/api/v1/audit?limit=0",
        "/api/v1/audit?limit=1001",
        "/api/v1/usage/calls?limit=0",
        "/api/v1/usage/calls?limit=1001",
        "/api/v1/workspaces/nope/egress/log?limit=-1",
        "/api/v1/workspaces/nope/egress/log?limit=10001",
        "/api/v1/tasks/nope/events?limit=0",
    ] {
        let (st, _, v) = send(&app, "GET", uri, &[(AUTH, &b)], vec![]).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some("invalid_argument")),
            "{uri}: {v}"
        );
    }
    let (st, _, v) = send(
        &app,
        "GET",
        "/api/v1/audit?limit=1000",
        &[(AUTH, &b)],
        vec![],
    )
    .await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test]
async fn usage_since_with_a_multibyte_character_is_400() {
    let (app, _dir) = app().await;
    let b = bearer();
    let (st, _, v) = send(
        &app,
        "GET",
        "/api/v1/usage?since=%C3%A9",
        &[(AUTH, &b)],
        vec![],
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
}

#[tokio::test]
async fn trailing_whitespace_after_the_token_is_not_part_of_it() {
    let (app, _dir) = app().await;
    let padded = format!("Bearer {TOKEN} \t");
    let (st, _, v) = send(&app, "GET", "/api/v1/whoami", &[(AUTH, &padded)], vec![]).await;
    assert_eq!(st, 200, "{v}");
    let split = format!("Bearer {TOKEN} x");
    let (st, _, v) = send(&app, "GET", "/api/v1/whoami", &[(AUTH, &split)], vec![]).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
}

#[test]
fn integral_floats_are_integers() {
    #[derive(Debug, serde::Deserialize)]
    struct Size {
        cols: u16,
        rows: Option<u16>,
    }
    let s: Size = super::parse_body(br#"{"cols": 437.0, "rows": 2e1}"#.as_slice()).unwrap();
    assert_eq!((s.cols, s.rows), (437, Some(20)));
    let err = super::parse_body::<Size>(br#"{"cols": 43.5}"#.as_slice()).unwrap_err();
    assert_eq!(err.code, berth_domain::ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn a_restore_body_that_is_not_an_archive_is_415() {
    let (app, _dir) = app().await;
    let b = bearer();
    let (st, _, v) = send(
        &app,
        "POST",
        "/api/v1/backups/restore",
        &[(AUTH, &b), ("content-type", "text/plain")],
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{v}"
    );
    let (st, _, v) = send(
        &app,
        "POST",
        "/api/v1/backups/restore",
        &[(AUTH, &b), ("content-type", "application/zstd")],
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
}

#[tokio::test]
async fn budget_tokens_past_the_store_range_are_400() {
    let (app, _dir) = app().await;
    let b = bearer();
    let (st, _, v) = send(
        &app,
        "PUT",
        "/api/v1/budgets",
        &[(AUTH, &b), ("content-type", "application/json")],
        br#"{"tenant":"a","max_tokens":9223372036854775808}"#.to_vec(),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
}
