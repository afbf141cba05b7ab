//! The OpenAI-compatible routes (`/v1/…`) in `/openapi.json`: their paths and bodies, as far as
//! the club reads them (every other field is passed through to the engine), and the blobs of
//! records. [`club_api::openapi`](crate::club_api::openapi) puts them into the document.

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

/// The `/v1/…` paths and the blob route.
pub fn paths() -> Value {
    let object = json!({"schema": {"type": "object"}});
    let events = json!({"schema": {"type": "string", "description": "Server-sent events"}});
    let json_or_events = json!({"application/json": object.clone(), "text/event-stream": events});
    json!({
        "/v1/models": {"get": {
            "operationId": "listModels",
            "summary": "The models of online nodes the caller may use, merged across nodes, with their capabilities and `endpoints`",
            "security": [{}, {"bearer": ["inference"]}],
            "responses": {
                "200": {"description": "The models", "content": {"application/json": schema("ModelList")}},
                "401": errors(&[])["401"], "403": errors(&[])["403"], "429": errors(&[])["429"]
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
    })
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
    json!({
        "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"type": "object", "required": ["id", "object", "owned_by"], "properties": {
                "id": {"type": "string"}, "object": {"const": "model"}, "owned_by": {"type": "string"},
                "endpoints": {"type": "array", "items": {"type": "string"}}}}}}},
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
    })
}
