//! Token counting on the side of a streamed LLM response, and the operator's price table.
//!
//! The gateway forwards every chunk as it arrives; a copy goes through [`UsageTap`], which
//! scans SSE `data:` lines (or, for non-streamed answers, the JSON body) for the provider's
//! usage fields. Nothing waits for the parse.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use berth_domain::Provider;
use serde::Deserialize;

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

/// Incremental usage parser for one response.
pub struct UsageTap {
    provider: Provider,
    line: Vec<u8>,
    /// Non-SSE bodies are kept (bounded) and parsed at the end.
    body: Vec<u8>,
    sse: bool,
    pub tokens: Tokens,
    pub model: Option<String>,
}

const MAX_BODY: usize = 4 << 20;

impl UsageTap {
    pub fn new(provider: Provider, sse: bool) -> Self {
        Self {
            provider,
            line: Vec::new(),
            body: Vec::new(),
            sse,
            tokens: Tokens::default(),
            model: None,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if !self.sse {
            if self.body.len() + chunk.len() <= MAX_BODY {
                self.body.extend_from_slice(chunk);
            }
            return;
        }
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if self.line.is_empty() {
                self.sse_line(&rest[..i]);
            } else {
                self.push_line(&rest[..i]);
                let line = std::mem::take(&mut self.line);
                self.sse_line(&line);
            }
            rest = &rest[i + 1..];
        }
        self.push_line(rest);
    }

    fn push_line(&mut self, part: &[u8]) {
        let room = MAX_BODY.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
    }

    /// Call at the end of the body.
    pub fn finish(&mut self) {
        if self.sse {
            let line = std::mem::take(&mut self.line);
            self.sse_line(&line);
        } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.body) {
            self.json(&v);
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        // Most events are content deltas: parse only those that can carry what we count.
        let wanted = contains(data, b"usage") || (self.model.is_none() && contains(data, b"model"));
        if !wanted {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
            self.json(&v);
        }
    }

    fn json(&mut self, v: &serde_json::Value) {
        let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
        match self.provider {
            Provider::Anthropic => {
                // message_start carries input (and cache) counts; message_delta the output total.
                let (usage, model) = match v["type"].as_str() {
                    Some("message_start") => (&v["message"]["usage"], &v["message"]["model"]),
                    _ => (&v["usage"], &v["model"]),
                };
                if let Some(m) = model.as_str() {
                    self.model = Some(m.to_owned());
                }
                if usage.is_object() {
                    if usage.get("input_tokens").is_some() {
                        self.tokens.input = n(&usage["input_tokens"]);
                    }
                    if usage.get("cache_read_input_tokens").is_some() {
                        self.tokens.cache_read = n(&usage["cache_read_input_tokens"]);
                    }
                    if usage.get("cache_creation_input_tokens").is_some() {
                        self.tokens.cache_write = n(&usage["cache_creation_input_tokens"]);
                    }
                    if usage.get("output_tokens").is_some() {
                        self.tokens.output = n(&usage["output_tokens"]);
                    }
                }
            }
            Provider::Openai => {
                // Responses API: response.completed{response:{usage}}; Chat: a chunk with usage.
                let (usage, model) = if v["response"].is_object() {
                    (&v["response"]["usage"], &v["response"]["model"])
                } else {
                    (&v["usage"], &v["model"])
                };
                if let Some(m) = model.as_str() {
                    self.model = Some(m.to_owned());
                }
                if usage.is_object() {
                    let input = usage
                        .get("input_tokens")
                        .or_else(|| usage.get("prompt_tokens"));
                    let output = usage
                        .get("output_tokens")
                        .or_else(|| usage.get("completion_tokens"));
                    let cached = usage["input_tokens_details"]["cached_tokens"]
                        .as_u64()
                        .or_else(|| usage["prompt_tokens_details"]["cached_tokens"].as_u64());
                    if let Some(i) = input {
                        self.tokens.input = n(i);
                    }
                    if let Some(o) = output {
                        self.tokens.output = n(o);
                    }
                    if let Some(c) = cached {
                        self.tokens.cache_read = c;
                    }
                }
            }
            Provider::Gemini => {
                let usage = &v["usageMetadata"];
                if let Some(m) = v["modelVersion"].as_str() {
                    self.model = Some(m.to_owned());
                }
                if usage.is_object() {
                    self.tokens.input = n(&usage["promptTokenCount"]);
                    self.tokens.output =
                        n(&usage["candidatesTokenCount"]) + n(&usage["thoughtsTokenCount"]);
                    self.tokens.cache_read = n(&usage["cachedContentTokenCount"]);
                }
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The model a request names: the JSON body's `model`, or Gemini's `models/{model}:…` path.
pub fn request_model(provider: Provider, path: &str, body: &[u8]) -> Option<String> {
    if provider == Provider::Gemini {
        let rest = path.split("models/").nth(1)?;
        return Some(rest.split(':').next()?.to_owned());
    }
    // Only the model is read; the rest (a long prompt) is skipped without building a tree.
    #[derive(Deserialize)]
    struct ModelOnly {
        model: Option<String>,
    }
    serde_json::from_slice::<ModelOnly>(body).ok()?.model
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    #[serde(default)]
    pub cache_read: f64,
    #[serde(default)]
    pub cache_write: f64,
}

/// Price of a model the table does not list, unless the table sets its own `[fallback]`: as
/// dear as the dearest published models, so that an unknown or new model name is never free
/// by accident (a budget in dollars still holds). `[fallback]` with zeros makes them free on
/// purpose.
pub const DEFAULT_FALLBACK: Price = Price {
    input: 15.0,
    output: 75.0,
    cache_read: 1.5,
    cache_write: 18.75,
};

/// The operator's price table: `DATA_DIR/prices.toml`, `[models."<model>"] input = 3.0 …`
/// (USD per million tokens) and an optional `[fallback]` price for models it does not list
/// (default [`DEFAULT_FALLBACK`]). Re-read when the file changes. The gateway prices a call by
/// the model the *upstream* reports it used, not by the name the agent asked for.
pub struct Prices {
    path: PathBuf,
    check_every: std::time::Duration,
    cache: Mutex<PriceCache>,
}

/// The parsed table, the file's modification time it was read at, and when that was checked.
#[derive(Default)]
struct PriceCache {
    mtime: Option<std::time::SystemTime>,
    checked: Option<std::time::Instant>,
    table: HashMap<String, Price>,
    fallback: Option<Price>,
}

/// How often the price file's modification time is looked at (edits apply within this time).
const PRICES_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    models: HashMap<String, Price>,
    fallback: Option<Price>,
}

impl Prices {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            check_every: PRICES_CHECK,
            cache: Mutex::new(PriceCache::default()),
        }
    }

    /// The cost of `t` tokens of `model` (None: the upstream did not say): the listed price,
    /// else the fallback price.
    pub fn cost(&self, model: Option<&str>, t: Tokens) -> f64 {
        let p = self.price(model);
        let m = 1e6;
        t.input.saturating_sub(t.cache_read) as f64 * p.input / m
            + t.output as f64 * p.output / m
            + t.cache_read as f64 * p.cache_read / m
            + t.cache_write as f64 * p.cache_write / m
    }

    /// The price of a model, the fallback when it is not listed.
    pub fn price(&self, model: Option<&str>) -> Price {
        let mut cache = berth_domain::sync::lock(&self.cache);
        if cache
            .checked
            .is_none_or(|at| at.elapsed() >= self.check_every)
        {
            cache.checked = Some(std::time::Instant::now());
            let mtime = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if cache.mtime != mtime {
                let file = std::fs::read_to_string(&self.path)
                    .ok()
                    .and_then(|s| match toml::from_str::<PriceFile>(&s) {
                        Ok(f) => Some(f),
                        Err(e) => {
                            tracing::warn!(path = %self.path.display(), error = %e, "ignoring the price table");
                            None
                        }
                    });
                (cache.table, cache.fallback) = match file {
                    Some(f) => (f.models, f.fallback),
                    None => (HashMap::new(), None),
                };
                cache.mtime = mtime;
            }
        }
        model
            .and_then(|m| cache.table.get(m).copied())
            .or(cache.fallback)
            .unwrap_or(DEFAULT_FALLBACK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: Provider, sse: bool, body: &str, split: usize) -> UsageTap {
        let mut t = UsageTap::new(p, sse);
        let bytes = body.as_bytes();
        for chunk in bytes.chunks(split) {
            t.feed(chunk);
        }
        t.finish();
        t
    }

    #[test]
    fn anthropic_stream() {
        let body = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":20,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
                    event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":10}}\n\n";
        for split in [1, 7, 1000] {
            let t = run(Provider::Anthropic, true, body, split);
            assert_eq!(
                t.tokens,
                Tokens {
                    input: 20,
                    output: 10,
                    cache_read: 5,
                    cache_write: 0
                }
            );
            assert_eq!(t.model.as_deref(), Some("claude-x"));
        }
    }

    #[test]
    fn openai_responses_chat_and_gemini() {
        let r = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-5.5\",\"usage\":{\"input_tokens\":20,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":10}}}\n\n";
        let t = run(Provider::Openai, true, r, 3);
        assert_eq!(
            t.tokens,
            Tokens {
                input: 20,
                output: 10,
                cache_read: 4,
                cache_write: 0
            }
        );
        let c = "data: {\"choices\":[]}\n\ndata: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n";
        let t = run(Provider::Openai, true, c, 5);
        assert_eq!((t.tokens.input, t.tokens.output), (7, 3));
        let g = "data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":30,\"candidatesTokenCount\":15}}\r\n\r\n";
        let t = run(Provider::Gemini, true, g, 2);
        assert_eq!((t.tokens.input, t.tokens.output), (30, 15));
        let plain = "{\"model\":\"claude-y\",\"usage\":{\"input_tokens\":3,\"output_tokens\":2}}";
        let t = run(Provider::Anthropic, false, plain, 4);
        assert_eq!(
            (t.tokens.input, t.tokens.output, t.model.as_deref()),
            (3, 2, Some("claude-y"))
        );
        // Garbage never panics and counts nothing.
        let t = run(Provider::Openai, true, "data: {nope\n\ndata: 12\n", 1);
        assert_eq!(t.tokens, Tokens::default());
    }

    #[test]
    fn models_and_prices() {
        assert_eq!(
            request_model(
                Provider::Gemini,
                "v1beta/models/gemini-2.5-pro:streamGenerateContent",
                b""
            ),
            Some("gemini-2.5-pro".into())
        );
        assert_eq!(
            request_model(Provider::Anthropic, "v1/messages", br#"{"model":"m1"}"#),
            Some("m1".into())
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prices.toml");
        let mut prices = Prices::new(path.clone());
        prices.check_every = std::time::Duration::from_millis(20);
        let settle = || std::thread::sleep(std::time::Duration::from_millis(30));
        let t = Tokens {
            input: 1_000_000,
            output: 500_000,
            cache_read: 0,
            cache_write: 0,
        };
        // No table: everything costs the built-in fallback, never 0 by accident.
        let dear = 15.0 + 0.5 * 75.0;
        assert_eq!(prices.cost(Some("m1"), t), dear);
        assert_eq!(prices.cost(None, t), dear);
        std::fs::write(&path, "[models.m1]\ninput = 3.0\noutput = 15.0\n").unwrap();
        settle();
        assert_eq!(prices.cost(Some("m1"), t), 3.0 + 7.5);
        assert_eq!(prices.cost(Some("other"), t), dear);
        // An edit is picked up at the next check; the table's own fallback replaces the default.
        std::fs::write(
            &path,
            "[models.m1]\ninput = 1.0\noutput = 1.0\n[fallback]\ninput = 2.0\noutput = 4.0\n",
        )
        .unwrap();
        settle();
        assert_eq!(prices.cost(Some("m1"), t), 1.0 + 0.5);
        assert_eq!(prices.cost(Some("alias-latest"), t), 2.0 + 2.0);
        // A broken table falls back to the default, not to free.
        std::fs::write(&path, "[models.m1\n").unwrap();
        settle();
        assert_eq!(prices.cost(Some("m1"), t), dear);
    }
}
