//! Agent task latency and event delivery, on the scripted mock LLM upstream, in one run:
//!
//! 1. For each agent: a one-tool-call turn started as a berth task (`POST /api/v1/tasks`, then
//!    the SSE stream `…/events/stream?after=0` observed from the host) versus the floor: the same
//!    CLI with the same invocation (built by the same driver) run directly in the same workspace,
//!    talking to the same mock without berth's gateway, started through the streaming exec
//!    WebSocket. Runs are interleaved, in alternating order.
//!    The long-lived drivers' floor is their CLI's cold one-shot mode, as their turns ran before
//!    (same config file and environment): codex's berth task runs on `codex app-server`, its
//!    floor is `codex exec`; gemini's and opencode's run on ACP (`gemini --acp`,
//!    `opencode acp`), their floors are `gemini --prompt … -o stream-json` and `opencode run`.
//! 2. Follow-up turns of the agents with a long-lived protocol process (codex, gemini, opencode,
//!    as far as part 1 chose them): a follow-up on a berth task whose process is still warm
//!    versus the same turn as a cold direct CLI resuming the same conversation in a new process
//!    (`codex exec resume THREAD`, `gemini --resume ID`, `opencode run --session ID`),
//!    interleaved; model requests counted per turn, and the resident memory of the idle process.
//! 3. Many tasks in parallel in one workspace: latency from the daemon's `at` stamp to an SSE
//!    subscriber on the host, events/s, and a check that every subscriber received exactly
//!    seq 1..=last_seq, identical to the stored events.
//!
//! `cargo bench -p berth-bin --bench tasks` (needs the engine and the base image; builds it if
//! missing). `BERTH_BENCH_RUNS` (default 5) and `BERTH_BENCH_PARALLEL` (default 20) override the
//! counts; `BERTH_BENCH_AGENTS=codex,claude` limits part 1 to those agents. Prints markdown
//! tables.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use common::{env_count, ms, percentile, strip_ansi};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_agents::{Agent, Invocation, TurnSpec};
use berth_test_support::mock_llm::{MockLlm, RecordedRequest};
use berth_test_support::{ensure_image, ServerOptions, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const PROMPT: &str = "Create hello.txt containing hi, then say DONE.";
const FOLLOW_UP: &str = "Do it once more, then say DONE.";
const HOME: &str = "/home/agent";
const TURN_TIMEOUT: Duration = Duration::from_secs(600);

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn unix_ms_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn at_ms(ev: &Value) -> f64 {
    let at = ev["at"].as_str().unwrap();
    let t = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("bad `at` {at:?}: {e}"));
    t.unix_timestamp_nanos() as f64 / 1e6
}

/// One turn, as observed from the host.
#[derive(Clone)]
struct Turn {
    /// Start → first event (berth: any event on the SSE stream; direct: first output byte).
    first: Duration,
    /// Start → first event that came from the agent's own output (berth: not `status` /
    /// `user_message`; direct: first output byte).
    first_agent: Duration,
    /// Start → the turn is over (berth: the final `status` event; direct: the exit message).
    last: Duration,
    /// The requests the mock LLM received during the turn.
    model: ModelRequests,
    /// Normalized events (berth: stored; direct: what the same driver makes of its output, or
    /// codex exec's JSON lines).
    events: usize,
    /// The direct run's stdout (empty for berth).
    stdout: String,
}

/// The model requests of one turn.
#[derive(Clone)]
struct ModelRequests {
    count: usize,
    /// Start → the mock had the turn's first request: the agent's start-up.
    to_first: Duration,
    /// The mock had the last request → the turn is over: the agent's wind-down.
    after_last: Duration,
}

impl ModelRequests {
    /// The requests after the first `before` ones, for a turn started at `t0` and over `last`
    /// after it.
    fn of(mock: &MockLlm, before: usize, t0: Instant, last: Duration) -> Self {
        let reqs = mock.requests();
        let turn = reqs.get(before..).unwrap_or_default();
        let since = |r: &RecordedRequest| r.at.saturating_duration_since(t0);
        ModelRequests {
            count: turn.len(),
            to_first: turn.first().map_or(last, since),
            after_last: last.saturating_sub(turn.last().map_or(last, since)),
        }
    }
}

/// An event as an SSE subscriber received it.
struct Received {
    event: Value,
    at: Instant,
    /// Wall clock at reception, ms since the epoch (compared with the event's `at`).
    wall_ms: f64,
}

/// Follows `…/events/stream?after=0` until the turn is over; returns every event received and
/// the wall-clock time (ms) at which the stream was established.
async fn follow_sse(s: &TestServer, id: &str) -> (Vec<Received>, f64) {
    follow_sse_after(s, id, 0).await
}

/// Like [`follow_sse`], from the events after `after`.
async fn follow_sse_after(s: &TestServer, id: &str, after: u64) -> (Vec<Received>, f64) {
    let client = reqwest::Client::new();
    let mut resp = client
        .get(format!(
            "{}/api/v1/tasks/{id}/events/stream?after={after}",
            s.url
        ))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let connected = unix_ms_now();
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let deadline = tokio::time::Instant::now() + TURN_TIMEOUT;
    loop {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("task {id}: the turn did not end in time"))
            .unwrap();
        let Some(chunk) = chunk else {
            panic!("task {id}: the event stream ended before the turn was over");
        };
        let (now, wall_ms) = (Instant::now(), unix_ms_now());
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            let event: Value = serde_json::from_str(data.trim()).unwrap();
            let over = event["type"] == "status"
                && matches!(
                    event["state"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                );
            out.push(Received {
                event,
                at: now,
                wall_ms,
            });
            if over {
                return (out, connected);
            }
        }
    }
}

async fn create_task(s: &TestServer, ws: &str, agent: Agent) -> String {
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": ws, "agent": agent.as_str(), "prompt": PROMPT})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    task["id"].as_str().unwrap().to_owned()
}

/// A berth task: POST, then the SSE stream until the final status.
async fn berth_turn(s: &TestServer, mock: &MockLlm, ws: &str, agent: Agent) -> Turn {
    let before = mock.requests().len();
    let t0 = Instant::now();
    let id = create_task(s, ws, agent).await;
    let (evs, _) = follow_sse(s, &id).await;
    let last = evs.last().unwrap();
    assert_eq!(
        last.event["state"],
        "completed",
        "{agent:?} task {id}: {}\n{}",
        last.event,
        s.log()
    );
    let first_agent = evs
        .iter()
        .find(|r| r.event["type"] != "status" && r.event["type"] != "user_message")
        .unwrap_or(last);
    Turn {
        first: evs[0].at - t0,
        first_agent: first_agent.at - t0,
        last: last.at - t0,
        model: ModelRequests::of(mock, before, t0, last.at - t0),
        events: evs.len(),
        stdout: String::new(),
    }
}

/// A follow-up on a berth task whose turn is over: POST the message, then the SSE stream from
/// the task's last seq until this turn's final status.
async fn berth_follow_up(s: &TestServer, mock: &MockLlm, id: &str) -> Turn {
    let task = s.get(&format!("/api/v1/tasks/{id}")).await;
    let after = task["last_seq"].as_u64().unwrap();
    let before = mock.requests().len();
    let t0 = Instant::now();
    let (st, t) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({ "text": FOLLOW_UP })),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    let (evs, _) = follow_sse_after(s, id, after).await;
    let last = evs.last().unwrap();
    assert_eq!(last.event["state"], "completed", "{}", last.event);
    let first_agent = evs
        .iter()
        .find(|r| r.event["type"] != "status" && r.event["type"] != "user_message")
        .unwrap_or(last);
    Turn {
        first: evs[0].at - t0,
        first_agent: first_agent.at - t0,
        last: last.at - t0,
        model: ModelRequests::of(mock, before, t0, last.at - t0),
        events: evs.len(),
        stdout: String::new(),
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The spec of a direct run: the bench's task directory `dir`, `base_url` instead of berth's
/// gateway.
fn direct_spec(agent: Agent, base_url: &str, dir: &str, prompt: &str) -> TurnSpec {
    TurnSpec {
        agent,
        prompt: prompt.into(),
        model: None,
        cwd: HOME.into(),
        home: HOME.into(),
        task_dir: format!("{HOME}/.berth/bench-direct/{dir}").into(),
        gateway_url: base_url.to_owned(),
        virtual_key: "bench-direct-key".into(),
        resume: None,
        approval: berth_agents::ApprovalPolicy::Never,
        mcp_servers: Vec::new(),
    }
}

/// The same CLI with the same invocation, run directly in the workspace: the driver builds the
/// invocation exactly as the daemon would, pointed at `base_url` (the mock through a plain TCP
/// forwarder on the workspace network's gateway address) instead of berth's gateway. Files and
/// the task directory are written first (not timed); the run itself goes through the streaming
/// exec WebSocket, with the cleared environment (`env -i`) and stdin on /dev/null, like the
/// daemon's spawn. A long-lived driver's floor is its CLI's one-shot mode ([`cold_cli`]).
async fn direct_turn(
    s: &TestServer,
    mock: &MockLlm,
    ws: &str,
    agent: Agent,
    base_url: &str,
    n: usize,
) -> Turn {
    let dir = format!("{}-{n}", agent.as_str());
    let spec = direct_spec(agent, base_url, &dir, PROMPT);
    let mut driver = berth_agents::driver(agent);
    let mut inv = driver.invocation(&spec);
    let long_lived = driver.long_lived();
    if long_lived {
        inv = cold_cli(agent, inv, &spec, None);
    }
    prepare_direct(s, ws, &spec, &inv).await;
    let turn = run_direct(s, mock, ws, &inv).await;
    let mut events = 0;
    let mut done = false;
    if long_lived {
        (events, done) = json_lines(&turn.stdout);
    } else {
        for line in turn.stdout.lines() {
            for e in driver.parse_line(line) {
                events += 1;
                let v = serde_json::to_value(&e).unwrap();
                done |= v["type"] == "message" && v["text"].as_str().unwrap_or("").contains("DONE");
            }
        }
    }
    assert!(done, "direct {agent:?}: no DONE message\n{}", turn.stdout);
    Turn { events, ..turn }
}

/// Writes the task directory and the invocation's files in the workspace (not timed).
async fn prepare_direct(s: &TestServer, ws: &str, spec: &TurnSpec, inv: &Invocation) {
    let mut prep = format!(
        "set -e; umask 077; mkdir -p {d} {d}/tmp",
        d = sh_quote(&spec.task_dir.display().to_string())
    );
    for (path, content) in &inv.files {
        let p = sh_quote(&path.display().to_string());
        let dir = sh_quote(&path.parent().unwrap().display().to_string());
        prep.push_str(&format!(
            "; mkdir -p {dir}; printf %s {} > {p}",
            sh_quote(content)
        ));
    }
    prep.push_str("; echo ok");
    let out = s.exec(ws, &["sh", "-c", &prep]).await;
    assert_eq!(out["stdout"], "ok\n", "{out}");
}

/// Runs `inv` through the streaming exec WebSocket (`env -i`, stdin on /dev/null), timed from
/// the socket's opening to the exit message; `events` is left 0.
async fn run_direct(s: &TestServer, mock: &MockLlm, ws: &str, inv: &Invocation) -> Turn {
    assert!(inv.stdin.is_none());
    let mut cmd: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        "exec \"$@\" </dev/null".into(),
        "sh".into(),
        "env".into(),
        "-i".into(),
    ];
    cmd.extend(inv.env.iter().map(|(k, v)| format!("{k}={v}")));
    cmd.push(inv.program.clone());
    cmd.extend(inv.args.iter().cloned());

    let before = mock.requests().len();
    let t0 = Instant::now();
    let mut sock = s
        .ws(&format!(
            "/api/v1/workspaces/{}/exec/ws",
            berth_test_support::enc(ws)
        ))
        .await;
    sock.send(Message::Text(
        json!({"cmd": cmd, "cwd": inv.cwd}).to_string(),
    ))
    .await
    .unwrap();
    let mut first = None;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let (code, last) = loop {
        let msg = tokio::time::timeout(TURN_TIMEOUT, sock.next())
            .await
            .expect("the direct run did not end in time")
            .expect("exec socket closed before the exit message")
            .unwrap();
        match msg {
            Message::Binary(b) => {
                first.get_or_insert_with(|| t0.elapsed());
                match b.first() {
                    Some(1) => stdout.extend_from_slice(&b[1..]),
                    _ => stderr.extend_from_slice(&b[1..]),
                }
            }
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(v["type"], "exit", "{v}");
                break (v["code"].as_i64().unwrap(), t0.elapsed());
            }
            _ => {}
        }
    };
    let model = ModelRequests::of(mock, before, t0, last);
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert_eq!(
        code,
        0,
        "direct {} exited with {code}\nstdout:\n{stdout}\nstderr:\n{}",
        inv.program,
        String::from_utf8_lossy(&stderr)
    );
    let first = first.unwrap_or(last);
    Turn {
        first,
        first_agent: first,
        last,
        model,
        events: 0,
        stdout,
    }
}

/// `codex exec --json` (or `exec resume THREAD`), the one-shot CLI a codex turn was before the
/// app-server driver: the app-server invocation's environment and config file, other arguments.
fn codex_exec(mut inv: Invocation, spec: &TurnSpec, resume: Option<&str>) -> Invocation {
    let mut args: Vec<String> = vec!["exec".into()];
    if resume.is_some() {
        args.push("resume".into());
    }
    args.extend(
        [
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
        ]
        .map(String::from),
    );
    if resume.is_none() {
        args.extend(["-C".into(), spec.cwd.display().to_string()]);
    }
    args.push("--".into());
    args.extend(resume.map(str::to_owned));
    args.push(spec.prompt.clone());
    inv.args = args;
    inv.stdin = None;
    inv
}

/// The cold one-shot CLI a long-lived driver's turn was before its protocol driver, with the
/// protocol invocation's environment and config files: `codex exec --json [resume THREAD]`,
/// `gemini --prompt=… -o stream-json --approval-mode yolo [--resume ID]`,
/// `opencode run --pure --format json [--session ID]`.
fn cold_cli(agent: Agent, inv: Invocation, spec: &TurnSpec, resume: Option<&str>) -> Invocation {
    match agent {
        Agent::Codex => codex_exec(inv, spec, resume),
        Agent::Gemini => {
            let mut inv = inv;
            let mut args = vec![
                format!("--prompt={}", spec.prompt),
                "-o".into(),
                "stream-json".into(),
                "--approval-mode".into(),
                "yolo".into(),
                "--skip-trust".into(),
                "-m".into(),
                "gemini-2.5-pro".into(),
            ];
            if let Some(id) = resume {
                args.extend(["--resume".into(), id.to_owned()]);
            }
            inv.args = args;
            inv.stdin = None;
            inv
        }
        Agent::Opencode => {
            let mut inv = inv;
            let mut args: Vec<String> = ["run", "--pure", "--format", "json"]
                .map(String::from)
                .to_vec();
            if let Some(id) = resume {
                args.extend(["--session".into(), id.to_owned()]);
            }
            args.extend(["--".into(), spec.prompt.clone()]);
            inv.args = args;
            inv.stdin = None;
            inv
        }
        Agent::Claude => unreachable!("claude has no long-lived driver"),
    }
}

/// The JSON lines of a cold CLI's output, and whether one of them carries the text "DONE".
fn json_lines(stdout: &str) -> (usize, bool) {
    let mut n = 0;
    let mut done = false;
    for line in stdout.lines() {
        if serde_json::from_str::<Value>(line).is_err() {
            continue;
        }
        n += 1;
        done |= line.contains("\"DONE\"");
    }
    (n, done)
}

/// A direct conversation to follow up: a first cold CLI turn (not timed) in its own task
/// directory; returns the directory and the conversation id.
async fn direct_thread(
    s: &TestServer,
    mock: &MockLlm,
    ws: &str,
    agent: Agent,
    base_url: &str,
) -> (String, String) {
    let dir = format!("{}-follow-up", agent.as_str());
    let spec = direct_spec(agent, base_url, &dir, PROMPT);
    let inv = cold_cli(
        agent,
        berth_agents::driver(agent).invocation(&spec),
        &spec,
        None,
    );
    prepare_direct(s, ws, &spec, &inv).await;
    let turn = run_direct(s, mock, ws, &inv).await;
    let thread = turn
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            ["thread_id", "session_id", "sessionID"]
                .iter()
                .find_map(|k| v[*k].as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| panic!("no conversation id:\n{}", turn.stdout));
    (dir, thread)
}

/// The same follow-up as a cold direct CLI resuming the conversation in a new process.
async fn direct_follow_up(
    s: &TestServer,
    mock: &MockLlm,
    ws: &str,
    agent: Agent,
    base_url: &str,
    dir: &str,
    thread: &str,
) -> Turn {
    let spec = direct_spec(agent, base_url, dir, FOLLOW_UP);
    let inv = cold_cli(
        agent,
        berth_agents::driver(agent).invocation(&spec),
        &spec,
        Some(thread),
    );
    let turn = run_direct(s, mock, ws, &inv).await;
    let (events, done) = json_lines(&turn.stdout);
    assert!(done, "direct follow-up: no DONE message\n{}", turn.stdout);
    Turn { events, ..turn }
}

/// Resident memory (kB) of `agent`'s protocol processes in the workspace (codex: the npm wrapper
/// and the native binary of `app-server`; gemini: `gemini --acp`; opencode: `opencode acp`),
/// from /proc.
async fn app_server_rss_kb(s: &TestServer, ws: &str, agent: Agent) -> Vec<(String, u64)> {
    let pattern = match agent {
        Agent::Gemini => r"*--ac[p]*",
        Agent::Opencode => r"*opencode\ ac[p]*",
        _ => "*ap[p]-server*",
    };
    let script = format!(
        r#"for p in /proc/[0-9]*; do c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null); case "$c" in {pattern}) echo "$(awk '/^VmRSS/ {{print $2}}' $p/status) ${{c%% *}}";; esac; done"#
    );
    let out = s.exec(ws, &["sh", "-c", &script]).await;
    out["stdout"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (kb, prog) = l.split_once(' ')?;
            Some((prog.to_owned(), kb.parse().ok()?))
        })
        .collect()
}

/// Plain TCP forwarder from `listen` to the mock: the direct runs' way to the mock from inside
/// the workspace (the mock listens on the host's loopback only).
async fn forwarder(listen_ip: &str, target: String) -> String {
    let l = tokio::net::TcpListener::bind((listen_ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = l.accept().await else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    format!("http://{addr}")
}

/// The workspace's default gateway (the bridge's address on the host), from /proc/net/route.
async fn workspace_gateway(s: &TestServer, ws: &str) -> String {
    let out = s.exec(ws, &["cat", "/proc/net/route"]).await;
    let table = out["stdout"].as_str().unwrap();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 2 && f[1] == "00000000" {
            let g = u32::from_str_radix(f[2], 16).unwrap();
            return std::net::Ipv4Addr::from(g.to_le_bytes()).to_string();
        }
    }
    panic!("no default route in the workspace:\n{table}");
}

/// The exec WebSocket's own round trip (`true`), the floor's fixed cost of starting a process
/// in the workspace from the host.
async fn exec_round_trip(s: &TestServer, ws: &str) -> Duration {
    let t0 = Instant::now();
    let mut sock = s
        .ws(&format!(
            "/api/v1/workspaces/{}/exec/ws",
            berth_test_support::enc(ws)
        ))
        .await;
    sock.send(Message::Text(json!({"cmd": ["true"]}).to_string()))
        .await
        .unwrap();
    while let Some(m) = sock.next().await {
        if let Message::Text(_) = m.unwrap() {
            break;
        }
    }
    t0.elapsed()
}

struct AgentResult {
    agent: Agent,
    berth: Vec<Turn>,
    direct: Vec<Turn>,
}

fn col(v: &[Turn], f: impl Fn(&Turn) -> Duration) -> (f64, f64, f64) {
    stats(&v.iter().map(|t| ms(f(t))).collect::<Vec<_>>())
}

fn fmt3((a, b, c): (f64, f64, f64)) -> String {
    format!("{a:.0} / {b:.0} / {c:.0}")
}

fn counts(v: &[Turn], f: impl Fn(&Turn) -> usize) -> String {
    let mut c: Vec<usize> = v.iter().map(f).collect();
    c.sort();
    c.dedup();
    c.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join("–")
}

/// Part 2: `n` tasks at once in one workspace.
struct ParallelResult {
    agent: Agent,
    tasks: usize,
    completed: usize,
    events: usize,
    lat_all: Vec<f64>,
    lat_live: Vec<f64>,
    wall: Duration,
    finals: Vec<f64>,
    requests: usize,
    problems: Vec<String>,
}

async fn parallel(s: &TestServer, mock: &MockLlm, agent: Agent, n: usize) -> ParallelResult {
    s.create_workspace(json!({
        "name": "bench-par", "memory": "8g", "cpus": "2", "pids": 8192, "network": "none"
    }))
    .await;
    let before = mock.requests().len();
    let t0 = Instant::now();
    let runs = futures_util::future::join_all((0..n).map(|_| async move {
        let id = create_task(s, "bench-par", agent).await;
        let (evs, connected) = follow_sse(s, &id).await;
        (id, evs, connected)
    }))
    .await;
    let wall = runs
        .iter()
        .filter_map(|(_, evs, _)| evs.last().map(|r| r.at))
        .max()
        .unwrap()
        - t0;
    let requests = mock.requests().len() - before;
    let mut r = ParallelResult {
        agent,
        tasks: n,
        completed: 0,
        events: 0,
        lat_all: Vec::new(),
        lat_live: Vec::new(),
        wall,
        finals: Vec::new(),
        requests,
        problems: Vec::new(),
    };
    for (id, evs, connected) in &runs {
        let last = &evs.last().unwrap().event;
        if last["state"] == "completed" {
            r.completed += 1;
        } else {
            r.problems.push(format!("{id} ended {last}"));
        }
        r.finals.push(ms(evs.last().unwrap().at - t0));
        // Exactly seq 1..=last_seq, no gap, no duplicate, identical to what is stored.
        let seqs: Vec<u64> = evs
            .iter()
            .map(|e| e.event["seq"].as_u64().unwrap())
            .collect();
        let task = s.get(&format!("/api/v1/tasks/{id}")).await;
        let last_seq = task["last_seq"].as_u64().unwrap();
        if seqs != (1..=last_seq).collect::<Vec<_>>() {
            r.problems
                .push(format!("{id}: SSE seqs {seqs:?}, last_seq {last_seq}"));
        }
        let stored = s.get(&format!("/api/v1/tasks/{id}/events")).await;
        let received: Vec<Value> = evs.iter().map(|e| e.event.clone()).collect();
        if stored.as_array().unwrap() != &received {
            r.problems
                .push(format!("{id}: SSE events differ from the stored events"));
        }
        r.events += evs.len();
        for e in evs {
            let lat = e.wall_ms - at_ms(&e.event);
            r.lat_all.push(lat);
            // Events stamped after the subscriber was connected travelled live (the others
            // were replayed from the store when it connected).
            if at_ms(&e.event) >= *connected {
                r.lat_live.push(lat);
            }
        }
    }
    r
}

#[tokio::main]
async fn main() {
    let runs = env_count("BERTH_BENCH_RUNS", 5);
    let par_n = env_count("BERTH_BENCH_PARALLEL", 20);
    let image = ensure_image().await;
    let mock = MockLlm::start().await;
    let mut env = Vec::new();
    for p in ["ANTHROPIC", "OPENAI", "GEMINI"] {
        env.push((format!("BERTH_{p}_BASE_URL"), mock.url()));
        env.push((format!("BERTH_{p}_API_KEY"), format!("real-{p}-key")));
    }
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_berth"));
    let s = TestServer::start_with(
        &bin,
        ServerOptions {
            env,
            ..Default::default()
        },
    )
    .await;

    // One workspace for both modes. `bridge` so that the direct runs can reach the mock through
    // the forwarder; berth's tasks use the gateway either way.
    let ws = "bench";
    s.create_workspace(json!({
        "name": ws, "memory": "4g", "cpus": "2", "pids": 4096, "network": "bridge"
    }))
    .await;
    let gw = workspace_gateway(&s, ws).await;
    let mock_addr = mock.url().trim_start_matches("http://").to_owned();
    let direct_url = forwarder(&gw, mock_addr).await;
    eprintln!("direct runs reach the mock at {direct_url}");

    let mut exec_rt = Vec::new();
    for _ in 0..runs.max(5) {
        exec_rt.push(ms(exec_round_trip(&s, ws).await));
    }

    let mut results = Vec::new();
    let mut n = 0;
    let only = std::env::var("BERTH_BENCH_AGENTS").unwrap_or_default();
    let chosen = Agent::ALL
        .into_iter()
        .filter(|a| only.is_empty() || only.split(',').any(|o| o.trim() == a.as_str()));
    for agent in chosen {
        // Warm-up, one each: the first run of a CLI in a fresh container pays for the page
        // cache and Node's compile cache.
        berth_turn(&s, &mock, ws, agent).await;
        direct_turn(&s, &mock, ws, agent, &direct_url, n).await;
        n += 1;
        let (mut b, mut d) = (Vec::new(), Vec::new());
        for i in 0..runs {
            // Alternate the order so that drift hits both modes alike.
            if i % 2 == 0 {
                b.push(berth_turn(&s, &mock, ws, agent).await);
                d.push(direct_turn(&s, &mock, ws, agent, &direct_url, n).await);
            } else {
                d.push(direct_turn(&s, &mock, ws, agent, &direct_url, n).await);
                b.push(berth_turn(&s, &mock, ws, agent).await);
            }
            n += 1;
            eprintln!(
                "{agent:?} run {i}: berth {:.0} ms, direct {:.0} ms",
                ms(b.last().unwrap().last),
                ms(d.last().unwrap().last)
            );
        }
        results.push(AgentResult {
            agent,
            berth: b,
            direct: d,
        });
    }

    // The fastest agent (median berth turn) for the parallel run.
    let fastest = results
        .iter()
        .min_by(|a, b| {
            col(&a.berth, |t| t.last)
                .1
                .partial_cmp(&col(&b.berth, |t| t.last).1)
                .unwrap()
        })
        .unwrap()
        .agent;
    // Follow-ups: a warm berth task against the cold CLI resuming a direct conversation, for
    // each long-lived agent part 1 ran.
    let mut follow = Vec::new();
    for agent in results.iter().map(|r| r.agent) {
        if !berth_agents::driver(agent).long_lived() {
            continue;
        }
        let id = create_task(&s, ws, agent).await;
        follow_sse(&s, &id).await;
        let (dir, thread) = direct_thread(&s, &mock, ws, agent, &direct_url).await;
        // Warm-up, one each.
        berth_follow_up(&s, &mock, &id).await;
        direct_follow_up(&s, &mock, ws, agent, &direct_url, &dir, &thread).await;
        let (mut fb, mut fd) = (Vec::new(), Vec::new());
        for i in 0..runs {
            if i % 2 == 0 {
                fb.push(berth_follow_up(&s, &mock, &id).await);
                fd.push(direct_follow_up(&s, &mock, ws, agent, &direct_url, &dir, &thread).await);
            } else {
                fd.push(direct_follow_up(&s, &mock, ws, agent, &direct_url, &dir, &thread).await);
                fb.push(berth_follow_up(&s, &mock, &id).await);
            }
            eprintln!(
                "{agent:?} follow-up run {i}: berth (warm) {:.0} ms, direct (cold) {:.0} ms",
                ms(fb.last().unwrap().last),
                ms(fd.last().unwrap().last)
            );
        }
        let rss = app_server_rss_kb(&s, ws, agent).await;
        follow.push((agent, fb, fd, rss));
    }

    let par = parallel(&s, &mock, fastest, par_n).await;

    let rt = berth_runtime::DockerRuntime::connect(Some(&berth_test_support::engine())).unwrap();
    let info = berth_runtime::Runtime::info(&rt).await.unwrap();
    println!(
        "engine: {} {}; image {image}; {runs} measured runs per agent and mode (+1 warm-up)",
        info.engine, info.version
    );
    let (a, b, c) = stats(&exec_rt);
    println!("exec WebSocket round trip of `true` (part of every direct run): {a:.0} / {b:.0} / {c:.0} ms (min / median / max)");
    println!();
    println!("| agent | mode | first event (ms) | first agent event (ms) | final event (ms) | first model request (ms) | last model request → final (ms) | model requests / turn | events / turn |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        for (mode, v) in [("berth task", &r.berth), ("direct CLI", &r.direct)] {
            println!(
                "| {} | {mode} | {} | {} | {} | {} | {} | {} | {} |",
                r.agent.as_str(),
                fmt3(col(v, |t| t.first)),
                fmt3(col(v, |t| t.first_agent)),
                fmt3(col(v, |t| t.last)),
                fmt3(col(v, |t| t.model.to_first)),
                fmt3(col(v, |t| t.model.after_last)),
                counts(v, |t| t.model.count),
                counts(v, |t| t.events),
            );
        }
    }
    println!();
    println!("| agent | berth / direct, final event (median) | berth − direct (ms, median) | extra model requests | ≤ 1.1× |");
    println!("|---|---|---|---|---|");
    for r in &results {
        let bm = col(&r.berth, |t| t.last).1;
        let dm = col(&r.direct, |t| t.last).1;
        let extra = r.berth.iter().map(|t| t.model.count).sum::<usize>() as i64
            - r.direct.iter().map(|t| t.model.count).sum::<usize>() as i64;
        println!(
            "| {} | **{:.2}** | {:+.0} | {} | {} |",
            r.agent.as_str(),
            bm / dm,
            bm - dm,
            extra,
            if bm / dm <= 1.1 { "yes" } else { "no" }
        );
    }
    println!();
    for (agent, fb, fd, rss) in &follow {
        let agent = agent.as_str();
        println!("Follow-up turns ({agent}): a berth task's warm protocol process vs the cold CLI resuming the conversation");
        println!();
        println!("| mode | first event (ms) | first agent event (ms) | final event (ms) | model requests / turn | events / turn |");
        println!("|---|---|---|---|---|---|");
        for (mode, v) in [("berth, warm process", fb), ("direct CLI, cold resume", fd)] {
            println!(
                "| {mode} | {} | {} | {} | {} | {} |",
                fmt3(col(v, |t| t.first)),
                fmt3(col(v, |t| t.first_agent)),
                fmt3(col(v, |t| t.last)),
                counts(v, |t| t.model.count),
                counts(v, |t| t.events),
            );
        }
        let (bm, dm) = (col(fb, |t| t.last).1, col(fd, |t| t.last).1);
        let extra = fb.iter().map(|t| t.model.count).sum::<usize>() as i64
            - fd.iter().map(|t| t.model.count).sum::<usize>() as i64;
        println!();
        println!(
            "{agent} warm / cold, final event (median): **{:.2}** ({:+.0} ms); extra model requests: {extra}; ≤ 0.5×: {}",
            bm / dm,
            bm - dm,
            if bm / dm <= 0.5 { "yes" } else { "no" }
        );
        let mib: Vec<f64> = rss.iter().map(|(_, kb)| *kb as f64 / 1024.0).collect();
        if mib.is_empty() {
            println!("idle {agent} protocol process resident memory: no process found");
        } else {
            let (lo, med, hi) = stats(&mib);
            println!(
                "idle {agent} protocol process resident memory (VmRSS): {} processes (one per {agent} task of this run, each kept until its idle time runs out), {lo:.1} / {med:.1} / {hi:.1} MiB each (min / median / max), {:.1} MiB in all",
                mib.len(),
                mib.iter().sum::<f64>()
            );
        }
        println!();
    }
    println!();
    println!(
        "Parallel: {} × {} in one workspace (memory 8g, cpus 2, pids 8192): {}/{} completed, {} events, wall {:.1} s, {:.0} events/s, {} model requests",
        par.tasks,
        par.agent.as_str(),
        par.completed,
        par.tasks,
        par.events,
        par.wall.as_secs_f64(),
        par.events as f64 / par.wall.as_secs_f64(),
        par.requests
    );
    let (a, b, c) = stats(&par.finals);
    println!("per-task POST → final event: {a:.0} / {b:.0} / {c:.0} ms (min / median / max)");
    println!();
    println!("| daemon `at` → SSE subscriber on the host (ms) | events | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (label, v) in [
        (
            "live events (stamped after the subscriber connected)",
            &par.lat_live,
        ),
        ("all events (incl. replayed on connect)", &par.lat_all),
    ] {
        if v.is_empty() {
            continue;
        }
        println!(
            "| {label} | {} | {:.1} | {:.1} | {:.1} |",
            v.len(),
            percentile(v, 50.0),
            percentile(v, 99.0),
            stats(v).2
        );
    }
    // What the server's follow-loops ran into (each of these costs a 500 ms retry pause).
    let log = s.log();
    for needle in [
        "cannot store task event",
        "task event stream broke",
        "task events unavailable",
    ] {
        let hits: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
        if let Some(first) = hits.first() {
            println!(
                "server log: {} × \"{needle}\", e.g. {}",
                hits.len(),
                strip_ansi(first.trim())
            );
        }
    }
    println!();
    if par.problems.is_empty() {
        println!(
            "No event lost: every subscriber received exactly seq 1..=last_seq, no gap, no duplicate, identical to the stored events."
        );
    } else {
        println!("PROBLEMS:");
        for p in &par.problems {
            println!("- {p}");
        }
    }
}
