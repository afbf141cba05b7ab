//! The ids of stored things: time-ordered UUIDs (v7), stored in text form.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The id as a UUID.
            #[allow(dead_code)] // not every kind of id needs every conversion
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Reads an id from its UUID form.
            #[allow(dead_code)] // not every kind of id needs every conversion
            pub fn parse(text: &str) -> Option<Self> {
                Uuid::try_parse(text).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// The id of a member.
    UserId
);
id_type!(
    /// The id of an API key (not its secret, nor its prefix).
    KeyId
);
id_type!(
    /// The id of a provider (an operator's named node).
    ProviderId
);
