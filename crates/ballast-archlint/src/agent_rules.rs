//! The agent's import rules (ARCHITECTURE.md, "Inside ballast-agent"), held on its real
//! sources: no import cycle among its files, and the pure parts below the daemon.

use std::path::PathBuf;

use crate::collector_rules::{breaches, under};
use crate::{module_graph, Graph};

fn agent() -> Graph {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../agent/src");
    module_graph(&src).expect("the agent's sources parse")
}

#[test]
fn the_agent_has_no_import_cycle() {
    let graph = agent();
    assert!(graph.edges.len() > 80, "found {} files", graph.edges.len());
    assert!(
        graph.cycles().is_empty(),
        "import cycles among the agent's files (scripts/module-graph.sh agent):\n{}",
        graph.render()
    );
}

#[test]
fn the_agents_pure_parts_do_not_import_the_daemon_or_the_delivery_path() {
    let graph = agent();
    let pure = [
        "history",
        "fleet",
        "enrich",
        "wire",
        "elastic::",
        "pressure::",
    ];
    let core = |target: &str| {
        pure.contains(&target)
            || [
                "hostmem",
                "hypervisor",
                "capture",
                "pressure",
                "guard",
                "elastic",
            ]
            .iter()
            .any(|module| under(target, module))
    };
    for module in pure {
        let found = breaches(&graph, module, core);
        assert!(found.is_empty(), "{module} imports above itself: {found:?}");
    }
    let pressure = breaches(&graph, "pressure::", |target| {
        under(target, "pressure") || under(target, "hypervisor") || target == "wire"
    });
    assert!(
        pressure.is_empty(),
        "pressure imports beyond itself, the hypervisor types and wire: {pressure:?}"
    );
    let guard = breaches(&graph, "guard::", |target| {
        under(target, "guard")
            || under(target, "pressure")
            || under(target, "hypervisor")
            || target == "wire"
    });
    assert!(
        guard.is_empty(),
        "the guard's decision imports beyond itself, pressure, the hypervisor types and wire: {guard:?}"
    );
    let capture = breaches(&graph, "capture::", |target| {
        under(target, "capture") || under(target, "hypervisor") || under(target, "pressure")
    });
    assert!(
        capture.is_empty(),
        "capture imports beyond itself and the hypervisor: {capture:?}"
    );
    let spool = breaches(&graph, "spool::", |target| {
        under(target, "spool") || target == "wire"
    });
    assert!(
        spool.is_empty(),
        "the spool imports the sender or the monitor: {spool:?}"
    );
}
