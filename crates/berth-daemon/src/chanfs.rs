//! Every host-side file operation on a workspace's channel directories, in one place.
//!
//! The agent inside a workspace is hostile and runs as uid 1000 (maybe root in its container),
//! so nothing here follows a path it could have changed. The host layout under
//! `DATA_DIR/workspaces/<id>/`:
//!
//! ```text
//! chan/                     server-owned 0755, mounted READ-ONLY at /run/berth
//!   ca-bundle.crt           server-owned 0644 (written with O_CREAT|O_EXCL|O_NOFOLLOW)
//!   berth-ca.crt            server-owned 0644
//!   egress.sock, egress-handoff.sock, gateway.sock, access.sock   sockets the server binds ([`listen`]), 0666
//!   secrets/NAME            dir server-owned 0755; files uid 1000, 0400 (fchown/fchmod on the fd)
//!   daemon/                 uid 1000, 0700, mounted READ-WRITE at /run/berth/daemon
//!     daemon.sock           bound by the workspace daemon; reached only through `open_socket`
//! ```
//!
//! Only `chan/daemon/` is writable from inside. The server never opens, writes, chmods or
//! chowns anything in it; at every start it deletes the directory (without following links)
//! and makes a fresh one, and it connects to `daemon.sock` through an `O_PATH|O_NOFOLLOW`
//! descriptor that must be a socket. Directories are opened `O_DIRECTORY|O_NOFOLLOW` and the
//! server-owned ones are checked to be private (owned by this process, not group/other
//! writable) before anything is written into them. Nothing here can block on a FIFO: files
//! are created with `O_EXCL|O_NOFOLLOW|O_NONBLOCK` after the old entry is unlinked.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, CWD};

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// An open directory, reached without following a link at its last component.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens `path`, a directory this process owns and no one else may write (otherwise an
    /// error of kind `PermissionDenied`).
    pub fn open_private(path: &Path) -> io::Result<Dir> {
        let fd = rfs::openat(CWD, path, DIR_FLAGS, Mode::empty())
            .map_err(|e| with_path(e.into(), path))?;
        let dir = Dir {
            fd,
            path: path.to_owned(),
        };
        dir.check_private()?;
        Ok(dir)
    }

    /// Creates `path` (with missing parents, which the server owns) and opens it as
    /// [`Dir::open_private`], with `mode`.
    pub fn create_private(path: &Path, mode: u32) -> io::Result<Dir> {
        std::fs::create_dir_all(path)?;
        let fd = rfs::openat(CWD, path, DIR_FLAGS, Mode::empty())
            .map_err(|e| with_path(e.into(), path))?;
        let st = rfs::fstat(&fd)?;
        if st.st_uid != euid() {
            return Err(not_private(path));
        }
        rfs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        Self::open_private(path)
    }

    /// The directory's path, for messages and for the engine's mounts.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` in this directory as a path through this descriptor (`/proc/self/fd/N/name`),
    /// so it resolves to this very directory whatever happens to `self.path()`.
    fn fd_path(&self, name: &str) -> PathBuf {
        fd_path(&self.fd).join(name)
    }

    fn check_private(&self) -> io::Result<()> {
        let st = rfs::fstat(&self.fd)?;
        if st.st_uid != euid() || st.st_mode & 0o022 != 0 {
            return Err(not_private(&self.path));
        }
        Ok(())
    }

    /// The subdirectory `name` owned by `owner` (`None`: this process) with `mode`, created if
    /// missing. Whatever else is there (a link, a file, a directory of another owner) is
    /// removed first, without following links. A directory this process owns is checked
    /// private.
    pub fn subdir(&self, name: &str, mode: u32, owner: Option<u32>) -> io::Result<Dir> {
        self.subdir_created(name, mode, owner).map(|(dir, _)| dir)
    }

    /// [`Dir::subdir`], also saying whether the directory was (re)created.
    pub fn subdir_created(
        &self,
        name: &str,
        mode: u32,
        owner: Option<u32>,
    ) -> io::Result<(Dir, bool)> {
        check_name(name)?;
        let want = owner.unwrap_or_else(euid);
        let mut created = false;
        let sub = match self.open_sub(name) {
            Ok((fd, uid)) if uid == want => fd,
            Ok(_) | Err(_) => {
                created = true;
                self.remove(name)?;
                rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700))?;
                let (fd, _) = self.open_sub(name)?;
                if let Some(uid) = owner {
                    rfs::fchown(&fd, Some(uid_of(uid)), Some(gid_of(uid)))?;
                }
                fd
            }
        };
        rfs::fchmod(&sub, Mode::from_raw_mode(mode))?;
        let dir = Dir {
            fd: sub,
            path: self.path.join(name),
        };
        if owner.is_none() {
            dir.check_private()?;
        }
        Ok((dir, created))
    }

    /// A new, empty subdirectory `name` (anything there before is removed without following
    /// links), owned by `owner` (`None`: this process), with `mode`.
    pub fn fresh_subdir(&self, name: &str, mode: u32, owner: Option<u32>) -> io::Result<Dir> {
        self.remove(name)?;
        self.subdir(name, mode, owner)
    }

    fn open_sub(&self, name: &str) -> io::Result<(OwnedFd, u32)> {
        let fd = rfs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())?;
        let uid = rfs::fstat(&fd)?.st_uid;
        Ok((fd, uid))
    }

    /// Removes the entry `name` whatever it is (a directory with all it holds); a symbolic
    /// link is removed itself, never followed. A missing entry is fine.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        let st = match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            // std's remove_dir_all works with openat/unlinkat and O_NOFOLLOW (CVE-2022-21658).
            return remove_tree(&self.fd_path(name));
        }
        match rfs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `name` exists here (a link counts; it is not followed).
    pub fn contains(&self, name: &str) -> bool {
        check_name(name).is_ok() && rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// Writes a new regular file `name` (the old entry is removed first; the file is created
    /// `O_EXCL|O_NOFOLLOW`, so it is never a link, a FIFO or a file someone else holds), then
    /// sets owner and mode on the descriptor.
    pub fn write_file(
        &self,
        name: &str,
        contents: &[u8],
        mode: u32,
        owner: Option<u32>,
    ) -> io::Result<()> {
        self.remove(name)?;
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::CLOEXEC;
        let fd = rfs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600))?;
        if let Some(uid) = owner {
            rfs::fchown(&fd, Some(uid_of(uid)), Some(gid_of(uid)))?;
        }
        rfs::fchmod(&fd, Mode::from_raw_mode(mode))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(contents)?;
        file.flush()
    }

    /// Binds a listening Unix socket `name` (replacing whatever is there) with `mode`. Only in
    /// a directory no one else can write (checked when it was opened), so the socket cannot be
    /// swapped between the bind and the chmod.
    pub fn bind_socket(
        &self,
        name: &str,
        mode: u32,
    ) -> io::Result<std::os::unix::net::UnixListener> {
        self.check_private()?;
        self.remove(name)?;
        let listener = std::os::unix::net::UnixListener::bind(self.fd_path(name))?;
        rfs::chmodat(&self.fd, name, Mode::from_raw_mode(mode), AtFlags::empty())?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    }
}

/// Serves the socket at `path` in a workspace's server-owned channel directory (the workspace
/// sees it read-only, so the socket cannot be swapped): binds it anew (replacing a stale file)
/// through [`Dir::bind_socket`], mode 0666 so the workspace user (uid 1000) may connect, as a
/// tokio listener. The one way the server binds the sockets it serves into a workspace (the
/// LLM gateway's, the egress proxy's and its handoff socket). Needs a tokio runtime.
pub fn listen(path: &Path) -> io::Result<tokio::net::UnixListener> {
    let (dir, name) = split_socket_path(path)?;
    let listener = Dir::open_private(dir)?.bind_socket(name, 0o666)?;
    tokio::net::UnixListener::from_std(listener)
}

/// Whether the socket at `path` (a channel directory's entry) is still there; a link there is
/// not followed (it counts as an entry).
pub fn is_bound(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// A socket path in a channel directory as (directory, file name).
fn split_socket_path(path: &Path) -> io::Result<(&Path, &str)> {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => Ok((dir, name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a socket path", path.display()),
        )),
    }
}

/// Removes a directory tree without following links (a link at `path` itself is removed,
/// not followed). Blocking: call it on a blocking thread when the tree may be large. A
/// missing `path` is fine.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => std::fs::remove_file(path),
        other => other,
    }
}

/// Opens the Unix socket at `path` for a connect without following a link at its last
/// component (nor at its directory's): an `O_PATH|O_NOFOLLOW` descriptor checked to be a
/// socket with one link (not a link, FIFO, file, directory, or a hard link to some other
/// socket). Connect to [`fd_path`] of it. Never blocks.
pub fn open_socket(path: &Path) -> io::Result<OwnedFd> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no socket file name"))?;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = rfs::openat(CWD, parent, flags | OFlags::DIRECTORY, Mode::empty())?;
    let fd = rfs::openat(&dir, name, flags, Mode::empty())?;
    let st = rfs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket || st.st_nlink != 1 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("{} is not a socket (refusing to follow it)", path.display()),
        ));
    }
    Ok(fd)
}

/// The `/proc/self/fd/N` path of a descriptor: connecting or binding through it reaches the
/// very inode the descriptor holds.
pub fn fd_path(fd: &impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn uid_of(uid: u32) -> rfs::Uid {
    rfs::Uid::from_raw(uid)
}

fn gid_of(gid: u32) -> rfs::Gid {
    rfs::Gid::from_raw(gid)
}

fn not_private(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} is not private to this server (wrong owner or writable by others)",
            path.display()
        ),
    )
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
#[path = "chanfs_tests.rs"]
mod tests;
