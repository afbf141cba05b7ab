//! A short-lived memory of authenticated keys, so that each request does not pay a database
//! query for its key.
//!
//! Entries live [`KEY_CACHE_TTL`]. This store forgets a member's entries the moment it revokes
//! one of their keys, changes their settings or deletes them; another coordinator on the same
//! database sees such a change within the TTL.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{ApiKey, User, UserId};

/// How long an authenticated key is remembered.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

/// The most keys remembered at once (the memory is emptied when full).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    entries: Mutex<HashMap<String, (User, ApiKey, Instant)>>,
}

impl KeyCache {
    /// The member and key behind a secret's hash, if remembered and fresh.
    pub(crate) fn get(&self, secret_hash: &str) -> Option<(User, ApiKey)> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (user, key, at) = entries.get(secret_hash)?;
        (at.elapsed() < KEY_CACHE_TTL).then(|| (user.clone(), key.clone()))
    }

    pub(crate) fn remember(&self, secret_hash: String, user: &User, key: &ApiKey) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(secret_hash, (user.clone(), key.clone(), Instant::now()));
    }

    /// Forgets every key of a member.
    pub(crate) fn forget_user(&self, user_id: UserId) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (user, _, _)| user.id != user_id);
    }
}
