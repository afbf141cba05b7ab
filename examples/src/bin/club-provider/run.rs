//! `club-provider run`: the node, until SIGINT or SIGTERM; SIGHUP reloads the manifest.

use inference_club_provider::node::{self, JobLog, JobLogConfig, Node, NodeConfig};

use crate::validate::{EXIT_INVALID, EXIT_IO, EXIT_OK};

/// Options of `club-provider run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The coordinator URL.
    pub coordinator: String,
    /// A provider-scoped API key.
    pub key: String,
    /// The manifest file.
    pub manifest: std::path::PathBuf,
    /// Where to keep the operator's job log, if anywhere.
    pub job_log: Option<std::path::PathBuf>,
    /// Log request and answer text in the job log.
    pub log_content: bool,
    /// How long the node waits for its engines (connect, first token, between chunks).
    pub engine_timeouts: inference_club_provider::Timeouts,
}

/// `club-provider run`: runs the node until SIGINT or SIGTERM; SIGHUP reloads the manifest.
pub async fn run(options: RunOptions) -> u8 {
    let mut config = NodeConfig::new(options.coordinator, options.key);
    config.engine_timeouts = options.engine_timeouts;
    let node = match Node::from_manifest(config, &options.manifest).await {
        Ok(node) => node,
        Err(e) => {
            tracing::error!("{e}");
            return EXIT_INVALID;
        }
    };
    let node = match options.job_log {
        Some(path) => {
            let mut log = JobLogConfig::new(path);
            log.log_content = options.log_content;
            match JobLog::start(log) {
                Ok(log) => node.with_job_log(log),
                Err(e) => {
                    tracing::error!("cannot open the job log: {e}");
                    return EXIT_IO;
                }
            }
        }
        None => node,
    };
    let handle = node.handle();
    tokio::spawn(signals(handle));
    node.run().await;
    EXIT_OK
}

#[cfg(unix)]
async fn signals(handle: node::NodeHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for signals");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => handle.reload(),
            _ = term.recv() => { handle.shutdown(); return; }
            _ = int.recv() => { handle.shutdown(); return; }
        }
    }
}

#[cfg(not(unix))]
async fn signals(handle: node::NodeHandle) {
    if tokio::signal::ctrl_c().await.is_ok() {
        handle.shutdown();
    }
}
