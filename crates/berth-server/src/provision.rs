//! Provisioning a workspace from a template: the create request expanded from the template
//! ([`prepare`]), the provisioning record stored with the workspace ([`record`]), and the
//! runner that clones the repositories, writes the git identity, runs the setup steps in order
//! and starts the auto-session ([`spawn`]), each step's state and output tail in the store.
//!
//! Everything runs inside the started workspace through its daemon, as the agent user, with
//! the workspace's egress policy in force. A repository's credential is the workspace's
//! placeholder of a bound secret, sent as the git password (`Authorization: Basic`); berth's
//! egress proxy swaps the real value in for the secret's hosts only, so the token never enters
//! the workspace. The workspace is hostile: a step's output is read with a cap (the last
//! [`LOG_CAP`] bytes are kept) and the whole step with a deadline, enforced both inside
//! (`timeout`) and on the host (a daemon that never answers cannot hold the runner).
//!
//! Tasks and agent sessions are refused until every setup step is done ([`ensure_ready`]). A
//! failed step leaves the workspace `failed{provision}`; [`reprovision`] with `retry` resumes
//! at the failed step, with `upgrade` moves to the template's newest revision and re-runs only
//! the steps whose inputs changed. A server restart during provisioning fails it clearly
//! ([`recover`]): a half-run step is never assumed done.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api as api;
use berth_daemon::{ExecEvent, ExecRequest};
use berth_domain::template::{ParamError, Template};
use berth_domain::{ErrorCode, Failure, FailureKind, WorkspaceId, WorkspaceState};
use berth_store::{NewStep, Workspace};
use sha2::{Digest, Sha256};

use crate::auth::{audit, Actor};
use crate::error::{ApiError, ApiResult};
use crate::lifecycle::HOME;
use crate::state::AppState;

/// Output kept per step: the last 64 KiB.
pub const LOG_CAP: usize = 64 * 1024;
/// How often a running step's log is written to the store (what `GET …/provision` shows live).
const LOG_FLUSH: Duration = Duration::from_millis(500);
/// Extra time the host gives a step over its own timeout before abandoning it (the in-workspace
/// `timeout` kills it first; this covers a daemon that stops answering).
const HOST_GRACE: Duration = Duration::from_secs(15);
/// Timeout of a clone and of the git identity step.
const CLONE_TIMEOUT: u64 = 1800;

/// A template expanded for a create: what the workspace records.
#[derive(Debug, Clone)]
pub struct Pending {
    pub template: String,
    pub revision: i64,
    pub params: BTreeMap<String, String>,
    pub spec: Template,
}

fn param_error(tenant: &str, name: &str, e: ParamError) -> ApiError {
    match e {
        ParamError::Invalid(e) => ApiError::new(
            ErrorCode::TemplateInvalid,
            format!("template {tenant}/{name}, with these parameters: {e}"),
        ),
        other => ApiError::new(
            ErrorCode::ParamMissing,
            format!("template {tenant}/{name}: {other}"),
        ),
    }
}

/// Expands `req.template` into the create request: the template's resources, image and
/// network-independent settings where the request gives none, its secrets, egress rules and
/// egress templates added to the request's. `None` when the request names no template.
pub async fn prepare(
    state: &AppState,
    req: &mut api::CreateWorkspace,
) -> ApiResult<Option<Pending>> {
    let params = req.params.take().unwrap_or_default();
    let Some(name) = req.template.take() else {
        if !params.is_empty() {
            return Err(ApiError::invalid("params are given without a template"));
        }
        return Ok(None);
    };
    let tenant = req.tenant.clone().unwrap_or_else(|| "default".into());
    let rev = crate::templates::find(state, &tenant, &name, None).await?;
    let t = crate::templates::parse_stored(&rev)?;
    let spec = t
        .instantiate(&params)
        .map_err(|e| param_error(&tenant, &name, e))?;
    crate::templates::check(&spec).map_err(|e| {
        ApiError::new(
            ErrorCode::TemplateInvalid,
            format!("template {tenant}/{name}, with these parameters: {e}"),
        )
    })?;
    let r = &spec.resources;
    req.memory = req.memory.take().or_else(|| r.memory.clone());
    req.cpus = req.cpus.take().or_else(|| r.cpus.clone());
    req.pids = req.pids.or(r.pids);
    req.image = req.image.take().or_else(|| spec.image.base.clone());
    let mut egress = req.egress.take().unwrap_or_default();
    egress.extend(spec.egress.rules.iter().cloned());
    req.egress = Some(egress);
    let mut templates = req.egress_templates.take().unwrap_or_default();
    for t in &spec.egress.templates {
        if !templates.contains(t) {
            templates.push(t.clone());
        }
    }
    req.egress_templates = Some(templates);
    let mut secrets = req.secrets.take().unwrap_or_default();
    for s in &spec.secrets {
        // The request's own binding of a secret wins.
        if !secrets.iter().any(|u| u.name == s.name) {
            secrets.push(api::UseSecret {
                name: s.name.clone(),
                delivery: None,
                hosts: s.hosts.clone(),
                headers: s.headers.clone(),
            });
        }
    }
    // A credential must reach the workspace as a placeholder: a binding that exposes the real
    // value would put the token inside.
    for r in &spec.repos {
        if let Some(c) = &r.credential {
            if let Some(u) = secrets.iter().find(|u| &u.name == c) {
                if u.delivery.as_deref().is_some_and(|d| d != "placeholder") {
                    return Err(ApiError::invalid(format!(
                        "secret {c} is a repository credential: it is delivered as a placeholder only"
                    )));
                }
            }
        }
    }
    req.secrets = Some(secrets);
    // The template's MCP servers join the request's (the request's own server of a name wins).
    if !spec.mcp.is_empty() {
        let mut servers = req.mcp_servers.take().unwrap_or_default();
        for m in &spec.mcp {
            if !servers.iter().any(|s| s.name == m.name) {
                servers.push(api::McpServer::from_domain(m));
            }
        }
        req.mcp_servers = Some(servers);
    }
    Ok(Some(Pending {
        template: rev.name,
        revision: rev.revision,
        params,
        spec,
    }))
}

/// One step of the plan, with what it runs.
struct PlannedStep {
    kind: &'static str,
    name: String,
    hash: String,
}

fn hash_of(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The steps of a spec in order, each with the hash of its inputs.
fn plan(spec: &Template) -> Vec<PlannedStep> {
    let mut out = Vec::new();
    if spec.git.name.is_some() || spec.git.email.is_some() {
        out.push(PlannedStep {
            kind: "git",
            name: "git identity".into(),
            hash: hash_of(&["git", &json(&spec.git)]),
        });
    }
    for r in &spec.repos {
        out.push(PlannedStep {
            kind: "clone",
            name: format!("clone {}", r.dir),
            hash: hash_of(&["clone", &json(r)]),
        });
    }
    let env = json(&spec.env);
    for s in &spec.setup {
        out.push(PlannedStep {
            kind: "setup",
            name: s.name.clone(),
            hash: hash_of(&["setup", &json(s), &env]),
        });
    }
    if spec.auto_session {
        if let Some(a) = spec.agent {
            out.push(PlannedStep {
                kind: "session",
                name: format!("start {}", a.as_str()),
                hash: hash_of(&["session", a.as_str()]),
            });
        }
    }
    out
}

/// Stores the provisioning of a just-inserted workspace row (called inside the create, so the
/// workspace is never visible as running without it).
pub async fn record(state: &AppState, ws: &WorkspaceId, p: &Pending) -> ApiResult<()> {
    let steps: Vec<NewStep> = plan(&p.spec)
        .into_iter()
        .map(|s| NewStep {
            kind: s.kind.into(),
            name: s.name,
            input_hash: s.hash,
            state: "pending".into(),
        })
        .collect();
    state
        .store
        .put_provision(
            ws,
            &p.template,
            p.revision,
            &json(&p.params),
            &json(&p.spec),
            &steps,
        )
        .await?;
    Ok(())
}

/// The template's environment, for the container (`K=V`); empty for a workspace not made from
/// a template.
pub async fn template_env(state: &AppState, ws: &WorkspaceId) -> ApiResult<Vec<String>> {
    let Some(p) = state.store.provision(ws).await? else {
        return Ok(Vec::new());
    };
    let spec: Template = serde_json::from_str(&p.spec).map_err(ApiError::internal)?;
    Ok(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// Refuses tasks and agent sessions until the workspace's setup has finished (409
/// `provisioning`). The auto-started session itself comes after every setup step.
pub async fn ensure_ready(state: &AppState, w: &Workspace) -> ApiResult<()> {
    let Some(p) = state.store.provision(&w.id).await? else {
        return Ok(());
    };
    let pending = p
        .steps
        .iter()
        .find(|s| s.kind != "session" && !matches!(s.state.as_str(), "done" | "skipped"));
    let Some(step) = pending else {
        return Ok(());
    };
    let ws = w.qualified_name();
    let n = p.steps.len();
    let message = if p.state == "failed" {
        format!(
            "workspace {ws}: provisioning from template {} failed at step {} of {n} ({}): fix it and run `berth workspace provision {ws} --retry`",
            p.template,
            step.position + 1,
            step.name
        )
    } else {
        format!(
            "workspace {ws} is being provisioned from template {} (step {} of {n}: {}): agents and tasks start once setup has finished; follow it with `berth workspace provision {ws}`",
            p.template,
            step.position + 1,
            step.name
        )
    };
    Err(ApiError::new(ErrorCode::Provisioning, message))
}

/// The API view of a workspace's provisioning.
pub async fn status(state: &AppState, ws: &str) -> ApiResult<api::ProvisionStatus> {
    let w = crate::lifecycle::resolve(state, ws).await?;
    let p = state.store.provision(&w.id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "workspace {} was not made from a template",
            w.qualified_name()
        ))
    })?;
    let latest = state
        .store
        .template(w.tenant.as_str(), &p.template, None)
        .await?
        .map(|r| r.revision);
    let session = p
        .steps
        .iter()
        .find(|s| s.kind == "session" && s.state == "done")
        .and_then(|s| s.message.clone());
    Ok(api::ProvisionStatus {
        workspace: w.qualified_name(),
        template: p.template,
        revision: p.revision,
        latest_revision: latest,
        params: serde_json::from_str(&p.params).unwrap_or_default(),
        state: p.state,
        message: p.message,
        steps: p
            .steps
            .into_iter()
            .map(|s| api::ProvisionStep {
                index: s.position,
                kind: s.kind,
                name: s.name,
                state: s.state,
                exit_code: s.exit_code,
                message: s.message,
                log: s.log,
                started_at: s.started_at,
                finished_at: s.finished_at,
            })
            .collect(),
        session,
        updated_at: p.updated_at,
    })
}

/// Workspaces with a runner going (one runner per workspace).
static RUNNING: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn claim(ws: &WorkspaceId) -> bool {
    let mut g = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashSet::new)
        .insert(ws.as_str().to_owned())
}

fn release(ws: &WorkspaceId) {
    let mut g = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = g.as_mut() {
        s.remove(ws.as_str());
    }
}

/// Runs the workspace's pending steps in the background, on behalf of `actor` (the auto-session
/// is started as theirs).
pub fn spawn(state: Arc<AppState>, ws: WorkspaceId, actor: Actor) {
    if !claim(&ws) {
        return;
    }
    tokio::spawn(async move {
        if let Err(e) = run(&state, &ws, &actor).await {
            tracing::warn!(workspace = %ws, error = %e, "provisioning stopped");
            let _ = state
                .store
                .set_provision_state(&ws, "failed", Some(&e.message))
                .await;
            let _ = fail_workspace(&state, &ws, &e.message).await;
        }
        release(&ws);
    });
}

async fn fail_workspace(state: &AppState, ws: &WorkspaceId, message: &str) -> ApiResult<()> {
    let w = state.store.workspace(ws).await?;
    if w.state.apply(berth_domain::Transition::Fail).is_ok() {
        let f = Failure::new(FailureKind::Provision, message);
        state
            .store
            .set_state(ws, WorkspaceState::Failed, Some(&f))
            .await?;
    }
    Ok(())
}

async fn run(state: &Arc<AppState>, ws: &WorkspaceId, actor: &Actor) -> ApiResult<()> {
    let Some(p) = state.store.provision(ws).await? else {
        return Ok(());
    };
    let spec: Template = serde_json::from_str(&p.spec).map_err(ApiError::internal)?;
    state.store.set_provision_state(ws, "running", None).await?;
    let w = state.store.workspace(ws).await?;
    let uses = state.store.secret_uses(Some(ws)).await?;
    let placeholder = |name: &str| {
        uses.iter()
            .find(|u| u.name == name)
            .map(|u| u.placeholder.clone())
    };
    let planned = plan(&spec);
    for step in &p.steps {
        if matches!(step.state.as_str(), "done" | "skipped") {
            continue;
        }
        let pos = step.position;
        state.store.start_step(ws, pos).await?;
        let what = planned.get(pos as usize).map(|s| s.kind).unwrap_or("");
        let outcome = match what {
            "git" => {
                let mut env = Vec::new();
                let mut script = String::from("set -e\n");
                if let Some(n) = &spec.git.name {
                    env.push(("BERTH_GIT_NAME".into(), n.clone()));
                    script.push_str("git config --global user.name \"$BERTH_GIT_NAME\"\n");
                }
                if let Some(e) = &spec.git.email {
                    env.push(("BERTH_GIT_EMAIL".into(), e.clone()));
                    script.push_str("git config --global user.email \"$BERTH_GIT_EMAIL\"\n");
                }
                run_script(state, ws, pos, &script, env, None, CLONE_TIMEOUT).await
            }
            "clone" => {
                let idx = spec
                    .repos
                    .iter()
                    .position(|r| format!("clone {}", r.dir) == step.name);
                match idx.map(|i| &spec.repos[i]) {
                    Some(r) => {
                        let mut env = vec![
                            ("BERTH_URL".to_owned(), r.url.clone()),
                            ("BERTH_DIR".to_owned(), format!("{HOME}/{}", r.dir)),
                            ("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned()),
                        ];
                        let mut args = String::new();
                        if let Some(b) = &r.branch {
                            env.push(("BERTH_BRANCH".into(), b.clone()));
                            args.push_str(" --branch \"$BERTH_BRANCH\"");
                        }
                        let mut auth = String::new();
                        if let Some(c) = &r.credential {
                            let Some(ph) = placeholder(c) else {
                                return Err(ApiError::internal(format!(
                                    "secret {c} is not bound to the workspace"
                                )));
                            };
                            use base64::Engine as _;
                            let basic = base64::engine::general_purpose::STANDARD
                                .encode(format!("x-access-token:{ph}"));
                            env.push((
                                "BERTH_AUTH".into(),
                                format!("Authorization: Basic {basic}"),
                            ));
                            auth.push_str(" -c http.extraHeader=\"$BERTH_AUTH\"");
                        }
                        // A retry finds a finished clone and keeps it.
                        let mut script = format!(
                            "set -e\nif [ -d \"$BERTH_DIR/.git\" ]; then echo \"$BERTH_DIR is cloned already\"; exit 0; fi\n\
                             mkdir -p \"$(dirname \"$BERTH_DIR\")\"\n\
                             git{auth} clone --progress{args} -- \"$BERTH_URL\" \"$BERTH_DIR\"\n"
                        );
                        if !auth.is_empty() {
                            // Later fetches and pushes send the same placeholder.
                            script.push_str(
                                "git -C \"$BERTH_DIR\" config http.extraHeader \"$BERTH_AUTH\"\n",
                            );
                        }
                        run_script(state, ws, pos, &script, env, None, CLONE_TIMEOUT).await
                    }
                    None => Err(ApiError::internal(format!(
                        "step {} has no repository in the spec",
                        step.name
                    ))),
                }
            }
            "setup" => match spec.setup.iter().find(|s| s.name == step.name) {
                Some(s) => {
                    let cwd = s.dir.as_ref().map(|d| format!("{HOME}/{d}"));
                    run_script(state, ws, pos, &s.run, Vec::new(), cwd, s.timeout).await
                }
                None => Err(ApiError::internal(format!(
                    "step {} is not in the spec",
                    step.name
                ))),
            },
            "session" => start_session(state, &w, &spec, actor).await,
            other => Err(ApiError::internal(format!("unknown step kind {other:?}"))),
        };
        match outcome {
            Ok(Outcome {
                ok: true,
                log,
                exit_code,
                message,
            }) => {
                state
                    .store
                    .finish_step(ws, pos, "done", &log, exit_code, message.as_deref())
                    .await?;
            }
            Ok(Outcome {
                log,
                exit_code,
                message,
                ..
            }) => {
                let why = message.unwrap_or_else(|| "failed".into());
                state
                    .store
                    .finish_step(ws, pos, "failed", &log, exit_code, Some(&why))
                    .await?;
                let msg = format!(
                    "provisioning step {} ({}) {why}; its log: `berth workspace provision {}`; resume with --retry",
                    pos + 1,
                    step.name,
                    w.qualified_name()
                );
                state
                    .store
                    .set_provision_state(ws, "failed", Some(&msg))
                    .await?;
                fail_workspace(state, ws, &msg).await?;
                return Ok(());
            }
            Err(e) => {
                state
                    .store
                    .finish_step(ws, pos, "failed", "", None, Some(&e.message))
                    .await?;
                return Err(ApiError::new(
                    e.code,
                    format!(
                        "provisioning step {} ({}) failed: {}; resume with `berth workspace provision {} --retry`",
                        pos + 1,
                        step.name,
                        e.message,
                        w.qualified_name()
                    ),
                ));
            }
        }
    }
    state.store.set_provision_state(ws, "done", None).await?;
    Ok(())
}

/// How a step ended.
struct Outcome {
    ok: bool,
    log: String,
    exit_code: Option<i64>,
    message: Option<String>,
}

/// Keeps the last [`LOG_CAP`] bytes of a stream.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    dropped: bool,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > LOG_CAP {
            let cut = self.buf.len() - LOG_CAP;
            self.buf.drain(..cut);
            self.dropped = true;
        }
    }

    fn text(&self) -> String {
        let body = String::from_utf8_lossy(&self.buf);
        if self.dropped {
            format!("[… earlier output dropped]\n{body}")
        } else {
            body.into_owned()
        }
    }
}

/// Runs `script` with `sh -c` as the agent user inside the workspace, with a deadline inside
/// (`timeout`) and outside (the host stops reading), keeping the output's tail.
async fn run_script(
    state: &AppState,
    ws: &WorkspaceId,
    pos: i64,
    script: &str,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    timeout_secs: u64,
) -> ApiResult<Outcome> {
    let client = state.daemon(ws);
    let req = ExecRequest {
        argv: vec![
            "timeout".into(),
            "--kill-after=5".into(),
            timeout_secs.to_string(),
            "sh".into(),
            "-c".into(),
            script.to_owned(),
        ],
        env,
        cwd: Some(cwd.unwrap_or_else(|| HOME.to_owned())),
        stdin: false,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_secs) + HOST_GRACE;
    let mut tail = Tail::default();
    let mut stream = match tokio::time::timeout_at(deadline, client.exec(req)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Ok(Outcome {
                ok: false,
                log: String::new(),
                exit_code: None,
                message: Some(format!("could not start: {e}")),
            })
        }
        Err(_) => {
            return Ok(Outcome {
                ok: false,
                log: String::new(),
                exit_code: None,
                message: Some("could not start: the workspace daemon did not answer".into()),
            })
        }
    };
    let mut last_flush = tokio::time::Instant::now();
    loop {
        let ev = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Ok(ev)) => ev,
            Ok(Err(e)) => {
                return Ok(Outcome {
                    ok: false,
                    log: tail.text(),
                    exit_code: None,
                    message: Some(format!("lost the workspace daemon: {e}")),
                })
            }
            Err(_) => {
                return Ok(Outcome {
                    ok: false,
                    log: tail.text(),
                    exit_code: None,
                    message: Some(format!("timed out after {timeout_secs}s")),
                })
            }
        };
        match ev {
            Some(ExecEvent::Stdout(d)) | Some(ExecEvent::Stderr(d)) => {
                tail.push(&d);
                if last_flush.elapsed() >= LOG_FLUSH {
                    last_flush = tokio::time::Instant::now();
                    state.store.set_step_log(ws, pos, &tail.text()).await?;
                }
            }
            Some(ExecEvent::Exit(code)) => {
                let code = i64::from(code);
                // `timeout` exits 124 when it stopped the step (137 after its kill).
                let message = match code {
                    0 => None,
                    124 | 137 => Some(format!("timed out after {timeout_secs}s")),
                    c => Some(format!("failed with exit code {c}")),
                };
                return Ok(Outcome {
                    ok: code == 0,
                    log: tail.text(),
                    exit_code: Some(code),
                    message,
                });
            }
            None => {
                return Ok(Outcome {
                    ok: false,
                    log: tail.text(),
                    exit_code: None,
                    message: Some("the workspace daemon closed the step before it ended".into()),
                })
            }
        }
    }
}

/// The auto-session: the template's agent, interactive, in the first repository's directory.
async fn start_session(
    state: &Arc<AppState>,
    w: &Workspace,
    spec: &Template,
    actor: &Actor,
) -> ApiResult<Outcome> {
    let Some(agent) = spec.agent else {
        return Err(ApiError::internal("auto_session without an agent"));
    };
    let cwd = spec
        .repos
        .first()
        .map(|r| format!("{HOME}/{}", r.dir))
        .unwrap_or_else(|| HOME.to_owned());
    let req = api::CreateSession {
        agent: Some(agent.as_str().to_owned()),
        cwd: Some(cwd.clone()),
        ..Default::default()
    };
    match crate::agent_sessions::create(state, actor, &w.id.to_string(), req).await {
        Ok(s) => Ok(Outcome {
            ok: true,
            log: format!("started {} in {cwd}: session {}\n", agent.as_str(), s.name),
            exit_code: None,
            message: Some(s.name),
        }),
        Err(e) => Ok(Outcome {
            ok: false,
            log: String::new(),
            exit_code: None,
            message: Some(format!("could not start the session: {}", e.message)),
        }),
    }
}

/// `POST /workspaces/{ws}/provision`: resume a failed provisioning (`retry`) or move to the
/// template's newest revision (`upgrade`), on behalf of `actor` (audited as
/// `workspace.provision`).
pub async fn reprovision(
    state: &Arc<AppState>,
    actor: &Actor,
    ws: &str,
    req: ApiResult<api::Reprovision>,
) -> ApiResult<api::ProvisionStatus> {
    let result = reprovision_unaudited(state, actor, ws, req).await;
    let target = match crate::lifecycle::resolve(state, ws).await {
        Ok(w) => w.qualified_name(),
        Err(_) => ws.to_owned(),
    };
    audit(&state.store, actor, "workspace.provision", &target, &result).await;
    result
}

async fn reprovision_unaudited(
    state: &Arc<AppState>,
    actor: &Actor,
    ws: &str,
    req: ApiResult<api::Reprovision>,
) -> ApiResult<api::ProvisionStatus> {
    let req = req?;
    if req.retry == req.upgrade {
        return Err(ApiError::invalid("give exactly one of retry and upgrade"));
    }
    let w = crate::lifecycle::resolve(state, ws).await?;
    let lock = state.lock_for(&w.id);
    let _guard = lock.lock().await;
    let w = state.store.workspace(&w.id).await?;
    let p = state.store.provision(&w.id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "workspace {} was not made from a template",
            w.qualified_name()
        ))
    })?;
    if matches!(p.state.as_str(), "running" | "pending") && !req.upgrade {
        return Err(ApiError::new(
            ErrorCode::Provisioning,
            format!("workspace {} is being provisioned", w.qualified_name()),
        ));
    }
    if matches!(p.state.as_str(), "running" | "pending") {
        return Err(ApiError::new(
            ErrorCode::Provisioning,
            format!(
                "workspace {} is being provisioned: upgrade once it is done",
                w.qualified_name()
            ),
        ));
    }
    // The steps run in the container: it must be up (a failed provisioning leaves it running).
    let up = state.daemon(&w.id).hello().await.is_ok();
    if !up || !matches!(w.state, WorkspaceState::Running | WorkspaceState::Failed) {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "workspace {} is {} and its daemon does not answer: start it with `berth workspace start {}` first",
                w.qualified_name(),
                w.state,
                w.qualified_name()
            ),
        ));
    }
    if req.retry {
        if p.state != "failed" {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!(
                    "workspace {}'s provisioning did not fail (it is {}): nothing to retry",
                    w.qualified_name(),
                    p.state
                ),
            ));
        }
    } else {
        let rev = crate::templates::find(state, w.tenant.as_str(), &p.template, None).await?;
        let t = crate::templates::parse_stored(&rev)?;
        let params: BTreeMap<String, String> =
            serde_json::from_str(&p.params).map_err(ApiError::internal)?;
        let spec = t
            .instantiate(&params)
            .map_err(|e| param_error(w.tenant.as_str(), &p.template, e))?;
        // A step whose inputs did not change and that ran already stays done.
        let steps: Vec<NewStep> = plan(&spec)
            .into_iter()
            .map(|s| {
                let done = p.steps.iter().any(|o| {
                    o.kind == s.kind
                        && o.name == s.name
                        && o.input_hash == s.hash
                        && o.state == "done"
                });
                NewStep {
                    kind: s.kind.into(),
                    name: s.name,
                    input_hash: s.hash,
                    state: if done { "done" } else { "pending" }.into(),
                }
            })
            .collect();
        state
            .store
            .put_provision(
                &w.id,
                &p.template,
                rev.revision,
                &p.params,
                &json(&spec),
                &steps,
            )
            .await?;
    }
    state
        .store
        .set_provision_state(&w.id, "pending", None)
        .await?;
    if w.state == WorkspaceState::Failed {
        state
            .store
            .set_state(&w.id, WorkspaceState::Running, None)
            .await?;
    }
    drop(_guard);
    // The status before the runner starts: what is `done` in it is kept, the rest will run.
    let before = status(state, &w.id.to_string()).await;
    spawn(state.clone(), w.id.clone(), actor.clone());
    before
}

/// At start-up: a provisioning the server was running when it stopped is failed clearly (the
/// step may have half-run), never left hanging; `--retry` resumes it.
pub async fn recover(state: &AppState) {
    let mut ids = Vec::new();
    for s in ["running", "pending"] {
        match state.store.provisions_in_state(s).await {
            Ok(v) => ids.extend(v),
            Err(e) => tracing::error!(error = %e, "could not list provisionings"),
        }
    }
    for id in ids {
        let result = async {
            let Some(p) = state.store.provision(&id).await? else {
                return Ok::<_, ApiError>(());
            };
            let step = p
                .steps
                .iter()
                .find(|s| !matches!(s.state.as_str(), "done" | "skipped"));
            if let Some(s) = step {
                state
                    .store
                    .finish_step(
                        &id,
                        s.position,
                        "failed",
                        &s.log,
                        None,
                        Some("interrupted: the berth server restarted"),
                    )
                    .await?;
            }
            let w = state.store.workspace(&id).await?;
            let msg = format!(
                "provisioning was interrupted by a server restart{}; resume with `berth workspace provision {} --retry`",
                step.map(|s| format!(" at step {} ({})", s.position + 1, s.name))
                    .unwrap_or_default(),
                w.qualified_name()
            );
            state
                .store
                .set_provision_state(&id, "failed", Some(&msg))
                .await?;
            fail_workspace(state, &id, &msg).await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(workspace = %id, error = %e, "could not settle an interrupted provisioning");
        }
    }
}
