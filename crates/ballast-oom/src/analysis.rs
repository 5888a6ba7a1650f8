//! Analysis (work in progress).
use serde::Serialize;
use crate::Report;
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict { Balloon, KernelUnaccounted, MemcgLimit, Fragmentation, LowmemZone, Overcommit, NoKillable, Unknown }
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneState {}
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostBalloon {}
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis { pub verdict: Verdict }
pub fn analyze(_report: &Report, _host: Option<&HostBalloon>) -> Analysis { Analysis { verdict: Verdict::Unknown } }
