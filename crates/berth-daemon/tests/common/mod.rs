//! The harness shared by the daemon's integration tests: the real daemon on a socket in a
//! temporary directory, driven with the real client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use berth_daemon::server::{self, DaemonOptions};
use berth_daemon::DaemonClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long the daemon may take to answer its first handshake.
const STARTUP: Duration = Duration::from_secs(10);

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub client: DaemonClient,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestDaemon {
    pub async fn start() -> TestDaemon {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut DaemonOptions)) -> TestDaemon {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run").join("daemon.sock");
        let mut opts = DaemonOptions {
            socket: socket.clone(),
            default_cwd: dir.path().to_path_buf(),
            default_shell: vec!["/bin/sh".into()],
            ..Default::default()
        };
        f(&mut opts);
        let socket = opts.socket.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run_until(opts, async move {
            let _ = stopped.await;
        }));
        let client = DaemonClient::new(&socket);
        let deadline = tokio::time::Instant::now() + STARTUP;
        while client.hello().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "daemon did not come up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        TestDaemon {
            dir,
            socket,
            client,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("daemon stops in time")
                .unwrap()
                .unwrap();
        }
    }
}
