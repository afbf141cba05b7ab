//! `club-provider run`: an invalid manifest, JSON logs, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{club_provider, dead_port, doctor_manifest, run_bounded, temp_dir, text};

#[test]
fn run_with_an_invalid_manifest_prints_every_problem_and_exits_1() {
    let output = run_bounded(club_provider(&[
        "run",
        "--coordinator",
        "http://127.0.0.1:9",
        "--key",
        "icl_test",
        "--manifest",
        "inference-club-core/tests/fixtures/manifests/several-mistakes.yaml",
    ]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for path in [
        "schema_version: ",
        "agent.listen_port: ",
        "hosts[0].gpu.vendor: ",
        "hosts[0].gpu.vram_gb: ",
        "hosts[0].services[1].engine: ",
        "hosts[0].services[1].url: ",
        "hosts[0].services[1].max_concurrent: ",
        "hosts[0].services[1].name: ",
        "hosts[0].services[1].models[0]: ",
        "hosts[1].id: ",
    ] {
        assert!(stderr.contains(path), "{path:?} missing from:\n{stderr}");
    }
}

/// Reads `child`'s stderr lines on a thread, handing them over as they come.
fn stderr_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Sends SIGTERM to `child` (by its id) and waits up to `within` for it to exit.
#[cfg(unix)]
fn terminate(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("club-provider did not exit within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn run_logs_json_lines_on_request_and_stops_on_sigterm() {
    let dir = temp_dir("run-json");
    let path = dir.join("agent.yaml");
    std::fs::write(
        &path,
        doctor_manifest(
            "vllm",
            &format!("http://127.0.0.1:{}/v1", dead_port()),
            "m",
            dead_port(),
        ),
    )
    .unwrap();
    // The configuration from the environment, the log format from the flag; no coordinator
    // listens, so the node logs its failed attempts and keeps trying.
    let mut command = club_provider(&["run", "--log-format", "json"]);
    command
        .env(
            "CLUB_COORDINATOR",
            format!("http://127.0.0.1:{}", dead_port()),
        )
        .env("CLUB_API_KEY", "icl_test_secret_key")
        .env("CLUB_MANIFEST", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 && Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            seen.push(line);
        }
    }
    let status = terminate(&mut child, Duration::from_secs(5));
    assert!(seen.len() >= 3, "too few log lines: {seen:#?}");
    for line in &seen {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(parsed["level"].is_string(), "{line}");
        assert!(parsed["fields"]["message"].is_string(), "{line}");
        assert!(
            !line.contains("icl_test_secret_key"),
            "the key was logged: {line}"
        );
    }
    assert!(
        seen.iter().any(|l| l.contains("reconnecting in")),
        "{seen:#?}"
    );
    // It never linked: it cannot link, rather than lost a link.
    assert!(
        seen.iter()
            .any(|l| l.contains("cannot link to the coordinator")),
        "{seen:#?}"
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("link to the coordinator lost")),
        "{seen:#?}"
    );
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");
    std::fs::remove_dir_all(dir).unwrap();
}
