//! Engines that fail: 500s, hangs, stalls mid-stream and garbage.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use inference_club_core::record::Status;

use crate::support::{
    ANSWER, Club, FakeEngine, Fault, MODEL, STARTUP, Script, ServiceSpec, SseReader, chat_body,
    request_id, streamed_content, wait_until,
};
use crate::{
    assert_ends_with_error, assert_envelope, bounded, chat_until_failed_over, read_rest,
    read_until_content,
};

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

        // A 404 or 401 is the engine refusing its node (a route or model it lacks, the node's
        // key to it): failed over, and with every engine refusing, 502 naming the engine.
        a.set_script(Script::default().with_fault(Fault::Status(404)));
        b.set_script(Script::default());
        let record = chat_until_failed_over(&club).await;
        assert_eq!(record.attempts[0].served_by.provider, "node-a");
        let error = record.attempts[0].error.as_ref().unwrap();
        assert_eq!(error.kind, "unavailable", "{error:?}");
        assert_eq!(record.served_by.unwrap().provider, "node-b");
        b.set_script(Script::default().with_fault(Fault::Status(401)));
        let (status, _, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 502, "{body}");
        assert_envelope(&body, "upstream_error");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("the node's engine refused it"), "{body}");

        // Engines healthy again: served at once.
        a.set_script(Script::default());
        b.set_script(Script::default());
        let (status, _, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
}

/// An engine that is down: the consumers get 502, and the node says so in its own log, naming
/// the model and the error but not the prompt — one line per model every 10 s, however many
/// jobs fail meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_is_down_is_warned_about_in_the_nodes_log_without_flooding_it() {
    bounded(async {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let down = ServiceSpec {
            url: format!("http://127.0.0.1:{dead}/v1"),
            engine: "vllm".into(),
            max_concurrent: None,
            model: MODEL.into(),
        };
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[down]).await;
        for _ in 0..3 {
            let (status, id, body) = club.chat_whole(&chat_body(false)).await;
            assert_eq!(status, 502, "{body}");
            assert_envelope(&body, "upstream_error");
            let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
            assert_eq!(record.status(), Status::Failed);
        }

        let node = &club.node("node-a").proc;
        let line = node
            .wait_for_line("a job failed", Duration::from_secs(5))
            .await;
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains(MODEL), "{line}");
        assert!(line.contains("cannot reach the engine"), "{line}");
        let output = node.output();
        assert!(
            !output.contains("Say hello"),
            "the prompt was logged:\n{output}"
        );
        assert_eq!(
            node.count_lines_with("a job failed"),
            1,
            "the later failures are only counted:\n{output}"
        );
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
        // A whole answer is waited for as long as the whole-answer timeout allows: the engine
        // sends nothing before it is complete.
        let timeout = [
            "--first-token-timeout-secs",
            "1",
            "--whole-answer-timeout-secs",
            "1",
        ];
        for (name, engine) in [("node-a", &a), ("node-b", &b)] {
            let n = club.spawn_node_with(name, &[ServiceSpec::fake(engine)], &key, &url, &timeout);
            club.nodes[n]
                .proc
                .wait_for_line("linked to the coordinator", STARTUP)
                .await;
        }
        club.wait_for_model(MODEL).await;

        // The hung engine is given up after the node's timeout and the request is retried on
        // the other node.
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
            &[
                "--idle-timeout-secs",
                "1",
                "--whole-answer-timeout-secs",
                "1",
            ],
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

        // Whole: the engine is asked for the answer whole, and sends nothing before it is
        // complete: 502 `upstream_timeout` after the whole-answer timeout, nothing to keep.
        let asked = Instant::now();
        let (status, id, body) = club.chat_whole(&chat_body(false)).await;
        assert_eq!(status, 502, "{body}");
        assert_envelope(&body, "upstream_timeout");
        assert!(asked.elapsed() >= Duration::from_millis(900));
        let record = club.final_record(id.unwrap(), Duration::from_secs(5)).await;
        assert_eq!(record.status(), Status::Failed);
        assert_eq!(record.response.content, None);
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

/// The name an engine gives the model in its answers does not become a label of `/metrics`
/// (an engine naming a new model in every answer would grow it without bound); the model as
/// routed does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engines_name_for_the_model_is_no_metrics_label() {
    bounded(async {
        let engine = FakeEngine::start(
            "a",
            Script::default().with_model_name("Engine-Says-Something-Else"),
        )
        .await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine)]).await;
        for streamed in [false, true] {
            let (status, _, body) = club.chat_whole(&chat_body(streamed)).await;
            assert_eq!(status, 200, "{body}");
        }
        let text = reqwest::get(format!("{}/metrics", club.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.to_ascii_lowercase().contains("engine-says"), "{text}");
        let routed = format!("model=\"{}\"", MODEL.to_ascii_lowercase());
        assert!(
            text.lines()
                .any(|l| l.starts_with("club_requests_total") && l.contains(&routed)),
            "{text}"
        );
    })
    .await;
}
