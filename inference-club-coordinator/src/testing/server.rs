//! A coordinator serving on 127.0.0.1 in this process, with its store at hand.

use tokio_util::sync::CancellationToken;

use crate::store::{Store, UserId};
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
