//! How a coordinator behaves: the settings [`CoordinatorBuilder`](crate::CoordinatorBuilder)
//! collects.

use std::time::Duration;

use crate::cluster::ClusterConfig;
use crate::limits::Limits;
use url::Url;

/// How the coordinator behaves.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// How often nodes heartbeat (and the coordinator pings them); two missed means offline.
    pub heartbeat_interval: Duration,
    /// How long a request may wait for a node with room before 503.
    pub queue_timeout: Duration,
    /// How many requests may wait at once before new ones get 503 straight away.
    pub max_queued: usize,
    /// GitHub sign-in: the OAuth app and GitHub's endpoints. `None`: sign-in routes answer 404
    /// `sign_in_unavailable` (admin commands still create members and keys).
    pub github: Option<GitHubConfig>,
    /// The coordinator's externally visible base URL (e.g. `https://club.example`): the OAuth
    /// callback is `{public_url}/auth/github/callback`, and cookies are `Secure` when it is
    /// https.
    pub public_url: Option<url::Url>,
    /// Rate, concurrency and size limits (the chat body limit among them).
    pub limits: Limits,
    /// Run as one replica of a cluster (PostgreSQL + NATS); `None`: a single coordinator.
    pub cluster: Option<ClusterConfig>,
    /// How long a stopping coordinator lets requests in flight finish.
    pub drain: Duration,
    /// How long the audio and images of records are kept (the records keep saying what there
    /// was); checked every [`BLOB_EXPIRY_INTERVAL`].
    pub blob_retention: Duration,
    /// How many lines of batches one coordinator runs at once (behind interactive requests).
    pub max_batch_in_flight: usize,
    /// How long a claimed line of a batch stays held without its coordinator renewing the
    /// lease: how long, in a cluster, the lines of a replica that died wait before another
    /// takes them. Default [`DEFAULT_BATCH_LEASE`].
    pub batch_lease: Duration,
    /// How long the lines of a batch that no online node can take (none serves the model at
    /// the batch's endpoint, or admits its owner) wait, without a try counted, for one before
    /// they run and get their refusal (`model_not_found`, …) as their answer. Default
    /// [`DEFAULT_BATCH_UNSERVED_GRACE`].
    pub batch_unserved_grace: Duration,
}

/// Default [`CoordinatorConfig::max_batch_in_flight`].
pub const DEFAULT_MAX_BATCH_IN_FLIGHT: usize = 16;

/// Default [`CoordinatorConfig::batch_lease`]: 30 s.
pub const DEFAULT_BATCH_LEASE: Duration = Duration::from_secs(30);

/// Default [`CoordinatorConfig::batch_unserved_grace`]: 60 s (nodes link again within seconds
/// after a coordinator restarts, or after their replica dies).
pub const DEFAULT_BATCH_UNSERVED_GRACE: Duration = Duration::from_secs(60);

/// How often blobs past their retention are removed.
pub const BLOB_EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);

/// Default [`CoordinatorConfig::blob_retention`]: 30 days.
pub const DEFAULT_BLOB_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(10),
            queue_timeout: Duration::from_secs(30),
            max_queued: 1024,
            github: None,
            public_url: None,
            limits: Limits::default(),
            cluster: None,
            drain: Duration::from_secs(30),
            blob_retention: DEFAULT_BLOB_RETENTION,
            max_batch_in_flight: DEFAULT_MAX_BATCH_IN_FLIGHT,
            batch_lease: DEFAULT_BATCH_LEASE,
            batch_unserved_grace: DEFAULT_BATCH_UNSERVED_GRACE,
        }
    }
}

/// Where GitHub is and who the club is to it.
#[derive(Clone, PartialEq, Eq)]
pub struct GitHubConfig {
    /// The OAuth app's client id.
    pub client_id: String,
    /// The OAuth app's client secret (never logged).
    pub client_secret: String,
    /// The web flow's authorize page (`https://github.com/login/oauth/authorize`).
    pub authorize_url: Url,
    /// The token endpoint (`https://github.com/login/oauth/access_token`).
    pub token_url: Url,
    /// The device flow's code endpoint (`https://github.com/login/device/code`).
    pub device_code_url: Url,
    /// The REST API base (`https://api.github.com`).
    pub api_url: Url,
}

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("authorize_url", &self.authorize_url.as_str())
            .field("token_url", &self.token_url.as_str())
            .field("device_code_url", &self.device_code_url.as_str())
            .field("api_url", &self.api_url.as_str())
            .finish()
    }
}

/// `base` joined with `path` (`base` may end in `/` or not, and may have a path of its own).
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}/{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url.set_query(None);
    url
}

impl GitHubConfig {
    /// The OAuth app `client_id`/`client_secret` on github.com and api.github.com.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        let web = literal_url("https://github.com");
        let api = literal_url("https://api.github.com");
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            authorize_url: join(&web, "login/oauth/authorize"),
            token_url: join(&web, "login/oauth/access_token"),
            device_code_url: join(&web, "login/device/code"),
            api_url: api,
        }
    }

    /// The same app on another GitHub (Enterprise, or a fake in tests): the three
    /// `login/...` endpoints under `base`.
    pub fn with_github_url(mut self, base: &Url) -> Self {
        self.authorize_url = join(base, "login/oauth/authorize");
        self.token_url = join(base, "login/oauth/access_token");
        self.device_code_url = join(base, "login/device/code");
        self
    }

    /// The same app with the REST API at `api`.
    pub fn with_api_url(mut self, api: Url) -> Self {
        self.api_url = api;
        self
    }
}

/// A URL written in this file.
#[allow(clippy::expect_used, reason = "only called with literal, valid URLs")]
fn literal_url(text: &str) -> Url {
    Url::parse(text).expect("a literal URL parses")
}
