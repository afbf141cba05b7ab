//! The security suite: each claim of `docs/security.md` as its own test, against a real
//! coordinator on 127.0.0.1 (SQLite; the account-deletion test also on PostgreSQL when
//! `CLUB_TEST_DATABASE_URL` names a server), with nodes that are real WebSocket clients of the
//! link: either real `inference_club_provider` nodes over Echo, or test nodes that count the
//! jobs they receive and answer (or hold, or misbehave) as the test says.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use inference_club_coordinator::testing::{RecordQuery, Store, TestDatabase, TestServer, User};
use inference_club_coordinator::{CoordinatorBuilder, Limits};
use inference_club_core::link::{
    self, CoordinatorMessage, Heartbeat, Hello, Job, JobChunk, JobDone, NodeMessage,
};
use inference_club_core::openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ChunkDelta, ConsumerEvents, Usage,
};
use inference_club_core::record::{InferenceRecord, RecordId, ServedBy, Visibility};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{AnyPool, Row};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A coordinator serving on 127.0.0.1 (with client addresses, as `club-coordinator serve`
/// does), its store, an HTTP client, and a raw pool on its database.
struct Club {
    url: String,
    store: Store,
    server: TestServer,
    http: reqwest::Client,
    raw: AnyPool,
    database: TestDatabase,
}

fn configure(limits: Limits) -> impl FnOnce(CoordinatorBuilder) -> CoordinatorBuilder {
    move |builder| {
        builder
            .heartbeat_interval(Duration::from_secs(2))
            .queue_timeout(Duration::from_secs(5))
            .limits(limits)
    }
}

impl Club {
    async fn start() -> Self {
        Self::with_limits(Limits::default()).await
    }

    async fn with_limits(limits: Limits) -> Self {
        Self::on(TestDatabase::sqlite(), limits).await
    }

    /// A club on a fresh PostgreSQL database, or `None` (said loudly) without a server.
    async fn on_postgres() -> Option<Self> {
        let database = TestDatabase::postgres("the PostgreSQL security tests").await?;
        Some(Self::on(database, Limits::default()).await)
    }

    async fn on(database: TestDatabase, limits: Limits) -> Self {
        let server = TestServer::start(&database.url, configure(limits)).await;
        let raw = database.raw().await;
        Self {
            url: server.url.clone(),
            store: server.store.clone(),
            server,
            http: reqwest::Client::new(),
            raw,
            database,
        }
    }

    async fn finish(self) {
        self.server.stop().await;
        self.store.close().await;
        self.raw.close().await;
        self.database.remove().await;
    }

    /// A member with a key of `scopes`.
    async fn member(&self, handle: &str, scopes: &str) -> (User, String) {
        self.server.member(handle, scopes).await
    }

    async fn key(&self, user: &User, scopes: &str) -> String {
        self.server.key(user, "test", scopes).await
    }

    /// Sends a request; the status, headers and JSON body (`Null` when empty).
    async fn call_full(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let answer = self.server.call(method, path, key, body).await;
        (answer.status, answer.headers.clone(), answer.json_or_text())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self.call_full(method, path, key, body).await;
        (status, body)
    }

    async fn get(&self, path: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, key, None).await
    }

    /// A whole (not streamed) chat for `model`.
    async fn chat(&self, key: &str, model: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/v1/chat/completions",
            Some(key),
            Some(chat(model)),
        )
        .await
    }

    /// The model ids `key` sees in `/v1/models`.
    async fn models(&self, key: &str) -> Vec<String> {
        let (status, list) = self.get("/v1/models", Some(key)).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every record in the store, once what was answered is written (final saves are queued
    /// for the store's writer).
    async fn record_count(&self) -> i64 {
        self.store.flush_records().await.unwrap();
        sqlx::query("SELECT COUNT(*) AS n FROM records")
            .fetch_one(&self.raw)
            .await
            .unwrap()
            .get::<i64, _>("n")
    }

    /// Waits until the provider's profile says `online == want`.
    async fn wait_online(&self, operator: &str, name: &str, want: bool) {
        for _ in 0..200 {
            let (status, body) = self
                .get(&format!("/api/v1/providers/{operator}/{name}"), None)
                .await;
            if status == StatusCode::OK && body["online"] == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{operator}/{name} never became online={want}");
    }

    /// The upgrade request of a node's link, sending `header` with `value`.
    fn link_request(
        &self,
        header: &'static str,
        value: &str,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        let url = format!("{}/v1/link", self.url.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(header, value.parse().unwrap());
        request
    }

    /// Revokes `key` in the database behind this coordinator's back (as another replica would,
    /// telling it nothing; the key still sits in its memory of recent keys).
    async fn revoke_behind_its_back(&self, key: &str) {
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE prefix = $2")
            .bind(Utc::now().timestamp_micros())
            .bind(&key[..12])
            .execute(&self.raw)
            .await
            .unwrap();
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

fn service(name: &str, models: &[&str], access: Option<Value>) -> Value {
    let mut service = json!({
        "name": name, "type": "llm", "engine": "other", "url": "http://127.0.0.1:9/v1",
        "api_key": "sk-node-secret-never-leaves-0123456789",
        "models": models.iter().map(|m| json!({"id": m})).collect::<Vec<_>>(),
    });
    if let Some(access) = access {
        service["access"] = access;
    }
    service
}

fn manifest(name: &str, services: &[Value]) -> Value {
    json!({"schema_version": 1, "agent": {"name": name}, "hosts": [{"id": "h1", "services": services}]})
}

/// How a test node answers its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A chunk `answer from <name>` and `done`, at once.
    Now,
    /// Nothing: the test answers (or never does).
    Hold,
}

/// What a test node sends on its link.
enum ToLink {
    /// A message, as a text frame.
    Message(NodeMessage),
    /// A binary frame, exactly these bytes.
    Binary(Vec<u8>),
    /// A close frame: the link ends.
    Close,
}

/// A node that is a bare WebSocket client of the link: counts the jobs it receives, answers as
/// told, and can send any frame the test wants.
struct TestNode {
    name: String,
    jobs: Arc<Mutex<Vec<Job>>>,
    out: mpsc::UnboundedSender<ToLink>,
    closed: Arc<AtomicBool>,
    job_arrived: Arc<Notify>,
    received: Arc<AtomicUsize>,
    /// The jobs the coordinator cancelled.
    cancelled: Arc<Mutex<Vec<u64>>>,
}

impl TestNode {
    /// Links with `key` and announces `manifest`: the node, or the reason it was refused.
    async fn link(
        club: &Club,
        key: &str,
        manifest: Value,
        answer: Answer,
    ) -> Result<TestNode, String> {
        let name = manifest["agent"]["name"].as_str().unwrap().to_owned();
        let request = club.link_request("authorization", &format!("Bearer {key}"));
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let hello = NodeMessage::Hello(Hello {
            protocol_version: link::PROTOCOL_VERSION,
            node_version: "security-test/1".into(),
            manifest,
        });
        socket
            .send(Message::Text(link::encode(&hello).unwrap().into()))
            .await
            .unwrap();
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => match link::decode_coordinator(&text).unwrap() {
                    CoordinatorMessage::Welcome(_) => break,
                    CoordinatorMessage::Refused(refused) => return Err(refused.reason),
                    other => panic!("expected welcome, got {other:?}"),
                },
                Some(Ok(_)) => {}
                other => return Err(format!("link closed: {other:?}")),
            }
        }
        let jobs = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let job_arrived = Arc::new(Notify::new());
        let received = Arc::new(AtomicUsize::new(0));
        let cancelled = Arc::new(Mutex::new(Vec::new()));
        let (out, mut outgoing) = mpsc::unbounded_channel::<ToLink>();
        let node = TestNode {
            name: name.clone(),
            jobs: jobs.clone(),
            out: out.clone(),
            closed: closed.clone(),
            job_arrived: job_arrived.clone(),
            received: received.clone(),
            cancelled: cancelled.clone(),
        };
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    frame = socket.next() => match frame {
                        Some(Ok(Message::Text(text))) => {
                            if let Ok(CoordinatorMessage::Cancel(cancel)) = link::decode_coordinator(&text) {
                                cancelled.lock().unwrap().push(cancel.job);
                            }
                            if let Ok(CoordinatorMessage::Job(job)) = link::decode_coordinator(&text) {
                                let (id, model) = (job.job, job.request.model.clone());
                                jobs.lock().unwrap().push(*job);
                                received.fetch_add(1, Ordering::SeqCst);
                                job_arrived.notify_waiters();
                                if answer == Answer::Now {
                                    let answer = chunk(id, &model, &format!("answer from {name}"));
                                    let _ = out.send(ToLink::Message(answer));
                                    let _ = out.send(ToLink::Message(done(id)));
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                    message = outgoing.recv() => match message {
                        Some(ToLink::Message(message)) => {
                            let text = link::encode(&message).unwrap();
                            if socket.send(Message::Text(text.into())).await.is_err() {
                                break;
                            }
                        }
                        Some(ToLink::Binary(frame)) => {
                            if socket.send(Message::Binary(frame.into())).await.is_err() {
                                break;
                            }
                        }
                        Some(ToLink::Close) => {
                            let _ = socket.close(None).await;
                            break;
                        }
                        None => break,
                    },
                    _ = beat.tick() => {
                        let heartbeat = NodeMessage::Heartbeat(Heartbeat { load: Vec::new() });
                        if socket.send(Message::Text(link::encode(&heartbeat).unwrap().into())).await.is_err() {
                            break;
                        }
                    }
                }
            }
            closed.store(true, Ordering::SeqCst);
        });
        Ok(node)
    }

    /// Links with `key`, announcing `manifest`, and waits until the club lists the node online
    /// under `operator`.
    async fn link_online(
        club: &Club,
        key: &str,
        operator: &str,
        manifest: Value,
        answer: Answer,
    ) -> TestNode {
        let name = manifest["agent"]["name"].as_str().unwrap().to_owned();
        let node = TestNode::link(club, key, manifest, answer).await.unwrap();
        club.wait_online(operator, &name, true).await;
        node
    }

    /// Jobs received so far.
    fn job_count(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// Waits for the `n`th job; returns its id.
    async fn wait_job(&self, n: usize) -> u64 {
        self.wait_job_message(n).await.job
    }

    /// Waits for the `n`th job; returns it as the coordinator sent it.
    async fn wait_job_message(&self, n: usize) -> Job {
        for _ in 0..400 {
            let notified = self.job_arrived.notified();
            if let Some(job) = self.jobs.lock().unwrap().get(n - 1) {
                return job.clone();
            }
            let _ = tokio::time::timeout(Duration::from_millis(25), notified).await;
        }
        panic!("node {} never got job {n}", self.name);
    }

    /// Waits up to `limit` for the coordinator to cancel `job`; whether it did.
    async fn wait_cancelled(&self, job: u64, limit: Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < until {
            if self.cancelled.lock().unwrap().contains(&job) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    fn send(&self, message: NodeMessage) {
        self.out.send(ToLink::Message(message)).unwrap();
    }

    /// Sends a binary frame of exactly these bytes.
    fn send_binary(&self, frame: Vec<u8>) {
        self.out.send(ToLink::Binary(frame)).unwrap();
    }

    /// Closes the link (a close frame), whatever jobs it holds.
    fn close(&self) {
        self.out.send(ToLink::Close).unwrap();
    }

    async fn wait_closed(&self) {
        for _ in 0..200 {
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the link of {} never closed", self.name);
    }
}

fn chunk(job: u64, model: &str, text: &str) -> NodeMessage {
    NodeMessage::Chunk(JobChunk {
        job,
        chunk: ChatCompletionChunk::new("c", model, 0).with_delta(ChunkDelta::content(text)),
    })
}

fn done(job: u64) -> NodeMessage {
    NodeMessage::Done(JobDone {
        job,
        usage: None,
        service: None,
        first_token_ms: None,
        total_ms: 1,
    })
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// A key revoked through this coordinator is refused by the very next request, also when it
/// was just used (and so is in the coordinator's short-lived key cache).
#[tokio::test]
async fn a_revoked_key_is_refused_at_once_even_when_cached() {
    let club = Club::start().await;
    let (ada, account) = club.member("ada", "account").await;
    let inference = club.key(&ada, "inference").await;
    // Used, so remembered.
    assert_eq!(
        club.get("/v1/models", Some(&inference)).await.0,
        StatusCode::OK
    );
    let (_, keys) = club.get("/api/v1/keys", Some(&account)).await;
    let id = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| inference.starts_with(k["prefix"].as_str().unwrap()))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = club
        .call(
            Method::DELETE,
            &format!("/api/v1/keys/{id}"),
            Some(&account),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for path in ["/v1/models", "/api/v1/requests"] {
        let (status, body) = club.get(path, Some(&inference)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_error(&body, "invalid_api_key");
    }
    let (status, _) = club.chat(&inference, "echo").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Many lookups racing one revocation: none of them makes the key live again.
    let second = club.key(&ada, "inference").await;
    let racing: Vec<_> = (0..20)
        .map(|_| club.get("/v1/models", Some(&second)))
        .collect();
    let (_, keys) = club.get("/api/v1/keys", Some(&account)).await;
    let id = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| second.starts_with(k["prefix"].as_str().unwrap()))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoke_path = format!("/api/v1/keys/{id}");
    let revoke = club.call(Method::DELETE, &revoke_path, Some(&account), None);
    let (_, revoked) = tokio::join!(futures_util::future::join_all(racing), revoke);
    assert_eq!(revoked.0, StatusCode::NO_CONTENT);
    assert_eq!(
        club.get("/v1/models", Some(&second)).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A revoked account key cannot manage anything either.
    let (_, keys) = club.get("/api/v1/keys", Some(&account)).await;
    let own = keys["data"][0]["id"].as_str().unwrap().to_owned();
    club.call(
        Method::DELETE,
        &format!("/api/v1/keys/{own}"),
        Some(&account),
        None,
    )
    .await;
    assert_eq!(
        club.get("/api/v1/keys", Some(&account)).await.0,
        StatusCode::UNAUTHORIZED
    );
    club.finish().await;
}

/// Each scope opens only its own doors: a provider-scoped key reads and deletes no record and
/// calls no inference; an inference-scoped key links no node and manages no key or account;
/// an account-scoped key neither calls inference nor links a node.
#[tokio::test]
async fn a_key_of_each_scope_is_refused_outside_its_scope() {
    let club = Club::start().await;
    let (ada, provider) = club.member("ada", "provider").await;
    let inference = club.key(&ada, "inference").await;
    let account = club.key(&ada, "account").await;
    // A record of ada's own, to try to read and delete.
    let (status, answer) = club.chat(&inference, "nothing-serves-this").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let mine = club
        .store
        .list_records(&RecordQuery::made_by(ada.id))
        .await
        .unwrap()
        .items[0]
        .id;
    let record = format!("/api/v1/requests/{mine}");

    let forbidden = |status: StatusCode, what: &str| {
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
    };
    // provider-scoped
    forbidden(
        club.get("/api/v1/requests", Some(&provider)).await.0,
        "provider lists records",
    );
    forbidden(
        club.get(&record, Some(&provider)).await.0,
        "provider reads a record",
    );
    forbidden(
        club.call(Method::DELETE, &record, Some(&provider), None)
            .await
            .0,
        "provider deletes a record",
    );
    forbidden(
        club.call(
            Method::PATCH,
            &record,
            Some(&provider),
            Some(json!({"visibility": "private"})),
        )
        .await
        .0,
        "provider changes a record",
    );
    forbidden(club.chat(&provider, "echo").await.0, "provider chats");
    forbidden(
        club.get("/v1/models", Some(&provider)).await.0,
        "provider lists models",
    );
    forbidden(
        club.get("/api/v1/keys", Some(&provider)).await.0,
        "provider lists keys",
    );
    forbidden(
        club.call(Method::DELETE, "/api/v1/me", Some(&provider), None)
            .await
            .0,
        "provider deletes the account",
    );
    // inference-scoped
    let refused = TestNode::link(&club, &inference, manifest("box", &[]), Answer::Now)
        .await
        .err()
        .expect("an inference key linked a node");
    assert!(refused.contains("403"), "{refused}");
    forbidden(
        club.get("/api/v1/keys", Some(&inference)).await.0,
        "inference lists keys",
    );
    forbidden(
        club.call(
            Method::POST,
            "/api/v1/keys",
            Some(&inference),
            Some(json!({"name": "more", "scopes": ["account"]})),
        )
        .await
        .0,
        "inference creates a key",
    );
    forbidden(
        club.get("/api/v1/me", Some(&inference)).await.0,
        "inference reads the account",
    );
    forbidden(
        club.call(Method::DELETE, "/api/v1/me", Some(&inference), None)
            .await
            .0,
        "inference deletes the account",
    );
    forbidden(
        club.call(
            Method::PATCH,
            "/api/v1/providers/ada/box",
            Some(&inference),
            Some(json!({"accepting": false})),
        )
        .await
        .0,
        "inference changes a provider",
    );
    // account-scoped
    forbidden(club.chat(&account, "echo").await.0, "account chats");
    let refused = TestNode::link(&club, &account, manifest("box", &[]), Answer::Now)
        .await
        .err()
        .expect("an account key linked a node");
    assert!(refused.contains("403"), "{refused}");
    // The record is untouched.
    assert_eq!(club.get(&record, Some(&inference)).await.0, StatusCode::OK);
    club.finish().await;
}

/// No answer of the API ever holds a key's secret after the one that created it, nor a node's
/// `api_key`: every listing, profile, record and account view is scanned for them.
#[tokio::test]
async fn no_response_contains_a_key_secret_or_a_node_api_key() {
    let club = Club::start().await;
    let (_, bootstrap) = club.member("ada", "account").await;
    let mut secrets = vec![bootstrap.clone()];
    let mut created = Vec::new();
    for (name, scopes) in [
        ("all", json!(["inference", "provider", "account"])),
        ("node", json!(["provider"])),
        ("app", json!(["inference"])),
    ] {
        let (status, body) = club
            .call(
                Method::POST,
                "/api/v1/keys",
                Some(&bootstrap),
                Some(json!({"name": name, "scopes": scopes})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let secret = body["secret"].as_str().unwrap().to_owned();
        secrets.push(secret.clone());
        created.push(secret);
    }
    let (all, node, app) = (&created[0], &created[1], &created[2]);
    let (_, bob) = club.member("bob", "inference,account").await;
    secrets.push(bob.clone());
    let node_secret = "sk-node-secret-never-leaves-0123456789";

    let _box = TestNode::link_online(
        &club,
        node,
        "ada",
        manifest("box", &[service("echo", &["echo"], None)]),
        Answer::Now,
    )
    .await;
    let (status, answer) = club.chat(app, "echo").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _) = club.chat(&bob, "echo").await;
    assert_eq!(status, StatusCode::OK);
    let mine = club.get("/api/v1/requests", Some(all)).await.1["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut seen = Vec::new();
    let views: Vec<(Method, String, Option<&String>, Option<Value>)> = vec![
        (Method::GET, "/api/v1/keys".into(), Some(all), None),
        (Method::GET, "/api/v1/me".into(), Some(all), None),
        (
            Method::PATCH,
            "/api/v1/me".into(),
            Some(all),
            Some(json!({"routing_preference": "prefer_own"})),
        ),
        (Method::GET, "/api/v1/requests".into(), Some(all), None),
        (
            Method::GET,
            format!("/api/v1/requests/{mine}"),
            Some(all),
            None,
        ),
        (Method::GET, format!("/api/v1/requests/{mine}"), None, None),
        (Method::GET, "/api/v1/requests/public".into(), None, None),
        (Method::GET, "/api/v1/providers".into(), None, None),
        (Method::GET, "/api/v1/providers/ada/box".into(), None, None),
        (
            Method::GET,
            "/api/v1/providers/ada/box/requests".into(),
            Some(all),
            None,
        ),
        (
            Method::PATCH,
            "/api/v1/providers/ada/box".into(),
            Some(all),
            Some(json!({"access": "members"})),
        ),
        (Method::GET, "/v1/models".into(), Some(app), None),
        (Method::GET, "/v1/models".into(), Some(&bob), None),
        (Method::GET, "/openapi.json".into(), None, None),
        (Method::GET, "/metrics".into(), None, None),
        (Method::GET, "/api/v1/keys".into(), Some(&bob), None),
    ];
    for (method, path, key, body) in views {
        let (status, headers, body) = club
            .call_full(method.clone(), &path, key.map(String::as_str), body)
            .await;
        assert!(status.is_success(), "{method} {path}: {status} {body}");
        let mut text = body.to_string();
        for (name, value) in &headers {
            text.push_str(&format!("\n{name}: {}", value.to_str().unwrap_or("")));
        }
        for secret in secrets.iter().map(String::as_str).chain([node_secret]) {
            assert!(
                !text.contains(secret),
                "{method} {path} shows a secret: {text}"
            );
        }
        seen.push(path);
    }
    // Listings show prefixes only, and they are what the secrets start with.
    let (_, keys) = club.get("/api/v1/keys", Some(all)).await;
    for key in keys["data"].as_array().unwrap() {
        let prefix = key["prefix"].as_str().unwrap();
        assert!(prefix.len() < 16 && secrets.iter().any(|s| s.starts_with(prefix)));
    }
    assert!(seen.len() > 10);
    club.finish().await;
}

/// A private record is invisible to everyone but its owner (and the serving operator): a
/// stranger can neither read it, nor change its visibility, nor delete it — and someone else's
/// public record can be read but not changed or deleted.
#[tokio::test]
async fn a_stranger_cannot_read_change_or_delete_another_members_private_record() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference,account").await;
    let (_, eve) = club.member("eve", "inference,account,provider").await;
    let (_, bob_node) = club.member("bob", "provider").await;
    let _node = TestNode::link_online(
        &club,
        &bob_node,
        "bob",
        manifest("box", &[service("echo", &["echo"], None)]),
        Answer::Now,
    )
    .await;
    let mut private = chat("echo");
    private["visibility"] = json!("private");
    let (status, headers, _) = club
        .call_full(
            Method::POST,
            "/v1/chat/completions",
            Some(&ada),
            Some(private),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let private_id = headers["x-club-request-id"].to_str().unwrap().to_owned();
    let (status, headers, _) = club
        .call_full(
            Method::POST,
            "/v1/chat/completions",
            Some(&ada),
            Some(chat("echo")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let public_id = headers["x-club-request-id"].to_str().unwrap().to_owned();
    let before_private = club
        .get(&format!("/api/v1/requests/{private_id}"), Some(&ada))
        .await
        .1;
    let before_public = club
        .get(&format!("/api/v1/requests/{public_id}"), Some(&ada))
        .await
        .1;

    let path = format!("/api/v1/requests/{private_id}");
    for key in [Some(eve.as_str()), None] {
        let (status, body) = club.get(&path, key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_error(&body, "request_not_found");
    }
    // The same answer as for an id that does not exist.
    let (_, unknown) = club
        .get(&format!("/api/v1/requests/{}", RecordId::new()), Some(&eve))
        .await;
    assert_eq!(unknown["error"]["code"], "request_not_found");
    for id in [&private_id, &public_id] {
        let path = format!("/api/v1/requests/{id}");
        let (status, _) = club
            .call(
                Method::PATCH,
                &path,
                Some(&eve),
                Some(json!({"visibility": "public"})),
            )
            .await;
        assert!(
            matches!(status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
            "{status}"
        );
        let (status, _) = club.call(Method::DELETE, &path, Some(&eve), None).await;
        assert!(
            matches!(status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
            "{status}"
        );
        let (status, _) = club.call(Method::DELETE, &path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Nor through listings: not in eve's requests, nor the feed, nor as a served request.
    let (_, eve_list) = club.get("/api/v1/requests", Some(&eve)).await;
    assert_eq!(eve_list["data"], json!([]));
    let (_, feed) = club.get("/api/v1/requests/public", None).await;
    assert!(!feed.to_string().contains(&private_id));
    let (status, _) = club
        .get("/api/v1/providers/bob/box/requests", Some(&eve))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Unchanged.
    assert_eq!(
        club.get(&format!("/api/v1/requests/{private_id}"), Some(&ada))
            .await
            .1,
        before_private
    );
    assert_eq!(
        club.get(&format!("/api/v1/requests/{public_id}"), Some(&ada))
            .await
            .1,
        before_public
    );
    club.finish().await;
}

/// A member outside a node's access policy never reaches it and does not see its models —
/// whether the policy comes from the manifest or from the operator's override through the API,
/// at once on the live node and again when it links anew.
#[tokio::test]
async fn a_member_outside_a_nodes_policy_never_reaches_it_nor_sees_its_models() {
    let club = Club::start().await;
    let (_, bob) = club.member("bob", "provider,account").await;
    let (_, ada) = club.member("ada", "inference").await;
    let (_, carol) = club.member("carol", "inference").await;
    let box_manifest = manifest(
        "box",
        &[
            service("team", &["team-model"], Some(json!({"logins": ["carol"]}))),
            service("open", &["open-model"], None),
        ],
    );
    let node = TestNode::link_online(&club, &bob, "bob", box_manifest.clone(), Answer::Now).await;

    assert_eq!(club.models(&ada).await, vec!["open-model"]);
    assert_eq!(club.models(&carol).await, vec!["open-model", "team-model"]);
    let (status, body) = club.chat(&ada, "team-model").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_error(&body, "access_denied");
    assert_eq!(node.job_count(), 0, "ada's request reached the node");
    assert_eq!(club.chat(&carol, "team-model").await.0, StatusCode::OK);
    assert_eq!(node.job_count(), 1);

    // The operator closes the service to everyone but themself, through the API.
    let (status, profile) = club
        .call(
            Method::PATCH,
            "/api/v1/providers/bob/box",
            Some(&bob),
            Some(json!({"services": {"team": "owner"}, "access": {"logins": ["ada"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["access_overrides"]["services"]["team"], "owner");
    assert_eq!(
        profile["access_overrides"]["access"],
        json!({"logins": ["ada"]})
    );
    // The node-wide override applies where no service override does: `open` is ada's now.
    assert_eq!(club.models(&carol).await, Vec::<String>::new());
    assert_eq!(club.models(&ada).await, vec!["open-model"]);
    for model in ["team-model", "open-model"] {
        let (status, _) = club.chat(&carol, model).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{model}");
    }
    assert_eq!(node.job_count(), 1, "carol's requests reached the node");

    // Still in force when the node links again.
    drop(node);
    club.server.close_operator_links(
        club.store.user_by_handle("bob").await.unwrap().unwrap().id,
        "bob",
    );
    club.wait_online("bob", "box", false).await;
    let node = TestNode::link_online(&club, &bob, "bob", box_manifest, Answer::Now).await;
    assert_eq!(club.models(&carol).await, Vec::<String>::new());
    assert_eq!(
        club.chat(&carol, "team-model").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(node.job_count(), 0);

    // Only the operator may change it, and only with valid policies.
    let (status, body) = club
        .call(
            Method::PATCH,
            "/api/v1/providers/bob/box",
            Some(&ada),
            Some(json!({"access": "members"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    for bad in [
        json!({"access": {"logins": ["not a login"]}}),
        json!({"access": {"logins": []}}),
        json!({"services": {"no-such-service": "owner"}}),
        json!({"access": "everyone"}),
        json!({"accepting": "yes"}),
        json!({}),
        json!({"accepting": true, "extra": 1}),
    ] {
        let (status, body) = club
            .call(
                Method::PATCH,
                "/api/v1/providers/bob/box",
                Some(&bob),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (_, profile) = club.get("/api/v1/providers/bob/box", None).await;
    assert_eq!(profile["access_overrides"]["services"]["team"], "owner");
    club.finish().await;
}

/// The kill switch: while a provider does not accept requests, nothing is routed to it and its
/// models leave `/v1/models`, also across a new link; turned back on, it serves again.
#[tokio::test]
async fn the_kill_switch_stops_all_routing_to_a_node() {
    let club = Club::start().await;
    let (_, bob) = club.member("bob", "provider,account,inference").await;
    let (_, ada) = club.member("ada", "inference").await;
    let box_manifest = manifest("box", &[service("echo", &["echo"], None)]);
    let node = TestNode::link_online(&club, &bob, "bob", box_manifest.clone(), Answer::Now).await;
    assert_eq!(club.chat(&ada, "echo").await.0, StatusCode::OK);
    assert_eq!(node.job_count(), 1);

    let (status, profile) = club
        .call(
            Method::PATCH,
            "/api/v1/providers/bob/box",
            Some(&bob),
            Some(json!({"accepting": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["accepting"], false);
    assert_eq!(profile["online"], true);
    for key in [&ada, &bob] {
        assert_eq!(club.models(key).await, Vec::<String>::new());
        let (status, body) = club.chat(key, "echo").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    assert_eq!(
        node.job_count(),
        1,
        "a request reached a node that is switched off"
    );

    // Across a new link.
    let bob_id = club.store.user_by_handle("bob").await.unwrap().unwrap().id;
    club.server.close_operator_links(bob_id, "bob");
    club.wait_online("bob", "box", false).await;
    let node = TestNode::link_online(&club, &bob, "bob", box_manifest, Answer::Now).await;
    assert_eq!(club.chat(&ada, "echo").await.0, StatusCode::NOT_FOUND);
    assert_eq!(node.job_count(), 0);

    let (status, _) = club
        .call(
            Method::PATCH,
            "/api/v1/providers/bob/box",
            Some(&bob),
            Some(json!({"accepting": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(club.models(&ada).await, vec!["echo"]);
    assert_eq!(club.chat(&ada, "echo").await.0, StatusCode::OK);
    assert_eq!(node.job_count(), 1);
    club.finish().await;
}

/// Routing preferences: `only_own` never routes to another member's node (404 naming the
/// preference when none of theirs serves the model) and shows only their own models;
/// `prefer_own` uses their own node while it has room; `any` may use any node.
#[tokio::test]
async fn only_own_and_prefer_own_hold() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference,provider,account").await;
    let (_, bob) = club.member("bob", "provider").await;
    let mine = TestNode::link_online(
        &club,
        &ada,
        "ada",
        manifest("mine", &[service("s", &["shared"], None)]),
        Answer::Now,
    )
    .await;
    let theirs = TestNode::link_online(
        &club,
        &bob,
        "bob",
        manifest("theirs", &[service("s", &["shared", "bob-model"], None)]),
        Answer::Now,
    )
    .await;

    let set = |preference: &'static str| {
        club.call(
            Method::PATCH,
            "/api/v1/me",
            Some(&ada),
            Some(json!({"routing_preference": preference})),
        )
    };
    let (status, me) = set("only_own").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["routing_preference"], "only_own");
    assert_eq!(
        club.get("/api/v1/me", Some(&ada)).await.1["routing_preference"],
        "only_own"
    );
    assert_eq!(club.models(&ada).await, vec!["shared"]);
    let (status, body) = club.chat(&ada, "bob-model").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only_own"),
        "{body}"
    );
    for _ in 0..12 {
        assert_eq!(club.chat(&ada, "shared").await.0, StatusCode::OK);
    }
    assert_eq!(
        theirs.job_count(),
        0,
        "only_own reached another member's node"
    );
    assert_eq!(mine.job_count(), 12);

    let (status, _) = set("prefer_own").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(club.models(&ada).await, vec!["bob-model", "shared"]);
    for _ in 0..12 {
        assert_eq!(club.chat(&ada, "shared").await.0, StatusCode::OK);
    }
    assert_eq!(
        theirs.job_count(),
        0,
        "prefer_own passed over a node of theirs with room"
    );
    assert_eq!(club.chat(&ada, "bob-model").await.0, StatusCode::OK);
    assert_eq!(theirs.job_count(), 1);

    // Bad values change nothing.
    let (status, body) = set("mine_only").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_routing_preference");
    assert_eq!(
        club.get("/api/v1/me", Some(&ada)).await.1["routing_preference"],
        "prefer_own"
    );

    let (status, _) = set("any").await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..30 {
        club.chat(&ada, "shared").await;
    }
    assert!(
        theirs.job_count() > 1,
        "any never used another member's node"
    );
    club.finish().await;
}

/// A node cannot answer for a job it was not given: chunks and `done` that a second node sends
/// for the first node's job id do not reach the consumer, and the record holds only what the
/// node that was given the job said.
#[tokio::test]
async fn a_node_cannot_send_chunks_for_a_job_it_was_not_given() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference").await;
    let (_, bob) = club.member("bob", "provider").await;
    let (_, mallory) = club.member("mallory", "provider").await;
    let honest = TestNode::link_online(
        &club,
        &bob,
        "bob",
        manifest("honest", &[service("s", &["m-honest"], None)]),
        Answer::Hold,
    )
    .await;
    let hostile = TestNode::link_online(
        &club,
        &mallory,
        "mallory",
        manifest("hostile", &[service("s", &["m-hostile"], None)]),
        Answer::Hold,
    )
    .await;

    let mut body = chat("m-honest");
    body["stream"] = json!(true);
    let response = club
        .http
        .post(format!("{}/v1/chat/completions", club.url))
        .bearer_auth(&ada)
        .json(&body)
        .send();
    let consumer = tokio::spawn(response);
    let job = honest.wait_job(1).await;
    // The hostile node speaks for that job id (and its neighbours) first.
    for id in [job, job + 1, 0, u64::MAX] {
        hostile.send(chunk(id, "m-honest", "INJECTED"));
        hostile.send(done(id));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    honest.send(chunk(job, "m-honest", "genuine "));
    honest.send(chunk(job, "m-honest", "answer"));
    honest.send(done(job));
    let response = consumer.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let id = response.headers()["x-club-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    assert!(!text.contains("INJECTED"), "{text}");
    let mut content = String::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            break;
        }
        let event: Value = serde_json::from_str(line).unwrap();
        if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
            content.push_str(piece);
        }
    }
    assert_eq!(content, "genuine answer");
    let (_, record) = club.get(&format!("/api/v1/requests/{id}"), None).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["response"]["content"], "genuine answer");
    assert_eq!(record["provider"]["operator"], "bob");
    assert!(!record.to_string().contains("INJECTED"));
    assert_eq!(hostile.job_count(), 0);
    club.finish().await;
}

/// Starts a streamed chat of `body` for the consumer with `key`; the response comes once its
/// headers do (after the node's first output).
fn stream_chat(
    club: &Club,
    key: &str,
    mut body: Value,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    body["stream"] = json!(true);
    let request = club
        .http
        .post(format!("{}/v1/chat/completions", club.url))
        .bearer_auth(key)
        .json(&body);
    tokio::spawn(request.send())
}

/// The record id a response names (`x-club-request-id`).
fn record_id(response: &reqwest::Response) -> RecordId {
    let header = response.headers()["x-club-request-id"].to_str().unwrap();
    RecordId::parse(header).unwrap_or_else(|| panic!("not a record id: {header}"))
}

/// An events frame of job `job`, flagged as holding output when `output`, carrying `events`.
fn events_frame(job: u64, output: bool, events: &[u8]) -> Vec<u8> {
    let mut frame = link::events_frame(job);
    if output {
        link::mark_output(&mut frame);
    }
    frame.extend_from_slice(events);
    frame
}

/// The consumer's event of a chunk with content `text`, written as `events` says (as a node
/// writes it).
fn content_event(events: &ConsumerEvents, text: &str) -> Vec<u8> {
    let mut chunk = ChatCompletionChunk::new("c", "m", 0).with_delta(ChunkDelta::content(text));
    let mut out = Vec::new();
    assert!(events.write(&mut chunk, &mut out).unwrap());
    out
}

/// A consumer's SSE body read as events: each `data:` event up to `[DONE]` parsed, and whether
/// `[DONE]` ended it (and came once). Fails the test on anything that is not a `data:` event.
fn consumer_events(text: &str) -> (Vec<Value>, bool) {
    let blocks: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(
        blocks.last(),
        Some(&""),
        "the body ends mid-event: {text:?}"
    );
    let mut events = Vec::new();
    for (n, block) in blocks[..blocks.len() - 1].iter().enumerate() {
        let data = block
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("not a data event: {block:?} in {text:?}"));
        assert!(!data.contains('\n'), "an event of several lines: {text:?}");
        if data == "[DONE]" {
            assert_eq!(n, blocks.len() - 2, "events after [DONE]: {text:?}");
            return (events, true);
        }
        events.push(serde_json::from_str(data).unwrap());
    }
    (events, false)
}

/// The content of the chunk events, concatenated.
fn events_content(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// Reads `response` until what came holds `wanted` (or fails the test); gives what came.
async fn read_until(response: &mut reqwest::Response, read: &mut String, wanted: &str) {
    while !read.contains(wanted) {
        let piece = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .unwrap_or_else(|_| panic!("{wanted:?} never came; came: {read:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended before {wanted:?}; came: {read:?}"));
        read.push_str(std::str::from_utf8(&piece).unwrap());
    }
}

/// A node's events reach the consumer as they are, so they are checked first: a binary frame
/// that is not a flag and whole `data: {…}` events (a `[DONE]` of its own, another kind of
/// event, a comment, an event cut short, a bad flag, no flag) ends the stream with an error
/// event and `[DONE]`, and none of its bytes reach the consumer or the record; what came
/// before it stays, in the stream and in the failed record.
#[tokio::test]
async fn a_node_cannot_send_the_consumer_anything_but_whole_events() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference").await;
    let (_, bob) = club.member("bob", "provider").await;
    let node = held_node(&club, &bob, "box").await;

    let bad_pieces: [&[u8]; 8] = [
        b"\x01data: [DONE]\n\n",
        b"\x01event: INJECTED\ndata: {\"INJECTED\":1}\n\n",
        b"\x01: INJECTED\n\n",
        b"\x01data: {\"INJECTED\":1}\n",
        b"\x01data: {\"INJECTED\":1}\n\ndata: {\"INJECTED\":2}",
        b"\x01data: {\"INJECTED\":1}\nretry: 1\n\n",
        b"\x07data: {\"INJECTED\":1}\n\n",
        b"",
    ];
    for (n, bad) in bad_pieces.into_iter().enumerate() {
        let consumer = stream_chat(&club, &ada, chat("m-box"));
        let job = node.wait_job_message(n + 1).await;
        let events = job.events.clone().expect("a streamed chat asks for events");
        assert!(!events.include_usage);
        node.send_binary(events_frame(
            job.job,
            true,
            &content_event(&events, "safe "),
        ));
        let mut frame = job.job.to_be_bytes().to_vec();
        frame.extend_from_slice(bad);
        node.send_binary(frame);

        let response = consumer.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let id = record_id(&response);
        assert_eq!(events.completion_id, id.completion_id());
        let text = response.text().await.unwrap();
        let shown = String::from_utf8_lossy(bad);
        assert!(
            !text.contains("INJECTED"),
            "{shown:?} reached the consumer: {text}"
        );
        assert_eq!(text.matches("[DONE]").count(), 1, "{shown:?}: {text}");
        let (events, done) = consumer_events(&text);
        assert!(done, "{shown:?}: {text}");
        assert_eq!(events_content(&events), "safe ", "{shown:?}: {text}");
        assert_eq!(events[0]["id"], id.completion_id(), "{text}");
        let last = events.last().unwrap();
        assert!(last["error"]["message"].is_string(), "{shown:?}: {text}");
        assert_eq!(events.len(), 2, "{shown:?}: {text}");

        let (_, record) = club.get(&format!("/api/v1/requests/{id}"), None).await;
        assert_eq!(record["status"], "failed", "{shown:?}: {record}");
        assert_eq!(record["response"]["content"], "safe ", "{record}");
        assert!(!record.to_string().contains("INJECTED"), "{record}");
    }
    club.finish().await;
}

/// A node that does not know events (an older node) answers a streamed chat's events job with
/// chunks: the consumer still gets events carrying the record's completion id, usage only when
/// asked for, and the record the text and usage. A whole chat asks for no events.
#[tokio::test]
async fn a_node_that_sends_chunks_for_events_still_gives_the_consumer_its_events() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference").await;
    let (_, bob) = club.member("bob", "provider").await;
    let node = held_node(&club, &bob, "old").await;
    /// A usage-only chunk of `job`, as engines end a stream.
    fn usage_chunk(job: u64) -> NodeMessage {
        let mut chunk = ChatCompletionChunk::new("c", "m-old", 0);
        chunk.usage = Some(Usage::new(3, 2));
        NodeMessage::Chunk(JobChunk { job, chunk })
    }

    // Whole: no events asked for; the completion id is the record's all the same.
    let http = club.http.clone();
    let request = http
        .post(format!("{}/v1/chat/completions", club.url))
        .bearer_auth(&ada)
        .json(&chat("m-old"));
    let consumer = tokio::spawn(request.send());
    let job = node.wait_job_message(1).await;
    assert_eq!(job.events, None, "{job:?}");
    node.send(chunk(job.job, "m-old", "whole"));
    node.send(done(job.job));
    let response = consumer.await.unwrap().unwrap();
    let id = record_id(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id.completion_id(), "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "whole", "{body}");

    for (n, include_usage) in [(2, false), (3, true)] {
        let mut body = chat("m-old");
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let consumer = stream_chat(&club, &ada, body);
        let job = node.wait_job_message(n).await;
        let asked = job.events.clone().expect("a streamed chat asks for events");
        assert_eq!(asked.include_usage, include_usage);
        node.send(chunk(job.job, "m-old", "Hel"));
        node.send(chunk(job.job, "m-old", "lo"));
        node.send(usage_chunk(job.job));
        node.send(done(job.job));

        let response = consumer.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let id = record_id(&response);
        assert_eq!(asked.completion_id, id.completion_id());
        let text = response.text().await.unwrap();
        let (events, done) = consumer_events(&text);
        assert!(done, "{text}");
        assert!(events.iter().all(|e| e.get("error").is_none()), "{text}");
        assert!(
            events.iter().all(|e| e["id"] == id.completion_id()),
            "events without the record's completion id: {text}"
        );
        assert_eq!(events_content(&events), "Hello", "{text}");
        let usage: Vec<&Value> = events
            .iter()
            .filter_map(|e| e.get("usage").filter(|u| !u.is_null()))
            .collect();
        if include_usage {
            assert_eq!(usage.len(), 1, "{text}");
            assert_eq!(usage[0]["total_tokens"], 5, "{text}");
        } else {
            assert!(
                usage.is_empty(),
                "usage the consumer did not ask for: {text}"
            );
        }

        let (_, record) = club.get(&format!("/api/v1/requests/{id}"), None).await;
        assert_eq!(record["status"], "succeeded", "{record}");
        assert_eq!(record["response"]["content"], "Hello", "{record}");
        assert_eq!(record["usage"]["total_tokens"], 5, "{record}");
    }
    club.finish().await;
}

/// A node cannot make the coordinator hold its answer without bound for a consumer that does
/// not read: once a job's waiting events pass their limit in bytes (64 MiB), far fewer events
/// than their limit in number, the job is cancelled at the node, and the consumer's stream
/// ends, after what was held, with an error that says why.
#[tokio::test]
async fn a_node_cannot_make_the_coordinator_hold_an_answer_without_bound() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference").await;
    let (_, bob) = club.member("bob", "provider").await;
    let (node, consumer, job, events) = stream_to_a_held_node(&club, &ada, &bob, "flood").await;
    node.send_binary(events_frame(job.job, true, &content_event(&events, "Hi")));
    let mut response = consumer.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    read_until(&mut response, &mut String::new(), "Hi").await;

    // The consumer reads no more. The node sends 96 MiB in 384 frames of about 250 KiB: far
    // fewer than the 1,024 events a job may hold, far more bytes than it may hold.
    let text = "x".repeat(250 * 1024);
    let frame = events_frame(job.job, true, &content_event(&events, &text));
    for _ in 0..384 {
        node.send_binary(frame.clone());
    }
    assert!(
        node.wait_cancelled(job.job, Duration::from_secs(60)).await,
        "the coordinator never cancelled a job whose consumer held up 96 MiB"
    );

    // What was held still reaches the consumer, then the reason.
    let mut held = 0usize;
    let mut tail = String::new();
    while let Some(piece) = response.chunk().await.unwrap() {
        held += piece.len();
        tail.push_str(&String::from_utf8_lossy(&piece));
        let keep = tail.len().saturating_sub(4096);
        tail = tail.split_off(tail.floor_char_boundary(keep));
    }
    assert!(
        held < 96 * 1024 * 1024,
        "the consumer got all {held} bytes: nothing was held back"
    );
    assert!(tail.contains("did not keep up"), "{tail}");
    assert!(tail.ends_with("data: [DONE]\n\n"), "{tail}");
    club.finish().await;
}

/// Links the node `name` of bob (`node_key`, a member called `bob`), serving `m-<name>` and
/// holding its answers, once it is online.
async fn held_node(club: &Club, node_key: &str, name: &str) -> TestNode {
    let model = format!("m-{name}");
    TestNode::link_online(
        club,
        node_key,
        "bob",
        manifest(name, &[service("s", &[model.as_str()], None)]),
        Answer::Hold,
    )
    .await
}

/// Links the node `name` of bob (`node_key`, a member called `bob`), serving `m-<name>` and
/// holding its answers, and starts a streamed chat for it with `consumer_key`: the node, the
/// consumer's response to come, the job the node got and the events it asks for.
async fn stream_to_a_held_node(
    club: &Club,
    consumer_key: &str,
    node_key: &str,
    name: &str,
) -> (
    TestNode,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
    Job,
    ConsumerEvents,
) {
    let node = held_node(club, node_key, name).await;
    let model = format!("m-{name}");
    let consumer = stream_chat(club, consumer_key, chat(&model));
    let job = node.wait_job_message(1).await;
    let events = job.events.clone().expect("a streamed chat asks for events");
    (node, consumer, job, events)
}

/// A stream of events cut short before the node's answer: when the node goes away, the consumer
/// gets what came and an error, and the record keeps the text of the events sent, read back
/// from them; when the consumer goes away, the record is cancelled and keeps what it was sent.
#[tokio::test]
async fn a_stream_cut_short_before_its_answer_leaves_the_record_the_text_of_its_events() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference").await;
    let (_, bob) = club.member("bob", "provider").await;
    let (node, consumer, job, events) = stream_to_a_held_node(&club, &ada, &bob, "flaky").await;
    node.send_binary(events_frame(job.job, true, &content_event(&events, "Hel")));
    let mut response = consumer.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let id = record_id(&response);
    let mut read = String::new();
    read_until(&mut response, &mut read, "Hel").await;
    // Two events in one frame.
    let mut two = content_event(&events, "lo");
    two.extend(content_event(&events, " there"));
    node.send_binary(events_frame(job.job, true, &two));
    read_until(&mut response, &mut read, " there").await;
    node.close();
    node.wait_closed().await;
    read.push_str(&response.text().await.unwrap());

    let (sent, done) = consumer_events(&read);
    assert!(done, "{read}");
    assert_eq!(events_content(&sent), "Hello there", "{read}");
    assert!(
        sent.last().unwrap()["error"]["message"].is_string(),
        "{read}"
    );
    let (_, record) = club.get(&format!("/api/v1/requests/{id}"), None).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["response"]["content"], "Hello there", "{record}");

    // The consumer goes away after the first events; the node is not heard from again.
    let (node, consumer, job, events) = stream_to_a_held_node(&club, &ada, &bob, "steady").await;
    let mut two = content_event(&events, "Good");
    two.extend(content_event(&events, "bye"));
    node.send_binary(events_frame(job.job, true, &two));
    let mut response = consumer.await.unwrap().unwrap();
    let id = record_id(&response);
    read_until(&mut response, &mut String::new(), "bye").await;
    drop(response);
    let path = format!("/api/v1/requests/{id}");
    let mut record = Value::Null;
    for _ in 0..200 {
        record = club.get(&path, None).await.1;
        if record["status"] == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(record["status"], "cancelled", "{record}");
    assert_eq!(record["response"]["content"], "Goodbye", "{record}");
    club.finish().await;
}

/// A node that sends its events and closes its link at once, before its answer: what it sent
/// is not lost, to the consumer nor to the record. (The events already delivered to the job are
/// read before the link's closing is noticed.)
#[tokio::test]
async fn a_node_gone_right_after_its_events_leaves_them_to_the_consumer_and_the_record() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference").await;
    let (_, bob) = club.member("bob", "provider").await;
    let (node, consumer, job, events) = stream_to_a_held_node(&club, &ada, &bob, "flaky").await;
    for piece in ["Hel", "lo", " there"] {
        node.send_binary(events_frame(job.job, true, &content_event(&events, piece)));
    }
    node.close();
    let response = consumer.await.unwrap().unwrap();
    let id = record_id(&response);
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    let (sent, done) = consumer_events(&text);
    assert!(done, "{text}");
    assert_eq!(events_content(&sent), "Hello there", "{text}");
    let (_, record) = club.get(&format!("/api/v1/requests/{id}"), None).await;
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["response"]["content"], "Hello there", "{record}");
    club.finish().await;
}

/// Over-limit requests get 429 (rate, concurrency, key creation, sign-in), 413 (body) or 400
/// (messages, characters, `max_tokens`), each in the OpenAI envelope naming the limit — and
/// nothing is recorded or routed for them. A manifest over its limit is refused on the link.
#[tokio::test]
async fn over_limit_requests_are_refused_and_nothing_is_recorded_or_routed() {
    let club = Club::with_limits(Limits {
        requests_per_minute: 3,
        max_concurrent_per_member: 1,
        max_body_bytes: 16 * 1024,
        max_upload_bytes: 64 * 1024,
        max_blob_bytes: 64 * 1024,
        max_file_bytes: 64 * 1024,
        max_messages: 4,
        max_input_chars: 1000,
        max_tokens_ceiling: 100,
        max_manifest_bytes: 2048,
        sign_in_per_minute: 2,
        key_creations_per_hour: 2,
        trusted_proxies: Vec::new(),
    })
    .await;
    let (ada_user, ada) = club.member("ada", "inference,account").await;
    let (_, bob) = club.member("bob", "provider").await;
    let box_manifest = manifest("box", &[service("s", &["echo"], None)]);
    let node = TestNode::link_online(&club, &bob, "bob", box_manifest, Answer::Now).await;
    let bob_user = club.store.user_by_handle("bob").await.unwrap().unwrap();
    let second_key = club.key(&bob_user, "provider").await;
    let slow_manifest = manifest("slow", &[service("s", &["slow"], None)]);
    let slow = TestNode::link_online(&club, &second_key, "bob", slow_manifest, Answer::Hold).await;

    // The rate: 3 a minute per key, counted down in the headers; the 4th is refused.
    let records = club.record_count().await;
    for remaining in [2, 1, 0] {
        let (status, headers, body) = club
            .call_full(
                Method::POST,
                "/v1/chat/completions",
                Some(&ada),
                Some(chat("echo")),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["x-ratelimit-limit"], "3");
        assert_eq!(
            headers["x-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
        assert!(
            headers["x-ratelimit-reset"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                <= 60
        );
    }
    assert_eq!(club.record_count().await, records + 3);
    assert_eq!(node.job_count(), 3);
    let (status, headers, body) = club
        .call_full(
            Method::POST,
            "/v1/chat/completions",
            Some(&ada),
            Some(chat("echo")),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_error(&body, "rate_limit_exceeded");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert!(headers.contains_key("x-ratelimit-reset"));
    assert_eq!(
        club.record_count().await,
        records + 3,
        "a throttled request left a record"
    );
    assert_eq!(node.job_count(), 3, "a throttled request reached a node");
    // Uploads and batches make work and take storage: they count against the same rate.
    let form = "--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b\r\n\
                Content-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n\
                {}\r\n--b--\r\n";
    let upload = club
        .http
        .post(format!("{}/v1/files", club.url))
        .bearer_auth(&ada)
        .header("content-type", "multipart/form-data; boundary=b")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_error(&upload.json().await.unwrap(), "rate_limit_exceeded");
    let batch = json!({"input_file_id": "file-x", "endpoint": "/v1/chat/completions",
                       "completion_window": "24h"});
    let (status, _, body) = club
        .call_full(Method::POST, "/v1/batches", Some(&ada), Some(batch))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_error(&body, "rate_limit_exceeded");

    // Sizes: each over-limit request on a fresh key (the rate comes first).
    let big = "x".repeat(20 * 1024);
    let many: Vec<Value> = (0..5)
        .map(|_| json!({"role": "user", "content": "hi"}))
        .collect();
    let cases = [
        (
            json!({"model": "echo", "messages": [{"role": "user", "content": big}]}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            None,
        ),
        (
            json!({"model": "echo", "messages": many}),
            StatusCode::BAD_REQUEST,
            "too_many_messages",
            Some("messages"),
        ),
        (
            json!({"model": "echo", "messages": [{"role": "user", "content": "y".repeat(600)}, {"role": "user", "content": "y".repeat(600)}]}),
            StatusCode::BAD_REQUEST,
            "input_too_long",
            Some("messages"),
        ),
        (
            json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 101}),
            StatusCode::BAD_REQUEST,
            "max_tokens_too_large",
            Some("max_tokens"),
        ),
        (
            json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5000}),
            StatusCode::BAD_REQUEST,
            "max_tokens_too_large",
            Some("max_completion_tokens"),
        ),
    ];
    for (body, status, code, param) in cases {
        let key = club.key(&ada_user, "inference").await;
        let (got, headers, answer) = club
            .call_full(Method::POST, "/v1/chat/completions", Some(&key), Some(body))
            .await;
        assert_eq!(got, status, "{code}: {answer}");
        assert_error(&answer, code);
        assert!(!headers.contains_key("x-club-request-id"), "{code}");
        if let Some(param) = param {
            assert_eq!(answer["error"]["param"], param, "{code}");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("at most"),
                "{answer}"
            );
        }
    }
    assert_eq!(
        club.record_count().await,
        records + 3,
        "a refused request left a record"
    );
    assert_eq!(node.job_count(), 3, "a refused request reached a node");

    // Concurrency: one in flight per member; the second waits for nobody and is refused.
    let key = club.key(&ada_user, "inference").await;
    let first = {
        let request = club
            .http
            .post(format!("{}/v1/chat/completions", club.url))
            .bearer_auth(&key)
            .json(&chat("slow"))
            .send();
        tokio::spawn(request)
    };
    let job = slow.wait_job(1).await;
    // The in-flight request's record is committed while it is dispatched: wait for it.
    let with_one = records + 4;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while club.record_count().await < with_one {
        assert!(
            std::time::Instant::now() < deadline,
            "no record for the request in flight"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (status, headers, body) = club
        .call_full(
            Method::POST,
            "/v1/chat/completions",
            Some(&key),
            Some(chat("echo")),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_error(&body, "too_many_concurrent_requests");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(club.record_count().await, with_one);
    assert_eq!(node.job_count(), 3);
    slow.send(chunk(job, "slow", "done"));
    slow.send(done(job));
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    // The slot came back.
    assert_eq!(club.chat(&key, "echo").await.0, StatusCode::OK);

    // Key creation: 2 an hour per member.
    let keys_before = club.store.list_keys(ada_user.id).await.unwrap().len();
    for n in 0..2 {
        let (status, body) = club
            .call(
                Method::POST,
                "/api/v1/keys",
                Some(&ada),
                Some(json!({"name": format!("k{n}"), "scopes": ["inference"]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, headers, body) = club
        .call_full(
            Method::POST,
            "/api/v1/keys",
            Some(&ada),
            Some(json!({"name": "k3", "scopes": ["inference"]})),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_error(&body, "rate_limit_exceeded");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(
        club.store.list_keys(ada_user.id).await.unwrap().len(),
        keys_before + 2
    );

    // Sign-in routes, per client address, whichever route answers (here none: 404).
    for _ in 0..2 {
        let (status, headers, _) = club
            .call_full(Method::GET, "/api/v1/auth/x", None, None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers["x-ratelimit-limit"], "2");
    }
    let (status, headers, body) = club
        .call_full(Method::POST, "/auth/github/callback", None, None)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_error(&body, "rate_limit_exceeded");
    assert!(headers.contains_key("retry-after"));
    // Other routes are not sign-in routes.
    assert_eq!(
        club.get("/api/v1/requests/public", None).await.0,
        StatusCode::OK
    );

    // A manifest over the coordinator's limit is refused on the link, with the reason.
    let mut padded = manifest("padded", &[service("s", &["echo"], None)]);
    padded["hosts"][0]["notes"] = json!("n".repeat(3000));
    let refused = TestNode::link(&club, &bob, padded, Answer::Now)
        .await
        .err()
        .expect("an oversized manifest was accepted");
    assert!(refused.contains("2048 bytes"), "{refused}");
    let (status, _) = club.get("/api/v1/providers/bob/padded", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    club.finish().await;
}

/// Every table of the schema and its text columns, read from the database itself.
async fn text_columns(club: &Club) -> Vec<(String, String)> {
    let rows = if club.store.backend() == inference_club_coordinator::testing::Backend::Postgres {
        sqlx::query(
            "SELECT table_name::text AS t, column_name::text AS c FROM information_schema.columns
             WHERE table_schema = current_schema()
               AND data_type IN ('text', 'character varying', 'character')",
        )
        .fetch_all(&club.raw)
        .await
        .unwrap()
    } else {
        sqlx::query(
            "SELECT m.name AS t, p.name AS c FROM sqlite_master m, pragma_table_info(m.name) p
             WHERE m.type = 'table' AND (upper(p.type) LIKE '%TEXT%' OR upper(p.type) LIKE '%CHAR%')",
        )
        .fetch_all(&club.raw)
        .await
        .unwrap()
    };
    rows.iter()
        .map(|row| (row.get::<String, _>("t"), row.get::<String, _>("c")))
        .collect()
}

/// Account deletion, as `DELETE /api/v1/me` does it: the member's links close at once, their
/// keys stop working, and no row of any table keeps their id or handle — not their records,
/// keys, providers or manifests, nor the records their nodes served (or were tried for) for
/// others, nor a record still in flight on their node when they left.
async fn deletion_leaves_no_row_of_the_member(club: Club) {
    let handle = "zed-gone";
    let (zed, key) = club.member(handle, "inference,provider,account").await;
    let (_, bob) = club.member("bob", "inference,provider,account").await;
    let workshop = TestNode::link_online(
        &club,
        &key,
        handle,
        manifest("workshop", &[service("s", &["zed-model"], None)]),
        Answer::Now,
    )
    .await;
    let bench = TestNode::link_online(
        &club,
        &bob,
        "bob",
        manifest("bench", &[service("s", &["bob-model"], None)]),
        Answer::Now,
    )
    .await;
    // zed's own requests, any visibility; settings and policies set.
    assert_eq!(club.chat(&key, "bob-model").await.0, StatusCode::OK);
    // One of them with a blob (the audio or image of a record).
    let (status, headers, _) = club
        .call_full(
            Method::POST,
            "/v1/chat/completions",
            Some(&key),
            Some(chat("bob-model")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let with_blob = RecordId::parse(headers["x-club-request-id"].to_str().unwrap()).unwrap();
    club.store
        .put_blob("zed-blob", with_blob, "audio/wav", b"RIFF....WAVE")
        .await
        .unwrap();
    let mut private = chat("bob-model");
    private["visibility"] = json!("private");
    club.call(
        Method::POST,
        "/v1/chat/completions",
        Some(&key),
        Some(private),
    )
    .await;
    club.call(
        Method::PATCH,
        "/api/v1/me",
        Some(&key),
        Some(json!({"routing_preference": "prefer_own", "default_visibility": "unlisted"})),
    )
    .await;
    let (status, _) = club
        .call(
            Method::PATCH,
            &format!("/api/v1/providers/{handle}/workshop"),
            Some(&key),
            Some(json!({"access": {"logins": ["bob"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // bob's requests served by zed's node.
    let (status, headers, _) = club
        .call_full(
            Method::POST,
            "/v1/chat/completions",
            Some(&bob),
            Some(chat("zed-model")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let served = headers["x-club-request-id"].to_str().unwrap().to_owned();
    // bob's request for which zed's node was tried before bob's served it.
    let mut tried = InferenceRecord::new(
        RecordId::new(),
        Some("bob".into()),
        ChatCompletionRequest::new("m", vec![ChatMessage::user("hi")]),
        Visibility::Public,
        Utc::now(),
    );
    club.store.insert_record(&tried).await.unwrap();
    let by = |operator: &str, provider: &str| ServedBy {
        operator: operator.into(),
        provider: provider.into(),
        service: Some("s".into()),
    };
    tried
        .dispatched(by(handle, "workshop"), Utc::now())
        .unwrap();
    tried.attempt_failed("unavailable", "the node went away");
    tried.dispatched(by("bob", "bench"), Utc::now()).unwrap();
    club.store.save_record(&tried).await.unwrap();
    // A request of bob's in flight on zed's node when zed leaves: the node holds it.
    let held = TestNode::link_online(
        &club,
        &key,
        handle,
        manifest("held", &[service("s", &["held-model"], None)]),
        Answer::Hold,
    )
    .await;
    let in_flight = tokio::spawn(
        club.http
            .post(format!("{}/v1/chat/completions", club.url))
            .bearer_auth(&bob)
            .json(&chat("held-model"))
            .send(),
    );
    held.wait_job(1).await;

    let (status, body) = club
        .call(Method::DELETE, "/api/v1/me", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["nodes_disconnected"], 2);
    assert!(
        body["not_reached"]
            .as_str()
            .unwrap()
            .contains("own machines"),
        "{body}"
    );
    workshop.wait_closed().await;
    held.wait_closed().await;
    let answered = in_flight.await.unwrap().unwrap();
    assert!(!answered.status().is_success() || answered.text().await.is_ok());
    // Their keys are refused, also for linking again.
    assert_eq!(
        club.get("/api/v1/me", Some(&key)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let relink = TestNode::link(&club, &key, manifest("workshop", &[]), Answer::Now)
        .await
        .err()
        .unwrap();
    assert!(relink.contains("401"), "{relink}");
    // bob's records stay, without zed.
    let (status, record) = club
        .get(&format!("/api/v1/requests/{served}"), Some(&bob))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["provider"], Value::Null, "{record}");
    assert_eq!(record["response"]["content"], "answer from workshop");
    let (_, record) = club
        .get(&format!("/api/v1/requests/{}", tried.id), Some(&bob))
        .await;
    assert_eq!(record["provider"]["operator"], "bob", "{record}");
    drop(bench);

    // Give the in-flight record its final save, then look in every table.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let columns = text_columns(&club).await;
    let tables: BTreeSet<&str> = columns.iter().map(|(t, _)| t.as_str()).collect();
    for table in [
        "users",
        "api_keys",
        "providers",
        "provider_revisions",
        "records",
    ] {
        assert!(tables.contains(table), "{table} missing from {tables:?}");
    }
    let id = zed.id.to_string();
    for (table, column) in &columns {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM \"{table}\" WHERE \"{column}\" LIKE $1 OR lower(\"{column}\") LIKE $2"
        ))
        .bind(format!("%{id}%"))
        .bind(format!("%{handle}%"))
        .fetch_one(&club.raw)
        .await
        .unwrap();
        assert_eq!(
            row.get::<i64, _>("n"),
            0,
            "{table}.{column} still names {handle}"
        );
    }
    // The blobs of their records went with them.
    assert!(club.store.blob("zed-blob").await.unwrap().is_none());
    // The rows of others are still there.
    assert!(club.record_count().await >= 3);
    club.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_deletion_leaves_no_row_of_the_member_on_sqlite() {
    deletion_leaves_no_row_of_the_member(Club::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_deletion_leaves_no_row_of_the_member_on_postgres() {
    let Some(club) = Club::on_postgres().await else {
        return;
    };
    deletion_leaves_no_row_of_the_member(club).await;
}

/// Behind a trusted reverse proxy, sign-in attempts count per client (the address the proxy
/// puts in `X-Forwarded-For`), so one client cannot use up everyone's allowance; a client that
/// forges the header itself, without being a trusted proxy, gains nothing.
#[tokio::test]
async fn behind_a_trusted_proxy_sign_in_limits_count_per_forwarded_client() {
    let sign_in = |club: &Club, forwarded: &str| {
        let request = club
            .http
            .get(format!("{}/api/v1/auth/x", club.url))
            .header("x-forwarded-for", forwarded.to_owned());
        async move { request.send().await.unwrap().status() }
    };
    // The test talks from 127.0.0.1, which plays the proxy here.
    let behind = Club::with_limits(Limits {
        sign_in_per_minute: 2,
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        ..Limits::default()
    })
    .await;
    for _ in 0..2 {
        assert_eq!(sign_in(&behind, "203.0.113.7").await, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        sign_in(&behind, "203.0.113.7").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy still has its allowance; a forged hop further left
    // does not change who the proxy says the client is.
    assert_eq!(sign_in(&behind, "203.0.113.8").await, StatusCode::NOT_FOUND);
    assert_eq!(
        sign_in(&behind, "198.51.100.1, 203.0.113.7").await,
        StatusCode::TOO_MANY_REQUESTS
    );

    // Without a trusted proxy the header is ignored: every "client" is 127.0.0.1.
    let open = Club::with_limits(Limits {
        sign_in_per_minute: 2,
        ..Limits::default()
    })
    .await;
    assert_eq!(sign_in(&open, "203.0.113.7").await, StatusCode::NOT_FOUND);
    assert_eq!(sign_in(&open, "203.0.113.8").await, StatusCode::NOT_FOUND);
    assert_eq!(
        sign_in(&open, "203.0.113.9").await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// The id of the key whose secret is `secret`, as `account` (a key of the same member) lists it.
async fn key_id(club: &Club, account: &str, secret: &str) -> String {
    let (_, keys) = club.get("/api/v1/keys", Some(account)).await;
    keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| secret.starts_with(k["prefix"].as_str().unwrap()))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A node links with an API key only: a browser's session cookie (which holds every scope)
/// is refused, so a page on the club's own site cannot link a node as its visitor.
#[tokio::test]
async fn a_session_cookie_cannot_link_a_node() {
    let club = Club::start().await;
    let (ada, _) = club.member("ada", "account").await;
    let (_, token) = club.store.create_session(ada.id).await.unwrap();
    let request = club.link_request("cookie", &format!("club_session={token}"));
    let refused = match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("a session cookie linked a node"),
        Err(error) => error.to_string(),
    };
    assert!(refused.contains("401"), "{refused}");
    // The session itself is good: it reads the member's account.
    let me = club
        .http
        .get(format!("{}/api/v1/me", club.url))
        .header("cookie", format!("club_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
}

/// A node's link lives no longer than its key: revoked through the API, the link of that key
/// closes at once (the revoking coordinator checks it without waiting for a heartbeat), the
/// node is offline, its model is gone, and no request reaches it; it cannot link again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_provider_key_ends_the_link_it_opened() {
    let club = Club::start().await;
    let (ada, account) = club.member("ada", "account").await;
    let provider = club.key(&ada, "provider").await;
    let (_, bob) = club.member("bob", "inference").await;
    let node = TestNode::link_online(
        &club,
        &provider,
        "ada",
        manifest("box", &[service("s", &["private-model"], None)]),
        Answer::Now,
    )
    .await;
    let (status, answer) = club.chat(&bob, "private-model").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(node.job_count(), 1);

    let id = key_id(&club, &account, &provider).await;
    let started = std::time::Instant::now();
    let (status, _) = club
        .call(
            Method::DELETE,
            &format!("/api/v1/keys/{id}"),
            Some(&account),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    node.wait_closed().await;
    club.wait_online("ada", "box", false).await;
    // Well within one heartbeat interval (2 s here): the revocation itself triggered the check.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !club
            .models(&bob)
            .await
            .contains(&"private-model".to_owned())
    );
    let (status, answer) = club.chat(&bob, "private-model").await;
    assert!(
        matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE
        ),
        "{status} {answer}"
    );
    assert_eq!(node.job_count(), 1, "a revoked key's node got a job");
    let again = TestNode::link(
        &club,
        &provider,
        manifest("box", &[service("s", &["private-model"], None)]),
        Answer::Now,
    )
    .await;
    assert!(
        again.as_ref().is_err_and(|e| e.contains("401")),
        "{:?}",
        again.err()
    );
    club.finish().await;
}

/// A revocation this coordinator did not make (another replica on the same database, which
/// tells it nothing here; the key still sits in its memory of recent keys) ends the link at the
/// next heartbeat check, which reads the database: likewise a key whose member is gone (here,
/// its row deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_ends_within_a_heartbeat_when_its_key_is_revoked_elsewhere() {
    let club = Club::start().await;
    let (ada, revoked) = club.member("ada", "provider").await;
    let deleted = club.key(&ada, "provider").await;
    let (_, bob) = club.member("bob", "inference").await;
    let first = TestNode::link_online(
        &club,
        &revoked,
        "ada",
        manifest("first", &[service("s", &["first-model"], None)]),
        Answer::Now,
    )
    .await;
    let second = TestNode::link_online(
        &club,
        &deleted,
        "ada",
        manifest("second", &[service("s", &["second-model"], None)]),
        Answer::Now,
    )
    .await;
    let started = std::time::Instant::now();
    club.revoke_behind_its_back(&revoked).await;
    sqlx::query("DELETE FROM api_keys WHERE prefix = $1")
        .bind(&deleted[..12])
        .execute(&club.raw)
        .await
        .unwrap();
    first.wait_closed().await;
    second.wait_closed().await;
    club.wait_online("ada", "first", false).await;
    club.wait_online("ada", "second", false).await;
    // One check per heartbeat interval (2 s here), plus slack.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let models = club.models(&bob).await;
    assert!(!models.contains(&"first-model".to_owned()), "{models:?}");
    assert!(!models.contains(&"second-model".to_owned()), "{models:?}");
    assert_eq!(first.job_count() + second.job_count(), 0);
    club.finish().await;
}

/// A node whose key was revoked cannot announce a new manifest: the `hello` is refused with the
/// reason, and the link closes with it (code 1008).
#[tokio::test]
async fn a_new_hello_on_a_link_whose_key_was_revoked_is_refused_and_closes_it() {
    let club = Club::start().await;
    let (_, provider) = club.member("ada", "provider").await;
    let request = club.link_request("authorization", &format!("Bearer {provider}"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = || {
        let hello = NodeMessage::Hello(Hello {
            protocol_version: link::PROTOCOL_VERSION,
            node_version: "security-test/1".into(),
            manifest: manifest("box", &[service("s", &["m"], None)]),
        });
        Message::Text(link::encode(&hello).unwrap().into())
    };
    socket.send(hello()).await.unwrap();
    match socket.next().await {
        Some(Ok(Message::Text(text))) => assert!(matches!(
            link::decode_coordinator(&text).unwrap(),
            CoordinatorMessage::Welcome(_)
        )),
        other => panic!("expected welcome, got {other:?}"),
    }
    // Revoked behind this coordinator's back (as by another replica): the hello is the first to
    // notice, long before the heartbeat check (2 s).
    club.revoke_behind_its_back(&provider).await;
    socket.send(hello()).await.unwrap();
    let mut refused = None;
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(CoordinatorMessage::Refused(r)) = link::decode_coordinator(&text) {
                        refused = Some(r.reason);
                    }
                }
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the link stayed open")
    .expect("a close frame with a reason");
    let reason = "the key this node linked with was revoked, or its member deleted";
    assert_eq!(refused.as_deref(), Some(reason));
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), reason);
    club.wait_online("ada", "box", false).await;
    club.finish().await;
}
