//! Every operation of `chanfs`, with symlinks, hard links, FIFOs, directories and sockets
//! planted at each path it touches: nothing outside changes and nothing blocks.
//!
//! Shown able to fail: with `write_file` done the old way (`std::fs::write` + chmod by path),
//! `write_file_replaces_whatever_is_planted...` fails on the canary's content (written through
//! the link) and `directories_others_can_write...` on a name like `../canary`; with
//! `open_socket` not checking what it opened, `open_socket_refuses...` accepts the planted
//! link/file. (The bind-then-chmod race needs a concurrent swapper: `suite::hostile_fs`.)

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use super::*;

/// What an attacker may leave at a name the server is about to use.
#[derive(Debug, Clone, Copy)]
enum Plant {
    SymlinkToFile,
    SymlinkToDir,
    SymlinkToSocket,
    Hardlink,
    Fifo,
    DirWithLinks,
    Socket,
}

const PLANTS: [Plant; 7] = [
    Plant::SymlinkToFile,
    Plant::SymlinkToDir,
    Plant::SymlinkToSocket,
    Plant::Hardlink,
    Plant::Fifo,
    Plant::DirWithLinks,
    Plant::Socket,
];

/// Host things the attacker aims at: a 0600 file with known content, a 0700 directory holding
/// such a file, a listening 0600 socket.
struct Canaries {
    _tmp: tempfile::TempDir,
    file: PathBuf,
    dir: PathBuf,
    socket: PathBuf,
    _listener: std::os::unix::net::UnixListener,
}

impl Canaries {
    fn new() -> Canaries {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("canary");
        fs::write(&file, "original").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let dir = tmp.path().join("canary-dir");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("inner"), "inner").unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let socket = tmp.path().join("canary.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)).unwrap();
        Canaries {
            _tmp: tmp,
            file,
            dir,
            socket,
            _listener: listener,
        }
    }

    fn plant(&self, kind: Plant, at: &Path) {
        match kind {
            Plant::SymlinkToFile => std::os::unix::fs::symlink(&self.file, at).unwrap(),
            Plant::SymlinkToDir => std::os::unix::fs::symlink(&self.dir, at).unwrap(),
            Plant::SymlinkToSocket => std::os::unix::fs::symlink(&self.socket, at).unwrap(),
            Plant::Hardlink => fs::hard_link(&self.file, at).unwrap(),
            Plant::Fifo => {
                nix::unistd::mkfifo(at, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap()
            }
            Plant::DirWithLinks => {
                fs::create_dir(at).unwrap();
                std::os::unix::fs::symlink(&self.file, at.join("f")).unwrap();
                std::os::unix::fs::symlink(&self.dir, at.join("d")).unwrap();
                fs::hard_link(&self.file, at.join("h")).unwrap();
            }
            Plant::Socket => {
                std::mem::forget(std::os::unix::net::UnixListener::bind(at).unwrap());
            }
        }
    }

    /// The canaries are exactly as created.
    fn assert_untouched(&self, what: &str) {
        let m = fs::metadata(&self.file).unwrap();
        assert_eq!(
            fs::read_to_string(&self.file).unwrap(),
            "original",
            "{what}"
        );
        assert_eq!(m.mode() & 0o7777, 0o600, "{what}: canary file mode");
        assert_eq!(m.uid(), euid(), "{what}: canary file owner");
        let d = fs::metadata(&self.dir).unwrap();
        assert_eq!(d.mode() & 0o7777, 0o700, "{what}: canary dir mode");
        assert_eq!(d.uid(), euid(), "{what}: canary dir owner");
        let names: Vec<_> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["inner"], "{what}: canary dir content");
        assert_eq!(
            fs::read_to_string(self.dir.join("inner")).unwrap(),
            "inner",
            "{what}"
        );
        let s = fs::symlink_metadata(&self.socket).unwrap();
        assert_eq!(s.mode() & 0o7777, 0o600, "{what}: canary socket mode");
    }
}

/// Runs `f` on a thread and fails the test if it does not return within two seconds (an
/// `open()` of a FIFO would block forever).
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(2))
        .unwrap_or_else(|_| panic!("{what}: blocked"))
}

/// A private server-owned directory like `chan/`.
fn private_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("chan");
    fs::create_dir(&path).unwrap();
    (tmp, path)
}

/// The owner the tests ask for: the workspace user when running as root (as the server
/// does), else nobody else can be chowned to.
fn other_owner() -> Option<u32> {
    (euid() == 0).then_some(1000)
}

#[test]
fn write_file_replaces_whatever_is_planted_and_touches_nothing_outside() {
    for kind in PLANTS {
        let c = Canaries::new();
        let (_tmp, path) = private_dir();
        c.plant(kind, &path.join("ca-bundle.crt"));
        let p = path.clone();
        let owner = other_owner();
        bounded(&format!("{kind:?}"), move || {
            let d = Dir::open_private(&p).unwrap();
            d.write_file("ca-bundle.crt", b"bundle", 0o400, owner)
                .unwrap();
        });
        c.assert_untouched(&format!("write_file over {kind:?}"));
        let m = fs::symlink_metadata(path.join("ca-bundle.crt")).unwrap();
        assert!(m.file_type().is_file(), "{kind:?}");
        assert_eq!(m.nlink(), 1, "{kind:?}");
        assert_eq!(m.mode() & 0o7777, 0o400, "{kind:?}");
        assert_eq!(m.uid(), owner.unwrap_or_else(euid), "{kind:?}");
        assert_eq!(fs::read(path.join("ca-bundle.crt")).unwrap(), b"bundle");
    }
}

#[test]
fn subdirs_replace_planted_entries_and_fresh_ones_are_empty() {
    for kind in PLANTS {
        let c = Canaries::new();
        let (_tmp, path) = private_dir();
        c.plant(kind, &path.join("secrets"));
        c.plant(kind, &path.join("daemon"));
        let p = path.clone();
        let owner = other_owner();
        bounded(&format!("{kind:?}"), move || {
            let d = Dir::open_private(&p).unwrap();
            let s = d.subdir("secrets", 0o755, None).unwrap();
            s.write_file("TOKEN", b"v", 0o400, owner).unwrap();
            d.fresh_subdir("daemon", 0o700, owner).unwrap();
        });
        c.assert_untouched(&format!("subdir over {kind:?}"));
        let s = fs::symlink_metadata(path.join("secrets")).unwrap();
        assert!(s.is_dir(), "{kind:?}");
        assert_eq!((s.uid(), s.mode() & 0o7777), (euid(), 0o755), "{kind:?}");
        let d = fs::symlink_metadata(path.join("daemon")).unwrap();
        assert!(d.is_dir(), "{kind:?}");
        assert_eq!(d.uid(), owner.unwrap_or_else(euid), "{kind:?}");
        assert_eq!(d.mode() & 0o7777, 0o700, "{kind:?}");
        assert_eq!(fs::read_dir(path.join("daemon")).unwrap().count(), 0);
    }
}

#[test]
fn a_fresh_subdir_empties_what_the_workspace_left_inside_without_following_it() {
    let c = Canaries::new();
    let (_tmp, path) = private_dir();
    let d = Dir::open_private(&path).unwrap();
    d.subdir("daemon", 0o700, other_owner()).unwrap();
    for (i, kind) in PLANTS.into_iter().enumerate() {
        c.plant(kind, &path.join("daemon").join(format!("x{i}")));
    }
    c.plant(Plant::SymlinkToSocket, &path.join("daemon/daemon.sock"));
    bounded("fresh daemon dir", move || {
        d.fresh_subdir("daemon", 0o700, other_owner()).unwrap();
    });
    c.assert_untouched("fresh_subdir");
    assert_eq!(fs::read_dir(path.join("daemon")).unwrap().count(), 0);
}

#[test]
fn a_subdir_of_another_owner_is_replaced_not_adopted() {
    if euid() != 0 {
        return; // Only root can make a directory of another owner.
    }
    let (_tmp, path) = private_dir();
    fs::create_dir(path.join("secrets")).unwrap();
    fs::write(path.join("secrets/planted"), "x").unwrap();
    std::os::unix::fs::chown(path.join("secrets"), Some(1000), Some(1000)).unwrap();
    let d = Dir::open_private(&path).unwrap();
    d.subdir("secrets", 0o755, None).unwrap();
    let m = fs::metadata(path.join("secrets")).unwrap();
    assert_eq!(m.uid(), 0);
    assert!(!path.join("secrets/planted").exists());
}

#[test]
fn bind_socket_replaces_planted_entries_and_chmods_only_its_own_socket() {
    for kind in PLANTS {
        let c = Canaries::new();
        let (_tmp, path) = private_dir();
        c.plant(kind, &path.join("gateway.sock"));
        let p = path.clone();
        let l = bounded(&format!("{kind:?}"), move || {
            Dir::open_private(&p)
                .unwrap()
                .bind_socket("gateway.sock", 0o666)
                .unwrap()
        });
        c.assert_untouched(&format!("bind_socket over {kind:?}"));
        let m = fs::symlink_metadata(path.join("gateway.sock")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
        assert_eq!(m.mode() & 0o7777, 0o666, "{kind:?}");
        std::os::unix::net::UnixStream::connect(path.join("gateway.sock")).unwrap();
        drop(l);
    }
}

#[test]
fn directories_others_can_write_or_links_are_refused() {
    let c = Canaries::new();
    let (tmp, path) = private_dir();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
    let e = Dir::open_private(&path).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&c.dir, &link).unwrap();
    assert!(Dir::open_private(&link).is_err());
    assert!(Dir::create_private(&link, 0o755).is_err());
    c.assert_untouched("open_private");
    // Names are single components.
    let d = Dir::create_private(&tmp.path().join("ok"), 0o755).unwrap();
    for bad in ["", ".", "..", "../canary", "a/b"] {
        assert!(d.write_file(bad, b"x", 0o644, None).is_err(), "{bad:?}");
        assert!(d.remove(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn open_socket_refuses_anything_but_the_socket_itself_and_never_blocks() {
    for kind in PLANTS {
        let c = Canaries::new();
        let (_tmp, path) = private_dir();
        let at = path.join("daemon.sock");
        c.plant(kind, &at);
        let r = bounded(&format!("{kind:?}"), move || open_socket(&at).map(drop));
        match kind {
            Plant::Socket => r.unwrap(),
            _ => assert!(r.is_err(), "{kind:?} accepted"),
        }
        c.assert_untouched(&format!("open_socket of {kind:?}"));
    }
    // A hard link to a socket is refused too (two links), and so is a linked directory.
    let c = Canaries::new();
    let (tmp, path) = private_dir();
    fs::hard_link(&c.socket, path.join("daemon.sock")).unwrap();
    assert!(open_socket(&path.join("daemon.sock")).is_err());
    std::os::unix::fs::symlink(c.socket.parent().unwrap(), tmp.path().join("via")).unwrap();
    assert!(open_socket(&tmp.path().join("via/canary.sock")).is_err());
}

#[tokio::test]
async fn connecting_through_the_descriptor_reaches_the_socket() {
    let (_tmp, path) = private_dir();
    let at = path.join("daemon.sock");
    let listener = tokio::net::UnixListener::bind(&at).unwrap();
    let fd = open_socket(&at).unwrap();
    let client = tokio::net::UnixStream::connect(fd_path(&fd)).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    drop(fd);
    client.writable().await.unwrap();
    client.try_write(b"x").unwrap();
    server.readable().await.unwrap();
    let mut b = [0u8; 1];
    assert_eq!(server.try_read(&mut b).unwrap(), 1);
}

#[test]
fn remove_tree_removes_links_not_their_targets() {
    for kind in PLANTS {
        let c = Canaries::new();
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        fs::create_dir_all(ws.join("chan/daemon")).unwrap();
        c.plant(kind, &ws.join("chan/daemon/x"));
        c.plant(kind, &ws.join("chan/y"));
        bounded(&format!("{kind:?}"), move || remove_tree(&ws).unwrap());
        c.assert_untouched(&format!("remove_tree with {kind:?}"));
        assert!(!tmp.path().join("ws").exists());
        // The workspace dir itself replaced by a link: only the link goes.
        let link = tmp.path().join("ws2");
        std::os::unix::fs::symlink(&c.dir, &link).unwrap();
        remove_tree(&link).unwrap();
        c.assert_untouched("remove_tree of a link");
        remove_tree(&tmp.path().join("missing")).unwrap();
    }
}

#[test]
fn contains_sees_links_without_following_them() {
    let c = Canaries::new();
    let (_tmp, path) = private_dir();
    let d = Dir::open_private(&path).unwrap();
    assert!(!d.contains("egress.sock"));
    std::os::unix::fs::symlink(path.join("missing"), path.join("egress.sock")).unwrap();
    assert!(d.contains("egress.sock"));
    assert!(!d.contains("../chan"));
    c.assert_untouched("contains");
}

#[tokio::test]
async fn listen_serves_a_fresh_socket_only_in_a_private_directory() {
    for kind in PLANTS {
        let c = Canaries::new();
        let (_tmp, path) = private_dir();
        let sock = path.join("gateway.sock");
        c.plant(kind, &sock);
        let l = listen(&sock).unwrap();
        c.assert_untouched(&format!("listen over {kind:?}"));
        let m = fs::symlink_metadata(&sock).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
        assert_eq!(m.mode() & 0o7777, 0o666, "{kind:?}");
        assert!(is_bound(&sock));
        let client = tokio::net::UnixStream::connect(&sock);
        let (accepted, connected) = tokio::join!(l.accept(), client);
        accepted.unwrap();
        connected.unwrap();
    }
    // A directory others may write, a link in place of the directory, no file name: refused.
    let c = Canaries::new();
    let (tmp, path) = private_dir();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
    let e = listen(&path.join("egress.sock")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&c.dir, &link).unwrap();
    assert!(listen(&link.join("egress.sock")).is_err());
    assert!(listen(Path::new("/")).is_err());
    c.assert_untouched("listen");
    assert!(!is_bound(&tmp.path().join("missing.sock")));
}
