//! What `ballast-agent` and `ballast-collector` share at their edges, written once:
//! reading a YAML configuration file ([`config_file`]), one log line for an error and
//! its causes ([`error_chain`]), the tracing set-up ([`logging`]), systemd
//! notifications ([`systemd`]) and scrape-time metric families ([`exposition`]). No product logic lives here.

pub mod config_file;
pub mod exposition;
pub mod logging;
pub mod systemd;

mod chain;

pub use chain::error_chain;
