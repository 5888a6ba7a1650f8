//! Reading a daemon's YAML configuration file: an empty file is the defaults, a file
//! that cannot be read or parsed is an error naming the file (and, for YAML errors,
//! the line and column serde_yaml_ng reports). Validation of the values is each
//! daemon's own (its `config` module).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration file gave no configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("Failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Parses YAML text; `path` only names the source in errors. Blank text is `T::default()`.
pub fn parse_yaml<T: DeserializeOwned + Default>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigFileError> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_yaml_ng::from_str(text).map_err(|error| ConfigFileError::Parse {
        path: path.to_path_buf(),
        message: error.to_string(),
    })
}

/// Reads `path` and parses it with [`parse_yaml`]; returns the text too, for checks
/// that look at how a value was written (deprecated forms).
pub fn read_yaml<T: DeserializeOwned + Default>(
    path: &Path,
) -> Result<(T, String), ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value = parse_yaml(&text, path)?;
    Ok((value, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        poll_secs: u64,
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let parsed: Sample = parse_yaml("  \n# nothing\n", Path::new("x.yaml"))
            .unwrap_or_else(|error| panic!("blank text must parse: {error}"));
        assert_eq!(parsed, Sample::default());
    }

    #[test]
    fn a_parse_error_names_the_file_and_the_line() {
        let error = parse_yaml::<Sample>("poll_secs: 5\npol_secs: 3\n", Path::new("/etc/b.yaml"))
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.starts_with("/etc/b.yaml: "), "{error}");
        assert!(error.contains("pol_secs"), "{error}");
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
        let path = dir.path().join("absent.yaml");
        let error = read_yaml::<Sample>(&path)
            .err()
            .map(|error| error.to_string());
        assert_eq!(error, Some(format!("Failed to read {}", path.display())));
    }

    #[test]
    fn a_file_reads_with_its_text() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, "poll_secs: 7\n").unwrap_or_else(|error| panic!("{error}"));
        let (parsed, text) = read_yaml::<Sample>(&path).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(parsed, Sample { poll_secs: 7 });
        assert_eq!(text, "poll_secs: 7\n");
    }
}
