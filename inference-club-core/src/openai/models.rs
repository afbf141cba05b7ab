//! `GET /v1/models`.

use serde::{Deserialize, Serialize};

use super::Extra;

/// The model list (`object: "list"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    #[serde(default = "list_object")]
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
}

fn list_object() -> String {
    "list".into()
}

impl ModelList {
    /// A list of the given models.
    pub fn new(data: Vec<Model>) -> Self {
        Self {
            object: list_object(),
            data,
        }
    }
}

/// One model entry. `created` and `owned_by` are always written (strict clients require them) and
/// default to `0` and `""` when an engine omits them (llama.cpp's server omits `created`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// The id to request it by.
    pub id: String,
    /// Always `model`.
    #[serde(default = "model_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// Who owns it.
    #[serde(default)]
    pub owned_by: String,
    /// Other fields (capabilities, context length, …), passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

fn model_object() -> String {
    "model".into()
}

impl Model {
    /// A model entry with the given id and owner.
    pub fn new(id: impl Into<String>, owned_by: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            object: model_object(),
            created: 0,
            owned_by: owned_by.into(),
            extra: Extra::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_created_is_tolerated_and_written_back() {
        let list: ModelList = serde_json::from_value(json!({
            "object": "list",
            "data": [{"id": "tiny", "object": "model", "owned_by": "me"}]
        }))
        .unwrap();
        let out = serde_json::to_value(&list).unwrap();
        assert_eq!(out["data"][0]["created"], json!(0));
        assert_eq!(out["data"][0]["owned_by"], json!("me"));
    }
}
