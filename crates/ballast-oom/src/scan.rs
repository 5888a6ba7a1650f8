//! Finds reports in the input (work in progress).
use crate::Parsed;
pub(crate) fn scan(_input: &[u8]) -> Parsed {
    Parsed::default()
}
