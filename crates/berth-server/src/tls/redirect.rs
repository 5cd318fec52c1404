//! Plain HTTP next to HTTPS: the `--http-redirect` listener answers every request with a 308
//! to the same path on the HTTPS URL, and [`hsts`] adds `Strict-Transport-Security` to HTTPS
//! responses when the certificate is one browsers trust (never for a self-signed one, which
//! would lock browsers out of the host).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// One year, the usual value.
pub const HSTS_VALUE: &str = "max-age=31536000";

#[derive(Clone)]
struct Target {
    public_host: Option<String>,
    https_port: u16,
}

/// The redirecting app of the plain listener.
pub fn router(public_host: Option<String>, https_port: u16) -> Router {
    Router::new().fallback(redirect).with_state(Target {
        public_host,
        https_port,
    })
}

async fn redirect(State(t): State<Target>, headers: HeaderMap, uri: Uri) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    match location(t.public_host.as_deref(), host, t.https_port, path) {
        Some(l) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, l)]).into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            "this port only redirects to HTTPS; use https://HOST/\n",
        )
            .into_response(),
    }
}

/// The HTTPS URL for a request: the configured public host, else the request's `Host` without
/// its port; the HTTPS port unless it is 443.
pub fn location(
    public_host: Option<&str>,
    host_header: Option<&str>,
    https_port: u16,
    path_and_query: &str,
) -> Option<String> {
    let host = match public_host {
        Some(h) => bracket(h),
        None => strip_port(host_header?)?,
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let path = if path_and_query.starts_with('/') {
        path_and_query
    } else {
        "/"
    };
    Some(format!("https://{host}{port}{path}"))
}

/// IPv6 literals go in brackets in a URL.
fn bracket(h: &str) -> String {
    if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.to_owned()
    }
}

/// `host[:port]` or `[v6][:port]` → host; `None` for anything that is not a plain host.
fn strip_port(h: &str) -> Option<String> {
    let host = if let Some(rest) = h.strip_prefix('[') {
        format!("[{}]", rest.split_once(']')?.0)
    } else {
        h.rsplit_once(':').map_or(h, |(host, _)| host).to_owned()
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    ok.then_some(host)
}

/// Adds `Strict-Transport-Security` when `on` (the served certificate is CA-issued; operator
/// files holding a self-signed certificate get none either).
pub async fn hsts(mut resp: Response, on: bool) -> Response {
    if on {
        resp.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS_VALUE),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            location(None, Some("berth.example:80"), 443, "/api/v1/x?y=1").as_deref(),
            Some("https://berth.example/api/v1/x?y=1")
        );
        assert_eq!(
            location(None, Some("127.0.0.1:8080"), 8443, "/").as_deref(),
            Some("https://127.0.0.1:8443/")
        );
        assert_eq!(
            location(None, Some("[::1]:80"), 443, "/a").as_deref(),
            Some("https://[::1]/a")
        );
        assert_eq!(
            location(Some("berth.example"), Some("evil.example"), 443, "/a").as_deref(),
            Some("https://berth.example/a")
        );
        assert_eq!(location(None, None, 443, "/"), None);
        assert_eq!(location(None, Some("a b"), 443, "/"), None);
        assert_eq!(location(None, Some("x/@evil"), 443, "/"), None);
    }
}
