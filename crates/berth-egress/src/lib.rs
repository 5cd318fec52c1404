//! berth's egress proxy.
//!
//! A workspace container has no network but loopback; its only way out is an HTTP proxy
//! served by the berth server on the host, one listener per workspace (a Unix socket in
//! the workspace's channel directory, relayed to `127.0.0.1:3128` inside the container).
//! This crate is that proxy, independent of the transport:
//!
//! - [`Rule`] / [`Policy`]: ordered allow/deny rules, first match wins, default deny;
//! - [`BUILTIN_TEMPLATES`]: the read-only rule lists (npm, pypi, …) every tenant may attach;
//! - [`Proxy::serve_connection`]: serves one client connection: `CONNECT` tunnels,
//!   absolute-form plain HTTP forwarding, and TLS interception with the berth CA
//!   ([`CertificateAuthority`]) when a rule needs to see methods/paths or a secret is bound
//!   to the host;
//! - [`EgressContext`]: what the server supplies per workspace: the live policy, the attempt
//!   log sink and the placeholder → secret bindings swapped into requests to bound hosts.
//!
//! Integration (server side): load the CA once with
//! [`CertificateAuthority::load_or_create`] (e.g. `$BERTH_DATA_DIR/egress-ca`), build one
//! [`Proxy`], and for each workspace bind a Unix socket in its channel directory; for each
//! accepted stream spawn `proxy.serve_connection(stream, ctx)` with that workspace's
//! context. Inside the workspace set `HTTP_PROXY`/`HTTPS_PROXY`/`http_proxy`/`https_proxy`
//! to `http://127.0.0.1:3128`, `NO_PROXY`/`no_proxy` to `localhost,127.0.0.1,::1`, and
//! point `SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`, `REQUESTS_CA_BUNDLE`, `GIT_SSL_CAINFO`,
//! `CURL_CA_BUNDLE` at a bundle that includes [`CertificateAuthority::cert_pem`].
//!
//! Not handled: HTTP/2 and WebSocket upgrades inside intercepted connections (ALPN offers
//! only http/1.1; `Upgrade` is stripped), secrets in URLs or bodies (only the header values a
//! binding names are swapped, and only inside intercepted TLS).

mod addr;
mod body;
mod ca;
pub mod handoff;
mod proxy;
mod rules;
pub mod splice;
mod templates;
mod tunnel;
mod upstream;

pub use addr::{special_purpose, LocalAddrs};
pub use ca::{CertificateAuthority, CA_CERT_FILE, CA_KEY_FILE};
pub use proxy::{Proxy, Resolver, DEFAULT_TUNNEL_IDLE_TIMEOUT};
pub use rules::{
    canonical_path, is_ip_literal, normalize_host, Action, Attempt, Cidr, ConnectPlan, Decision,
    HostPattern, Policy, Rule, RuleError,
};
pub use templates::{builtin_template, BuiltinTemplate, BUILTIN_TEMPLATES};
pub use upstream::UpstreamTls;

use berth_domain::Secret;

/// What the server supplies for one workspace's proxy listener.
pub trait EgressContext: Send + Sync + 'static {
    /// The rules in force; read on every attempt, so changes apply live.
    fn policy(&self) -> Policy;
    /// Called once per attempt, allowed or denied (for tunnels and forwarded requests, when
    /// they end, with the byte counts).
    fn record(&self, entry: LogEntry);
    /// Placeholder → real value pairs to swap into requests to `host` (normalized). Read on
    /// every request, so a deleted or rotated secret takes effect at once. Only used inside
    /// intercepted TLS: the real value never crosses the wire in clear.
    fn secrets_for_host(&self, host: &str) -> Vec<SecretBinding>;
    /// Called (besides [`EgressContext::record`]) for each attempt the rules themselves denied:
    /// no rule allowed it, or a `deny` rule matched (`rule`: its label). Not for refusals of
    /// another kind (a malformed or mismatched request, a private address, a failed handshake).
    /// berth turns these into access requests. Must not block.
    fn denied(&self, _attempt: &Attempt, _rule: Option<String>) {}
}

/// The header a binding is swapped into when it names none.
pub const DEFAULT_SECRET_HEADER: &str = "authorization";

/// A placeholder that the workspace sees, and the real value the proxy swaps in for it in
/// requests to the host it is bound to: only in the headers the binding names, never in
/// other headers (an origin that reflects a header must not reflect the real value), never
/// in bodies or URLs.
#[derive(Clone, Debug)]
pub struct SecretBinding {
    pub placeholder: String,
    pub value: Secret,
    /// Lower-case header names the value may be swapped into; empty means
    /// [`DEFAULT_SECRET_HEADER`] only.
    pub headers: Vec<String>,
}

impl SecretBinding {
    /// A binding swapped into `Authorization` only.
    pub fn new(placeholder: impl Into<String>, value: Secret) -> Self {
        Self {
            placeholder: placeholder.into(),
            value,
            headers: Vec::new(),
        }
    }

    /// Whether the binding may be swapped into the header `name` (any case).
    pub fn applies_to(&self, name: &str) -> bool {
        if self.headers.is_empty() {
            return name.eq_ignore_ascii_case(DEFAULT_SECRET_HEADER);
        }
        self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// Headers that cannot carry a secret (besides every `proxy-*` one): the proxy rewrites or drops
/// them itself.
pub const SECRET_HEADERS_REFUSED: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Checks a header name for a secret binding and returns it lower-cased. Refuses names that
/// are not valid header names and the ones the proxy rewrites or drops itself (`Host`, the
/// hop-by-hop and framing headers, `Proxy-*`).
pub fn secret_header_name(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    if http::header::HeaderName::from_bytes(lower.as_bytes()).is_err() || lower.is_empty() {
        return Err(format!("{name:?} is not a header name"));
    }
    if SECRET_HEADERS_REFUSED.contains(&lower.as_str()) || lower.starts_with("proxy-") {
        return Err(format!(
            "{name:?} cannot carry a secret (the proxy sets or drops it)"
        ));
    }
    Ok(lower)
}

/// One egress attempt, as recorded through [`EgressContext::record`] (berth's one egress record;
/// the proxy leaves `task_id` empty).
pub use berth_domain::EgressRecord as LogEntry;
