//! The `club` CLI driven as a user would: the built binary against a real coordinator on
//! 127.0.0.1 (in this process), with its own config directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod batch;
mod endpoints;
mod login;
mod records;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `club ARGS` with `stdin`, the config directory `config`, and no `CLUB_*` from the
/// environment of the test.
async fn run_club(config: &Path, args: &[&str], stdin: &str) -> Run {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_club"))
        .args(args)
        .env_remove("CLUB_URL")
        .env_remove("CLUB_API_KEY")
        .env("CLUB_CONFIG_DIR", config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("club finished within 60 s")
        .unwrap();
    let run = Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "club {args:?} panicked: {}",
        run.stderr
    );
    run
}

fn config_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "club-cli-{name}-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ))
}
