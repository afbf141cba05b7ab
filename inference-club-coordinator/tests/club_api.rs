//! The club API (`/api/v1/…`, `/openapi.json`) and `GET /v1/models`, against a real coordinator
//! on 127.0.0.1 with a SQLite store; records are inserted through the store as the coordinator
//! writes them; nodes are real `inference_club_provider` nodes over the link.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use inference_club_coordinator::testing::{RecordQuery, Store, TestDatabase, TestServer, User};
use inference_club_core::openai::{
    ChatCompletionAggregator, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ChunkDelta,
    Usage,
};
use inference_club_core::record::{InferenceRecord, RecordId, ServedBy, Visibility};
use inference_club_provider::backends::Echo;
use inference_club_provider::node::{Backoff, Node, NodeConfig, NodeHandle, Offer};
use inference_club_provider::router::{Route, Router};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{AnyPool, Row};

/// A coordinator serving on 127.0.0.1, its store, and an HTTP client.
struct Club {
    url: String,
    store: Store,
    server: TestServer,
    http: reqwest::Client,
    database: TestDatabase,
    nodes: Vec<NodeHandle>,
}

impl Club {
    async fn start() -> Self {
        let database = TestDatabase::sqlite();
        let server = TestServer::start(&database.url, |builder| {
            builder.heartbeat_interval(Duration::from_secs(2))
        })
        .await;
        Self {
            url: server.url.clone(),
            store: server.store.clone(),
            server,
            http: reqwest::Client::new(),
            database,
            nodes: Vec::new(),
        }
    }

    /// A member with a key of `scopes`; returns the member and the key's secret.
    async fn member(&self, handle: &str, scopes: &str) -> (User, String) {
        self.server.member(handle, scopes).await
    }

    async fn key(&self, user: &User, scopes: &str) -> String {
        self.server.key(user, "extra", scopes).await
    }

    /// Sends a request; returns the status and the JSON body (`Null` when empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let answer = self.server.call(method, path, key, body).await;
        (answer.status, answer.json())
    }

    async fn get(&self, path: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, key, None).await
    }

    /// Stores a finished request of `consumer`, served by `served` (operator, provider) if
    /// given, as the coordinator records one.
    async fn record(
        &self,
        consumer: &str,
        model: &str,
        visibility: Visibility,
        served: Option<(&str, &str)>,
    ) -> RecordId {
        let id = RecordId::new();
        let request = ChatCompletionRequest::new(model, vec![ChatMessage::user("hello there")]);
        let mut record =
            InferenceRecord::new(id, Some(consumer.into()), request, visibility, Utc::now());
        self.store.insert_record(&record).await.unwrap();
        if let Some((operator, provider)) = served {
            record
                .dispatched(
                    ServedBy {
                        operator: operator.into(),
                        provider: provider.into(),
                        service: Some("echo".into()),
                    },
                    Utc::now(),
                )
                .unwrap();
            let mut aggregate = ChatCompletionAggregator::new();
            aggregate.push(
                &ChatCompletionChunk::new("c", model, 0).with_delta(ChunkDelta::content("hi!")),
            );
            let mut last = ChatCompletionChunk::new("c", model, 0);
            last.choices.clear();
            last.usage = Some(Usage::new(3, 2));
            aggregate.push(&last);
            record.first_token(Utc::now());
            record.succeeded(&aggregate.finish(), Utc::now()).unwrap();
            self.store.save_record(&record).await.unwrap();
        }
        id
    }

    async fn raw(&self) -> AnyPool {
        self.database.raw().await
    }

    /// Links a real node of the key's member, announcing `manifest`, serving `models` with Echo.
    fn link_node(&mut self, key: &str, manifest: Value, models: &[&str]) {
        let mut route = Route::new(
            "echo",
            Arc::new(Echo::new().models(models.iter().map(|m| (*m).to_owned()))),
        );
        for model in models {
            route = route.model(*model);
        }
        let router = Router::builder().route(route).build();
        let mut config = NodeConfig::new(self.url.clone(), key);
        config.backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        config.watch_interval = None;
        config.shutdown_grace = Duration::from_millis(100);
        let node = Node::from_offer(config, Offer::new(router, manifest)).unwrap();
        self.nodes.push(node.handle());
        tokio::spawn(node.run());
    }
}

impl Drop for Club {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.shutdown();
        }
        self.database.remove_sqlite_files();
    }
}

fn assert_envelope(body: &Value, code: &str) {
    let error = &body["error"];
    assert!(error["message"].is_string(), "{body}");
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("param").is_some(), "{body}");
    assert_eq!(error["code"], code, "{body}");
}

/// Every page of a listing, following `next_cursor`.
async fn all_pages(club: &Club, path: &str, key: Option<&str>, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let separator = if path.contains('?') { '&' } else { '?' };
    loop {
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let (status, body) = club.get(&url, key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let data = body["data"].as_array().unwrap();
        assert!(data.len() <= limit as usize);
        items.extend(data.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(body["has_more"], true);
                cursor = Some(next.to_owned());
            }
            None => {
                assert_eq!(body["has_more"], false);
                return items;
            }
        }
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn visibility_rules_for_owner_stranger_anonymous_and_operator() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference").await;
    let (_, eve) = club.member("eve", "inference").await;
    let (_, bob) = club.member("bob", "inference,provider").await;
    let public = club
        .record("ada", "echo", Visibility::Public, Some(("bob", "box")))
        .await;
    let unlisted = club
        .record("ada", "echo", Visibility::Unlisted, Some(("bob", "box")))
        .await;
    let private = club
        .record("ada", "echo", Visibility::Private, Some(("bob", "box")))
        .await;
    let unknown = RecordId::new();

    for id in [public, unlisted] {
        for key in [
            None,
            Some(ada.as_str()),
            Some(eve.as_str()),
            Some(bob.as_str()),
        ] {
            let (status, body) = club.get(&format!("/api/v1/requests/{id}"), key).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["id"], id.to_string());
        }
    }
    for key in [Some(ada.as_str()), Some(bob.as_str())] {
        let (status, body) = club.get(&format!("/api/v1/requests/{private}"), key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["visibility"], "private");
    }
    // A stranger and an anonymous reader get exactly what an unknown id gets.
    let (_, missing) = club.get(&format!("/api/v1/requests/{unknown}"), None).await;
    for key in [None, Some(eve.as_str())] {
        let (status, body) = club.get(&format!("/api/v1/requests/{private}"), key).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_envelope(&body, "request_not_found");
        let message = body["error"]["message"].as_str().unwrap();
        assert_eq!(
            message.replace(&private.to_string(), "ID"),
            missing["error"]["message"]
                .as_str()
                .unwrap()
                .replace(&unknown.to_string(), "ID")
        );
    }
    // The completion-id form names the same record.
    let (status, body) = club
        .get(
            &format!("/api/v1/requests/{}", private.completion_id()),
            Some(&ada),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["completion_id"], private.completion_id());

    // Only public records are in the feed; the owner lists all three.
    let feed = all_pages(&club, "/api/v1/requests/public", None, 10).await;
    assert_eq!(ids(&feed), vec![public.to_string()]);
    let mine = all_pages(&club, "/api/v1/requests", Some(&ada), 10).await;
    assert_eq!(
        ids(&mine),
        vec![
            private.to_string(),
            unlisted.to_string(),
            public.to_string()
        ]
    );
    assert!(
        all_pages(&club, "/api/v1/requests", Some(&eve), 10)
            .await
            .is_empty()
    );

    // The record view carries what the record holds.
    let (_, view) = club.get(&format!("/api/v1/requests/{public}"), None).await;
    assert_eq!(view["object"], "club.request");
    assert_eq!(view["consumer"], "ada");
    assert_eq!(view["model_requested"], "echo");
    assert_eq!(
        view["provider"],
        json!({"operator": "bob", "name": "box", "service": "echo"})
    );
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["response"]["content"], "hi!");
    assert_eq!(view["usage"]["source"], "reported");
    assert_eq!(view["usage"]["total_tokens"], 5);
    assert_eq!(view["request"]["messages"][0]["content"], "hello there");
    assert!(view["timing"]["latency_ms"].is_i64());
    assert!(view["timing"]["time_to_first_token_ms"].is_i64());
    assert_eq!(view["attempts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn my_requests_filter_by_model_status_and_visibility() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference").await;
    let a = club
        .record("ada", "echo", Visibility::Public, Some(("ada", "box")))
        .await;
    let b = club.record("ada", "other", Visibility::Private, None).await;
    let (_, body) = club.get("/api/v1/requests?model=other", Some(&ada)).await;
    assert_eq!(ids(body["data"].as_array().unwrap()), vec![b.to_string()]);
    let (_, body) = club.get("/api/v1/requests?status=queued", Some(&ada)).await;
    assert_eq!(ids(body["data"].as_array().unwrap()), vec![b.to_string()]);
    let (_, body) = club
        .get(
            "/api/v1/requests?visibility=public&status=succeeded",
            Some(&ada),
        )
        .await;
    assert_eq!(ids(body["data"].as_array().unwrap()), vec![a.to_string()]);
    for (query, code) in [
        ("status=done", "invalid_status"),
        ("visibility=secret", "invalid_visibility"),
        ("limit=0", "invalid_limit"),
        ("limit=101", "invalid_limit"),
        ("limit=ten", "invalid_limit"),
        ("cursor=nope", "invalid_cursor"),
        ("colour=red", "invalid_query"),
    ] {
        let (status, body) = club
            .get(&format!("/api/v1/requests?{query}"), Some(&ada))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_envelope(&body, code);
    }
    let (status, body) = club
        .get("/api/v1/requests/public?visibility=private", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&body, "invalid_filter");
}

#[tokio::test]
async fn only_the_owner_changes_visibility() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference").await;
    let (_, eve) = club.member("eve", "inference").await;
    let (_, bob) = club.member("bob", "inference").await;
    let id = club
        .record("ada", "echo", Visibility::Public, Some(("bob", "box")))
        .await;
    let path = format!("/api/v1/requests/{id}");
    // Neither a stranger nor the serving operator may change it; nothing changes.
    for key in [&eve, &bob] {
        let (status, body) = club
            .call(
                Method::PATCH,
                &path,
                Some(key),
                Some(json!({"visibility": "private"})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_envelope(&body, "request_not_found");
    }
    let (status, _) = club
        .call(
            Method::PATCH,
            &path,
            None,
            Some(json!({"visibility": "private"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Bad input changes nothing.
    for bad in [
        json!({"visibility": "secret"}),
        json!({"visibility": "private", "x": 1}),
        json!({}),
    ] {
        let (status, body) = club.call(Method::PATCH, &path, Some(&ada), Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(club.get(&path, None).await.1["visibility"], "public");
    // The owner may.
    let (status, body) = club
        .call(
            Method::PATCH,
            &path,
            Some(&ada),
            Some(json!({"visibility": "private"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["visibility"], "private");
    assert_eq!(club.get(&path, None).await.0, StatusCode::NOT_FOUND);
    assert!(
        all_pages(&club, "/api/v1/requests/public", None, 10)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn hard_delete_removes_the_record_everywhere() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference").await;
    let (_, eve) = club.member("eve", "inference").await;
    let (_, bob) = club.member("bob", "inference").await;
    let id = club
        .record("ada", "echo", Visibility::Public, Some(("bob", "box")))
        .await;
    let bob_user = club.store.user_by_handle("bob").await.unwrap().unwrap();
    club.store
        .upsert_provider(bob_user.id, "box", &manifest("box", &[]))
        .await
        .unwrap();
    let served = "/api/v1/providers/bob/box/requests";
    assert_eq!(all_pages(&club, served, Some(&bob), 10).await.len(), 1);
    let path = format!("/api/v1/requests/{id}");
    for key in [&eve, &bob] {
        let (status, body) = club.call(Method::DELETE, &path, Some(key), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_envelope(&body, "request_not_found");
    }
    assert_eq!(club.get(&path, None).await.0, StatusCode::OK);

    let (status, body) = club.call(Method::DELETE, &path, Some(&ada), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    assert_eq!(club.get(&path, Some(&ada)).await.0, StatusCode::NOT_FOUND);
    assert!(
        all_pages(&club, "/api/v1/requests/public", None, 10)
            .await
            .is_empty()
    );
    assert!(
        all_pages(&club, "/api/v1/requests", Some(&ada), 10)
            .await
            .is_empty()
    );
    assert!(
        all_pages(&club, "/api/v1/providers/bob/box/requests", Some(&bob), 10)
            .await
            .is_empty()
    );
    let raw = club.raw().await;
    let rows = sqlx::query("SELECT COUNT(*) AS n FROM records WHERE id = $1")
        .bind(id.to_string())
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(rows.get::<i64, _>("n"), 0);
    // Deleting again: nothing there.
    assert_eq!(
        club.call(Method::DELETE, &path, Some(&ada), None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn public_feed_pages_without_gaps_or_duplicates() {
    let club = Club::start().await;
    club.member("ada", "inference").await;
    club.member("eve", "inference").await;
    let mut public = Vec::new();
    for i in 0..23 {
        let consumer = if i % 2 == 0 { "ada" } else { "eve" };
        public.push(
            club.record(consumer, "echo", Visibility::Public, None)
                .await,
        );
        club.record(consumer, "echo", Visibility::Private, None)
            .await;
        if i % 3 == 0 {
            club.record(consumer, "echo", Visibility::Unlisted, None)
                .await;
        }
    }
    public.reverse();
    let expected: Vec<String> = public.iter().map(ToString::to_string).collect();
    for limit in [1, 5, 7, 23, 100] {
        let feed = ids(&all_pages(&club, "/api/v1/requests/public", None, limit).await);
        assert_eq!(feed, expected, "limit {limit}");
        assert_eq!(feed.iter().collect::<HashSet<_>>().len(), feed.len());
    }
    // A record arriving while someone pages does not disturb the pages already handed out.
    let (_, first) = club.get("/api/v1/requests/public?limit=5", None).await;
    club.record("ada", "echo", Visibility::Public, None).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = club
        .get(
            &format!("/api/v1/requests/public?limit=5&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(
        ids(second["data"].as_array().unwrap()),
        expected[5..10].to_vec()
    );
}

#[tokio::test]
async fn scopes_are_enforced() {
    let club = Club::start().await;
    let (ada_user, provider_only) = club.member("ada", "provider").await;
    let inference = club.key(&ada_user, "inference").await;
    let account = club.key(&ada_user, "account").await;
    let id = club.record("ada", "echo", Visibility::Public, None).await;
    let record = format!("/api/v1/requests/{id}");

    // A provider-only key reads none of it.
    for (method, path) in [
        (Method::GET, "/api/v1/requests"),
        (Method::GET, "/api/v1/requests/public"),
        (Method::GET, record.as_str()),
        (Method::DELETE, record.as_str()),
        (Method::GET, "/api/v1/me"),
        (Method::GET, "/api/v1/keys"),
        (Method::GET, "/v1/models"),
        (Method::GET, "/v1/models/echo"),
    ] {
        let (status, body) = club
            .call(method.clone(), path, Some(&provider_only), None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert_envelope(&body, "insufficient_scope");
    }
    // No key where one is required: 401; a wrong key anywhere: 401.
    for (method, path) in [
        (Method::GET, "/api/v1/requests"),
        (Method::DELETE, record.as_str()),
        (Method::GET, "/api/v1/me"),
        (Method::GET, "/api/v1/keys"),
        (Method::POST, "/api/v1/keys"),
        (Method::GET, "/api/v1/providers/ada/box/requests"),
    ] {
        let (status, body) = club.call(method.clone(), path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_envelope(&body, "invalid_api_key");
    }
    let (status, _) = club
        .get("/api/v1/requests/public", Some("icl_not-a-real-key"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Anonymous may read the feed, public records and provider profiles.
    for path in [
        "/api/v1/requests/public",
        record.as_str(),
        "/api/v1/providers",
    ] {
        assert_eq!(club.get(path, None).await.0, StatusCode::OK, "{path}");
    }
    // inference and account both reach records; only account reaches /me and keys.
    for key in [&inference, &account] {
        assert_eq!(
            club.get("/api/v1/requests", Some(key)).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        club.get("/api/v1/me", Some(&account)).await.0,
        StatusCode::OK
    );
    for path in ["/api/v1/me", "/api/v1/keys"] {
        let (status, body) = club.get(path, Some(&inference)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_envelope(&body, "insufficient_scope");
    }
}

#[tokio::test]
async fn keys_secret_once_prefix_listed_revoke_works() {
    let club = Club::start().await;
    let (_, account) = club.member("ada", "account").await;
    let (status, created) = club
        .call(
            Method::POST,
            "/api/v1/keys",
            Some(&account),
            Some(json!({"name": "laptop", "scopes": ["inference"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["scopes"], json!(["inference"]));
    // The new key works, within its scope.
    assert_eq!(
        club.get("/api/v1/requests", Some(&secret)).await.0,
        StatusCode::OK
    );

    // Listings show the prefix, never the secret.
    let response = club
        .http
        .get(format!("{}/api/v1/keys", club.url))
        .bearer_auth(&account)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(!text.contains(&secret));
    assert!(!text.contains(&account));
    let listed: Value = serde_json::from_str(&text).unwrap();
    let keys = listed["data"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.get("secret").is_none()));
    assert!(
        keys.iter()
            .any(|k| k["id"] == key_id.as_str() && k["name"] == "laptop")
    );

    // Bad input creates nothing.
    for bad in [
        json!({"name": "", "scopes": ["inference"]}),
        json!({"name": "x".repeat(101), "scopes": ["inference"]}),
        json!({"name": "k", "scopes": []}),
        json!({"name": "k", "scopes": ["admin"]}),
        json!({"name": "k"}),
        json!({"name": "k", "scopes": ["inference"], "extra": true}),
    ] {
        let (status, body) = club
            .call(
                Method::POST,
                "/api/v1/keys",
                Some(&account),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_eq!(
        club.get("/api/v1/keys", Some(&account)).await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Revoked: refused at once, gone from the listing; revoking again is a 404.
    let path = format!("/api/v1/keys/{key_id}");
    assert_eq!(
        club.call(Method::DELETE, &path, Some(&account), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        club.get("/api/v1/requests", Some(&secret)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        club.get("/api/v1/keys", Some(&account)).await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, body) = club.call(Method::DELETE, &path, Some(&account), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "key_not_found");
    // Another member cannot revoke my key.
    let (_, eve) = club.member("eve", "account").await;
    let mine = club.get("/api/v1/keys", Some(&account)).await.1["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        club.call(
            Method::DELETE,
            &format!("/api/v1/keys/{mine}"),
            Some(&eve),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        club.get("/api/v1/me", Some(&account)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn me_shows_and_changes_settings() {
    let club = Club::start().await;
    let (_, account) = club.member("ada", "account").await;
    let (status, me) = club.get("/api/v1/me", Some(&account)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["handle"], "ada");
    assert_eq!(me["default_visibility"], "public");
    let (status, me) = club
        .call(
            Method::PATCH,
            "/api/v1/me",
            Some(&account),
            Some(json!({"default_visibility": "unlisted"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["default_visibility"], "unlisted");
    for bad in [
        json!({"default_visibility": "secret"}),
        json!({}),
        json!({"handle": "eve"}),
    ] {
        let (status, _) = club
            .call(Method::PATCH, "/api/v1/me", Some(&account), Some(bad))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        club.get("/api/v1/me", Some(&account)).await.1["default_visibility"],
        "unlisted"
    );
}

#[tokio::test]
async fn deleting_me_removes_everything() {
    let mut club = Club::start().await;
    let (ada_user, ada) = club.member("ada", "inference,provider,account").await;
    let (_, bob) = club.member("bob", "inference").await;
    let mine = club.record("ada", "echo", Visibility::Public, None).await;
    let mine_private = club.record("ada", "echo", Visibility::Private, None).await;
    // bob's request served by ada's node stays bob's.
    let bobs = club
        .record("bob", "echo", Visibility::Public, Some(("ada", "box")))
        .await;
    club.link_node(
        &ada,
        manifest("box", &[service("echo", None, &[model("echo", 1024)])]),
        &["echo"],
    );
    wait_for(&club, "/api/v1/providers/ada/box", |p| p["online"] == true).await;

    let (status, body) = club
        .call(Method::DELETE, "/api/v1/me", Some(&ada), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deleted"], true);
    assert_eq!(body["nodes_disconnected"], 1);
    assert!(body["not_reached"].as_str().unwrap().contains("operators"));

    assert_eq!(
        club.get("/api/v1/me", Some(&ada)).await.0,
        StatusCode::UNAUTHORIZED
    );
    for id in [mine, mine_private] {
        assert_eq!(
            club.get(&format!("/api/v1/requests/{id}"), None).await.0,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        ids(&all_pages(&club, "/api/v1/requests/public", None, 10).await),
        vec![bobs.to_string()]
    );
    assert_eq!(
        club.get(&format!("/api/v1/requests/{bobs}"), Some(&bob))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        club.get("/api/v1/providers/ada/box", None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(club.server.linked_nodes(), 0);
    let raw = club.raw().await;
    for (table, column) in [
        ("users", "id"),
        ("api_keys", "user_id"),
        ("providers", "operator_id"),
        ("records", "consumer_id"),
        ("records", "operator_id"),
    ] {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM {table} WHERE {column} = $1"
        ))
        .bind(ada_user.id.to_string())
        .fetch_one(&raw)
        .await
        .unwrap();
        assert_eq!(row.get::<i64, _>("n"), 0, "{table}.{column}");
    }
    let row = sqlx::query("SELECT COUNT(*) AS n FROM provider_revisions")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(row.get::<i64, _>("n"), 0);
}

#[tokio::test]
async fn errors_use_the_openai_envelope() {
    let club = Club::start().await;
    let (_, ada) = club.member("ada", "inference,account").await;
    let (status, body) = club
        .get(&format!("/api/v1/requests/{}", RecordId::new()), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "request_not_found");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = club.get("/api/v1/requests/not-an-id", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&body, "invalid_request_id");
    let (status, body) = club.get("/api/v1/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "unknown_route");
    let (status, body) = club
        .call(Method::PUT, "/api/v1/requests", Some(&ada), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_envelope(&body, "method_not_allowed");
    // The OpenAI routes too.
    for (method, path) in [
        (Method::GET, "/v1/chat/completions"),
        (Method::DELETE, "/v1/models"),
        (Method::PUT, "/v1/batches"),
    ] {
        let (status, body) = club.call(method, path, Some(&ada), None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_envelope(&body, "method_not_allowed");
    }
    let (status, body) = club.get("/api/v1/providers/nobody/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "provider_not_found");
    // Oversized and malformed bodies.
    let huge = json!({"name": "x".repeat(20_000), "scopes": ["inference"]});
    let (status, body) = club
        .call(Method::POST, "/api/v1/keys", Some(&ada), Some(huge))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_envelope(&body, "request_too_large");
    let response = club
        .http
        .post(format!("{}/api/v1/keys", club.url))
        .bearer_auth(&ada)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_envelope(&response.json::<Value>().await.unwrap(), "invalid_json");
}

/// Every route of the club API and the OpenAI-compatible API, as (method, OpenAPI path).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/requests"),
    ("get", "/api/v1/requests/public"),
    ("get", "/api/v1/requests/{id}"),
    ("patch", "/api/v1/requests/{id}"),
    ("delete", "/api/v1/requests/{id}"),
    ("get", "/api/v1/providers"),
    ("get", "/api/v1/providers/{operator}/{name}"),
    ("patch", "/api/v1/providers/{operator}/{name}"),
    ("get", "/api/v1/providers/{operator}/{name}/requests"),
    ("get", "/api/v1/me"),
    ("patch", "/api/v1/me"),
    ("delete", "/api/v1/me"),
    ("get", "/api/v1/keys"),
    ("post", "/api/v1/keys"),
    ("delete", "/api/v1/keys/{id}"),
    ("get", "/api/v1/session"),
    ("post", "/api/v1/auth/device"),
    ("post", "/api/v1/auth/device/token"),
    ("get", "/openapi.json"),
    ("get", "/v1/models"),
    ("get", "/v1/models/{model}"),
    ("post", "/v1/chat/completions"),
    ("post", "/v1/completions"),
    ("post", "/v1/responses"),
    ("post", "/v1/embeddings"),
    ("post", "/v1/audio/transcriptions"),
    ("post", "/v1/audio/speech"),
    ("post", "/v1/images/generations"),
    ("get", "/api/v1/requests/{id}/blobs/{blob}"),
    ("post", "/v1/files"),
    ("get", "/v1/files"),
    ("get", "/v1/files/{id}"),
    ("delete", "/v1/files/{id}"),
    ("get", "/v1/files/{id}/content"),
    ("post", "/v1/batches"),
    ("get", "/v1/batches"),
    ("get", "/v1/batches/{id}"),
    ("post", "/v1/batches/{id}/cancel"),
];

#[tokio::test]
async fn openapi_lists_every_route() {
    let club = Club::start().await;
    let (status, doc) = club.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        assert!(
            paths.get(*path).and_then(|p| p.get(*method)).is_some(),
            "{method} {path} is missing from /openapi.json"
        );
    }
    let documented: usize = paths
        .values()
        .map(|p| {
            p.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .count()
        })
        .sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "a documented route is not in ROUTES"
    );
    // Every $ref resolves.
    let text = doc.to_string();
    for piece in text.split("\"#/components/schemas/").skip(1) {
        let name = &piece[..piece.find('"').unwrap()];
        assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
    }
    // docs/openapi.json is the same document (CLUB_UPDATE_OPENAPI=1 rewrites it).
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let pretty = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var_os("CLUB_UPDATE_OPENAPI").is_some() {
        std::fs::write(&file, &pretty).unwrap();
    }
    let checked_in: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        checked_in, doc,
        "docs/openapi.json is stale: run with CLUB_UPDATE_OPENAPI=1"
    );
}

fn model(id: &str, context: u32) -> Value {
    json!({"id": id, "context_length": context})
}

fn service(name: &str, access: Option<&str>, models: &[Value]) -> Value {
    let mut service = json!({
        "name": name, "type": "llm", "engine": "other", "url": "http://127.0.0.1:9/v1",
        "api_key": "sk-should-never-leave-the-node", "models": models,
    });
    if let Some(access) = access {
        service["access"] = json!(access);
    }
    service
}

fn manifest(name: &str, services: &[Value]) -> Value {
    json!({"schema_version": 1, "agent": {"name": name}, "hosts": [{"id": "h1", "services": services}]})
}

/// Polls `path` (anonymously) until `ready` holds.
async fn wait_for(club: &Club, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let (status, body) = club.get(path, None).await;
        if status == StatusCode::OK && ready(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never became ready");
}

#[tokio::test]
async fn models_show_capabilities_and_respect_access() {
    let mut club = Club::start().await;
    let (_, bob) = club.member("bob", "provider").await;
    let (carol_user, carol_link) = club.member("carol", "provider").await;
    let carol = club.key(&carol_user, "inference").await;
    let (_, ada) = club.member("ada", "inference").await;

    let mut echo_big = model("echo", 8192);
    echo_big["hf"] = json!("club/echo");
    echo_big["input_modalities"] = json!(["text", "image"]);
    echo_big["features"] = json!(["reasoning", "tools"]);
    club.link_node(
        &bob,
        manifest("box", &[service("echo", None, &[echo_big])]),
        &["echo"],
    );
    let mut echo_small = model("Echo", 4096);
    echo_small["features"] = json!(["tools"]);
    club.link_node(
        &carol_link,
        manifest(
            "den",
            &[
                service("echo", None, &[echo_small]),
                service("mine", Some("owner"), &[model("carol-only", 2048)]),
            ],
        ),
        &["Echo", "carol-only"],
    );
    for path in ["/api/v1/providers/bob/box", "/api/v1/providers/carol/den"] {
        wait_for(&club, path, |p| p["online"] == true).await;
    }

    // A member sees the shared model merged over both nodes, not carol's private one.
    let (status, list) = club.get("/v1/models", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    let echo = &data[0];
    assert_eq!(echo["id"], "echo");
    assert_eq!(echo["object"], "model");
    assert!(echo["created"].as_u64().unwrap() > 0);
    assert_eq!(echo["owned_by"], "inference-club");
    assert_eq!(echo["nodes"], 2);
    assert_eq!(echo["context_length"], 4096);
    assert_eq!(echo["input_modalities"], json!(["text"]));
    assert_eq!(echo["output_modalities"], json!(["text"]));
    assert_eq!(echo["features"], json!(["tools"]));
    assert_eq!(echo["hf"], "club/echo");

    // The owner sees their own owner-only model too.
    let (_, list) = club.get("/v1/models", Some(&carol)).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["carol-only", "echo"]);
    let carol_only = &list["data"][0];
    assert_eq!(carol_only["owned_by"], "carol");
    assert_eq!(carol_only["nodes"], 1);
    assert_eq!(carol_only["context_length"], 2048);

    // Anonymous: no policy admits anonymous consumers.
    let (status, list) = club.get("/v1/models", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!({"object": "list", "data": []}));

    // Profiles: online, redacted, with models and counts; never the node's api_key.
    let (_, providers) = club.get("/api/v1/providers", None).await;
    let text = providers.to_string();
    assert!(!text.contains("sk-should-never-leave-the-node"), "{text}");
    let profiles = providers["data"].as_array().unwrap();
    assert_eq!(profiles.len(), 2);
    assert!(profiles.iter().all(|p| p["online"] == true));
    let box_profile = &profiles[0];
    assert_eq!(box_profile["operator"], "bob");
    assert_eq!(box_profile["name"], "box");
    assert_eq!(box_profile["models"][0]["id"], "echo");
    assert_eq!(box_profile["models"][0]["context_length"], 8192);
    assert!(
        box_profile["manifest"]["hosts"][0]["services"][0]
            .get("api_key")
            .is_none()
    );
    let models_text = club.get("/v1/models", Some(&carol)).await.1.to_string();
    assert!(!models_text.contains("sk-should-never-leave-the-node"));

    // The operator lists what their nodes served (any visibility); nobody else may.
    club.record("ada", "echo", Visibility::Private, Some(("bob", "box")))
        .await;
    club.record("ada", "echo", Visibility::Public, Some(("bob", "box")))
        .await;
    club.record("ada", "echo", Visibility::Public, Some(("carol", "den")))
        .await;
    let (_, profile) = club.get("/api/v1/providers/bob/box", None).await;
    assert_eq!(profile["counts"]["requests_served"], 2);
    assert_eq!(profile["counts"]["requests_served_exact"], true);
    let bob_reader = club
        .key(
            &club.store.user_by_handle("bob").await.unwrap().unwrap(),
            "inference",
        )
        .await;
    let served = all_pages(
        &club,
        "/api/v1/providers/bob/box/requests",
        Some(&bob_reader),
        1,
    )
    .await;
    assert_eq!(served.len(), 2);
    assert!(served.iter().all(|r| r["provider"]["name"] == "box"));
    let (status, body) = club
        .get("/api/v1/providers/bob/box/requests", Some(&ada))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_envelope(&body, "not_operator");
    let (status, _) = club
        .get("/api/v1/providers/bob/box/requests", Some(&bob))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A node that leaves is offline in its profile and its models leave the list.
    club.nodes[0].shutdown();
    wait_for(&club, "/api/v1/providers/bob/box", |p| p["online"] == false).await;
    let (_, list) = club.get("/v1/models", Some(&ada)).await;
    assert_eq!(list["data"][0]["nodes"], 1);
    assert_eq!(list["data"][0]["owned_by"], "carol");
}

/// `GET /v1/models/{model}` answers the entry `/v1/models` lists, found as a request names the
/// model (served id or Hugging Face id, any case, ids holding `/` raw or `%2F`-encoded), under
/// the list's rules; any other id is a 404 `model_not_found`.
#[tokio::test]
async fn a_model_is_retrieved_as_the_list_shows_it() {
    let mut club = Club::start().await;
    let (_, bob) = club.member("bob", "provider").await;
    let (carol_user, carol_link) = club.member("carol", "provider").await;
    let carol = club.key(&carol_user, "inference").await;
    let (_, ada) = club.member("ada", "inference").await;

    let mut echo = model("echo", 8192);
    echo["hf"] = json!("club/echo");
    club.link_node(
        &bob,
        manifest(
            "box",
            &[service(
                "echo",
                None,
                &[echo, model("Qwen/Qwen3-8B", 32768)],
            )],
        ),
        &["echo", "Qwen/Qwen3-8B"],
    );
    club.link_node(
        &carol_link,
        manifest(
            "den",
            &[service("mine", Some("owner"), &[model("carol-only", 2048)])],
        ),
        &["carol-only"],
    );
    for path in ["/api/v1/providers/bob/box", "/api/v1/providers/carol/den"] {
        wait_for(&club, path, |p| p["online"] == true).await;
    }

    // Every entry of the list, by its id as it is and %2F-encoded: the same object.
    let (status, list) = club.get("/v1/models", Some(&ada)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let data = list["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["echo", "Qwen/Qwen3-8B"], "{list}");
    for entry in data {
        let id = entry["id"].as_str().unwrap();
        for path in [
            format!("/v1/models/{id}"),
            format!("/v1/models/{}", id.replace('/', "%2F")),
        ] {
            let answer = club.server.call(Method::GET, &path, Some(&ada), None).await;
            assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text);
            assert_eq!(&answer.json(), entry, "{path}");
            // Counted against the key's rate, as the list is.
            assert!(
                answer.headers.contains_key("x-ratelimit-remaining"),
                "{path}"
            );
        }
    }
    // As a request would route: any case, or the Hugging Face id.
    let echo_entry = data.iter().find(|m| m["id"] == "echo").unwrap();
    for path in [
        "/v1/models/ECHO",
        "/v1/models/club/echo",
        "/v1/models/Club%2FEcho",
    ] {
        let (status, body) = club.get(path, Some(&ada)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(&body, echo_entry, "{path}");
    }
    let (_, qwen) = club.get("/v1/models/qwen/qwen3-8b", Some(&ada)).await;
    assert_eq!(qwen["id"], "Qwen/Qwen3-8B");
    assert_eq!(qwen["context_length"], 32768);

    // Not listed: unknown, someone else's owner-only model, or anonymous (no policy admits
    // anonymous consumers): 404 model_not_found.
    for (path, key) in [
        ("/v1/models/no-such-model", Some(ada.as_str())),
        ("/v1/models/no/such/model", Some(ada.as_str())),
        ("/v1/models/carol-only", Some(ada.as_str())),
        ("/v1/models/echo", None),
    ] {
        let (status, body) = club.get(path, key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_envelope(&body, "model_not_found");
        assert_eq!(body["error"]["param"], "model", "{body}");
    }
    // The owner sees their owner-only model, as their list does.
    let (_, list) = club.get("/v1/models", Some(&carol)).await;
    let listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "carol-only")
        .unwrap()
        .clone();
    let (status, body) = club.get("/v1/models/carol-only", Some(&carol)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, listed);
    // A wrong key is a 401, as for the list.
    let (status, body) = club
        .get("/v1/models/echo", Some("icl_not-a-real-key"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_envelope(&body, "invalid_api_key");
}

/// Bad chat requests get a clear error in the OpenAI envelope and change nothing: no record is
/// made for a body that is too large, not JSON, or not a chat request.
#[tokio::test]
async fn bad_chat_requests_are_refused_and_record_nothing() {
    let club = Club::start().await;
    let (user, ada) = club.member("ada", "inference").await;
    let post = |body: Vec<u8>| {
        club.http
            .post(format!("{}/v1/chat/completions", club.url))
            .bearer_auth(&ada)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let huge = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "x".repeat(5 * 1024 * 1024)}]
    });
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (huge.to_string().into_bytes(), StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST, "invalid_json"),
        (br#"{"model": 7, "messages": []}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_json"),
        (br#"{"model": "m", "messages": []}"#.to_vec(), StatusCode::BAD_REQUEST, "empty_messages"),
        (
            br#"{"model": "", "messages": [{"role": "user", "content": "hi"}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "missing_model",
        ),
        (
            br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}], "visibility": "secret"}"#
                .to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_visibility",
        ),
    ];
    for (body, status, code) in cases {
        let response = post(body).await.unwrap();
        assert_eq!(response.status(), status, "{code}");
        assert!(
            response.headers().get("x-club-request-id").is_none(),
            "{code}"
        );
        let body: Value = response.json().await.unwrap();
        assert_envelope(&body, code);
    }
    let mine = club
        .store
        .list_records(&RecordQuery::made_by(user.id))
        .await
        .unwrap();
    assert!(mine.items.is_empty(), "a refused request left a record");
}
