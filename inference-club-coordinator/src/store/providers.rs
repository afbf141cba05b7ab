//! Providers (an operator's named nodes) and the history of their manifests.
//!
//! A provider is known by its operator and its name (`agent.name` of its manifest). Each
//! distinct manifest it publishes is kept as a numbered revision; publishing the same manifest
//! again (compared as canonical JSON: object keys sorted) only marks the provider as seen.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;

use super::error::Entity;
use super::policies::{ProviderPolicy, policy_from_row};
use super::sql::{from_micros, get, get_uuid, micros, now};
use super::users::handle_key;
use super::{ProviderId, Store, StoreError, UserId};

/// Largest manifest kept, in bytes of canonical JSON.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// Longest provider name.
const MAX_NAME_LEN: usize = 1024;

/// A provider as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provider {
    /// Its id.
    pub id: ProviderId,
    /// Its operator's id.
    pub operator_id: UserId,
    /// Its operator's handle.
    pub operator: String,
    /// Its name.
    pub name: String,
    /// Its latest manifest (as published: redacted by the node).
    pub manifest: Value,
    /// The number of its latest manifest revision (1 for the first).
    pub revision: i64,
    /// When it was first published.
    pub first_seen: DateTime<Utc>,
    /// When it was last seen (published or touched).
    pub last_seen: DateTime<Utc>,
    /// What its operator set through the API (access overrides, the kill switch).
    pub policy: ProviderPolicy,
}

/// One revision of a provider's manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderRevision {
    /// The provider.
    pub provider_id: ProviderId,
    /// The revision number: 1, 2, ... in order of publication.
    pub revision: i64,
    /// The manifest of this revision.
    pub manifest: Value,
    /// When this revision was first published.
    pub created_at: DateTime<Utc>,
    /// Whether the call that returned it created it (the manifest had changed).
    pub is_new: bool,
}

/// `value` with every object's keys in sorted order, serialized compactly: equal manifests have
/// equal canonical forms whatever the order they were written in.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

fn parse_manifest(text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|error| StoreError::corrupt("manifest", error))
}

const PROVIDER_COLUMNS: &str = "p.id, p.operator_id, u.handle, p.name, p.manifest, p.revision, \
                                p.first_seen, p.last_seen, p.accepting, p.access_override, \
                                p.service_access";

fn provider_from_row(row: &AnyRow) -> Result<Provider, StoreError> {
    Ok(Provider {
        id: get_uuid(row, "id")?.into(),
        operator_id: get_uuid(row, "operator_id")?.into(),
        operator: get(row, "handle")?,
        name: get(row, "name")?,
        manifest: parse_manifest(&get::<String>(row, "manifest")?)?,
        revision: get(row, "revision")?,
        first_seen: from_micros("first_seen", get(row, "first_seen")?)?,
        last_seen: from_micros("last_seen", get(row, "last_seen")?)?,
        policy: policy_from_row(row)?,
    })
}

impl Store {
    /// Records that `operator`'s provider `name` publishes `manifest` now: creates the provider
    /// on first sight, adds a revision when the manifest differs from the latest one, and marks
    /// it seen. Returns the provider's current revision.
    pub async fn upsert_provider(
        &self,
        operator: UserId,
        name: &str,
        manifest: &Value,
    ) -> Result<ProviderRevision, StoreError> {
        if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
            return Err(StoreError::invalid(
                "provider name",
                format!("must be 1 to {MAX_NAME_LEN} characters"),
            ));
        }
        let canonical = canonical_json(manifest);
        if canonical.len() > MAX_MANIFEST_BYTES {
            return Err(StoreError::invalid(
                "manifest",
                format!("larger than {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        let at = micros(now());
        let mut tx = self
            .inner
            .pool
            .begin_with(self.inner.backend.begin_write())
            .await?;
        // Create or touch in one statement: it also locks the row until commit (PostgreSQL),
        // so concurrent publications of one provider take turns.
        let row = sqlx::query(
            "INSERT INTO providers (id, operator_id, name, revision, manifest, first_seen, last_seen)
             SELECT $1, u.id, $2, 0, '', $3, $3 FROM users u WHERE u.id = $4
             ON CONFLICT (operator_id, name) DO UPDATE SET last_seen = excluded.last_seen
             RETURNING id, revision, manifest",
        )
        .bind(ProviderId::new().to_string())
        .bind(name)
        .bind(at)
        .bind(operator.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound(Entity::User))?;
        let provider_id: ProviderId = get_uuid(&row, "id")?.into();
        let revision: i64 = get(&row, "revision")?;
        let stored: String = get(&row, "manifest")?;
        if revision > 0 && stored == canonical {
            let created = sqlx::query(
                "SELECT created_at FROM provider_revisions WHERE provider_id = $1 AND revision = $2",
            )
            .bind(provider_id.to_string())
            .bind(revision)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            let created_at = match created {
                Some(row) => from_micros("created_at", get(&row, "created_at")?)?,
                None => from_micros("last_seen", at)?,
            };
            return Ok(ProviderRevision {
                provider_id,
                revision,
                manifest: parse_manifest(&canonical)?,
                created_at,
                is_new: false,
            });
        }
        let next = revision + 1;
        sqlx::query("UPDATE providers SET revision = $1, manifest = $2 WHERE id = $3")
            .bind(next)
            .bind(&canonical)
            .bind(provider_id.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO provider_revisions (provider_id, revision, manifest, created_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(provider_id.to_string())
        .bind(next)
        .bind(&canonical)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ProviderRevision {
            provider_id,
            revision: next,
            manifest: parse_manifest(&canonical)?,
            created_at: from_micros("created_at", at)?,
            is_new: true,
        })
    }

    /// The provider `name` of the operator with this handle (case-insensitively).
    pub async fn provider(
        &self,
        operator_handle: &str,
        name: &str,
    ) -> Result<Option<Provider>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers p JOIN users u ON u.id = p.operator_id
             WHERE u.handle_key = $1 AND p.name = $2 AND p.revision > 0"
        ))
        .bind(handle_key(operator_handle))
        .bind(name)
        .fetch_optional(&self.inner.pool)
        .await?;
        row.as_ref().map(provider_from_row).transpose()
    }

    /// Every provider, by operator handle then name.
    pub async fn list_providers(&self) -> Result<Vec<Provider>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers p JOIN users u ON u.id = p.operator_id
             WHERE p.revision > 0
             ORDER BY u.handle_key, p.name"
        ))
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter().map(provider_from_row).collect()
    }

    /// Marks a provider seen at `last_seen` (never moving it back). Returns whether the provider
    /// exists.
    pub async fn touch_provider(
        &self,
        id: ProviderId,
        last_seen: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE providers SET last_seen = CASE WHEN last_seen > $1 THEN last_seen ELSE $1 END
             WHERE id = $2",
        )
        .bind(micros(last_seen))
        .bind(id.to_string())
        .execute(&self.inner.pool)
        .await?;
        Ok(updated.rows_affected() > 0)
    }

    #[cfg(feature = "testing")]
    /// Every manifest revision of a provider, oldest first.
    pub async fn manifest_revisions(
        &self,
        provider_id: ProviderId,
    ) -> Result<Vec<ProviderRevision>, StoreError> {
        let rows = sqlx::query(
            "SELECT revision, manifest, created_at FROM provider_revisions
             WHERE provider_id = $1 ORDER BY revision",
        )
        .bind(provider_id.to_string())
        .fetch_all(&self.inner.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ProviderRevision {
                    provider_id,
                    revision: get(row, "revision")?,
                    manifest: parse_manifest(&get::<String>(row, "manifest")?)?,
                    created_at: from_micros("created_at", get(row, "created_at")?)?,
                    is_new: false,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"d":1,"c":2}],"x":null}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#
        );
    }
}
