//! The crate's module tree: which file each module lives in, its children, its `use`
//! entries, the names it defines and its (non-test) items, read from `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use syn::visit::Visit;

use crate::error::Error;

/// One `use` leaf: `name` (None for a glob) stands for `path`.
#[derive(Debug, Clone)]
pub struct UseEntry {
    pub name: Option<String>,
    pub path: Vec<String>,
}

/// One module (a file or an inline `mod x { .. }`).
pub struct Module {
    /// The graph node (file) it lives in.
    pub file: String,
    pub parent: Option<usize>,
    pub children: BTreeMap<String, usize>,
    pub uses: Vec<UseEntry>,
    /// Names of items defined here (functions, types, traits, constants, macros).
    pub defines: BTreeSet<String>,
    /// Items whose paths are references (everything but `mod` and `use`).
    pub items: Vec<syn::Item>,
}

/// All modules of the crate; roots are `crate` (lib.rs, else main.rs) and `main`
/// (main.rs beside a lib.rs).
#[derive(Default)]
pub struct Tree {
    pub modules: Vec<Module>,
    /// The library root (or the only root).
    pub lib_root: Option<usize>,
    /// The files (graph nodes), in load order.
    pub files: Vec<String>,
}

impl Tree {
    pub fn load(src: &Path) -> Result<Tree, Error> {
        let mut tree = Tree::default();
        let lib = src.join("lib.rs");
        let main = src.join("main.rs");
        if lib.is_file() {
            tree.lib_root = Some(tree.load_file(&lib, "crate", src, None)?);
            if main.is_file() {
                tree.load_file(&main, "main", src, None)?;
            }
        } else if main.is_file() {
            tree.lib_root = Some(tree.load_file(&main, "crate", src, None)?);
        } else {
            return Err(Error::NoRoot(src.to_path_buf()));
        }
        Ok(tree)
    }

    /// Loads `path` as module `id` whose child files are in `dir`.
    fn load_file(
        &mut self,
        path: &Path,
        id: &str,
        dir: &Path,
        parent: Option<usize>,
    ) -> Result<usize, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file = syn::parse_file(&text).map_err(|err| {
            let start = err.span().start();
            Error::Parse {
                path: path.to_path_buf(),
                line: start.line,
                column: start.column + 1,
                message: err.to_string(),
            }
        })?;
        self.files.push(id.to_owned());
        self.add_module(id, id, dir, parent, file.items)
    }

    fn add_module(
        &mut self,
        id: &str,
        file: &str,
        dir: &Path,
        parent: Option<usize>,
        items: Vec<syn::Item>,
    ) -> Result<usize, Error> {
        let index = self.modules.len();
        self.modules.push(Module {
            file: file.to_owned(),
            parent,
            children: BTreeMap::new(),
            uses: Vec::new(),
            defines: BTreeSet::new(),
            items: Vec::new(),
        });
        if let Some(parent) = parent {
            let name = id.rsplit("::").next().unwrap_or(id).to_owned();
            self.modules[parent].children.insert(name, index);
        }
        for item in items {
            if is_test(item_attrs(&item)) {
                continue;
            }
            match item {
                syn::Item::Mod(module) => {
                    let name = module.ident.to_string();
                    if name == "tests" {
                        continue;
                    }
                    let child_id = if id == "crate" {
                        name.clone()
                    } else {
                        format!("{id}::{name}")
                    };
                    let child_dir = dir.join(&name);
                    match module.content {
                        Some((_, inner)) => {
                            self.add_module(&child_id, file, &child_dir, Some(index), inner)?;
                        }
                        None => {
                            let flat = dir.join(format!("{name}.rs"));
                            let (path, grand_dir) = if flat.is_file() {
                                (flat, child_dir)
                            } else {
                                (child_dir.join("mod.rs"), child_dir)
                            };
                            self.load_file(&path, &child_id, &grand_dir, Some(index))?;
                        }
                    }
                }
                syn::Item::Use(item_use) => {
                    let mut prefix = Vec::new();
                    flatten_use(&item_use.tree, &mut prefix, &mut self.modules[index].uses);
                }
                other => {
                    if let Some(name) = defined_name(&other) {
                        self.modules[index].defines.insert(name);
                    }
                    // `use` inside function bodies names things too.
                    let mut nested = NestedUses(Vec::new());
                    nested.visit_item(&other);
                    self.modules[index].uses.extend(nested.0);
                    self.modules[index].items.push(other);
                }
            }
        }
        Ok(index)
    }

    /// The root of module `index`.
    pub fn root_of(&self, mut index: usize) -> usize {
        while let Some(parent) = self.modules[index].parent {
            index = parent;
        }
        index
    }
}

/// `use` statements inside items (function bodies); nested modules are skipped.
struct NestedUses(Vec<UseEntry>);

impl<'ast> Visit<'ast> for NestedUses {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if !is_test(&item.attrs) {
            flatten_use(&item.tree, &mut Vec::new(), &mut self.0);
        }
    }
    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {}
}

/// Every leaf of a use tree as (name, full path).
fn flatten_use(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<UseEntry>) {
    match tree {
        syn::UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            flatten_use(&path.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(name) => {
            let ident = name.ident.to_string();
            if ident == "self" {
                if let Some(last) = prefix.last() {
                    out.push(UseEntry {
                        name: Some(last.clone()),
                        path: prefix.clone(),
                    });
                }
            } else {
                let mut path = prefix.clone();
                path.push(ident.clone());
                out.push(UseEntry {
                    name: Some(ident),
                    path,
                });
            }
        }
        syn::UseTree::Rename(rename) => {
            let mut path = prefix.clone();
            let ident = rename.ident.to_string();
            if ident != "self" {
                path.push(ident);
            }
            out.push(UseEntry {
                name: Some(rename.rename.to_string()),
                path,
            });
        }
        syn::UseTree::Glob(_) => out.push(UseEntry {
            name: None,
            path: prefix.clone(),
        }),
        syn::UseTree::Group(group) => {
            for tree in &group.items {
                flatten_use(tree, prefix, out);
            }
        }
    }
}

/// The name an item defines in its module's namespace, if any.
fn defined_name(item: &syn::Item) -> Option<String> {
    let ident = match item {
        syn::Item::Const(item) => &item.ident,
        syn::Item::Enum(item) => &item.ident,
        syn::Item::Fn(item) => &item.sig.ident,
        syn::Item::Macro(item) => item.ident.as_ref()?,
        syn::Item::Static(item) => &item.ident,
        syn::Item::Struct(item) => &item.ident,
        syn::Item::Trait(item) => &item.ident,
        syn::Item::TraitAlias(item) => &item.ident,
        syn::Item::Type(item) => &item.ident,
        syn::Item::Union(item) => &item.ident,
        _ => return None,
    };
    Some(ident.to_string())
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(item) => &item.attrs,
        syn::Item::Enum(item) => &item.attrs,
        syn::Item::ExternCrate(item) => &item.attrs,
        syn::Item::Fn(item) => &item.attrs,
        syn::Item::ForeignMod(item) => &item.attrs,
        syn::Item::Impl(item) => &item.attrs,
        syn::Item::Macro(item) => &item.attrs,
        syn::Item::Mod(item) => &item.attrs,
        syn::Item::Static(item) => &item.attrs,
        syn::Item::Struct(item) => &item.attrs,
        syn::Item::Trait(item) => &item.attrs,
        syn::Item::TraitAlias(item) => &item.attrs,
        syn::Item::Type(item) => &item.attrs,
        syn::Item::Union(item) => &item.attrs,
        syn::Item::Use(item) => &item.attrs,
        _ => &[],
    }
}

/// `#[test]`, or a `#[cfg(..)]` that holds only under test (`test`, `all(test, ..)`;
/// not `not(test)`).
pub fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        if attr.path().is_ident("test") {
            return true;
        }
        if !attr.path().is_ident("cfg") {
            return false;
        }
        let Ok(list) = attr.meta.require_list() else {
            return false;
        };
        let text = list.tokens.to_string();
        let mentions_test = text
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|word| word == "test");
        mentions_test && !text.contains("not") && !text.starts_with("any")
    })
}

/// A path's segment names.
pub fn path_names(path: &syn::Path) -> Vec<String> {
    path.segments.iter().map(|s| s.ident.to_string()).collect()
}
