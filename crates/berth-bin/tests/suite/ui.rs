//! The web UI end to end in real headless Chromium (Debian's `chromium`, driven by
//! playwright-core from `ui/e2e/run.mjs`) against a real server, a real workspace and the real
//! Claude Code CLI on the scripted upstream. Saves screenshots under docs/screenshots/.

use berth_test_support::mock_llm::MockLlm;
use berth_test_support::{ensure_image, ServerOptions, TestServer};

use crate::bin;

#[tokio::test]
async fn web_ui_end_to_end_in_chromium() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("ui/e2e/run.mjs");
    assert!(
        root.join("ui/node_modules/playwright-core").is_dir() && root.join("ui/dist/index.html").is_file(),
        "the UI is not built: run `npm --prefix ui ci && npm --prefix ui run build` (scripts/test does)"
    );
    ensure_image().await;
    let mock = MockLlm::start().await;
    let s = TestServer::start_with(
        bin(),
        ServerOptions {
            env: vec![
                ("BERTH_ANTHROPIC_BASE_URL".into(), mock.url()),
                (
                    "BERTH_ANTHROPIC_API_KEY".into(),
                    "real-key-for-the-ui-test".into(),
                ),
            ],
            ..Default::default()
        },
    )
    .await;
    // The server serves the built UI itself, with headers that forbid framing, referrers and
    // scripts from anywhere but itself.
    let resp = reqwest::get(format!("{}/", s.url)).await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let csp = header("content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("referrer-policy"), "no-referrer");
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("<div id=\"root\"") || page.contains("id=root"),
        "{page}"
    );
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .args([
            "--url",
            &s.url,
            "--token",
            &s.token,
            "--screenshots",
            "docs/screenshots",
        ])
        .current_dir(&root)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "e2e failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    // The steps and their times, for `--no-capture` runs.
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}
