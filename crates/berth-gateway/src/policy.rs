//! What the gateway lets through: per provider an allowlist of method + path, the query
//! parameters and request headers that may reach the upstream, and the checks on a request body
//! (usage forced on where the protocol allows it, no access to stored state of the shared key).
//!
//! The allowlist is what the four agent CLIs berth drives send, observed from their traffic
//! through the gateway to the mock upstream inside a real workspace (a run of
//! `suite::tasks::*_runs_a_tool_turn_and_a_follow_up` logging every request the mock received;
//! Claude Code 2.1.330, Codex 0.169.0, Gemini CLI 0.61.0, OpenCode 1.18.33):
//!
//! | CLI      | method + path (upstream side)                   | request headers besides the key |
//! |----------|-------------------------------------------------|---------------------------------|
//! | claude   | `POST /v1/messages?beta=true`                   | accept, content-type, user-agent, x-claude-code-session-id, x-stainless-{arch,lang,os,package-version,retry-count,runtime,runtime-version,timeout}, anthropic-beta, anthropic-dangerous-direct-browser-access, anthropic-version, x-app |
//! | codex    | `POST /v1/responses`                            | x-codex-beta-features, x-codex-window-id, x-codex-turn-metadata, x-client-request-id, session-id, thread-id, accept, content-type, originator, user-agent |
//! | gemini   | `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` | user-agent, x-goog-api-client, content-type, accept, accept-language, sec-fetch-mode |
//! | opencode | `POST /v1/chat/completions` (3 per turn)        | content-type, user-agent, x-session-affinity, x-session-id, accept |
//!
//! Also allowed, because the same CLIs send them in other modes and they only generate, count
//! tokens or read the model list: `POST /v1beta/models/{model}:generateContent` (the Gemini
//! CLI's routing classifier, sent when its model is `auto`; seen in the offline CLI survey),
//! `POST /v1/messages/count_tokens`, `POST /v1beta/models/{model}:countTokens` and
//! `GET /v1/models` (Anthropic, OpenAI). Everything else (files, batches, fine-tuning, stored
//! responses, uploads, cached contents, admin routes, other methods) is refused by the gateway
//! with a stable code and never reaches the upstream.

use axum::http::{HeaderMap, HeaderName, Method};
use berth_domain::{ErrorCode, Provider};

/// An allowed endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    AnthropicMessages,
    AnthropicCountTokens,
    OpenaiResponses,
    OpenaiChat,
    /// `GET v1/models` (Anthropic, OpenAI): the model list, no body.
    Models,
    GeminiGenerate,
    GeminiCountTokens,
}

impl Endpoint {
    /// Whether the call makes the model generate (and so is metered and needs a budget).
    pub fn generates(self) -> bool {
        matches!(
            self,
            Self::AnthropicMessages
                | Self::OpenaiResponses
                | Self::OpenaiChat
                | Self::GeminiGenerate
        )
    }
}

/// Why a request is refused, with the stable code it is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: String) -> Self {
        Self { code, message }
    }
}

/// The endpoint `method` + `rest` (the raw path after `/{provider}/`, still percent-encoded)
/// names, or why it is refused (404 for an unknown path, 403 for a known path with a method
/// agents never use).
pub fn endpoint(p: Provider, method: &Method, rest: &str) -> Result<Endpoint, Refusal> {
    let found = match p {
        Provider::Anthropic => match rest {
            "v1/messages" => Some((Method::POST, Endpoint::AnthropicMessages)),
            "v1/messages/count_tokens" => Some((Method::POST, Endpoint::AnthropicCountTokens)),
            "v1/models" => Some((Method::GET, Endpoint::Models)),
            _ => None,
        },
        Provider::Openai => match rest {
            "v1/responses" => Some((Method::POST, Endpoint::OpenaiResponses)),
            "v1/chat/completions" => Some((Method::POST, Endpoint::OpenaiChat)),
            "v1/models" => Some((Method::GET, Endpoint::Models)),
            _ => None,
        },
        Provider::Gemini => gemini_endpoint(rest).map(|e| (Method::POST, e)),
    };
    match found {
        Some((m, e)) if m == method => Ok(e),
        Some(_) => Err(Refusal::new(
            ErrorCode::Forbidden,
            format!(
                "berth gateway: {method} /{}/{rest} is not allowed",
                p.as_str()
            ),
        )),
        None => Err(Refusal::new(
            ErrorCode::NotFound,
            format!(
                "berth gateway: /{}/{rest} is not an endpoint agents may use",
                p.as_str()
            ),
        )),
    }
}

/// `v1beta/models/{model}:{generateContent|streamGenerateContent|countTokens}`, the model name
/// restricted to the characters real model ids use (no `/`, `%`, `..`).
fn gemini_endpoint(rest: &str) -> Option<Endpoint> {
    let (model, action) = rest.strip_prefix("v1beta/models/")?.split_once(':')?;
    let model_ok = !model.is_empty()
        && model.len() <= 128
        && !model.starts_with('.')
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !model_ok {
        return None;
    }
    match action {
        "generateContent" | "streamGenerateContent" => Some(Endpoint::GeminiGenerate),
        "countTokens" => Some(Endpoint::GeminiCountTokens),
        _ => None,
    }
}

/// The query parameters forwarded upstream (the virtual key `key=` never is; anything else an
/// agent adds is dropped).
pub fn forwarded_query(p: Provider, query: Option<&str>) -> Option<String> {
    let allowed: &[&str] = match p {
        Provider::Anthropic => &["beta"],
        Provider::Openai => &[],
        Provider::Gemini => &["alt"],
    };
    let kept: Vec<&str> = query?
        .split('&')
        .filter(|kv| {
            let name = kv.split('=').next().unwrap_or_default();
            allowed.contains(&name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Request headers the CLIs send that may reach the upstream (observed, see the module doc).
/// Not here, and so never forwarded: every auth header (`authorization`, `x-api-key`,
/// `x-goog-api-key`: the gateway sets the real key itself), `openai-organization`,
/// `openai-project`, `x-goog-user-project`, cookies, `x-forwarded-*`, hop-by-hop headers and
/// `accept-encoding` (bodies are metered as they pass, so they stay uncompressed).
const FORWARDED: [&str; 22] = [
    "accept",
    "accept-language",
    "sec-fetch-mode",
    "content-type",
    "user-agent",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-app",
    "x-claude-code-session-id",
    "originator",
    "session-id",
    "session_id",
    "thread-id",
    "x-client-request-id",
    "x-codex-beta-features",
    "x-codex-window-id",
    "x-codex-turn-metadata",
    "x-goog-api-client",
    "x-session-id",
    "x-session-affinity",
    "openai-beta",
];

/// Whether a request header may be forwarded.
pub fn forwards_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    FORWARDED.contains(&n) || n.starts_with("x-stainless-")
}

/// The request headers that go upstream (before the real key is added).
pub fn forwarded_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in from {
        if forwards_header(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Response headers never passed back to the agent: hop-by-hop ones and whatever identifies the
/// shared account or sets state in the client.
pub fn returns_header(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "content-length"
            | "set-cookie"
            | "openai-organization"
            | "openai-project"
            | "anthropic-organization-id"
    )
}

/// Checks (and where needed rewrites) a request body before it goes upstream: JSON for every
/// endpoint with a body; OpenAI chat streams get `stream_options.include_usage = true` so their
/// usage is always reported; the Responses API may not reach stored state of the shared key
/// (`previous_response_id`, `conversation`) and never stores (`store: false`); and every
/// generating call names an output cap of at most `max_output` tokens ([`cap_output`]), which
/// the upstream enforces, so no call can use more output than the budget reserved for it.
pub fn prepare_body(e: Endpoint, body: &[u8], max_output: u64) -> Result<Option<Vec<u8>>, Refusal> {
    if e == Endpoint::Models {
        return if body.is_empty() {
            Ok(None)
        } else {
            Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "berth gateway: GET with a body".into(),
            ))
        };
    }
    let mut v: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
        Refusal::new(
            ErrorCode::InvalidArgument,
            format!("berth gateway: the request body is not JSON: {err}"),
        )
    })?;
    let Some(obj) = v.as_object_mut() else {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "berth gateway: the request body is not a JSON object".into(),
        ));
    };
    let mut changed = e.generates() && cap_output(e, obj, max_output);
    match e {
        Endpoint::OpenaiChat if obj.get("stream") == Some(&serde_json::Value::Bool(true)) => {
            let opts = obj
                .entry("stream_options")
                .or_insert_with(|| serde_json::json!({}));
            if !opts.is_object() {
                *opts = serde_json::json!({});
            }
            opts["include_usage"] = serde_json::Value::Bool(true);
            changed = true;
        }
        Endpoint::OpenaiResponses => {
            for field in ["previous_response_id", "conversation"] {
                if obj.get(field).is_some_and(|x| !x.is_null()) {
                    return Err(Refusal::new(
                        ErrorCode::Forbidden,
                        format!(
                            "berth gateway: `{field}` is not allowed (stored responses of the shared key)"
                        ),
                    ));
                }
            }
            obj.insert("store".into(), serde_json::Value::Bool(false));
            changed = true;
        }
        _ => {}
    }
    if !changed {
        return Ok(None);
    }
    serde_json::to_vec(&v).map(Some).map_err(|err| {
        Refusal::new(
            ErrorCode::Internal,
            format!("berth gateway: re-encoding the body: {err}"),
        )
    })
}

/// Makes a generating request name an output cap of at most `max`: a larger cap is lowered, a
/// missing one set (in the field its protocol uses: Anthropic `max_tokens`, Responses
/// `max_output_tokens`, chat `max_completion_tokens` or the legacy `max_tokens` it already uses,
/// Gemini `generationConfig.maxOutputTokens`). An Anthropic thinking budget must stay below
/// `max_tokens`, so it is lowered with it (and thinking turned off below its 1,024 minimum).
/// Returns whether the body changed.
fn cap_output(e: Endpoint, obj: &mut serde_json::Map<String, serde_json::Value>, max: u64) -> bool {
    fn cap(v: &mut serde_json::Map<String, serde_json::Value>, field: &str, max: u64) -> bool {
        match v.get(field).and_then(serde_json::Value::as_u64) {
            Some(n) if n <= max => false,
            _ => {
                v.insert(field.into(), max.into());
                true
            }
        }
    }
    match e {
        Endpoint::AnthropicMessages => {
            let changed = cap(obj, "max_tokens", max);
            let budget = obj
                .get("thinking")
                .and_then(|t| t.get("budget_tokens"))
                .and_then(serde_json::Value::as_u64);
            match budget {
                Some(b) if b >= max && max > ANTHROPIC_MIN_THINKING => {
                    obj["thinking"]["budget_tokens"] = (max - 1).into();
                    true
                }
                Some(b) if b >= max => {
                    obj.insert("thinking".into(), serde_json::json!({"type": "disabled"}));
                    true
                }
                _ => changed,
            }
        }
        Endpoint::OpenaiResponses => cap(obj, "max_output_tokens", max),
        Endpoint::OpenaiChat if obj.contains_key("max_tokens") => cap(obj, "max_tokens", max),
        Endpoint::OpenaiChat => cap(obj, "max_completion_tokens", max),
        Endpoint::GeminiGenerate => {
            let config = obj
                .entry("generationConfig")
                .or_insert_with(|| serde_json::json!({}));
            if !config.is_object() {
                *config = serde_json::json!({});
            }
            config
                .as_object_mut()
                .is_some_and(|c| cap(c, "maxOutputTokens", max))
        }
        _ => false,
    }
}

/// The smallest thinking budget Anthropic takes.
const ANTHROPIC_MIN_THINKING: u64 = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_what_the_clis_use_is_allowed() {
        use Provider::*;
        let ok = |p, m: Method, r: &str| endpoint(p, &m, r);
        assert_eq!(
            ok(Anthropic, Method::POST, "v1/messages"),
            Ok(Endpoint::AnthropicMessages)
        );
        assert_eq!(
            ok(Openai, Method::POST, "v1/responses"),
            Ok(Endpoint::OpenaiResponses)
        );
        assert_eq!(
            ok(Openai, Method::POST, "v1/chat/completions"),
            Ok(Endpoint::OpenaiChat)
        );
        assert_eq!(
            ok(
                Gemini,
                Method::POST,
                "v1beta/models/gemini-3.8-flash:streamGenerateContent"
            ),
            Ok(Endpoint::GeminiGenerate)
        );
        assert_eq!(
            ok(
                Gemini,
                Method::POST,
                "v1beta/models/gemini-2.5-pro:countTokens"
            ),
            Ok(Endpoint::GeminiCountTokens)
        );
        // Known paths, wrong method: 403.
        for (p, m, r) in [
            (Anthropic, Method::GET, "v1/messages"),
            (Openai, Method::DELETE, "v1/responses"),
            (Openai, Method::POST, "v1/models"),
            (Gemini, Method::GET, "v1beta/models/g:generateContent"),
        ] {
            assert_eq!(ok(p, m, r).unwrap_err().code, ErrorCode::Forbidden, "{r}");
        }
        // Everything else: 404, never forwarded.
        for (p, r) in [
            (Openai, "v1/files"),
            (Openai, "v1/batches"),
            (Openai, "v1/fine_tuning/jobs"),
            (Openai, "v1/responses/resp_123"),
            (Openai, "v1/responses/resp_123/input_items"),
            (Openai, "v1/uploads"),
            (Openai, "v1/organization/users"),
            (Openai, "chat/completions"),
            (Openai, "v1/chat/completions/"),
            (Openai, "v1/chat/completions%2F..%2Ffiles"),
            (Openai, "v1/messages"),
            (Anthropic, "v1/messages/batches"),
            (Anthropic, "v1/files"),
            (Anthropic, "v1/organizations/api_keys"),
            (Anthropic, "v1/responses"),
            (Gemini, "v1beta/files"),
            (Gemini, "v1beta/cachedContents"),
            (Gemini, "v1beta/tunedModels/x:generateContent"),
            (Gemini, "v1beta/models/../files:generateContent"),
            (Gemini, "v1beta/models/a%2Fb:generateContent"),
            (Gemini, "v1beta/models/a/b:generateContent"),
            (Gemini, "v1beta/models/g:batchGenerateContent"),
            (Gemini, "upload/v1beta/files"),
        ] {
            assert_eq!(
                ok(p, Method::POST, r).unwrap_err().code,
                ErrorCode::NotFound,
                "{r}"
            );
        }
    }

    #[test]
    fn only_known_query_parameters_go_upstream() {
        assert_eq!(
            forwarded_query(Provider::Anthropic, Some("beta=true&x=1")),
            Some("beta=true".into())
        );
        assert_eq!(
            forwarded_query(Provider::Gemini, Some("alt=sse&key=bvk_x&upload=1")),
            Some("alt=sse".into())
        );
        assert_eq!(
            forwarded_query(Provider::Openai, Some("api-version=1")),
            None
        );
        assert_eq!(forwarded_query(Provider::Gemini, None), None);
    }

    #[test]
    fn headers_are_filtered_both_ways() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer bvk_x"),
            ("x-api-key", "bvk_x"),
            ("x-goog-api-key", "bvk_x"),
            ("openai-organization", "org-other"),
            ("openai-project", "proj-other"),
            ("x-goog-user-project", "p"),
            ("cookie", "a=b"),
            ("host", "evil"),
            ("x-forwarded-for", "1.2.3.4"),
            ("accept-encoding", "gzip"),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("x-stainless-os", "Linux"),
            ("originator", "codex_exec"),
        ] {
            h.insert(
                HeaderName::from_static(n),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let out = forwarded_headers(&h);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "anthropic-version",
                "content-type",
                "originator",
                "x-stainless-os"
            ]
        );
        assert!(!returns_header(&HeaderName::from_static("set-cookie")));
        assert!(!returns_header(&HeaderName::from_static(
            "openai-organization"
        )));
        assert!(returns_header(&HeaderName::from_static("content-type")));
    }

    #[test]
    fn bodies_force_usage_and_keep_stored_state_out() {
        let chat = br#"{"model":"m","stream":true,"messages":[]}"#;
        let out = prepare_body(Endpoint::OpenaiChat, chat, 100)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        let off = br#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#;
        let out = prepare_body(Endpoint::OpenaiChat, off, 100)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        // Not streamed, with a cap within the limit: usage is in the body anyway; the body goes
        // as it came.
        assert_eq!(
            prepare_body(
                Endpoint::OpenaiChat,
                br#"{"model":"m","max_completion_tokens":5}"#,
                100
            )
            .unwrap(),
            None
        );
        let resp = br#"{"model":"m","store":true,"input":[]}"#;
        let out = prepare_body(Endpoint::OpenaiResponses, resp, 100)
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["store"], false);
        for bad in [
            &br#"{"model":"m","previous_response_id":"resp_other"}"#[..],
            br#"{"model":"m","conversation":"conv_other"}"#,
        ] {
            assert_eq!(
                prepare_body(Endpoint::OpenaiResponses, bad, 100)
                    .unwrap_err()
                    .code,
                ErrorCode::Forbidden
            );
        }
        for bad in [&b"not json"[..], b"[1]", b""] {
            assert_eq!(
                prepare_body(Endpoint::AnthropicMessages, bad, 100)
                    .unwrap_err()
                    .code,
                ErrorCode::InvalidArgument
            );
        }
        assert_eq!(prepare_body(Endpoint::Models, b"", 100).unwrap(), None);
    }

    fn capped(e: Endpoint, body: &str, max: u64) -> serde_json::Value {
        let out = prepare_body(e, body.as_bytes(), max).unwrap();
        out.map_or_else(
            || serde_json::from_str(body).unwrap(),
            |b| serde_json::from_slice(&b).unwrap(),
        )
    }

    #[test]
    fn every_generating_call_names_an_output_cap_within_the_limit() {
        use Endpoint::*;
        let v = capped(AnthropicMessages, r#"{"max_tokens":128000}"#, 32000);
        assert_eq!(v["max_tokens"], 32000);
        let v = capped(AnthropicMessages, r#"{"max_tokens":100}"#, 32000);
        assert_eq!(v["max_tokens"], 100);
        let v = capped(AnthropicMessages, r#"{}"#, 32000);
        assert_eq!(v["max_tokens"], 32000);
        // A cap that is not a number is no cap.
        let v = capped(AnthropicMessages, r#"{"max_tokens":"lots"}"#, 7);
        assert_eq!(v["max_tokens"], 7);
        let thinking =
            r#"{"max_tokens":64000,"thinking":{"type":"enabled","budget_tokens":63999}}"#;
        let v = capped(AnthropicMessages, thinking, 32000);
        assert_eq!(v["max_tokens"], 32000);
        assert_eq!(v["thinking"]["budget_tokens"], 31999);
        let v = capped(AnthropicMessages, thinking, 1000);
        assert_eq!(v["thinking"]["type"], "disabled");
        let v = capped(OpenaiResponses, r#"{"input":[]}"#, 50);
        assert_eq!(v["max_output_tokens"], 50);
        let v = capped(OpenaiChat, r#"{"messages":[]}"#, 50);
        assert_eq!(v["max_completion_tokens"], 50);
        assert!(v.get("max_tokens").is_none());
        let v = capped(OpenaiChat, r#"{"max_tokens":900}"#, 50);
        assert_eq!(v["max_tokens"], 50);
        let v = capped(GeminiGenerate, r#"{"contents":[]}"#, 50);
        assert_eq!(v["generationConfig"]["maxOutputTokens"], 50);
        let v = capped(
            GeminiGenerate,
            r#"{"generationConfig":{"temperature":0,"maxOutputTokens":65536}}"#,
            50,
        );
        assert_eq!(v["generationConfig"]["maxOutputTokens"], 50);
        assert_eq!(v["generationConfig"]["temperature"], 0);
        // Counting tokens generates nothing: no cap is added.
        let v = capped(AnthropicCountTokens, r#"{"messages":[]}"#, 50);
        assert!(v.get("max_tokens").is_none());
    }
}
