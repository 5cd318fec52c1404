//! The real agent CLIs (Claude Code, Codex, Gemini CLI, OpenCode) from /opt/agent-clis/bin run
//! one headless turn against [`MockLlm`] on the host: the mock asks for a shell call, the CLI runs
//! it (`hello.txt` appears) and ends with the scripted final text. A second turn resumes the
//! session and must resend the first turn's prompt.
//!
//! Every CLI runs `env -i` style: a cleared environment with only what it needs, a private
//! HOME/TMPDIR, stdin from /dev/null and a cwd outside any git repository.
//!
//! Skipped (with a message) when /opt/agent-clis/bin/claude is missing, as on CI hosts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use berth_test_support::mock_llm::{MockLlm, RecordedRequest, WireFormat};
use serde_json::Value;

const BIN_DIR: &str = "/opt/agent-clis/bin";
const PROMPT1: &str = "Create the file hello.txt containing hi (first turn marker PELICAN).";
const PROMPT2: &str = "Second turn: do it again please.";
const API_KEY: &str = "sk-mock-test-key";

fn clis_available() -> bool {
    let ok = Path::new(BIN_DIR).join("claude").exists();
    if !ok {
        eprintln!(
            "skipping: {BIN_DIR}/claude not found (agent CLIs are not installed on this host)"
        );
    }
    ok
}

/// A private sandbox per run: HOME, TMPDIR and a git-less working directory.
struct Sandbox {
    _root: tempfile::TempDir,
    home: PathBuf,
    tmp: PathBuf,
    work: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Self {
        let root = tempfile::Builder::new()
            .prefix(&format!("berth-cli-{name}-"))
            .tempdir()
            .unwrap();
        let home = root.path().join("home");
        let tmp = root.path().join("tmp");
        let work = root.path().join("work");
        for d in [&home, &tmp, &work] {
            std::fs::create_dir_all(d).unwrap();
        }
        Self {
            _root: root,
            home,
            tmp,
            work,
        }
    }

    fn command(&self, cli: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(Path::new(BIN_DIR).join(cli));
        c.env_clear()
            .env("PATH", format!("{BIN_DIR}:/usr/bin:/bin"))
            .env("HOME", &self.home)
            .env("TMPDIR", &self.tmp)
            .env("LANG", "C.UTF-8")
            .env(
                "NODE_EXTRA_CA_CERTS",
                std::env::var("NODE_EXTRA_CA_CERTS")
                    .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into()),
            )
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    fn hello(&self) -> Option<String> {
        std::fs::read_to_string(self.work.join("hello.txt")).ok()
    }
}

async fn run(mut cmd: tokio::process::Command, what: &str) -> Output {
    let child = cmd.spawn().unwrap();
    match tokio::time::timeout(Duration::from_secs(180), child.wait_with_output()).await {
        Ok(out) => {
            let out = out.unwrap();
            eprintln!(
                "== {what}: {}\n-- stdout:\n{}\n-- stderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            out
        }
        Err(_) => panic!("{what}: timed out after 180 s"),
    }
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .collect()
}

/// The turn succeeded: exit 0, `hello.txt` holds "hi", a stdout JSON line satisfies `is_final`.
fn assert_turn(sb: &Sandbox, out: &Output, what: &str, is_final: impl Fn(&Value) -> bool) {
    assert!(out.status.success(), "{what}: exit status {}", out.status);
    assert_eq!(sb.hello().as_deref(), Some("hi\n"), "{what}: hello.txt");
    let lines = json_lines(out);
    assert!(
        lines.iter().any(is_final),
        "{what}: no final DONE line in stdout: {lines:#?}"
    );
}

fn assert_paths(reqs: &[RecordedRequest], expected: &str, what: &str) {
    eprintln!(
        "{what}: requests {:?}",
        reqs.iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
    assert!(
        reqs.iter()
            .any(|r| r.method == "POST" && r.path == expected),
        "{what}: no POST {expected}; got {:?}",
        reqs.iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
}

/// Some request after the first `skip` ones carries the first prompt in its body.
fn assert_history_resent(mock: &MockLlm, kind: WireFormat, skip: usize, what: &str) {
    let reqs = mock.requests_for(kind);
    assert!(reqs.len() > skip, "{what}: no second-turn request");
    assert!(
        reqs[skip..]
            .iter()
            .any(|r| r.body.to_string().contains("PELICAN")),
        "{what}: no second-turn request carries the first prompt"
    );
    // And the second prompt is there too.
    assert!(
        reqs[skip..]
            .iter()
            .any(|r| r.body.to_string().contains("Second turn")),
        "{what}: no second-turn request carries the second prompt"
    );
}

// ---------------------------------------------------------------------------------------------
// Claude Code

fn claude(
    sb: &Sandbox,
    mock: &MockLlm,
    prompt: &str,
    resume: Option<&str>,
) -> tokio::process::Command {
    let mut c = sb.command("claude");
    c.env("ANTHROPIC_BASE_URL", mock.url())
        .env("ANTHROPIC_API_KEY", API_KEY)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        // --dangerously-skip-permissions refuses to run as root without this.
        .env("IS_SANDBOX", "1");
    if let Some(id) = resume {
        c.args(["--resume", id]);
    }
    c.args([
        "-p",
        prompt,
        "--output-format",
        "stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
    ]);
    c
}

fn claude_final(v: &Value) -> bool {
    v["type"] == "result" && v["subtype"] == "success" && v["result"] == "DONE"
}

async fn claude_turn1(sb: &Sandbox, mock: &MockLlm) -> String {
    let out = run(claude(sb, mock, PROMPT1, None), "claude turn 1").await;
    assert_turn(sb, &out, "claude", claude_final);
    let reqs = mock.requests_for(WireFormat::AnthropicMessages);
    assert_paths(&reqs, "/v1/messages?beta=true", "claude");
    assert!(reqs.iter().all(|r| r.header("x-api-key") == Some(API_KEY)));
    json_lines(&out)
        .iter()
        .find_map(|v| v["session_id"].as_str().map(str::to_owned))
        .expect("claude session_id")
}

#[tokio::test]
async fn claude_one_turn() {
    if !clis_available() {
        return;
    }
    let mock = MockLlm::start().await;
    let sb = Sandbox::new("claude");
    claude_turn1(&sb, &mock).await;
}

#[tokio::test]
async fn claude_resume_continues_conversation() {
    if !clis_available() {
        return;
    }
    let mock = MockLlm::start().await;
    let sb = Sandbox::new("claude-resume");
    let session = claude_turn1(&sb, &mock).await;
    let skip = mock.requests_for(WireFormat::AnthropicMessages).len();
    std::fs::remove_file(sb.work.join("hello.txt")).unwrap();
    let out = run(claude(&sb, &mock, PROMPT2, Some(&session)), "claude turn 2").await;
    assert_turn(&sb, &out, "claude resume", claude_final);
    assert_history_resent(&mock, WireFormat::AnthropicMessages, skip, "claude resume");
}

// ---------------------------------------------------------------------------------------------
// Codex

fn codex_home(sb: &Sandbox, mock: &MockLlm) -> PathBuf {
    let dir = sb.home.join(".codex");
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        r#"model = "gpt-5.5"
model_provider = "mock"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false
remote_plugin = false
apps = false

[model_providers.mock]
name = "Mock"
base_url = "{}/v1"
env_key = "MOCK_API_KEY"
wire_api = "responses"
"#,
        mock.url()
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    dir
}

fn codex(
    sb: &Sandbox,
    mock: &MockLlm,
    prompt: &str,
    resume: Option<&str>,
) -> tokio::process::Command {
    let mut c = sb.command("codex");
    c.env("CODEX_HOME", codex_home(sb, mock))
        .env("MOCK_API_KEY", API_KEY)
        .arg("exec");
    let common = [
        "--json",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
    ];
    match resume {
        None => {
            c.args(common).arg("-C").arg(&sb.work).arg(prompt);
        }
        Some(id) => {
            c.args(common).args(["resume", id, prompt]);
        }
    }
    c
}

fn codex_final(v: &Value) -> bool {
    v["type"] == "item.completed"
        && v["item"]["type"] == "agent_message"
        && v["item"]["text"] == "DONE"
}

async fn codex_turn1(sb: &Sandbox, mock: &MockLlm) -> String {
    let out = run(codex(sb, mock, PROMPT1, None), "codex turn 1").await;
    assert_turn(sb, &out, "codex", codex_final);
    let reqs = mock.requests_for(WireFormat::OpenaiResponses);
    assert_paths(&reqs, "/v1/responses", "codex");
    assert!(reqs
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {API_KEY}"))));
    json_lines(&out)
        .iter()
        .find_map(|v| {
            (v["type"] == "thread.started")
                .then(|| v["thread_id"].as_str().map(str::to_owned))
                .flatten()
        })
        .expect("codex thread_id")
}

#[tokio::test]
async fn codex_one_turn() {
    if !clis_available() {
        return;
    }
    let mock = MockLlm::start().await;
    let sb = Sandbox::new("codex");
    codex_turn1(&sb, &mock).await;
}

#[tokio::test]
async fn codex_resume_continues_conversation() {
    if !clis_available() {
        return;
    }
    let mock = MockLlm::start().await;
    let sb = Sandbox::new("codex-resume");
    let thread = codex_turn1(&sb, &mock).await;
    let skip = mock.requests_for(WireFormat::OpenaiResponses).len();
    std::fs::remove_file(sb.work.join("hello.txt")).unwrap();
    let out = run(codex(&sb, &mock, PROMPT2, Some(&thread)), "codex turn 2").await;
    assert_turn(&sb, &out, "codex resume", codex_final);
    assert_history_resent(&mock, WireFormat::OpenaiResponses, skip, "codex resume");
}

// ---------------------------------------------------------------------------------------------
// Gemini CLI

fn gemini(
    sb: &Sandbox,
    mock: &MockLlm,
    prompt: &str,
    resume: Option<&str>,
) -> tokio::process::Command {
    // A fixed model skips the routing-classifier side call.
    gemini_cmd(sb, mock, prompt, resume, Some("gemini-2.5-pro"))
}

fn gemini_cmd(
    sb: &Sandbox,
    mock: &MockLlm,
    prompt: &str,
    resume: Option<&str>,
    model: Option<&str>,
) -> tokio::process::Command {
    let dir = sb.home.join(".gemini");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("settings.json"),
        r#"{ "security": { "auth": { "selectedType": "gemini-api-key" } },
  "telemetry": { "enabled": false },
  "privacy": { "usageStatisticsEnabled": false },
  "general": { "disableAutoUpdate": true, "disableUpdateNag": true } }"#,
    )
    .unwrap();
    let mut c = sb.command("gemini");
    c.env("GOOGLE_GEMINI_BASE_URL", mock.url())
        .env("GEMINI_API_KEY", API_KEY)
        .env("GEMINI_CLI_NO_RELAUNCH", "true");
    if let Some(id) = resume {
        c.args(["--resume", id]);
    }
    c.args([
        "-p",
        prompt,
        "-o",
        "stream-json",
        "--approval-mode",
        "yolo",
        "--skip-trust",
    ]);
    if let Some(m) = model {
        c.args(["-m", m]);
    }
    c
}

fn gemini_final(v: &Value) -> bool {
    v["type"] == "message" && v["role"] == "assistant" && v["content"] == "DONE"
}

async fn gemini_turn1(sb: &Sandbox, mock: &MockLlm) -> String {
    let out = run(gemini(sb, mock, PROMPT1, None), "gemini turn 1").await;
    assert_turn(sb, &out, "gemini", gemini_final);
    let reqs = mock.requests_for(WireFormat::Gemini);
    assert_paths(
        &reqs,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
        "gemini",
    );
    assert!(reqs
        .iter()
        .all(|r| r.header("x-goog-api-key") == Some(API_KEY)));
    json_lines(&out)
        .iter()
        .find_map(|v| v["session_id"].as_str().map(str::to_owned))
        .expect("gemini session_id")
}

#[tokio::test]
async fn gemini_one_turn() {
    if !clis_available() {
        return;
    }
    let mock = MockLlm::start().await;
    let sb = Sandbox::new("gemini");
    gemini_turn1(&sb, &mock).await;
}

#[tokio::test]
async fn gemini_resume_continues_conversation() {
    if !clis_available() {
        return;
    }
    let mock = MockLlm::start().await;
    let sb = Sandbox::new("gemini-resume");
    let session = gemini_turn1(&sb, &mock).await;
    let skip = mock.requests_for(WireFormat::Gemini).len();
    std::fs::remove_file(sb.work.join("hello.txt")).unwrap();
    let out = run(gemini(&sb, &mock, PROMPT2, Some(&session)), "gemini turn 2").await;
    assert_turn(&sb, &out, "gemini resume", gemini_final);
    assert_history_resent(&mock, WireFormat::Gemini, skip, "gemini resume");
}

// ---------------------------------------------------------------------------------------------
// OpenCode

fn opencode(
    sb: &Sandbox,
    mock: &MockLlm,
    prompt: &str,
    resume: Option<&str>,
) -> tokio::process::Command {
    let config = sb.home.join("opencode.json");
    let cfg = serde_json::json!({
        "$schema": "https://opencode.ai/config.json",
        "model": "mock/mock-model",
        "small_model": "mock/mock-model",
        "autoupdate": false,
        "share": "disabled",
        "provider": {"mock": {
            "npm": "@ai-sdk/openai-compatible",
            "name": "Mock",
            "options": {"baseURL": format!("{}/v1", mock.url()), "apiKey": "{env:MOCK_API_KEY}"},
            "models": {"mock-model": {"name": "Mock Model", "tool_call": true}}
        }},
        "permission": {"edit": "allow", "bash": "allow", "webfetch": "allow", "external_directory": "allow"}
    });
    std::fs::write(&config, cfg.to_string()).unwrap();
    let mut c = sb.command("opencode");
    c.env("OPENCODE_CONFIG", &config)
        .env("MOCK_API_KEY", API_KEY)
        .env("OPENCODE_DISABLE_MODELS_FETCH", "1")
        .env("OPENCODE_DISABLE_AUTOUPDATE", "1")
        .env("OPENCODE_DISABLE_LSP_DOWNLOAD", "1")
        .env("OPENCODE_DISABLE_SHARE", "1")
        .env("OPENCODE_DISABLE_DEFAULT_PLUGINS", "1")
        .args(["run", "--pure", "--format", "json"]);
    if let Some(id) = resume {
        c.args(["--session", id]);
    }
    c.arg(prompt);
    c
}

fn opencode_final(v: &Value) -> bool {
    v["type"] == "text" && v["part"]["text"] == "DONE"
}

async fn opencode_turn1(sb: &Sandbox, mock: &MockLlm) -> String {
    let out = run(opencode(sb, mock, PROMPT1, None), "opencode turn 1").await;
    assert_turn(sb, &out, "opencode", opencode_final);
    let reqs = mock.requests_for(WireFormat::OpenaiChat);
    assert_paths(&reqs, "/v1/chat/completions", "opencode");
    assert!(reqs
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {API_KEY}"))));
    json_lines(&out)
        .iter()
        .find_map(|v| v["sessionID"].as_str().map(str::to_owned))
        .expect("opencode sessionID")
}

#[tokio::test]
async fn opencode_one_turn() {
    if !clis_available() {
        return;
    }
    let mock = MockLlm::start().await;
    let sb = Sandbox::new("opencode");
    opencode_turn1(&sb, &mock).await;
}

#[tokio::test]
async fn opencode_resume_continues_conversation() {
    if !clis_available() {
        return;
    }
    let mock = MockLlm::start().await;
    let sb = Sandbox::new("opencode-resume");
    let session = opencode_turn1(&sb, &mock).await;
    let skip = mock.requests_for(WireFormat::OpenaiChat).len();
    std::fs::remove_file(sb.work.join("hello.txt")).unwrap();
    let out = run(
        opencode(&sb, &mock, PROMPT2, Some(&session)),
        "opencode turn 2",
    )
    .await;
    assert_turn(&sb, &out, "opencode resume", opencode_final);
    assert_history_resent(&mock, WireFormat::OpenaiChat, skip, "opencode resume");
}

/// The default model `auto` first asks a routing classifier through `generateContent`; the mock
/// answers it with a schema-valid score and the turn then streams as usual.
#[tokio::test]
async fn gemini_auto_model_classifier_route() {
    if !clis_available() {
        return;
    }
    let mock = MockLlm::start().await;
    let sb = Sandbox::new("gemini-auto");
    let c = gemini_cmd(&sb, &mock, PROMPT1, None, None);
    let out = run(c, "gemini auto").await;
    assert_turn(&sb, &out, "gemini auto", gemini_final);
    let reqs = mock.requests_for(WireFormat::Gemini);
    let classifier: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.ends_with(":generateContent"))
        .collect();
    assert!(!classifier.is_empty(), "no classifier call");
    assert!(classifier[0].body["generationConfig"]
        .to_string()
        .contains("complexity_score"));
    assert!(
        reqs.iter()
            .any(|r| r.path.ends_with(":streamGenerateContent?alt=sse")),
        "no streamed turn"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ZodError"),
        "classifier reply rejected: {stderr}"
    );
}

/// The slow marker holds the streamed answer open: the real CLI keeps waiting (no completion,
/// no retry storm) until it is killed, which is what cancel tests rely on.
#[tokio::test]
async fn slow_marker_keeps_a_real_cli_waiting() {
    if !clis_available() {
        return;
    }
    let mock = MockLlm::start().await;
    let sb = Sandbox::new("claude-slow");
    let mut child = claude(&sb, &mock, "Take your time: SLOW", None)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while mock.requests_for(WireFormat::AnthropicMessages).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no request arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the CLI finished although the answer is held open"
    );
    assert_eq!(mock.requests_for(WireFormat::AnthropicMessages).len(), 1);
    assert!(sb.hello().is_none());
    child.kill().await.unwrap();
}
