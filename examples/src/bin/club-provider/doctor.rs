//! `club-provider doctor`: checks a manifest, every service and model, and the key.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use inference_club_core::manifest::{Service, ServiceManifest};
use inference_club_core::openai::{ChatCompletionRequest, ChatMessage};
use inference_club_core::provider::{ProviderError, RequestContext};
use inference_club_provider::node::{self, NodeConfig};

use crate::validate::{EXIT_INVALID, EXIT_IO, EXIT_OK, ValidateFileError, validate_file};

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
