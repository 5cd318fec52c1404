//! HTTPS end to end: the real `berth server` on loopback with certificate files (reloaded
//! without a restart, a bad file keeping the old one, HSTS, the HTTP→HTTPS redirect, doctor on
//! an expired certificate), with a self-signed certificate (the logged fingerprint is the served
//! one; `berth login --fingerprint` accepts it and refuses another), and with ACME against
//! pebble, Let's Encrypt's test CA (a certificate obtained over TLS-ALPN-01 on berth's listener,
//! then renewed). All traffic stays on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_test_support::engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::bin;

const TOKEN: &str = "berth_test_tls_0123456789abcdef0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `berth server` with extra flags on a free loopback port and its own data dir.
struct Server {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    data: tempfile::TempDir,
}

impl Server {
    async fn start(args: &[&str]) -> Self {
        let data = tempfile::Builder::new()
            .prefix("berth-tls-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let mut s = Self {
            child: None,
            port: free_port(),
            args: args.iter().map(|a| a.to_string()).collect(),
            data,
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let up = "berth server listening";
        let before = self.log().matches(up).count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("server.log"))
            .unwrap();
        let child = Command::new(bin())
            .arg("server")
            .args(&self.args)
            .env("BERTH_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("BERTH_DATA_DIR", self.data.path())
            .env("BERTH_BOOTSTRAP_TOKEN", TOKEN)
            .env("DOCKER_HOST", engine())
            .env("BERTH_RECONCILE_SECONDS", "30")
            .env("BERTH_LOG", "info,berth_server=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.log().matches(up).count() > before {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("berth server exited with {st}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("berth server did not come up; log:\n{}", self.log());
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- berth server log:\n{}", self.log());
        }
    }
}

/// A test CA issuing leaves.
struct TestCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pem: String,
}

impl TestCa {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "berth tls test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// (cert PEM, key PEM) valid from `from_days` to `to_days` relative to now.
    fn leaf(&self, names: &[&str], from_days: i64, to_days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::days(from_days);
        p.not_after = now + time::Duration::days(to_days);
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        (
            p.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    }
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&k, key).unwrap();
    std::fs::write(&c, cert).unwrap();
    (c, k)
}

fn serial_of(pem: &str) -> String {
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|d: rustls::pki_types::CertificateDer<'static>| d.to_vec())
        .unwrap();
    serial_of_der(&der)
}

fn serial_of_der(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    hex::encode(c.tbs_certificate.raw_serial())
}

/// A fresh client (no pooled connection: each request sees the certificate served now).
fn client(roots: Option<&str>) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none());
    let b = match roots {
        Some(pem) => b
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()),
        None => b.danger_accept_invalid_certs(true),
    };
    b.build().unwrap()
}

/// GET `url`; the response and the DER of the leaf certificate the server presented.
async fn get(c: &reqwest::Client, url: &str) -> Result<(reqwest::Response, Vec<u8>), String> {
    let resp = c
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .ok_or("no peer certificate")?;
    Ok((resp, der))
}

async fn eventually<F, Fut, T>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

#[tokio::test]
async fn certificate_files_reload_without_restart_and_a_bad_file_keeps_the_old() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let first = ca.leaf(&["127.0.0.1", "localhost"], -1, 90);
    let (cert, key) = write_pair(dir.path(), &first);
    let redirect_port = free_port();
    let s = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-reload-seconds",
        "1",
        "--http-redirect",
        &format!("127.0.0.1:{redirect_port}"),
    ])
    .await;
    let health = format!("{}/healthz", s.url());
    let (resp, der) = get(&client(Some(&ca.pem)), &health).await.unwrap();
    assert_eq!(serial_of_der(&der), serial_of(&first.0));
    // A CA-issued certificate: HSTS.
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000"
    );

    // Plain HTTP on the redirect port: 308 to the same path over HTTPS.
    let r = client(None)
        .get(format!(
            "http://127.0.0.1:{redirect_port}/api/v1/version?x=1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://127.0.0.1:{}/api/v1/version?x=1", s.port).as_str()
    );

    // The doctor on a valid certificate: both HTTPS checks pass.
    let (resp, _) = get(
        &client(Some(&ca.pem)),
        &format!("{}/api/v1/doctor", s.url()),
    )
    .await
    .unwrap();
    let report: Value = resp.json().await.unwrap();
    assert_eq!(check(&report, "tls_certificate")["ok"], true, "{report}");
    assert_eq!(check(&report, "https_listener")["ok"], true, "{report}");

    // New files: served from the next connection on, same process.
    let second = ca.leaf(&["127.0.0.1", "localhost"], -1, 90);
    write_pair(dir.path(), &second);
    let want = serial_of(&second.0);
    eventually(20, "the new certificate to be served", || {
        let (c, h, want) = (client(Some(&ca.pem)), health.clone(), want.clone());
        async move {
            let (_, der) = get(&c, &h).await.ok()?;
            (serial_of_der(&der) == want).then_some(())
        }
    })
    .await;

    // A broken certificate file: logged, and the last good certificate stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    eventually(20, "the reload error in the log", || {
        let log = s.log();
        async move {
            log.contains("cannot reload the TLS certificate")
                .then_some(())
        }
    })
    .await;
    let (_, der) = get(&client(Some(&ca.pem)), &health).await.unwrap();
    assert_eq!(serial_of_der(&der), want);
    assert!(!s.log().contains("PRIVATE KEY"), "a key reached the log");
}

#[tokio::test]
async fn doctor_flags_an_expired_certificate() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), &ca.leaf(&["127.0.0.1"], -30, -1));
    let s = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    // The client accepts it (expired) to ask the doctor.
    let (resp, _) = get(&client(None), &format!("{}/api/v1/doctor", s.url()))
        .await
        .unwrap();
    let report: Value = resp.json().await.unwrap();
    let c = check(&report, "tls_certificate");
    assert_eq!(c["ok"], false, "{report}");
    assert!(c["detail"].as_str().unwrap().starts_with("EXPIRED"), "{c}");
    assert!(c["fix"].as_str().unwrap().contains("reloads"), "{c}");
    assert_eq!(check(&report, "https_listener")["ok"], true, "{report}");
    assert_eq!(report["ok"], false);
}

fn logged_fingerprint(log: &str) -> String {
    // The message itself (field names may carry color codes).
    let needle = "--fingerprint ";
    let at = log
        .find(needle)
        .unwrap_or_else(|| panic!("no fingerprint in the log:\n{log}"));
    log[at + needle.len()..][..64].to_owned()
}

/// `berth` CLI with its own config dir; (exit code, stdout, stderr).
fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("BERTH_URL")
        .env_remove("BERTH_TOKEN")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn self_signed_fingerprint_is_the_served_one_and_login_pins_it() {
    let mut s = Server::start(&["--tls", "self-signed", "--tls-name", "phone.test"]).await;
    let logged = logged_fingerprint(&s.log());
    let (resp, der) = get(&client(None), &format!("{}/healthz", s.url()))
        .await
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(&der)), logged);
    assert!(
        resp.headers().get("strict-transport-security").is_none(),
        "HSTS with a self-signed certificate"
    );
    let (resp, _) = get(&client(None), &format!("{}/api/v1/doctor", s.url()))
        .await
        .unwrap();
    let report: Value = resp.json().await.unwrap();
    let c = check(&report, "tls_certificate");
    assert_eq!(c["ok"], true, "{report}");
    assert!(c["detail"].as_str().unwrap().contains(&logged), "{c}");

    let config = tempfile::tempdir().unwrap();
    let url = s.url();
    // Unpinned: the public roots do not know it.
    let (code, _, err) = cli(config.path(), &["login", &url, "--token", TOKEN]);
    assert_eq!(code, 1);
    assert!(err.contains("not signed by a trusted CA"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Another fingerprint: refused, one line naming both.
    let wrong = "00".repeat(32);
    let (code, _, err) = cli(
        config.path(),
        &["login", &url, "--token", TOKEN, "--fingerprint", &wrong],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&wrong) && err.contains(&logged), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The right one (with colons, upper case): accepted, saved, used by later commands.
    let colons = logged
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let (code, out, err) = cli(
        config.path(),
        &["login", &url, "--token", TOKEN, "--fingerprint", &colons],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pinned"), "{out}");
    let (code, out, err) = cli(config.path(), &["whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("admin"), "{out}");

    // Kept across restarts: the same certificate, so the pin still holds.
    s.stop();
    s.spawn().await;
    let (_, der) = get(&client(None), &format!("{}/healthz", s.url()))
        .await
        .unwrap();
    assert_eq!(hex::encode(Sha256::digest(&der)), logged);
    let (code, _, err) = cli(config.path(), &["whoami"]);
    assert_eq!(code, 0, "{err}");
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_tcp(port: u16, p: &mut Proc, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Some(st) = p.0.try_wait().unwrap() {
            panic!("{what} exited with {st}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// pebble (the ACME CA) on loopback with its own HTTPS certificate from `ca`, validating
/// TLS-ALPN-01 on `tls_port`, resolving names through pebble-challtestsrv (every name →
/// 127.0.0.1), issuing certificates valid for `validity_secs`.
struct Pebble {
    _dns: Proc,
    _ca: Proc,
    directory: String,
    management: u16,
    dir: tempfile::TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for f in [
                "pebble.log",
                "pebble.err",
                "challtestsrv.log",
                "challtestsrv.err",
            ] {
                let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
                eprintln!("--- {f}:\n{text}");
            }
        }
    }
}

impl Pebble {
    async fn start(ca: &TestCa, tls_port: u16, validity_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), &ca.leaf(&["127.0.0.1", "localhost"], -1, 30));
        let (acme, management, dns, dns_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert, "privateKey": key,
            "httpPort": free_port(), "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity_secs,
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let mut dns_proc = Proc(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns}")])
                .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .stdout(log("challtestsrv.log"))
                .stderr(log("challtestsrv.err"))
                .spawn()
                .expect("pebble-challtestsrv (apt-get install pebble; scripts/test does)"),
        );
        wait_tcp(dns_mgmt, &mut dns_proc, "pebble-challtestsrv").await;
        let mut ca_proc = Proc(
            Command::new("pebble")
                .arg("-config")
                .arg(&config_path)
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_VA_ALWAYS_VALID", "0")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0")
                .stdout(log("pebble.log"))
                .stderr(log("pebble.err"))
                .spawn()
                .expect("pebble (apt-get install pebble; scripts/test does)"),
        );
        wait_tcp(acme, &mut ca_proc, "pebble").await;
        wait_tcp(management, &mut ca_proc, "pebble").await;
        Self {
            _dns: dns_proc,
            _ca: ca_proc,
            directory: format!("https://127.0.0.1:{acme}/dir"),
            management,
            dir,
        }
    }

    /// The root that issues berth's certificate (made anew at every pebble start).
    async fn root(&self, ca: &TestCa) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management);
        let r = client(Some(&ca.pem)).get(url).send().await.unwrap();
        assert!(r.status().is_success());
        r.text().await.unwrap()
    }
}

const ACME_DOMAIN: &str = "test.berth.internal";

/// Serial and lifetime of the certificate berth serves for the ACME domain, verified against
/// pebble's root (`None` until one is served).
async fn acme_served(root: &str, port: u16) -> Option<(String, i64, reqwest::Response)> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_info(true)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root.as_bytes()).unwrap())
        .resolve(ACME_DOMAIN, ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let (resp, der) = get(&c, &format!("https://{ACME_DOMAIN}:{port}/healthz"))
        .await
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let v = cert.validity();
    let lifetime = v.not_after.timestamp() - v.not_before.timestamp();
    Some((serial_of_der(&der), lifetime, resp))
}

#[tokio::test]
async fn acme_obtains_a_certificate_from_pebble_and_renews_it() {
    let ca = TestCa::new();
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), &ca.pem).unwrap();
    let port = free_port();
    let pebble = Pebble::start(&ca, port, 30).await;
    let root = pebble.root(&ca).await;
    let mut s = Server {
        child: None,
        port,
        args: [
            "--acme",
            ACME_DOMAIN,
            "--acme-email",
            "ops@berth.test",
            "--acme-directory",
            &pebble.directory,
            "--acme-ca-root",
            ca_file.path().to_str().unwrap(),
            "--tls-name",
            "www.berth.internal",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect(),
        data: tempfile::Builder::new()
            .prefix("berth-tls-")
            .tempdir_in("/var/tmp")
            .unwrap(),
    };
    s.spawn().await;
    let (first, lifetime, resp) =
        eventually(90, "a certificate from pebble", || acme_served(&root, port)).await;
    assert!((25..=35).contains(&lifetime), "lifetime {lifetime}s");
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let acme_dir = s.data.path().join("tls/acme");
    // One certificate for both names (two TLS-ALPN-01 answers on the one listener).
    let pem = std::fs::read(acme_dir.join("cert.pem")).unwrap();
    let der: rustls::pki_types::CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let san = format!(
        "{:?}",
        cert.subject_alternative_name().unwrap().unwrap().value
    );
    assert!(
        san.contains(ACME_DOMAIN) && san.contains("www.berth.internal"),
        "{san}"
    );
    for f in ["account.json", "cert.pem", "key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(acme_dir.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // A third of 30 s left after 20 s: a new order, a new certificate, same process.
    let (second, _, _) = eventually(90, "the renewed certificate", || {
        let (root, first) = (root.clone(), first.clone());
        async move {
            acme_served(&root, port)
                .await
                .filter(|(serial, _, _)| *serial != first)
        }
    })
    .await;
    let log = s.log();
    assert!(
        log.matches("obtained a certificate by ACME").count() >= 2,
        "{log}"
    );
    assert!(!log.contains("PRIVATE KEY"), "a key reached the log");
    assert_ne!(second, first);
    // The CA gone and the server restarted: the stored certificate is served at once, the
    // renewal fails, is logged, and that certificate stays in service.
    drop(pebble);
    s.stop();
    let failed = "ACME certificate order failed";
    let failures = s.log().matches(failed).count();
    let stored =
        serial_of(&std::fs::read_to_string(s.data.path().join("tls/acme/cert.pem")).unwrap());
    s.spawn().await;
    assert!(s.log().contains("serving the stored ACME certificate"));
    let (_, der) = get(&client(None), &format!("{}/healthz", s.url()))
        .await
        .unwrap();
    assert_eq!(serial_of_der(&der), stored);
    eventually(60, "a failed renewal in the log", || {
        let log = s.log();
        async move { (log.matches(failed).count() > failures).then_some(()) }
    })
    .await;
    let (_, der) = get(&client(None), &format!("{}/healthz", s.url()))
        .await
        .unwrap();
    assert_eq!(serial_of_der(&der), stored);
}

#[tokio::test]
async fn a_self_signed_certificate_in_files_gets_no_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert, key) = write_pair(dir.path(), &(cert.pem(), key.serialize_pem()));
    let s = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    let (resp, _) = get(&client(None), &format!("{}/healthz", s.url()))
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert!(resp.headers().get("strict-transport-security").is_none());
}
