//! From names to files: every path a module writes (in `use`, code, and macro bodies) is
//! resolved through the module tree to the file that defines what it names.

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

use crate::graph::Graph;
use crate::tree::{is_test, path_names, Tree};

/// How deep re-exports and aliases are followed (a guard against alias loops).
const MAX_DEPTH: u32 = 16;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The module itself.
    Module(usize),
    /// Something defined in (or only reachable through) the module.
    Item(usize),
}

/// The graph of `tree`.
pub fn edges(tree: &Tree, crate_name: Option<&str>) -> Graph {
    let resolver = Resolver { tree, crate_name };
    let mut graph = Graph::default();
    for file in &tree.files {
        graph.add_node(file);
    }
    for (index, module) in tree.modules.iter().enumerate() {
        for entry in &module.uses {
            match resolver.resolve(index, &entry.path, 0) {
                Some(Target::Item(target)) => {
                    graph.add_edge(&module.file, &tree.modules[target].file)
                }
                // A module imported by name is an alias; its uses make the edges. A glob
                // import names the module's items.
                Some(Target::Module(target)) if entry.name.is_none() => {
                    graph.add_edge(&module.file, &tree.modules[target].file)
                }
                _ => {}
            }
        }
        let mut paths = Paths(Vec::new());
        for item in &module.items {
            paths.visit_item(item);
        }
        for path in paths.0 {
            match resolver.resolve(index, &path, 0) {
                Some(Target::Item(target)) => {
                    graph.add_edge(&module.file, &tree.modules[target].file)
                }
                Some(Target::Module(target)) if path.len() > 1 => {
                    graph.add_edge(&module.file, &tree.modules[target].file)
                }
                _ => {}
            }
        }
    }
    graph
}

struct Resolver<'t> {
    tree: &'t Tree,
    crate_name: Option<&'t str>,
}

impl Resolver<'_> {
    /// What `path`, written in module `from`, names (None: outside the crate, or a local).
    fn resolve(&self, from: usize, path: &[String], depth: u32) -> Option<Target> {
        if depth > MAX_DEPTH {
            return None;
        }
        let modules = &self.tree.modules;
        let (first, mut rest) = path.split_first()?;
        let mut current = match first.as_str() {
            "crate" => self.tree.root_of(from),
            "self" => from,
            "super" => {
                let mut module = modules[from].parent?;
                while rest.first().is_some_and(|s| s == "super") {
                    module = modules[module].parent?;
                    rest = &rest[1..];
                }
                module
            }
            name if Some(name) == self.crate_name
                && Some(self.tree.root_of(from)) != self.tree.lib_root =>
            {
                self.tree.lib_root?
            }
            name => {
                if rest.is_empty() {
                    // A bare name: only an imported one names something of the crate.
                    return self.through_use(from, name, depth);
                }
                if let Some(&child) = modules[from].children.get(name) {
                    child
                } else {
                    match self.through_use(from, name, depth)? {
                        Target::Module(module) => module,
                        item => return Some(item),
                    }
                }
            }
        };
        for (position, segment) in rest.iter().enumerate() {
            if let Some(&child) = modules[current].children.get(segment) {
                current = child;
                continue;
            }
            let last = position + 1 == rest.len();
            if modules[current].defines.contains(segment) {
                return Some(Target::Item(current));
            }
            match self.through_use(current, segment, depth) {
                Some(Target::Module(module)) if !last => current = module,
                Some(target) => return Some(target),
                None => return Some(Target::Item(current)),
            }
        }
        Some(Target::Module(current))
    }

    /// `name` as module `module` imports or re-exports it (named, else through a glob).
    fn through_use(&self, module: usize, name: &str, depth: u32) -> Option<Target> {
        let uses = &self.tree.modules[module].uses;
        if let Some(entry) = uses.iter().find(|e| e.name.as_deref() == Some(name)) {
            // A name imported from outside the crate resolves to None.
            return self.resolve(module, &entry.path, depth + 1);
        }
        for entry in uses.iter().filter(|e| e.name.is_none()) {
            if let Some(Target::Module(source)) = self.resolve(module, &entry.path, depth + 1) {
                let source_module = &self.tree.modules[source];
                if source_module.defines.contains(name) {
                    return Some(Target::Item(source));
                }
                if let Some(&child) = source_module.children.get(name) {
                    return Some(Target::Module(child));
                }
                if let Some(target) = self.through_use(source, name, depth + 1) {
                    return Some(target);
                }
            }
        }
        None
    }
}

/// Every path written in the items: code and types (syn paths), and `a::b` sequences in
/// macro bodies (format strings, templates). Attributes and nested modules are skipped.
struct Paths(Vec<Vec<String>>);

impl<'ast> Visit<'ast> for Paths {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.0.push(path_names(path));
        syn::visit::visit_path(self, path);
    }
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        token_paths(mac.tokens.clone(), &mut self.0);
    }
    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {}
    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {}
    fn visit_item_use(&mut self, _: &'ast syn::ItemUse) {}
    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_test(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }
    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !is_test(&item.attrs) {
            syn::visit::visit_impl_item_fn(self, item);
        }
    }
}

/// `ident :: ident (:: ident)*` sequences (two or more names) in a token stream.
fn token_paths(tokens: TokenStream, out: &mut Vec<Vec<String>>) {
    let mut current: Vec<String> = Vec::new();
    // How many ':' since the last ident (2 = a path separator was just read).
    let mut colons = 0;
    let flush = |current: &mut Vec<String>, out: &mut Vec<Vec<String>>| {
        if current.len() > 1 {
            out.push(std::mem::take(current));
        } else {
            current.clear();
        }
    };
    for token in tokens {
        match token {
            TokenTree::Ident(ident) => {
                if colons != 2 {
                    flush(&mut current, out);
                }
                current.push(ident.to_string());
                colons = 0;
            }
            TokenTree::Punct(punct) if punct.as_char() == ':' && !current.is_empty() => {
                colons += 1;
                if colons > 2 {
                    flush(&mut current, out);
                    colons = 0;
                }
            }
            TokenTree::Group(group) => {
                flush(&mut current, out);
                colons = 0;
                token_paths(group.stream(), out);
            }
            _ => {
                flush(&mut current, out);
                colons = 0;
            }
        }
    }
    flush(&mut current, out);
}
