//! The doctor's HTTPS checks: the served certificate (chain parses, not expired nor expiring
//! within 14 days, covers the configured names; a self-signed one's fingerprint for pinning)
//! and the HTTPS listener answering with that certificate.

use berth_api::Check;
use time::OffsetDateTime;

use super::{fail, ok};
use crate::config::TlsSource;
use crate::tls::{CertInfo, TlsHandle};

/// Less validity left than this fails the check.
const WARN_DAYS: i64 = 14;

pub fn certificate(t: &TlsHandle) -> Check {
    let Some(info) = t.resolver.current_info() else {
        return fail(
            "tls_certificate",
            "no certificate yet: the ACME order has not succeeded".into(),
            "look for `ACME certificate order failed` in the server log (the CA must reach this host on port 443 for the domain)",
        );
    };
    judge(
        &info,
        &t.settings.source,
        &t.expected_names(),
        OffsetDateTime::now_utc(),
    )
}

/// Judges `info` at `now` (a pure function, for tests).
pub fn judge(info: &CertInfo, source: &TlsSource, names: &[String], now: OffsetDateTime) -> Check {
    let left = info.not_after - now;
    let mut detail = format!(
        "serial {}, valid until {} ({} days left), names {}",
        info.serial,
        info.not_after.date(),
        left.whole_days(),
        info.names.join(", ")
    );
    if matches!(source, TlsSource::SelfSigned) {
        detail.push_str(&format!(
            "; self-signed, SHA-256 fingerprint {} (pin it: berth login https://HOST:PORT --fingerprint {})",
            info.fingerprint, info.fingerprint
        ));
    }
    let fix = match source {
        TlsSource::Files { cert, .. } => format!(
            "put a renewed certificate and key at {} and its key file (berth reloads them without a restart)",
            cert.display()
        ),
        TlsSource::Acme(_) => "renewal keeps failing: look for `ACME certificate order failed` in the server log".into(),
        TlsSource::SelfSigned => "restart berth server: it makes a new self-signed certificate (the fingerprint changes)".into(),
    };
    if left.is_negative() {
        return fail(
            "tls_certificate",
            format!("EXPIRED on {}: {detail}", info.not_after),
            &fix,
        );
    }
    if left < time::Duration::days(WARN_DAYS) {
        return fail(
            "tls_certificate",
            format!("expires in less than {WARN_DAYS} days: {detail}"),
            &fix,
        );
    }
    let missing: Vec<&str> = names
        .iter()
        .filter(|n| !info.covers(n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return fail(
            "tls_certificate",
            format!("does not cover {}: {detail}", missing.join(", ")),
            "use a certificate for every --tls-name (or drop the names it lacks)",
        );
    }
    ok("tls_certificate", detail)
}

/// A TLS handshake with the server's own HTTPS listener.
pub async fn listener(t: &TlsHandle) -> Check {
    let name = t.settings.public_host().unwrap_or("localhost");
    match crate::tls::served_fingerprint(t.addr, name).await {
        Ok(fp) => match t.resolver.current_info() {
            Some(info) if info.fingerprint == fp => ok(
                "https_listener",
                format!(
                    "{} answers TLS for {name} with the current certificate",
                    t.addr
                ),
            ),
            _ => fail(
                "https_listener",
                format!(
                    "{} presents a certificate other than the current one ({fp})",
                    t.addr
                ),
                "restart berth server",
            ),
        },
        Err(e) => fail(
            "https_listener",
            format!("no TLS handshake with {} as {name}: {e:#}", t.addr),
            "look at the server log; check --listen",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(days_left: i64) -> (CertInfo, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        let i = CertInfo {
            serial: "01".into(),
            not_before: now - time::Duration::days(60),
            not_after: now + time::Duration::days(days_left),
            names: vec!["berth.example".into()],
            fingerprint: "ab".repeat(32),
            self_issued: false,
        };
        (i, now)
    }

    #[test]
    fn expiry_names_and_fingerprint() {
        let files = TlsSource::Files {
            cert: "/c".into(),
            key: "/k".into(),
        };
        let names = vec!["berth.example".to_owned()];
        let (i, now) = info(60);
        assert!(judge(&i, &files, &names, now).ok);
        let (i, now) = info(5);
        let c = judge(&i, &files, &names, now);
        assert!(!c.ok && c.detail.contains("less than 14 days"), "{c:?}");
        let (i, now) = info(-1);
        let c = judge(&i, &files, &names, now);
        assert!(!c.ok && c.detail.starts_with("EXPIRED"), "{c:?}");
        let (i, now) = info(60);
        let c = judge(&i, &files, &["other.example".to_owned()], now);
        assert!(
            !c.ok && c.detail.contains("does not cover other.example"),
            "{c:?}"
        );
        let c = judge(&i, &TlsSource::SelfSigned, &names, now);
        assert!(c.ok && c.detail.contains(&"ab".repeat(32)), "{c:?}");
    }
}
