//! Routing and failover over the nodes of a model; unknown models and bad keys.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use inference_club_core::record::{Status, UsageSource};
use serde_json::{Value, json};

use crate::bounded;
use crate::support::{
    ANSWER, Club, FakeEngine, Fault, MODEL, Script, ServiceSpec, SseReader, chat_body, error_of,
    json_of, request_id, streamed_content, wait_until,
};

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
