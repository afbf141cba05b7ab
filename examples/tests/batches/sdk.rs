//! The official OpenAI Python SDK runs a 1,000-line batch while one of the two nodes serving
//! its model is SIGKILLed half-way.

use std::time::{Duration, Instant};

use crate::support::{ANSWER, Club, FakeEngine, MODEL, ServiceSpec, bounded_by, loud};
use crate::{Batches, Outcome, custom_ids, slow_answer};

/// The lines of the batch.
const LINES: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_runs_a_batch_to_the_end_while_a_node_is_killed_half_way() {
    let Ok(python) = std::env::var("CLUB_TEST_PYTHON") else {
        loud(
            "SKIPPED: CLUB_TEST_PYTHON not set — the OpenAI SDK batch test needs a venv with \
             `openai`; run scripts/python-sdk.sh (scripts/test.sh sets it)",
        );
        return;
    };
    bounded_by(Duration::from_secs(240), async {
        // Two nodes, each answering in about 100 ms: the batch takes several seconds.
        let engine_a = FakeEngine::start("a", slow_answer(Duration::from_millis(25))).await;
        let engine_b = FakeEngine::start("b", slow_answer(Duration::from_millis(25))).await;
        let mut club = Club::start(&[]).await;
        club.add_node("node-a", &[ServiceSpec::fake(&engine_a)])
            .await;
        let victim = club
            .add_node("node-b", &[ServiceSpec::fake(&engine_b)])
            .await;

        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../inference-club-coordinator/tests/python/test_openai_sdk_batches.py"
        );
        let id_file = club.dir.join("batch-id");
        let mut suite = tokio::process::Command::new(&python);
        suite
            .args(["-m", "pytest", "-q", "-s", "--tb=short", "-p", "no:cacheprovider"])
            .arg(script)
            .env("CLUB_URL", &club.url)
            .env("CLUB_API_KEY", &club.key)
            .env("CLUB_MODEL", MODEL)
            .env("CLUB_ANSWER", ANSWER)
            .env("CLUB_BATCH_LINES", LINES.to_string())
            .env("CLUB_BATCH_TIMEOUT_SECS", "150")
            .env("CLUB_BATCH_ID_FILE", &id_file)
            .kill_on_drop(true);
        let suite = suite.output();
        let mut suite = std::pin::pin!(suite);

        // Half-way through (as the suite's batch is answered), node-b is SIGKILLed.
        let api = Batches::new(&club.http, &club.url, &club.key);
        let started = Instant::now();
        let batch_id = loop {
            tokio::select! {
                output = &mut suite => panic!("the suite ended before its batch began: {output:?}"),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            if let Ok(id) = std::fs::read_to_string(&id_file)
                && !id.is_empty()
            {
                break id;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the suite made no batch"
            );
        };
        let half = tokio::select! {
            output = &mut suite => panic!("the suite ended before half its batch was answered: {output:?}"),
            half = api.wait_answered(&batch_id, LINES as u64 / 2, Duration::from_secs(120)) => half,
        };
        let served_by_b = engine_b.received();
        club.nodes[victim].proc.kill();
        loud(&format!(
            "killed node-b at {} answered lines (it had received {served_by_b} requests)",
            half["request_counts"]
        ));
        assert!(served_by_b > 0, "node-b served none of the batch before it was killed");

        let output = tokio::time::timeout(Duration::from_secs(180), &mut suite)
            .await
            .expect("the suite did not end")
            .expect("cannot run the suite");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "the SDK batch suite failed:\n{stdout}\n{stderr}"
        );
        assert!(stdout.contains("1 passed"), "{stdout}");
        loud(stdout.lines().find(|l| l.contains("BATCH")).unwrap_or(""));

        // The same, seen from the store: each line answered once, the rest failed.
        let outcome = Outcome::gather(&api, club.store(), &batch_id, Duration::from_secs(10)).await;
        let (_, failed) = outcome.assert_answered_once(&custom_ids(LINES), None);
        // node-b was answering lines when it died: those attempts failed (the record with it,
        // after output had begun; before, the record moved on to node-a) and ran again.
        let cut = outcome
            .records
            .iter()
            .filter(|r| {
                r.attempts
                    .iter()
                    .any(|a| a.served_by.provider == "node-b" && a.error.is_some())
                    || failed.iter().any(|f| f.id == r.id)
            })
            .count();
        loud(&format!(
            "node-b's engine dropped {} answers; {cut} records tell of it",
            engine_b.dropped()
        ));
        assert!(
            engine_b.dropped() == 0 || cut > 0,
            "node-b dropped answers but no record tells of a failed attempt"
        );
        // After the kill, node-a answered the rest.
        assert!(engine_a.received() + served_by_b >= LINES);
    })
    .await;
}
