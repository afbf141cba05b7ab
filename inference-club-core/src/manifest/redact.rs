//! Redaction: the manifest as it may leave the machine.

use serde_json::Value;

use super::types::{Extra, Service, ServiceManifest};

/// Fragments of an `extra` key that mark its value as secret (matched case-insensitively).
pub const SECRET_KEY_FRAGMENTS: &[&str] = &[
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "auth",
    "cookie",
];

impl ServiceManifest {
    /// The manifest without secrets, fit to send to the coordinator and to show publicly.
    ///
    /// Removed: every `api_key`; every `command` (launch lines routinely carry `--api-key ...` or
    /// `HF_TOKEN=...`, and no pattern catches every way of writing a secret; the coordinator has no use
    /// for them); every `extra` entry, at any depth, whose key looks secret (see
    /// [`SECRET_KEY_FRAGMENTS`]); user name, password, query and fragment of every `url`.
    /// Unknown fields are never kept in the first place.
    #[must_use]
    pub fn redacted(&self) -> Self {
        let mut redacted = self.clone();
        for service in redacted
            .hosts
            .iter_mut()
            .flat_map(|host| host.services.iter_mut())
        {
            redact_service(service);
        }
        redacted
    }
}

fn redact_service(service: &mut Service) {
    service.api_key = None;
    service.command = None;
    service.url = service.url.as_deref().map(redact_url);
    redact_extra(&mut service.extra);
}

/// Whether an `extra` key names a secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_KEY_FRAGMENTS
        .iter()
        .any(|fragment| key.contains(fragment))
}

fn redact_extra(extra: &mut Extra) {
    extra.retain(|key, _| !is_secret_key(key));
    for value in extra.values_mut() {
        redact_value(value);
    }
}

fn redact_value(value: &mut Value) {
    match value {
        Value::Object(object) => redact_extra(object),
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

/// The URL without credentials, query or fragment; as written when it has none of them. Text that
/// does not parse as a URL is dropped to an empty string rather than passed on unexamined.
fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return String::new();
    };
    let clean = parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.query().is_none()
        && parsed.fragment().is_none();
    if clean {
        return url.to_owned();
    }
    // Both fail only for URLs that cannot have credentials, which then have none to remove.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    parsed.set_query(None);
    parsed.set_fragment(None);
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::types::Host;
    use serde_json::json;

    fn manifest_with(service: Service) -> ServiceManifest {
        ServiceManifest {
            schema_version: 1,
            hosts: vec![Host {
                id: "h".into(),
                services: vec![service],
                ..Host::default()
            }],
            ..ServiceManifest::default()
        }
    }

    #[test]
    fn removes_keys_commands_and_secret_extras() {
        let extra = json!({
            "HF_TOKEN": "hf_abc", "Api-Key": "k1", "db_password": "pw", "gpu_memory_utilization": 0.9,
            "nested": {"client_secret": "s", "keep": "me", "list": [{"token": "t"}]}
        });
        let service = Service {
            name: "s".into(),
            url: Some("https://user:pw@gpu.lan:8000/v1?key=abc#x".into()),
            api_key: Some("sk-very-secret".into()),
            command: Some("vllm serve --api-key sk-very-secret".into()),
            extra: extra.as_object().cloned().unwrap_or_default(),
            ..Service::default()
        };
        let redacted = manifest_with(service).redacted();
        let service = &redacted.hosts[0].services[0];
        assert_eq!(service.api_key, None);
        assert_eq!(service.command, None);
        assert_eq!(service.url.as_deref(), Some("https://gpu.lan:8000/v1"));
        let plain = manifest_with(Service {
            url: Some("http://127.0.0.1:11434".into()),
            ..Service::default()
        });
        assert_eq!(
            plain.redacted().hosts[0].services[0].url.as_deref(),
            Some("http://127.0.0.1:11434")
        );
        assert_eq!(
            Value::Object(service.extra.clone()),
            json!({"gpu_memory_utilization": 0.9, "nested": {"keep": "me", "list": [{}]}})
        );
    }

    #[test]
    fn secret_keys_match_case_insensitively() {
        assert!(is_secret_key("OPENAI_API_KEY"));
        assert!(is_secret_key("Authorization"));
        assert!(!is_secret_key("max_model_len"));
    }
}
