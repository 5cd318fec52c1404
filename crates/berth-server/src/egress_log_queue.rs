//! The queue between the egress proxy (one entry per attempt) and the egress log writer
//! (SQLite), bounded so a workspace cannot grow the server's memory by making attempts faster
//! than they are written: at most [`PER_WORKSPACE`] entries of one workspace and [`TOTAL`] in all
//! wait; past that, attempts are counted instead of queued, and once a workspace's queue has
//! drained the writer records how many were not logged (audit `egress.log_dropped`). One
//! workspace's flood therefore never costs another workspace its log entries.

use std::collections::HashMap;
use std::sync::Mutex;

use berth_domain::WorkspaceId;
use berth_egress::LogEntry;
use tokio::sync::mpsc;

/// Entries of one workspace that may wait for the writer.
pub const PER_WORKSPACE: usize = 1024;
/// Entries of all workspaces that may wait for the writer.
pub const TOTAL: usize = 8192;

/// Per workspace: entries waiting, attempts not queued since the last report.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    queued: usize,
    dropped: u64,
}

/// The sending side, shared by every workspace's proxy context.
pub struct LogQueue {
    tx: mpsc::Sender<(WorkspaceId, LogEntry)>,
    counts: Mutex<HashMap<WorkspaceId, Counts>>,
}

impl LogQueue {
    pub fn new() -> (Self, mpsc::Receiver<(WorkspaceId, LogEntry)>) {
        let (tx, rx) = mpsc::channel(TOTAL);
        let q = Self {
            tx,
            counts: Mutex::new(HashMap::new()),
        };
        (q, rx)
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<WorkspaceId, Counts>> {
        berth_domain::sync::lock(&self.counts)
    }

    /// Queues an entry, or counts it as dropped when the workspace's share or the queue is full.
    /// Never waits.
    pub fn push(&self, ws: &WorkspaceId, entry: LogEntry) {
        let mut counts = self.counts();
        let c = counts.entry(ws.clone()).or_default();
        if c.queued >= PER_WORKSPACE {
            c.dropped += 1;
            return;
        }
        match self.tx.try_send((ws.clone(), entry)) {
            Ok(()) => c.queued += 1,
            Err(_) => c.dropped += 1,
        }
    }

    /// Called by the writer for each entry it took: returns how many attempts of `ws` went
    /// unlogged, once its queue is empty (and forgets them).
    pub fn taken(&self, ws: &WorkspaceId) -> Option<u64> {
        let mut counts = self.counts();
        let c = counts.get_mut(ws)?;
        c.queued = c.queued.saturating_sub(1);
        if c.queued > 0 {
            return None;
        }
        let dropped = std::mem::take(&mut c.dropped);
        counts.remove(ws);
        (dropped > 0).then_some(dropped)
    }

    #[cfg(test)]
    fn queued(&self, ws: &WorkspaceId) -> usize {
        self.counts().get(ws).map(|c| c.queued).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str) -> LogEntry {
        LogEntry {
            method: None,
            host: host.into(),
            port: 443,
            path: None,
            decision: "deny".into(),
            rule: None,
            reason: "no rule".into(),
            bytes_up: 0,
            bytes_down: 0,
            intercepted: false,
            at: berth_domain::Timestamp::parse("2026-12-04T00:00:00Z").unwrap(),
            task_id: None,
        }
    }

    fn ws(s: &str) -> WorkspaceId {
        WorkspaceId::from_stored(s.to_owned())
    }

    /// Fails with the old unbounded channel: all 20,000 entries of the flood wait in memory and
    /// the neighbour's entry is behind them.
    #[tokio::test]
    async fn a_flood_is_bounded_counted_and_leaves_room_for_others() {
        let (q, mut rx) = LogQueue::new();
        let (a, b) = (ws("ws_aaaa"), ws("ws_bbbb"));
        for _ in 0..20_000 {
            q.push(&a, entry("flood.example"));
        }
        assert_eq!(q.queued(&a), PER_WORKSPACE);
        q.push(&b, entry("quiet.example"));
        assert_eq!(q.queued(&b), 1);
        // The writer drains: the flood's report comes with its last entry, the neighbour's entry
        // is there and has nothing dropped.
        let mut reports = Vec::new();
        let mut hosts = HashMap::<String, usize>::new();
        while let Ok((w, e)) = rx.try_recv() {
            *hosts.entry(e.host).or_default() += 1;
            if let Some(n) = q.taken(&w) {
                reports.push((w, n));
            }
        }
        assert_eq!(hosts["flood.example"], PER_WORKSPACE);
        assert_eq!(hosts["quiet.example"], 1);
        assert_eq!(reports, vec![(a.clone(), 20_000 - PER_WORKSPACE as u64)]);
        // Counters start afresh.
        q.push(&a, entry("again.example"));
        assert_eq!(q.queued(&a), 1);
    }

    #[tokio::test]
    async fn the_total_bounds_many_workspaces_together() {
        let (q, _rx) = LogQueue::new();
        let mut queued = 0;
        for i in 0..(TOTAL / PER_WORKSPACE + 2) {
            let w = ws(&format!("ws_{i:04}"));
            for _ in 0..PER_WORKSPACE {
                q.push(&w, entry("x"));
            }
            queued += q.queued(&w);
        }
        assert_eq!(queued, TOTAL);
    }
}
