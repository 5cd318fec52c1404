//! Regression tests on stdout recorded from the real CLIs (tests/real_clis.rs with
//! `BERTH_AGENTS_RECORD`), each against the normalized events it must produce.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use berth_agents::{driver, Agent, EventKind};

fn check(agent: Agent, stdout: &str, expected: &str) {
    let mut d = driver(agent);
    let got: Vec<EventKind> = stdout.lines().flat_map(|l| d.parse_line(l)).collect();
    let want: Vec<EventKind> = expected
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, want, "{agent}");
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
    // Resumed thread: Codex reports the usage of the whole thread (2 turns × 2 requests).
    check(
        Agent::Codex,
        include_str!("fixtures/codex-resumed.jsonl"),
        include_str!("fixtures/codex-resumed.events"),
    );
}

#[test]
fn gemini_recorded() {
    check(
        Agent::Gemini,
        include_str!("fixtures/gemini.jsonl"),
        include_str!("fixtures/gemini.events"),
    );
}

#[test]
fn opencode_recorded() {
    check(
        Agent::Opencode,
        include_str!("fixtures/opencode.jsonl"),
        include_str!("fixtures/opencode.events"),
    );
}
