//! The one `berth` binary: the CLI, `berth server`, and `berth workspace-daemon`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Isolated, persistent workspaces for coding agents",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Run the berth server (API, workspace lifecycle, reconciler).
    Server(Box<berth_server::ServerArgs>),
    /// Run inside a workspace: owns its terminal sessions and processes (started by berth).
    #[command(hide = true)]
    WorkspaceDaemon(DaemonArgs),
    /// Print the REST API's OpenAPI document (JSON) without a running server.
    #[command(hide = true)]
    Openapi,
    #[command(flatten)]
    Client(berth_cli::Command),
}

#[derive(clap::Args)]
struct DaemonArgs {
    /// Unix socket to serve the daemon protocol on.
    #[arg(long, default_value = berth_daemon::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Scrollback kept per session, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    scrollback_bytes: usize,
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Top::Server(args) => {
                init_tracing("info,tower_http=warn,sqlx=warn,bollard=warn");
                match berth_server::run(*args).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        1
                    }
                }
            }
            Top::WorkspaceDaemon(args) => {
                init_tracing("info");
                let opts = berth_daemon::server::DaemonOptions {
                    socket: args.socket,
                    scrollback_bytes: args.scrollback_bytes,
                    // Agents reach berth's LLM gateway on this loopback port, relayed to the
                    // server over the channel directory: no network needed.
                    gateway_listen: Some(std::net::SocketAddr::from((
                        [127, 0, 0, 1],
                        berth_daemon::GATEWAY_PORT,
                    ))),
                    // Every other way out goes through berth's egress proxy on this port.
                    egress_listen: Some(std::net::SocketAddr::from((
                        [127, 0, 0, 1],
                        berth_daemon::EGRESS_PORT,
                    ))),
                    // In the persistent home: sessions that die with the workspace are listed
                    // as ended after it restarts.
                    session_journal: std::env::var_os("HOME")
                        .map(|h| std::path::PathBuf::from(h).join(".berth/sessions.json")),
                    ..Default::default()
                };
                match berth_daemon::server::run(opts).await {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        1
                    }
                }
            }
            Top::Openapi => match berth_server::openapi_json() {
                Ok(doc) => {
                    println!("{doc}");
                    0
                }
                Err(e) => {
                    eprintln!("error: cannot serialize the OpenAPI document: {e}");
                    1
                }
            },
            Top::Client(cmd) => berth_cli::run(cmd).await,
        }
    });
    // Dropping the runtime would wait for blocking reads of stdin (attach, exec); exit now.
    runtime.shutdown_background();
    std::process::exit(code);
}
