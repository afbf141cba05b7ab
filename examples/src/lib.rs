//! The reference coordinator and the logic behind the binaries.

pub mod provider_cli;
