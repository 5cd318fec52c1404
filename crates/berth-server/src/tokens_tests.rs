//! Tokens, roles and quotas through the real router over the in-memory store.

use serde_json::{json, Value};

use crate::auth::hash_token;
use crate::test_support::TOKEN;

crate::routes::test_harness::route_harness!();

impl H {
    async fn call(&self, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.call_json(Some(token), method, path, &body).await
    }

    /// A new token through the API as `by`; its bearer value.
    async fn token(&self, by: &str, name: &str, role: &str, tenant: &str) -> String {
        let (st, v) = self
            .call(
                by,
                "POST",
                "/tokens",
                json!({"name": name, "role": role, "tenant": tenant}),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn a_created_token_is_shown_once_and_says_who_it_is() {
    let h = harness().await;
    let t = h.token(TOKEN, "alice", "member", "acme").await;
    let (st, who) = h.call(&t, "GET", "/whoami", Value::Null).await;
    assert_eq!(st, 200, "{who}");
    assert_eq!(
        (&who["token_name"], &who["role"], &who["tenant"]),
        (&json!("alice"), &json!("member"), &json!("acme"))
    );
    let (_, list) = h.call(TOKEN, "GET", "/tokens", Value::Null).await;
    let text = list.to_string();
    assert!(text.contains("alice") && !text.contains(&t), "{text}");
}

#[tokio::test]
async fn owners_grant_up_to_owner_in_their_tenant_only() {
    let h = harness().await;
    let owner = h.token(TOKEN, "olga", "owner", "acme").await;
    h.token(&owner, "bob", "viewer", "acme").await;
    h.token(&owner, "carol", "owner", "acme").await;
    let ask = |role: &str, tenant: Option<&str>| {
        let mut b = json!({"name": "x", "role": role});
        if let Some(t) = tenant {
            b["tenant"] = json!(t);
        }
        b
    };
    let (st, v) = h.call(&owner, "POST", "/tokens", ask("admin", None)).await;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")));
    let (st, _) = h
        .call(&owner, "POST", "/tokens", ask("member", Some("globex")))
        .await;
    assert_eq!(
        st, 404,
        "another tenant does not exist for an owner of acme"
    );
    let member = h.token(&owner, "dan", "member", "acme").await;
    let (st, v) = h
        .call(&member, "POST", "/tokens", ask("viewer", Some("acme")))
        .await;
    assert_eq!(st, 403, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("owner"),
        "{v}"
    );
    // An owner lists its tenant's tokens only, never the admin's.
    let (_, list) = h.call(&owner, "GET", "/tokens", Value::Null).await;
    // (Oldest first; tokens made within one millisecond in any order.)
    let mut names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["bob", "carol", "dan", "olga"]);
    let admin_id = h.call(TOKEN, "GET", "/whoami", Value::Null).await.1["token_id"].clone();
    let (st, _) = h
        .call(
            &owner,
            "DELETE",
            &format!("/tokens/{}", admin_id.as_str().unwrap()),
            Value::Null,
        )
        .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused_with_their_own_codes() {
    let h = harness().await;
    let t = h.token(TOKEN, "eve", "viewer", "acme").await;
    let id = h.call(&t, "GET", "/whoami", Value::Null).await.1["token_id"].clone();
    let (st, v) = h
        .call(
            TOKEN,
            "DELETE",
            &format!("/tokens/{}", id.as_str().unwrap()),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(v["revoked_at"].is_string());
    let (st, v) = h.call(&t, "GET", "/whoami", Value::Null).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("token_revoked"))
    );

    let acme = berth_domain::Name::parse("acme").unwrap();
    h.state
        .store
        .create_token(&berth_store::NewToken {
            name: "old",
            hash: &hash_token("berth_expired_token_value_0123"),
            role: "member",
            tenant: Some(&acme),
            expires_at: Some(&berth_domain::Timestamp::parse("2020-01-01T00:00:00.000Z").unwrap()),
            parent: None,
        })
        .await
        .unwrap();
    let (st, v) = h
        .call(
            "berth_expired_token_value_0123",
            "GET",
            "/whoami",
            Value::Null,
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("token_expired"))
    );
    let (st, v) = h
        .call(
            "berth_never_issued_0123456789",
            "GET",
            "/whoami",
            Value::Null,
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
}

#[tokio::test]
async fn an_expiry_is_set_from_the_lifetime_and_shown_by_whoami() {
    let h = harness().await;
    let (st, v) = h
        .call(
            TOKEN,
            "POST",
            "/tokens",
            json!({"name": "tmp", "role": "viewer", "tenant": "acme", "expires_in": "30d"}),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let expires = v["expires_at"].as_str().unwrap().to_owned();
    assert!(expires.as_str() > berth_domain::Timestamp::now().as_str());
    let who = h
        .call(v["token"].as_str().unwrap(), "GET", "/whoami", Value::Null)
        .await
        .1;
    assert_eq!(who["expires_at"], json!(expires));
    for bad in [
        "0d",
        "30",
        "d",
        "-1d",
        "1000d",
        "030d",
        "1w",
        "99999999999999999999d",
    ] {
        let (st, _) = h
            .call(
                TOKEN,
                "POST",
                "/tokens",
                json!({"name": "x", "role": "viewer", "tenant": "acme", "expires_in": bad}),
            )
            .await;
        assert_eq!(st, 400, "{bad}");
    }
}

#[tokio::test]
async fn last_used_is_noted_on_use_but_not_rewritten_within_a_minute() {
    let h = harness().await;
    let t = h.token(TOKEN, "frank", "viewer", "acme").await;
    let stored = || async {
        h.state
            .store
            .lookup_token(&hash_token(&t))
            .await
            .unwrap()
            .unwrap()
            .last_used_at
    };
    assert_eq!(stored().await, None);
    h.call(&t, "GET", "/whoami", Value::Null).await;
    let first = stored().await.expect("noted on first use");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    h.call(&t, "GET", "/whoami", Value::Null).await;
    assert_eq!(stored().await, Some(first), "rewritten within the minute");
}

#[tokio::test]
async fn the_audit_log_names_the_actor_and_is_read_per_tenant() {
    let h = harness().await;
    let owner = h.token(TOKEN, "olga", "owner", "acme").await;
    h.token(&owner, "bob", "viewer", "acme").await;
    let other = h.token(TOKEN, "gus", "owner", "globex").await;
    let (_, rows) = h.call(&owner, "GET", "/audit", Value::Null).await;
    let row = &rows[0];
    assert_eq!(row["action"], "token.create");
    assert_eq!(row["target"], "acme/bob");
    assert_eq!(
        (&row["actor_name"], &row["actor_role"], &row["actor_tenant"]),
        (&json!("olga"), &json!("owner"), &json!("acme"))
    );
    assert_eq!(row["tenant"], "acme");
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["tenant"] == "acme"),
        "{rows}"
    );
    let (_, theirs) = h.call(&other, "GET", "/audit", Value::Null).await;
    assert!(
        theirs
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["tenant"] == "globex"),
        "{theirs}"
    );
}

#[tokio::test]
async fn quotas_are_set_by_admins_and_read_in_the_tenant() {
    let h = harness().await;
    let owner = h.token(TOKEN, "olga", "owner", "acme").await;
    let body = json!({"max_workspaces": 5, "memory": "8g", "cpus": "4", "max_tasks": 3});
    let (st, v) = h
        .call(&owner, "PUT", "/tenants/acme/quota", body.clone())
        .await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = h.call(TOKEN, "PUT", "/tenants/acme/quota", body).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = h
        .call(&owner, "GET", "/tenants/acme/quota", Value::Null)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["quota"]["memory"], "8g");
    assert_eq!(v["used"]["workspaces"], 0);
    let (st, _) = h
        .call(&owner, "GET", "/tenants/globex/quota", Value::Null)
        .await;
    assert_eq!(st, 404);
    let (_, list) = h.call(&owner, "GET", "/tenants", Value::Null).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (st, _) = h
        .call(
            TOKEN,
            "PUT",
            "/tenants/acme/quota",
            json!({"memory": "lots"}),
        )
        .await;
    assert_eq!(st, 400);
}

#[test]
fn lifetimes() {
    use super::parse_lifetime;
    assert_eq!(parse_lifetime("30d").unwrap(), time::Duration::days(30));
    assert_eq!(parse_lifetime("12h").unwrap(), time::Duration::hours(12));
    assert_eq!(parse_lifetime("90m").unwrap(), time::Duration::minutes(90));
    assert_eq!(parse_lifetime("999d").unwrap(), time::Duration::days(999));
    for bad in ["", "d", "0m", "1.5d", "é", "3日", "1y", " 1d", "1000h"] {
        assert!(parse_lifetime(bad).is_err(), "{bad}");
    }
}
