//! Integration tests of `inference_club_core::manifest`: the samples, the fixtures, redaction and the
//! checked-in JSON Schema.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use inference_club_core::manifest::{
    AccessPolicy, Engine, ManifestError, ServiceManifest, ServiceType, effective_access,
    json_schema_pretty,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

const SAMPLES: &[&str] = &[
    "examples/manifests/home-ollama.yaml",
    "examples/manifests/vllm-llamacpp-rig.yaml",
    "examples/manifests/every-field.yaml",
    "examples/manifests/public-agent-style.yaml",
];

#[test]
fn every_sample_validates() {
    for sample in SAMPLES {
        if let Err(error) = ServiceManifest::parse_and_validate(&read(sample)) {
            panic!("{sample} does not validate:\n{error}");
        }
    }
}

#[test]
fn the_samples_directory_holds_only_listed_samples() {
    let mut found: Vec<String> = fs::read_dir(repo_root().join("examples/manifests"))
        .unwrap()
        .map(|entry| {
            format!(
                "examples/manifests/{}",
                entry.unwrap().file_name().to_string_lossy()
            )
        })
        .collect();
    found.sort();
    let mut listed: Vec<String> = SAMPLES.iter().map(|s| (*s).to_owned()).collect();
    listed.sort();
    assert_eq!(found, listed, "a new sample must be added to SAMPLES");
}

#[test]
fn public_agent_style_uses_no_additions() {
    let text = read("examples/manifests/public-agent-style.yaml");
    assert!(!text.contains("access:") && !text.contains("max_concurrent:"));
}

#[test]
fn every_field_sample_reads_our_additions() {
    let manifest =
        ServiceManifest::parse_and_validate(&read("examples/manifests/every-field.yaml")).unwrap();
    let services: Vec<_> = manifest.services().collect();
    assert_eq!(manifest.agent.access, Some(AccessPolicy::Members));
    assert_eq!(services[0].engine, Some(Engine::Sglang));
    assert_eq!(services[0].max_concurrent, Some(8));
    assert_eq!(
        effective_access(&manifest.agent, services[0]),
        &AccessPolicy::Logins(vec!["octocat".into(), "hubot".into()])
    );
    assert_eq!(
        effective_access(&manifest.agent, services[1]),
        &AccessPolicy::Owner
    );
    assert_eq!(services[1].service_type, ServiceType::Tts);
    assert_eq!(services[1].models[0].output_modalities, ["audio"]);
    assert!(manifest.hosts[1].services.is_empty());
}

#[test]
fn the_loose_reader_agrees_with_serde() {
    for sample in SAMPLES {
        let text = read(sample);
        let loose = ServiceManifest::from_yaml_str(&text).unwrap();
        let strict: ServiceManifest = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(loose, strict, "{sample}");
    }
}

#[test]
fn json_round_trips() {
    for sample in SAMPLES {
        let manifest = ServiceManifest::parse_and_validate(&read(sample)).unwrap();
        let json = serde_json::to_string_pretty(&manifest).unwrap();
        assert_eq!(
            ServiceManifest::from_json_str(&json).unwrap(),
            manifest,
            "{sample}"
        );
        assert_eq!(ServiceManifest::parse(&json).unwrap(), manifest, "{sample}");
    }
}

#[test]
fn several_mistakes_are_all_reported_with_paths() {
    let text = read("inference-club-core/tests/fixtures/manifests/several-mistakes.yaml");
    let error = ServiceManifest::parse_and_validate(&text).unwrap_err();
    let lines = error.lines();
    let expected_prefixes = [
        "schema_version: must be 1, got 2",
        "agent.listen_port: must be between 1 and 65535, got 0",
        "hosts[0].gpu.vendor: must be one of [nvidia, amd, apple, intel], got \"via\"",
        "hosts[0].gpu.vram_gb: must be between 0 and 4096, got -8",
        "hosts[0].services[1].engine: must be one of [vllm, lmstudio, ollama, sglang, llamacpp, tgi, other], got \"foo\"",
        "hosts[0].services[1].url: must be an absolute http(s) URL",
        "hosts[0].services[1].max_concurrent: must be between 1",
        "hosts[0].services[1].name: duplicate service name \"chat\" (first used at hosts[0].services[0].name)",
        "hosts[0].services[1].models[0]: needs a served id",
        "hosts[1].id: duplicate host id \"box\" (first used at hosts[0].id)",
    ];

    assert_eq!(lines.len(), expected_prefixes.len(), "{lines:#?}");
    for (line, prefix) in lines.iter().zip(expected_prefixes) {
        assert!(
            line.starts_with(prefix),
            "{line:?} should start with {prefix:?}"
        );
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let text = read("inference-club-core/tests/fixtures/manifests/not-yaml.yaml");
    let error = ServiceManifest::parse_and_validate(&text).unwrap_err();
    assert!(matches!(error, ManifestError::Syntax { .. }));
    assert!(error.to_string().contains("line 3"), "{error}");
}

#[test]
fn unknown_fields_are_tolerated_and_dropped() {
    let text = "schema_version: 1\nfuture_field: {a: 1}\nagent: {name: n, region: eu}\nhosts:\n  - id: h\n    rack: 4\n";
    let manifest = ServiceManifest::parse_and_validate(text).unwrap();
    let json = serde_json::to_string(&manifest).unwrap();
    assert!(!json.contains("future_field") && !json.contains("rack") && !json.contains("region"));
}

#[test]
fn redaction_leaves_no_api_key_anywhere() {
    for sample in SAMPLES {
        let manifest = ServiceManifest::parse_and_validate(&read(sample)).unwrap();
        let keys: Vec<&str> = manifest
            .services()
            .filter_map(|service| service.api_key.as_deref())
            .filter(|key| !key.is_empty())
            .collect();
        let redacted = serde_json::to_string(&manifest.redacted()).unwrap();
        for key in keys {
            assert!(!redacted.contains(key), "{sample}: api key {key:?} leaked");
        }
        assert!(!redacted.contains("api_key"), "{sample}");
        assert!(
            !redacted.contains("hf_example_not_a_real_token"),
            "{sample}"
        );
    }
}

#[test]
fn redaction_of_the_samples_keeps_them_valid() {
    for sample in SAMPLES {
        let manifest = ServiceManifest::parse_and_validate(&read(sample)).unwrap();
        assert_eq!(manifest.redacted().validate(), Ok(()), "{sample}");
    }
}

#[test]
fn checked_in_schema_is_current() {
    let checked_in = read("docs/manifest.schema.json");
    assert!(
        checked_in == json_schema_pretty(),
        "docs/manifest.schema.json is stale; regenerate it with\n\
         cargo run -p inference-club-examples --bin club-provider -- schema > docs/manifest.schema.json"
    );
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in proptest::prelude::any::<String>()) {
        let _ = ServiceManifest::parse_and_validate(&text);
    }

    #[test]
    fn damaged_samples_never_panic(cut in 0usize..4000, insert in "[\\[\\]{}:,\\- a-z0-9\"'\\n]{0,8}") {
        let text = read("examples/manifests/every-field.yaml");
        let mut cut = cut.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let damaged = format!("{}{insert}{}", &text[..cut], &text[cut..]);
        let _ = ServiceManifest::parse_and_validate(&damaged);
    }
}

#[test]
fn a_manifest_without_an_agent_name_is_refused_at_that_path() {
    for agent in ["agent: {hostname: rig}\n", "agent: {name: \"  \"}\n", ""] {
        let text = format!("schema_version: 1\n{agent}hosts:\n  - id: box\n");
        let error = ServiceManifest::parse_and_validate(&text).unwrap_err();
        assert_eq!(
            error.lines(),
            vec!["agent.name: is required".to_owned()],
            "{text}"
        );
    }
    let named = "schema_version: 1\nagent: {name: rig}\nhosts:\n  - id: box\n";
    assert!(ServiceManifest::parse_and_validate(named).is_ok());
}
