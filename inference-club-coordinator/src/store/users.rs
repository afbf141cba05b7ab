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
    /// When the member confirmed they are 18 or older, if they have.
    pub age_confirmed_at: Option<DateTime<Utc>>,
    /// Their GitHub account's numeric id, once they signed in with GitHub (`None` for members
    /// an admin added who have not signed in yet).
    pub github_id: Option<i64>,
    /// Where their requests may go.
    pub routing_preference: RoutingPreference,
}

/// Who GitHub says a member is: what sign-in keeps of a GitHub account, and nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubIdentity {
    /// GitHub's numeric user id: stable across renames, so accounts are found by it.
    pub id: i64,
    /// The GitHub login (the member's handle).
    pub login: String,
    /// The primary verified e-mail address, if GitHub gave one.
    pub email: Option<String>,
}

const USER_COLUMNS: &str = "id, handle, email, created_at, default_visibility, terms_accepted_at, \
                            age_confirmed_at, github_id, routing_preference";

pub(crate) fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: get_uuid(row, "id")?.into(),
        handle: get(row, "handle")?,
        email: get(row, "email")?,
        created_at: from_micros("created_at", get(row, "created_at")?)?,
        default_visibility: get_parsed(row, "default_visibility")?,
        terms_accepted_at: from_micros_opt("terms_accepted_at", get(row, "terms_accepted_at")?)?,
        age_confirmed_at: from_micros_opt("age_confirmed_at", get(row, "age_confirmed_at")?)?,
        github_id: get(row, "github_id")?,
        routing_preference: get_parsed(row, "routing_preference")?,
    })
}

fn check_handle(handle: &str) -> Result<(), StoreError> {
    if is_github_login(handle) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "handle",
            format!(
                "{handle:?} is not a GitHub login (1 to 39 letters, digits or single inner hyphens)"
            ),
        ))
    }
}

fn check_email(email: Option<&str>) -> Result<Option<&str>, StoreError> {
    let email = email.map(str::trim).filter(|e| !e.is_empty());
    if let Some(email) = email
        && (email.len() > MAX_EMAIL_LEN || !email.contains('@'))
    {
        return Err(StoreError::invalid(
            "email",
            format!("{email:?} is not an e-mail address"),
        ));
    }
    Ok(email)
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
        check_handle(handle)?;
        let email = check_email(email)?;
        let user = User {
            id: UserId::new(),
            handle: handle.to_owned(),
            email: email.map(str::to_owned),
            created_at: now(),
            default_visibility: Visibility::default(),
            terms_accepted_at: None,
            age_confirmed_at: None,
            github_id: None,
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

    #[cfg(feature = "testing")]
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
    /// the account, its API keys and browser sessions, sign-in flows parked for their GitHub
    /// account, the requests they made (whatever their visibility), and their
    /// providers with every manifest revision. Records of requests that others made and that
    /// their nodes served stay (they are the consumers'), with no trace of the member left: the
    /// serving operator and provider, in the columns and inside the stored record (also in its
    /// attempts), are emptied.
    ///
    /// Returns whether there was such a member.
    pub async fn delete_user(&self, user_id: UserId) -> Result<bool, StoreError> {
        self.inner.keys.forget_user(user_id);
        // Held record writes land first, so that the deletion sees (and removes) them.
        self.flush_records().await?;
        let id = user_id.to_string();
        let mut tx = self
            .inner
            .pool
            .begin_with(self.inner.backend.begin_write())
            .await?;
        sqlx::query(
            "DELETE FROM blobs WHERE record_id IN (SELECT id FROM records WHERE consumer_id = $1)",
        )
        .bind(&id)
        .execute(&mut *tx)
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
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM sign_in_flows
             WHERE github_id IN (SELECT github_id FROM users WHERE id = $1)",
        )
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

    /// The member signed in with this GitHub account, if any.
    pub async fn user_by_github_id(&self, github_id: i64) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE github_id = $1"
        ))
        .bind(github_id)
        .fetch_optional(&self.inner.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Follows a GitHub rename: sets the member's handle and e-mail to what GitHub says now.
    /// [`StoreError::HandleTaken`] when another account holds the new handle (changing nothing).
    pub async fn update_github_identity(
        &self,
        user_id: UserId,
        identity: &GitHubIdentity,
    ) -> Result<User, StoreError> {
        check_handle(&identity.login)?;
        let email = check_email(identity.email.as_deref())?;
        self.inner.keys.forget_user(user_id);
        let mut tx = self
            .inner
            .pool
            .begin_with(self.inner.backend.begin_write())
            .await?;
        let holder = sqlx::query("SELECT id FROM users WHERE handle_key = $1 AND id <> $2")
            .bind(handle_key(&identity.login))
            .bind(user_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if holder.is_some() {
            return Err(StoreError::HandleTaken {
                handle: identity.login.clone(),
            });
        }
        sqlx::query(
            "UPDATE users SET handle = $1, handle_key = $2, email = $3, github_id = $4 WHERE id = $5",
        )
        .bind(&identity.login)
        .bind(handle_key(&identity.login))
        .bind(email.map(str::to_owned))
        .bind(identity.id)
        .bind(user_id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.inner.keys.forget_user(user_id);
        self.user_by_id(user_id)
            .await?
            .ok_or(StoreError::NotFound(Entity::User))
    }

    /// The account of a GitHub identity whose owner just confirmed, at `confirmed_at`, that they
    /// are 18 or older and accept the terms: keeps only the handle, the e-mail, the GitHub id and
    /// those confirmation times.
    ///
    /// The account already signed in with this GitHub id is updated (a race of two sign-ins);
    /// an account an admin added under the same handle, not yet linked to GitHub, is linked;
    /// otherwise a new account is created. [`StoreError::HandleTaken`] when the handle belongs
    /// to another GitHub account (renamed since; its owner's next sign-in frees the handle).
    pub async fn create_github_member(
        &self,
        identity: &GitHubIdentity,
        confirmed_at: DateTime<Utc>,
    ) -> Result<User, StoreError> {
        check_handle(&identity.login)?;
        let email = check_email(identity.email.as_deref())?.map(str::to_owned);
        let key = handle_key(&identity.login);
        let at = micros(confirmed_at);
        let mut tx = self
            .inner
            .pool
            .begin_with(self.inner.backend.begin_write())
            .await?;
        let by_github = sqlx::query("SELECT id FROM users WHERE github_id = $1")
            .bind(identity.id)
            .fetch_optional(&mut *tx)
            .await?;
        let by_handle = sqlx::query("SELECT id, github_id FROM users WHERE handle_key = $1")
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?;
        let id = match (by_github, by_handle) {
            (Some(row), holder) => {
                let id: String = get(&row, "id")?;
                if let Some(holder) = holder
                    && get::<String>(&holder, "id")? != id
                {
                    return Err(StoreError::HandleTaken {
                        handle: identity.login.clone(),
                    });
                }
                id
            }
            (None, Some(holder)) => {
                let linked: Option<i64> = get(&holder, "github_id")?;
                if linked.is_some() {
                    return Err(StoreError::HandleTaken {
                        handle: identity.login.clone(),
                    });
                }
                get(&holder, "id")?
            }
            (None, None) => {
                let id = UserId::new().to_string();
                sqlx::query(
                    "INSERT INTO users (id, handle, handle_key, email, created_at, default_visibility)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&id)
                .bind(&identity.login)
                .bind(&key)
                .bind(email.clone())
                .bind(micros(now()))
                .bind(Visibility::default().as_str())
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        sqlx::query(
            "UPDATE users SET handle = $1, handle_key = $2, email = $3, github_id = $4,
                    terms_accepted_at = COALESCE(terms_accepted_at, $5),
                    age_confirmed_at = COALESCE(age_confirmed_at, $5)
             WHERE id = $6",
        )
        .bind(&identity.login)
        .bind(&key)
        .bind(email)
        .bind(identity.id)
        .bind(at)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let user = user_from_row(&row)?;
        self.inner.keys.forget_user(user.id);
        Ok(user)
    }
}
