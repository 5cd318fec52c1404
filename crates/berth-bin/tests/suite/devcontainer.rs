//! `berth template import --devcontainer`, against a real server with the real CLI: a
//! devcontainer.json (with comments and a trailing comma) becomes a stored template whose setup
//! steps and environment `berth template show` prints back; keys berth does not honour are
//! warned about on stderr; a reserved variable is skipped with a warning; `--dry-run` stores
//! nothing; a file that is not JSON is one readable line and exit 1, nothing stored.

use berth_test_support::TestServer;

use crate::bin;

const DEVCONTAINER: &str = r#"// The project's dev container.
{
  "name": "web app",
  "image": "mcr.microsoft.com/devcontainers/javascript-node:20",
  "features": {
    "ghcr.io/devcontainers/features/github-cli:1": {}
  },
  /* create-time commands */
  "onCreateCommand": ["echo", "it's created"],
  "postCreateCommand": "npm ci && npm run build",
  "containerEnv": {
    "APP_ENV": "dev",
    "HTTPS_PROXY": "http://corp-proxy:3128",
  },
  "forwardPorts": [3000],
}
"#;

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_devcontainer_json_becomes_a_template_and_unhonoured_keys_are_warned() {
    let s = TestServer::start(bin()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devcontainer.json");
    let f = file.to_str().unwrap();

    // Not JSON: one readable line naming the file, exit 1, nothing stored.
    std::fs::write(&file, "{ \"name\": \"x\", postCreateCommand: 1 }").unwrap();
    let args = [
        "template",
        "import",
        "--tenant",
        "acme",
        "web",
        "--devcontainer",
        f,
    ];
    let o = s.cli(&args);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains(f) && err.contains("not valid JSON"),
        "{err}"
    );
    let (st, _) = s.call("GET", "/api/v1/templates/acme/web", None).await;
    assert_eq!(st, 404, "nothing was stored");

    // --dry-run prints the template and stores nothing.
    std::fs::write(&file, DEVCONTAINER).unwrap();
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let o = s.cli(&dry);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("[[setup]]") && out.contains("APP_ENV = \"dev\""),
        "{out}"
    );
    let (st, _) = s.call("GET", "/api/v1/templates/acme/web", None).await;
    assert_eq!(st, 404, "a dry run stores nothing");

    // The import: warnings for what is not honoured, then stored as revision 1.
    let o = s.cli(&args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out, "template acme/web revision 1 stored\n");
    let warnings: Vec<&str> = err.lines().collect();
    assert_eq!(warnings.len(), 3, "{err}");
    assert!(
        warnings[0].starts_with("warning: key image is not honoured: "),
        "{err}"
    );
    assert!(
        warnings[1].starts_with("warning: key features is not honoured: ")
            && warnings[1].contains("[[setup]]"),
        "{err}"
    );
    assert!(
        warnings[2].starts_with("warning: containerEnv.HTTPS_PROXY is not honoured: "),
        "{err}"
    );

    // What the server stored: the steps in order (onCreate before postCreate), the
    // environment without the reserved variable, the ports as a note.
    let o = s.cli(&["template", "show", "--tenant", "acme", "web"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("description: web app\n"), "{out}");
    let on_create = out
        .find("name = \"onCreateCommand\"\nrun = \"echo 'it'\\\\''s created'\"")
        .unwrap_or_else(|| panic!("{out}"));
    let post_create = out
        .find("name = \"postCreateCommand\"\nrun = \"npm ci && npm run build\"")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(on_create < post_create, "{out}");
    assert!(out.contains("[env]\nAPP_ENV = \"dev\"\n"), "{out}");
    assert!(!out.contains("HTTPS_PROXY"), "{out}");
    assert!(
        out.contains("# forwardPorts (recorded, not applied"),
        "{out}"
    );
    let (st, v) = s.call("GET", "/api/v1/templates/acme/web", None).await;
    assert_eq!(st, 200, "{v}");
}
