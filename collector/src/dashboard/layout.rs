//! Page chrome and small shared pieces: the navigation, verdict badges, links,
//! memory figures. Everything interpolated is escaped by maud.

use maud::{html, Markup, DOCTYPE};

use crate::reports::format;

/// A whole page.
pub fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " - ballast" }
                link rel="stylesheet" href="/assets/style.css";
            }
            body {
                header.top {
                    a.brand href="/" { "ballast" }
                    nav {
                        a href="/" { "Overview" }
                        a href="/ooms" { "OOMs" }
                        a href="/reports/balloon-policy" { "Balloon policy" }
                        a href="/explain" { "Explain a report" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
                footer { "Times are UTC. Guest-reported text is shown as text, never interpreted." }
            }
        }
    }
}

/// The CSS class of a verdict (unknown values share one class).
pub fn verdict_class(verdict: &str) -> &'static str {
    match verdict {
        "balloon" => "v-balloon",
        "balloon_contributed" => "v-balloon_contributed",
        "not_balloon" => "v-not_balloon",
        "unknown" => "v-unknown",
        "kernel_unaccounted" => "v-kernel",
        "memcg_limit" => "v-memcg",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_is_escaped_and_paths_encoded() {
        let markup = vm_link("h/1", "a/b?c", "<script>alert(1)</script>").into_string();
        assert_eq!(
            markup,
            "<a class=\"vm\" href=\"/vms/h%2F1/a%2Fb%3Fc\">&lt;script&gt;alert(1)&lt;/script&gt;</a>"
        );
    }
}
