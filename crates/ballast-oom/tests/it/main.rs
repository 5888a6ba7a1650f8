//! The parser's integration tests, one test binary (`cargo test -p ballast-oom --test it`;
//! one module per area: `--test it properties::` runs one). The parser is pure, so the
//! tests share the process freely.

mod common;

mod counterfactual;
mod envelopes;
mod fixtures;
mod grep_context;
mod hostile;
mod properties;
mod stream;
