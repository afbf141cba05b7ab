//! Inference Club core.
#![warn(missing_docs)]

pub mod manifest;
