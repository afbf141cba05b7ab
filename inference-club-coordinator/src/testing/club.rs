//! A club in this process: a coordinator on a database of its own, a member with a key holding
//! every scope, and (optionally) one node of hers serving the given engines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use inference_club_core::manifest::{Choice as _, ServiceType};
use inference_club_core::provider::Provider;
use inference_club_provider::node::{Node, NodeConfig, NodeHandle, Offer};
use inference_club_provider::router::{Route, Router};

use super::{HANDLE, NODE, TestDatabase, TestServer};
use crate::store::{Scope, Scopes, Store};
use crate::{Coordinator, CoordinatorBuilder};

/// A coordinator serving on 127.0.0.1 in this process, its store, a member [`HANDLE`] with a
/// key holding every scope, and one node of hers ([`NODE`]) serving the given engines.
/// Dropping it stops the node and the coordinator and deletes a SQLite database.
pub struct TestClub {
    /// The coordinator's base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The member's key (every scope).
    pub key: String,
    /// The coordinator's store.
    pub store: Store,
    /// The coordinator.
    pub coordinator: Coordinator,
    /// Its database.
    pub database: Option<TestDatabase>,
    node: Option<NodeHandle>,
    server: TestServer,
}

impl std::fmt::Debug for TestClub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestClub")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TestClub {
    /// A club on SQLite whose node serves each `(model, engine)` as an `llm` service.
    pub async fn start(engines: Vec<(&str, Arc<dyn Provider>)>) -> Self {
        Self::start_with(TestDatabase::sqlite(), engines, |builder| builder).await
    }

    /// A club on SQLite whose node serves each of `services` (of any type, with features).
    pub async fn start_services(services: Vec<TestService>) -> Self {
        Self::start_services_with(TestDatabase::sqlite(), services, |builder| builder).await
    }

    /// A club on `database`, its coordinator configured by `configure`, whose node serves each
    /// `(model, engine)` (no node when `engines` is empty).
    pub async fn start_with(
        database: TestDatabase,
        engines: Vec<(&str, Arc<dyn Provider>)>,
        configure: impl FnOnce(CoordinatorBuilder) -> CoordinatorBuilder,
    ) -> Self {
        let services = engines
            .into_iter()
            .map(|(model, engine)| TestService::new(model, engine))
            .collect();
        Self::start_services_with(database, services, configure).await
    }

    /// A club on `database`, its coordinator configured by `configure`, whose node serves each
    /// of `services` (no node when `services` is empty).
    pub async fn start_services_with(
        database: TestDatabase,
        services: Vec<TestService>,
        configure: impl FnOnce(CoordinatorBuilder) -> CoordinatorBuilder,
    ) -> Self {
        let server = TestServer::start(&database.url, configure).await;
        let store = server.store.clone();
        let user = store.create_user(HANDLE, None).await.unwrap();
        let (_, key) = store.create_key(user.id, "all", Scopes::ALL).await.unwrap();
        let url = server.url.clone();
        let node = if services.is_empty() {
            None
        } else {
            Some(start_node(&url, &key, services))
        };
        let club = Self {
            url,
            key,
            store,
            coordinator: server.coordinator.clone(),
            database: Some(database),
            node,
            server,
        };
        if club.node.is_some() {
            club.wait_for_nodes(1, Duration::from_secs(10)).await;
        }
        club
    }

    /// Waits until `count` nodes are linked to the coordinator; panics after `within`.
    pub async fn wait_for_nodes(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.server.linked_nodes() < count {
            assert!(Instant::now() < deadline, "{count} node(s) did not link");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Adds a member and answers a key of theirs with the inference and account scopes.
    pub async fn add_member(&self, handle: &str) -> String {
        let user = self.store.create_user(handle, None).await.unwrap();
        let scopes = Scopes::only(Scope::Inference).with(Scope::Account);
        let (_, key) = self.store.create_key(user.id, "all", scopes).await.unwrap();
        key
    }
}

/// One service of a [`TestClub`]'s node: an engine serving one model, with a service type
/// (default `llm`) and service features (default none).
///
/// ```no_run
/// # use std::sync::Arc;
/// # use inference_club_coordinator::testing::{TestClub, TestService};
/// # use inference_club_core::manifest::ServiceType;
/// # use inference_club_core::provider::Provider;
/// # async fn club(echo: Arc<dyn Provider>, media: Arc<dyn Provider>) {
/// let club = TestClub::start_services(vec![
///     TestService::new("echo-embed", echo).features(["embeddings"]),
///     TestService::new("whisper-1", media).service_type(ServiceType::Stt),
/// ])
/// .await;
/// # }
/// ```
#[derive(Clone)]
pub struct TestService {
    model: String,
    engine: Arc<dyn Provider>,
    service_type: ServiceType,
    features: Vec<String>,
}

impl std::fmt::Debug for TestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestService")
            .field("model", &self.model)
            .field("service_type", &self.service_type)
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

impl TestService {
    /// An `llm` service named `model` whose engine serves `model`.
    pub fn new(model: &str, engine: Arc<dyn Provider>) -> Self {
        Self {
            model: model.to_owned(),
            engine,
            service_type: ServiceType::Llm,
            features: Vec::new(),
        }
    }

    /// The service's type (`stt`, `tts`, `image`, …).
    pub fn service_type(mut self, service_type: ServiceType) -> Self {
        self.service_type = service_type;
        self
    }

    /// The service's features (e.g. `embeddings`), declared in the manifest and on the route.
    pub fn features(mut self, features: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.features = features.into_iter().map(Into::into).collect();
        self
    }
}

/// A node of [`HANDLE`]'s named [`NODE`], linked to `url` with `key`, serving each service (one
/// service per model, named after it; its model declared with an `hf` id `test/MODEL`, and for
/// an `llm` service a context length and the `reasoning` feature).
fn start_node(url: &str, key: &str, services: Vec<TestService>) -> NodeHandle {
    let mut router = Router::builder();
    let mut declared_services = Vec::new();
    for service in services {
        let TestService {
            model,
            engine,
            service_type,
            features,
        } = service;
        router = router.route(
            Route::new(model.as_str(), engine)
                .model(model.as_str())
                .service_type(service_type)
                .features(features.iter().cloned()),
        );
        let declared = if service_type == ServiceType::Llm {
            serde_json::json!({
                "id": model,
                "hf": format!("test/{model}"),
                "context_length": 4096,
                "features": ["reasoning"]
            })
        } else {
            serde_json::json!({"id": model, "hf": format!("test/{model}")})
        };
        let mut declared_service = serde_json::json!({
            "name": model,
            "type": service_type.as_str(),
            "url": "http://127.0.0.1:9/v1",
            "models": [declared]
        });
        if !features.is_empty() {
            declared_service["features"] = serde_json::json!(features);
        }
        declared_services.push(declared_service);
    }
    let manifest = serde_json::json!({
        "schema_version": 1,
        "agent": {"name": NODE},
        "hosts": [{"id": "h", "services": declared_services}]
    });
    let node = Node::from_offer(
        NodeConfig::new(url.to_owned(), key.to_owned()),
        Offer::new(router.build(), manifest),
    )
    .unwrap();
    let handle = node.handle();
    tokio::spawn(node.run());
    handle
}

impl Drop for TestClub {
    fn drop(&mut self) {
        if let Some(node) = &self.node {
            node.shutdown();
        }
        if let Some(database) = self.database.take()
            && !database.is_postgres()
        {
            database.remove_sqlite_files();
        }
    }
}
