//! `GET /playground`: chat with a model the member may use. The page lists the models as
//! `GET /v1/models` would for the member; a small script (`/static/club.js`) streams the
//! answer from `POST /v1/chat/completions` with the session cookie and the `x-csrf-token`
//! header, then links the request's record.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use inference_club_core::record::Visibility;
use maud::html;

use super::layout::{self, Frame, Section};
use super::{WebError, html as respond, viewer};
use crate::fleet::Fleet;
use crate::fleet::catalog::models_for;
use crate::store::RoutingPreference;
use crate::store::Store;

/// `GET /playground`: the member's chat.
pub async fn page(
    State(fleet): State<Arc<Fleet>>,
    State(store): State<Store>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let Some(viewer) = viewer(&store, &headers).await? else {
        return Err(WebError::sign_in("/playground"));
    };
    let user = &viewer.user;
    // The models `GET /v1/models` lists for this member.
    let mut nodes = fleet.online_nodes();
    if user.routing_preference == RoutingPreference::OnlyOwn {
        nodes.retain(|node| node.key().operator_id == user.id);
    }
    let models = models_for(&nodes, Some(&user.handle));
    let body = html! {
        h1 { "Playground" }
        p.lead {
            "Chat with a model served by a member's node. Each message is a request like any other: "
            "recorded, and " strong { (user.default_visibility.as_str()) } " unless you choose below."
        }
        @if models.is_empty() {
            p.empty { "No online node serves a model you may use right now. Look at the " a href="/providers" { "providers" } "." }
        } @else {
            form #chat.stack method="get" action="/playground" data-chat="" {
                div.row {
                    p {
                        label for="model" { "Model" }
                        select #model name="model" {
                            @for model in models.values() {
                                option value=(model.id) { (model.id) }
                            }
                        }
                    }
                    p {
                        label for="visibility" { "Visibility" }
                        select #visibility name="visibility" {
                            @for v in [Visibility::Public, Visibility::Unlisted, Visibility::Private] {
                                option value=(v.as_str()) selected[v == user.default_visibility] { (v.as_str()) }
                            }
                        }
                    }
                }
                ol #conversation.messages aria-live="polite" aria-label="Conversation" {}
                p {
                    label for="prompt" { "Your message" }
                    textarea #prompt name="prompt" rows="4" required maxlength="20000" {}
                }
                p {
                    button #send type="submit" { "Send" }
                    " " button #reset.link type="button" { "New conversation" }
                }
                p #chat-status.muted role="status" {}
            }
            noscript { p.note { "The playground streams answers with a small script; with scripts off, use the API (" code { "/v1/chat/completions" } ") with a key from your dashboard." } }
        }
    };
    let frame = Frame {
        title: "Playground",
        section: Section::Playground,
        viewer: Some(&viewer),
        path: "/playground",
        noindex: true,
    };
    Ok(respond(StatusCode::OK, layout::page(&frame, body), true))
}
