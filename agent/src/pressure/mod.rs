//! Memory pressure of the guests (issue 19): the risk model read from each VM's
//! pressure signals ([`risk`]) and its episodes ([`episode`]).

pub mod episode;
pub mod risk;
pub mod vm_risk;
