//! Chats, the list of requests, deletion and the public feed through `club`.

use std::sync::Arc;

use inference_club_coordinator::testing::{HANDLE, NODE, TestClub};
use inference_club_provider::backends::Echo;
use serde_json::Value;

use crate::{config_dir, run_club};

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
