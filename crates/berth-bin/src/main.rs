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
    /// Inside a workspace: ask for access (egress to a host, a secret for a host) with a reason;
    /// the request waits in berth's inbox for an owner (e.g. `berth request egress
    /// pypi.org --reason "install requests"`)
    Request {
        #[command(subcommand)]
        what: RequestWhat,
        /// The server's access-request socket (as the workspace sees it)
        #[arg(long, default_value = berth_daemon::access::DEFAULT_ACCESS_SOCKET, hide = true)]
        socket: PathBuf,
    },
    #[command(flatten)]
    Client(berth_cli::Command),
}

#[derive(Subcommand)]
enum RequestWhat {
    /// Egress to HOST[:PORT] (default port 443)
    Egress {
        #[arg(value_name = "HOST[:PORT]")]
        target: String,
        /// Why the agent needs it (shown to whoever decides)
        #[arg(long)]
        reason: Option<String>,
        /// The berth task this is for (tk_…; default: $BERTH_TASK_ID, which a task's agent has)
        #[arg(long, env = "BERTH_TASK_ID")]
        task: Option<String>,
    },
    /// The tenant's secret NAME, bound to a host (the workspace gets a placeholder)
    Secret {
        name: String,
        #[arg(long)]
        host: String,
        /// Why the agent needs it (shown to whoever decides)
        #[arg(long)]
        reason: Option<String>,
        /// The berth task this is for (tk_…; default: $BERTH_TASK_ID, which a task's agent has)
        #[arg(long, env = "BERTH_TASK_ID")]
        task: Option<String>,
    },
}

/// `HOST`, `HOST:PORT`, `[V6]:PORT`.
fn split_target(t: &str) -> Result<(String, Option<u16>), String> {
    let bad = || format!("{t:?} is not HOST[:PORT]");
    if let Some(rest) = t.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        return match after.strip_prefix(':') {
            None if after.is_empty() => Ok((host.to_owned(), None)),
            Some(p) => Ok((host.to_owned(), Some(p.parse().map_err(|_| bad())?))),
            None => Err(bad()),
        };
    }
    match t.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h.to_owned(), Some(p.parse().map_err(|_| bad())?))),
        _ => Ok((t.to_owned(), None)),
    }
}

fn request(what: RequestWhat, socket: &std::path::Path) -> i32 {
    use berth_daemon::access::AccessAsk;
    let ask = match what {
        RequestWhat::Egress {
            target,
            reason,
            task,
        } => match split_target(&target) {
            Ok((host, port)) => AccessAsk::Egress {
                host,
                port,
                reason,
                task,
            },
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        },
        RequestWhat::Secret {
            name,
            host,
            reason,
            task,
        } => AccessAsk::Secret {
            name,
            host,
            reason,
            task,
        },
    };
    match berth_daemon::access::send(socket, &ask) {
        Ok(a) if a.ok => {
            let id = a.id.unwrap_or_default();
            if a.recorded.as_deref() == Some("repeated") {
                println!("access request {id} is already waiting for a decision (counted again)");
            } else {
                println!("access request {id} is waiting for a decision by the workspace's owners");
            }
            0
        }
        Ok(a) => {
            eprintln!(
                "error: {}",
                a.error.unwrap_or_else(|| "the request was refused".into())
            );
            1
        }
        Err(e) => {
            eprintln!(
                "error: cannot reach berth at {} ({e}): run this inside a berth workspace",
                socket.display()
            );
            1
        }
    }
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
            Top::Request { what, socket } => request(what, &socket),
            Top::Client(cmd) => berth_cli::run(cmd).await,
        }
    });
    // Dropping the runtime would wait for blocking reads of stdin (attach, exec); exit now.
    runtime.shutdown_background();
    std::process::exit(code);
}
