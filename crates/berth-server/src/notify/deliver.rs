//! One delivery attempt: the request a channel makes of an event (berth's JSON, Slack's
//! `{"text"}`, ntfy's plain text with headers, a Web Push message encrypted for the browser
//! with a VAPID token), its HMAC-SHA256 signature, and the POST to an
//! address checked against the SSRF policy at that moment (the host is resolved here, every
//! address it has is checked, and the connection goes to the checked address, so a DNS answer
//! that changes between the check and the connect cannot redirect it). No redirects are
//! followed, no proxy is used, the whole attempt has a short timeout and the answer's body is
//! not read.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use berth_api as api;
use berth_domain::notify::{Channel, NotifyKind};
use berth_domain::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The whole attempt (connect, TLS, request, status line).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// `v1=` and the hex HMAC-SHA256 of `timestamp + "." + body` under `secret`: the value of
/// `X-Berth-Signature`.
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The request a channel makes of an event: body, content type, extra headers. A Web Push
/// body is the plaintext, encrypted by [`attempt`] for the browser.
pub fn render(
    channel: Channel,
    ev: &api::NotificationEvent,
) -> (Vec<u8>, &'static str, Vec<(&'static str, String)>) {
    let kind = NotifyKind::parse(&ev.kind).unwrap_or(NotifyKind::Test);
    match channel {
        Channel::Webhook => (
            serde_json::to_vec(ev).unwrap_or_default(),
            "application/json",
            Vec::new(),
        ),
        Channel::Slack => {
            let mut text = format!("*{}* {}", ev.title, ev.text);
            if let Some(link) = &ev.link {
                text.push_str(&format!(" <{link}|Open in berth>"));
            }
            (
                serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default(),
                "application/json",
                Vec::new(),
            )
        }
        Channel::Ntfy => {
            let mut headers = vec![
                ("Title", header_safe(&ev.title)),
                ("Priority", kind.priority().to_string()),
                ("Tags", kind.tags().to_owned()),
            ];
            if let Some(link) = &ev.link {
                headers.push(("Click", header_safe(link)));
            }
            (
                ev.text.clone().into_bytes(),
                "text/plain; charset=utf-8",
                headers,
            )
        }
        Channel::WebPush => (push_message(ev), "application/json", Vec::new()),
    }
}

/// What berth's service worker shows (`title`, `body`, and `url` to open on a click), as JSON
/// no longer than one push may carry: a long text is cut.
fn push_message(ev: &api::NotificationEvent) -> Vec<u8> {
    let message = |text: &str| {
        serde_json::to_vec(&serde_json::json!({
            "title": ev.title,
            "body": text,
            "kind": ev.kind,
            "id": ev.id,
            "url": ev.link,
        }))
        .unwrap_or_default()
    };
    let mut text: String = ev.text.chars().take(1000).collect();
    loop {
        let m = message(&text);
        if m.len() <= super::webpush::MAX_PLAINTEXT || text.is_empty() {
            return m;
        }
        let keep = text.chars().count() / 2;
        text = text.chars().take(keep).collect();
    }
}

/// A header value: printable ASCII only (ntfy reads UTF-8 titles only when encoded; berth's
/// titles are ASCII anyway).
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Why an address may not receive notifications (`None`: it may), unless private targets are
/// allowed.
pub fn refused_address(ip: IpAddr, local: &berth_egress::LocalAddrs) -> Option<String> {
    if let Some(why) = berth_egress::special_purpose(ip) {
        return Some(format!("{ip} is a {why}"));
    }
    if local.contains(ip) {
        return Some(format!("{ip} is an address of this server"));
    }
    None
}

/// A notification URL, parsed and checked for form (not yet for where it points).
pub fn parse_url(url: &str) -> Result<reqwest::Url, String> {
    if url.len() > api::MAX_NOTIFY_URL {
        return Err(format!(
            "the URL is longer than {} characters",
            api::MAX_NOTIFY_URL
        ));
    }
    let u = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("the URL must be http or https".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(u)
}

/// The address a URL's host names literally (`10.0.0.1`, `[::1]`), if it is one.
fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Resolves the URL's host and checks every address: the one to connect to, or why none may be
/// used (`Err((refused, message))`: `refused` is true for a policy refusal, false for a failed
/// lookup).
pub async fn resolve(
    u: &reqwest::Url,
    allow_private: bool,
    local: &berth_egress::LocalAddrs,
) -> Result<SocketAddr, (bool, String)> {
    let port = u.port_or_known_default().unwrap_or(443);
    let host = u.host_str().unwrap_or_default();
    let addrs: Vec<SocketAddr> = match literal_ip(host) {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => {
            let lookup = tokio::net::lookup_host((host, port));
            match tokio::time::timeout(CONNECT_TIMEOUT, lookup).await {
                Ok(Ok(a)) => a.collect(),
                Ok(Err(e)) => return Err((false, format!("cannot resolve {host}: {e}"))),
                Err(_) => return Err((false, format!("resolving {host} timed out"))),
            }
        }
    };
    let Some(first) = addrs.first().copied() else {
        return Err((false, "the host has no address".into()));
    };
    if !allow_private {
        // Every address must pass: a name with one public and one private address could be
        // made to connect to either.
        for a in &addrs {
            if let Some(why) = refused_address(a.ip(), local) {
                return Err((
                    true,
                    format!(
                        "refused: {why} (set BERTH_NOTIFY_ALLOW_PRIVATE=1 on the server to allow \
                         private targets)"
                    ),
                ));
            }
        }
    }
    Ok(first)
}

/// Makes one attempt: checks the target, signs (a webhook) or encrypts and authorises (Web
/// Push), POSTs, and reports the status or the error. `secret` is the signing secret, or a Web
/// Push subscription's keys.
#[allow(clippy::too_many_arguments)]
pub async fn attempt(
    url: &Secret,
    secret: &Secret,
    channel: Channel,
    ev: &api::NotificationEvent,
    delivery_id: i64,
    allow_private: bool,
    local: &berth_egress::LocalAddrs,
    vapid: &super::webpush::Vapid,
) -> Outcome {
    let started = Instant::now();
    let done = |status: Option<u16>, error: Option<String>| Outcome {
        status,
        error,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let u = match parse_url(url.expose()) {
        Ok(u) => u,
        Err(e) => return done(None, Some(e)),
    };
    let addr = match resolve(&u, allow_private, local).await {
        Ok(a) => a,
        Err((_, e)) => return done(None, Some(e)),
    };
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
    if let Some(host) = u.host_str().filter(|h| literal_ip(h).is_none()) {
        builder = builder.resolve(host, addr);
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => return done(None, Some(format!("cannot build the HTTP client: {e}"))),
    };
    let (body, content_type, headers) = render(channel, ev);
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    if channel == Channel::WebPush {
        let req = match push_request(&client, vapid, secret, u, ev, &body, ts) {
            Ok(r) => r,
            Err(e) => return done(None, Some(e)),
        };
        return match req.send().await {
            Ok(resp) => done(Some(resp.status().as_u16()), None),
            Err(e) => done(None, Some(describe(&e))),
        };
    }
    let mut req = client
        .post(u)
        .header("Content-Type", content_type)
        .header("X-Berth-Event", &ev.kind)
        .header("X-Berth-Delivery", delivery_id.to_string())
        .header("X-Berth-Timestamp", ts.to_string())
        .header("X-Berth-Signature", sign(secret, ts, &body));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    match req.body(body).send().await {
        // The body is not read: nothing a receiver says is kept beyond its status.
        Ok(resp) => done(Some(resp.status().as_u16()), None),
        Err(e) => done(None, Some(describe(&e))),
    }
}

/// The Web Push request (RFC 8030): the message encrypted for the browser's keys, a VAPID
/// token for the push service's origin, how long the service may hold it (`TTL`) and how urgent
/// it is.
fn push_request(
    client: &reqwest::Client,
    vapid: &super::webpush::Vapid,
    keys: &Secret,
    u: reqwest::Url,
    ev: &api::NotificationEvent,
    plaintext: &[u8],
    now: i64,
) -> Result<reqwest::RequestBuilder, String> {
    let keys = super::webpush::PushKeys::from_stored(keys.expose())
        .ok_or("the subscription's keys are unreadable")?;
    let body = vapid
        .encrypt(&keys, plaintext)
        .map_err(|e| format!("cannot encrypt the message: {e}"))?;
    let auth = vapid
        .authorization(&u, u64::try_from(now).unwrap_or(0))
        .map_err(|e| e.to_string())?;
    let kind = NotifyKind::parse(&ev.kind).unwrap_or(NotifyKind::Test);
    let urgency = if kind.priority() >= 4 {
        "high"
    } else {
        "normal"
    };
    Ok(client
        .post(u)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Encoding", "aes128gcm")
        .header("TTL", "86400")
        .header("Urgency", urgency)
        .header("Authorization", auth)
        .body(body))
}

/// A reqwest error in one line, without the URL (it may hold a secret).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature is HMAC-SHA256 over `timestamp.body` (RFC 4231 test case 2's key and data
    /// give its published digest when the timestamp and dot are part of the data).
    #[test]
    fn signatures_are_hmac_sha256_over_timestamp_dot_body() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        // Split the data as "<timestamp>.<body>" cannot be (the data has no digits), so check
        // the construction against an independent HMAC of the joined string instead.
        let secret = Secret::new("Jefe");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let s = sign(&secret, 1_700_000_000, b"{\"a\":1}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        assert_eq!(
            s,
            format!("v1={}", hex::encode(mac.finalize().into_bytes()))
        );
        // Any change of timestamp, body or key changes it.
        assert_ne!(s, sign(&secret, 1_700_000_001, b"{\"a\":1}"));
        assert_ne!(s, sign(&secret, 1_700_000_000, b"{\"a\":2}"));
        assert_ne!(s, sign(&Secret::new("jefe"), 1_700_000_000, b"{\"a\":1}"));
    }

    fn event() -> api::NotificationEvent {
        api::NotificationEvent {
            id: 7,
            kind: "task.failed".into(),
            at: berth_domain::Timestamp::parse("2026-12-04T10:00:00.000Z").unwrap(),
            title: "Task failed".into(),
            text: "task t_1 in acme/web failed".into(),
            tenant: "acme".into(),
            workspace: Some("acme/web".into()),
            link: Some("https://berth.example/#/tasks/t_1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn channels_render_their_shapes() {
        let (body, ct, h) = render(Channel::Webhook, &event());
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "task.failed");
        assert!(h.is_empty());
        let (body, _, _) = render(Channel::Slack, &event());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["text"],
            "*Task failed* task t_1 in acme/web failed <https://berth.example/#/tasks/t_1|Open in berth>"
        );
        assert_eq!(v.as_object().unwrap().len(), 1);
        let (body, ct, h) = render(Channel::Ntfy, &event());
        assert_eq!(body, b"task t_1 in acme/web failed");
        assert!(ct.starts_with("text/plain"));
        assert!(h.contains(&("Title", "Task failed".to_owned())));
        assert!(h.contains(&("Priority", "4".to_owned())));
        assert!(h.contains(&("Tags", "x".to_owned())));
    }

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed() {
        let local = berth_egress::LocalAddrs::new();
        for url in [
            "http://127.0.0.1:9/x",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/",
            "http://localhost:1/",
        ] {
            let u = parse_url(url).unwrap();
            let r = resolve(&u, false, &local).await;
            assert!(matches!(&r, Err((true, _))), "{url}: {r:?}");
            assert!(resolve(&u, true, &local).await.is_ok(), "{url}");
        }
        let public = parse_url("http://93.184.215.14/").unwrap();
        assert!(resolve(&public, false, &local).await.is_ok());
        assert!(parse_url("ftp://example.com/").is_err());
        assert!(parse_url("file:///etc/passwd").is_err());
    }
}
