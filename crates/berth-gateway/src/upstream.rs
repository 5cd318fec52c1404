//! The providers' real upstreams: their addresses and keys, the HTTP client to them, and how a
//! call's upstream request is put together (URL, the real key in the provider's header).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use berth_domain::{Provider, Secret};

use crate::error::GatewayError;
use crate::policy::Endpoint;
use crate::Gateway;

/// One provider's real upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub base_url: String,
    /// The key, or `vault:TENANT/NAME` for a secret in the server's vault.
    pub api_key: Option<Secret>,
}

/// The configured upstreams (the server's `BERTH_{ANTHROPIC,OPENAI,GEMINI}_{BASE_URL,API_KEY}`).
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub anthropic: Upstream,
    pub openai: Upstream,
    pub gemini: Upstream,
}

impl Upstreams {
    /// The providers' public API addresses.
    pub fn default_base_url(p: Provider) -> &'static str {
        match p {
            Provider::Anthropic => "https://api.anthropic.com",
            Provider::Openai => "https://api.openai.com",
            Provider::Gemini => "https://generativelanguage.googleapis.com",
        }
    }

    pub fn get(&self, p: Provider) -> &Upstream {
        match p {
            Provider::Anthropic => &self.anthropic,
            Provider::Openai => &self.openai,
            Provider::Gemini => &self.gemini,
        }
    }
}

/// The gateway's HTTP client to the providers: HTTP/1.1 with keep-alive, `TCP_NODELAY`, TLS by
/// rustls (ring) trusting the webpki roots and the host's bundle.
pub(crate) type UpstreamClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

pub(crate) fn upstream_client() -> std::io::Result<UpstreamClient> {
    let mut roots = berth_egress::UpstreamTls::webpki();
    if let Err(e) = roots.add_system_bundle() {
        tracing::warn!(error = %e, "cannot read the host's CA bundle; the gateway trusts the built-in roots only");
    }
    let mut tls = (*roots.client_config()?).clone();
    // The connector sets ALPN itself (http/1.1).
    tls.alpn_protocols.clear();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .build(https),
    )
}

/// `base` + `/` + `rest` (+ query without the virtual key), tolerating a base that already ends
/// in the API version the agent also sends (`https://api.openai.com/v1` + `v1/responses`).
pub fn upstream_url(base: &str, rest: &str, query: Option<&str>) -> String {
    let base = base.trim_end_matches('/');
    let mut rest = rest.trim_start_matches('/');
    for version in ["v1/", "v1beta/"] {
        let v = version.trim_end_matches('/');
        if base.ends_with(&format!("/{v}")) && rest.starts_with(version) {
            rest = &rest[version.len()..];
        }
    }
    let mut url = format!("{base}/{rest}");
    if let Some(q) = query {
        let kept: Vec<&str> = q
            .split('&')
            .filter(|kv| !kv.starts_with("key=") && !kv.is_empty())
            .collect();
        if !kept.is_empty() {
            url.push('?');
            url.push_str(&kept.join("&"));
        }
    }
    url
}

/// What goes upstream for one admitted call.
pub(crate) struct Outgoing<'a> {
    pub rest: &'a str,
    pub query: Option<&'a str>,
    pub endpoint: Endpoint,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// What a bounded request to a provider's upstream found (`berth doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It answered with this HTTP status (any answer means it is reachable).
    Answered(u16),
    /// No answer: the connection, TLS or the URL failed, or the time ran out.
    Unreachable(String),
}

impl Gateway {
    /// Whether `p` has an upstream key configured (a value or a `vault:` reference); without
    /// one every call of that provider would be refused.
    pub fn configured(&self, p: Provider) -> bool {
        self.inner.upstreams.get(p).api_key.is_some()
    }

    /// The configured base URL of `p`.
    pub fn base_url(&self, p: Provider) -> &str {
        &self.inner.upstreams.get(p).base_url
    }

    /// One `GET` of `p`'s base URL through the gateway's own upstream client (same TLS trust),
    /// without any key, bounded by `timeout`.
    pub async fn probe(&self, p: Provider, timeout: std::time::Duration) -> Probe {
        let url = self.base_url(p);
        let uri: hyper::Uri = match url.parse() {
            Ok(u) => u,
            Err(e) => return Probe::Unreachable(format!("{url} is not a valid URL: {e}")),
        };
        let mut req = hyper::Request::new(http_body_util::Full::new(bytes::Bytes::new()));
        *req.uri_mut() = uri;
        match tokio::time::timeout(timeout, self.inner.http.request(req)).await {
            Ok(Ok(resp)) => Probe::Answered(resp.status().as_u16()),
            Ok(Err(e)) => Probe::Unreachable(error_chain(&e)),
            Err(_) => Probe::Unreachable(format!("no answer within {} s", timeout.as_secs())),
        }
    }

    /// The real provider key: as configured, or `vault:TENANT/NAME` from the secret source.
    async fn real_key(&self, p: Provider) -> Result<Secret, GatewayError> {
        let key = match self.inner.upstreams.get(p).api_key.clone() {
            Some(k) if k.expose().starts_with("vault:") => {
                let reference = &k.expose()["vault:".len()..];
                match self.vault_key(reference).await {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tracing::error!(provider = p.as_str(), error = %e, "provider key from the vault");
                        return Err(GatewayError::VaultKey);
                    }
                }
            }
            other => other,
        };
        key.ok_or(GatewayError::NoUpstreamKey)
    }

    async fn vault_key(&self, reference: &str) -> anyhow::Result<Secret> {
        let (tenant, name) = reference
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("expected vault:TENANT/NAME, got vault:{reference}"))?;
        let secrets = self
            .inner
            .secrets
            .get()
            .ok_or_else(|| anyhow::anyhow!("no vault"))?;
        secrets.reveal(tenant, name).await
    }

    /// The upstream request of a call: the provider's URL, the real key in its header.
    pub(crate) async fn upstream_request(
        &self,
        p: Provider,
        out: Outgoing<'_>,
    ) -> Result<hyper::Request<http_body_util::Full<bytes::Bytes>>, GatewayError> {
        let real_key = self.real_key(p).await?;
        let url = upstream_url(&self.inner.upstreams.get(p).base_url, out.rest, out.query);
        let uri: hyper::Uri = url.parse().map_err(|e| {
            tracing::error!(provider = p.as_str(), url = %url, error = %e, "gateway upstream URL");
            GatewayError::UpstreamUrl
        })?;
        let mut headers = out.headers;
        let (auth_name, auth_value) = match p {
            Provider::Anthropic => ("x-api-key", real_key.expose().to_owned()),
            Provider::Openai => ("authorization", format!("Bearer {}", real_key.expose())),
            Provider::Gemini => ("x-goog-api-key", real_key.expose().to_owned()),
        };
        if let Ok(v) = HeaderValue::from_str(&auth_value) {
            headers.insert(HeaderName::from_static(auth_name), v);
        }
        let method = if out.endpoint == Endpoint::Models {
            hyper::Method::GET
        } else {
            hyper::Method::POST
        };
        let mut req = hyper::Request::new(http_body_util::Full::new(out.body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        Ok(req)
    }
}

/// An error with its causes, e.g. "client error (Connect): tcp connect error: Connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_answer_with_any_status_and_time_out_quickly() {
        // A listener that answers 404 to anything, one that accepts and never answers, and a
        // closed port.
        let answering = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (a, s, c) = (
            answering.local_addr().unwrap(),
            silent_listener.local_addr().unwrap(),
            closed.local_addr().unwrap(),
        );
        drop(closed);
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut conn, _)) = answering.accept().await {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let up = |url: String| Upstream {
            base_url: url,
            api_key: None,
        };
        let gw = Gateway::new(
            crate::GatewayConfig {
                upstreams: Upstreams {
                    anthropic: up(format!("http://{a}")),
                    openai: up(format!("http://{s}")),
                    gemini: up(format!("http://{c}")),
                },
                recording_days: None,
                reserve_output: 1000,
                prices_file: "/nonexistent".into(),
            },
            berth_store::Store::open_in_memory().await.unwrap(),
        )
        .unwrap();
        let t = std::time::Duration::from_millis(500);
        assert_eq!(gw.probe(Provider::Anthropic, t).await, Probe::Answered(404));
        let started = std::time::Instant::now();
        let silent = gw.probe(Provider::Openai, t).await;
        assert!(
            matches!(silent, Probe::Unreachable(ref m) if m.contains("no answer")),
            "{silent:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let refused = gw.probe(Provider::Gemini, t).await;
        assert!(
            matches!(refused, Probe::Unreachable(ref m) if m.contains("onnect")),
            "{refused:?}"
        );
        assert!(!gw.configured(Provider::Anthropic));
        drop(silent_listener);
    }

    #[test]
    fn urls() {
        assert_eq!(
            upstream_url(
                "https://api.anthropic.com",
                "v1/messages",
                Some("beta=true")
            ),
            "https://api.anthropic.com/v1/messages?beta=true"
        );
        assert_eq!(
            upstream_url("https://api.openai.com/v1/", "v1/responses", None),
            "https://api.openai.com/v1/responses"
        );
        assert_eq!(
            upstream_url(
                "http://127.0.0.1:9",
                "v1beta/models/m:streamGenerateContent",
                Some("alt=sse&key=bvk_x")
            ),
            "http://127.0.0.1:9/v1beta/models/m:streamGenerateContent?alt=sse"
        );
    }
}
