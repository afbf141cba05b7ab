//! The reference coordinator and the logic behind the binaries.
