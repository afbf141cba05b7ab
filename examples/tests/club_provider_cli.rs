//! Runs the built `club-provider` binary: `schema` and `validate`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn club_provider(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_club-provider"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("club-provider runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn schema_prints_the_checked_in_file_byte_for_byte() {
    let output = club_provider(&["schema"]);
    assert!(output.status.success());
    let checked_in = std::fs::read(repo_root().join("docs/manifest.schema.json")).unwrap();
    assert!(
        output.stdout == checked_in,
        "docs/manifest.schema.json is stale; regenerate it with\n\
         cargo run -p inference-club-examples --bin club-provider -- schema > docs/manifest.schema.json"
    );
}

#[test]
fn every_sample_validates() {
    for sample in [
        "examples/manifests/home-ollama.yaml",
        "examples/manifests/vllm-llamacpp-rig.yaml",
        "examples/manifests/every-field.yaml",
        "examples/manifests/public-agent-style.yaml",
    ] {
        let output = club_provider(&["validate", sample]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{sample}: {}",
            text(&output.stderr)
        );
        assert!(
            text(&output.stdout).starts_with(&format!("ok: {sample}: ")),
            "{}",
            text(&output.stdout)
        );
        assert!(output.stderr.is_empty());
    }
}

#[test]
fn a_json_manifest_validates() {
    let dir = std::env::temp_dir().join(format!("club-provider-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("manifest.json");
    std::fs::write(&file, r#"{"schema_version": 1, "agent": {"name": "rig"}, "hosts": [{"id": "a", "services": [{"name": "s", "url": "http://127.0.0.1:1"}]}]}"#)
        .unwrap();
    let output = club_provider(&["validate", file.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("agent \"rig\", 1 host, 1 service, 0 models"));
}

#[test]
fn several_mistakes_print_one_line_each_with_its_path() {
    let output = club_provider(&[
        "validate",
        "inference-club-core/tests/fixtures/manifests/several-mistakes.yaml",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let paths = [
        "schema_version: ",
        "agent.listen_port: ",
        "hosts[0].gpu.vendor: ",
        "hosts[0].gpu.vram_gb: ",
        "hosts[0].services[1].engine: ",
        "hosts[0].services[1].url: ",
        "hosts[0].services[1].max_concurrent: ",
        "hosts[0].services[1].name: ",
        "hosts[0].services[1].models[0]: ",
        "hosts[1].id: ",
    ];

    assert_eq!(lines.len(), paths.len() + 1, "{stderr}");
    for (line, path) in lines.iter().zip(paths) {
        assert!(
            line.starts_with(path),
            "{line:?} should start with {path:?}"
        );
    }
    assert!(lines[paths.len()].contains("10 problems"), "{stderr}");
}

#[test]
fn a_syntax_error_names_the_line() {
    let output = club_provider(&[
        "validate",
        "inference-club-core/tests/fixtures/manifests/not-yaml.yaml",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).starts_with("YAML syntax error at line 3"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let output = club_provider(&["validate", "no/such/file.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("cannot read no/such/file.yaml"),
        "{}",
        text(&output.stderr)
    );
}
