//! The club's own API (JSON): records, the public feed, providers, keys and the account.

use std::sync::Arc;

use axum::Router;

use super::Coordinator;

/// The club API's routes.
pub fn routes() -> Router<Arc<Coordinator>> {
    Router::new()
}
