//! Virtual keys: where an agent's SDK puts them, how the store keeps them (hashed), and the
//! short-lived cache of their lookups.
//!
//! A key belongs to a task (live while the server runs one of its turns) or to an interactive
//! agent session (live while the server has not ended it *and* the workspace's daemon lists
//! that very session running: same id, name and start time; when the daemon cannot say, the
//! key is refused).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::Gateway;

/// How long a virtual-key lookup is reused: revocation (cancel, failure, workspace stop) takes
/// effect within this time, and a busy agent does not cost two queries per call. Budgets are
/// re-read as often.
pub(crate) const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

/// Whose a live key is.
#[derive(Debug)]
pub(crate) enum Holder {
    Task(berth_store::Task),
    Session(berth_store::SessionKey),
}

/// A live key's holder and workspace, shared by the calls that reuse the lookup.
#[derive(Debug)]
pub(crate) struct Owner {
    pub(crate) holder: Holder,
    pub(crate) ws: berth_store::Workspace,
}

impl Owner {
    /// The task's id, or the agent session's (for logs).
    pub(crate) fn id(&self) -> &str {
        match &self.holder {
            Holder::Task(t) => t.id.as_str(),
            Holder::Session(k) => &k.id,
        }
    }

    pub(crate) fn agent(&self) -> berth_domain::Agent {
        match &self.holder {
            Holder::Task(t) => t.agent,
            Holder::Session(k) => k.agent,
        }
    }

    pub(crate) fn workspace_id(&self) -> &berth_domain::WorkspaceId {
        match &self.holder {
            Holder::Task(t) => &t.workspace_id,
            Holder::Session(k) => &k.workspace_id,
        }
    }

    /// The task a call is counted for: the task, or the one an agent session took over
    /// (empty for a session of its own).
    pub(crate) fn task_id(&self) -> Option<&berth_domain::TaskId> {
        match &self.holder {
            Holder::Task(t) => Some(&t.id),
            Holder::Session(k) => k.task_id.as_ref(),
        }
    }

    /// The agent session a call is counted for.
    pub(crate) fn session_id(&self) -> Option<String> {
        match &self.holder {
            Holder::Task(_) => None,
            Holder::Session(k) => Some(k.id.clone()),
        }
    }
}

pub(crate) type KeyOwner = Arc<Owner>;

/// What the daemon's answer says of a session key's terminal session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionLiveness {
    /// The daemon lists that very session running.
    Running,
    /// The daemon answered: the session exited, is gone, or is another one by now.
    Ended,
    /// No answer (or the session has not started yet): not confirmed, so refused.
    Unconfirmed,
}

/// Judges the daemon's answer about `key`'s session (pure, so it is tested on its own).
pub fn session_liveness(
    key: &berth_store::SessionKey,
    answer: &Result<berth_daemon::SessionInfo, berth_daemon::DaemonError>,
) -> SessionLiveness {
    let (Some(id), Some(name), Some(at)) = (
        key.session_id.as_deref(),
        key.session_name.as_deref(),
        key.session_created_at.as_deref(),
    ) else {
        return SessionLiveness::Unconfirmed;
    };
    match answer {
        Ok(s) if s.id == id && s.name == name && s.created_at == at => {
            if s.state == berth_daemon::SessionState::Running {
                SessionLiveness::Running
            } else {
                SessionLiveness::Ended
            }
        }
        Ok(_) | Err(berth_daemon::DaemonError::NotFound(_)) => SessionLiveness::Ended,
        Err(_) => SessionLiveness::Unconfirmed,
    }
}

/// Recent lookups by key hash.
#[derive(Default)]
pub(crate) struct KeyCache {
    entries: Mutex<HashMap<String, (Instant, KeyOwner)>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<KeyOwner> {
        let cache = berth_domain::sync::lock(&self.entries);
        match cache.get(hash) {
            Some((at, owner)) if at.elapsed() < KEY_CACHE_TTL => Some(owner.clone()),
            _ => None,
        }
    }

    fn insert(&self, hash: &str, owner: KeyOwner) {
        let mut cache = berth_domain::sync::lock(&self.entries);
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < KEY_CACHE_TTL);
        }
        cache.insert(hash.to_owned(), (Instant::now(), owner));
    }

    /// Drops a task's cached lookups.
    pub(crate) fn forget_task(&self, task_id: &berth_domain::TaskId) {
        let mut cache = berth_domain::sync::lock(&self.entries);
        cache.retain(|_, (_, owner)| !matches!(&owner.holder, Holder::Task(t) if &t.id == task_id));
    }
}

/// The hash the store keeps of a virtual key (SHA-256, hex).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The virtual key, from wherever the agent's SDK puts it.
pub(crate) fn virtual_key(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(k) = h("x-api-key").or_else(|| h("x-goog-api-key")) {
        return Some(k);
    }
    if let Some(b) = h("authorization") {
        if let Some(k) = b
            .strip_prefix("Bearer ")
            .or_else(|| b.strip_prefix("bearer "))
        {
            return Some(k.trim().to_owned());
        }
    }
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("key=").map(str::to_owned))
}

impl Gateway {
    /// The task or agent session a live virtual key (by its hash) belongs to, and its
    /// workspace. Task lookups are cached briefly; session keys are looked up every call (their
    /// liveness is confirmed with the daemon every call anyway).
    pub(crate) async fn lookup_key(&self, hash: &str) -> anyhow::Result<Option<KeyOwner>> {
        let inner = &self.inner;
        if let Some(owner) = inner.keys.get(hash) {
            return Ok(Some(owner));
        }
        if let Some(task) = inner.store.find_live_task_by_key_hash(hash).await? {
            let Some(ws) = inner.store.find_workspace_by_id(&task.workspace_id).await? else {
                return Ok(None);
            };
            let owner = Arc::new(Owner {
                holder: Holder::Task(task),
                ws,
            });
            inner.keys.insert(hash, owner.clone());
            return Ok(Some(owner));
        }
        let Some(key) = inner.store.find_live_session_key_by_hash(hash).await? else {
            return Ok(None);
        };
        let Some(ws) = inner.store.find_workspace_by_id(&key.workspace_id).await? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Owner {
            holder: Holder::Session(key),
            ws,
        })))
    }

    /// All budgets, re-read at most once a second (a budget set through the API applies within
    /// a second; spending is always read fresh).
    pub(crate) async fn all_budgets(&self) -> anyhow::Result<Vec<berth_store::Budget>> {
        {
            let cache = berth_domain::sync::lock(&self.inner.budgets);
            if let Some((at, list)) = cache.as_ref() {
                if at.elapsed() < KEY_CACHE_TTL {
                    return Ok(list.clone());
                }
            }
        }
        let list = self.inner.store.budgets().await?;
        *berth_domain::sync::lock(&self.inner.budgets) = Some((Instant::now(), list.clone()));
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn keys_from_any_sdk() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("a"));
        assert_eq!(virtual_key(&h, None).as_deref(), Some("a"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer b"));
        assert_eq!(virtual_key(&h, None).as_deref(), Some("b"));
        let mut h = HeaderMap::new();
        h.insert("x-goog-api-key", HeaderValue::from_static("c"));
        assert_eq!(virtual_key(&h, None).as_deref(), Some("c"));
        assert_eq!(
            virtual_key(&HeaderMap::new(), Some("alt=sse&key=d")).as_deref(),
            Some("d")
        );
        assert_eq!(virtual_key(&HeaderMap::new(), Some("alt=sse")), None);
    }

    #[test]
    fn key_hashes_are_sha256_hex() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
