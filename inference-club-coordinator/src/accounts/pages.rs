//! The HTML of sign-in, kept in one place: the new member's confirmation form, in the web's
//! frame ([`crate::web`]).

use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use crate::web::{self, layout};

/// The confirmation form a new member fills in once: 18 or older, the terms (linked), and the
/// flow token in a hidden field. Posts to `/auth/confirm`. Drawn in the web's frame (banner,
/// stylesheet), with the web's page headers.
pub fn confirm_page(handle: &str, flow_token: &str) -> Response {
    let frame = layout::Frame {
        title: "Join Inference Club",
        section: layout::Section::None,
        viewer: None,
        path: "/",
        noindex: true,
    };
    let body = html! {
        h1 { "Join Inference Club as " (handle) }
        p {
            "Your account will keep your GitHub username and e-mail address, and nothing else about you. "
            "Requests you make are public by default; you can make them unlisted or private, delete them, "
            "or delete your account at any time."
        }
        form.stack method="post" action="/auth/confirm" {
            input type="hidden" name="flow" value=(flow_token);
            p.check {
                input type="checkbox" id="age" name="age" value="yes" required;
                " " label for="age" { "I am 18 or older" }
            }
            p.check {
                input type="checkbox" id="terms" name="terms" value="yes" required;
                " " label for="terms" { "I accept the " a href="/terms" { "terms" } }
            }
            p { button type="submit" { "Create my account" } }
        }
    };
    web::html(StatusCode::OK, layout::page(&frame, body), true)
}
