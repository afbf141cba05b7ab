//! Reading a batch's input file: one request per line, as OpenAI's Batch API takes them
//! (`{"custom_id", "method": "POST", "url", "body"}`). A line that is not such a request becomes
//! an error line for the error file, naming its line number and what is wrong; the others run.

use std::collections::HashSet;

use inference_club_core::endpoint::Endpoint;
use serde_json::{Value, json};

use crate::store::NewLine;

/// The most lines an input file may hold (OpenAI's limit).
pub const MAX_LINES: usize = 50_000;
/// The longest `custom_id`.
pub const MAX_CUSTOM_ID_CHARS: usize = 512;

/// The endpoints a batch may target.
pub const BATCH_ENDPOINTS: [Endpoint; 4] = [
    Endpoint::ChatCompletions,
    Endpoint::Completions,
    Endpoint::Embeddings,
    Endpoint::Responses,
];

/// Why an input file cannot make a batch at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// Not UTF-8 text.
    NotText,
    /// No line holds anything.
    Empty,
    /// More than [`MAX_LINES`] lines.
    TooManyLines(usize),
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotText => f.write_str("the input file is not UTF-8 text"),
            Self::Empty => f.write_str("the input file has no requests"),
            Self::TooManyLines(n) => write!(
                f,
                "the input file has {n} lines; a batch takes at most {MAX_LINES}"
            ),
        }
    }
}

/// The error line of a malformed input line (OpenAI's error file shape, with the line number).
pub fn error_line(custom_id: &str, line_no: u64, code: &str, message: &str) -> Value {
    json!({
        "id": format!("batch_req_{}", uuid::Uuid::now_v7().simple()),
        "custom_id": if custom_id.is_empty() { Value::Null } else { Value::String(custom_id.to_owned()) },
        "response": null,
        "error": {"code": code, "message": message, "line": line_no},
    })
}

/// The lines of an input file for a batch at `endpoint`: each a request to run (its body), or
/// an error line naming its number and the problem (not JSON, no `custom_id`, a `custom_id`
/// seen before, a method other than `POST`, a `url` other than the batch's endpoint, no `body`
/// object, or a `body` without a `model`). Blank lines are skipped.
pub fn read_lines(data: &[u8], endpoint: Endpoint) -> Result<Vec<NewLine>, InputError> {
    let text = std::str::from_utf8(data).map_err(|_| InputError::NotText)?;
    let count = text.lines().filter(|l| !l.trim().is_empty()).count();
    if count == 0 {
        return Err(InputError::Empty);
    }
    if count > MAX_LINES {
        return Err(InputError::TooManyLines(count));
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut lines = Vec::with_capacity(count);
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = index as u64 + 1;
        let (custom_id, content) = match read_line(line, endpoint) {
            Ok((custom_id, _)) if seen.contains(&custom_id) => (
                custom_id.clone(),
                Err(error_line(
                    &custom_id,
                    line_no,
                    "duplicate_custom_id",
                    &format!("line {line_no}: custom_id {custom_id:?} is used by an earlier line"),
                )),
            ),
            Ok((custom_id, body)) => {
                seen.insert(custom_id.clone());
                (custom_id, Ok(body))
            }
            Err((custom_id, code, message)) => {
                let message = format!("line {line_no}: {message}");
                let error = error_line(&custom_id, line_no, code, &message);
                (custom_id, Err(error))
            }
        };
        lines.push(NewLine {
            line_no,
            custom_id,
            content,
        });
    }
    Ok(lines)
}

/// One line: its `custom_id` and body, or its `custom_id` (if it had one), an error code and
/// what is wrong.
fn read_line(
    line: &str,
    endpoint: Endpoint,
) -> Result<(String, Value), (String, &'static str, String)> {
    let value: Value = serde_json::from_str(line)
        .map_err(|e| (String::new(), "invalid_json", format!("not JSON: {e}")))?;
    let custom_id = match value.get("custom_id") {
        Some(Value::String(id)) if !id.is_empty() && id.chars().count() <= MAX_CUSTOM_ID_CHARS => {
            id.clone()
        }
        _ => {
            return Err((
                String::new(),
                "missing_custom_id",
                format!("`custom_id` must be a string of 1 to {MAX_CUSTOM_ID_CHARS} characters"),
            ));
        }
    };
    let wrong = |code, message: String| (custom_id.clone(), code, message);
    match value.get("method").and_then(Value::as_str) {
        Some(method) if method.eq_ignore_ascii_case("POST") => {}
        _ => return Err(wrong("invalid_method", "`method` must be \"POST\"".into())),
    }
    let url = value.get("url").and_then(Value::as_str).unwrap_or_default();
    if Endpoint::from_path(url) != Some(endpoint) {
        return Err(wrong(
            "invalid_url",
            format!(
                "`url` must be the batch's endpoint {}, got {url:?}",
                endpoint.path()
            ),
        ));
    }
    let Some(body) = value.get("body").filter(|b| b.is_object()) else {
        return Err(wrong("invalid_body", "`body` must be an object".into()));
    };
    if body
        .get("model")
        .and_then(Value::as_str)
        .is_none_or(|m| m.trim().is_empty())
    {
        return Err(wrong(
            "missing_model",
            "`body.model` is required (a string)".into(),
        ));
    }
    Ok((custom_id, body.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_run_and_bad_ones_say_why_with_their_number() {
        let file = concat!(
            r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}"#,
            "\n\n",
            "not json\n",
            r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}"#,
            "\n",
            r#"{"custom_id":"b","method":"GET","url":"/v1/chat/completions","body":{"model":"m"}}"#,
            "\n",
            r#"{"custom_id":"c","method":"POST","url":"/v1/embeddings","body":{"model":"m"}}"#,
            "\n",
            r#"{"custom_id":"d","method":"POST","url":"/v1/chat/completions","body":{}}"#,
            "\n",
            r#"{"method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}"#,
        );
        let lines = read_lines(file.as_bytes(), Endpoint::ChatCompletions).unwrap();
        let numbers: Vec<u64> = lines.iter().map(|l| l.line_no).collect();
        assert_eq!(numbers, [1, 3, 4, 5, 6, 7, 8]);
        assert!(lines[0].content.is_ok());
        let codes: Vec<&str> = lines[1..]
            .iter()
            .map(|l| {
                l.content.as_ref().unwrap_err()["error"]["code"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            codes,
            [
                "invalid_json",
                "duplicate_custom_id",
                "invalid_method",
                "invalid_url",
                "missing_model",
                "missing_custom_id"
            ]
        );
        let error = lines[1].content.as_ref().unwrap_err();
        assert_eq!(error["error"]["line"], 3);
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("line 3:")
        );
    }

    #[test]
    fn files_that_cannot_make_a_batch() {
        assert_eq!(
            read_lines(b"\n \n", Endpoint::Embeddings).unwrap_err(),
            InputError::Empty
        );
        assert_eq!(
            read_lines(b"\xff\xfe", Endpoint::Embeddings).unwrap_err(),
            InputError::NotText
        );
        let many = "{}\n".repeat(MAX_LINES + 1);
        assert!(matches!(
            read_lines(many.as_bytes(), Endpoint::Embeddings),
            Err(InputError::TooManyLines(_))
        ));
    }
}
