//! OpenStack nova's identity of an instance, read from the domain XML's `<metadata>`:
//! `<nova:instance>` in a namespace under `http://openstack.org/xmlns/libvirt/nova/`
//! (1.0, 1.1 and later; matched by the namespace URI, never by the prefix) with its
//! `<package version>`, `<name>`, `<creationTime>`, `<flavor name>` (`<memory>` MiB,
//! `<vcpus>`) and `<owner>` (`<user uuid>`, `<project uuid>`). Nova names the domain
//! `instance-%08x` and gives it the instance's uuid, so the instance uuid is the
//! domain's `<uuid>`.
//!
//! The text is the tenant's (instance and project names): it is read as text only
//! (entities decoded by the XML parser, never re-read as markup), control and
//! bidirectional formatting characters are dropped, whitespace trimmed, and each
//! value cut to [`MAX_NOVA_TEXT_BYTES`] on a character boundary, so the collector
//! accepts what the agent sends.

use ballast_model::{NovaInstance, MAX_NOVA_TEXT_BYTES};
use roxmltree::Node;

/// Every nova metadata namespace starts with this (`.../nova/1.0`, `.../nova/1.1`).
pub const NOVA_NAMESPACE_PREFIX: &str = "http://openstack.org/xmlns/libvirt/nova/";

/// The nova identity of a `<domain>` element; None when its `<metadata>` holds no
/// `<instance>` of a nova namespace.
pub fn nova_instance(domain: Node<'_, '_>) -> Option<NovaInstance> {
    let metadata = domain
        .children()
        .find(|node| node.is_element() && node.tag_name().name() == "metadata")?;
    let instance = metadata.children().find(|node| {
        node.is_element()
            && node.tag_name().name() == "instance"
            && node
                .tag_name()
                .namespace()
                .is_some_and(|uri| uri.starts_with(NOVA_NAMESPACE_PREFIX))
    })?;
    let namespace = instance.tag_name().namespace();
    let nova_child = |parent, name| child_in(parent, namespace, name);
    let flavor = nova_child(instance, "flavor");
    let owner = nova_child(instance, "owner");
    let user = owner.and_then(|owner| nova_child(owner, "user"));
    let project = owner.and_then(|owner| nova_child(owner, "project"));
    let domain_uuid = domain
        .children()
        .find(|node| node.is_element() && node.has_tag_name("uuid"));
    Some(NovaInstance {
        name: nova_child(instance, "name").and_then(text_of),
        instance_uuid: domain_uuid.and_then(text_of),
        project_id: project
            .and_then(|node| node.attribute("uuid"))
            .and_then(clean),
        project_name: project.and_then(text_of),
        user_id: user.and_then(|node| node.attribute("uuid")).and_then(clean),
        user_name: user.and_then(text_of),
        flavor_name: flavor
            .and_then(|node| node.attribute("name"))
            .and_then(clean),
        flavor_memory_mib: flavor
            .and_then(|node| nova_child(node, "memory"))
            .and_then(|node| number(node)),
        flavor_vcpus: flavor
            .and_then(|node| nova_child(node, "vcpus"))
            .and_then(|node| number(node)),
        nova_version: nova_child(instance, "package")
            .and_then(|node| node.attribute("version"))
            .and_then(clean),
        created: nova_child(instance, "creationTime").and_then(text_of),
    })
}

/// The first child element `name` of the namespace `namespace`.
fn child_in<'a, 'input>(
    parent: Node<'a, 'input>,
    namespace: Option<&str>,
    name: &str,
) -> Option<Node<'a, 'input>> {
    parent.children().find(|node| {
        node.is_element()
            && node.tag_name().name() == name
            && node.tag_name().namespace() == namespace
    })
}

/// An element's text (its text and CDATA children; child elements add nothing),
/// copying at most a few times the kept bound however long the text is.
fn text_of(node: Node<'_, '_>) -> Option<String> {
    const COPIED_BYTES: usize = MAX_NOVA_TEXT_BYTES * 4;
    let mut text = String::new();
    let pieces = node
        .children()
        .filter(Node::is_text)
        .filter_map(|n| n.text());
    'pieces: for piece in pieces {
        for c in piece.chars() {
            if text.len() >= COPIED_BYTES {
                break 'pieces;
            }
            text.push(c);
        }
    }
    clean(&text)
}

/// A decimal number element; None for anything else (a sign, a unit, an overflow).
fn number<T: std::str::FromStr>(node: Node<'_, '_>) -> Option<T> {
    let text = node.text()?.trim();
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Tenant text made fit to keep: control and bidirectional formatting characters
/// dropped, whitespace trimmed, at most [`MAX_NOVA_TEXT_BYTES`] (cut on a character
/// boundary); None when nothing is left.
pub fn clean(text: &str) -> Option<String> {
    let mut kept = String::new();
    let kept_chars = text
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_format(*c))
        .skip_while(|c| c.is_whitespace());
    for c in kept_chars {
        if kept.len() + c.len_utf8() > MAX_NOVA_TEXT_BYTES {
            break;
        }
        kept.push(c);
    }
    let trimmed = kept.trim_end();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// Characters that reorder how the text around them is shown (U+200E/F, U+202A..E,
/// U+2066..9): a name must not make the rest of a line read differently.
fn is_bidi_format(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use roxmltree::Document;

    use super::*;

    use crate::hypervisor::libvirt::xml_fixture as fixture;

    fn parse(xml: &str) -> Option<NovaInstance> {
        let document = Document::parse(xml).expect("well-formed XML");
        nova_instance(document.root_element())
    }

    /// Nova's metadata with `<nova:name>` replaced by `name` (already XML text).
    fn named(name: &str) -> String {
        format!(
            "<domain><uuid>u-1</uuid><metadata>\
             <nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>\
             <nova:name>{name}</nova:name></nova:instance></metadata></domain>"
        )
    }

    #[test]
    fn namespace_1_1_as_nova_writes_it() {
        let nova = parse(&fixture("nova-1.1-virtlogd.xml")).expect("a nova instance");
        assert_eq!(
            nova,
            NovaInstance {
                name: Some("web-3".into()),
                instance_uuid: Some("5d3a4b1e-8c2f-4e7a-9b0d-1f2e3d4c5b6a".into()),
                project_id: Some("f0e1d2c3b4a5968778695a4b3c2d1e0f".into()),
                project_name: Some("acme".into()),
                user_id: Some("8e1f0c2ab7d44d6f9a3e5b7c9d1f2a4b".into()),
                user_name: Some("alice".into()),
                flavor_name: Some("m1.small".into()),
                flavor_memory_mib: Some(2048),
                flavor_vcpus: Some(1),
                nova_version: Some("27.1.0".into()),
                created: Some("2026-11-30 14:02:11".into()),
            }
        );
    }

    #[test]
    fn namespace_1_0_with_another_prefix_and_a_decoy_beside_it() {
        let nova = parse(&fixture("nova-1.0-file-console.xml")).expect("a nova instance");
        assert_eq!(nova.name.as_deref(), Some("db-primary"));
        assert_eq!(nova.project_name.as_deref(), Some("payroll"));
        assert_eq!(nova.flavor_name.as_deref(), Some("m1.medium"));
        assert_eq!(nova.flavor_memory_mib, Some(4096));
        assert_eq!(nova.flavor_vcpus, Some(2));
        assert_eq!(nova.nova_version.as_deref(), Some("2015.1.2"));
        assert_eq!(
            nova.instance_uuid.as_deref(),
            Some("a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d")
        );
    }

    #[test]
    fn no_nova_metadata_is_none() {
        assert_eq!(parse("<domain><uuid>u</uuid></domain>"), None);
        assert_eq!(parse("<domain><metadata/></domain>"), None);
        // An instance element of another namespace, or none, is not nova's.
        let other =
            "<domain><metadata><x:instance xmlns:x='http://openstack.org/xmlns/libvirt/novax'>\
                     <x:name>n</x:name></x:instance><instance><name>n</name></instance>\
                     </metadata></domain>";
        assert_eq!(parse(other), None);
        // Nova's elements outside <metadata> are not read.
        let outside =
            "<domain><nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>\
                       <nova:name>n</nova:name></nova:instance></domain>";
        assert_eq!(parse(outside), None);
    }

    #[test]
    fn a_later_namespace_version_and_missing_parts_read_as_unknown() {
        let xml = "<domain><metadata>\
                   <i:instance xmlns:i='http://openstack.org/xmlns/libvirt/nova/1.2'>\
                   <i:name>solo</i:name><i:flavor name='tiny'><i:memory>lots</i:memory>\
                   <i:vcpus>-1</i:vcpus></i:flavor></i:instance></metadata></domain>";
        let nova = parse(xml).expect("a nova instance");
        assert_eq!(nova.name.as_deref(), Some("solo"));
        assert_eq!(nova.flavor_name.as_deref(), Some("tiny"));
        assert_eq!(nova.flavor_memory_mib, None, "not a number");
        assert_eq!(nova.flavor_vcpus, None, "not a count");
        assert_eq!(nova.instance_uuid, None, "the domain names no uuid");
        assert_eq!(nova.project_name, None);
        // Elements of another namespace inside nova's instance are not nova's.
        let foreign = "<domain><metadata>\
                   <nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1' \
                   xmlns:x='urn:x'><x:name>spoof</x:name></nova:instance></metadata></domain>";
        assert_eq!(parse(foreign).expect("nova").name, None);
    }

    #[test]
    fn hostile_names_are_text_without_controls() {
        let nova = parse(&named(
            "&lt;script&gt;alert(1)&lt;/script&gt;\u{9b}31m red&#10;line&#x85;\u{202E}gpj.exe",
        ))
        .expect("nova");
        assert_eq!(
            nova.name.as_deref(),
            Some("<script>alert(1)</script>31m redlinegpj.exe"),
            "entities decoded to text (escaped wherever shown); the C1 CSI, the newline, \
             NEL and the right-to-left override dropped"
        );
        let cdata = parse(&named("<![CDATA[<b>bold</b>]]>")).expect("nova");
        assert_eq!(cdata.name.as_deref(), Some("<b>bold</b>"));
        let nested = parse(&named("web<b>bold</b>-3")).expect("nova");
        assert_eq!(
            nested.name.as_deref(),
            Some("web-3"),
            "markup inside is no text"
        );
        let blank = parse(&named(" \t&#x7f;&#x9b;\u{85} ")).expect("nova");
        assert_eq!(blank.name, None, "nothing but controls and spaces");
    }

    #[test]
    fn oversize_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(400);
        let nova = parse(&named(&long)).expect("nova");
        let name = nova.name.expect("a name");
        assert!(name.len() <= MAX_NOVA_TEXT_BYTES, "{} bytes", name.len());
        assert_eq!(name, "é".repeat(MAX_NOVA_TEXT_BYTES / 2));
        let huge = parse(&named(&format!("  {}", "x".repeat(1 << 20)))).expect("nova");
        assert_eq!(huge.name.map(|name| name.len()), Some(MAX_NOVA_TEXT_BYTES));
        let attribute = format!(
            "<domain><metadata><nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>\
             <nova:flavor name='{}'/></nova:instance></metadata></domain>",
            "f".repeat(100_000)
        );
        let nova = parse(&attribute).expect("nova");
        assert_eq!(
            nova.flavor_name.map(|name| name.len()),
            Some(MAX_NOVA_TEXT_BYTES)
        );
    }

    /// The whole domain read as the agent reads it: nova's identity beside the
    /// console log capture tails, in both shapes nova writes the console.
    #[test]
    fn nova_domains_give_the_identity_and_the_console_log_in_both_shapes() {
        use crate::hypervisor::libvirt::parse_domain_config;
        let virtlogd = parse_domain_config(&fixture("nova-1.1-virtlogd.xml")).expect("parse");
        assert_eq!(
            virtlogd.serial_log_path.as_deref(),
            Some(Path::new(
                "/var/lib/nova/instances/5d3a4b1e-8c2f-4e7a-9b0d-1f2e3d4c5b6a/console.log"
            )),
            "<serial type='pty'><log file=.. append='off'/>"
        );
        assert_eq!(
            virtlogd
                .openstack
                .and_then(|nova| nova.project_name)
                .as_deref(),
            Some("acme")
        );
        let file = parse_domain_config(&fixture("nova-1.0-file-console.xml")).expect("parse");
        assert_eq!(
            file.serial_log_path.as_deref(),
            Some(Path::new(
                "/var/lib/nova/instances/a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d/console.log"
            )),
            "<serial type='file'><source path=..>, not the pty serial after it"
        );
        assert_eq!(
            file.openstack.and_then(|nova| nova.name).as_deref(),
            Some("db-primary")
        );
        let plain = parse_domain_config(&fixture("harness-live.xml")).expect("parse");
        assert_eq!(plain.openstack, None, "a domain nova did not define");
    }
}
