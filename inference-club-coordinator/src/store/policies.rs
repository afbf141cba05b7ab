//! What operators and members decide through the API rather than in a manifest: access
//! overrides and the kill switch of a provider, and each member's routing preference.
//!
//! An override wins over the manifest: for a service, its own override, else the node-wide
//! override, else the manifest's policy (the service's, else the agent's, else `members`).

use std::collections::BTreeMap;

use inference_club_core::manifest::AccessPolicy;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

use super::error::Entity;
use super::sql::get;
use super::{ProviderId, Store, StoreError, User, UserId};

/// Where a member's requests may go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingPreference {
    /// Any node that admits them (the default).
    #[default]
    Any,
    /// Their own nodes first when one has room, else any node.
    PreferOwn,
    /// Only their own nodes.
    OnlyOwn,
}

impl RoutingPreference {
    /// Every preference, in display order.
    pub const ALL: [RoutingPreference; 3] = [Self::Any, Self::PreferOwn, Self::OnlyOwn];

    /// The wire name: `any`, `prefer_own`, `only_own`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::PreferOwn => "prefer_own",
            Self::OnlyOwn => "only_own",
        }
    }
}

impl std::fmt::Display for RoutingPreference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a routing preference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("routing_preference must be one of any, prefer_own, only_own; got {0:?}")]
pub struct UnknownPreference(pub String);

impl std::str::FromStr for RoutingPreference {
    type Err = UnknownPreference;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPreference(s.to_owned()))
    }
}

/// What an operator set for a provider through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderPolicy {
    /// False while the kill switch is on: nothing is routed to the provider.
    pub accepting: bool,
    /// The node-wide access override, if any.
    pub access: Option<AccessPolicy>,
    /// Per-service access overrides, by service name.
    pub services: BTreeMap<String, AccessPolicy>,
}

impl Default for ProviderPolicy {
    fn default() -> Self {
        Self {
            accepting: true,
            access: None,
            services: BTreeMap::new(),
        }
    }
}

/// The columns of `providers` (aliased `p`) that hold its policy.
const POLICY_COLUMNS: &str = "p.accepting, p.access_override, p.service_access";

/// The policy in a row selected with [`POLICY_COLUMNS`].
pub(crate) fn policy_from_row(row: &AnyRow) -> Result<ProviderPolicy, StoreError> {
    let accepting: i64 = get(row, "accepting")?;
    let access: Option<String> = get(row, "access_override")?;
    let services: Option<String> = get(row, "service_access")?;
    Ok(ProviderPolicy {
        accepting: accepting != 0,
        access: access
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|error| StoreError::corrupt("access_override", error))?,
        services: services
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|error| StoreError::corrupt("service_access", error))?
            .unwrap_or_default(),
    })
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| StoreError::invalid("policy", error.to_string()))
}

impl Store {
    /// The policy of a provider ([`StoreError::NotFound`] if there is none).
    pub async fn provider_policy(
        &self,
        provider_id: ProviderId,
    ) -> Result<ProviderPolicy, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {POLICY_COLUMNS} FROM providers p WHERE p.id = $1"
        ))
        .bind(provider_id.to_string())
        .fetch_optional(&self.inner.pool)
        .await?
        .ok_or(StoreError::NotFound(Entity::Provider))?;
        policy_from_row(&row)
    }

    /// Replaces a provider's policy ([`StoreError::NotFound`] if there is no such provider).
    pub async fn set_provider_policy(
        &self,
        provider_id: ProviderId,
        policy: &ProviderPolicy,
    ) -> Result<(), StoreError> {
        let access = policy.access.as_ref().map(to_json).transpose()?;
        let services = (!policy.services.is_empty())
            .then(|| to_json(&policy.services))
            .transpose()?;
        let updated = sqlx::query(
            "UPDATE providers SET accepting = $1, access_override = $2, service_access = $3
             WHERE id = $4",
        )
        .bind(i64::from(policy.accepting))
        .bind(access)
        .bind(services)
        .bind(provider_id.to_string())
        .execute(&self.inner.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(Entity::Provider));
        }
        Ok(())
    }

    /// Changes a member's routing preference; returns the updated member
    /// ([`StoreError::NotFound`] if there is none).
    pub async fn set_routing_preference(
        &self,
        user_id: UserId,
        preference: RoutingPreference,
    ) -> Result<User, StoreError> {
        self.inner.keys.forget_user(user_id);
        sqlx::query("UPDATE users SET routing_preference = $1 WHERE id = $2")
            .bind(preference.as_str())
            .bind(user_id.to_string())
            .execute(&self.inner.pool)
            .await?;
        self.inner.keys.forget_user(user_id);
        self.user_by_id(user_id)
            .await?
            .ok_or(StoreError::NotFound(Entity::User))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preferences_parse_and_print() {
        for preference in RoutingPreference::ALL {
            assert_eq!(preference.as_str().parse(), Ok(preference));
            assert_eq!(
                serde_json::to_value(preference).unwrap(),
                serde_json::json!(preference.as_str())
            );
        }
        assert!("mine".parse::<RoutingPreference>().is_err());
    }
}
