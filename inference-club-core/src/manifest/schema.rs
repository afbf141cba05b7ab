//! The JSON Schema of the manifest, generated from the same types the parser fills.

use super::types::ServiceManifest;

/// Where the checked-in copy lives, relative to the repository root.
pub const SCHEMA_PATH: &str = "docs/manifest.schema.json";

/// The JSON Schema (draft 2020-12) of a manifest.
pub fn json_schema() -> serde_json::Value {
    serde_json::Value::from(schemars::schema_for!(ServiceManifest))
}

/// The JSON Schema as checked in under [`SCHEMA_PATH`]: pretty-printed, with a trailing newline.
pub fn json_schema_pretty() -> String {
    let mut text = format!("{:#}", json_schema());
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_are_the_allowed_strings() {
        let schema = json_schema_pretty();
        for name in [
            "\"audio-enhance\"",
            "\"llamacpp\"",
            "\"nvidia\"",
            "\"members\"",
        ] {
            assert!(schema.contains(name), "schema lacks {name}");
        }
    }
}
