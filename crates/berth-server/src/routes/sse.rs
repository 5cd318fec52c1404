//! Resumable Server-Sent Event streams of stored, numbered records (task events, egress log
//! entries): replay everything after a cursor (`?after=N` or the `Last-Event-ID` a reconnecting
//! browser sends), then follow as the writer signals new records, each event carrying its number
//! as its SSE id so a reconnect resumes exactly where it stopped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;

/// How many records one read takes from the store.
pub const BATCH: u32 = 1000;

/// A stored record as an SSE event.
pub trait Numbered {
    /// Its position; the stream resumes after it.
    fn number(&self) -> u64;
    /// The SSE `event:` name.
    fn kind(&self) -> String;
    /// The SSE `data:` (JSON).
    fn data(&self) -> String;
}

/// The cursor to resume after: `?after=` wins over `Last-Event-ID`; from the start otherwise.
pub fn resume_after(after: Option<u64>, headers: &HeaderMap) -> u64 {
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    after.or(last_event_id).unwrap_or(0)
}

/// What a stream source answers when asked for records after a cursor.
pub enum Read<T> {
    /// These records (ascending).
    Records(Vec<T>),
    /// Nothing new yet: wait for the writer's signal.
    Wait,
    /// Nothing new and nothing will come (e.g. the task is finished): end the stream.
    End,
}

/// The resumable stream. `read(after)` returns the records after a cursor (`Err` ends the
/// stream); `rx` changes whenever the writer stored something. Subscribe `rx` before calling, so
/// nothing stored in between is missed.
pub fn follow<T, V, R, Fut>(
    rx: watch::Receiver<V>,
    after: u64,
    read: R,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    T: Numbered + Send + 'static,
    V: Send + Sync + 'static,
    R: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Read<T>, ()>> + Send + 'static,
{
    Sse::new(events(rx, after, read).map(|(_, ev)| Ok(ev))).keep_alive(KeepAlive::default())
}

/// The stream behind [`follow`]: each record's number with its event.
fn events<T, V, R, Fut>(
    rx: watch::Receiver<V>,
    after: u64,
    read: R,
) -> impl Stream<Item = (u64, Event)>
where
    T: Numbered + Send + 'static,
    V: Send + Sync + 'static,
    R: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Read<T>, ()>> + Send + 'static,
{
    let init = (after, rx, VecDeque::<T>::new(), read);
    futures_util::stream::unfold(
        init,
        |(mut after, mut rx, mut pending, mut read)| async move {
            loop {
                if let Some(rec) = pending.pop_front() {
                    after = rec.number();
                    let ev = Event::default()
                        .id(after.to_string())
                        .event(rec.kind())
                        .data(rec.data());
                    return Some(((after, ev), (after, rx, pending, read)));
                }
                rx.borrow_and_update();
                match read(after).await {
                    Ok(Read::Records(batch)) if !batch.is_empty() => {
                        pending.extend(batch);
                        continue;
                    }
                    Ok(Read::Records(_) | Read::Wait) => {}
                    Ok(Read::End) | Err(()) => return None,
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Rec(u64);

    impl Numbered for Rec {
        fn number(&self) -> u64 {
            self.0
        }
        fn kind(&self) -> String {
            "rec".into()
        }
        fn data(&self) -> String {
            self.0.to_string()
        }
    }

    #[test]
    fn after_wins_over_last_event_id() {
        let mut h = HeaderMap::new();
        assert_eq!(resume_after(None, &h), 0);
        h.insert("last-event-id", " 7 ".parse().unwrap());
        assert_eq!(resume_after(None, &h), 7);
        assert_eq!(resume_after(Some(3), &h), 3);
        h.insert("last-event-id", "x".parse().unwrap());
        assert_eq!(resume_after(None, &h), 0);
    }

    /// Replays after the cursor, waits for the writer's signal, follows, and ends on `End`.
    #[tokio::test]
    async fn replays_then_follows_then_ends() {
        let stored = Arc::new(Mutex::new(vec![1u64, 2, 3]));
        let finished = Arc::new(Mutex::new(false));
        let (tx, rx) = watch::channel(0u64);
        let (s, f) = (stored.clone(), finished.clone());
        let mut stream = Box::pin(events(rx, 1, move |after| {
            let batch: Vec<Rec> = s
                .lock()
                .unwrap()
                .iter()
                .filter(|n| **n > after)
                .map(|n| Rec(*n))
                .collect();
            let done = *f.lock().unwrap();
            async move {
                Ok(match (batch.is_empty(), done) {
                    (false, _) => Read::Records(batch),
                    (true, true) => Read::End,
                    (true, false) => Read::Wait,
                })
            }
        }));
        assert_eq!(stream.next().await.map(|(n, _)| n), Some(2));
        assert_eq!(stream.next().await.map(|(n, _)| n), Some(3));
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(100), stream.next()).await;
        assert!(waiting.is_err(), "nothing new: the stream waits");
        stored.lock().unwrap().push(4);
        tx.send_replace(4);
        assert_eq!(stream.next().await.map(|(n, _)| n), Some(4));
        *finished.lock().unwrap() = true;
        tx.send_replace(4);
        assert!(stream.next().await.is_none());
    }
}
