//! Inference Club client.
#![warn(missing_docs)]
