//! Tests: argument parsing, encoding, errors, the login file, and whole commands against a fake
//! server (axum) speaking the API's HTTP and WebSocket protocols.

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message as AxMsg, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as AxPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::{CommandFactory, Parser};
use serde_json::json;

use super::*;
use crate::client::{
    api_error, config_path_from, load_config, normalize_url, resolve_conn, save_config,
};

#[derive(Debug, Parser)]
#[command(name = "berth")]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

fn parse(args: &[&str]) -> std::result::Result<Command, clap::Error> {
    Cli::try_parse_from(std::iter::once("berth").chain(args.iter().copied())).map(|c| c.cmd)
}

// ---------------------------------------------------------------------------------------------
// Parsing

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn exec_env_splits_at_the_first_equals_sign() {
    match parse(&["exec", "w", "-e", "A=1", "--env", "B=x=y", "--", "ls"]).unwrap() {
        Command::Exec(a) => assert_eq!(
            a.env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        ),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding, errors, login file

#[test]
fn refs_are_one_encoded_segment() {
    assert_eq!(encode_segment("acme/web"), "acme%2Fweb");
    assert_eq!(encode_segment("ws_01HZX"), "ws_01HZX");
    assert_eq!(encode_segment("a b?c#d%"), "a%20b%3Fc%23d%25");
    assert_eq!(encode_segment("shell-2.x~"), "shell-2.x~");
    assert_eq!(encode_segment("ü"), "%C3%BC");
    assert_eq!(client::ws_path("acme/web"), "/workspaces/acme%2Fweb");
    assert_eq!(
        client::session_path("acme/web", "main"),
        "/workspaces/acme%2Fweb/sessions/main"
    );
}

#[test]
fn error_lines() {
    let body = br#"{"error":{"code":"not_found","message":"workspace acme/x not found"}}"#;
    assert_eq!(
        api_error(404, body).line(),
        "error: workspace acme/x not found (not_found)"
    );
    let e = api_error(502, b"<html>\n  <body>Bad gateway</body>\n</html>\n");
    assert_eq!(
        e.line(),
        "error: server answered HTTP 502 Bad Gateway: <html> <body>Bad gateway</body> </html>"
    );
    assert_eq!(
        api_error(500, b"").line(),
        "error: server answered HTTP 500 Internal Server Error"
    );
    let multi = br#"{"error":{"code":"x","message":"line one\nline two"}}"#;
    assert_eq!(api_error(400, multi).line(), "error: line one line two (x)");
    let e = CliError::Unreachable {
        url: "http://127.0.0.1:8787".into(),
        cause: "connection refused".into(),
    };
    assert_eq!(
        e.line(),
        "error: cannot reach berth at http://127.0.0.1:8787: connection refused (is `berth server` running?)"
    );
}

#[test]
fn config_paths() {
    assert_eq!(
        config_path_from(Some("/x".into()), Some("/home/u".into())),
        Some(std::path::PathBuf::from("/x/berth/config.json"))
    );
    assert_eq!(
        config_path_from(Some("relative".into()), Some("/home/u".into())),
        Some(std::path::PathBuf::from(
            "/home/u/.config/berth/config.json"
        ))
    );
    assert_eq!(
        config_path_from(None, Some("/home/u".into())),
        Some(std::path::PathBuf::from(
            "/home/u/.config/berth/config.json"
        ))
    );
    assert_eq!(config_path_from(None, None), None);
}

#[test]
fn login_file_round_trip_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg").join("berth").join("config.json");
    assert_eq!(load_config(&path).unwrap(), None);
    let cfg = LoginConfig {
        url: "http://127.0.0.1:8787".into(),
        token: "brt_secret".into(),
        fingerprint: None,
        ca: None,
    };
    save_config(&path, &cfg).unwrap();
    assert_eq!(load_config(&path).unwrap(), Some(cfg.clone()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700);

    // Overwriting a file that was world-readable leaves it 0600.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg2 = LoginConfig {
        url: "https://b.example".into(),
        token: "t2".into(),
        fingerprint: Some("ab".repeat(32)),
        ca: None,
    };
    save_config(&path, &cfg2).unwrap();
    assert_eq!(load_config(&path).unwrap(), Some(cfg2));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    std::fs::write(&path, b"{not json").unwrap();
    let err = load_config(&path).unwrap_err().line();
    assert!(err.starts_with("error: invalid login file"), "{err}");
}

#[test]
fn connection_precedence() {
    let file = LoginConfig {
        url: "http://saved:8787/".into(),
        token: "saved-token".into(),
        fingerprint: Some("cd".repeat(32)),
        ca: None,
    };
    let c = resolve_conn(None, None, Some(&file)).unwrap();
    assert_eq!(c.url, "http://saved:8787");
    assert_eq!(c.token.as_deref(), Some("saved-token"));
    assert_eq!(c.trust.fingerprint, Some("cd".repeat(32)));
    let c = resolve_conn(None, None, None).unwrap();
    assert_eq!(c.url, DEFAULT_URL);
    assert_eq!(c.token, None);
    // Flags win; the saved token only goes to the saved URL.
    let c = resolve_conn(Some("http://other:1"), None, Some(&file)).unwrap();
    assert_eq!(c.url, "http://other:1");
    assert_eq!(c.token, None);
    // The saved pin belongs to the saved server only.
    assert_eq!(c.trust.fingerprint, None);
    let c = resolve_conn(Some("http://saved:8787"), None, Some(&file)).unwrap();
    assert_eq!(c.token.as_deref(), Some("saved-token"));
    let c = resolve_conn(None, Some("flag"), Some(&file)).unwrap();
    assert_eq!(c.token.as_deref(), Some("flag"));
    assert!(resolve_conn(Some("ftp://x"), None, None).is_err());
    assert_eq!(
        normalize_url("http://h:1/api/v1/").unwrap(),
        "http://h:1".to_owned()
    );
}

#[test]
fn default_session_choice() {
    let s = |name: &str, state: &str| berth_api::Session {
        id: format!("ses_{name}"),
        name: name.into(),
        command: vec!["bash".into()],
        state: state.into(),
        exit_code: None,
        created_at: berth_domain::Timestamp::parse("2024-01-01T00:00:00Z").unwrap(),
        attached: 0,
        cols: 80,
        rows: 24,
        scrollback_bytes: 0,
        agent: None,
        agent_session: None,
        task: None,
    };
    let pick = |v: &[berth_api::Session]| commands::attach::pick_default(v).map(|s| s.name.clone());
    assert_eq!(
        pick(&[s("a", "running"), s("main", "running")]),
        Some("main".into())
    );
    assert_eq!(
        pick(&[s("a", "running"), s("main", "exited")]),
        Some("a".into())
    );
    assert_eq!(pick(&[s("a", "running"), s("b", "running")]), None);
    assert_eq!(pick(&[]), None);
}

#[test]
fn engine_checks_explain_the_cause() {
    let none = commands::doctor::EngineProbe::default();
    let checks = commands::doctor::engine_checks(&none);
    assert!(checks.iter().all(|c| !c.ok && c.fix.is_some()));
    let some = commands::doctor::EngineProbe {
        docker_host: None,
        sockets: vec!["/run/podman/podman.sock".into()],
        clis: vec!["podman".into()],
    };
    assert!(commands::doctor::engine_checks(&some).iter().all(|c| c.ok));
    let report = berth_api::DoctorReport {
        ok: false,
        checks: checks.clone(),
    };
    let text = commands::doctor::render(&report);
    assert!(text.contains("✗ engine socket: "), "{text}");
    assert!(text.contains("    fix: install podman"), "{text}");
}

#[test]
fn build_stream_lines_split_across_chunks() {
    let mut s = stream::LineSplitter::default();
    assert_eq!(s.push(b"{\"a\":1}\n{\"b\""), vec!["{\"a\":1}".to_owned()]);
    assert_eq!(s.push(b":2}\n"), vec!["{\"b\":2}".to_owned()]);
    assert_eq!(s.push(b"tail"), Vec::<String>::new());
    assert_eq!(s.finish(), vec!["tail".to_owned()]);
}

#[test]
fn workspace_rendering() {
    let w: berth_api::Workspace =
        serde_json::from_value(workspace_json("ws_1", "acme", "web", "running")).unwrap();
    let t = commands::workspace::workspace_table(std::slice::from_ref(&w));
    assert_eq!(
        t,
        "NAME      STATE    IMAGE                                   MEMORY  CPUS  PIDS  CREATED\n\
         acme/web  running  localhost/berth-workspace:3f2a9c1b0d4e  512m    0.5   512   2024-05-01T12:00:00Z\n"
    );
    let d = commands::workspace::workspace_details(&w);
    assert!(d.contains("memory used:  87.2 MiB / 512 MiB\n"), "{d}");
    assert!(d.contains("cpu:          3.5%\n"), "{d}");
    assert!(
        d.contains("daemon:       reachable (version 0.1.0, protocol 1)\n"),
        "{d}"
    );
    assert!(
        d.contains("last failure: oom: killed bash (at 2024-05-01T12:30:00Z)\n"),
        "{d}"
    );
    assert!(d.contains("oom kills:    2\n"), "{d}");
    assert_eq!(
        commands::workspace::split_tenant("acme/web", None).unwrap(),
        (Some("acme".into()), "web".into())
    );
    assert!(commands::workspace::split_tenant("acme/web", Some("other".into())).is_err());
    assert_eq!(
        commands::workspace::split_tenant("web", Some("t".into())).unwrap(),
        (Some("t".into()), "web".into())
    );
}

// ---------------------------------------------------------------------------------------------
// A fake server

const TOKEN: &str = "test-token";

fn workspace_json(id: &str, tenant: &str, name: &str, state: &str) -> serde_json::Value {
    json!({
        "id": id, "name": name, "tenant": tenant, "state": state,
        "image": "localhost/berth-workspace:3f2a9c1b0d4e5f60718293a4b5c6d7e8f9",
        "limits": {"memory_bytes": 536870912, "cpus": 0.5, "pids": 512},
        "network": "none", "volume": format!("berth-{id}-home"),
        "created_at": "2024-05-01T12:00:00.123Z", "updated_at": "2024-05-01T12:00:01Z",
        "last_failure": {"reason": "oom", "message": "killed bash", "at": "2024-05-01T12:30:00Z"},
        "oom_kills": 2,
        "usage": {"memory_bytes": 91435827u64, "memory_limit_bytes": 536870912u64, "cpu_percent": 3.5, "pids": 7},
        "daemon": {"reachable": true, "protocol": 1, "version": "0.1.0", "outdated": false}
    })
}

fn err(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

#[derive(Clone, Default)]
struct Seen {
    /// Binary input the fake attach endpoint received.
    attach_input: Arc<Mutex<Vec<u8>>>,
    /// The ExecStart the fake exec endpoint received.
    exec_start: Arc<Mutex<Option<serde_json::Value>>>,
}

fn app(seen: Seen) -> Router {
    Router::new()
        .route(
            "/api/v1/workspaces",
            get(|h: HeaderMap| async move {
                if !authorized(&h) {
                    return err(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token");
                }
                Json(json!([
                    workspace_json("ws_1", "acme", "web", "running"),
                    workspace_json("ws_2", "other", "api", "stopped"),
                ]))
                .into_response()
            }),
        )
        .route(
            "/api/v1/workspaces/{ws}",
            get(|h: HeaderMap, AxPath(ws): AxPath<String>| async move {
                if !authorized(&h) {
                    return err(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token");
                }
                if ws == "acme/web" {
                    Json(workspace_json("ws_1", "acme", "web", "running")).into_response()
                } else {
                    err(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        &format!("workspace {ws} not found"),
                    )
                }
            }),
        )
        .route("/api/v1/workspaces/{ws}/exec/ws", get(exec_ws))
        .route(
            "/api/v1/whoami",
            get(|h: HeaderMap| async move {
                if !authorized(&h) {
                    return err(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token");
                }
                Json(json!({"token_id": "tok_1", "token_name": "admin", "role": "admin", "server_version": "0.1.0"}))
                    .into_response()
            }),
        )
        .route(
            "/api/v1/workspaces/{ws}/sessions/{session}",
            get(|AxPath((_ws, s)): AxPath<(String, String)>| async move {
                if s != "main" && s != "ses_main" {
                    return err(StatusCode::NOT_FOUND, "not_found", "no such session");
                }
                Json(json!({
                    "id": "ses_main", "name": "main", "command": ["bash", "-l"], "state": "running",
                    "created_at": "2024-05-01T12:00:00Z", "attached": 0, "cols": 100, "rows": 30,
                    "scrollback_bytes": 6
                }))
                .into_response()
            }),
        )
        .route(
            "/api/v1/workspaces/{ws}/sessions/{session}/attach",
            get(attach_ws),
        )
        .route(
            "/api/v1/image/build",
            post(|Json(b): Json<serde_json::Value>| async move {
                let body = if b["force"] == json!(true) {
                    "{\"type\":\"progress\",\"step\":\"debootstrap\",\"line\":\"I: Retrieving\"}\n\
                     {\"type\":\"error\",\"code\":\"build_failed\",\"message\":\"debootstrap exited 1\"}\n"
                } else {
                    "{\"type\":\"progress\",\"step\":\"debootstrap\",\"line\":\"I: Retrieving\"}\n\
                     {\"type\":\"progress\",\"step\":\"build\",\"line\":\"STEP 1/3\"}\n\
                     {\"type\":\"done\",\"tag\":\"localhost/berth-workspace:abc\",\"skipped\":false,\"seconds\":12.5}\n"
                };
                ([("content-type", "application/x-ndjson")], body)
            }),
        )
        .with_state(seen)
}

async fn exec_ws(h: HeaderMap, State(seen): State<Seen>, ws: WebSocketUpgrade) -> Response {
    if !authorized(&h) {
        return err(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token");
    }
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        let Some(Ok(AxMsg::Text(start))) = socket.recv().await else {
            return;
        };
        *seen.exec_start.lock().unwrap() = serde_json::from_str(start.as_str()).ok();
        let mut stdin = Vec::new();
        while let Some(Ok(msg)) = socket.recv().await {
            match msg {
                AxMsg::Binary(b) => stdin.extend_from_slice(&b),
                AxMsg::Text(t) if t.as_str() == r#"{"type":"eof"}"# => break,
                _ => {}
            }
        }
        let mut out = vec![berth_api::EXEC_STDOUT];
        out.extend_from_slice(b"got: ");
        out.extend_from_slice(&stdin);
        let _ = socket.send(AxMsg::Binary(out.into())).await;
        let _ = socket
            .send(AxMsg::Binary(b"\x02oops\n".to_vec().into()))
            .await;
        let _ = socket
            .send(AxMsg::Text(r#"{"type":"exit","code":7}"#.into()))
            .await;
    })
}

async fn attach_ws(
    h: HeaderMap,
    State(seen): State<Seen>,
    AxPath((_ws, session)): AxPath<(String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    if !authorized(&h) {
        return err(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token");
    }
    if session != "ses_main" || q.get("cols").map(String::as_str) != Some("100") {
        return err(StatusCode::BAD_REQUEST, "invalid_argument", "bad attach");
    }
    ws.on_upgrade(move |mut socket: WebSocket| async move {
        let _ = socket.send(AxMsg::Binary(b"hello\n".to_vec().into())).await;
        while let Some(Ok(msg)) = socket.recv().await {
            if let AxMsg::Binary(b) = msg {
                seen.attach_input.lock().unwrap().extend_from_slice(&b);
                let _ = socket.send(AxMsg::Binary(b.clone())).await;
                if b.windows(4).any(|w| w == b"quit") {
                    let _ = socket
                        .send(AxMsg::Text(r#"{"type":"exit","code":3}"#.into()))
                        .await;
                    return;
                }
            }
        }
    })
}

async fn serve(seen: Seen) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app(seen)).await;
    });
    format!("http://{addr}")
}

struct Outcome {
    code: i32,
    out: String,
    err: String,
}

async fn run_args(args: &[&str], stdin: &[u8]) -> Outcome {
    run_with_config(args, stdin, None).await
}

async fn run_with_config(
    args: &[&str],
    stdin: &[u8],
    config_path: Option<std::path::PathBuf>,
) -> Outcome {
    run_full(args, stdin, config_path, Arc::default()).await
}

/// Runs a command; notifying `interrupt` is pressing Ctrl-C.
async fn run_full(
    args: &[&str],
    stdin: &[u8],
    config_path: Option<std::path::PathBuf>,
    interrupt: Arc<tokio::sync::Notify>,
) -> Outcome {
    let cmd = parse(args).unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = {
        let mut ctx = Ctx {
            out: &mut out,
            err: &mut err,
            stdin: StdinSource::Fixed(stdin.to_vec()),
            config_path,
            interrupt: Interrupt::Manual(interrupt),
            color: false,
        };
        run_with(cmd, &mut ctx).await
    };
    Outcome {
        code,
        out: String::from_utf8_lossy(&out).into_owned(),
        err: String::from_utf8_lossy(&err).into_owned(),
    }
}

async fn run_at(url: &str, args: &[&str], stdin: &[u8]) -> Outcome {
    let mut all: Vec<&str> = args.to_vec();
    // Insert the connection flags before any `--`.
    let at = all.iter().position(|a| *a == "--").unwrap_or(all.len());
    all.splice(at..at, ["--url", url, "--token", TOKEN]);
    run_args(&all, stdin).await
}

#[tokio::test]
async fn workspace_list_json_and_table() {
    let url = serve(Seen::default()).await;
    let o = run_at(&url, &["workspace", "list", "--json"], b"").await;
    assert_eq!(o.code, 0, "{}", o.err);
    let v: serde_json::Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["tenant"], "acme");
    assert!(o.out.contains("\n  "), "pretty JSON: {}", o.out);

    let o = run_at(
        &url,
        &["workspace", "list", "--tenant", "other", "--json"],
        b"",
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["name"], "api");

    let o = run_at(&url, &["workspace", "list"], b"").await;
    assert_eq!(o.code, 0);
    let lines: Vec<&str> = o.out.lines().collect();
    assert_eq!(lines.len(), 3, "{}", o.out);
    assert!(
        lines[0].starts_with("NAME       STATE    IMAGE"),
        "{}",
        o.out
    );
    assert!(lines[2].starts_with("other/api  stopped  "), "{}", o.out);
}

#[tokio::test]
async fn api_errors_are_one_line_and_exit_1() {
    let url = serve(Seen::default()).await;
    // The slash is encoded, reaches the server as one segment and is decoded there.
    let o = run_at(&url, &["workspace", "show", "acme/web"], b"").await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(o.out.contains("name:         acme/web\n"), "{}", o.out);

    let o = run_at(&url, &["workspace", "show", "acme/nope"], b"").await;
    assert_eq!(o.code, 1);
    assert_eq!(o.out, "");
    assert_eq!(o.err, "error: workspace acme/nope not found (not_found)\n");

    let o = run_args(
        &["workspace", "list", "--url", &url, "--token", "wrong"],
        b"",
    )
    .await;
    assert_eq!(o.code, 1);
    assert_eq!(o.err, "error: invalid token (unauthorized)\n");

    // An unknown route answers 404 with an empty body.
    let o = run_at(&url, &["audit"], b"").await;
    assert_eq!(o.code, 1);
    assert_eq!(o.err, "error: server answered HTTP 404 Not Found\n");
}

#[tokio::test]
async fn unreachable_server_is_explained() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let o = run_at(&url, &["workspace", "list"], b"").await;
    assert_eq!(o.code, 1);
    assert_eq!(
        o.err,
        format!(
            "error: cannot reach berth at {url}: connection refused (is `berth server` running?)\n"
        )
    );
    let o = run_at(&url, &["exec", "w", "--", "true"], b"").await;
    assert_eq!(o.code, 1);
    assert!(
        o.err.starts_with("error: cannot reach berth at"),
        "{}",
        o.err
    );

    let o = run_at(&url, &["doctor"], b"").await;
    assert_eq!(o.code, 1);
    assert!(
        o.out.contains("✗ server reachable: cannot reach"),
        "{}",
        o.out
    );
    assert!(
        o.out.contains("    fix: start it: ./scripts/up"),
        "{}",
        o.out
    );
    assert!(o.out.contains("engine socket"), "{}", o.out);
    let o = run_at(&url, &["doctor", "--json"], b"").await;
    assert_eq!(o.code, 1);
    let v: serde_json::Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["checks"][0]["name"], "server reachable");

    // Through the real entry point too: it returns instead of panicking.
    let cmd = parse(&["workspace", "list", "--url", &url, "--token", "t"]).unwrap();
    assert_eq!(run(cmd).await, 1);
}

#[tokio::test]
async fn exec_streams_output_and_returns_the_exit_code() {
    let seen = Seen::default();
    let url = serve(seen.clone()).await;
    let o = run_at(
        &url,
        &[
            "exec", "acme/web", "--env", "A=1", "--cwd", "/src", "--", "cat", "-n",
        ],
        b"piped input",
    )
    .await;
    assert_eq!(o.code, 7, "{}", o.err);
    assert_eq!(o.out, "got: piped input");
    assert_eq!(o.err, "oops\n");
    let start = seen.exec_start.lock().unwrap().clone().unwrap();
    assert_eq!(
        start,
        json!({"cmd": ["cat", "-n"], "env": {"A": "1"}, "cwd": "/src"})
    );
}

#[tokio::test]
async fn attach_pipes_stdin_and_reports_exit() {
    let seen = Seen::default();
    let url = serve(seen.clone()).await;
    let o = run_at(&url, &["attach", "acme/web", "main"], b"echo hi\nquit\n").await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(o.out.starts_with("hello\n"), "{}", o.out);
    assert!(o.out.contains("echo hi\n"), "{}", o.out);
    assert_eq!(o.err, "[session exited with code 3]\n");
}

#[tokio::test]
async fn attach_detaches_at_eof_and_on_ctrl_b_d() {
    let seen = Seen::default();
    let url = serve(seen.clone()).await;
    let o = run_at(&url, &["attach", "acme/web", "main"], b"ls\n").await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.out, "hello\nls\n");
    assert_eq!(o.err, "[detached from acme/web/main]\n");

    let seen = Seen::default();
    let url = serve(seen.clone()).await;
    let o = run_at(
        &url,
        &["attach", "acme/web", "main"],
        b"x\x02\x02y\x02dquit\n",
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(o.err, "[detached from acme/web/main]\n");
    assert_eq!(seen.attach_input.lock().unwrap().as_slice(), b"x\x02y");
}

#[tokio::test]
async fn image_build_streams_progress() {
    let url = serve(Seen::default()).await;
    let o = run_at(&url, &["image", "build"], b"").await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        o.out,
        "[debootstrap] I: Retrieving\n[build] STEP 1/3\nbuilt image localhost/berth-workspace:abc in 12.5s\n"
    );
    let o = run_at(&url, &["image", "build", "--force"], b"").await;
    assert_eq!(o.code, 1);
    assert_eq!(o.out, "[debootstrap] I: Retrieving\n");
    assert_eq!(
        o.err,
        "error: image build failed: debootstrap exited 1 (build_failed)\n"
    );
}

#[tokio::test]
async fn login_verifies_saves_and_is_used_later() {
    let url = serve(Seen::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("berth").join("config.json");

    let o = run_with_config(&["login", &url, "--token", "wrong"], b"", Some(cfg.clone())).await;
    assert_eq!(o.code, 1);
    assert_eq!(o.err, "error: invalid token (unauthorized)\n");
    assert!(!cfg.exists());

    let o = run_with_config(
        &["login", &format!("{url}/"), "--token", TOKEN],
        b"",
        Some(cfg.clone()),
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.err);
    assert!(
        o.out.starts_with(&format!("logged in to {url} as admin")),
        "{}",
        o.out
    );
    let saved = load_config(&cfg).unwrap().unwrap();
    assert_eq!(
        saved,
        LoginConfig {
            url: url.clone(),
            token: TOKEN.into(),
            fingerprint: None,
            ca: None,
        }
    );
    let mode = std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Later commands without --url/--token use the file (unless the environment sets them).
    if std::env::var_os("BERTH_URL").is_none() && std::env::var_os("BERTH_TOKEN").is_none() {
        let o = run_with_config(&["whoami"], b"", Some(cfg.clone())).await;
        assert_eq!(o.code, 0, "{}", o.err);
        assert!(o.out.starts_with("admin (tok_1), role admin"), "{}", o.out);
        let o = run_with_config(&["doctor"], b"", Some(cfg)).await;
        assert!(o.out.contains("✓ server reachable"), "{}", o.out);
        assert!(o.out.contains("✓ token accepted: admin"), "{}", o.out);
    }
}

#[test]
fn flattened_into_a_top_level_parser_help_stays_clean() {
    #[derive(Debug, Parser)]
    #[command(name = "berth")]
    struct Top {
        #[command(subcommand)]
        cmd: TopCmd,
    }
    // A parse-only test double of the binary's top level: its size does not matter.
    #[allow(clippy::large_enum_variant)]
    #[derive(Debug, clap::Subcommand)]
    enum TopCmd {
        /// Run the server
        Server,
        #[command(flatten)]
        Cli(Command),
    }
    Top::command().debug_assert();
    let help = Top::command().render_help().to_string();
    assert!(!help.contains("--url"), "{help}");
    assert!(help.contains("workspace"), "{help}");
    let t = Top::try_parse_from(["berth", "workspace", "list", "--url", "http://h:1"]).unwrap();
    assert!(matches!(t.cmd, TopCmd::Cli(Command::Workspace { .. })));
    let t = Top::try_parse_from(["berth", "server"]).unwrap();
    assert!(matches!(t.cmd, TopCmd::Server));
}

mod egress;
mod mcp;
mod shape;
mod task;
