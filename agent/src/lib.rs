//! ballast-agent as a library: the pieces the binary wires together.
//!
//! - [`explain`]: offline analysis of pasted OOM reports (`ballast-agent explain`).

pub mod explain;
