//! Inference Club's vocabulary: the service manifest, the OpenAI wire types, the request record, the
//! [`Provider`](provider::Provider) trait, the messages between node and coordinator, and the routing
//! policy. This crate does no network I/O and needs no async runtime.
#![warn(missing_docs)]

pub mod link;
pub mod manifest;
pub mod openai;
pub mod provider;
pub mod record;
pub mod routing;
