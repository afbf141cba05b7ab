//! Reads a parsed document (a `serde_json::Value`) into a [`ServiceManifest`] loosely: a value of the
//! wrong type or an unknown enum name is recorded as a [`Problem`] with its path and decoding goes on,
//! so the user sees every problem at once. Unknown fields are ignored.

use serde_json::{Map, Value};

use super::access::AccessPolicy;
use super::problem::{FieldPath, Problem, ProblemKind};
use super::types::{Agent, Choice, Extra, Gpu, Host, Model, Service, ServiceManifest};

type Object = Map<String, Value>;

/// Decodes `document`, returning the manifest (with absent or broken fields left at their defaults)
/// and every type problem found.
pub(crate) fn decode(document: &Value) -> (ServiceManifest, Vec<Problem>) {
    let mut decoder = Decoder::default();
    let manifest = decoder.manifest(document);
    (manifest, decoder.problems)
}

#[derive(Default)]
struct Decoder {
    problems: Vec<Problem>,
}

impl Decoder {
    fn manifest(&mut self, document: &Value) -> ServiceManifest {
        let root = FieldPath::root();
        let Some(object) = self.object(document, &root) else {
            return ServiceManifest::default();
        };
        let schema_version = match object.get("schema_version") {
            None | Some(Value::Null) => {
                self.report(root.field("schema_version"), ProblemKind::Missing);
                None
            }
            Some(_) => self.integer(object, "schema_version", &root),
        };
        ServiceManifest {
            schema_version: schema_version.unwrap_or(0),
            agent: self
                .nested(object, "agent", &root, Self::agent)
                .unwrap_or_default(),
            hosts: self.list(object, "hosts", &root, Self::host),
        }
    }

    fn agent(&mut self, object: &Object, path: &FieldPath) -> Agent {
        Agent {
            name: self.string(object, "name", path),
            hostname: self.string(object, "hostname", path),
            listen_port: self.integer(object, "listen_port", path),
            access: self.access(object, path),
        }
    }

    fn host(&mut self, object: &Object, path: &FieldPath) -> Host {
        Host {
            id: self.string(object, "id", path).unwrap_or_default(),
            hostname: self.string(object, "hostname", path),
            address: self.string(object, "address", path),
            notes: self.string(object, "notes", path),
            gpu: self.nested(object, "gpu", path, Self::gpu),
            services: self.list(object, "services", path, Self::service),
        }
    }

    fn gpu(&mut self, object: &Object, path: &FieldPath) -> Gpu {
        Gpu {
            vendor: self.choice(object, "vendor", path),
            model: self.string(object, "model", path),
            vram_gb: self.number(object, "vram_gb", path),
            count: self.integer(object, "count", path),
        }
    }

    fn service(&mut self, object: &Object, path: &FieldPath) -> Service {
        Service {
            name: self.string(object, "name", path).unwrap_or_default(),
            service_type: self.choice(object, "type", path).unwrap_or_default(),
            engine: self.choice(object, "engine", path),
            url: self.string(object, "url", path),
            features: self.strings(object, "features", path),
            command: self.string(object, "command", path),
            extra: self.extra(object, path),
            api_key: self.string(object, "api_key", path),
            max_concurrent: self.integer(object, "max_concurrent", path),
            access: self.access(object, path),
            models: self.list(object, "models", path, Self::model),
        }
    }

    fn model(&mut self, object: &Object, path: &FieldPath) -> Model {
        Model {
            id: self.string(object, "id", path),
            hf: self.string(object, "hf", path),
            name: self.string(object, "name", path),
            input_modalities: self.strings(object, "input_modalities", path),
            output_modalities: self.strings(object, "output_modalities", path),
            features: self.strings(object, "features", path),
            context_length: self.integer(object, "context_length", path),
            quantization: self.string(object, "quantization", path),
        }
    }

    /// `access: owner | members | {logins: [...]}`.
    fn access(&mut self, object: &Object, path: &FieldPath) -> Option<AccessPolicy> {
        let value = present(object, "access")?;
        let path = path.field("access");
        match value {
            Value::String(word) => match word.as_str() {
                "owner" => Some(AccessPolicy::Owner),
                "members" => Some(AccessPolicy::Members),
                _ => {
                    let got = word.clone();
                    self.report(
                        path,
                        ProblemKind::NotOneOf {
                            allowed: &["owner", "members", "{logins: [...]}"],
                            got,
                        },
                    );
                    None
                }
            },
            Value::Object(inner) if inner.len() == 1 && inner.contains_key("logins") => {
                Some(AccessPolicy::Logins(self.strings(inner, "logins", &path)))
            }
            _ => {
                self.report(
                    path,
                    ProblemKind::WrongType {
                        expected: "owner, members or {logins: [...]}",
                    },
                );
                None
            }
        }
    }

    /// A nested mapping decoded by `read`; `None` when absent or not a mapping.
    fn nested<T>(
        &mut self,
        object: &Object,
        key: &str,
        path: &FieldPath,
        read: fn(&mut Self, &Object, &FieldPath) -> T,
    ) -> Option<T> {
        let value = present(object, key)?;
        let path = path.field(key);
        let inner = self.object(value, &path)?;
        Some(read(self, inner, &path))
    }

    /// A list of mappings, each decoded by `read`; elements that are not mappings are reported and skipped.
    fn list<T>(
        &mut self,
        object: &Object,
        key: &str,
        path: &FieldPath,
        read: fn(&mut Self, &Object, &FieldPath) -> T,
    ) -> Vec<T> {
        let path = path.field(key);
        let Some(items) = self.array(object, key, &path) else {
            return Vec::new();
        };
        let mut decoded = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let item_path = path.index(index);
            if let Some(inner) = self.object(item, &item_path) {
                decoded.push(read(self, inner, &item_path));
            }
        }
        decoded
    }

    fn strings(&mut self, object: &Object, key: &str, path: &FieldPath) -> Vec<String> {
        let path = path.field(key);
        let Some(items) = self.array(object, key, &path) else {
            return Vec::new();
        };
        let mut strings = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match scalar_text(item) {
                Some(text) => strings.push(text),
                None => self.report(
                    path.index(index),
                    ProblemKind::WrongType {
                        expected: "a string",
                    },
                ),
            }
        }
        strings
    }

    fn array<'v>(
        &mut self,
        object: &'v Object,
        key: &str,
        path: &FieldPath,
    ) -> Option<&'v Vec<Value>> {
        match present(object, key)? {
            Value::Array(items) => Some(items),
            _ => {
                self.report(path.clone(), ProblemKind::WrongType { expected: "a list" });
                None
            }
        }
    }

    fn string(&mut self, object: &Object, key: &str, path: &FieldPath) -> Option<String> {
        let value = present(object, key)?;
        let text = scalar_text(value);
        if text.is_none() {
            self.report(
                path.field(key),
                ProblemKind::WrongType {
                    expected: "a string",
                },
            );
        }
        text
    }

    fn integer<T: WholeNumber>(
        &mut self,
        object: &Object,
        key: &str,
        path: &FieldPath,
    ) -> Option<T> {
        let value = present(object, key)?;
        let integer = value.as_u64().and_then(|n| T::try_from(n).ok());
        if integer.is_none() {
            self.report(
                path.field(key),
                ProblemKind::WrongType {
                    expected: T::EXPECTED,
                },
            );
        }
        integer
    }

    fn number(&mut self, object: &Object, key: &str, path: &FieldPath) -> Option<f64> {
        let value = present(object, key)?;
        let number = value.as_f64();
        if number.is_none() {
            self.report(
                path.field(key),
                ProblemKind::WrongType {
                    expected: "a number",
                },
            );
        }
        number
    }

    fn choice<C: Choice>(&mut self, object: &Object, key: &str, path: &FieldPath) -> Option<C> {
        let value = present(object, key)?;
        let got = scalar_text(value).unwrap_or_else(|| value.to_string());
        let choice = C::from_name(&got);
        if choice.is_none() {
            self.report(
                path.field(key),
                ProblemKind::NotOneOf {
                    allowed: C::NAMES,
                    got,
                },
            );
        }
        choice
    }

    fn extra(&mut self, object: &Object, path: &FieldPath) -> Extra {
        match present(object, "extra") {
            None => Extra::new(),
            Some(Value::Object(extra)) => extra.clone(),
            Some(_) => {
                self.report(
                    path.field("extra"),
                    ProblemKind::WrongType {
                        expected: "a mapping",
                    },
                );
                Extra::new()
            }
        }
    }

    fn object<'v>(&mut self, value: &'v Value, path: &FieldPath) -> Option<&'v Object> {
        match value {
            Value::Object(object) => Some(object),
            _ => {
                self.report(
                    path.clone(),
                    ProblemKind::WrongType {
                        expected: "a mapping",
                    },
                );
                None
            }
        }
    }

    fn report(&mut self, path: FieldPath, kind: ProblemKind) {
        self.problems.push(Problem::new(path, kind));
    }
}

/// The value at `key`, treating an explicit `null` (YAML `~` or an empty value) as absent.
fn present<'v>(object: &'v Object, key: &str) -> Option<&'v Value> {
    object.get(key).filter(|value| !value.is_null())
}

/// Text of a scalar. YAML reads `version: 1.0` or `id: 8b` loosely, so numbers and booleans are
/// accepted where a string belongs, spelled as written.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// An unsigned integer type a manifest field is read into.
trait WholeNumber: TryFrom<u64> {
    /// What the field must be, for the problem message.
    const EXPECTED: &'static str;
}

impl WholeNumber for u16 {
    const EXPECTED: &'static str = "a whole number from 0 to 65535";
}

impl WholeNumber for u32 {
    const EXPECTED: &'static str = "a whole number from 0 to 4294967295";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::types::{Engine, ServiceType};
    use serde_json::json;

    fn problem_lines(document: &Value) -> Vec<String> {
        decode(document).1.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn decodes_a_full_document() {
        let document = json!({
            "schema_version": 1,
            "agent": {"name": "n", "listen_port": 9000, "access": "owner"},
            "hosts": [{"id": "h", "gpu": {"vendor": "amd", "vram_gb": 24, "count": 2},
                "services": [{"name": "s", "type": "stt", "engine": "vllm", "models": [{"hf": "a/b"}],
                    "access": {"logins": ["bob"]}}]}]
        });
        let (manifest, problems) = decode(&document);
        assert!(problems.is_empty(), "{problems:?}");
        let service = &manifest.hosts[0].services[0];
        assert_eq!(service.engine, Some(Engine::Vllm));
        assert_eq!(service.service_type, ServiceType::Stt);
        assert_eq!(
            service.access,
            Some(AccessPolicy::Logins(vec!["bob".into()]))
        );
        assert_eq!(manifest.agent.access, Some(AccessPolicy::Owner));
        assert_eq!(
            manifest.hosts[0].gpu.as_ref().and_then(|g| g.vram_gb),
            Some(24.0)
        );
    }

    #[test]
    fn reports_every_type_problem_with_its_path() {
        let document = json!({
            "schema_version": "one",
            "agent": {"listen_port": 70000, "access": "everyone"},
            "hosts": [{"id": "h", "gpu": {"vendor": "via"}, "services": [
                {"name": "a"},
                {"name": "b", "engine": "foo", "type": "smell", "features": "tools", "models": [7]}
            ]}, "not a host"]
        });
        assert_eq!(
            problem_lines(&document),
            [
                "schema_version: must be a whole number from 0 to 4294967295",
                "agent.listen_port: must be a whole number from 0 to 65535",
                r#"agent.access: must be one of [owner, members, {logins: [...]}], got "everyone""#,
                r#"hosts[0].gpu.vendor: must be one of [nvidia, amd, apple, intel], got "via""#,
                r#"hosts[0].services[1].type: must be one of [llm, stt, tts, image, mesh, music, video, scrape, audio-enhance], got "smell""#,
                r#"hosts[0].services[1].engine: must be one of [vllm, lmstudio, ollama, sglang, llamacpp, tgi, other], got "foo""#,
                "hosts[0].services[1].features: must be a list",
                "hosts[0].services[1].models[0]: must be a mapping",
                "hosts[1]: must be a mapping",
            ]
        );
    }

    #[test]
    fn missing_schema_version_is_reported() {
        assert_eq!(problem_lines(&json!({})), ["schema_version: is required"]);
    }

    #[test]
    fn non_mapping_document_is_reported() {
        assert_eq!(
            problem_lines(&json!([1, 2])),
            ["(document): must be a mapping"]
        );
        assert_eq!(
            problem_lines(&Value::Null),
            ["(document): must be a mapping"]
        );
    }

    #[test]
    fn unknown_fields_and_nulls_are_ignored() {
        let document = json!({"schema_version": 1, "future": {"x": 1}, "agent": null,
            "hosts": [{"id": "h", "notes": null, "shiny": true}]});
        let (manifest, problems) = decode(&document);
        assert!(problems.is_empty());
        assert_eq!(manifest.hosts[0].notes, None);
    }

    #[test]
    fn scalars_read_as_strings() {
        let (manifest, problems) = decode(&json!({"schema_version": 1, "hosts": [{"id": 42}]}));
        assert!(problems.is_empty());
        assert_eq!(manifest.hosts[0].id, "42");
    }
}
