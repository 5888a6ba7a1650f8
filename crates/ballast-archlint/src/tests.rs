//! The graph of small crates written to a temporary directory.

use std::path::Path;

use super::module_graph_named;

/// Writes `files` (path relative to `src/`, text) and returns the directory.
fn crate_of(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

fn graph_lines(src: &Path) -> Vec<String> {
    let graph = module_graph_named(src, Some("demo")).expect("graph");
    graph.render().lines().map(str::to_owned).collect()
}

#[test]
fn an_import_circle_through_crate_super_and_a_child_name_is_one_cycle() {
    let src = crate_of(&[
        ("lib.rs", "pub mod api;\npub mod config;\npub mod storage;\n"),
        (
            "api/mod.rs",
            "pub mod ingest;\npub struct AppState;\npub fn app() { ingest::handle(); }\n",
        ),
        (
            "api/ingest.rs",
            "use crate::storage::Store;\npub fn handle() { let _ = Store::open(); }\n",
        ),
        (
            "storage/mod.rs",
            "pub struct Store;\nimpl Store { pub fn open() -> crate::config::Settings { todo!() } }\n",
        ),
        (
            "config.rs",
            "pub struct Settings { state: Option<super::api::AppState> }\n",
        ),
    ]);
    let graph = module_graph_named(src.path(), Some("demo")).expect("graph");
    assert_eq!(
        graph.cycles(),
        vec![vec!["api", "api::ingest", "config", "storage"]],
        "{}",
        graph.render()
    );
    let lines = graph_lines(src.path());
    assert!(
        lines.contains(&"api -> api::ingest".to_owned()),
        "{lines:?}"
    );
    assert!(lines.contains(&"crate ->".to_owned()), "{lines:?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("5 files, 4 edges, 1 cycles (sizes 4)")
    );
}

#[test]
fn a_layered_crate_has_no_cycle_and_test_code_comments_and_mod_lines_do_not_count() {
    let src = crate_of(&[
        ("lib.rs", "pub mod app;\npub mod state;\npub mod storage;\n"),
        (
            "app.rs",
            "use crate::state::AppState;\npub fn router(_: AppState) {}\n",
        ),
        (
            "state.rs",
            "//! Uses crate::app::router in prose only.\n\
             /// See [`crate::app::router`].\n\
             pub struct AppState(pub crate::storage::Store);\n\
             // crate::app::router();\n\
             #[cfg(test)]\nmod helpers { use crate::app::router; }\n\
             mod tests { fn t() { crate::app::router(todo!()); } }\n\
             #[test]\nfn not_compiled() { crate::app::router(todo!()); }\n",
        ),
        ("storage/mod.rs", "pub struct Store;\n"),
    ]);
    let graph = module_graph_named(src.path(), Some("demo")).expect("graph");
    assert!(graph.cycles().is_empty(), "{}", graph.render());
    let lines = graph_lines(src.path());
    assert_eq!(
        lines,
        vec![
            "app -> state",
            "crate ->",
            "state -> storage",
            "storage ->",
            "4 files, 2 edges, 0 cycles"
        ]
    );
}

#[test]
fn a_re_export_is_followed_to_the_defining_file_and_main_names_the_crate() {
    let src = crate_of(&[
        (
            "lib.rs",
            "pub mod api;\npub mod state;\npub mod dashboard;\n",
        ),
        ("api/mod.rs", "mod error;\npub use error::AppError;\n"),
        ("api/error.rs", "pub struct AppError;\n"),
        ("state.rs", "pub struct AppState;\n"),
        (
            "dashboard.rs",
            "use crate::api;\npub fn page() -> Result<(), api::AppError> { Ok(()) }\n\
             pub fn html() { format!(\"{}\", crate::state::AppState); }\n\
             macro_rules! m { () => {} }\nfn t() { some_macro!(x, crate::state::AppState); }\n",
        ),
        (
            "main.rs",
            "use demo::dashboard;\nfn main() { dashboard::page().ok(); }\n",
        ),
    ]);
    let lines = graph_lines(src.path());
    assert!(
        lines.contains(&"dashboard -> api::error, state".to_owned()),
        "{lines:?}"
    );
    assert!(lines.contains(&"api -> api::error".to_owned()), "{lines:?}");
    assert!(lines.contains(&"main -> dashboard".to_owned()), "{lines:?}");
}

#[test]
fn a_crate_without_roots_or_with_bad_rust_is_an_error_naming_the_file() {
    let empty = crate_of(&[("other.rs", "")]);
    let err = module_graph_named(empty.path(), None).expect_err("no root");
    assert!(
        err.to_string().contains("neither lib.rs nor main.rs"),
        "{err}"
    );
    let broken = crate_of(&[("lib.rs", "pub mod a;\n"), ("a.rs", "fn (\n")]);
    let err = module_graph_named(broken.path(), None).expect_err("bad rust");
    assert!(err.to_string().contains("a.rs:1:"), "{err}");
}
