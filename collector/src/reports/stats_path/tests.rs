//! Unit tests of `reports::stats_path`.

use super::*;

fn facts<'a>(
    name: &'a str,
    stack: Stack,
    config: Option<&'a VmConfig>,
    findings: &'a [String],
) -> InventoryFacts<'a> {
    InventoryFacts {
        uuid: name,
        name,
        host: "pve1",
        stack,
        vmid: "101",
        shell_name: name,
        config,
        findings,
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| (*name).to_string()).collect()
}

fn balloon(period: Option<u32>, free_page_reporting: Option<bool>) -> VmConfig {
    VmConfig {
        memory_kib: Some(1024 * 1024),
        balloon_present: true,
        stats_period_secs: period,
        free_page_reporting,
        ..VmConfig::default()
    }
}

/// Each stats path reads as its own state with its own meaning, worst first; a VM
/// without any stored inventory is left out.
#[test]
fn the_agents_findings_decide_the_stats_path_and_free_page_reporting() {
    let asked = balloon(Some(2), None);
    let silent = names(&["balloon_driver_silent", "free_page_reporting_off"]);
    let stopped = names(&["stale_stats", "free_page_reporting_on"]);
    let fine = names(&["free_page_reporting_unknown"]);
    let section = build([
        facts("fine", Stack::Proxmox, Some(&asked), &fine),
        facts("stopped", Stack::Libvirt, Some(&asked), &stopped),
        facts("silent", Stack::Libvirt, Some(&asked), &silent),
        facts("never-inventoried", Stack::Libvirt, None, &[]),
    ]);
    let states: Vec<(&str, StatsPath, FreePageReporting)> = section
        .iter()
        .map(|vm| (vm.name.as_str(), vm.stats, vm.free_page_reporting))
        .collect();
    assert_eq!(
        states,
        [
            ("silent", StatsPath::DriverSilent, FreePageReporting::Off),
            ("stopped", StatsPath::Stopped, FreePageReporting::On),
            ("fine", StatsPath::Reporting, FreePageReporting::Unknown),
        ]
    );
    let silent = &section[0];
    assert!(
        silent.figures[0].contains("MemAvailable is unknown"),
        "{:?}",
        silent.figures
    );
    assert!(silent.figures[0].contains("balloon's actual is QEMU's own figure and still true"));
    assert!(silent.figures[1].contains("the balloon is the only way"));
    assert_eq!(silent.fix.len(), 1, "libvirt only: {:?}", silent.fix);
    assert!(silent.fix[0].contains("freePageReporting='on'"));
    let stopped = &section[1];
    assert!(stopped.figures[0].contains("last ones sent"));
    assert!(stopped.figures[1].contains("never memory the host took"));
    assert!(stopped.fix.is_empty(), "free page reporting is on");
    assert!(section[2].figures[0].contains("are current"));
}

/// An agent from before these findings sent its configuration only: period 0 and the
/// balloon's free page reporting still read.
#[test]
fn an_older_agents_configuration_still_says_period_zero_and_free_page_reporting() {
    let off = balloon(Some(0), Some(false));
    let on = balloon(None, Some(true));
    let no_balloon = VmConfig::default();
    let old = names(&["deflate_on_oom_off"]);
    let section = build([
        facts("a", Stack::Unknown, Some(&off), &old),
        facts("b", Stack::Proxmox, Some(&on), &[]),
        facts("c", Stack::Proxmox, Some(&no_balloon), &[]),
    ]);
    let states: Vec<(StatsPath, FreePageReporting)> = section
        .iter()
        .map(|vm| (vm.stats, vm.free_page_reporting))
        .collect();
    assert_eq!(
        states,
        [
            (StatsPath::PeriodOff, FreePageReporting::Off),
            (StatsPath::PeriodOff, FreePageReporting::On),
            (StatsPath::NoBalloon, FreePageReporting::NoBalloon),
        ]
    );
    assert!(section[0].figures[0].contains("not known until a period is set"));
    assert_eq!(
        section[0].fix.len(),
        2,
        "both stacks' commands when unknown"
    );
    assert!(section[0].fix[1].starts_with("qm set 101 --machine"));
    assert!(section[2].figures[0].contains("No guest figures and no balloon"));
}

#[test]
fn guest_chosen_names_are_escaped_in_html() {
    let config = balloon(Some(2), Some(false));
    let findings = names(&["balloon_driver_silent"]);
    let section = build([facts(
        "<script>x</script>",
        Stack::Libvirt,
        Some(&config),
        &findings,
    )]);
    let page = html(&section).into_string();
    assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"), "{page}");
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("balloon driver silent"));
    assert!(html(&[]).into_string().is_empty());
}
