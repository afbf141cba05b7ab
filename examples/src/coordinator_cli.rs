//! The logic behind `club-coordinator`'s subcommands; the binary only parses arguments.

use std::io::Write;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::coordinator::accounts::GitHubConfig;
use crate::coordinator::store::{Scopes, Store};
use crate::coordinator::{Coordinator, CoordinatorConfig, serve};

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE: &str = "sqlite:club.db";

/// The default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Exit status: done.
pub const EXIT_OK: u8 = 0;
/// Exit status: bad input (unknown user, bad scopes, …).
pub const EXIT_INVALID: u8 = 1;
/// Exit status: the database or the network failed.
pub const EXIT_FAILED: u8 = 2;

/// A database URL given as a path is a SQLite file.
pub fn database_url(database: &str) -> String {
    if database.contains("://") || database.starts_with("sqlite:") {
        database.to_owned()
    } else {
        format!("sqlite:{}", PathBuf::from(database).display())
    }
}

async fn open(database: &str, err: &mut dyn Write) -> Option<Store> {
    match Store::connect(&database_url(database)).await {
        Ok(store) => Some(store),
        Err(error) => {
            let _ = writeln!(err, "error: cannot open the database {database}: {error}");
            None
        }
    }
}

/// `club-coordinator serve`'s GitHub sign-in flags (each with an environment fallback:
/// `CLUB_GITHUB_CLIENT_ID`, `CLUB_GITHUB_CLIENT_SECRET`, `CLUB_GITHUB_URL`,
/// `CLUB_GITHUB_API_URL`, `CLUB_PUBLIC_URL`).
#[derive(Debug, Clone, Default)]
pub struct SignInOptions {
    /// The OAuth app's client id; without it sign-in is off.
    pub github_client_id: Option<String>,
    /// The OAuth app's client secret.
    pub github_client_secret: Option<String>,
    /// The base of GitHub's `login/...` endpoints.
    pub github_url: Option<String>,
    /// GitHub's REST API base.
    pub github_api_url: Option<String>,
    /// The coordinator's public base URL.
    pub public_url: Option<String>,
}

fn parse_url(flag: &str, text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("{flag} {text:?}: {e}"))?;
    if matches!(url.scheme(), "http" | "https") {
        Ok(url)
    } else {
        Err(format!(
            "{flag} {text:?}: expected an http:// or https:// URL"
        ))
    }
}

impl SignInOptions {
    /// `config` with these options: GitHub sign-in on when a client id is given (a secret is
    /// then required), `public_url` set when given. Bad URLs are refused with a message.
    pub fn apply(self, mut config: CoordinatorConfig) -> Result<CoordinatorConfig, String> {
        if let Some(public_url) = self.public_url.as_deref().filter(|u| !u.trim().is_empty()) {
            config.public_url = Some(parse_url("--public-url", public_url)?);
        }
        let Some(client_id) = self
            .github_client_id
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
        else {
            return Ok(config);
        };
        let Some(secret) = self.github_client_secret.filter(|s| !s.trim().is_empty()) else {
            return Err(
                "--github-client-id needs --github-client-secret (or CLUB_GITHUB_CLIENT_SECRET)"
                    .to_owned(),
            );
        };
        let mut github = GitHubConfig::new(client_id, secret.trim());
        if let Some(base) = self.github_url.as_deref().filter(|u| !u.trim().is_empty()) {
            github = github.with_github_url(&parse_url("--github-url", base)?);
        }
        if let Some(api) = self
            .github_api_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        {
            github = github.with_api_url(parse_url("--github-api-url", api)?);
        }
        config.github = Some(github);
        Ok(config)
    }
}

/// `club-coordinator serve`: runs until SIGINT/SIGTERM.
pub async fn serve_command(listen: &str, database: &str, config: CoordinatorConfig) -> u8 {
    let mut err = std::io::stderr();
    let Some(store) = open(database, &mut err).await else {
        return EXIT_FAILED;
    };
    let coordinator = match Coordinator::start(store, config).await {
        Ok(c) => c,
        Err(error) => {
            let _ = writeln!(err, "error: cannot start: {error}");
            return EXIT_FAILED;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(error) => {
            let _ = writeln!(err, "error: cannot listen on {listen}: {error}");
            return EXIT_FAILED;
        }
    };
    let shutdown = CancellationToken::new();
    let drain = coordinator.config.drain;
    let stopping = coordinator.clone();
    let stop = shutdown.clone();
    let signalled_at = std::sync::Arc::new(std::sync::OnceLock::new());
    let signal_time = signalled_at.clone();
    tokio::spawn(async move {
        signalled().await;
        let _ = signal_time.set(std::time::Instant::now());
        // No new links or jobs for the nodes here, then no new connections.
        stopping.begin_drain().await;
        stop.cancel();
    });
    let served = serve(listener, coordinator.app(), shutdown.clone());
    tokio::pin!(served);
    // After the signal, requests in flight get `drain` to finish.
    let result = tokio::select! {
        result = &mut served => result,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(drain).await;
        } => Ok(()),
    };
    let since_signal = signalled_at
        .get()
        .map_or(std::time::Duration::ZERO, std::time::Instant::elapsed);
    coordinator
        .finish_drain(drain.saturating_sub(since_signal))
        .await;
    match result {
        Ok(()) => EXIT_OK,
        Err(error) => {
            let _ = writeln!(err, "error: {error}");
            EXIT_FAILED
        }
    }
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere).
async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `club-coordinator user add HANDLE`.
pub async fn user_add(
    database: &str,
    handle: &str,
    email: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let Some(store) = open(database, err).await else {
        return EXIT_FAILED;
    };
    match store.create_user(handle, email).await {
        Ok(user) => {
            let _ = writeln!(out, "created user {} ({})", user.handle, user.id);
            EXIT_OK
        }
        Err(error) => {
            let _ = writeln!(err, "error: {error}");
            if error.is_retryable() {
                EXIT_FAILED
            } else {
                EXIT_INVALID
            }
        }
    }
}

/// `club-coordinator key create --user HANDLE --scope …`: prints the new key on stdout, its only
/// appearance.
pub async fn key_create(
    database: &str,
    handle: &str,
    scopes: &str,
    name: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let scopes: Scopes = match scopes.parse() {
        Ok(s) => s,
        Err(error) => {
            let _ = writeln!(err, "error: {error}");
            return EXIT_INVALID;
        }
    };
    let Some(store) = open(database, err).await else {
        return EXIT_FAILED;
    };
    let user = match store.user_by_handle(handle).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            let _ = writeln!(
                err,
                "error: no user {handle:?}; add one with `club-coordinator user add {handle}`"
            );
            return EXIT_INVALID;
        }
        Err(error) => {
            let _ = writeln!(err, "error: {error}");
            return EXIT_FAILED;
        }
    };
    match store.create_key(user.id, name, scopes).await {
        Ok((_, secret)) => {
            let _ = writeln!(out, "{secret}");
            EXIT_OK
        }
        Err(error) => {
            let _ = writeln!(err, "error: {error}");
            EXIT_FAILED
        }
    }
}

/// `club-coordinator migrate`.
pub async fn migrate(database: &str, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match Store::connect_without_migrating(&database_url(database)).await {
        Ok(store) => match store.migrate().await {
            Ok(()) => {
                let _ = writeln!(out, "the database is up to date");
                EXIT_OK
            }
            Err(error) => {
                let _ = writeln!(err, "error: {error}");
                EXIT_FAILED
            }
        },
        Err(error) => {
            let _ = writeln!(err, "error: cannot open the database {database}: {error}");
            EXIT_FAILED
        }
    }
}

#[cfg(test)]
mod sign_in_options {
    use super::*;

    #[test]
    fn a_client_id_turns_sign_in_on() {
        let config = SignInOptions::default()
            .apply(CoordinatorConfig::default())
            .unwrap();
        assert!(config.github.is_none() && config.public_url.is_none());

        let config = SignInOptions {
            github_client_id: Some("id".into()),
            github_client_secret: Some("secret".into()),
            github_url: Some("http://127.0.0.1:9".into()),
            github_api_url: Some("http://127.0.0.1:9/api".into()),
            public_url: Some("https://club.example".into()),
        }
        .apply(CoordinatorConfig::default())
        .unwrap();
        let github = config.github.unwrap();
        assert_eq!(
            github.token_url.as_str(),
            "http://127.0.0.1:9/login/oauth/access_token"
        );
        assert_eq!(github.api_url.as_str(), "http://127.0.0.1:9/api");
        assert_eq!(config.public_url.unwrap().as_str(), "https://club.example/");

        let no_secret = SignInOptions {
            github_client_id: Some("id".into()),
            ..SignInOptions::default()
        };
        assert!(no_secret.apply(CoordinatorConfig::default()).is_err());
        let bad_url = SignInOptions {
            public_url: Some("ftp://x".into()),
            ..SignInOptions::default()
        };
        assert!(bad_url.apply(CoordinatorConfig::default()).is_err());
    }
}
