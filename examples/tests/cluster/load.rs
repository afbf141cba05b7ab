//! A steady load of consumers through one door, and nodes linked through nginx.

use std::time::{Duration, Instant};

use inference_club_core::record::RecordId;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::content_of;
use crate::support::cluster::{Cluster, chat_for};
use crate::support::{
    ANSWER, FakeEngine, MODEL, STARTUP, Script, ServiceSpec, SseReader, error_of, request_id,
    streamed_content,
};

/// What one request of a load gave its consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 200 and the whole answer.
    Answered,
    /// 200, then an error event and `[DONE]` (its code).
    ErrorEvent(String),
    /// An error status (and the start of its body).
    Refused(u16, String),
    /// The connection broke (what a consumer sees when the replica holding it dies).
    Broken(String),
}

/// One request of a load.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) sent: Instant,
    pub(crate) done: Instant,
    pub(crate) id: Option<RecordId>,
    pub(crate) outcome: Outcome,
}

/// How long one request of a load may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(20);

/// `consumers` tasks sending chats to `url` one after another (streamed, every third whole)
/// until `stop`; each request bounded by [`HANG`].
pub(crate) fn start_load(
    cluster: &Cluster,
    url: &str,
    consumers: usize,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<Vec<Sent>>> {
    (0..consumers)
        .map(|c| {
            let (http, key) = (cluster.club.http.clone(), cluster.club.key.clone());
            let (url, stop) = (url.to_owned(), stop.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut i = 0usize;
                while !stop.is_cancelled() {
                    i += 1;
                    let stream = !(c + i).is_multiple_of(3);
                    let started = Instant::now();
                    let request = one_request(&http, &url, &key, stream);
                    let (id, outcome) = tokio::time::timeout(HANG, request)
                        .await
                        .unwrap_or_else(|_| panic!("a request hung for {HANG:?}"));
                    sent.push(Sent {
                        sent: started,
                        done: Instant::now(),
                        id,
                        outcome,
                    });
                }
                sent
            })
        })
        .collect()
}

async fn one_request(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    stream: bool,
) -> (Option<RecordId>, Outcome) {
    let response = match http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_for(MODEL, stream))
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return (None, Outcome::Broken(error.to_string())),
    };
    let status = response.status().as_u16();
    let id = request_id(&response);
    if status != 200 {
        let body = response.text().await.unwrap_or_default();
        return (
            id,
            Outcome::Refused(status, body.chars().take(200).collect()),
        );
    }
    if !stream {
        return match response.bytes().await {
            Ok(bytes) => {
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                assert_eq!(content_of(&body), ANSWER, "{body}");
                (id, Outcome::Answered)
            }
            Err(error) => (id, Outcome::Broken(error.to_string())),
        };
    }
    let mut reader = SseReader::new(response);
    let mut events = Vec::new();
    while let Some(event) = reader.next().await {
        events.push(event);
    }
    if reader.broken {
        return (id, Outcome::Broken(format!("after {events:?}")));
    }
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    if let Some(error) = events.iter().find_map(|e| error_of(e)) {
        let code = error["code"].as_str().unwrap_or_default().to_owned();
        assert!(!code.is_empty(), "an error event without a code: {error}");
        return (id, Outcome::ErrorEvent(code));
    }
    assert_eq!(streamed_content(&events), ANSWER, "{events:?}");
    (id, Outcome::Answered)
}

/// Gathers what the consumers saw.
pub(crate) async fn gather(consumers: Vec<tokio::task::JoinHandle<Vec<Sent>>>) -> Vec<Sent> {
    let mut all = Vec::new();
    for consumer in consumers {
        all.extend(consumer.await.unwrap());
    }
    all
}

/// Starts `count` nodes `load-1…` (each with an engine of its own) linked through nginx, and
/// waits until every replica lists them all online.
pub(crate) async fn nodes_through_nginx(
    cluster: &mut Cluster,
    count: usize,
) -> (Vec<String>, Vec<FakeEngine>) {
    let script = Script::answer(&["Hello", ", ", "world", "!"], Duration::from_millis(30));
    let mut names = Vec::new();
    let mut engines = Vec::new();
    for n in 1..=count {
        let name = format!("load-{n}");
        let engine = FakeEngine::start(&name, script.clone()).await;
        let nginx = cluster.nginx_url.clone();
        cluster.spawn_node(&name, &[ServiceSpec::fake(&engine)], &nginx);
        names.push(name);
        engines.push(engine);
    }
    for name in &names {
        cluster
            .club
            .node(name)
            .proc
            .wait_for_line("linked to the coordinator", STARTUP)
            .await;
    }
    cluster.wait_online_everywhere(&names, STARTUP).await;
    (names, engines)
}
