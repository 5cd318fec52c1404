//! The egress firewall, server side.
//!
//! Workspaces run with no network (`NetworkMode none`). The only way out is berth's egress proxy
//! ([`berth_egress::Proxy`]), served on a Unix socket in each workspace's channel directory —
//! the workspace daemon relays `127.0.0.1:3128` to it and tools find it through
//! `HTTP(S)_PROXY`. One listener per workspace, so the proxy always knows whose traffic it sees;
//! nothing inside the workspace, root included, can reach anything else. Rules are read on every
//! attempt (changes apply live) and every attempt lands in the egress log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use berth_domain::WorkspaceId;
use berth_egress::{CertificateAuthority, EgressContext, LogEntry, Policy, Proxy, SecretBinding};
use berth_store::{EgressRecord, Store};
use tokio::sync::{mpsc, watch};

/// A workspace's placeholder secrets: the hosts each may go to, and the swap.
pub type HostBindings = Vec<(Vec<String>, SecretBinding)>;

pub struct Egress {
    proxy: Arc<Proxy>,
    ca_pem: String,
    listeners: Mutex<HashMap<WorkspaceId, tokio::task::JoinHandle<()>>>,
    policies: RwLock<HashMap<WorkspaceId, Policy>>,
    /// Placeholder secrets per workspace: (bound hosts, placeholder → real value).
    secrets: RwLock<HashMap<WorkspaceId, HostBindings>>,
    log_tx: mpsc::UnboundedSender<(WorkspaceId, LogEntry)>,
    /// The newest log id per workspace, for followers.
    watchers: crate::watch_map::WatchMap<WorkspaceId, i64>,
}

impl Egress {
    /// Loads (or creates) the berth CA under `DATA_DIR/ca` and starts the log writer.
    pub fn start(data_dir: &Path, store: Store) -> anyhow::Result<Arc<Self>> {
        let ca = CertificateAuthority::load_or_create(&data_dir.join("ca"))?;
        let ca_pem = ca.cert_pem();
        let mut upstream = berth_egress::UpstreamTls::webpki();
        // Trust what the host trusts too (corporate CAs in the system bundle).
        let _ = upstream.add_system_bundle();
        if let Ok(extra) = std::env::var("BERTH_EGRESS_EXTRA_CA") {
            for f in extra.split(':').filter(|f| !f.is_empty()) {
                if let Err(e) = upstream.add_pem_file(Path::new(f)) {
                    tracing::warn!(file = f, error = %e, "cannot read an extra CA for the egress proxy");
                }
            }
        }
        let (log_tx, mut log_rx) = mpsc::unbounded_channel::<(WorkspaceId, LogEntry)>();
        let mut proxy = Proxy::new(ca, upstream);
        let hosts = static_hosts(&std::env::var("BERTH_EGRESS_HOSTS").unwrap_or_default())?;
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
            log_tx,
            watchers: Default::default(),
        });
        let writer = egress.clone();
        tokio::spawn(async move {
            while let Some((ws, e)) = log_rx.recv().await {
                let rec = EgressRecord {
                    at: e.at,
                    task_id: None,
                    method: e.method,
                    host: e.host,
                    port: e.port,
                    path: e.path,
                    decision: e.decision,
                    rule: e.rule,
                    reason: e.reason,
                    bytes_up: e.bytes_up,
                    bytes_down: e.bytes_down,
                    intercepted: e.intercepted,
                };
                match store.append_egress_log(ws.as_str(), &rec).await {
                    Ok(id) => writer.notify(&ws, id),
                    Err(err) => tracing::error!(error = %err, "cannot write the egress log"),
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

    /// Installs the rules in force for a workspace (from the store, or after an API change).
    pub fn set_policy(&self, ws: &WorkspaceId, rules: &[String]) -> Result<(), String> {
        let mut parsed = Vec::new();
        for r in rules {
            parsed.push(berth_egress::Rule::parse(r).map_err(|e| format!("rule {r:?}: {e}"))?);
        }
        let mut p = self.policies.write().unwrap_or_else(|e| e.into_inner());
        p.insert(ws.clone(), Policy::new(parsed));
        Ok(())
    }

    /// Installs the placeholder secrets of a workspace: (hosts, binding) pairs.
    pub fn set_secrets(&self, ws: &WorkspaceId, bindings: HostBindings) {
        let mut s = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        s.insert(ws.clone(), bindings);
    }

    /// Serves the workspace's proxy socket (idempotent; rebinds when the socket went away).
    pub fn ensure(self: &Arc<Self>, socket: &Path, ws: &WorkspaceId) {
        let mut running = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = running.get(ws) {
            if !h.is_finished() && socket.exists() {
                return;
            }
            h.abort();
        }
        let _ = std::fs::remove_file(socket);
        let listener = match tokio::net::UnixListener::bind(socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(workspace = %ws, error = %e, "cannot serve the egress socket");
                return;
            }
        };
        if let Err(e) = crate::binary::set_mode(socket, 0o666) {
            tracing::warn!(workspace = %ws, error = %e, "cannot open the egress socket to the workspace");
        }
        let ctx: Arc<dyn EgressContext> = Arc::new(WorkspaceEgress {
            ws: ws.clone(),
            egress: self.clone(),
        });
        let proxy = self.proxy.clone();
        let handle = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let (proxy, ctx) = (proxy.clone(), ctx.clone());
                        tokio::spawn(async move {
                            if let Err(e) = proxy.serve_connection(stream, ctx).await {
                                tracing::debug!(error = %e, "egress connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "egress accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        running.insert(ws.clone(), handle);
    }

    pub fn stop(&self, ws: &WorkspaceId) {
        if let Some(h) = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(ws)
        {
            h.abort();
        }
        self.policies
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(ws);
        self.secrets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(ws);
    }
}

struct WorkspaceEgress {
    ws: WorkspaceId,
    egress: Arc<Egress>,
}

impl EgressContext for WorkspaceEgress {
    fn policy(&self) -> Policy {
        let p = self
            .egress
            .policies
            .read()
            .unwrap_or_else(|e| e.into_inner());
        // No policy loaded (yet) means nothing is allowed.
        p.get(&self.ws)
            .cloned()
            .unwrap_or_else(|| Policy::new(Vec::new()))
    }

    fn record(&self, entry: LogEntry) {
        let _ = self.egress.log_tx.send((self.ws.clone(), entry));
    }

    fn secrets_for_host(&self, host: &str) -> Vec<SecretBinding> {
        let s = self
            .egress
            .secrets
            .read()
            .unwrap_or_else(|e| e.into_inner());
        s.get(&self.ws)
            .map(|all| {
                all.iter()
                    .filter(|(hosts, _)| hosts.iter().any(|h| h == host))
                    .map(|(_, b)| b.clone())
                    .collect()
            })
            .unwrap_or_default()
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
pub fn write_ca_bundle(chan: &Path, ca_pem: &str) -> std::io::Result<()> {
    let system = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    std::fs::write(chan.join("berth-ca.crt"), ca_pem)?;
    let mut bundle = system;
    if !bundle.ends_with('\n') && !bundle.is_empty() {
        bundle.push('\n');
    }
    bundle.push_str(ca_pem);
    std::fs::write(chan.join("ca-bundle.crt"), bundle)?;
    crate::binary::set_mode(&chan.join("ca-bundle.crt"), 0o644)?;
    crate::binary::set_mode(&chan.join("berth-ca.crt"), 0o644)
}

/// Everything a running workspace needs served on the host side of its channel: the LLM
/// gateway socket, and the egress proxy socket with the workspace's rules loaded.
pub async fn activate(state: &Arc<crate::state::AppState>, ws: &WorkspaceId) {
    state.gateways.ensure(state, ws);
    if let Some(e) = &state.egress {
        let loaded = e
            .policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(ws);
        if !loaded {
            match state.store.egress_rules(ws.as_str()).await {
                Ok(rules) => {
                    if let Err(err) = e.set_policy(ws, &rules) {
                        tracing::error!(workspace = %ws, error = %err, "stored egress rules do not parse; denying all");
                        let _ = e.set_policy(ws, &[]);
                    }
                }
                Err(err) => {
                    tracing::error!(workspace = %ws, error = %err, "cannot load egress rules")
                }
            }
        }
        let loaded = e
            .secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(ws);
        if !loaded {
            e.set_secrets(ws, placeholder_bindings(state, ws).await);
        }
        e.ensure(&state.channel_dir(ws).join("egress.sock"), ws);
    }
}

/// The workspace's placeholder secrets with their real values, for the proxy to swap in.
pub async fn placeholder_bindings(
    state: &crate::state::AppState,
    ws: &WorkspaceId,
) -> HostBindings {
    let mut out = Vec::new();
    let (Some(vault), Ok(Some(w))) = (&state.vault, state.store.find_workspace_by_id(ws).await)
    else {
        return out;
    };
    let uses = state
        .store
        .secret_uses(Some(ws.as_str()))
        .await
        .unwrap_or_default();
    for u in uses.into_iter().filter(|u| u.delivery == "placeholder") {
        match crate::routes::secrets::reveal(state, vault, w.tenant.as_str(), &u.name).await {
            Ok(value) => out.push((
                u.hosts,
                SecretBinding {
                    placeholder: u.placeholder,
                    value,
                },
            )),
            Err(e) => {
                tracing::warn!(workspace = %ws, secret = %u.name, error = %e, "secret unavailable; its placeholder stays a placeholder")
            }
        }
    }
    out
}

/// The opposite of [`activate`], when a workspace is removed.
pub fn deactivate(state: &crate::state::AppState, ws: &WorkspaceId) {
    state.gateways.stop(ws);
    if let Some(e) = &state.egress {
        e.stop(ws);
    }
}
