//! "Remember this device": a browser keeps a token of its own, derived from the one it signed in
//! with — same role and tenant, bounded lifetime — and signing out revokes only it, while revoking
//! the origin revokes it too.

use berth_test_support::TestServer;
use serde_json::{json, Value};

use crate::bin;

/// A request with an explicit bearer token: status and JSON body.
async fn as_token(s: &TestServer, token: &str, method: &str, path: &str) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let resp = s
        .http()
        .request(m, format!("{}{path}", s.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_device_token_is_derived_bounded_and_signed_out_alone() {
    let s = TestServer::start(bin()).await;
    let (st, alice) = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "alice", "tenant": "acme", "role": "member", "expires_in": "10d"})),
        )
        .await;
    assert_eq!(st, 201, "{alice}");
    let alice_token = alice["token"].as_str().unwrap().to_owned();

    // Derived: same role and tenant, its own token, expiring with alice's (10 d < 30 d).
    let (st, dev) = as_token(&s, &alice_token, "POST", "/api/v1/auth/device").await;
    assert_eq!(st, 201, "{dev}");
    let dev_token = dev["token"].as_str().unwrap().to_owned();
    assert_ne!(dev_token, alice_token);
    assert_eq!(dev["role"], "member");
    assert_eq!(dev["tenant"], "acme");
    assert_eq!(dev["name"], "alice.device");
    assert_eq!(dev["device_of"], alice["id"]);
    assert_eq!(
        dev["expires_at"], alice["expires_at"],
        "never outlives its origin"
    );
    let (st, me) = as_token(&s, &dev_token, "GET", "/api/v1/whoami").await;
    assert_eq!((st, me["role"].as_str()), (200, Some("member")), "{me}");

    // A device token derives no further device.
    let (st, body) = as_token(&s, &dev_token, "POST", "/api/v1/auth/device").await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );

    // Signing the device out revokes it alone.
    let (st, _) = as_token(&s, &dev_token, "POST", "/api/v1/auth/logout").await;
    assert_eq!(st, 204);
    let (st, body) = as_token(&s, &dev_token, "GET", "/api/v1/whoami").await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (401, Some("token_revoked")),
        "{body}"
    );
    let (st, _) = as_token(&s, &alice_token, "GET", "/api/v1/whoami").await;
    assert_eq!(st, 200, "the origin stays signed in");
    // Signing out with an ordinary token revokes nothing.
    let (st, _) = as_token(&s, &alice_token, "POST", "/api/v1/auth/logout").await;
    assert_eq!(st, 204);
    let (st, _) = as_token(&s, &alice_token, "GET", "/api/v1/whoami").await;
    assert_eq!(st, 200);

    // Revoking the origin revokes the devices derived from it.
    let (_, dev2) = as_token(&s, &alice_token, "POST", "/api/v1/auth/device").await;
    let dev2_token = dev2["token"].as_str().unwrap().to_owned();
    let alice_id = alice["id"].as_str().unwrap();
    let (st, body) = s
        .call("DELETE", &format!("/api/v1/tokens/{alice_id}"), None)
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = as_token(&s, &dev2_token, "GET", "/api/v1/whoami").await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (401, Some("token_revoked")),
        "{body}"
    );

    // At most 20 live devices per token.
    let (st, bob) = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "bob", "tenant": "acme", "role": "viewer"})),
        )
        .await;
    assert_eq!(st, 201, "{bob}");
    let bob_token = bob["token"].as_str().unwrap().to_owned();
    for i in 0..20 {
        let (st, body) = as_token(&s, &bob_token, "POST", "/api/v1/auth/device").await;
        assert_eq!(st, 201, "device {i}: {body}");
    }
    let (st, body) = as_token(&s, &bob_token, "POST", "/api/v1/auth/device").await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );

    // An origin that never expires gives a device 30 days; both are audited.
    let (st, admin_dev) = s.call("POST", "/api/v1/auth/device", None).await;
    assert_eq!(st, 201, "{admin_dev}");
    let exp = admin_dev["expires_at"]
        .as_str()
        .expect("a device token always expires");
    let days = (time::OffsetDateTime::parse(exp, &time::format_description::well_known::Rfc3339)
        .unwrap()
        - time::OffsetDateTime::now_utc())
    .whole_days();
    assert!((29..=30).contains(&days), "{exp}");
    let audit = s.get("/api/v1/audit?limit=50").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(
        actions.iter().filter(|a| **a == "token.device").count() >= 3,
        "{actions:?}"
    );
}
