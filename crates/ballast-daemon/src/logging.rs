//! The tracing set-up of both daemons: logs on stderr (colour only on a terminal), a
//! filter chosen once at start-up and changeable later through the returned handle
//! (the agent's SIGHUP applies a new `log_level`).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Changes the running log filter.
pub type FilterHandle = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// The filter from environment variable `env_var` when it is set and not blank, else
/// `fallback`; a filter that does not parse is `info`.
pub fn filter_from(env_var: &str, fallback: &str) -> EnvFilter {
    filter_or(env_filter(env_var).as_deref(), fallback)
}

/// The filter environment variable `env_var` asks for: its value when it is set and
/// not blank (the one rule for "the environment overrides the configuration").
pub fn env_filter(env_var: &str) -> Option<String> {
    std::env::var(env_var)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// The filter `spec` (from [`env_filter`]) when there is one, else `fallback`; a filter
/// that does not parse is `info`.
pub fn filter_or(spec: Option<&str>, fallback: &str) -> EnvFilter {
    EnvFilter::try_new(spec.unwrap_or(fallback)).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber with `filter`; returns the handle that changes it.
pub fn init(filter: EnvFilter) -> FilterHandle {
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    handle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_variable_falls_back_and_a_bad_filter_is_info() {
        let unset = "BALLAST_DAEMON_TEST_UNSET_VARIABLE";
        assert_eq!(filter_from(unset, "debug").to_string(), "debug");
        assert_eq!(filter_from(unset, "=[bad").to_string(), "info");
        assert_eq!(env_filter(unset), None);
    }

    #[test]
    fn a_filter_from_the_environment_wins_over_the_fallback() {
        assert_eq!(filter_or(Some("warn"), "debug").to_string(), "warn");
        assert_eq!(filter_or(None, "debug").to_string(), "debug");
    }
}
