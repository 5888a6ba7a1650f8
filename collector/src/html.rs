//! Small HTML pieces the dashboard and the reports' HTML share: the stylesheet,
//! verdict badges, links to VM and host pages, memory figures. Everything
//! interpolated is escaped by maud.

use maud::{html, Markup};

use ballast_model::{CorrelationVerdict, ReportVerdict};

use crate::reports::format;

/// The embedded stylesheet (served by the dashboard, inlined in a standalone report).
pub const STYLE_CSS: &str = include_str!("../assets/style.css");

/// The CSS class of a verdict, a correlation's or a report's (unknown values share
/// one class).
pub fn verdict_class(verdict: &str) -> &'static str {
    let correlation = CorrelationVerdict::parse(verdict);
    if correlation.as_str() == verdict {
        return match correlation {
            CorrelationVerdict::Balloon => "v-balloon",
            CorrelationVerdict::BalloonContributed => "v-balloon_contributed",
            CorrelationVerdict::NotBalloon => "v-not_balloon",
            CorrelationVerdict::Unknown => "v-unknown",
        };
    }
    match ReportVerdict::parse(verdict) {
        ReportVerdict::KernelUnaccounted => "v-kernel",
        ReportVerdict::MemcgLimit => "v-memcg",
        _ => "v-other",
    }
}

/// A verdict as a badge.
pub fn badge(verdict: &str) -> Markup {
    html! { span class={ "badge " (verdict_class(verdict)) } { (verdict) } }
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
