//! The link server: accepts node WebSockets, keeps each node's offer and load, relays job
//! events to the consumers waiting on them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use inference_club_core::link::{
    self, CoordinatorMessage, Hello, NodeMessage, PROTOCOL_VERSION, Refused, Welcome,
};
use inference_club_core::manifest::ServiceManifest;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use crate::CoordinatorConfig;
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::nodes::{JobEvent, LiveNode, NodeKey, Outbound};
use crate::store::{Scope, Store};

/// How long a node has to send `hello` after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a link ends when the key it was made with no longer is live: in the close frame (code
/// 1008, policy) and in the coordinator's log.
const KEY_ENDED: &str = "the key this node linked with was revoked, or its member deleted";

/// How long the last words of a link the coordinator ends itself (a close frame, and before it
/// maybe a `refused`) may take to be written before the link is dropped.
const LAST_WORDS_TIMEOUT: Duration = Duration::from_secs(1);

/// Resolves once the key `caller` linked with is no longer live
/// ([`Store::key_is_live`]): checked against the database every `every` (the heartbeat interval,
/// so the check is as fresh across the replicas of a cluster, whose database is shared), and at
/// once when this coordinator forgets the member's remembered keys (one of their keys revoked,
/// their settings changed, their account deleted). A check that fails keeps the link (logged).
async fn key_ended(store: &Store, caller: &Caller, every: Duration) {
    let every = every.max(Duration::from_millis(100));
    let mut forgotten = store.forgotten_members();
    let mut listening = true;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            heard = forgotten.recv(), if listening => match heard {
                Ok(member) if member != caller.user.id => continue,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => {
                    listening = false;
                    continue;
                }
            },
        }
        match store.key_is_live(caller.key.id).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(error) => tracing::warn!(
                operator = %caller.user.handle,
                "cannot check that a node's key is still live: {error}"
            ),
        }
    }
}

/// The close frame of a link whose key ended.
fn key_ended_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code::POLICY,
        reason: KEY_ENDED.into(),
    }))
}

/// `GET /v1/link`: upgrades to the node link for a key with the `provider` scope.
pub async fn upgrade(
    State(store): State<Store>,
    State(fleet): State<Arc<Fleet>>,
    State(limits): State<Arc<Limiter>>,
    State(metrics): State<Arc<Metrics>>,
    State(config): State<Arc<CoordinatorConfig>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if fleet.is_draining() {
        return ApiError::overloaded(
            "this coordinator is shutting down; link to another (the node retries by itself)",
            1,
        )
        .into_response();
    }
    // A node links with an API key; a browser's session (every scope) never links one: a page
    // on the club's site could otherwise link a node as its visitor.
    if auth::bearer(&headers).is_none() {
        return ApiError::unauthorized(
            "A node links with an API key that has the provider scope, sent as \
             `Authorization: Bearer <key>`.",
        )
        .into_response();
    }
    let caller = match auth::require(&store, &headers, Scope::Provider).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    ws.max_message_size(link::MAX_MESSAGE_BYTES)
        .max_frame_size(link::MAX_MESSAGE_BYTES)
        .read_buffer_size(link::BUFFER_BYTES)
        .write_buffer_size(link::BUFFER_BYTES)
        .on_upgrade(move |socket| {
            let parts = Parts {
                store,
                fleet,
                limits,
                metrics,
                heartbeat_interval: config.heartbeat_interval,
            };
            serve(parts, caller, socket)
        })
}

/// What serving one link uses.
struct Parts {
    store: Store,
    fleet: Arc<Fleet>,
    limits: Arc<Limiter>,
    metrics: Arc<Metrics>,
    heartbeat_interval: Duration,
}

/// Checks a hello's manifest: its size against the coordinator's limit, then with core's
/// validator, and redacts it again (the coordinator trusts no node to have done so): every
/// problem is listed. Gives the manifest and its JSON as stored.
fn accept_manifest(
    limits: &Limiter,
    hello: &Hello,
) -> Result<(ServiceManifest, serde_json::Value), Refused> {
    if let Err(reason) = limits.check_manifest(&hello.manifest) {
        return Err(Refused {
            reason,
            errors: Vec::new(),
        });
    }
    if hello.protocol_version < 1 {
        return Err(Refused {
            reason: format!(
                "protocol version {} is not supported (this coordinator speaks {PROTOCOL_VERSION})",
                hello.protocol_version
            ),
            errors: Vec::new(),
        });
    }
    let text = hello.manifest.to_string();
    let manifest = ServiceManifest::parse_and_validate(&text)
        .map(|m| m.redacted())
        .map_err(|error| Refused {
            reason: "the manifest is not valid".into(),
            errors: error.lines(),
        })?;
    let json = serde_json::to_value(&manifest).map_err(|error| Refused {
        reason: format!("the manifest cannot be stored: {error}"),
        errors: Vec::new(),
    })?;
    Ok((manifest, json))
}

/// `welcome` for an accepted hello: the version both speak, who the node is, how often to beat.
fn welcome(
    hello: &Hello,
    operator: &str,
    provider: &str,
    interval: Duration,
) -> CoordinatorMessage {
    CoordinatorMessage::Welcome(Welcome {
        protocol_version: PROTOCOL_VERSION.min(hello.protocol_version),
        operator: operator.to_owned(),
        provider: provider.to_owned(),
        heartbeat_interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
    })
}

/// The provider name of a manifest: `agent.name`, else `agent.hostname`, else `default`.
pub fn provider_name(manifest: &ServiceManifest) -> String {
    manifest
        .agent
        .name
        .clone()
        .or_else(|| manifest.agent.hostname.clone())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "default".into())
}

async fn send(socket: &mut WebSocket, message: &CoordinatorMessage) -> bool {
    match link::encode(message) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

/// The most messages written to a node's link before it is flushed: a burst of jobs shares a
/// write, and a long burst still lets the writer notice a ping or a closed link.
const MAX_MESSAGES_PER_WRITE: usize = 64;

/// Writes `first` and whatever else is already queued for the node (up to
/// [`MAX_MESSAGES_PER_WRITE`]), then flushes them in one write. A message that cannot be
/// encoded is logged and skipped.
async fn write_ready(
    sink: &mut SplitSink<WebSocket, Message>,
    queued: &mut mpsc::Receiver<Outbound>,
    first: Outbound,
) -> Result<(), axum::Error> {
    let mut next = Some(first);
    let mut written = 0;
    while let Some(message) = next.take() {
        let frame = match message {
            Outbound::Binary(bytes) => Message::Binary(bytes.into()),
            Outbound::Message(message) => match link::encode(&message) {
                Ok(text) => Message::Text(text.into()),
                Err(error) => {
                    tracing::warn!("cannot encode a message for a node: {error}");
                    next = queued.try_recv().ok();
                    continue;
                }
            },
        };
        sink.feed(frame).await?;
        written += 1;
        if written < MAX_MESSAGES_PER_WRITE {
            next = queued.try_recv().ok();
        }
    }
    sink.flush().await
}

async fn read_hello(socket: &mut WebSocket) -> Option<Hello> {
    let frame = tokio::time::timeout(HELLO_TIMEOUT, socket.next())
        .await
        .ok()??
        .ok()?;
    match frame {
        Message::Text(text) => match link::decode_node(&text) {
            Ok(NodeMessage::Hello(hello)) => Some(hello),
            _ => None,
        },
        _ => None,
    }
}

async fn serve(state: Parts, caller: Caller, mut socket: WebSocket) {
    let Some(hello) = read_hello(&mut socket).await else {
        let refused = CoordinatorMessage::Refused(Refused {
            reason: "expected hello as the first message".into(),
            errors: Vec::new(),
        });
        send(&mut socket, &refused).await;
        return;
    };
    let (manifest, manifest_json) = match accept_manifest(&state.limits, &hello) {
        Ok(accepted) => accepted,
        Err(refused) => {
            tracing::info!(operator = %caller.user.handle, reason = %refused.reason, "refused a node");
            send(&mut socket, &CoordinatorMessage::Refused(refused)).await;
            return;
        }
    };
    let name = provider_name(&manifest);
    let provider_id = match state
        .store
        .upsert_provider(caller.user.id, &name, &manifest_json)
        .await
    {
        Ok(revision) => revision.provider_id,
        Err(error) => {
            let refused = CoordinatorMessage::Refused(Refused {
                reason: format!("cannot record the provider: {error}"),
                errors: Vec::new(),
            });
            send(&mut socket, &refused).await;
            return;
        }
    };

    // The operator's overrides and kill switch are in force from the first moment.
    let policy = match state.store.provider_policy(provider_id).await {
        Ok(policy) => policy,
        Err(error) => {
            let refused = CoordinatorMessage::Refused(Refused {
                reason: format!("cannot read the provider's policy: {error}"),
                errors: Vec::new(),
            });
            send(&mut socket, &refused).await;
            return;
        }
    };
    let (outgoing, mut to_node) = mpsc::channel::<Outbound>(1024);
    let key = NodeKey {
        operator_id: caller.user.id,
        provider: name.clone(),
    };
    let node = Arc::new(LiveNode::new(
        key,
        caller.user.handle.clone(),
        manifest,
        policy,
        hello.protocol_version,
        outgoing,
    ));
    let interval = state.heartbeat_interval;
    let greeting = welcome(&hello, &caller.user.handle, &name, interval);
    // Routable before the node hears `welcome`: a node that says it is linked is. Jobs sent
    // meanwhile wait in `outgoing`, which the writer drains after the welcome.
    state.fleet.nodes.insert(node.clone());
    // A policy changed between the read above and the insert reached no live node: read again.
    if let Ok(policy) = state.store.provider_policy(provider_id).await {
        node.set_policy(policy);
    }
    if !send(&mut socket, &greeting).await {
        state.fleet.nodes.remove(&node);
        return;
    }
    state.metrics.nodes_online.inc();
    if let Some(cluster) = state.fleet.cluster() {
        cluster.node_linked(&node);
    }
    tracing::info!(operator = %caller.user.handle, provider = %name, "node linked");

    let (mut sink, mut frames) = socket.split();
    // The frames the reader has the writer send last, when the coordinator ends the link.
    let (last_words, mut last_words_to_send) = oneshot::channel::<Vec<Message>>();
    // Writer: messages for the node, and a ping every interval so it knows we are alive.
    let writer_node = node.clone();
    let mut writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(interval);
        let mut last = None;
        loop {
            let sent = tokio::select! {
                message = to_node.recv() => match message {
                    // Nothing more reaches a node whose link is gone (its key may be revoked).
                    Some(_) if writer_node.is_closed() => break,
                    Some(message) => write_ready(&mut sink, &mut to_node, message).await,
                    None => break,
                },
                _ = ping.tick() => sink.send(Message::Ping(Vec::new().into())).await,
                () = writer_node.closed() => break,
                words = &mut last_words_to_send => {
                    last = words.ok();
                    break;
                }
            };
            if sent.is_err() {
                break;
            }
        }
        // The reader hands the last words over before it closes the node, so they are here.
        if let Some(frames) = last.or_else(|| last_words_to_send.try_recv().ok()) {
            for frame in frames {
                if sink.send(frame).await.is_err() {
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });

    // Reader: everything the node says. Silence for two intervals means it is gone.
    let silence = interval * 2 + Duration::from_millis(500);
    // Alongside, the key the link was made with is checked: once it is no longer live, the
    // link ends (so do the jobs on it, as for a lost link).
    let ended = key_ended(&state.store, &caller, interval);
    tokio::pin!(ended);
    // What the writer sends last when the coordinator ends the link itself.
    let mut ending: Option<Vec<Message>> = None;
    loop {
        let next = tokio::select! {
            biased;
            () = &mut ended => {
                tracing::info!(
                    operator = %caller.user.handle,
                    provider = %name,
                    "closing the link: {KEY_ENDED}"
                );
                ending = Some(vec![key_ended_close()]);
                break;
            }
            next = tokio::time::timeout(silence, frames.next()) => next,
        };
        let frame = match next {
            Err(_) => {
                tracing::info!(provider = %name, "node missed two heartbeats");
                break;
            }
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => break,
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(Message::Binary(bytes)))) => {
                node.heard_from();
                match link::split_binary_frame(&bytes) {
                    Ok((job, piece)) => {
                        // Copied: a slice would keep the link's whole read buffer while the
                        // piece waits for a slow consumer.
                        node.deliver(
                            job,
                            JobEvent::Piece(bytes::Bytes::copy_from_slice(piece)),
                            bytes.len(),
                        );
                    }
                    Err(error) => {
                        tracing::warn!(provider = %name, "ignoring a bad binary frame: {error}");
                    }
                }
                continue;
            }
            Ok(Some(Ok(_))) => {
                node.heard_from();
                continue;
            }
        };
        node.heard_from();
        if node.is_closed() {
            break; // replaced by a newer link
        }
        let size = frame.len();
        match link::decode_node(&frame) {
            Ok(NodeMessage::Heartbeat(heartbeat)) => node.set_load(heartbeat.load),
            Ok(NodeMessage::Chunk(chunk)) => {
                node.deliver(chunk.job, JobEvent::Chunk(chunk.chunk), size);
            }
            Ok(NodeMessage::Answer(answer)) => {
                node.deliver(answer.job, JobEvent::Answer(Box::new(answer.answer)), size);
            }
            Ok(NodeMessage::Output(output)) => {
                node.deliver(output.job, JobEvent::Output(output.output), size);
            }
            Ok(NodeMessage::Bytes(bytes)) => {
                node.deliver(bytes.job, JobEvent::Bytes(bytes.body), size);
            }
            Ok(NodeMessage::Done(done)) => {
                node.deliver(done.job, JobEvent::Done, size);
                state.fleet.nodes.notify_changed();
            }
            Ok(NodeMessage::Error(failed)) => {
                node.deliver(failed.job, JobEvent::Failed(failed.error), size);
                state.fleet.nodes.notify_changed();
            }
            Ok(NodeMessage::Hello(again)) => match accept_manifest(&state.limits, &again) {
                // A new manifest is only taken from a node whose key is still live.
                Ok(_) if matches!(state.store.key_is_live(caller.key.id).await, Ok(false)) => {
                    tracing::info!(
                        operator = %caller.user.handle,
                        provider = %name,
                        "refused a new hello and closing the link: {KEY_ENDED}"
                    );
                    let refused = CoordinatorMessage::Refused(Refused {
                        reason: KEY_ENDED.into(),
                        errors: Vec::new(),
                    });
                    let mut words = Vec::new();
                    if let Ok(text) = link::encode(&refused) {
                        words.push(Message::Text(text.into()));
                    }
                    words.push(key_ended_close());
                    ending = Some(words);
                    break;
                }
                Ok((manifest, json)) if provider_name(&manifest) == name => {
                    if let Err(error) = state
                        .store
                        .upsert_provider(caller.user.id, &name, &json)
                        .await
                    {
                        tracing::warn!("cannot record a manifest revision: {error}");
                    }
                    state.fleet.nodes.set_manifest(&node, manifest);
                    if let Some(cluster) = state.fleet.cluster() {
                        cluster.announce(&node);
                    }
                    let _ = node.try_send(welcome(&again, &caller.user.handle, &name, interval));
                }
                Ok(_) => {
                    let _ = node.try_send(CoordinatorMessage::Refused(Refused {
                        reason: "a linked node cannot change its agent.name; reconnect instead"
                            .into(),
                        errors: Vec::new(),
                    }));
                }
                Err(refused) => {
                    let _ = node.try_send(CoordinatorMessage::Refused(refused));
                }
            },
            Ok(NodeMessage::Goodbye(goodbye)) => {
                tracing::info!(provider = %name, reason = %goodbye.reason, "node said goodbye");
                break;
            }
            // A message of a newer protocol than this coordinator speaks.
            Ok(other) => {
                tracing::debug!(provider = %name, "ignoring an unknown message: {other:?}")
            }
            Err(error) => tracing::warn!(provider = %name, "ignoring a bad frame: {error}"),
        }
    }
    // Handed over before the node is closed below: the writer, seeing it closed, sends them.
    let say_last_words = ending.is_some_and(|words| last_words.send(words).is_ok());
    state.fleet.nodes.remove(&node);
    state.metrics.nodes_online.dec();
    if let Some(cluster) = state.fleet.cluster()
        && state.fleet.nodes.get(&node.key).is_none()
    {
        cluster.node_unlinked(&node);
    }
    if say_last_words {
        let _ = tokio::time::timeout(LAST_WORDS_TIMEOUT, &mut writer).await;
    }
    writer.abort();
    if let Err(error) = state
        .store
        .touch_provider(provider_id, chrono::Utc::now())
        .await
    {
        tracing::warn!("cannot record when the node was last seen: {error}");
    }
    tracing::info!(provider = %name, "node offline");
}
