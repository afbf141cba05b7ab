//! The `club` CLI driven as a user would: the built binary against a real coordinator on
//! 127.0.0.1 (in this process), with its own config directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use inference_club_coordinator::testing::proxy::{Proxy, device_login_hook};
use inference_club_coordinator::testing::{HANDLE, NODE, TestClub, TestDatabase};
use inference_club_provider::backends::Echo;
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

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_list_delete_and_the_feed_as_a_user_would() {
    let test_club =
        TestClub::start(vec![("echo", Arc::new(Echo::new().with_reasoning(true)))]).await;
    let config = config_dir("chat");
    let (url, key) = (test_club.url.as_str(), test_club.key.as_str());
    let with = |args: &[&str]| {
        let mut all = vec!["--url", url, "--api-key", key];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>, stdin: &'static str| {
        let config = config.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_club(&config, &args, stdin).await
        }
    };

    // chat streams the answer to stdout; the reasoning (stdout is not a terminal) and the
    // record go to stderr, and the first prompt brings the public-by-default notice.
    let chat = run(with(&["chat", "-m", "echo", "hello", "club"]), "").await;
    assert!(chat.ok, "{}", chat.stderr);
    assert_eq!(chat.stdout, "echo: hello club\n");
    assert!(
        chat.stderr.contains("The user said 2 words."),
        "{}",
        chat.stderr
    );
    assert!(chat.stderr.contains("public by default"), "{}", chat.stderr);
    let id = chat
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("record: "))
        .and_then(|l| l.split_whitespace().next())
        .expect("the record id is printed")
        .to_owned();

    // The notice comes once; the prompt may come from stdin; reasoning can be hidden.
    let second = run(
        with(&["chat", "-m", "echo", "--hide-reasoning"]),
        "from stdin\n",
    )
    .await;
    assert!(second.ok, "{}", second.stderr);
    assert_eq!(second.stdout, "echo: from stdin\n");
    assert!(
        !second.stderr.contains("public by default"),
        "{}",
        second.stderr
    );
    assert!(
        !second.stderr.contains("The user said"),
        "{}",
        second.stderr
    );
    let second_id = second
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("record: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();

    // requests list shows it, for people and as JSON.
    let list = run(with(&["requests", "list"]), "").await;
    assert!(list.ok, "{}", list.stderr);
    assert!(list.stdout.starts_with("ID"), "{}", list.stdout);
    let line = list
        .stdout
        .lines()
        .find(|l| l.contains(&id))
        .expect("listed");
    assert!(line.contains("succeeded") && line.contains("public") && line.contains("hello club"));
    let listed = run(with(&["requests", "list", "--json"]), "").await.json();
    assert_eq!(ids(&listed), vec![second_id.clone(), id.clone()]);
    assert_eq!(listed["data"][1]["response"]["content"], "echo: hello club");
    let feed = run(with(&["feed", "--json"]), "").await.json();
    assert!(ids(&feed).contains(&id));

    let show = run(with(&["requests", "show", &id]), "").await;
    assert!(show.ok, "{}", show.stderr);
    assert!(show.stdout.contains("echo: hello club"), "{}", show.stdout);
    assert!(
        show.stdout.contains("status          succeeded"),
        "{}",
        show.stdout
    );
    let shown = run(with(&["requests", "show", &id, "--json"]), "")
        .await
        .json();
    assert_eq!(shown["id"], id.as_str());

    let unlisted = run(
        with(&["requests", "visibility", &second_id, "unlisted"]),
        "",
    )
    .await;
    assert!(
        unlisted.ok && unlisted.stdout.contains("unlisted"),
        "{}",
        unlisted.stderr
    );

    // Deleting asks first; no answer deletes nothing.
    let refused = run(with(&["requests", "delete", &id]), "n\n").await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("nothing was deleted"),
        "{}",
        refused.stderr
    );
    assert!(ids(&run(with(&["feed", "--json"]), "").await.json()).contains(&id));
    let deleted = run(with(&["requests", "delete", &id, "--yes"]), "").await;
    assert!(deleted.ok, "{}", deleted.stderr);
    assert!(deleted.stdout.contains("Deleted"));
    let feed = run(with(&["feed", "--json"]), "").await.json();
    assert!(!ids(&feed).contains(&id), "the feed no longer lists it");
    let feed_text = run(with(&["feed"]), "").await;
    assert!(!feed_text.stdout.contains(&id));
    assert_eq!(
        ids(&run(with(&["requests", "list", "--json"]), "").await.json()),
        vec![second_id.clone()]
    );

    // Errors print the server's message and exit non-zero.
    let gone = run(with(&["requests", "show", &id]), "").await;
    assert!(!gone.ok);
    assert!(
        gone.stderr.contains("No request with id"),
        "{}",
        gone.stderr
    );
    assert!(gone.stderr.contains("request_not_found"), "{}", gone.stderr);
    let no_model = run(with(&["chat", "-m", "nope", "hi"]), "").await;
    assert!(!no_model.ok);
    assert!(
        no_model.stderr.contains("model_not_found"),
        "{}",
        no_model.stderr
    );
    let anonymous = run(
        vec!["--url".into(), url.into(), "requests".into(), "list".into()],
        "",
    )
    .await;
    assert!(!anonymous.ok);
    assert!(
        anonymous.stderr.contains("club login"),
        "{}",
        anonymous.stderr
    );

    // The other listings, and --json on each.
    let models = run(with(&["models", "--json"]), "").await.json();
    assert_eq!(models["data"][0]["id"], "echo");
    assert_eq!(models["data"][0]["context_length"], 4096);
    let models = run(with(&["models"]), "").await;
    assert!(models.stdout.contains("echo") && models.stdout.contains("4096"));
    let providers = run(with(&["providers"]), "").await;
    assert!(
        providers.stdout.contains(&format!("{HANDLE}/{NODE}"))
            && providers.stdout.contains("online"),
        "{}",
        providers.stdout
    );
    let providers = run(with(&["providers", "--json"]), "").await.json();
    assert_eq!(providers["data"][0]["name"], NODE);
    let profile = run(
        with(&["providers", "show", &format!("{HANDLE}/{NODE}")]),
        "",
    )
    .await;
    assert!(
        profile.stdout.contains("served          1 requests"),
        "{}",
        profile.stdout
    );
    let served = run(
        with(&["providers", "served", &format!("{HANDLE}/{NODE}"), "--json"]),
        "",
    )
    .await
    .json();
    assert_eq!(ids(&served), vec![second_id.clone()]);

    let created = run(
        with(&["keys", "create", "laptop", "--scopes", "inference"]),
        "",
    )
    .await;
    assert!(created.ok, "{}", created.stderr);
    let secret = created.stdout.trim().to_owned();
    assert!(secret.starts_with("icl_"), "{}", created.stdout);
    assert!(created.stderr.contains("shown this once"));
    let keys = run(with(&["keys", "list", "--json"]), "").await.json();
    let laptop = keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "laptop")
        .unwrap()
        .clone();
    let keys_text = run(with(&["keys", "list"]), "").await;
    assert!(keys_text.stdout.contains("laptop") && !keys_text.stdout.contains(&secret));
    let revoked = run(
        with(&["keys", "revoke", laptop["id"].as_str().unwrap()]),
        "",
    )
    .await;
    assert!(revoked.ok, "{}", revoked.stderr);

    let account = run(with(&["account"]), "").await;
    assert!(account.stdout.contains(HANDLE), "{}", account.stdout);
    let set = run(
        with(&["account", "set", "--default-visibility", "private"]),
        "",
    )
    .await;
    assert!(set.ok && set.stdout.contains("private"), "{}", set.stderr);
    let account = run(with(&["account", "show", "--json"]), "").await.json();
    assert_eq!(account["default_visibility"], "private");

    // Account deletion asks for the handle.
    let wrong = run(with(&["account", "delete"]), "not-ada\n").await;
    assert!(!wrong.ok && wrong.stderr.contains("nothing was deleted"));
    let gone = run(with(&["account", "delete"]), "ada\n").await;
    assert!(gone.ok, "{}", gone.stderr);
    assert!(
        gone.stdout.contains("Deleted the account ada"),
        "{}",
        gone.stdout
    );
    let after = run(with(&["account"]), "").await;
    assert!(!after.ok);

    let _ = std::fs::remove_dir_all(config);
}

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
}
