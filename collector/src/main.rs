//! ballast-collector binary (work in progress).
fn main() {}
