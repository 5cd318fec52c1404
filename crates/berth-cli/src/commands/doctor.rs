//! `berth doctor`: whether the server answers and takes the token, then the server's own
//! checks; when the server cannot be reached, local checks of the container engine say why.

use std::path::{Path, PathBuf};

use berth_api::{Check, DoctorReport, WhoAmI};
use clap::Args;

use crate::client::{decode, one_line, CliError, Client, Conn, Result};
use crate::ctx::Ctx;
use crate::ConnArgs;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

fn ok(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

pub(crate) async fn run(args: DoctorArgs, ctx: &mut Ctx<'_>) -> Result<i32> {
    let conn = args.conn.resolve(ctx)?;
    let checks = checks(&conn).await?;
    let report = DoctorReport {
        ok: checks.iter().all(|c| c.ok),
        checks,
    };
    if args.json {
        let v = serde_json::to_value(&report)
            .map_err(|e| CliError::other(format!("cannot encode JSON: {e}")))?;
        ctx.print_json(&v)?;
    } else {
        ctx.print(&render(&report))?;
    }
    Ok(if report.ok { 0 } else { 1 })
}

/// Asks the server who the token is and for its own checks; when it cannot be reached, checks
/// the local container engine instead.
async fn checks(conn: &Conn) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let login_fix = format!("berth login {} --token T", conn.url);
    // Reachability needs some token to send; an empty one still gets an HTTP answer.
    let token = conn.token.clone().unwrap_or_default();
    let client = Client::with_token(&conn.url, &token, &conn.trust)?;
    match client.get::<WhoAmI>("/whoami").await {
        Ok(me) => {
            checks.push(ok(
                "server reachable",
                format!("berth {} at {}", me.server_version, conn.url),
            ));
            checks.push(ok(
                "token accepted",
                format!("{} ({}), role {}", me.token_name, me.token_id, me.role),
            ));
            match client
                .get_value("/doctor")
                .await
                .and_then(decode::<DoctorReport>)
            {
                Ok(report) => checks.extend(report.checks),
                Err(e) => checks.push(fail(
                    "server checks",
                    format!("GET /api/v1/doctor failed: {e}"),
                    "look at the server's log",
                )),
            }
        }
        Err(CliError::Unreachable { cause, .. }) => {
            checks.push(fail(
                "server reachable",
                format!("cannot reach {}: {cause}", conn.url),
                "start it: ./scripts/up (or `berth server`)",
            ));
            checks.extend(engine_checks(&EngineProbe::from_env()));
        }
        Err(CliError::Api {
            status: 401 | 403,
            message,
            ..
        }) => {
            checks.push(ok("server reachable", conn.url.clone()));
            let detail = if conn.token.is_none() {
                "no token configured".to_owned()
            } else {
                format!("token rejected: {message}")
            };
            checks.push(fail("token accepted", detail, login_fix));
        }
        Err(e) => {
            checks.push(fail(
                "server reachable",
                format!("{} answered unexpectedly: {e}", conn.url),
                format!(
                    "check that {} is a berth server (--url / BERTH_URL)",
                    conn.url
                ),
            ));
        }
    }
    Ok(checks)
}

pub(crate) fn render(report: &DoctorReport) -> String {
    let mut out = String::new();
    for c in &report.checks {
        let mark = if c.ok { '✓' } else { '✗' };
        out.push_str(&format!("{mark} {}: {}\n", c.name, one_line(&c.detail)));
        if !c.ok {
            if let Some(fix) = &c.fix {
                out.push_str(&format!("    fix: {}\n", one_line(fix)));
            }
        }
    }
    let failed = report.checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        out.push_str("all checks passed\n");
    } else {
        out.push_str(&format!(
            "{failed} of {} checks failed\n",
            report.checks.len()
        ));
    }
    out
}

/// What the local machine looks like, for explaining why the server is down.
#[derive(Debug, Clone, Default)]
pub(crate) struct EngineProbe {
    pub docker_host: Option<String>,
    /// Candidate socket paths that exist.
    pub sockets: Vec<PathBuf>,
    /// Engine CLIs found in PATH (`podman`, `docker`).
    pub clis: Vec<String>,
}

impl EngineProbe {
    pub fn from_env() -> Self {
        let docker_host = std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty());
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = docker_host
            .as_deref()
            .and_then(|h| h.strip_prefix("unix://"))
        {
            candidates.push(PathBuf::from(p));
        }
        if let Some(rt) = std::env::var_os("XDG_RUNTIME_DIR") {
            candidates.push(Path::new(&rt).join("podman/podman.sock"));
        }
        candidates.push(PathBuf::from("/run/podman/podman.sock"));
        candidates.push(PathBuf::from("/var/run/docker.sock"));
        let sockets = candidates.into_iter().filter(|p| p.exists()).collect();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let clis = ["podman", "docker"]
            .into_iter()
            .filter(|bin| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(bin))))
            .map(str::to_owned)
            .collect();
        Self {
            docker_host,
            sockets,
            clis,
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub(crate) fn engine_checks(p: &EngineProbe) -> Vec<Check> {
    let mut checks = Vec::new();
    let tcp_host = p
        .docker_host
        .as_deref()
        .filter(|h| !h.starts_with("unix://"));
    if let Some(h) = tcp_host {
        checks.push(ok("engine socket", format!("DOCKER_HOST={h}")));
    } else if p.sockets.is_empty() {
        let looked: Vec<String> = p
            .docker_host
            .iter()
            .map(|h| format!("DOCKER_HOST={h}"))
            .chain([
                "/run/podman/podman.sock".into(),
                "/var/run/docker.sock".into(),
            ])
            .collect();
        checks.push(fail(
            "engine socket",
            format!("no container engine socket found ({})", looked.join(", ")),
            "start the engine's API: `podman system service --time=0 &` (or `systemctl start podman.socket` / docker), or set DOCKER_HOST",
        ));
    } else {
        let found: Vec<String> = p.sockets.iter().map(|s| s.display().to_string()).collect();
        checks.push(ok("engine socket", found.join(", ")));
    }
    if p.clis.is_empty() {
        checks.push(fail(
            "engine installed",
            "neither podman nor docker is in PATH",
            "install podman (apt-get install podman) or Docker",
        ));
    } else {
        checks.push(ok("engine installed", p.clis.join(", ")));
    }
    checks
}
