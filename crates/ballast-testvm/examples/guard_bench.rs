//! The guard's scenario suite (issue 19 item 4) with a real `ballast-agent`: one
//! Proxmox-style guest per kernel (6.1 and 6.12; 512 MiB, balloon floor 256 MiB, a
//! 768 MiB virtio disk), all scenarios of `ballast_testvm::guard_scenario` on each, the
//! kernels in parallel, under one agent per guard mode; prints one `RUN` line per run and
//! the BENCHMARKS.md table. Run it through `scripts/bench-guard.sh`.
//!
//! `cargo run -p ballast-testvm --example guard_bench -- AGENT_BINARY [MODES]`
//! MODES: comma-separated among `observe` and `act` (default both; `act` is skipped
//! with "act: not supported by this agent" when `check-config` rejects
//! `guard: {mode: act}`). Observe never touches a balloon, so its OOMs are the
//! no-guard figures; an agent without the guard at all runs with no `guard:` key
//! (its pressure episodes are what the guard would act on).
//!
//! `BALLAST_BENCH_AGENT_YAML`, when set, is appended to each agent's configuration
//! (e.g. a `collector:` section, so a real collector and its dashboard see the run:
//! scripts/screenshot-guard.sh).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_testvm::agent_run::{self, AgentRun};
use ballast_testvm::guard_scenario::{self as gs, ControlRun, HogRun, ReinflationLoop};
use ballast_testvm::{GuestKernel, Lab, ProxmoxGuest, ProxmoxSpec};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The balloon target of the hog runs: half the VM lent to the host.
const SQUEEZED_MIB: u64 = 256;
/// The balloon target of the control runs: a quarter lent, the workload fits.
const CONTROL_MIB: u64 = 384;
const HOG_RATES: [u64; 3] = [4, 16, 64];
/// `guard.max_actions_per_vm_per_hour` in the bench (shipped default 6, at most 60).
const BENCH_VM_STEPS_PER_HOUR: u32 = 60;
/// Where the balloon-caused hogs stop growing and hold: more than the squeezed VM
/// has (256 MiB, ~210 MiB MemTotal) and well within its maximum (512 MiB, ~470 MiB
/// MemTotal): an OOM the balloon causes and giving its memory back averts.
const HOG_HOLD_MIB: u64 = 320;
const HOG_TIMEOUT: Duration = Duration::from_secs(300);
/// Calm time between runs, so an episode ends (3 calm polls of 2 s) before the next.
const SETTLE: Duration = Duration::from_secs(12);

/// One run's outcome, as printed and tabled.
#[derive(Debug, Clone)]
struct Row {
    kernel: &'static str,
    mode: String,
    scenario: String,
    /// Balloon-caused hog run (true), overcommit (false), control (None).
    balloon_caused: Option<bool>,
    oom: bool,
    lead_ms: Option<u64>,
    false_critical: usize,
    would_deflate: usize,
    deflated: usize,
    guest_secs: f64,
    /// MiB the host still had (maximum - actual) at the end of a control run.
    reclaimed_mib: Option<u64>,
    note: String,
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let binary = PathBuf::from(
        args.next()
            .ok_or("usage: guard_bench AGENT_BINARY [MODES]")?,
    );
    let modes: Vec<String> = args
        .next()
        .unwrap_or_else(|| "observe,act".to_owned())
        .split(',')
        .map(str::to_owned)
        .collect();
    let scratch = tempdir()?;
    let guard_known = accepts(&binary, &scratch, "observe")?;
    let act = accepts(&binary, &scratch, "act")?;
    println!(
        "agent {}: guard key {}, act {}",
        binary.display(),
        if guard_known {
            "accepted"
        } else {
            "rejected (no guard in this agent)"
        },
        if act { "supported" } else { "not supported" }
    );
    let lab = Lab::get()?;
    let specs = [
        (
            "6.1",
            ProxmoxSpec {
                vmid: 161,
                kernel: GuestKernel::Debian61,
                disk_mib: 768,
                ..ProxmoxSpec::default()
            },
        ),
        (
            "6.12",
            ProxmoxSpec {
                vmid: 162,
                kernel: GuestKernel::Backports612,
                disk_mib: 768,
                ..ProxmoxSpec::default()
            },
        ),
    ];
    let mut guests = Vec::new();
    for (kernel, spec) in specs {
        let guest = lab.boot_proxmox(spec)?;
        guest.wait_ready(Duration::from_secs(240))?;
        guests.push((kernel, guest));
    }
    let mut rows = Vec::new();
    for mode in &modes {
        if mode == "act" && !act {
            println!("act: not supported by this agent");
            continue;
        }
        // The suite packs hours of a VM's life into minutes: the per-VM hourly limit
        // (6 steps) would hold the guard back in the control runs, after the hogs, and
        // hide what it would do there. The per-host limit stays as shipped.
        let mut yaml = if guard_known {
            format!("guard:\n  mode: {mode}\n  max_actions_per_vm_per_hour: {BENCH_VM_STEPS_PER_HOUR}\n")
        } else {
            String::new()
        };
        let dir = scratch.join(mode);
        std::fs::create_dir_all(&dir)?;
        // In act the guard may raise a VM's floor where pvestatd takes its deflation
        // back: `qm set` is the MOCK qm of tests/mock-pve/bin (no Proxmox node here),
        // writing the agent's config directory, which the re-inflation loop reads.
        let mut env = Vec::new();
        if mode == "act" && guard_known {
            yaml.push_str("  proxmox_raise_floor: true\n");
            let mock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/mock-pve/bin");
            let path = std::env::var("PATH").unwrap_or_default();
            env.push(("PATH".to_owned(), format!("{}:{path}", mock.display())));
            env.push((
                "BALLAST_PVE_CONFIG_DIR".to_owned(),
                AgentRun::conf_dir(&dir).display().to_string(),
            ));
            env.push((
                "BALLAST_PVE_RUN_DIR".to_owned(),
                AgentRun::run_dir(&dir).display().to_string(),
            ));
        }
        if let Ok(extra) = std::env::var("BALLAST_BENCH_AGENT_YAML") {
            yaml.push_str(&extra);
        }
        let refs: Vec<&ProxmoxGuest> = guests.iter().map(|(_, guest)| guest).collect();
        let agent = AgentRun::start_with_env(&binary, &dir, &refs, &yaml, &env)?;
        std::thread::sleep(Duration::from_secs(10));
        let results: Vec<Result<Vec<Row>, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = guests
                .iter()
                .map(|(kernel, guest)| {
                    let agent = &agent;
                    let dir = &dir;
                    scope.spawn(move || {
                        suite(agent, dir, kernel, guest, mode).map_err(|error| error.to_string())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap_or_else(|_| Err("panicked".to_owned())))
                .collect()
        });
        for result in results {
            match result {
                Ok(more) => rows.extend(more),
                Err(error) => println!("suite failed ({mode}): {error}"),
            }
        }
        drop(agent);
    }
    print_table(&rows, act);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// A short scratch folder (guest socket paths are linked under it).
fn tempdir() -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("bgb{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `check-config` with `guard: {mode: MODE}`.
fn accepts(binary: &Path, scratch: &Path, mode: &str) -> Result<bool, Error> {
    if mode == "act" {
        return Ok(agent_run::agent_supports_act(binary, scratch)?);
    }
    let config = scratch.join(format!("probe-{mode}.yaml"));
    std::fs::write(
        &config,
        format!(
            "backend: proxmox\nstate_dir: {}\nguard:\n  mode: {mode}\n",
            scratch.join("probe-state").display()
        ),
    )?;
    Ok(std::process::Command::new(binary)
        .arg("check-config")
        .arg(&config)
        .output()?
        .status
        .success())
}

/// Every scenario on one guest, in order; one row each.
fn suite(
    agent: &AgentRun,
    agent_dir: &Path,
    kernel: &'static str,
    guest: &ProxmoxGuest,
    mode: &str,
) -> Result<Vec<Row>, Error> {
    let vmid = guest.vmid();
    let mut rows = Vec::new();
    let mut push = |row: Row| {
        println!(
            "RUN {} {} {}: oom {} lead {:?} ms, false critical {}, would-deflate {}, deflated {}, {:.1} guest s, reclaimed {:?} MiB; {}",
            row.mode,
            row.kernel,
            row.scenario,
            row.oom,
            row.lead_ms,
            row.false_critical,
            row.would_deflate,
            row.deflated,
            row.guest_secs,
            row.reclaimed_mib,
            row.note
        );
        rows.push(row);
    };
    let base = |scenario: String, balloon_caused: Option<bool>| Row {
        kernel,
        mode: mode.to_owned(),
        scenario,
        balloon_caused,
        oom: false,
        lead_ms: None,
        false_critical: 0,
        would_deflate: 0,
        deflated: 0,
        guest_secs: 0.0,
        reclaimed_mib: None,
        note: String::new(),
    };
    for rate in HOG_RATES {
        gs::reset(guest)?;
        gs::inflate(guest, SQUEEZED_MIB, Duration::from_secs(120))?;
        std::thread::sleep(SETTLE);
        let run = gs::gradual_hog(guest, rate, Some(HOG_HOLD_MIB), HOG_TIMEOUT)?;
        push(hog_row(
            agent,
            vmid,
            base(format!("hog {rate} MiB/s"), Some(true)),
            &run,
        ));
    }
    // Proxmox-style: pvestatd sets the target back every 10 s.
    gs::reset(guest)?;
    gs::inflate(guest, SQUEEZED_MIB, Duration::from_secs(120))?;
    std::thread::sleep(SETTLE);
    // It shrinks the VM to its `balloon:` floor as the agent's config directory says
    // (where the guard's `qm set` writes, in act), like pvestatd under host pressure.
    let floor_file = AgentRun::conf_dir(agent_dir).join(format!("{vmid}.conf"));
    let pvestatd =
        ReinflationLoop::following_floor(guest, SQUEEZED_MIB, floor_file, Duration::from_secs(10));
    let run = gs::gradual_hog(guest, 16, Some(HOG_HOLD_MIB), HOG_TIMEOUT)?;
    let resets = pvestatd.stop();
    let mut row = hog_row(
        agent,
        vmid,
        base("hog 16 MiB/s + pvestatd loop".to_owned(), Some(true)),
        &run,
    );
    row.note = format!("{resets} re-inflations");
    push(row);

    for (name, which) in [
        ("steady 200 MiB", 0),
        ("page-cache reads", 1),
        ("spike 150 MiB 5 s", 2),
    ] {
        gs::reset(guest)?;
        gs::inflate(guest, CONTROL_MIB, Duration::from_secs(120))?;
        std::thread::sleep(SETTLE);
        let run = match which {
            0 => gs::steady_working_set(guest, 200, Duration::from_secs(90))?,
            1 => gs::page_cache_reads(guest, Duration::from_secs(90))?,
            _ => gs::short_spike(guest, 150, 5, Duration::from_secs(40))?,
        };
        // Anything the run set off shows within a few polls after it.
        std::thread::sleep(Duration::from_secs(6));
        let actual = guest.qmp()?.query_balloon_bytes()?;
        push(control_row(
            agent,
            vmid,
            base(name.to_owned(), None),
            &run,
            actual,
        ));
    }

    gs::reset(guest)?;
    std::thread::sleep(SETTLE);
    let run = gs::overcommit(guest, 16, HOG_TIMEOUT)?;
    std::thread::sleep(Duration::from_secs(10));
    let mut row = hog_row(
        agent,
        vmid,
        base("overcommit 16 MiB/s".to_owned(), Some(false)),
        &run,
    );
    row.note = overcommit_verdict(agent, vmid, &run);
    if let Some(lead) = row.lead_ms {
        row.note.push_str(&format!(
            "; critical {:.1} s before it",
            lead as f64 / 1000.0
        ));
    }
    push(row);
    gs::reset(guest)?;
    Ok(rows)
}

fn hog_row(agent: &AgentRun, vmid: u32, mut row: Row, run: &HogRun) -> Row {
    let pressure = agent.events("pressure", vmid);
    let guard = agent.events("guard", vmid);
    let end = run.killed_at_ms.unwrap_or_else(gs::now_ms);
    row.oom = run.killed_at_ms.is_some();
    row.lead_ms = run
        .killed_at_ms
        .and_then(|killed| agent_run::critical_lead_ms(&pressure, run.started_at_ms, killed));
    (row.would_deflate, row.deflated) = gave_back(&guard, run.started_at_ms, end);
    row.guest_secs = run.guest_secs;
    if row.note.is_empty() && run.held {
        row.note = "held".to_owned();
    }
    row
}

fn control_row(
    agent: &AgentRun,
    vmid: u32,
    mut row: Row,
    run: &ControlRun,
    actual_bytes: u64,
) -> Row {
    let pressure = agent.events("pressure", vmid);
    let guard = agent.events("guard", vmid);
    let to = run.ended_at_ms + 6_000;
    row.oom = run.kills > 0;
    row.false_critical = agent_run::critical_episodes_between(&pressure, run.started_at_ms, to);
    // What was counted, for the record: the critical events in the run's window.
    for event in pressure.iter().filter(|event| {
        event["level"] == "critical"
            && event["at_ms"]
                .as_u64()
                .is_some_and(|at| (run.started_at_ms..=to).contains(&at))
    }) {
        println!(
            "  critical {} at +{} ms of [{}, {}]: drivers {} exhaustion {} s, actual {} KiB",
            event["phase"],
            event["at_ms"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(run.started_at_ms),
            run.started_at_ms,
            to,
            event["drivers"],
            event["exhaustion_secs"],
            event["actual_kib"]
        );
    }
    (row.would_deflate, row.deflated) = gave_back(&guard, run.started_at_ms, to);
    row.guest_secs = run.guest_secs;
    row.reclaimed_mib = Some(512u64.saturating_sub(actual_bytes >> 20));
    row.note = format!(
        "file LRU peak {} MiB, MemAvailable low {} MiB",
        run.file_lru_peak_kib >> 10,
        run.mem_available_low_kib.unwrap_or(0) >> 10
    );
    row
}

/// The guard's steps between `from` and `to` that gave (act) or would have given
/// (observe) balloon memory back: `would_deflate` and `deflated`, a `beyond_maximum`
/// that still set a target (it gives all the balloon holds), and a `rate_limited` (a
/// step was due).
fn gave_back(guard: &[serde_json::Value], from: u64, to: u64) -> (usize, usize) {
    let steps = |mode: &str| {
        guard
            .iter()
            .filter(|event| event["mode"] == mode)
            .filter(|event| match event["outcome"].as_str() {
                Some("would_deflate" | "deflated") => true,
                Some("beyond_maximum") => !event["target_kib"].is_null(),
                // A step was due and held back: a deflation all the same, for the count.
                Some("rate_limited") => true,
                _ => false,
            })
            .filter(|event| {
                event["at_ms"]
                    .as_u64()
                    .is_some_and(|at| (from..=to).contains(&at))
            })
            .count()
    };
    (steps("observe"), steps("act"))
}

/// The overcommit run's honest verdict: the episode's largest deficit against what the
/// balloon still held (nothing, at maximum): no deflation could have helped.
fn overcommit_verdict(agent: &AgentRun, vmid: u32, run: &HogRun) -> String {
    let pressure = agent.events("pressure", vmid);
    let deficit = pressure
        .iter()
        .filter(|event| {
            event["at_ms"]
                .as_u64()
                .is_some_and(|at| at >= run.started_at_ms)
        })
        .filter_map(|event| event["deficit_kib"].as_u64())
        .max();
    let guard = agent.events("guard", vmid);
    let outcomes: Vec<String> = guard
        .iter()
        .filter(|event| {
            event["at_ms"]
                .as_u64()
                .is_some_and(|at| at >= run.started_at_ms)
        })
        .filter_map(|event| event["outcome"].as_str().map(str::to_owned))
        .collect();
    let mut verdict = format!(
        "working set beyond the VM's maximum: OOM {}, largest deficit {} MiB with 0 MiB in the balloon",
        if run.killed_at_ms.is_some() { "unavoidable and taken" } else { "not reached" },
        deficit.map_or("-".to_owned(), |kib| (kib >> 10).to_string()),
    );
    if !outcomes.is_empty() {
        verdict.push_str(&format!("; guard outcomes {outcomes:?}"));
    }
    verdict
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    match values.len() {
        0 => None,
        n if n % 2 == 1 => values.get(n / 2).copied(),
        n => Some((values[n / 2 - 1] + values[n / 2]) / 2),
    }
}

fn print_table(rows: &[Row], act: bool) {
    println!("\n| mode | kernel | balloon-caused OOMs | median lead of critical (s) | false alarms in controls: critical episodes, (would-)deflations (deflations per VM per guest day) | reclaimed in controls (MiB) | overcommit |");
    println!("|---|---|---|---|---|---|---|");
    for mode in ["observe", "act"] {
        for kernel in ["6.1", "6.12"] {
            let mine: Vec<&Row> = rows
                .iter()
                .filter(|r| r.mode == mode && r.kernel == kernel)
                .collect();
            if mine.is_empty() {
                if mode == "act" && !act {
                    println!("| act | {kernel} | awaits act | awaits act | awaits act | awaits act | awaits act |");
                }
                continue;
            }
            let hogs: Vec<&&Row> = mine
                .iter()
                .filter(|r| r.balloon_caused == Some(true))
                .collect();
            let ooms = hogs.iter().filter(|r| r.oom).count();
            let lead = median(hogs.iter().filter_map(|r| r.lead_ms).collect());
            let controls: Vec<&&Row> = mine.iter().filter(|r| r.balloon_caused.is_none()).collect();
            let days: f64 = controls.iter().map(|r| r.guest_secs).sum::<f64>() / 86_400.0;
            let falses: usize = controls.iter().map(|r| r.false_critical).sum();
            let would: usize = controls.iter().map(|r| r.would_deflate + r.deflated).sum();
            let reclaimed: u64 = controls.iter().filter_map(|r| r.reclaimed_mib).sum();
            let over = mine
                .iter()
                .find(|r| r.balloon_caused == Some(false))
                .map_or("-".to_owned(), |r| r.note.clone());
            // Observe never moves a balloon: its OOMs are the no-guard figures.
            let label = if mode == "observe" {
                "observe (= no guard)"
            } else {
                mode
            };
            println!(
                "| {label} | {kernel} | {ooms} of {} | {} | {falses} critical, {would} deflations in {:.0} guest s ({:.0} per day) | {reclaimed} | {over} |",
                hogs.len(),
                lead.map_or("-".to_owned(), |ms| format!("{:.1}", ms as f64 / 1000.0)),
                days * 86_400.0,
                if days > 0.0 { would as f64 / days } else { 0.0 },
            );
        }
    }
}
