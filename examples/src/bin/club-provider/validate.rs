//! `club-provider validate` and `schema`: each writes to the given streams and returns the exit
//! status.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use inference_club_core::manifest::{ManifestError, ServiceManifest, json_schema_pretty};

/// Exit status: the command did what was asked (the manifest is valid).
pub const EXIT_OK: u8 = 0;
/// Exit status: the manifest has problems.
pub const EXIT_INVALID: u8 = 1;
/// Exit status: the file could not be read, or output could not be written.
pub const EXIT_IO: u8 = 2;

/// Why `validate` could not accept a file.
#[derive(Debug, thiserror::Error)]
pub enum ValidateFileError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a valid manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// What a valid manifest holds, for the "ok" line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSummary {
    /// The agent's name, if set.
    pub agent: Option<String>,
    /// Number of hosts.
    pub hosts: usize,
    /// Number of services, over all hosts.
    pub services: usize,
    /// Number of models listed, over all services.
    pub models: usize,
}

impl ManifestSummary {
    /// Counts what `manifest` holds.
    pub fn of(manifest: &ServiceManifest) -> Self {
        Self {
            agent: manifest.agent.name.clone(),
            hosts: manifest.hosts.len(),
            services: manifest.services().count(),
            models: manifest
                .services()
                .map(|service| service.models.len())
                .sum(),
        }
    }
}

impl fmt::Display for ManifestSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(agent) = &self.agent {
            write!(f, "agent {agent:?}, ")?;
        }
        write!(
            f,
            "{}, {}, {}",
            plural(self.hosts, "host"),
            plural(self.services, "service"),
            plural(self.models, "model")
        )
    }
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// Reads and validates the manifest at `path` (YAML or JSON).
pub fn validate_file(path: &Path) -> Result<ManifestSummary, ValidateFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ValidateFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let manifest = ServiceManifest::parse_and_validate(&text)?;
    Ok(ManifestSummary::of(&manifest))
}

/// `club-provider validate FILE`: on success one "ok" line on `out`, exit 0; otherwise every problem on
/// its own line on `err` (`path: message`), then a count, exit 1; an unreadable file exits 2.
pub fn validate(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let written = match validate_file(path) {
        Ok(summary) => writeln!(out, "ok: {}: {summary}", path.display()).map(|()| EXIT_OK),
        Err(ValidateFileError::Manifest(error)) => {
            report_problems(path, &error, err).map(|()| EXIT_INVALID)
        }
        Err(error @ ValidateFileError::Read { .. }) => {
            writeln!(err, "error: {error}").map(|()| EXIT_IO)
        }
    };
    written.unwrap_or(EXIT_IO)
}

fn report_problems(path: &Path, error: &ManifestError, err: &mut dyn Write) -> io::Result<()> {
    let lines = error.lines();
    for line in &lines {
        writeln!(err, "{line}")?;
    }
    let count = plural(lines.len(), "problem");
    writeln!(
        err,
        "error: {} is not a valid manifest ({count})",
        path.display()
    )
}

/// `club-provider schema`: prints the manifest's JSON Schema, exactly as `docs/manifest.schema.json`.
pub fn schema(out: &mut dyn Write) -> u8 {
    match out
        .write_all(json_schema_pretty().as_bytes())
        .and_then(|()| out.flush())
    {
        Ok(()) => EXIT_OK,
        Err(_) => EXIT_IO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_validate(path: &Path) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = validate(path, &mut out, &mut err);
        (
            status,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let (status, out, err) = run_validate(Path::new("no/such/manifest.yaml"));
        assert_eq!(status, EXIT_IO);
        assert!(out.is_empty());
        assert!(
            err.starts_with("error: cannot read no/such/manifest.yaml"),
            "{err}"
        );
    }

    #[test]
    fn summary_reads_well() {
        let summary = ManifestSummary {
            agent: Some("rig".into()),
            hosts: 1,
            services: 3,
            models: 2,
        };
        assert_eq!(
            summary.to_string(),
            "agent \"rig\", 1 host, 3 services, 2 models"
        );
    }

    #[test]
    fn schema_ends_with_a_newline() {
        let mut out = Vec::new();
        assert_eq!(schema(&mut out), EXIT_OK);
        assert!(out.ends_with(b"}\n"));
    }
}
