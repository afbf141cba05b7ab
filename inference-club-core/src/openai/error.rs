//! The OpenAI error envelope.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `{"error": {...}}`: the body of every error response, and of an error sent inside a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ApiError,
}

/// An OpenAI error object. All four keys are always written; `param` and `code` may be null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, for people.
    #[serde(default, deserialize_with = "string_or_default")]
    pub message: String,
    /// Error type, e.g. `invalid_request_error`.
    #[serde(rename = "type", default, deserialize_with = "string_or_default")]
    pub kind: String,
    /// The request parameter at fault.
    #[serde(default, deserialize_with = "optional_string")]
    pub param: Option<String>,
    /// Machine-readable code (engines sometimes send a number; it is read as a string).
    #[serde(default, deserialize_with = "optional_string")]
    pub code: Option<String>,
}

impl ApiError {
    /// An error with a message, type and code.
    pub fn new(kind: impl Into<String>, message: impl Into<String>, code: Option<&str>) -> Self {
        Self {
            message: message.into(),
            kind: kind.into(),
            param: None,
            code: code.map(str::to_owned),
        }
    }

    /// The same error naming the parameter at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Wraps the error in its envelope.
    pub fn into_response(self) -> ErrorResponse {
        ErrorResponse { error: self }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} ({code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn scalar_to_string(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

fn optional_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.and_then(scalar_to_string))
}

fn string_or_default<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(optional_string(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_all_four_keys() {
        let e = ApiError::new("invalid_request_error", "bad", None).into_response();
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"error": {"message": "bad", "type": "invalid_request_error", "param": null, "code": null}})
        );
    }

    #[test]
    fn reads_numeric_codes_and_missing_fields() {
        let e: ErrorResponse =
            serde_json::from_value(json!({"error": {"message": "nope", "code": 400}})).unwrap();
        assert_eq!(e.error.code.as_deref(), Some("400"));
        assert_eq!(e.error.kind, "");
    }
}
