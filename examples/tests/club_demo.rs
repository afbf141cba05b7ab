//! `club demo --once`, the README's first command: a whole club in one process, to its end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use inference_club_coordinator::testing::Store;

/// Runs `club demo --once` on `database` to its end; gives its output.
fn run_demo(database: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_club"))
        .args([
            "demo",
            "--once",
            "--listen",
            "127.0.0.1:0",
            "--database",
            database,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("club demo --once did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_a_chat_and_prints_its_record() {
    let dir = std::env::temp_dir().join(format!("club-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite:{}", dir.join("demo.db").display());
    let stdout = tokio::task::spawn_blocking({
        let database = database.clone();
        move || run_demo(&database)
    })
    .await
    .unwrap();
    assert!(
        stdout.contains("listening on http://127.0.0.1:"),
        "{stdout}"
    );
    // Its output is for a pipe here: no terminal styles.
    assert!(!stdout.contains('\x1b'), "{stdout}");
    assert!(stdout.contains("node: serving"), "{stdout}");
    assert!(stdout.contains("status          succeeded"), "{stdout}");
    assert!(stdout.contains("visibility      public"), "{stdout}");
    assert!(stdout.contains("public feed, newest entry:"), "{stdout}");

    // Again on the same database: the key of the first run is revoked, one key stays live.
    let again = tokio::task::spawn_blocking({
        let database = database.clone();
        move || run_demo(&database)
    })
    .await
    .unwrap();
    assert!(again.contains("status          succeeded"), "{again}");
    let store = Store::connect(&database).await.unwrap();
    let demo = store.user_by_handle("demo").await.unwrap().unwrap();
    assert_eq!(store.list_keys(demo.id).await.unwrap().len(), 1);
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
