//! `club-bench speed` (issue 18): scenario 1 (whole answers) at c=1, 16 and 64 and scenario 2
//! (streams of 100 chunks) at c=16, each through four paths side by side in one run — direct,
//! nginx (one hop), vllm-router (one hop) and the club — with the rows of the other commands
//! ([`crate::run_scenarios`]); then the records the coordinator stored against the answers the
//! club served, and the targets.
//!
//! Strict: any answer that is not a correct 2xx (a 429, a 5xx, a broken connection, a wrong
//! body), warm-ups included, fails the run ([`passed`]). A peer that is not installed is a row
//! that says so, and the target that compares with it is not judged.

use std::time::Duration;

use crate::{
    BoxError, CLUB, Report, Route, Row, STREAM, Settings, Verdict, WHOLE, diff, peers,
    run_scenarios, signed_ms, start_cluster, start_peer,
};

/// The subcommand's name (`Settings::command`).
pub const COMMAND: &str = "speed";

/// Scenario 1's concurrencies.
pub const WHOLE_CONCURRENCY: [usize; 3] = [1, 16, 64];

/// The peers measured beside the club, in row order.
const PEERS: [peers::Kind; 2] = [peers::Kind::Nginx, peers::Kind::VllmRouter];

/// What a peer's rows say when it is not installed.
const NOT_INSTALLED: &str = "not installed (run bench/peers.sh --nginx)";

/// How long the node and then the coordinator get to exit after SIGTERM (the coordinator
/// drains requests in flight for up to 30 s; with no load it exits at once).
const GRACE: Duration = Duration::from_secs(40);

/// The records the coordinator stored against the answers the club served.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Records {
    /// Rows in the coordinator's `records` table, counted after it exited; `None` when they
    /// could not be counted.
    pub stored: Option<u64>,
    /// 2xx answers on the club's path in the whole run, warm-ups included.
    pub served: u64,
    /// Requests sent on the club's path, answered or not.
    pub sent: u64,
    /// Why the records could not be counted (or were counted after a kill).
    pub error: Option<String>,
}

impl Records {
    /// Every answer served has its record, and nothing else was recorded.
    fn matched(&self) -> bool {
        self.error.is_none() && self.stored == Some(self.served)
    }

    /// `records: N stored for M served`.
    pub fn line(&self) -> String {
        let sent = if self.sent == self.served {
            String::new()
        } else {
            format!(" (of {} sent)", self.sent)
        };
        match (self.stored, &self.error) {
            (Some(stored), None) => format!(
                "records: {stored} stored for {} served{sent}{}",
                self.served,
                if self.matched() { "" } else { " — MISMATCH" }
            ),
            (_, error) => format!(
                "records: could not be counted ({}); {} served{sent}",
                error.as_deref().unwrap_or("?"),
                self.served
            ),
        }
    }
}

/// What [`run`] measured.
pub struct SpeedRun {
    pub rows: Vec<Row>,
    pub peers: Vec<peers::Found>,
    pub records: Records,
}

/// Starts the cluster and the peers in front of its engine, measures every row, stops the
/// peers, stops the node and the coordinator (SIGTERM) and counts the records.
pub async fn run(settings: &Settings) -> Result<SpeedRun, BoxError> {
    let cluster = start_cluster(COMMAND).await?;
    let dir = std::env::temp_dir().join(format!("club-bench-{}-speed-peers", std::process::id()));
    let mut found = Vec::new();
    let mut running = Vec::new();
    let mut routes = Vec::new();
    for kind in PEERS {
        match start_peer(kind, &cluster.engine.url, &dir, NOT_INSTALLED, &mut found).await {
            Ok(peer) => {
                routes.push(Route::peer(kind.label(), &peer, &cluster));
                running.push(peer);
            }
            Err(why) => {
                eprintln!("peer: {}: {why}", kind.label());
                routes.push(Route::unavailable(kind.label(), why));
            }
        }
    }
    let rows = run_scenarios(settings, &cluster, &routes).await;
    for peer in running {
        peer.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("stopping the node and the coordinator (SIGTERM), then counting the records");
    let stored = cluster.stop_counting_records(GRACE).await;
    let rows = rows?;
    let club = rows.iter().filter(|r| r.path == CLUB);
    let records = Records {
        served: club.clone().map(Row::answered_2xx).sum(),
        sent: club.map(Row::sent).sum(),
        stored: stored.as_ref().ok().copied(),
        error: stored.err().map(|e| e.to_string()),
    };
    Ok(SpeedRun {
        rows,
        peers: found,
        records,
    })
}

/// Whether every measured row, warm-up included, had only correct 2xx answers; says which did
/// not, and how their answers came back.
pub fn passed(report: &Report) -> bool {
    let mut failed = Vec::new();
    for row in report.rows.iter().filter(|r| r.skipped.is_none()) {
        if row.errors() == 0 && row.outcome.ok > 0 {
            continue;
        }
        let mut line = format!(
            "{}, {} c={}: measured {}; warm-up {}",
            row.path,
            row.scenario,
            row.concurrency,
            row.outcome.statuses(),
            row.warmup.statuses()
        );
        if let Some(error) = row
            .outcome
            .first_error
            .as_ref()
            .or(row.warmup.first_error.as_ref())
        {
            line.push_str(&format!("; first error: {error}"));
        }
        failed.push(line);
    }
    if report.rows.iter().all(|r| r.skipped.is_some()) {
        failed.push("no row was measured".into());
    }
    if failed.is_empty() {
        return true;
    }
    eprintln!("speed: FAILED: answers that were not correct 2xx (or no answers):");
    for line in failed {
        eprintln!("  {line}");
    }
    false
}

/// Issue 18's targets.
pub fn verdicts(report: &Report) -> Vec<Verdict> {
    let mut out = Vec::new();
    let row = |scenario: &str, path: &str, concurrency: usize| {
        report
            .rows
            .iter()
            .find(|r| r.scenario == scenario && r.path == path && r.concurrency == concurrency)
    };
    let measured = |scenario: &str, path: &str, concurrency: usize| {
        row(scenario, path, concurrency).filter(|r| r.skipped.is_none())
    };
    let mut push = |target: &str, rows: &[&Row], measured: String, met: Option<bool>| {
        out.push(judged(target, rows, measured, met));
    };
    if let Some(club) = measured(WHOLE, CLUB, 16) {
        let vllm_router = peers::Kind::VllmRouter.label();
        let c = club.outcome.requests_per_s;
        let target = "1. whole c=16: club requests/s ≥ vllm-router's one hop (this run)";
        match measured(WHOLE, vllm_router, 16) {
            Some(peer) => {
                let v = peer.outcome.requests_per_s;
                let text = format!(
                    "club {c:.0}/s vs vllm-router {v:.0}/s = {:.2}×",
                    c / v.max(1e-9)
                );
                push(target, &[club, peer], text, Some(c >= v));
            }
            None => {
                let why = row(WHOLE, vllm_router, 16)
                    .and_then(|r| r.skipped.clone())
                    .unwrap_or_else(|| "not measured".into());
                let text = format!("club {c:.0}/s; vllm-router not measured: {why}");
                push(target, &[club], text, None);
            }
        }
    }
    let club_rows: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.path == CLUB && r.skipped.is_none())
        .collect();
    if !club_rows.is_empty() {
        let sent: u64 = club_rows.iter().map(|r| r.sent()).sum();
        let answered: u64 = club_rows.iter().map(|r| r.answered_2xx()).sum();
        let text = format!("{answered} 2xx of {sent} sent");
        let target = "1. every club answer a correct 2xx (all rows, warm-ups included)";
        push(target, &club_rows, text, Some(answered == sent));
    }
    if let Some(records) = &report.records {
        let text = records.line().trim_start_matches("records: ").to_owned();
        let target = "1. records stored = club answers served (2xx, warm-ups included)";
        push(target, &[], text, Some(records.matched()));
    }
    if let (Some(direct), Some(club)) = (measured(STREAM, "direct", 16), measured(STREAM, CLUB, 16))
    {
        let (d, c) = (&direct.outcome, &club.outcome);
        let ratio = c.chunks_per_s / d.chunks_per_s.max(1e-9);
        let text = format!(
            "{:.0} vs {:.0} chunks/s = {ratio:.2}×",
            c.chunks_per_s, d.chunks_per_s
        );
        let target = "2. streams c=16: club chunks/s ≥ 0.75 × direct";
        push(target, &[direct, club], text, Some(ratio >= 0.75));
        let added = diff(c.ttfc.p50_us, d.ttfc.p50_us);
        let target = "2. streams c=16: added time to first chunk p50 < 1 ms";
        let text = format!("{} ms", signed_ms(added));
        push(target, &[direct, club], text, Some(added < 1_000));
    }
    if let (Some(direct), Some(club)) = (measured(WHOLE, "direct", 1), measured(WHOLE, CLUB, 1)) {
        let added = diff(club.outcome.latency.p50_us, direct.outcome.latency.p50_us);
        let target = "3. whole c=1: added p50 over direct < 0.5 ms";
        let text = format!("{} ms", signed_ms(added));
        push(target, &[direct, club], text, Some(added < 500));
    }
    if let Some(club) = measured(WHOLE, CLUB, 16) {
        let us = club.cpu.coordinator_us;
        let target = "4. whole c=16: coordinator CPU per request ≤ 100 µs";
        push(target, &[club], format!("{us:.0} µs"), Some(us <= 100.0));
    }
    out
}

/// What the whole-answer and stream targets leave the coordinator and the node, per request,
/// on this machine: its cores' time at the target's rate, less what the engine and the load
/// generator spent per request on the club's row (every process shares the cores).
pub fn budget(report: &Report) -> Vec<String> {
    let cores = report.machine.cpus as f64;
    let row = |scenario: &str, path: &str| {
        report.rows.iter().find(|r| {
            r.scenario == scenario && r.path == path && r.concurrency == 16 && r.skipped.is_none()
        })
    };
    let line = |what: String, per_second: f64, club: &Row, unit: &str| {
        let total = cores * 1e6 / per_second.max(1e-9);
        let room = total - club.cpu.engine_us - club.cpu.load_us;
        let spent = club.cpu.coordinator_us + club.cpu.node_us;
        format!(
            "{what}: {cores:.0} cores give {total:.0} µs per {unit}; the engine ({:.0}) and the \
             load generator ({:.0}) leave {room:.0} µs for the coordinator and the node, which \
             spent {spent:.0}",
            club.cpu.engine_us, club.cpu.load_us
        )
    };
    let mut out = Vec::new();
    if let (Some(club), Some(peer)) = (
        row(WHOLE, CLUB),
        row(WHOLE, peers::Kind::VllmRouter.label()),
    ) {
        let rate = peer.outcome.requests_per_s;
        out.push(line(
            format!("whole c=16 at vllm-router's {rate:.0} requests/s"),
            rate,
            club,
            "request",
        ));
    }
    if let (Some(club), Some(direct)) = (row(STREAM, CLUB), row(STREAM, "direct")) {
        let rate = 0.75 * direct.outcome.requests_per_s;
        out.push(line(
            format!("streams c=16 at 0.75× direct ({rate:.0} streams/s)"),
            rate,
            club,
            "stream",
        ));
    }
    out
}

/// A target judged on `rows`' figures: not met when any of those rows had errors (its figures
/// then describe failures, not the path).
fn judged(target: &str, rows: &[&Row], measured: String, met: Option<bool>) -> Verdict {
    let errors: u64 = rows.iter().map(|r| r.errors()).sum();
    if errors == 0 {
        return Verdict {
            target: target.to_owned(),
            measured,
            met,
        };
    }
    Verdict {
        target: target.to_owned(),
        measured: format!("{measured} ({errors} errors in these rows)"),
        met: Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(stored: Option<u64>, served: u64, sent: u64, error: Option<&str>) -> Records {
        Records {
            stored,
            served,
            sent,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn records_match_only_when_counted_and_equal() {
        let same = records(Some(7), 7, 7, None);
        assert!(same.matched());
        assert_eq!(same.line(), "records: 7 stored for 7 served");
        let fewer = records(Some(6), 7, 7, None);
        assert!(!fewer.matched());
        assert_eq!(fewer.line(), "records: 6 stored for 7 served — MISMATCH");
        let refused = records(Some(9), 7, 9, None);
        assert!(!refused.matched());
        assert_eq!(
            refused.line(),
            "records: 9 stored for 7 served (of 9 sent) — MISMATCH"
        );
        let uncounted = records(None, 7, 7, Some("no file"));
        assert!(!uncounted.matched());
        assert_eq!(
            uncounted.line(),
            "records: could not be counted (no file); 7 served"
        );
    }
}
