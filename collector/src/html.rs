//! Small HTML pieces the dashboard and the reports' HTML share: the stylesheet,
//! verdict badges, links to VM and host pages, memory figures. Everything
//! interpolated is escaped by maud.

use maud::{html, Markup};

use ballast_model::{CorrelationVerdict, HostTookVerdict, ReportVerdict};

use crate::reports::format;

/// The embedded stylesheet (served by the dashboard, inlined in a standalone report).
pub const STYLE_CSS: &str = include_str!("../assets/style.css");

/// A verdict a badge shows: the correlation's or the report analysis'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Correlation(CorrelationVerdict),
    Report(ReportVerdict),
    /// The host's side over every mechanism (`host_took.verdict`).
    HostTook(HostTookVerdict),
}

impl From<HostTookVerdict> for Verdict {
    fn from(verdict: HostTookVerdict) -> Self {
        Verdict::HostTook(verdict)
    }
}

impl From<CorrelationVerdict> for Verdict {
    fn from(verdict: CorrelationVerdict) -> Self {
        Verdict::Correlation(verdict)
    }
}

impl From<ReportVerdict> for Verdict {
    fn from(verdict: ReportVerdict) -> Self {
        Verdict::Report(verdict)
    }
}

impl Verdict {
    /// The wire name shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Correlation(verdict) => verdict.as_str(),
            Verdict::Report(verdict) => verdict.as_str(),
            Verdict::HostTook(verdict) => verdict.as_str(),
        }
    }
}

/// The CSS class of a verdict: a report's `balloon` and `unknown` look like the
/// correlation's; its other verdicts but two share one class.
pub fn verdict_class(verdict: impl Into<Verdict>) -> &'static str {
    match verdict.into() {
        Verdict::Correlation(CorrelationVerdict::Balloon)
        | Verdict::Report(ReportVerdict::Balloon)
        | Verdict::HostTook(HostTookVerdict::HostTookMemory) => "v-balloon",
        Verdict::Correlation(CorrelationVerdict::BalloonContributed)
        | Verdict::HostTook(HostTookVerdict::HostContributed) => "v-balloon_contributed",
        Verdict::Correlation(CorrelationVerdict::NotBalloon)
        | Verdict::HostTook(HostTookVerdict::NotHost) => "v-not_balloon",
        Verdict::Correlation(CorrelationVerdict::Unknown)
        | Verdict::Report(ReportVerdict::Unknown)
        | Verdict::HostTook(HostTookVerdict::Unknown) => "v-unknown",
        Verdict::Report(ReportVerdict::KernelUnaccounted) => "v-kernel",
        Verdict::Report(ReportVerdict::MemcgLimit) => "v-memcg",
        Verdict::Report(_) => "v-other",
    }
}

/// A verdict as a badge.
pub fn badge(verdict: impl Into<Verdict>) -> Markup {
    let verdict = verdict.into();
    html! { span class={ "badge " (verdict_class(verdict)) } { (verdict.as_str()) } }
}

/// A link to a VM (a VM is (host, uuid)), showing its name.
pub fn vm_link(host: &str, uuid: &str, name: &str) -> Markup {
    let shown = if name.is_empty() { uuid } else { name };
    html! { a.vm href={ (vm_path(host, uuid)) } { (shown) } }
}

/// The dashboard path of a VM: `/vms/{host}/{uuid}`.
pub fn vm_path(host: &str, uuid: &str) -> String {
    format!("/vms/{}/{}", path_segment(host), path_segment(uuid))
}

/// A link to a host.
pub fn host_link(host: &str) -> Markup {
    html! { a.host href={ "/hosts/" (path_segment(host)) } { (host) } }
}

/// An optional KiB figure.
pub fn kib(value: Option<u64>) -> String {
    format::opt_kib(value)
}

/// Percent-encodes one URL path segment (or query value).
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
