//! Costs you can bill (issue 16 §3–4), end to end: a two-turn task of each real agent CLI
//! against the scripted mock LLM, whose usage per answer is known (20 input, 10 output tokens),
//! costs the same exact amount in the task view, in `GET /usage` grouped by task, workspace,
//! tenant, model and day, in the call list, in `berth task show` and in `berth usage --csv`,
//! and that amount is the mock's calls priced from the shipped price table — so claude's
//! follow-up is not counted twice. And failing fast: `berth doctor` reports each provider's
//! upstream, and a task or an agent session for a provider without one is refused at once.
//!
//! Shown able to fail (2026-12-04): with the task view summing the agent's own `usage` events
//! again (the old `tasks.cost_usd`), claude's two-turn task reported the agent's cumulative
//! figures and the comparison with the gateway's sum failed; with `require_provider` removed,
//! the claude task was created (201) and `provider_unconfigured_*` failed.

use std::collections::HashMap;
use std::time::Duration;

use berth_test_support::mock_llm::{MockLlm, WireFormat, USAGE_INPUT_TOKENS, USAGE_OUTPUT_TOKENS};
use berth_test_support::{ensure_image, eventually, ServerOptions, TestServer};
use serde_json::{json, Value};

use crate::bin;

const TURN: Duration = Duration::from_secs(180);

/// USD per million tokens of the shipped table, the same file the server compiles in.
fn shipped_prices() -> HashMap<String, (f64, f64)> {
    let t: toml::Table =
        toml::from_str(include_str!("../../../berth-gateway/prices.toml")).unwrap();
    t["models"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(m, p)| {
            let f = |k: &str| p.get(k).and_then(toml::Value::as_float).unwrap_or(0.0);
            (m.clone(), (f("input"), f("output")))
        })
        .collect()
}

/// What the gateway must have charged for the mock's answers: (generating calls, input tokens,
/// output tokens, nano-USD, calls at the fallback price). Each generating request got one
/// answer of 20 input and 10 output tokens, under the model it asked for (the mock names that
/// model in its answer, and the gateway prices by the answer's model).
fn expected(mock: &MockLlm) -> (u64, u64, u64, u64, u64) {
    let prices = shipped_prices();
    let (mut calls, mut nusd, mut fallback) = (0u64, 0u64, 0u64);
    for r in mock.requests() {
        let path = r.path.split('?').next().unwrap_or_default().to_owned();
        let generating = match r.format {
            WireFormat::AnthropicMessages => path.ends_with("/v1/messages"),
            WireFormat::OpenaiResponses => true,
            WireFormat::OpenaiChat => path.ends_with("/chat/completions"),
            WireFormat::Gemini => {
                path.contains(":generateContent") || path.contains(":streamGenerateContent")
            }
            WireFormat::Other => false,
        };
        if !generating {
            continue;
        }
        let model = if r.format == WireFormat::Gemini {
            path.split("models/")
                .nth(1)
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_owned()
        } else {
            r.body["model"].as_str().unwrap_or("mock-model").to_owned()
        };
        // USD per million = nano-USD per thousand tokens.
        let (pin, pout) = match prices.get(&model) {
            Some(p) => *p,
            None => {
                fallback += 1;
                (15.0, 75.0)
            }
        };
        calls += 1;
        nusd += (USAGE_INPUT_TOKENS as f64 * pin * 1000.0).round() as u64
            + (USAGE_OUTPUT_TOKENS as f64 * pout * 1000.0).round() as u64;
    }
    (
        calls,
        calls * USAGE_INPUT_TOKENS,
        calls * USAGE_OUTPUT_TOKENS,
        nusd,
        fallback,
    )
}

/// `0.00056` → 560000 nano-USD.
fn nusd(decimal: &str) -> u64 {
    let (whole, frac) = decimal.split_once('.').unwrap_or((decimal, ""));
    assert!(frac.len() <= 9, "{decimal}");
    whole.parse::<u64>().unwrap() * 1_000_000_000 + format!("{frac:0<9}").parse::<u64>().unwrap()
}

fn keyed_env(mock: &MockLlm) -> Vec<(String, String)> {
    ["ANTHROPIC", "OPENAI", "GEMINI"]
        .iter()
        .flat_map(|p| {
            [
                (format!("BERTH_{p}_BASE_URL"), mock.url()),
                (format!("BERTH_{p}_API_KEY"), format!("real-{p}-key")),
            ]
        })
        .collect()
}

async fn wait_turn_over(s: &TestServer, id: &str) -> Value {
    eventually(TURN, "the turn to end", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        matches!(
            t["state"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
        .then_some(t)
    })
    .await
}

fn stdout(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The CSV's rows as maps from the header's names.
fn csv_rows(text: &str) -> Vec<HashMap<String, String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .map(|h| h.to_string())
                .zip(l.split(',').map(str::to_owned))
                .collect()
        })
        .collect()
}

async fn two_turns_cost_the_same_everywhere(agent: &str) {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: keyed_env(&mock),
            ..Default::default()
        },
    )
    .await;
    s.create_workspace(json!({"name": "bill", "tenant": "acme", "memory": "2g", "pids": 2048}))
        .await;
    let (st, task) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "acme/bill", "agent": agent,
                "prompt": "Create hello.txt containing hi, then say DONE."})),
        )
        .await;
    assert_eq!(st, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let done = wait_turn_over(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}\n{}", s.log());
    let (st, t) = s
        .call(
            "POST",
            &format!("/api/v1/tasks/{id}/messages"),
            Some(json!({"text": "Now the second turn: create it again, then say DONE."})),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    let done = wait_turn_over(&s, &id).await;
    assert_eq!(done["state"], "completed", "{done}\n{}", s.log());

    // Every call the mock answered is recorded (the recorder writes right after each call).
    let (calls, input, output, cost, fallback) = expected(&mock);
    assert!(
        calls >= 4,
        "two tool turns take at least two calls each: {calls}"
    );
    let task = eventually(Duration::from_secs(10), "every call recorded", || async {
        let t = s.get(&format!("/api/v1/tasks/{id}")).await;
        let n = t["usage"]["calls"].as_u64().unwrap();
        let all = mock.requests().len() as u64;
        (n == all).then_some(t)
    })
    .await;
    let u = &task["usage"];
    eprintln!("{agent}: {u}");
    // The API's task view: the mock's calls priced from the shipped table, exactly.
    assert_eq!(u["input_tokens"], input, "{u}");
    assert_eq!(u["output_tokens"], output, "{u}");
    assert_eq!(nusd(u["cost"].as_str().unwrap()), cost, "{u}");
    assert_eq!(u["fallback_calls"], fallback, "{u}");
    assert!(cost > 0, "a known model is never free");
    let cost_text = u["cost"].as_str().unwrap().to_owned();
    let all_calls = u["calls"].as_u64().unwrap();
    if agent == "claude" {
        // Claude reports a cumulative cost per turn; summing those counted turn one twice.
        // Whatever it reported stays apart (`agent_reported`) and is not what the task costs.
        eprintln!("claude's own report: {}", u["agent_reported"]);
        assert_eq!(fallback, 0, "{u}");
    }

    // GET /usage, grouped every way: one task in this server, so every total is the task's.
    for by in ["task", "workspace", "tenant", "model", "day", "session"] {
        let r = s
            .get(&format!("/api/v1/usage?by={by}&since=1d&until=2099-01-01"))
            .await;
        let rows = r["rows"].as_array().unwrap();
        let sum: u64 = rows.iter().map(|r| nusd(r["cost"].as_str().unwrap())).sum();
        assert_eq!(
            (sum, r["total"]["cost"].as_str()),
            (cost, Some(cost_text.as_str())),
            "by {by}: {r}"
        );
        assert_eq!(r["total"]["input_tokens"], input, "by {by}: {r}");
        assert_eq!(r["total"]["output_tokens"], output, "by {by}: {r}");
        if by == "task" {
            assert_eq!(rows.len(), 1, "{r}");
            assert_eq!(rows[0]["task"], id.as_str(), "{r}");
            assert_eq!(rows[0]["workspace"], "acme/bill", "{r}");
        }
    }
    let one = s.get(&format!("/api/v1/usage?by=task&task={id}")).await;
    assert_eq!(one["rows"][0]["cost"], cost_text.as_str(), "{one}");
    // The call list adds up to the same.
    let list = s
        .get(&format!("/api/v1/usage/calls?task={id}&limit=1000"))
        .await;
    let listed: u64 = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cost"].as_str().map(nusd).unwrap_or(0))
        .sum();
    assert_eq!(listed, cost);

    // The CLI: `berth task show` and `berth usage --csv` print the same amount.
    let show = stdout(&s.cli(&["task", "show", &id]));
    assert!(
        show.contains(&format!("cost:           ${cost_text}\n"))
            || show.contains(&format!("cost:           ${cost_text} (")),
        "{show}"
    );
    assert!(
        show.contains(&format!(
            "tokens:         in {input}, out {output}, cached 0 ({all_calls} LLM calls)"
        )),
        "{show}"
    );
    for by in ["task", "tenant", "workspace", "day"] {
        let csv = stdout(&s.cli(&["usage", "--by", by, "--since", "2000-01-01", "--csv"]));
        let rows = csv_rows(&csv);
        assert_eq!(rows.len(), 1, "{csv}");
        assert_eq!(rows[0]["cost_usd"], cost_text, "{csv}");
        assert_eq!(rows[0]["input_tokens"], input.to_string(), "{csv}");
        assert_eq!(rows[0]["currency"], "USD", "{csv}");
    }
    // A period that ends before the task holds nothing.
    let before = stdout(&s.cli(&["usage", "--by", "task", "--until", "2000-01-01", "--csv"]));
    assert_eq!(csv_rows(&before).len(), 0, "{before}");
}

#[tokio::test]
async fn claude_two_turns_cost_the_same_everywhere_and_are_not_double_counted() {
    two_turns_cost_the_same_everywhere("claude").await;
}

#[tokio::test]
async fn codex_two_turns_cost_the_same_everywhere() {
    two_turns_cost_the_same_everywhere("codex").await;
}

#[tokio::test]
async fn gemini_two_turns_cost_the_same_everywhere() {
    two_turns_cost_the_same_everywhere("gemini").await;
}

#[tokio::test]
async fn opencode_two_turns_cost_the_same_everywhere() {
    two_turns_cost_the_same_everywhere("opencode").await;
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

/// No provider configured: doctor fails on it (naming the variable), and a task is refused
/// at once with `provider_unconfigured` instead of running into the gateway's 503.
#[tokio::test]
async fn without_upstreams_doctor_fails_and_tasks_are_refused_at_once() {
    ensure_image().await;
    let s = TestServer::start(bin()).await;
    s.create_workspace(json!({"name": "nokey", "memory": "512m"}))
        .await;
    let report = s.get("/api/v1/doctor").await;
    for p in ["anthropic", "openai", "gemini"] {
        let c = check(&report, &format!("upstream_{p}"));
        assert_eq!(c["ok"], false, "{c}");
        let var = format!("BERTH_{}_API_KEY", p.to_ascii_uppercase());
        assert!(c["fix"].as_str().unwrap().contains(&var), "{c}");
    }
    assert_eq!(report["ok"], false);
    let out = s.cli(&["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("upstream_anthropic"), "{text}");

    let started = std::time::Instant::now();
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "nokey", "agent": "claude", "prompt": "hi"})),
        )
        .await;
    assert_eq!(st, 424, "{v}");
    assert_eq!(v["error"]["code"], "provider_unconfigured", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("anthropic") && msg.contains("BERTH_ANTHROPIC_API_KEY"),
        "{msg}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing was started: no task exists.
    assert_eq!(s.get("/api/v1/tasks").await.as_array().unwrap().len(), 0);
    // The CLI: one readable line, exit != 0.
    let out = s.cli(&["task", "run", "--agent", "codex", "nokey", "hi"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("BERTH_OPENAI_API_KEY") && err.contains("provider_unconfigured"),
        "{err}"
    );
}

/// One provider reachable, one configured but unreachable, one not configured: three lines
/// saying so; the unconfigured provider's tasks and agent sessions are refused.
#[tokio::test]
async fn doctor_reports_each_upstream_and_sessions_of_an_unconfigured_provider_are_refused() {
    ensure_image().await;
    let mock = MockLlm::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let env = vec![
        ("BERTH_ANTHROPIC_BASE_URL".to_owned(), mock.url()),
        ("BERTH_ANTHROPIC_API_KEY".to_owned(), "real-a".to_owned()),
        ("BERTH_OPENAI_BASE_URL".to_owned(), dead.clone()),
        ("BERTH_OPENAI_API_KEY".to_owned(), "real-o".to_owned()),
    ];
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env,
            ..Default::default()
        },
    )
    .await;
    let report = s.get("/api/v1/doctor").await;
    let a = check(&report, "upstream_anthropic");
    assert_eq!(a["ok"], true, "{a}");
    assert!(a["detail"].as_str().unwrap().contains(&mock.url()), "{a}");
    let o = check(&report, "upstream_openai");
    assert_eq!(o["ok"], false, "{o}");
    assert!(o["detail"].as_str().unwrap().contains(&dead), "{o}");
    let g = check(&report, "upstream_gemini");
    assert_eq!(g["ok"], true, "{g}");
    assert!(
        g["detail"].as_str().unwrap().contains("not configured"),
        "{g}"
    );
    // The probe is a plain GET of the base URL, without any key.
    let probe = mock
        .requests()
        .into_iter()
        .find(|r| r.method == "GET" && r.path == "/")
        .expect("the mock saw the doctor's probe");
    assert!(probe.header("x-api-key").is_none() && probe.header("authorization").is_none());

    s.create_workspace(json!({"name": "partial", "memory": "512m"}))
        .await;
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/workspaces/partial/sessions",
            Some(json!({"agent": "gemini"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (424, Some("provider_unconfigured")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("BERTH_GEMINI_API_KEY"),
        "{v}"
    );
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/tasks",
            Some(json!({"workspace": "partial", "agent": "gemini", "prompt": "hi"})),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (424, Some("provider_unconfigured")),
        "{v}"
    );
}
