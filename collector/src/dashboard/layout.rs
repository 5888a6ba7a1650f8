//! Page chrome and small shared pieces: the navigation, verdict badges, links,
//! memory figures. Everything interpolated is escaped by maud.

use maud::{html, Markup, DOCTYPE};

pub use crate::html::{badge, host_link, kib, path_segment, vm_link, vm_path};

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
