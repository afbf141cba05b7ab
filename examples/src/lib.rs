//! The reference coordinator and the logic behind the binaries.

pub mod coordinator;
pub mod coordinator_cli;
pub mod provider_cli;
pub mod provider_ops;
