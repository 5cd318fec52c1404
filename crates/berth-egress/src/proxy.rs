//! The proxy: one client connection at a time, CONNECT tunnels, plain HTTP forwarding and
//! TLS interception.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use berth_domain::Timestamp;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};

use crate::addr::{special_purpose, LocalAddrs};
use crate::body::Counted;
use crate::rules::{
    canonical_path, is_ip_literal, normalize_host, split_host_port, ConnectPlan, Decision,
};
use crate::tunnel::{self, TunnelEnd};
use crate::UpstreamTls;
use crate::{Attempt, CertificateAuthority, EgressContext, LogEntry, Policy, SecretBinding};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RespBody = UnsyncBoxBody<Bytes, BoxError>;
type ReqBody = Counted<Incoming>;
type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Resolver override: `Some(addrs)` answers for `(host, port)`, `None` falls back to the
/// host's resolver.
pub type Resolver = Arc<dyn Fn(&str, u16) -> Option<Vec<SocketAddr>> + Send + Sync>;

/// Largest request head (request line + headers) accepted from a client.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);
const DNS_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A plain tunnel with no byte in either direction for this long is closed.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The egress proxy. Cheap to clone; one value serves every workspace (the per-workspace
/// part is the [`EgressContext`] passed to [`Proxy::serve_connection`]).
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
    /// Operator-configured names (trusted: see [`Proxy::with_resolver`]).
    resolver: Option<Resolver>,
    /// A stand-in for DNS (untrusted, like DNS itself).
    dns: Option<Resolver>,
    tunnel_idle: Duration,
}

struct Inner {
    ca: CertificateAuthority,
    upstream_tls: Result<Arc<rustls::ClientConfig>, String>,
    local: LocalAddrs,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Proxy {
    pub fn new(ca: CertificateAuthority, upstream_tls: UpstreamTls) -> Proxy {
        let upstream_tls = upstream_tls.client_config().map_err(|e| e.to_string());
        Proxy {
            inner: Arc::new(Inner {
                ca,
                upstream_tls,
                local: LocalAddrs::new(),
            }),
            resolver: None,
            dns: None,
            tunnel_idle: DEFAULT_TUNNEL_IDLE_TIMEOUT,
        }
    }

    /// Static names configured by the operator (`BERTH_EGRESS_HOSTS`; tests point names like
    /// `github.test` at loopback servers without touching /etc/hosts), answered before DNS.
    /// They are trusted: a name it answers may lead to a special-purpose address (private,
    /// loopback, …) when the deciding rule names it exactly. A broad rule (`*`, `*.suffix`)
    /// matching it still gets only public addresses.
    pub fn with_resolver(mut self, resolver: Resolver) -> Proxy {
        self.resolver = Some(resolver);
        self
    }

    /// Replaces DNS for the names the hook answers, with DNS's trust: answers are checked
    /// like any resolved address (tests of what a hostile DNS answer can do).
    pub fn with_dns(mut self, dns: Resolver) -> Proxy {
        self.dns = Some(dns);
        self
    }

    /// How long a plain tunnel may carry no byte in either direction before it is closed
    /// (default [`DEFAULT_TUNNEL_IDLE_TIMEOUT`]).
    pub fn with_tunnel_idle_timeout(mut self, idle: Duration) -> Proxy {
        self.tunnel_idle = idle;
        self
    }

    /// The berth CA certificate (PEM) that workspaces must trust for intercepted hosts.
    pub fn ca_cert_pem(&self) -> String {
        self.inner.ca.cert_pem()
    }

    /// Serves one client connection (a `UnixStream` from the workspace's socket, or a
    /// `TcpStream` in tests) until it closes, including any tunnel or intercepted TLS
    /// session it turns into.
    pub async fn serve_connection<S>(&self, io: S, ctx: Arc<dyn EgressContext>) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let after: Arc<Mutex<Option<BoxFut>>> = Arc::new(Mutex::new(None));
        let conn = Conn {
            proxy: self.clone(),
            ctx,
            pool: Arc::new(tokio::sync::Mutex::new(None)),
            after: after.clone(),
        };
        let service = service_fn(move |req| {
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(conn.handle(req).await) }
        });
        let result = server_builder()
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
            .await;
        let next = berth_domain::sync::lock(&after).take();
        if let Some(next) = next {
            next.await;
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_benign(&e) => Ok(()),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

fn server_builder() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    b
}

fn is_benign(e: &hyper::Error) -> bool {
    e.is_incomplete_message() || e.is_canceled() || e.is_closed() || e.is_timeout()
}

/// Per client connection state.
#[derive(Clone)]
struct Conn {
    proxy: Proxy,
    ctx: Arc<dyn EgressContext>,
    /// One reusable upstream connection.
    pool: Arc<tokio::sync::Mutex<Option<Pooled>>>,
    /// Work to run once hyper hands the raw connection over (tunnel or interception).
    after: Arc<Mutex<Option<BoxFut>>>,
}

struct Pooled {
    /// (tls, host, port)
    key: (bool, String, u16),
    /// The address it is connected to, and whether the name came from the static names.
    peer: IpAddr,
    static_name: bool,
    sender: SendRequest<ReqBody>,
}

/// What decides which resolved addresses an attempt may use (see [`Proxy::permits`]).
struct Gate<'a> {
    policy: &'a Policy,
    attempt: &'a Attempt,
    /// The deciding rule names the host exactly (a name, not `*` or `*.suffix`).
    exact: bool,
}

/// Where a request goes.
#[derive(Clone)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    intercepted: bool,
}

fn text(status: StatusCode, body: String) -> Response<RespBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn empty(status: StatusCode) -> Response<RespBody> {
    let mut resp = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp
}

fn bad_request(msg: &str) -> Response<RespBody> {
    text(StatusCode::BAD_REQUEST, format!("berth egress: {msg}\n"))
}

fn forbidden(what: &str, reason: &str) -> Response<RespBody> {
    text(
        StatusCode::FORBIDDEN,
        format!("berth egress: {what} is not allowed for this workspace ({reason})\n"),
    )
}

fn host_port_text(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Parses an authority (`host[:port]`, userinfo refused) into a normalized host and port.
fn parse_authority(s: &str, default_port: u16) -> Option<(String, u16)> {
    if s.contains('@') {
        return None;
    }
    let (host, port) = split_host_port(s)?;
    let host = normalize_host(host)?;
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
    };
    Some((host, port))
}

impl Conn {
    fn log(
        &self,
        policy: &Policy,
        attempt: &Attempt,
        decision: &Decision,
        intercepted: bool,
        at: Timestamp,
    ) -> LogEntry {
        LogEntry {
            method: attempt.method.clone(),
            host: attempt.host.clone(),
            port: attempt.port,
            path: attempt.path.clone(),
            decision: if decision.allow { "allow" } else { "deny" }.to_string(),
            rule: policy.rule_label(decision.rule),
            reason: decision.reason.clone(),
            bytes_up: 0,
            bytes_down: 0,
            intercepted,
            at,
            task_id: None,
        }
    }

    fn record(&self, entry: LogEntry) {
        tracing::debug!(
            host = %entry.host,
            port = entry.port,
            method = entry.method.as_deref().unwrap_or("CONNECT"),
            decision = %entry.decision,
            reason = %entry.reason,
            intercepted = entry.intercepted,
            "egress attempt"
        );
        self.ctx.record(entry);
    }

    fn deny(
        &self,
        policy: &Policy,
        attempt: &Attempt,
        decision: &Decision,
        intercepted: bool,
        at: Timestamp,
    ) -> Response<RespBody> {
        self.record(self.log(policy, attempt, decision, intercepted, at));
        let what = match (&attempt.method, &attempt.path) {
            (Some(m), Some(p)) => format!(
                "{m} {}{}",
                host_port_text(&attempt.host, attempt.port),
                truncate(p, 200)
            ),
            _ => host_port_text(&attempt.host, attempt.port),
        };
        forbidden(&what, &decision.reason)
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<RespBody> {
        if head_size(&req) > MAX_HEAD_BYTES {
            return text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "berth egress: request head too large\n".to_string(),
            );
        }
        if req.method() == Method::CONNECT {
            return self.handle_connect(req).await;
        }
        let uri = req.uri().clone();
        match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(authority)) => {
                let Some((host, port)) = parse_authority(authority.as_str(), 80) else {
                    return bad_request("invalid host in request URL");
                };
                let target = Target {
                    tls: false,
                    host,
                    port,
                    intercepted: false,
                };
                self.handle_request(req, target).await
            }
            (Some(_), Some(_)) => {
                bad_request("only http:// URLs can be proxied directly; use CONNECT for https")
            }
            _ => bad_request(
                "this is an HTTP proxy: send absolute-form requests (GET http://host/path) or CONNECT",
            ),
        }
    }

    async fn handle_connect(&self, req: Request<Incoming>) -> Response<RespBody> {
        let at = Timestamp::now();
        let (host, port) = match connect_target(&req) {
            Ok(t) => t,
            Err(why) => return bad_request(why),
        };
        let policy = self.ctx.policy();
        let attempt = Attempt {
            host: host.clone(),
            port,
            method: None,
            path: None,
        };
        let (decision, intercept) = match policy.connect_plan(&host, port) {
            ConnectPlan::Decided(d) if !d.allow => {
                self.ctx.denied(&attempt, policy.rule_label(d.rule));
                return self.deny(&policy, &attempt, &d, false, at);
            }
            ConnectPlan::Decided(d) => {
                let bound = !self.ctx.secrets_for_host(&host).is_empty();
                (d, bound)
            }
            ConnectPlan::PerRequest => (
                Decision {
                    allow: true,
                    rule: None,
                    reason: "decided per request".to_string(),
                },
                true,
            ),
        };
        if intercept {
            let conn = self.clone();
            self.after_upgrade(req, move |upgraded| async move {
                if let Some(upgraded) = upgraded {
                    conn.intercept(upgraded, host, port, at).await;
                }
            });
            return empty(StatusCode::OK);
        }
        self.plain_tunnel(req, &policy, &attempt, &decision, at)
            .await
    }

    /// Once the answer to `req` (a CONNECT) is sent, runs `then` with the upgraded connection
    /// (`None`: the upgrade failed).
    fn after_upgrade<F, Fut>(&self, req: Request<Incoming>, then: F)
    where
        F: FnOnce(Option<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let fut: BoxFut = Box::pin(async move {
            let upgraded = hyper::upgrade::on(req)
                .await
                .inspect_err(|e| tracing::debug!(error = %e, "CONNECT upgrade failed"))
                .ok();
            then(upgraded).await
        });
        *berth_domain::sync::lock(&self.after) = Some(fut);
    }

    /// A CONNECT the host-level decision allowed, not intercepted: connects to the origin and
    /// relays bytes both ways, logging the tunnel (with its byte counts) when it ends.
    async fn plain_tunnel(
        &self,
        req: Request<Incoming>,
        policy: &Policy,
        attempt: &Attempt,
        decision: &Decision,
        at: Timestamp,
    ) -> Response<RespBody> {
        let gate = Gate {
            policy,
            attempt,
            exact: policy
                .rule(decision.rule)
                .is_some_and(|r| r.host.is_exact()),
        };
        let (host, port) = (&attempt.host, attempt.port);
        let upstream = match self.proxy.connect_tcp(host, port, &gate).await {
            Ok((s, _)) => s,
            Err(ConnectError::Refused(reason)) => {
                let d = Decision {
                    allow: false,
                    rule: decision.rule,
                    reason,
                };
                return self.deny(policy, attempt, &d, false, at);
            }
            Err(ConnectError::Failed(reason)) => {
                let d = Decision {
                    allow: true,
                    rule: decision.rule,
                    reason: format!("{}; upstream failed: {reason}", decision.reason),
                };
                self.record(self.log(policy, attempt, &d, false, at));
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "berth egress: cannot reach {}: {reason}\n",
                        host_port_text(host, port)
                    ),
                );
            }
        };
        let mut entry = self.log(policy, attempt, decision, false, at);
        let conn = self.clone();
        let idle = self.proxy.tunnel_idle;
        let host = host.clone();
        self.after_upgrade(req, move |upgraded| async move {
            if let Some(upgraded) = upgraded {
                let client = TokioIo::new(upgraded);
                let (end, up, down) = tunnel::relay(client, upstream, &host, idle).await;
                entry.bytes_up = up;
                entry.bytes_down = down;
                note_tunnel_end(&mut entry, end, idle);
            }
            conn.record(entry);
        });
        empty(StatusCode::OK)
    }

    /// Terminates the client's TLS with a leaf for `host` and serves the requests inside.
    async fn intercept(
        &self,
        upgraded: hyper::upgrade::Upgraded,
        host: String,
        port: u16,
        at: Timestamp,
    ) {
        let policy = self.ctx.policy();
        let attempt = Attempt {
            host: host.clone(),
            port,
            method: None,
            path: None,
        };
        let refuse = |reason: String| {
            let d = Decision {
                allow: false,
                rule: None,
                reason,
            };
            self.record(self.log(&policy, &attempt, &d, true, at.clone()));
        };
        let acceptor =
            LazyConfigAcceptor::new(rustls::server::Acceptor::default(), TokioIo::new(upgraded));
        let start = match tokio::time::timeout(TLS_ACCEPT_TIMEOUT, acceptor).await {
            Ok(Ok(start)) => start,
            Ok(Err(e)) => return refuse(format!("client TLS handshake failed: {e}")),
            Err(_) => return refuse("client TLS handshake timed out".to_string()),
        };
        let sni = start.client_hello().server_name().and_then(normalize_host);
        let sni_ok = match &sni {
            Some(s) => *s == host,
            None => is_ip_literal(&host),
        };
        if !sni_ok {
            return refuse(format!(
                "SNI mismatch: TLS names {} but CONNECT named {host}",
                sni.as_deref().unwrap_or("no host")
            ));
        }
        let cfg = match self.proxy.inner.ca.server_config(&host) {
            Ok(cfg) => cfg,
            Err(e) => return refuse(format!("cannot issue a certificate: {e}")),
        };
        let tls = match tokio::time::timeout(TLS_ACCEPT_TIMEOUT, start.into_stream(cfg)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                return refuse(format!(
                    "client TLS handshake failed (does the client trust the berth CA?): {e}"
                ))
            }
            Err(_) => return refuse("client TLS handshake timed out".to_string()),
        };
        // Requests inside go to the same host; a fresh pool keeps them apart from the
        // outer connection's.
        let conn = Conn {
            proxy: self.proxy.clone(),
            ctx: self.ctx.clone(),
            pool: Arc::new(tokio::sync::Mutex::new(None)),
            after: Arc::new(Mutex::new(None)),
        };
        let service = service_fn(move |req| {
            let conn = conn.clone();
            let host = host.clone();
            async move { Ok::<_, Infallible>(conn.handle_intercepted(req, host, port).await) }
        });
        if let Err(e) = server_builder()
            .serve_connection(TokioIo::new(tls), service)
            .await
        {
            if !is_benign(&e) {
                tracing::debug!(error = %e, "intercepted connection ended with an error");
            }
        }
    }

    async fn handle_intercepted(
        &self,
        req: Request<Incoming>,
        host: String,
        port: u16,
    ) -> Response<RespBody> {
        if head_size(&req) > MAX_HEAD_BYTES {
            return text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "berth egress: request head too large\n".to_string(),
            );
        }
        if req.method() == Method::CONNECT {
            return bad_request("CONNECT inside an intercepted connection");
        }
        if let Some(authority) = req.uri().authority() {
            if parse_authority(authority.as_str(), port).map(|(h, _)| h) != Some(host.clone()) {
                return self.host_mismatch(&req, &host, port, true);
            }
        }
        let target = Target {
            tls: true,
            host,
            port,
            intercepted: true,
        };
        self.handle_request(req, target).await
    }

    fn host_mismatch(
        &self,
        req: &Request<Incoming>,
        host: &str,
        port: u16,
        intercepted: bool,
    ) -> Response<RespBody> {
        let policy = self.ctx.policy();
        let attempt = Attempt {
            host: host.to_string(),
            port,
            method: Some(req.method().as_str().to_string()),
            path: Some(path_of(req.uri())),
        };
        let d = Decision {
            allow: false,
            rule: None,
            reason: "Host mismatch: the Host header names another host".to_string(),
        };
        self.deny(&policy, &attempt, &d, intercepted, Timestamp::now())
    }

    /// Decides and forwards one HTTP request (plain, or inside an intercepted connection).
    async fn handle_request(&self, req: Request<Incoming>, target: Target) -> Response<RespBody> {
        let at = Timestamp::now();
        // The Host header must name the target (a client cannot reach one host while
        // being judged as another).
        if !host_header_names(&req, &target) {
            return self.host_mismatch(&req, &target.host, target.port, target.intercepted);
        }
        let policy = self.ctx.policy();
        let path = path_of(req.uri());
        let attempt = Attempt {
            host: target.host.clone(),
            port: target.port,
            method: Some(req.method().as_str().to_string()),
            path: Some(path.clone()),
        };
        let decision = policy.decide(&attempt);
        if !decision.allow {
            // A path refused as malformed is no question of access.
            if decision.rule.is_some() || canonical_path(&path).is_ok() {
                self.ctx.denied(&attempt, policy.rule_label(decision.rule));
            }
            return self.deny(&policy, &attempt, &decision, target.intercepted, at);
        }
        let gate = Gate {
            policy: &policy,
            attempt: &attempt,
            exact: policy
                .rule(decision.rule)
                .is_some_and(|r| r.host.is_exact()),
        };
        let mut entry = self.log(&policy, &attempt, &decision, target.intercepted, at);
        let up_counter = Arc::new(AtomicU64::new(0));
        let Some(up_req) = self.upstream_request(req, &target, &path, up_counter.clone()) else {
            return bad_request("invalid request path");
        };
        let resp = match self.send(&target, &gate, up_req).await {
            Ok(resp) => resp,
            Err(ConnectError::Refused(reason)) => {
                let d = Decision {
                    allow: false,
                    rule: decision.rule,
                    reason,
                };
                return self.deny(&policy, &attempt, &d, target.intercepted, entry.at);
            }
            Err(ConnectError::Failed(reason)) => {
                entry.reason = format!("{}; upstream failed: {reason}", entry.reason);
                entry.bytes_up = up_counter.load(Ordering::Relaxed);
                self.record(entry);
                return text(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "berth egress: cannot reach {}: {reason}\n",
                        host_port_text(&target.host, target.port)
                    ),
                );
            }
        };
        self.relay_response(resp, entry, up_counter)
    }

    /// The request to send upstream: origin-form, hop-by-hop headers dropped, secrets in, its
    /// body counted into `up_counter`. `None`: the path is no valid request target.
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        target: &Target,
        path: &str,
        up_counter: Arc<AtomicU64>,
    ) -> Option<Request<ReqBody>> {
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        // Real values go only into TLS the proxy itself opened to the bound host: never into
        // plain HTTP, where they would cross the wire in clear.
        if target.tls && target.intercepted {
            let secrets = self.ctx.secrets_for_host(&target.host);
            swap_secrets(&mut headers, &secrets);
        }
        let host_value = HeaderValue::from_str(&authority_text(target))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        headers.insert(header::HOST, host_value);
        let uri = path.parse::<Uri>().ok()?;
        let mut up_req = Request::new(Counted::new(body, up_counter));
        *up_req.method_mut() = parts.method;
        *up_req.uri_mut() = uri;
        *up_req.version_mut() = Version::HTTP_11;
        *up_req.headers_mut() = headers;
        Some(up_req)
    }

    /// The origin's answer for the client, hop-by-hop headers dropped; `entry` is recorded,
    /// with the bytes both ways, once its body is done.
    fn relay_response(
        &self,
        resp: Response<Incoming>,
        mut entry: LogEntry,
        up_counter: Arc<AtomicU64>,
    ) -> Response<RespBody> {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let down_counter = Arc::new(AtomicU64::new(0));
        let ctx = self.ctx.clone();
        let down = down_counter.clone();
        let body = Counted::new(body, down_counter).on_drop(move || {
            entry.bytes_up = up_counter.load(Ordering::Relaxed);
            entry.bytes_down = down.load(Ordering::Relaxed);
            tracing::debug!(
                host = %entry.host,
                port = entry.port,
                decision = %entry.decision,
                bytes_up = entry.bytes_up,
                bytes_down = entry.bytes_down,
                intercepted = entry.intercepted,
                "egress request done"
            );
            ctx.record(entry);
        });
        let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
        Response::from_parts(parts, body)
    }

    /// Sends a request upstream over the pooled connection or a new one.
    /// Sends a request upstream over the pooled connection (when its address is still one
    /// this attempt may use) or a new one.
    async fn send(
        &self,
        target: &Target,
        gate: &Gate<'_>,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, ConnectError> {
        let key = (target.tls, target.host.clone(), target.port);
        let mut slot = self.pool.lock().await;
        let mut pooled = match slot.take() {
            Some(p)
                if p.key == key
                    && !p.sender.is_closed()
                    && self.proxy.permits(gate, p.peer, p.static_name) =>
            {
                let mut p = p;
                match p.sender.ready().await {
                    Ok(()) => Some(p),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        if pooled.is_none() {
            let (sender, peer, static_name) = self.proxy.connect_http(target, gate).await?;
            pooled = Some(Pooled {
                key,
                peer,
                static_name,
                sender,
            });
        }
        let Some(mut pooled) = pooled else {
            return Err(ConnectError::Failed("no connection".to_string()));
        };
        let resp = pooled
            .sender
            .send_request(req)
            .await
            .map_err(|e| ConnectError::Failed(e.to_string()))?;
        *slot = Some(pooled);
        Ok(resp)
    }
}

/// Approximate size of a request head as sent.
fn head_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn path_of(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_string())
}

fn authority_text(target: &Target) -> String {
    let default = if target.tls { 443 } else { 80 };
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    if target.port == default {
        host
    } else {
        format!("{host}:{}", target.port)
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Option<Vec<u8>> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    let mut found = false;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
            found = true;
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    found.then_some(out)
}

fn swap_all(value: &[u8], secrets: &[&SecretBinding]) -> Option<Vec<u8>> {
    let mut current: Option<Vec<u8>> = None;
    for s in secrets {
        let base = current.as_deref().unwrap_or(value);
        if let Some(next) = replace_all(base, s.placeholder.as_bytes(), s.value.expose().as_bytes())
        {
            current = Some(next);
        }
    }
    current
}

/// Swaps placeholders for secret values in the headers each binding names (by default
/// `Authorization` only); `Authorization: Basic` credentials are decoded, swapped and
/// re-encoded. Other headers keep their placeholders.
pub(crate) fn swap_secrets(headers: &mut HeaderMap, secrets: &[SecretBinding]) {
    if secrets.is_empty() {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().cloned().collect();
    for name in names {
        let secrets: Vec<&SecretBinding> = secrets
            .iter()
            .filter(|b| b.applies_to(name.as_str()))
            .collect();
        if secrets.is_empty() {
            continue;
        }
        let secrets = secrets.as_slice();
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        let mut changed = false;
        let mut new_values = Vec::with_capacity(values.len());
        for v in values {
            let swapped = if name == header::AUTHORIZATION {
                swap_basic(v.as_bytes(), secrets).or_else(|| swap_all(v.as_bytes(), secrets))
            } else {
                swap_all(v.as_bytes(), secrets)
            };
            match swapped.map(|b| HeaderValue::from_bytes(&b)) {
                Some(Ok(mut nv)) => {
                    nv.set_sensitive(true);
                    new_values.push(nv);
                    changed = true;
                }
                Some(Err(_)) => {
                    tracing::warn!(header = %name, "secret value is not valid in a header; left the placeholder");
                    new_values.push(v);
                }
                None => new_values.push(v),
            }
        }
        if changed {
            headers.remove(&name);
            for v in new_values {
                headers.append(name.clone(), v);
            }
        }
    }
}

fn swap_basic(value: &[u8], secrets: &[&SecretBinding]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(value).ok()?;
    let (scheme, cred) = s.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let decoded = engine.decode(cred.trim()).ok()?;
    let swapped = swap_all(&decoded, secrets)?;
    Some(format!("Basic {}", engine.encode(swapped)).into_bytes())
}

enum ConnectError {
    /// Not allowed (e.g. the name resolves only to special-purpose addresses).
    Refused(String),
    /// Allowed, but could not be reached.
    Failed(String),
}

/// Whether the request's Host header, if any, names the target (one Host header at most).
fn host_header_names(req: &Request<Incoming>, target: &Target) -> bool {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => true,
        (Some(h), None) => h
            .to_str()
            .ok()
            .and_then(|h| parse_authority(h, target.port))
            .is_some_and(|(h, p)| h == target.host && p == target.port),
        (Some(_), Some(_)) => false,
    }
}

/// The `host:port` a CONNECT names (the host normalized, the port not 0), or what the 400
/// answer says.
fn connect_target(req: &Request<Incoming>) -> Result<(String, u16), &'static str> {
    let Some(authority) = req.uri().authority() else {
        return Err("CONNECT needs host:port");
    };
    let Some((host, Some(port_text))) = split_host_port(authority.as_str()) else {
        return Err("CONNECT needs host:port");
    };
    match (
        normalize_host(host),
        port_text.parse::<u16>().ok().filter(|p| *p != 0),
    ) {
        (Some(host), Some(port)) => Ok((host, port)),
        _ => Err("CONNECT needs a valid host:port"),
    }
}

/// Notes in a tunnel's log entry how it ended.
fn note_tunnel_end(entry: &mut LogEntry, end: TunnelEnd, idle: Duration) {
    match end {
        TunnelEnd::Done => {}
        TunnelEnd::Idle => {
            entry.reason = format!(
                "{}; closed after {}s without traffic",
                entry.reason,
                idle.as_secs()
            );
        }
        TunnelEnd::Refused(why) => {
            entry.decision = "deny".to_string();
            entry.reason = why;
        }
        TunnelEnd::Failed(e) => tracing::debug!(error = %e, "tunnel ended with an error"),
    }
}

impl Proxy {
    /// Whether an attempt may connect to `ip`: an ordinary public address that is not the
    /// host's own, or an address the policy allows as an IP literal (a rule naming the IP or
    /// a CIDR block containing it), or any address of a static (operator-configured) name
    /// whose deciding rule names it exactly.
    fn permits(&self, gate: &Gate<'_>, ip: IpAddr, static_name: bool) -> bool {
        if self.refusal(ip).is_none() || (static_name && gate.exact) {
            return true;
        }
        let as_literal = Attempt {
            host: ip.to_string(),
            ..gate.attempt.clone()
        };
        gate.policy.decide(&as_literal).allow
    }

    /// Why `ip` needs a rule naming it (`None`: it does not).
    fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        special_purpose(ip).or_else(|| {
            self.inner
                .local
                .contains(ip)
                .then_some("an address of the berth host itself")
        })
    }

    /// The addresses for `host`, and whether they come from the static names.
    async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(Vec<SocketAddr>, bool), ConnectError> {
        if let Some(r) = &self.resolver {
            if let Some(addrs) = r(host, port) {
                return Ok((addrs, true));
            }
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok((vec![SocketAddr::new(ip, port)], false));
        }
        if let Some(dns) = &self.dns {
            if let Some(addrs) = dns(host, port) {
                return Ok((addrs, false));
            }
        }
        match tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => Ok((addrs.collect(), false)),
            Ok(Err(e)) => Err(ConnectError::Failed(format!("cannot resolve {host}: {e}"))),
            Err(_) => Err(ConnectError::Failed(format!("resolving {host} timed out"))),
        }
    }

    /// Resolves on the host and connects to the first address the gate permits (see
    /// [`Proxy::permits`]); returns the stream and whether the name is a static one.
    async fn connect_tcp(
        &self,
        host: &str,
        port: u16,
        gate: &Gate<'_>,
    ) -> Result<(TcpStream, bool), ConnectError> {
        let (mut addrs, static_name) = self.resolve(host, port).await?;
        if addrs.is_empty() {
            return Err(ConnectError::Failed(format!("{host} has no addresses")));
        }
        let first_refusal = addrs.iter().find_map(|a| self.refusal(a.ip()));
        addrs.retain(|a| self.permits(gate, a.ip(), static_name));
        if addrs.is_empty() {
            return Err(ConnectError::Refused(format!(
                "{host} leads only to special-purpose addresses ({}); only a rule naming the IP or a CIDR block containing it allows that",
                first_refusal.unwrap_or("refused")
            )));
        }
        let mut last = String::new();
        for addr in addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok((s, static_name));
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "connect timed out".to_string(),
            }
        }
        Err(ConnectError::Failed(last))
    }

    /// A new upstream HTTP/1.1 connection; returns it with its peer address and whether the
    /// name is a static one.
    async fn connect_http(
        &self,
        target: &Target,
        gate: &Gate<'_>,
    ) -> Result<(SendRequest<ReqBody>, IpAddr, bool), ConnectError> {
        let (tcp, static_name) = self.connect_tcp(&target.host, target.port, gate).await?;
        let peer = tcp
            .peer_addr()
            .map_err(|e| ConnectError::Failed(e.to_string()))?
            .ip();
        let sender = if target.tls {
            let cfg = self
                .inner
                .upstream_tls
                .clone()
                .map_err(ConnectError::Failed)?;
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| ConnectError::Failed(format!("invalid TLS name: {e}")))?;
            let tls =
                tokio::time::timeout(CONNECT_TIMEOUT, TlsConnector::from(cfg).connect(name, tcp))
                    .await
                    .map_err(|_| {
                        ConnectError::Failed("upstream TLS handshake timed out".to_string())
                    })?
                    .map_err(|e| ConnectError::Failed(format!("upstream TLS: {e}")))?;
            handshake(tls).await?
        } else {
            handshake(tcp).await?
        };
        Ok((sender, peer, static_name))
    }
}

async fn handshake<S>(io: S) -> Result<SendRequest<ReqBody>, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ConnectError::Failed(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_domain::Secret;

    fn binding(p: &str, v: &str, headers: &[&str]) -> SecretBinding {
        SecretBinding {
            placeholder: p.to_string(),
            value: Secret::new(v),
            headers: headers.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn swaps_only_into_the_named_headers() {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer PH_1"),
        );
        h.insert("x-api-key", HeaderValue::from_static("k=PH_1;PH_1"));
        h.insert("x-other", HeaderValue::from_static("PH_1"));
        // Default: Authorization only; a reflected header keeps the placeholder.
        swap_secrets(&mut h, &[binding("PH_1", "real-1", &[])]);
        assert_eq!(h[header::AUTHORIZATION], "Bearer real-1");
        assert!(h[header::AUTHORIZATION].is_sensitive());
        assert_eq!(h["x-api-key"], "k=PH_1;PH_1");
        assert_eq!(h["x-other"], "PH_1");
        // Named headers only (Authorization no longer among them).
        let mut h2 = HeaderMap::new();
        h2.insert(header::AUTHORIZATION, HeaderValue::from_static("PH_1"));
        h2.insert("x-api-key", HeaderValue::from_static("k=PH_1;PH_1"));
        h2.insert("x-other", HeaderValue::from_static("PH_1"));
        swap_secrets(&mut h2, &[binding("PH_1", "real-1", &["X-Api-Key"])]);
        assert_eq!(h2["x-api-key"], "k=real-1;real-1");
        assert_eq!(h2[header::AUTHORIZATION], "PH_1");
        assert_eq!(h2["x-other"], "PH_1");

        let mut h = HeaderMap::new();
        let basic = format!("Basic {}", engine.encode("x-access-token:PH_2"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&basic).unwrap(),
        );
        swap_secrets(&mut h, &[binding("PH_2", "ghp_real", &[])]);
        let v = h[header::AUTHORIZATION].to_str().unwrap();
        let decoded = engine.decode(v.strip_prefix("Basic ").unwrap()).unwrap();
        assert_eq!(decoded, b"x-access-token:ghp_real");
    }

    #[test]
    fn invalid_secret_leaves_placeholder() {
        let mut h = HeaderMap::new();
        h.insert("x-k", HeaderValue::from_static("PH"));
        swap_secrets(&mut h, &[binding("PH", "bad\r\nvalue", &["x-k"])]);
        assert_eq!(h["x-k"], "PH");
        swap_secrets(&mut h, &[binding("", "x", &["x-k"])]);
        assert_eq!(h["x-k"], "PH");
    }

    #[test]
    fn secret_header_names() {
        assert_eq!(
            crate::secret_header_name("X-Api-Key").as_deref(),
            Ok("x-api-key")
        );
        for bad in [
            "",
            "a b",
            "Host",
            "proxy-authorization",
            "Transfer-Encoding",
            "é",
        ] {
            assert!(crate::secret_header_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn authorities() {
        assert_eq!(
            parse_authority("GitHub.com.", 80),
            Some(("github.com".into(), 80))
        );
        assert_eq!(
            parse_authority("a.test:8080", 80),
            Some(("a.test".into(), 8080))
        );
        assert_eq!(
            parse_authority("[::1]:8080", 80),
            Some(("::1".into(), 8080))
        );
        assert_eq!(
            parse_authority("167772161:8080", 80),
            Some(("10.0.0.1".into(), 8080))
        );
        assert_eq!(parse_authority("u:p@a.test", 80), None);
        assert_eq!(parse_authority("a.test:0", 80), None);
        assert_eq!(parse_authority("a.test:x", 80), None);
    }
}
