//! A short-lived memory of authenticated keys, so that each request does not pay a database
//! query for its key.
//!
//! Entries live [`KEY_CACHE_TTL`]. This store forgets a member's entries the moment it revokes
//! one of their keys, changes their settings or deletes them, and says so to whoever listens
//! ([`KeyCache::subscribe`]: the cluster passes it on to the other replicas, which forget the
//! member too). A coordinator on the same database that does not listen sees such a change
//! within the TTL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{ApiKey, User, UserId};

/// How long an authenticated key is remembered.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

/// The most keys remembered at once (the memory is emptied when full).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug)]
pub(crate) struct KeyCache {
    entries: Mutex<HashMap<String, (User, ApiKey, Instant)>>,
    /// Counts forgettings: a lookup that began before one (and so may have read a key since
    /// revoked) does not remember what it read.
    epoch: AtomicU64,
    /// Members forgotten here, for listeners.
    forgotten: tokio::sync::broadcast::Sender<UserId>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            epoch: AtomicU64::new(0),
            forgotten: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl KeyCache {
    /// The member and key behind a secret's hash, if remembered and fresh.
    pub(crate) fn get(&self, secret_hash: &str) -> Option<(User, ApiKey)> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (user, key, at) = entries.get(secret_hash)?;
        (at.elapsed() < KEY_CACHE_TTL).then(|| (user.clone(), key.clone()))
    }

    /// Where the forgettings stand: pass it to [`KeyCache::remember`] after the lookup.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Remembers a key read by a lookup that began at `epoch`, unless a member was forgotten
    /// since (the key may be revoked by now).
    pub(crate) fn remember(&self, secret_hash: String, user: &User, key: &ApiKey, epoch: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(secret_hash, (user.clone(), key.clone(), Instant::now()));
    }

    /// Forgets every key of a member, and tells the listeners.
    pub(crate) fn forget_user(&self, user_id: UserId) {
        self.forget_quietly(user_id);
        let _ = self.forgotten.send(user_id);
    }

    /// The members forgotten from now on.
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<UserId> {
        self.forgotten.subscribe()
    }

    /// Forgets every key of a member without telling the listeners (another replica told us).
    pub(crate) fn forget_quietly(&self, user_id: UserId) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.retain(|_, (user, _, _)| user.id != user_id);
    }
}
