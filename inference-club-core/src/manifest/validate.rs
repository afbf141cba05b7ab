//! The rules of a manifest, checked all at once: the one validator that node and coordinator share.

use std::collections::HashMap;

use serde_json::Value;

use super::access::{AccessPolicy, is_github_login};
use super::limits::{
    MAX_GPU_COUNT, MAX_HOSTS, MAX_SERVICES, MAX_STRING_CHARS, MAX_VRAM_GB, SUPPORTED_SCHEMA_VERSION,
};
use super::problem::{FieldPath, Problem, ProblemKind, UrlProblem, ValidationErrors};
use super::types::{Agent, Gpu, Host, Model, Service, ServiceManifest};

impl ServiceManifest {
    /// Checks every rule and returns every problem, each with its path.
    ///
    /// Rules: `schema_version` is 1; at most 50 hosts and 100 services in all; strings of at most
    /// 1024 characters; host ids and service names present and unique; URLs absolute http(s);
    /// every model has a served id; `listen_port`, `max_concurrent`, `context_length`, `vram_gb` and
    /// `count` in range; access lists hold GitHub logins.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut checker = Checker::default();
        checker.manifest(self);
        ValidationErrors::new(checker.problems).into_result()
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn manifest(&mut self, manifest: &ServiceManifest) {
        let root = FieldPath::root();
        if manifest.schema_version != SUPPORTED_SCHEMA_VERSION {
            let got = manifest.schema_version;
            let supported = SUPPORTED_SCHEMA_VERSION;
            self.report(
                root.field("schema_version"),
                ProblemKind::UnsupportedVersion { supported, got },
            );
        }
        self.agent(&manifest.agent, &root.field("agent"));
        self.counts(manifest, &root);
        let hosts = root.field("hosts");
        for (index, host) in manifest.hosts.iter().enumerate() {
            self.host(host, &hosts.index(index));
        }
        self.unique_host_ids(manifest, &hosts);
        self.unique_service_names(manifest, &hosts);
    }

    fn counts(&mut self, manifest: &ServiceManifest, root: &FieldPath) {
        let hosts = manifest.hosts.len();
        if hosts > MAX_HOSTS {
            self.report(
                root.field("hosts"),
                ProblemKind::TooMany {
                    what: "hosts",
                    count: hosts,
                    max: MAX_HOSTS,
                },
            );
        }
        let services = manifest.services().count();
        if services > MAX_SERVICES {
            let kind = ProblemKind::TooMany {
                what: "services in all hosts",
                count: services,
                max: MAX_SERVICES,
            };
            self.report(root.field("hosts"), kind);
        }
    }

    fn agent(&mut self, agent: &Agent, path: &FieldPath) {
        // The node's name is its provider's name in the club: every manifest needs one.
        match agent.name.as_deref() {
            Some(name) if !name.trim().is_empty() => {
                self.optional_text(Some(name), &path.field("name"));
            }
            _ => self.report(path.field("name"), ProblemKind::Missing),
        }
        self.optional_text(agent.hostname.as_deref(), &path.field("hostname"));
        if let Some(port) = agent.listen_port {
            self.range(f64::from(port), 1.0, 65535.0, &path.field("listen_port"));
        }
        self.access(agent.access.as_ref(), &path.field("access"));
    }

    fn host(&mut self, host: &Host, path: &FieldPath) {
        self.required_text(&host.id, &path.field("id"));
        self.optional_text(host.hostname.as_deref(), &path.field("hostname"));
        self.optional_text(host.address.as_deref(), &path.field("address"));
        self.optional_text(host.notes.as_deref(), &path.field("notes"));
        if let Some(gpu) = &host.gpu {
            self.gpu(gpu, &path.field("gpu"));
        }
        let services = path.field("services");
        for (index, service) in host.services.iter().enumerate() {
            self.service(service, &services.index(index));
        }
    }

    fn gpu(&mut self, gpu: &Gpu, path: &FieldPath) {
        self.optional_text(gpu.model.as_deref(), &path.field("model"));
        if let Some(vram_gb) = gpu.vram_gb {
            self.range(vram_gb, 0.0, MAX_VRAM_GB, &path.field("vram_gb"));
        }
        if let Some(count) = gpu.count {
            self.range(
                f64::from(count),
                0.0,
                f64::from(MAX_GPU_COUNT),
                &path.field("count"),
            );
        }
    }

    fn service(&mut self, service: &Service, path: &FieldPath) {
        self.required_text(&service.name, &path.field("name"));
        if let Some(url) = service.url.as_deref() {
            self.url(url, &path.field("url"));
        }
        self.texts(&service.features, &path.field("features"));
        self.optional_text(service.command.as_deref(), &path.field("command"));
        self.optional_text(service.api_key.as_deref(), &path.field("api_key"));
        let extra = path.field("extra");
        for (key, value) in &service.extra {
            self.json_texts(key, value, &extra);
        }
        if let Some(max_concurrent) = service.max_concurrent {
            self.range(
                f64::from(max_concurrent),
                1.0,
                f64::from(u32::MAX),
                &path.field("max_concurrent"),
            );
        }
        self.access(service.access.as_ref(), &path.field("access"));
        let models = path.field("models");
        for (index, model) in service.models.iter().enumerate() {
            self.model(model, &models.index(index));
        }
    }

    fn model(&mut self, model: &Model, path: &FieldPath) {
        if model.served_id().is_none() {
            self.report(path.clone(), ProblemKind::NoServedId);
        }
        self.optional_text(model.id.as_deref(), &path.field("id"));
        self.optional_text(model.hf.as_deref(), &path.field("hf"));
        self.optional_text(model.name.as_deref(), &path.field("name"));
        self.texts(&model.input_modalities, &path.field("input_modalities"));
        self.texts(&model.output_modalities, &path.field("output_modalities"));
        self.texts(&model.features, &path.field("features"));
        if let Some(context_length) = model.context_length {
            self.range(
                f64::from(context_length),
                1.0,
                f64::from(u32::MAX),
                &path.field("context_length"),
            );
        }
        self.optional_text(model.quantization.as_deref(), &path.field("quantization"));
    }

    fn access(&mut self, access: Option<&AccessPolicy>, path: &FieldPath) {
        let Some(AccessPolicy::Logins(logins)) = access else {
            return;
        };
        let path = path.field("logins");
        for (index, login) in logins.iter().enumerate() {
            if !is_github_login(login) {
                self.report(path.index(index), ProblemKind::BadLogin(truncated(login)));
            }
        }
    }

    fn unique_host_ids(&mut self, manifest: &ServiceManifest, hosts: &FieldPath) {
        let ids = manifest
            .hosts
            .iter()
            .enumerate()
            .map(|(index, host)| (host.id.as_str(), hosts.index(index).field("id")));
        self.unique("host id", ids);
    }

    fn unique_service_names(&mut self, manifest: &ServiceManifest, hosts: &FieldPath) {
        let names = manifest
            .hosts
            .iter()
            .enumerate()
            .flat_map(|(host_index, host)| {
                host.services
                    .iter()
                    .enumerate()
                    .map(move |(index, service)| {
                        let path = hosts
                            .index(host_index)
                            .field("services")
                            .index(index)
                            .field("name");
                        (service.name.as_str(), path)
                    })
            });
        self.unique("service name", names);
    }

    /// Reports every repeat of a non-empty value, pointing at its first use.
    fn unique<'a>(
        &mut self,
        what: &'static str,
        values: impl Iterator<Item = (&'a str, FieldPath)>,
    ) {
        let mut first_seen: HashMap<&str, FieldPath> = HashMap::new();
        for (value, path) in values.filter(|(value, _)| !value.is_empty()) {
            match first_seen.get(value) {
                Some(first) => {
                    let kind = ProblemKind::Duplicate {
                        what,
                        value: truncated(value),
                        first: first.clone(),
                    };
                    self.report(path, kind);
                }
                None => {
                    first_seen.insert(value, path);
                }
            }
        }
    }

    fn url(&mut self, url: &str, path: &FieldPath) {
        if let Err(problem) = check_url(url) {
            self.report(path.clone(), ProblemKind::BadUrl(problem));
        }
    }

    fn range(&mut self, got: f64, min: f64, max: f64, path: &FieldPath) {
        if !(min..=max).contains(&got) {
            self.report(path.clone(), ProblemKind::OutOfRange { min, max, got });
        }
    }

    fn required_text(&mut self, text: &str, path: &FieldPath) {
        if text.is_empty() {
            self.report(path.clone(), ProblemKind::Missing);
        }
        self.optional_text(Some(text), path);
    }

    fn optional_text(&mut self, text: Option<&str>, path: &FieldPath) {
        let Some(text) = text else {
            return;
        };
        let len = text.chars().count();
        if len > MAX_STRING_CHARS {
            self.report(
                path.clone(),
                ProblemKind::TooLong {
                    len,
                    max: MAX_STRING_CHARS,
                },
            );
        }
    }

    fn texts(&mut self, texts: &[String], path: &FieldPath) {
        for (index, text) in texts.iter().enumerate() {
            self.optional_text(Some(text), &path.index(index));
        }
    }

    /// Checks the length of every key and string inside a free-form `extra` value.
    fn json_texts(&mut self, key: &str, value: &Value, parent: &FieldPath) {
        let path = parent.field(key);
        self.optional_text(Some(key), &path);
        match value {
            Value::String(text) => self.optional_text(Some(text), &path),
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    if let Value::String(text) = item {
                        self.optional_text(Some(text), &path.index(index));
                    }
                }
            }
            Value::Object(object) => {
                for (inner_key, inner_value) in object {
                    self.json_texts(inner_key, inner_value, &path);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    fn report(&mut self, path: FieldPath, kind: ProblemKind) {
        self.problems.push(Problem::new(path, kind));
    }
}

/// Whether `url` is an absolute `http`/`https` URL with a host.
pub fn check_url(url: &str) -> Result<url::Url, UrlProblem> {
    let parsed = url::Url::parse(url)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlProblem::Scheme(parsed.scheme().to_owned()));
    }
    if parsed.host().is_none() {
        return Err(UrlProblem::NoHost);
    }
    Ok(parsed)
}

/// A value quoted back in a message, cut to a readable length.
fn truncated(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.chars().count() <= SHOWN {
        return text.to_owned();
    }
    let mut shown: String = text.chars().take(SHOWN).collect();
    shown.push('…');
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::types::Model;

    fn valid() -> ServiceManifest {
        ServiceManifest {
            schema_version: 1,
            agent: Agent {
                name: Some("rig".into()),
                ..Agent::default()
            },
            hosts: vec![Host {
                id: "box".into(),
                services: vec![Service {
                    name: "ollama".into(),
                    url: Some("http://127.0.0.1:11434".into()),
                    models: vec![Model {
                        id: Some("qwen3:8b".into()),
                        ..Model::default()
                    }],
                    ..Service::default()
                }],
                ..Host::default()
            }],
        }
    }

    fn lines(manifest: &ServiceManifest) -> Vec<String> {
        match manifest.validate() {
            Ok(()) => Vec::new(),
            Err(errors) => errors.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_valid_manifest_passes() {
        assert_eq!(lines(&valid()), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut manifest = valid();
        manifest.schema_version = 2;
        manifest.agent.listen_port = Some(0);
        let mut second = manifest.hosts[0].clone();
        second.gpu = Some(Gpu {
            vram_gb: Some(-1.0),
            count: Some(5000),
            ..Gpu::default()
        });
        let service = &mut second.services[0];
        service.url = Some("ftp://example.com".into());
        service.max_concurrent = Some(0);
        service.models.push(Model::default());
        service.access = Some(AccessPolicy::Logins(vec!["ok".into(), "not ok".into()]));
        manifest.hosts.push(second);
        manifest.hosts[0].notes = Some("x".repeat(MAX_STRING_CHARS + 1));
        assert_eq!(
            lines(&manifest),
            [
                "schema_version: must be 1, got 2",
                "agent.listen_port: must be between 1 and 65535, got 0",
                "hosts[0].notes: must be at most 1024 characters, got 1025",
                "hosts[1].gpu.vram_gb: must be between 0 and 4096, got -1",
                "hosts[1].gpu.count: must be between 0 and 1024, got 5000",
                r#"hosts[1].services[0].url: must be an absolute http(s) URL: scheme "ftp" is not http or https"#,
                "hosts[1].services[0].max_concurrent: must be between 1 and 4294967295, got 0",
                r#"hosts[1].services[0].access.logins[1]: is not a GitHub login: "not ok""#,
                "hosts[1].services[0].models[1]: needs a served id: set `id` or `hf`",
                r#"hosts[1].id: duplicate host id "box" (first used at hosts[0].id)"#,
                r#"hosts[1].services[0].name: duplicate service name "ollama" (first used at hosts[0].services[0].name)"#,
            ]
        );
    }

    #[test]
    fn missing_ids_and_names_are_reported() {
        let mut manifest = valid();
        manifest.hosts[0].id = String::new();
        manifest.hosts[0].services[0].name = String::new();
        assert_eq!(
            lines(&manifest),
            [
                "hosts[0].id: is required",
                "hosts[0].services[0].name: is required"
            ]
        );
    }

    #[test]
    fn counts_are_limited() {
        let mut manifest = valid();
        let host = manifest.hosts[0].clone();
        manifest.hosts = (0..=MAX_HOSTS)
            .map(|index| {
                let mut host = host.clone();
                host.id = format!("h{index}");
                host.services = (0..2)
                    .map(|s| Service {
                        name: format!("s{index}-{s}"),
                        ..Service::default()
                    })
                    .collect();
                host
            })
            .collect();
        assert_eq!(
            lines(&manifest),
            [
                "hosts: must have at most 50 hosts, got 51",
                "hosts: must have at most 100 services in all hosts, got 102"
            ]
        );
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert!(check_url("https://gpu.lan:8000/v1").is_ok());
        assert!(matches!(check_url("/v1"), Err(UrlProblem::Unparsable(_))));
        assert!(matches!(
            check_url("localhost:11434"),
            Err(UrlProblem::Scheme(_))
        ));
        assert!(matches!(
            check_url("file:///tmp/x"),
            Err(UrlProblem::Scheme(_))
        ));
    }

    #[test]
    fn long_strings_inside_extra_are_reported() {
        let mut manifest = valid();
        let long = "y".repeat(MAX_STRING_CHARS + 1);
        manifest.hosts[0].services[0]
            .extra
            .insert("args".into(), serde_json::json!({"flags": [long]}));
        assert_eq!(
            lines(&manifest),
            ["hosts[0].services[0].extra.args.flags[0]: must be at most 1024 characters, got 1025"]
        );
    }
}
