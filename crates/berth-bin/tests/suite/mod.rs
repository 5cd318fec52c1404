mod access;
mod acp_resume;
mod agent_env;
mod agent_sessions;
mod approvals;
mod auth;
mod authz;
mod backup;
mod berth_mcp;
mod cli;
mod codex_appserver;
mod costs;
mod deliver;
mod devcontainer;
mod devices;
mod doctor;
mod egress;
mod egress_tricks;
mod exec_stress;
mod hostile_daemon;
mod hostile_egress;
mod hostile_fs;
mod hostile_gateway;
mod long_turn;
mod mcp;
mod notify;
mod oom;
mod parallel_tasks;
mod reboot;
mod secrets;
mod sessions;
mod sso;
mod task_diff;
mod tasks;
mod template_image;
mod template_mcp;
mod templates;
mod tls;
mod ui;
mod workspace_update;
mod workspaces;

/// The first half of a fake workspace daemon in Python, for the suites that replace the real
/// one from inside a workspace (what any process there can do: it owns the daemon's directory):
/// the protocol-1 framing (u32 length of kind + payload, kind 0 = JSON control), reading,
/// holding a connection, and task info/event frames. Each suite appends its own `handle` and
/// modes (`concat!(crate::fake_daemon_prelude!(), r#"…"#)`).
#[macro_export]
macro_rules! fake_daemon_prelude {
    () => {
        r#"
import json, os, socket, struct, sys, threading, time
PATH = "/run/berth/daemon/daemon.sock"
mode = ["silent"]
def frame(obj):
    p = json.dumps(obj).encode()
    return struct.pack(">I", len(p) + 1) + b"\0" + p
def recvn(c, n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            raise EOFError
        b += x
    return b
def read(c):
    n = struct.unpack(">I", recvn(c, 4))[0]
    return json.loads(recvn(c, n)[1:])
def hold(c):
    while c.recv(65536):
        pass
def info(tid, last, state="running"):
    return {"id": tid, "agent": "claude", "state": state, "last_seq": last,
            "agent_session_id": None, "pid": None, "reason": None}
def event(seq, kind):
    kind.update({"seq": seq, "at": "2026-01-01T00:00:00Z"})
    return frame({"type": "task_event", "event": kind})
"#
    };
}
