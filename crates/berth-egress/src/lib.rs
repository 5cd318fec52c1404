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
//! only http/1.1; `Upgrade` is stripped), secrets in URLs or bodies (only header values
//! are swapped).

mod body;
mod ca;
pub mod handoff;
mod proxy;
mod rules;
pub mod splice;
mod templates;
mod upstream;

pub use ca::{CertificateAuthority, CA_CERT_FILE, CA_KEY_FILE};
pub use proxy::{Proxy, Resolver};
pub use rules::{
    canonical_path, is_ip_literal, normalize_host, Action, Attempt, ConnectPlan, Decision,
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
    /// Placeholder → real value pairs to swap into requests to `host` (normalized).
    fn secrets_for_host(&self, host: &str) -> Vec<SecretBinding>;
}

/// A placeholder that the workspace sees, and the real value the proxy swaps in for it in
/// requests to the host it is bound to.
#[derive(Clone, Debug)]
pub struct SecretBinding {
    pub placeholder: String,
    pub value: Secret,
}

/// One egress attempt, as recorded through [`EgressContext::record`]. Never carries header
/// values or secrets.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogEntry {
    /// `None` for a CONNECT that was tunnelled or refused as a whole.
    pub method: Option<String>,
    pub host: String,
    pub port: u16,
    /// Request path with query (`None` for a CONNECT).
    pub path: Option<String>,
    /// `"allow"` or `"deny"`.
    pub decision: String,
    /// Text of the rule that decided, if one did.
    pub rule: Option<String>,
    pub reason: String,
    /// Bytes from the workspace to the origin (request body, or tunnel bytes).
    pub bytes_up: u64,
    /// Bytes from the origin to the workspace (response body, or tunnel bytes).
    pub bytes_down: u64,
    /// Whether the request was seen inside an intercepted TLS connection.
    pub intercepted: bool,
    /// When the attempt started (RFC 3339, UTC).
    pub at: String,
}
