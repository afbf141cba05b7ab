//! Reading a manifest from text: size limit, syntax (YAML or JSON), then loose decoding.

use std::collections::HashSet;

use serde_json::Value;

use super::decode::decode;
use super::limits::MAX_DOCUMENT_BYTES;
use super::problem::{Format, ManifestError, Problem, TextPosition, ValidationErrors};
use super::types::ServiceManifest;

impl ServiceManifest {
    /// Reads a YAML manifest. Checks syntax and types (every type problem is reported, with its path),
    /// not the rules: call [`ServiceManifest::validate`], or use [`ServiceManifest::parse_and_validate`].
    pub fn from_yaml_str(text: &str) -> Result<Self, ManifestError> {
        decode_document(&syntax(text, Format::Yaml)?)
    }

    /// Reads a JSON manifest. Like [`ServiceManifest::from_yaml_str`].
    pub fn from_json_str(text: &str) -> Result<Self, ManifestError> {
        decode_document(&syntax(text, Format::Json)?)
    }

    /// Reads a manifest in either format: JSON when the text starts with `{`, else YAML.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        decode_document(&syntax(text, detect_format(text))?)
    }

    /// Reads a manifest in either format and checks every rule. On failure the error carries every
    /// problem found, type and rule alike, each with its path, grouped by host, service and model in
    /// document order; defaults are applied on success
    /// (see [`ServiceManifest::with_defaults`]).
    pub fn parse_and_validate(text: &str) -> Result<Self, ManifestError> {
        let document = syntax(text, detect_format(text))?;
        let (manifest, mut problems) = decode(&document);
        let reported: HashSet<_> = problems
            .iter()
            .map(|problem| problem.path.clone())
            .collect();
        if let Err(rule_problems) = manifest.validate() {
            let fresh = rule_problems
                .into_iter()
                .filter(|problem| !reported.contains(&problem.path));
            problems.extend(fresh);
        }
        problems.sort_by_key(|problem| problem.path.indices());
        ValidationErrors::new(problems).into_result()?;
        Ok(manifest.with_defaults())
    }
}

/// The format `text` is most likely in: JSON when its first non-blank character is `{`, else YAML.
pub fn detect_format(text: &str) -> Format {
    if text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('{')
    {
        Format::Json
    } else {
        Format::Yaml
    }
}

/// Checks the size, then parses `text` as `format` into a generic document.
fn syntax(text: &str, format: Format) -> Result<Value, ManifestError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(ManifestError::TooLarge {
            size: text.len(),
            max: MAX_DOCUMENT_BYTES,
        });
    }
    match format {
        Format::Yaml => serde_saphyr::from_str(text).map_err(yaml_error),
        Format::Json => serde_json::from_str(text).map_err(json_error),
    }
}

fn decode_document(document: &Value) -> Result<ServiceManifest, ManifestError> {
    let (manifest, problems): (ServiceManifest, Vec<Problem>) = decode(document);
    ValidationErrors::new(problems).into_result()?;
    Ok(manifest)
}

fn yaml_error(error: serde_saphyr::Error) -> ManifestError {
    let position = error
        .location()
        .filter(|location| location.line() > 0)
        .map(|location| TextPosition {
            line: location.line(),
            column: location.column(),
        });
    let message = first_line(&error.to_string());
    ManifestError::Syntax {
        format: Format::Yaml,
        message: strip_yaml_position(&message),
        position,
    }
}

fn json_error(error: serde_json::Error) -> ManifestError {
    let position = (error.line() > 0).then(|| TextPosition {
        line: u64::try_from(error.line()).unwrap_or(u64::MAX),
        column: u64::try_from(error.column()).unwrap_or(u64::MAX),
    });
    let message = first_line(&error.to_string());
    ManifestError::Syntax {
        format: Format::Json,
        message: strip_json_position(&message),
        position,
    }
}

/// The first line of a parser message (some parsers append a source snippet).
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_owned()
}

/// serde-saphyr starts its messages with "error: line L column C: "; the position is kept separately.
fn strip_yaml_position(message: &str) -> String {
    let message = message.strip_prefix("error: ").unwrap_or(message);
    match message
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((_, rest)) => rest.to_owned(),
        None => message.to_owned(),
    }
}

/// serde_json ends its messages with " at line L column C"; the position is kept separately.
fn strip_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_json_by_its_brace() {
        assert_eq!(detect_format("  {\"schema_version\": 1}"), Format::Json);
        assert_eq!(detect_format("schema_version: 1"), Format::Yaml);
        assert_eq!(detect_format(""), Format::Yaml);
    }

    #[test]
    fn refuses_oversized_documents_before_parsing() {
        let text = format!(
            "schema_version: 1\nnotes: \"{}\"\n",
            "x".repeat(MAX_DOCUMENT_BYTES)
        );
        assert!(matches!(
            ServiceManifest::parse(&text),
            Err(ManifestError::TooLarge { .. })
        ));
    }

    #[test]
    fn yaml_syntax_errors_carry_a_position() {
        let error =
            ServiceManifest::from_yaml_str("schema_version: 1\nhosts: [\n  - id: a\n").unwrap_err();
        let ManifestError::Syntax {
            format: Format::Yaml,
            position,
            message,
        } = error
        else {
            panic!("expected a syntax error, got {error:?}");
        };
        assert_eq!(position, Some(TextPosition { line: 3, column: 3 }));
        assert_eq!(message, "\"-\" is only valid inside a block");
    }

    #[test]
    fn json_syntax_errors_carry_a_position() {
        let error = ServiceManifest::from_json_str("{\n  \"schema_version\": 1,\n}").unwrap_err();
        let ManifestError::Syntax {
            format: Format::Json,
            position,
            message,
        } = error
        else {
            panic!("expected a syntax error, got {error:?}");
        };
        assert_eq!(position, Some(TextPosition { line: 3, column: 1 }));
        assert!(!message.contains(" at line "), "{message}");
    }

    #[test]
    fn type_and_rule_problems_come_together() {
        let text = "schema_version: 2\nagent: {name: n}\nhosts:\n  - id: a\n    services:\n      - name: s\n        engine: foo\n";
        let error = ServiceManifest::parse_and_validate(text).unwrap_err();
        assert_eq!(
            error.lines(),
            [
                "schema_version: must be 1, got 2",
                r#"hosts[0].services[0].engine: must be one of [vllm, lmstudio, ollama, sglang, llamacpp, tgi, other], got "foo""#,
            ]
        );
    }

    #[test]
    fn a_type_problem_hides_the_rule_problem_at_the_same_path() {
        let error =
            ServiceManifest::parse_and_validate("agent: {name: n}\nhosts: []\n").unwrap_err();
        assert_eq!(error.lines(), ["schema_version: is required"]);
    }

    #[test]
    fn parse_and_validate_applies_defaults() {
        let text = "schema_version: 1\nagent: {name: n}\nhosts:\n  - id: a\n    services:\n      - name: s\n        models:\n          - id: m\n";
        let manifest = ServiceManifest::parse_and_validate(text).unwrap();
        assert_eq!(
            manifest.hosts[0].services[0].models[0].input_modalities,
            ["text"]
        );
    }
}
