//! Token counting on the side of a streamed LLM response (priced by `prices`).
//!
//! The gateway forwards every chunk as it arrives; a copy goes through [`UsageTap`], which
//! scans SSE `data:` lines (or, for non-streamed answers, the JSON body) for the provider's
//! usage fields. Nothing waits for the parse.

use berth_domain::Provider;
use serde::Deserialize;

/// Token counts of one call, the same way for every provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Every prompt token, read fresh or from the provider's cache (so `cache_read` and
    /// `cache_write` are parts of it). OpenAI and Google count this way; Anthropic's
    /// `input_tokens` leaves cache reads and writes out, so they are added to it.
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

    /// Call at the end of the body (once).
    pub fn finish(&mut self) {
        if self.sse {
            let line = std::mem::take(&mut self.line);
            self.sse_line(&line);
        } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.body) {
            self.json(&v);
        }
        if self.provider == Provider::Anthropic {
            let t = &mut self.tokens;
            t.input = t
                .input
                .saturating_add(t.cache_read)
                .saturating_add(t.cache_write);
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
            // Anthropic's 20 fresh input tokens plus the 5 read from its cache.
            assert_eq!(
                t.tokens,
                Tokens {
                    input: 25,
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
    fn request_models() {
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
    }
}
