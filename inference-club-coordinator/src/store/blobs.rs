//! Blobs: the audio and images of records, kept apart from the record's JSON (which names them
//! with [`BlobRef`](inference_club_core::record::BlobRef)s).

use chrono::{DateTime, Utc};
use inference_club_core::record::RecordId;

use super::sql::{get, micros, now};
use super::{Store, StoreError};

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The record it belongs to.
    pub record_id: String,
    /// Its content type.
    pub content_type: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

impl Store {
    /// Stores blob `id` of record `record`.
    pub async fn put_blob(
        &self,
        id: &str,
        record: RecordId,
        content_type: &str,
        data: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO blobs (id, record_id, content_type, size, created_at, data)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.to_owned())
        .bind(record.to_string())
        .bind(content_type.to_owned())
        .bind(i64::try_from(data.len()).unwrap_or(i64::MAX))
        .bind(micros(now()))
        .bind(data.to_vec())
        .execute(&self.inner.pool)
        .await?;
        Ok(())
    }

    /// The blob `id`, if it is stored.
    pub async fn blob(&self, id: &str) -> Result<Option<Blob>, StoreError> {
        let row = sqlx::query("SELECT record_id, content_type, data FROM blobs WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&self.inner.pool)
            .await?;
        row.map(|row| {
            Ok(Blob {
                record_id: get(&row, "record_id")?,
                content_type: get(&row, "content_type")?,
                data: get(&row, "data")?,
            })
        })
        .transpose()
    }

    /// Deletes the blobs of record `record`.
    pub(crate) async fn delete_blobs_of(&self, record: RecordId) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM blobs WHERE record_id = $1")
            .bind(record.to_string())
            .execute(&self.inner.pool)
            .await?;
        Ok(deleted.rows_affected())
    }

    /// Deletes the blobs stored before `before`, and those whose record is gone (its owner
    /// deleted it, or their account). Returns how many went.
    pub async fn expire_blobs(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM blobs WHERE created_at < $1
             OR NOT EXISTS (SELECT 1 FROM records r WHERE r.id = blobs.record_id)",
        )
        .bind(micros(before))
        .execute(&self.inner.pool)
        .await?;
        Ok(deleted.rows_affected())
    }
}
