//! The soak itself: steady load while nodes churn and consumers leave.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Club, FakeEngine, MODEL, STARTUP, Script, loud};
use crate::{Outcome, ask, env_number, spawn_node, usage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: cargo test --release -p inference-club-examples --test soak -- --ignored --nocapture"]
async fn soak_with_churning_nodes_and_leaving_consumers() {
    let seconds = env_number("CLUB_SOAK_SECS", 300);
    let consumers = usize::try_from(env_number("CLUB_SOAK_CONSUMERS", 8)).unwrap();
    let slots = usize::try_from(env_number("CLUB_SOAK_NODES", 4))
        .unwrap()
        .max(2);
    let pieces: Vec<String> = (0..12).map(|n| format!("w{n} ")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let mut engines = Vec::new();
    for slot in 0..slots {
        engines.push(
            FakeEngine::start(
                &format!("e{slot}"),
                Script::answer(&pieces, Duration::from_millis(15)),
            )
            .await,
        );
    }
    let mut club = Club::start(&[]).await;
    let mut running: Vec<Option<usize>> = Vec::new();
    for (slot, engine) in engines.iter().enumerate() {
        let index = spawn_node(&mut club, slot, engine);
        club.nodes[index]
            .proc
            .wait_for_line("linked to the coordinator", STARTUP)
            .await;
        running.push(Some(index));
    }
    club.wait_for_model(MODEL).await;

    // Warm up with as many consumers as the load has (so that the database pool and buffers
    // reach their working size), close their connections, then take the baseline with every
    // node linked and nothing in flight.
    let warm_http = reqwest::Client::new();
    let warm: Vec<_> = (0..consumers)
        .map(|c| {
            let (http, url, key) = (warm_http.clone(), club.url.clone(), club.key.clone());
            tokio::spawn(async move {
                for n in 0..10 {
                    let tag = format!("warm-{c}-{n}");
                    let outcome = ask(
                        http.clone(),
                        url.clone(),
                        key.clone(),
                        tag,
                        n % 2 == 0,
                        None,
                    );
                    assert_eq!(outcome.await, Outcome::Answered(200));
                }
            })
        })
        .collect();
    for task in warm {
        task.await.unwrap();
    }
    drop(warm_http);
    club.metric("runtime_tasks").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = usage(&club).await;
    loud(&format!("soak: baseline {baseline:?}"));

    // The consumers: each asks without pause; a quarter of the streamed requests leave after a
    // few events, and one request in ten leaves after 100-400 ms, whatever it got by then.
    let stop = Arc::new(AtomicBool::new(false));
    let load_http = reqwest::Client::new();
    let tasks: Vec<_> = (0..consumers)
        .map(|c| {
            let (http, url, key) = (load_http.clone(), club.url.clone(), club.key.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let tag = format!("soak-{c}-{i}");
                    let stream = fastrand::u8(0..10) < 7;
                    let leave_after =
                        (stream && fastrand::u8(0..4) == 0).then(|| fastrand::usize(1..8));
                    let request = ask(
                        http.clone(),
                        url.clone(),
                        key.clone(),
                        tag.clone(),
                        stream,
                        leave_after,
                    );
                    let outcome = if fastrand::u8(0..10) == 0 {
                        let patience = Duration::from_millis(fastrand::u64(100..400));
                        tokio::time::timeout(patience, request)
                            .await
                            .unwrap_or(Outcome::LeftEarly)
                    } else {
                        request.await
                    };
                    sent.push((tag, outcome));
                }
                sent
            })
        })
        .collect();

    // Nodes join and leave at random: killed (SIGKILL) or shut down (SIGTERM, which finishes
    // the jobs running), always leaving one other node linked.
    let started = Instant::now();
    let mut peak = baseline;
    let (mut kills, mut shutdowns, mut joins) = (0, 0, 0);
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..1500))).await;
        let slot = fastrand::usize(0..slots);
        // Linked nodes not told to leave (a node just started may not be linked yet).
        let alive = running
            .iter()
            .flatten()
            .filter(|&&i| {
                club.nodes[i]
                    .proc
                    .line_with("linked to the coordinator")
                    .is_some()
            })
            .count();
        match running[slot] {
            Some(index) if alive > 1 => {
                if fastrand::bool() {
                    club.nodes[index].proc.kill();
                    kills += 1;
                } else {
                    club.nodes[index].proc.signal("TERM");
                    shutdowns += 1;
                }
                running[slot] = None;
            }
            Some(_) => {}
            None => {
                // A node shut down gracefully may still be finishing; its successor waits.
                let previous = club
                    .nodes
                    .iter_mut()
                    .rev()
                    .find(|n| n.name == format!("soak-node-{slot}"));
                if previous.is_some_and(|n| n.proc.is_running()) {
                    continue;
                }
                running[slot] = Some(spawn_node(&mut club, slot, &engines[slot]));
                joins += 1;
            }
        }
        let now = usage(&club).await;
        peak.rss_kib = peak.rss_kib.max(now.rss_kib);
        peak.fds = peak.fds.max(now.fds);
        peak.tasks = peak.tasks.max(now.tasks);
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for task in tasks {
        sent.extend(task.await.unwrap());
    }
    // The consumers' connections close with their client.
    drop(load_http);
    let load_secs = started.elapsed().as_secs_f64();

    // Back to the baseline's shape: every slot linked, nothing in flight.
    for slot in 0..slots {
        if running[slot].is_none() {
            let deadline = Instant::now() + Duration::from_secs(40);
            while club
                .nodes
                .iter_mut()
                .rev()
                .find(|n| n.name == format!("soak-node-{slot}"))
                .is_some_and(|n| n.proc.is_running())
            {
                assert!(Instant::now() < deadline, "node {slot} never stopped");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            running[slot] = Some(spawn_node(&mut club, slot, &engines[slot]));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let profile: serde_json::Value = club
            .http
            .get(format!("{}/api/v1/providers", club.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let online = profile.to_string().matches("\"online\":true").count();
        if online >= slots {
            break;
        }
        assert!(Instant::now() < deadline, "only {online} nodes came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every record final, and exactly one per request sent.
    let records = club.all_final(Duration::from_secs(30)).await;
    let recorded: Vec<String> = records
        .iter()
        .filter_map(|r| r.request.messages.first().and_then(|m| m.text_content()))
        .filter(|t| t.starts_with("soak-"))
        .collect();
    let recorded_set: HashSet<&String> = recorded.iter().collect();
    assert_eq!(
        recorded.len(),
        recorded_set.len(),
        "a request has two records"
    );
    let sent_tags: HashSet<&String> = sent.iter().map(|(tag, _)| tag).collect();
    let missing: Vec<_> = sent
        .iter()
        .filter(|(tag, _)| !recorded_set.contains(tag))
        .collect();
    let invented: Vec<_> = recorded_set.difference(&sent_tags).collect();

    // Settle, then compare with the baseline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = usage(&club).await;

    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (_, outcome) in &sent {
        *outcomes.entry(format!("{outcome:?}")).or_default() += 1;
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for record in &records {
        if let Some(failure) = &record.failure {
            let short: String = failure.chars().take(70).collect();
            *reasons.entry(short).or_default() += 1;
        }
    }
    // A failure before any output would have been retried on another node: with one always
    // linked, every failure should come after output started (a node killed mid-answer).
    let failed_before_output = records
        .iter()
        .filter(|r| r.status() == inference_club_core::record::Status::Failed)
        .filter(|r| r.response.content.as_deref().unwrap_or_default().is_empty())
        .count();
    let retried = records.iter().filter(|r| r.attempts.len() > 1).count();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for record in &records {
        if record
            .request
            .messages
            .first()
            .and_then(|m| m.text_content())
            .is_some_and(|t| t.starts_with("soak-"))
        {
            *statuses
                .entry(record.status().as_str().to_owned())
                .or_default() += 1;
        }
    }
    loud(&format!(
        "soak: {load_secs:.0} s of load, {consumers} consumers, {slots} node slots; \
         {kills} nodes killed, {shutdowns} shut down, {joins} joined"
    ));
    loud(&format!(
        "soak: {} requests sent ({:.1}/s); outcomes {outcomes:?}",
        sent.len(),
        sent.len() as f64 / load_secs
    ));
    loud(&format!(
        "soak: {} records; by status {statuses:?}; missing {}, invented {}",
        recorded.len(),
        missing.len(),
        invented.len()
    ));
    loud(&format!(
        "soak: failures and cancellations by reason {reasons:#?}"
    ));
    loud(&format!(
        "soak: {retried} requests failed over to another node; {failed_before_output} failed before any output"
    ));
    loud(&format!("soak: baseline {baseline:?}"));
    loud(&format!("soak: peak     {peak:?}"));
    loud(&format!("soak: after    {after:?}"));

    assert!(missing.is_empty(), "requests without a record: {missing:?}");
    assert_eq!(
        failed_before_output, 0,
        "requests failed before any output although another node was linked"
    );
    assert!(
        invented.is_empty(),
        "records of requests never sent: {invented:?}"
    );
    assert!(
        after.tasks <= baseline.tasks + 8.0,
        "runtime tasks {} after, {} before: a task leaked",
        after.tasks,
        baseline.tasks
    );
    assert!(
        after.fds <= baseline.fds + 8,
        "open fds {} after, {} before",
        after.fds,
        baseline.fds
    );
    assert!(
        after.rss_kib <= (baseline.rss_kib * 2).max(baseline.rss_kib + 64 * 1024),
        "resident memory {} KiB after, {} KiB before",
        after.rss_kib,
        baseline.rss_kib
    );
}
