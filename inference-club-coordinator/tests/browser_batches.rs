//! The dashboard's batches in a real browser (Debian's Chromium through chromedriver, as in
//! `browser.rs`): a member who made batches through the API with their key sees them, signed in
//! by their session, with their progress as a `<progress>` bar, and downloads their output and
//! error files; another member sees none of them and cannot download them.
//!
//! Skips loudly without chromedriver (`scripts/browser.sh` installs it; CI does).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod browser_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use browser_support::{Browser, Driver};
use inference_club_coordinator::testing::{HANDLE, TestClub, TestService};
use inference_club_core::provider::Provider;
use inference_club_provider::backends::Echo;
use serde_json::{Value, json};

fn chat_file(lines: usize, bad: bool) -> String {
    let mut lines: Vec<String> = (0..lines)
        .map(|i| {
            json!({"custom_id": format!("q{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "echo", "messages": [{"role": "user", "content": format!("hi {i}")}]}})
            .to_string()
        })
        .collect();
    if bad {
        lines.push("not json".into());
    }
    lines.join("\n")
}

/// Uploads `jsonl` and makes a chat batch of it with the member's key; answers the batch id.
async fn batch_of(club: &TestClub, jsonl: String) -> String {
    let http = reqwest::Client::new();
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part(
            "file",
            reqwest::multipart::Part::bytes(jsonl.into_bytes()).file_name("input.jsonl"),
        );
    let file: Value = http
        .post(format!("{}/v1/files", club.url))
        .bearer_auth(&club.key)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let batch: Value = http
        .post(format!("{}/v1/batches", club.url))
        .bearer_auth(&club.key)
        .json(
            &json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                      "completion_window": "24h"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    batch["id"].as_str().unwrap().to_owned()
}

async fn batch_json(club: &TestClub, id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/v1/batches/{id}", club.url))
        .bearer_auth(&club.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Signs `browser` in as `handle` with a session cookie of theirs; answers the cookie's value.
async fn sign_in(club: &TestClub, browser: &Browser, handle: &str) -> String {
    let user = club.store.user_by_handle(handle).await.unwrap().unwrap();
    let (_, token) = club.store.create_session(user.id).await.unwrap();
    browser.open(&format!("{}/terms", club.url)).await;
    browser
        .client
        .execute(
            "document.cookie = 'club_session=' + arguments[0] + '; path=/; SameSite=Lax';",
            vec![json!(token)],
        )
        .await
        .unwrap();
    token
}

/// The `<progress>` of `id`'s row: its value and max.
async fn progress_of(browser: &Browser, id: &str) -> (u64, u64) {
    let bar = browser
        .find(&format!("tr[data-batch='{id}'] progress"))
        .await;
    let read = |name: &'static str| {
        let bar = bar.clone();
        async move {
            bar.attr(name)
                .await
                .unwrap()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        }
    };
    (read("value").await, read("max").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_sees_their_batches_and_downloads_their_files() {
    inference_club_coordinator::testing::install_crypto();
    let Some(mut driver) = Driver::start().await else {
        return;
    };
    // Slow answers, so that a batch is still running when the page is opened.
    let echo: Arc<dyn Provider> = Arc::new(
        Echo::new()
            .models(["echo"])
            .pace(Duration::from_millis(100)),
    );
    let club = TestClub::start_services(vec![TestService::new("echo", echo)]).await;
    let browser = driver.browser().await;
    let session = sign_in(&club, &browser, HANDLE).await;

    // A small batch run to its end (one malformed line), then a long one left running.
    let done = batch_of(&club, chat_file(3, true)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let finished = loop {
        let batch = batch_json(&club, &done).await;
        if batch["status"] == "completed" {
            break batch;
        }
        assert!(Instant::now() < deadline, "stuck: {batch}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let running = batch_of(&club, chat_file(400, false)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while batch_json(&club, &running).await["request_counts"]["completed"] == 0 {
        assert!(Instant::now() < deadline, "the long batch did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    browser.open(&format!("{}/dashboard", club.url)).await;
    browser.click("nav.tabs a[href='/dashboard/batches']").await;
    browser.wait_for_path("/dashboard/batches").await;
    assert_eq!(
        browser
            .find("nav.tabs a[aria-current='page']")
            .await
            .text()
            .await
            .unwrap(),
        "Batches"
    );
    let text = browser.page_text().await;
    assert!(text.contains("Your batches"), "{text}");
    assert!(text.contains(&done) && text.contains(&running), "{text}");
    assert!(text.contains("/v1/chat/completions"), "{text}");

    // Newest first: the running batch, its bar part-filled and its count of the live lines.
    let first = browser.find("table.batches tbody tr").await;
    assert_eq!(
        first.attr("data-batch").await.unwrap().as_deref(),
        Some(running.as_str())
    );
    let row = browser.text(&format!("tr[data-batch='{running}']")).await;
    assert!(row.contains("in_progress"), "{row}");
    let (value, max) = progress_of(&browser, &running).await;
    assert_eq!(max, 400);
    assert!(value > 0 && value < 400, "{value} of {max}");
    assert!(row.contains("when it ends"), "{row}");

    // The finished one: full, with its failure, and its two files to download.
    let row = browser.text(&format!("tr[data-batch='{done}']")).await;
    assert!(row.contains("completed"), "{row}");
    assert!(row.contains("4 / 4") && row.contains("(1 failed)"), "{row}");
    assert_eq!(progress_of(&browser, &done).await, (4, 4));
    let output_id = finished["output_file_id"].as_str().unwrap();
    let error_id = finished["error_file_id"].as_str().unwrap();
    let link = browser
        .find(&format!(
            "tr[data-batch='{done}'] a[href='/dashboard/files/{output_id}']"
        ))
        .await;
    assert_eq!(link.text().await.unwrap(), "output");
    assert!(
        browser
            .has(&format!(
                "tr[data-batch='{done}'] a[href='/dashboard/files/{error_id}']"
            ))
            .await
    );
    // The browser's session downloads it (fetched by the page, as the link would).
    let fetched = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             fetch(arguments[0]).then(r => r.text().then(t => done([r.status, t]))) \
                                .catch(e => done([0, String(e)]));",
            vec![json!(format!("/dashboard/files/{output_id}"))],
        )
        .await
        .unwrap();
    assert_eq!(fetched[0], 200, "{fetched}");
    let lines: Vec<Value> = fetched[1]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["response"]["status_code"], 200);

    // Over HTTP: the download's headers; the error file; nothing without the session, or for
    // another member.
    let http = reqwest::Client::new();
    let get = |path: String, token: Option<String>| {
        let mut request = http.get(format!("{}{path}", club.url));
        if let Some(token) = token {
            request = request.header("cookie", format!("club_session={token}"));
        }
        request.send()
    };
    let response = get(
        format!("/dashboard/files/{error_id}"),
        Some(session.clone()),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/jsonl");
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(response.headers()["cache-control"], "no-store");
    let errors = response.text().await.unwrap();
    assert!(errors.contains("invalid_json"), "{errors}");
    let anonymous = get(format!("/dashboard/files/{output_id}"), None)
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    club.add_member("grace").await;
    let grace = club.store.user_by_handle("grace").await.unwrap().unwrap();
    let (_, grace_token) = club.store.create_session(grace.id).await.unwrap();
    let theirs = get(
        format!("/dashboard/files/{output_id}"),
        Some(grace_token.clone()),
    )
    .await
    .unwrap();
    assert_eq!(theirs.status(), 404);
    let page = get("/dashboard/batches".into(), Some(grace_token))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("No batches yet."), "{page}");
    assert!(!page.contains(&done) && !page.contains(&running));

    // Stop the long batch rather than wait for it.
    http.post(format!("{}/v1/batches/{running}/cancel", club.url))
        .bearer_auth(&club.key)
        .send()
        .await
        .unwrap();
    browser.close().await;
    driver.stop().await;
}
