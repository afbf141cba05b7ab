//! The provider node: dials the coordinator, publishes the manifest, and serves the jobs routed
//! to it through its [`Router`].
//!
//! The node dials **out** over a WebSocket, so it works behind NAT with no open port. It
//! reconnects after any failure with capped exponential backoff and jitter; it re-reads its
//! manifest on request ([`NodeHandle::reload`], wired to SIGHUP by `club-provider`) or when the
//! file changes, keeping the old one when the new one is invalid; on shutdown it stops taking
//! jobs, lets running ones finish within a grace period, and says goodbye.

mod backoff;
mod call;
mod failures;
mod job;
pub mod job_log;
mod services;
mod session;

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use std::time::{Duration, SystemTime};

use inference_club_core::link::ServiceLoad;
use inference_club_core::provider::Provider;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use url::Url;

pub use backoff::Backoff;
pub use call::MAX_UPLOAD_BYTES;
pub use job_log::{JobLog, JobLogConfig};
pub use services::{
    ManifestProblems, backend_for, backend_with_timeouts, load_manifest,
    load_manifest_with_timeouts,
};
pub use session::NODE_VERSION;

use crate::{Router, Timeouts};

/// How a node reaches its coordinator and behaves on the link.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The coordinator: `http(s)://HOST[:PORT]` or `ws(s)://…`, with or without `/v1`; the link
    /// path is completed as [`link_url`] tells.
    pub coordinator: String,
    /// An API key with the `provider` scope.
    pub api_key: String,
    /// Time allowed to connect and to receive `welcome`.
    pub connect_timeout: Duration,
    /// Heartbeat interval; `None` uses the coordinator's.
    pub heartbeat_interval: Option<Duration>,
    /// Reconnection delays.
    pub backoff: Backoff,
    /// On shutdown, how long running jobs may take before they are cancelled.
    pub shutdown_grace: Duration,
    /// How often the manifest file is checked for changes; `None` turns watching off.
    pub watch_interval: Option<Duration>,
    /// How long the backends built from the manifest wait for their engines (connect, first
    /// token, between chunks).
    pub engine_timeouts: Timeouts,
}

impl NodeConfig {
    /// A configuration with defaults: 10 s connect timeout, 30 s grace, manifest checked every 2 s.
    pub fn new(coordinator: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            coordinator: coordinator.into(),
            api_key: api_key.into(),
            connect_timeout: Duration::from_secs(10),
            heartbeat_interval: None,
            backoff: Backoff::default(),
            shutdown_grace: Duration::from_secs(30),
            watch_interval: Some(Duration::from_secs(2)),
            engine_timeouts: Timeouts::default(),
        }
    }
}

/// Why a coordinator URL given by the operator cannot be linked to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkUrlError {
    /// The URL has no scheme (`127.0.0.1:8080`, `club.example`).
    #[error("the URL has no scheme: include http:// or https://, as in http://HOST:8080")]
    NoScheme,
    /// The URL's scheme is not one the link speaks (`localhost:8080` reads as scheme
    /// `localhost`).
    #[error(
        "unsupported scheme {0:?}: include http:// or https:// (or ws://, wss://), as in \
         http://HOST:8080"
    )]
    UnsupportedScheme(String),
    /// The URL does not parse.
    #[error("{0}")]
    Invalid(url::ParseError),
}

/// The link URL for a coordinator URL given by the operator: the coordinator's base URL
/// (`https://HOST`), the same with `/v1` (the consumers' base URL), or the link URL itself
/// (`…/v1/link`). `http` becomes `ws` and `https` becomes `wss`; `/v1/link` is added to a URL
/// with no path, and `/link` to one whose path ends in `/v1` (a coordinator behind a path
/// prefix, too); any other path is kept as given.
pub fn link_url(coordinator: &str) -> Result<Url, LinkUrlError> {
    let mut url = Url::parse(coordinator).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => LinkUrlError::NoScheme,
        other => LinkUrlError::Invalid(other),
    })?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => return Err(LinkUrlError::UnsupportedScheme(other.to_owned())),
    };
    // Between these special schemes the change cannot fail.
    url.set_scheme(scheme)
        .map_err(|()| LinkUrlError::UnsupportedScheme(url.scheme().to_owned()))?;
    let path = url.path().trim_end_matches('/');
    if path.is_empty() {
        url.set_path("/v1/link");
    } else if path.ends_with("/v1") {
        let path = format!("{path}/link");
        url.set_path(&path);
    }
    Ok(url)
}

/// What the node offers right now: the router over its services and the redacted manifest it
/// announces. Replaced as a whole on reload; jobs already running keep the one they started on.
pub struct Offer {
    router: Arc<Router>,
    manifest: serde_json::Value,
}

impl Offer {
    /// An offer of `router`, announced with the (already redacted) `manifest`.
    pub fn new(router: Router, manifest: serde_json::Value) -> Self {
        Self {
            router: Arc::new(router),
            manifest,
        }
    }

    /// An offer of `router`, announced with `manifest` redacted (its API keys and commands
    /// never leave the machine).
    pub fn announcing(
        router: Router,
        manifest: &inference_club_core::manifest::ServiceManifest,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::new(
            router,
            serde_json::to_value(manifest.redacted())?,
        ))
    }

    fn load(&self) -> Vec<ServiceLoad> {
        self.router.load()
    }

    fn provider(&self) -> Arc<dyn Provider> {
        self.router.clone()
    }
}

/// Where the node's offer comes from.
#[derive(Debug, Clone)]
pub enum OfferSource {
    /// A manifest file, re-read on reload.
    Manifest(PathBuf),
    /// A fixed offer (for embedding and tests); reload does nothing.
    Fixed,
}

/// A running node's controls.
#[derive(Debug, Clone, Default)]
pub struct NodeHandle {
    reload: Arc<Notify>,
    shutdown: CancellationToken,
}

impl NodeHandle {
    /// Re-read the manifest now (what SIGHUP does).
    pub fn reload(&self) {
        self.reload.notify_one();
    }

    /// Stop taking jobs, finish running ones within the grace period, say goodbye, and return.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

/// A provider node.
pub struct Node {
    config: NodeConfig,
    source: OfferSource,
    offer: Offer,
    log: JobLog,
    handle: NodeHandle,
    /// When the manifest file was last modified as it was read.
    manifest_seen: Option<SystemTime>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The manifest is invalid or unreadable.
    #[error("{0}")]
    Manifest(#[from] ManifestProblems),
    /// The coordinator URL is not usable.
    #[error("invalid coordinator URL {url:?}: {reason}")]
    CoordinatorUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

impl NodeError {
    /// Whether starting again unchanged could succeed: never, the configuration must be fixed.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

impl Node {
    /// A node that serves the manifest at `path`, read and validated now.
    ///
    /// The futures of the node's API are boxed, so that a crate calling them does not compile
    /// the node's state machines again.
    pub fn from_manifest(
        config: NodeConfig,
        path: impl Into<PathBuf>,
    ) -> BoxFuture<'static, Result<Self, NodeError>> {
        Self::from_manifest_at(config, path.into())
    }

    #[inline(never)]
    fn from_manifest_at(
        config: NodeConfig,
        path: PathBuf,
    ) -> BoxFuture<'static, Result<Self, NodeError>> {
        Box::pin(async move {
            // Taken before the file is read: an edit from here on is seen as a change.
            let seen = modified(&path);
            let offer = load_manifest_with_timeouts(&path, config.engine_timeouts).await?;
            let mut node = Self::with_offer(config, offer, OfferSource::Manifest(path))?;
            node.manifest_seen = seen;
            Ok(node)
        })
    }

    /// A node that serves a fixed offer (a router built in code).
    pub fn from_offer(config: NodeConfig, offer: Offer) -> Result<Self, NodeError> {
        Self::with_offer(config, offer, OfferSource::Fixed)
    }

    fn with_offer(
        config: NodeConfig,
        offer: Offer,
        source: OfferSource,
    ) -> Result<Self, NodeError> {
        link_url(&config.coordinator).map_err(|e| NodeError::CoordinatorUrl {
            url: config.coordinator.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            config,
            source,
            offer,
            log: JobLog::disabled(),
            handle: NodeHandle::default(),
            manifest_seen: None,
        })
    }

    /// Keep the operator's job log.
    pub fn with_job_log(mut self, log: JobLog) -> Self {
        self.log = log;
        self
    }

    /// The node's controls (reload, shutdown); take it before calling [`Node::run`].
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Runs until shutdown: links to the coordinator, serves jobs, reconnects when the link is
    /// lost.
    ///
    /// The node runs as a task of the current runtime, so that a `block_on(node.run())` does not
    /// keep its link on the calling thread, where every frame between the link and a job would
    /// cross threads. Dropping the returned future stops the node.
    #[inline(never)]
    pub fn run(self) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let task = AbortOnDropHandle::new(tokio::spawn(self.serve()));
            if let Err(error) = task.await
                && error.is_panic()
            {
                std::panic::resume_unwind(error.into_panic());
            }
        })
    }

    async fn serve(self) {
        let Self {
            config,
            source,
            offer,
            log,
            handle,
            manifest_seen,
        } = self;
        let (offers_tx, mut offers) = watch::channel(Arc::new(offer));
        let watcher = tokio::spawn(watch_manifest(
            source,
            manifest_seen,
            config.watch_interval,
            config.engine_timeouts,
            handle.reload.clone(),
            handle.shutdown.clone(),
            offers_tx,
        ));
        let mut backoff = config.backoff.clone();
        let failures = failures::FailureWarnings::default();
        loop {
            // Whether this session got as far as welcome: a session that did not never linked.
            let mut linked = false;
            let end = session::run(
                &config,
                &mut offers,
                &handle.shutdown,
                &log,
                &failures,
                || {
                    linked = true;
                    backoff.reset();
                },
            )
            .await;
            // A session that got as far as welcome resets the backoff; a refused key waits the
            // longest delay, since only the operator can fix it.
            let delay = match end {
                session::SessionEnd::Shutdown => break,
                session::SessionEnd::Lost(why) if linked => {
                    tracing::warn!("link to the coordinator lost: {why}");
                    backoff.next_delay()
                }
                session::SessionEnd::Lost(why) => {
                    tracing::warn!("cannot link to the coordinator: {why}");
                    backoff.next_delay()
                }
                session::SessionEnd::Refused(refused) => {
                    tracing::error!(reason = %refused.reason, "the coordinator refused this node");
                    for problem in &refused.errors {
                        tracing::error!("  {problem}");
                    }
                    backoff.next_delay()
                }
                session::SessionEnd::KeyRejected(why) => {
                    tracing::error!(
                        "the coordinator does not accept this node's key ({why}); use a key with \
                         the provider scope of a current member"
                    );
                    backoff.max()
                }
            };
            tracing::info!("reconnecting in {delay:?}");
            tokio::select! {
                () = handle.shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
                // A fixed manifest deserves an immediate retry.
                Ok(()) = offers.changed() => {}
            }
        }
        watcher.abort();
        tracing::info!("node stopped");
    }
}

async fn watch_manifest(
    source: OfferSource,
    mut last_seen: Option<SystemTime>,
    interval: Option<Duration>,
    timeouts: Timeouts,
    reload: Arc<Notify>,
    shutdown: CancellationToken,
    offers: watch::Sender<Arc<Offer>>,
) {
    let OfferSource::Manifest(path) = source else {
        return;
    };
    loop {
        let tick = async {
            match interval {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        let asked = tokio::select! {
            () = shutdown.cancelled() => return,
            () = reload.notified() => true,
            () = tick => false,
        };
        let now = modified(&path);
        if !asked && now == last_seen {
            continue;
        }
        last_seen = now;
        match load_manifest_with_timeouts(&path, timeouts).await {
            Ok(offer) => {
                tracing::info!(path = %path.display(), "manifest reloaded");
                offers.send_replace(Arc::new(offer));
            }
            Err(problems) => {
                tracing::error!(path = %path.display(), "new manifest is invalid; keeping the old one");
                for line in problems.lines() {
                    tracing::error!("  {line}");
                }
            }
        }
    }
}

/// When the file at `path` was last modified, if it can be read.
fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Checks that the coordinator accepts the configured key on its link endpoint: connects, then
/// closes without announcing anything. For `club-provider doctor`.
#[inline(never)]
pub fn check_link(config: &NodeConfig) -> BoxFuture<'_, Result<(), String>> {
    Box::pin(async move {
        let mut ws = session::connect(config).await.map_err(|e| e.to_string())?;
        let _ = ws.close(None).await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(coordinator: &str) -> String {
        link_url(coordinator)
            .unwrap_or_else(|e| panic!("{coordinator}: {e}"))
            .to_string()
    }

    /// The coordinator's base URL, the consumers' base URL (`…/v1`) and the link URL itself all
    /// give the link URL.
    #[test]
    fn the_link_url_is_completed_from_a_base_url_with_or_without_v1() {
        for given in [
            "http://127.0.0.1:18090",
            "http://127.0.0.1:18090/",
            "http://127.0.0.1:18090/v1",
            "http://127.0.0.1:18090/v1/",
            "http://127.0.0.1:18090/v1/link",
            "ws://127.0.0.1:18090/v1",
        ] {
            assert_eq!(link(given), "ws://127.0.0.1:18090/v1/link", "{given}");
        }
        assert_eq!(link("https://club.example"), "wss://club.example/v1/link");
        assert_eq!(link("wss://club.example/v1/"), "wss://club.example/v1/link");
        // Behind a path prefix.
        assert_eq!(
            link("https://example.com/club/v1"),
            "wss://example.com/club/v1/link"
        );
        assert_eq!(
            link("https://example.com/club/v1/link"),
            "wss://example.com/club/v1/link"
        );
        // Any other path is taken as the link URL, as given.
        assert_eq!(
            link("https://example.com/custom/link"),
            "wss://example.com/custom/link"
        );
    }

    /// A URL without a scheme says to add one, instead of "relative URL without a base".
    #[test]
    fn a_url_without_a_scheme_says_to_include_one() {
        for given in ["127.0.0.1:18090", "club.example", "club.example/v1"] {
            let error = link_url(given).unwrap_err();
            assert_eq!(error, LinkUrlError::NoScheme, "{given}");
            assert!(error.to_string().contains("include http:// or https://"));
        }
        // `localhost:18090` reads as the scheme `localhost`.
        for given in ["localhost:18090", "ftp://club.example"] {
            let error = link_url(given).unwrap_err();
            assert!(
                matches!(error, LinkUrlError::UnsupportedScheme(_)),
                "{given}: {error:?}"
            );
            assert!(error.to_string().contains("include http:// or https://"));
        }
        assert!(matches!(
            link_url("http://[::1"),
            Err(LinkUrlError::Invalid(_))
        ));
        let node = Node::from_offer(
            NodeConfig::new("127.0.0.1:18090", "icl_test"),
            Offer::new(Router::builder().build(), serde_json::json!({})),
        );
        let Err(error) = node else {
            panic!("a URL without a scheme was taken");
        };
        assert!(
            error.to_string().contains("include http:// or https://"),
            "{error}"
        );
    }
}
