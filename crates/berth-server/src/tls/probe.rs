//! `berth doctor`'s look at the HTTPS listener from outside: a TLS handshake with the server's
//! own address that records the certificate presented (no trust decision: the point is to see
//! what clients get, which the certificate check then judges).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::certs;

/// Accepts any certificate and keeps the leaf.
#[derive(Debug, Default)]
struct Recorder(Mutex<Option<Vec<u8>>>);

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *berth_domain::sync::lock(&self.0) = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = certs::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = certs::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        certs::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Connects to `addr` (an unspecified address means this host's loopback), shakes hands as
/// `server_name`, and returns the leaf certificate's SHA-256 fingerprint.
pub async fn served_fingerprint(addr: SocketAddr, server_name: &str) -> anyhow::Result<String> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let recorder = Arc::new(Recorder::default());
    let cfg = rustls::ClientConfig::builder_with_provider(certs::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| anyhow::anyhow!("{server_name:?}: {e}"))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
    };
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| anyhow::anyhow!("no TLS handshake within 5 s"))??;
    let leaf = berth_domain::sync::lock(&recorder.0)
        .take()
        .ok_or_else(|| anyhow::anyhow!("no certificate presented"))?;
    Ok(certs::fingerprint(&leaf))
}
