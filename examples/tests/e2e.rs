//! End-to-end tests with real processes: the built `club-coordinator` on a temporary SQLite
//! file, `club-provider run` nodes, and fake OpenAI-compatible engines inside the test (or the CI
//! llama.cpp server when `CLUB_TEST_LLAMACPP_URL` names one). Each test asserts what the consumer
//! sees and what the record says, read through the store on the same database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use inference_club_coordinator::testing::RecordQuery;
use inference_club_core::record::{Status, UsageSource, Visibility};
use serde_json::{Value, json};
use support::{
    ANSWER, Club, FakeEngine, Fault, MODEL, Script, ServiceSpec, SseReader, chat_body, error_of,
    json_of, leave_after, loud, request_id, streamed_content, wait_until,
};

/// Every test is bounded.
const TEST_LIMIT: Duration = Duration::from_secs(40);

/// Runs `test`, failing it after [`TEST_LIMIT`].
async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    support::bounded_by(TEST_LIMIT, test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_across_two_nodes_of_the_same_model() {
    bounded(async {
        let slow = Script::answer(&["Hello", ", ", "world", "!"], Duration::from_millis(40));
        let a = FakeEngine::start("a", slow.clone()).await;
        let b = FakeEngine::start("b", slow).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&a)]).await;
        club.add_node("node-b", &[ServiceSpec::fake(&b)]).await;

        // Every answer names its record, and the completion id is derived from it; usage comes
        // in the stream only when asked for, and is always recorded.
        let requests = (0..20).map(|n| {
            let club = &club;
            async move {
                if n % 2 == 0 {
                    let mut body = chat_body(true);
                    let wants_usage = n % 4 == 0;
                    if wants_usage {
                        body["stream_options"] = json!({"include_usage": true});
                    }
                    let (status, id, events) = club.chat_streamed(&body).await;
                    assert_eq!(status, 200);
                    let id = id.unwrap();
                    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
                    assert_eq!(streamed_content(&events), ANSWER);
                    let chunks: Vec<Value> = events[..events.len() - 1]
                        .iter()
                        .map(|e| serde_json::from_str(e).unwrap())
                        .collect();
                    assert!(chunks.iter().all(|c| c["id"] == id.completion_id()));
                    assert!(
                        chunks
                            .iter()
                            .all(|c| c["object"] == "chat.completion.chunk")
                    );
                    let usage: Vec<&Value> =
                        chunks.iter().filter(|c| !c["usage"].is_null()).collect();
                    if wants_usage {
                        assert_eq!(usage.len(), 1, "{events:?}");
                        assert_eq!(usage[0]["usage"]["completion_tokens"], 4);
                    } else {
                        assert!(usage.is_empty(), "usage was not asked for: {events:?}");
                    }
                    id
                } else {
                    let (status, id, body) = club.chat_whole(&chat_body(false)).await;
                    assert_eq!(status, 200, "{body}");
                    let id = id.unwrap();
                    assert_eq!(body["id"], id.completion_id());
                    assert_eq!(body["object"], "chat.completion");
                    assert_eq!(body["model"], MODEL);
                    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
                    assert_eq!(body["choices"][0]["finish_reason"], "stop");
                    assert_eq!(body["usage"]["prompt_tokens"], 7);
                    id
                }
            }
        });
        let ids = futures_util::future::join_all(requests).await;

        assert_eq!(a.completed() + b.completed(), 20);
        assert!(
            a.completed() > 0 && b.completed() > 0,
            "a served {}, b served {}",
            a.completed(),
            b.completed()
        );
        let mut providers = HashSet::new();
        for id in ids {
            let record = club.final_record(id, Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Succeeded);
            assert_eq!(record.attempts.len(), 1);
            assert_eq!(record.response.content.as_deref(), Some(ANSWER));
            assert_eq!(record.usage.source, UsageSource::Reported);
            assert_eq!(record.usage.counts.as_ref().unwrap().completion_tokens, 4);
            assert_eq!(record.model_served.as_deref(), Some(MODEL));
            assert!(record.timing.time_to_first_token_ms().is_some());
            providers.insert(record.served_by.unwrap().provider);
        }
        let expected: HashSet<String> = ["node-a".to_owned(), "node-b".to_owned()].into();
        assert_eq!(providers, expected);
    })
    .await;
}

/// A linked node that announces a new manifest (edited, then SIGHUP) is routed the model it
/// added at once, and no longer the one it dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_node_serves_what_its_new_manifest_says() {
    bounded(async {
        let engine = FakeEngine::start("e", Script::default()).await;
        let mut club = Club::start(&[]).await;
        let serving = |model: &str| ServiceSpec {
            model: model.into(),
            ..ServiceSpec::fake(&engine)
        };
        club.add_node("box", &[serving("m-one")]).await;
        let ask =
            |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(club.chat_whole(&ask("m-one")).await.0, 200);
        assert_eq!(club.chat_whole(&ask("m-two")).await.0, 404);

        club.rewrite_manifest("box", &[serving("m-two")]);
        club.node("box").proc.signal("HUP");
        club.wait_for_model("m-two").await;
        let (status, _, body) = club.chat_whole(&ask("m-two")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
        assert_eq!(engine.requests().last().unwrap()["model"], "m-two");
        let (status, _, body) = club.chat_whole(&ask("m-one")).await;
        assert_eq!(status, 404, "{body}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_engine_fails_before_the_first_chunk_is_failed_over() {
    bounded(async {
        let broken = FakeEngine::start(
            "broken",
            Script::default().with_fault(Fault::DropBeforeFirstChunk),
        )
        .await;
        let good = FakeEngine::start("good", Script::default()).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-broken", &[ServiceSpec::fake(&broken)])
            .await;
        club.add_node("node-good", &[ServiceSpec::fake(&good)])
            .await;

        // A node never tried ranks first, so the broken one is tried within two requests.
        let mut failed_over = None;
        for _ in 0..3 {
            let (status, id, body) = club.chat_whole(&chat_body(false)).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
            let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Succeeded);
            if record.attempts.len() == 2 {
                failed_over = Some(record);
                break;
            }
        }
        let record = failed_over.expect("no request was tried on the broken node");
        assert!(broken.received() >= 1);
        let first = &record.attempts[0];
        assert_eq!(first.served_by.provider, "node-broken");
        assert!(first.error.is_some(), "the failed attempt names its error");
        let second = &record.attempts[1];
        assert_eq!(second.served_by.provider, "node-good");
        assert!(second.error.is_none());
        assert_eq!(record.served_by.unwrap().provider, "node-good");
        assert_eq!(record.response.content.as_deref(), Some(ANSWER));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_before_the_first_chunk_is_failed_over() {
    bounded(async {
        let held = Script::default().with_fault(Fault::HoldBeforeFirstChunk);
        let a = FakeEngine::start("a", held.clone()).await;
        let b = FakeEngine::start("b", held).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&a)]).await;
        club.add_node("node-b", &[ServiceSpec::fake(&b)]).await;

        // The coordinator answers once the first output comes: in a task of its own.
        let reading = club.spawn_chat_streamed(chat_body(true));
        // Whichever engine got the job holds it; the other answers at once.
        wait_until(
            "an engine receives the job",
            Duration::from_secs(10),
            || a.received() + b.received() == 1,
        )
        .await;
        let (victim, survivor) = if a.received() == 1 {
            ("node-a", &b)
        } else {
            ("node-b", &a)
        };
        survivor.set_script(Script::default());
        club.node(victim).proc.kill();

        let (status, id, events) = reading.await.unwrap();
        assert_eq!(status, 200);
        let id = id.unwrap();
        assert_eq!(streamed_content(&events), ANSWER, "{events:?}");
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert!(events.iter().all(|e| error_of(e).is_none()), "{events:?}");
        let record = club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(record.attempts.len(), 2, "{:?}", record.attempts);
        assert_eq!(record.attempts[0].served_by.provider, victim);
        assert!(record.attempts[0].error.is_some());
        assert_ne!(record.served_by.unwrap().provider, victim);
        assert_eq!(record.response.content.as_deref(), Some(ANSWER));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_after_output_started_ends_the_stream_with_an_error() {
    bounded(async {
        let held = Script::default().with_fault(Fault::HoldAfter(2));
        let a = FakeEngine::start("a", held.clone()).await;
        let b = FakeEngine::start("b", held).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&a)]).await;
        club.add_node("node-b", &[ServiceSpec::fake(&b)]).await;

        let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        assert_eq!(response.status().as_u16(), 200);
        let id = request_id(&response).unwrap();
        let mut events = SseReader::new(response);
        let mut seen = Vec::new();
        while streamed_content(&seen) != "Hello, " {
            seen.push(events.next().await.expect("the stream ended early"));
        }
        let victim = if a.received() == 1 {
            "node-a"
        } else {
            "node-b"
        };
        club.node(victim).proc.kill();
        while let Some(event) = events.next().await {
            seen.push(event);
        }
        assert!(!events.broken, "the consumer's stream must end cleanly");
        let n = seen.len();
        assert!(n >= 2, "{seen:?}");
        assert_eq!(seen[n - 1], "[DONE]", "{seen:?}");
        let error = error_of(&seen[n - 2]).unwrap_or_else(|| panic!("no error event in {seen:?}"));
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
        assert!(error.get("type").is_some(), "{error}");
        assert_eq!(
            streamed_content(&seen),
            "Hello, ",
            "no output after the failure"
        );
        // No failover after output: the other engine was never asked.
        assert_eq!(a.received() + b.received(), 1);

        let record = club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert!(record.failure.is_some());
        assert_eq!(record.response.content.as_deref(), Some("Hello, "));
        assert_eq!(record.served_by.unwrap().provider, victim);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_goes_away_cancels_the_job_at_the_engine() {
    bounded(async {
        let pieces: Vec<String> = (0..100).map(|n| format!("w{n} ")).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let engine =
            FakeEngine::start("slow", Script::answer(&pieces, Duration::from_millis(100))).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine)]).await;

        let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        let id = request_id(&response).unwrap();
        let noticed = leave_after(response, "w0 w1 ", &engine).await;
        assert!(
            noticed < Duration::from_secs(2),
            "the engine noticed after {noticed:?}"
        );
        assert_eq!(engine.completed(), 0);
        let record = club.final_record(id, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Cancelled);
        assert!(
            record
                .response
                .content
                .as_deref()
                .is_some_and(|c| c.starts_with("w0 w1 "))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_goes_away_before_the_first_chunk_cancels_the_job_and_the_record() {
    bounded(async {
        let engine = FakeEngine::start(
            "silent",
            Script::default().with_fault(Fault::HoldBeforeFirstChunk),
        )
        .await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine)]).await;

        // The response has no headers yet (they come with the first output): abort the request.
        let reading = club.spawn_chat_streamed(chat_body(true));
        engine.wait_received(1, Duration::from_secs(10)).await;
        reading.abort();
        let left = Instant::now();
        wait_until(
            "the engine sees its response dropped",
            Duration::from_secs(3),
            || engine.dropped() == 1,
        )
        .await;
        assert!(
            left.elapsed() < Duration::from_secs(2),
            "the engine noticed after {:?}",
            left.elapsed()
        );

        let ada = club.store().user_by_handle("ada").await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let record = loop {
            let page = club
                .store()
                .list_records(&RecordQuery::made_by(ada.id))
                .await
                .unwrap();
            assert_eq!(page.items.len(), 1);
            if page.items[0].status().is_final() {
                break page.items[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "the record stayed {:?}",
                page.items[0].status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(record.status(), Status::Cancelled);
        assert_eq!(record.served_by.unwrap().provider, "node-a");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_first_come_first_served_and_a_consumer_may_leave_it() {
    bounded(async {
        let engine = FakeEngine::start(
            "one-at-a-time",
            Script::default().with_fault(Fault::HoldAfter(1)),
        )
        .await;
        let mut club = Club::start(&["--queue-timeout-secs", "10"]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine).max_concurrent(1)])
            .await;
        let ask = |n: usize| {
            let mut body = chat_body(true);
            body["messages"][0]["content"] = json!(format!("request {n}"));
            body
        };
        let queued = club.metric("queued_total").await;
        let first = club.spawn_chat_streamed(ask(1));
        engine.wait_received(1, Duration::from_secs(5)).await;
        // Three more wait, in this order; the one in the middle gives up.
        let mut waiting = Vec::new();
        for n in 2..=4 {
            waiting.push(club.spawn_chat_streamed(ask(n)));
            let deadline = Instant::now() + Duration::from_secs(5);
            while club.metric("queued_total").await < queued + (n - 1) as f64 {
                assert!(Instant::now() < deadline, "request {n} never queued");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let fourth = waiting.pop().unwrap();
        let third = waiting.pop().unwrap();
        let second = waiting.pop().unwrap();
        third.abort();
        let ada = club.store().user_by_handle("ada").await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let page = club
                .store()
                .list_records(&RecordQuery::made_by(ada.id).with_status(Status::Cancelled))
                .await
                .unwrap();
            if page.items.len() == 1 {
                assert!(
                    page.items[0].request.messages[0]
                        .text_content()
                        .unwrap_or_default()
                        .contains("request 3")
                );
                assert!(page.items[0].served_by.is_none());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the record of the request that left the queue is not cancelled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // A newcomer arriving the moment the first ends still queues behind those waiting.
        engine.release(4);
        let (status, _, _) = first.await.unwrap();
        assert_eq!(status, 200);
        let fifth = club.spawn_chat_streamed(ask(5));
        for (n, task) in [(2, second), (4, fourth), (5, fifth)] {
            let (status, id, events) = task.await.unwrap();
            assert_eq!(status, 200, "request {n}");
            assert_eq!(streamed_content(&events), ANSWER, "request {n}");
            let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Succeeded);
        }
        let order: Vec<String> = engine
            .requests()
            .iter()
            .map(|r| r["messages"][0]["content"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(order, ["request 1", "request 2", "request 4", "request 5"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_queues_requests_then_answers_503_with_retry_after() {
    bounded(async {
        let engine = FakeEngine::start(
            "one-at-a-time",
            Script::default().with_fault(Fault::HoldAfter(1)),
        )
        .await;
        let mut club = Club::start(&["--queue-timeout-secs", "1"]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine).max_concurrent(1)])
            .await;

        // The first request takes the only slot and holds it.
        let first = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        assert_eq!(first.status().as_u16(), 200);
        let first_id = request_id(&first).unwrap();
        let mut first_events = SseReader::new(first);
        assert_eq!(
            streamed_content(&[
                first_events.next().await.unwrap(),
                first_events.next().await.unwrap()
            ]),
            "Hello"
        );

        // The second waits in the queue, and is served when the first ends.
        let queued_before = club.metric("queued_total").await;
        let second_body = chat_body(false);
        let second = {
            let post = club.post_chat(&second_body, Some(&club.key), &[]);
            async move {
                let response = post.await;
                let status = response.status().as_u16();
                let id = request_id(&response);
                (status, id, json_of(response).await)
            }
        };
        let waiter = async {
            let deadline = Instant::now() + Duration::from_secs(1);
            while club.metric("queued_total").await <= queued_before {
                assert!(Instant::now() < deadline, "the second request never queued");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                engine.received(),
                1,
                "the second request reached the engine while the first held the slot"
            );
            assert_eq!(
                club.metric("club_queue_depth").await,
                1.0,
                "/metrics shows the waiter"
            );
            engine.release(2);
            let mut rest = Vec::new();
            while let Some(event) = first_events.next().await {
                rest.push(event);
            }
            rest
        };
        let ((status, second_id, body), rest) = tokio::join!(second, waiter);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
        assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
        let first_record = club.final_record(first_id, Duration::from_secs(5)).await;
        let second_record = club
            .final_record(second_id.unwrap(), Duration::from_secs(5))
            .await;
        assert_eq!(first_record.status(), Status::Succeeded);
        assert_eq!(second_record.status(), Status::Succeeded);
        // The slot frees when the node's answer ends, a moment before the first record is
        // stamped finished: the second is dispatched no earlier than that moment.
        let freed_by =
            first_record.timing.finished_at.unwrap() - chrono::Duration::milliseconds(100);
        assert!(
            second_record.timing.dispatched_at.unwrap() >= freed_by,
            "the second request was dispatched only when the first ended"
        );

        // While the slot is held for longer than the queue timeout: 503 with Retry-After.
        let third = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        let third_id = request_id(&third).unwrap();
        let mut third_events = SseReader::new(third);
        third_events.next().await.unwrap();
        let asked = Instant::now();
        let refused = club
            .post_chat(&chat_body(false), Some(&club.key), &[])
            .await;
        let waited = asked.elapsed();
        assert_eq!(refused.status().as_u16(), 503);
        assert!(
            waited >= Duration::from_millis(900),
            "refused after {waited:?}, before the queue timeout"
        );
        let retry_after: u64 = refused
            .headers()
            .get("retry-after")
            .expect("a Retry-After header")
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= 1);
        let refused_id = request_id(&refused);
        let error = json_of(refused).await;
        assert_eq!(error["error"]["type"], "server_error", "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(error["error"].get("code").is_some());
        assert!(error["error"].get("param").is_some());
        if let Some(refused_id) = refused_id {
            let record = club.final_record(refused_id, Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Failed);
        }
        engine.release(1);
        while third_events.next().await.is_some() {}
        let third_record = club.final_record(third_id, Duration::from_secs(5)).await;
        assert_eq!(third_record.status(), Status::Succeeded);
        assert_eq!(
            engine.received(),
            3,
            "the refused request never reached the engine"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_are_404_and_bad_keys_401() {
    bounded(async {
        let engine = FakeEngine::start("a", Script::default()).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine)]).await;

        let mut body = chat_body(false);
        body["model"] = json!("no-such-model");
        let response = club.post_chat(&body, Some(&club.key), &[]).await;
        assert_eq!(response.status().as_u16(), 404);
        let error = json_of(response).await;
        assert_eq!(error["error"]["code"], "model_not_found", "{error}");
        assert_eq!(error["error"]["param"], "model", "{error}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no-such-model")
        );

        for key in [Some("icl_not_a_key"), None] {
            let response = club.post_chat(&chat_body(false), key, &[]).await;
            assert_eq!(response.status().as_u16(), 401, "key {key:?}");
            let error = json_of(response).await;
            assert_eq!(error["error"]["type"], "authentication_error", "{error}");
            assert_eq!(error["error"]["code"], "invalid_api_key", "{error}");
        }
        let response = club
            .http
            .get(format!("{}/v1/models", club.url))
            .bearer_auth("icl_not_a_key")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(engine.received(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_comes_from_the_header_or_the_body_and_never_reaches_the_engine() {
    bounded(async {
        let engine = FakeEngine::start("a", Script::default()).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine)]).await;

        let response = club
            .post_chat(
                &chat_body(false),
                Some(&club.key),
                &[("x-club-visibility", "private")],
            )
            .await;
        assert_eq!(response.status().as_u16(), 200);
        let by_header = request_id(&response).unwrap();
        json_of(response).await;

        let mut body = chat_body(true);
        body["visibility"] = json!("private");
        let (status, by_body, events) = club.chat_streamed(&body).await;
        assert_eq!(status, 200);
        assert_eq!(streamed_content(&events), ANSWER);

        let mut body = chat_body(false);
        body["visibility"] = json!("unlisted");
        let (status, unlisted, _) = club.chat_whole(&body).await;
        assert_eq!(status, 200);

        let (status, default, _) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200);

        let mut body = chat_body(false);
        body["visibility"] = json!("secret");
        let (status, _, error) = club.chat_whole(&body).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["param"], "visibility");

        for (id, expected) in [
            (by_header, Visibility::Private),
            (by_body.unwrap(), Visibility::Private),
            (unlisted.unwrap(), Visibility::Unlisted),
            (default.unwrap(), Visibility::Public),
        ] {
            let record = club.final_record(id, Duration::from_secs(5)).await;
            assert_eq!(record.visibility, expected);
            assert_eq!(record.status(), Status::Succeeded);
            assert!(!record.request.extra.contains_key("visibility"));
        }
        let requests = engine.requests();
        assert_eq!(requests.len(), 4);
        for request in requests {
            assert!(
                request.get("visibility").is_none(),
                "the engine saw {request}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_coordinator_fails_what_was_in_flight_and_nodes_come_back() {
    bounded(async {
        let a = FakeEngine::start("a", Script::default().with_fault(Fault::HoldAfter(1))).await;
        let b = FakeEngine::start("b", Script::default().with_fault(Fault::HoldAfter(1))).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&a)]).await;
        club.add_node("node-b", &[ServiceSpec::fake(&b)]).await;

        let (status, done_before, _) = {
            a.set_script(Script::default());
            b.set_script(Script::default());
            club.chat_whole(&chat_body(false)).await
        };
        assert_eq!(status, 200);
        a.set_script(Script::default().with_fault(Fault::HoldAfter(1)));
        b.set_script(Script::default().with_fault(Fault::HoldAfter(1)));

        let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
        let in_flight = request_id(&response).unwrap();
        let mut events = SseReader::new(response);
        let mut seen = Vec::new();
        while streamed_content(&seen) != "Hello" {
            seen.push(events.next().await.expect("the stream ended early"));
        }
        // The running state is saved without delaying the first chunk; wait until it is durable,
        // so that the crash below comes after it (a crash within those few milliseconds leaves
        // a failed record that does not name the node).
        let deadline = Instant::now() + Duration::from_secs(5);
        while club.record(in_flight).await.status() != Status::Running {
            assert!(
                Instant::now() < deadline,
                "the running state was never saved"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let linked_before: Vec<usize> = club
            .nodes
            .iter()
            .map(|n| n.proc.count_lines_with("linked to the coordinator"))
            .collect();
        club.kill_coordinator();
        while events.next().await.is_some() {}
        assert!(events.broken || seen.last().map(String::as_str) != Some("[DONE]"));

        let restarted = Instant::now();
        club.restart_coordinator().await;
        let record = club.final_record(in_flight, Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert!(
            record
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("restart")),
            "{:?}",
            record.failure
        );
        // The record kept what was known when the coordinator died.
        assert!(
            record.served_by.is_some(),
            "the failed record names the node that served it"
        );
        assert!(record.timing.dispatched_at.is_some());

        for (node, before) in club.nodes.iter().zip(linked_before) {
            wait_until(
                &format!("{} links again", node.name),
                Duration::from_secs(15),
                || node.proc.count_lines_with("linked to the coordinator") > before,
            )
            .await;
        }
        let relinked = restarted.elapsed();
        club.wait_for_model(MODEL).await;
        a.set_script(Script::default());
        b.set_script(Script::default());
        let (status, after, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
        let after = club
            .final_record(after.unwrap(), Duration::from_secs(5))
            .await;
        assert_eq!(after.status(), Status::Succeeded);

        // No record lost: each of the three requests has one, and all are final.
        let ada = club.store().user_by_handle("ada").await.unwrap().unwrap();
        let page = club
            .store()
            .list_records(&RecordQuery::made_by(ada.id))
            .await
            .unwrap();
        let ids: HashSet<_> = page.items.iter().map(|r| r.id).collect();
        let expected: HashSet<_> = [done_before.unwrap(), in_flight, after.id].into();
        assert_eq!(ids, expected);
        assert!(page.items.iter().all(|r| r.status().is_final()));
        loud(&format!(
            "restart: nodes linked again {relinked:?} after the coordinator restarted"
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_front_of_llamacpp_serves_whole_and_streamed_chats() {
    let Ok(url) = std::env::var("CLUB_TEST_LLAMACPP_URL") else {
        loud(
            "SKIPPED: CLUB_TEST_LLAMACPP_URL is not set — the llama.cpp end-to-end test needs the server that scripts/llamacpp/start.sh starts",
        );
        return;
    };
    let model = std::env::var("CLUB_TEST_LLAMACPP_MODEL").unwrap_or_else(|_| "tiny-llama".into());
    bounded(async {
        let mut club = Club::start(&[]).await;
        let service = ServiceSpec {
            url: url.clone(),
            engine: "llamacpp".into(),
            max_concurrent: Some(1),
            model: model.clone(),
        };
        club.add_node("llamacpp-node", &[service]).await;
        let body = |stream: bool| {
            json!({
                "model": model,
                "messages": [{"role": "user", "content": "Say hello"}],
                "max_tokens": 8,
                "stream": stream,
            })
        };

        let (status, id, whole) = club.chat_whole(&body(false)).await;
        assert_eq!(status, 200, "{whole}");
        assert_eq!(whole["object"], "chat.completion");
        assert!(
            whole["choices"][0]["message"]["content"].is_string(),
            "{whole}"
        );
        let record = club
            .final_record(id.unwrap(), Duration::from_secs(10))
            .await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(record.served_by.as_ref().unwrap().provider, "llamacpp-node");
        assert_eq!(
            record.response.content.clone().unwrap_or_default(),
            whole["choices"][0]["message"]["content"].as_str().unwrap()
        );
        // Usage is what the engine reported, the same for the consumer and the record, or
        // honestly absent from both.
        match (&record.usage.source, &record.usage.counts) {
            (UsageSource::Reported, Some(counts)) => {
                assert_eq!(
                    whole["usage"]["completion_tokens"],
                    json!(counts.completion_tokens)
                );
            }
            (UsageSource::Absent, None) => assert!(whole["usage"].is_null(), "{whole}"),
            other => panic!("inconsistent usage {other:?}"),
        }
        loud(&format!("llama.cpp whole chat: usage {:?}", record.usage));

        let (status, id, events) = club.chat_streamed(&body(true)).await;
        assert_eq!(status, 200);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert!(events.iter().all(|e| error_of(e).is_none()), "{events:?}");
        let record = club
            .final_record(id.unwrap(), Duration::from_secs(10))
            .await;
        assert_eq!(record.status(), Status::Succeeded);
        assert_eq!(
            record.response.content.clone().unwrap_or_default(),
            streamed_content(&events)
        );
        // Usage is recorded as the engine reported it, or honestly absent.
        match record.usage.source {
            UsageSource::Reported => assert!(record.usage.counts.is_some()),
            UsageSource::Absent => assert!(record.usage.counts.is_none()),
        }
        loud(&format!(
            "llama.cpp streamed chat: usage {:?}",
            record.usage
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_key_without_the_provider_scope_is_refused() {
    bounded(async {
        let engine = FakeEngine::start("a", Script::default()).await;
        let mut club = Club::start(&[]).await;
        let inference_only = club.key_with_scopes("inference").await;
        let node =
            club.spawn_node_with_key("node-a", &[ServiceSpec::fake(&engine)], &inference_only);
        let line = club.nodes[node]
            .proc
            .wait_for_line("403", Duration::from_secs(10))
            .await;
        assert!(
            line.contains("provider"),
            "the refusal names the missing scope: {line}"
        );
        assert!(club.models().await.is_empty());
        assert!(
            club.nodes[node]
                .proc
                .line_with("linked to the coordinator")
                .is_none()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_with_an_invalid_manifest_is_refused_with_every_problem() {
    use futures_util::{SinkExt, StreamExt};
    use inference_club_core::link::{self, CoordinatorMessage, Hello, NodeMessage};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    bounded(async {
        let club = Club::start(&[]).await;
        let connect = |key: String| {
            let mut request = format!("ws://{}/v1/link", club.address)
                .into_client_request()
                .unwrap();
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
            tokio_tungstenite::connect_async(request)
        };

        // The node's own validator would never send this: speak the protocol by hand.
        let (mut ws, _) = connect(club.key.clone()).await.unwrap();
        let manifest = json!({
            "schema_version": 1,
            "agent": {"name": "hand-made"},
            "hosts": [{"id": "box", "services": [{
                "name": "chat", "engine": "foo", "url": "localhost:8080", "max_concurrent": 0,
                "models": [{"id": "m"}],
            }]}],
        });
        let hello = NodeMessage::Hello(Hello {
            protocol_version: 1,
            node_version: "e2e-test".into(),
            manifest,
        });
        ws.send(Message::Text(link::encode(&hello).unwrap().into()))
            .await
            .unwrap();
        let answer = loop {
            match ws.next().await.expect("an answer to hello").unwrap() {
                Message::Text(text) => break link::decode_coordinator(&text).unwrap(),
                _ => continue,
            }
        };
        let CoordinatorMessage::Refused(refused) = answer else {
            panic!("expected refused, got {answer:?}");
        };
        for path in ["engine", "url", "max_concurrent"] {
            let path = format!("hosts[0].services[0].{path}");
            assert!(
                refused.errors.iter().any(|e| e.starts_with(&path)),
                "{path} is not listed in {:?}",
                refused.errors
            );
        }
        assert!(club.models().await.is_empty());

        // A key without the provider scope is refused at the upgrade.
        let inference_only = club.key_with_scopes("inference").await;
        match connect(inference_only).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 403);
            }
            other => panic!("expected 403 at the upgrade, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_right_after_a_cancelled_one_gets_the_freed_slot() {
    bounded(async {
        let pieces: Vec<String> = (0..100).map(|n| format!("w{n} ")).collect();
        let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let engine =
            FakeEngine::start("slow", Script::answer(&pieces, Duration::from_millis(50))).await;
        let mut club = Club::start(&["--queue-timeout-secs", "5"]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine).max_concurrent(1)])
            .await;
        for round in 0..3 {
            engine.set_script(Script::answer(&pieces, Duration::from_millis(50)));
            let response = club.post_chat(&chat_body(true), Some(&club.key), &[]).await;
            let mut events = SseReader::new(response);
            let mut seen = Vec::new();
            while streamed_content(&seen) != "w0 w1 " {
                seen.push(events.next().await.expect("the stream ended early"));
            }
            drop(events);
            // The consumer tries again at once: the node's only slot is being freed.
            engine.set_script(Script::default());
            let (status, id, body) = club.chat_whole(&chat_body(false)).await;
            assert_eq!(status, 200, "round {round}: {body}");
            let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Succeeded);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_is_offline_after_two_missed_heartbeats() {
    bounded(async {
        let a = FakeEngine::start("a", Script::default()).await;
        let b = FakeEngine::start("b", Script::default()).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&a)]).await;
        club.add_node("node-b", &[ServiceSpec::fake(&b)]).await;

        // Frozen, its link stays open but silent (heartbeats every second here).
        club.node("node-a").proc.signal("STOP");
        let frozen = Instant::now();
        for _ in 0..4 {
            let (status, id, body) = club.chat_whole(&chat_body(false)).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
            let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Succeeded);
            assert_eq!(record.served_by.unwrap().provider, "node-b");
        }
        club.coordinator
            .wait_for_line("node missed two heartbeats", Duration::from_secs(5))
            .await;
        assert!(frozen.elapsed() < Duration::from_secs(5));
        assert_eq!(a.received(), 0);
        club.node("node-a").proc.signal("CONT");
    })
    .await;
}

/// Who may read, change and delete a record, through the club API of a real coordinator process:
/// `ada` asks privately on `bob`'s node; `eve` is a stranger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_visibility_and_deletion_follow_the_rules_for_every_viewer() {
    bounded(async {
        let engine = FakeEngine::start("a", Script::default()).await;
        let mut club = Club::start(&[]).await;
        let bob = club.add_member("bob", "provider,inference").await;
        let eve = club.add_member("eve", "inference,account").await;
        let index = club.spawn_node_with_key("bobs-node", &[ServiceSpec::fake(&engine)], &bob);
        club.nodes[index]
            .proc
            .wait_for_line("linked to the coordinator", Duration::from_secs(20))
            .await;
        club.wait_for_model(&ServiceSpec::fake(&engine).model).await;

        let mut body = chat_body(false);
        body["visibility"] = json!("private");
        let (status, id, _) = club.chat_whole(&body).await;
        assert_eq!(status, 200);
        let id = id.unwrap();
        club.final_record(id, Duration::from_secs(5)).await;

        let url = format!("{}/api/v1/requests/{id}", club.url);
        let get = |key: Option<String>| {
            let mut request = club.http.get(&url);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(get(Some(club.key.clone())).await, 200, "the owner reads it");
        assert_eq!(
            get(Some(bob.clone())).await,
            200,
            "the serving operator reads it"
        );
        assert_eq!(get(Some(eve.clone())).await, 404, "a stranger does not");
        assert_eq!(get(None).await, 404, "nor does anyone signed out");
        let feed: Value = club
            .http
            .get(format!("{}/api/v1/requests/public", club.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            !feed.to_string().contains(&id.to_string()),
            "private records stay off the feed"
        );

        // Only the owner changes visibility or deletes; others change nothing.
        let patch = |key: String, visibility: &str| {
            club.http
                .patch(&url)
                .bearer_auth(key)
                .json(&json!({"visibility": visibility}))
                .send()
        };
        assert_eq!(
            patch(eve.clone(), "public")
                .await
                .unwrap()
                .status()
                .as_u16(),
            404
        );
        assert_eq!(get(None).await, 404);
        assert_eq!(
            patch(club.key.clone(), "unlisted")
                .await
                .unwrap()
                .status()
                .as_u16(),
            200
        );
        assert_eq!(get(None).await, 200, "unlisted: anyone with the id");
        assert_eq!(get(Some(eve.clone())).await, 200);

        let delete = |key: String| club.http.delete(&url).bearer_auth(key).send();
        assert_eq!(delete(eve.clone()).await.unwrap().status().as_u16(), 404);
        assert_eq!(
            delete(bob.clone()).await.unwrap().status().as_u16(),
            404,
            "the serving operator reads it but cannot delete it"
        );
        assert!(
            club.store().record(id).await.unwrap().is_some(),
            "nothing was deleted yet"
        );
        assert_eq!(
            delete(club.key.clone()).await.unwrap().status().as_u16(),
            204
        );
        assert_eq!(get(Some(club.key.clone())).await, 404, "gone for the owner");
        assert_eq!(get(Some(bob.clone())).await, 404, "gone for the operator");
        assert!(
            club.store().record(id).await.unwrap().is_none(),
            "gone from the database"
        );
    })
    .await;
}
