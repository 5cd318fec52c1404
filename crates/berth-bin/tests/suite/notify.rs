//! Notifications end to end: a real task of a real agent CLI (against the scripted mock LLM)
//! completes, and berth posts the signed `task.completed` to receivers on loopback (plain axum
//! servers in this test): berth's JSON for a webhook (the signature verified with the secret
//! shown at creation; two 500s then a 200, three attempts in the delivery log), Slack's
//! `{"text"}` and ntfy's plain text with headers. Neither a workspace secret's value, nor the
//! signing secret, nor the URL's secret path appears in any payload or the server log. Without
//! `BERTH_NOTIFY_ALLOW_PRIVATE` a loopback, private or link-local URL is refused.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use berth_test_support::mock_llm::MockLlm;
use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use serde_json::{json, Value};

use crate::bin;

const TURN: Duration = Duration::from_secs(180);
const SECRET_VALUE: &str = "notify-test-secret-value-4711";
const URL_SECRET: &str = "T0000/B0000/urlsecretpath4711";

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A loopback HTTP receiver: records every request and answers with the queued statuses, then
/// 200.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start(answers: &[u16]) -> (Self, SocketAddr) {
        let r = Receiver::default();
        r.answers.lock().unwrap().extend(answers);
        let app = axum::Router::new()
            .fallback(
                |State(r): State<Receiver>,
                 uri: axum::http::Uri,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    r.got.lock().unwrap().push(Received {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                    });
                    let code = r.answers.lock().unwrap().pop_front().unwrap_or(200);
                    StatusCode::from_u16(code).unwrap()
                },
            )
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, addr)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    // HMAC-SHA256 (RFC 2104), written out so the test checks berth's signature independently.
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    hex::encode(
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize(),
    )
}

/// Verifies `X-Berth-Signature` as docs/notifications.md tells receivers to.
fn verify(r: &Received, secret: &str) -> bool {
    let ts = r.headers["x-berth-timestamp"].to_str().unwrap();
    let mut msg = ts.as_bytes().to_vec();
    msg.push(b'.');
    msg.extend_from_slice(&r.body);
    r.headers["x-berth-signature"].to_str().unwrap()
        == format!("v1={}", hmac_hex(secret.as_bytes(), &msg))
}

async fn subscribe(s: &TestServer, body: Value) -> (String, String) {
    let (st, v) = s
        .call("POST", "/api/v1/notifications/subscriptions", Some(body))
        .await;
    assert_eq!(st, 201, "{v}");
    (
        v["subscription"]["id"].as_str().unwrap().to_owned(),
        v["signing_secret"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_completed_task_is_posted_signed_retried_and_logged() {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let mut env = vec![
        ("BERTH_NOTIFY_ALLOW_PRIVATE".to_owned(), "1".to_owned()),
        ("BERTH_NOTIFY_RETRY_BASE_MS".to_owned(), "300".to_owned()),
    ];
    for p in ["ANTHROPIC", "OPENAI", "GEMINI"] {
        env.push((format!("BERTH_{p}_BASE_URL"), mock.url()));
        env.push((format!("BERTH_{p}_API_KEY"), format!("real-{p}-key")));
    }
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env,
            ..Default::default()
        },
    )
    .await;
    let (st, v) = s
        .call(
            "PUT",
            "/api/v1/secrets/acme/API_TOKEN",
            Some(json!({"value": SECRET_VALUE})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    s.create_workspace(
        json!({"name": "hooks", "tenant": "acme", "memory": "2g", "pids": 2048,
        "secrets": [{"name": "API_TOKEN", "hosts": ["api.example.test"]}]}),
    )
    .await;

    let (hook, hook_addr) = Receiver::start(&[500, 500]).await;
    let (slack, slack_addr) = Receiver::start(&[]).await;
    let (ntfy, ntfy_addr) = Receiver::start(&[]).await;
    let (hook_id, hook_secret) = subscribe(
        &s,
        json!({"channel": "webhook", "url": format!("http://{hook_addr}/hooks/{URL_SECRET}"),
            "workspace": "acme/hooks", "kinds": ["task.completed", "task.failed"]}),
    )
    .await;
    assert!(hook_secret.starts_with("whsec_"), "{hook_secret}");
    let (slack_id, slack_secret) = subscribe(
        &s,
        json!({"channel": "slack", "url": format!("http://{slack_addr}/services/{URL_SECRET}"),
            "tenant": "acme"}),
    )
    .await;
    let (_, ntfy_secret) = subscribe(
        &s,
        json!({"channel": "ntfy", "url": format!("http://{ntfy_addr}/berth-topic"),
            "tenant": "acme", "kinds": ["task.completed"]}),
    )
    .await;
    // A subscription of another tenant hears nothing of acme.
    let (other, other_addr) = Receiver::start(&[]).await;
    subscribe(
        &s,
        json!({"channel": "webhook", "url": format!("http://{other_addr}/x"), "tenant": "globex"}),
    )
    .await;

    // Lists show scheme and host only.
    let list = s.get("/api/v1/notifications/subscriptions").await;
    let text = list.to_string();
    assert!(!text.contains(URL_SECRET), "{text}");
    assert!(text.contains(&format!("http://{hook_addr}/…")), "{text}");

    let prompt = "Create hello.txt containing hi, then say DONE. (notify-prompt-marker)";
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "acme/hooks", "agent": "claude", "prompt": prompt})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let done = eventually(TURN, "the task to end", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        matches!(t["state"].as_str(), Some("completed" | "failed")).then_some(t)
    })
    .await;
    assert_eq!(done["state"], "completed", "{done}\n{}", s.log());

    // The webhook: 500, 500, then 200 — three attempts of one signed delivery.
    let got = eventually(
        Duration::from_secs(30),
        "three webhook attempts",
        || async {
            let g = hook.got();
            (g.len() >= 3).then_some(g)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_now = hook.got();
    assert_eq!(got_now.len(), 3, "no attempt after the 200: {got_now:?}");
    for r in &got {
        assert_eq!(r.path, format!("/hooks/{URL_SECRET}"));
        assert!(verify(r, &hook_secret), "signature does not verify: {r:?}");
        assert!(!verify(r, &slack_secret), "another secret verifies it");
        assert_eq!(r.headers["x-berth-event"], "task.completed");
    }
    let body: Value = serde_json::from_slice(&got[2].body).unwrap();
    assert_eq!(body["kind"], "task.completed", "{body}");
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["workspace"], "acme/hooks");
    assert_eq!(body["task"]["id"], id.as_str());
    assert_eq!(body["task"]["state"], "completed");
    assert_eq!(body["task"]["agent"], "claude");
    assert!(
        body["task"]["last_message"]
            .as_str()
            .unwrap_or("")
            .contains("DONE"),
        "{body}"
    );
    // The same bytes, tampered, no longer verify.
    let mut tampered = got[2].clone();
    tampered.body = Bytes::from(String::from_utf8_lossy(&got[2].body).replace("acme", "acmf"));
    assert!(!verify(&tampered, &hook_secret));

    let log = s
        .get(&format!(
            "/api/v1/notifications/subscriptions/{hook_id}/deliveries"
        ))
        .await;
    let deliveries = log.as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{log:#}");
    let d = &deliveries[0];
    assert_eq!(d["kind"], "task.completed");
    assert_eq!(d["state"], "delivered", "{d:#}");
    assert_eq!(d["attempts"], 3);
    let statuses: Vec<u64> = d["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 200], "{d:#}");
    let log = d["log"].as_array().unwrap();
    assert!(log[0]["next_at"].is_string() && log[1]["next_at"].is_string());
    assert!(log[2].get("next_at").is_none(), "{d:#}");
    // The retry waited its backoff: 300 ms, then 600 ms.
    let at = |i: usize| time_of(log[i]["at"].as_str().unwrap());
    assert!(at(1) - at(0) >= time::Duration::milliseconds(280), "{d:#}");
    assert!(at(2) - at(1) >= time::Duration::milliseconds(580), "{d:#}");

    // Slack: one JSON object with one key, `text`, naming the task.
    let sl = eventually(Duration::from_secs(20), "the slack post", || async {
        let g = slack.got();
        (!g.is_empty()).then_some(g)
    })
    .await;
    let v: Value = serde_json::from_slice(&sl[0].body).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    let t = v["text"].as_str().unwrap();
    assert!(t.starts_with("*Task completed* ") && t.contains(&id), "{t}");
    assert_eq!(sl[0].headers["content-type"], "application/json");

    // ntfy: plain text, the title, priority and tags as headers.
    let nt = eventually(Duration::from_secs(20), "the ntfy post", || async {
        let g = ntfy.got();
        (!g.is_empty()).then_some(g)
    })
    .await;
    assert_eq!(nt[0].path, "/berth-topic");
    assert_eq!(nt[0].headers["title"], "Task completed");
    assert_eq!(nt[0].headers["priority"], "3");
    assert_eq!(nt[0].headers["tags"], "white_check_mark");
    assert!(nt[0].headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8_lossy(&nt[0].body);
    assert!(text.contains(&id) && text.contains("completed"), "{text}");

    // A test send: synchronous, in the log.
    let (st, r) = s
        .call(
            "POST",
            &format!("/api/v1/notifications/subscriptions/{slack_id}/test"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["delivered"], true, "{r}");
    assert_eq!(r["status"], 200);
    assert_eq!(slack.got().len(), 2);

    // The CLI: list and log.
    let out = s.cli(&["notify", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && list.contains(&hook_id), "{list}");
    assert!(!list.contains(URL_SECRET), "{list}");
    let out = s.cli(&["notify", "log", &hook_id]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches(" 500 ").count(), 2, "{log}");
    assert!(log.contains(" 200 ") && log.contains("delivered"), "{log}");

    // Nothing for globex; nothing secret anywhere.
    assert!(other.got().is_empty(), "{:?}", other.got());
    let mut everything = String::new();
    for r in hook.got().iter().chain(&slack.got()).chain(&ntfy.got()) {
        everything.push_str(&format!(
            "{:?}{}",
            r.headers,
            String::from_utf8_lossy(&r.body)
        ));
    }
    let server_log = s.log();
    for needle in [
        SECRET_VALUE,
        hook_secret.as_str(),
        slack_secret.as_str(),
        ntfy_secret.as_str(),
        "notify-prompt-marker",
    ] {
        assert!(!everything.contains(needle), "{needle} in a payload");
        assert!(!server_log.contains(needle), "{needle} in the server log");
    }
    assert!(
        !server_log.contains(URL_SECRET),
        "the URL's secret path in the log"
    );
}

fn time_of(s: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
}

/// Without `BERTH_NOTIFY_ALLOW_PRIVATE`, loopback, private, link-local and the server's own
/// addresses are refused (422 `url_refused`), by address or by a name resolving there, and so
/// are http(s) URLs that do not parse or whose name does not resolve; a URL that is not http(s)
/// is a 400 (it does not fit the document's pattern). Nothing is stored.
#[tokio::test]
async fn private_targets_are_refused_by_default() {
    let s = TestServer::start(bin()).await;
    let (_, addr) = Receiver::start(&[]).await;
    for url in [
        format!("http://{addr}/hook"),
        format!("http://localhost:{}/hook", addr.port()),
        "http://10.0.0.7/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::1]:8080/".to_owned(),
        "https://192.168.1.1/x".to_owned(),
        "http://berth-no-such-host.invalid/x".to_owned(),
        "http://0\u{ca}".to_owned(),
    ] {
        let (st, v) = s
            .call(
                "POST",
                "/api/v1/notifications/subscriptions",
                Some(json!({"channel": "webhook", "url": url, "tenant": "acme"})),
            )
            .await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (422, Some("url_refused")),
            "{url}: {v}"
        );
    }
    for (url, channel) in [
        ("file:///etc/passwd", "webhook"),
        ("gopher://example.com/", "webhook"),
        ("http://93.184.215.14/", "email"),
    ] {
        let (st, v) = s
            .call(
                "POST",
                "/api/v1/notifications/subscriptions",
                Some(json!({"channel": channel, "url": url, "tenant": "acme"})),
            )
            .await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some("invalid_argument")),
            "{url}: {v}"
        );
    }
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/notifications/subscriptions",
            Some(
                json!({"channel": "webhook", "url": format!("http://{addr}/"), "tenant": "acme",
                "kinds": ["task.exploded"]}),
            ),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
    // An admin's token has no tenant: a subscription must name one (422 `tenant_required`,
    // checked before the URL's host is looked at).
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/notifications/subscriptions",
            Some(json!({"channel": "webhook", "url": "http://93.184.215.14/"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("tenant_required")),
        "{v}"
    );
    // A workspace of another tenant than the one named is a conflict within the request.
    ensure_image().await;
    s.create_workspace(json!({"name": "web", "tenant": "acme"}))
        .await;
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/notifications/subscriptions",
            Some(
                json!({"channel": "webhook", "url": "http://93.184.215.14/", "tenant": "globex",
                "workspace": "acme/web"}),
            ),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "{v}"
    );
    assert_eq!(
        s.get("/api/v1/notifications/subscriptions").await,
        json!([])
    );
    // The CLI says it in one line and exits non-zero.
    let out = s.cli(&[
        "notify",
        "add",
        &format!("http://{addr}/x"),
        "--tenant",
        "acme",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("refused") && err.lines().count() == 1, "{err}");
}

/// The browser's side of RFC 8291, written here from the RFC (not from berth's code): the
/// shared secret of the browser's key and the sender's key from the message header, the
/// keys derived with the browser's auth secret, the one record opened and its delimiter
/// checked.
fn open_push_message(
    body: &[u8],
    ua_private: ring::agreement::EphemeralPrivateKey,
    ua_public: &[u8],
    auth: &[u8],
) -> Vec<u8> {
    use ring::{aead, agreement, hkdf};
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let derive = |salt: &[u8], ikm: &[u8], info: &[&[u8]], len: usize| {
        let mut out = vec![0u8; len];
        hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
            .extract(ikm)
            .expand(info, Len(len))
            .unwrap()
            .fill(&mut out)
            .unwrap();
        out
    };
    let (salt, rest) = body.split_at(16);
    assert_eq!(&rest[..4], &4096u32.to_be_bytes(), "record size");
    let idlen = usize::from(rest[4]);
    assert_eq!(idlen, 65, "the key id is the sender's P-256 key");
    let (as_public, ciphertext) = rest[5..].split_at(idlen);
    let ecdh = agreement::agree_ephemeral(
        ua_private,
        &agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, as_public),
        |s| s.to_vec(),
    )
    .unwrap();
    let ikm = derive(auth, &ecdh, &[b"WebPush: info\0", ua_public, as_public], 32);
    let cek = derive(salt, &ikm, &[b"Content-Encoding: aes128gcm\0"], 16);
    let nonce = derive(salt, &ikm, &[b"Content-Encoding: nonce\0"], 12);
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).unwrap());
    let mut record = ciphertext.to_vec();
    let plain = key
        .open_in_place(
            aead::Nonce::try_assume_unique_for_key(&nonce).unwrap(),
            aead::Aad::empty(),
            &mut record,
        )
        .expect("the message opens with the browser's keys")
        .to_vec();
    let (last, text) = plain.split_last().unwrap();
    assert_eq!(*last, 2, "one record, the last, unpadded");
    text.to_vec()
}

/// Web Push as a push service and a browser see it: the subscription takes the browser's
/// keys (checked: no key, keys on another channel, a point off the curve are refused), the
/// test event reaches the endpoint (a loopback stand-in for the vendor's push service)
/// encrypted with `aes128gcm` so only the browser's key opens it, and the request carries a
/// VAPID token signed with berth's published key for the endpoint's origin.
#[tokio::test]
async fn web_push_is_encrypted_for_the_browser_and_authorised_with_vapid() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![
                ("BERTH_NOTIFY_ALLOW_PRIVATE".to_owned(), "1".to_owned()),
                (
                    "BERTH_VAPID_SUBJECT".to_owned(),
                    "mailto:ops@example.com".to_owned(),
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    let info = s.get("/api/v1/notifications/webpush").await;
    let vapid_key = info["public_key"].as_str().unwrap().to_owned();
    assert_eq!(info["subject"], "mailto:ops@example.com");
    assert_eq!(B64.decode(&vapid_key).unwrap().len(), 65, "{info}");

    // The browser: its P-256 key pair and auth secret, as PushManager.subscribe makes them.
    let rng = ring::rand::SystemRandom::new();
    let ua_private =
        ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng).unwrap();
    let ua_public = ua_private.compute_public_key().unwrap().as_ref().to_vec();
    let mut auth = [0u8; 16];
    rng.fill(&mut auth).unwrap();
    let keys = json!({"p256dh": B64.encode(&ua_public), "auth": B64.encode(auth)});

    let (push, addr) = Receiver::start(&[201]).await;
    let endpoint = format!("http://{addr}/wpush/v2/{URL_SECRET}");
    let create = |body: Value| {
        let s = &s;
        async move {
            s.call("POST", "/api/v1/notifications/subscriptions", Some(body))
                .await
        }
    };
    for (body, want) in [
        (
            json!({"channel": "webpush", "url": endpoint, "tenant": "acme"}),
            (400, "invalid_argument"),
        ),
        (
            json!({"channel": "webhook", "url": endpoint, "tenant": "acme", "keys": keys}),
            (400, "invalid_argument"),
        ),
        (
            json!({"channel": "webpush", "url": endpoint, "tenant": "acme",
                "keys": {"p256dh": format!("B{}", "A".repeat(86)), "auth": B64.encode(auth)}}),
            (422, "invalid_push_keys"),
        ),
    ] {
        let (st, v) = create(body.clone()).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (want.0, Some(want.1)),
            "{body} → {v}"
        );
    }
    let (st, v) = create(
        json!({"channel": "webpush", "url": endpoint, "tenant": "acme",
        "keys": keys}),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert!(v.get("signing_secret").is_none(), "no signing secret: {v}");
    let id = v["subscription"]["id"].as_str().unwrap().to_owned();
    assert_eq!(v["subscription"]["channel"], "webpush");
    assert!(
        !v.to_string().contains(URL_SECRET),
        "the endpoint's path is not shown: {v}"
    );

    let (st, r) = s
        .call(
            "POST",
            &format!("/api/v1/notifications/subscriptions/{id}/test"),
            None,
        )
        .await;
    assert_eq!(
        (st, &r["delivered"], &r["status"]),
        (200, &json!(true), &json!(201)),
        "{r}"
    );
    let got = push.got();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.path, format!("/wpush/v2/{URL_SECRET}"));
    let h = |name: &str| req.headers[name].to_str().unwrap().to_owned();
    assert_eq!(h("content-encoding"), "aes128gcm");
    assert_eq!(h("ttl"), "86400");
    assert_eq!(h("urgency"), "normal");
    assert!(req.headers.get("x-berth-signature").is_none());

    // VAPID (RFC 8292): `vapid t=JWT, k=KEY`, the key the server publishes, the signature
    // ES256 over the token, the audience the endpoint's origin, at most a day ahead.
    let authz = h("authorization");
    let (t, k) = authz
        .strip_prefix("vapid t=")
        .and_then(|r| r.split_once(", k="))
        .unwrap_or_else(|| panic!("{authz}"));
    assert_eq!(k, vapid_key);
    let (signed, sig) = t.rsplit_once('.').unwrap();
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        B64.decode(k).unwrap(),
    )
    .verify(signed.as_bytes(), &B64.decode(sig).unwrap())
    .expect("the VAPID token verifies with berth's public key");
    let (head, claims) = signed.split_once('.').unwrap();
    let head: Value = serde_json::from_slice(&B64.decode(head).unwrap()).unwrap();
    assert_eq!(head["alg"], "ES256");
    let claims: Value = serde_json::from_slice(&B64.decode(claims).unwrap()).unwrap();
    assert_eq!(claims["aud"], format!("http://{addr}"));
    assert_eq!(claims["sub"], "mailto:ops@example.com");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp > now && exp <= now + 24 * 3600, "{claims}");

    // Only the browser's key opens the message.
    let text = open_push_message(&req.body, ua_private, &ua_public, &auth);
    let m: Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(
        (&m["kind"], &m["title"]),
        (&json!("test"), &json!("berth test notification")),
        "{m}"
    );
    assert!(m["body"].as_str().is_some_and(|b| !b.is_empty()), "{m}");
    assert!(
        !String::from_utf8_lossy(&req.body).contains("berth test"),
        "the push service does not see the text"
    );
}
