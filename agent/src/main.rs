//! ballast-agent binary (work in progress).
fn main() {}
