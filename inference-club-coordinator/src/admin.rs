//! Administration that needs no GitHub: adding members and creating their keys, on a running
//! coordinator ([`Coordinator::admin`](crate::Coordinator::admin)) or straight on its database
//! ([`Admin::open`]), as `club-coordinator user add` and `key create` do.

use futures_util::future::BoxFuture;

use crate::error::{Error, ErrorKind};
use crate::store::{Scopes, Store, database_url};

/// The errors of [`Admin`]'s operations.
pub type AdminError = Error;

/// A member, as [`Admin::add_user`] created it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// Their id.
    pub id: String,
    /// Their handle, as written.
    pub handle: String,
}

/// Member and key administration on a coordinator's database.
#[derive(Debug, Clone)]
pub struct Admin {
    store: Store,
}

impl Admin {
    pub(crate) fn new(store: Store) -> Self {
        Self { store }
    }

    /// Opens the database at `url` (bringing its schema up to date) for administration, without
    /// starting a coordinator. It may be in use by running coordinators.
    #[inline(never)]
    pub fn open(url: &str) -> BoxFuture<'static, Result<Self, AdminError>> {
        let url = database_url(url);
        Box::pin(async move { Ok(Self::new(Store::connect(&url).await?)) })
    }

    /// Brings the schema of the database at `url` up to date.
    #[inline(never)]
    pub fn migrate(url: &str) -> BoxFuture<'static, Result<(), AdminError>> {
        let url = database_url(url);
        Box::pin(async move {
            let store = Store::connect_without_migrating(&url).await?;
            store.migrate().await?;
            store.close().await;
            Ok(())
        })
    }

    /// Adds a member with `handle` (a GitHub login; unique case-insensitively). When they later
    /// sign in with GitHub under that login, it is the same account.
    #[inline(never)]
    pub fn add_user<'a>(
        &'a self,
        handle: &'a str,
        email: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Member, AdminError>> {
        Box::pin(async move {
            let user = self.store.create_user(handle, email).await?;
            Ok(Member {
                id: user.id.to_string(),
                handle: user.handle,
            })
        })
    }

    /// Creates a key named `name` with `scopes` for the member `handle`, and returns its secret:
    /// its only appearance (only a hash is stored).
    #[inline(never)]
    pub fn create_key<'a>(
        &'a self,
        handle: &'a str,
        name: &'a str,
        scopes: Scopes,
    ) -> BoxFuture<'a, Result<String, AdminError>> {
        Box::pin(async move {
            let Some(user) = self.store.user_by_handle(handle).await? else {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no member {handle:?}; add one first"),
                ));
            };
            let (_, secret) = self.store.create_key(user.id, name, scopes).await?;
            Ok(secret)
        })
    }

    /// Closes the database connections.
    #[inline(never)]
    pub fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.store.close())
    }
}
