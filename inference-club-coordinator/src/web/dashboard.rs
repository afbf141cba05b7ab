//! The member's dashboard: their requests (filters, visibility, deletion with confirmation),
//! batches ([`super::batches`]), API keys (create — shown once —, revoke), nodes, settings and
//! account deletion.
//!
//! Every change goes through the club API's own functions and the store's owner-only queries,
//! so the dashboard may do exactly what `/api/v1/...` lets the member do.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use inference_club_core::manifest::ServiceManifest;
use inference_club_core::record::Visibility;
use maud::{Markup, html};

use super::forms::signed_form;
use super::layout::{self, Columns, Frame, Section};
use super::public::{list_params, provider_card, query_value, visibility_form, with_query};
use super::{Viewer, WebError, html as respond, viewer};
use crate::CoordinatorConfig;
use crate::auth::cookies::local_path;
use crate::auth::cookies::{SESSION_COOKIE, clear_cookie, secure_cookies, see_other};
use crate::club_api::account::{
    CreatedKey, KeyView, MAX_KEY_NAME_CHARS, change_settings, create_key_for,
};
use crate::club_api::providers::{PolicyChange, change_policy, profile};
use crate::club_api::records::parse_record_id;
use crate::club_api::{account, parse_visibility};
use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::limits::Limiter;
use crate::nodes::NodeKey;
use crate::store::Store;
use crate::store::{KeyId, RecordQuery, RoutingPreference, Scope};

/// The signed-in member, or a page inviting them to sign in and come back to `path`.
pub(super) async fn member(
    store: &Store,
    headers: &HeaderMap,
    path: &str,
) -> Result<Viewer, WebError> {
    viewer(store, headers)
        .await?
        .ok_or_else(|| WebError::sign_in(path))
}

/// The dashboard's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tab {
    Overview,
    Requests,
    Batches,
    Keys,
    Nodes,
    Settings,
    Account,
}

/// A dashboard page: the frame, the dashboard's own navigation, `body`. Never cached.
pub(super) fn dashboard_page(
    viewer: &Viewer,
    tab: Tab,
    title: &str,
    path: &str,
    body: Markup,
) -> Response {
    let link = |t: Tab, href: &str, label: &str| {
        html! { li { a href=(href) aria-current=[(t == tab).then_some("page")] { (label) } } }
    };
    let frame = Frame {
        title,
        section: Section::Dashboard,
        viewer: Some(viewer),
        path,
        noindex: true,
    };
    let content = html! {
        div.dashboard {
            nav.tabs aria-label="Dashboard" {
                ul {
                    (link(Tab::Overview, "/dashboard", "Overview"))
                    (link(Tab::Requests, "/dashboard/requests", "Requests"))
                    (link(Tab::Batches, "/dashboard/batches", "Batches"))
                    (link(Tab::Keys, "/dashboard/keys", "API keys"))
                    (link(Tab::Nodes, "/dashboard/nodes", "Nodes"))
                    (link(Tab::Settings, "/dashboard/settings", "Settings"))
                    (link(Tab::Account, "/dashboard/account", "Delete account"))
                }
            }
            div.panel { (body) }
        }
    };
    respond(StatusCode::OK, layout::page(&frame, content), true)
}

/// What a `?done=` after a form says.
fn done_notice(query: Option<&str>) -> Option<&'static str> {
    match query_value(query, "done").as_deref() {
        Some("deleted") => Some("The request was deleted, for good."),
        Some("revoked") => Some("The key was revoked: it stops working at once."),
        Some("saved") => Some("Your settings were saved."),
        Some("visibility") => Some("The visibility was changed."),
        Some("stopped") => {
            Some("The node stopped accepting requests: nothing new is routed to it.")
        }
        Some("accepting") => Some("The node accepts requests again."),
        _ => None,
    }
}

/// `GET /dashboard`: an overview.
pub async fn overview(
    State(store): State<Store>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let viewer = member(&store, &headers, "/dashboard").await?;
    let recent = store
        .list_records(&RecordQuery::made_by(viewer.user.id).with_limit(5))
        .await?
        .items;
    let keys = store.list_keys(viewer.user.id).await?.len();
    let nodes = store
        .list_providers()
        .await?
        .into_iter()
        .filter(|p| p.operator_id == viewer.user.id)
        .count();
    let user = &viewer.user;
    let body = html! {
        h1 { "Welcome, " (user.handle) }
        ul.stats {
            li { "New requests are " strong { (user.default_visibility.as_str()) } " by default (" a href="/dashboard/settings" { "change" } ")." }
            li { "Routing preference: " strong { (user.routing_preference.as_str()) } "." }
            li { (keys) " live API " @if keys == 1 { "key" } @else { "keys" } " (" a href="/dashboard/keys" { "manage" } ")." }
            li { (nodes) " " @if nodes == 1 { "node" } @else { "nodes" } " operated (" a href="/dashboard/nodes" { "see them" } ")." }
        }
        p { a.button href="/playground" { "Open the playground" } }
        h2 { "Your latest requests" }
        @if recent.is_empty() {
            p.empty { "None yet: try the " a href="/playground" { "playground" } "." }
        } @else {
            (layout::records_table("Your latest requests", &recent, Columns { consumer: false, visibility: true }))
            p { a href="/dashboard/requests" { "All your requests →" } }
        }
    };
    Ok(dashboard_page(
        &viewer,
        Tab::Overview,
        "Dashboard",
        "/dashboard",
        body,
    ))
}

/// `GET /dashboard/requests`: the member's requests, newest first; filters `model`, `status`,
/// `visibility`; each with its visibility control and a delete button.
pub async fn requests(
    State(store): State<Store>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let path = with_query("/dashboard/requests", &[]);
    let viewer = member(&store, &headers, &path).await?;
    let q = query.as_deref();
    let notice = done_notice(q);
    // `done` is the dashboard's own; the rest are the API's listing parameters.
    let listing: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            url::form_urlencoded::parse(q.unwrap_or("").as_bytes()).filter(|(k, _)| k != "done"),
        )
        .finish();
    let params = list_params(Some(&listing))?;
    let record_query = params
        .apply(RecordQuery::made_by(viewer.user.id), true)
        .map_err(WebError::from)?;
    let page = store.list_records(&record_query).await?;
    let model = query_value(q, "model");
    let status = query_value(q, "status");
    let vis = query_value(q, "visibility");
    let base = with_query(
        "/dashboard/requests",
        &[
            ("model", model.as_deref()),
            ("status", status.as_deref()),
            ("visibility", vis.as_deref()),
        ],
    );
    let option = |value: &str, current: &Option<String>| {
        html! { option value=(value) selected[current.as_deref() == Some(value)] { (value) } }
    };
    let body = html! {
        h1 { "Your requests" }
        (layout::notice(notice))
        form.filters method="get" action="/dashboard/requests" role="search" {
            label for="f-model" { "Model" }
            input #f-model type="text" name="model" value=[model.as_deref()] placeholder="any" maxlength="1024";
            label for="f-status" { "Status" }
            select #f-status name="status" {
                option value="" { "any" }
                @for s in ["queued", "running", "succeeded", "failed", "cancelled"] { (option(s, &status)) }
            }
            label for="f-vis" { "Visibility" }
            select #f-vis name="visibility" {
                option value="" { "any" }
                @for v in ["public", "unlisted", "private"] { (option(v, &vis)) }
            }
            button type="submit" { "Filter" }
        }
        @if page.items.is_empty() {
            p.empty { "No requests match." }
        } @else {
            div.table-wrap {
                table.records {
                    caption { "Your requests, newest first" }
                    thead { tr {
                        th scope="col" { "Request" }
                        th scope="col" { "When" }
                        th scope="col" { "Model" }
                        th scope="col" { "Status" }
                        th scope="col" class="num" { "Tokens" }
                        th scope="col" class="num" { "Latency" }
                        th scope="col" { "Visibility" }
                        th scope="col" { span.visually-hidden { "Delete" } }
                    } }
                    tbody {
                        @for record in &page.items {
                            tr {
                                td.prompt { a href={ "/r/" (record.id) } { (layout::prompt_excerpt(record, 70)) } }
                                td { (layout::time(record.timing.received_at)) }
                                td { (layout::model_link(&record.model_requested)) }
                                td { (layout::status(record.status())) }
                                td.num { (layout::tokens(record)) }
                                td.num { (layout::millis(record.timing.latency_ms())) }
                                td { (visibility_form(&record.id.to_string(), record.visibility, Some(&viewer), &base, true)) }
                                td { a.danger href={ "/dashboard/requests/" (record.id) "/delete" } aria-label={ "Delete the request of " (layout::time_text(record.timing.received_at)) } { "Delete…" } }
                            }
                        }
                    }
                }
            }
        }
        (layout::older_link(&base, page.next.map(|c| c.to_string())))
    };
    Ok(dashboard_page(
        &viewer,
        Tab::Requests,
        "Your requests",
        &base,
        body,
    ))
}

fn see(location: &str) -> Result<Response, WebError> {
    see_other(location, Vec::new()).map_err(WebError::from)
}

/// `POST /dashboard/requests/{id}/visibility` (form: `visibility`, `back`): the owner changes
/// a request's visibility (as `PATCH /api/v1/requests/{id}`); back to `back`.
pub async fn set_visibility(
    State(store): State<Store>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, WebError> {
    let (viewer, form) = signed_form(&store, &headers, body, "/dashboard/requests").await?;
    let record_id = parse_record_id(&id).map_err(|_| WebError::not_found("request"))?;
    let visibility = parse_visibility(form.get("visibility").unwrap_or_default())?;
    if !store
        .set_visibility(record_id, viewer.user.id, visibility)
        .await?
    {
        return Err(WebError::not_found("request"));
    }
    see(&local_path(
        form.non_empty("back").or(Some("/dashboard/requests")),
    ))
}

/// `GET /dashboard/requests/{id}/delete`: asks to confirm the deletion of one's request.
pub async fn confirm_delete(
    State(store): State<Store>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let path = format!("/dashboard/requests/{id}/delete");
    let viewer = member(&store, &headers, &path).await?;
    let record_id = parse_record_id(&id).map_err(|_| WebError::not_found("request"))?;
    let stored = match store.record(record_id).await? {
        Some(stored) if stored.consumer_id == Some(viewer.user.id) => stored,
        _ => return Err(WebError::not_found("request")),
    };
    let record = &stored.record;
    let body = html! {
        h1 { "Delete this request?" }
        p {
            "The request " a href={ "/r/" (record.id) } { "“" (layout::prompt_excerpt(record, 120)) "”" }
            " (" (record.model_requested) ", " (layout::time(record.timing.received_at)) ") will be deleted from the club for good: "
            "its prompt, answer and metadata. Copies that the node's operator or readers of a public "
            "request made before are beyond the club's reach."
        }
        form method="post" action={ "/dashboard/requests/" (record.id) "/delete" } {
            input type="hidden" name="csrf_token" value=(viewer.csrf_token);
            button.danger type="submit" { "Delete for good" }
            " " a href="/dashboard/requests" { "Cancel" }
        }
    };
    Ok(dashboard_page(
        &viewer,
        Tab::Requests,
        "Delete a request",
        &path,
        body,
    ))
}

/// `POST /dashboard/requests/{id}/delete`: the owner deletes a request for good (as
/// `DELETE /api/v1/requests/{id}`).
pub async fn delete_request(
    State(store): State<Store>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, WebError> {
    let (viewer, _) = signed_form(&store, &headers, body, "/dashboard/requests").await?;
    let record_id = parse_record_id(&id).map_err(|_| WebError::not_found("request"))?;
    if store.delete_record(record_id, viewer.user.id).await? {
        see("/dashboard/requests?done=deleted")
    } else {
        Err(WebError::not_found("request"))
    }
}

fn keys_body(
    viewer: &Viewer,
    keys: &[KeyView],
    created: Option<&CreatedKey>,
    notice: Option<&str>,
) -> Markup {
    html! {
        h1 { "API keys" }
        (layout::notice(notice))
        @if let Some(created) = created {
            section.created aria-labelledby="new-key" {
                h2 #new-key { "Your new key “" (created.key.name) "”" }
                p { strong { "Copy it now: it is shown this once." } " The club keeps only its hash." }
                p.secret {
                    code #secret { (created.secret) }
                    " " button.copy type="button" data-copy="secret" hidden { "Copy" }
                }
                p.muted { "Use it as " code { "Authorization: Bearer …" } " with any OpenAI SDK pointed at this club's " code { "/v1" } "." }
            }
        }
        @if keys.is_empty() {
            p.empty { "You have no keys. The browser needs none: your session is enough here." }
        } @else {
            div.table-wrap {
                table {
                    caption { "Your live keys" }
                    thead { tr {
                        th scope="col" { "Name" }
                        th scope="col" { "Prefix" }
                        th scope="col" { "Scopes" }
                        th scope="col" { "Created" }
                        th scope="col" { "Last used" }
                        th scope="col" { span.visually-hidden { "Revoke" } }
                    } }
                    tbody {
                        @for key in keys {
                            tr {
                                td { (key.name) }
                                td { code { (key.prefix) "…" } }
                                td { (key.scopes.iter().map(Scope::as_str).collect::<Vec<_>>().join(", ")) }
                                td { (layout::time(key.created_at)) }
                                td { @match key.last_used_at { Some(at) => (layout::time(at)), None => "never" } }
                                td {
                                    form.inline method="post" action={ "/dashboard/keys/" (key.id) "/revoke" } {
                                        input type="hidden" name="csrf_token" value=(viewer.csrf_token);
                                        button.danger type="submit" aria-label={ "Revoke " (key.name) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Create a key" }
        form.stack method="post" action="/dashboard/keys" {
            input type="hidden" name="csrf_token" value=(viewer.csrf_token);
            p {
                label for="key-name" { "Name" }
                input #key-name type="text" name="name" required maxlength=(MAX_KEY_NAME_CHARS) placeholder="laptop";
            }
            fieldset {
                legend { "Scopes" }
                @for (scope, what, checked) in [
                    (Scope::Inference, "call models and read your requests", true),
                    (Scope::Provider, "link a node", false),
                    (Scope::Account, "manage your account and keys", false),
                ] {
                    p.check {
                        input id={ "scope-" (scope.as_str()) } type="checkbox" name="scopes" value=(scope.as_str()) checked[checked];
                        label for={ "scope-" (scope.as_str()) } { strong { (scope.as_str()) } " — " (what) }
                    }
                }
            }
            p { button type="submit" { "Create key" } }
        }
    }
}

async fn key_views(store: &Store, viewer: &Viewer) -> Result<Vec<KeyView>, WebError> {
    Ok(store
        .list_keys(viewer.user.id)
        .await?
        .into_iter()
        .map(KeyView::from)
        .collect())
}

/// `GET /dashboard/keys`: the member's keys (prefix only) and the form to create one.
pub async fn keys(
    State(store): State<Store>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let viewer = member(&store, &headers, "/dashboard/keys").await?;
    let keys = key_views(&store, &viewer).await?;
    let body = keys_body(&viewer, &keys, None, done_notice(query.as_deref()));
    Ok(dashboard_page(
        &viewer,
        Tab::Keys,
        "API keys",
        "/dashboard/keys",
        body,
    ))
}

/// `POST /dashboard/keys` (form: `name`, `scopes` repeated): creates a key (as
/// `POST /api/v1/keys`, with its rate and count limits) and shows its secret this once.
pub async fn create_key(
    State(limits): State<Arc<Limiter>>,
    State(store): State<Store>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebError> {
    let (viewer, form) = signed_form(&store, &headers, body, "/dashboard/keys").await?;
    if let Err(throttled) = limits.key_creation(viewer.user.id) {
        return Err(WebError::from(*throttled.error));
    }
    let created = create_key_for(
        &store,
        &viewer.user,
        form.get("name").unwrap_or_default().to_owned(),
        form.all("scopes").to_vec(),
    )
    .await?;
    let keys = key_views(&store, &viewer).await?;
    let body = keys_body(&viewer, &keys, Some(&created), None);
    Ok(dashboard_page(
        &viewer,
        Tab::Keys,
        "API keys",
        "/dashboard/keys",
        body,
    ))
}

/// `POST /dashboard/keys/{id}/revoke`: revokes one of the member's keys at once (as
/// `DELETE /api/v1/keys/{id}`).
pub async fn revoke_key(
    State(store): State<Store>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, WebError> {
    let (viewer, _) = signed_form(&store, &headers, body, "/dashboard/keys").await?;
    let not_found = || WebError::not_found("key of yours");
    let key_id = (id.len() <= 64)
        .then(|| KeyId::parse(id.trim()))
        .flatten()
        .ok_or_else(not_found)?;
    if store.revoke_key(viewer.user.id, key_id).await? {
        see("/dashboard/keys?done=revoked")
    } else {
        Err(not_found())
    }
}

/// The problems of a stored manifest under the one validator (none for a manifest the
/// coordinator accepted, unless the rules changed since).
fn manifest_problems(manifest: &serde_json::Value) -> Vec<String> {
    match ServiceManifest::parse_and_validate(&manifest.to_string()) {
        Ok(_) => Vec::new(),
        Err(error) => error
            .to_string()
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect(),
    }
}

/// The requests a node served that its operator sees on the dashboard.
const SERVED_SHOWN: u32 = 10;

/// `GET /dashboard/nodes`: the member's nodes: online state, last heartbeat, manifest
/// problems, and what they served (any visibility: the operator may see it).
pub async fn nodes(
    State(fleet): State<Arc<Fleet>>,
    State(store): State<Store>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let viewer = member(&store, &headers, "/dashboard/nodes").await?;
    let mine: Vec<_> = store
        .list_providers()
        .await?
        .into_iter()
        .filter(|p| p.operator_id == viewer.user.id)
        .collect();
    let mut sections = Vec::new();
    for provider in mine {
        let live = fleet.find_node(&NodeKey {
            operator_id: provider.operator_id,
            provider: provider.name.clone(),
        });
        let heartbeat = live.as_ref().map(|n| n.silent_for());
        let problems = manifest_problems(&provider.manifest);
        let served = store
            .list_records(
                &RecordQuery::served_by(viewer.user.id)
                    .with_provider(provider.name.clone())
                    .with_limit(SERVED_SHOWN),
            )
            .await?
            .items;
        let card = profile(&fleet, provider);
        sections.push(html! {
            section.node aria-label={ "Node " (card.name) } {
                (provider_card(&card))
                dl.meta {
                    dt { "Last heartbeat" }
                    dd {
                        @match heartbeat {
                            Some(silent) => { (silent.as_secs()) " s ago" },
                            None => { "offline; last seen " (layout::time(card.last_seen)) },
                        }
                    }
                    dt { "Manifest" }
                    dd {
                        "revision " (card.manifest_revision) ": "
                        @if problems.is_empty() { "valid" } @else {
                            (problems.len()) " problems"
                            ul.problems { @for p in &problems { li { code { (p) } } } }
                        }
                    }
                    dt { "Accepting requests" }
                    dd {
                        @if card.accepting { "yes " } @else { "no: the kill switch is on, nothing is routed to it " }
                        form.inline method="post" action="/dashboard/nodes/accepting" {
                            input type="hidden" name="csrf_token" value=(viewer.csrf_token);
                            input type="hidden" name="provider" value=(card.name);
                            input type="hidden" name="accepting" value=(if card.accepting { "no" } else { "yes" });
                            @if card.accepting {
                                button.danger type="submit" aria-label={ "Stop " (card.name) " accepting requests" } { "Stop accepting requests" }
                            } @else {
                                button type="submit" aria-label={ "Let " (card.name) " accept requests again" } { "Accept requests again" }
                            }
                        }
                    }
                }
                @if served.is_empty() {
                    p.empty { "It has served no request yet." }
                } @else {
                    (layout::records_table(&format!("Latest requests {} served (every visibility: you may see them as its operator)", card.name), &served, Columns { consumer: true, visibility: true }))
                }
            }
        });
    }
    let body = html! {
        h1 { "Your nodes" }
        (layout::notice(done_notice(query.as_deref())))
        @if sections.is_empty() {
            p.empty {
                "You operate no node. Create a key with the " code { "provider" } " scope, then run "
                code { "club-provider run --coordinator URL --key KEY --manifest agent.yaml" } "."
            }
        } @else {
            @for s in &sections { (s) }
        }
    };
    Ok(dashboard_page(
        &viewer,
        Tab::Nodes,
        "Your nodes",
        "/dashboard/nodes",
        body,
    ))
}

/// `POST /dashboard/nodes/accepting` (form: `provider`, `accepting` = `yes` | `no`): the
/// operator's kill switch for one of their nodes (as `PATCH /api/v1/providers/{me}/{provider}`
/// with `accepting`), in force at once.
pub async fn set_accepting(
    State(store): State<Store>,
    State(fleet): State<Arc<Fleet>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebError> {
    let (viewer, form) = signed_form(&store, &headers, body, "/dashboard/nodes").await?;
    let accepting = match form.get("accepting") {
        Some("yes") => true,
        Some("no") => false,
        _ => {
            return Err(
                ApiError::bad_request("invalid_accepting", "accepting is yes or no")
                    .with_param("accepting")
                    .into(),
            );
        }
    };
    let provider = form.non_empty("provider").unwrap_or_default();
    let change = PolicyChange {
        accepting: Some(accepting),
        ..PolicyChange::default()
    };
    let handle = viewer.user.handle.clone();
    change_policy(&store, &fleet, &handle, &handle, provider, change).await?;
    see(if accepting {
        "/dashboard/nodes?done=accepting"
    } else {
        "/dashboard/nodes?done=stopped"
    })
}

/// `GET /dashboard/settings`: default visibility and routing preference.
pub async fn settings(
    State(store): State<Store>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let viewer = member(&store, &headers, "/dashboard/settings").await?;
    let user = &viewer.user;
    let body = html! {
        h1 { "Settings" }
        (layout::notice(done_notice(query.as_deref())))
        form.stack method="post" action="/dashboard/settings" {
            input type="hidden" name="csrf_token" value=(viewer.csrf_token);
            p {
                label for="default_visibility" { "Visibility of new requests" }
                select #default_visibility name="default_visibility" aria-describedby="vis-help" {
                    @for v in [Visibility::Public, Visibility::Unlisted, Visibility::Private] {
                        option value=(v.as_str()) selected[v == user.default_visibility] { (v.as_str()) }
                    }
                }
                small #vis-help { "Public: in the feed. Unlisted: readable by link. Private: you and the serving node's operator. A request may still name its own." }
            }
            p {
                label for="routing_preference" { "Where your requests may run" }
                select #routing_preference name="routing_preference" aria-describedby="route-help" {
                    @for r in RoutingPreference::ALL {
                        option value=(r.as_str()) selected[r == user.routing_preference] { (r.as_str()) }
                    }
                }
                small #route-help { "any: any node that admits you. prefer_own: your own nodes first when one has room. only_own: only your nodes." }
            }
            p { button type="submit" { "Save settings" } }
        }
        h2 { "Sessions" }
        form.inline method="post" action="/auth/signout-everywhere" {
            input type="hidden" name="csrf_token" value=(viewer.csrf_token);
            button type="submit" { "Sign out everywhere" }
        }
    };
    Ok(dashboard_page(
        &viewer,
        Tab::Settings,
        "Settings",
        "/dashboard/settings",
        body,
    ))
}

/// `POST /dashboard/settings` (form: `default_visibility`, `routing_preference`): as
/// `PATCH /api/v1/me`.
pub async fn save_settings(
    State(store): State<Store>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebError> {
    let (viewer, form) = signed_form(&store, &headers, body, "/dashboard/settings").await?;
    change_settings(
        &store,
        viewer.user,
        form.non_empty("default_visibility"),
        form.non_empty("routing_preference"),
    )
    .await?;
    see("/dashboard/settings?done=saved")
}

/// `GET /dashboard/account`: what deleting the account does, and the form to do it.
pub async fn account(State(store): State<Store>, headers: HeaderMap) -> Result<Response, WebError> {
    let viewer = member(&store, &headers, "/dashboard/account").await?;
    let body = html! {
        h1 { "Delete your account" }
        p { "Deleting your account removes from the club, at once and for good:" }
        ul {
            li { "your account (handle and e-mail address) and every session;" }
            li { "your API keys;" }
            li { "every request you made, whatever its visibility;" }
            li { "your nodes, their manifests and their history (their links are closed);" }
            li { "your handle on requests your nodes served for others (those stay theirs)." }
        }
        p {
            "It cannot reach copies that operators of the nodes that served your requests kept on "
            "their own machines, nor copies others made of public content before."
        }
        form.stack method="post" action="/dashboard/account/delete" {
            input type="hidden" name="csrf_token" value=(viewer.csrf_token);
            p {
                label for="confirm" { "Type your handle, " strong { (viewer.user.handle) } ", to confirm" }
                input #confirm type="text" name="confirm" required autocomplete="off" maxlength="100";
            }
            p { button.danger type="submit" { "Delete my account" } }
        }
    };
    Ok(dashboard_page(
        &viewer,
        Tab::Account,
        "Delete your account",
        "/dashboard/account",
        body,
    ))
}

/// `POST /dashboard/account/delete` (form: `confirm` = the handle): as `DELETE /api/v1/me`;
/// ends the browser's session and says what was removed and what the club cannot reach.
pub async fn delete_account(
    State(config): State<Arc<CoordinatorConfig>>,
    State(store): State<Store>,
    State(fleet): State<Arc<Fleet>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebError> {
    let (viewer, form) = signed_form(&store, &headers, body, "/dashboard/account").await?;
    let typed = form.get("confirm").unwrap_or_default().trim();
    if !typed.eq_ignore_ascii_case(&viewer.user.handle) {
        return Err(ApiError::bad_request(
            "confirmation_required",
            "to delete your account, type your handle exactly in the confirmation box",
        )
        .into());
    }
    let deleted = account::delete_account(&store, &fleet, viewer.user).await?;
    let frame = Frame {
        title: "Account deleted",
        section: Section::None,
        viewer: None,
        path: "/",
        noindex: true,
    };
    let body = html! {
        h1 { "Your account is deleted" }
        p { "The club no longer holds the account " strong { (deleted.handle) } ". Removed:" }
        ul { @for item in &deleted.removed { li { (item) } } }
        @if deleted.nodes_disconnected > 0 {
            p { (deleted.nodes_disconnected) " node links were closed." }
        }
        p { "Not reached: " (deleted.not_reached) "." }
        p { a href="/" { "Back to the feed" } }
    };
    let mut response = respond(StatusCode::OK, layout::page(&frame, body), true);
    let cookie = clear_cookie(SESSION_COOKIE, "/", secure_cookies(&config))?;
    response
        .headers_mut()
        .append(axum::http::header::SET_COOKIE, cookie);
    Ok(response.into_response())
}
