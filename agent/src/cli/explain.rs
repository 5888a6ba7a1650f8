//! `explain [--json] [FILE|-]`: a pasted kernel OOM report analyzed offline
//! ([`crate::explain`]); exit 2 when the input cannot be read.

use std::process::ExitCode;

use crate::explain;

/// `explain`: the analysis on standard output; the exit code says whether it ran.
pub fn run_explain(json: bool, file: Option<&str>) -> ExitCode {
    let mut input = match explain::open_input(file) {
        Ok(input) => input,
        Err(error) => {
            eprintln!(
                "ballast-agent explain: {}",
                ballast_daemon::error_chain(&*error)
            );
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    match explain::explain_to(&mut input, file.unwrap_or("-"), json, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ explain::ExplainError::Read { .. }) => {
            eprintln!("ballast-agent explain: {error}");
            ExitCode::from(2)
        }
        // Its message names its cause already.
        Err(error) => {
            eprintln!("ballast-agent explain: {error}");
            ExitCode::from(1)
        }
    }
}
