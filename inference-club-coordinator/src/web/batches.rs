//! The dashboard's batches: the member's batches, newest first, each with its progress, and
//! their output and error files to download under the member's session.
//!
//! Reads through the store's owner-only queries, as `GET /v1/batches` and
//! `GET /v1/files/{id}/content` do: a member sees and downloads only their own.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde_json::Value;

use super::dashboard::{Tab, dashboard_page, member};
use super::layout;
use super::public::{query_value, with_query};
use super::{WebError, html as respond};
use crate::store::Store;

/// The batches on one page.
const PAGE: u32 = 25;
/// The longest id taken from a path or a query.
const MAX_ID_CHARS: usize = 64;

/// One batch as the page shows it.
struct BatchRow {
    id: String,
    endpoint: String,
    status: String,
    total: u64,
    completed: u64,
    failed: u64,
    created_at: Option<DateTime<Utc>>,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
}

impl BatchRow {
    /// Reads a stored batch object.
    fn from_object(batch: &Value) -> Self {
        let text = |key: &str| batch[key].as_str().unwrap_or_default().to_owned();
        let count = |key: &str| batch["request_counts"][key].as_u64().unwrap_or(0);
        let file = |key: &str| batch[key].as_str().map(str::to_owned);
        Self {
            id: text("id"),
            endpoint: text("endpoint"),
            status: text("status"),
            total: count("total"),
            completed: count("completed"),
            failed: count("failed"),
            created_at: batch["created_at"]
                .as_i64()
                .and_then(|s| DateTime::from_timestamp(s, 0)),
            output_file_id: file("output_file_id"),
            error_file_id: file("error_file_id"),
        }
    }

    /// Whether its lines may still change.
    fn is_live(&self) -> bool {
        matches!(
            self.status.as_str(),
            "validating" | "in_progress" | "cancelling" | "finalizing"
        )
    }

    fn done(&self) -> u64 {
        self.completed.saturating_add(self.failed).min(self.total)
    }
}

/// Its progress: a `<progress>` bar and `done of total`, with the failures.
fn progress(row: &BatchRow) -> Markup {
    let label = format!("{} of {} answered", row.done(), row.total);
    html! {
        progress value=(row.done()) max=(row.total.max(1)) aria-label={ "Progress of " (row.id) ": " (label) } { (label) }
        " " span.progress-text { (row.done()) " / " (row.total) }
        @if row.failed > 0 { " " span.muted { "(" (row.failed) " failed)" } }
    }
}

/// The download links of its files.
fn files(row: &BatchRow) -> Markup {
    html! {
        @if let Some(id) = &row.output_file_id {
            a href={ "/dashboard/files/" (id) } download aria-label={ "Output of " (row.id) } { "output" }
        }
        @if row.output_file_id.is_some() && row.error_file_id.is_some() { " · " }
        @if let Some(id) = &row.error_file_id {
            a href={ "/dashboard/files/" (id) } download aria-label={ "Errors of " (row.id) } { "errors" }
        }
        @if row.output_file_id.is_none() && row.error_file_id.is_none() {
            span.muted { @if row.is_live() { "when it ends" } @else { "—" } }
        }
    }
}

/// `GET /dashboard/batches` (`?after=` a batch id, for older ones): the member's batches,
/// newest first, their counts as they are now.
pub async fn list(
    State(store): State<Store>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, WebError> {
    let after = query_value(query.as_deref(), "after").filter(|a| a.len() <= MAX_ID_CHARS);
    let path = with_query("/dashboard/batches", &[("after", after.as_deref())]);
    let viewer = member(&store, &headers, &path).await?;
    let mut batches = store
        .list_batches(viewer.user.id, after.as_deref(), PAGE + 1)
        .await?;
    let older = batches.len() > PAGE as usize;
    batches.truncate(PAGE as usize);
    let mut rows = Vec::with_capacity(batches.len());
    for batch in &batches {
        let mut row = BatchRow::from_object(batch);
        // A running batch's stored counts are those of its start: count its lines now.
        if row.is_live() {
            let (counts, _) = store.line_counts(&row.id).await?;
            (row.total, row.completed, row.failed) =
                (counts.total, counts.completed, counts.failed);
        }
        rows.push(row);
    }
    let body = html! {
        h1 { "Your batches" }
        p.muted {
            "Batches run many requests behind interactive traffic, each recorded as one of your requests. "
            "Create them with " code { "POST /v1/batches" } " or " code { "club batch submit" } "."
        }
        @if rows.is_empty() {
            p.empty { "No batches yet." }
        } @else {
            div.table-wrap {
                table.batches {
                    caption { "Your batches, newest first" }
                    thead { tr {
                        th scope="col" { "Batch" }
                        th scope="col" { "Endpoint" }
                        th scope="col" { "Status" }
                        th scope="col" { "Progress" }
                        th scope="col" { "Created" }
                        th scope="col" { "Files" }
                    } }
                    tbody {
                        @for row in &rows {
                            tr data-batch=(row.id) {
                                td { code { (row.id) } }
                                td { code { (row.endpoint) } }
                                td { span class={ "badge batch-" (row.status) } { (row.status) } }
                                td.progress { (progress(row)) }
                                td { @if let Some(at) = row.created_at { (layout::time(at)) } @else { "—" } }
                                td { (files(row)) }
                            }
                        }
                    }
                }
            }
            @if older {
                @if let Some(last) = rows.last() {
                    nav.pager aria-label="Pages" {
                        a rel="next" href=(with_query("/dashboard/batches", &[("after", Some(&last.id))])) { "Older batches →" }
                    }
                }
            }
        }
    };
    Ok(dashboard_page(
        &viewer,
        Tab::Batches,
        "Your batches",
        &path,
        body,
    ))
}

/// `GET /dashboard/files/{id}`: one of the member's files (a batch's output or error file, or
/// an upload), as a download.
pub async fn download(
    State(store): State<Store>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let path = format!("/dashboard/files/{id}");
    let viewer = member(&store, &headers, &path).await?;
    let not_found = || WebError::not_found("file of yours");
    if id.len() > MAX_ID_CHARS {
        return Err(not_found());
    }
    let file = store
        .file(viewer.user.id, &id)
        .await?
        .ok_or_else(not_found)?;
    let data = store
        .file_content(viewer.user.id, &id)
        .await?
        .ok_or_else(not_found)?;
    // The stored name, kept to characters that need no quoting in the header.
    let name: String = file
        .filename
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(100)
        .collect();
    let name = if name.is_empty() {
        format!("{id}.jsonl")
    } else {
        name
    };
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    let mut response = respond(axum::http::StatusCode::OK, html! {}, true);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jsonl"),
    );
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    let (parts, _) = response.into_parts();
    Ok((parts, data).into_response())
}
