//! Private files of the TLS setup (keys, certificates, the ACME account) in the data dir:
//! written atomically with mode 0600 (a temporary file created anew, synced, renamed over the
//! name: a link planted at the name is replaced, never followed) and read without following a
//! symbolic link.

use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` (and parents) with mode 0700; refuses a symbolic link or non-directory there.
pub fn ensure_dir(dir: &Path) -> io::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory (a link?)",
            dir.display()
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir.to_owned())
}

/// Writes `data` to `dir/name` atomically, mode 0600.
pub fn write_private(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = f
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| f.write_all(data))
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename is durable once the directory is.
    std::fs::File::open(dir)?.sync_all()
}

/// Reads `path` without following a link at its last component; `Ok(None)` when absent.
pub fn read_private(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path);
    let mut f = match f {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(io::Error::other(format!(
                "{} is a symbolic link; berth does not follow links in its data dir",
                path.display()
            )))
        }
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_0600_atomically_and_refuses_links() {
        let dir = tempfile::tempdir().unwrap();
        let d = ensure_dir(&dir.path().join("tls")).unwrap();
        write_private(&d, "key.pem", b"one").unwrap();
        write_private(&d, "key.pem", b"two").unwrap();
        let meta = std::fs::metadata(d.join("key.pem")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(read_private(&d.join("key.pem")).unwrap().unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            1,
            "no temporary file left"
        );
        assert!(read_private(&d.join("absent")).unwrap().is_none());
        // A link planted at the name: not followed on read, replaced (not written through) on write.
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"victim").unwrap();
        std::os::unix::fs::symlink(&outside, d.join("cert.pem")).unwrap();
        let err = read_private(&d.join("cert.pem")).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        write_private(&d, "cert.pem", b"mine").unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"victim");
        assert!(!std::fs::symlink_metadata(d.join("cert.pem"))
            .unwrap()
            .is_symlink());
    }
}
