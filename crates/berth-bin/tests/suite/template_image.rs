//! A template's image extras and upgrades that remake the container, against real components:
//! the real engine builds the derived image (apt from Debian, a global from npm, reached the
//! way the base image build reaches them), the real CLI follows the provisioning.
//!
//! Proves: a build that fails (an apt package that does not exist) leaves the workspace
//! `failed{provision}` with the build's log on the `image` step, and `--retry` runs the build
//! again; an upgrade to a fixed revision builds the image, moves the workspace onto it (its
//! container made anew) and runs the rest; the packages run inside the workspace; a second
//! workspace of the same template gets the same image at once, without a build (the image's
//! engine id and creation time are unchanged); an upgrade to a revision with a new environment
//! variable remakes the container: the workspace's processes see the variable, a file written
//! to the home volume before survives, the image step is not run again.

use berth_test_support::{enc, ensure_image, TestServer};
use serde_json::Value;

use crate::bin;

const TEMPLATE: &str = r#"
description = "tools from the derived image"

[image]
apt = ["jq", "APT_EXTRA"]
npm = ["semver@7.6.3"]

[resources]
memory = "MEMORY"

[env]
STAGE = "STAGE_VALUE"

[[setup]]
name = "tools"
run = "jq --version && semver 1.2.3"
timeout = "2m"
"#;

fn template(apt_extra: &str, stage: &str) -> String {
    // The second stage also lowers the memory cap.
    let memory = if stage == "two" { "384m" } else { "512m" };
    let t = TEMPLATE
        .replace("STAGE_VALUE", stage)
        .replace("MEMORY", memory);
    if apt_extra.is_empty() {
        t.replace(", \"APT_EXTRA\"", "")
    } else {
        t.replace("APT_EXTRA", apt_extra)
    }
}

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

async fn sh(s: &TestServer, ws: &str, script: &str) -> (i64, String) {
    let out = s.exec(ws, &["sh", "-c", script]).await;
    (
        out["exit_code"].as_i64().unwrap(),
        format!(
            "{}{}",
            out["stdout"].as_str().unwrap(),
            out["stderr"].as_str().unwrap()
        ),
    )
}

/// The engine's id and creation time of an image.
async fn image_identity(tag: &str) -> (String, String) {
    let rt = berth_runtime::DockerRuntime::connect(Some(&berth_test_support::engine())).unwrap();
    let i = rt.client().inspect_image(tag).await.unwrap();
    (i.id.unwrap_or_default(), i.created.unwrap_or_default())
}

/// Removes the derived images earlier runs left (unused ones), so this run builds its own.
async fn remove_derived_images() {
    use bollard::image::{ListImagesOptions, RemoveImageOptions};
    let rt = berth_runtime::DockerRuntime::connect(Some(&berth_test_support::engine())).unwrap();
    let filters = std::collections::HashMap::from([("reference", vec!["localhost/berth-derived"])]);
    let list = rt
        .client()
        .list_images(Some(ListImagesOptions {
            filters,
            ..Default::default()
        }))
        .await
        .unwrap();
    for i in list {
        for tag in i.repo_tags {
            let _ = rt
                .client()
                .remove_image(&tag, None::<RemoveImageOptions>, None)
                .await;
        }
    }
}

fn step<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} step: {status}"))
}

fn set_template(s: &TestServer, file: &std::path::Path, source: &str) {
    std::fs::write(file, source).unwrap();
    let o = s.cli(&[
        "template",
        "set",
        "--tenant",
        "acme",
        "tools",
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
}

#[tokio::test]
async fn image_extras_are_built_cached_and_an_upgrade_remakes_the_container() {
    ensure_image().await;
    remove_derived_images().await;
    let s = TestServer::start(bin()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tools.toml");
    let missing = format!("berth-no-such-package-{}", std::process::id());

    // Revision 1 names an apt package that does not exist: the build fails.
    set_template(&s, &file, &template(&missing, "one"));
    let o = s.cli(&[
        "workspace",
        "create",
        "a",
        "--tenant",
        "acme",
        "--template",
        "tools",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}\n{}", s.log());
    assert!(out.contains("[1/2] image: running"), "{out}");
    assert!(
        out.contains("apt-get update"),
        "the build's log is shown: {out}"
    );
    assert!(err.contains("image build failed"), "{err}");
    let ws = "acme/a";
    let prov = format!("/api/v1/workspaces/{}/provision", enc(ws));
    let (_, status) = s.call("GET", &prov, None).await;
    assert_eq!(status["state"], "failed", "{status}");
    let image = step(&status, "image");
    assert_eq!(image["state"], "failed", "{status}");
    assert!(
        image["log"].as_str().unwrap().contains(&missing),
        "the step's log holds the build's output: {status}"
    );
    let w = s.get(&format!("/api/v1/workspaces/{}", enc(ws))).await;
    assert_eq!(
        (w["state"].as_str(), w["last_failure"]["reason"].as_str()),
        (Some("failed"), Some("provision")),
        "{w}"
    );
    // Retry runs the build again (it fails again: the package still does not exist).
    let first_start = image["started_at"].clone();
    let o = s.cli(&["workspace", "provision", ws, "--retry"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("[1/2] image: failed"), "{out}");
    let (_, status) = s.call("GET", &prov, None).await;
    assert_ne!(
        step(&status, "image")["started_at"],
        first_start,
        "{status}"
    );

    // Revision 2 fixes it: the upgrade builds, moves the workspace onto the image, runs setup.
    set_template(&s, &file, &template("", "one"));
    let o = s.cli(&["workspace", "provision", ws, "--upgrade"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}\n{}", s.log());
    assert!(
        out.contains("image: done (built localhost/berth-derived:"),
        "{out}"
    );
    assert!(out.contains("jq-1."), "the setup step ran the tools: {out}");
    let (_, status) = s.call("GET", &prov, None).await;
    let image = step(&status, "image").clone();
    let tag = image["message"]
        .as_str()
        .unwrap()
        .strip_prefix("built ")
        .unwrap()
        .to_owned();
    let w = s.get(&format!("/api/v1/workspaces/{}", enc(ws))).await;
    assert_eq!(w["image"], tag.as_str(), "{w}");
    assert_eq!(w["state"], "running", "{w}");
    let (code, out) = sh(
        &s,
        ws,
        "echo '{\"a\":[1,2]}' | jq -c .a && semver -r '>=1.0.0' 1.4.0 && id -u",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "[1,2]\n1.4.0\n1000\n"));
    let identity = image_identity(&tag).await;

    // A second workspace of the same template: the image is there, used at once, not rebuilt.
    let o = s.cli(&[
        "workspace",
        "create",
        "b",
        "--tenant",
        "acme",
        "--template",
        "tools",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains(&format!("image: done (reused {tag})")),
        "{out}"
    );
    assert!(!out.contains("apt-get"), "nothing was built: {out}");
    let wb = s
        .get(&format!("/api/v1/workspaces/{}", enc("acme/b")))
        .await;
    assert_eq!(wb["image"], tag.as_str(), "{wb}");
    assert_eq!(
        image_identity(&tag).await,
        identity,
        "the image was built again"
    );
    let (code, out) = sh(&s, "acme/b", "jq --version").await;
    assert_eq!(code, 0, "{out}");

    // Revision 3 changes the environment and the memory cap: the upgrade remakes the
    // container; the home volume (a file written before) survives; the image step is not run
    // again.
    assert_eq!(w["limits"]["memory_bytes"], 512 << 20, "{w}");
    let (code, _) = sh(&s, ws, "echo written-before > ~/mine.txt").await;
    assert_eq!(code, 0);
    let (code, out) = sh(&s, ws, "echo \"stage=$STAGE\"").await;
    assert_eq!((code, out.as_str()), (0, "stage=one\n"));
    // A terminal session open before: it ends with the old container, and is listed so.
    let sessions = format!("/api/v1/workspaces/{}/sessions", enc(ws));
    let (st, v) = s
        .call("POST", &sessions, Some(serde_json::json!({"name": "work"})))
        .await;
    assert_eq!(st, 201, "{v}");
    let container = w["container_id"].as_str().unwrap().to_owned();
    set_template(&s, &file, &template("", "two"));
    let o = s.cli(&["workspace", "provision", ws, "--upgrade"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}\n{}", s.log());
    assert!(out.contains("container: done (remade)"), "{out}");
    assert!(
        !out.contains("image: done"),
        "the image step ran again: {out}"
    );
    let (_, status) = s.call("GET", &prov, None).await;
    assert_eq!(
        (status["state"].as_str(), status["revision"].as_i64()),
        (Some("done"), Some(3)),
        "{status}"
    );
    let names: Vec<&str> = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["image", "container", "tools"], "{status}");
    assert_eq!(
        step(&status, "image")["finished_at"],
        image["finished_at"],
        "the kept image step keeps its record: {status}"
    );
    let w = s.get(&format!("/api/v1/workspaces/{}", enc(ws))).await;
    assert_ne!(w["container_id"].as_str(), Some(container.as_str()), "{w}");
    assert_eq!(w["image"], tag.as_str(), "{w}");
    assert_eq!(w["limits"]["memory_bytes"], 384 << 20, "{w}");
    let (code, out) = sh(
        &s,
        ws,
        "echo \"stage=$STAGE\"; cat ~/mine.txt; jq --version",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("stage=two\nwritten-before\njq-1."), "{out}");
    let (_, out) = sh(
        &s,
        ws,
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
    )
    .await;
    assert_eq!(
        out.trim(),
        (384u64 << 20).to_string(),
        "the new cap applies"
    );
    let list = s.get(&sessions).await;
    let work = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "work")
        .cloned()
        .unwrap_or_else(|| panic!("the session is missing: {list}"));
    assert_eq!(work["state"], "ended", "{work}");
    // The new variable is in the environment the container was made with.
    let (_, out) = sh(&s, ws, "tr '\\0' '\\n' < /proc/1/environ | grep '^STAGE='").await;
    assert_eq!(out, "STAGE=two\n");

    // The progress stream (what the CLI followed above): the current status with its id, then
    // the end (it is done); resumed after that id (`?after=` or `Last-Event-ID`), nothing again.
    let url = format!("{}/api/v1/workspaces/{}/provision/stream", s.url, enc(ws));
    let c = reqwest::Client::new();
    let get = |req: reqwest::RequestBuilder| async move {
        let r = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            req.send().await.unwrap().text().await.unwrap()
        });
        r.await.expect("the stream of a finished provisioning ends")
    };
    let body = get(c.get(&url).bearer_auth(&s.token)).await;
    assert!(
        body.contains("event: status") && body.contains("\"state\":\"done\""),
        "{body}"
    );
    let id: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let again = get(c.get(format!("{url}?after={id}")).bearer_auth(&s.token)).await;
    assert!(!again.contains("event: status"), "{again}");
    let again = get(c
        .get(&url)
        .bearer_auth(&s.token)
        .header("Last-Event-ID", id.to_string()))
    .await;
    assert!(!again.contains("event: status"), "{again}");

    // Pruning keeps a derived image while a workspace is on it, and removes it once none is.
    let o = s.cli(&["image", "prune", "--dry-run"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains(&format!("kept {tag} (used by workspaces: acme/a, acme/b)"))
            || out.contains(&format!("kept {tag} (used by workspaces: acme/b, acme/a)")),
        "{out}"
    );
    assert!(out.contains("would remove 0 derived image(s)"), "{out}");
    for w in ["acme/a", "acme/b"] {
        let (st, v) = s
            .call("DELETE", &format!("/api/v1/workspaces/{}", enc(w)), None)
            .await;
        assert!(st == 200 || st == 204, "{st} {v}");
    }
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/image/prune",
            Some(serde_json::json!({"dry_run": true})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["removed"][0]["tag"], tag.as_str(), "{v}");
    assert_eq!(image_identity(&tag).await, identity, "a dry run removed it");
    let o = s.cli(&["image", "prune"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains(&format!("removed {tag} (")), "{out}");
    let rt = berth_runtime::DockerRuntime::connect(Some(&berth_test_support::engine())).unwrap();
    assert!(
        rt.client().inspect_image(&tag).await.is_err(),
        "{tag} is still there"
    );
    let audit = s.get("/api/v1/audit").await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "image.prune" && e["target"] == "1 removed"),
        "{audit}"
    );
}
