//! Per-member limits over every replica, and the database a cluster needs.

use std::time::Duration;

use serde_json::Value;

use crate::on_fresh_database;
use crate::support::cluster::{Cluster, REPLICAS, chat_for, tools};
use crate::support::{FakeEngine, Fault, MODEL, Script, ServiceSpec, loud};

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
