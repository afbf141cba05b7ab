//! The one dispatch path every endpoint uses: choose a node with core's routing policy, send the
//! job, fail over before the first output, and wait in a bounded, fair queue when every node
//! that could serve the request is full.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use inference_club_core::openai::ChatCompletionRequest;
use inference_club_core::provider::{ChunkStream, Provider, ProviderError, RequestContext};
use inference_club_core::record::{InferenceRecord, ServedBy};
use inference_club_core::routing::{self, Availability, Candidate};
use inference_club_provider::failover;

use super::Coordinator;
use super::error::ApiError;
use super::nodes::{LiveNode, NodeSlot, RemoteNode};

/// Waiting requests and the lock that makes selection and reservation one step.
#[derive(Debug, Default)]
pub struct DispatchQueues {
    select: Mutex<()>,
    turnstiles: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    waiting: AtomicUsize,
    tiebreak: AtomicUsize,
}

/// The outcome of ranking the online nodes for one request.
enum Pick {
    Node(Arc<LiveNode>, NodeSlot, String),
    Wait,
    Fail(Availability),
}

impl DispatchQueues {
    fn turnstile(&self, model: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.turnstiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(model.to_ascii_lowercase())
            .or_default()
            .clone()
    }
}

/// Ranks the online nodes for `model` and `consumer`, and reserves a slot on the best one.
fn pick(
    state: &Coordinator,
    model: &str,
    consumer: Option<&str>,
    tried: &[usize],
    nodes: &[Arc<LiveNode>],
) -> Pick {
    let queues = &state.queues;
    let _selecting = queues.select.lock().unwrap_or_else(PoisonError::into_inner);
    let candidates: Vec<Candidate<usize>> = nodes
        .iter()
        .enumerate()
        .map(|(index, node)| {
            let offer = node.offer();
            let found = offer.find_model(model);
            Candidate {
                key: index,
                serves_model: found.is_some(),
                admits_consumer: found.is_some_and(|m| m.access.admits(&node.operator, consumer)),
                online: !node.is_closed(),
                in_flight: node.in_flight(),
                max_concurrent: offer.capacity,
                recent_ttft: node.recent_ttft(),
            }
        })
        .collect();
    let tiebreak = queues.tiebreak.fetch_add(1, Ordering::Relaxed) as u64;
    let ranking = routing::rank(&candidates, tried, tiebreak);
    match (ranking.availability(), ranking.first()) {
        (Availability::HasRoom, Some(&index)) => match nodes.get(index) {
            Some(node) => {
                let service = node
                    .offer()
                    .find_model(model)
                    .map(|m| m.service.clone())
                    .unwrap_or_default();
                Pick::Node(node.clone(), node.reserve(), service)
            }
            None => Pick::Fail(Availability::Offline),
        },
        (Availability::AllFull, _) => Pick::Wait,
        (availability, _) => Pick::Fail(availability),
    }
}

fn unplaceable(availability: Availability, model: &str, last: Option<ProviderError>) -> ApiError {
    match availability {
        Availability::NotServed | Availability::Offline => {
            ApiError::from_provider(&ProviderError::ModelNotFound {
                model: model.to_owned(),
            })
        }
        Availability::NotAdmitted => ApiError::forbidden(
            "access_denied",
            format!("no node serving `{model}` admits you (their operators restrict access)"),
        ),
        Availability::AllFull => ApiError::overloaded(
            format!("every node serving `{model}` is busy; try again shortly"),
            2,
        ),
        Availability::Exhausted | Availability::HasRoom => match last {
            Some(error) => ApiError::from_provider(&error),
            None => ApiError::from_provider(&ProviderError::Unavailable {
                status: None,
                message: format!("no node serving `{model}` could answer"),
            }),
        },
    }
}

/// Dispatches `request` for `record`'s consumer: returns the stream from the first node that
/// produces output (or ends), with the record's attempts filled in; or the error to answer
/// with, after every candidate was tried or the queue timed out.
pub async fn dispatch(
    state: &Coordinator,
    request: &ChatCompletionRequest,
    record: &mut InferenceRecord,
    context: &RequestContext,
) -> Result<ChunkStream, ApiError> {
    let model = request.model.clone();
    let consumer = record.consumer.clone();
    let deadline = Instant::now() + state.config.queue_timeout;
    let mut tried: Vec<usize> = Vec::new();
    let mut last_error: Option<ProviderError> = None;
    // The node list is fixed for the request: failover indexes into it.
    let mut nodes = state.nodes.online();
    let mut queued = false;
    loop {
        if context.cancel.is_cancelled() {
            return Err(ApiError::from_provider(&ProviderError::Cancelled));
        }
        let (node, slot, service) = match pick(state, &model, consumer.as_deref(), &tried, &nodes) {
            Pick::Node(node, slot, service) => (node, slot, service),
            Pick::Fail(availability) => return Err(unplaceable(availability, &model, last_error)),
            Pick::Wait => {
                if !queued {
                    queued = true;
                    state.metrics.queued.inc();
                }
                wait_for_room(state, &model, consumer.as_deref(), deadline).await?;
                nodes = state.nodes.online();
                tried.clear();
                continue;
            }
        };
        let served_by = ServedBy {
            operator: node.operator.clone(),
            provider: node.key.provider.clone(),
            service: Some(service).filter(|s| !s.is_empty()),
        };
        // A record that is final cannot be dispatched again; that cannot happen here.
        let _ = record.dispatched(served_by, Utc::now());
        let started = Instant::now();
        let opened = match RemoteNode(node.clone())
            .chat(request.clone(), context.clone())
            .await
        {
            Ok(chunks) => failover::read_until_output(chunks).await,
            Err(error) => Err(error),
        };
        match opened {
            Ok(opened) => {
                if opened.output_started() {
                    node.record_ttft(started.elapsed());
                }
                return Ok(opened.into_stream(slot));
            }
            Err(error) if error.is_retryable() => {
                tracing::info!(provider = %node.key.provider, %error, "failing over");
                state.metrics.failovers.inc();
                record.attempt_failed(error.kind(), error.to_string());
                node.record_ttft(started.elapsed().max(Duration::from_secs(10)));
                if let Some(index) = nodes.iter().position(|n| Arc::ptr_eq(n, &node)) {
                    tried.push(index);
                }
                last_error = Some(error);
            }
            Err(error) => {
                record.attempt_failed(error.kind(), error.to_string());
                return Err(ApiError::from_provider(&error));
            }
        }
    }
}

/// Waits, in order of arrival per model, until a node serving `model` has room; 503 with
/// `Retry-After` when the queue is full or the wait runs out.
async fn wait_for_room(
    state: &Coordinator,
    model: &str,
    consumer: Option<&str>,
    deadline: Instant,
) -> Result<(), ApiError> {
    let queues = &state.queues;
    let busy = || {
        ApiError::overloaded(
            format!("every node serving `{model}` is busy; try again shortly"),
            2,
        )
    };
    if queues.waiting.fetch_add(1, Ordering::AcqRel) >= state.config.max_queued {
        queues.waiting.fetch_sub(1, Ordering::AcqRel);
        return Err(busy());
    }
    let result = async {
        let turnstile = queues.turnstile(model);
        let deadline = tokio::time::Instant::from_std(deadline);
        let _turn = tokio::time::timeout_at(deadline, turnstile.lock())
            .await
            .map_err(|_| busy())?;
        loop {
            let nodes = state.nodes.online();
            let has_room = {
                let candidates: Vec<Candidate<usize>> = nodes
                    .iter()
                    .enumerate()
                    .filter_map(|(index, node)| {
                        let offer = node.offer();
                        let found = offer.find_model(model)?;
                        Some(Candidate {
                            key: index,
                            serves_model: true,
                            admits_consumer: found.access.admits(&node.operator, consumer),
                            online: !node.is_closed(),
                            in_flight: node.in_flight(),
                            max_concurrent: offer.capacity,
                            recent_ttft: None,
                        })
                    })
                    .collect();
                !matches!(
                    routing::rank(&candidates, &[], 0).availability(),
                    Availability::AllFull
                )
            };
            if has_room {
                return Ok(());
            }
            let tick = tokio::time::sleep(Duration::from_millis(20));
            tokio::select! {
                () = state.nodes.changed() => {}
                () = tick => {}
                () = tokio::time::sleep_until(deadline) => return Err(busy()),
            }
        }
    }
    .await;
    queues.waiting.fetch_sub(1, Ordering::AcqRel);
    result
}
