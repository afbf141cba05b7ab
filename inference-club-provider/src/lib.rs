//! Inference Club provider.
#![warn(missing_docs)]
