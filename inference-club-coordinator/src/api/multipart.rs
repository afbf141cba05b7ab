//! Reading a `multipart/form-data` body (an upload to `/v1/audio/transcriptions` or
//! `/v1/files`), already read whole within its size limit: its text fields and its `file`.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The longest file name kept (control characters are dropped).
const MAX_FILE_NAME_CHARS: usize = 255;

/// The `file` part of a form.
#[derive(Debug, Clone)]
pub(crate) struct FilePart {
    /// Its file name (`default_name` when it had none).
    pub file_name: String,
    /// Its content type (`application/octet-stream` when it had none).
    pub content_type: String,
    /// Its bytes (never empty).
    pub data: Bytes,
}

/// Reads a form of at most `max_parts` parts: every part but `file` as a text field (a name
/// sent more than once, or ending in `[]`, as an array), and `file`. 415 when the body is not
/// `multipart/form-data` (`expected` says what it should hold), 400 when it is malformed, has
/// more parts, or has no (or an empty) `file`.
pub(crate) async fn read_form(
    headers: &HeaderMap,
    bytes: Bytes,
    max_parts: usize,
    default_name: &str,
    expected: &str,
) -> Result<(Map<String, Value>, FilePart), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_media_type",
            format!("the body must be multipart/form-data with {expected}; got Content-Type {content_type:?}"),
        )
    })?;
    let malformed = |e: multer::Error| {
        ApiError::bad_request(
            "invalid_multipart",
            format!("the multipart body is malformed: {e}"),
        )
    };
    let whole = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(bytes) });
    let mut multipart = multer::Multipart::new(whole, boundary);
    let mut fields = Map::new();
    let mut file: Option<FilePart> = None;
    let mut count = 0;
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        count += 1;
        if count > max_parts {
            return Err(ApiError::bad_request(
                "invalid_multipart",
                format!("the upload has more than {max_parts} parts"),
            ));
        }
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let file_name: String = field
                .file_name()
                .unwrap_or(default_name)
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_FILE_NAME_CHARS)
                .collect();
            let content_type = field.content_type().map_or_else(
                || "application/octet-stream".to_owned(),
                ToString::to_string,
            );
            let data = field.bytes().await.map_err(malformed)?;
            file = Some(FilePart {
                file_name,
                content_type,
                data,
            });
            continue;
        }
        let text = field.text().await.map_err(malformed)?;
        match fields.get_mut(&name) {
            Some(Value::Array(items)) => items.push(Value::String(text)),
            Some(previous) => {
                let first = previous.take();
                *previous = Value::Array(vec![first, Value::String(text)]);
            }
            None if name.ends_with("[]") => {
                fields.insert(name, Value::Array(vec![Value::String(text)]));
            }
            None => {
                fields.insert(name, Value::String(text));
            }
        }
    }
    let Some(file) = file.filter(|f| !f.data.is_empty()) else {
        return Err(ApiError::bad_request(
            "missing_file",
            "the upload has no (or an empty) `file` part",
        )
        .with_param("file"));
    };
    Ok((fields, file))
}
