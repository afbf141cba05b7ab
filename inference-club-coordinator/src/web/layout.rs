//! The frame every page shares (banner, navigation, footer) and the pieces pages reuse: record
//! tables, times, durations, token counts.

use chrono::{DateTime, Utc};
use inference_club_core::endpoint::Endpoint;
use inference_club_core::openai::{MessageContent, Role};
use inference_club_core::record::{InferenceRecord, Status, Visibility};
use maud::{DOCTYPE, Markup, html};

use super::{Viewer, WebError};

/// Which part of the site a page belongs to (for `aria-current` in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Feed,
    Providers,
    Playground,
    Dashboard,
    Terms,
    None,
}

/// What a page says about itself to the frame.
pub(crate) struct Frame<'a> {
    pub title: &'a str,
    pub section: Section,
    pub viewer: Option<&'a Viewer>,
    /// Where sign-in comes back to.
    pub path: &'a str,
    /// Ask search engines not to index it (unlisted records, personal pages).
    pub noindex: bool,
}

/// The one sentence every page carries.
pub(crate) const BANNER: &str = "Requests are public by default and run on members' own \
                                 hardware: don't send anything you wouldn't publish.";

/// The page around `body`.
pub(crate) fn page(frame: &Frame<'_>, body: Markup) -> Markup {
    let nav = |section: Section, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(frame.section == section).then_some("page")] { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if frame.noindex { meta name="robots" content="noindex"; }
                @if let Some(viewer) = frame.viewer {
                    meta name="csrf-token" content=(viewer.csrf_token);
                }
                title { (frame.title) " · Inference Club" }
                link rel="stylesheet" href="/static/club.css";
                link rel="icon" href="/static/icon.svg" type="image/svg+xml";
                script src="/static/club.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                div.banner role="note" { (BANNER) " " a href="/terms" { "Terms and privacy" } }
                header.site {
                    a.brand href="/" { "Inference Club" }
                    nav aria-label="Main" {
                        ul {
                            (nav(Section::Feed, "/", "Feed"))
                            (nav(Section::Providers, "/providers", "Providers"))
                            (nav(Section::Playground, "/playground", "Playground"))
                            (nav(Section::Dashboard, "/dashboard", "Dashboard"))
                        }
                    }
                    div.who {
                        @if let Some(viewer) = frame.viewer {
                            a href={ "/u/" (viewer.user.handle) } { "@" (viewer.user.handle) }
                            form.inline method="post" action="/auth/signout" {
                                input type="hidden" name="csrf_token" value=(viewer.csrf_token);
                                button.link type="submit" { "Sign out" }
                            }
                        } @else {
                            a.button href=(sign_in_href(frame.path)) { "Sign in with GitHub" }
                        }
                    }
                }
                main #main { (body) }
                footer.site {
                    p {
                        "Inference Club: an open network for LLM inference on members' hardware. "
                        a href="/terms" aria-current=[(frame.section == Section::Terms).then_some("page")] { "Terms and privacy" }
                        " · " a href="/openapi.json" { "API" }
                    }
                }
            }
        }
    }
}

/// The sign-in link that comes back to `path`.
pub(crate) fn sign_in_href(path: &str) -> String {
    let next = crate::auth::cookies::local_path(Some(path));
    let mut url = String::from("/auth/github?");
    url.push_str(
        &url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", &next)
            .finish(),
    );
    url
}

/// An error page.
pub(crate) fn error_page(error: &WebError) -> Markup {
    let frame = Frame {
        title: &error.title,
        section: Section::None,
        viewer: None,
        path: error.sign_in.as_deref().unwrap_or("/"),
        noindex: true,
    };
    page(
        &frame,
        html! {
            h1 { (error.title) }
            p { (error.message) }
            @if let Some(next) = &error.sign_in {
                p { a.button href=(sign_in_href(next)) { "Sign in with GitHub" } }
            }
            p { a href="/" { "Back to the feed" } }
        },
    )
}

/// A time as `2026-05-29 14:03:07 UTC` in a `<time>` element.
pub(crate) fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
            (time_text(at))
        }
    }
}

/// A time as `2026-05-29 14:03:07 UTC`, as text.
pub(crate) fn time_text(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Milliseconds as `850 ms` or `2.4 s`; `—` when unknown.
pub(crate) fn millis(ms: Option<i64>) -> String {
    match ms {
        None => "—".to_owned(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

/// A record's token counts (`prompt → completion`), or `—` when the engine reported none.
pub(crate) fn tokens(record: &InferenceRecord) -> String {
    match &record.usage.counts {
        Some(c) => format!("{} → {}", c.prompt_tokens, c.completion_tokens),
        None => "—".to_owned(),
    }
}

/// A status as a labelled badge.
pub(crate) fn status(status: Status) -> Markup {
    html! { span class={ "badge status-" (status.as_str()) } { (status.as_str()) } }
}

/// A visibility as a labelled badge.
pub(crate) fn visibility(visibility: Visibility) -> Markup {
    html! { span class={ "badge vis-" (visibility.as_str()) } { (visibility.as_str()) } }
}

/// The serving provider, linked to its operator's profile; `—` when none (or forgotten).
pub(crate) fn served_by(record: &InferenceRecord) -> Markup {
    match record.served_by.as_ref().filter(|s| !s.operator.is_empty()) {
        Some(s) => html! { a href={ "/u/" (s.operator) } { (s.operator) "/" (s.provider) } },
        None => html! { "—" },
    }
}

/// The model of a record, linked to its page.
pub(crate) fn model_link(model: &str) -> Markup {
    html! { a href=(model_href(model)) { (model) } }
}

/// The page of a model.
pub(crate) fn model_href(model: &str) -> String {
    let mut href = String::from("/models/");
    for (i, part) in model.split('/').enumerate() {
        if i > 0 {
            href.push('/');
        }
        href.extend(url::form_urlencoded::byte_serialize(part.as_bytes()));
    }
    href
}

/// The text of a role.
pub(crate) fn role(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::Developer => "developer",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
        Role::Function => "function",
        _ => "other",
    }
}

/// The last user message of a chat (or Responses) request, or the prompt, input or text of a
/// request to another endpoint, cut to `max` characters: what a listing shows.
pub(crate) fn prompt_excerpt(record: &InferenceRecord, max: usize) -> String {
    if !matches!(
        record.endpoint,
        Endpoint::ChatCompletions | Endpoint::Responses
    ) {
        return excerpt(&record.prompt_preview().unwrap_or_default(), max);
    }
    let text = record
        .request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .or_else(|| record.request.messages.last())
        .and_then(|m| m.content.as_ref())
        .map(MessageContent::to_text)
        .unwrap_or_default();
    excerpt(&text, max)
}

/// `text` on one line, cut to `max` characters with an ellipsis.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        let mut cut: String = flat.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

/// Which columns a record table shows.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Columns {
    /// The member who asked.
    pub consumer: bool,
    /// The visibility.
    pub visibility: bool,
}

/// A table of records, newest first.
pub(crate) fn records_table(
    caption: &str,
    records: &[InferenceRecord],
    columns: Columns,
) -> Markup {
    html! {
        div.table-wrap {
            table.records {
                caption { (caption) }
                thead {
                    tr {
                        th scope="col" { "Request" }
                        th scope="col" { "When" }
                        @if columns.consumer { th scope="col" { "Member" } }
                        th scope="col" { "Model" }
                        th scope="col" { "Node" }
                        th scope="col" { "Status" }
                        @if columns.visibility { th scope="col" { "Visibility" } }
                        th scope="col" class="num" { "Tokens" }
                        th scope="col" class="num" { "Latency" }
                        th scope="col" class="num" { abbr title="time to first token" { "TTFT" } }
                    }
                }
                tbody {
                    @for record in records {
                        tr {
                            td.prompt {
                                a href={ "/r/" (record.id) } {
                                    @let text = prompt_excerpt(record, 90);
                                    @if text.is_empty() { "(no text)" } @else { (text) }
                                }
                            }
                            td { (time(record.timing.received_at)) }
                            @if columns.consumer {
                                td {
                                    @match &record.consumer {
                                        Some(handle) => a href={ "/u/" (handle) } { (handle) },
                                        None => "—",
                                    }
                                }
                            }
                            td { (model_link(&record.model_requested)) }
                            td { (served_by(record)) }
                            td { (status(record.status())) }
                            @if columns.visibility { td { (visibility(record.visibility)) } }
                            td.num { (tokens(record)) }
                            td.num { (millis(record.timing.latency_ms())) }
                            td.num { (millis(record.timing.time_to_first_token_ms())) }
                        }
                    }
                }
            }
        }
    }
}

/// A "next page" link keeping `base` (a path with its query, without `cursor`).
pub(crate) fn older_link(base: &str, next: Option<String>) -> Markup {
    html! {
        @if let Some(cursor) = next {
            nav.pager aria-label="Pages" {
                @let sep = if base.contains('?') { "&" } else { "?" };
                a rel="next" href={ (base) (sep) "cursor=" (cursor) } { "Older requests →" }
            }
        }
    }
}

/// A notice after a form did something (`role=status`, read out by screen readers).
pub(crate) fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text {
            p.notice role="status" { (text) }
        }
    }
}
