//! `club-provider init`: finds local engines and writes a manifest for review.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use inference_club_provider::discover;

use crate::validate::{EXIT_INVALID, EXIT_IO, EXIT_OK};

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
