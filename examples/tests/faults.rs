//! The fault suite: real processes (the built `club-coordinator` and `club-provider`), fake
//! engines on 127.0.0.1, and one fault per test — a node killed or cut off, an engine that fails
//! in each way engines fail, the coordinator killed, the database full or restarted. Each test
//! writes down what a user may rely on: which requests are retried, which end with which error,
//! that every record ends final and tells the truth, that nodes come back on their own, and that
//! the coordinator keeps serving the rest. `docs/reliability.md` lists them as a matrix.
//!
//! Faults covered in `e2e.rs` are not repeated here: a node killed before the first chunk (with
//! a second node) or after output started, an engine that drops the connection before output, a
//! frozen node (SIGSTOP), the coordinator killed mid-stream and restarted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use inference_club_coordinator::testing::RecordQuery;
use inference_club_coordinator::testing::TestDatabase;
use inference_club_core::record::{InferenceRecord, RecordId, Status};
use serde_json::{Value, json};
use support::faults::{StallProxy, postgres_url};
use support::{
    ANSWER, Club, FakeEngine, Fault, MODEL, STARTUP, Script, ServiceSpec, SseReader, chat_body,
    error_of, json_of, loud, request_id, streamed_content, wait_until,
};

/// Every test is bounded.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Runs `test`, failing it after [`TEST_LIMIT`].
async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    support::bounded_by(TEST_LIMIT, test).await;
}

/// Asserts that `body` is the OpenAI error envelope with `code`, and returns its message.
fn assert_envelope(body: &Value, code: &str) -> String {
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(error.get("type").is_some_and(Value::is_string), "{body}");
    assert!(error.get("param").is_some(), "{body}");
    let message = error["message"].as_str().unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "{body}");
    message
}

/// Reads a streamed answer until its content is `content` (or the stream ends).
async fn read_until_content(events: &mut SseReader, seen: &mut Vec<String>, content: &str) {
    while streamed_content(seen) != content {
        match events.next().await {
            Some(event) => seen.push(event),
            None => return,
        }
    }
}

/// Reads the rest of a stream, within `within`.
async fn read_rest(events: &mut SseReader, seen: &mut Vec<String>, within: Duration) {
    tokio::time::timeout(within, async {
        while let Some(event) = events.next().await {
            seen.push(event);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream did not end within {within:?}: {seen:?}"));
}

/// The stream ended with one error event (whose code is `code`) and `[DONE]`, cleanly.
fn assert_ends_with_error(events: &SseReader, seen: &[String], code: &str) {
    assert!(
        !events.broken,
        "the consumer's stream must end cleanly: {seen:?}"
    );
    let n = seen.len();
    assert!(n >= 2, "{seen:?}");
    assert_eq!(seen[n - 1], "[DONE]", "{seen:?}");
    let error = error_of(&seen[n - 2]).unwrap_or_else(|| panic!("no error event in {seen:?}"));
    assert_eq!(error["code"], code, "{error}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{error}"
    );
}

/// Every record of `ada`, newest first.
async fn all_records(club: &Club) -> Vec<InferenceRecord> {
    let ada = club.store().user_by_handle("ada").await.unwrap().unwrap();
    let mut query = RecordQuery::made_by(ada.id);
    query.limit = inference_club_coordinator::testing::MAX_PAGE_SIZE;
    let mut all = Vec::new();
    loop {
        let page = club.store().list_records(&query).await.unwrap();
        all.extend(page.items);
        match page.next {
            Some(cursor) => query = query.after(Some(cursor)),
            None => return all,
        }
    }
}

/// Sends whole chats until one is served with two attempts (the first on the faulty node), and
/// returns its record. A node never tried ranks first, so it comes within a few requests.
async fn chat_until_failed_over(club: &Club) -> InferenceRecord {
    for _ in 0..6 {
        let (status, id, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
        let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Succeeded);
        if record.attempts.len() == 2 {
            return record;
        }
        assert_eq!(record.attempts.len(), 1);
    }
    panic!("no request was tried on the faulty node first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_idle_is_offline_at_once_and_serves_again_when_restarted() {
    bounded(async {
        let a = FakeEngine::start("a", Script::default()).await;
        let b = FakeEngine::start("b", Script::default()).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&a)]).await;
        club.add_node("node-b", &[ServiceSpec::fake(&b)]).await;

        // Killed while idle: its link closes with the process, and the coordinator drops it at
        // once (no heartbeat needs to be missed).
        let killed = Instant::now();
        club.node("node-a").proc.kill();
        let provider = format!("{}/api/v1/providers/node-a", club.url);
        let mut online = true;
        while online {
            let profile: Value = json_of(club.http.get(&provider).send().await.unwrap()).await;
            online = profile["online"] == json!(true);
            assert!(
                killed.elapsed() < Duration::from_secs(2),
                "node-a still online {:?} after its process died",
                killed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Nothing is sent to the dead node: every request is served by the other at the first
        // attempt, with no failover.
        for _ in 0..4 {
            let (status, id, body) = club.chat_whole(&chat_body(false)).await;
            assert_eq!(status, 200, "{body}");
            let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Succeeded);
            assert_eq!(record.attempts.len(), 1, "{:?}", record.attempts);
            assert_eq!(record.served_by.unwrap().provider, "node-b");
        }
        assert_eq!(a.received(), 0);

        // With every node of the model gone, a request gets a clear error and a failed record.
        club.node("node-b").proc.kill();
        let deadline = Instant::now() + Duration::from_secs(3);
        while club.models().await.iter().any(|m| m == MODEL) {
            assert!(Instant::now() < deadline, "{MODEL} still listed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, id, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 404, "{body}");
        assert_envelope(&body, "model_not_found");
        if let Some(id) = id {
            let record = club.final_record(id, Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Failed);
            assert!(record.served_by.is_none());
        }

        // The operator starts it again: it links and serves, with no action at the coordinator.
        let key = club.key.clone();
        let url = club.url.clone();
        let again = club.spawn_node_with("node-a", &[ServiceSpec::fake(&a)], &key, &url, &[]);
        club.nodes[again]
            .proc
            .wait_for_line("linked to the coordinator", STARTUP)
            .await;
        club.wait_for_model(MODEL).await;
        let (status, id, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200, "{body}");
        let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(record.served_by.unwrap().provider, "node-a");
        assert_eq!(a.completed(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_node_killed_before_the_first_chunk_answers_502_and_the_record_says_failed() {
    bounded(async {
        let engine = FakeEngine::start(
            "held",
            Script::default().with_fault(Fault::HoldBeforeFirstChunk),
        )
        .await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine)]).await;

        let asking = {
            let club_http = club.http.clone();
            let (url, key) = (club.url.clone(), club.key.clone());
            tokio::spawn(async move {
                let response = club_http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&chat_body(true))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let id = request_id(&response);
                (status, id, json_of(response).await)
            })
        };
        engine.wait_received(1, Duration::from_secs(10)).await;
        club.node("node-a").proc.kill();

        // No other node to try: a 502 in the envelope (the stream had not started, so this is
        // a plain HTTP error), naming its record.
        let (status, id, body) = tokio::time::timeout(Duration::from_secs(5), asking)
            .await
            .expect("the consumer waited on after the node died")
            .unwrap();
        assert_eq!(status, 502, "{body}");
        assert_envelope(&body, "upstream_error");
        let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert!(record.failure.is_some());
        assert_eq!(record.attempts.len(), 1, "{:?}", record.attempts);
        assert_eq!(record.attempts[0].served_by.provider, "node-a");
        assert!(record.attempts[0].error.is_some());
        assert!(record.response.content.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_network_stalls_is_failed_over_then_comes_back_on_its_own() {
    bounded(async {
        // Heartbeats every second (the clubs of these tests): a link silent for 2.5 s is dead
        // to the coordinator, and for 3 s to the node.
        let a = FakeEngine::start(
            "a",
            Script::default().with_fault(Fault::HoldBeforeFirstChunk),
        )
        .await;
        let b = FakeEngine::start("b", Script::default()).await;
        let mut club = Club::start(&[]).await;
        let proxy = StallProxy::start(&club.address).await;
        let key = club.key.clone();
        let node_a =
            club.spawn_node_with("node-a", &[ServiceSpec::fake(&a)], &key, &proxy.url(), &[]);
        club.nodes[node_a]
            .proc
            .wait_for_line("linked to the coordinator", STARTUP)
            .await;
        club.add_node("node-b", &[ServiceSpec::fake(&b)]).await;

        // 1. Before the first chunk: a request held at node-a's engine when its network stalls
        // is retried on node-b once the coordinator gives node-a up; the consumer sees only
        // the answer.
        let mut held = None;
        for _ in 0..6 {
            let before = a.received();
            let task = club.spawn_chat_streamed(chat_body(true));
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if a.received() > before {
                    held = Some(task);
                    break;
                }
                if task.is_finished() {
                    let (status, _, events) = task.await.unwrap();
                    assert_eq!(status, 200);
                    assert_eq!(streamed_content(&events), ANSWER);
                    break;
                }
                assert!(Instant::now() < deadline, "the request went nowhere");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if held.is_some() {
                break;
            }
        }
        let held = held.expect("no request was routed to node-a");
        let stalled = Instant::now();
        proxy.stall();
        let (status, id, events) = tokio::time::timeout(Duration::from_secs(8), held)
            .await
            .expect("the held request was never failed over")
            .unwrap();
        let waited = stalled.elapsed();
        assert_eq!(status, 200);
        assert_eq!(streamed_content(&events), ANSWER, "{events:?}");
        assert!(events.iter().all(|e| error_of(e).is_none()), "{events:?}");
        // The coordinator cannot tell a silent node from a slow one before two heartbeats
        // are missed (2.5 s after the last frame, which came up to a second before the stall).
        assert!(
            waited >= Duration::from_millis(1400),
            "failed over after {waited:?}, before two heartbeats were missed"
        );
        let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(record.attempts.len(), 2, "{:?}", record.attempts);
        assert_eq!(record.attempts[0].served_by.provider, "node-a");
        assert!(record.attempts[0].error.is_some());
        assert_eq!(record.served_by.unwrap().provider, "node-b");
        club.coordinator
            .wait_for_line("node missed two heartbeats", Duration::from_secs(2))
            .await;

        // 2. The node notices the silence on its side too, and once the network is back it
        // links again by itself.
        club.nodes[node_a]
            .proc
            .wait_for_line("no word from the coordinator", Duration::from_secs(5))
            .await;
        proxy.resume();
        let resumed = Instant::now();
        wait_until("node-a links again", Duration::from_secs(10), || {
            club.nodes[node_a]
                .proc
                .count_lines_with("linked to the coordinator")
                >= 2
        })
        .await;
        loud(&format!(
            "stall: node-a linked again {:?} after its network came back",
            resumed.elapsed()
        ));
        a.set_script(Script::default());
        let mut served_by_a = false;
        for _ in 0..6 {
            let (status, id, _) = club.chat_whole(&chat_body(false)).await;
            assert_eq!(status, 200);
            let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
            if record.served_by.unwrap().provider == "node-a" {
                served_by_a = true;
                break;
            }
        }
        assert!(served_by_a, "node-a never served again");

        // 3. After output started: the stream ends with an error once node-a is given up, the
        // record is failed with what was streamed, and nothing is retried elsewhere.
        a.set_script(Script::default().with_fault(Fault::HoldAfter(1)));
        let mut on_a = None;
        for _ in 0..6 {
            let before = a.received();
            let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
            let id = request_id(&response).unwrap();
            let mut events = SseReader::new(response);
            let mut seen = Vec::new();
            read_until_content(&mut events, &mut seen, "Hello").await;
            if a.received() > before {
                on_a = Some((id, events, seen));
                break;
            }
            read_rest(&mut events, &mut seen, Duration::from_secs(5)).await;
            assert_eq!(streamed_content(&seen), ANSWER);
        }
        let (id, mut events, mut seen) = on_a.expect("no stream was routed to node-a");
        let b_before = b.received();
        proxy.stall();
        read_rest(&mut events, &mut seen, Duration::from_secs(8)).await;
        assert_ends_with_error(&events, &seen, "upstream_error");
        assert_eq!(
            streamed_content(&seen),
            "Hello",
            "no output after the failure"
        );
        assert_eq!(b.received(), b_before, "no failover after output");
        let record = club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert_eq!(record.response.content.as_deref(), Some("Hello"));
        assert_eq!(record.served_by.unwrap().provider, "node-a");

        // The coordinator kept serving through it all.
        let (status, _, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200, "{body}");
        proxy.resume();
        a.release(8);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_answers_500_is_failed_over_and_an_engine_error_reaches_the_consumer() {
    bounded(async {
        let a = FakeEngine::start("a", Script::default().with_fault(Fault::Status(500))).await;
        let b = FakeEngine::start("b", Script::default()).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&a)]).await;
        club.add_node("node-b", &[ServiceSpec::fake(&b)]).await;

        // A 500 before any output is the engine's fault: retried on the other node.
        let record = chat_until_failed_over(&club).await;
        assert_eq!(record.attempts[0].served_by.provider, "node-a");
        let error = record.attempts[0].error.as_ref().unwrap();
        assert_eq!(error.kind, "unavailable", "{error:?}");
        assert!(error.message.contains("a fell over"), "{error:?}");
        assert_eq!(record.served_by.unwrap().provider, "node-b");
        assert_eq!(record.response.content.as_deref(), Some(ANSWER));

        // Every engine failing: 502 in the envelope; the record is failed and lists both.
        b.set_script(Script::default().with_fault(Fault::Status(503)));
        let (status, id, body) = club.chat_whole(&chat_body(true)).await;
        assert_eq!(status, 502, "{body}");
        assert_envelope(&body, "upstream_error");
        let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        let tried: HashSet<String> = record
            .attempts
            .iter()
            .map(|a| a.served_by.provider.clone())
            .collect();
        assert_eq!(tried, ["node-a".to_owned(), "node-b".to_owned()].into());
        assert!(record.attempts.iter().all(|a| a.error.is_some()));

        // A 400 is the request's fault: not retried, and passed on as a 400.
        a.set_script(Script::default().with_fault(Fault::Status(400)));
        b.set_script(Script::default().with_fault(Fault::Status(400)));
        let asked = a.received() + b.received();
        let (status, id, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(
            a.received() + b.received(),
            asked + 1,
            "a 400 is not retried"
        );
        let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert_eq!(record.attempts.len(), 1);

        // Engines healthy again: served at once.
        a.set_script(Script::default());
        b.set_script(Script::default());
        let (status, _, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_hangs_before_the_first_token_times_out_and_is_failed_over() {
    bounded(async {
        let hang = Script::default().with_fault(Fault::HoldBeforeFirstChunk);
        let a = FakeEngine::start("a", hang.clone()).await;
        let b = FakeEngine::start("b", Script::default()).await;
        let mut club = Club::start(&[]).await;
        let key = club.key.clone();
        let url = club.url.clone();
        let timeout = ["--first-token-timeout-secs", "1"];
        for (name, engine) in [("node-a", &a), ("node-b", &b)] {
            let n = club.spawn_node_with(name, &[ServiceSpec::fake(engine)], &key, &url, &timeout);
            club.nodes[n]
                .proc
                .wait_for_line("linked to the coordinator", STARTUP)
                .await;
        }
        club.wait_for_model(MODEL).await;

        // The hung engine is given up after the node's first-token timeout and the request is
        // retried on the other node.
        let record = chat_until_failed_over(&club).await;
        let error = record.attempts[0].error.as_ref().unwrap();
        assert_eq!(record.attempts[0].served_by.provider, "node-a");
        assert_eq!(error.kind, "timeout", "{error:?}");
        assert_eq!(record.served_by.unwrap().provider, "node-b");
        let ttft = record.timing.time_to_first_token_ms().unwrap();
        assert!(ttft >= 1000, "answered after {ttft} ms, before the timeout");
        wait_until(
            "the hung engine's connection is closed",
            Duration::from_secs(3),
            || a.dropped() >= 1,
        )
        .await;

        // Both hung: 502 `upstream_timeout` after both timeouts, and a failed record.
        b.set_script(hang);
        let asked = Instant::now();
        let (status, id, body) = club.chat_whole(&chat_body(true)).await;
        assert_eq!(status, 502, "{body}");
        assert_envelope(&body, "upstream_timeout");
        assert!(
            asked.elapsed() < Duration::from_secs(6),
            "{:?}",
            asked.elapsed()
        );
        let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert_eq!(record.attempts.len(), 2);
        assert!(
            record
                .attempts
                .iter()
                .all(|a| a.error.as_ref().is_some_and(|e| e.kind == "timeout"))
        );
        a.release(8);
        b.release(8);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_stalls_mid_stream_ends_the_answer_with_a_timeout_error() {
    bounded(async {
        let engine =
            FakeEngine::start("stalls", Script::default().with_fault(Fault::HoldAfter(2))).await;
        let mut club = Club::start(&[]).await;
        let key = club.key.clone();
        let url = club.url.clone();
        let n = club.spawn_node_with(
            "node-a",
            &[ServiceSpec::fake(&engine)],
            &key,
            &url,
            &["--idle-timeout-secs", "1"],
        );
        club.nodes[n]
            .proc
            .wait_for_line("linked to the coordinator", STARTUP)
            .await;
        club.wait_for_model(MODEL).await;

        // Streamed: what came is kept, then one error event and [DONE].
        let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        assert_eq!(response.status().as_u16(), 200);
        let id = request_id(&response).unwrap();
        let mut events = SseReader::new(response);
        let mut seen = Vec::new();
        read_until_content(&mut events, &mut seen, "Hello, ").await;
        let stalled = Instant::now();
        read_rest(&mut events, &mut seen, Duration::from_secs(5)).await;
        assert!(stalled.elapsed() >= Duration::from_millis(900));
        assert_ends_with_error(&events, &seen, "upstream_timeout");
        assert_eq!(streamed_content(&seen), "Hello, ");
        let record = club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert_eq!(record.response.content.as_deref(), Some("Hello, "));
        assert!(
            record
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("timed out") || f.contains("timeout")),
            "{:?}",
            record.failure
        );
        wait_until(
            "the stalled engine's connection is closed",
            Duration::from_secs(3),
            || engine.dropped() >= 1,
        )
        .await;

        // Whole: 502 `upstream_timeout`, and the record keeps the part that came.
        let (status, id, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 502, "{body}");
        assert_envelope(&body, "upstream_timeout");
        let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert_eq!(record.response.content.as_deref(), Some("Hello, "));
        assert_eq!(engine.received(), 2, "nothing was retried");
        engine.release(8);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_sends_garbage_is_failed_over_before_output_and_ends_the_stream_after() {
    bounded(async {
        let a = FakeEngine::start("a", Script::default().with_fault(Fault::GarbageAfter(0))).await;
        let b = FakeEngine::start("b", Script::default()).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&a)]).await;
        club.add_node("node-b", &[ServiceSpec::fake(&b)]).await;

        // Garbage before any output: retried on the other node.
        let record = chat_until_failed_over(&club).await;
        assert_eq!(record.attempts[0].served_by.provider, "node-a");
        let error = record.attempts[0].error.as_ref().unwrap();
        assert_eq!(error.kind, "protocol", "{error:?}");
        assert_eq!(record.served_by.unwrap().provider, "node-b");

        // Garbage after output started: the stream ends with an error and the record is
        // failed with what was streamed; not retried.
        a.set_script(Script::default().with_fault(Fault::GarbageAfter(2)));
        b.set_script(Script::default().with_fault(Fault::GarbageAfter(2)));
        let asked = a.received() + b.received();
        let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        assert_eq!(response.status().as_u16(), 200);
        let id = request_id(&response).unwrap();
        let mut events = SseReader::new(response);
        let mut seen = Vec::new();
        read_rest(&mut events, &mut seen, Duration::from_secs(5)).await;
        assert_ends_with_error(&events, &seen, "upstream_error");
        assert_eq!(streamed_content(&seen), "Hello, ");
        assert_eq!(a.received() + b.received(), asked + 1);
        let record = club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert_eq!(record.response.content.as_deref(), Some("Hello, "));
        assert!(
            record
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("malformed")),
            "{:?}",
            record.failure
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_with_requests_streaming_and_queued_fails_them_all_at_restart() {
    bounded(async {
        let engine =
            FakeEngine::start("a", Script::default().with_fault(Fault::HoldAfter(1))).await;
        let mut club = Club::start(&["--queue-timeout-secs", "30"]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine).max_concurrent(1)])
            .await;

        // One answer streaming (holding the node's only slot) and one whole request queued.
        let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        let streaming = request_id(&response).unwrap();
        let mut events = SseReader::new(response);
        let mut seen = Vec::new();
        read_until_content(&mut events, &mut seen, "Hello").await;
        let queued_task = {
            let (http, url, key) = (club.http.clone(), club.url.clone(), club.key.clone());
            tokio::spawn(async move {
                http.post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&chat_body(false))
                    .send()
                    .await
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let queued = loop {
            let records = all_records(&club).await;
            let running = records.iter().find(|r| r.id == streaming);
            let waiting = records.iter().find(|r| r.id != streaming);
            if let (Some(running), Some(waiting)) = (running, waiting)
                && running.status() == Status::Running
                && waiting.status() == Status::Queued
            {
                break waiting.id;
            }
            assert!(
                Instant::now() < deadline,
                "never one running and one queued"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };

        club.kill_coordinator();
        // Both consumers are told at once: the stream breaks, the waiting request errors.
        read_rest(&mut events, &mut seen, Duration::from_secs(3)).await;
        assert!(events.broken || seen.last().map(String::as_str) != Some("[DONE]"));
        let waiting = tokio::time::timeout(Duration::from_secs(3), queued_task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            waiting.is_err(),
            "the queued request got an answer from a dead coordinator"
        );
        // The node cancels what its engine was doing when the link goes.
        wait_until(
            "the engine's response is dropped",
            Duration::from_secs(5),
            || engine.dropped() >= 1,
        )
        .await;

        club.restart_coordinator().await;
        for id in [streaming, queued] {
            let record = club.final_record(id, Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Failed, "{id}");
            assert!(
                record
                    .failure
                    .as_deref()
                    .is_some_and(|f| f.contains("restart")),
                "{:?}",
                record.failure
            );
        }
        assert_eq!(
            club.record(streaming).await.served_by.unwrap().provider,
            "node-a"
        );
        assert!(club.record(queued).await.served_by.is_none());

        // The node links again by itself and the club serves.
        wait_until("node-a links again", Duration::from_secs(15), || {
            club.nodes[0]
                .proc
                .count_lines_with("linked to the coordinator")
                >= 2
        })
        .await;
        club.wait_for_model(MODEL).await;
        engine.set_script(Script::default());
        let (status, id, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200, "{body}");
        let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Succeeded);
        assert!(
            all_records(&club)
                .await
                .iter()
                .all(|r| r.status().is_final()),
            "a record was left in flight"
        );
    })
    .await;
}

/// The number of pages of the SQLite database at `path`.
async fn sqlite_pages(path: &std::path::Path) -> u64 {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    u64::try_from(pages).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_requests_with_503_and_records_catch_up_when_space_is_freed() {
    bounded(async {
        let long: Vec<String> = (0..40)
            .map(|n| format!("{n:04}{}", "x".repeat(1020)))
            .collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let long_answer = long.concat();
        let engine = FakeEngine::start("a", Script::default()).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine)]).await;
        let (status, _, _) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200);

        // The same database, capped a little above its size now (SQLite's max_page_count: the
        // file can grow by 256 KiB more, then writes fail as on a full disk).
        let file = club.dir.join("club.db");
        let cap = sqlite_pages(&file).await + 64;
        let capped = format!("sqlite:{}?max_page_count={cap}", file.display());
        club.restart_coordinator_on(&capped).await;
        wait_until("node-a links again", Duration::from_secs(15), || {
            club.nodes[0]
                .proc
                .count_lines_with("linked to the coordinator")
                >= 2
        })
        .await;
        club.wait_for_model(MODEL).await;

        // A long answer in flight, while the disk fills.
        engine.set_script(
            Script::answer(&long, Duration::from_millis(1)).with_fault(Fault::HoldAfter(1)),
        );
        let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        assert_eq!(response.status().as_u16(), 200);
        let in_flight = request_id(&response).unwrap();
        let mut events = SseReader::new(response);
        let mut seen = Vec::new();
        read_until_content(&mut events, &mut seen, long[0]).await;

        // Requests with long prompts fill the disk; once it is full, a new request is refused
        // with 503 and Retry-After, before anything is routed, and no record is claimed.
        engine.set_script(Script::default());
        let mut filler = chat_body(false);
        filler["messages"][0]["content"] = json!("y".repeat(16 * 1024));
        let mut served = Vec::new();
        let refused = loop {
            let response = club.post_chat(&filler, Some(&club.key), &[]).await;
            let status = response.status().as_u16();
            if status == 200 {
                served.push(request_id(&response).unwrap());
                json_of(response).await;
                assert!(served.len() < 100, "the disk never filled");
                continue;
            }
            break response;
        };
        assert!(
            served.len() >= 3,
            "only {} requests fitted before the disk was full",
            served.len()
        );
        assert_eq!(refused.status().as_u16(), 503);
        assert!(refused.headers().get("retry-after").is_some());
        assert!(request_id(&refused).is_none(), "no record, so no record id");
        let body = json_of(refused).await;
        assert_envelope(&body, "store_unavailable");

        // Reading goes on: the models, an earlier record, the health check.
        club.wait_for_model(MODEL).await;
        let earlier = club
            .http
            .get(format!("{}/api/v1/requests/{}", club.url, served[0]))
            .bearer_auth(&club.key)
            .send()
            .await
            .unwrap();
        assert_eq!(earlier.status().as_u16(), 200);

        // The answer in flight completes for its consumer even though its record cannot be
        // saved yet; the save is retried in the background.
        engine.release(1);
        read_rest(&mut events, &mut seen, Duration::from_secs(5)).await;
        assert_eq!(seen.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(streamed_content(&seen), long_answer);
        assert_eq!(club.record(in_flight).await.status(), Status::Running);
        assert!(club.metric("record_saves_deferred").await >= 1.0);

        // The owner frees space by deleting requests: the deferred save lands, and the record
        // tells the truth; new requests are served again.
        for id in &served[1..] {
            let deleted = club
                .http
                .delete(format!("{}/api/v1/requests/{id}", club.url))
                .bearer_auth(&club.key)
                .send()
                .await
                .unwrap();
            assert_eq!(deleted.status().as_u16(), 204);
        }
        let record = club.final_record(in_flight, Duration::from_secs(10)).await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(
            record.response.content.as_deref(),
            Some(long_answer.as_str())
        );
        let (status, id, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200, "{body}");
        club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(club.metric("record_saves_deferred").await, 0.0);
        assert!(
            all_records(&club)
                .await
                .iter()
                .all(|r| r.status().is_final()),
            "a record was left in flight"
        );
    })
    .await;
}

/// The data directory of `scripts/postgres.sh`'s cluster serves `url`, so the script can restart
/// it (and not some other server).
fn script_serves(url: &str) -> bool {
    let dir =
        std::env::var("CLUB_PG_DIR").unwrap_or_else(|_| "/tmp/inference-club-postgres".into());
    std::fs::read_to_string(std::path::Path::new(&dir).join("port"))
        .is_ok_and(|port| url.contains(&format!("127.0.0.1:{}/", port.trim())))
}

fn restart_postgres() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh");
    let output = std::process::Command::new("bash")
        .arg(script)
        .arg("restart")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/postgres.sh restart failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_no_record() {
    let Some(server) = postgres_url("a_postgres_restart_under_load_loses_no_record") else {
        return;
    };
    if !script_serves(&server) {
        loud(
            "SKIPPED a_postgres_restart_under_load_loses_no_record: CLUB_TEST_DATABASE_URL is not the server scripts/postgres.sh runs, so the test cannot restart it",
        );
        return;
    }
    let database = TestDatabase::postgres("the PostgreSQL fault test")
        .await
        .unwrap();
    bounded(async {
        let slow = Script::answer(&["Hello", ", ", "world", "!"], Duration::from_millis(20));
        let a = FakeEngine::start("a", slow.clone()).await;
        let b = FakeEngine::start("b", slow).await;
        let mut club = Club::start_on(Some(&database.url), &[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&a)]).await;
        club.add_node("node-b", &[ServiceSpec::fake(&b)]).await;

        // Four consumers ask without pause, across the restart and for a while after it.
        let stop = tokio_util::sync::CancellationToken::new();
        let consumers: Vec<_> = (0..4)
            .map(|n| {
                let (http, url, key) = (club.http.clone(), club.url.clone(), club.key.clone());
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut outcomes: Vec<(Instant, Instant, u16, Option<RecordId>, String)> =
                        Vec::new();
                    let mut i = 0usize;
                    while !stop.is_cancelled() {
                        i += 1;
                        let sent = Instant::now();
                        let stream = (n + i).is_multiple_of(2);
                        let response = http
                            .post(format!("{url}/v1/chat/completions"))
                            .bearer_auth(&key)
                            .json(&chat_body(stream))
                            .send()
                            .await
                            .unwrap();
                        let status = response.status().as_u16();
                        let id = request_id(&response);
                        let retry_after = response.headers().contains_key("retry-after");
                        let detail = if status == 200 && stream {
                            let mut events = SseReader::new(response);
                            let mut all = Vec::new();
                            while let Some(event) = events.next().await {
                                all.push(event);
                            }
                            assert_eq!(all.last().map(String::as_str), Some("[DONE]"));
                            streamed_content(&all)
                        } else {
                            let body = json_of(response).await;
                            if status == 200 {
                                body["choices"][0]["message"]["content"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_owned()
                            } else {
                                assert!(retry_after, "{status} without Retry-After: {body}");
                                body["error"]["code"].as_str().unwrap_or_default().to_owned()
                            }
                        };
                        outcomes.push((sent, Instant::now(), status, id, detail));
                    }
                    outcomes
                })
            })
            .collect();

        tokio::time::sleep(Duration::from_millis(1500)).await;
        let restarting = Instant::now();
        tokio::task::spawn_blocking(restart_postgres).await.unwrap();
        let restarted = Instant::now();
        loud(&format!(
            "postgres: restarted in {:?}",
            restarted - restarting
        ));
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.cancel();
        let mut outcomes = Vec::new();
        for consumer in consumers {
            outcomes.extend(consumer.await.unwrap());
        }

        // Each request was answered in full, or refused with 503 `store_unavailable` and
        // Retry-After (while the database was down): nothing else.
        let mut ids = HashSet::new();
        let mut refused = 0;
        for (_, _, status, id, detail) in &outcomes {
            match status {
                200 => {
                    assert_eq!(detail, ANSWER);
                    ids.insert(id.unwrap());
                }
                503 => {
                    assert_eq!(detail, "store_unavailable");
                    refused += 1;
                    if let Some(id) = id {
                        ids.insert(*id);
                    }
                }
                other => panic!("unexpected {other}: {detail}"),
            }
        }
        // Served again soon after the restart: every request of the last two seconds.
        let settled = restarted + Duration::from_secs(2);
        assert!(
            outcomes
                .iter()
                .filter(|(sent, ..)| *sent > settled)
                .all(|(_, _, status, ..)| *status == 200),
            "requests still refused 2 s after the database came back"
        );
        let across = outcomes
            .iter()
            .filter(|(sent, done, ..)| *sent < restarted && *done > restarting)
            .count();
        assert!(across > 0, "no request was in flight while the database restarted");
        loud(&format!(
            "postgres: {} requests, {across} in flight across the restart, {refused} refused with 503",
            outcomes.len()
        ));

        // No record lost, none invented, none left in flight: each answered request has its
        // record, final, and the answered ones say succeeded.
        let deadline = Instant::now() + Duration::from_secs(15);
        let records = loop {
            let records = all_records(&club).await;
            if records.iter().all(|r| r.status().is_final()) || Instant::now() > deadline {
                break records;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let stored: HashSet<RecordId> = records.iter().map(|r| r.id).collect();
        assert_eq!(stored, ids, "the records are not exactly the requests answered");
        for record in &records {
            assert_eq!(record.status(), Status::Succeeded, "{:?}", record.failure);
        }
        // The nodes never lost their links.
        for node in &club.nodes {
            assert_eq!(node.proc.count_lines_with("linked to the coordinator"), 1);
        }
        drop(club);
    })
    .await;
    database.remove().await;
}
