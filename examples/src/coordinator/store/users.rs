//! Members: accounts, settings, and account deletion.

use chrono::{DateTime, Utc};
use inference_club_core::manifest::is_github_login;
use inference_club_core::record::Visibility;
use serde::Serialize;
use sqlx::any::AnyRow;

use super::error::Entity;
use super::sql::{from_micros, from_micros_opt, get, get_parsed, get_uuid, micros, now};
use super::{RoutingPreference, Store, StoreError, UserId};

/// Longest e-mail address kept.
const MAX_EMAIL_LEN: usize = 320;

/// A member of the club.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Its handle (a GitHub login), as first written; unique case-insensitively.
    pub handle: String,
    /// Its e-mail address, if known.
    pub email: Option<String>,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// The visibility of its requests when a request names none.
    pub default_visibility: Visibility,
    /// When the member accepted the terms, if they have.
    pub terms_accepted_at: Option<DateTime<Utc>>,
    /// Where their requests may go.
    pub routing_preference: RoutingPreference,
}

const USER_COLUMNS: &str =
    "id, handle, email, created_at, default_visibility, terms_accepted_at, routing_preference";

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: get_uuid(row, "id")?.into(),
        handle: get(row, "handle")?,
        email: get(row, "email")?,
        created_at: from_micros("created_at", get(row, "created_at")?)?,
        default_visibility: get_parsed(row, "default_visibility")?,
        terms_accepted_at: from_micros_opt("terms_accepted_at", get(row, "terms_accepted_at")?)?,
        routing_preference: get_parsed(row, "routing_preference")?,
    })
}

/// The key handles are compared by.
pub(crate) fn handle_key(handle: &str) -> String {
    handle.to_ascii_lowercase()
}

impl Store {
    /// Creates a member. The handle must look like a GitHub login (1 to 39 letters, digits or
    /// single inner hyphens) and be free case-insensitively ([`StoreError::HandleTaken`]
    /// otherwise).
    pub async fn create_user(&self, handle: &str, email: Option<&str>) -> Result<User, StoreError> {
        if !is_github_login(handle) {
            return Err(StoreError::invalid(
                "handle",
                format!(
                    "{handle:?} is not a GitHub login (1 to 39 letters, digits or single inner hyphens)"
                ),
            ));
        }
        let email = email.map(str::trim).filter(|e| !e.is_empty());
        if let Some(email) = email
            && (email.len() > MAX_EMAIL_LEN || !email.contains('@'))
        {
            return Err(StoreError::invalid(
                "email",
                format!("{email:?} is not an e-mail address"),
            ));
        }
        let user = User {
            id: UserId::new(),
            handle: handle.to_owned(),
            email: email.map(str::to_owned),
            created_at: now(),
            default_visibility: Visibility::default(),
            terms_accepted_at: None,
            routing_preference: RoutingPreference::default(),
        };
        let inserted = sqlx::query(
            "INSERT INTO users (id, handle, handle_key, email, created_at, default_visibility)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (handle_key) DO NOTHING",
        )
        .bind(user.id.to_string())
        .bind(&user.handle)
        .bind(handle_key(handle))
        .bind(user.email.clone())
        .bind(micros(user.created_at))
        .bind(user.default_visibility.as_str())
        .execute(&self.inner.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::HandleTaken {
                handle: handle.to_owned(),
            });
        }
        Ok(user)
    }

    /// The member with this handle (case-insensitively).
    pub async fn user_by_handle(&self, handle: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE handle_key = $1"
        ))
        .bind(handle_key(handle))
        .fetch_optional(&self.inner.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The member with this id.
    pub async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.inner.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Changes a member's default visibility; returns the updated member
    /// ([`StoreError::NotFound`] if there is none).
    pub async fn update_settings(
        &self,
        user_id: UserId,
        default_visibility: Visibility,
    ) -> Result<User, StoreError> {
        self.inner.keys.forget_user(user_id);
        sqlx::query("UPDATE users SET default_visibility = $1 WHERE id = $2")
            .bind(default_visibility.as_str())
            .bind(user_id.to_string())
            .execute(&self.inner.pool)
            .await?;
        self.user_by_id(user_id)
            .await?
            .ok_or(StoreError::NotFound(Entity::User))
    }

    /// Records that a member accepted the terms at `at` (the first acceptance is kept).
    pub async fn accept_terms(
        &self,
        user_id: UserId,
        at: DateTime<Utc>,
    ) -> Result<User, StoreError> {
        self.inner.keys.forget_user(user_id);
        sqlx::query(
            "UPDATE users SET terms_accepted_at = $1 WHERE id = $2 AND terms_accepted_at IS NULL",
        )
        .bind(micros(at))
        .bind(user_id.to_string())
        .execute(&self.inner.pool)
        .await?;
        self.user_by_id(user_id)
            .await?
            .ok_or(StoreError::NotFound(Entity::User))
    }

    /// Deletes a member and everything of theirs, for good (a hard delete, in one transaction):
    /// the account, its API keys, the requests they made (whatever their visibility), and their
    /// providers with every manifest revision. Records of requests that others made and that
    /// their nodes served stay (they are the consumers'), with no trace of the member left: the
    /// serving operator and provider, in the columns and inside the stored record (also in its
    /// attempts), are emptied.
    ///
    /// Returns whether there was such a member.
    pub async fn delete_user(&self, user_id: UserId) -> Result<bool, StoreError> {
        self.inner.keys.forget_user(user_id);
        let id = user_id.to_string();
        let mut tx = self
            .inner
            .pool
            .begin_with(self.inner.backend.begin_write())
            .await?;
        sqlx::query("DELETE FROM records WHERE consumer_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let handle: Option<String> = sqlx::query("SELECT handle FROM users WHERE id = $1")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| get(&row, "handle"))
            .transpose()?;
        if let Some(handle) = handle {
            super::records::forget_operator_in(&mut tx, &id, &handle).await?;
        }
        sqlx::query(
            "DELETE FROM provider_revisions
             WHERE provider_id IN (SELECT id FROM providers WHERE operator_id = $1)",
        )
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM providers WHERE operator_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM api_keys WHERE user_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // Again after the commit: a lookup that raced the deletion remembers nothing.
        self.inner.keys.forget_user(user_id);
        Ok(deleted.rows_affected() > 0)
    }
}
