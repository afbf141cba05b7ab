//! The path every inference endpoint shares: admit the caller (key, rate, requests in flight),
//! read the body within its limit, then record the request and dispatch it. The endpoint
//! modules parse and check their own bodies and shape their own answers.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use inference_club_core::provider::RequestContext;
use inference_club_core::record::{InferenceRecord, RecordId, Visibility};
use tokio_util::sync::CancellationToken;

use super::header_visibility;
use super::recording::{RecordKeeper, Recorder};
use super::with_request_id;
use crate::auth::{self, Caller};
use crate::dispatch::{self, Answer, Dispatcher, Work};
use crate::error::ApiError;
use crate::limits::{self, InFlightSlot, Limiter, RateState};
use crate::store::{Scope, StoreError};

/// What serving an inference request uses.
#[derive(Debug, Clone)]
pub(crate) struct Parts {
    pub limits: Arc<Limiter>,
    pub dispatcher: Arc<Dispatcher>,
    pub recorder: Arc<Recorder>,
}

/// A request let in: who asks, since when, and how it is to be served.
pub(crate) struct Admission {
    pub caller: Caller,
    /// When the request arrived.
    pub received: Instant,
    /// The member's in-flight slot, held until the answer is complete (uncounted for a
    /// batch's line: batches do not use up their owner's concurrency).
    pub slot: InFlightSlot,
    /// The batch whose line this is: its record names the batch, and it never waits in the
    /// queue for a node (interactive requests go first; the batch tries again later).
    pub batch: Option<String>,
}

/// The first step of every inference request: the caller's key (401/403), its request rate
/// (429) and the member's requests in flight (429), before anything is read, recorded or
/// routed. Gives the admission and the key's rate.
async fn admit(parts: &Parts, headers: &HeaderMap) -> Result<(Admission, RateState), Response> {
    let received = Instant::now();
    let caller = auth::require(parts.recorder.store(), headers, Scope::Inference)
        .await
        .map_err(IntoResponse::into_response)?;
    let rate = parts
        .limits
        .inference(&caller.key.id.to_string())
        .map_err(IntoResponse::into_response)?;
    let slot = parts
        .limits
        .enter(caller.user.id)
        .map_err(|throttled| limits::with_rate(throttled.into_response(), Some(rate)))?;
    let admission = Admission {
        caller,
        received,
        slot,
        batch: None,
    };
    Ok((admission, rate))
}

/// Serves an inference request: admits the caller ([`admit`]; a refusal is the answer), runs
/// `serve` (whose `Err` is an answer too, refusing the request), and adds the key's
/// `X-RateLimit-*` headers to whatever is answered.
pub(crate) async fn admitted<F, Fut>(parts: &Parts, headers: &HeaderMap, serve: F) -> Response
where
    F: FnOnce(Admission) -> Fut,
    Fut: Future<Output = Result<Response, Response>>,
{
    let (admission, rate) = match admit(parts, headers).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let response = match serve(admission).await {
        Ok(response) | Err(response) => response,
    };
    limits::with_rate(response, Some(rate))
}

/// A `200` answer streaming server-sent events from `body`, naming record `id` (an error
/// answer if it cannot be built).
pub(crate) fn event_stream(
    body: impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
    id: RecordId,
) -> Response {
    let response = Response::builder()
        .status(axum::http::StatusCode::OK)
        .header(axum::http::header::CONTENT_TYPE, "text/event-stream")
        .header(axum::http::header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(body));
    match response {
        Ok(response) => with_request_id(response, id),
        Err(error) => shape_error("building a stream", error, id),
    }
}

/// Reads `body` whole, refusing it with 413 when it is larger than `limit` bytes (a declared
/// length over the limit at once, without waiting for the body); `setting` names the limit in
/// the message.
pub(crate) async fn read_body(body: Body, limit: usize, setting: &str) -> Result<Bytes, Response> {
    let too_large = || {
        ApiError::too_large(format!("the body is larger than {limit} bytes ({setting})"))
            .into_response()
    };
    let declared = axum::body::HttpBody::size_hint(&body).lower();
    if usize::try_from(declared).map_or(true, |declared| declared > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

/// The visibility a request asks for: its body's `visibility` field, else the
/// `x-club-visibility` header, else the member's default (400 for a bad header).
pub(crate) fn visibility(
    from_body: Option<Visibility>,
    headers: &HeaderMap,
    caller: &Caller,
) -> Result<Visibility, ApiError> {
    let from_header = header_visibility(headers)?;
    Ok(from_body
        .or(from_header)
        .unwrap_or(caller.user.default_visibility))
}

/// A request recorded and dispatched: the keeper of its record and the answer flowing in.
pub(crate) struct Started {
    pub keeper: RecordKeeper,
    pub answer: Answer,
    pub id: RecordId,
}

/// Records `record` and dispatches `work` for it. A whole answer's insert is held for its final
/// save to fold into (see the store's writer); a stream's is committed before its first byte
/// leaves, and a batch line's before its answer is taken. The final save is queued for the
/// writer's next commit, except where it must be committed first (see below). While record
/// writes are failing, a new request is refused (503) before anything is routed. On failure
/// the record is final (`failed`) and the answer is the error, naming the record.
pub(crate) async fn start(
    parts: &Parts,
    admission: Admission,
    mut record: InferenceRecord,
    work: Work<'_>,
    streamed: bool,
) -> Result<Started, Response> {
    let Admission {
        caller,
        received,
        slot,
        batch,
    } = admission;
    let store = parts.recorder.store();
    if store.record_writes_failing() {
        return Err(ApiError::from(StoreError::WritesFailing).into_response());
    }
    let waits = batch.is_none();
    record.batch = batch;
    let id = record.id;
    // A stream names its record before the answer is complete: its insert is committed while
    // the request is dispatched, and awaited before the first byte leaves (so a crash of the
    // coordinator from there on leaves the record, to be failed at the next start). So is a
    // batch line's (a line cut off by a crash is recorded as such, and run again). A whole
    // answer names it only with the answer: its insert is held for the final save to fold into.
    let inserted = if streamed || !waits {
        match store.insert_record_now(&record).await {
            Ok(pending) => Some(pending),
            Err(error) => return Err(ApiError::from(error).into_response()),
        }
    } else {
        if let Err(error) = store.insert_record_soon(&record) {
            return Err(ApiError::from(error).into_response());
        }
        None
    };
    let cancel = CancellationToken::new();
    let mut context = RequestContext::new(id.to_string()).with_consumer(caller.user.handle.clone());
    context.cancel = cancel.clone();
    // A whole answer may come from the node in fewer, merged chunks.
    context.whole = !streamed;
    // The keeper holds the record from here on: if the consumer goes away while the request
    // waits in the queue or for its first output, dropping it makes the record cancelled.
    // The final save is committed before the answer goes on where a reader may ask for the
    // record past this store: a batch line's output names it, and on a store that replicas
    // share another replica may be asked for it next. Others are queued for the writer.
    let durable = !waits || store.replica().is_some();
    let mut keeper = parts
        .recorder
        .keeper(record, received, streamed, cancel, slot)
        .durable(durable);
    let preference = caller.user.routing_preference;
    let dispatched = match keeper.record.as_mut() {
        Some(record) => {
            let placing = dispatch::Placing { preference, waits };
            dispatch::dispatch_work(&parts.dispatcher, work, record, &context, placing).await
        }
        None => Err(ApiError::internal("dispatch", "the record is gone")),
    };
    if let Some(inserted) = inserted
        && let Err(error) = inserted.committed().await
    {
        // No record, so nothing to save: the keeper only cancels the job it started.
        keeper.record = None;
        return Err(ApiError::from(error).into_response());
    }
    match dispatched {
        Ok(answer) => {
            // Saved as running, with the node serving it and the attempts so far: what a crash
            // of the coordinator leaves behind (to become failed at the next start). A progress
            // save: not awaited, and not written at all if the request ends first.
            if let Some(record) = keeper.record.as_mut() {
                parts.recorder.forget_departed(record);
                if let Err(error) = parts.recorder.store().save_progress(record) {
                    tracing::error!(id = %record.id, "cannot save a record: {error}");
                }
            }
            Ok(Started { keeper, answer, id })
        }
        // A batch's line that found every node busy: nothing ran; it tries again later, and
        // leaves no record of the try.
        Err(error) if !waits && error.error.code.as_deref() == Some("overloaded") => {
            keeper.record = None;
            if let Err(error) = parts
                .recorder
                .store()
                .delete_record(id, caller.user.id)
                .await
            {
                tracing::warn!(%id, "cannot remove the record of a batch line that did not run: {error}");
            }
            Err(error.into_response())
        }
        Err(error) => {
            keeper.fail(error.error.message.clone()).await;
            Err(with_request_id(error.into_response(), id))
        }
    }
}

/// An answer the API could not shape: the error, naming the record.
pub(crate) fn shape_error(context: &str, error: impl std::fmt::Display, id: RecordId) -> Response {
    with_request_id(ApiError::internal(context, error).into_response(), id)
}
