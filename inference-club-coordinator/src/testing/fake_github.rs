//! A fake GitHub on 127.0.0.1 for sign-in tests: a small real HTTP server speaking GitHub's
//! wire format for the OAuth web and device flows and the two REST calls sign-in makes.
//!
//! - `GET /login/oauth/authorize`: redirects straight back to `redirect_uri` with a `code` and
//!   the `state`, signing in the user chosen by [`FakeGitHub::sign_in_as`].
//! - `POST /login/oauth/access_token` (form): the code grant and the device grant
//!   (`urn:ietf:params:oauth:grant-type:device_code`); JSON when `Accept: application/json`,
//!   else form-encoded; errors, as on GitHub, with status 200 and an `error` field
//!   (`bad_verification_code`, `authorization_pending`, `slow_down`, `expired_token`,
//!   `access_denied`, `incorrect_device_code`, `incorrect_client_credentials`).
//! - `POST /login/device/code` (form): a device code, user code and verification page.
//! - `GET /user`, `GET /user/emails` with `Authorization: Bearer <token>` (or `token <token>`).
//!
//! The test renames users, approves, denies or expires device codes, and sets the interval.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// The OAuth app the fake knows.
pub const CLIENT_ID: &str = "Iv1.fakeclientid";
/// Its secret.
pub const CLIENT_SECRET: &str = "fake-client-secret";

#[derive(Debug, Clone)]
struct FakeUser {
    login: String,
    email: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum DeviceState {
    Pending,
    Approved(i64),
    Denied,
    Expired,
}

#[derive(Debug)]
struct Device {
    user_code: String,
    state: DeviceState,
    interval: u64,
    last_poll: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<i64, FakeUser>,
    signing_in: Option<i64>,
    codes: HashMap<String, i64>,
    tokens: HashMap<String, i64>,
    devices: HashMap<String, Device>,
    interval: u64,
    counter: u64,
    token_calls: u64,
}

impl Inner {
    fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!(
            "{prefix}{:08}{}",
            self.counter,
            uuid::Uuid::now_v7().simple()
        )
    }
}

/// A fake GitHub serving on 127.0.0.1.
#[derive(Clone)]
pub struct FakeGitHub {
    /// Its base URL (`http://127.0.0.1:PORT`), for both the login endpoints and the API.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeGitHub {
    /// Starts a fake GitHub with no users; device codes ask for polls every 0 seconds.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(access_token))
            .route("/login/device/code", post(device_code))
            .route("/user", get(user))
            .route("/user/emails", get(emails))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, inner }
    }

    /// Adds (or replaces) a GitHub account.
    pub fn add_user(&self, id: i64, login: &str, email: Option<&str>) {
        self.inner.lock().unwrap().users.insert(
            id,
            FakeUser {
                login: login.to_owned(),
                email: email.map(str::to_owned),
            },
        );
    }

    /// Renames a GitHub account (its id stays).
    pub fn rename(&self, id: i64, login: &str) {
        self.inner.lock().unwrap().users.get_mut(&id).unwrap().login = login.to_owned();
    }

    /// The account the next web sign-in signs in.
    pub fn sign_in_as(&self, id: i64) {
        self.inner.lock().unwrap().signing_in = Some(id);
    }

    /// The interval new device codes ask for, in seconds.
    pub fn set_device_interval(&self, seconds: u64) {
        self.inner.lock().unwrap().interval = seconds;
    }

    fn device_mut(&self, user_code: &str, change: impl FnOnce(&mut Device)) {
        let mut inner = self.inner.lock().unwrap();
        let device = inner
            .devices
            .values_mut()
            .find(|d| d.user_code == user_code)
            .unwrap_or_else(|| panic!("no device code with user code {user_code}"));
        change(device);
    }

    /// The account `id` approves the device code shown as `user_code`.
    pub fn approve(&self, user_code: &str, id: i64) {
        self.device_mut(user_code, |d| d.state = DeviceState::Approved(id));
    }

    /// The member declines the device code.
    pub fn deny(&self, user_code: &str) {
        self.device_mut(user_code, |d| d.state = DeviceState::Denied);
    }

    /// The device code expires.
    pub fn expire(&self, user_code: &str) {
        self.device_mut(user_code, |d| d.state = DeviceState::Expired);
    }

    /// How many calls the token endpoint got.
    pub fn token_calls(&self) -> u64 {
        self.inner.lock().unwrap().token_calls
    }

    /// How many access tokens are live.
    pub fn live_tokens(&self) -> usize {
        self.inner.lock().unwrap().tokens.len()
    }
}

type Shared = Arc<Mutex<Inner>>;

fn form(text: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(text).into_owned().collect()
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// An OAuth answer as GitHub writes it: JSON if asked for, else form-encoded; always 200.
fn oauth_answer(headers: &HeaderMap, fields: Value) -> Response {
    if wants_json(headers) {
        return (StatusCode::OK, axum::Json(fields)).into_response();
    }
    let mut encoded = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in fields.as_object().unwrap() {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        encoded.append_pair(key, &value);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-www-form-urlencoded")],
        encoded.finish(),
    )
        .into_response()
}

fn oauth_error(headers: &HeaderMap, code: &str, description: &str) -> Response {
    oauth_answer(
        headers,
        json!({
            "error": code,
            "error_description": description,
            "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors",
        }),
    )
}

async fn authorize(State(inner): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let query = form(query.unwrap_or_default().as_bytes());
    if query.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return (StatusCode::NOT_FOUND, "unknown client_id").into_response();
    }
    let Some(redirect) = query.get("redirect_uri") else {
        return (StatusCode::BAD_REQUEST, "this fake needs redirect_uri").into_response();
    };
    let mut inner = inner.lock().unwrap();
    let Some(user) = inner.signing_in else {
        return (StatusCode::BAD_REQUEST, "no user is signing in").into_response();
    };
    let code = inner.next("code");
    inner.codes.insert(code.clone(), user);
    let mut location = url::Url::parse(redirect).unwrap();
    location.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = query.get("state") {
        location.query_pairs_mut().append_pair("state", state);
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

async fn access_token(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let params = form(&body);
    let mut inner = inner.lock().unwrap();
    inner.token_calls += 1;
    if params.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return oauth_error(
            &headers,
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        );
    }
    let grant = params.get("grant_type").map(String::as_str);
    if grant == Some("urn:ietf:params:oauth:grant-type:device_code") {
        let code = params.get("device_code").cloned().unwrap_or_default();
        let Some(device) = inner.devices.get_mut(&code) else {
            return oauth_error(
                &headers,
                "incorrect_device_code",
                "The device_code provided is not valid.",
            );
        };
        let now = Instant::now();
        let too_soon = device
            .last_poll
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(device.interval));
        device.last_poll = Some(now);
        match device.state.clone() {
            DeviceState::Pending if too_soon => {
                device.interval += 5;
                return oauth_answer(
                    &headers,
                    json!({"error": "slow_down", "error_description": "Too many requests have been made in the same timeframe.", "interval": device.interval}),
                );
            }
            DeviceState::Pending => {
                return oauth_error(
                    &headers,
                    "authorization_pending",
                    "The authorization request is still pending.",
                );
            }
            DeviceState::Denied => {
                return oauth_error(
                    &headers,
                    "access_denied",
                    "The authorization request was denied.",
                );
            }
            DeviceState::Expired => {
                return oauth_error(&headers, "expired_token", "The device_code has expired.");
            }
            DeviceState::Approved(user) => {
                inner.devices.remove(&code);
                let token = inner.next("gho_");
                inner.tokens.insert(token.clone(), user);
                return oauth_answer(
                    &headers,
                    json!({"access_token": token, "token_type": "bearer", "scope": "user:email"}),
                );
            }
        }
    }
    if params.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET) {
        return oauth_error(
            &headers,
            "incorrect_client_credentials",
            "The client_id and/or client_secret passed are incorrect.",
        );
    }
    let code = params.get("code").cloned().unwrap_or_default();
    let Some(user) = inner.codes.remove(&code) else {
        return oauth_error(
            &headers,
            "bad_verification_code",
            "The code passed is incorrect or expired.",
        );
    };
    let token = inner.next("gho_");
    inner.tokens.insert(token.clone(), user);
    oauth_answer(
        &headers,
        json!({"access_token": token, "token_type": "bearer", "scope": "user:email"}),
    )
}

async fn device_code(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let params = form(&body);
    if params.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    let mut inner = inner.lock().unwrap();
    let device_code = inner.next("dc");
    inner.counter += 1;
    let user_code = format!("ABCD-{:04}", inner.counter % 10_000);
    let interval = inner.interval;
    inner.devices.insert(
        device_code.clone(),
        Device {
            user_code: user_code.clone(),
            state: DeviceState::Pending,
            interval,
            last_poll: None,
        },
    );
    oauth_answer(
        &headers,
        json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": "https://github.com/login/device",
            "expires_in": 899,
            "interval": interval,
        }),
    )
}

fn token_user(inner: &Inner, headers: &HeaderMap) -> Option<(i64, FakeUser)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") && !scheme.eq_ignore_ascii_case("token") {
        return None;
    }
    let id = *inner.tokens.get(token.trim())?;
    Some((id, inner.users.get(&id)?.clone()))
}

fn bad_credentials() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"})),
    )
        .into_response()
}

async fn user(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    let inner = inner.lock().unwrap();
    let Some((id, user)) = token_user(&inner, &headers) else {
        return bad_credentials();
    };
    axum::Json(json!({
        "login": user.login,
        "id": id,
        "node_id": format!("U_{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "type": "User",
        "site_admin": false,
        "name": "A Member",
        "email": null,
        "bio": "likes open models",
        "public_repos": 3,
        "followers": 1,
        "following": 2,
        "created_at": "2015-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z"
    }))
    .into_response()
}

async fn emails(State(inner): State<Shared>, headers: HeaderMap) -> Response {
    let inner = inner.lock().unwrap();
    let Some((id, user)) = token_user(&inner, &headers) else {
        return bad_credentials();
    };
    let noreply = format!("{id}+{}@users.noreply.github.com", user.login);
    let mut list = vec![
        json!({"email": "old@example.com", "primary": false, "verified": false, "visibility": null}),
        json!({"email": noreply, "primary": user.email.is_none(), "verified": true, "visibility": null}),
    ];
    if let Some(email) = user.email {
        list.push(
            json!({"email": email, "primary": true, "verified": true, "visibility": "private"}),
        );
    }
    axum::Json(Value::Array(list)).into_response()
}
