//! The club on the web, in a real browser: Debian's Chromium (headless, `--no-sandbox`, a fresh
//! `--user-data-dir`, background networking off) driven through chromedriver, against a real
//! coordinator on 127.0.0.1 with a SQLite store, a fake GitHub and an Echo node.
//!
//! One walk through what a member does, in order: browse the feed anonymously; open a public
//! request; sign in with GitHub; accept the terms; chat in the playground and see the answer
//! stream; find the request in the dashboard; make it private and see it vanish from the feed
//! in a second, anonymous browser; delete it; create a key and revoke it; delete the account.
//! Each page is screenshotted: into `docs/screenshots/` (linked from `docs/web.md`) when
//! `CLUB_UPDATE_SCREENSHOTS=1`, otherwise into a temporary directory, so that a test run leaves
//! the checkout as it was.
//!
//! Skips loudly without chromedriver (`scripts/browser.sh` installs it; CI does).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod browser_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser_support::Driver;
use inference_club_coordinator::GitHubConfig;
use inference_club_coordinator::testing::fake_github::{CLIENT_ID, CLIENT_SECRET, FakeGitHub};
use inference_club_coordinator::testing::{Scope, Scopes, Store, TestDatabase, TestServer, bind};
use inference_club_core::manifest::{
    Agent, Gpu, GpuVendor, Host, Model as ManifestModel, Service, ServiceManifest,
};
use inference_club_core::record::{RecordId, Status, Visibility};
use inference_club_provider::backends::Echo;
use inference_club_provider::node::{Node, NodeConfig, Offer};
use inference_club_provider::router::{Route, Router};
use serde_json::{Value, json};

/// The GitHub account that signs in.
const ADA_GITHUB_ID: i64 = 4242;

struct Club {
    url: String,
    store: Store,
    github: FakeGitHub,
    _server: TestServer,
    _database: TestDatabase,
}

fn screenshots() -> PathBuf {
    let dir = if std::env::var_os("CLUB_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots")
    } else {
        std::env::temp_dir().join(format!("club-screenshots-{}", std::process::id()))
    };
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("screenshots go to {}", dir.display());
    dir
}

fn echo_manifest() -> ServiceManifest {
    ServiceManifest {
        schema_version: 1,
        agent: Agent {
            name: Some("basement-rig".into()),
            ..Agent::default()
        },
        hosts: vec![Host {
            id: "rig".into(),
            gpu: Some(Gpu {
                vendor: Some(GpuVendor::Nvidia),
                model: Some("RTX 4090".into()),
                vram_gb: Some(24.0),
                count: Some(2),
            }),
            services: vec![Service {
                name: "echo".into(),
                features: vec!["test-engine".into()],
                models: vec![ManifestModel {
                    id: Some("echo".into()),
                    name: Some("Echo (repeats your prompt)".into()),
                    context_length: Some(8192),
                    ..ManifestModel::default()
                }],
                ..Service::default()
            }],
            ..Host::default()
        }],
    }
}

impl Club {
    /// A coordinator with sign-in against a fake GitHub, and a node of member `grace` serving
    /// the Echo engine (paced, with reasoning, so that streaming shows).
    async fn start() -> Self {
        let github = FakeGitHub::start().await;
        github.add_user(ADA_GITHUB_ID, "ada", Some("ada@example.com"));
        let database = TestDatabase::sqlite();
        let (listener, url) = bind().await;
        let base = url::Url::parse(&github.url).unwrap();
        let public_url = url::Url::parse(&url).unwrap();
        let server = TestServer::start_at((listener, url.clone()), &database.url, |builder| {
            builder
                .github(
                    GitHubConfig::new(CLIENT_ID, CLIENT_SECRET)
                        .with_github_url(&base)
                        .with_api_url(base.clone()),
                )
                .public_url(public_url)
                .heartbeat_interval(Duration::from_secs(2))
        })
        .await;
        let store = server.store.clone();

        let grace = store.create_user("grace", None).await.unwrap();
        let (_, node_key) = store
            .create_key(
                grace.id,
                "rig",
                Scopes::only(Scope::Provider).with(Scope::Inference),
            )
            .await
            .unwrap();
        let echo = Echo::new()
            .pace(Duration::from_millis(60))
            .with_reasoning(true);
        let router = Router::builder()
            .route(Route::new("echo", Arc::new(echo)).model("echo"))
            .build();
        let offer = Offer::new(router, serde_json::to_value(echo_manifest()).unwrap());
        let node = Node::from_offer(NodeConfig::new(url.clone(), node_key.clone()), offer).unwrap();
        tokio::spawn(node.run());
        let club = Self {
            url,
            store,
            github,
            _server: server,
            _database: database,
        };
        club.wait_for_echo(&node_key).await;
        club
    }

    async fn wait_for_echo(&self, key: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let models: Value = reqwest::Client::new()
                .get(format!("{}/v1/models", self.url))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if models["data"]
                .as_array()
                .is_some_and(|d| d.iter().any(|m| m["id"] == "echo"))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Echo node did not come online"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A whole chat by `key`; returns the record id.
    async fn chat(&self, key: &str, prompt: &str) -> RecordId {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", self.url))
            .bearer_auth(key)
            .json(&json!({"model": "echo", "messages": [{"role": "user", "content": prompt}]}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let id = response.headers()["x-club-request-id"].to_str().unwrap();
        RecordId::parse(id).unwrap()
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    async fn visibility(&self, id: RecordId) -> Option<Visibility> {
        self.store
            .record(id)
            .await
            .unwrap()
            .map(|r| r.record.visibility)
    }
}

/// Polls `condition` every 50 ms for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_uses_the_club_in_a_browser() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(mut driver) = Driver::start().await else {
        return;
    };
    let club = Club::start().await;
    let shots = screenshots();

    // Someone else's public request, made with a key, is in the feed.
    let grace = club.store.user_by_handle("grace").await.unwrap().unwrap();
    let (_, grace_key) = club
        .store
        .create_key(grace.id, "laptop", Scopes::only(Scope::Inference))
        .await
        .unwrap();
    let public_id = club
        .chat(&grace_key, "Which planet has the most moons?")
        .await;

    // 1. The feed, anonymously: the banner, the request, its model and node.
    let anon = driver.browser().await;
    anon.open(&club.at("/")).await;
    let text = anon.page_text().await;
    assert!(
        text.contains("Requests are public by default"),
        "the banner: {text}"
    );
    assert!(text.contains("Which planet has the most moons?"), "{text}");
    assert!(text.contains("grace/basement-rig"), "the node: {text}");
    assert!(anon.has("a[href='/auth/github?next=%2F']").await);
    anon.screenshot(&shots, "feed").await;

    // 2. Open the public request: prompt, answer, folded reasoning, metadata.
    anon.click(&format!("a[href='/r/{public_id}']")).await;
    anon.wait_for_path(&format!("/r/{public_id}")).await;
    assert_eq!(
        anon.text("h2#prompt + ol .text").await,
        "Which planet has the most moons?"
    );
    let answer = anon.text("section[aria-labelledby=answer]").await;
    assert!(
        answer.contains("echo: Which planet has the most moons?"),
        "{answer}"
    );
    let reasoning = anon.find("details.reasoning").await;
    assert_eq!(
        reasoning.attr("open").await.unwrap(),
        None,
        "reasoning is folded"
    );
    assert!(anon.page_text().await.contains("as the engine reported"));
    anon.screenshot(&shots, "request").await;

    // The other public pages, while anonymous.
    anon.open(&club.at("/providers")).await;
    let text = anon.page_text().await;
    assert!(text.contains("1 of 1 nodes are online"), "{text}");
    assert!(text.contains("2 × nvidia RTX 4090, 24 GB"), "{text}");
    anon.screenshot(&shots, "providers").await;
    anon.open(&club.at("/models/echo")).await;
    let text = anon.page_text().await;
    assert!(text.contains("1 online node serves it"), "{text}");
    assert!(text.contains("grace/basement-rig"), "{text}");
    anon.screenshot(&shots, "model").await;
    anon.open(&club.at("/u/grace")).await;
    let text = anon.page_text().await;
    assert!(
        text.contains("@grace") && text.contains("basement-rig"),
        "{text}"
    );
    assert!(text.contains("Which planet has the most moons?"), "{text}");
    anon.screenshot(&shots, "profile").await;
    anon.open(&club.at("/terms")).await;
    assert!(anon.text("h1").await.contains("Terms and privacy"));
    anon.screenshot(&shots, "terms").await;
    anon.open(&club.at("/r/00000000-0000-7000-8000-000000000000"))
        .await;
    assert_eq!(anon.text("h1").await, "Not found");
    anon.screenshot(&shots, "not-found").await;

    // 3. Sign in from the playground, 4. accept the terms.
    let ada = driver.browser().await;
    ada.open(&club.at("/playground")).await;
    assert_eq!(ada.text("h1").await, "Sign in to continue");
    club.github.sign_in_as(ADA_GITHUB_ID);
    ada.click("main a.button").await;
    ada.wait_for_path("/auth/confirm").await;
    assert!(ada.text("h1").await.contains("Join Inference Club as ada"));
    ada.screenshot(&shots, "sign-in-confirm").await;
    ada.click("#age").await;
    ada.click("#terms").await;
    ada.click("form[action='/auth/confirm'] button[type=submit]")
        .await;
    ada.wait_for_path("/playground").await;
    let member = club.store.user_by_handle("ada").await.unwrap().unwrap();
    assert!(member.terms_accepted_at.is_some());

    // 5. Chat in the playground; the answer streams in.
    assert_eq!(ada.text("header .who a").await, "@ada");
    ada.find("#model option[value=echo]").await;
    let prompt = "Tell me about the rings of Saturn and their many moons please";
    ada.fill("#prompt", prompt).await;
    ada.click("#send").await;
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ada.has("a.record-link").await {
        assert!(Instant::now() < deadline, "the answer did not finish");
        let partial = ada
            .client
            .execute(
                "const a = document.querySelector('#conversation .answer'); return a ? a.textContent : '';",
                vec![],
            )
            .await
            .unwrap();
        let partial = partial.as_str().unwrap_or_default().to_owned();
        if !partial.is_empty() && seen.last() != Some(&partial) {
            seen.push(partial);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let full = format!("echo: {prompt}");
    assert_eq!(ada.text("#conversation .answer").await, full);
    let partials: Vec<&String> = seen.iter().filter(|s| **s != full).collect();
    assert!(
        partials.len() >= 2 && partials.iter().all(|p| full.starts_with(p.as_str())),
        "the answer arrived in pieces: {seen:?}"
    );
    assert_eq!(ada.text("#chat-status").await, "Done.");
    ada.screenshot(&shots, "playground").await;
    let href = ada
        .find("a.record-link")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let id = RecordId::parse(href.trim_start_matches("/r/")).unwrap();
    eventually("the record is final", || async {
        club.store
            .record(id)
            .await
            .unwrap()
            .is_some_and(|r| r.record.status() == Status::Succeeded)
    })
    .await;

    // 6. The dashboard shows it.
    ada.open(&club.at("/dashboard")).await;
    assert_eq!(ada.text("h1").await, "Welcome, ada");
    ada.screenshot(&shots, "dashboard").await;
    ada.open(&club.at("/dashboard/requests")).await;
    let row = format!("a[href='/r/{id}']");
    assert!(ada.text(&row).await.contains("Tell me about the rings"));
    ada.screenshot(&shots, "dashboard-requests").await;

    // 7. The second, anonymous browser sees it in the feed; made private, it vanishes.
    anon.open(&club.at("/")).await;
    assert!(anon.has(&row).await, "public at first");
    let select = ada.find(&format!("#vis-{id}")).await;
    select.select_by_value("private").await.unwrap();
    ada.click(&format!(
        "form[action='/dashboard/requests/{id}/visibility'] button"
    ))
    .await;
    eventually("the record is private", || async {
        club.visibility(id).await == Some(Visibility::Private)
    })
    .await;
    ada.wait_for_path("/dashboard/requests").await;
    assert_eq!(
        ada.find(&format!("#vis-{id} option[selected]"))
            .await
            .attr("value")
            .await
            .unwrap()
            .as_deref(),
        Some("private")
    );
    anon.open(&club.at("/")).await;
    assert!(!anon.has(&row).await, "gone from the anonymous feed");
    assert!(anon.has(&format!("a[href='/r/{public_id}']")).await);
    anon.open(&club.at(&format!("/r/{id}"))).await;
    assert_eq!(anon.text("h1").await, "Not found");
    // Its owner still reads it.
    ada.open(&club.at(&format!("/r/{id}"))).await;
    assert!(ada.page_text().await.contains("Private: only you"));

    // 8. Delete it, after confirming.
    ada.open(&club.at("/dashboard/requests")).await;
    ada.click(&format!("a[href='/dashboard/requests/{id}/delete']"))
        .await;
    ada.wait_for_path(&format!("/dashboard/requests/{id}/delete"))
        .await;
    assert_eq!(ada.text("h1").await, "Delete this request?");
    ada.screenshot(&shots, "dashboard-delete").await;
    ada.click("main form button.danger").await;
    ada.wait_for_path("/dashboard/requests?done=deleted").await;
    assert!(ada.text(".notice").await.contains("deleted"));
    assert!(club.store.record(id).await.unwrap().is_none());
    assert!(!ada.has(&row).await);

    // 9. Create a key (shown once) and revoke it.
    ada.open(&club.at("/dashboard/keys")).await;
    ada.fill("#key-name", "laptop").await;
    ada.click("form[action='/dashboard/keys'] button[type=submit]")
        .await;
    let secret = ada.text("#secret").await;
    assert!(secret.starts_with("icl_"), "{secret}");
    let models = reqwest::Client::new()
        .get(club.at("/v1/models"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200, "the new key works");
    ada.screenshot(&shots, "dashboard-keys").await;
    ada.open(&club.at("/dashboard/keys")).await;
    assert!(
        !ada.page_text().await.contains(&secret),
        "the secret is shown once"
    );
    ada.click("button[aria-label='Revoke laptop']").await;
    ada.wait_for_path("/dashboard/keys?done=revoked").await;
    let models = reqwest::Client::new()
        .get(club.at("/v1/models"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401, "the revoked key is refused");

    // The other dashboard pages.
    ada.open(&club.at("/dashboard/settings")).await;
    ada.find("#default_visibility")
        .await
        .select_by_value("unlisted")
        .await
        .unwrap();
    ada.click("form[action='/dashboard/settings'] button").await;
    ada.wait_for_path("/dashboard/settings?done=saved").await;
    let member = club.store.user_by_handle("ada").await.unwrap().unwrap();
    assert_eq!(member.default_visibility, Visibility::Unlisted);
    ada.screenshot(&shots, "dashboard-settings").await;
    ada.open(&club.at("/dashboard/nodes")).await;
    assert!(ada.page_text().await.contains("You operate no node"));
    ada.screenshot(&shots, "dashboard-nodes").await;

    // 10. Delete the account.
    ada.open(&club.at("/dashboard/account")).await;
    ada.screenshot(&shots, "dashboard-account").await;
    ada.fill("#confirm", "ada").await;
    ada.click("form[action='/dashboard/account/delete'] button")
        .await;
    eventually("the account is gone", || async {
        club.store.user_by_handle("ada").await.unwrap().is_none()
    })
    .await;
    assert_eq!(ada.text("h1").await, "Your account is deleted");
    ada.screenshot(&shots, "account-deleted").await;
    ada.open(&club.at("/dashboard")).await;
    assert_eq!(ada.text("h1").await, "Sign in to continue");

    ada.close().await;
    anon.close().await;
    driver.stop().await;
}

/// A page as a plain HTTP client sees it: status, content type, body.
async fn page(url: &str, session: Option<&str>) -> (u16, String, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = http.get(url);
    if let Some(token) = session {
        request = request.header("cookie", format!("club_session={token}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, response.text().await.unwrap())
}

/// Posts a form with the session cookie.
async fn post_form(url: &str, session: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(url)
        .header("cookie", format!("club_session={session}"))
        .form(fields)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Without a browser: the pages show only what the API would, unknown pages are HTML 404s
/// (the API keeps its JSON), every page has its headers, and a form without the session's CSRF
/// token, or from someone else, changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_only_what_the_api_would_and_forms_need_the_csrf_token() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let club = Club::start().await;
    let grace = club.store.user_by_handle("grace").await.unwrap().unwrap();
    let (_, key) = club
        .store
        .create_key(grace.id, "laptop", Scopes::only(Scope::Inference))
        .await
        .unwrap();
    let public = club.chat(&key, "a public question").await;
    let unlisted = club.chat(&key, "an unlisted question").await;
    let private = club.chat(&key, "a private question").await;
    for (id, visibility) in [
        (unlisted, Visibility::Unlisted),
        (private, Visibility::Private),
    ] {
        assert!(
            club.store
                .set_visibility(id, grace.id, visibility)
                .await
                .unwrap()
        );
    }
    let (grace_session, grace_token) = club.store.create_session(grace.id).await.unwrap();
    let stranger = club.store.create_user("mallory", None).await.unwrap();
    let (stranger_session, stranger_token) = club.store.create_session(stranger.id).await.unwrap();

    // The feed and the profile: public only, for anyone (even the owner).
    for session in [None, Some(grace_token.as_str())] {
        for path in ["/", "/u/grace", "/models/echo"] {
            let (status, kind, html) = page(&club.at(path), session).await;
            assert_eq!(status, 200, "{path}");
            assert!(kind.starts_with("text/html"), "{kind}");
            assert!(html.contains("a public question"), "{path}");
            assert!(!html.contains("an unlisted question"), "{path}");
            assert!(!html.contains("a private question"), "{path}");
            assert!(
                html.contains("Requests are public by default"),
                "the banner"
            );
        }
    }
    // A request's page: public and unlisted for anyone; private for its owner only.
    for (id, anyone) in [(public, true), (unlisted, true), (private, false)] {
        let url = club.at(&format!("/r/{id}"));
        for session in [None, Some(stranger_token.as_str())] {
            let (status, kind, html) = page(&url, session).await;
            assert_eq!(status, if anyone { 200 } else { 404 }, "{id}");
            assert!(kind.starts_with("text/html"));
            if !anyone {
                assert!(!html.contains("a private question"));
            }
        }
        let (status, _, _) = page(&url, Some(&grace_token)).await;
        assert_eq!(status, 200);
    }
    let (status, _, html) = page(&club.at("/r/not-an-id"), None).await;
    assert_eq!(status, 404);
    assert!(html.contains("Not found"));

    // Unknown pages are HTML; unknown API routes keep the JSON envelope.
    let (status, kind, _) = page(&club.at("/no/such/page"), None).await;
    assert_eq!((status, kind.starts_with("text/html")), (404, true));
    let (status, kind, body) = page(&club.at("/api/v1/no-such-route"), None).await;
    assert_eq!(status, 404);
    assert!(kind.starts_with("application/json"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "unknown_route");

    // Headers: a strict CSP (own assets only), Server-Timing; personal pages are not cached.
    let response = reqwest::get(club.at("/")).await.unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(
        response.headers()["server-timing"]
            .to_str()
            .unwrap()
            .starts_with("app;dur=")
    );
    let css = reqwest::get(club.at("/static/club.css")).await.unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let http = reqwest::Client::new();
    let dashboard = http
        .get(club.at("/dashboard"))
        .header("cookie", format!("club_session={grace_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), 200);
    assert_eq!(dashboard.headers()["cache-control"], "no-store");
    let (status, _, html) = page(&club.at("/dashboard"), None).await;
    assert_eq!(status, 401);
    assert!(html.contains("/auth/github?next=%2Fdashboard"));

    // Forms: without the CSRF token, with another session's, or from a stranger: nothing
    // changes.
    let delete = club.at(&format!("/dashboard/requests/{public}/delete"));
    let (status, _) = post_form(&delete, &grace_token, &[]).await;
    assert_eq!(status, 403, "no token");
    let (status, _) = post_form(
        &delete,
        &grace_token,
        &[("csrf_token", &stranger_session.csrf_token)],
    )
    .await;
    assert_eq!(status, 403, "another session's token");
    let (status, _) = post_form(
        &delete,
        &stranger_token,
        &[("csrf_token", &stranger_session.csrf_token)],
    )
    .await;
    assert_eq!(status, 404, "not theirs");
    let visibility = club.at(&format!("/dashboard/requests/{public}/visibility"));
    let (status, _) = post_form(
        &visibility,
        &stranger_token,
        &[
            ("csrf_token", stranger_session.csrf_token.as_str()),
            ("visibility", "private"),
        ],
    )
    .await;
    assert_eq!(status, 404, "not theirs");
    assert_eq!(club.visibility(public).await, Some(Visibility::Public));
    let (status, _) = post_form(
        &visibility,
        &grace_token,
        &[
            ("csrf_token", grace_session.csrf_token.as_str()),
            ("visibility", "secret"),
        ],
    )
    .await;
    assert_eq!(status, 400, "not a visibility");
    assert_eq!(club.visibility(public).await, Some(Visibility::Public));
    // A form larger than the limit is refused.
    let big = "x".repeat(8 * 1024);
    let (status, _) = post_form(
        &club.at("/dashboard/keys"),
        &grace_token,
        &[
            ("csrf_token", grace_session.csrf_token.as_str()),
            ("name", &big),
        ],
    )
    .await;
    assert_eq!(status, 413);
    let keys = club.store.list_keys(grace.id).await.unwrap();
    assert_eq!(keys.len(), 2, "the node's key and the laptop's, no new one");
    // The owner, with the token, deletes.
    let (status, _) = post_form(
        &delete,
        &grace_token,
        &[("csrf_token", &grace_session.csrf_token)],
    )
    .await;
    assert_eq!(status, 303);
    assert!(club.store.record(public).await.unwrap().is_none());
    // The kill switch on the nodes page: nobody else's to pull; grace's, in force at once,
    // and back.
    let switch = club.at("/dashboard/nodes/accepting");
    let (grace_csrf, stranger_csrf) = (
        grace_session.csrf_token.as_str(),
        stranger_session.csrf_token.as_str(),
    );
    let node = ("provider", "basement-rig");
    let (status, _) = post_form(&switch, &grace_token, &[node, ("accepting", "no")]).await;
    assert_eq!(status, 403, "no token");
    let (status, _) = post_form(
        &switch,
        &stranger_token,
        &[("csrf_token", stranger_csrf), node, ("accepting", "no")],
    )
    .await;
    assert_eq!(status, 404, "not theirs");
    let (status, _) = post_form(
        &switch,
        &grace_token,
        &[("csrf_token", grace_csrf), node, ("accepting", "maybe")],
    )
    .await;
    assert_eq!(status, 400, "not yes or no");
    club.chat(&key, "still served").await;

    let (status, _) = post_form(
        &switch,
        &grace_token,
        &[("csrf_token", grace_csrf), node, ("accepting", "no")],
    )
    .await;
    assert_eq!(status, 303);
    let refused = reqwest::Client::new()
        .post(club.at("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert!(
        !refused.status().is_success(),
        "a stopped node was sent a request"
    );
    let (_, _, html) = page(
        &club.at("/dashboard/nodes?done=stopped"),
        Some(&grace_token),
    )
    .await;
    assert!(
        html.contains("The node stopped accepting requests"),
        "{html}"
    );
    assert!(html.contains("Accept requests again"), "{html}");
    let (status, _) = post_form(
        &switch,
        &grace_token,
        &[("csrf_token", grace_csrf), node, ("accepting", "yes")],
    )
    .await;
    assert_eq!(status, 303);
    club.chat(&key, "served again").await;

    // Account deletion needs the handle typed.
    let (status, _) = post_form(
        &club.at("/dashboard/account/delete"),
        &grace_token,
        &[
            ("csrf_token", grace_session.csrf_token.as_str()),
            ("confirm", "someone"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(club.store.user_by_handle("grace").await.unwrap().is_some());
}
