//! Replicas killed or restarted one by one under load: no record lost, none refused.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use inference_club_core::record::{InferenceRecord, RecordId, Status};
use tokio_util::sync::CancellationToken;

use crate::load::{Outcome, Sent, gather, nodes_through_nginx, start_load};
use crate::on_fresh_database;
use crate::support::cluster::{Cluster, REPLICAS, tools};
use crate::support::loud;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_no_record_and_its_nodes_come_back_through_the_others() {
    let Some(tools) = tools(
        "a_replica_killed_under_load_loses_no_record_and_its_nodes_come_back_through_the_others",
    ) else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let mut cluster = Cluster::start(&tools, &database).await;
        let (names, _engines) = nodes_through_nginx(&mut cluster, 6).await;

        // Where nginx sent each node's link; the victim is the replica holding the most.
        let mut held: HashMap<usize, Vec<String>> = HashMap::new();
        for name in &names {
            let replicas = cluster.replicas_that_linked(name);
            assert_eq!(replicas.len(), 1, "{name} linked to {replicas:?}");
            assert_eq!(cluster.links_of(name), 1, "{name} relinked already");
            held.entry(replicas[0]).or_default().push(name.clone());
        }
        let (victim, orphans) = held
            .iter()
            .max_by_key(|(_, nodes)| nodes.len())
            .map(|(n, nodes)| (*n, nodes.clone()))
            .unwrap();
        let survivor = cluster.url((victim + 1) % REPLICAS);
        loud(&format!(
            "cluster: links per replica {held:?}; killing r{}",
            victim + 1
        ));

        // Eight consumers through nginx; the victim is SIGKILLed 2.5 s in.
        let stop = CancellationToken::new();
        let nginx = cluster.nginx_url.clone();
        let consumers = start_load(&cluster, &nginx, 8, &stop);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let killed = Instant::now();
        cluster.kill_replica(victim);

        // Its nodes relink through nginx to the others, and are listed online by them, within
        // 10 s.
        for name in &orphans {
            loop {
                if cluster.links_of(name) >= 2 && cluster.listed_online(&survivor, name).await {
                    break;
                }
                assert!(
                    killed.elapsed() < Duration::from_secs(10),
                    "{name} is not back online 10 s after its replica was killed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let back = killed.elapsed();
        loud(&format!(
            "cluster: the victim's nodes were back online after {back:?}"
        ));
        for name in &orphans {
            let now = cluster.replicas_that_linked(name);
            assert!(
                now.iter().any(|n| *n != victim),
                "{name} relinked to {now:?}"
            );
        }
        let load_until = killed + Duration::from_millis(5500);
        tokio::time::sleep(load_until.saturating_duration_since(Instant::now())).await;
        stop.cancel();
        let sent = gather(consumers).await;

        // Every request got an answer or a clear error, none hung; failures only around the
        // kill, and every request from 3 s after it is answered in full.
        let mut tally: HashMap<String, usize> = HashMap::new();
        for request in &sent {
            let kind = match &request.outcome {
                Outcome::Answered => "answered".to_owned(),
                Outcome::ErrorEvent(code) => format!("error event {code}"),
                Outcome::Refused(status, _) => format!("status {status}"),
                Outcome::Broken(_) => "broken".to_owned(),
            };
            *tally.entry(kind).or_default() += 1;
            if request.outcome != Outcome::Answered {
                assert!(
                    request.sent < killed + Duration::from_secs(3) && request.done > killed,
                    "a request failed away from the kill: {request:?} (killed at {killed:?})"
                );
            }
            if request.sent > killed + Duration::from_secs(3) {
                assert_eq!(request.outcome, Outcome::Answered, "{request:?}");
            }
        }
        loud(&format!("cluster: {} requests: {tally:?}", sent.len()));
        let before = sent.iter().filter(|r| r.done < killed).count();
        let after = sent.iter().filter(|r| r.sent > killed).count();
        assert!(
            before > 0 && after > 0,
            "load before {before}, after {after}"
        );

        // No record lost, none left in flight: within 20 s of the kill every record is final
        // (the dead replica's as failed, with a reason), and each answered request's record says
        // succeeded.
        let within = (killed + Duration::from_secs(20)).saturating_duration_since(Instant::now());
        let records = cluster.club.all_final(within).await;
        let by_id: HashMap<RecordId, &InferenceRecord> =
            records.iter().map(|r| (r.id, r)).collect();
        for request in &sent {
            let Some(id) = request.id else {
                assert_ne!(request.outcome, Outcome::Answered, "{request:?}");
                continue;
            };
            let record = by_id
                .get(&id)
                .unwrap_or_else(|| panic!("no record for {request:?}"));
            match request.outcome {
                Outcome::Answered => assert_eq!(record.status(), Status::Succeeded, "{record:?}"),
                Outcome::ErrorEvent(_) => assert_eq!(record.status(), Status::Failed),
                _ => {}
            }
        }
        for record in &records {
            if record.status() == Status::Failed {
                assert!(record.failure.is_some(), "a failed record without a reason");
            }
        }
        let named: HashSet<RecordId> = sent.iter().filter_map(|r| r.id).collect();
        assert!(
            named.len() <= records.len(),
            "{} requests named records, {} stored",
            named.len(),
            records.len()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_nginx_refuses_no_request() {
    let Some(tools) = tools("a_rolling_restart_behind_nginx_refuses_no_request") else {
        return;
    };
    on_fresh_database(tools, |tools, database| async move {
        let mut cluster = Cluster::start(&tools, &database).await;
        let (names, _engines) = nodes_through_nginx(&mut cluster, 4).await;

        let stop = CancellationToken::new();
        let nginx = cluster.nginx_url.clone();
        let consumers = start_load(&cluster, &nginx, 6, &stop);
        for n in 0..REPLICAS {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let draining = Instant::now();
            let status = cluster.terminate_replica(n).await;
            assert!(status.success(), "replica r{} exited with {status}", n + 1);
            loud(&format!(
                "cluster: r{} drained and exited in {:?}",
                n + 1,
                draining.elapsed()
            ));
            cluster.restart_replica(n).await;
            // Every node is linked (to a replica that runs) and listed online everywhere.
            let took = cluster
                .wait_online_everywhere(&names, Duration::from_secs(10))
                .await;
            loud(&format!(
                "cluster: every node online everywhere {took:?} after r{}'s restart",
                n + 1
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        let sent = gather(consumers).await;

        let failed: Vec<&Sent> = sent
            .iter()
            .filter(|r| r.outcome != Outcome::Answered)
            .collect();
        loud(&format!(
            "cluster: {} requests across the rolling restart, {} not answered",
            sent.len(),
            failed.len()
        ));
        assert!(failed.is_empty(), "refused or broken: {failed:?}");
        assert!(sent.len() > 20, "too little load: {}", sent.len());
        let records = cluster.club.all_final(Duration::from_secs(10)).await;
        for record in &records {
            assert_eq!(record.status(), Status::Succeeded, "{record:?}");
        }
        // Every replica was restarted, so every node lost its link once at least, and linked
        // again on its own.
        for name in &names {
            assert!(cluster.links_of(name) >= 2, "{name} never relinked");
        }
    })
    .await;
}
