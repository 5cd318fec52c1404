//! The gateway relay: loopback TCP inside the workspace -> the server's Unix socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use berth_daemon::server::{self, DaemonOptions};
use berth_daemon::{spawn_gateway_relay, DaemonClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};

const WAIT: Duration = Duration::from_secs(10);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A Unix-socket server that echoes everything back until EOF.
fn echo_server(path: &Path) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    })
}

async fn round_trip(addr: SocketAddr, payload: Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = tcp.split();
    let write = async {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let read = r.read_to_end(&mut got);
    let (_, n) = tokio::join!(write, read);
    n.unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload);
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_round_trip_over_many_connections() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("gateway.sock");
    let _server = echo_server(&sock);
    let (addr, relay) = spawn_gateway_relay(any_port(), sock.clone()).await.unwrap();
    assert!(addr.port() != 0);

    round_trip(addr, b"hello".to_vec()).await;
    let jobs = (0..64u32).map(|i| {
        let payload: Vec<u8> = (0..200_000u32)
            .map(|j| (i.wrapping_mul(31).wrapping_add(j) % 251) as u8)
            .collect();
        tokio::spawn(round_trip(addr, payload))
    });
    let all = futures_util::future::join_all(jobs);
    for r in tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("relayed in time")
    {
        r.unwrap();
    }
    relay.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn http_request_through_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("gateway.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap()
                    .to_string();
                let body = format!("you said {line}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            });
        }
    });
    let (addr, _relay) = spawn_gateway_relay(any_port(), sock).await.unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"POST /anthropic/v1/messages HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
    assert!(
        resp.ends_with("you said POST /anthropic/v1/messages HTTP/1.1"),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_gateway_closes_the_connection_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nobody-listens.sock");
    let (addr, _relay) = spawn_gateway_relay(any_port(), sock.clone()).await.unwrap();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let _ = tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "the connection was not closed");
        assert!(buf.is_empty());
    }
    // A stale socket file that refuses connections behaves the same.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the connection was not closed");
    // Once the gateway appears, the relay works without a restart.
    std::fs::remove_file(&sock).unwrap();
    let _server = echo_server(&sock);
    round_trip(addr, b"now it works".to_vec()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_runs_the_relay_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let gw = dir.path().join("gateway.sock");
    let _server = echo_server(&gw);
    // Find a free port for the daemon's relay.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let socket = dir.path().join("daemon.sock");
    let opts = DaemonOptions {
        socket: socket.clone(),
        default_cwd: dir.path().to_path_buf(),
        gateway_listen: Some(listen),
        gateway_socket: gw,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(server::run_until(opts, async move {
        let _ = stopped.await;
    }));
    let client = DaemonClient::new(&socket);
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.hello().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    round_trip(listen, b"via the daemon".to_vec()).await;
    let _ = stop.send(());
    tokio::time::timeout(WAIT, daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The relay stopped with the daemon.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(listen).await.is_err());
    assert_eq!(berth_daemon::GATEWAY_PORT, 7788);
}
