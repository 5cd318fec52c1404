//! Staging the running `berth` binary for workspaces.
//!
//! Every workspace runs `berth workspace-daemon` from a read-only bind mount. Mounting the
//! build output directly would let a rebuild change the daemon under running workspaces, so
//! the server copies its own executable to `DATA_DIR/bin/berth-<sha256 prefix>` once and mounts
//! that: content-addressed, immutable, and the hash tells which daemon build a container runs.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct StagedBinary {
    pub path: PathBuf,
    /// First 16 hex digits of the binary's sha256.
    pub hash: String,
}

/// Where the daemon binary appears inside a workspace.
pub const DAEMON_PATH_IN_WORKSPACE: &str = "/opt/berth/berth";

pub fn stage(exe: &Path, data_dir: &Path) -> anyhow::Result<StagedBinary> {
    let hash = file_sha256(exe)?;
    let short = hash[..16].to_owned();
    let dir = data_dir.join("bin");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("berth-{short}"));
    if !path.exists() {
        let tmp = dir.join(format!(".berth-{short}.tmp{}", std::process::id()));
        std::fs::copy(exe, &tmp)?;
        set_mode(&tmp, 0o755)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(StagedBinary { path, hash: short })
}

fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("exe");
        std::fs::write(&exe, b"binary v1").unwrap();
        let a = stage(&exe, dir.path()).unwrap();
        let b = stage(&exe, dir.path()).unwrap();
        assert_eq!(a.path, b.path);
        assert_eq!(std::fs::read(&a.path).unwrap(), b"binary v1");
        std::fs::write(&exe, b"binary v2").unwrap();
        let c = stage(&exe, dir.path()).unwrap();
        assert_ne!(a.hash, c.hash);
        assert_eq!(std::fs::read(&c.path).unwrap(), b"binary v2");
        // The old stage stays for containers still running it.
        assert!(a.path.exists());
    }
}
