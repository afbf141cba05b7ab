//! The records of inference requests as the API keeps them: one per request, final exactly once
//! (succeeded, failed, or cancelled when the consumer goes away), saved durably, and counted in
//! the metrics.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use inference_club_core::openai::{
    ChatCompletion, ChatCompletionAggregator, ChatCompletionChunk, ConsumerEvents,
};
use inference_club_core::provider::ProviderError;
use inference_club_core::record::InferenceRecord;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::limits::InFlightSlot;
use crate::metrics::{Metrics, RequestLabels};
use crate::nodes::NodeRegistry;
use crate::store::Store;

/// Saves and counts final records. Records abandoned mid-answer (the consumer went away) are
/// handed to a task of its own, which saves them: a `Drop` cannot wait for the database.
#[derive(Debug)]
pub(crate) struct Recorder {
    store: Store,
    nodes: Arc<NodeRegistry>,
    metrics: Arc<Metrics>,
    abandoned: mpsc::UnboundedSender<ToSaver>,
}

/// What the task that saves abandoned records is handed.
#[derive(Debug)]
enum ToSaver {
    /// A record to save.
    Abandoned(Box<Abandoned>),
    /// Answer once every record handed before is saved.
    Settle(tokio::sync::oneshot::Sender<()>),
}

/// A record made final (cancelled) when its keeper was dropped, waiting to be saved.
#[derive(Debug)]
struct Abandoned {
    record: InferenceRecord,
    streamed: bool,
    received: Instant,
    durable: bool,
}

impl Recorder {
    /// A recorder on `store`, and the task that saves abandoned records (it ends with the
    /// recorder). `nodes` names the operators who left while their records were in flight.
    pub fn start(store: Store, nodes: Arc<NodeRegistry>, metrics: Arc<Metrics>) -> Arc<Self> {
        let (abandoned, mut receiver) = mpsc::unbounded_channel::<ToSaver>();
        let recorder = Self {
            store,
            nodes,
            metrics,
            abandoned,
        };
        let saver = Saver {
            store: recorder.store.clone(),
            nodes: recorder.nodes.clone(),
            metrics: recorder.metrics.clone(),
        };
        tokio::spawn(async move {
            while let Some(message) = receiver.recv().await {
                match message {
                    ToSaver::Abandoned(abandoned) => {
                        let mut abandoned = *abandoned;
                        saver.save(&mut abandoned.record, abandoned.durable).await;
                        saver.count(&abandoned.record, abandoned.streamed, abandoned.received);
                    }
                    ToSaver::Settle(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Arc::new(recorder)
    }

    /// Returns once every record abandoned before this call is saved (at shutdown).
    pub async fn settle(&self) {
        let (done, settled) = tokio::sync::oneshot::channel();
        if self.abandoned.send(ToSaver::Settle(done)).is_ok() {
            let _ = settled.await;
        }
    }

    /// The store records are saved in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Forgets operators who deleted their account while `record` was in flight.
    pub fn forget_departed(&self, record: &mut InferenceRecord) {
        self.nodes.forget_departed(record);
    }

    /// A keeper for `record`, received at `received`, answered whole or `streamed`; `cancel`
    /// is cancelled when the keeper goes, and the member's in-flight `slot` is held until then.
    pub fn keeper(
        self: &Arc<Self>,
        record: InferenceRecord,
        received: Instant,
        streamed: bool,
        cancel: CancellationToken,
        slot: InFlightSlot,
    ) -> RecordKeeper {
        RecordKeeper {
            recorder: self.clone(),
            record: Some(record),
            aggregate: ChatCompletionAggregator::new(),
            unread: Unread::default(),
            received,
            streamed,
            cancel,
            durable: false,
            _slot: slot,
        }
    }

    fn saver(&self) -> Saver {
        Saver {
            store: self.store.clone(),
            nodes: self.nodes.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// What saving and counting a final record takes.
struct Saver {
    store: Store,
    nodes: Arc<NodeRegistry>,
    metrics: Arc<Metrics>,
}

impl Saver {
    /// Saves a final record: durable when this returns if `durable`, otherwise queued for the
    /// writer's next commit. When the database refuses for a reason that may pass (full,
    /// restarting), the save is tried again in the background until it lands. Operators who
    /// deleted their account while it was in flight are forgotten in it first.
    async fn save(&self, record: &mut InferenceRecord, durable: bool) {
        self.nodes.forget_departed(record);
        let saved = if durable {
            self.store.save_record_or_retry(record).await
        } else {
            self.store.save_record_queued(record).await
        };
        match saved {
            Ok(()) => {}
            Err(error) if error.is_retryable() => {
                tracing::warn!(id = %record.id, "cannot save a record now, trying again: {error}");
            }
            Err(error) => tracing::error!(id = %record.id, "cannot save a record: {error}"),
        }
    }

    /// Counts a final record in the request and latency metrics.
    fn count(&self, record: &InferenceRecord, streamed: bool, received: Instant) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                // The model as routed (a name some node's manifest declares), not as the engine
                // names it: an engine could name a new model in every answer.
                model: match record.served_by {
                    Some(_) => record.model_requested.to_ascii_lowercase(),
                    None => "none".into(),
                },
                status: record.status().as_str().to_owned(),
                mode: if streamed { "stream" } else { "whole" }.to_owned(),
            })
            .inc();
        self.metrics
            .latency
            .observe(received.elapsed().as_secs_f64());
    }
}

/// Keeps the record while the answer flows: folds chunks into it, and makes it final exactly
/// once — on success, on failure, or (when dropped early, as when the consumer goes away) as
/// cancelled.
pub(crate) struct RecordKeeper {
    recorder: Arc<Recorder>,
    /// The record, until it is final; `None` once it is (or when there is none to keep).
    pub record: Option<InferenceRecord>,
    aggregate: ChatCompletionAggregator,
    /// Events forwarded as they are, not read yet: the node's answer stands for them, unless
    /// the stream ends without one.
    unread: Unread,
    received: Instant,
    streamed: bool,
    cancel: CancellationToken,
    /// The final save is committed before [`RecordKeeper::finish`] returns.
    durable: bool,
    /// The member's in-flight slot, held until the answer is complete.
    _slot: InFlightSlot,
}

impl RecordKeeper {
    /// The same keeper, its final save committed before [`RecordKeeper::finish`] (and
    /// [`RecordKeeper::fail`]) return when `durable`; otherwise it is queued for the store's
    /// writer, which commits it with its next batch.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Folds a chunk of the answer into the record (the first output stamps the time to first
    /// token).
    pub fn observe(&mut self, chunk: &ChatCompletionChunk) {
        if self
            .record
            .as_ref()
            .is_some_and(|r| r.timing.first_token_at.is_none())
            && inference_club_core::routing::failover::is_output(chunk)
        {
            self.first_output();
        }
        self.aggregate.push(chunk);
    }

    /// Notes events forwarded to the consumer as the node wrote them (`output`: they hold
    /// output, and the first such stamps the time to first token). They are read only if no
    /// answer ([`RecordKeeper::observe_answer`]) comes to stand for them, or once many are
    /// kept.
    pub fn observe_events(&mut self, sse: &[u8], output: bool) {
        if output {
            self.first_output();
        }
        if self.unread.keep(sse) {
            self.unread.fold_into(&mut self.aggregate);
        }
    }

    /// Takes what the node says its answer added up to: it replaces whatever was observed.
    pub fn observe_answer(&mut self, answer: &ChatCompletionChunk) {
        self.unread = Unread::default();
        self.aggregate = ChatCompletionAggregator::new();
        self.aggregate.push(answer);
    }

    /// Notes an output of a call (whatever it holds, it counts as the first token) and folds
    /// `chunk` into the record: the output's text, finish reason and usage as a chat chunk.
    pub fn observe_output(&mut self, chunk: Option<&ChatCompletionChunk>) {
        self.first_output();
        if let Some(chunk) = chunk {
            self.aggregate.push(chunk);
        }
    }

    /// Stamps the time to first token, if this is the first output.
    fn first_output(&mut self) {
        if let Some(record) = &mut self.record
            && record.timing.first_token_at.is_none()
        {
            record.first_token(Utc::now());
            self.recorder
                .metrics
                .time_to_first_token
                .observe(self.received.elapsed().as_secs_f64());
        }
    }

    /// Makes the record `failed` before any output (no node could take the request) and saves
    /// it before returning.
    pub async fn fail(mut self, reason: String) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        let _ = record.failed(reason, None, Utc::now());
        let saver = self.recorder.saver();
        saver.save(&mut record, self.durable).await;
        saver.count(&record, self.streamed, self.received);
    }

    /// The answer assembled so far, taking it out of the keeper (no copy).
    fn take_completion(&mut self) -> ChatCompletion {
        std::mem::take(&mut self.unread).fold_into(&mut self.aggregate);
        std::mem::take(&mut self.aggregate).finish()
    }

    /// Makes the record final with `outcome` and saves it (durably) before returning; gives
    /// back the record and the assembled answer.
    pub async fn finish(
        mut self,
        outcome: Result<(), &ProviderError>,
    ) -> Option<(InferenceRecord, ChatCompletion)> {
        let mut record = self.record.take()?;
        let completion = self.take_completion();
        let now = Utc::now();
        let _ = match outcome {
            Ok(()) => record.succeeded(&completion, now),
            Err(ProviderError::Cancelled) => record.cancelled("cancelled", Some(&completion), now),
            Err(error) => record.failed(error.to_string(), Some(&completion), now),
        };
        let saver = self.recorder.saver();
        saver.save(&mut record, self.durable).await;
        saver.count(&record, self.streamed, self.received);
        Some((record, completion))
    }
}

/// Events kept unread ([`RecordKeeper::observe_events`]), copied into one buffer.
#[derive(Debug, Default)]
struct Unread {
    events: Vec<u8>,
}

/// How many bytes of events a keeper keeps unread before it reads them: a long answer is
/// folded into its record as it goes, so that what is kept stays small.
const MAX_UNREAD_BYTES: usize = 1024 * 1024;

impl Unread {
    /// Keeps `sse`; `true` when what is kept should be read now.
    fn keep(&mut self, sse: &[u8]) -> bool {
        self.events.extend_from_slice(sse);
        self.events.len() > MAX_UNREAD_BYTES
    }

    /// Reads what is kept into `aggregate`, and forgets it.
    fn fold_into(&mut self, aggregate: &mut ChatCompletionAggregator) {
        for chunk in ConsumerEvents::chunks_of(&self.events) {
            aggregate.push(&chunk);
        }
        self.events.clear();
    }
}

impl Drop for RecordKeeper {
    fn drop(&mut self) {
        self.cancel.cancel();
        let Some(mut record) = self.record.take() else {
            return;
        };
        let completion = self.take_completion();
        let _ = record.cancelled(
            "the consumer went away before the answer was complete",
            Some(&completion),
            Utc::now(),
        );
        // The saver task ends only with the recorder, which this keeper holds: it is there.
        let _ = self
            .recorder
            .abandoned
            .send(ToSaver::Abandoned(Box::new(Abandoned {
                record,
                streamed: self.streamed,
                received: self.received,
                durable: self.durable,
            })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_club_core::openai::ChunkDelta;

    /// Forwarded events are kept as they came until there are more than [`MAX_UNREAD_BYTES`]:
    /// then they are read into the answer, and what is kept starts again.
    #[test]
    fn unread_events_are_read_once_past_the_limit() {
        let events = ConsumerEvents {
            completion_id: "chatcmpl-r".into(),
            include_usage: false,
        };
        let mut frame = Vec::new();
        let mut chunk = ChatCompletionChunk::new("e", "m", 1)
            .with_delta(ChunkDelta::content("x".repeat(64 * 1024)));
        events.write(&mut chunk, &mut frame).unwrap();
        let mut unread = Unread::default();
        let mut aggregate = ChatCompletionAggregator::new();
        let mut kept = 0;
        while !unread.keep(&frame) {
            kept += 1;
            assert!(kept < 100, "never read");
        }
        assert_eq!(kept, MAX_UNREAD_BYTES / frame.len());
        unread.fold_into(&mut aggregate);
        assert!(unread.events.is_empty());
        let text = aggregate.finish().text().unwrap_or_default();
        assert_eq!(text.len(), (kept + 1) * 64 * 1024);
    }
}
