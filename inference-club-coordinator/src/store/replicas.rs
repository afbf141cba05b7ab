//! The replicas of a cluster sharing this database: each renews a lease while it runs, and the
//! records it accepted carry its id, so that whichever replica notices it died fails them.

use std::time::Duration;

use super::sql::{get, micros, now};
use super::{InFlight, Store, StoreError};

impl Store {
    /// Marks the records this store inserts from now on as handled by the replica `id` (once; a
    /// second call changes nothing and returns false).
    pub fn set_replica(&self, id: &str) -> bool {
        self.inner.replica.set(id.to_owned()).is_ok()
    }

    /// The replica this store inserts records for, if one was set.
    pub fn replica(&self) -> Option<&str> {
        self.inner.replica.get().map(String::as_str)
    }

    /// The members whose cached keys this store forgets from now on (a key revoked, settings
    /// changed, an account deleted), for passing on to other replicas.
    pub fn forgotten_members(&self) -> tokio::sync::broadcast::Receiver<super::UserId> {
        self.inner.keys.subscribe()
    }

    /// Forgets the cached keys of a member another replica changed (without telling
    /// [`Store::forgotten_members`] listeners again).
    pub fn forget_cached_member(&self, user_id: super::UserId) {
        self.inner.keys.forget_quietly(user_id);
    }

    /// Registers the replica `id`, or renews its lease: it counts as alive for the lease from now.
    pub async fn renew_replica(&self, id: &str) -> Result<(), StoreError> {
        let at = micros(now());
        sqlx::query(
            "INSERT INTO replicas (id, started_at, seen_at) VALUES ($1, $2, $2)
             ON CONFLICT (id) DO UPDATE SET seen_at = $2",
        )
        .bind(id.to_owned())
        .bind(at)
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    /// The replicas whose lease was not renewed within `lease`.
    pub async fn expired_replicas(&self, lease: Duration) -> Result<Vec<String>, StoreError> {
        let lease = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
        let rows = sqlx::query("SELECT id FROM replicas WHERE seen_at < $1 ORDER BY id")
            .bind(micros(now()).saturating_sub(lease))
            .fetch_all(&self.inner.pool)
            .await?;
        rows.iter().map(|row| get(row, "id")).collect()
    }

    /// Closes the books of the replica `id`, which died or left: its in-flight records become
    /// `failed` with `reason`, then its registration is removed. Returns how many records
    /// failed. Safe to run from several replicas at once.
    pub async fn retire_replica(&self, id: &str, reason: &str) -> Result<u64, StoreError> {
        let failed = self
            .fail_in_flight_of(InFlight::OfReplica(id), reason)
            .await?;
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(id.to_owned())
            .execute(&self.inner.pool)
            .await?;
        Ok(failed)
    }
}
