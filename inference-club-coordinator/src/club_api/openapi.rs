//! `GET /openapi.json`: an OpenAPI 3.1 document of the club API, written by hand and kept next
//! to the handlers it describes (`docs/openapi.json` is a copy, checked by a test).

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{MAX_JSON_BODY_BYTES, MAX_PAGE_SIZE};

fn error_responses(codes: &[&str]) -> Value {
    let mut responses = serde_json::Map::new();
    for code in codes {
        let description = match *code {
            "400" => "Bad input (the message names it); nothing changed",
            "401" => "No key, or an unknown or revoked key",
            "403" => "The key lacks the scope this needs",
            "404" => "No such thing, or not one the caller may see",
            "409" => "The handle is held by another account",
            "413" => "The body is too large",
            "502" => "GitHub could not be reached",
            "429" => "A rate limit was reached: see `Retry-After` and `X-RateLimit-*`",
            _ => "Error",
        };
        responses.insert(
            (*code).to_owned(),
            json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(responses)
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

fn ok(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn list_params(visibility: bool) -> Value {
    let mut params = vec![
        json!({"name": "cursor", "in": "query", "required": false, "description": "`next_cursor` of the previous page", "schema": {"type": "string", "maxLength": 64}}),
        json!({"name": "limit", "in": "query", "required": false, "description": "Page size (default 50)", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}}),
        json!({"name": "model", "in": "query", "required": false, "description": "Only requests for this model, exactly as requested", "schema": {"type": "string", "maxLength": 1024}}),
        json!({"name": "status", "in": "query", "required": false, "schema": {"$ref": "#/components/schemas/Status"}}),
    ];
    if visibility {
        params.push(json!({"name": "visibility", "in": "query", "required": false, "schema": {"$ref": "#/components/schemas/Visibility"}}));
    }
    Value::Array(params)
}

/// The OpenAPI 3.1 document of the coordinator: the club API, and the OpenAI-compatible routes
/// ([`crate::api::openapi`]).
pub fn document() -> Value {
    let mut document = club_document();
    for (section, more) in [
        ("paths", crate::api::openapi::paths()),
        (
            "components",
            json!({"schemas": crate::api::openapi::schemas()}),
        ),
    ] {
        let (Some(target), Value::Object(more)) = (document[section].as_object_mut(), more) else {
            continue;
        };
        for (key, value) in more {
            match (target.get_mut(&key), value) {
                (Some(Value::Object(existing)), Value::Object(value)) => existing.extend(value),
                (_, value) => {
                    target.insert(key, value);
                }
            }
        }
    }
    document
}

/// The club API's part of [`document`].
fn club_document() -> Value {
    let id_param = json!({"name": "id", "in": "path", "required": true, "description": "The record id (UUID) or its completion id (`chatcmpl-…`)", "schema": {"type": "string", "maxLength": 64}});
    let provider_params = json!([
        {"name": "operator", "in": "path", "required": true, "description": "The operator's handle", "schema": {"type": "string", "maxLength": 39}},
        {"name": "name", "in": "path", "required": true, "description": "The provider's name (`agent.name`)", "schema": {"type": "string", "maxLength": 1024}}
    ]);
    let anyone: Value = json!([{}, {"bearer": []}]);
    let records_key: Value = json!([{"bearer": ["inference"]}, {"bearer": ["account"]}]);
    let account_key: Value = json!([{"bearer": ["account"]}]);
    let json_body = |schema: &str| json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Inference Club API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("The club API of an Inference Club coordinator. Errors use the OpenAI envelope. JSON bodies are at most {MAX_JSON_BODY_BYTES} bytes. The OpenAI-compatible routes (`/v1/…`) take and answer what OpenAI's API does (their bodies here list what the club checks; other fields go to the engine as they are); docs/api.md says more.")
        },
        "servers": [{"url": "/"}],
        "paths": {
            "/api/v1/requests": {"get": {
                "operationId": "listMyRequests", "summary": "My requests, newest first",
                "security": records_key, "parameters": list_params(true),
                "responses": with(json!({"200": ok("A page of records", "RecordPage")}), error_responses(&["400", "401", "403"]))
            }},
            "/api/v1/requests/public": {"get": {
                "operationId": "publicFeed", "summary": "The public feed: public records of everyone, newest first",
                "security": anyone, "parameters": list_params(false),
                "responses": with(json!({"200": ok("A page of public records", "RecordPage")}), error_responses(&["400", "401", "403"]))
            }},
            "/api/v1/requests/{id}": {
                "parameters": [id_param],
                "get": {
                    "operationId": "getRequest", "summary": "One record: public and unlisted to anyone with the id; private to its owner and the serving operator",
                    "security": anyone,
                    "responses": with(json!({"200": ok("The record", "Record")}), error_responses(&["400", "401", "403", "404"]))
                },
                "patch": {
                    "operationId": "changeVisibility", "summary": "Change a record's visibility (its owner only)",
                    "security": records_key, "requestBody": json_body("VisibilityChange"),
                    "responses": with(json!({"200": ok("The updated record", "Record")}), error_responses(&["400", "401", "403", "404", "413"]))
                },
                "delete": {
                    "operationId": "deleteRequest", "summary": "Delete a record for good (its owner only)",
                    "security": records_key,
                    "responses": with(json!({"204": {"description": "Deleted"}}), error_responses(&["400", "401", "403", "404"]))
                }
            },
            "/api/v1/providers": {"get": {
                "operationId": "listProviders", "summary": "Every provider's public profile",
                "security": anyone,
                "responses": with(json!({"200": ok("The profiles", "ProviderList")}), error_responses(&["401"]))
            }},
            "/api/v1/providers/{operator}/{name}": {
                "parameters": provider_params.clone(),
                "get": {
                    "operationId": "getProvider", "summary": "One provider's public profile, with the requests it served counted",
                    "security": anyone,
                    "responses": with(json!({"200": ok("The profile", "Provider")}), error_responses(&["400", "401", "404"]))
                },
                "patch": {
                    "operationId": "updateProviderPolicy", "summary": "Set access overrides and the kill switch (its operator only); in force at once and on the node's next links",
                    "security": account_key, "requestBody": json_body("PolicyChange"),
                    "responses": with(json!({"200": ok("The updated profile", "Provider")}), error_responses(&["400", "401", "403", "404", "413"]))
                }
            },
            "/api/v1/providers/{operator}/{name}/requests": {"get": {
                "operationId": "listServedRequests", "summary": "What that provider served, any visibility (its operator only)",
                "security": records_key,
                "parameters": Value::Array(provider_params.as_array().cloned().unwrap_or_default().into_iter().chain(list_params(true).as_array().cloned().unwrap_or_default()).collect()),
                "responses": with(json!({"200": ok("A page of records", "RecordPage")}), error_responses(&["400", "401", "403", "404"]))
            }},
            "/api/v1/me": {
                "get": {"operationId": "getMe", "summary": "My account", "security": account_key,
                        "responses": with(json!({"200": ok("The member", "Member")}), error_responses(&["401", "403"]))},
                "patch": {"operationId": "updateMe", "summary": "Change my settings", "security": account_key,
                          "requestBody": json_body("Settings"),
                          "responses": with(json!({"200": ok("The member", "Member")}), error_responses(&["400", "401", "403", "413"]))},
                "delete": {"operationId": "deleteMe", "summary": "Delete my account and everything of mine", "security": account_key,
                           "responses": with(json!({"200": ok("What was deleted and what could not be reached", "AccountDeleted")}), error_responses(&["401", "403"]))}
            },
            "/api/v1/keys": {
                "get": {"operationId": "listKeys", "summary": "My live keys (prefix only)", "security": account_key,
                        "responses": with(json!({"200": ok("The keys", "KeyList")}), error_responses(&["401", "403"]))},
                "post": {"operationId": "createKey", "summary": "Create a key; its secret is in this answer only", "security": account_key,
                         "requestBody": json_body("NewKey"),
                         "responses": with(json!({"201": ok("The key and its secret", "CreatedKey")}), error_responses(&["400", "401", "403", "413", "429"]))}
            },
            "/api/v1/keys/{id}": {"delete": {
                "operationId": "revokeKey", "summary": "Revoke one of my keys, at once", "security": account_key,
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
                "responses": with(json!({"204": {"description": "Revoked"}}), error_responses(&["400", "401", "403", "404"]))
            }},
            "/api/v1/session": {"get": {
                "operationId": "getSession", "summary": "The browser's session: its member and the CSRF token state-changing requests made with the cookie must send as `x-csrf-token`",
                "security": [{"session": []}],
                "responses": with(json!({"200": ok("The session", "Session")}), error_responses(&["401"]))
            }},
            "/api/v1/auth/device": {"post": {
                "operationId": "startDeviceSignIn", "summary": "Start a GitHub device sign-in (what `club login` does): a code for the member to enter at GitHub, and a device_token to poll with",
                "security": [{}],
                "responses": with(json!({"200": ok("The codes", "DeviceAuthorization")}), error_responses(&["404", "429", "502"]))
            }},
            "/api/v1/auth/device/token": {"post": {
                "operationId": "pollDeviceSignIn", "summary": "Poll a device sign-in once; when approved, a new API key (scopes inference and account), shown once. 400 codes: authorization_pending, slow_down, expired_token, access_denied, invalid_device_token; 403 terms_required: poll again with accept_terms true",
                "security": [{}], "requestBody": json_body("DeviceTokenRequest"),
                "responses": with(json!({"200": ok("The key", "DeviceToken")}), error_responses(&["400", "403", "404", "409", "413", "429", "502"]))
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document", "security": anyone,
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}
            }}
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key (`icl_…`); scopes: inference, provider, account"},
                "session": {"type": "apiKey", "in": "cookie", "name": "club_session", "description": "A browser session (after GitHub sign-in at /auth/github): every scope; POST, PATCH, PUT and DELETE also need header `x-csrf-token`"}
            },
            "schemas": schemas()
        }
    })
}

fn schemas() -> Value {
    let nullable_string = json!({"type": ["string", "null"]});
    let nullable_time = json!({"type": ["string", "null"], "format": "date-time"});
    let nullable_int = json!({"type": ["integer", "null"]});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let access = json!({"description": "Who may use it: `owner`, `members`, or `{\"logins\": [...]}` (the owner always may)",
        "oneOf": [{"type": "string", "enum": ["owner", "members"]},
                  {"type": "object", "required": ["logins"], "additionalProperties": false,
                   "properties": {"logins": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"type": "string", "maxLength": 39}}}}]});
    let nullable_access = json!({"oneOf": [access.clone(), {"type": "null"}]});
    let routing = json!({"type": "string", "enum": ["any", "prefer_own", "only_own"],
        "description": "Where my requests may go: any node that admits me; my own nodes first when one has room; only my own nodes"});
    let provider_ref = json!({"type": "object", "required": ["operator", "name", "service"], "properties": {
        "operator": {"type": "string"}, "name": {"type": "string"}, "service": nullable_string}});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "required": ["message", "type", "param", "code"], "properties": {
                "message": {"type": "string"}, "type": {"type": "string"},
                "param": nullable_string, "code": nullable_string}}}},
        "Status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
        "Visibility": {"type": "string", "enum": ["public", "unlisted", "private"]},
        "Record": {"type": "object",
            "required": ["id", "object", "completion_id", "consumer", "model_requested", "model_served", "provider", "status", "visibility", "timing", "usage", "request", "response", "attempts", "failure"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "object": {"const": "club.request"},
                "completion_id": {"type": "string"},
                "consumer": nullable_string,
                "model_requested": {"type": "string"},
                "model_served": nullable_string,
                "provider": {"oneOf": [provider_ref, {"type": "null"}]},
                "status": {"$ref": "#/components/schemas/Status"},
                "visibility": {"$ref": "#/components/schemas/Visibility"},
                "timing": {"type": "object", "properties": {
                    "received_at": {"type": "string", "format": "date-time"},
                    "dispatched_at": nullable_time, "first_token_at": nullable_time, "finished_at": nullable_time,
                    "latency_ms": nullable_int, "time_to_first_token_ms": nullable_int}},
                "usage": {"type": "object", "properties": {
                    "source": {"type": "string", "enum": ["reported", "absent"]},
                    "prompt_tokens": nullable_int, "completion_tokens": nullable_int,
                    "total_tokens": nullable_int, "reasoning_tokens": nullable_int}},
                "request": {"type": "object", "description": "The chat completion request as the consumer sent it", "properties": {"model": {"type": "string"}, "messages": {"type": "array", "items": {"type": "object"}}}},
                "response": {"type": "object", "properties": {
                    "content": nullable_string, "reasoning": nullable_string, "refusal": nullable_string,
                    "tool_calls": {"type": "array", "items": {"type": "object"}}, "finish_reason": nullable_string}},
                "attempts": {"type": "array", "items": {"type": "object", "properties": {
                    "provider": provider_ref, "started_at": {"type": "string", "format": "date-time"},
                    "error": {"type": ["object", "null"], "properties": {"kind": {"type": "string"}, "message": {"type": "string"}}}}}},
                "failure": nullable_string,
                "endpoint": {"type": "string", "enum": ["chat_completions", "completions", "embeddings", "responses", "audio_transcriptions", "audio_speech", "images_generations"]},
                "input": {"description": "The body of a request to an endpoint other than chat, as sent"},
                "embeddings": {"type": ["object", "null"], "properties": {"count": {"type": "integer"}, "dimensions": {"type": "integer"}}},
                "blobs": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string"}, "role": {"type": "string", "enum": ["input", "output"]},
                    "content_type": {"type": "string"}, "bytes": {"type": "integer"}, "url": nullable_string}}},
                "batch": {"type": ["string", "null"], "description": "The batch (`batch_…`) this request was a line of"}
            }},
        "RecordPage": {"type": "object", "required": ["object", "data", "has_more", "next_cursor"], "properties": {
            "object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}},
            "has_more": {"type": "boolean"}, "next_cursor": nullable_string}},
        "VisibilityChange": {"type": "object", "required": ["visibility"], "additionalProperties": false,
            "properties": {"visibility": {"$ref": "#/components/schemas/Visibility"}}},
        "PolicyChange": {"type": "object", "additionalProperties": false, "minProperties": 1,
            "description": "Each field is optional: absent changes nothing, null removes an override. A service's override wins over the node-wide one, which wins over the manifest.",
            "properties": {
                "accepting": {"type": "boolean", "description": "false: the kill switch; nothing is routed to the node"},
                "access": nullable_access.clone(),
                "services": {"type": "object", "maxProperties": 100, "additionalProperties": nullable_access}}},
        "Provider": {"type": "object", "required": ["object", "operator", "name", "online", "manifest", "models", "counts", "accepting", "access_overrides"], "properties": {
            "accepting": {"type": "boolean", "description": "false while the operator's kill switch is on"},
            "access_overrides": {"type": "object", "properties": {
                "access": {"oneOf": [access.clone(), {"type": "null"}]},
                "services": {"type": "object", "additionalProperties": access}}},
            "object": {"const": "club.provider"}, "operator": {"type": "string"}, "name": {"type": "string"},
            "online": {"type": "boolean"}, "connected_at": nullable_time,
            "first_seen": {"type": "string", "format": "date-time"}, "last_seen": {"type": "string", "format": "date-time"},
            "manifest_revision": {"type": "integer"},
            "manifest": {"type": ["object", "null"], "description": "The redacted manifest"},
            "models": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"}, "hf": nullable_string, "name": nullable_string, "service": {"type": "string"},
                "context_length": nullable_int, "input_modalities": strings, "output_modalities": strings,
                "features": strings, "quantization": nullable_string}}},
            "counts": {"type": "object", "properties": {
                "models": {"type": "integer"}, "in_flight": {"type": "integer"},
                "requests_served": {"type": "integer", "description": "Single profile only"},
                "requests_served_exact": {"type": "boolean", "description": "false: at least that many"}}}}},
        "ProviderList": {"type": "object", "properties": {"object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Provider"}}}},
        "Member": {"type": "object", "properties": {
            "object": {"const": "club.member"}, "id": {"type": "string", "format": "uuid"}, "handle": {"type": "string"},
            "email": nullable_string, "created_at": {"type": "string", "format": "date-time"},
            "default_visibility": {"$ref": "#/components/schemas/Visibility"}, "terms_accepted_at": nullable_time,
            "routing_preference": routing.clone()}},
        "Settings": {"type": "object", "additionalProperties": false, "minProperties": 1,
            "properties": {"default_visibility": {"$ref": "#/components/schemas/Visibility"}, "routing_preference": routing}},
        "AccountDeleted": {"type": "object", "properties": {
            "object": {"const": "club.account_deleted"}, "handle": {"type": "string"}, "deleted": {"type": "boolean"},
            "removed": strings, "nodes_disconnected": {"type": "integer"}, "not_reached": {"type": "string"}}},
        "Key": {"type": "object", "required": ["object", "id", "name", "prefix", "scopes", "created_at"], "properties": {
            "object": {"const": "club.api_key"}, "id": {"type": "string", "format": "uuid"}, "name": {"type": "string"},
            "prefix": {"type": "string", "description": "`icl_` and the next 8 characters"},
            "scopes": {"type": "array", "items": {"type": "string", "enum": ["inference", "provider", "account"]}},
            "created_at": {"type": "string", "format": "date-time"}, "last_used_at": nullable_time}},
        "KeyList": {"type": "object", "properties": {"object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Key"}}}},
        "NewKey": {"type": "object", "required": ["name", "scopes"], "additionalProperties": false, "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "scopes": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "string", "enum": ["inference", "provider", "account"]}}}},
        "Session": {"type": "object", "required": ["object", "handle", "csrf_token", "expires_at"], "properties": {
            "object": {"const": "club.session"}, "handle": {"type": "string"},
            "csrf_token": {"type": "string", "description": "Send as `x-csrf-token` with state-changing requests made with the cookie"},
            "expires_at": {"type": "string", "format": "date-time"}}},
        "DeviceAuthorization": {"type": "object", "required": ["object", "device_token", "user_code", "verification_uri", "expires_in", "interval"], "properties": {
            "object": {"const": "club.device_authorization"},
            "device_token": {"type": "string", "description": "Opaque; send it to /api/v1/auth/device/token"},
            "user_code": {"type": "string", "description": "What the member enters at verification_uri"},
            "verification_uri": {"type": "string", "format": "uri"},
            "expires_in": {"type": "integer", "description": "Seconds"},
            "interval": {"type": "integer", "description": "Seconds between polls"}}},
        "DeviceTokenRequest": {"type": "object", "required": ["device_token"], "additionalProperties": false, "properties": {
            "device_token": {"type": "string"},
            "accept_terms": {"type": "boolean", "default": false, "description": "true: I am 18 or older and accept the terms (needed once, to create the account)"},
            "key_name": {"type": "string", "maxLength": 100, "description": "Name of the new key (default `club login`)"}}},
        "DeviceToken": {"type": "object", "required": ["object", "key", "key_id", "handle", "scopes"], "properties": {
            "object": {"const": "club.device_token"},
            "key": {"type": "string", "description": "The new API key: shown in this answer only"},
            "key_id": {"type": "string", "format": "uuid"}, "handle": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string", "enum": ["inference", "provider", "account"]}}}},
        "CreatedKey": {"allOf": [{"$ref": "#/components/schemas/Key"}, {"type": "object", "required": ["secret"],
            "properties": {"secret": {"type": "string", "description": "Shown in this answer only"}}}]}
    })
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    axum::Json(document()).into_response()
}
