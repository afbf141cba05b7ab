//! Inference Club core.
#![warn(missing_docs)]
