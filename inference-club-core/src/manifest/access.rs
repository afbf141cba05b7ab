//! Access policy: who may use a node's services (an Inference Club addition to the manifest).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{Agent, Service};

/// Who may send requests to a service.
///
/// In YAML: `access: owner`, `access: members`, or `access: {logins: [alice, bob]}`.
/// The node's owner is always admitted; anonymous consumers never are.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessPolicy {
    /// Only the member who owns the node.
    Owner,
    /// Any signed-in member. The default.
    #[default]
    Members,
    /// The owner and these GitHub logins (compared case-insensitively).
    Logins(Vec<String>),
}

/// The policy that applies when neither the service nor the agent sets one.
pub static DEFAULT_ACCESS: AccessPolicy = AccessPolicy::Members;

impl AccessPolicy {
    /// The names of the policies written as a plain word.
    pub const WORDS: &'static [&'static str] = &["owner", "members"];

    /// Whether `consumer` (a GitHub login, `None` when anonymous) may use a service owned by `owner`.
    pub fn admits(&self, owner: &str, consumer: Option<&str>) -> bool {
        let Some(consumer) = consumer else {
            return false;
        };
        if consumer.eq_ignore_ascii_case(owner) {
            return true;
        }
        match self {
            Self::Owner => false,
            Self::Members => true,
            Self::Logins(logins) => logins
                .iter()
                .any(|login| login.eq_ignore_ascii_case(consumer)),
        }
    }
}

/// The policy in force for `service`: its own, else the agent's, else [`DEFAULT_ACCESS`] (members).
pub fn effective_access<'a>(agent: &'a Agent, service: &'a Service) -> &'a AccessPolicy {
    service
        .access
        .as_ref()
        .or(agent.access.as_ref())
        .unwrap_or(&DEFAULT_ACCESS)
}

/// Whether `login` is shaped like a GitHub login: 1 to 39 ASCII letters, digits or single hyphens,
/// neither starting nor ending with a hyphen.
pub fn is_github_login(login: &str) -> bool {
    let shaped = (1..=39).contains(&login.len())
        && login.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    shaped && !login.starts_with('-') && !login.ends_with('-') && !login.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logins(names: &[&str]) -> AccessPolicy {
        AccessPolicy::Logins(names.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn owner_is_always_admitted_case_insensitively() {
        for policy in [AccessPolicy::Owner, AccessPolicy::Members, logins(&[])] {
            assert!(policy.admits("Alice", Some("alice")));
        }
    }

    #[test]
    fn anonymous_is_never_admitted() {
        for policy in [AccessPolicy::Owner, AccessPolicy::Members, logins(&["bob"])] {
            assert!(!policy.admits("alice", None));
        }
    }

    #[test]
    fn each_policy_admits_its_members() {
        assert!(!AccessPolicy::Owner.admits("alice", Some("bob")));
        assert!(AccessPolicy::Members.admits("alice", Some("bob")));
        assert!(logins(&["Bob"]).admits("alice", Some("bOB")));
        assert!(!logins(&["bob"]).admits("alice", Some("carol")));
    }

    #[test]
    fn service_overrides_agent_overrides_default() {
        let mut agent = Agent::default();
        let mut service = Service::default();
        assert_eq!(effective_access(&agent, &service), &AccessPolicy::Members);
        agent.access = Some(AccessPolicy::Owner);
        assert_eq!(effective_access(&agent, &service), &AccessPolicy::Owner);
        service.access = Some(logins(&["bob"]));
        assert_eq!(effective_access(&agent, &service), &logins(&["bob"]));
    }

    #[test]
    fn yaml_shapes_read_well() {
        let word: AccessPolicy = serde_json::from_str("\"owner\"").unwrap();
        assert_eq!(word, AccessPolicy::Owner);
        let list: AccessPolicy = serde_json::from_str(r#"{"logins": ["alice"]}"#).unwrap();
        assert_eq!(list, logins(&["alice"]));
        assert_eq!(
            serde_json::to_string(&AccessPolicy::Members).unwrap(),
            "\"members\""
        );
    }

    #[test]
    fn github_logins() {
        assert!(is_github_login("octo-cat"));
        assert!(is_github_login("a"));
        assert!(!is_github_login(""));
        assert!(!is_github_login("-a"));
        assert!(!is_github_login("a--b"));
        assert!(!is_github_login("a b"));
        assert!(!is_github_login(&"a".repeat(40)));
    }
}
