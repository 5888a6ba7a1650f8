//! The graph itself: nodes, edges, strongly connected components, the printed listing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// File-level import graph: every node (file) with the files it names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Graph {
    /// Node -> the nodes it imports (never itself). Every node is a key.
    pub edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    /// Adds a node with no edges (if absent).
    pub fn add_node(&mut self, node: &str) {
        self.edges.entry(node.to_owned()).or_default();
    }

    /// Adds `from -> to` (both become nodes); a self edge is dropped.
    pub fn add_edge(&mut self, from: &str, to: &str) {
        self.add_node(to);
        let targets = self.edges.entry(from.to_owned()).or_default();
        if from != to {
            targets.insert(to.to_owned());
        }
    }

    /// Number of edges.
    pub fn edge_count(&self) -> usize {
        self.edges.values().map(BTreeSet::len).sum()
    }

    /// The import cycles: strongly connected components of more than one node, each
    /// sorted, largest first (then by name).
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let mut cycles: Vec<Vec<String>> = Tarjan::run(self)
            .into_iter()
            .filter(|component| component.len() > 1)
            .map(|mut component| {
                component.sort();
                component
            })
            .collect();
        cycles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        cycles
    }

    /// `a -> b, c` lines (sorted), then `cycle: a b c` lines, then a count line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (node, targets) in &self.edges {
            let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
            if targets.is_empty() {
                let _ = writeln!(out, "{node} ->");
            } else {
                let _ = writeln!(out, "{node} -> {}", targets.join(", "));
            }
        }
        let cycles = self.cycles();
        for cycle in &cycles {
            let _ = writeln!(out, "cycle: {}", cycle.join(" "));
        }
        let sizes: Vec<String> = cycles.iter().map(|c| c.len().to_string()).collect();
        let _ = writeln!(
            out,
            "{} files, {} edges, {} cycles{}",
            self.edges.len(),
            self.edge_count(),
            cycles.len(),
            if sizes.is_empty() {
                String::new()
            } else {
                format!(" (sizes {})", sizes.join(", "))
            }
        );
        out
    }
}

/// Tarjan's strongly connected components over the graph's nodes.
struct Tarjan<'g> {
    graph: &'g Graph,
    index: BTreeMap<&'g str, usize>,
    low: BTreeMap<&'g str, usize>,
    stack: Vec<&'g str>,
    on_stack: BTreeSet<&'g str>,
    next: usize,
    components: Vec<Vec<String>>,
}

impl<'g> Tarjan<'g> {
    fn run(graph: &'g Graph) -> Vec<Vec<String>> {
        let mut tarjan = Tarjan {
            graph,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            next: 0,
            components: Vec::new(),
        };
        for node in graph.edges.keys() {
            if !tarjan.index.contains_key(node.as_str()) {
                tarjan.visit(node);
            }
        }
        tarjan.components
    }

    fn visit(&mut self, node: &'g str) {
        self.index.insert(node, self.next);
        self.low.insert(node, self.next);
        self.next += 1;
        self.stack.push(node);
        self.on_stack.insert(node);
        let graph = self.graph;
        for target in graph.edges.get(node).into_iter().flatten() {
            let target = target.as_str();
            if !self.index.contains_key(target) {
                self.visit(target);
                let low = self.low[target].min(self.low[node]);
                self.low.insert(node, low);
            } else if self.on_stack.contains(target) {
                let low = self.index[target].min(self.low[node]);
                self.low.insert(node, low);
            }
        }
        if self.low[node] == self.index[node] {
            let mut component = Vec::new();
            while let Some(member) = self.stack.pop() {
                self.on_stack.remove(member);
                component.push(member.to_owned());
                if member == node {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Graph;

    #[test]
    fn a_cycle_is_one_component_and_a_chain_is_none() {
        let mut graph = Graph::default();
        graph.add_edge("a", "b");
        graph.add_edge("b", "c");
        graph.add_edge("c", "a");
        graph.add_edge("c", "d");
        graph.add_edge("d", "d");
        assert_eq!(graph.cycles(), vec![vec!["a", "b", "c"]]);
        assert_eq!(graph.edge_count(), 4);
        let text = graph.render();
        assert!(text.contains("a -> b\n"), "{text}");
        assert!(text.contains("c -> a, d\n"), "{text}");
        assert!(text.contains("d ->\n"), "{text}");
        assert!(text.contains("cycle: a b c\n"), "{text}");
        assert!(
            text.ends_with("4 files, 4 edges, 1 cycles (sizes 3)\n"),
            "{text}"
        );
    }
}
