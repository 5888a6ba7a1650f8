//! Which test executables a `cargo test --no-run --message-format=json` build made,
//! read from cargo's messages, and the two lanes `ballast-run-tests` runs them in.
//! Pure: text in, a plan out.

use std::path::{Path, PathBuf};

/// One test executable of the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBinary {
    /// The package's directory (where cargo runs its tests).
    pub package_dir: PathBuf,
    /// The target's source file, e.g. `tests/it/main.rs` or `src/lib.rs`.
    pub src_path: PathBuf,
    pub executable: PathBuf,
}

impl TestBinary {
    /// `<package dir>/<source>` relative to `root`, as a person names the binary.
    pub fn label(&self, root: &Path) -> String {
        let dir = self
            .package_dir
            .strip_prefix(root)
            .unwrap_or(&self.package_dir);
        let src = self
            .src_path
            .strip_prefix(&self.package_dir)
            .unwrap_or(&self.src_path);
        dir.join(src).display().to_string()
    }
}

/// The test executables named by cargo's JSON messages, in build order, each once.
/// Lines that are not JSON artifact messages (cargo prints others) are skipped.
pub fn test_binaries(cargo_json: &str) -> Vec<TestBinary> {
    let mut binaries: Vec<TestBinary> = Vec::new();
    for line in cargo_json.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
            continue;
        }
        let (Some(executable), Some(manifest), Some(src_path)) = (
            message["executable"].as_str(),
            message["manifest_path"].as_str(),
            message["target"]["src_path"].as_str(),
        ) else {
            continue;
        };
        let binary = TestBinary {
            package_dir: Path::new(manifest)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            src_path: PathBuf::from(src_path),
            executable: PathBuf::from(executable),
        };
        if !binaries.contains(&binary) {
            binaries.push(binary);
        }
    }
    binaries
}

/// Splits `binaries` into the ones whose label (relative to `root`) is in `alone`,
/// and the rest, both in build order.
pub fn split_lanes(
    binaries: Vec<TestBinary>,
    root: &Path,
    alone: &[String],
) -> (Vec<TestBinary>, Vec<TestBinary>) {
    binaries
        .into_iter()
        .partition(|binary| alone.iter().any(|label| *label == binary.label(root)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(manifest: &str, src: &str, exe: Option<&str>, test: bool) -> String {
        serde_json::json!({
            "reason": "compiler-artifact",
            "manifest_path": manifest,
            "target": {"src_path": src, "kind": ["lib"]},
            "profile": {"test": test},
            "executable": exe,
        })
        .to_string()
    }

    #[test]
    fn test_executables_are_read_once_in_build_order_and_split_into_lanes() {
        let lines = [
            "   Compiling ballast-model v0.1.0".to_string(),
            artifact("/r/agent/Cargo.toml", "/r/agent/src/lib.rs", None, false),
            artifact(
                "/r/agent/Cargo.toml",
                "/r/agent/src/lib.rs",
                Some("/t/a-1"),
                true,
            ),
            artifact(
                "/r/tests/Cargo.toml",
                "/r/tests/tests/it/main.rs",
                Some("/t/it-2"),
                true,
            ),
            artifact(
                "/r/agent/Cargo.toml",
                "/r/agent/src/lib.rs",
                Some("/t/a-1"),
                true,
            ),
            artifact(
                "/r/agent/Cargo.toml",
                "/r/agent/src/main.rs",
                Some("/t/a-3"),
                true,
            ),
            r#"{"reason":"build-finished","success":true}"#.to_string(),
        ];
        let binaries = test_binaries(&lines.join("\n"));
        let root = Path::new("/r");
        let labels: Vec<String> = binaries.iter().map(|b| b.label(root)).collect();
        assert_eq!(
            labels,
            [
                "agent/src/lib.rs",
                "tests/tests/it/main.rs",
                "agent/src/main.rs"
            ]
        );
        assert_eq!(binaries[0].package_dir, Path::new("/r/agent"));
        let (alone, rest) = split_lanes(binaries, root, &["tests/tests/it/main.rs".into()]);
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].executable, Path::new("/t/it-2"));
        assert_eq!(rest.len(), 2);
    }
}
