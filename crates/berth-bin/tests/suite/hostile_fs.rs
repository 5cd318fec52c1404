//! A hostile workspace against its channel directory (`/run/berth`, host
//! `DATA_DIR/workspaces/<id>/chan`): from inside, as the agent (uid 1000), it plants symlinks,
//! FIFOs, directories and sockets at every channel path, aimed at host canaries (root-owned,
//! 0600, known content, and a root-only listening socket); then the workspace is stopped,
//! started, recreated (rewriting a secret delivered as a file), its daemon killed with
//! SIGKILL (exit 137, which must not be recorded as an OOM kill) and reconciled. The host-side
//! effect is what is checked: the canaries keep content, mode and owner, the canary socket is
//! never connected to, the server keeps answering and the workspace keeps working.
//!
//! How these fail without the fix (shown by checking out the previous server, daemon client
//! and domain code, where the channel directory is owned by uid 1000 and mounted read-write and
//! the server writes, chmods and connects by path, and running them):
//! `planted_links_fifos_and_sockets_never_reach_the_host` fails "after planting: the server
//! connected to the canary socket" (the `sessions` call followed the `daemon.sock` link);
//! without that check, the start after the stop hangs (the server blocks in `open()` of the
//! FIFO planted at `berth-ca.crt`; the request times out after 120 s); with a link there instead
//! of the FIFO, "after stop/start: canary file content" is the CA bundle (and the file 0644).
//! `socket_swap_race_never_chmods_a_host_socket` fails "after the swap race: canary socket mode"
//! 0666 (438): a `renameat2(RENAME_EXCHANGE)` swap landed between the bind and the chmod.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_runtime::Runtime;
use berth_test_support::{enc, ensure_image, eventually, TestServer};
use serde_json::{json, Value};

use crate::bin;

const SECRET: &str = "file-secret-VALUE-4242";

/// Host things a workspace must never reach: a root-owned 0600 file with known content, a
/// 0700 directory holding one, and a 0600 listening socket that counts connections.
struct Canaries {
    _tmp: tempfile::TempDir,
    file: PathBuf,
    dir: PathBuf,
    socket: PathBuf,
    accepted: Arc<AtomicUsize>,
}

impl Canaries {
    fn new() -> Canaries {
        let tmp = tempfile::Builder::new()
            .prefix("berth-canary-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let file = tmp.path().join("canary");
        std::fs::write(&file, "original").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let dir = tmp.path().join("canary-dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("inner"), "inner").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let socket = tmp.path().join("canary.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for mut c in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let mut b = [0u8; 64];
                let _ = c.set_read_timeout(Some(Duration::from_millis(100)));
                let _ = c.read(&mut b);
            }
        });
        Canaries {
            _tmp: tmp,
            file,
            dir,
            socket,
            accepted,
        }
    }

    /// Environment for the planting scripts: where the canaries are on the host.
    fn env(&self) -> String {
        format!(
            "F={} D={} S={}",
            self.file.display(),
            self.dir.display(),
            self.socket.display()
        )
    }

    fn assert_untouched(&self, when: &str) {
        let m = std::fs::metadata(&self.file).unwrap();
        let content = std::fs::read_to_string(&self.file).unwrap();
        assert!(
            content == "original",
            "{when}: canary file content is now {:?}...",
            content.chars().take(60).collect::<String>()
        );
        assert_eq!(m.mode() & 0o7777, 0o600, "{when}: canary file mode");
        assert_eq!((m.uid(), m.gid()), (0, 0), "{when}: canary file owner");
        let d = std::fs::metadata(&self.dir).unwrap();
        assert_eq!(d.mode() & 0o7777, 0o700, "{when}: canary dir mode");
        assert_eq!((d.uid(), d.gid()), (0, 0), "{when}: canary dir owner");
        let names: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["inner"], "{when}: canary dir content");
        let s = std::fs::symlink_metadata(&self.socket).unwrap();
        assert_eq!(s.mode() & 0o7777, 0o600, "{when}: canary socket mode");
        assert_eq!(s.uid(), 0, "{when}: canary socket owner");
        assert_eq!(
            self.accepted.load(Ordering::SeqCst),
            0,
            "{when}: the server connected to the canary socket"
        );
    }
}

/// Plants something aimed at the host at every channel path (each attempt may fail: the
/// server-owned part is read-only now; what matters is the host-side effect), and in the
/// agent-writable daemon directory; `daemon.sock` becomes a link to the canary socket.
const PLANT: &str = r#"
cd /run/berth || exit 1
plant() { rm -rf "$2" 2>/dev/null; case "$1" in
  file) ln -sfn "$F" "$2" ;; dir) ln -sfn "$D" "$2" ;; sock) ln -sfn "$S" "$2" ;;
  fifo) mkfifo "$2" ;; tree) mkdir "$2" && ln -s "$F" "$2/f" && ln -s "$D" "$2/d" ;;
esac 2>/dev/null; }
plant file ca-bundle.crt; plant fifo berth-ca.crt; plant dir secrets
plant sock gateway.sock; plant file egress.sock; plant tree egress-handoff.sock
mkdir -p secrets 2>/dev/null; plant file secrets/TOKEN
touch probe 2>/dev/null && echo CHANNEL-WRITABLE
plant sock daemon.sock  # where an older berth had it
mkdir -p daemon 2>/dev/null; cd /run/berth/daemon || exit 1
plant dir x; plant fifo y; plant tree z; plant file w
python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("/run/berth/daemon/s")'
plant sock daemon.sock
echo planted
"#;

async fn plant(s: &TestServer, c: &Canaries, ws: &str) -> Value {
    let script = format!("export {}; {PLANT}", c.env());
    let out = s.exec(ws, &["sh", "-c", &script]).await;
    assert!(out["stdout"].as_str().unwrap().contains("planted"), "{out}");
    out
}

/// The API answers a plain listing promptly (nothing is stuck on a workspace's files).
async fn assert_api_answers(s: &TestServer, when: &str) {
    let t = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        s.call("GET", "/api/v1/workspaces", None),
    )
    .await
    .unwrap_or_else(|_| panic!("{when}: the API did not answer within 10 s"));
    assert_eq!(r.0, 200, "{when}: {}", r.1);
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// A call that talks to the workspace daemon; with a planted `daemon.sock` it must fail fast
/// (and never reach what the link points at).
async fn daemon_call_is_bounded(s: &TestServer, ws: &str) -> u16 {
    let path = format!("/api/v1/workspaces/{}/sessions", enc(ws));
    let (st, _) = tokio::time::timeout(Duration::from_secs(15), s.call("GET", &path, None))
        .await
        .expect("a daemon call hung on a planted daemon.sock");
    st
}

async fn start(s: &TestServer, ws: &str) -> Value {
    let (st, v) = s
        .call(
            "POST",
            &format!("/api/v1/workspaces/{}/start", enc(ws)),
            None,
        )
        .await;
    assert_eq!(
        (st, v["state"].as_str()),
        (200, Some("running")),
        "{v}\n{}",
        s.log()
    );
    v
}

async fn stop(s: &TestServer, ws: &str) {
    let (st, v) = s
        .call(
            "POST",
            &format!("/api/v1/workspaces/{}/stop", enc(ws)),
            None,
        )
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("stopped")), "{v}");
}

async fn wait_failed(s: &TestServer, ws: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        "workspace marked failed",
        || async {
            let v = s.get(&format!("/api/v1/workspaces/{}", enc(ws))).await;
            (v["state"] == "failed").then_some(v)
        },
    )
    .await
}

async fn assert_works(s: &TestServer, ws: &str) {
    let out = s.exec(ws, &["cat", "/run/berth/secrets/TOKEN"]).await;
    assert_eq!(out["stdout"], SECRET, "{out}");
    let out = s
        .exec(ws, &["sh", "-c", "id -u; echo ok > ~/f; cat ~/f"])
        .await;
    assert_eq!(out["stdout"], "1000\nok\n", "{out}");
}

fn engine() -> berth_runtime::DockerRuntime {
    berth_runtime::DockerRuntime::connect(Some(&berth_test_support::engine())).unwrap()
}

#[tokio::test]
async fn planted_links_fifos_and_sockets_never_reach_the_host() {
    ensure_image().await;
    let c = Canaries::new();
    let s = TestServer::start(bin()).await;
    let (st, v) = s
        .call(
            "PUT",
            "/api/v1/secrets/acme/TOKEN",
            Some(json!({ "value": SECRET })),
        )
        .await;
    assert!(st < 300, "{v}");
    let w = s
        .create_workspace(json!({
            "name": "evil", "tenant": "acme", "memory": "256m",
            "secrets": [{"name": "TOKEN", "delivery": "file"}],
        }))
        .await;
    let ws = "acme/evil";
    assert_works(&s, ws).await;

    // 1. Plant (as the agent, then as root in the container, which is host uid 0 without a
    //    user namespace), then ask the server to talk to the daemon (daemon.sock is a link now).
    let container = w["container_id"].as_str().unwrap();
    let (_, as_root) =
        super::egress::run_as_root(container, &format!("export {}; {PLANT}", c.env())).await;
    assert!(!as_root.contains("CHANNEL-WRITABLE"), "{as_root}");
    let out = plant(&s, &c, ws).await;
    daemon_call_is_bounded(&s, ws).await;
    assert_api_answers(&s, "after planting").await;
    c.assert_untouched("after planting");

    // 2. Stop and start: the CA bundle is rewritten, the daemon directory made anew.
    stop(&s, ws).await;
    start(&s, ws).await;
    c.assert_untouched("after stop/start");
    assert_works(&s, ws).await;
    // Nothing but the daemon's directory is writable inside.
    let planted = out["stdout"].as_str().unwrap();
    assert!(!planted.contains("CHANNEL-WRITABLE"), "{out}");

    // 3. Plant again, then the container vanishes and start recreates it (the secret file is
    //    written again).
    plant(&s, &c, ws).await;
    engine().remove_container(container).await.unwrap();
    // A forced removal kills first: a reconciler pass between the engine's `die` and `remove`
    // records `exited`, a later one `vanished`; either way the next start recreates it.
    let reason = wait_failed(&s, ws).await["last_failure"]["reason"].clone();
    assert!(reason == "vanished" || reason == "exited", "{reason}");
    start(&s, ws).await;
    c.assert_untouched("after recreate");
    assert_works(&s, ws).await;

    // 4. A FIFO where the daemon's socket was: daemon calls fail fast, the API answers.
    let out = s
        .exec(
            ws,
            &[
                "sh",
                "-c",
                "cd /run/berth/daemon && rm -f daemon.sock && mkfifo daemon.sock && echo fifo",
            ],
        )
        .await;
    assert_eq!(out["stdout"], "fifo\n", "{out}");
    assert_ne!(daemon_call_is_bounded(&s, ws).await, 200);
    assert_api_answers(&s, "with a FIFO for daemon.sock").await;
    stop(&s, ws).await;
    start(&s, ws).await;

    // 5. The agent kills its own daemon (exit 137): an unexpected exit, not an OOM kill.
    //    (Planted in the same exec: once daemon.sock is a link, the server cannot reach it.)
    let kill = format!(
        "export {}; {PLANT}\nfor p in /proc/[0-9]*; do \
         grep -q '[w]orkspace-daemon' $p/cmdline 2>/dev/null && kill -9 ${{p#/proc/}}; done",
        c.env()
    );
    let _ = s
        .call(
            "POST",
            &format!("/api/v1/workspaces/{}/exec", enc(ws)),
            Some(json!({ "cmd": ["sh", "-c", &kill] })),
        )
        .await;
    let failed = wait_failed(&s, ws).await;
    assert_eq!(failed["last_failure"]["reason"], "exited", "{failed}");
    assert_eq!(failed["oom_kills"], 0, "{failed}");
    start(&s, ws).await;
    c.assert_untouched("after the daemon was killed and the workspace reconciled");
    assert_works(&s, ws).await;

    // 6. A channel directory of an older berth (owned by the workspace user, with the agent's
    //    links in it) is replaced on start; the workspace keeps working.
    stop(&s, ws).await;
    let chan = s
        .data_dir
        .path()
        .join("workspaces")
        .join(w["id"].as_str().unwrap())
        .join("chan");
    std::os::unix::fs::chown(&chan, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&chan, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::remove_file(chan.join("ca-bundle.crt")).unwrap();
    std::os::unix::fs::symlink(&c.file, chan.join("ca-bundle.crt")).unwrap();
    std::os::unix::fs::lchown(chan.join("ca-bundle.crt"), Some(1000), Some(1000)).unwrap();
    start(&s, ws).await;
    c.assert_untouched("after upgrading an old channel directory");
    let m = std::fs::metadata(&chan).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o755));
    assert_works(&s, ws).await;
    assert_api_answers(&s, "before removal").await;

    // 7. Removal deletes the workspace's directory with what the agent left in it, and only it.
    s.exec(
        ws,
        &[
            "sh",
            "-c",
            "cd /run/berth/daemon && ln -s \"$0\" l && mkdir t && ln -s \"$1\" t/l",
            &c.file.display().to_string(),
            &c.dir.display().to_string(),
        ],
    )
    .await;
    let (st, v) = s
        .call("DELETE", &format!("/api/v1/workspaces/{}", enc(ws)), None)
        .await;
    assert!((200..300).contains(&st), "{v}");
    assert!(!chan.parent().unwrap().exists());
    c.assert_untouched("after removal");
    assert_api_answers(&s, "at the end").await;
}

/// Swaps each server socket with a link to the canary socket in a tight
/// `renameat2(RENAME_EXCHANGE)` loop, removing it first so the reconciler binds it again: a
/// bind-then-chmod by path would chmod the canary.
const SWAP: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
S = sys.argv[1]
names = [b"/run/berth/gateway.sock", b"/run/berth/egress.sock", b"/run/berth/egress-handoff.sock"]
swaps = 0
end = time.time() + 9
while time.time() < end:
    for n in names:
        x = n + b".x"
        for p in (n, x):
            try: os.unlink(p)
            except OSError: pass
        try: os.symlink(S, x)
        except OSError: pass
    until = time.time() + 1.3
    while time.time() < until:
        for n in names:
            if libc.renameat2(-100, n, -100, n + b".x", 2) == 0:
                swaps += 1
print("swaps", swaps)
"#;

#[tokio::test]
async fn socket_swap_race_never_chmods_a_host_socket() {
    ensure_image().await;
    let c = Canaries::new();
    let s = TestServer::start(bin()).await;
    s.create_workspace(json!({"name": "racer", "memory": "256m"}))
        .await;
    let sock = c.socket.display().to_string();
    let out = s.exec("racer", &["python3", "-c", SWAP, &sock]).await;
    assert!(
        out["stdout"].as_str().unwrap().starts_with("swaps"),
        "{out}"
    );
    c.assert_untouched("after the swap race");
    assert_api_answers(&s, "after the swap race").await;
    // The server's sockets are still there and served.
    let out = s
        .exec(
            "racer",
            &["sh", "-c", "ls /run/berth; curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:7788/anthropic/v1/models"],
        )
        .await;
    let o = out["stdout"].as_str().unwrap();
    assert!(
        o.contains("gateway.sock\n") && o.contains("egress.sock\n"),
        "{out}"
    );
    assert!(!o.ends_with("000"), "the gateway is unreachable: {out}");
}
