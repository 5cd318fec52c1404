//! The egress firewall, server side.
//!
//! Workspaces run with no network (`NetworkMode none`). The only way out is berth's egress proxy
//! ([`berth_egress::Proxy`]), served on a Unix socket in each workspace's channel directory —
//! the workspace daemon relays `127.0.0.1:3128` to it and tools find it through
//! `HTTP(S)_PROXY`. One listener per workspace, so the proxy always knows whose traffic it sees;
//! nothing inside the workspace, root included, can reach anything else. Rules are read on every
//! attempt (changes apply live) and every attempt lands in the egress log.
//!
//! A workspace's policy is its *effective* rule list: its own rules first, then the rules of
//! each egress template it attaches, in attach order (first match wins, anything unmatched is
//! denied), so a workspace's own `deny` overrides a template's `allow`. Template rules carry
//! their origin (`template npm`) into the log. Whenever the rules or a template change, the
//! policies of the workspaces concerned are recomputed from the store ([`refresh`]).
//!
//! Placeholder secrets are held per running workspace with their real values; setting
//! (rotating) or deleting a secret reloads them in every running workspace that uses it
//! ([`refresh_secret`]), so the next request already gets the new value or none.
//!
//! Names in `BERTH_EGRESS_HOSTS` are operator-trusted: a rule naming one exactly reaches its
//! address even when that is private or loopback; a broad rule (`*`, `*.suffix`) matching it
//! still gets only public addresses (see `berth_egress::Proxy::with_resolver`).

pub mod policy;

use berth_domain::SecretDelivery;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use berth_daemon::conn_limit::{ConnLimiter, ConnLimits};
use berth_domain::WorkspaceId;
use berth_egress::{
    BuiltinTemplate, CertificateAuthority, EgressContext, LogEntry, Policy, Proxy, SecretBinding,
};
use berth_store::{EgressTemplate, Store, StoreError, Workspace};
use tokio::sync::watch;

/// One placeholder secret of a workspace: which secret, the hosts it may go to, and the swap.
#[derive(Clone, Debug)]
pub struct HostBinding {
    pub secret: String,
    pub hosts: Vec<String>,
    pub binding: SecretBinding,
}

/// A workspace's placeholder secrets.
pub type HostBindings = Vec<HostBinding>;

pub struct Egress {
    proxy: Arc<Proxy>,
    ca_pem: String,
    listeners: Mutex<HashMap<WorkspaceId, tokio::task::JoinHandle<()>>>,
    policies: RwLock<HashMap<WorkspaceId, Policy>>,
    /// Placeholder secrets per running workspace.
    secrets: RwLock<HashMap<WorkspaceId, HostBindings>>,
    /// Attempts on their way to the egress log (bounded per workspace and in all).
    log: crate::egress_log_queue::LogQueue,
    /// The newest log id per workspace, for followers.
    watchers: crate::watch_map::WatchMap<WorkspaceId, i64>,
    /// Held while a policy is computed from the store and installed, so that an older
    /// computation never overwrites a newer one.
    recompute: tokio::sync::Mutex<()>,
    /// Denied attempts on their way to become access requests (bounded, coalesced).
    sightings: Arc<crate::access_requests::Sightings>,
    /// Explicit access requests taken per workspace and second.
    access_rate: Arc<crate::access_requests::RateLimit>,
    store: Store,
}

impl Egress {
    /// Loads (or creates) the berth CA under `DATA_DIR/ca` and starts the log writer.
    /// `env` carries the operator's extra CAs, static hosts and tunnel idle timeout.
    pub fn start(
        data_dir: &Path,
        env: &crate::config::EnvSettings,
        store: Store,
    ) -> anyhow::Result<Arc<Self>> {
        let ca = CertificateAuthority::load_or_create(&data_dir.join("ca"))?;
        let ca_pem = ca.cert_pem();
        let mut upstream = berth_egress::UpstreamTls::webpki();
        // Trust what the host trusts too (corporate CAs in the system bundle).
        let _ = upstream.add_system_bundle();
        if let Some(extra) = &env.egress_extra_ca {
            for f in extra.split(':').filter(|f| !f.is_empty()) {
                if let Err(e) = upstream.add_pem_file(Path::new(f)) {
                    tracing::warn!(file = f, error = %e, "cannot read an extra CA for the egress proxy");
                }
            }
        }
        let (log, mut log_rx) = crate::egress_log_queue::LogQueue::new();
        let mut proxy = Proxy::new(ca, upstream);
        if let Some(idle) = tunnel_idle_timeout(env.egress_tunnel_idle_secs.clone())? {
            proxy = proxy.with_tunnel_idle_timeout(idle);
        }
        let hosts = static_hosts(env.egress_hosts.as_deref().unwrap_or_default())?;
        if !hosts.is_empty() {
            tracing::info!(count = hosts.len(), "egress proxy uses static host entries");
            let hosts = Arc::new(hosts);
            proxy = proxy.with_resolver(Arc::new(move |name: &str, port: u16| {
                hosts
                    .get(name)
                    .map(|ip| vec![std::net::SocketAddr::new(*ip, port)])
            }));
        }
        let egress = Arc::new(Self {
            proxy: Arc::new(proxy),
            ca_pem,
            listeners: Mutex::new(HashMap::new()),
            policies: RwLock::new(HashMap::new()),
            secrets: RwLock::new(HashMap::new()),
            log,
            watchers: Default::default(),
            recompute: tokio::sync::Mutex::new(()),
            sightings: Default::default(),
            access_rate: Default::default(),
            store: store.clone(),
        });
        crate::access_requests::spawn_writer(egress.sightings.clone(), store.clone());
        let writer = egress.clone();
        tokio::spawn(async move {
            while let Some((ws, e)) = log_rx.recv().await {
                match store.append_egress_log(&ws, &e).await {
                    Ok(id) => writer.notify(&ws, id),
                    Err(err) => tracing::error!(error = %err, "cannot write the egress log"),
                }
                if let Some(dropped) = writer.log.taken(&ws) {
                    report_dropped(&store, &ws, dropped).await;
                }
            }
        });
        Ok(egress)
    }

    /// The CA certificate workspaces must trust for intercepted TLS.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn notify(&self, ws: &WorkspaceId, id: i64) {
        self.watchers.publish(ws, id);
    }

    pub fn subscribe(&self, ws: &WorkspaceId) -> watch::Receiver<i64> {
        self.watchers.subscribe(ws)
    }

    /// Installs the rules in force for a workspace, in order (see [`effective_rules`]).
    pub fn set_policy(&self, ws: &WorkspaceId, rules: &[SourcedRule]) -> Result<(), String> {
        let mut parsed = Vec::new();
        let mut origin: Option<(&str, Arc<str>)> = None;
        for r in rules {
            let rule = berth_egress::Rule::parse(&r.rule).map_err(|e| match &r.template {
                Some(t) => format!("template {t}: rule {:?}: {e}", r.rule),
                None => format!("rule {:?}: {e}", r.rule),
            })?;
            // One shared label per template.
            let label = r.template.as_deref().map(|t| match &origin {
                Some((name, label)) if *name == t => label.clone(),
                _ => {
                    let label: Arc<str> = Arc::from(format!("template {t}"));
                    origin = Some((t, label.clone()));
                    label
                }
            });
            let label = label.or_else(|| {
                r.grant
                    .as_ref()
                    .map(|(id, until)| Arc::from(format!("access {id} until {until}")))
            });
            parsed.push((label, rule));
        }
        let mut p = berth_domain::sync::write(&self.policies);
        p.insert(ws.clone(), Policy::with_origins(parsed));
        Ok(())
    }

    /// The policy in force for a workspace, if one is loaded.
    pub fn policy(&self, ws: &WorkspaceId) -> Option<Policy> {
        let p = berth_domain::sync::read(&self.policies);
        p.get(ws).cloned()
    }

    fn is_loaded(&self, ws: &WorkspaceId) -> bool {
        berth_domain::sync::read(&self.policies).contains_key(ws)
    }

    /// Computes the workspace's policy from the store and installs it. Rules that do not
    /// parse deny everything; when the store cannot be read, a policy already in force is
    /// replaced by deny-all (it may be stale) and a missing one stays missing (nothing is
    /// allowed, and the next [`activate`] tries again).
    async fn install(&self, store: &Store, ws: &WorkspaceId) {
        let rules = match store.find_workspace_by_id(ws).await {
            Ok(Some(w)) => effective_rules(store, &w).await,
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let err = match rules {
            Ok(rules) => match self.set_policy(ws, &rules) {
                Ok(()) => return,
                Err(e) => e,
            },
            Err(e) if !self.is_loaded(ws) => {
                tracing::error!(workspace = %ws, error = %e, "cannot load the egress rules");
                return;
            }
            Err(e) => format!("cannot load the egress rules: {e}"),
        };
        tracing::error!(workspace = %ws, error = %err, "egress policy unavailable; denying all");
        let _ = self.set_policy(ws, &[]);
    }

    /// Installs the placeholder secrets of a workspace.
    pub fn set_secrets(&self, ws: &WorkspaceId, bindings: HostBindings) {
        let mut s = berth_domain::sync::write(&self.secrets);
        s.insert(ws.clone(), bindings);
    }

    /// The placeholder secrets the proxy swaps into a workspace's requests to `host`.
    pub fn secrets_for(&self, ws: &WorkspaceId, host: &str) -> Vec<SecretBinding> {
        let s = berth_domain::sync::read(&self.secrets);
        s.get(ws)
            .map(|all| {
                all.iter()
                    .filter(|b| b.hosts.iter().any(|h| h == host))
                    .map(|b| b.binding.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The workspaces whose placeholder secrets are loaded (the running ones).
    fn secrets_loaded(&self) -> Vec<WorkspaceId> {
        let s = berth_domain::sync::read(&self.secrets);
        s.keys().cloned().collect()
    }

    /// Drops every binding of secret `name` from a loaded workspace (fail closed when the
    /// store cannot say what the bindings should be).
    fn drop_secret(&self, ws: &WorkspaceId, name: &str) {
        let mut s = berth_domain::sync::write(&self.secrets);
        if let Some(all) = s.get_mut(ws) {
            all.retain(|b| b.secret != name);
        }
    }

    /// Serves the workspace's proxy socket (idempotent; rebinds when the socket went away).
    pub fn ensure(self: &Arc<Self>, socket: &Path, ws: &WorkspaceId) {
        let mut running = berth_domain::sync::lock(&self.listeners);
        if let Some(h) = running.get(ws) {
            if !h.is_finished() && berth_daemon::chanfs::is_bound(socket) {
                return;
            }
            h.abort();
        }
        let Some(listener) = bind_open(socket, ws) else {
            return;
        };
        // Connections the workspace daemon hands over whole (see `berth_egress::handoff`);
        // without this socket the daemon relays their bytes to the one above.
        let handoff = bind_open(
            &socket.with_file_name(berth_egress::handoff::SOCKET_NAME),
            ws,
        );
        // Explicit access requests (`berth request`): the workspace is this socket's.
        let access = bind_open(
            &socket.with_file_name(crate::access_requests::SOCKET_NAME),
            ws,
        );
        let ctx: Arc<dyn EgressContext> = Arc::new(WorkspaceEgress {
            ws: ws.clone(),
            egress: self.clone(),
        });
        let proxy = self.proxy.clone();
        // One cap for both sockets: each connection is one client of the proxy in the workspace.
        let limiter = ConnLimiter::new("egress", ConnLimits::EGRESS);
        let relayed = serve_relayed(listener, proxy.clone(), ctx.clone(), limiter.clone());
        let handed_over = async move {
            if let Some(listener) = handoff {
                serve_handed_over(listener, proxy, ctx, limiter).await;
            }
        };
        let (ws_id, store, rate) = (ws.clone(), self.store.clone(), self.access_rate.clone());
        let requests = async move {
            if let Some(listener) = access {
                serve_access_requests(listener, ws_id, store, rate).await;
            }
        };
        let handle = tokio::spawn(async move {
            tokio::join!(relayed, handed_over, requests);
        });
        running.insert(ws.clone(), handle);
    }

    pub fn stop(&self, ws: &WorkspaceId) {
        if let Some(h) = berth_domain::sync::lock(&self.listeners).remove(ws) {
            h.abort();
        }
        berth_domain::sync::write(&self.policies).remove(ws);
        berth_domain::sync::write(&self.secrets).remove(ws);
    }
}

/// Serves the connections the workspace daemon relays to the proxy socket.
async fn serve_relayed(
    listener: tokio::net::UnixListener,
    proxy: Arc<Proxy>,
    ctx: Arc<dyn EgressContext>,
    limiter: ConnLimiter,
) {
    loop {
        let (stream, slot) = limiter.accept(&listener).await;
        let stream = limiter.guard(stream, slot);
        let (proxy, ctx) = (proxy.clone(), ctx.clone());
        tokio::spawn(async move {
            if let Err(e) = proxy.serve_connection(stream, ctx).await {
                tracing::debug!(error = %e, "egress connection ended");
            }
        });
    }
}

/// Serves the TCP connections the workspace daemon hands over whole on the handoff socket.
async fn serve_handed_over(
    listener: tokio::net::UnixListener,
    proxy: Arc<Proxy>,
    ctx: Arc<dyn EgressContext>,
    limiter: ConnLimiter,
) {
    loop {
        let (unix, slot) = limiter.accept(&listener).await;
        let (proxy, ctx, limiter) = (proxy.clone(), ctx.clone(), limiter.clone());
        tokio::spawn(async move {
            let tcp = match berth_egress::handoff::receive(&unix).await {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::debug!(error = %e, "egress handoff refused");
                    return;
                }
            };
            drop(unix);
            let tcp = limiter.guard(tcp, slot);
            if let Err(e) = proxy.serve_connection(tcp, ctx).await {
                tracing::debug!(error = %e, "egress connection ended");
            }
        });
    }
}

/// Serves the workspace's explicit access requests (`berth request`).
async fn serve_access_requests(
    listener: tokio::net::UnixListener,
    ws: WorkspaceId,
    store: Store,
    rate: Arc<crate::access_requests::RateLimit>,
) {
    let limiter = ConnLimiter::new("access", ConnLimits::ACCESS);
    loop {
        let (stream, slot) = limiter.accept(&listener).await;
        let stream = limiter.guard(stream, slot);
        let (ws, store, rate) = (ws.clone(), store.clone(), rate.clone());
        tokio::spawn(crate::access_requests::serve_connection(
            stream, ws, store, rate,
        ));
    }
}

/// Serves one of the workspace's egress sockets (see `berth_daemon::chanfs::listen`).
fn bind_open(path: &Path, ws: &WorkspaceId) -> Option<tokio::net::UnixListener> {
    match berth_daemon::chanfs::listen(path) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(workspace = %ws, path = %path.display(), error = %e, "cannot serve an egress socket");
            None
        }
    }
}

/// Says in the audit log that a workspace made attempts faster than they could be logged.
async fn report_dropped(store: &Store, ws: &WorkspaceId, dropped: u64) {
    tracing::warn!(workspace = %ws, dropped, "egress attempts not logged: the log queue was full");
    let rec = berth_store::AuditRecord {
        actor: "egress".into(),
        action: "egress.log_dropped".into(),
        target: ws.to_string(),
        result: "warning".into(),
        detail: Some(format!(
            "{dropped} egress attempts were not logged: the workspace made them faster than the log is written"
        )),
        ..Default::default()
    };
    if let Err(e) = store.append_audit(&rec).await {
        tracing::error!(error = %e, "cannot write the audit log");
    }
}

struct WorkspaceEgress {
    ws: WorkspaceId,
    egress: Arc<Egress>,
}

impl EgressContext for WorkspaceEgress {
    fn policy(&self) -> Policy {
        let p = berth_domain::sync::read(&self.egress.policies);
        // No policy loaded (yet) means nothing is allowed.
        p.get(&self.ws)
            .cloned()
            .unwrap_or_else(|| Policy::new(Vec::new()))
    }

    fn record(&self, entry: LogEntry) {
        self.egress.log.push(&self.ws, entry);
    }

    fn secrets_for_host(&self, host: &str) -> Vec<SecretBinding> {
        self.egress.secrets_for(&self.ws, host)
    }

    fn denied(&self, attempt: &berth_egress::Attempt, rule: Option<String>) {
        self.egress.sightings.push(&self.ws, attempt, rule);
    }
}

/// `BERTH_EGRESS_TUNNEL_IDLE_SECS`: how long a plain tunnel may go without a byte in either
/// direction (default [`berth_egress::DEFAULT_TUNNEL_IDLE_TIMEOUT`]).
fn tunnel_idle_timeout(value: Option<String>) -> anyhow::Result<Option<std::time::Duration>> {
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    match v.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Some(std::time::Duration::from_secs(secs))),
        _ => anyhow::bail!(
            "BERTH_EGRESS_TUNNEL_IDLE_SECS: {v:?} is not a positive number of seconds"
        ),
    }
}

/// `BERTH_EGRESS_HOSTS=name=ip,name2=ip`: names the proxy resolves itself, before DNS (like
/// `/etc/hosts` for the proxy only: internal hosts, air-gapped setups, tests).
pub fn static_hosts(spec: &str) -> anyhow::Result<HashMap<String, std::net::IpAddr>> {
    let mut out = HashMap::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, ip) = entry
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("BERTH_EGRESS_HOSTS: {entry:?} is not name=ip"))?;
        let ip: std::net::IpAddr = ip
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("BERTH_EGRESS_HOSTS: {entry:?}: {e}"))?;
        out.insert(name.trim().to_ascii_lowercase(), ip);
    }
    Ok(out)
}

/// Writes the CA bundle workspaces use (`/run/berth/ca-bundle.crt`): the host's trusted roots
/// plus berth's CA, so intercepted and tunnelled TLS both verify.
/// Both files are created anew in the server-owned channel directory (never through a link).
pub fn write_ca_bundle(chan: &berth_daemon::chanfs::Dir, ca_pem: &str) -> std::io::Result<()> {
    let system = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    chan.write_file("berth-ca.crt", ca_pem.as_bytes(), 0o644, None)?;
    let mut bundle = system;
    if !bundle.ends_with('\n') && !bundle.is_empty() {
        bundle.push('\n');
    }
    bundle.push_str(ca_pem);
    chan.write_file("ca-bundle.crt", bundle.as_bytes(), 0o644, None)
}

/// One rule of a workspace's effective policy, with where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcedRule {
    /// The template it comes from; `None` for the workspace's own rules and grants.
    pub template: Option<String>,
    /// The access request whose approval "once" granted it, and until when.
    pub grant: Option<(String, berth_domain::Timestamp)>,
    pub rule: String,
}

impl SourcedRule {
    /// How the egress log names the rule: `template npm: allow registry.npmjs.org:443`.
    pub fn label(&self) -> String {
        match (&self.template, &self.grant) {
            (Some(t), _) => format!("template {t}: {}", self.rule),
            (None, Some((id, until))) => format!("access {id} until {until}: {}", self.rule),
            (None, None) => self.rule.clone(),
        }
    }
}

/// An egress template as a tenant sees it.
#[derive(Debug, Clone)]
pub enum Template {
    /// One of the tenant's own.
    Stored(EgressTemplate),
    Builtin(&'static BuiltinTemplate),
}

impl Template {
    pub fn rules(&self) -> Vec<String> {
        match self {
            Self::Stored(t) => t.rules.clone(),
            Self::Builtin(b) => b.rules.iter().map(|r| r.to_string()).collect(),
        }
    }
}

/// The template `name` as `tenant` sees it: its own template of that name, else the built-in.
/// (Built-in names are reserved, so both exist only if a newer berth added a built-in that a
/// tenant had already named a template of its own: that tenant keeps using its own.)
pub async fn find_template(
    store: &Store,
    tenant: &str,
    name: &str,
) -> Result<Option<Template>, StoreError> {
    if let Some(t) = store.egress_template(tenant, name).await? {
        return Ok(Some(Template::Stored(t)));
    }
    Ok(berth_egress::builtin_template(name).map(Template::Builtin))
}

/// The workspace's effective rules, in evaluation order: the grants of access requests approved
/// once that have not expired, its own rules, then the rules of each template it attaches, in
/// attach order.
pub async fn effective_rules(store: &Store, w: &Workspace) -> Result<Vec<SourcedRule>, StoreError> {
    let now = berth_domain::Timestamp::now();
    let mut out: Vec<SourcedRule> = store
        .access_grants(&w.id, &now)
        .await?
        .into_iter()
        .map(|g| SourcedRule {
            template: None,
            grant: Some((g.id, g.expires_at)),
            rule: g.rule,
        })
        .collect();
    out.extend(
        store
            .egress_rules(&w.id)
            .await?
            .into_iter()
            .map(|rule| SourcedRule {
                template: None,
                grant: None,
                rule,
            }),
    );
    for name in store.workspace_egress_templates(&w.id).await? {
        match find_template(store, w.tenant.as_str(), &name).await? {
            Some(t) => out.extend(t.rules().into_iter().map(|rule| SourcedRule {
                template: Some(name.clone()),
                grant: None,
                rule,
            })),
            // Cannot happen through the API (removal detaches first); contributes nothing.
            None => {
                tracing::warn!(workspace = %w.qualified_name(), template = %name, "attached egress template not found")
            }
        }
    }
    Ok(out)
}

/// Recomputes, from the store, the policy of each of these workspaces that has one in force
/// (the others load theirs when they start, in [`activate`]). Called after a change of their
/// rules, of a template they attach, or of their attachments: takes effect on the next attempt.
pub async fn refresh(state: &crate::state::AppState, workspaces: &[WorkspaceId]) {
    let e = &state.egress;
    let _guard = e.recompute.lock().await;
    for ws in workspaces {
        if e.is_loaded(ws) {
            e.install(&state.store, ws).await;
        }
    }
}

/// Serves a running workspace's egress proxy socket, with the workspace's rules and placeholder
/// secrets loaded (the gateway's socket is the lifecycle's other call, see
/// `lifecycle::serve_channel`).
pub async fn activate(state: &crate::state::AppState, ws: &WorkspaceId) {
    let e = &state.egress;
    if !e.is_loaded(ws) {
        let _guard = e.recompute.lock().await;
        if !e.is_loaded(ws) {
            e.install(&state.store, ws).await;
        }
    }
    let loaded = |e: &Egress| berth_domain::sync::read(&e.secrets).contains_key(ws);
    if !loaded(e) {
        // Under the lock [`refresh_secret`] takes, so a secret deleted meanwhile is
        // never installed after its refresh ran.
        let _guard = e.recompute.lock().await;
        if !loaded(e) {
            e.set_secrets(ws, placeholder_bindings(state, ws).await);
        }
    }
    e.ensure(&state.channel_dir(ws).join("egress.sock"), ws);
}

/// The workspace's placeholder secrets with their real values, for the proxy to swap in.
pub async fn placeholder_bindings(
    state: &crate::state::AppState,
    ws: &WorkspaceId,
) -> HostBindings {
    let mut out = Vec::new();
    let Ok(Some(w)) = state.store.find_workspace_by_id(ws).await else {
        return out;
    };
    let vault = &state.vault;
    let uses = state.store.secret_uses(Some(ws)).await.unwrap_or_default();
    for u in uses
        .into_iter()
        .filter(|u| u.delivery == SecretDelivery::Placeholder)
    {
        match crate::secrets::reveal(&state.store, vault, w.tenant.as_str(), &u.name).await {
            Ok(value) => out.push(HostBinding {
                secret: u.name,
                hosts: u.hosts,
                binding: SecretBinding {
                    placeholder: u.placeholder,
                    value,
                    headers: u.headers,
                },
            }),
            Err(e) => {
                tracing::warn!(workspace = %ws, secret = %u.name, error = %e, "secret unavailable; its placeholder stays a placeholder")
            }
        }
    }
    out
}

/// Reloads, in every running workspace that uses the secret `name`, its placeholder secrets
/// from the store and the vault: after a secret is set (rotated) or deleted, the proxy swaps
/// the new value, or nothing, from the next request on. When the store cannot be read, the
/// secret's bindings are dropped everywhere (fail closed).
pub async fn refresh_secret(state: &crate::state::AppState, name: &str) {
    let e = &state.egress;
    let _guard = e.recompute.lock().await;
    let uses = state.store.secret_uses(None).await;
    for ws in e.secrets_loaded() {
        match &uses {
            Ok(uses) => {
                if uses
                    .iter()
                    .any(|u| u.workspace_id == ws.as_str() && u.name == name)
                {
                    e.set_secrets(&ws, placeholder_bindings(state, &ws).await);
                }
            }
            Err(err) => {
                tracing::error!(workspace = %ws, secret = name, error = %err, "cannot reload placeholder secrets; dropping this one");
                e.drop_secret(&ws, name);
            }
        }
    }
}

/// Reloads one running workspace's placeholder secrets from the store, after its bindings
/// changed: the proxy swaps the new set from the next request on (a stopped workspace loads
/// them when it starts).
pub async fn reload_secrets(state: &crate::state::AppState, ws: &WorkspaceId) {
    let e = &state.egress;
    let _guard = e.recompute.lock().await;
    if berth_domain::sync::read(&e.secrets).contains_key(ws) {
        e.set_secrets(ws, placeholder_bindings(state, ws).await);
    }
}

/// The opposite of [`activate`], when a workspace is removed.
pub fn deactivate(state: &crate::state::AppState, ws: &WorkspaceId) {
    state.egress.stop(ws);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_idle_timeout_setting() {
        assert_eq!(tunnel_idle_timeout(None).unwrap(), None);
        assert_eq!(tunnel_idle_timeout(Some(" ".into())).unwrap(), None);
        assert_eq!(
            tunnel_idle_timeout(Some("90".into())).unwrap(),
            Some(std::time::Duration::from_secs(90))
        );
        for bad in ["0", "-1", "ten", "1.5"] {
            assert!(tunnel_idle_timeout(Some(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn static_hosts_parse() {
        let h = static_hosts("A.test=10.0.0.5, b.test=fd00::1").unwrap();
        assert_eq!(h["a.test"], "10.0.0.5".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(h["b.test"], "fd00::1".parse::<std::net::IpAddr>().unwrap());
        assert!(static_hosts("a.test").is_err());
        assert!(static_hosts("a.test=nope").is_err());
    }
}
