//! Every route needs a token; the OpenAPI document lists every route.

use berth_test_support::TestServer;
use serde_json::Value;

use crate::bin;

#[tokio::test]
async fn every_route_requires_a_bearer_token() {
    let s = TestServer::start(bin()).await;
    let doc = s.get("/api/v1/openapi.json").await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "openapi lists {} paths", paths.len());
    let http = reqwest::Client::new();
    let mut checked = 0;
    for (path, ops) in paths {
        let concrete = path
            .replace("{ws}", "default%2Fnope")
            .replace("{session}", "main");
        for (method, op) in ops.as_object().unwrap() {
            // Public operations (`security: [{}]`): only the sign-in page's auth config.
            if op["security"] == serde_json::json!([{}]) {
                assert_eq!(path, "/api/v1/auth/config", "{method} {path} is public");
                let resp = http.get(format!("{}{path}", s.url)).send().await.unwrap();
                assert_eq!(resp.status().as_u16(), 200, "{path} without a token");
                continue;
            }
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for auth in [None, Some("Bearer wrong-token-value"), Some("Basic abc")] {
                let mut req = http.request(m.clone(), format!("{}{concrete}", s.url));
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status().as_u16(), 401, "{method} {path} with {auth:?}");
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
                assert!(!body["error"]["message"].as_str().unwrap().is_empty());
                checked += 1;
            }
        }
    }
    assert!(checked >= 45);
    // Unknown routes under the API are refused before they are known to be unknown.
    let resp = http
        .get(format!("{}/api/v1/does-not-exist", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // With the token, the same unknown route is a JSON 404.
    let (st, body) = s.call("GET", "/api/v1/does-not-exist", None).await;
    assert_eq!(st, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn openapi_lists_the_routes_the_cli_uses() {
    let s = TestServer::start(bin()).await;
    let doc = s.get("/api/v1/openapi.json").await;
    for p in [
        "/api/v1/workspaces",
        "/api/v1/workspaces/{ws}",
        "/api/v1/workspaces/{ws}/start",
        "/api/v1/workspaces/{ws}/stop",
        "/api/v1/workspaces/{ws}/exec",
        "/api/v1/workspaces/{ws}/exec/ws",
        "/api/v1/workspaces/{ws}/sessions",
        "/api/v1/workspaces/{ws}/sessions/{session}",
        "/api/v1/workspaces/{ws}/sessions/{session}/attach",
        "/api/v1/workspaces/{ws}/sessions/{session}/scrollback",
        "/api/v1/audit",
        "/api/v1/doctor",
        "/api/v1/image",
        "/api/v1/image/build",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from openapi.json"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let who = s.get("/api/v1/whoami").await;
    assert_eq!(who["role"], "admin");
    // `berth openapi` prints the same document without a server (docs/openapi.json and the web
    // UI's types are generated from it).
    let out = std::process::Command::new(bin())
        .arg("openapi")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, doc);
}
