//! Regression tests on stdout recorded from the real CLIs (tests/real_clis.rs with
//! `BERTH_AGENTS_RECORD`), each against the normalized events it must produce.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_agents::{driver, Agent, ApprovalPolicy, EventKind, TurnSpec};

/// A turn's spec as the recording's was (what a long-lived driver's requests depend on).
fn spec(agent: Agent, resume: Option<&str>) -> TurnSpec {
    TurnSpec {
        agent,
        prompt: "recorded".into(),
        model: None,
        cwd: "/tmp/repo".into(),
        home: "/tmp/home".into(),
        task_dir: "/tmp/task".into(),
        gateway_url: "http://127.0.0.1:1".into(),
        virtual_key: "vk".into(),
        resume: resume.map(str::to_owned),
        approval: ApprovalPolicy::Never,
        mcp_servers: Vec::new(),
    }
}

/// Replays a recorded stdout through a fresh driver. A long-lived driver (codex app-server, ACP) is
/// first told the turn it began, so the protocol's answers match its requests.
fn replay(agent: Agent, resume: Option<&str>, stdout: &str, expected: &str) {
    let mut d = driver(agent);
    if d.long_lived() {
        d.begin_turn(&spec(agent, resume));
    }
    let got: Vec<EventKind> = stdout.lines().flat_map(|l| d.parse_line(l)).collect();
    let want: Vec<EventKind> = expected
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, want, "{agent}");
}

fn check(agent: Agent, stdout: &str, expected: &str) {
    replay(agent, None, stdout, expected);
}

#[test]
fn claude_recorded() {
    check(
        Agent::Claude,
        include_str!("fixtures/claude.jsonl"),
        include_str!("fixtures/claude.events"),
    );
}

#[test]
fn codex_recorded() {
    check(
        Agent::Codex,
        include_str!("fixtures/codex.jsonl"),
        include_str!("fixtures/codex.events"),
    );
    // The follow-up in a new app-server process: the thread resumed by its id; the turn's usage
    // is its own, not the thread's.
    replay(
        Agent::Codex,
        Some("01a24365-a100-7f02-9484-8ae2594e9d81"),
        include_str!("fixtures/codex-resumed.jsonl"),
        include_str!("fixtures/codex-resumed.events"),
    );
}

/// Gemini CLI over ACP: a new session, then the follow-up in a new process, which
/// `session/load`s it (the conversation it replays first is not the turn's).
#[test]
fn gemini_recorded() {
    check(
        Agent::Gemini,
        include_str!("fixtures/gemini.jsonl"),
        include_str!("fixtures/gemini.events"),
    );
    replay(
        Agent::Gemini,
        Some("4edcd1f9-7d70-4b42-95fb-4b38613365db"),
        include_str!("fixtures/gemini-resumed.jsonl"),
        include_str!("fixtures/gemini-resumed.events"),
    );
}

/// OpenCode over ACP, as gemini.
#[test]
fn opencode_recorded() {
    check(
        Agent::Opencode,
        include_str!("fixtures/opencode.jsonl"),
        include_str!("fixtures/opencode.events"),
    );
    replay(
        Agent::Opencode,
        Some("ses_dbc347a5affeXiKLWzXsrtZNiw"),
        include_str!("fixtures/opencode-resumed.jsonl"),
        include_str!("fixtures/opencode-resumed.events"),
    );
}
