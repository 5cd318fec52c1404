//! Secrets through the real router: a binding's headers are validated and stored, and setting
//! or deleting a secret changes what the running proxy swaps at once.

use berth_domain::WorkspaceId;
use berth_store::SecretUse;
use serde_json::{json, Value};

use crate::test_support::TOKEN;

crate::routes::test_harness::route_harness!();

impl H {
    async fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.call_json(Some(TOKEN), method, path, &body).await
    }

    /// A running-looking workspace of `acme` using TOKEN for api.test in `X-Api-Key`, with its
    /// placeholder secrets loaded in the proxy as [`crate::egress::activate`] does.
    async fn workspace_using_token(&self) -> WorkspaceId {
        let store = &self.state.store;
        let id = self.workspace_row("acme", "web").await;
        let uses = [SecretUse {
            workspace_id: id.clone(),
            name: "TOKEN".into(),
            hosts: vec!["api.test".into()],
            delivery: berth_domain::SecretDelivery::Placeholder,
            placeholder: "ph-token".into(),
            headers: vec!["x-api-key".into()],
        }];
        store.set_secret_uses(&id, &uses).await.unwrap();
        let e = &self.state.egress;
        e.set_secrets(
            &id,
            crate::egress::placeholder_bindings(&self.state, &id).await,
        );
        id
    }

    fn swapped(&self, ws: &WorkspaceId) -> Vec<(String, String, Vec<String>)> {
        let e = &self.state.egress;
        e.secrets_for(ws, "api.test")
            .into_iter()
            .map(|b| (b.placeholder, b.value.expose().to_string(), b.headers))
            .collect()
    }
}

/// Without the refresh on delete, the last assertion still sees "v2" in the proxy.
#[tokio::test]
async fn rotation_and_deletion_reach_the_running_proxy_at_once() {
    let h = harness().await;
    let (st, v) = h
        .call("PUT", "/secrets/acme/TOKEN", json!({"value": "v1"}))
        .await;
    assert_eq!(st, 200, "{v}");
    let ws = h.workspace_using_token().await;
    let want = |value: &str| vec![("ph-token".into(), value.into(), vec!["x-api-key".into()])];
    assert_eq!(h.swapped(&ws), want("v1"));
    let (_, list) = h.call("GET", "/secrets?tenant=acme", Value::Null).await;
    assert_eq!(list[0]["used_by"][0]["headers"], json!(["x-api-key"]));

    let (st, _) = h
        .call("PUT", "/secrets/acme/TOKEN", json!({"value": "v2"}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(h.swapped(&ws), want("v2"));
    // Another tenant's secret of the same name changes nothing here.
    let (st, _) = h
        .call("PUT", "/secrets/globex/TOKEN", json!({"value": "other"}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(h.swapped(&ws), want("v2"));

    let (st, _) = h.call("DELETE", "/secrets/acme/TOKEN", Value::Null).await;
    assert_eq!(st, 204);
    assert!(h.swapped(&ws).is_empty());
}

#[tokio::test]
async fn binding_headers_are_validated() {
    let h = harness().await;
    h.call("PUT", "/secrets/acme/TOKEN", json!({"value": "v1"}))
        .await;
    for (secret, why) in [
        (
            json!({"name": "TOKEN", "hosts": ["a.test"], "headers": ["Host"]}),
            "cannot carry a secret",
        ),
        (
            json!({"name": "TOKEN", "hosts": ["a.test"], "headers": ["bad header"]}),
            "not a header name",
        ),
        (
            json!({"name": "TOKEN", "hosts": ["a.test"], "headers": ["Proxy-Authorization"]}),
            "cannot carry a secret",
        ),
        (
            json!({"name": "TOKEN", "delivery": "env", "headers": ["x-api-key"]}),
            "placeholder delivery only",
        ),
    ] {
        let (st, v) = h
            .call(
                "POST",
                "/workspaces",
                json!({"name": "web", "tenant": "acme", "secrets": [secret]}),
            )
            .await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some("invalid_argument")),
            "{v}"
        );
        assert!(v["error"]["message"].as_str().unwrap().contains(why), "{v}");
    }
}

/// No route reads a secret's value: the only GET under `/secrets` is the list, and what it (and
/// every other secrets route) answers has no field for the value.
#[test]
fn no_route_reads_a_secret_value() {
    let reads: Vec<_> = crate::routes::table()
        .into_iter()
        .filter(|r| r.path.starts_with("/secrets") && r.method == "GET")
        .map(|r| r.path)
        .collect();
    assert_eq!(reads, ["/secrets"]);
    let doc = crate::openapi::document();
    let info = &doc["components"]["schemas"]["SecretInfo"]["properties"];
    let fields: Vec<_> = info.as_object().unwrap().keys().cloned().collect();
    assert!(
        !fields.iter().any(|f| f.contains("value")),
        "SecretInfo has {fields:?}"
    );
}
