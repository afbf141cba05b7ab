//! GitHub sign-in and browser sessions, against a fake GitHub on 127.0.0.1 and a real
//! coordinator on 127.0.0.1 with a SQLite store: the web flow (with the 18+/terms confirmation,
//! a forged `state`, a GitHub rename), sessions (cookie flags, CSRF, sign-out everywhere), the
//! device flow `club login` uses, and account deletion. The store part of deletion also runs
//! on PostgreSQL when `CLUB_TEST_DATABASE_URL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use chrono::Utc;
use inference_club_coordinator::GitHubConfig;
use inference_club_coordinator::testing::fake_github::{CLIENT_ID, CLIENT_SECRET, FakeGitHub};
use inference_club_coordinator::testing::{
    FlowKind, GitHubIdentity, SignInFlow, Store, TestDatabase, TestServer, User, bind, random_token,
};
use inference_club_core::openai::{ChatCompletionRequest, ChatMessage};
use inference_club_core::record::{InferenceRecord, RecordId, Visibility};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{AnyPool, Row};

/// A coordinator with GitHub sign-in against a fake GitHub.
struct Club {
    url: String,
    store: Store,
    github: FakeGitHub,
    database: TestDatabase,
    _server: TestServer,
}

impl Club {
    async fn start() -> Self {
        Self::start_with(None, true).await
    }

    /// `public_url`: `None` for the coordinator's own address. `sign_in`: configure GitHub.
    async fn start_with(public_url: Option<&str>, sign_in: bool) -> Self {
        let github = FakeGitHub::start().await;
        let database = TestDatabase::sqlite();
        let (listener, url) = bind().await;
        let base = url::Url::parse(&github.url).unwrap();
        let public_url = url::Url::parse(public_url.unwrap_or(&url)).unwrap();
        let server = TestServer::start_at((listener, url.clone()), &database.url, |builder| {
            let builder = builder.public_url(public_url);
            if sign_in {
                builder.github(
                    GitHubConfig::new(CLIENT_ID, CLIENT_SECRET)
                        .with_github_url(&base)
                        .with_api_url(base.clone()),
                )
            } else {
                builder
            }
        })
        .await;
        Self {
            url,
            store: server.store.clone(),
            github,
            database,
            _server: server,
        }
    }

    fn browser(&self) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            set_cookies: Vec::new(),
        }
    }

    async fn raw(&self) -> AnyPool {
        self.database.raw().await
    }

    async fn count(&self, sql: &str) -> i64 {
        let raw = self.raw().await;
        let n: i64 = sqlx::query(sql)
            .fetch_one(&raw)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        raw.close().await;
        n
    }

    /// Calls the JSON API with an optional bearer key.
    async fn api(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let answer = self._server.call(method, path, key, body).await;
        let json = serde_json::from_str(&answer.text).unwrap_or(Value::Null);
        (answer.status, json)
    }

    /// A whole web sign-in of GitHub account `id`, confirming if asked. Returns the browser,
    /// signed in.
    async fn sign_in(&self, id: i64) -> Browser {
        let mut browser = self.browser();
        self.github.sign_in_as(id);
        let back = browser.through_github(&self.url, "/auth/github").await;
        let response = browser.get(&back).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        if location(&response) == "/auth/confirm" {
            let token = browser.confirm_token(&self.url).await;
            let response = browser
                .post_form(
                    &format!("{}/auth/confirm", self.url),
                    &[("flow", &token), ("age", "yes"), ("terms", "yes")],
                )
                .await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
        }
        assert!(browser.cookies.contains_key("club_session"));
        browser
    }

    /// Stores a request made by `handle`, as the coordinator records one.
    async fn record(&self, handle: &str) -> RecordId {
        let id = RecordId::new();
        let request = ChatCompletionRequest::new("m", vec![ChatMessage::user("hello")]);
        let record = InferenceRecord::new(
            id,
            Some(handle.into()),
            request,
            Visibility::Private,
            Utc::now(),
        );
        self.store.insert_record(&record).await.unwrap();
        id
    }
}

/// A browser without JavaScript: keeps cookies, follows no redirect by itself.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    /// Every `Set-Cookie` seen, in order.
    set_cookies: Vec<String>,
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

impl Browser {
    fn keep(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = value.to_str().unwrap().to_owned();
            let (pair, attributes) = text.split_once(';').unwrap_or((&text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
            self.set_cookies.push(text);
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        if self.cookies.is_empty() {
            request
        } else {
            request.header(reqwest::header::COOKIE, self.cookie_header())
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let response = request.send().await.unwrap();
        self.keep(&response);
        response
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        let request = self.request(Method::GET, url);
        self.send(request).await
    }

    async fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let request = self.request(Method::POST, url).form(fields);
        self.send(request).await
    }

    /// Starts sign-in at `path` and goes through the fake GitHub; returns the callback URL
    /// GitHub sends the browser back to (not yet visited).
    async fn through_github(&mut self, club: &str, path: &str) -> String {
        let response = self.get(&format!("{club}{path}")).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        let authorize = location(&response);
        let response = self.get(&authorize).await;
        assert_eq!(
            response.status(),
            StatusCode::FOUND,
            "the fake GitHub redirects back"
        );
        location(&response)
    }

    /// Opens the confirmation page and reads the hidden flow token from its form.
    async fn confirm_token(&mut self, club: &str) -> String {
        let response = self.get(&format!("{club}/auth/confirm")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let html = response.text().await.unwrap();
        assert!(html.contains("I am 18 or older"), "{html}");
        assert!(html.contains("href=\"/terms\""), "{html}");
        let start = html.find("name=\"flow\" value=\"").unwrap() + "name=\"flow\" value=\"".len();
        html[start..start + 64].to_owned()
    }

    /// Sends a JSON API request with the session cookie and, if given, a CSRF token.
    async fn api(
        &mut self,
        method: Method,
        url: &str,
        csrf: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, url);
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = self.send(request).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn csrf(&mut self, club: &str) -> String {
        let (status, session) = self
            .api(Method::GET, &format!("{club}/api/v1/session"), None, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{session}");
        session["csrf_token"].as_str().unwrap().to_owned()
    }

    fn session_cookie(&self) -> &str {
        self.set_cookies
            .iter()
            .rev()
            .find(|c| c.starts_with("club_session=") && !c.contains("Max-Age=0"))
            .unwrap()
    }
}

#[tokio::test]
async fn a_new_member_confirms_age_and_terms_and_gets_a_session() {
    let club = Club::start().await;
    club.github.add_user(1001, "ada", Some("ada@example.com"));
    club.github.sign_in_as(1001);
    let mut browser = club.browser();

    let back = browser
        .through_github(&club.url, "/auth/github?next=/requests")
        .await;
    let state_cookie = browser
        .set_cookies
        .iter()
        .find(|c| c.starts_with("club_oauth_state="))
        .unwrap()
        .clone();
    assert!(state_cookie.contains("HttpOnly") && state_cookie.contains("SameSite=Lax"));
    let response = browser.get(&back).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/auth/confirm");
    assert!(!browser.cookies.contains_key("club_session"));
    assert_eq!(club.count("SELECT COUNT(*) FROM users").await, 0);

    let token = browser.confirm_token(&club.url).await;
    let before = Utc::now();
    let response = browser
        .post_form(
            &format!("{}/auth/confirm", club.url),
            &[("flow", &token), ("age", "yes"), ("terms", "yes")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/requests");

    let cookie = browser.session_cookie().to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/;"), "{cookie}");
    assert!(
        cookie.contains(&format!("Max-Age={}", 30 * 24 * 3600)),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "http public_url: no Secure: {cookie}"
    );

    let user = club.store.user_by_handle("ada").await.unwrap().unwrap();
    assert_eq!(user.github_id, Some(1001));
    assert_eq!(user.email.as_deref(), Some("ada@example.com"));
    assert!(user.terms_accepted_at.unwrap() >= before - chrono::Duration::seconds(1));
    assert!(user.age_confirmed_at.unwrap() >= before - chrono::Duration::seconds(1));
    // Nothing else of GitHub is kept: no token, no profile.
    let raw = club.raw().await;
    let row = sqlx::query("SELECT * FROM users")
        .fetch_one(&raw)
        .await
        .unwrap();
    let columns: Vec<String> = row
        .columns()
        .iter()
        .map(|c| sqlx::Column::name(c).to_owned())
        .collect();
    assert_eq!(
        columns,
        [
            "id",
            "handle",
            "handle_key",
            "email",
            "created_at",
            "default_visibility",
            "terms_accepted_at",
            "github_id",
            "age_confirmed_at",
            // The member's own setting, not collected: `any` until they change it.
            "routing_preference"
        ]
    );
    raw.close().await;

    let (status, me) = browser
        .api(Method::GET, &format!("{}/api/v1/me", club.url), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["handle"], "ada");
    let (status, session) = browser
        .api(
            Method::GET,
            &format!("{}/api/v1/session", club.url),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session["object"], "club.session");
    assert_eq!(session["handle"], "ada");
    assert_eq!(session["csrf_token"].as_str().unwrap().len(), 64);
    assert!(session["expires_at"].is_string());
    // No session: 401.
    let (status, _) = club.api(Method::GET, "/api/v1/session", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_forged_or_missing_state_is_refused_and_creates_nothing() {
    let club = Club::start().await;
    club.github.add_user(1002, "mallory-target", None);
    club.github.sign_in_as(1002);

    // A state this browser did not start.
    let mut browser = club.browser();
    let back = browser.through_github(&club.url, "/auth/github").await;
    let mut forged = url::Url::parse(&back).unwrap();
    let code = forged
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    forged.set_query(Some(&format!("code={code}&state={}", "f".repeat(64))));
    let response = browser.get(forged.as_str()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_state");

    // The right state from another browser (no state cookie).
    let mut other = club.browser();
    let response = other.get(&back).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // No state at all.
    let mut missing = url::Url::parse(&back).unwrap();
    missing.set_query(Some(&format!("code={code}")));
    let response = browser.get(missing.as_str()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A state that was stored but expired.
    let secret = random_token().unwrap();
    let mut flow = SignInFlow::new(FlowKind::Web, std::time::Duration::from_secs(600));
    flow.expires_at = Utc::now() - chrono::Duration::seconds(1);
    club.store.start_flow(&secret, &flow).await.unwrap();
    browser
        .cookies
        .insert("club_oauth_state".into(), secret.clone());
    let response = browser
        .get(&format!(
            "{}/auth/github/callback?code={code}&state={secret}",
            club.url
        ))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    assert_eq!(club.count("SELECT COUNT(*) FROM users").await, 0);
    assert_eq!(club.count("SELECT COUNT(*) FROM sessions").await, 0);
    assert!(!browser.cookies.contains_key("club_session"));
    assert_eq!(club.github.live_tokens(), 0, "no code was exchanged");

    // The genuine callback still works once, and a replay of it is refused.
    let mut genuine = club.browser();
    let back = genuine.through_github(&club.url, "/auth/github").await;
    let response = genuine.get(&back).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let state = url::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    genuine.cookies.insert("club_oauth_state".into(), state);
    let response = genuine.get(&back).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn confirmation_is_refused_without_both_boxes() {
    let club = Club::start().await;
    club.github.add_user(1003, "grace", None);
    club.github.sign_in_as(1003);
    let mut browser = club.browser();
    let back = browser.through_github(&club.url, "/auth/github").await;
    browser.get(&back).await;
    let token = browser.confirm_token(&club.url).await;
    let confirm = format!("{}/auth/confirm", club.url);

    for fields in [
        vec![("flow", token.as_str())],
        vec![("flow", token.as_str()), ("age", "yes")],
        vec![("flow", token.as_str()), ("terms", "yes")],
    ] {
        let response = browser.post_form(&confirm, &fields).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "confirmation_required");
    }
    // The right boxes with a token that is not this browser's pending sign-in.
    let response = browser
        .post_form(
            &confirm,
            &[("flow", &"0".repeat(64)), ("age", "yes"), ("terms", "yes")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(club.count("SELECT COUNT(*) FROM users").await, 0);
    assert!(!browser.cookies.contains_key("club_session"));

    // Both boxes: the account exists, with no e-mail (GitHub had no verified primary one
    // other than the no-reply address, which is what it gives).
    let response = browser
        .post_form(
            &confirm,
            &[("flow", &token), ("age", "yes"), ("terms", "yes")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/");
    let user = club.store.user_by_handle("grace").await.unwrap().unwrap();
    assert_eq!(
        user.email.as_deref(),
        Some("1003+grace@users.noreply.github.com")
    );
    // The confirmation is used once.
    let response = browser
        .post_form(
            &confirm,
            &[("flow", &token), ("age", "yes"), ("terms", "yes")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_returning_member_signs_in_without_confirming_again() {
    let club = Club::start().await;
    club.github
        .add_user(1004, "linus", Some("linus@example.com"));
    let first = club.sign_in(1004).await;
    let user = club.store.user_by_handle("linus").await.unwrap().unwrap();

    let mut browser = club.browser();
    club.github.sign_in_as(1004);
    let back = browser
        .through_github(&club.url, "/auth/github?next=/keys")
        .await;
    let response = browser.get(&back).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/keys");
    assert!(browser.cookies.contains_key("club_session"));
    assert_ne!(
        browser.cookies["club_session"], first.cookies["club_session"],
        "each sign-in is a session of its own"
    );
    let again = club.store.user_by_handle("linus").await.unwrap().unwrap();
    assert_eq!(again, user, "nothing about the member changed");
    assert_eq!(club.store.count_sessions(user.id).await.unwrap(), 2);

    // `next` is only ever a local path.
    let mut elsewhere = club.browser();
    let back = elsewhere
        .through_github(&club.url, "/auth/github?next=//evil.example/x")
        .await;
    let response = elsewhere.get(&back).await;
    assert_eq!(location(&response), "/");
}

#[tokio::test]
async fn a_github_rename_follows_on_next_sign_in() {
    let club = Club::start().await;
    club.github
        .add_user(1005, "old-name", Some("old@example.com"));
    let mut first = club.sign_in(1005).await;
    let user = club
        .store
        .user_by_handle("old-name")
        .await
        .unwrap()
        .unwrap();
    let record = club.record("old-name").await;
    let key = club
        .store
        .create_key(user.id, "k", "inference,account".parse().unwrap())
        .await
        .unwrap()
        .1;

    club.github.rename(1005, "new-name");
    club.github
        .add_user(1005, "new-name", Some("new@example.com"));
    let mut browser = club.sign_in(1005).await;
    let renamed = club.store.user_by_github_id(1005).await.unwrap().unwrap();
    assert_eq!(renamed.id, user.id, "the same account");
    assert_eq!(renamed.handle, "new-name");
    assert_eq!(renamed.email.as_deref(), Some("new@example.com"));
    assert_eq!(renamed.terms_accepted_at, user.terms_accepted_at);
    assert!(
        club.store
            .user_by_handle("old-name")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(club.count("SELECT COUNT(*) FROM users").await, 1);

    // Their requests are still theirs, by session and by key; the key now says the new handle.
    let (status, page) = browser
        .api(
            Method::GET,
            &format!("{}/api/v1/requests", club.url),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"][0]["id"], record.to_string());
    let (status, me) = club.api(Method::GET, "/api/v1/me", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["handle"], "new-name");
    // The earlier browser's session is the same account.
    let (_, me) = first
        .api(Method::GET, &format!("{}/api/v1/me", club.url), None, None)
        .await;
    assert_eq!(me["handle"], "new-name");
}

#[tokio::test]
async fn cookie_requests_that_change_state_need_the_csrf_token() {
    let club = Club::start().await;
    club.github.add_user(1006, "carol", None);
    let mut browser = club.sign_in(1006).await;
    let me = format!("{}/api/v1/me", club.url);
    let change = json!({"default_visibility": "private"});

    let (status, body) = browser
        .api(Method::PATCH, &me, None, Some(change.clone()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "csrf_failed");
    let (status, _) = browser
        .api(
            Method::PATCH,
            &me,
            Some(&"0".repeat(64)),
            Some(change.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = browser.api(Method::DELETE, &me, None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let user = club.store.user_by_handle("carol").await.unwrap().unwrap();
    assert_eq!(
        user.default_visibility,
        Visibility::Public,
        "nothing changed"
    );

    let csrf = browser.csrf(&club.url).await;
    let (status, body) = browser
        .api(Method::PATCH, &me, Some(&csrf), Some(change))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["default_visibility"], "private");

    // A bearer key needs no CSRF token, even alongside the cookie.
    let key = club
        .store
        .create_key(user.id, "k", "account".parse().unwrap())
        .await
        .unwrap()
        .1;
    let request = browser
        .request(Method::PATCH, &me)
        .bearer_auth(&key)
        .json(&json!({"default_visibility": "unlisted"}));
    let response = browser.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Reading needs no CSRF token.
    let (status, _) = browser.api(Method::GET, &me, None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn sign_out_ends_one_session_and_sign_out_everywhere_ends_all() {
    let club = Club::start().await;
    club.github.add_user(1007, "dave", None);
    let mut laptop = club.sign_in(1007).await;
    let mut phone = club.sign_in(1007).await;
    let mut tablet = club.sign_in(1007).await;
    let user = club.store.user_by_handle("dave").await.unwrap().unwrap();
    assert_eq!(club.store.count_sessions(user.id).await.unwrap(), 3);
    let session = format!("{}/api/v1/session", club.url);

    // Without the CSRF token: refused, still signed in.
    let response = laptop
        .post_form(&format!("{}/auth/signout", club.url), &[])
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(club.store.count_sessions(user.id).await.unwrap(), 3);

    let csrf = laptop.csrf(&club.url).await;
    let response = laptop
        .post_form(
            &format!("{}/auth/signout", club.url),
            &[("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/");
    assert!(
        !laptop.cookies.contains_key("club_session"),
        "cookie cleared"
    );
    assert_eq!(club.store.count_sessions(user.id).await.unwrap(), 2);
    let (status, _) = phone.api(Method::GET, &session, None, None).await;
    assert_eq!(status, StatusCode::OK, "other sessions go on");

    // Everywhere, with the header this time.
    let csrf = phone.csrf(&club.url).await;
    let request = phone
        .request(
            Method::POST,
            &format!("{}/auth/signout-everywhere", club.url),
        )
        .header("x-csrf-token", csrf);
    let response = phone.send(request).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(club.store.count_sessions(user.id).await.unwrap(), 0);
    let (status, _) = tablet.api(Method::GET, &session, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = tablet
        .api(Method::GET, &format!("{}/api/v1/me", club.url), None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Polls the device token endpoint once.
async fn poll(club: &Club, device_token: &str, accept_terms: bool) -> (StatusCode, Value) {
    club.api(
        Method::POST,
        "/api/v1/auth/device/token",
        None,
        Some(json!({"device_token": device_token, "accept_terms": accept_terms, "key_name": "laptop"})),
    )
    .await
}

async fn start_device(club: &Club) -> (String, String) {
    let (status, body) = club
        .api(Method::POST, "/api/v1/auth/device", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "club.device_authorization");
    assert_eq!(body["verification_uri"], "https://github.com/login/device");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    assert!(body["interval"].is_u64());
    assert!(
        body.get("device_code").is_none(),
        "GitHub's device code stays on the coordinator"
    );
    (
        body["device_token"].as_str().unwrap().to_owned(),
        body["user_code"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn the_device_flow_gives_a_working_key_once() {
    let club = Club::start().await;
    club.github.add_user(1008, "erin", Some("erin@example.com"));
    club.sign_in(1008).await;
    let (token, user_code) = start_device(&club).await;

    let (status, body) = poll(&club, &token, false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "authorization_pending");

    club.github.approve(&user_code, 1008);
    let (status, body) = poll(&club, &token, false).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "club.device_token");
    assert_eq!(body["handle"], "erin");
    assert_eq!(body["scopes"], serde_json::json!(["inference", "account"]));
    let key = body["key"].as_str().unwrap();
    assert!(key.starts_with("icl_"));

    let (status, models) = club.api(Method::GET, "/v1/models", Some(key), None).await;
    assert_eq!(status, StatusCode::OK, "{models}");
    let (status, keys) = club.api(Method::GET, "/api/v1/keys", Some(key), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys["data"][0]["name"], "laptop");
    assert_eq!(keys["data"][0]["id"], body["key_id"]);

    // Spent.
    let (status, body) = poll(&club, &token, false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_device_token");
    let (status, body) = poll(&club, &"a".repeat(64), false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_device_token");
    assert_eq!(
        club.github.live_tokens(),
        2,
        "one web, one device token issued"
    );
}

#[tokio::test]
async fn the_device_flow_asks_a_new_member_to_accept_the_terms() {
    let club = Club::start().await;
    club.github.add_user(1009, "frank", None);
    let (token, user_code) = start_device(&club).await;
    club.github.approve(&user_code, 1009);

    let (status, body) = poll(&club, &token, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "terms_required");
    assert_eq!(club.count("SELECT COUNT(*) FROM users").await, 0);
    let calls = club.github.token_calls();
    let (status, body) = poll(&club, &token, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "terms_required");
    assert_eq!(
        club.github.token_calls(),
        calls,
        "the identity is parked, GitHub not asked"
    );
    assert_eq!(club.count("SELECT COUNT(*) FROM users").await, 0);

    let before = Utc::now() - chrono::Duration::seconds(1);
    let (status, body) = poll(&club, &token, true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["handle"], "frank");
    let user = club.store.user_by_github_id(1009).await.unwrap().unwrap();
    assert!(user.terms_accepted_at.unwrap() >= before);
    assert!(user.age_confirmed_at.unwrap() >= before);
    let (status, me) = club
        .api(Method::GET, "/api/v1/me", body["key"].as_str(), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["handle"], "frank");
    // Accepting up front works too.
    club.github.add_user(1010, "gina", None);
    let (token, user_code) = start_device(&club).await;
    club.github.approve(&user_code, 1010);
    let (status, body) = poll(&club, &token, true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["handle"], "gina");
}

#[tokio::test]
async fn device_codes_expire_are_declined_and_slow_down() {
    let club = Club::start().await;
    club.github.add_user(1011, "hank", None);

    let (token, user_code) = start_device(&club).await;
    club.github.expire(&user_code);
    let (status, body) = poll(&club, &token, true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "expired_token");
    let (_, body) = poll(&club, &token, true).await;
    assert_eq!(body["error"]["code"], "invalid_device_token");

    let (token, user_code) = start_device(&club).await;
    club.github.deny(&user_code);
    let (status, body) = poll(&club, &token, true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "access_denied");
    let (_, body) = poll(&club, &token, true).await;
    assert_eq!(body["error"]["code"], "invalid_device_token");
    assert_eq!(club.count("SELECT COUNT(*) FROM users").await, 0);

    // Polling faster than the interval: slow_down, and GitHub is not asked.
    club.github.set_device_interval(5);
    let (token, _) = start_device(&club).await;
    let (_, body) = poll(&club, &token, true).await;
    assert_eq!(body["error"]["code"], "authorization_pending");
    let calls = club.github.token_calls();
    let (status, body) = poll(&club, &token, true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "slow_down");
    assert_eq!(club.github.token_calls(), calls);

    // Bad input changes nothing.
    let (status, body) = club
        .api(
            Method::POST,
            "/api/v1/auth/device/token",
            None,
            Some(json!({"device_token": token, "key_name": "x".repeat(101)})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "key_name");
    let (status, _) = club
        .api(
            Method::POST,
            "/api/v1/auth/device/token",
            None,
            Some(json!({"device_token": token, "surprise": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn deleting_the_account_removes_its_sessions_and_pending_flows() {
    let club = Club::start().await;
    club.github.add_user(1012, "ivy", None);
    // A confirmation left pending in one browser...
    let mut idle = club.browser();
    club.github.sign_in_as(1012);
    let back = idle.through_github(&club.url, "/auth/github").await;
    idle.get(&back).await;
    assert_eq!(club.store.count_flows_of(1012).await.unwrap(), 1);
    // ...while the account is made in another, with a second session.
    let mut browser = club.sign_in(1012).await;
    club.sign_in(1012).await;
    let user = club.store.user_by_github_id(1012).await.unwrap().unwrap();
    assert_eq!(club.store.count_sessions(user.id).await.unwrap(), 2);

    let csrf = browser.csrf(&club.url).await;
    let (status, body) = browser
        .api(
            Method::DELETE,
            &format!("{}/api/v1/me", club.url),
            Some(&csrf),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(club.count("SELECT COUNT(*) FROM sessions").await, 0);
    assert_eq!(club.count("SELECT COUNT(*) FROM sign_in_flows").await, 0);
    assert_eq!(club.count("SELECT COUNT(*) FROM users").await, 0);
    let (status, _) = browser
        .api(
            Method::GET,
            &format!("{}/api/v1/session", club.url),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The pending confirmation cannot bring the account back.
    let token = {
        let response = idle.get(&format!("{}/auth/confirm", club.url)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        idle.cookies["club_sign_in"].clone()
    };
    let response = idle
        .post_form(
            &format!("{}/auth/confirm", club.url),
            &[("flow", &token), ("age", "yes"), ("terms", "yes")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(club.count("SELECT COUNT(*) FROM users").await, 0);
}

#[tokio::test]
async fn cookies_are_secure_when_the_public_url_is_https() {
    let club = Club::start_with(Some("https://club.example"), true).await;
    club.github.add_user(1013, "judy", None);
    club.github.sign_in_as(1013);
    let mut browser = club.browser();
    let back = browser.through_github(&club.url, "/auth/github").await;
    assert!(
        back.starts_with("https://club.example/auth/github/callback?"),
        "the redirect_uri is under the public URL: {back}"
    );
    let state_cookie = browser.set_cookies[0].clone();
    assert!(state_cookie.contains("; Secure"), "{state_cookie}");
    // The browser reaches the coordinator at its public address; here that is 127.0.0.1.
    let local = back.replacen("https://club.example", &club.url, 1);
    let response = browser.get(&local).await;
    assert_eq!(location(&response), "/auth/confirm");
    let token = browser.confirm_token(&club.url).await;
    browser
        .post_form(
            &format!("{}/auth/confirm", club.url),
            &[("flow", &token), ("age", "yes"), ("terms", "yes")],
        )
        .await;
    let cookie = browser.session_cookie();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
}

#[tokio::test]
async fn without_a_client_id_sign_in_is_unavailable_and_the_rest_works() {
    let club = Club::start_with(None, false).await;
    let mut browser = club.browser();
    // The site's "Sign in" button leads to a page that says why not, not to a JSON error.
    let response = browser.get(&format!("{}/auth/github", club.url)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(
        page.contains("Sign-in is not set up on this club"),
        "{page}"
    );
    assert!(page.contains("--github-client-id"), "{page}");
    // The API's sign-in routes answer the JSON envelope.
    for path in ["/api/v1/auth/device", "/api/v1/auth/device/token"] {
        let (status, body) = club
            .api(Method::POST, path, None, Some(json!({"device_token": "x"})))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "sign_in_unavailable");
    }
    let user = club.store.create_user("admin-made", None).await.unwrap();
    let key = club
        .store
        .create_key(user.id, "k", "inference".parse().unwrap())
        .await
        .unwrap()
        .1;
    let (status, _) = club.api(Method::GET, "/v1/models", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_member_an_admin_added_is_linked_at_first_sign_in() {
    let club = Club::start().await;
    let added = club.store.create_user("Kim", None).await.unwrap();
    club.github.add_user(1014, "kim", Some("kim@example.com"));
    club.sign_in(1014).await;
    let linked = club.store.user_by_github_id(1014).await.unwrap().unwrap();
    assert_eq!(linked.id, added.id);
    assert_eq!(linked.handle, "kim");
    assert!(linked.terms_accepted_at.is_some());
    assert_eq!(club.count("SELECT COUNT(*) FROM users").await, 1);
}

// ---- the store part of deletion, on SQLite and PostgreSQL ----

async fn deletion_leaves_no_session_or_flow(store: &Store, raw: &AnyPool) {
    let identity = GitHubIdentity {
        id: 77,
        login: "leaver".into(),
        email: Some("leaver@example.com".into()),
    };
    let user: User = store
        .create_github_member(&identity, Utc::now())
        .await
        .unwrap();
    store.create_session(user.id).await.unwrap();
    store.create_session(user.id).await.unwrap();
    let mut flow = SignInFlow::new(FlowKind::Confirm, std::time::Duration::from_secs(600));
    flow.identity = Some(identity.clone());
    let secret = random_token().unwrap();
    store.start_flow(&secret, &flow).await.unwrap();
    let other = store
        .create_github_member(
            &GitHubIdentity {
                id: 78,
                login: "stayer".into(),
                email: None,
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let (_, token) = store.create_session(other.id).await.unwrap();
    let (found, session) = store.session(&token).await.unwrap().unwrap();
    assert_eq!((found.id, session.user_id), (other.id, other.id));
    let renamed = store
        .update_github_identity(
            other.id,
            &GitHubIdentity {
                id: 78,
                login: "stayer2".into(),
                email: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.handle, "stayer2");
    let taken = store
        .update_github_identity(
            other.id,
            &GitHubIdentity {
                id: 78,
                login: "LEAVER".into(),
                email: None,
            },
        )
        .await
        .unwrap_err();
    assert!(taken.is_conflict(), "{taken}");
    let device = random_token().unwrap();
    store
        .start_flow(
            &device,
            &SignInFlow::new(FlowKind::Device, std::time::Duration::from_secs(600)),
        )
        .await
        .unwrap();
    assert!(store.flow_polled(&device, Utc::now(), 5).await.unwrap());
    assert!(!store.flow_polled(&device, Utc::now(), 5).await.unwrap());
    assert!(
        store
            .take_flow(&device, FlowKind::Device)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .take_flow(&device, FlowKind::Device)
            .await
            .unwrap()
            .is_none()
    );

    assert!(store.delete_user(user.id).await.unwrap());
    for (table, expected) in [("sessions", 1), ("sign_in_flows", 0), ("users", 1)] {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(raw)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(n, expected, "{table}");
    }
    assert!(
        store
            .take_flow(&secret, FlowKind::Confirm)
            .await
            .unwrap()
            .is_none()
    );
}

async fn deletion_removes_sessions_and_flows_on(database: TestDatabase) {
    let store = Store::connect(&database.url).await.unwrap();
    let raw = database.raw().await;
    deletion_leaves_no_session_or_flow(&store, &raw).await;
    store.close().await;
    raw.close().await;
    database.remove().await;
}

#[tokio::test]
async fn deletion_removes_sessions_and_flows_on_sqlite() {
    deletion_removes_sessions_and_flows_on(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn deletion_removes_sessions_and_flows_on_postgres() {
    if let Some(database) = TestDatabase::postgres("the PostgreSQL sign-in deletion test").await {
        deletion_removes_sessions_and_flows_on(database).await;
    }
}
