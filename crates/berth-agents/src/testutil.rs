//! Test helpers shared by the driver unit tests.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::{Agent, Driver, EventKind, Invocation, TurnSpec};

pub(crate) fn spec(agent: Agent) -> TurnSpec {
    let gateway = match agent.provider() {
        berth_domain::Provider::Anthropic => "http://127.0.0.1:7788/anthropic",
        berth_domain::Provider::Openai => "http://127.0.0.1:7788/openai",
        berth_domain::Provider::Gemini => "http://127.0.0.1:7788/gemini",
    };
    TurnSpec {
        agent,
        prompt: "Create hello.txt".into(),
        model: None,
        cwd: PathBuf::from("/workspace/repo"),
        home: PathBuf::from("/home/agent"),
        task_dir: PathBuf::from("/var/berth/tasks/t1"),
        gateway_url: gateway.into(),
        virtual_key: "vk-test".into(),
        resume: None,
        approval: crate::ApprovalPolicy::Never,
        mcp_servers: Vec::new(),
    }
}

/// Two MCP servers (stdio with a placeholder in its env, and HTTP with a header).
pub(crate) fn mcp_servers() -> Vec<berth_domain::McpServer> {
    vec![
        berth_domain::McpServer {
            name: "notes".into(),
            transport: berth_domain::McpTransport::Stdio {
                command: "node".into(),
                args: vec!["/srv/notes.js".into(), "a \"quoted\" arg".into()],
                env: std::collections::BTreeMap::from([(
                    "TAG".to_string(),
                    "{{secret:TOKEN}}".to_string(),
                )]),
            },
        },
        berth_domain::McpServer {
            name: "docs".into(),
            transport: berth_domain::McpTransport::Http {
                url: "https://mcp.example/mcp".into(),
                headers: std::collections::BTreeMap::from([(
                    "X-Key".to_string(),
                    "ph-1".to_string(),
                )]),
            },
        },
    ]
}

/// A session spec like [`spec`]'s turn: a fresh conversation in the session's own state dir.
pub(crate) fn session_spec(agent: Agent) -> crate::SessionSpec {
    let t = spec(agent);
    crate::SessionSpec {
        agent,
        model: None,
        cwd: t.cwd,
        home: t.home,
        state_dir: PathBuf::from("/home/agent/.berth/sessions/s1"),
        gateway_url: t.gateway_url,
        virtual_key: "vk-test-0123456789abcdefghij".into(),
        resume: None,
        mcp_servers: Vec::new(),
    }
}

/// The checks every interactive invocation passes: no stdin, a colour terminal, the turn's
/// TMPDIR in the state dir.
pub(crate) fn check_interactive(inv: &Invocation) -> HashMap<String, String> {
    assert_eq!(inv.stdin, None);
    assert_eq!(inv.cwd, PathBuf::from("/workspace/repo"));
    let env: HashMap<String, String> = inv.env.iter().cloned().collect();
    assert_eq!(
        env.len(),
        inv.env.len(),
        "duplicate env names: {:?}",
        inv.env
    );
    assert_eq!(env["TERM"], "xterm-256color");
    assert!(!env.contains_key("NO_COLOR"));
    assert_eq!(env["TMPDIR"], "/home/agent/.berth/sessions/s1/tmp");
    let headless = [
        "-p",
        "exec",
        "run",
        "--json",
        "--format",
        "-o",
        "--output-format",
    ];
    for a in &inv.args {
        assert!(
            !headless.contains(&a.as_str()) && !a.starts_with("--prompt"),
            "headless flag {a} in {:?}",
            inv.args
        );
    }
    env
}

pub(crate) fn env_of(inv: &Invocation) -> HashMap<String, String> {
    let map: HashMap<String, String> = inv.env.iter().cloned().collect();
    assert_eq!(
        map.len(),
        inv.env.len(),
        "duplicate env names: {:?}",
        inv.env
    );
    for real in [
        "OPENAI_API_KEY",
        "CODEX_API_KEY",
        "GOOGLE_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "OPENAI_BASE_URL",
    ] {
        assert!(!map.contains_key(real), "{real} must not be set");
    }
    // The virtual key only reaches the process through one env value.
    let holders: Vec<&String> = map
        .iter()
        .filter(|(_, v)| v.contains("vk-test"))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(holders.len(), 1, "key in {holders:?}");
    assert!(!inv.args.iter().any(|a| a.contains("vk-test")));
    for (_, content) in &inv.files {
        assert!(!content.contains("vk-test"), "key written to a file");
    }
    map
}

pub(crate) fn parse_all(d: &mut dyn Driver, text: &str) -> Vec<EventKind> {
    text.lines().flat_map(|l| d.parse_line(l)).collect()
}

/// Feeds truncations and type-mutated variants of every sample line: nothing may panic.
pub(crate) fn fuzz(d: &mut dyn Driver, sample: &str) {
    for line in sample.lines() {
        for (i, _) in line.char_indices() {
            let _ = d.parse_line(&line[..i]);
        }
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            let mut variants = Vec::new();
            mutate(&v, &mut |m| variants.push(m), &mut Vec::new());
            for m in variants {
                let _ = d.parse_line(&m.to_string());
            }
        }
    }
    for junk in [
        "",
        " ",
        "null",
        "[]",
        "42",
        "\"str\"",
        "{}",
        "{\"type\":null}",
        "{\"type\":7}",
        "\u{0}\u{fffd}garbage",
        "{\"type\":\"result\"",
    ] {
        let _ = d.parse_line(junk);
    }
}

/// Calls `f` with copies of `root` where one node (at any depth) is replaced by a value of
/// another type.
fn mutate(root: &Value, f: &mut dyn FnMut(Value), path: &mut Vec<PathSeg>) {
    let node = get_path(root, path).cloned().unwrap_or(Value::Null);
    for alt in [
        Value::Null,
        json!(-1),
        json!(1.5e300),
        json!("x"),
        json!([]),
        json!({}),
        json!(true),
        json!([{"type": "text"}]),
    ] {
        let mut copy = root.clone();
        if let Some(slot) = get_path_mut(&mut copy, path) {
            *slot = alt;
        }
        f(copy);
    }
    match &node {
        Value::Object(map) => {
            for k in map.keys() {
                path.push(PathSeg::Key(k.clone()));
                mutate(root, f, path);
                path.pop();
            }
        }
        Value::Array(items) => {
            for i in 0..items.len() {
                path.push(PathSeg::Index(i));
                mutate(root, f, path);
                path.pop();
            }
        }
        _ => {}
    }
}

enum PathSeg {
    Key(String),
    Index(usize),
}

fn get_path<'a>(v: &'a Value, path: &[PathSeg]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, seg| match seg {
        PathSeg::Key(k) => v.get(k),
        PathSeg::Index(i) => v.get(i),
    })
}

fn get_path_mut<'a>(v: &'a mut Value, path: &[PathSeg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, seg| match seg {
        PathSeg::Key(k) => v.get_mut(k),
        PathSeg::Index(i) => v.get_mut(*i),
    })
}

/// Real recorded output (tests/fixtures) under truncation and type mutation: no panics.
#[test]
fn fuzz_recorded_fixtures() {
    for (agent, text) in [
        (
            Agent::Claude,
            include_str!("../tests/fixtures/claude.jsonl"),
        ),
        (Agent::Codex, include_str!("../tests/fixtures/codex.jsonl")),
        (
            Agent::Gemini,
            include_str!("../tests/fixtures/gemini.jsonl"),
        ),
        (
            Agent::Opencode,
            include_str!("../tests/fixtures/opencode.jsonl"),
        ),
        (
            Agent::Gemini,
            include_str!("../tests/fixtures/gemini-resumed.jsonl"),
        ),
    ] {
        let mut d = crate::driver(agent);
        if d.long_lived() {
            d.begin_turn(&spec(agent));
        }
        fuzz(d.as_mut(), text);
    }
}
