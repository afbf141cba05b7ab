//! The coordinator SIGKILLed mid-batch on SQLite, and started again on the same database.

use std::time::Duration;

use chrono::Utc;
use inference_club_core::record::Status;

use crate::support::{Club, FakeEngine, ServiceSpec, bounded_by, loud, wait_until};
use crate::{Batches, IN_FLIGHT, Outcome, custom_ids, input_file, slow_answer, wait_in_flight};

/// The lines of the batch.
const LINES: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_batch_finishes_it_after_its_restart_answering_each_line_once() {
    bounded_by(Duration::from_secs(120), async {
        let engine_a = FakeEngine::start("a", slow_answer(Duration::from_millis(30))).await;
        let engine_b = FakeEngine::start("b", slow_answer(Duration::from_millis(30))).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine_a)])
            .await;
        club.add_node("node-b", &[ServiceSpec::fake(&engine_b)])
            .await;
        let (http, url, key) = (club.http.clone(), club.url.clone(), club.key.clone());
        let api = Batches::new(&http, &url, &key);
        let file = api.upload(&input_file(LINES)).await;
        let batch = api.create(&file).await;
        let id = batch["id"].as_str().unwrap().to_owned();

        // A third of the way through, with lines running on both nodes, the coordinator dies.
        let before = api
            .wait_answered(&id, LINES as u64 / 3, Duration::from_secs(60))
            .await;
        wait_in_flight(club.store(), &id).await;
        let killed = Utc::now();
        club.kill_coordinator();
        loud(&format!(
            "killed the coordinator at {}",
            before["request_counts"]
        ));
        let at_kill = crate::batch_records(club.store(), &id).await;
        let running_at_kill = at_kill.iter().filter(|r| !r.status().is_final()).count();
        loud(&format!(
            "at the kill: {} records of the batch, {running_at_kill} in flight",
            at_kill.len()
        ));
        assert!(
            running_at_kill > 0,
            "no line of the batch was running when the coordinator was killed"
        );
        assert!(
            running_at_kill <= IN_FLIGHT,
            "{running_at_kill} lines ran at once"
        );

        // Started again on the same database, it fails what was in flight, takes the lines
        // back, waits for its nodes to link again (the model is served by none meanwhile: no
        // line fails for it) and finishes the batch.
        club.restart_coordinator().await;
        wait_until("both nodes link again", Duration::from_secs(20), || {
            club.nodes
                .iter()
                .all(|n| n.proc.count_lines_with("linked to the coordinator") >= 2)
        })
        .await;
        let outcome = Outcome::gather(&api, club.store(), &id, Duration::from_secs(60)).await;
        let (lost, failed) = outcome.assert_answered_once(&custom_ids(LINES), Some(killed));
        // What ran when it died is recorded as failed, saying why.
        let restarted = failed
            .iter()
            .filter(|r| {
                r.failure
                    .as_deref()
                    .is_some_and(|f| f.contains("the coordinator restarted"))
            })
            .count();
        assert!(
            restarted + lost >= running_at_kill,
            "{running_at_kill} lines were running at the kill; {restarted} records say the \
             coordinator restarted, {lost} answers were lost"
        );
        assert!(restarted > 0, "no record failed for the restart");
        assert!(
            outcome
                .records
                .iter()
                .all(|r| r.status() == Status::Succeeded || r.status() == Status::Failed)
        );
        // No line failed because no node served its model while the nodes linked again.
        assert!(
            failed.iter().all(|r| !r
                .failure
                .as_deref()
                .unwrap_or_default()
                .contains("no online node")),
            "{failed:?}"
        );
    })
    .await;
}
