//! Running one job: from the coordinator's `job` message to `done` or `error`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use inference_club_core::link::{Job, JobChunk, JobDone, JobError, JobFailed, NodeMessage};
use inference_club_core::openai::ChatCompletionAggregator;
use inference_club_core::provider::{Provider, ProviderError, RequestContext};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::call::Outgoing;
use super::job_log::{JobLog, JobLogEntry};

/// Serves `job` on `provider`, sending each chunk to `out` as the engine produces it and ending
/// with `done` or `error`. Cancelling `cancel` drops the engine request.
pub(crate) async fn serve_job(
    job: Job,
    provider: Arc<dyn Provider>,
    out: mpsc::Sender<Outgoing>,
    cancel: CancellationToken,
    log: JobLog,
) {
    let started = Instant::now();
    let id = job.job;
    let model = job.request.model.clone();
    let request_json = log
        .logs_content()
        .then(|| serde_json::to_value(&job.request).ok())
        .flatten();
    let mut context = RequestContext::new(job.request_id.clone());
    context.consumer = job.consumer.clone();
    context.cancel = cancel.clone();
    context.deadline = job
        .deadline_ms
        .map(|ms| started + Duration::from_millis(ms));

    let mut first_token_ms = None;
    let mut aggregate = ChatCompletionAggregator::new();
    let outcome: Result<(), ProviderError> = async {
        // Cancellation wins over an engine that is slow to answer or silent between chunks:
        // returning drops the engine request (and its stream) at once.
        let mut stream = tokio::select! {
            () = cancel.cancelled() => return Err(ProviderError::Cancelled),
            opened = provider.chat(job.request, context) => opened?,
        };
        loop {
            let item = tokio::select! {
                () = cancel.cancelled() => return Err(ProviderError::Cancelled),
                item = stream.next() => item,
            };
            let Some(item) = item else { break };
            let chunk = item?;
            if first_token_ms.is_none() && chunk.has_output() {
                first_token_ms = Some(millis(started.elapsed()));
            }
            aggregate.push(&chunk);
            let message = NodeMessage::Chunk(JobChunk { job: id, chunk });
            tokio::select! {
                () = cancel.cancelled() => return Err(ProviderError::Cancelled),
                sent = out.send(message.into()) => sent.map_err(|_| ProviderError::Cancelled)?,
            }
        }
        Ok(())
    }
    .await;

    let total_ms = millis(started.elapsed());
    let usage = aggregate.usage().cloned();
    let completion = aggregate.finish();
    let (status, error) = match &outcome {
        Ok(()) => ("succeeded", None),
        Err(ProviderError::Cancelled) => ("cancelled", Some(ProviderError::Cancelled.to_string())),
        Err(e) => ("failed", Some(e.to_string())),
    };
    log.record(JobLogEntry {
        time: Utc::now(),
        request_id: job.request_id,
        consumer: job.consumer,
        model,
        status,
        error,
        prompt_tokens: usage.as_ref().map(|u| u.prompt_tokens),
        completion_tokens: usage.as_ref().map(|u| u.completion_tokens),
        first_token_ms,
        total_ms,
        request: request_json,
        answer: log.logs_content().then(|| completion.text()).flatten(),
    });
    let last = match outcome {
        Ok(()) => NodeMessage::Done(JobDone {
            job: id,
            usage,
            service: None,
            first_token_ms,
            total_ms,
        }),
        Err(error) => NodeMessage::Error(JobFailed {
            job: id,
            error: JobError::from(&error),
        }),
    };
    // The link may be gone already; then there is nobody to tell.
    let _ = out.send(last.into()).await;
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
