//! The secrets vault: values encrypted at rest with ChaCha20-Poly1305 under a key that lives
//! outside the database (`BERTH_SECRETS_KEY` as 64 hex digits, or the file
//! `BERTH_SECRETS_KEY_FILE`, default `DATA_DIR/secrets.key`, created mode 0600 on first use).
//! Each value is sealed with its tenant and name as associated data, so a ciphertext cannot be
//! moved to another tenant or name.

use std::path::Path;

use berth_domain::Secret;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

pub struct Vault {
    cipher: ChaCha20Poly1305,
}

impl Vault {
    /// The key from `key` (64 hex digits), else from `key_file` (default `DATA_DIR/secrets.key`),
    /// created on first use.
    pub fn load(
        data_dir: &Path,
        key: Option<&Secret>,
        key_file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let key = match key {
            Some(hex_key) => decode_key(hex_key.expose())
                .map_err(|e| anyhow::anyhow!("BERTH_SECRETS_KEY: {e}"))?,
            None => {
                let path = key_file
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| data_dir.join("secrets.key"));
                if path.exists() {
                    let text = std::fs::read_to_string(&path)?;
                    decode_key(text.trim())
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                } else {
                    let mut key = [0u8; 32];
                    rand::thread_rng().fill_bytes(&mut key);
                    write_private(&path, &hex::encode(key))?;
                    tracing::info!(path = %path.display(), "created the secrets key");
                    key
                }
            }
        };
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    pub fn seal(
        &self,
        tenant: &str,
        name: &str,
        value: &Secret,
    ) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let aad = format!("{tenant}/{name}");
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.expose().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        Ok((nonce.to_vec(), ct))
    }

    pub fn open(
        &self,
        tenant: &str,
        name: &str,
        nonce: &[u8],
        ct: &[u8],
    ) -> anyhow::Result<Secret> {
        if nonce.len() != 12 {
            anyhow::bail!("corrupt secret {tenant}/{name}");
        }
        let aad = format!("{tenant}/{name}");
        let pt = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!("secret {tenant}/{name} does not decrypt with this key")
            })?;
        Ok(Secret::new(String::from_utf8(pt)?))
    }
}

fn decode_key(hex_key: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|e| format!("not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| "the key must be 32 bytes (64 hex digits)".to_owned())
}

pub(crate) fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

/// A secret name: what the workspace sees as an environment variable.
/// Longest secret name.
pub const MAX_NAME_LEN: usize = 64;

pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && (b[0].is_ascii_uppercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// A fresh placeholder: recognisable, header-safe, meaningless outside berth.
pub fn placeholder(name: &str) -> String {
    let mut r = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut r);
    format!(
        "berth-placeholder-{}-{}",
        name.to_ascii_lowercase(),
        hex::encode(r)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::load(dir.path(), None, None).unwrap();
        let (n, ct) = v.seal("acme", "TOKEN", &Secret::new("ghp_real")).unwrap();
        assert!(!String::from_utf8_lossy(&ct).contains("ghp_real"));
        assert_eq!(
            v.open("acme", "TOKEN", &n, &ct).unwrap().expose(),
            "ghp_real"
        );
        // Bound to tenant and name.
        assert!(v.open("globex", "TOKEN", &n, &ct).is_err());
        assert!(v.open("acme", "OTHER", &n, &ct).is_err());
        // The same key file is reused; the key is private.
        let again = Vault::load(dir.path(), None, None).unwrap();
        assert_eq!(
            again.open("acme", "TOKEN", &n, &ct).unwrap().expose(),
            "ghp_real"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn names_and_placeholders() {
        assert!(valid_name("GITHUB_TOKEN") && valid_name("_X1"));
        for bad in ["", "lower", "1X", "A-B", "A B"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let p = placeholder("GITHUB_TOKEN");
        assert!(p.starts_with("berth-placeholder-github_token-"));
        assert_ne!(p, placeholder("GITHUB_TOKEN"));
    }
}
