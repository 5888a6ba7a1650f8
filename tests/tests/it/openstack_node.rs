//! An OpenStack compute node's guest against the real stack (issue 20 item 4): a
//! libvirt domain defined the way nova defines one (nova's `<metadata>` in the 1.1
//! namespace, the kernel console a file serial writing `console.log` in an
//! instance-like directory `instances/<uuid>/` under the lab's run directory), the
//! real `ballast-agent run` watching the lab's libvirt and the real
//! `ballast-collector serve` (SQLite). The collector must list the VM with its nova
//! name and project (and find it by project), and an OOM the guest prints to
//! console.log must reach the collector captured from that file (source `serial`;
//! the agent's guest-agent capture is off), with the identity beside it; the
//! dashboard's VM page shows the identity next to the libvirt name, escaped.
//! Outside CI the test skips loudly when the machine cannot run guests.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ballast_tests::stack::{start_collector, Collector};
use ballast_tests::{http_get, wait_until, Daemon};
use ballast_testvm::{lab_or_skip, GuestSpec};
use serde_json::Value;

const HOST: &str = "nova-compute-1";
const PROJECT: &str = "acme";
const PROJECT_ID: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";

/// A uuid of this run (nova gives the domain the instance's uuid).
fn instance_uuid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{:08x}-4e7a-4b0d-9f2e-{:012x}",
        std::process::id(),
        u64::from(nanos)
    )
}

/// Nova's `<nova:instance>` as nova's libvirt driver writes it (namespace 1.1).
fn nova_metadata(name: &str) -> String {
    format!(
        "    <nova:instance xmlns:nova=\"http://openstack.org/xmlns/libvirt/nova/1.1\">\n\
         \x20     <nova:package version=\"27.1.0\"/>\n\
         \x20     <nova:name>{name}</nova:name>\n\
         \x20     <nova:creationTime>2026-11-30 14:02:11</nova:creationTime>\n\
         \x20     <nova:flavor name=\"m1.small\">\n\
         \x20       <nova:memory>256</nova:memory>\n\
         \x20       <nova:disk>1</nova:disk>\n\
         \x20       <nova:swap>0</nova:swap>\n\
         \x20       <nova:ephemeral>0</nova:ephemeral>\n\
         \x20       <nova:vcpus>1</nova:vcpus>\n\
         \x20     </nova:flavor>\n\
         \x20     <nova:owner>\n\
         \x20       <nova:user uuid=\"8e1f0c2ab7d44d6f9a3e5b7c9d1f2a4b\">alice</nova:user>\n\
         \x20       <nova:project uuid=\"{PROJECT_ID}\">{PROJECT}</nova:project>\n\
         \x20     </nova:owner>\n\
         \x20     <nova:root type=\"image\" uuid=\"0b7c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e\"/>\n\
         \x20   </nova:instance>"
    )
}

fn get_json(collector: &Collector, path: &str) -> Option<Value> {
    match http_get(collector.addr, path, None) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

#[test]
fn a_nova_defined_guest_shows_with_its_identity_and_its_console_log_oom_is_captured() {
    let Some(lab) = lab_or_skip(
        "a_nova_defined_guest_shows_with_its_identity_and_its_console_log_oom_is_captured",
    ) else {
        return;
    };
    let uuid = instance_uuid();
    let console_log = PathBuf::from("instances").join(&uuid).join("console.log");
    let guest = lab
        .boot(GuestSpec {
            memory_mib: 256,
            current_mib: 256,
            uuid: Some(uuid.clone()),
            // `&lt;b&gt;`: the name is XML text; the dashboard must show it escaped.
            metadata_xml: Some(nova_metadata("web-3 &lt;b&gt;")),
            file_console: Some(console_log.clone()),
            ..GuestSpec::default()
        })
        .expect("the nova-like guest boots");
    let booted = Instant::now();
    guest
        .wait_ready(Duration::from_secs(180))
        .expect("guest ready");
    assert!(
        guest.serial_log_path().ends_with(&console_log),
        "the console is the instance's console.log: {}",
        guest.serial_log_path().display()
    );

    let root = std::env::temp_dir().join(format!("ballast-nova-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let collector = start_collector(&root.join("collector"), HOST, "storage:\n  type: sqlite\n");
    let agent_dir = root.join("agent");
    std::fs::create_dir_all(&agent_dir).expect("agent dir");
    let agent_config = agent_dir.join("agent.yaml");
    std::fs::write(
        &agent_config,
        format!(
            "host_id: {HOST}\nstate_dir: {dir}\npoll_interval_secs: 2\n\
             collector:\n  url: http://{addr}\n  token_file: {token}\n\
             capture:\n  guest_agent: off\n",
            dir = agent_dir.display(),
            addr = collector.addr,
            token = collector.token_file.display()
        ),
    )
    .expect("agent config");
    let config_arg = agent_config.to_str().expect("utf-8 path").to_string();
    let agent = Daemon::start(
        "ballast-agent",
        &["run", "--config", &config_arg],
        &agent_dir.join("agent.log"),
    );

    // The VM by its project, with nova's identity beside the libvirt name.
    let by_project = format!("/api/v1/vms?project={PROJECT}");
    let vm = wait_until(
        "the collector to list the VM by its project",
        Duration::from_secs(90),
        || {
            get_json(&collector, &by_project)?["items"]
                .as_array()?
                .iter()
                .find(|vm| vm["uuid"] == uuid.as_str())
                .cloned()
        },
    );
    assert_eq!(vm["name"], guest.name(), "the libvirt name stays the name");
    let nova = &vm["openstack"];
    assert_eq!(nova["name"], "web-3 <b>", "{vm:#}");
    assert_eq!(nova["project_name"], PROJECT);
    assert_eq!(nova["project_id"], PROJECT_ID);
    assert_eq!(nova["user_name"], "alice");
    assert_eq!(nova["flavor_name"], "m1.small");
    assert_eq!(nova["flavor_memory_mib"], 256);
    assert_eq!(nova["instance_uuid"], uuid.as_str());
    assert_eq!(nova["nova_version"], "27.1.0");
    assert_eq!(vm["config"]["serial_log"], true, "console.log is tailed");
    let by_id = get_json(&collector, &format!("/api/v1/vms?project={PROJECT_ID}"))
        .expect("the list by project id");
    assert!(
        by_id["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|item| item["uuid"] == uuid.as_str())),
        "{by_id:#}"
    );

    // An OOM printed to console.log.
    guest.start_hog(16, 100).expect("hog starts");
    guest
        .wait_serial("Out of memory: Killed process", Duration::from_secs(120))
        .expect("the guest OOMs");
    let printed = Instant::now();
    let ooms_of_project = format!("/api/v1/ooms?project={PROJECT}&limit=100");
    let oom = wait_until(
        "the console.log OOM at the collector",
        Duration::from_secs(60),
        || {
            get_json(&collector, &ooms_of_project)?["items"]
                .as_array()?
                .iter()
                .find(|oom| oom["vm"]["uuid"] == uuid.as_str())
                .cloned()
        },
    );
    eprintln!(
        "NOVA guest time {:?}; console.log kill line -> collector {:?}",
        booted.elapsed(),
        printed.elapsed()
    );
    assert_eq!(oom["killed"]["comm"], "memhog", "{oom:#}");
    assert_eq!(oom["openstack"]["name"], "web-3 <b>");
    let link = oom["link"].as_str().expect("link");
    let detail = get_json(&collector, link).expect("the OOM's detail");
    assert_eq!(detail["source"], "serial", "captured from console.log");
    assert!(
        detail["raw_report"]
            .as_str()
            .is_some_and(|raw| raw.contains("Killed process")),
        "{detail:#}"
    );
    // The dashboard shows the identity beside the libvirt name, escaped.
    let page = format!("/vms/{HOST}/{uuid}");
    let body = match http_get(collector.addr, &page, None) {
        Ok((200, body)) => body,
        other => panic!("GET {page}: {other:?}"),
    };
    let line = format!(
        "web-3 &lt;b&gt; ({}), project {PROJECT}, flavor m1.small",
        guest.name()
    );
    assert!(body.contains(&line), "{page} lacks {line:?}");
    assert!(!body.contains("<b>"), "{page} carries the raw tag");
    // Exactly one: the agent reports a kill once.
    let ours = get_json(&collector, &ooms_of_project).expect("the OOM list");
    let count = ours["items"].as_array().map(|items| {
        items
            .iter()
            .filter(|o| o["vm"]["uuid"] == uuid.as_str())
            .count()
    });
    assert_eq!(count, Some(1), "{ours:#}");
    agent.stop();
    drop(guest);
    let _ = std::fs::remove_dir_all(&root);
}
