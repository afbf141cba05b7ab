//! A coordinator serving on 127.0.0.1 in this process, with its store at hand.

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::store::{Scopes, Store, User, UserId};
use crate::{Coordinator, CoordinatorBuilder};

/// A coordinator serving on `127.0.0.1:PORT` in this process, and its store. Dropping it stops
/// the server.
pub struct TestServer {
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The coordinator.
    pub coordinator: Coordinator,
    /// Its store, to seed and inspect.
    pub store: Store,
    shutdown: CancellationToken,
    served: Option<tokio::task::JoinHandle<Result<(), crate::Error>>>,
    http: reqwest::Client,
}

/// What a call answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
}

impl Answer {
    /// The body as JSON, `Null` when empty; panics (failing the test) when it is not JSON.
    pub fn json(&self) -> Value {
        if self.text.is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.text)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text))
    }

    /// The body as JSON, `Null` when empty, the text itself as a JSON string when it is not JSON.
    pub fn json_or_text(&self) -> Value {
        if self.text.is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.text).unwrap_or_else(|_| Value::String(self.text.clone()))
    }
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// A coordinator on `database_url`, configured by `configure`, serving on a free port.
    pub async fn start(
        database_url: &str,
        configure: impl FnOnce(CoordinatorBuilder) -> CoordinatorBuilder,
    ) -> Self {
        Self::start_at(bind().await, database_url, configure).await
    }

    /// The same, serving on `listener` (from [`bind`], whose URL the configuration may need).
    pub async fn start_at(
        (listener, url): (tokio::net::TcpListener, String),
        database_url: &str,
        configure: impl FnOnce(CoordinatorBuilder) -> CoordinatorBuilder,
    ) -> Self {
        super::install_crypto();
        let coordinator = configure(Coordinator::builder().database(database_url))
            .build()
            .await
            .unwrap();
        let store = coordinator.state().store.clone();
        let shutdown = CancellationToken::new();
        let served = tokio::spawn({
            let coordinator = coordinator.clone();
            let stop = shutdown.clone();
            async move { coordinator.serve(listener, stop.cancelled_owned()).await }
        });
        Self {
            url,
            coordinator,
            store,
            shutdown,
            served: Some(served),
            http: reqwest::Client::new(),
        }
    }

    /// A new member `handle` and a key of theirs with `scopes` (`"inference,account"`).
    pub async fn member(&self, handle: &str, scopes: &str) -> (User, String) {
        let user = self.store.create_user(handle, None).await.unwrap();
        let key = self.key(&user, "test", scopes).await;
        (user, key)
    }

    /// Another key of `user`'s, named `name`, with `scopes`.
    pub async fn key(&self, user: &User, name: &str, scopes: &str) -> String {
        self.store
            .create_key(user.id, name, scopes.parse::<Scopes>().unwrap())
            .await
            .unwrap()
            .1
    }

    /// Calls `path` with `method`, the bearer `key` if any, and `body` as JSON if any.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    /// How many nodes are linked to it now.
    pub fn linked_nodes(&self) -> usize {
        self.coordinator.state().fleet.nodes.online().len()
    }

    /// Closes every link of the operator `operator_id` (`handle`), as account deletion does.
    pub fn close_operator_links(&self, operator_id: UserId, handle: &str) -> usize {
        self.coordinator
            .state()
            .fleet
            .nodes
            .close_operator(operator_id, handle)
    }

    /// Stops serving (draining as on SIGTERM) and waits until it has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
    }
}

/// A listener on a free port of 127.0.0.1 and its URL (`http://127.0.0.1:PORT`).
pub async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
