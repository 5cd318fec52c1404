//! HTTPS for `berth server` on its one listener, without a reverse proxy: the certificate comes
//! from operator files (reloaded on change), from berth itself (self-signed, pinned by
//! fingerprint) or from an ACME CA (obtained and renewed, TLS-ALPN-01 answered on the same
//! listener). [`Tls::setup`] loads what is there at start; [`Tls::serve`] runs the HTTPS
//! listener, the background reload/renewal task and the optional plain-HTTP redirect.

mod acme;
pub mod certs;
mod files;
mod listener;
mod probe;
mod redirect;
mod resolver;
mod self_signed;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{TlsSettings, TlsSource};

pub use certs::CertInfo;
pub use probe::served_fingerprint;
pub use resolver::CertResolver;

/// The running HTTPS setup, as the doctor sees it.
pub struct TlsHandle {
    pub settings: TlsSettings,
    pub resolver: Arc<CertResolver>,
    /// Where the HTTPS listener is bound.
    pub addr: SocketAddr,
}

impl TlsHandle {
    /// The names the certificate must cover: the configured ones, and for a self-signed
    /// certificate the host's own.
    pub fn expected_names(&self) -> Vec<String> {
        match self.settings.source {
            TlsSource::SelfSigned => self_signed::host_names(&self.settings.names),
            _ => self.settings.names.clone(),
        }
    }
}

/// HTTPS prepared at start, before the listener is served.
pub struct Tls {
    settings: TlsSettings,
    resolver: Arc<CertResolver>,
    acme: Option<acme::AcmeManager>,
}

impl Tls {
    /// Loads the certificate files or the self-signed certificate (an error stops the server),
    /// or prepares ACME (serving its stored certificate, if any, right away).
    pub fn setup(settings: &TlsSettings, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        // instant-acme's HTTP client builds its TLS config with the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resolver = Arc::new(CertResolver::default());
        let mut acme = None;
        match &settings.source {
            TlsSource::Files { cert, key } => {
                let l = files::load(cert, key)?;
                log_loaded("certificate files", &l.info);
                resolver.set(l.key, l.info);
            }
            TlsSource::SelfSigned => {
                let names = self_signed::host_names(&settings.names);
                let l = self_signed::load_or_create(data_dir, &names)
                    .map_err(|e| anyhow::anyhow!("self-signed certificate: {e:#}"))?;
                tracing::info!(
                    fingerprint_sha256 = %l.info.fingerprint,
                    names = %l.info.names.join(","),
                    "self-signed certificate: pin it with `berth login https://HOST:PORT --fingerprint {}`",
                    l.info.fingerprint
                );
                resolver.set(l.key, l.info);
            }
            TlsSource::Acme(a) => {
                acme = Some(acme::AcmeManager::new(
                    a.clone(),
                    settings.names.clone(),
                    data_dir,
                    resolver.clone(),
                )?);
            }
        }
        Ok(Self {
            settings: settings.clone(),
            resolver,
            acme,
        })
    }

    /// What the doctor needs, for a listener bound at `addr`.
    pub fn handle(&self, addr: SocketAddr) -> TlsHandle {
        TlsHandle {
            settings: self.settings.clone(),
            resolver: self.resolver.clone(),
            addr,
        }
    }

    /// Serves `app` over HTTPS on `tcp` until `shutdown`, with the background tasks running.
    pub async fn serve(
        self,
        tcp: tokio::net::TcpListener,
        app: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let local = tcp.local_addr()?;
        let redirect = match &self.settings.http_redirect {
            Some(addr) => Some(self.spawn_redirect(addr, local.port()).await?),
            None => None,
        };
        let background = match (&self.settings.source, self.acme) {
            (TlsSource::Files { cert, key }, _) => Some(files::spawn_watch(
                cert.clone(),
                key.clone(),
                self.settings.reload_interval,
                self.resolver.clone(),
            )),
            (TlsSource::Acme(_), Some(m)) => Some(m.spawn()),
            _ => None,
        };
        let app = if self.settings.is_real_certificate() {
            let resolver = self.resolver.clone();
            app.layer(axum::middleware::map_response(move |resp| {
                redirect::hsts(resp, resolver.ca_issued())
            }))
        } else {
            app
        };
        let listener = listener::TlsListener::new(tcp, resolver::server_config(self.resolver)?)?;
        let url = match self.settings.public_host() {
            Some(h) => format!("https://{h}:{}", local.port()),
            None => format!("https://{local}"),
        };
        tracing::info!(%url, %local, "berth server listening (HTTPS)");
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        for task in background.into_iter().chain(redirect) {
            task.abort();
        }
        Ok(served?)
    }

    async fn spawn_redirect(
        &self,
        addr: &str,
        https_port: u16,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let plain = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--http-redirect): {e}"))?;
        let app = redirect::router(self.settings.public_host().map(str::to_owned), https_port);
        tracing::info!(addr = %plain.local_addr()?, "plain HTTP redirects to HTTPS");
        Ok(tokio::spawn(async move {
            if let Err(e) = axum::serve(plain, app).await {
                tracing::error!(error = %e, "the HTTP redirect listener stopped");
            }
        }))
    }
}

fn log_loaded(what: &str, info: &CertInfo) {
    tracing::info!(
        serial = %info.serial,
        not_after = %info.not_after,
        names = %info.names.join(","),
        fingerprint_sha256 = %info.fingerprint,
        "TLS {what} loaded"
    );
}
