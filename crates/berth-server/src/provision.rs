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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_api as api;
use berth_daemon::{ExecEvent, ExecRequest};
use berth_domain::template::{ParamError, Template};
use berth_domain::{ErrorCode, Failure, FailureKind, SecretDelivery, WorkspaceId, WorkspaceState};
use berth_store::{NewStep, ProvisionStep, SecretUse, Workspace};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

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
    let mut spec = t
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
    // The template's approval policy is the workspace's default unless the request gives one.
    req.approval = req
        .approval
        .take()
        .or_else(|| spec.approval.map(|p| p.as_str().to_owned()));
    pin_image(state, req, &mut spec).await?;
    add_egress(req, &spec);
    add_secrets(req, &spec)?;
    add_mcp_servers(req, &spec);
    Ok(Some(Pending {
        template: rev.name,
        revision: rev.revision,
        params,
        spec,
    }))
}

/// Pins the base image in the recorded spec (a retry builds on the same one, and an upgrade
/// sees whether a new revision changes it) and picks the image the workspace starts on: a
/// derived image built before is used at once; otherwise the workspace starts on the base and
/// the `image` step builds it and moves the workspace onto it.
async fn pin_image(
    state: &AppState,
    req: &mut api::CreateWorkspace,
    spec: &mut Template,
) -> ApiResult<()> {
    let base = req
        .image
        .take()
        .or_else(|| spec.image.base.clone())
        .unwrap_or_else(|| state.default_image());
    spec.image.base = Some(base.clone());
    req.image = Some(base.clone());
    if !spec.image.has_extras() {
        return Ok(());
    }
    if !crate::openapi::is_image_reference(&base) {
        return Err(ApiError::invalid(format!(
            "image {base:?} is not an image reference ([registry/]name[:tag][@sha256:digest])"
        )));
    }
    crate::lifecycle::ensure_image(state, &base).await?;
    let derived = crate::images::derived(state, &base, &spec.image).await?;
    if state.host.runtime.image_exists(&derived.tag()).await? {
        req.image = Some(derived.tag());
    }
    Ok(())
}

/// The template's egress rules and egress templates join the request's.
fn add_egress(req: &mut api::CreateWorkspace, spec: &Template) {
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
}

/// The template's secrets join the request's (the request's own binding of a secret wins); a
/// repository credential must reach the workspace as a placeholder: a binding that exposes the
/// real value would put the token inside.
fn add_secrets(req: &mut api::CreateWorkspace, spec: &Template) -> ApiResult<()> {
    let mut secrets = req.secrets.take().unwrap_or_default();
    for s in &spec.secrets {
        if !secrets.iter().any(|u| u.name == s.name) {
            secrets.push(api::UseSecret {
                name: s.name.clone(),
                delivery: None,
                hosts: s.hosts.clone(),
                headers: s.headers.clone(),
            });
        }
    }
    for c in spec.repos.iter().filter_map(|r| r.credential.as_ref()) {
        if let Some(u) = secrets.iter().find(|u| &u.name == c) {
            let placeholder =
                |d: &str| SecretDelivery::parse(d) == Some(SecretDelivery::Placeholder);
            if u.delivery.as_deref().is_some_and(|d| !placeholder(d)) {
                return Err(ApiError::invalid(format!(
                    "secret {c} is a repository credential: it is delivered as a placeholder only"
                )));
            }
        }
    }
    req.secrets = Some(secrets);
    Ok(())
}

/// The template's MCP servers join the request's (the request's own server of a name wins).
fn add_mcp_servers(req: &mut api::CreateWorkspace, spec: &Template) {
    if spec.mcp.is_empty() {
        return;
    }
    let mut servers = req.mcp_servers.take().unwrap_or_default();
    for m in &spec.mcp {
        if !servers.iter().any(|s| s.name == m.name) {
            servers.push(api::McpServer::from_domain(m));
        }
    }
    req.mcp_servers = Some(servers);
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
    if spec.image.has_extras() {
        out.push(PlannedStep {
            kind: "image",
            name: "image".into(),
            hash: hash_of(&["image", &json(&spec.image)]),
        });
    }
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
    changed(ws);
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

/// A change counter per workspace, bumped whenever provisioning stores progress, so
/// `GET …/provision/stream` sends the new status at once. It starts at the time the server
/// started (in milliseconds), so the ids a stream sends keep growing across server restarts.
static CHANGES: Mutex<Option<HashMap<String, Arc<watch::Sender<u64>>>>> = Mutex::new(None);

fn changes_of(ws: &WorkspaceId) -> Arc<watch::Sender<u64>> {
    static EPOCH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *EPOCH.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64)
    });
    let mut g = CHANGES.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashMap::new)
        .entry(ws.as_str().to_owned())
        .or_insert_with(|| Arc::new(watch::channel(start).0))
        .clone()
}

/// Tells the workspace's provisioning streams that something changed.
fn changed(ws: &WorkspaceId) {
    changes_of(ws).send_modify(|n| *n += 1);
}

/// The workspace `raw` names (it must have been made from a template) and a receiver of its
/// provisioning changes (subscribed before anything is read).
pub async fn subscribe(
    state: &AppState,
    raw: &str,
) -> ApiResult<(WorkspaceId, watch::Receiver<u64>)> {
    let w = crate::lifecycle::resolve(state, raw).await?;
    provision_of(state, &w).await?;
    Ok((w.id.clone(), changes_of(&w.id).subscribe()))
}

/// Where a stream resumes: after `after`, unless that id is newer than any this server sent
/// (from another server's counter): then from the start.
pub fn resume_from(ws: &WorkspaceId, after: u64) -> u64 {
    if after > *changes_of(ws).borrow() {
        0
    } else {
        after
    }
}

/// What a stream reading after an id gets.
pub enum StreamRead {
    /// The current status, newer than that id, with its id.
    Status(u64, Box<api::ProvisionStatus>),
    /// Nothing newer yet.
    Wait,
    /// Nothing newer, and the provisioning is over.
    End,
}

/// What a stream sends after `after`: the current status when it is newer, the end once the
/// status after `after` was final.
pub async fn read_stream(state: &AppState, ws: &WorkspaceId, after: u64) -> ApiResult<StreamRead> {
    let number = *changes_of(ws).borrow();
    let status = status(state, &ws.to_string()).await?;
    if number > after {
        return Ok(StreamRead::Status(number, Box::new(status)));
    }
    Ok(if matches!(status.state.as_str(), "done" | "failed") {
        StreamRead::End
    } else {
        StreamRead::Wait
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
            changed(&ws);
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
    changed(ws);
    let w = state.store.workspace(ws).await?;
    let uses = state.store.secret_uses(Some(ws)).await?;
    let pending = p
        .steps
        .iter()
        .filter(|s| !matches!(s.state.as_str(), "done" | "skipped"));
    for step in pending {
        state.store.start_step(ws, step.position).await?;
        changed(ws);
        let outcome = match step.kind.as_str() {
            "git" => git_step(state, ws, step.position, &spec).await,
            "clone" => clone_step(state, ws, step, &spec, &uses).await,
            "setup" => setup_step(state, ws, step, &spec).await,
            "image" => image_step(state, ws, step.position, &spec).await,
            "container" => container_step(state, ws, &spec).await,
            "session" => start_session(state, &w, &spec, actor).await,
            other => Err(ApiError::internal(format!("unknown step kind {other:?}"))),
        };
        if finish_step(state, &w, step, outcome).await?.is_break() {
            return Ok(());
        }
    }
    state.store.set_provision_state(ws, "done", None).await?;
    changed(ws);
    Ok(())
}

/// Records how a step ended. A step that ran and failed fails the provisioning and the
/// workspace (`Break`); a step that could not run is an error the caller reports.
async fn finish_step(
    state: &AppState,
    w: &Workspace,
    step: &ProvisionStep,
    outcome: ApiResult<Outcome>,
) -> ApiResult<ControlFlow<()>> {
    let (ws, pos) = (&w.id, step.position);
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
            changed(ws);
            Ok(ControlFlow::Continue(()))
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
            changed(ws);
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
            changed(ws);
            fail_workspace(state, ws, &msg).await?;
            Ok(ControlFlow::Break(()))
        }
        Err(e) => {
            state
                .store
                .finish_step(ws, pos, "failed", "", None, Some(&e.message))
                .await?;
            changed(ws);
            Err(ApiError::new(
                e.code,
                format!(
                    "provisioning step {} ({}) failed: {}; resume with `berth workspace provision {} --retry`",
                    pos + 1,
                    step.name,
                    e.message,
                    w.qualified_name()
                ),
            ))
        }
    }
}

/// Sets the git identity the template names.
async fn git_step(
    state: &AppState,
    ws: &WorkspaceId,
    pos: i64,
    spec: &Template,
) -> ApiResult<Outcome> {
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

/// Clones one of the template's repositories, authenticated with its credential's placeholder
/// (the egress proxy swaps in the secret).
async fn clone_step(
    state: &AppState,
    ws: &WorkspaceId,
    step: &ProvisionStep,
    spec: &Template,
    uses: &[SecretUse],
) -> ApiResult<Outcome> {
    let Some(r) = spec
        .repos
        .iter()
        .find(|r| format!("clone {}", r.dir) == step.name)
    else {
        return Err(ApiError::internal(format!(
            "step {} has no repository in the spec",
            step.name
        )));
    };
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
        let Some(u) = uses.iter().find(|u| &u.name == c) else {
            return Err(ApiError::internal(format!(
                "secret {c} is not bound to the workspace"
            )));
        };
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", u.placeholder));
        env.push(("BERTH_AUTH".into(), format!("Authorization: Basic {basic}")));
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
        script.push_str("git -C \"$BERTH_DIR\" config http.extraHeader \"$BERTH_AUTH\"\n");
    }
    run_script(state, ws, step.position, &script, env, None, CLONE_TIMEOUT).await
}

/// Runs one of the template's setup commands in its directory.
async fn setup_step(
    state: &AppState,
    ws: &WorkspaceId,
    step: &ProvisionStep,
    spec: &Template,
) -> ApiResult<Outcome> {
    let Some(s) = spec.setup.iter().find(|s| s.name == step.name) else {
        return Err(ApiError::internal(format!(
            "step {} is not in the spec",
            step.name
        )));
    };
    let cwd = s.dir.as_ref().map(|d| format!("{HOME}/{d}"));
    run_script(state, ws, step.position, &s.run, Vec::new(), cwd, s.timeout).await
}

/// How a step ended.
struct Outcome {
    ok: bool,
    log: String,
    exit_code: Option<i64>,
    message: Option<String>,
}

impl Outcome {
    /// A step that ended without an exit code of its own, for this reason.
    fn failed(log: String, why: impl Into<String>) -> Self {
        Self {
            ok: false,
            log,
            exit_code: None,
            message: Some(why.into()),
        }
    }
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
    let req = script_request(script, env, cwd, timeout_secs);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_secs) + HOST_GRACE;
    let mut tail = Tail::default();
    let mut stream = match tokio::time::timeout_at(deadline, client.exec(req)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Ok(Outcome::failed(
                String::new(),
                format!("could not start: {e}"),
            ))
        }
        Err(_) => {
            return Ok(Outcome::failed(
                String::new(),
                "could not start: the workspace daemon did not answer",
            ))
        }
    };
    let mut last_flush = tokio::time::Instant::now();
    loop {
        let ev = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Ok(ev)) => ev,
            Ok(Err(e)) => {
                return Ok(Outcome::failed(
                    tail.text(),
                    format!("lost the workspace daemon: {e}"),
                ))
            }
            Err(_) => {
                return Ok(Outcome::failed(
                    tail.text(),
                    format!("timed out after {timeout_secs}s"),
                ))
            }
        };
        match ev {
            Some(ExecEvent::Stdout(d)) | Some(ExecEvent::Stderr(d)) => {
                tail.push(&d);
                flush_due(state, ws, pos, &tail, &mut last_flush).await?;
            }
            Some(ExecEvent::Exit(code)) => return Ok(exited(code, tail, timeout_secs)),
            None => {
                return Ok(Outcome::failed(
                    tail.text(),
                    "the workspace daemon closed the step before it ended",
                ))
            }
        }
    }
}

/// The exec of a script step: `sh -c` under `timeout` (killed 5 s after the deadline), in
/// `cwd` or the agent's home.
fn script_request(
    script: &str,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    timeout_secs: u64,
) -> ExecRequest {
    ExecRequest {
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
    }
}

/// The outcome of a script step that exited with `code` (124 and 137: `timeout` stopped it).
fn exited(code: i32, tail: Tail, timeout_secs: u64) -> Outcome {
    let code = i64::from(code);
    // `timeout` exits 124 when it stopped the step (137 after its kill).
    let message = match code {
        0 => None,
        124 | 137 => Some(format!("timed out after {timeout_secs}s")),
        c => Some(format!("failed with exit code {c}")),
    };
    Outcome {
        ok: code == 0,
        log: tail.text(),
        exit_code: Some(code),
        message,
    }
}

/// Stores the step's log so far when [`LOG_FLUSH`] has passed since `last_flush`, so that
/// watchers see a long step's output as it comes.
async fn flush_due(
    state: &AppState,
    ws: &WorkspaceId,
    pos: i64,
    tail: &Tail,
    last_flush: &mut tokio::time::Instant,
) -> ApiResult<()> {
    if last_flush.elapsed() >= LOG_FLUSH {
        *last_flush = tokio::time::Instant::now();
        state.store.set_step_log(ws, pos, &tail.text()).await?;
        changed(ws);
    }
    Ok(())
}

/// The `image` step: builds the derived image of the template's `[image]` extras on top of the
/// pinned base (or finds it built: images are content-addressed and shared), its output as the
/// step's log, then moves the workspace onto it (its container is made anew; the home volume
/// stays).
async fn image_step(
    state: &AppState,
    ws: &WorkspaceId,
    pos: i64,
    spec: &Template,
) -> ApiResult<Outcome> {
    let base = spec
        .image
        .base
        .clone()
        .unwrap_or_else(|| state.default_image());
    let derived = match crate::images::derived(state, &base, &spec.image).await {
        Ok(d) => d,
        Err(e) => return Ok(Outcome::failed(String::new(), e.message)),
    };
    let tag = derived.tag();
    let mut tail = Tail::default();
    tail.push(format!("base {base}; derived image {tag}\n").as_bytes());
    let built = match build_logged(state, ws, pos, &derived, &mut tail).await? {
        Ok(b) => b,
        Err(e) => {
            return Ok(Outcome::failed(
                tail.text(),
                format!("the image build failed: {}", first_line(&e.message)),
            ))
        }
    };
    let what = if built {
        format!("built {tag}")
    } else {
        format!("reused {tag}")
    };
    if !built {
        tail.push(format!("{tag} exists: reused, not built again\n").as_bytes());
    }
    if let Err(e) = move_to_image(state, ws, pos, &tag, &mut tail).await? {
        return Ok(Outcome::failed(
            tail.text(),
            format!("could not remake the container: {}", e.message),
        ));
    }
    Ok(Outcome {
        ok: true,
        log: tail.text(),
        exit_code: None,
        message: Some(what),
    })
}

/// Builds `derived` (unless built already: `Ok(false)`), its output lines into `tail` and the
/// step's log as they come; the inner `Err` is the build's failure, the outer the store's.
async fn build_logged(
    state: &AppState,
    ws: &WorkspaceId,
    pos: i64,
    derived: &berth_runtime::image::DerivedImage,
    tail: &mut Tail,
) -> ApiResult<ApiResult<bool>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let build = crate::images::build_derived(state, derived, tx);
    tokio::pin!(build);
    let mut last_flush = tokio::time::Instant::now();
    let built = loop {
        tokio::select! {
            r = &mut build => break r,
            Some(line) = rx.recv() => {
                tail.push(line.as_bytes());
                tail.push(b"\n");
                flush_due(state, ws, pos, tail, &mut last_flush).await?;
            }
        }
    };
    while let Ok(line) = rx.try_recv() {
        tail.push(line.as_bytes());
        tail.push(b"\n");
    }
    Ok(built)
}

/// Moves the workspace onto image `tag` when it is on another one: its container is made anew
/// (the home volume stays). The inner `Err`: the container could not be remade.
async fn move_to_image(
    state: &AppState,
    ws: &WorkspaceId,
    pos: i64,
    tag: &str,
    tail: &mut Tail,
) -> ApiResult<ApiResult<()>> {
    let w = state.store.workspace(ws).await?;
    if w.image == tag {
        return Ok(Ok(()));
    }
    state.store.set_workspace_image(ws, tag).await?;
    tail.push(format!("moving the workspace from {} to {tag}\n", w.image).as_bytes());
    state.store.set_step_log(ws, pos, &tail.text()).await?;
    changed(ws);
    if let Err(e) = crate::lifecycle::ensure_current(state, ws).await {
        return Ok(Err(e));
    }
    tail.push(b"container remade on the new image; the home volume is kept\n");
    Ok(Ok(()))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// The `container` step of an upgrade that changed what the container is made from (image,
/// environment, caps): the workspace is moved onto the new revision's image (its derived
/// image was set by the `image` step) and its container made anew when it differs.
async fn container_step(state: &AppState, ws: &WorkspaceId, spec: &Template) -> ApiResult<Outcome> {
    let mut log = String::new();
    if !spec.image.has_extras() {
        if let Some(base) = &spec.image.base {
            let w = state.store.workspace(ws).await?;
            if &w.image != base {
                if let Err(e) = crate::lifecycle::ensure_image(state, base).await {
                    return Ok(Outcome {
                        ok: false,
                        log,
                        exit_code: None,
                        message: Some(e.message),
                    });
                }
                state.store.set_workspace_image(ws, base).await?;
                log.push_str(&format!("image {} → {base}\n", w.image));
            }
        }
    }
    match crate::lifecycle::ensure_current(state, ws).await {
        Ok(true) => {
            log.push_str("container remade; the home volume is kept\n");
            Ok(Outcome {
                ok: true,
                log,
                exit_code: None,
                message: Some("remade".into()),
            })
        }
        Ok(false) => {
            log.push_str("the container is current\n");
            Ok(Outcome {
                ok: true,
                log,
                exit_code: None,
                message: Some("current".into()),
            })
        }
        Err(e) => Ok(Outcome {
            ok: false,
            log,
            exit_code: None,
            message: Some(format!("could not remake the container: {}", e.message)),
        }),
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
    // An upgrade is worked out before the workspace's lock is taken: larger caps take the
    // tenant's admission lock, which is always taken before a workspace's.
    let upgrade = if req.upgrade {
        Some(upgrade_with_quota(state, &w).await?)
    } else {
        None
    };
    let lock = state.lock_for(&w.id);
    let _guard = lock.lock().await;
    let w = state.store.workspace(&w.id).await?;
    let p = provision_of(state, &w).await?;
    check_reprovisionable(state, &w, &p, req.retry).await?;
    if let Some((u, _hold)) = upgrade {
        apply_upgrade(state, &w, &p, u).await?;
    }
    state
        .store
        .set_provision_state(&w.id, "pending", None)
        .await?;
    changed(&w.id);
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

/// The upgrade of `w` and, when it raises the caps of a running (or failed) workspace, the
/// tenant's quota held for the difference.
async fn upgrade_with_quota(
    state: &AppState,
    w: &Workspace,
) -> ApiResult<(Upgrade, Option<crate::tenants::QuotaHold>)> {
    let p = provision_of(state, w).await?;
    let u = plan_upgrade(state, w, &p).await?;
    let larger = u
        .limits
        .filter(|l| l.memory_bytes > w.limits.memory_bytes || l.nano_cpus > w.limits.nano_cpus);
    let hold = match larger {
        Some(l) if matches!(w.state, WorkspaceState::Running | WorkspaceState::Failed) => {
            let asked = berth_domain::QuotaUse {
                workspaces: 0,
                ..crate::lifecycle::quota_use(&l)
            };
            Some(crate::tenants::check(state, &w.tenant, asked, Some(&w.id)).await?)
        }
        _ => None,
    };
    Ok((u, hold))
}

/// Whether the provisioning of `w` (as `p`) may run again now: not while it runs, only with
/// its container up, and a retry only after a failure.
async fn check_reprovisionable(
    state: &AppState,
    w: &Workspace,
    p: &berth_store::Provision,
    retry: bool,
) -> ApiResult<()> {
    if matches!(p.state.as_str(), "running" | "pending") {
        let when = if retry {
            ""
        } else {
            ": upgrade once it is done"
        };
        return Err(ApiError::new(
            ErrorCode::Provisioning,
            format!(
                "workspace {} is being provisioned{when}",
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
    if retry && p.state != "failed" {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "workspace {}'s provisioning did not fail (it is {}): nothing to retry",
                w.qualified_name(),
                p.state
            ),
        ));
    }
    Ok(())
}

/// Stores the upgrade planned for `w` (its new caps, revision, spec and steps), unless the
/// provisioning changed while it waited for the lock or the new container would end a running
/// task.
async fn apply_upgrade(
    state: &AppState,
    w: &Workspace,
    p: &berth_store::Provision,
    u: Upgrade,
) -> ApiResult<()> {
    if u.from_spec != p.spec || u.from_limits != w.limits {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "the provisioning of workspace {} changed while this upgrade waited: retry",
                w.qualified_name()
            ),
        ));
    }
    if u.remakes_container {
        // Remaking the container ends what runs in it: not under a running task.
        let busy: Vec<String> = state
            .store
            .active_tasks()
            .await?
            .into_iter()
            .filter(|t| t.workspace_id == w.id)
            .map(|t| t.id.to_string())
            .collect();
        if !busy.is_empty() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "the upgrade of workspace {} remakes its container, and tasks run in it ({}): wait for them or cancel them first",
                    w.qualified_name(),
                    busy.join(", ")
                ),
            ));
        }
    }
    if let Some(l) = &u.limits {
        state.store.set_workspace_limits(&w.id, l).await?;
    }
    state
        .store
        .put_provision(
            &w.id,
            &p.template,
            u.revision,
            &p.params,
            &json(&u.spec),
            &u.steps,
        )
        .await?;
    changed(&w.id);
    Ok(())
}

async fn provision_of(state: &AppState, w: &Workspace) -> ApiResult<berth_store::Provision> {
    state.store.provision(&w.id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "workspace {} was not made from a template",
            w.qualified_name()
        ))
    })
}

/// What an upgrade to the template's newest revision does.
struct Upgrade {
    revision: i64,
    spec: Template,
    steps: Vec<NewStep>,
    /// New caps, when the revision changes the template's resources.
    limits: Option<berth_domain::Limits>,
    /// Whether the container is made anew (its image, environment or caps change).
    remakes_container: bool,
    /// What the plan was made from, to notice a change while it waited for the lock.
    from_spec: String,
    from_limits: berth_domain::Limits,
}

/// Plans the upgrade of `w` (provisioned as `p`) to its template's newest revision: the new
/// spec (its base pinned as at create: the revision's, else the one the workspace was made
/// from), the steps (unchanged ones that ran stay done), new caps for the resources the
/// revision changed, and — when the image, environment or caps change — a `container` step
/// that makes the container anew before the other steps run (the auto-session, which ends
/// with the old container, runs again).
async fn plan_upgrade(
    state: &AppState,
    w: &Workspace,
    p: &berth_store::Provision,
) -> ApiResult<Upgrade> {
    let (revision, mut spec) = newest_spec(state, w.tenant.as_str(), p).await?;
    let old: Template = serde_json::from_str(&p.spec).map_err(ApiError::internal)?;
    // Recorded before bases were pinned: the workspace's image is its base.
    let old_base = old.image.base.clone().unwrap_or_else(|| w.image.clone());
    if spec.image.base.is_none() {
        spec.image.base = Some(old_base.clone());
    }
    let mut old_image = old.image.clone();
    old_image.base = Some(old_base);
    let limits = upgraded_limits(state, w.limits, &old.resources, &spec.resources)?;
    let remakes = old_image != spec.image || old.env != spec.env || limits.is_some();
    let mut steps = steps_to_run(&spec, &p.steps);
    let image_runs = steps.iter().any(|s| s.kind == "image" && s.state != "done");
    if remakes {
        let at = usize::from(steps.first().is_some_and(|s| s.kind == "image"));
        steps.insert(at, container_entry(&spec, &limits));
    }
    if remakes || image_runs {
        // The auto-session ends with the old container.
        for s in steps.iter_mut().filter(|s| s.kind == "session") {
            s.state = "pending".into();
        }
    }
    Ok(Upgrade {
        revision,
        spec,
        steps,
        limits,
        remakes_container: remakes || image_runs,
        from_spec: p.spec.clone(),
        from_limits: w.limits,
    })
}

/// The newest revision of the workspace's template with its parameters filled in, checked
/// (422 when the parameters no longer fit it): its number and the spec.
async fn newest_spec(
    state: &AppState,
    tenant: &str,
    p: &berth_store::Provision,
) -> ApiResult<(i64, Template)> {
    let rev = crate::templates::find(state, tenant, &p.template, None).await?;
    let t = crate::templates::parse_stored(&rev)?;
    let params: BTreeMap<String, String> =
        serde_json::from_str(&p.params).map_err(ApiError::internal)?;
    let spec = t
        .instantiate(&params)
        .map_err(|e| param_error(tenant, &p.template, e))?;
    crate::templates::check(&spec).map_err(|e| {
        ApiError::new(
            ErrorCode::TemplateInvalid,
            format!(
                "template {tenant}/{}, with the workspace's parameters: {e}",
                p.template
            ),
        )
    })?;
    Ok((rev.revision, spec))
}

/// The steps of `spec`, each `done` when the last run finished it with the same input (an
/// upgrade re-runs only what changed), else `pending`.
fn steps_to_run(spec: &Template, last: &[berth_store::ProvisionStep]) -> Vec<NewStep> {
    plan(spec)
        .into_iter()
        .map(|s| {
            let done = last.iter().any(|o| {
                o.kind == s.kind && o.name == s.name && o.input_hash == s.hash && o.state == "done"
            });
            NewStep {
                kind: s.kind.into(),
                name: s.name,
                input_hash: s.hash,
                state: if done { "done" } else { "pending" }.into(),
            }
        })
        .collect()
}

/// The `container` step remaking the container from `spec`'s image and environment with
/// `limits`.
fn container_entry(spec: &Template, limits: &Option<berth_domain::Limits>) -> NewStep {
    NewStep {
        kind: "container".into(),
        name: "container".into(),
        input_hash: hash_of(&[
            "container",
            &json(&spec.image),
            &json(&spec.env),
            &json(limits),
        ]),
        state: "pending".into(),
    }
}

/// The caps after an upgrade: each resource the new revision sets differently from the old one
/// takes the new value (the server's default when the new revision leaves it out); the others
/// stay as they are (also when the create request gave them). `None`: no change.
fn upgraded_limits(
    state: &AppState,
    current: berth_domain::Limits,
    old: &berth_domain::template::Resources,
    new: &berth_domain::template::Resources,
) -> ApiResult<Option<berth_domain::Limits>> {
    use berth_domain::limits::{parse_cpus, parse_memory};
    let d = state.config.default_limits;
    let invalid = |e: berth_domain::limits::LimitsError| {
        ApiError::new(ErrorCode::TemplateInvalid, format!("resources: {e}"))
    };
    let mut l = current;
    if old.memory != new.memory {
        l.memory_bytes = match &new.memory {
            Some(m) => parse_memory(m).map_err(invalid)?,
            None => d.memory_bytes,
        };
    }
    if old.cpus != new.cpus {
        l.nano_cpus = match &new.cpus {
            Some(c) => parse_cpus(c).map_err(invalid)?,
            None => d.nano_cpus,
        };
    }
    if old.pids != new.pids {
        l.pids = new.pids.unwrap_or(d.pids);
    }
    if l == current {
        return Ok(None);
    }
    let l = l.validate().map_err(invalid)?;
    crate::capacity::check_host(&l)?;
    Ok(Some(l))
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
                changed(&id);
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
            changed(&id);
            fail_workspace(state, &id, &msg).await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(workspace = %id, error = %e, "could not settle an interrupted provisioning");
        }
    }
}
