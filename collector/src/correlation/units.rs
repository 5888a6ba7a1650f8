//! Figures as the correlation's reasons write them, shared by its files.

pub(super) fn pct_of(value: u64, pct: f64) -> u64 {
    (value as f64 * pct / 100.0) as u64
}

/// KiB as MiB, one decimal under 10 MiB.
pub(super) fn mib(kib: u64) -> String {
    let mib = kib as f64 / 1024.0;
    if mib >= 10.0 {
        format!("{mib:.0} MiB")
    } else {
        format!("{mib:.1} MiB")
    }
}
