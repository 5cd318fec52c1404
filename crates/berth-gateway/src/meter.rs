//! The upstream's answer on its way back: passed through frame by frame while its usage is
//! counted, then priced and recorded with the call (and, with prompt recording on, the request
//! and response), after which the call's budget reservation is given back.

use berth_domain::Provider;
use berth_store::LlmCall;

use crate::budget::Reservation;
use crate::usage_tap::{Tokens, UsageTap};
use crate::Gateway;

/// Largest request/response kept by prompt recording.
pub(crate) const RECORD_MAX: usize = 1 << 20;

/// A finished call, its recorded request and response when recording is on, and the budget
/// reservation it gives back once it is stored.
pub(crate) struct Recorded {
    call: LlmCall,
    exchange: Option<(String, String)>,
    reservation: Option<Reservation>,
}

/// The queue to the recorder task.
pub(crate) type Recorder = tokio::sync::mpsc::UnboundedSender<Recorded>;

impl Gateway {
    /// Hands a finished call to the recorder, a single writer that stores whatever has queued
    /// up in one transaction, so busy gateways do not pay one SQLite commit per call.
    /// Reservations are given back only after the commit: until then the call's tokens count
    /// against its budgets as reserved, from then on as spent.
    pub(crate) fn record(
        &self,
        call: LlmCall,
        exchange: Option<(String, String)>,
        reservation: Option<Reservation>,
    ) {
        let tx = self.inner.recorder.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Recorded>();
            tokio::spawn(write_records(self.inner.store.clone(), rx));
            tx
        });
        let _ = tx.send(Recorded {
            call,
            exchange,
            reservation,
        });
    }
}

/// The recorder: stores the queued calls in batches of up to 512.
async fn write_records(
    store: berth_store::Store,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Recorded>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let (rows, reservations): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|r| ((r.call, r.exchange), r.reservation))
            .unzip();
        if let Err(e) = store.record_llm_calls(&rows).await {
            tracing::error!(error = %e, calls = rows.len(), "cannot record LLM calls");
        }
        drop(reservations);
    }
}

/// The upstream body, passed through frame by frame while its usage is counted.
pub(crate) struct Metered {
    inner: hyper::body::Incoming,
    tap: UsageTap,
    call: Option<LlmCall>,
    started: std::time::Instant,
    gateway: Gateway,
    /// With prompt recording on: the request, and the response as it passed (bounded).
    recording: Option<(String, Vec<u8>)>,
    /// What the call was expected to use at most (its reservation).
    estimate: Tokens,
    /// Response bytes passed to the agent so far.
    passed: u64,
    reservation: Option<Reservation>,
}

/// What a metered body starts with besides the upstream's body.
pub(crate) struct MeterStart {
    pub provider: Provider,
    pub call: LlmCall,
    pub started: std::time::Instant,
    /// The request as recorded (None: recording is off).
    pub request: Option<String>,
    pub estimate: Tokens,
    pub reservation: Option<Reservation>,
}

impl Metered {
    /// Meters `body`, an SSE stream when `sse`.
    pub(crate) fn new(
        gateway: Gateway,
        body: hyper::body::Incoming,
        sse: bool,
        s: MeterStart,
    ) -> Self {
        Self {
            inner: body,
            tap: UsageTap::new(s.provider, sse),
            call: Some(s.call),
            started: s.started,
            gateway,
            recording: s.request.map(|r| (r, Vec::new())),
            estimate: s.estimate,
            passed: 0,
            reservation: s.reservation,
        }
    }

    fn finish(&mut self, error: Option<String>) {
        let Some(mut call) = self.call.take() else {
            return;
        };
        self.tap.finish();
        let cut_off = error.is_some() && (200..300).contains(&call.status);
        let t = settled_tokens(self.tap.tokens, cut_off, self.estimate, self.passed);
        call.input_tokens = t.input;
        call.output_tokens = t.output;
        call.cache_read_tokens = t.cache_read;
        call.cache_write_tokens = t.cache_write;
        // Priced by the model the upstream says it used; the name the agent asked for is only
        // shown when the upstream named none (then the fallback price applies).
        let priced = self.tap.model.clone();
        let quote = self.gateway.inner.prices.quote(priced.as_deref(), t);
        call.cost_nusd = Some(quote.cost_nusd);
        call.cost_usd = Some(quote.usd());
        call.priced = quote.source.map(|s| s.as_str().to_owned());
        if priced.is_some() {
            call.model = priced;
        }
        call.latency_ms = self.started.elapsed().as_millis() as u64;
        call.error = error;
        let exchange = self
            .recording
            .take()
            .map(|(req, resp)| (req, String::from_utf8_lossy(&resp).into_owned()));
        self.gateway.record(call, exchange, self.reservation.take());
    }
}

/// The tokens a call is charged: what the upstream reported; for a stream cut off before the
/// upstream reported anything (OpenAI reports usage last), the prompt's estimate and what was
/// streamed at 4 bytes a token (at most the output estimate), so hanging up early is not free.
fn settled_tokens(reported: Tokens, cut_off: bool, estimate: Tokens, passed: u64) -> Tokens {
    if !cut_off || reported != Tokens::default() {
        return reported;
    }
    Tokens {
        input: estimate.input,
        output: passed.div_ceil(4).min(estimate.output),
        ..Tokens::default()
    }
}

impl http_body::Body for Metered {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(chunk) = frame.data_ref() {
                    let chunk = chunk.clone();
                    self.tap.feed(&chunk);
                    self.passed = self.passed.saturating_add(chunk.len() as u64);
                    if let Some((_, resp)) = self.recording.as_mut() {
                        let room = RECORD_MAX.saturating_sub(resp.len());
                        resp.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish(Some(format!("upstream stream broke: {e}")));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.finish(None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // The agent hung up before the end (e.g. a cancelled task): record what was seen.
        if self.call.is_some() {
            self.finish(Some("client disconnected before the end".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_off_streams_are_charged() {
        let est = Tokens {
            input: 500,
            output: 4096,
            ..Tokens::default()
        };
        let seen = Tokens {
            input: 20,
            output: 3,
            ..Tokens::default()
        };
        // What the upstream reported counts, cut off or not.
        assert_eq!(settled_tokens(seen, true, est, 999), seen);
        assert_eq!(settled_tokens(seen, false, est, 999), seen);
        // Nothing reported yet: the prompt's estimate and what passed.
        let t = settled_tokens(Tokens::default(), true, est, 401);
        assert_eq!((t.input, t.output), (500, 101));
        let t = settled_tokens(Tokens::default(), true, est, 1 << 30);
        assert_eq!(t.output, 4096);
        // A complete answer without usage (an error body) is not estimated.
        assert_eq!(
            settled_tokens(Tokens::default(), false, est, 401),
            Tokens::default()
        );
    }
}
