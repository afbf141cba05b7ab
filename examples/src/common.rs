//! What every binary does before its command: TLS, logging and the async runtime. Each binary
//! includes this file as its module `common`.

/// Installs the process's TLS crypto provider (ring) for every HTTPS and WSS client in it,
/// then logs to stderr, filtered by `CLUB_LOG` (e.g. `info`, `inference_club_provider=debug`),
/// at `default_level` when it is unset; as JSON lines when `json`. Colours only on a terminal,
/// and never with `NO_COLOR` set.
pub fn init(default_level: &str, json: bool) {
    use std::io::IsTerminal as _;
    // A binary owns its process: it picks the provider once, libraries never do.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The multi-threaded runtime the binaries run on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere).
#[allow(dead_code)] // not every binary stops on a signal this way
pub async fn signalled() {
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
