//! A task's event buffer and its subscribers' reading of it.
//!
//! The buffer numbers every event (`seq`, contiguous from the task's first seq) and stamps its
//! `at` when it is appended, keeps the newest `cap` events, and shrinks any event whose JSON
//! would not fit in one protocol frame. Subscribers replay from their own cursor and are woken
//! by a `watch` of the newest seq, so a slow subscriber never blocks a task and never misses an
//! event that is still buffered.

use std::collections::VecDeque;

use berth_domain::{EventKind, TaskEvent, Timestamp};
use tokio::io::AsyncWrite;
use tokio::sync::watch;

use super::Task;
use crate::proto::{write_control, Response};

/// Events whose JSON is larger are shrunk (long strings cut) so that they
/// always fit in one protocol frame.
const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Strings of oversized events are cut to this many bytes.
const MAX_EVENT_STRING: usize = 64 * 1024;
/// Events handed to a subscriber per lock of the buffer.
const BATCH: usize = 256;

/// The newest `cap` events of a task, numbered from the seq after `last_seq`.
pub(super) struct EventBuffer {
    events: VecDeque<TaskEvent>,
    last_seq: u64,
    cap: usize,
    /// The buffer overflowed (and a Log event said so).
    overflowed: bool,
}

impl EventBuffer {
    /// An empty buffer whose first event gets `last_seq + 1`; `cap` is at least 2.
    pub(super) fn new(last_seq: u64, cap: usize) -> Self {
        EventBuffer {
            events: VecDeque::new(),
            last_seq,
            cap,
            overflowed: false,
        }
    }

    /// The seq of the newest event (or the one the task started after).
    pub(super) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The Log event to append the first time the buffer is full, saying the oldest events
    /// are being dropped; `None` before that, and ever after.
    pub(super) fn overflow_notice(&mut self, task: &str) -> Option<EventKind> {
        if self.events.len() < self.cap || self.overflowed {
            return None;
        }
        self.overflowed = true;
        tracing::warn!(task = %task, cap = self.cap, "task event buffer full");
        Some(EventKind::Log {
            line: format!(
                "berth: more than {} events; the daemon now keeps only the newest {}",
                self.cap, self.cap
            ),
        })
    }

    /// Appends `kind` as the next event (dropping the oldest beyond the cap); returns its seq.
    pub(super) fn append(&mut self, kind: EventKind) -> u64 {
        while self.events.len() >= self.cap {
            self.events.pop_front();
        }
        self.last_seq += 1;
        self.events.push_back(TaskEvent {
            seq: self.last_seq,
            at: Timestamp::now(),
            kind,
        });
        self.last_seq
    }

    /// Up to `max` buffered events with `seq > after`.
    pub(super) fn after(&self, after: u64, max: usize) -> Vec<TaskEvent> {
        let Some(first) = self.events.front().map(|e| e.seq) else {
            return Vec::new();
        };
        let skip =
            usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        self.events.iter().skip(skip).take(max).cloned().collect()
    }
}

/// Writes the task's events with `seq > after` to a subscriber as `task_event` messages: the
/// buffered ones, then live ones as `seq_rx` (subscribed before the caller answered) announces
/// them, until the task is forgotten and everything is written. Returns the write error when
/// the subscriber goes away.
pub(crate) async fn send_events<W: AsyncWrite + Unpin>(
    task: &Task,
    mut seq_rx: watch::Receiver<u64>,
    after: u64,
    wr: &mut W,
) -> std::io::Result<()> {
    let mut cursor = after;
    loop {
        // Mark the current value seen *before* reading the buffer: an
        // event appended after this point wakes `changed()` below.
        seq_rx.borrow_and_update();
        loop {
            let (batch, forgotten) = task.events_after(cursor, BATCH);
            if batch.is_empty() {
                if forgotten {
                    return Ok(());
                }
                break;
            }
            for event in batch {
                cursor = event.seq;
                write_control(wr, &Response::TaskEvent { event }).await?;
            }
        }
        if seq_rx.changed().await.is_err() {
            return Ok(());
        }
    }
}

/// Cuts `s` to at most `max` bytes (at a char boundary).
pub(super) fn truncate_string(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

/// Shrinks an event whose JSON would not fit comfortably in a frame.
pub(super) fn fit_event(kind: EventKind) -> EventKind {
    let size = |k: &EventKind| serde_json::to_vec(k).map_or(usize::MAX, |v| v.len());
    let n = size(&kind);
    if n <= MAX_EVENT_BYTES {
        return kind;
    }
    let too_large = || EventKind::Log {
        line: format!("berth: dropped an agent event of {n} bytes (too large)"),
    };
    let Ok(mut v) = serde_json::to_value(&kind) else {
        return too_large();
    };
    cut_strings(&mut v);
    match serde_json::from_value::<EventKind>(v) {
        Ok(k) if size(&k) <= MAX_EVENT_BYTES => k,
        _ => too_large(),
    }
}

fn cut_strings(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) if s.len() > MAX_EVENT_STRING => {
            let total = s.len();
            truncate_string(s, MAX_EVENT_STRING);
            s.push_str(&format!("… [cut by berth: {total} bytes in all]"));
        }
        Value::Array(a) => a.iter_mut().for_each(cut_strings),
        Value::Object(o) => o.values_mut().for_each(cut_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_events_are_shrunk() {
        let e = fit_event(EventKind::Message {
            text: "x".repeat(2 * MAX_EVENT_BYTES),
        });
        let n = serde_json::to_vec(&e).unwrap().len();
        assert!(n <= MAX_EVENT_BYTES, "{n}");
        assert!(matches!(e, EventKind::Message { text } if text.contains("cut by berth")));
        let e = fit_event(EventKind::Raw {
            data: serde_json::json!(vec!["y".repeat(1000); 1000]),
        });
        assert!(matches!(e, EventKind::Log { .. }));
        let small = EventKind::Message { text: "hi".into() };
        assert_eq!(fit_event(small.clone()), small);
    }

    #[test]
    fn truncates_at_char_boundary() {
        let mut s = "héllo".to_string();
        truncate_string(&mut s, 2);
        assert_eq!(s, "h");
    }

    #[test]
    fn buffer_keeps_the_newest_and_replays_after_a_cursor() {
        let mut b = EventBuffer::new(10, 3);
        let log = |i: u32| EventKind::Log {
            line: i.to_string(),
        };
        for i in 0..3 {
            assert!(b.overflow_notice("t").is_none());
            b.append(log(i));
        }
        assert!(b.overflow_notice("t").is_some());
        assert!(b.overflow_notice("t").is_none());
        assert_eq!(b.append(log(3)), 14);
        assert_eq!(b.last_seq(), 14);
        let seqs = |v: Vec<TaskEvent>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(b.after(0, 10)), [12, 13, 14]);
        assert_eq!(seqs(b.after(12, 10)), [13, 14]);
        assert_eq!(seqs(b.after(12, 1)), [13]);
        assert!(b.after(14, 10).is_empty());
    }
}
