//! The daemon's state shared by all connections: its sessions (live ones, and the ended ones
//! of an earlier daemon from the journal), the process groups of running execs, and the task
//! manager.

use berth_domain::Timestamp;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::session::{Session, SpawnSpec};
use super::task::TaskManager;
use super::{journal, ApiError, DaemonOptions};
use crate::proto::{DaemonInfo, SessionCreate, SessionInfo};
use crate::sys::{self, lock};
use crate::PROTOCOL_VERSION;

/// How long a session gets to exit after SIGHUP before SIGKILL.
pub(super) const KILL_GRACE: Duration = Duration::from_secs(2);

/// What a new session's process runs.
struct Launch {
    argv: Vec<String>,
    program: PathBuf,
    env: BTreeMap<String, String>,
    cwd: PathBuf,
}

/// The daemon's state, shared by all connections.
pub(crate) struct Daemon {
    pub(super) opts: DaemonOptions,
    started_at: Timestamp,
    /// In creation order.
    sessions: Mutex<Vec<Arc<Session>>>,
    /// Sessions of an earlier daemon (from the journal), listed as ended until removed.
    ended: Mutex<Vec<SessionInfo>>,
    /// Shutting down: the sessions killed now are written down as running (so the next daemon
    /// lists them as ended), not as exited.
    closing: std::sync::atomic::AtomicBool,
    /// Serializes session creation (name and id checks, then insertion).
    create_lock: tokio::sync::Mutex<()>,
    /// Process groups of running exec processes.
    execs: Mutex<HashSet<u32>>,
    pub(super) tasks: TaskManager,
    me: Weak<Daemon>,
}

impl Daemon {
    pub(super) fn new(opts: DaemonOptions) -> Arc<Daemon> {
        let tasks = TaskManager::new(
            opts.drivers.clone(),
            opts.task_event_buffer,
            opts.max_finished_tasks,
        );
        let ended = opts
            .session_journal
            .as_deref()
            .map(|p| journal::load(p, opts.max_exited_sessions))
            .unwrap_or_default()
            .into_iter()
            .map(journal::Record::into_info)
            .collect();
        Arc::new_cyclic(|me| Daemon {
            tasks,
            opts,
            started_at: Timestamp::now(),
            sessions: Mutex::new(Vec::new()),
            ended: Mutex::new(ended),
            closing: std::sync::atomic::AtomicBool::new(false),
            create_lock: tokio::sync::Mutex::new(()),
            execs: Mutex::new(HashSet::new()),
            me: me.clone(),
        })
    }

    pub(super) fn info(&self) -> DaemonInfo {
        DaemonInfo {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started_at: self.started_at.clone(),
            uid: nix::unistd::getuid().as_raw(),
            sessions: lock(&self.sessions).len(),
        }
    }

    pub(super) fn find(&self, id_or_name: &str) -> Result<Arc<Session>, ApiError> {
        let sessions = lock(&self.sessions);
        sessions
            .iter()
            .find(|s| s.id == id_or_name)
            .or_else(|| sessions.iter().find(|s| s.name == id_or_name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no session {id_or_name:?}")))
    }

    pub(super) fn list(&self) -> Vec<SessionInfo> {
        let mut all = lock(&self.ended).clone();
        all.extend(lock(&self.sessions).iter().map(|s| s.info()));
        all
    }

    /// A session's info, live or ended.
    pub(super) fn get(&self, id_or_name: &str) -> Result<SessionInfo, ApiError> {
        if let Ok(s) = self.find(id_or_name) {
            return Ok(s.info());
        }
        let ended = lock(&self.ended);
        ended
            .iter()
            .find(|s| s.id == id_or_name)
            .or_else(|| ended.iter().find(|s| s.name == id_or_name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no session {id_or_name:?}")))
    }

    /// Writes the sessions down (see [`DaemonOptions::session_journal`]).
    fn save_journal(&self) {
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Some(path) = &self.opts.session_journal {
            let records: Vec<journal::Record> =
                self.list().iter().map(journal::Record::of).collect();
            journal::save(path, &records);
        }
    }

    /// Starts a session; returns once its process runs.
    pub(super) async fn create_session(&self, req: SessionCreate) -> Result<SessionInfo, ApiError> {
        let launch = self.launch(&req)?;
        // An agent's TUI taking a task over runs in the task's state directory (its TMPDIR is
        // `<state_dir>/tmp`): the task's warm protocol process lets go of the conversation.
        if let Some((_, tmp)) = req.env.iter().find(|(k, _)| k == "TMPDIR") {
            if let Some(dir) = std::path::Path::new(tmp).parent() {
                self.tasks.release_state_dir(dir);
            }
        }
        let _guard = self.create_lock.lock().await;
        let name = self.session_name(req.name.as_deref())?;
        let id = self.new_id();
        let spec = SpawnSpec {
            id,
            name,
            argv: launch.argv,
            program: launch.program,
            env: launch.env,
            cwd: launch.cwd,
            cols: req.cols,
            rows: req.rows,
            scrollback_bytes: self.opts.scrollback_bytes,
        };
        let me = self.me.clone();
        let on_exit = Box::new(move || {
            if let Some(d) = me.upgrade() {
                d.prune_exited();
                d.save_journal();
            }
        });
        let session = tokio::task::spawn_blocking(move || Session::spawn(spec, on_exit))
            .await
            .map_err(|e| ApiError::internal(format!("spawn task: {e}")))??;
        tracing::info!(session = %session.id, name = %session.name, pid = session.pid, argv = ?session.argv, "session started");
        lock(&self.sessions).push(session.clone());
        // The name is taken again: an ended session of that name is gone for good.
        lock(&self.ended).retain(|s| s.name != session.name && s.id != session.id);
        self.prune_exited();
        self.save_journal();
        Ok(session.info())
    }

    /// Checks a session request and resolves what its process runs: argv (the default
    /// shell, or /bin/sh if that is missing), executable, environment and working directory.
    fn launch(&self, req: &SessionCreate) -> Result<Launch, ApiError> {
        if req.cols == 0 || req.rows == 0 {
            return Err(ApiError::invalid("cols and rows must be at least 1"));
        }
        sys::validate_env(&req.env).map_err(ApiError::invalid)?;
        let cwd = sys::resolve_cwd(req.cwd.as_deref(), &self.opts.default_cwd)
            .map_err(ApiError::invalid)?;
        let default_shell = req.argv.is_none();
        let mut argv = req
            .argv
            .clone()
            .unwrap_or_else(|| self.opts.default_shell.clone());
        sys::validate_argv(&argv).map_err(ApiError::invalid)?;
        if default_shell && !Path::new(&argv[0]).exists() {
            tracing::warn!(shell = %argv[0], "default shell missing; using /bin/sh");
            argv = vec!["/bin/sh".into()];
        }
        let shell = if default_shell {
            argv[0].clone()
        } else {
            self.opts
                .default_shell
                .first()
                .cloned()
                .unwrap_or_else(|| "/bin/sh".into())
        };
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.opts.default_cwd.clone());
        let env = sys::child_env(&home, &shell, true, &req.env);
        let program = sys::resolve_program(&argv[0], env.get("PATH").map(String::as_str), &cwd)
            .map_err(ApiError::spawn_failed)?;
        Ok(Launch {
            argv,
            program,
            env,
            cwd,
        })
    }

    /// The requested name if it is valid and free, or a free default name. Called under
    /// `create_lock`.
    fn session_name(&self, requested: Option<&str>) -> Result<String, ApiError> {
        Ok(match requested {
            Some(n) => {
                if !valid_name(n) {
                    return Err(ApiError::invalid(format!(
                        "invalid session name {n:?}: use 1 to 63 of [a-zA-Z0-9_.-], starting with a letter or digit"
                    )));
                }
                if lock(&self.sessions).iter().any(|s| s.name == n) {
                    return Err(ApiError::conflict(format!(
                        "a session named {n:?} already exists"
                    )));
                }
                n.to_string()
            }
            None => self.default_name(),
        })
    }

    fn default_name(&self) -> String {
        let sessions = lock(&self.sessions);
        let taken = |n: &str| sessions.iter().any(|s| s.name == n);
        if !taken("main") {
            return "main".into();
        }
        (2u64..)
            .map(|i| format!("shell-{i}"))
            .find(|n| !taken(n))
            .unwrap_or_else(|| "shell".into())
    }

    fn new_id(&self) -> String {
        let sessions = lock(&self.sessions);
        loop {
            let id: String = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
            if !sessions.iter().any(|s| s.id == id || s.name == id) {
                return id;
            }
        }
    }

    /// Forgets the oldest exited sessions beyond the limit.
    fn prune_exited(&self) {
        let mut sessions = lock(&self.sessions);
        let mut exited: Vec<(u64, String)> = sessions
            .iter()
            .filter_map(|s| s.exit_seq().map(|seq| (seq, s.id.clone())))
            .collect();
        if exited.len() <= self.opts.max_exited_sessions {
            return;
        }
        exited.sort();
        let drop_n = exited.len() - self.opts.max_exited_sessions;
        let doomed: HashSet<String> = exited.into_iter().take(drop_n).map(|(_, id)| id).collect();
        sessions.retain(|s| !doomed.contains(&s.id));
        tracing::debug!(count = drop_n, "forgot old exited sessions");
    }

    pub(super) fn remove_session(&self, id_or_name: &str) -> Result<(), ApiError> {
        let s = match self.find(id_or_name) {
            Ok(s) => s,
            Err(e) => {
                let info = self.get(id_or_name).map_err(|_| e)?;
                lock(&self.ended).retain(|x| x.id != info.id);
                self.save_journal();
                return Ok(());
            }
        };
        if s.exit_code().is_none() {
            return Err(ApiError::conflict(format!(
                "session {:?} is running; kill it first",
                s.name
            )));
        }
        lock(&self.sessions).retain(|x| x.id != s.id);
        self.save_journal();
        Ok(())
    }

    pub(super) fn track_exec(&self, pgid: u32) {
        lock(&self.execs).insert(pgid);
    }

    pub(super) fn untrack_exec(&self, pgid: u32) {
        lock(&self.execs).remove(&pgid);
    }

    pub(super) async fn shutdown(&self) {
        self.save_journal();
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.tasks.shutdown();
        let execs: Vec<u32> = lock(&self.execs).iter().copied().collect();
        for pgid in execs {
            sys::signal_group(pgid, Signal::SIGKILL);
        }
        let running: Vec<Arc<Session>> = lock(&self.sessions)
            .iter()
            .filter(|s| s.exit_code().is_none())
            .cloned()
            .collect();
        let kills = running.iter().map(|s| s.kill(KILL_GRACE));
        futures_util::future::join_all(kills).await;
    }
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("main"));
        assert!(valid_name("a"));
        assert!(valid_name("A1_b.c-d"));
        assert!(valid_name(&"x".repeat(63)));
        assert!(!valid_name(&"x".repeat(64)));
        assert!(!valid_name(""));
        assert!(!valid_name("-x"));
        assert!(!valid_name(".x"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a/b"));
    }
}
