//! The collector's import rules (ARCHITECTURE.md, "Inside ballast-collector"), held on
//! its real sources: no import cycle among its files, and the layers' directions.

use std::path::PathBuf;

use crate::{module_graph, Graph};

fn collector() -> Graph {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../collector/src");
    module_graph(&src).expect("the collector's sources parse")
}

/// The files `from` (a file, or every file under a module when it ends in `::`)
/// imports that `allowed` does not accept.
pub(crate) fn breaches(graph: &Graph, from: &str, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    let prefix = from.strip_suffix("::");
    graph
        .edges
        .iter()
        .filter(|(node, _)| match prefix {
            Some(module) => *node == module || node.starts_with(from),
            None => *node == from,
        })
        .flat_map(|(node, targets)| {
            targets
                .iter()
                .filter(|target| !allowed(target))
                .map(move |target| format!("{node} -> {target}"))
        })
        .collect()
}

pub(crate) fn under(node: &str, module: &str) -> bool {
    node == module
        || node
            .strip_prefix(module)
            .is_some_and(|rest| rest.starts_with("::"))
}

#[test]
fn the_collector_has_no_import_cycle() {
    let graph = collector();
    assert!(
        graph.cycles().is_empty(),
        "import cycles among the collector's files (scripts/module-graph.sh collector):\n{}",
        graph.render()
    );
}

#[test]
fn only_the_top_of_the_collector_reads_the_whole_configuration() {
    let graph = collector();
    let importers: Vec<&str> = graph
        .edges
        .iter()
        .filter(|(_, targets)| targets.contains("config"))
        .map(|(node, _)| node.as_str())
        .collect();
    assert_eq!(importers, vec!["app", "main", "reload", "server"]);
}

#[test]
fn the_collectors_lower_layers_do_not_import_upwards() {
    let graph = collector();
    let storage = breaches(&graph, "storage::", |target| {
        under(target, "storage") || ["crate", "records"].contains(&target)
    });
    assert!(
        storage.is_empty(),
        "storage imports above itself: {storage:?}"
    );
    let reports = breaches(&graph, "reports::", |target| {
        !under(target, "dashboard") && !under(target, "api") && target != "state"
    });
    assert!(
        reports.is_empty(),
        "reports import the web layer: {reports:?}"
    );
    let metrics = breaches(&graph, "metrics", |target| {
        !under(target, "api") && target != "state" && target != "app"
    });
    assert!(
        metrics.is_empty(),
        "metrics imports the web layer: {metrics:?}"
    );
    let state = breaches(&graph, "state", |target| {
        target != "app" && !under(target, "api") && target != "dashboard"
    });
    assert!(state.is_empty(), "state imports handlers: {state:?}");
}

/// The product source files of the collector outside `storage/` (test files and
/// `#[cfg(test)] mod tests` blocks cut off), with their text.
fn sources_outside_storage() -> Vec<(PathBuf, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|entry| entry.expect("dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if name != "storage" {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" && name != "test_fixtures.rs" {
                let text = std::fs::read_to_string(&path).expect("read");
                let product = match text.find("#[cfg(test)]\nmod tests") {
                    Some(end) => text[..end].to_string(),
                    None => text,
                };
                out.push((path, product));
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../collector/src"),
        &mut out,
    );
    out
}

#[test]
fn every_sql_statement_and_engine_decision_of_the_collector_is_in_storage() {
    let sources = sources_outside_storage();
    assert!(sources.len() > 30, "found {} files", sources.len());
    let mut breaches = Vec::new();
    for (path, text) in &sources {
        for (number, line) in text.lines().enumerate() {
            let sql = [
                "\"SELECT ",
                "\"INSERT ",
                "\"UPDATE ",
                "\"DELETE ",
                "\"WITH ",
            ]
            .iter()
            .any(|start| line.contains(start));
            if sql || line.contains("Engine::") {
                breaches.push(format!(
                    "{}:{}: {}",
                    path.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(breaches.is_empty(), "outside storage/: {breaches:#?}");
}
