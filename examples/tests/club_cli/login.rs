//! `club login`, with a key or through GitHub, and the commands that use its key.

use std::process::Stdio;
use std::sync::Arc;

use inference_club_coordinator::testing::proxy::{Proxy, device_login_hook};
use inference_club_coordinator::testing::{TestClub, TestDatabase};
use inference_club_provider::backends::Echo;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::{config_dir, run_club};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_saves_the_key_and_later_commands_use_it() {
    let test_club = TestClub::start(vec![("echo", Arc::new(Echo::new()))]).await;
    // The device routes are faked in front of the real coordinator.
    let proxy = Proxy::start(&test_club.url, device_login_hook(test_club.key.clone())).await;
    let config = config_dir("login");

    // Declining the terms saves nothing.
    let declined = run_club(&config, &["--url", &proxy.url, "login"], "n\n").await;
    assert!(!declined.ok);
    assert!(declined.stderr.contains("WXYZ-1234"), "{}", declined.stderr);
    assert!(
        declined.stderr.contains("Are you 18 or older"),
        "{}",
        declined.stderr
    );
    assert!(
        declined.stderr.contains("terms were not accepted"),
        "{}",
        declined.stderr
    );
    assert!(!config.join("config.json").exists());

    let proxy = Proxy::start(&test_club.url, device_login_hook(test_club.key.clone())).await;
    let login = run_club(
        &config,
        &["--url", &proxy.url, "login", "--key-name", "laptop"],
        "y\n",
    )
    .await;
    assert!(login.ok, "{}\n{}", login.stdout, login.stderr);
    assert!(login.stderr.contains("http://127.0.0.1/login/device"));
    assert!(
        login.stderr.contains("You have no account yet"),
        "{}",
        login.stderr
    );
    assert!(
        login.stdout.contains("Signed in as ada"),
        "{}",
        login.stdout
    );
    let file = config.join("config.json");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["api_key"], test_club.key.as_str());
    assert_eq!(saved["url"], proxy.url.as_str());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
    }

    // No --url, no --api-key: the saved coordinator and key are used.
    let chat = run_club(&config, &["chat", "-m", "echo", "signed in"], "").await;
    assert!(chat.ok, "{}", chat.stderr);
    assert_eq!(chat.stdout, "echo: signed in\n");
    let list = run_club(&config, &["requests", "list", "--json"], "").await;
    assert!(list.ok, "{}", list.stderr);
    assert_eq!(
        list.json()["data"][0]["response"]["content"],
        "echo: signed in"
    );
    assert!(
        proxy.count("GET", "/api/v1/requests") >= 1,
        "through the saved URL"
    );

    // The saved key is not sent to another coordinator.
    let elsewhere = run_club(&config, &["--url", &test_club.url, "requests", "list"], "").await;
    assert!(!elsewhere.ok);
    assert!(
        elsewhere.stderr.contains("saved sign-in is for"),
        "{}",
        elsewhere.stderr
    );

    let logout = run_club(&config, &["logout"], "").await;
    assert!(
        logout.ok && logout.stdout.contains("Forgot"),
        "{}",
        logout.stdout
    );
    assert!(!file.exists());
    let after = run_club(&config, &["--url", &proxy.url, "requests", "list"], "").await;
    assert!(!after.ok);
    assert!(after.stderr.contains("invalid_api_key"), "{}", after.stderr);

    // A coordinator without sign-in says so clearly.
    let unavailable = run_club(&config, &["--url", &test_club.url, "login"], "").await;
    assert!(!unavailable.ok);
    assert!(
        unavailable.stderr.contains("sign-in is not available"),
        "{}",
        unavailable.stderr
    );

    let _ = std::fs::remove_dir_all(config);
}

/// `club login` end to end: the CLI, a coordinator with GitHub sign-in, and a fake GitHub on
/// 127.0.0.1. A newcomer approves the code at GitHub, confirms the terms at the prompt, and
/// the key the coordinator creates is saved and used by the next command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_github_creates_the_account_and_saves_its_key() {
    use inference_club_coordinator::GitHubConfig;
    use inference_club_coordinator::testing::fake_github::{CLIENT_ID, CLIENT_SECRET, FakeGitHub};
    use tokio::io::{AsyncBufReadExt, BufReader};

    let github = FakeGitHub::start().await;
    github.add_user(4242, "grace", Some("grace@example.org"));
    let base = url::Url::parse(&github.url).unwrap();
    let club = TestClub::start_with(
        TestDatabase::sqlite(),
        vec![("echo", Arc::new(Echo::new()))],
        |builder| {
            builder.github(
                GitHubConfig::new(CLIENT_ID, CLIENT_SECRET)
                    .with_github_url(&base)
                    .with_api_url(base.clone()),
            )
        },
    )
    .await;
    let dir = config_dir("grace");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_club"))
        .args(["--url", &club.url, "login"])
        .env_remove("CLUB_URL")
        .env_remove("CLUB_API_KEY")
        .env("CLUB_CONFIG_DIR", &dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"y\n").await.unwrap();
    drop(input);
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let code = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if let Some((_, code)) = line.split_once("enter the code ") {
                return code.trim().to_owned();
            }
        }
        panic!("club login showed no code: {seen}")
    })
    .await
    .expect("a code within 30 s");
    github.approve(&code, 4242);
    let rest = tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(line)) = stderr.next_line().await {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("club login finished within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = rest.await.unwrap();
    assert!(output.status.success(), "{stdout}\n{seen}{stderr}");
    assert!(stdout.contains("Signed in as grace"), "{stdout}");
    assert!(
        stderr.contains("no club account yet"),
        "the terms were asked for: {stderr}"
    );

    // The account exists with the confirmation kept, and only what GitHub said.
    let grace = club.store.user_by_handle("grace").await.unwrap().unwrap();
    assert_eq!(grace.github_id, Some(4242));
    assert_eq!(grace.email.as_deref(), Some("grace@example.org"));
    assert!(grace.terms_accepted_at.is_some() && grace.age_confirmed_at.is_some());

    // The saved key works: a chat, then the request in grace's own list.
    let chat = run_club(&dir, &["chat", "-m", "echo", "from the cli"], "").await;
    assert!(chat.ok, "{}", chat.stderr);
    assert_eq!(chat.stdout, "echo: from the cli\n");
    let list = run_club(&dir, &["requests", "list", "--json"], "").await;
    assert!(list.ok, "{}", list.stderr);
    assert_eq!(list.json()["data"][0]["consumer"], "grace");
    let _ = std::fs::remove_dir_all(dir);
}
