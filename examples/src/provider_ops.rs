//! The logic behind `club-provider doctor`, `init` and `run`.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use inference_club_core::manifest::{Service, ServiceManifest};
use inference_club_core::openai::{ChatCompletionRequest, ChatMessage};
use inference_club_core::provider::{ProviderError, RequestContext};
use inference_club_provider::discover;
use inference_club_provider::node::{self, JobLog, JobLogConfig, Node, NodeConfig};

use crate::provider_cli::{EXIT_INVALID, EXIT_IO, EXIT_OK, ValidateFileError, validate_file};

/// One check's outcome, printed as a ✓ or ✗ line.
struct Check<'a> {
    out: &'a mut dyn Write,
    failed: bool,
}

impl Check<'_> {
    fn pass(&mut self, what: impl std::fmt::Display) {
        let _ = writeln!(self.out, "✓ {what}");
    }

    fn fail(&mut self, what: impl std::fmt::Display, hint: impl std::fmt::Display) {
        self.failed = true;
        let _ = writeln!(self.out, "✗ {what}\n    hint: {hint}");
    }
}

/// A hint for an error seen while probing an engine.
fn hint(error: &ProviderError, service: &Service) -> String {
    let url = service.url.as_deref().unwrap_or("");
    match error {
        ProviderError::Unavailable { status: None, .. } | ProviderError::Timeout { .. } => format!(
            "is the engine running, and listening on {url}? Check the port (defaults: Ollama 11434, LM Studio 1234, vLLM 8000, llama.cpp 8080, SGLang 30000)"
        ),
        ProviderError::Rejected {
            status: 401 | 403, ..
        } => "the engine refused the credentials: check the service's api_key".into(),
        ProviderError::Rejected { status: 404, .. } => format!(
            "{url} answered 404: check the base path (OpenAI-compatible engines usually want it to end in /v1; Ollama's native API wants none)"
        ),
        ProviderError::ModelNotFound { .. } => {
            "the engine does not serve this model: load it, or fix the model id in the manifest"
                .into()
        }
        ProviderError::Unavailable {
            status: Some(_), ..
        } => "the engine reported an internal error: see its log".into(),
        _ => "see the error above".into(),
    }
}

/// `club-provider doctor`: validates the manifest, probes each service's model list and a
/// one-token chat on each model, and (when given a coordinator and key) checks that the key is
/// accepted. One ✓/✗ line per check; exit 1 on any failure.
pub async fn doctor(
    manifest_path: &Path,
    coordinator: Option<(&str, &str)>,
    out: &mut dyn Write,
) -> u8 {
    let mut check = Check { out, failed: false };
    let manifest = match validate_file(manifest_path) {
        Ok(summary) => {
            check.pass(format!("manifest {}: {summary}", manifest_path.display()));
            match std::fs::read_to_string(manifest_path)
                .ok()
                .and_then(|t| ServiceManifest::parse_and_validate(&t).ok())
            {
                Some(m) => m,
                None => return EXIT_IO,
            }
        }
        Err(ValidateFileError::Manifest(error)) => {
            check.fail(
                format!("manifest {} is invalid", manifest_path.display()),
                error.lines().join("; "),
            );
            return EXIT_INVALID;
        }
        Err(error) => {
            check.fail(error, "check the path");
            return EXIT_IO;
        }
    };
    for service in manifest.services() {
        probe_service(service, &mut check).await;
    }
    if let Some((url, key)) = coordinator {
        let config = NodeConfig::new(url, key);
        match node::check_link(&config).await {
            Ok(()) => check.pass(format!("coordinator {url} accepts the key")),
            Err(why) => check.fail(
                format!("coordinator {url}: {why}"),
                "check the URL, and that the key is valid, not revoked, and has the `provider` scope",
            ),
        }
    }
    if check.failed { EXIT_INVALID } else { EXIT_OK }
}

async fn probe_service(service: &Service, check: &mut Check<'_>) {
    let name = &service.name;
    let url = service.url.as_deref().unwrap_or("(no url)");
    let backend = match node::backend_for(service) {
        Ok(b) => b,
        Err(e) => {
            check.fail(format!("service {name}: {e}"), "fix the service's url");
            return;
        }
    };
    let served = match backend.models().await {
        Ok(models) => {
            check.pass(format!(
                "service {name}: engine answers at {url} ({} models)",
                models.len()
            ));
            models.into_iter().map(|m| m.id).collect::<Vec<_>>()
        }
        Err(e) => {
            check.fail(format!("service {name}: {url}: {e}"), hint(&e, service));
            return;
        }
    };
    let listed: Vec<String> = service
        .models
        .iter()
        .filter_map(|m| m.served_id().map(str::to_owned))
        .collect();
    let models = if listed.is_empty() {
        served.clone()
    } else {
        listed
    };
    for model in models {
        let unlisted = !served.contains(&model);
        let mut request =
            ChatCompletionRequest::new(model.clone(), vec![ChatMessage::user("Say hi.")]);
        request.max_tokens = Some(1);
        let answer = tokio::time::timeout(Duration::from_secs(120), async {
            let stream = backend.chat(request, RequestContext::new("doctor")).await?;
            let chunks: Vec<_> = futures_util::StreamExt::collect(stream).await;
            chunks.into_iter().collect::<Result<Vec<_>, _>>()
        })
        .await;
        match answer {
            Ok(Ok(_)) => check.pass(format!("service {name}: model {model} answers")),
            // The engine answered its model list at this URL, so a failure for a model it does
            // not list is about the model, whatever the engine's error says.
            Ok(Err(e)) if unlisted => check.fail(
                format!("service {name}: model {model}: {e}"),
                format!(
                    "the engine does not serve this model (it lists: {}): load it, or fix the model id in the manifest",
                    served.join(", ")
                ),
            ),
            Ok(Err(e)) => check.fail(
                format!("service {name}: model {model}: {e}"),
                hint(&e, service),
            ),
            Err(_) => check.fail(
                format!("service {name}: model {model}: no answer within 120 s"),
                "the model may still be loading; try again",
            ),
        }
    }
}

/// `club-provider init`: looks for engines on their default local ports, asks each for its models,
/// detects GPUs, and writes a manifest to `output` (refusing to overwrite unless `force`).
pub async fn init(output: &Path, force: bool, host: &str, out: &mut dyn Write) -> u8 {
    if output.exists() && !force {
        let _ = writeln!(
            out,
            "error: {} exists; pass --force to overwrite it",
            output.display()
        );
        return EXIT_IO;
    }
    let found = discover::find_engines(host, Duration::from_millis(800)).await;
    for known in discover::KNOWN_ENGINES {
        match found.iter().find(|f| f.known == *known) {
            Some(f) => {
                let _ = writeln!(
                    out,
                    "✓ {} at {} ({} models)",
                    known.name,
                    f.url,
                    f.models.len()
                );
            }
            None => {
                let _ = writeln!(out, "· no {} on port {}", known.name, known.port);
            }
        }
    }
    if found.is_empty() {
        let _ = writeln!(
            out,
            "error: no engine found; start one, or write the manifest by hand (see docs/manifest.md)"
        );
        return EXIT_INVALID;
    }
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "my-node".into());
    let manifest = discover::manifest_for(&hostname, &found, discover::detect_gpu());
    if let Err(problems) = manifest.validate() {
        let _ = writeln!(out, "error: the generated manifest is invalid: {problems}");
        return EXIT_INVALID;
    }
    let yaml = match serde_saphyr::to_string(&manifest) {
        Ok(y) => y,
        Err(e) => {
            let _ = writeln!(out, "error: cannot write YAML: {e}");
            return EXIT_IO;
        }
    };
    let text = format!(
        "# Written by `club-provider init`. Review it: set max_concurrent and access, add hf ids.\n# Reference: docs/manifest.md\n{yaml}"
    );
    if let Err(e) = std::fs::write(output, text) {
        let _ = writeln!(out, "error: cannot write {}: {e}", output.display());
        return EXIT_IO;
    }
    let _ = writeln!(out, "wrote {}", output.display());
    EXIT_OK
}

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
