//! Per-key "newest value" signals: a writer publishes the newest sequence number it stored
//! for a key (a task, a workspace's egress log), and followers wait for it to move.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::watch;

pub struct WatchMap<K, V> {
    senders: Mutex<HashMap<K, watch::Sender<V>>>,
}

impl<K, V> Default for WatchMap<K, V> {
    fn default() -> Self {
        Self {
            senders: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Default> WatchMap<K, V> {
    pub fn publish(&self, key: &K, value: V) {
        self.sender(key, |s| {
            s.send_replace(value);
        });
    }

    pub fn subscribe(&self, key: &K) -> watch::Receiver<V> {
        let mut rx = None;
        self.sender(key, |s| rx = Some(s.subscribe()));
        rx.unwrap_or_else(|| watch::channel(V::default()).1)
    }

    fn sender(&self, key: &K, f: impl FnOnce(&watch::Sender<V>)) {
        let mut map = berth_domain::sync::lock(&self.senders);
        f(map
            .entry(key.clone())
            .or_insert_with(|| watch::channel(V::default()).0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_see_the_newest_value() {
        let m: WatchMap<String, u64> = WatchMap::default();
        let mut rx = m.subscribe(&"a".to_owned());
        m.publish(&"b".to_owned(), 9);
        m.publish(&"a".to_owned(), 3);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 3);
        // A late subscriber starts from the newest value.
        assert_eq!(*m.subscribe(&"b".to_owned()).borrow(), 9);
    }
}
