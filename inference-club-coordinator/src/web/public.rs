//! The public pages: the feed, a request, a member's profile, the providers, a model, the
//! terms. Anyone may read them; a signed-in browser sees its own controls on its own requests.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use inference_club_core::endpoint::Endpoint;
use inference_club_core::manifest::is_github_login;
use inference_club_core::record::{BlobRef, BlobRole, InferenceRecord, Visibility};
use maud::{Markup, html};
use serde_json::Value;

use super::layout::{self, Columns, Frame, Section};
use super::{Viewer, WebError, html as respond, viewer};
use crate::club_api::ListParams;
use crate::club_api::providers::{ProviderProfile, profile as provider_profile};
use crate::club_api::records::{blob_path, parse_record_id};
use crate::fleet::Fleet;
use crate::store::Store;
use crate::store::{Page, RecordQuery, StoredRecord};

/// The longest model name or handle a page looks up.
const MAX_NAME_CHARS: usize = 1024;
/// The public records a model page reads to tell each node's recent speed.
const SPEED_SAMPLE: u32 = 100;
/// The club's terms and privacy policy, as published (`src/web/privacy-policy.md`).
pub(crate) const POLICY: &str = include_str!("privacy-policy.md");

/// The listing parameters of a page's query string, checked as the API checks them (empty
/// values, as an HTML form sends for "any", are dropped).
pub(crate) fn list_params(query: Option<&str>) -> Result<ListParams, WebError> {
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(kept)
        .finish();
    let bad = |message: String| WebError {
        status: StatusCode::BAD_REQUEST,
        title: "That filter does not work".to_owned(),
        message,
        sign_in: None,
    };
    let uri: Uri = format!("/?{encoded}")
        .parse()
        .map_err(|_| bad("the query string is not valid".to_owned()))?;
    axum::extract::Query::<ListParams>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| {
            bad(format!(
                "the query string is not valid here: {}",
                e.body_text()
            ))
        })
}

/// A query string's value of `name` (the first), if any and not empty.
pub(crate) fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, v)| k == name && !v.trim().is_empty())
        .map(|(_, v)| v.into_owned())
}

/// `path` with `pairs` (the non-empty ones) as its query string.
pub(crate) fn with_query(path: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (key, value) in pairs {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            serializer.append_pair(key, value);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", serializer.finish())
    } else {
        path.to_owned()
    }
}

/// The page's records: a page of the store under `query`.
async fn records(
    store: &Store,
    query: &RecordQuery,
) -> Result<(Vec<InferenceRecord>, Option<String>), WebError> {
    let Page { items, next } = store.list_records(query).await?;
    Ok((items, next.map(|c| c.to_string())))
}

/// `GET /`: the public feed, newest first; `?model=` filters, `?cursor=` pages.
pub async fn feed(
    State(store): State<Store>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let viewer = viewer(&store, &headers).await?;
    let model = query_value(query.as_deref(), "model");
    let cursor = query_value(query.as_deref(), "cursor");
    // Only the feed's own parameters: anything else a link adds is ignored.
    let known = with_query(
        "",
        &[("model", model.as_deref()), ("cursor", cursor.as_deref())],
    );
    let params = list_params(known.strip_prefix('?'))?;
    let record_query = params
        .apply(RecordQuery::public_feed(), false)
        .map_err(WebError::from)?;
    let (items, next) = records(&store, &record_query).await?;
    let base = with_query("/", &[("model", model.as_deref())]);
    let body = html! {
        h1 { "What members asked" }
        p.lead {
            "Every public request to the club, newest first: the prompt, the answer, which member's "
            "node served it and how fast. Members choose per request or by default to keep theirs "
            "unlisted or private."
        }
        form.filters method="get" action="/" role="search" {
            label for="model" { "Model" }
            input #model type="text" name="model" value=[model.as_deref()] placeholder="any model" maxlength="1024";
            button type="submit" { "Filter" }
            @if model.is_some() { a href="/" { "Clear" } }
        }
        @if items.is_empty() {
            p.empty { "No public requests yet." }
        } @else {
            (layout::records_table("Public requests, newest first", &items, Columns { consumer: true, visibility: false }))
        }
        (layout::older_link(&base, next))
    };
    let frame = Frame {
        title: "Public feed",
        section: Section::Feed,
        viewer: viewer.as_ref(),
        path: &base,
        noindex: false,
    };
    Ok(respond(
        StatusCode::OK,
        layout::page(&frame, body),
        viewer.is_some(),
    ))
}

/// `GET /r/{id}`: one request, under the API's rule
/// ([`StoredRecord::readable_by`]): public and unlisted for anyone, private for its member and
/// the operator whose node served it; an honest 404 for anything else.
pub async fn request_page(
    State(store): State<Store>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let viewer = viewer(&store, &headers).await?;
    let Ok(record_id) = parse_record_id(&id) else {
        return Err(WebError::not_found("request"));
    };
    let viewer_id = viewer.as_ref().map(|v| v.user.id);
    let stored = match store.record(record_id).await? {
        Some(stored) if stored.readable_by(viewer_id) => stored,
        _ => return Err(WebError::not_found("request")),
    };
    let path = format!("/r/{}", stored.record.id);
    let body = request_body(&stored, viewer.as_ref(), &path);
    let frame = Frame {
        title: "Request",
        section: Section::Feed,
        viewer: viewer.as_ref(),
        path: &path,
        noindex: stored.record.visibility != Visibility::Public,
    };
    Ok(respond(
        StatusCode::OK,
        layout::page(&frame, body),
        viewer.is_some() || stored.record.visibility != Visibility::Public,
    ))
}

fn text_block(text: &str) -> Markup {
    html! { div.text { (text) } }
}

fn request_body(stored: &StoredRecord, viewer: Option<&Viewer>, path: &str) -> Markup {
    let record = &stored.record;
    let viewer_id = viewer.map(|v| v.user.id);
    let owner = viewer_id.is_some() && viewer_id == stored.consumer_id;
    let operator = !owner && viewer_id.is_some() && viewer_id == stored.operator_id;
    let counts = record.usage.counts.as_ref();
    html! {
        h1 { "Request " code { (record.id.as_uuid().simple().to_string().get(..12).unwrap_or_default()) } }
        p.meta { (layout::visibility(record.visibility)) " " (layout::status(record.status())) }
        @match record.visibility {
            Visibility::Unlisted => p.note { "Unlisted: anyone with the link can read it; it is not in the feed." },
            Visibility::Private if operator => p.note { "Private: you see it because your node served it." },
            Visibility::Private => p.note { "Private: only you and the operator of the node that served it can read it." },
            Visibility::Public => {},
        }
        @if owner {
            section.owner aria-labelledby="yours" {
                h2 #yours { "Yours" }
                (visibility_form(&record.id.to_string(), record.visibility, viewer, path, false))
                p { a.danger href={ "/dashboard/requests/" (record.id) "/delete" } { "Delete this request…" } }
            }
        }
        @if record.input.is_some() && record.endpoint != Endpoint::ChatCompletions && record.endpoint != Endpoint::Responses {
            (call_input(record))
        } @else {
        section aria-labelledby="prompt" {
            h2 #prompt { "Prompt" }
            ol.messages {
                @for message in &record.request.messages {
                    li class={ "message role-" (layout::role(message.role)) } {
                        span.role { (layout::role(message.role)) }
                        @if let Some(content) = &message.content { (text_block(&content.to_text())) }
                        @if let Some(calls) = &message.tool_calls {
                            pre { (serde_json::to_string_pretty(calls).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        }
        section aria-labelledby="answer" {
            h2 #answer { "Answer" }
            @if let Some(summary) = &record.embeddings {
                p.embeddings { (summary.count) " embedding(s) of " (summary.dimensions) " dimensions (the vectors are not kept)" }
            }
            @for blob in record.blobs.iter().filter(|b| b.role == BlobRole::Output) {
                (blob_view(record, blob))
            }
            @if let Some(reasoning) = record.response.reasoning.as_deref().filter(|r| !r.is_empty()) {
                details.reasoning {
                    summary { "Reasoning trace (" (reasoning.chars().count()) " characters)" }
                    (text_block(reasoning))
                }
            }
            @if let Some(content) = record.response.content.as_ref().filter(|c| !c.is_empty()) {
                (text_block(content))
            } @else if record.response.tool_calls.is_empty() && record.response.refusal.is_none() && record.blobs.iter().all(|b| b.role != BlobRole::Output) && record.embeddings.is_none() {
                p.empty { "No answer text." }
            }
            @if let Some(refusal) = &record.response.refusal {
                p { strong { "Refusal: " } (refusal) }
            }
            @if !record.response.tool_calls.is_empty() {
                h3 { "Tool calls" }
                pre { (serde_json::to_string_pretty(&record.response.tool_calls).unwrap_or_default()) }
            }
            @if let Some(failure) = &record.failure {
                p.error { strong { "Failed: " } (failure) }
            }
        }
        section aria-labelledby="details" {
            h2 #details { "Details" }
            dl.meta {
                dt { "Member" }
                dd { @match &record.consumer { Some(h) => a href={ "/u/" (h) } { (h) }, None => "—" } }
                dt { "Endpoint" } dd { code { (record.endpoint.path()) } }
                dt { "Model requested" } dd { (layout::model_link(&record.model_requested)) }
                dt { "Model served" } dd { (record.model_served.as_deref().unwrap_or("—")) }
                dt { "Node" }
                dd {
                    (layout::served_by(record))
                    @if let Some(service) = record.served_by.as_ref().and_then(|s| s.service.as_deref()) {
                        " (service " (service) ")"
                    }
                }
                dt { "Received" } dd { (layout::time(record.timing.received_at)) }
                dt { "Time to first token" } dd { (layout::millis(record.timing.time_to_first_token_ms())) }
                dt { "Latency" } dd { (layout::millis(record.timing.latency_ms())) }
                dt { "Tokens" }
                dd {
                    @match counts {
                        Some(c) => {
                            (c.prompt_tokens) " prompt, " (c.completion_tokens) " completion"
                            @if let Some(r) = c.reasoning_tokens() { " (" (r) " reasoning)" }
                            ", " (c.total_tokens) " total, as the engine reported"
                        },
                        None => "not reported by the engine",
                    }
                }
                dt { "Finish reason" }
                dd { (record.response.finish_reason.as_ref().map(|f| serde_json::to_value(f).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()).unwrap_or_else(|| "—".to_owned())) }
                dt { "Request id" }
                dd {
                    code #request-id { (record.id) }
                    " " button.copy type="button" data-copy="request-id" hidden { "Copy" }
                }
            }
            @if record.attempts.len() > 1 || record.attempts.iter().any(|a| a.error.is_some()) {
                h3 { "Attempts" }
                ol {
                    @for attempt in &record.attempts {
                        li {
                            (attempt.served_by.operator) "/" (attempt.served_by.provider) " at " (layout::time(attempt.started_at))
                            @if let Some(error) = &attempt.error { ": " (error.kind) " — " (error.message) } @else { ": served it" }
                        }
                    }
                }
            }
        }
    }
}

/// The request of an endpoint other than chat: its prompt, input or text, its other fields,
/// and an uploaded file.
fn call_input(record: &InferenceRecord) -> Markup {
    let fields: Vec<(String, String)> = record
        .input
        .as_ref()
        .and_then(Value::as_object)
        .map(|body| {
            body.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "model" | "prompt" | "input" | "text"))
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    html! {
        section aria-labelledby="prompt" {
            h2 #prompt { "Input" }
            @if let Some(text) = record.input.as_ref().and(record.prompt_preview()).filter(|t| !t.starts_with('(')) {
                (text_block(&text))
            }
            @for blob in record.blobs.iter().filter(|b| b.role == BlobRole::Input) {
                (blob_view(record, blob))
            }
            @if !fields.is_empty() {
                dl.meta.fields {
                    @for (name, value) in &fields { dt { (name) } dd { (value) } }
                }
            }
        }
    }
}

/// An audio file or image of a record: a player or the picture, or a line saying it was not
/// kept.
fn blob_view(record: &InferenceRecord, blob: &BlobRef) -> Markup {
    let url = blob_path(record.id, &blob.id);
    let size = format!("{} ({} bytes)", blob.content_type, blob.bytes);
    html! {
        @if blob.dropped {
            p.empty { "A file of " (size) " — not kept (too large, or past the retention period)." }
        } @else if blob.is_audio() {
            figure.blob {
                audio controls preload="none" src=(url) {}
                figcaption { a href=(url) { (size) } }
            }
        } @else if blob.is_image() {
            figure.blob {
                img src=(url) alt=(record.prompt_preview().unwrap_or_default()) loading="lazy";
                figcaption { a href=(url) { (size) } }
            }
        } @else {
            p { a href=(url) { "A file of " (size) } }
        }
    }
}

/// The owner's visibility control for one record (a form posting to the dashboard).
pub(crate) fn visibility_form(
    id: &str,
    current: Visibility,
    viewer: Option<&Viewer>,
    back: &str,
    hide_label: bool,
) -> Markup {
    let field = format!("vis-{id}");
    html! {
        @if let Some(viewer) = viewer {
            form.inline method="post" action={ "/dashboard/requests/" (id) "/visibility" } {
                input type="hidden" name="csrf_token" value=(viewer.csrf_token);
                input type="hidden" name="back" value=(back);
                label for=(field) class=[hide_label.then_some("visually-hidden")] { "Visibility" }
                select #(field) name="visibility" {
                    @for v in [Visibility::Public, Visibility::Unlisted, Visibility::Private] {
                        option value=(v.as_str()) selected[v == current] { (v.as_str()) }
                    }
                }
                button type="submit" { "Save" }
            }
        }
    }
}

/// `GET /u/{handle}`: a member's public requests and the nodes they operate.
pub async fn profile_page(
    store: &Store,
    fleet: &Fleet,
    viewer: Option<Viewer>,
    handle: &str,
    query: Option<&str>,
) -> Result<Response, WebError> {
    if !is_github_login(handle) {
        return Err(WebError::not_found("member"));
    }
    let Some(member) = store.user_by_handle(handle).await? else {
        return Err(WebError::not_found("member"));
    };
    let cursor = query_value(query, "cursor");
    let params = list_params(with_query("", &[("cursor", cursor.as_deref())]).strip_prefix('?'))?;
    let record_query = params
        .apply(
            RecordQuery::made_by(member.id).with_visibility(Visibility::Public),
            true,
        )
        .map_err(WebError::from)?;
    let (items, next) = records(store, &record_query).await?;
    let nodes: Vec<ProviderProfile> = store
        .list_providers()
        .await?
        .into_iter()
        .filter(|p| p.operator_id == member.id)
        .map(|p| provider_profile(fleet, p))
        .collect();
    let path = format!("/u/{}", member.handle);
    let body = html! {
        h1 { "@" (member.handle) }
        p.lead { "Member since " (layout::time(member.created_at)) "." }
        section aria-labelledby="nodes" {
            h2 #nodes { "Nodes they operate" }
            @if nodes.is_empty() {
                p.empty { "None." }
            } @else {
                ul.cards { @for node in &nodes { li { (provider_card(node)) } } }
            }
        }
        section aria-labelledby="requests" {
            h2 #requests { "Public requests" }
            @if items.is_empty() {
                p.empty { "No public requests." }
            } @else {
                (layout::records_table(&format!("Public requests of {}", member.handle), &items, Columns::default()))
            }
            (layout::older_link(&path, next))
        }
    };
    let frame = Frame {
        title: &member.handle,
        section: Section::None,
        viewer: viewer.as_ref(),
        path: &path,
        noindex: false,
    };
    Ok(respond(
        StatusCode::OK,
        layout::page(&frame, body),
        viewer.is_some(),
    ))
}

/// `GET /u/{handle}`.
pub async fn profile(
    State(store): State<Store>,
    State(fleet): State<Arc<Fleet>>,
    headers: HeaderMap,
    Path(handle): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let viewer = viewer(&store, &headers).await?;
    profile_page(&store, &fleet, viewer, &handle, query.as_deref()).await
}

/// The hardware of a redacted manifest, one line per host with accelerators.
fn hardware(manifest: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    for host in manifest
        .get("hosts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = host.get("id").and_then(Value::as_str).unwrap_or("host");
        let Some(gpu) = host.get("gpu") else {
            lines.push(format!("{id}: no accelerator declared"));
            continue;
        };
        let text = |k: &str| gpu.get(k).and_then(Value::as_str).map(str::to_owned);
        let count = gpu.get("count").and_then(Value::as_u64).unwrap_or(1);
        let mut line = format!("{id}: {count} ×");
        if let Some(vendor) = text("vendor") {
            line.push(' ');
            line.push_str(&vendor);
        }
        if let Some(model) = text("model") {
            line.push(' ');
            line.push_str(&model);
        }
        if let Some(vram) = gpu.get("vram_gb").and_then(Value::as_f64) {
            line.push_str(&format!(", {vram} GB"));
        }
        lines.push(line);
    }
    lines
}

/// A provider's public card: online state, hardware, models.
pub(crate) fn provider_card(p: &ProviderProfile) -> Markup {
    html! {
        article.card {
            h3 { a href={ "/u/" (p.operator) } { (p.operator) } " / " (p.name) }
            p {
                @if p.online {
                    span.badge.online { "online" } " since " (layout::time(p.connected_at.unwrap_or(p.last_seen)))
                    " · " (p.counts.in_flight) " running now"
                } @else {
                    span.badge.offline { "offline" } " · last seen " (layout::time(p.last_seen))
                }
                @if !p.accepting { " · " span.badge.paused { "not accepting requests" } }
            }
            @let hw = hardware(&p.manifest);
            @if !hw.is_empty() {
                p.hardware { "Hardware: " (hw.join("; ")) }
            }
            @if p.models.is_empty() {
                p.empty { "No models declared." }
            } @else {
                ul.models {
                    @for m in &p.models {
                        li {
                            (layout::model_link(&m.id))
                            @if let Some(name) = &m.name { " — " (name) }
                            span.muted {
                                " (" (m.service)
                                @if let Some(ctx) = m.context_length { ", " (ctx) " tokens context" }
                                @if let Some(q) = &m.quantization { ", " (q) }
                                ")"
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /providers`: every provider, online first.
pub async fn providers(
    State(store): State<Store>,
    State(fleet): State<Arc<Fleet>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let viewer = viewer(&store, &headers).await?;
    let mut profiles: Vec<ProviderProfile> = store
        .list_providers()
        .await?
        .into_iter()
        .map(|p| provider_profile(&fleet, p))
        .collect();
    profiles.sort_by_key(|p| !p.online);
    let online = profiles.iter().filter(|p| p.online).count();
    let body = html! {
        h1 { "Providers" }
        p.lead {
            (online) " of " (profiles.len()) " nodes are online. Each runs on its operator's own hardware; "
            "what they declare here comes from their manifests, with secrets removed."
        }
        @if profiles.is_empty() {
            p.empty { "No node has linked yet." }
        } @else {
            ul.cards { @for p in &profiles { li { (provider_card(p)) } } }
        }
    };
    let frame = Frame {
        title: "Providers",
        section: Section::Providers,
        viewer: viewer.as_ref(),
        path: "/providers",
        noindex: false,
    };
    Ok(respond(
        StatusCode::OK,
        layout::page(&frame, body),
        viewer.is_some(),
    ))
}

/// The median of `values` (sorted here), if any.
fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

/// Recent speed of one node on one model, from public records.
#[derive(Default)]
struct Speed {
    requests: usize,
    ttft: Vec<f64>,
    latency: Vec<f64>,
    tokens_per_second: Vec<f64>,
}

/// `GET /models/{model}`: the nodes that serve a model and their recent speed (from public
/// requests).
pub async fn model(
    State(store): State<Store>,
    State(fleet): State<Arc<Fleet>>,
    headers: HeaderMap,
    Path(model): Path<String>,
) -> Result<Response, WebError> {
    let viewer = viewer(&store, &headers).await?;
    if model.is_empty() || model.chars().count() > MAX_NAME_CHARS {
        return Err(WebError::not_found("model"));
    }
    let serving: Vec<ProviderProfile> = store
        .list_providers()
        .await?
        .into_iter()
        .map(|p| provider_profile(&fleet, p))
        .filter(|p| {
            p.models.iter().any(|m| {
                m.id.eq_ignore_ascii_case(&model)
                    || m.hf
                        .as_deref()
                        .is_some_and(|hf| hf.eq_ignore_ascii_case(&model))
            })
        })
        .collect();
    let recent = store
        .list_records(
            &RecordQuery::public_feed()
                .with_model(model.clone())
                .with_limit(SPEED_SAMPLE),
        )
        .await?
        .items;
    if serving.is_empty() && recent.is_empty() {
        return Err(WebError::not_found("model"));
    }
    let mut speeds: BTreeMap<String, Speed> = BTreeMap::new();
    for record in &recent {
        let Some(served) = record.served_by.as_ref().filter(|s| !s.operator.is_empty()) else {
            continue;
        };
        let speed = speeds
            .entry(format!("{}/{}", served.operator, served.provider))
            .or_default();
        speed.requests += 1;
        if let Some(ttft) = record.timing.time_to_first_token_ms() {
            speed.ttft.push(ttft as f64);
        }
        if let Some(latency) = record.timing.latency_ms() {
            speed.latency.push(latency as f64);
        }
        if let (Some(counts), Some(first), Some(done)) = (
            &record.usage.counts,
            record.timing.first_token_at,
            record.timing.finished_at,
        ) {
            let seconds = (done - first).num_milliseconds() as f64 / 1000.0;
            if seconds > 0.0 && counts.completion_tokens > 0 {
                speed
                    .tokens_per_second
                    .push(counts.completion_tokens as f64 / seconds);
            }
        }
    }
    let online = serving.iter().filter(|p| p.online).count();
    let path = layout::model_href(&model);
    let shown: Vec<InferenceRecord> = recent.iter().take(20).cloned().collect();
    let body = html! {
        h1 { "Model " code { (model) } }
        p.lead { (online) " online " @if online == 1 { "node serves" } @else { "nodes serve" } " it (" (serving.len()) " known)." }
        section aria-labelledby="nodes" {
            h2 #nodes { "Nodes" }
            @if serving.is_empty() {
                p.empty { "No node declares it now." }
            } @else {
                ul.cards { @for p in &serving { li { (provider_card(p)) } } }
            }
        }
        section aria-labelledby="speed" {
            h2 #speed { "Recent speed" }
            @if speeds.is_empty() {
                p.empty { "No public request to measure yet." }
            } @else {
                div.table-wrap {
                    table {
                        caption { "Medians over the last " (recent.len()) " public requests for this model" }
                        thead { tr {
                            th scope="col" { "Node" }
                            th scope="col" class="num" { "Requests" }
                            th scope="col" class="num" { abbr title="time to first token" { "TTFT" } }
                            th scope="col" class="num" { "Latency" }
                            th scope="col" class="num" { "Tokens/s" }
                        } }
                        tbody {
                            @for (node, speed) in &mut speeds {
                                tr {
                                    th scope="row" { (node) }
                                    td.num { (speed.requests) }
                                    td.num { (layout::millis(median(&mut speed.ttft).map(|v| v as i64))) }
                                    td.num { (layout::millis(median(&mut speed.latency).map(|v| v as i64))) }
                                    td.num { (median(&mut speed.tokens_per_second).map(|v| format!("{v:.1}")).unwrap_or_else(|| "—".to_owned())) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !shown.is_empty() {
            section aria-labelledby="recent" {
                h2 #recent { "Recent public requests" }
                (layout::records_table("Recent public requests for this model", &shown, Columns { consumer: true, visibility: false }))
                p { a href=(with_query("/", &[("model", Some(&model))])) { "All of them in the feed →" } }
            }
        }
    };
    let frame = Frame {
        title: &model,
        section: Section::Providers,
        viewer: viewer.as_ref(),
        path: &path,
        noindex: false,
    };
    Ok(respond(
        StatusCode::OK,
        layout::page(&frame, body),
        viewer.is_some(),
    ))
}

/// The policy's text as HTML: `# ` and `## ` lines are headings, `- ` lines list items, blank
/// lines end paragraphs.
pub(crate) fn policy_html(text: &str) -> Markup {
    let mut blocks: Vec<Markup> = Vec::new();
    let mut paragraph: Vec<&str> = Vec::new();
    let mut items: Vec<&str> = Vec::new();
    let flush = |paragraph: &mut Vec<&str>, items: &mut Vec<&str>, blocks: &mut Vec<Markup>| {
        if !paragraph.is_empty() {
            let text = paragraph.join(" ");
            blocks.push(html! { p { (text) } });
            paragraph.clear();
        }
        if !items.is_empty() {
            let list = html! { ul { @for item in items.iter() { li { (item) } } } };
            blocks.push(list);
            items.clear();
        }
    };
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(heading) = line.strip_prefix("## ") {
            flush(&mut paragraph, &mut items, &mut blocks);
            blocks.push(html! { h2 { (heading) } });
        } else if let Some(heading) = line.strip_prefix("# ") {
            flush(&mut paragraph, &mut items, &mut blocks);
            blocks.push(html! { h1 { (heading) } });
        } else if let Some(item) = line.strip_prefix("- ") {
            if !paragraph.is_empty() {
                let mut none = Vec::new();
                flush(&mut paragraph, &mut none, &mut blocks);
            }
            items.push(item);
        } else if line.trim().is_empty() {
            flush(&mut paragraph, &mut items, &mut blocks);
        } else {
            if !items.is_empty() {
                let mut none = Vec::new();
                flush(&mut none, &mut items, &mut blocks);
            }
            paragraph.push(line.trim());
        }
    }
    flush(&mut paragraph, &mut items, &mut blocks);
    html! { @for block in &blocks { (block) } }
}

/// `GET /terms`: the club's terms and privacy policy.
pub async fn terms(State(store): State<Store>, headers: HeaderMap) -> Result<Response, WebError> {
    let viewer = viewer(&store, &headers).await?;
    let frame = Frame {
        title: "Terms and privacy",
        section: Section::Terms,
        viewer: viewer.as_ref(),
        path: "/terms",
        noindex: false,
    };
    let body = html! { article.policy { (policy_html(POLICY)) } };
    Ok(respond(
        StatusCode::OK,
        layout::page(&frame, body),
        viewer.is_some(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_markup_is_escaped_and_structured() {
        let html =
            policy_html("# Title\n\nA <b>para</b>\ngoes on.\n\n- one\n- two\n\n## Next\nText")
                .into_string();
        assert_eq!(
            html,
            "<h1>Title</h1><p>A &lt;b&gt;para&lt;/b&gt; goes on.</p><ul><li>one</li><li>two</li></ul><h2>Next</h2><p>Text</p>"
        );
    }

    #[test]
    fn empty_filters_are_dropped() {
        assert!(list_params(Some("model=&status=")).is_ok());
        let zero = list_params(Some("limit=0")).unwrap();
        assert!(zero.apply(RecordQuery::default(), true).is_err());
        assert!(list_params(Some("nope=1")).is_err());
        assert_eq!(
            with_query("/", &[("model", Some("a b")), ("x", None)]),
            "/?model=a+b"
        );
    }
}
