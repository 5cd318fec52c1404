//! `--tls self-signed`: a certificate berth makes for this host's names (its host name,
//! localhost, 127.0.0.1, ::1 and every `--tls-name`), kept in `DATA_DIR/tls/self-signed` and
//! reused across restarts so a pinned fingerprint stays valid. It is made anew only when the
//! stored one is missing, unreadable, close to expiry or lacks a configured name.

use std::path::Path;

use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

use super::certs::{self, Loaded};
use super::store;

const VALID_DAYS: i64 = 3650;
/// A stored certificate with less left than this is replaced at start.
const RENEW_BEFORE_DAYS: i64 = 30;

/// The names of a self-signed certificate: the host's, then the configured extras.
pub fn host_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| crate::config::is_dns_name(h));
    for n in host
        .into_iter()
        .chain(["localhost", "127.0.0.1", "::1"].map(str::to_owned))
        .chain(extra.iter().cloned())
    {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// The stored certificate when it still fits `names`, else a new one (stored first).
pub fn load_or_create(data_dir: &Path, names: &[String]) -> anyhow::Result<Loaded> {
    let dir = store::ensure_dir(&data_dir.join("tls").join("self-signed"))?;
    let stored = match (
        store::read_private(&dir.join("cert.pem"))?,
        store::read_private(&dir.join("key.pem"))?,
    ) {
        (Some(c), Some(k)) => certs::parse_pem(&c, &k).ok(),
        _ => None,
    };
    let fresh_enough = |l: &Loaded| {
        l.info.not_after - time::OffsetDateTime::now_utc() > time::Duration::days(RENEW_BEFORE_DAYS)
    };
    if let Some(l) = stored {
        if fresh_enough(&l) && names.iter().all(|n| l.info.covers(n)) {
            return Ok(l);
        }
        tracing::warn!("the stored self-signed certificate is expiring or lacks a configured name; making a new one (its fingerprint changes)");
    }
    let (cert_pem, key_pem) = generate(names)?;
    store::write_private(&dir, "key.pem", key_pem.as_bytes())?;
    store::write_private(&dir, "cert.pem", cert_pem.as_bytes())?;
    certs::parse_pem(cert_pem.as_bytes(), key_pem.as_bytes())
}

fn generate(names: &[String]) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!(
            "berth {}",
            names.first().map(String::as_str).unwrap_or("server")
        ),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALID_DAYS);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_reused_and_remade_for_a_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let names = host_names(&["phone.example".into()]);
        assert!(names.contains(&"localhost".into()) && names.contains(&"::1".into()));
        let first = load_or_create(dir.path(), &names).unwrap();
        assert!(first.info.covers("phone.example") && first.info.covers("127.0.0.1"));
        let again = load_or_create(dir.path(), &names).unwrap();
        assert_eq!(first.info.fingerprint, again.info.fingerprint);
        let more = host_names(&["phone.example".into(), "10.1.2.3".into()]);
        let third = load_or_create(dir.path(), &more).unwrap();
        assert_ne!(first.info.fingerprint, third.info.fingerprint);
        assert!(third.info.covers("10.1.2.3"));
    }
}
