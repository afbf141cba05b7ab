//! The cluster suite: real processes — three `club-coordinator serve --nats` replicas on one
//! PostgreSQL database (a fresh one per test) and one `nats-server`, nginx in front of them
//! (`scripts/nginx-cluster.conf`, as `scripts/cluster.sh` runs it), `club-provider` nodes linked
//! to chosen replicas or through nginx, fake engines in the test. Each test writes down what a
//! user of a cluster relies on: a request succeeds whichever replica it lands on; streaming,
//! cancel, failover and in-stream errors behave as in one process; a replica killed under load
//! loses no record and its nodes come back through the others; a rolling restart refuses
//! nothing.
//!
//! It needs `CLUB_TEST_DATABASE_URL` (scripts/postgres.sh), `nats-server` and `nginx` (Debian's
//! packages; `CLUB_TEST_NATS_SERVER` and `CLUB_TEST_NGINX` name them); without them each test
//! says loudly that it skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use inference_club_coordinator::testing::RecordQuery;
use inference_club_coordinator::testing::TestDatabase;
use inference_club_core::record::{InferenceRecord, RecordId, Status};
use serde_json::Value;
use support::cluster::{Cluster, REPLICAS, Streamed, Tools, chat_for, read_streamed, tools};
use support::{
    ANSWER, FakeEngine, Fault, MODEL, STARTUP, Script, ServiceSpec, SseReader, error_of,
    leave_after, loud, request_id, streamed_content,
};
use tokio_util::sync::CancellationToken;

/// Every test is bounded.
const TEST_LIMIT: Duration = Duration::from_secs(90);

/// Runs `test` on a fresh database of the test server, bounded by [`TEST_LIMIT`], and drops
/// the database afterwards.
async fn on_fresh_database<F, Fut>(tools: Tools, test: F)
where
    F: FnOnce(Tools, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let database = TestDatabase::postgres("the cluster tests").await.unwrap();
    support::bounded_by(TEST_LIMIT, test(tools, database.url.clone())).await;
    database.remove().await;
}

/// A service of a fake engine serving `model`.
fn serving(engine: &FakeEngine, model: &str) -> ServiceSpec {
    ServiceSpec {
        model: model.to_owned(),
        ..ServiceSpec::fake(engine)
    }
}

/// The content of a whole answer.
fn content_of(body: &Value) -> &str {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

/// Every record `ada` made, as stored now.
async fn all_records(cluster: &Cluster) -> Vec<InferenceRecord> {
    let store = cluster.club.store();
    let ada = store.user_by_handle("ada").await.unwrap().unwrap();
    let mut query = RecordQuery::made_by(ada.id);
    query.limit = inference_club_coordinator::testing::MAX_PAGE_SIZE;
    let mut all = Vec::new();
    loop {
        let page = store.list_records(&query).await.unwrap();
        all.extend(page.items);
        match page.next {
            Some(cursor) => query = query.after(Some(cursor)),
            None => return all,
        }
    }
}

/// Waits until every record `ada` made is final; returns them, or fails after `within` naming
/// those still in flight.
async fn all_final(cluster: &Cluster, within: Duration) -> Vec<InferenceRecord> {
    let deadline = Instant::now() + within;
    loop {
        let records = all_records(cluster).await;
        let open: Vec<String> = records
            .iter()
            .filter(|r| !r.status().is_final())
            .map(|r| format!("{} {:?}", r.id, r.status()))
            .collect();
        if open.is_empty() {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "records still in flight after {within:?}: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stream ended cleanly with `[DONE]` right after one error event, which it returns.
fn ends_with_error(streamed: &Streamed) -> Value {
    let events = &streamed.events;
    assert!(!streamed.broken, "the stream must end cleanly: {events:?}");
    let n = events.len();
    assert!(n >= 2, "{events:?}");
    assert_eq!(events[n - 1], "[DONE]", "{events:?}");
    let error = error_of(&events[n - 2]).unwrap_or_else(|| panic!("no error event: {events:?}"));
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{error}"
    );
    assert!(error.get("type").is_some(), "{error}");
    error
}

/// The stream is a whole answer: no error, `content` in full, one `stop`, then `[DONE]`.
fn assert_whole_stream(streamed: &Streamed, content: &str) {
    let events = &streamed.events;
    assert_eq!(streamed.status, 200, "{events:?}");
    assert!(!streamed.broken, "the stream broke: {events:?}");
    assert!(events.iter().all(|e| error_of(e).is_none()), "{events:?}");
    assert_eq!(streamed_content(events), content, "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let stops = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|v| v["choices"][0]["finish_reason"] == "stop")
        .count();
    assert_eq!(stops, 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_succeeds_whichever_replica_it_lands_on() {
    let Some(tools) = tools("every_request_succeeds_whichever_replica_it_lands_on") else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let a = FakeEngine::start("a", Script::default()).await;
        let b = FakeEngine::start("b", Script::default()).await;
        let mut cluster = Cluster::start(&tools, &database).await;

        // node-a links to replica 1, node-b to replica 2; every replica (and nginx) lists both
        // models soon after each link.
        let (r1, r2) = (cluster.url(0), cluster.url(1));
        cluster.add_node("node-a", &[serving(&a, "m-a")], &r1).await;
        let seen = cluster
            .wait_for_models_everywhere(&["m-a"], Duration::from_secs(3))
            .await;
        loud(&format!(
            "cluster: m-a listed by every replica {seen:?} after its link"
        ));
        cluster.add_node("node-b", &[serving(&b, "m-b")], &r2).await;
        let seen = cluster
            .wait_for_models_everywhere(&["m-a", "m-b"], Duration::from_secs(3))
            .await;
        loud(&format!(
            "cluster: m-b listed by every replica {seen:?} after its link"
        ));
        assert_eq!(cluster.replicas_that_linked("node-a"), vec![0]);
        assert_eq!(cluster.replicas_that_linked("node-b"), vec![1]);
        cluster
            .wait_online_everywhere(&["node-a".into(), "node-b".into()], Duration::from_secs(3))
            .await;

        // Both models through every door, whole and streamed.
        let mut served: Vec<(RecordId, &str)> = Vec::new();
        for door in cluster.every_door() {
            for (model, node, engine) in [("m-a", "node-a", &a), ("m-b", "node-b", &b)] {
                let before = engine.received();
                let (status, id, body) = cluster.chat_whole(&door, &chat_for(model, false)).await;
                assert_eq!(status, 200, "{model} at {door}: {body}");
                assert_eq!(content_of(&body), ANSWER, "{model} at {door}: {body}");
                let id = id.expect("no x-club-request-id");
                assert_eq!(body["id"], id.completion_id());
                served.push((id, node));

                let streamed = cluster.chat_streamed(&door, &chat_for(model, true)).await;
                assert_whole_stream(&streamed, ANSWER);
                served.push((streamed.id.expect("no x-club-request-id"), node));
                assert_eq!(engine.received(), before + 2, "{model} at {door}");
                assert_eq!(engine.requests().last().unwrap()["model"], model);
            }
        }

        // A large request (1.2 MB of text, over NATS's default 1 MiB message) crosses from
        // replica 3 to the node on replica 1 whole.
        let big = "€".repeat(400_000);
        let body = serde_json::json!({
            "model": "m-a",
            "messages": [{"role": "user", "content": big}],
        });
        let (status, id, answer) = cluster.chat_whole(&cluster.url(2), &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(content_of(&answer), ANSWER);
        served.push((id.unwrap(), "node-a"));
        let asked = a.requests().last().unwrap()["messages"][0]["content"].clone();
        assert!(asked == big.as_str(), "the engine got another text");

        // Every record is final, readable from every replica, and names the node that served it.
        for (id, node) in &served {
            for n in 0..REPLICAS {
                let (status, record) = cluster.record_via(&cluster.url(n), *id).await;
                assert_eq!(status, 200, "record {id} from r{}: {record}", n + 1);
                assert_eq!(record["status"], "succeeded", "{record}");
                assert_eq!(record["provider"]["name"], *node, "{record}");
                assert_eq!(record["provider"]["operator"], "ada", "{record}");
                assert_eq!(record["response"]["content"], ANSWER, "{record}");
            }
        }
        assert_eq!(a.completed() + b.completed(), served.len());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_across_replicas_arrives_whole_in_order_and_as_it_is_made() {
    let Some(tools) = tools("a_stream_across_replicas_arrives_whole_in_order_and_as_it_is_made")
    else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let pieces: Vec<String> = (0..30).map(|n| format!("piece{n:02} ")).collect();
        let words: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let pace = Duration::from_millis(15);
        let engine = FakeEngine::start("paced", Script::answer(&words, pace)).await;
        let mut cluster = Cluster::start(&tools, &database).await;
        let r1 = cluster.url(0);
        cluster
            .add_node("node-a", &[ServiceSpec::fake(&engine)], &r1)
            .await;
        cluster
            .wait_for_models_everywhere(&[MODEL], Duration::from_secs(3))
            .await;

        // Four consumers at once on replicas 2 and 3, the node on replica 1: the chunks of each
        // job stay with their job, in order, one for one.
        let readers: Vec<_> = [1, 2, 1, 2]
            .into_iter()
            .map(|n| {
                let (http, key) = (cluster.club.http.clone(), cluster.club.key.clone());
                let url = cluster.url(n);
                tokio::spawn(async move {
                    let response = http
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(key)
                        .json(&chat_for(MODEL, true))
                        .send()
                        .await
                        .unwrap();
                    read_streamed(response).await
                })
            })
            .collect();
        for reader in readers {
            let (streamed, arrivals) = reader.await.unwrap();
            assert_whole_stream(&streamed, &pieces.concat());
            let id = streamed.id.unwrap();
            let chunks: Vec<Value> = streamed
                .events
                .iter()
                .filter_map(|e| serde_json::from_str(e).ok())
                .collect();
            let deltas: Vec<&str> = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .filter(|c| !c.is_empty())
                .collect();
            assert_eq!(deltas, words, "one chunk per piece, in order");
            assert!(
                chunks.iter().all(|c| c["id"] == id.completion_id()),
                "every chunk names the record"
            );
            // Streamed as made, not gathered: the pieces took 30 × 15 ms to make.
            let first = streamed
                .events
                .iter()
                .position(|e| streamed_content(std::slice::from_ref(e)).starts_with("piece00"))
                .unwrap();
            let spread = arrivals[arrivals.len() - 1] - arrivals[first];
            assert!(
                spread >= pace * 15,
                "the chunks came in a burst ({spread:?}), not as they were made"
            );
            let record = cluster.club.final_record(id, Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Succeeded);
            assert_eq!(
                record.response.content.as_deref(),
                Some(pieces.concat().as_str())
            );
            assert_eq!(record.served_by.unwrap().provider, "node-a");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_another_replica_that_goes_away_cancels_the_job_at_the_engine() {
    let Some(tools) =
        tools("a_consumer_on_another_replica_that_goes_away_cancels_the_job_at_the_engine")
    else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let pieces: Vec<String> = (0..100).map(|n| format!("w{n} ")).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let engine =
            FakeEngine::start("slow", Script::answer(&pieces, Duration::from_millis(100))).await;
        let mut cluster = Cluster::start(&tools, &database).await;
        let r1 = cluster.url(0);
        cluster
            .add_node("node-a", &[ServiceSpec::fake(&engine)], &r1)
            .await;
        cluster
            .wait_for_models_everywhere(&[MODEL], Duration::from_secs(3))
            .await;

        let response = cluster
            .post_chat(&cluster.url(2), &chat_for(MODEL, true))
            .await;
        assert_eq!(response.status().as_u16(), 200);
        let id = request_id(&response).unwrap();
        let noticed = leave_after(response, "w0 w1 ", &engine).await;
        loud(&format!(
            "cluster: the engine saw the cancel after {noticed:?}"
        ));
        assert!(
            noticed < Duration::from_secs(2),
            "the engine noticed after {noticed:?}"
        );
        assert_eq!(engine.completed(), 0);
        let record = cluster.club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Cancelled);
        assert!(
            record
                .response
                .content
                .as_deref()
                .is_some_and(|c| c.starts_with("w0 w1 ")),
            "{:?}",
            record.response.content
        );
        // The node serves the next request as usual.
        engine.set_script(Script::default());
        let streamed = cluster
            .chat_streamed(&cluster.url(2), &chat_for(MODEL, true))
            .await;
        assert_whole_stream(&streamed, ANSWER);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_another_replica_that_fails_before_output_is_failed_over() {
    let Some(tools) = tools("a_node_on_another_replica_that_fails_before_output_is_failed_over")
    else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let broken = FakeEngine::start(
            "broken",
            Script::default().with_fault(Fault::DropBeforeFirstChunk),
        )
        .await;
        let good = FakeEngine::start("good", Script::default()).await;
        let mut cluster = Cluster::start(&tools, &database).await;
        let (r1, r2, r3) = (cluster.url(0), cluster.url(1), cluster.url(2));
        cluster
            .add_node("node-broken", &[ServiceSpec::fake(&broken)], &r1)
            .await;
        cluster
            .add_node("node-good", &[ServiceSpec::fake(&good)], &r2)
            .await;
        cluster
            .wait_online_everywhere(
                &["node-broken".into(), "node-good".into()],
                Duration::from_secs(3),
            )
            .await;

        // From replica 3, whole and streamed: every answer is whole, and the broken node (on
        // replica 1) is tried and given up for the good one (on replica 2) within a few.
        let mut failed_over = Vec::new();
        for n in 0..6 {
            let stream = n % 2 == 1;
            let id = if stream {
                let streamed = cluster.chat_streamed(&r3, &chat_for(MODEL, true)).await;
                assert_whole_stream(&streamed, ANSWER);
                streamed.id.unwrap()
            } else {
                let (status, id, body) = cluster.chat_whole(&r3, &chat_for(MODEL, false)).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(content_of(&body), ANSWER);
                id.unwrap()
            };
            let record = cluster.club.final_record(id, Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Succeeded);
            assert_eq!(record.served_by.as_ref().unwrap().provider, "node-good");
            if record.attempts.len() == 2 {
                failed_over.push((stream, record));
            }
        }
        assert!(broken.received() >= 1, "the broken node was never tried");
        assert!(!failed_over.is_empty(), "no request was failed over");
        for (_, record) in &failed_over {
            let first = &record.attempts[0];
            assert_eq!(first.served_by.provider, "node-broken");
            assert!(first.error.is_some(), "the failed attempt names its error");
            let second = &record.attempts[1];
            assert_eq!(second.served_by.provider, "node-good");
            assert!(second.error.is_none());
            assert_eq!(record.response.content.as_deref(), Some(ANSWER));
        }
        // The failed attempt is visible from any replica.
        let (_, record) = &failed_over[0];
        let (status, view) = cluster.record_via(&r1, record.id).await;
        assert_eq!(status, 200);
        assert_eq!(view["attempts"][0]["provider"]["name"], "node-broken");
        assert!(
            view["attempts"][0]["error"]["message"].is_string(),
            "{view}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_or_node_that_dies_mid_stream_ends_the_stream_on_another_replica_with_an_error() {
    let Some(tools) = tools(
        "an_engine_or_node_that_dies_mid_stream_ends_the_stream_on_another_replica_with_an_error",
    ) else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let garbage = FakeEngine::start(
            "garbage",
            Script::default().with_fault(Fault::GarbageAfter(2)),
        )
        .await;
        let held =
            FakeEngine::start("held", Script::default().with_fault(Fault::HoldAfter(2))).await;
        let mut cluster = Cluster::start(&tools, &database).await;
        let r1 = cluster.url(0);
        cluster
            .add_node("node-garbage", &[serving(&garbage, "m-garbage")], &r1)
            .await;
        cluster
            .add_node("node-held", &[serving(&held, "m-held")], &r1)
            .await;
        cluster
            .wait_for_models_everywhere(&["m-garbage", "m-held"], Duration::from_secs(3))
            .await;

        // The engine sends garbage after two pieces: the consumer on replica 2 gets what was
        // made, then the error event; not retried.
        let streamed = cluster
            .chat_streamed(&cluster.url(1), &chat_for("m-garbage", true))
            .await;
        assert_eq!(streamed.status, 200);
        let error = ends_with_error(&streamed);
        assert_eq!(error["code"], "upstream_error", "{error}");
        assert_eq!(streamed_content(&streamed.events), "Hello, ");
        assert_eq!(garbage.received(), 1);
        let record = cluster
            .club
            .final_record(streamed.id.unwrap(), Duration::from_secs(5))
            .await;
        assert_eq!(record.status(), Status::Failed);
        assert!(record.failure.is_some());
        assert_eq!(record.response.content.as_deref(), Some("Hello, "));

        // The node itself dies after two pieces: the consumer on replica 3 gets the error
        // event from the replica that held the link.
        let response = cluster
            .post_chat(&cluster.url(2), &chat_for("m-held", true))
            .await;
        assert_eq!(response.status().as_u16(), 200);
        let id = request_id(&response).unwrap();
        let mut reader = SseReader::new(response);
        let mut events = Vec::new();
        while streamed_content(&events) != "Hello, " {
            events.push(reader.next().await.expect("the stream ended early"));
        }
        cluster.club.node("node-held").proc.kill();
        let killed = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = reader.next().await {
                events.push(event);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the stream did not end after the node died: {events:?}"));
        loud(&format!(
            "cluster: the stream ended {:?} after its node died",
            killed.elapsed()
        ));
        let streamed = Streamed {
            status: 200,
            id: Some(id),
            events,
            broken: reader.broken,
        };
        ends_with_error(&streamed);
        assert_eq!(streamed_content(&streamed.events), "Hello, ");
        let record = cluster.club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert!(record.failure.is_some());
        assert_eq!(record.response.content.as_deref(), Some("Hello, "));
        assert_eq!(record.served_by.unwrap().provider, "node-held");
    })
    .await;
}

/// What one request of a load gave its consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
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
struct Sent {
    sent: Instant,
    done: Instant,
    id: Option<RecordId>,
    outcome: Outcome,
}

/// How long one request of a load may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(20);

/// `consumers` tasks sending chats to `url` one after another (streamed, every third whole)
/// until `stop`; each request bounded by [`HANG`].
fn start_load(
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
async fn gather(consumers: Vec<tokio::task::JoinHandle<Vec<Sent>>>) -> Vec<Sent> {
    let mut all = Vec::new();
    for consumer in consumers {
        all.extend(consumer.await.unwrap());
    }
    all
}

/// Starts `count` nodes `load-1…` (each with an engine of its own) linked through nginx, and
/// waits until every replica lists them all online.
async fn nodes_through_nginx(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_no_record_and_its_nodes_come_back_through_the_others() {
    let Some(tools) = tools(
        "a_replica_killed_under_load_loses_no_record_and_its_nodes_come_back_through_the_others",
    ) else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let mut cluster = Cluster::start(&tools, &database).await;
        let (names, _engines) = nodes_through_nginx(&mut cluster, 6).await;

        // Where nginx sent each node's link; the victim is the replica holding the most.
        let mut held: HashMap<usize, Vec<String>> = HashMap::new();
        for name in &names {
            let replicas = cluster.replicas_that_linked(name);
            assert_eq!(replicas.len(), 1, "{name} linked to {replicas:?}");
            assert_eq!(cluster.links_of(name), 1, "{name} relinked already");
            held.entry(replicas[0]).or_default().push(name.clone());
        }
        let (victim, orphans) = held
            .iter()
            .max_by_key(|(_, nodes)| nodes.len())
            .map(|(n, nodes)| (*n, nodes.clone()))
            .unwrap();
        let survivor = cluster.url((victim + 1) % REPLICAS);
        loud(&format!(
            "cluster: links per replica {held:?}; killing r{}",
            victim + 1
        ));

        // Eight consumers through nginx; the victim is SIGKILLed 2.5 s in.
        let stop = CancellationToken::new();
        let nginx = cluster.nginx_url.clone();
        let consumers = start_load(&cluster, &nginx, 8, &stop);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let killed = Instant::now();
        cluster.kill_replica(victim);

        // Its nodes relink through nginx to the others, and are listed online by them, within
        // 10 s.
        for name in &orphans {
            loop {
                if cluster.links_of(name) >= 2 && cluster.listed_online(&survivor, name).await {
                    break;
                }
                assert!(
                    killed.elapsed() < Duration::from_secs(10),
                    "{name} is not back online 10 s after its replica was killed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let back = killed.elapsed();
        loud(&format!(
            "cluster: the victim's nodes were back online after {back:?}"
        ));
        for name in &orphans {
            let now = cluster.replicas_that_linked(name);
            assert!(
                now.iter().any(|n| *n != victim),
                "{name} relinked to {now:?}"
            );
        }
        let load_until = killed + Duration::from_millis(5500);
        tokio::time::sleep(load_until.saturating_duration_since(Instant::now())).await;
        stop.cancel();
        let sent = gather(consumers).await;

        // Every request got an answer or a clear error, none hung; failures only around the
        // kill, and every request from 3 s after it is answered in full.
        let mut tally: HashMap<String, usize> = HashMap::new();
        for request in &sent {
            let kind = match &request.outcome {
                Outcome::Answered => "answered".to_owned(),
                Outcome::ErrorEvent(code) => format!("error event {code}"),
                Outcome::Refused(status, _) => format!("status {status}"),
                Outcome::Broken(_) => "broken".to_owned(),
            };
            *tally.entry(kind).or_default() += 1;
            if request.outcome != Outcome::Answered {
                assert!(
                    request.sent < killed + Duration::from_secs(3) && request.done > killed,
                    "a request failed away from the kill: {request:?} (killed at {killed:?})"
                );
            }
            if request.sent > killed + Duration::from_secs(3) {
                assert_eq!(request.outcome, Outcome::Answered, "{request:?}");
            }
        }
        loud(&format!("cluster: {} requests: {tally:?}", sent.len()));
        let before = sent.iter().filter(|r| r.done < killed).count();
        let after = sent.iter().filter(|r| r.sent > killed).count();
        assert!(
            before > 0 && after > 0,
            "load before {before}, after {after}"
        );

        // No record lost, none left in flight: within 20 s of the kill every record is final
        // (the dead replica's as failed, with a reason), and each answered request's record says
        // succeeded.
        let within = (killed + Duration::from_secs(20)).saturating_duration_since(Instant::now());
        let records = all_final(&cluster, within).await;
        let by_id: HashMap<RecordId, &InferenceRecord> =
            records.iter().map(|r| (r.id, r)).collect();
        for request in &sent {
            let Some(id) = request.id else {
                assert_ne!(request.outcome, Outcome::Answered, "{request:?}");
                continue;
            };
            let record = by_id
                .get(&id)
                .unwrap_or_else(|| panic!("no record for {request:?}"));
            match request.outcome {
                Outcome::Answered => assert_eq!(record.status(), Status::Succeeded, "{record:?}"),
                Outcome::ErrorEvent(_) => assert_eq!(record.status(), Status::Failed),
                _ => {}
            }
        }
        for record in &records {
            if record.status() == Status::Failed {
                assert!(record.failure.is_some(), "a failed record without a reason");
            }
        }
        let named: HashSet<RecordId> = sent.iter().filter_map(|r| r.id).collect();
        assert!(
            named.len() <= records.len(),
            "{} requests named records, {} stored",
            named.len(),
            records.len()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_nginx_refuses_no_request() {
    let Some(tools) = tools("a_rolling_restart_behind_nginx_refuses_no_request") else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let mut cluster = Cluster::start(&tools, &database).await;
        let (names, _engines) = nodes_through_nginx(&mut cluster, 4).await;

        let stop = CancellationToken::new();
        let nginx = cluster.nginx_url.clone();
        let consumers = start_load(&cluster, &nginx, 6, &stop);
        for n in 0..REPLICAS {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let draining = Instant::now();
            let status = cluster.terminate_replica(n).await;
            assert!(status.success(), "replica r{} exited with {status}", n + 1);
            loud(&format!(
                "cluster: r{} drained and exited in {:?}",
                n + 1,
                draining.elapsed()
            ));
            cluster.restart_replica(n).await;
            // Every node is linked (to a replica that runs) and listed online everywhere.
            let took = cluster
                .wait_online_everywhere(&names, Duration::from_secs(10))
                .await;
            loud(&format!(
                "cluster: every node online everywhere {took:?} after r{}'s restart",
                n + 1
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        let sent = gather(consumers).await;

        let failed: Vec<&Sent> = sent
            .iter()
            .filter(|r| r.outcome != Outcome::Answered)
            .collect();
        loud(&format!(
            "cluster: {} requests across the rolling restart, {} not answered",
            sent.len(),
            failed.len()
        ));
        assert!(failed.is_empty(), "refused or broken: {failed:?}");
        assert!(sent.len() > 20, "too little load: {}", sent.len());
        let records = all_final(&cluster, Duration::from_secs(10)).await;
        for record in &records {
            assert_eq!(record.status(), Status::Succeeded, "{record:?}");
        }
        // Every replica was restarted, so every node lost its link once at least, and linked
        // again on its own.
        for name in &names {
            assert!(cluster.links_of(name) >= 2, "{name} never relinked");
        }
    })
    .await;
}

/// `POST {base}/v1/chat/completions` (a whole answer) with `key`: the status and the body.
async fn chat_with_key(http: &reqwest::Client, base: &str, key: &str) -> (u16, Value) {
    let response = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_for(MODEL, false))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Limits are the club's, not each replica's: a key's requests per minute and a member's
/// requests in flight count over every replica, whichever one each request lands on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_concurrency_limits_hold_over_every_replica() {
    let Some(tools) = tools("rate_and_concurrency_limits_hold_over_every_replica") else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        const PER_MINUTE: usize = 6;
        const SENT: usize = 24;
        let engine = FakeEngine::start("a", Script::default()).await;
        let mut cluster = Cluster::start_with(
            &tools,
            &database,
            &[
                "--requests-per-minute",
                &PER_MINUTE.to_string(),
                "--max-concurrent-per-member",
                "2",
            ],
        )
        .await;
        let r1 = cluster.url(0);
        cluster
            .add_node("node-a", &[ServiceSpec::fake(&engine)], &r1)
            .await;
        cluster
            .wait_online_everywhere(&["node-a".into()], Duration::from_secs(3))
            .await;

        // Rate: one request every 250 ms with ada's key, going round the replicas (8 each).
        // Each replica alone would allow 6 of its 8, 18 in all; the club allows 6, one more
        // earned back during the 6 s, and at most one a late report lets through.
        let key = cluster.club.key.clone();
        let mut allowed = 0;
        for i in 0..SENT {
            let (status, body) = chat_with_key(&cluster.club.http, &cluster.url(i % REPLICAS), &key).await;
            match status {
                200 => allowed += 1,
                429 => assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}"),
                other => panic!("request {i}: {other} {body}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        loud(&format!(
            "cluster: {allowed} of {SENT} requests allowed at {PER_MINUTE} a minute over {REPLICAS} replicas"
        ));
        assert!(
            (PER_MINUTE..=PER_MINUTE + 2).contains(&allowed),
            "{allowed} of {SENT} allowed at {PER_MINUTE} a minute"
        );

        // Concurrency (another key of ada's, so its rate is fresh): two requests held at the
        // engine through r1 and r2 leave no room for a third through r3 ...
        let key = cluster.club.key_with_scopes("inference").await;
        let report = 5 * inference_club_coordinator::testing::USAGE_REPORT;
        engine.set_script(Script::default().with_fault(Fault::HoldBeforeFirstChunk));
        let before = engine.received();
        let held: Vec<_> = (0..2)
            .map(|n| {
                let (http, base, key) = (cluster.club.http.clone(), cluster.url(n), key.clone());
                tokio::spawn(async move { chat_with_key(&http, &base, &key).await.0 })
            })
            .collect();
        engine.wait_received(before + 2, Duration::from_secs(5)).await;
        tokio::time::sleep(report).await;
        let (status, body) = chat_with_key(&cluster.club.http, &cluster.url(2), &key).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["code"], "too_many_concurrent_requests", "{body}");
        assert_eq!(engine.received(), before + 2, "the refused request reached the engine");

        // ... until they finish.
        engine.set_script(Script::default());
        engine.release(2);
        for held in held {
            assert_eq!(held.await.unwrap(), 200);
        }
        tokio::time::sleep(report).await;
        let (status, body) = chat_with_key(&cluster.club.http, &cluster.url(2), &key).await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_sqlite_is_refused_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("club-cluster-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite:{}", dir.join("club.db").display());
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_club-coordinator"));
    command
        .args(["--database", &database, "serve", "--listen", "127.0.0.1:0"])
        .args(["--nats", "nats://127.0.0.1:9"])
        .env("NO_COLOR", "1");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("PostgreSQL"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening on"),
        "it must not serve"
    );
}
