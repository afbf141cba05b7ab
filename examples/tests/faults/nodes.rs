//! Nodes killed or cut off: offline at once, failed over, back on their own.

use std::time::{Duration, Instant};

use inference_club_core::record::Status;
use serde_json::{Value, json};

use crate::support::faults::StallProxy;
use crate::support::{
    ANSWER, Club, FakeEngine, Fault, MODEL, STARTUP, Script, ServiceSpec, SseReader, chat_body,
    error_of, json_of, loud, request_id, streamed_content, wait_until,
};
use crate::{assert_ends_with_error, assert_envelope, bounded, read_rest, read_until_content};

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
