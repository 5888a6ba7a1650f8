//! `module-graph <src-dir>`: prints a crate's file-level import graph (`a -> b, c`
//! lines, sorted), its import cycles (`cycle: a b c`) and a count line. Exit 0 either way;
//! 2 when the sources cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(src), None) = (args.next(), args.next()) else {
        eprintln!("usage: module-graph <src-dir>");
        return ExitCode::from(2);
    };
    match ballast_archlint::module_graph(&PathBuf::from(src)) {
        Ok(graph) => {
            print!("{}", graph.render());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("module-graph: {err}");
            ExitCode::from(2)
        }
    }
}
