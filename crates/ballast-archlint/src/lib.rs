//! ballast-archlint: the file-level import graph of one crate's `src/` and its cycles.
//!
//! A node is a source file, named by its module path (`api::ingest`, `storage`; the
//! library root is `crate`, a binary root beside a library is `main`). An edge `a -> b`
//! says that file `a` names something that file `b` defines, through `crate::`,
//! `super::`, `self::`, a child module's name, an imported name, or (from `main.rs`) the
//! crate's own name. A `pub use` is followed to the file that defines the item. Test code
//! (`#[cfg(test)]` items and modules, `#[test]` functions, `mod tests`) is left out;
//! comments never count. `mod x;` declarations are structure, not edges.
//!
//! Test support only: the import lint of the collector's and the agent's tests
//! (`collector_rules`, `agent_rules`) and `scripts/module-graph.sh` use it; no product
//! binary links it.

mod error;
mod graph;
mod resolve;
mod tree;

use std::path::Path;

pub use error::Error;
pub use graph::Graph;

/// The import graph of the crate whose sources are in `src` (the directory holding
/// `lib.rs` and/or `main.rs`). The crate's own name (how `main.rs` names the library) is
/// read from `src/../Cargo.toml`.
pub fn module_graph(src: &Path) -> Result<Graph, Error> {
    let name = crate_name(src);
    module_graph_named(src, name.as_deref())
}

/// As [`module_graph`], with the crate's name (underscores) given.
pub fn module_graph_named(src: &Path, crate_name: Option<&str>) -> Result<Graph, Error> {
    let tree = tree::Tree::load(src)?;
    Ok(resolve::edges(&tree, crate_name))
}

/// `name = "..."` of the `[package]` table in `src/../Cargo.toml`, dashes as underscores.
fn crate_name(src: &Path) -> Option<String> {
    let manifest = std::fs::read_to_string(src.parent()?.join("Cargo.toml")).ok()?;
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if !in_package {
            continue;
        }
        if let Some(value) = line.strip_prefix("name") {
            let value = value
                .trim_start()
                .strip_prefix('=')?
                .trim()
                .trim_matches('"');
            return Some(value.replace('-', "_"));
        }
    }
    None
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod collector_rules;

#[cfg(test)]
mod agent_rules;

#[cfg(test)]
mod size_rules;
