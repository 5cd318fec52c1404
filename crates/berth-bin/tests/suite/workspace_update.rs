//! Changing a workspace after creation (`PATCH /workspaces/{ws}`, `berth workspace update`)
//! against the real engine: larger caps reach the running container's cgroup and stay after a
//! restart; a secret bound (and unbound) on a running workspace is swapped (and no longer
//! swapped) by the egress proxy at once; members are refused, other tenants see nothing, bad
//! input is a 4xx naming the problem.

use berth_test_support::{enc, ensure_image, ServerOptions, TestServer};
use serde_json::{json, Value};

use super::egress::NetnsHost;
use super::secrets::{origin, test_certs, ECHO};
use crate::bin;

const MIB: i64 = 1024 * 1024;

/// The memory cap and process limit the kernel enforces on the workspace's container, read
/// from inside (cgroup v2, else v1).
async fn cgroup_limits(s: &TestServer, ws: &str) -> (i64, i64) {
    let out = s
        .exec(
            ws,
            &[
                "sh",
                "-c",
                "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
                 cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max",
            ],
        )
        .await;
    let text = out["stdout"].as_str().unwrap_or_default().to_owned();
    let nums: Vec<i64> = text
        .lines()
        .map(|l| l.trim().parse().unwrap_or(-1))
        .collect();
    assert_eq!(nums.len(), 2, "{out}");
    (nums[0], nums[1])
}

/// The names of the egress templates attached to `ws`, in order.
async fn attached(s: &TestServer, ws: &str) -> Vec<String> {
    let v = s
        .get(&format!("/api/v1/workspaces/{}/egress/templates", enc(ws)))
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn patch(s: &TestServer, ws: &str, body: Value) -> (u16, Value) {
    s.call(
        "PATCH",
        &format!("/api/v1/workspaces/{}", enc(ws)),
        Some(body),
    )
    .await
}

async fn patch_as(s: &TestServer, token: &str, ws: &str, body: Value) -> (u16, Value) {
    let resp = s
        .http()
        .patch(format!("{}/api/v1/workspaces/{}", s.url, enc(ws)))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = resp.status().as_u16();
    (st, resp.json().await.unwrap_or(Value::Null))
}

async fn token(s: &TestServer, name: &str, tenant: &str, role: &str) -> String {
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": name, "tenant": tenant, "role": role})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn larger_caps_reach_the_running_container_and_stay_after_a_restart() {
    ensure_image().await;
    let s = TestServer::start(bin()).await;
    let ws = "acme/grow";
    s.create_workspace(json!({"name": "grow", "tenant": "acme", "memory": "256m", "pids": 256}))
        .await;
    s.create_workspace(json!({"name": "other", "tenant": "globex"}))
        .await;
    assert_eq!(cgroup_limits(&s, ws).await, (256 * MIB, 256));

    // Owner of acme: the caps change live, in the kernel's own accounting.
    let owner = token(&s, "olga", "acme", "owner").await;
    let (st, u) = patch_as(&s, &owner, ws, json!({"memory": "512m", "pids": 300})).await;
    assert_eq!(st, 200, "{u}\n{}", s.log());
    assert_eq!(u["changed"], json!(["memory", "pids"]), "{u}");
    assert_eq!(u["pending_restart"], json!([]), "{u}");
    assert_eq!(u["workspace"]["limits"]["memory_bytes"], 512 * MIB, "{u}");
    assert_eq!(cgroup_limits(&s, ws).await, (512 * MIB, 300));
    // Asking again changes nothing.
    let (st, u) = patch(&s, ws, json!({"memory": "512m"})).await;
    assert_eq!((st, u["changed"].clone()), (200, json!([])), "{u}");

    // The engine may forget a live change when the same container restarts (Podman 4 does):
    // the next start makes the container anew with the stored caps.
    let (st, v) = s
        .call(
            "POST",
            &format!("/api/v1/workspaces/{}/stop", enc(ws)),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, u) = patch(&s, ws, json!({"cpus": "0.5"})).await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["pending_restart"], json!(["cpus"]), "stopped: {u}");
    let (st, v) = s
        .call(
            "POST",
            &format!("/api/v1/workspaces/{}/start", enc(ws)),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(cgroup_limits(&s, ws).await, (512 * MIB, 300));
    let shown = s.get(&format!("/api/v1/workspaces/{}", enc(ws))).await;
    assert_eq!(shown["limits"]["cpus"], 0.5, "{shown}");

    // The CLI says what changed and when.
    let o = s.cli(&["workspace", "update", ws, "--memory", "384m"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("updated acme/grow: memory") && out.contains("in effect now: memory"),
        "{out}"
    );
    assert_eq!(cgroup_limits(&s, ws).await.0, 384 * MIB);
    // Templates (the CLI sends the whole list) and the approval policy apply at once.
    let o = s.cli(&[
        "workspace",
        "update",
        ws,
        "--egress-template",
        "npm",
        "--egress-template",
        "pypi",
        "--approval",
        "always",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("updated acme/grow: egress_templates, approval"),
        "{out}"
    );
    assert_eq!(attached(&s, ws).await, ["npm", "pypi"]);
    let o = s.cli(&["workspace", "update", ws, "--remove-egress-template", "npm"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(attached(&s, ws).await, ["pypi"]);
    let effective = s
        .get(&format!("/api/v1/workspaces/{}/egress/effective", enc(ws)))
        .await;
    assert_eq!(effective["templates"], json!(["pypi"]), "{effective}");

    // Members may not change it; another tenant does not see it.
    let member = token(&s, "mia", "acme", "member").await;
    let (st, v) = patch_as(&s, &member, ws, json!({"memory": "1g"})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let globex = token(&s, "gus", "globex", "owner").await;
    let (st, v) = patch_as(&s, &globex, ws, json!({"memory": "1g"})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (st, v) = patch_as(&s, &globex, "grow", json!({"memory": "1g"})).await;
    assert_eq!(st, 404, "{v}");

    // Bad input: the request's fault (400), the host's (422), the tenant's quota (409).
    for (body, status, code) in [
        (json!({"memory": "lots"}), 400, "invalid_argument"),
        (json!({"pids": 0}), 400, "invalid_argument"),
        (json!({"network": "bridge"}), 400, "invalid_argument"),
        (json!({"memory": "999g"}), 422, "exceeds_capacity"),
        (json!({"remove_secrets": ["NOPE"]}), 404, "not_found"),
        (
            json!({"secrets": [{"name": "NOPE", "hosts": ["x.test"]}]}),
            404,
            "not_found",
        ),
        (json!({"egress_templates": ["nope"]}), 404, "not_found"),
        (json!({"approval": "sometimes"}), 400, "invalid_argument"),
    ] {
        let (st, v) = patch(&s, ws, body.clone()).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
    }
    let (st, v) = s
        .call(
            "PUT",
            "/api/v1/tenants/acme/quota",
            Some(json!({"memory": "500m"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = patch(&s, ws, json!({"memory": "1g"})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("quota_exceeded")),
        "{v}"
    );
    // Nothing of a refused request was applied.
    assert_eq!(cgroup_limits(&s, ws).await.0, 384 * MIB);
    // Smaller caps always fit.
    let (st, v) = patch(&s, ws, json!({"memory": "320m"})).await;
    assert_eq!(st, 200, "{v}");

    let audit = s.get("/api/v1/audit?target=acme%2Fgrow").await;
    let rows = audit.as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter().any(|r| r["action"] == "workspace.update"
            && r["actor_name"] == "olga"
            && r["result"] == "ok"
            && r["detail"].as_str().unwrap_or_default().contains("memory")),
        "{audit}"
    );
}

#[tokio::test]
async fn a_secret_bound_on_a_running_workspace_is_swapped_at_once() {
    const REAL: &str = "ghp_UPDATEDbindingVALUE42";
    ensure_image().await;
    let dir = tempfile::tempdir().unwrap();
    test_certs(dir.path(), &["api.bound.test"]);
    let host = NetnsHost::serve_python(dir.path(), &origin(ECHO), 11);
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![
                (
                    "BERTH_EGRESS_HOSTS".into(),
                    format!("api.bound.test={}", host.ip),
                ),
                (
                    "BERTH_EGRESS_EXTRA_CA".into(),
                    dir.path().join("ca.crt").display().to_string(),
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    let o = s.cli_with_stdin(
        &["secret", "set", "--tenant", "acme", "GITHUB_TOKEN"],
        REAL.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ws = "acme/late";
    s.create_workspace(
        json!({"name": "late", "tenant": "acme", "egress": ["allow api.bound.test:8443"]}),
    )
    .await;
    let curl = |token: &str| {
        format!("curl -sS -m 10 -H 'Authorization: Bearer {token}' https://api.bound.test:8443/")
    };

    // Bound through the CLI while the workspace runs.
    let o = s.cli(&[
        "workspace",
        "update",
        ws,
        "--secret",
        "GITHUB_TOKEN:api.bound.test",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let u: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(u["changed"], json!(["secrets"]), "{u}");
    assert_eq!(u["pending_restart"], json!([]), "{u}");
    let placeholder = u["placeholders"]["GITHUB_TOKEN"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        placeholder.starts_with("berth-placeholder-github_token-"),
        "{u}"
    );
    let out = s.exec(ws, &["sh", "-c", &curl(&placeholder)]).await;
    assert_eq!(out["stdout"], format!("auth=Bearer {REAL}\n"), "{out}");

    // At the next start the variable is in the environment, with the same placeholder.
    for verb in ["stop", "start"] {
        let (st, v) = s
            .call(
                "POST",
                &format!("/api/v1/workspaces/{}/{verb}", enc(ws)),
                None,
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    let env = s.exec(ws, &["sh", "-c", "echo $GITHUB_TOKEN"]).await;
    assert_eq!(env["stdout"], format!("{placeholder}\n"), "{env}");

    // An env delivery waits for the next start; unbinding stops the swap at once.
    let (st, u) = patch(
        &s,
        ws,
        json!({"secrets": [{"name": "GITHUB_TOKEN", "delivery": "env"}]}),
    )
    .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["pending_restart"], json!(["secrets"]), "{u}");
    // No placeholder binding for the host any more: a plain tunnel (the workspace does not
    // trust the test CA, hence -k) carrying the placeholder as it is.
    let unbound = curl(&placeholder).replace("curl -sS", "curl -sSk");
    let out = s.exec(ws, &["sh", "-c", &unbound]).await;
    assert_eq!(
        out["stdout"],
        format!("auth=Bearer {placeholder}\n"),
        "{out}"
    );
    let (st, u) = patch(&s, ws, json!({"remove_secrets": ["GITHUB_TOKEN"]})).await;
    assert_eq!((st, u["changed"].clone()), (200, json!(["secrets"])), "{u}");
    let (st, v) = patch(
        &s,
        ws,
        json!({"secrets": [{"name": "GITHUB_TOKEN", "hosts": ["api.bound.test"]}], "remove_secrets": ["GITHUB_TOKEN"]}),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    let secrets = s.get("/api/v1/secrets?tenant=acme").await;
    assert_eq!(secrets[0]["used_by"], json!([]), "{secrets}");
}
