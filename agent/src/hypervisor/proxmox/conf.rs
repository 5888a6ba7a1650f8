//! Proxmox VE VM configuration files, `/etc/pve/qemu-server/<vmid>.conf`.
//!
//! Format (qemu-server `PVE::QemuServer::parse_vm_config`):
//! - `key: value` lines; keys are lowercase letters and `_`, optionally ending in
//!   digits (`serial0`, `net1`); the value runs to the end of the line;
//! - `#` lines before the first key are the description, percent-encoded;
//! - `[name]` starts a snapshot section (also `[PENDING]`, `[special:cloudinit]`);
//!   only the part before the first section describes the running VM, the rest is
//!   skipped;
//! - blank lines are ignored.
//!
//! Parsing never stops at a bad line: like Proxmox itself, it keeps everything it
//! understood and returns each bad line as a [`ConfProblem`] naming file and line,
//! so a typo in one VM's file leaves its identity (name, smbios uuid) intact and
//! never affects other VMs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What ballast reads from a VM's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmConf {
    pub name: Option<String>,
    /// `memory:` (MiB), `memory: 4096` or `memory: current=4096`.
    pub memory_mib: Option<u64>,
    /// `balloon:` (MiB): the minimum auto-ballooning may go down to; 0 = no balloon device.
    pub balloon_mib: Option<u64>,
    /// `shares:` auto-ballooning weight (default 1000).
    pub shares: Option<u32>,
    /// `agent: 1` / `agent: enabled=1,fstrim_cloned_disks=1`.
    pub agent_enabled: bool,
    /// `serial0..3`: `socket` or a host device path.
    pub serial: BTreeMap<u8, SerialPort>,
    /// The uuid of `smbios1: uuid=...`, lowercased.
    pub smbios_uuid: Option<String>,
    /// Raw `args:` (extra QEMU arguments).
    pub args: Option<String>,
    /// Raw `cpu:`.
    pub cpu: Option<String>,
    /// The description (`#` lines), decoded.
    pub description: String,
    /// Snapshot and other sections, by name (their content is not read).
    pub sections: Vec<String>,
    /// Every other key of the main section, raw.
    pub other: BTreeMap<String, String>,
}

/// A `serialN:` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialPort {
    /// A unix socket `/var/run/qemu-server/<vmid>.serialN` (`qm terminal`).
    Socket,
    /// A host device passed through.
    Device(PathBuf),
}

/// One line ballast could not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {reason}", path.display())]
pub struct ConfProblem {
    pub path: PathBuf,
    pub line: usize,
    pub reason: String,
}

/// The parsed file and its bad lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedConf {
    pub conf: VmConf,
    pub problems: Vec<ConfProblem>,
}

/// Failures to get a VM's configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("Failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("Malformed configuration ({n_problems} bad lines); first: {first}")]
    Malformed {
        n_problems: usize,
        #[source]
        first: ConfProblem,
    },
}

/// pmxcfs limits a file to 1 MiB; anything bigger is not a VM config.
pub const MAX_CONF_BYTES: u64 = 1024 * 1024;

/// Reads and parses `path` (bounded).
pub fn read(path: &Path) -> Result<ParsedConf, ConfError> {
    use std::io::Read;
    let read_error = |source| ConfError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONF_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONF_BYTES {
        return Err(ConfError::TooLarge {
            path: path.to_owned(),
            size: bytes.len() as u64,
            limit: MAX_CONF_BYTES,
        });
    }
    Ok(parse(&String::from_utf8_lossy(&bytes), path))
}

impl ParsedConf {
    /// The configuration, or the first bad line as an error.
    pub fn strict(self) -> Result<VmConf, ConfError> {
        let n_problems = self.problems.len();
        match self.problems.into_iter().next() {
            None => Ok(self.conf),
            Some(first) => Err(ConfError::Malformed { n_problems, first }),
        }
    }
}

/// Parses a file's text; `path` only names it in problems.
pub fn parse(text: &str, path: &Path) -> ParsedConf {
    let mut parsed = ParsedConf::default();
    let mut in_main = true;
    let mut seen_key = false;
    for (index, raw_line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw_line.trim();
        let mut problem = |reason: String| {
            parsed.problems.push(ConfProblem {
                path: path.to_owned(),
                line: line_number,
                reason,
            });
        };
        if line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            match section.strip_suffix(']') {
                Some(name) if !name.is_empty() => {
                    parsed.conf.sections.push(name.to_owned());
                    in_main = false;
                }
                _ => problem(format!("malformed section header {line:?}")),
            }
            continue;
        }
        if !in_main {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if !seen_key {
                parsed.conf.description.push_str(&percent_decode(comment));
                parsed.conf.description.push('\n');
            }
            continue;
        }
        seen_key = true;
        let Some((key, value)) = line.split_once(':') else {
            problem(format!("expected `key: value`, got {}", shorten(line)));
            continue;
        };
        let (key, value) = (key.trim_end(), value.trim());
        if !is_key(key) {
            problem(format!("invalid key {}", shorten(key)));
            continue;
        }
        if value.is_empty() {
            problem(format!("key {key} has no value"));
            continue;
        }
        if let Err(reason) = apply(&mut parsed.conf, key, value) {
            problem(format!("{key}: {reason}"));
        }
    }
    parsed
}

fn apply(conf: &mut VmConf, key: &str, value: &str) -> Result<(), String> {
    match key {
        "name" => conf.name = Some(value.to_owned()),
        "memory" => {
            let number = match property_list(value)?.as_slice() {
                [(None, number)] | [(Some("current"), number)] => *number,
                list => list
                    .iter()
                    .find(|(name, _)| *name == Some("current") || name.is_none())
                    .map(|(_, number)| *number)
                    .ok_or_else(|| format!("no size in {value:?}"))?,
            };
            conf.memory_mib = Some(mib(number)?);
        }
        "balloon" => conf.balloon_mib = Some(number(value)?),
        "shares" => {
            conf.shares = Some(
                number(value)?
                    .try_into()
                    .map_err(|_| format!("{value} is out of range"))?,
            );
        }
        "agent" => {
            let list = property_list(value)?;
            let enabled = list
                .iter()
                .find(|(name, _)| name.is_none() || *name == Some("enabled"))
                .map(|(_, flag)| *flag);
            conf.agent_enabled = match enabled {
                Some("1" | "on" | "yes" | "true") => true,
                Some("0" | "off" | "no" | "false") | None => false,
                Some(other) => return Err(format!("{other:?} is not a boolean")),
            };
        }
        "smbios1" => {
            let list = property_list(value)?;
            if let Some((_, uuid)) = list.iter().find(|(name, _)| *name == Some("uuid")) {
                if !is_uuid(uuid) {
                    return Err(format!("{uuid:?} is not a uuid"));
                }
                conf.smbios_uuid = Some(uuid.to_ascii_lowercase());
            }
        }
        "args" => conf.args = Some(value.to_owned()),
        "cpu" => conf.cpu = Some(value.to_owned()),
        _ => {
            if let Some(port) = key
                .strip_prefix("serial")
                .and_then(|n| n.parse::<u8>().ok())
                .filter(|&n| n <= 3)
            {
                let serial = if value == "socket" {
                    SerialPort::Socket
                } else if value.starts_with("/dev/") {
                    SerialPort::Device(PathBuf::from(value))
                } else {
                    return Err(format!("{value:?} is neither `socket` nor a /dev path"));
                };
                conf.serial.insert(port, serial);
            }
            conf.other.insert(key.to_owned(), value.to_owned());
        }
    }
    Ok(())
}

/// `a=1,b=2` or `1,b=2`: (name, value) pairs; a bare first item has no name.
fn property_list(value: &str) -> Result<Vec<(Option<&str>, &str)>, String> {
    value
        .split(',')
        .enumerate()
        .map(|(index, item)| match item.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((Some(name.trim()), value.trim())),
            None if index == 0 && !item.is_empty() => Ok((None, item.trim())),
            _ => Err(format!("malformed property list {value:?}")),
        })
        .collect()
}

fn number(value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number"))
}

fn mib(value: &str) -> Result<u64, String> {
    let number = number(value)?;
    // More than 64 TiB of RAM in one VM is a typo.
    if number > 64 * 1024 * 1024 {
        return Err(format!("{number} MiB is out of range"));
    }
    Ok(number)
}

fn is_key(key: &str) -> bool {
    let letters = key.trim_end_matches(|c: char| c.is_ascii_digit());
    !letters.is_empty()
        && letters.starts_with(|c: char| c.is_ascii_lowercase())
        && letters
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-')
}

/// 8-4-4-4-12 hex digits.
pub fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}

fn shorten(text: &str) -> String {
    let mut end = text.len().min(60);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}", &text[..end])
}

/// Proxmox writes descriptions with `%XX` escapes.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            if let Some(byte) = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                decoded.push(byte);
                index += 3;
                continue;
            }
        }
        decoded.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> ParsedConf {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/proxmox")
            .join(name);
        read(&path).expect("read fixture")
    }

    #[test]
    fn plain_vm_with_balloon_agent_and_serial_socket() {
        let parsed = fixture("100-basic.conf");
        assert_eq!(parsed.problems, Vec::new());
        let conf = parsed.conf;
        assert_eq!(conf.name.as_deref(), Some("web01"));
        assert_eq!(conf.memory_mib, Some(4096));
        assert_eq!(conf.balloon_mib, Some(1024));
        assert_eq!(conf.shares, Some(2000));
        assert!(conf.agent_enabled);
        assert_eq!(conf.serial.get(&0), Some(&SerialPort::Socket));
        assert_eq!(
            conf.smbios_uuid.as_deref(),
            Some("5b0bd0f9-1d53-4d89-a8d6-3c5ec3e1c2a1")
        );
        assert_eq!(conf.cpu.as_deref(), Some("host,flags=+aes"));
        assert_eq!(conf.other.get("ostype").map(String::as_str), Some("l26"));
        assert!(conf.sections.is_empty());
    }

    #[test]
    fn snapshot_sections_do_not_override_the_running_config() {
        let parsed = fixture("101-snapshots.conf");
        assert_eq!(parsed.problems, Vec::new());
        let conf = parsed.conf;
        assert_eq!(conf.memory_mib, Some(2048));
        assert_eq!(conf.name.as_deref(), Some("db-primary"));
        assert_eq!(conf.sections, ["before-upgrade", "PENDING"]);
        assert_eq!(
            conf.other.get("parent").map(String::as_str),
            Some("before-upgrade")
        );
        // The description: `#` lines, percent-decoded, in order.
        assert_eq!(
            conf.description,
            "Primary database\nOwner: ops@example.com 100%\n"
        );
    }

    #[test]
    fn memory_current_syntax_and_agent_property_string() {
        let conf = fixture("102-memory-current.conf").strict().expect("valid");
        assert_eq!(conf.memory_mib, Some(8192));
        assert!(conf.agent_enabled);
        assert_eq!(conf.balloon_mib, None);
        assert_eq!(
            conf.serial.get(&1),
            Some(&SerialPort::Device(PathBuf::from("/dev/ttyS1")))
        );
        assert_eq!(conf.args.as_deref(), Some("-device virtio-rng-pci"));
    }

    #[test]
    fn balloon_zero_and_agent_off() {
        let conf = fixture("103-balloon-off.conf").strict().expect("valid");
        assert_eq!(conf.balloon_mib, Some(0));
        assert!(!conf.agent_enabled);
        assert_eq!(conf.name, None);
        assert_eq!(conf.smbios_uuid, None);
    }

    #[test]
    fn malformed_lines_are_named_and_the_rest_is_kept() {
        let parsed = fixture("104-malformed.conf");
        let lines: Vec<usize> = parsed.problems.iter().map(|problem| problem.line).collect();
        assert_eq!(lines, [4, 5, 6, 7, 8, 9], "{:#?}", parsed.problems);
        let first = parsed.problems[0].to_string();
        assert!(
            first.contains("104-malformed.conf:4: memory:") && first.contains("\"lots\""),
            "{first}"
        );
        // What was fine is still there: identity survives a typo.
        assert_eq!(parsed.conf.name.as_deref(), Some("broken"));
        assert_eq!(
            parsed.conf.smbios_uuid.as_deref(),
            Some("0f8e2cf2-31a5-4a8e-9a0e-d6aa9c1e0b7e")
        );
        let error = parsed.strict().expect_err("malformed").to_string();
        assert!(error.contains("6 bad lines"), "{error}");
    }

    #[test]
    fn hostile_text_never_panics() {
        for text in [
            "",
            ":",
            "[",
            "[]",
            "memory: current=",
            "memory: ,,,",
            "agent: enabled=maybe",
            "smbios1: uuid=zz",
            "serial9: socket",
            "é: é",
            "name: \u{0}",
            "#%zz%",
            "#%e",
        ] {
            let _ = parse(text, Path::new("x.conf"));
        }
        let long = format!("name: {}", "x".repeat(100_000));
        assert_eq!(
            parse(&long, Path::new("x.conf")).conf.name.map(|n| n.len()),
            Some(100_006 - 6)
        );
    }

    #[test]
    fn uuids() {
        assert!(is_uuid("5B0BD0F9-1d53-4d89-a8d6-3c5ec3e1c2a1"));
        assert!(!is_uuid("5b0bd0f9-1d53-4d89-a8d6"));
        assert!(!is_uuid("5b0bd0f9-1d53-4d89-a8d6-3c5ec3e1c2ag"));
    }
}
