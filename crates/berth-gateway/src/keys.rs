//! Virtual keys: where an agent's SDK puts them, how the store keeps them (hashed), and the
//! short-lived cache of their lookups.

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

/// A live key's task and workspace, shared by the calls that reuse the lookup.
pub(crate) type KeyOwner = Arc<(berth_store::Task, berth_store::Workspace)>;

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
    pub(crate) fn forget_task(&self, task_id: &str) {
        let mut cache = berth_domain::sync::lock(&self.entries);
        cache.retain(|_, (_, owner)| owner.0.id != task_id);
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
    /// The task a virtual key (by its hash) belongs to, and its workspace.
    pub(crate) async fn lookup_key(&self, hash: &str) -> anyhow::Result<Option<KeyOwner>> {
        let inner = &self.inner;
        if let Some(owner) = inner.keys.get(hash) {
            return Ok(Some(owner));
        }
        let Some(task) = inner.store.find_live_task_by_key_hash(hash).await? else {
            return Ok(None);
        };
        let Some(w) = inner.store.find_workspace_by_id(&task.workspace_id).await? else {
            return Ok(None);
        };
        let owner = Arc::new((task, w));
        inner.keys.insert(hash, owner.clone());
        Ok(Some(owner))
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
