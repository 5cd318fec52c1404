//! Governance overhead: berth's LLM gateway and its egress proxy, each side by side with the
//! direct path, in one run.
//!
//! 1. **Gateway latency**: a streamed response, direct to the upstream vs through the real
//!    `berth server`'s gateway (virtual-key check, key swap, token counting, call recording),
//!    sequential requests on one keep-alive connection each, interleaved: time to first body
//!    byte and total time, p50/p99. Three streams: the scripted mock's Anthropic `/v1/messages`
//!    SSE answer (6 events; the mock has no knob for more chunks), and an OpenAI
//!    chat-completions SSE answer with 1 and with 50 content chunks from a small upstream in this
//!    bench, which sets `TCP_NODELAY` (the mock does not, so its rows show Nagle/delayed-ACK
//!    stalls) and yields between chunks, so each goes out as its own write.
//! 2. **Gateway request rate**: 32 requests in flight for 5 s, direct vs through the gateway
//!    (mock and 1-chunk streams), and the server process's RSS (whole `berth server`, sampled
//!    every 50 ms).
//! 3. **Egress throughput**: a 100 MiB download from a loopback HTTP server, direct vs through
//!    `berth_egress::Proxy` (in process, on a TCP listener) as a CONNECT tunnel and as a
//!    forwarded plain-HTTP request; and (with the gateway half, which has the server and a
//!    workspace) curl downloads inside the workspace through the daemon's listener and the proxy vs
//!    curl on the host.
//! 4. **TLS interception**: new connection + TLS handshake + small GET, direct vs through the
//!    proxy tunnelled vs intercepted (a rule with a path forces interception).
//!
//! How the bench reaches the gateway from the host: the server serves it only on the
//! workspace's Unix socket (`DATA_DIR/workspaces/<id>/chan/gateway.sock`) and only for the
//! virtual key of a live task of that workspace, which the API never shows. The bench starts a
//! `claude` task whose prompt makes the mock hold the response open (its "SLOW" marker), reads
//! the key from the agent's environment with an exec in the workspace (`/proc/*/environ`; the
//! agent runs as the same user), then talks HTTP/1.1 over the socket with that key.
//!
//! `cargo bench -p berth-bin --bench governance` (needs the engine and the base image; builds
//! it if missing). `BERTH_BENCH_REQUESTS` (default 500) overrides the sequential count;
//! `BERTH_BENCH_ONLY=gateway` or `egress` runs one half; `BERTH_BENCH_SERVER_BIN=PATH` runs the
//! gateway half's server from another build of `berth` (to compare build profiles).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use common::{env_count, ms, percentile, status_kib};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_egress::{
    CertificateAuthority, EgressContext, LogEntry, Policy, Proxy, SecretBinding, UpstreamTls,
};
use berth_test_support::mock_llm::MockLlm;
use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

const RATE_INFLIGHT: usize = 32;
const RATE_FOR: Duration = Duration::from_secs(5);
const CHUNKS: usize = 50;
const BULK_BYTES: u64 = 100 << 20;
const BULK_ROUNDS: usize = 25;
const WORKSPACE_ROUNDS: usize = 7;
const TLS_REQUESTS: usize = 200;
const SMALL_BODY: &[u8] = b"{\"ok\":true,\"padding\":\"0123456789abcdef0123456789abcdef\"}\n";
const ANTHROPIC_KEY: &str = "real-anthropic-key-bench";
const OPENAI_KEY: &str = "real-openai-key-bench";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 client over any stream

type Sender = SendRequest<Full<Bytes>>;

async fn h1<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S) -> Sender {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Clone, Copy)]
enum Auth {
    XApiKey,
    Bearer,
}

/// Where a streamed LLM call goes and how it authenticates.
struct Endpoint {
    target: Target,
    host: String,
    path: String,
    auth: Auth,
    key: String,
    /// Extra request headers (the gateway forwards them upstream).
    extra: Vec<(&'static str, String)>,
}

impl Endpoint {
    async fn connect(&self) -> Sender {
        match &self.target {
            Target::Tcp(a) => {
                let s = TcpStream::connect(a).await.unwrap();
                s.set_nodelay(true).unwrap();
                h1(s).await
            }
            Target::Unix(p) => h1(UnixStream::connect(p).await.unwrap()).await,
        }
    }
}

#[derive(Clone, Copy)]
struct Timing {
    ttfb: Duration,
    total: Duration,
    events: usize,
}

/// One streamed call on an open connection: time to the first body byte and to the end.
async fn llm_call(sender: &mut Sender, ep: &Endpoint, body: &Bytes) -> Result<Timing, String> {
    let mut req = http::Request::post(&ep.path)
        .header("host", &ep.host)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .header("anthropic-version", "2023-06-01");
    req = match ep.auth {
        Auth::XApiKey => req.header("x-api-key", &ep.key),
        Auth::Bearer => req.header("authorization", format!("Bearer {}", ep.key)),
    };
    for (n, v) in &ep.extra {
        req = req.header(*n, v);
    }
    let req = req.body(Full::new(body.clone())).unwrap();
    sender.ready().await.map_err(|e| e.to_string())?;
    let t = Instant::now();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut ttfb = None;
    let mut seen = Vec::with_capacity(8192);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(d) = frame.data_ref() {
            if ttfb.is_none() && !d.is_empty() {
                ttfb = Some(t.elapsed());
            }
            seen.extend_from_slice(d);
        }
    }
    let total = t.elapsed();
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&seen)));
    }
    let events = seen.windows(2).filter(|w| w == b"\n\n").count();
    Ok(Timing {
        ttfb: ttfb.unwrap_or(total),
        total,
        events,
    })
}

/// `n` sequential calls on each endpoint, one keep-alive connection each, interleaved in
/// alternating order (after 20 warm-up calls each).
async fn latency(a: &Endpoint, b: &Endpoint, body: &Bytes, n: usize) -> (Vec<Timing>, Vec<Timing>) {
    let (mut ca, mut cb) = (a.connect().await, b.connect().await);
    for _ in 0..20 {
        llm_call(&mut ca, a, body).await.unwrap();
        llm_call(&mut cb, b, body).await.unwrap();
    }
    let (mut va, mut vb) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        if i % 2 == 0 {
            va.push(llm_call(&mut ca, a, body).await.unwrap());
            vb.push(llm_call(&mut cb, b, body).await.unwrap());
        } else {
            vb.push(llm_call(&mut cb, b, body).await.unwrap());
            va.push(llm_call(&mut ca, a, body).await.unwrap());
        }
    }
    (va, vb)
}

struct Rate {
    per_sec: f64,
    errors: u64,
    first_error: Option<String>,
    rss_peak_kib: Option<u64>,
    /// `RssAnon` and `RssFile` at the sample with the peak `VmRSS`.
    rss_peak_split_kib: Option<(u64, u64)>,
}

/// `inflight` connections each calling in a loop for `dur`; samples the RSS of `pid`.
async fn rate(
    ep: Arc<Endpoint>,
    body: Bytes,
    inflight: usize,
    dur: Duration,
    pid: Option<u32>,
) -> Rate {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let running = running.clone();
        tokio::spawn(async move {
            let mut peak = None::<u64>;
            let mut split = None::<(u64, u64)>;
            while running.load(Ordering::Relaxed) {
                if let Some(kib) = pid.and_then(|p| status_kib(p, "VmRSS:")) {
                    if peak.is_none_or(|p| kib > p) {
                        peak = Some(kib);
                        split = pid.and_then(|p| {
                            Some((status_kib(p, "RssAnon:")?, status_kib(p, "RssFile:")?))
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (peak, split)
        })
    };
    let start = Instant::now();
    let deadline = start + dur;
    let workers: Vec<_> = (0..inflight)
        .map(|_| {
            let (ep, body, ok, errors, first_error) = (
                ep.clone(),
                body.clone(),
                ok.clone(),
                errors.clone(),
                first_error.clone(),
            );
            tokio::spawn(async move {
                let mut c = ep.connect().await;
                while Instant::now() < deadline {
                    match llm_call(&mut c, &ep, &body).await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert(e);
                            c = ep.connect().await;
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = start.elapsed();
    running.store(false, Ordering::Relaxed);
    let (rss_peak_kib, rss_peak_split_kib) = sampler.await.unwrap();
    let first_error = first_error.lock().unwrap().take();
    Rate {
        per_sec: ok.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        errors: errors.load(Ordering::Relaxed),
        first_error,
        rss_peak_kib,
        rss_peak_split_kib,
    }
}

/// The `berth server` process of this data directory (TestServer keeps its child private).
fn server_pid(data_dir: &Path) -> Option<u32> {
    let needle = format!("BERTH_DATA_DIR={}", data_dir.display());
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmd.split(|b| *b == 0).nth(1) == Some(&b"server"[..]) {
            return Some(pid);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// A chunky OpenAI-style upstream (the mock sends 6 events and has no knob for more)

fn start_chunky() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::Builder::new()
        .name("chunky-llm".into())
        .spawn(move || {
            // Like the mock: its own thread and 2-worker runtime.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use axum::serve::ListenerExt;
                // TCP_NODELAY, as a real provider's front end: no Nagle stalls between chunks.
                let listener = tokio::net::TcpListener::from_std(listener)
                    .unwrap()
                    .tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                // Anything else (the codex task's Responses API call that keeps its turn, and
                // so its key, live) is held open, unanswered.
                let app = axum::Router::new()
                    .route("/v1/chat/completions", axum::routing::post(chunky_chat))
                    .fallback(|| async {
                        tokio::time::sleep(Duration::from_secs(900)).await;
                        http::StatusCode::SERVICE_UNAVAILABLE
                    });
                let _ = axum::serve(listener, app).await;
            });
        })
        .unwrap();
    format!("http://127.0.0.1:{port}")
}

/// `x-bench-chunks: N` content chunks (default 1), then finish, usage and `[DONE]`.
async fn chunky_chat(headers: http::HeaderMap, _body: Bytes) -> axum::response::Response {
    let chunks: usize = headers
        .get("x-bench-chunks")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let frame = |choices: serde_json::Value, usage: Option<serde_json::Value>| {
        let mut v = json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
            "created": 0, "model": "gpt-bench", "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        Bytes::from(format!("data: {v}\n\n"))
    };
    let mut frames = vec![frame(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        None,
    )];
    for i in 0..chunks {
        frames.push(frame(
            json!([{"index": 0, "delta": {"content": format!("token{i} ")}, "finish_reason": null}]),
            None,
        ));
    }
    frames.push(frame(
        json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        None,
    ));
    frames.push(frame(
        json!([]),
        Some(
            json!({"prompt_tokens": 20, "completion_tokens": chunks, "total_tokens": 20 + chunks}),
        ),
    ));
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    // Yield between chunks: hyper flushes whenever the body is pending, so every chunk is its
    // own write, as with a real model streaming tokens.
    let stream = futures_util::stream::unfold(frames.into_iter(), |mut it| async move {
        tokio::task::yield_now().await;
        it.next().map(|b| (Ok::<_, Infallible>(b), it))
    });
    axum::response::Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(axum::body::Body::from_stream(stream))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Gateway

struct LatRow {
    label: String,
    direct: Vec<Timing>,
    gateway: Vec<Timing>,
}

struct GatewayFigures {
    requests: usize,
    rows: Vec<LatRow>,
    /// (stream, direct, through the gateway)
    rates: Vec<(&'static str, Rate, Rate)>,
    rss_idle_kib: Option<u64>,
    rss_hwm_kib: Option<u64>,
    /// curl downloads (MB/s): on the host direct, in the workspace tunnelled, forwarded.
    inside: [Vec<f64>; 3],
}

async fn gateway_bench(requests: usize) -> GatewayFigures {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let chunky = start_chunky();
    // `BERTH_BENCH_SERVER_BIN`: another build of `berth` to measure (e.g. another profile).
    let bin = std::env::var_os("BERTH_BENCH_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berth")));
    let env = vec![
        ("BERTH_ANTHROPIC_BASE_URL".to_owned(), mock.url()),
        (
            "BERTH_ANTHROPIC_API_KEY".to_owned(),
            ANTHROPIC_KEY.to_owned(),
        ),
        ("BERTH_OPENAI_BASE_URL".to_owned(), chunky.clone()),
        ("BERTH_OPENAI_API_KEY".to_owned(), OPENAI_KEY.to_owned()),
        // The server's own default log level (the test harness turns on debug logging, which
        // writes a line per gateway call).
        (
            "BERTH_LOG".to_owned(),
            "info,tower_http=warn,sqlx=warn,bollard=warn".to_owned(),
        ),
        // The egress proxy finds the bench's download server on the host's loopback.
        (
            "BERTH_EGRESS_HOSTS".to_owned(),
            "bulk.test=127.0.0.1".to_owned(),
        ),
    ];
    let s = TestServer::start_with(
        &bin,
        ServerOptions {
            env,
            ..Default::default()
        },
    )
    .await;
    let ws = s
        .create_workspace(json!({"name": "gw", "memory": "2g", "pids": 2048}))
        .await;
    let ws_id = ws["id"].as_str().unwrap().to_owned();
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "gw", "agent": "claude",
                        "prompt": "SLOW: hold this turn open while the bench runs"})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    // The agent's virtual key, from its environment inside the workspace.
    let script = "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\" 2>/dev/null; done \
                  | grep '^ANTHROPIC_API_KEY=' | head -n 1 | cut -d= -f2-";
    let key = eventually(
        Duration::from_secs(120),
        "the agent's virtual key",
        || async {
            let out = s.exec("gw", &["sh", "-c", script]).await;
            let k = out["stdout"].as_str().unwrap_or("").trim().to_owned();
            (!k.is_empty()).then_some(k)
        },
    )
    .await;
    // Keys are bound to their task's provider: the OpenAI rows need a codex task's key, its
    // turn held open by the chunky server (which answers chat completions only).
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "gw", "agent": "codex",
                        "prompt": "hold this turn open while the bench runs"})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let script = format!(
        "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\" 2>/dev/null; done \
         | grep '^BERTH_VIRTUAL_KEY=' | cut -d= -f2- | grep -vxF '{key}' | head -n 1"
    );
    let openai_key = eventually(
        Duration::from_secs(120),
        "the codex agent's virtual key",
        || async {
            let out = s.exec("gw", &["sh", "-c", &script]).await;
            let k = out["stdout"].as_str().unwrap_or("").trim().to_owned();
            (!k.is_empty()).then_some(k)
        },
    )
    .await;
    let sock = s
        .data_dir
        .path()
        .join("workspaces")
        .join(&ws_id)
        .join("chan")
        .join("gateway.sock");
    assert!(sock.exists(), "no gateway socket at {}", sock.display());
    let pid = server_pid(s.data_dir.path());
    if pid.is_none() {
        println!("(could not find the server's pid: no RSS figures)");
    }

    let mock_addr: SocketAddr = mock.url().trim_start_matches("http://").parse().unwrap();
    let chunky_addr: SocketAddr = chunky.trim_start_matches("http://").parse().unwrap();
    let anthropic_body = Bytes::from(
        json!({"model": "claude-bench", "max_tokens": 256, "stream": true,
               "messages": [{"role": "user", "content": "Say something short."}]})
        .to_string(),
    );
    let openai_body = Bytes::from(
        json!({"model": "gpt-bench", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "Say something long."}]})
        .to_string(),
    );
    let anthropic_direct = Endpoint {
        target: Target::Tcp(mock_addr),
        host: mock_addr.to_string(),
        path: "/v1/messages".into(),
        auth: Auth::XApiKey,
        key: ANTHROPIC_KEY.into(),
        extra: Vec::new(),
    };
    let anthropic_gw = Endpoint {
        target: Target::Unix(sock.clone()),
        host: "127.0.0.1:7788".into(),
        path: "/anthropic/v1/messages".into(),
        auth: Auth::XApiKey,
        key: key.clone(),
        extra: Vec::new(),
    };
    let openai = |chunks: usize, gw: bool| Endpoint {
        target: if gw {
            Target::Unix(sock.clone())
        } else {
            Target::Tcp(chunky_addr)
        },
        host: if gw {
            "127.0.0.1:7788".into()
        } else {
            chunky_addr.to_string()
        },
        path: if gw {
            "/openai/v1/chat/completions".into()
        } else {
            "/v1/chat/completions".into()
        },
        auth: Auth::Bearer,
        key: if gw {
            openai_key.clone()
        } else {
            OPENAI_KEY.into()
        },
        extra: vec![("x-bench-chunks", chunks.to_string())],
    };

    let mut rows = Vec::new();
    let (d, g) = latency(&anthropic_direct, &anthropic_gw, &anthropic_body, requests).await;
    rows.push(LatRow {
        label: format!("mock `/v1/messages` ({} SSE events)", g[0].events),
        direct: d,
        gateway: g,
    });
    for chunks in [1, CHUNKS] {
        let (d, g) = latency(
            &openai(chunks, false),
            &openai(chunks, true),
            &openai_body,
            requests,
        )
        .await;
        rows.push(LatRow {
            label: format!(
                "nodelay upstream, chat completions, {chunks} chunk{} ({} SSE events)",
                if chunks == 1 { "" } else { "s" },
                g[0].events
            ),
            direct: d,
            gateway: g,
        });
    }

    // The gateway really swapped the key.
    let last = mock.requests().pop().unwrap();
    assert_eq!(last.header("x-api-key"), Some(ANTHROPIC_KEY));

    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle_kib = pid.and_then(|p| status_kib(p, "VmRSS:"));
    let mut rates = Vec::new();
    for (label, direct, gw, body) in [
        (
            "mock `/v1/messages`",
            anthropic_direct,
            anthropic_gw,
            anthropic_body.clone(),
        ),
        (
            "nodelay upstream, 1 chunk",
            openai(1, false),
            openai(1, true),
            openai_body.clone(),
        ),
    ] {
        let d = rate(
            Arc::new(direct),
            body.clone(),
            RATE_INFLIGHT,
            RATE_FOR,
            None,
        )
        .await;
        let g = rate(Arc::new(gw), body, RATE_INFLIGHT, RATE_FOR, pid).await;
        rates.push((label, d, g));
    }
    let rss_hwm_kib = pid.and_then(|p| status_kib(p, "VmHWM:"));

    // Token counting: the calls are recorded with their usage.
    let (_, usage) = s.call("GET", "/api/v1/usage", None).await;
    let usage_text = usage.to_string();
    if usage_text.len() < 2000 {
        println!("(usage API after the run: {usage_text})");
    }
    let inside = workspace_downloads(&s).await;
    drop(s);
    drop(mock);
    GatewayFigures {
        requests,
        rows,
        rates,
        rss_idle_kib,
        rss_hwm_kib,
        inside,
    }
}

/// The whole egress path as a workspace sees it: `BULK_BYTES` downloads with curl from a
/// loopback server, on the host straight to it vs inside the workspace through the daemon's
/// listener (`127.0.0.1:3128`, which hands each connection to the proxy) and the proxy, as a
/// CONNECT tunnel (`--proxytunnel`) and as a forwarded plain-HTTP request. MB/s as curl reports them.
async fn workspace_downloads(s: &TestServer) -> [Vec<f64>; 3] {
    let bulk = start_bulk().await;
    let port = bulk.port();
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/workspaces/gw/egress/rules",
            Some(json!({"rule": "allow bulk.test"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let url = format!("http://bulk.test:{port}/");
    let curl = "curl -sS -o /dev/null -w '%{speed_download}'";
    let host = format!("{curl} --noproxy '*' --resolve bulk.test:{port}:127.0.0.1 {url}");
    let tunnel = format!("{curl} --proxytunnel {url}");
    let forward = format!("{curl} {url}");
    let mbps = |out: &str| -> f64 {
        let bytes_per_s: f64 = out
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl said {out:?}"));
        bytes_per_s / 1e6
    };
    let mut out: [Vec<f64>; 3] = Default::default();
    for round in 0..=WORKSPACE_ROUNDS {
        for (i, cmd) in [&host, &tunnel, &forward].into_iter().enumerate() {
            let text = if i == 0 {
                let o = tokio::process::Command::new("sh")
                    .args(["-c", cmd])
                    .output()
                    .await
                    .unwrap();
                assert!(o.status.success(), "{cmd}: {o:?}");
                String::from_utf8_lossy(&o.stdout).into_owned()
            } else {
                let r = s.exec("gw", &["sh", "-c", cmd]).await;
                assert_eq!(r["exit_code"], 0, "{cmd}: {r}");
                r["stdout"].as_str().unwrap().to_owned()
            };
            // Round 0 warms up.
            if round > 0 {
                out[i].push(mbps(&text));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Egress

struct AllowCtx(Policy);

impl EgressContext for AllowCtx {
    fn policy(&self) -> Policy {
        self.0.clone()
    }
    fn record(&self, _entry: LogEntry) {}
    fn secrets_for_host(&self, _host: &str) -> Vec<SecretBinding> {
        Vec::new()
    }
}

async fn start_proxy(proxy: Proxy, ctx: Arc<dyn EgressContext>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let (p, c) = (proxy.clone(), ctx.clone());
            tokio::spawn(async move {
                let _ = p.serve_connection(s, c).await;
            });
        }
    });
    addr
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.unwrap();
        assert!(n == 1, "connection closed in a response head");
        head.push(byte[0]);
    }
    head
}

/// A loopback server answering every request with `BULK_BYTES` bytes.
async fn start_bulk() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let _ = read_head(&mut s).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: {BULK_BYTES}\r\nConnection: close\r\n\r\n"
                );
                s.write_all(head.as_bytes()).await.unwrap();
                let chunk = vec![0x5au8; 256 << 10];
                let mut left = BULK_BYTES;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// `CONNECT authority` on a new connection to the proxy; returns the tunnel.
async fn tunnel(proxy: SocketAddr, authority: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    let text = String::from_utf8_lossy(&head);
    assert!(text.starts_with("HTTP/1.1 200"), "CONNECT refused: {text}");
    s
}

#[derive(Clone, Copy)]
enum BulkMode {
    Direct,
    Tunnel,
    Forward,
}

/// One download; returns MB/s (10^6 bytes).
async fn bulk_once(mode: BulkMode, bulk: SocketAddr, proxy: SocketAddr) -> f64 {
    let t = Instant::now();
    let (mut sender, uri) = match mode {
        BulkMode::Direct => {
            let s = TcpStream::connect(bulk).await.unwrap();
            s.set_nodelay(true).unwrap();
            (h1(s).await, "/")
        }
        BulkMode::Tunnel => (h1(tunnel(proxy, "bulk.test:80").await).await, "/"),
        BulkMode::Forward => {
            let s = TcpStream::connect(proxy).await.unwrap();
            s.set_nodelay(true).unwrap();
            (h1(s).await, "http://bulk.test/")
        }
    };
    let req = http::Request::get(uri)
        .header("host", "bulk.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(f) = body.frame().await {
        if let Some(d) = f.unwrap().data_ref() {
            got += d.len() as u64;
        }
    }
    assert_eq!(got, BULK_BYTES);
    got as f64 / 1e6 / t.elapsed().as_secs_f64()
}

struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server: Arc<rustls::ServerConfig>,
}

/// A test CA and a leaf for the origin's names, made with rcgen.
fn test_pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "berth bench origin CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = p.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut lp =
        CertificateParams::new(vec!["tunnel.test".to_owned(), "intercept.test".to_owned()])
            .unwrap();
    lp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = lp
        .signed_by(&leaf_key, &rcgen::Issuer::from_params(&p, &ca_key))
        .unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server: Arc::new(server),
    }
}

/// A loopback HTTPS origin answering every request with `SMALL_BODY`.
async fn start_origin(cfg: Arc<rustls::ServerConfig>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        SMALL_BODY,
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[derive(Clone, Copy)]
enum TlsMode {
    Direct,
    Tunnel,
    Intercept,
}

/// New connection (+ CONNECT) + TLS handshake + GET of a small body.
async fn https_once(
    mode: TlsMode,
    origin: SocketAddr,
    proxy: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
) -> Duration {
    let t = Instant::now();
    let (tcp, host) = match mode {
        TlsMode::Direct => {
            let s = TcpStream::connect(origin).await.unwrap();
            s.set_nodelay(true).unwrap();
            (s, "tunnel.test")
        }
        TlsMode::Tunnel => (tunnel(proxy, "tunnel.test:443").await, "tunnel.test"),
        TlsMode::Intercept => (tunnel(proxy, "intercept.test:443").await, "intercept.test"),
    };
    let name = ServerName::try_from(host.to_owned()).unwrap();
    let stream = tls.connect(name, tcp).await.unwrap();
    let mut sender = h1(stream).await;
    let req = http::Request::get("/")
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..], SMALL_BODY);
    t.elapsed()
}

struct EgressFigures {
    bulk_direct: Vec<f64>,
    bulk_tunnel: Vec<f64>,
    bulk_forward: Vec<f64>,
    tls_direct: Vec<f64>,
    tls_tunnel: Vec<f64>,
    tls_intercept: Vec<f64>,
}

async fn egress_bench() -> EgressFigures {
    let pki = test_pki();
    let origin = start_origin(pki.server.clone()).await;
    let bulk = start_bulk().await;
    let mut upstream = UpstreamTls::empty();
    assert_eq!(upstream.add_pem(pki.ca_pem.as_bytes()).unwrap(), 1);
    let ca = CertificateAuthority::generate().unwrap();
    let berth_ca_der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
    // Loopback is reachable only through rules that name the host exactly: these do.
    let resolver: berth_egress::Resolver = Arc::new(move |host: &str, _port: u16| match host {
        "bulk.test" => Some(vec![bulk]),
        "tunnel.test" | "intercept.test" => Some(vec![origin]),
        _ => None,
    });
    let proxy = Proxy::new(ca, upstream).with_resolver(resolver);
    let policy = Policy::parse_lines(
        "allow bulk.test\nallow tunnel.test:443\nallow intercept.test:443 GET /\n",
    )
    .unwrap();
    let proxy_addr = start_proxy(proxy, Arc::new(AllowCtx(policy))).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    roots.add(berth_ca_der).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every request a cold handshake, like a new `curl`/`git` process.
    client.resumption = rustls::client::Resumption::disabled();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client));

    // Warm-up (also issues and caches the intercepted host's leaf).
    for mode in [TlsMode::Direct, TlsMode::Tunnel, TlsMode::Intercept] {
        for _ in 0..10 {
            https_once(mode, origin, proxy_addr, &tls).await;
        }
    }
    let (mut tls_direct, mut tls_tunnel, mut tls_intercept) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..TLS_REQUESTS {
        let order = match i % 3 {
            0 => [TlsMode::Direct, TlsMode::Tunnel, TlsMode::Intercept],
            1 => [TlsMode::Tunnel, TlsMode::Intercept, TlsMode::Direct],
            _ => [TlsMode::Intercept, TlsMode::Direct, TlsMode::Tunnel],
        };
        for mode in order {
            let d = ms(https_once(mode, origin, proxy_addr, &tls).await);
            match mode {
                TlsMode::Direct => tls_direct.push(d),
                TlsMode::Tunnel => tls_tunnel.push(d),
                TlsMode::Intercept => tls_intercept.push(d),
            }
        }
    }

    for mode in [BulkMode::Direct, BulkMode::Tunnel, BulkMode::Forward] {
        bulk_once(mode, bulk, proxy_addr).await;
    }
    let (mut bulk_direct, mut bulk_tunnel, mut bulk_forward) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..BULK_ROUNDS {
        let order = if i % 2 == 0 {
            [BulkMode::Direct, BulkMode::Tunnel, BulkMode::Forward]
        } else {
            [BulkMode::Forward, BulkMode::Tunnel, BulkMode::Direct]
        };
        for mode in order {
            let v = bulk_once(mode, bulk, proxy_addr).await;
            match mode {
                BulkMode::Direct => bulk_direct.push(v),
                BulkMode::Tunnel => bulk_tunnel.push(v),
                BulkMode::Forward => bulk_forward.push(v),
            }
        }
    }
    EgressFigures {
        bulk_direct,
        bulk_tunnel,
        bulk_forward,
        tls_direct,
        tls_tunnel,
        tls_intercept,
    }
}

// ---------------------------------------------------------------------------------------------

fn yes(ok: bool) -> &'static str {
    if ok {
        "**yes**"
    } else {
        "**no**"
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// One line of the "against the targets" table: measure, result, target, met.
type TargetRow = (String, String, &'static str, bool);

#[tokio::main]
async fn main() {
    // BERTH_BENCH_ONLY=gateway|egress runs one half (for iterating on one of them).
    let only = std::env::var("BERTH_BENCH_ONLY").unwrap_or_default();
    let mut targets = Vec::new();
    if only != "egress" {
        let requests = env_count("BERTH_BENCH_REQUESTS", 500);
        let g = gateway_bench(requests).await;
        targets.extend(print_gateway(&g));
    }
    if only != "gateway" {
        let e = egress_bench().await;
        targets.extend(print_egress(&e));
    }
    println!();
    println!("Against the targets:");
    println!();
    println!("| measure | result | target | met |");
    println!("|---|---:|---:|---|");
    for (label, result, target, met) in targets {
        println!("| {label} | {result} | {target} | {} |", yes(met));
    }
}

/// MB/s samples per path as a table; the first row is the baseline the ratios are taken to.
fn throughput_table(rows: &[(&str, &Vec<f64>)]) {
    let med = |v: &[f64]| percentile(v, 50.0);
    let base = med(rows[0].1);
    println!();
    println!("| path | median | min | max | ratio to direct |");
    println!("|---|---:|---:|---:|---:|");
    for (label, v) in rows {
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(0.0, f64::max);
        let m = med(v);
        println!(
            "| {label} | {m:.0} | {min:.0} | {max:.0} | {:.2} |",
            m / base
        );
    }
}

fn print_gateway(g: &GatewayFigures) -> Vec<TargetRow> {
    println!();
    println!(
        "Gateway latency: {} sequential streamed requests per path, one keep-alive connection \
         each, interleaved (ms; TTFB = request sent → first body byte):",
        g.requests
    );
    println!();
    println!("| stream | path | TTFB p50 | TTFB p99 | total p50 | total p99 |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut added_ttfb = Vec::new();
    for r in &g.rows {
        let f = |v: &[Timing], get: fn(&Timing) -> Duration, p: f64| {
            percentile(&v.iter().map(|t| ms(get(t))).collect::<Vec<_>>(), p)
        };
        let ttfb = |t: &Timing| t.ttfb;
        let total = |t: &Timing| t.total;
        let vals = |v: &[Timing]| {
            [
                f(v, ttfb, 50.0),
                f(v, ttfb, 99.0),
                f(v, total, 50.0),
                f(v, total, 99.0),
            ]
        };
        let (d, gw) = (vals(&r.direct), vals(&r.gateway));
        println!(
            "| {} | direct | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.label, d[0], d[1], d[2], d[3]
        );
        println!(
            "| | berth gateway | {:.3} | {:.3} | {:.3} | {:.3} |",
            gw[0], gw[1], gw[2], gw[3]
        );
        println!(
            "| | **added** | **{:+.3}** | {:+.3} | **{:+.3}** | {:+.3} |",
            gw[0] - d[0],
            gw[1] - d[1],
            gw[2] - d[2],
            gw[3] - d[3]
        );
        added_ttfb.push((r.label.clone(), gw[0] - d[0]));
    }
    println!();
    println!(
        "Gateway request rate: {RATE_INFLIGHT} requests in flight for {}s per path (req/s):",
        RATE_FOR.as_secs()
    );
    println!();
    println!("| stream | direct | berth gateway | ratio | errors (direct / gateway) |");
    println!("|---|---:|---:|---:|---:|");
    let mut peak_kib: Option<u64> = None;
    let mut peak_split: Option<(u64, u64)> = None;
    for (label, d, gw) in &g.rates {
        println!(
            "| {label} | {:.0} | {:.0} | {:.2}× | {} / {} |",
            d.per_sec,
            gw.per_sec,
            gw.per_sec / d.per_sec,
            d.errors,
            gw.errors
        );
        if let Some(k) = gw.rss_peak_kib {
            if peak_kib.is_none_or(|p| k > p) {
                peak_kib = Some(k);
                peak_split = gw.rss_peak_split_kib;
            }
        }
    }
    for (_, d, gw) in &g.rates {
        for r in [d, gw] {
            if let Some(e) = &r.first_error {
                println!("(first error: {e})");
            }
        }
    }
    println!();
    println!(
        "`berth server` RSS (the whole process: API, store, reconciler, task followers, gateway): \
         {} idle before the load, {} peak sampled every 50 ms under the gateway load, VmHWM {}",
        mib(g.rss_idle_kib),
        mib(peak_kib),
        mib(g.rss_hwm_kib)
    );
    if let Some((anon, file)) = peak_split {
        println!(
            "At the peak sample: RssAnon {} (heap, stacks: the server's own memory), RssFile {} \
             (pages of the mapped `berth` binary and libraries, shared through the page cache)",
            mib(Some(anon)),
            mib(Some(file))
        );
    }
    println!();
    let med = |v: &[f64]| percentile(v, 50.0);
    let [host, tunnel, forward] = &g.inside;
    println!();
    println!(
        "Egress from inside a workspace: {} MiB curl downloads from a loopback server, \
         {WORKSPACE_ROUNDS} rounds, interleaved (MB/s; inside = the daemon hands the connection to the proxy):",
        BULK_BYTES >> 20
    );
    throughput_table(&[
        ("host, direct", host),
        ("workspace, CONNECT tunnel", tunnel),
        ("workspace, plain-HTTP forward", forward),
    ]);
    let mut targets: Vec<TargetRow> = Vec::new();
    let ratio = med(tunnel) / med(host);
    targets.push((
        "egress CONNECT tunnel ÷ direct, from inside a workspace (curl)".into(),
        format!("{ratio:.2}×"),
        "≥ 0.5×",
        ratio >= 0.5,
    ));
    for (label, v) in &added_ttfb {
        targets.push((
            format!("gateway added TTFB p50, {label}"),
            format!("{v:+.3} ms"),
            "≤ +0.3 ms",
            *v <= 0.3,
        ));
    }
    for (label, d, gw) in &g.rates {
        let ratio = gw.per_sec / d.per_sec;
        targets.push((
            format!("gateway req/s ÷ direct, {label}, {RATE_INFLIGHT} in flight"),
            format!("{ratio:.2}×"),
            "≥ 0.4×",
            ratio >= 0.4,
        ));
    }
    targets.push((
        "server RSS under gateway load (whole `berth server`)".into(),
        mib(peak_kib),
        "≤ 30 MiB (gateway)",
        peak_kib.is_some_and(|p| p as f64 / 1024.0 <= 30.0),
    ));
    targets
}

fn print_egress(e: &EgressFigures) -> Vec<TargetRow> {
    let med = |v: &[f64]| percentile(v, 50.0);
    let (bd, bt) = (med(&e.bulk_direct), med(&e.bulk_tunnel));
    println!(
        "Egress throughput: {} MiB download from a loopback server, {BULK_ROUNDS} rounds per mode, interleaved (MB/s):",
        BULK_BYTES >> 20
    );
    throughput_table(&[
        ("direct", &e.bulk_direct),
        ("proxy, CONNECT tunnel", &e.bulk_tunnel),
        ("proxy, plain-HTTP forward", &e.bulk_forward),
    ]);
    println!();
    println!(
        "TLS: new connection + handshake + small GET, {TLS_REQUESTS} per mode, interleaved (ms):"
    );
    println!();
    println!("| path | p50 | p90 | p99 |");
    println!("|---|---:|---:|---:|");
    for (label, v) in [
        ("direct", &e.tls_direct),
        ("proxy, tunnelled", &e.tls_tunnel),
        ("proxy, intercepted", &e.tls_intercept),
    ] {
        println!(
            "| {label} | {:.3} | {:.3} | {:.3} |",
            percentile(v, 50.0),
            percentile(v, 90.0),
            percentile(v, 99.0)
        );
    }
    let added_tls = percentile(&e.tls_intercept, 50.0) - percentile(&e.tls_tunnel, 50.0);
    vec![
        (
            "egress CONNECT tunnel ÷ direct throughput".into(),
            format!("{:.2}×", bt / bd),
            "≥ 0.5×",
            bt / bd >= 0.5,
        ),
        (
            "TLS interception added p50 (vs tunnelled)".into(),
            format!("{added_tls:+.3} ms"),
            "≤ +2 ms",
            added_tls <= 2.0,
        ),
    ]
}
