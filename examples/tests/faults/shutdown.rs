//! No record is lost when the coordinator is stopped with SIGTERM, when the consumer of a whole
//! answer goes away, or when the node dies in the middle of a whole answer.
//!
//! The coordinator holds the insert of a new record for up to 250 ms (the writer's
//! `PROGRESS_DELAY`) for its final save to fold into. A graceful stop must write what it holds:
//! the SIGTERM test sends requests that are still held when the signal comes (it checks that
//! their rows are not in the database yet), with a drain time of 0, so that the coordinator exits
//! well within those 250 ms: their records survive only if the stop writes them. (Checked once
//! by hand: with the settle and the flush taken out of `AppState::finish_drain`, every record of
//! a request in flight was lost and this test failed, five runs in five.)

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use inference_club_core::record::{InferenceRecord, RecordId, Status};
use serde_json::{Value, json};

use crate::support::{
    ANSWER, Club, FakeEngine, Fault, Script, ServiceSpec, SseReader, abort_request, chat_body,
    json_of, loud, request_id, streamed_content, wait_until,
};
use crate::{assert_envelope, bounded};

/// The writer's `PROGRESS_DELAY`: how long a new record's insert may be held.
const HOLD: Duration = Duration::from_millis(250);

/// A chat whose prompt names request `n` (so that its record can be found without its id).
fn chat(n: usize, stream: bool) -> Value {
    let mut body = chat_body(stream);
    body["messages"][0]["content"] = json!(prompt(n));
    body
}

fn prompt(n: usize) -> String {
    format!("Say hello (request {n})")
}

/// The prompt of a record.
fn prompt_of(record: &InferenceRecord) -> Option<String> {
    record
        .request
        .messages
        .first()
        .and_then(|m| m.text_content())
}

/// What a test expects of one request it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Answered in full before the signal: `succeeded`, with the whole answer.
    Completed,
    /// Still being answered at the signal: failed or cancelled.
    InFlight,
}

/// A request sent, what is expected of it, and the id it was handed (if any).
#[derive(Debug)]
struct Sent {
    n: usize,
    streamed: bool,
    expect: Expect,
    id: Option<RecordId>,
}

/// The id of a stream, once it has started.
type Started = tokio::sync::oneshot::Receiver<Option<RecordId>>;
/// A stream's events, and whether it broke.
type StreamTask = tokio::task::JoinHandle<(Vec<String>, bool)>;
/// A whole answer (status, id, body), or the transport error.
type WholeTask = tokio::task::JoinHandle<Result<(u16, Option<RecordId>, Value), String>>;

/// A streamed chat in a task of its own: it hands over its id once the answer has started
/// (its first output, "Hello"), then reads on to the end. Returns the events and whether the
/// stream broke.
fn spawn_streamed_until_hello(club: &Club, body: Value) -> (Started, StreamTask) {
    let (http, url, key) = (club.http.clone(), club.url.clone(), club.key.clone());
    let (started, id) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let response = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let _ = started.send(request_id(&response));
        let mut events = SseReader::new(response);
        let mut seen = Vec::new();
        while let Some(event) = events.next().await {
            seen.push(event);
        }
        (seen, events.broken)
    });
    (id, task)
}

/// A whole chat in a task of its own: its status, id and body, or the transport error (a
/// coordinator that exits before answering).
fn spawn_whole(club: &Club, body: Value) -> WholeTask {
    let (http, url, key) = (club.http.clone(), club.url.clone(), club.key.clone());
    tokio::spawn(async move {
        let response = http
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let id = request_id(&response);
        Ok((status, id, json_of(response).await))
    })
}

/// Requests sent to be in flight when the coordinator stops: streams (their id once started,
/// their events) and whole answers, each with its number.
#[derive(Default)]
struct InFlight {
    streams: Vec<(usize, (Started, StreamTask))>,
    wholes: Vec<(usize, WholeTask)>,
}

impl InFlight {
    /// Sends request number `sent.len()`, streamed or whole, and notes it in `sent`.
    fn send(&mut self, club: &Club, streamed: bool, sent: &mut Vec<Sent>) {
        let n = sent.len();
        if streamed {
            self.streams
                .push((n, spawn_streamed_until_hello(club, chat(n, true))));
        } else {
            self.wholes.push((n, spawn_whole(club, chat(n, false))));
        }
        sent.push(Sent {
            n,
            streamed,
            expect: Expect::InFlight,
            id: None,
        });
    }
}

/// Waits (polling every 2 ms) until `engine` has received `n` requests.
async fn received(engine: &FakeEngine, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.received() < n {
        assert!(
            Instant::now() < deadline,
            "the engine received {} of {n} requests",
            engine.received()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_stopped_with_sigterm_loses_no_record_of_requests_done_or_in_flight() {
    bounded(async {
        let held = Script::default().with_fault(Fault::HoldAfter(1));
        let engine = FakeEngine::start("a", held.clone()).await;
        // No drain time: the coordinator exits at once, before the writes it holds fall due.
        let mut club = Club::start(&["--drain-secs", "0"]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine).max_concurrent(32)])
            .await;
        let mut sent: Vec<Sent> = Vec::new();
        let mut in_flight = InFlight::default();

        // 1. In flight for a while: two streams that have started and two whole answers, all
        // held by the engine after "Hello".
        for streamed in [true, true, false, false] {
            in_flight.send(&club, streamed, &mut sent);
        }
        // (The engine takes its script when a request arrives.)
        received(&engine, 4).await;

        // 2. Completed within a few milliseconds of the signal: two whole, two streamed.
        engine.set_script(Script::default());
        let first = sent.len();
        let whole: Vec<_> = (first..first + 2)
            .map(|n| spawn_whole(&club, chat(n, false)))
            .collect();
        let streamed: Vec<_> = (first + 2..first + 4)
            .map(|n| club.spawn_chat_streamed(chat(n, true)))
            .collect();
        for (k, task) in whole.into_iter().enumerate() {
            let (status, id, body) = task.await.unwrap().unwrap();
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["choices"][0]["message"]["content"], ANSWER, "{body}");
            sent.push(Sent {
                n: first + k,
                streamed: false,
                expect: Expect::Completed,
                id: Some(id.expect("a whole answer without its request id")),
            });
        }
        for (k, task) in streamed.into_iter().enumerate() {
            let (status, id, events) = task.await.unwrap();
            assert_eq!(status, 200);
            assert_eq!(streamed_content(&events), ANSWER, "{events:?}");
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
            sent.push(Sent {
                n: first + 2 + k,
                streamed: true,
                expect: Expect::Completed,
                id: Some(id.expect("a stream without its request id")),
            });
        }
        let completed_at = Instant::now();

        // 3. Accepted right before the signal: one stream, one whole answer, held by the engine.
        engine.set_script(held);
        let late = Instant::now();
        for streamed in [true, false] {
            in_flight.send(&club, streamed, &mut sent);
        }
        received(&engine, sent.len()).await;
        // The streams' ids (every stream has started by now, or will in a moment).
        let mut stream_tasks = Vec::new();
        for (n, (id, task)) in in_flight.streams {
            let id = tokio::time::timeout(Duration::from_secs(5), id)
                .await
                .expect("a stream never started")
                .expect("a stream's task ended before it started");
            sent[n].id = Some(id.expect("a stream without its request id"));
            stream_tasks.push(task);
        }
        // What the database holds now (read directly: this does not flush the coordinator's
        // writer). Requests accepted within the last 250 ms are not there yet: only the
        // coordinator's stop can write them in time.
        let stored: HashSet<String> = club
            .all_records()
            .await
            .iter()
            .filter_map(prompt_of)
            .collect();
        let not_yet_stored: Vec<usize> = sent
            .iter()
            .filter(|s| !stored.contains(&prompt(s.n)))
            .map(|s| s.n)
            .collect();
        let accepted_ago = late.elapsed();
        club.coordinator.signal("TERM");
        let signalled = Instant::now();
        loud(&format!(
            "sigterm: signal {:?} after the last requests were sent, {:?} after the last \
             completion; not yet in the database then: {not_yet_stored:?}",
            accepted_ago,
            completed_at.elapsed()
        ));
        assert!(
            !not_yet_stored.is_empty(),
            "every record was already written {accepted_ago:?} after the last requests were \
             sent: this run cannot tell whether the stop writes the held records"
        );
        // Completed requests were written before they were answered.
        for s in sent.iter().filter(|s| s.expect == Expect::Completed) {
            assert!(
                !not_yet_stored.contains(&s.n),
                "request {} was answered before its record was written",
                s.n
            );
        }

        // 4. The coordinator stops by itself, at once (no drain time), and cleanly.
        wait_until(
            "the coordinator exits after SIGTERM",
            Duration::from_secs(10),
            || club.coordinator.exit_status().is_some(),
        )
        .await;
        let stopped_in = signalled.elapsed();
        let status = club.coordinator.exit_status().unwrap();
        let exited_after_sent = late.elapsed();
        loud(&format!(
            "sigterm: the coordinator exited {stopped_in:?} after the signal, \
             {exited_after_sent:?} after the last requests were sent ({status}); within the \
             hold of {HOLD:?}: {}",
            exited_after_sent < HOLD
        ));
        assert!(status.success(), "SIGTERM is a clean stop: {status}");
        // Every consumer is let go: the streams end (with an error event or broken), the whole
        // answers come back as errors naming their record, or not at all.
        for task in stream_tasks {
            let (seen, broken) = tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("a stream outlived the coordinator")
                .unwrap();
            assert_ne!(streamed_content(&seen), ANSWER, "{seen:?}");
            assert!(
                broken || seen.last().map(String::as_str) == Some("[DONE]"),
                "{seen:?}"
            );
        }
        for (n, task) in in_flight.wholes {
            let answer = tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("a whole answer outlived the coordinator")
                .unwrap();
            loud(&format!(
                "sigterm: whole request {n} in flight got {answer:?}"
            ));
            if let Ok((status, id, body)) = answer {
                assert_ne!(status, 200, "{body}");
                sent[n].id = id;
            }
        }

        // 5. Restarted on the same database: every request has its record, final.
        club.restart_coordinator().await;
        let records = club.all_final(Duration::from_secs(5)).await;
        let by_prompt: HashMap<String, &InferenceRecord> = records
            .iter()
            .filter_map(|r| prompt_of(r).map(|p| (p, r)))
            .collect();
        assert_eq!(by_prompt.len(), records.len(), "two records share a prompt");
        let missing: Vec<usize> = sent
            .iter()
            .filter(|s| !by_prompt.contains_key(&prompt(s.n)))
            .map(|s| s.n)
            .collect();
        assert!(
            missing.is_empty(),
            "no record of requests {missing:?} (of {} sent; not yet written at the signal: \
             {not_yet_stored:?})",
            sent.len()
        );
        assert_eq!(records.len(), sent.len(), "a record no request made");
        let ids: HashSet<RecordId> = sent.iter().filter_map(|s| s.id).collect();
        assert_eq!(
            ids.len(),
            sent.iter().filter(|s| s.id.is_some()).count(),
            "an id handed out twice"
        );
        let without_id: Vec<&Sent> = sent.iter().filter(|s| s.id.is_none()).collect();
        // Only whole answers cut short by the stop may come back without their id (the
        // coordinator was gone before it could answer them).
        assert!(
            without_id
                .iter()
                .all(|s| !s.streamed && s.expect == Expect::InFlight),
            "{without_id:?}"
        );
        assert_eq!(
            records.len(),
            ids.len() + without_id.len(),
            "every request id handed out names one record, and no record is left over"
        );
        for s in &sent {
            let record = by_prompt[&prompt(s.n)];
            if let Some(id) = s.id {
                assert_eq!(record.id, id, "request {} names another record", s.n);
            }
            match s.expect {
                Expect::Completed => {
                    assert_eq!(record.status(), Status::Succeeded, "request {}", s.n);
                    assert_eq!(
                        record.response.content.as_deref(),
                        Some(ANSWER),
                        "request {}",
                        s.n
                    );
                }
                Expect::InFlight => {
                    assert!(
                        matches!(record.status(), Status::Failed | Status::Cancelled),
                        "request {} in flight at the signal is {:?}",
                        s.n,
                        record.status()
                    );
                    assert!(record.failure.is_some(), "request {}: {record:?}", s.n);
                }
            }
        }
        loud(&format!(
            "sigterm: {} records, {} ids handed out; in flight: {:?}",
            records.len(),
            ids.len(),
            sent.iter()
                .filter(|s| s.expect == Expect::InFlight)
                .map(|s| {
                    let r = by_prompt[&prompt(s.n)];
                    (s.n, r.status(), r.failure.clone())
                })
                .collect::<Vec<_>>()
        ));
    })
    .await;
}

/// A club of one node whose engine answers "Hello" and holds the rest, and a whole request
/// (prompt 0) the engine has received.
async fn whole_answer_held_midway() -> (Club, FakeEngine, WholeTask) {
    let engine = FakeEngine::start("a", Script::default().with_fault(Fault::HoldAfter(1))).await;
    let mut club = Club::start(&[]).await;
    club.add_node("node-a", &[ServiceSpec::fake(&engine)]).await;
    let asking = spawn_whole(&club, chat(0, false));
    engine.wait_received(1, Duration::from_secs(10)).await;
    (club, engine, asking)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_leaves_a_whole_answer_midway_leaves_a_cancelled_record() {
    bounded(async {
        // A whole answer has no headers (nor id) before it is complete: find it by listing.
        let (club, engine, asking) = whole_answer_held_midway().await;
        // The engine has sent "Hello" and holds the rest: the consumer goes away.
        let noticed = abort_request(asking, &engine).await;
        assert!(
            noticed < Duration::from_secs(2),
            "the engine noticed after {noticed:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let record = loop {
            let records = club.all_records().await;
            assert_eq!(records.len(), 1, "{records:?}");
            if records[0].status().is_final() {
                break records[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "the record stayed {:?}",
                records[0].status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(record.status(), Status::Cancelled, "{record:?}");
        assert_eq!(prompt_of(&record), Some(prompt(0)));
        assert_eq!(record.served_by.unwrap().provider, "node-a");
        assert!(record.failure.is_some());
        assert_eq!(engine.completed(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_node_killed_midway_through_a_whole_answer_answers_502_and_the_record_says_failed()
{
    bounded(async {
        let (mut club, _engine, asking) = whole_answer_held_midway().await;
        // The engine, asked for the whole answer, is midway through it: the node dies.
        tokio::time::sleep(Duration::from_millis(50)).await;
        club.node("node-a").proc.kill();

        let (status, id, body) = tokio::time::timeout(Duration::from_secs(5), asking)
            .await
            .expect("the consumer waited on after the node died")
            .unwrap()
            .expect("the coordinator did not answer");
        assert_eq!(status, 502, "{body}");
        assert_envelope(&body, "upstream_error");
        let id = id.expect("the error does not name its record");
        let record = club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed, "{record:?}");
        assert_eq!(prompt_of(&record), Some(prompt(0)));
        assert!(record.failure.is_some());
        assert_eq!(record.attempts.len(), 1, "{:?}", record.attempts);
        assert_eq!(record.attempts[0].served_by.provider, "node-a");
        // Nothing of the answer had come (the engine sends a whole answer complete).
        assert_eq!(record.response.content, None, "{record:?}");
        assert_eq!(club.all_records().await.len(), 1);
    })
    .await;
}
