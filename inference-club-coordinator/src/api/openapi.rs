//! The OpenAI-compatible routes (`/v1/…`) in `/openapi.json`: their paths and bodies, as far as
//! the club reads them (every other field is passed through to the engine), the files and
//! batches, and the blobs of records. [`club_api::openapi`](crate::club_api::openapi) puts them into the document.

use serde_json::{Value, json};

/// The errors every inference route may answer, with what each means there.
fn errors(extra: &[(&str, &str)]) -> Value {
    let mut responses = serde_json::Map::new();
    let common = [
        (
            "400",
            "Bad input (the message and `param` name it), or a model not served at this endpoint (`unsupported_endpoint`)",
        ),
        ("401", "No key, or an unknown or revoked key"),
        (
            "403",
            "The key lacks the inference scope, or no node serving the model admits the caller",
        ),
        ("404", "No online node serves the model"),
        ("413", "The body is larger than the coordinator's limit"),
        ("415", "The body is not of the content type the route takes"),
        (
            "429",
            "A rate or concurrency limit was reached: see `Retry-After` and `X-RateLimit-*`",
        ),
        ("502", "The node or its engine failed"),
        (
            "503",
            "Every node serving the model is busy, or the store is unavailable: see `Retry-After`",
        ),
    ];
    for (code, description) in common.iter().chain(extra) {
        responses.insert(
            (*code).to_owned(),
            json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(responses)
}

/// One `POST` inference route taking `body` (a schema name) as `content_type`, answering
/// `answers` (a map of content type to schema) with 200.
fn inference(id: &str, summary: &str, content_type: &str, body: &str, answers: Value) -> Value {
    let mut responses = errors(&[]);
    if let Some(responses) = responses.as_object_mut() {
        responses.insert(
            "200".into(),
            json!({"description": "The answer; header `x-club-request-id` names its record", "content": answers}),
        );
    }
    json!({"post": {
        "operationId": id, "summary": summary,
        "security": [{"bearer": ["inference"]}],
        "requestBody": {"required": true, "content": {content_type: {"schema": {"$ref": format!("#/components/schemas/{body}")}}}},
        "responses": responses
    }})
}

fn schema(name: &str) -> Value {
    json!({"schema": {"$ref": format!("#/components/schemas/{name}")}})
}

/// The errors of the files and batches routes, `codes` of them.
fn batch_errors(codes: &[&str]) -> Value {
    let mut responses = serde_json::Map::new();
    for code in codes {
        let description = match *code {
            "400" => "Bad input: the message and `param` name it",
            "401" => "No key, or an unknown or revoked key",
            "403" => "The key lacks the inference scope",
            "404" => "No such file or batch, or not one of the caller's",
            "409" => {
                "The `Idempotency-Key` was used before with another request (`idempotency_key_reused`)"
            }
            "413" => "The file is larger than `max_file_bytes`, or the body than 64 KiB",
            "415" => "The body is not of the content type the route takes",
            "429" => "A rate limit was reached: see `Retry-After`",
            "503" => "The store is unavailable: see `Retry-After`",
            _ => "Error",
        };
        responses.insert(
            (*code).to_owned(),
            json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(responses)
}

/// `200` answering `schema` as JSON, and the errors `codes`.
fn answers(description: &str, schema_name: &str, codes: &[&str]) -> Value {
    let mut responses = batch_errors(codes);
    if let Some(map) = responses.as_object_mut() {
        map.insert(
            "200".into(),
            json!({"description": description, "content": {"application/json": schema(schema_name)}}),
        );
    }
    responses
}

/// The files and batches routes.
fn batch_paths() -> Value {
    let inference = json!([{"bearer": ["inference"]}]);
    let idempotency = json!({"name": "Idempotency-Key", "in": "header", "required": false,
        "description": "The same key with the same request answers the first answer again (header `idempotent-replayed: true`); the same key with another request is a 409; a key that is not 1 to 255 visible ASCII characters a 400",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}});
    let page = |more: Vec<Value>| {
        let mut params = vec![
            json!({"name": "after", "in": "query", "required": false, "description": "The id after which the page starts (the previous page's `last_id`)", "schema": {"type": "string", "maxLength": 64}}),
            json!({"name": "limit", "in": "query", "required": false, "description": "Page size (default 20)", "schema": {"type": "integer", "minimum": 1, "maximum": super::files::MAX_LIST}}),
            json!({"name": "order", "in": "query", "required": false, "description": "Newest first (the only order)", "schema": {"type": "string", "enum": ["desc"]}}),
        ];
        params.extend(more);
        Value::Array(params)
    };
    let id = |what: &str| json!([{"name": "id", "in": "path", "required": true, "description": format!("The {what}'s id"), "schema": {"type": "string", "maxLength": 64}}]);
    json!({
        "/v1/files": {
            "post": {
                "operationId": "uploadFile",
                "summary": "Upload a JSONL file of batch lines (purpose `batch`, at most `max_file_bytes`)",
                "security": inference, "parameters": [idempotency.clone()],
                "requestBody": {"required": true, "content": {"multipart/form-data": {
                    "schema": {"$ref": "#/components/schemas/FileUpload"},
                    "encoding": {"file": {"contentType": "text/plain"}}}}},
                "responses": linked(
                    answers("The file", "File", &["400", "401", "403", "409", "413", "415", "429", "503"]),
                    json!({
                        "GetFile": {"operationId": "getFile", "parameters": {"id": "$response.body#/id"}},
                        "GetFileContent": {"operationId": "getFileContent", "parameters": {"id": "$response.body#/id"}},
                        "DeleteFile": {"operationId": "deleteFile", "parameters": {"id": "$response.body#/id"}},
                        "CreateBatch": {"operationId": "createBatch", "requestBody": {
                            "input_file_id": "$response.body#/id", "endpoint": "/v1/chat/completions", "completion_window": "24h"}}
                    }),
                )
            },
            "get": {
                "operationId": "listFiles", "summary": "My files, newest first",
                "security": inference,
                "parameters": page(vec![json!({"name": "purpose", "in": "query", "required": false, "description": "Only files of this purpose (`batch`, `batch_output`)", "schema": {"type": "string", "maxLength": 64}})]),
                "responses": answers("A page of files", "FileList", &["400", "401", "403", "429", "503"])
            }
        },
        "/v1/files/{id}": {
            "parameters": id("file"),
            "get": {
                "operationId": "getFile", "summary": "One of my files",
                "security": inference,
                "responses": answers("The file", "File", &["400", "401", "403", "404", "429", "503"])
            },
            "delete": {
                "operationId": "deleteFile", "summary": "Delete one of my files",
                "security": inference,
                "responses": answers("Deleted", "FileDeleted", &["400", "401", "403", "404", "429", "503"])
            }
        },
        "/v1/files/{id}/content": {
            "parameters": id("file"),
            "get": {
                "operationId": "getFileContent", "summary": "The bytes of one of my files (JSONL)",
                "security": inference,
                "responses": with_ok(
                    batch_errors(&["400", "401", "403", "404", "429", "503"]),
                    json!({"description": "The file's bytes", "content": {"application/jsonl": {"schema": {"type": "string"}}}}),
                )
            }
        },
        "/v1/batches": {
            "post": {
                "operationId": "createBatch",
                "summary": "A batch over one of my files, run behind interactive requests within 24 hours; malformed lines go to its error file",
                "security": inference, "parameters": [idempotency],
                "requestBody": {"required": true, "content": {"application/json": schema("BatchRequest")}},
                "responses": linked(
                    answers("The batch (`validating`)", "Batch", &["400", "401", "403", "404", "409", "413", "415", "429", "503"]),
                    json!({
                        "GetBatch": {"operationId": "getBatch", "parameters": {"id": "$response.body#/id"}},
                        "CancelBatch": {"operationId": "cancelBatch", "parameters": {"id": "$response.body#/id"}},
                        "GetInputFile": {"operationId": "getFileContent", "parameters": {"id": "$response.body#/input_file_id"}}
                    }),
                )
            },
            "get": {
                "operationId": "listBatches", "summary": "My batches, newest first",
                "security": inference, "parameters": page(Vec::new()),
                "responses": answers("A page of batches", "BatchList", &["400", "401", "403", "429", "503"])
            }
        },
        "/v1/batches/{id}": {
            "parameters": id("batch"),
            "get": {
                "operationId": "getBatch", "summary": "One of my batches, its counts as they are now",
                "security": inference,
                "responses": answers("The batch", "Batch", &["400", "401", "403", "404", "429", "503"])
            }
        },
        "/v1/batches/{id}/cancel": {
            "parameters": id("batch"),
            "post": {
                "operationId": "cancelBatch", "summary": "Stop one of my batches: `cancelling`, then `cancelled` within a second",
                "security": inference,
                "responses": answers("The batch", "Batch", &["400", "401", "403", "404", "429", "503"])
            }
        }
    })
}

/// `responses` with `links` on its `200`: where its answer's ids lead.
fn linked(mut responses: Value, links: Value) -> Value {
    if let Some(ok) = responses.get_mut("200").and_then(Value::as_object_mut) {
        ok.insert("links".into(), links);
    }
    responses
}

/// `responses` with `ok` as its `200`.
fn with_ok(mut responses: Value, ok: Value) -> Value {
    if let Some(map) = responses.as_object_mut() {
        map.insert("200".into(), ok);
    }
    responses
}

/// The `/v1/…` paths and the blob route.
pub fn paths() -> Value {
    let object = json!({"schema": {"type": "object"}});
    let events = json!({"schema": {"type": "string", "description": "Server-sent events"}});
    let json_or_events = json!({"application/json": object.clone(), "text/event-stream": events});
    let mut paths = json!({
        "/v1/models": {"get": {
            "operationId": "listModels",
            "summary": "The models of online nodes the caller may use, merged across nodes, with their capabilities and `endpoints`",
            "security": [{}, {"bearer": ["inference"]}],
            "responses": {
                "200": {"description": "The models", "content": {"application/json": schema("ModelList")}},
                "401": errors(&[])["401"], "403": errors(&[])["403"], "429": errors(&[])["429"]
            }
        }},
        "/v1/models/{model}": {"get": {
            "operationId": "retrieveModel",
            "summary": "One model of `/v1/models`: the one a request naming it is routed to (its served id or a Hugging Face id, any case)",
            "security": [{}, {"bearer": ["inference"]}],
            "parameters": [
                {"name": "model", "in": "path", "required": true, "description": "The model's id; it may hold `/` (sent as `%2F` or as it is)", "schema": {"type": "string", "minLength": 1}}
            ],
            "responses": {
                "200": {"description": "The model, as `/v1/models` lists it", "content": {"application/json": schema("Model")}},
                "400": {"description": "The path is not valid UTF-8 once decoded", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "401": errors(&[])["401"],
                "403": {"description": "The key lacks the inference scope", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "404": {"description": "The caller may use no model by that id (`model_not_found`)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "429": errors(&[])["429"]
            }
        }},
        "/v1/chat/completions": inference("createChatCompletion", "A chat completion, whole or streamed", "application/json", "ChatRequest", json_or_events.clone()),
        "/v1/completions": inference("createCompletion", "A text completion, whole or streamed", "application/json", "CompletionRequest", json_or_events.clone()),
        "/v1/responses": inference("createResponse", "A response (the Responses API, text in and out), whole or streamed as events; served by chat engines", "application/json", "ResponseRequest", json_or_events),
        "/v1/embeddings": inference("createEmbeddings", "Embeddings of a text or a list of texts; `float` or `base64`", "application/json", "EmbeddingRequest", json!({"application/json": object.clone()})),
        "/v1/audio/transcriptions": inference("createTranscription", "A transcript of an uploaded audio file", "multipart/form-data", "TranscriptionRequest", json!({"application/json": object.clone(), "text/plain": {"schema": {"type": "string"}}})),
        "/v1/audio/speech": inference("createSpeech", "Speech for a text, as audio bytes", "application/json", "SpeechRequest", json!({"audio/*": {"schema": {"type": "string", "format": "binary"}}, "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}})),
        "/v1/images/generations": inference("createImage", "Images for a prompt, inline (`b64_json`) or as URLs of the coordinator", "application/json", "ImageRequest", json!({"application/json": object})),
        "/api/v1/requests/{id}/blobs/{blob}": {"get": {
            "operationId": "getRequestBlob",
            "summary": "An audio file or image of a record, under the record's read rules",
            "security": [{}, {"bearer": []}],
            "parameters": [
                {"name": "id", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}},
                {"name": "blob", "in": "path", "required": true, "schema": {"type": "string", "maxLength": 64}}
            ],
            "responses": {
                "200": {"description": "The bytes, with their content type", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                "400": errors(&[])["400"], "401": errors(&[])["401"], "403": errors(&[])["403"],
                "404": {"description": "No such record or blob, one the caller may not see, or one no longer kept", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        }}
    });
    if let (Some(paths), Value::Object(more)) = (paths.as_object_mut(), batch_paths()) {
        paths.extend(more);
    }
    paths
}

/// The request bodies of the inference routes: the fields the club checks; any other field
/// goes to the engine as it is.
pub fn schemas() -> Value {
    let model = json!({"type": "string", "minLength": 1, "description": "A served id or Hugging Face id, any case"});
    let visibility = json!({"$ref": "#/components/schemas/Visibility"});
    let text_or_list = json!({"oneOf": [
        {"type": "string"},
        {"type": "array", "minItems": 1, "items": {"type": "string"}}
    ]});
    let mut schemas = json!({
        "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}}},
        "Model": {"type": "object", "required": ["id", "object", "owned_by"], "properties": {
            "id": {"type": "string"}, "object": {"const": "model"}, "owned_by": {"type": "string"},
            "endpoints": {"type": "array", "items": {"type": "string"}}}},
        "ChatRequest": {"type": "object", "required": ["model", "messages"], "properties": {
            "model": model, "visibility": visibility,
            "messages": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["role"], "properties": {
                "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
                "content": {"type": ["string", "null"]}}}},
            "stream": {"type": "boolean"},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 32768},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2}}},
        "CompletionRequest": {"type": "object", "required": ["model", "prompt"], "properties": {
            "model": model, "visibility": visibility, "prompt": text_or_list,
            "stream": {"type": "boolean"},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 32768},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2}}},
        "ResponseRequest": {"type": "object", "required": ["model", "input"], "properties": {
            "model": model, "visibility": visibility, "input": text_or_list.clone(),
            "instructions": {"type": "string"}, "stream": {"type": "boolean"},
            "max_output_tokens": {"type": "integer", "minimum": 1, "maximum": 32768}}},
        "EmbeddingRequest": {"type": "object", "required": ["model", "input"], "properties": {
            "model": model, "visibility": visibility, "input": text_or_list,
            "encoding_format": {"type": "string", "enum": ["float", "base64"]}}},
        "TranscriptionRequest": {"type": "object", "required": ["model", "file"], "properties": {
            "file": {"type": "string", "format": "binary"},
            "model": model, "visibility": visibility,
            "response_format": {"type": "string", "enum": ["json", "text", "srt", "verbose_json", "vtt"]},
            "language": {"type": "string"}, "prompt": {"type": "string"}}},
        "SpeechRequest": {"type": "object", "required": ["model", "input"], "properties": {
            "model": model, "visibility": visibility,
            "input": {"type": "string", "minLength": 1, "maxLength": 4096},
            "voice": {"type": "string"},
            "response_format": {"type": "string", "enum": ["mp3", "opus", "aac", "flac", "wav", "pcm"]},
            "speed": {"type": "number", "minimum": 0.25, "maximum": 4}}},
        "ImageRequest": {"type": "object", "required": ["model", "prompt"], "properties": {
            "model": model, "visibility": visibility,
            "prompt": {"type": "string", "minLength": 1},
            "n": {"type": "integer", "minimum": 1, "maximum": 10},
            "size": {"type": "string"},
            "response_format": {"type": "string", "enum": ["b64_json", "url"]}}}
    });
    if let (Some(schemas), Value::Object(more)) = (schemas.as_object_mut(), batch_schemas()) {
        schemas.extend(more);
    }
    schemas
}

/// The bodies of the files and batches routes, and their answers.
fn batch_schemas() -> Value {
    json!({
        "FileUpload": {"type": "object", "required": ["file", "purpose"], "properties": {
            "file": {"type": "string", "minLength": 1, "description": "JSONL: one `{\"custom_id\", \"method\": \"POST\", \"url\", \"body\"}` per line"},
            "purpose": {"type": "string", "enum": ["batch"]}}},
        "File": {"type": "object", "required": ["id", "object", "bytes", "created_at", "filename", "purpose"], "properties": {
            "id": {"type": "string"}, "object": {"const": "file"}, "bytes": {"type": "integer", "minimum": 0},
            "created_at": {"type": "integer"}, "filename": {"type": "string"},
            "purpose": {"type": "string", "enum": ["batch", "batch_output"]}}},
        "FileList": {"type": "object", "required": ["object", "data", "has_more"], "properties": {
            "object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/File"}},
            "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]}, "has_more": {"type": "boolean"}}},
        "FileDeleted": {"type": "object", "required": ["id", "object", "deleted"], "properties": {
            "id": {"type": "string"}, "object": {"const": "file"}, "deleted": {"const": true}}},
        "BatchRequest": {"type": "object", "required": ["input_file_id", "endpoint", "completion_window"], "additionalProperties": false, "properties": {
            "input_file_id": {"type": "string", "description": "An uploaded file of the caller's, purpose `batch`"},
            "endpoint": {"type": "string", "enum": ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]},
            "completion_window": {"const": "24h"},
            "metadata": {"type": ["object", "null"], "maxProperties": 16, "propertyNames": {"maxLength": 64},
                         "additionalProperties": {"type": "string", "maxLength": 512}},
            "visibility": {"$ref": "#/components/schemas/Visibility", "description": "The visibility of the lines' records (default: the member's default)"}}},
        "Batch": {"type": "object", "required": ["id", "object", "endpoint", "input_file_id", "completion_window", "status", "created_at", "request_counts"], "properties": {
            "id": {"type": "string"}, "object": {"const": "batch"},
            "endpoint": {"type": "string"}, "input_file_id": {"type": "string"}, "completion_window": {"type": "string"},
            "status": {"type": "string", "enum": ["validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"]},
            "errors": {"type": ["object", "null"]},
            "output_file_id": {"type": ["string", "null"]}, "error_file_id": {"type": ["string", "null"]},
            "created_at": {"type": "integer"},
            "in_progress_at": {"type": ["integer", "null"]}, "expires_at": {"type": ["integer", "null"]},
            "finalizing_at": {"type": ["integer", "null"]}, "completed_at": {"type": ["integer", "null"]},
            "failed_at": {"type": ["integer", "null"]}, "expired_at": {"type": ["integer", "null"]},
            "cancelling_at": {"type": ["integer", "null"]}, "cancelled_at": {"type": ["integer", "null"]},
            "request_counts": {"type": "object", "required": ["total", "completed", "failed"], "properties": {
                "total": {"type": "integer", "minimum": 0}, "completed": {"type": "integer", "minimum": 0}, "failed": {"type": "integer", "minimum": 0}}},
            "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            "visibility": {"$ref": "#/components/schemas/Visibility"}}},
        "BatchList": {"type": "object", "required": ["object", "data", "has_more"], "properties": {
            "object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Batch"}},
            "first_id": {"type": ["string", "null"]}, "last_id": {"type": ["string", "null"]}, "has_more": {"type": "boolean"}}}
    })
}
