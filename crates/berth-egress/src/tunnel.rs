//! Plain CONNECT tunnels (not intercepted): the relay, its idle timeout, and the check that a
//! TLS ClientHello sent through the tunnel names the host the CONNECT named.
//!
//! Without that check an allowed host on a shared CDN fronts for any other site on it
//! (domain fronting: `CONNECT allowed.example:443`, then a ClientHello for `evil.example`).
//! The first bytes from the client are read (never waiting on them before the origin's
//! bytes flow, so server-speaks-first protocols work); if they start a TLS handshake, the
//! whole ClientHello is collected and parsed with rustls, and the tunnel is refused when its
//! SNI is present and differs from the CONNECT host, or when it cannot be parsed. Bytes that
//! are not TLS pass unchanged.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::rules::normalize_host;

/// Copy buffer per direction (the 8 KiB default costs half the throughput).
const TUNNEL_BUFFER: usize = 256 << 10;
/// Largest ClientHello accepted (with record headers).
const MAX_HELLO: usize = 64 << 10;
/// Time to complete a ClientHello once its first byte arrived.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 0x01;

/// How a tunnel ended.
#[derive(Debug)]
pub(crate) enum TunnelEnd {
    /// Both sides closed.
    Done,
    /// No byte in either direction for the idle timeout.
    Idle,
    /// Closed by the proxy before anything reached the origin (the reason).
    Refused(String),
    Failed(io::Error),
}

enum Stop {
    Refused(String),
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Io(e)
    }
}

/// Relays `client` ⇄ `upstream` until both sides are done, the tunnel is idle for `idle`, or
/// the client's ClientHello names another host than `host`. Returns how it ended and the
/// bytes read from the client and from the upstream.
pub(crate) async fn relay<C>(
    client: C,
    upstream: TcpStream,
    host: &str,
    idle: Duration,
) -> (TunnelEnd, u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let touch = || last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let (up_n, down_n) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = upstream.into_split();
    let up = async {
        let first = read_client_hello(&mut cr, host, &touch).await?;
        up_n.fetch_add(first.len() as u64, Ordering::Relaxed);
        uw.write_all(&first).await?;
        copy(&mut cr, &mut uw, &up_n, &touch).await
    };
    let down = copy(&mut ur, &mut cw, &down_n, &touch);
    let watchdog = async {
        loop {
            let quiet = start
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    let end = tokio::select! {
        r = async { tokio::try_join!(up, down) } => match r {
            Ok(_) => TunnelEnd::Done,
            Err(Stop::Refused(why)) => TunnelEnd::Refused(why),
            Err(Stop::Io(e)) => TunnelEnd::Failed(e),
        },
        () = watchdog => TunnelEnd::Idle,
    };
    (
        end,
        up_n.load(Ordering::Relaxed),
        down_n.load(Ordering::Relaxed),
    )
}

/// Copies until EOF (then shuts `to` down for writing), counting and touching on each read.
async fn copy<R, W>(
    from: &mut R,
    to: &mut W,
    count: &AtomicU64,
    touch: &impl Fn(),
) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; TUNNEL_BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        touch();
        if n == 0 {
            // The other side may already be gone; that ends nothing here.
            let _ = to.shutdown().await;
            return Ok(());
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
    }
}

/// Reads the client's first bytes: returns them unchanged when they are not a TLS handshake
/// (or the client closed), or the complete ClientHello when its SNI is absent or names
/// `host`; refuses otherwise.
async fn read_client_hello<R>(r: &mut R, host: &str, touch: &impl Fn()) -> Result<Vec<u8>, Stop>
where
    R: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 << 10];
    // The first bytes may take as long as the client likes (server-first protocols).
    let n = r.read(&mut chunk).await?;
    touch();
    buf.extend_from_slice(&chunk[..n]);
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        match inspect(&buf) {
            Hello::NotTls => return Ok(buf),
            Hello::Sni(None) => return Ok(buf),
            Hello::Sni(Some(sni)) => {
                return match normalize_host(&sni) {
                    Some(s) if s == host => Ok(buf),
                    _ => Err(Stop::Refused(format!(
                        "SNI mismatch: the TLS ClientHello names {sni} but CONNECT named {host} (domain fronting)"
                    ))),
                };
            }
            Hello::Bad(why) => {
                return Err(Stop::Refused(format!(
                    "unreadable TLS ClientHello in a tunnel to {host}: {why}"
                )))
            }
            Hello::Need if n == 0 => return Ok(buf),
            Hello::Need => {}
        }
        let n = match tokio::time::timeout_at(deadline, r.read(&mut chunk)).await {
            Ok(n) => n?,
            Err(_) => {
                return Err(Stop::Refused(
                    "TLS ClientHello not completed in time".into(),
                ))
            }
        };
        touch();
        if n == 0 {
            return Err(Stop::Refused("the client closed mid ClientHello".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Hello {
    /// Not a TLS handshake: pass it on.
    NotTls,
    /// More bytes needed.
    Need,
    /// A complete ClientHello, and the host name it names, if any.
    Sni(Option<String>),
    /// A TLS handshake that is not a well-formed ClientHello.
    Bad(String),
}

/// Looks at the bytes a client sent first.
fn inspect(buf: &[u8]) -> Hello {
    // A TLS record starts with its type and a 3.x version; anything else is no TLS a
    // server would accept.
    match buf {
        [] => return Hello::Need,
        [TLS_HANDSHAKE] => return Hello::Need,
        [TLS_HANDSHAKE, 3] => return Hello::Need,
        [TLS_HANDSHAKE, 3, minor, ..] if *minor <= 4 => {}
        _ => return Hello::NotTls,
    }
    // Collect handshake bytes from consecutive handshake records until the ClientHello is
    // complete.
    let mut hs: Vec<u8> = Vec::new();
    let mut off = 0;
    while buf.len() >= off + 5 {
        if buf[off] != TLS_HANDSHAKE {
            return Hello::Bad("the ClientHello is interrupted by another record".into());
        }
        let len = usize::from(u16::from_be_bytes([buf[off + 3], buf[off + 4]]));
        if len == 0 || len > (16 << 10) + 2048 {
            return Hello::Bad(format!("bad record length {len}"));
        }
        if buf.len() < off + 5 + len {
            break;
        }
        hs.extend_from_slice(&buf[off + 5..off + 5 + len]);
        off += 5 + len;
        if hs.len() >= 4 {
            if hs[0] != CLIENT_HELLO {
                return Hello::Bad("the first handshake message is not a ClientHello".into());
            }
            let need =
                4 + (usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]));
            if need > MAX_HELLO {
                return Hello::Bad("ClientHello too large".into());
            }
            if hs.len() >= need {
                return parse_with_rustls(&buf[..off]);
            }
        }
    }
    if buf.len() > MAX_HELLO {
        return Hello::Bad("ClientHello too large".into());
    }
    Hello::Need
}

/// Parses the records holding a complete ClientHello with rustls (which also refuses
/// duplicate extensions and more than one host name).
fn parse_with_rustls(records: &[u8]) -> Hello {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = records;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Hello::Bad(e.to_string()),
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Hello::Sni(accepted.client_hello().server_name().map(str::to_owned)),
        Ok(None) => Hello::Bad("incomplete ClientHello".into()),
        Err((e, _)) => Hello::Bad(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The bytes a rustls client sends first for `sni`.
    fn client_hello(sni: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn inspects_client_hellos() {
        let hello = client_hello("Allowed.Example");
        assert_eq!(inspect(&hello), Hello::Sni(Some("allowed.example".into())));
        for cut in [1, 3, 5, 40, hello.len() - 1] {
            assert_eq!(inspect(&hello[..cut]), Hello::Need, "{cut}");
        }
        // An IP-literal server name sends no SNI.
        assert_eq!(inspect(&client_hello("10.0.0.1")), Hello::Sni(None));
        assert_eq!(inspect(b"SSH-2.0-OpenSSH_9.2\r\n"), Hello::NotTls);
        assert_eq!(inspect(b""), Hello::Need);
        // A first byte of 0x16 alone does not make TLS.
        assert_eq!(inspect(&[0x16; 1024]), Hello::NotTls);
        assert_eq!(inspect(&[0x16, 3]), Hello::Need);
        // The same ClientHello split over two records is read whole.
        let body = &hello[5..];
        let mut split = Vec::new();
        for part in [&body[..50], &body[50..]] {
            split.extend_from_slice(&[0x16, 3, 1]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(inspect(&split), Hello::Sni(Some("allowed.example".into())));
        // Garbage after a handshake record type is refused, never passed on.
        assert!(matches!(
            inspect(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]),
            Hello::Bad(_)
        ));
        assert!(matches!(inspect(&[0x16, 3, 1, 0, 0]), Hello::Bad(_)));
        let mut corrupt = hello.clone();
        corrupt[5 + 4 + 34] = 0xff; // the session id's length now runs past the end
        assert!(
            matches!(inspect(&corrupt), Hello::Bad(_)),
            "{:?}",
            inspect(&corrupt)
        );
    }

    async fn tunnel_pair(
        idle: Duration,
        host: &'static str,
    ) -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<(TunnelEnd, u64, u64)>,
    ) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (proxy_side, _) = l.accept().await.unwrap();
        let upstream_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = TcpStream::connect(upstream_l.local_addr().unwrap())
            .await
            .unwrap();
        let (origin, _) = upstream_l.accept().await.unwrap();
        let h = tokio::spawn(async move { relay(proxy_side, upstream, host, idle).await });
        (client, origin, h)
    }

    #[tokio::test]
    async fn matching_sni_and_server_first_protocols_pass() {
        let (mut client, mut origin, h) = tunnel_pair(Duration::from_secs(30), "a.test").await;
        // The origin speaks first; the client answers only then.
        origin.write_all(b"220 hello\r\n").await.unwrap();
        let mut got = [0u8; 11];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"220 hello\r\n");
        client.write_all(b"QUIT\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let mut seen = Vec::new();
        origin.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, b"QUIT\r\n");
        drop(origin);
        let (end, up, down) = h.await.unwrap();
        assert!(matches!(end, TunnelEnd::Done), "{end:?}");
        assert_eq!((up, down), (6, 11));

        let (mut client, mut origin, h) = tunnel_pair(Duration::from_secs(30), "a.test").await;
        let hello = client_hello("a.test");
        client.write_all(&hello).await.unwrap();
        let mut seen = vec![0u8; hello.len()];
        origin.read_exact(&mut seen).await.unwrap();
        assert_eq!(seen, hello);
        drop((client, origin));
        assert!(matches!(h.await.unwrap().0, TunnelEnd::Done));
    }

    /// Without the SNI check, the fronted ClientHello reaches the origin and this fails.
    #[tokio::test]
    async fn mismatching_sni_never_reaches_the_origin() {
        let (mut client, mut origin, h) = tunnel_pair(Duration::from_secs(30), "a.test").await;
        client.write_all(&client_hello("evil.test")).await.unwrap();
        let (end, up, _) = h.await.unwrap();
        assert!(
            matches!(&end, TunnelEnd::Refused(why) if why.contains("evil.test")),
            "{end:?}"
        );
        assert_eq!(up, 0);
        let mut seen = Vec::new();
        origin.read_to_end(&mut seen).await.unwrap();
        assert!(seen.is_empty(), "{} bytes reached the origin", seen.len());
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
    }

    /// Without the watchdog the silent tunnel stays open and the timeout below fires.
    #[tokio::test]
    async fn idle_tunnels_are_closed() {
        let (_client, _origin, h) = tunnel_pair(Duration::from_millis(300), "a.test").await;
        let (end, _, _) = tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .expect("an idle tunnel stayed open")
            .unwrap();
        assert!(matches!(end, TunnelEnd::Idle), "{end:?}");
    }
}
