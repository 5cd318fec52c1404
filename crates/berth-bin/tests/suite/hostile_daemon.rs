//! Nothing a workspace sends can crash, hang or starve the server: a fake workspace daemon that
//! hangs, lies about lengths, floods events or reports absurd usage, and floods of held
//! connections on every socket the workspace reaches, while a second workspace keeps working.
//!
//! The fake daemon is what any process in a workspace can do as uid 1000: it owns the daemon's
//! directory (`/run/berth/daemon/`, the only writable part of the channel), so it binds its own
//! socket and renames it over `daemon.sock` there (the real daemon keeps running, unreachable).
//! It is steered through the API itself: an exec of `berth-fake MODE` is answered by the fake,
//! which switches to MODE.

use std::time::{Duration, Instant};

use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use serde_json::{json, Value};

use crate::bin;

/// The fake daemon (protocol 1 framing: u32 length of kind + payload, kind 0 = JSON control).
const FAKE_DAEMON: &str = concat!(
    crate::fake_daemon_prelude!(),
    r#"BIG = 2**64 - 1
def handle(c):
    try:
        read(c)
        c.sendall(frame({"type": "hello_ok", "protocol": 1, "version": "fake", "pid": 1,
                         "started_at": "2026-01-01T00:00:00Z", "uid": 1000, "sessions": 0}))
        req = read(c)
        t, m = req["type"], mode[0]
        if t == "exec" and req["argv"][:1] == ["berth-fake"]:
            mode[0] = req["argv"][1]
            c.sendall(frame({"type": "exec_started", "pid": 1}) + frame({"type": "exit", "code": 0}))
            return hold(c)
        if m == "huge" and t == "session_capture":
            # A capture announcing 1 TiB, then data as fast as it goes.
            c.sendall(frame({"type": "capture", "len": 2**40}))
            chunk = struct.pack(">I", 65537) + b"\1" + b"y" * 65536
            while True:
                c.sendall(chunk)
        if m == "huge":
            # A frame announcing 4 GiB, then nothing.
            c.sendall(struct.pack(">I", 0xFFFFFFFF) + b"\0")
            return hold(c)
        if t == "task_start" and m in ("usage", "flood"):
            c.sendall(frame(dict(info(req["id"], 0), type="task")))
            return hold(c)
        if t == "task_events" and m == "usage":
            after = req.get("after", 0)
            c.sendall(frame({"type": "task_subscribed", "task": info(req["task"], after + 5)}))
            # A status the task's state machine accepts (queued -> starting -> running).
            c.sendall(event(after + 1, {"type": "status", "state": "starting"}))
            c.sendall(event(after + 2, {"type": "status", "state": "running"}))
            for i in range(3, 6):
                c.sendall(event(after + i, {"type": "usage", "input_tokens": BIG if i % 2 else 2**63 - 1,
                                            "output_tokens": BIG, "cached_input_tokens": BIG,
                                            "cost_usd": 1e308}))
            return hold(c)
        if t == "task_events" and m == "flood":
            seq = req.get("after", 0)
            c.sendall(frame({"type": "task_subscribed", "task": info(req["task"], seq)}))
            text = "x" * 4000
            while True:
                seq += 1
                c.sendall(event(seq, {"type": "message_delta", "text": text}))
        hold(c)
    except Exception:
        pass
    finally:
        c.close()
tmp = PATH + ".fake"
try:
    os.unlink(tmp)
except FileNotFoundError:
    pass
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(tmp)
os.chmod(tmp, 0o777)
srv.listen(128)
time.sleep(1)  # let the exec that started us finish through the real daemon
os.rename(tmp, PATH)
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#
);

/// Opens COUNT connections to SOCKET and holds them for HOLD seconds; prints how many connects
/// succeeded.
const FLOOD: &str = r#"
import resource, socket, sys, time
path, count, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held, failed = [], 0
end = time.time() + hold
for _ in range(count):
    if time.time() > end:
        break
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(path)
        held.append(s)
    except OSError:
        failed += 1
        s.close()
print("connected", len(held), "failed", failed, "limit", hard, flush=True)
time.sleep(max(0, end - time.time()))
"#;

/// The server's pid: the `berth server` process whose environment names this data dir.
fn server_pid(s: &TestServer) -> u32 {
    let want = format!("BERTH_DATA_DIR={}", s.data_dir.path().display());
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let is_server = cmd.split(|b| *b == 0).any(|a| a == b"server");
        if is_server && env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
            return pid;
        }
    }
    panic!("no server process for {want}");
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn nofile_soft(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

async fn exec_with_stdin(s: &TestServer, ws: &str, cmd: &[&str], stdin: &str) -> Value {
    let (st, v) = s
        .call(
            "POST",
            &format!("/api/v1/workspaces/{ws}/exec"),
            Some(json!({"cmd": cmd, "stdin": stdin})),
        )
        .await;
    assert_eq!(st, 200, "exec {cmd:?}: {v}");
    v
}

/// Puts the fake daemon behind the workspace's `daemon.sock`.
async fn install_fake(s: &TestServer, ws: &str) {
    exec_with_stdin(s, ws, &["sh", "-c", "cat > /tmp/fake.py"], FAKE_DAEMON).await;
    s.exec(
        ws,
        &[
            "sh",
            "-c",
            "setsid python3 /tmp/fake.py > /tmp/fake.log 2>&1 < /dev/null &",
        ],
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the fake daemon answers",
        || async { fake_mode(s, ws, "silent").await.then_some(()) },
    )
    .await;
}

/// Switches the fake daemon's mode; false while the real daemon still answers.
async fn fake_mode(s: &TestServer, ws: &str, mode: &str) -> bool {
    let body = json!({"cmd": ["berth-fake", mode]});
    let path = format!("/api/v1/workspaces/{ws}/exec");
    let (st, v) = s.call("POST", &path, Some(body)).await;
    st == 200 && v["exit_code"] == 0
}

/// The second workspace's API, exec and sessions work, each within a few seconds.
async fn neighbour_works(s: &TestServer, ws: &str) {
    let started = Instant::now();
    let out = s.exec(ws, &["echo", "fine"]).await;
    assert_eq!(out["stdout"], "fine\n", "{out}");
    s.get(&format!("/api/v1/workspaces/{ws}/sessions")).await;
    s.get(&format!("/api/v1/workspaces/{ws}")).await;
    s.get("/api/v1/tasks").await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the neighbour took {took:?}"
    );
}

/// A call on the hostile workspace: must end (with an error or not) within `limit`.
async fn bounded(s: &TestServer, method: &str, path: &str, limit: Duration) -> (u16, Value) {
    let started = Instant::now();
    let r = tokio::time::timeout(limit, s.call(method, path, None))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} still hangs after {limit:?}"));
    eprintln!("{method} {path} -> {} in {:?}", r.0, started.elapsed());
    r
}

fn assert_no_panic(s: &TestServer) {
    let log = s.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

/// Shown able to fail: with the old daemon client (no deadline after the handshake) the
/// `silent` session list hangs ("still hangs after 30s"), and the 1 TiB capture is read and
/// buffered (only the length up front was bounded); with the old store the `usage` reports
/// overflow SQLite's sum into REAL and `GET /tasks/{id}` panics in `get::<i64>` (the
/// connection drops: IncompleteMessage), as would every start through `resume_all`.
#[tokio::test]
async fn a_fake_daemon_that_hangs_lies_or_floods_harms_no_one() {
    ensure_image().await;
    // claude tasks need an Anthropic upstream configured (no call reaches it here).
    let mut s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![("BERTH_ANTHROPIC_API_KEY".into(), "unused".into())],
            ..Default::default()
        },
    )
    .await;
    s.create_workspace(json!({"name": "evil"})).await;
    s.create_workspace(json!({"name": "good"})).await;
    install_fake(&s, "evil").await;

    // (a) Answers the handshake, then silence.
    let (st, v) = bounded(&s, "GET", "/api/v1/workspaces/evil/sessions", secs(30)).await;
    assert_eq!(st, 503, "{v}");
    let (st, v) = bounded(&s, "GET", "/api/v1/workspaces/evil", secs(15)).await;
    assert_eq!(st, 200, "{v}");
    let hang = bounded(&s, "GET", "/api/v1/workspaces/evil/sessions", secs(30));
    let (_, ()) = tokio::join!(hang, neighbour_works(&s, "good"));
    // The operator's CLI: one line of error, exit != 0, within the deadline.
    for args in [["session", "list", "evil"], ["workspace", "show", "evil"]] {
        let started = Instant::now();
        let out = s.cli(&args);
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "berth {args:?} -> {:?} in {took:?}: {err}",
            out.status.code()
        );
        assert!(took < secs(30), "berth {args:?} took {took:?}");
        if args[0] == "session" {
            assert!(
                !out.status.success() && err.contains("did not arrive"),
                "{err}"
            );
        } else {
            assert!(out.status.success(), "{err}");
        }
    }

    // (b) A frame announcing 4 GiB.
    assert!(fake_mode(&s, "evil", "huge").await);
    let (st, v) = bounded(&s, "GET", "/api/v1/workspaces/evil/sessions", secs(5)).await;
    assert_eq!(st, 503, "{v}");
    assert!(v.to_string().contains("frame length"), "{v}");
    // A capture announcing 1 TiB and streaming: refused before reading, memory untouched.
    let pid = server_pid(&s);
    let base = rss_kib(pid);
    let path = "/api/v1/workspaces/evil/sessions/main/scrollback";
    let (st, v) = bounded(&s, "GET", path, secs(5)).await;
    assert_eq!(st, 503, "{v}");
    tokio::time::sleep(secs(2)).await;
    let after = rss_kib(pid);
    assert!(
        after < base + 64 * 1024,
        "rss grew from {base} to {after} KiB"
    );

    // (d) Absurd usage: u64::MAX and i64::MAX tokens, 1e308 dollars, again and again.
    assert!(fake_mode(&s, "evil", "usage").await);
    let task = json!({"workspace": "evil", "agent": "claude", "prompt": "hi"});
    let (st, v) = s.call("POST", "/api/v1/tasks", Some(task)).await;
    assert!(st == 200 || st == 201, "{st} {v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let t = eventually(secs(20), "usage stored", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        (t["last_seq"].as_u64() >= Some(4)).then_some(t)
    })
    .await;
    // The daemon's figures are kept as the agent's report only; what the task costs comes
    // from the gateway, which saw no call.
    assert_eq!(
        t["usage"]["agent_reported"]["input_tokens"],
        i64::MAX as u64,
        "{t}"
    );
    assert_eq!(
        (
            t["usage"]["input_tokens"].as_u64(),
            t["usage"]["cost"].as_str()
        ),
        (Some(0), Some("0.00")),
        "{t}"
    );
    assert_eq!(t["state"], "running", "{t}");
    s.get("/api/v1/tasks").await;
    // A restart follows the task again (`resume_all`) and its row still loads.
    s.restart().await;
    s.get("/api/v1/tasks").await;
    eventually(secs(20), "resumed and still readable", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        (t["last_seq"].as_u64() >= Some(8)).then_some(t)
    })
    .await;
    neighbour_works(&s, "good").await;

    // (c) An endless flood of events: the server keeps its memory and serves the neighbour.
    let pid = server_pid(&s);
    let base = rss_kib(pid);
    assert!(fake_mode(&s, "evil", "flood").await);
    let task = json!({"workspace": "evil", "agent": "claude", "prompt": "flood"});
    let (st, v) = s.call("POST", "/api/v1/tasks", Some(task)).await;
    assert!(st == 200 || st == 201, "{st} {v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let mut peak = base;
    for _ in 0..5 {
        tokio::time::sleep(secs(2)).await;
        neighbour_works(&s, "good").await;
        s.get(&format!("/api/v1/tasks/{id}")).await;
        peak = peak.max(rss_kib(pid));
    }
    let seen = s.get(&format!("/api/v1/tasks/{id}")).await["last_seq"]
        .as_u64()
        .unwrap();
    eprintln!("flood: {seen} events stored, rss {base} KiB -> peak {peak} KiB");
    assert!(seen > 100, "the flood did not arrive ({seen} events)");
    assert!(
        peak < base + 200 * 1024,
        "rss grew from {base} to {peak} KiB"
    );

    let (st, _) = s.call("POST", "/api/v1/workspaces/evil/stop", None).await;
    assert_eq!(st, 200);
    neighbour_works(&s, "good").await;
    assert_no_panic(&s);
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Lowers this process's soft open-file limit (inherited by the server it spawns) to `soft`;
/// returns the previous limits.
fn set_own_nofile(soft: u64, hard: u64) {
    let st = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={soft}:{hard}"),
        ])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Every socket the workspace reaches, flooded with 7,000 held connections each (more than the
/// 1024 descriptors a server started from a shell has), while the neighbour keeps working and
/// the server's descriptors and memory stay bounded. Shown able to fail: with the old accept
/// loops (no cap, no deadlines) and the limit raised, the server runs out of descriptors and
/// the neighbour's calls stall ("the neighbour took 29s"); without raising RLIMIT_NOFILE the
/// soft limit stays 1024 (the first assertion).
#[tokio::test]
async fn a_connection_flood_on_every_socket_leaves_the_server_bounded() {
    ensure_image().await;
    let own = nofile_soft(std::process::id());
    let hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .unwrap();
    let hard: u64 = hard.parse().unwrap_or(1 << 20);
    set_own_nofile(1024.min(own), hard);
    let s = TestServer::start_with(bin(), ServerOptions::default()).await;
    set_own_nofile(own, hard);
    let pid = server_pid(&s);
    assert!(
        nofile_soft(pid) > 1024,
        "the server kept the soft limit {}",
        nofile_soft(pid)
    );
    assert!(
        s.log().contains("raised the open-file limit"),
        "{}",
        s.log()
    );

    s.create_workspace(json!({"name": "evil"})).await;
    s.create_workspace(json!({"name": "good"})).await;
    neighbour_works(&s, "good").await;
    let (fd0, rss0) = (fd_count(pid), rss_kib(pid));

    exec_with_stdin(&s, "evil", &["sh", "-c", "cat > /tmp/flood.py"], FLOOD).await;
    let launch = "for n in egress.sock gateway.sock egress-handoff.sock; do \
                  setsid python3 /tmp/flood.py /run/berth/$n 7000 60 > /tmp/flood.$n.out 2>&1 < /dev/null & \
                  done";
    s.exec("evil", &["sh", "-c", launch]).await;

    let (mut fd_peak, mut rss_peak) = (fd0, rss0);
    let started = Instant::now();
    while started.elapsed() < secs(45) {
        tokio::time::sleep(secs(3)).await;
        neighbour_works(&s, "good").await;
        fd_peak = fd_peak.max(fd_count(pid));
        rss_peak = rss_peak.max(rss_kib(pid));
    }
    let out = s.exec("evil", &["sh", "-c", "cat /tmp/flood.*.out"]).await;
    let report = out["stdout"].as_str().unwrap().to_owned();
    eprintln!("flood: {report}fds {fd0} -> peak {fd_peak}, rss {rss0} KiB -> peak {rss_peak} KiB");
    let connected: Vec<u64> = report
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(connected.len(), 3, "{report}");
    assert!(
        connected.iter().all(|n| *n >= 5000),
        "the flood did not get its connections in: {report}"
    );
    // Three sockets, at most 256 + 128 connections held for the workspace, plus headroom.
    assert!(fd_peak < fd0 + 700, "fds grew from {fd0} to {fd_peak}");
    assert!(
        rss_peak < rss0 + 256 * 1024,
        "rss grew from {rss0} to {rss_peak} KiB"
    );
    assert_no_panic(&s);
}
