//! The real-VM verdict suite (issue 17 item 3): OOM scenarios on real guests, each run
//! through the real agent and collector, then re-run with the balloon at maximum. The
//! verdict checked is the one the COLLECTOR STORES (`/api/v1/ooms`: `report_verdict`
//! and `correlation.verdict`): where it says `balloon` the re-run must not OOM, where it
//! says anything else the re-run must OOM again.
//!
//! One guest serves every scenario of a kernel (between scenarios: hogs killed, balloon
//! back at maximum). By default (CI) it runs, on one 6.1 guest:
//! * `hold_then_inflate`: a hog holds 320 MiB of 512, the balloon stalls on its way to
//!   200 MiB, a bystander's allocation OOMs: `balloon`, no OOM at maximum;
//! * `grow_past_maximum`: a hog grows without bound with the balloon at maximum:
//!   `overcommit`, OOM again;
//! * `memcg_limit`: the balloon holds 128 MiB, a hog in a cgroup v2 group with
//!   `memory.max` 128 MiB: `memcg_limit`, never the balloon's, OOM again;
//! * `fragmentation`: fraghog (guest/fraghog.c) locks most memory, pins every other
//!   page of a run of pipe pages and asks for order-2 pipe rings, which fail with
//!   MiBs free in single pages: `fragmentation`, OOM again.
//!
//! `BALLAST_VERDICT_SUITE=full` (scripts/bench-verdicts.sh) runs the whole matrix on the
//! 6.1 and 6.12 guests: also inflate-then-grow (fits in the full VM: `balloon`; grows
//! past the maximum: `overcommit`) and deflate-on-oom on an `autodeflate` guest
//! (whatever is stored, checked against its re-run).
//! `BALLAST_VERDICT_SUITE=fragmentation,memcg_limit` (scenario names) runs just those
//! on a 6.1 guest (`BALLAST_VERDICT_KERNEL=6.12`: a 6.12 guest). `BALLAST_VERDICT_TABLE=<file>` writes the table as
//! Markdown rows there. Every row is checked; the test fails after the whole table is
//! printed when any row's counterfactual run contradicts its stored verdict.
//!
//! Outside CI it skips loudly when the machine cannot run guests; in CI it fails.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ballast_tests::stack::{start_agent, start_collector, Collector};
use ballast_tests::{http_get, wait_until, Daemon};
use ballast_testvm::{lab_or_skip, scenario, Guest, GuestKernel, GuestSpec, Lab};
use serde_json::Value;

const HOST: &str = "verdict-suite-host";
const MAXIMUM_MIB: u64 = 512;
const MIB: u64 = 1024;
/// How long a counterfactual run that holds its size is watched for an OOM.
const OBSERVE: Duration = Duration::from_secs(30);
/// How long fraghog may take to fill, fragment and fail (host time; TCG under load).
const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(300);

fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    match http_get(addr, path, None) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// The scenarios, in the order they run on one guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    HoldThenInflate,
    InflateThenGrowFits,
    GrowPastMaximum,
    InflateThenGrowPastMaximum,
    MemcgLimit,
    DeflateOnOom,
    Fragmentation,
}

impl Scenario {
    const ALL: [Scenario; 7] = [
        Scenario::HoldThenInflate,
        Scenario::InflateThenGrowFits,
        Scenario::GrowPastMaximum,
        Scenario::InflateThenGrowPastMaximum,
        Scenario::MemcgLimit,
        Scenario::DeflateOnOom,
        Scenario::Fragmentation,
    ];

    /// The name `BALLAST_VERDICT_SUITE` takes to run this scenario alone.
    fn id(self) -> &'static str {
        self.name().split_whitespace().nth(1).unwrap_or_default()
    }

    /// Needs a guest with `autodeflate`.
    fn autodeflate(self) -> bool {
        self == Scenario::DeflateOnOom
    }

    fn name(self) -> &'static str {
        match self {
            Scenario::HoldThenInflate => {
                "a hold_then_inflate (hold 320 MiB, balloon to 200 MiB stalls, bystander)"
            }
            Scenario::InflateThenGrowFits => {
                "b inflate_then_grow_fits (balloon 200 MiB, hog holds 288 MiB)"
            }
            Scenario::GrowPastMaximum => "b grow_past_maximum (balloon at maximum, hog unbounded)",
            Scenario::InflateThenGrowPastMaximum => {
                "b inflate_then_grow_past_maximum (balloon 384 MiB, hog unbounded)"
            }
            Scenario::MemcgLimit => {
                "d memcg_limit (balloon 384 MiB, memory.max 128 MiB, hog holds 256 MiB)"
            }
            Scenario::DeflateOnOom => {
                "c deflate_on_oom (autodeflate, balloon 200 MiB, hog unbounded)"
            }
            Scenario::Fragmentation => {
                "e fragmentation (balloon at maximum; fraghog: anon locked, every other pipe page freed, order-2 pipe rings)"
            }
        }
    }

    /// The stored verdicts this scenario must get, where the issue fixes them:
    /// (report verdict, correlation verdict); None leaves it to the counterfactual.
    fn expected(self) -> (Option<&'static str>, Option<&'static str>) {
        match self {
            Scenario::HoldThenInflate | Scenario::InflateThenGrowFits => {
                (Some("balloon"), Some("balloon"))
            }
            // A working set above the VM's maximum with the balloon empty: the issue's
            // overcommit.
            Scenario::GrowPastMaximum => (Some("overcommit"), None),
            // The same hog under a balloon holding 128 MiB is killed at ~128 MiB less:
            // returning the balloon's pages covers what it lacked at THAT kill, and the
            // hog's later growth past the maximum is not in any report (at the kill it
            // looks exactly like the hog of inflate_then_grow_fits). So `balloon`, and
            // the re-run must show the OOM postponed past the balloon's pages.
            Scenario::InflateThenGrowPastMaximum => (Some("balloon"), Some("balloon")),
            Scenario::MemcgLimit => (Some("memcg_limit"), None),
            Scenario::Fragmentation => (Some("fragmentation"), None),
            Scenario::DeflateOnOom => (None, None),
        }
    }

    /// Runs the scenario from a reset guest; returns its kill line.
    fn run(self, guest: &Guest) -> Option<String> {
        match self {
            Scenario::HoldThenInflate => {
                let outcome =
                    scenario::hold_then_inflate(guest, 320, 200, Duration::from_secs(120))
                        .expect("hold then inflate");
                // The scenario is a stalled balloon: without the stall it is another one.
                assert!(
                    outcome.out_of_puff,
                    "the balloon never stalled: {outcome:?}"
                );
                outcome.kill_line
            }
            Scenario::InflateThenGrowFits => {
                inflate_and_settle(guest, 200);
                scenario::grow(guest, Some(288), OBSERVE).expect("inflate then grow")
            }
            Scenario::GrowPastMaximum => scenario::grow(guest, None, OBSERVE).expect("grow"),
            Scenario::InflateThenGrowPastMaximum => {
                inflate_and_settle(guest, 384);
                scenario::grow(guest, None, OBSERVE).expect("inflate then grow")
            }
            Scenario::MemcgLimit => {
                inflate_and_settle(guest, 384);
                scenario::memcg_grow(guest, 128, 256, OBSERVE).expect("memcg grow")
            }
            Scenario::DeflateOnOom => {
                inflate_and_settle(guest, 200);
                scenario::grow(guest, None, OBSERVE).expect("grow")
            }
            // At maximum: fraghog sizes itself by MemFree, so under an inflated balloon
            // its re-run would not be the same workload.
            Scenario::Fragmentation => {
                scenario::fragment(guest, 96, 64, FRAGMENT_TIMEOUT).expect("fragment")
            }
        }
    }

    /// The same workload with the balloon at maximum (the guest was reset).
    fn rerun_at_maximum(self, guest: &Guest) -> Option<String> {
        match self {
            Scenario::HoldThenInflate => {
                scenario::hold_then_trigger(guest, 320, OBSERVE).expect("hold then trigger")
            }
            Scenario::InflateThenGrowFits => {
                scenario::grow(guest, Some(288), OBSERVE).expect("grow at maximum")
            }
            Scenario::GrowPastMaximum
            | Scenario::InflateThenGrowPastMaximum
            | Scenario::DeflateOnOom => scenario::grow(guest, None, OBSERVE).expect("grow"),
            Scenario::MemcgLimit => {
                scenario::memcg_grow(guest, 128, 256, OBSERVE).expect("memcg grow at maximum")
            }
            Scenario::Fragmentation => {
                scenario::fragment(guest, 96, 64, FRAGMENT_TIMEOUT).expect("fragment")
            }
        }
    }
}

/// Inflates to `target_mib`, then lets the agent take a few samples of it (it polls
/// every 2 s) so that the balloon at the OOM is a sample from before the kill.
fn inflate_and_settle(guest: &Guest, target_mib: u64) {
    scenario::inflate(guest, target_mib).expect("balloon inflates");
    // The scenario: samples of the inflated balloon must predate the kill.
    std::thread::sleep(Duration::from_secs(6));
}

/// One row of the table.
struct Row {
    kernel: &'static str,
    scenario: Scenario,
    report_verdict: String,
    correlation_verdict: String,
    /// "no OOM in Ns" or "OOM again".
    rerun: String,
    /// What contradicts the rules, if anything.
    problem: Option<String>,
}

/// The collector, the agent and the OOMs already accounted for.
struct Stack {
    collector: Collector,
    agent_dir: std::path::PathBuf,
    seen: HashSet<String>,
}

impl Stack {
    /// Waits until the agent lists `guest` in its status.
    fn wait_for_guest(&self, guest: &Guest) {
        wait_until(
            "the agent to see the guest",
            Duration::from_secs(120),
            || {
                std::fs::read_to_string(self.agent_dir.join("status.json"))
                    .ok()
                    .filter(|status| status.contains(guest.name()))
            },
        );
    }

    /// The next stored OOM of `guest` that killed a task and was not seen before: (list
    /// item, detail). Marks it seen.
    fn next_oom(&mut self, guest: &Guest) -> (Value, Value) {
        let seen = &self.seen;
        let addr = self.collector.addr;
        let item = wait_until(
            "the collector to store the OOM",
            Duration::from_secs(120),
            || {
                get_json(addr, "/api/v1/ooms?limit=200")?["items"]
                    .as_array()?
                    .iter()
                    .find(|item| {
                        item["vm"]["name"] == guest.name()
                            && item["killed"]["comm"].is_string()
                            && item["link"].as_str().is_some_and(|l| !seen.contains(l))
                    })
                    .cloned()
            },
        );
        let link = item["link"].as_str().expect("link").to_string();
        let detail = get_json(addr, &link).expect("OOM detail");
        self.seen.insert(link);
        (item, detail)
    }
}

/// Runs `scenarios` on `guest` and returns their rows.
fn run_scenarios(
    stack: &mut Stack,
    guest: &Guest,
    kernel: &'static str,
    scenarios: &[Scenario],
) -> Vec<Row> {
    let mut rows = Vec::new();
    for &scenario in scenarios {
        let started = Instant::now();
        scenario::reset(guest, MAXIMUM_MIB).expect("reset");
        // The scenario: a few polls of the full balloon before it moves (a history for
        // the correlation), not a wait for anything.
        std::thread::sleep(Duration::from_secs(5));
        let kill = scenario.run(guest);
        let Some(kill) = kill else {
            rows.push(Row {
                kernel,
                scenario,
                report_verdict: "(no OOM)".into(),
                correlation_verdict: "-".into(),
                rerun: "-".into(),
                problem: Some("the scenario gave no OOM".into()),
            });
            continue;
        };
        eprintln!("[{kernel}] {}: {kill}", scenario.name());
        let (item, detail) = stack.next_oom(guest);
        let report_verdict = item["report_verdict"].as_str().unwrap_or("null").to_owned();
        let correlation_verdict = item["correlation"]["verdict"]
            .as_str()
            .unwrap_or("null")
            .to_owned();
        eprintln!(
            "[{kernel}] stored: report {report_verdict}, correlation {correlation_verdict}, detail {:#}, balloon_at_oom {:#}",
            detail["correlation_detail"], detail["balloon_at_oom"]
        );

        scenario::reset(guest, MAXIMUM_MIB).expect("reset to maximum");
        let rerun_started = Instant::now();
        let rerun_kill = scenario.rerun_at_maximum(guest);
        let rerun = match &rerun_kill {
            Some(line) => {
                eprintln!("[{kernel}] re-run at maximum: {line}");
                // Account for it, so that the next scenario does not take it for its own.
                stack.next_oom(guest);
                "OOM again".to_owned()
            }
            None => format!("no OOM in {} s", rerun_started.elapsed().as_secs()),
        };

        let mut problems = Vec::new();
        let (want_report, want_correlation) = scenario.expected();
        if let Some(want) = want_report {
            if report_verdict != want {
                problems.push(format!("report verdict {report_verdict}, want {want}"));
            }
        }
        if let Some(want) = want_correlation {
            if correlation_verdict != want {
                problems.push(format!(
                    "correlation verdict {correlation_verdict}, want {want}"
                ));
            }
        }
        if scenario == Scenario::MemcgLimit
            && matches!(
                correlation_verdict.as_str(),
                "balloon" | "balloon_contributed"
            )
        {
            problems.push(format!(
                "a memcg limit stored as {correlation_verdict}: never the balloon's"
            ));
        }
        if scenario == Scenario::HoldThenInflate {
            problems.extend(stalled_balloon_problems(&detail));
        }
        let said_balloon = correlation_verdict == "balloon" || report_verdict == "balloon";
        let mut rerun = rerun;
        if let (true, Some(rerun_line)) = (said_balloon, &rerun_kill) {
            // A balloon verdict is about the OOM at that demand: at maximum that OOM must
            // not come. One that comes only once the hog grew past the balloon's pages is
            // another OOM (a workload that never stops outgrows any size).
            let held = detail["correlation_detail"]["balloon_held_kb"]
                .as_u64()
                .unwrap_or(0);
            match (anon_rss_kb(&kill), anon_rss_kb(rerun_line)) {
                (Some(first), Some(again)) if held >= 16 * MIB && again >= first + held / 2 => {
                    rerun = format!(
                        "no OOM at the first kill's size; OOM again past it (killed at {} MiB, was {} MiB; the balloon held {} MiB)",
                        again / MIB,
                        first / MIB,
                        held / MIB
                    );
                }
                (first, again) => problems.push(format!(
                    "verdict balloon, yet the OOM came again at maximum (killed at {again:?} kB, was {first:?} kB, the balloon held {held} KiB)"
                )),
            }
        }
        if !said_balloon && rerun_kill.is_none() {
            problems.push(format!(
                "verdict {report_verdict}/{correlation_verdict}, yet no OOM at maximum"
            ));
        }
        eprintln!(
            "[{kernel}] {} done in {} s",
            scenario.name(),
            started.elapsed().as_secs()
        );
        rows.push(Row {
            kernel,
            scenario,
            report_verdict,
            correlation_verdict,
            rerun,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
        });
    }
    rows
}

/// The killed task's `anon-rss:NkB` on a kill line.
fn anon_rss_kb(kill_line: &str) -> Option<u64> {
    let (_, rest) = kill_line.split_once("anon-rss:")?;
    rest.split_once("kB")?.0.trim().parse().ok()
}

/// What is wrong with the stored balloon of a stalled inflation: it must be measured
/// before the kill, never the size the balloon reached once the kill freed memory nor
/// the 200 MiB target; when the agent has no host sample before the kill (full to stall
/// to kill within one sample interval), the report's reserved pages stand in, or the
/// collector's own host history of the balloon under the same rule. The stalled
/// balloon held well under the 312 MiB of its target, and deflated it would have
/// covered the shortfall.
fn stalled_balloon_problems(detail: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    match detail["balloon_at_oom"]["actual_kib"].as_u64() {
        Some(actual) => {
            if actual <= 200 * MIB + 16 * MIB {
                problems.push(format!(
                    "balloon actual {actual} KiB at the OOM: the 200 MiB target or a sample after the kill"
                ));
            }
            let sampled_at = detail["balloon_at_oom"]["sampled_at_ms"].as_i64();
            // Serial capture bounds the kill in time.
            if let (Some(sampled_at), Some(kill_after)) = (
                sampled_at,
                detail["balloon_at_oom"]["kill_after_ms"].as_i64(),
            ) {
                if sampled_at >= kill_after {
                    problems.push(format!(
                        "balloon sampled at {sampled_at}, not before the kill ({kill_after})"
                    ));
                }
            }
        }
        None => {
            // Without the agent's pre-kill sample, the collector takes the report's
            // reserved pages, or its own host history of the balloon, under the same
            // rule: never the target nor a size reached after the kill.
            let correlation = &detail["correlation_detail"];
            let from_history_before_the_kill = correlation["held_source"] == "host_history"
                && correlation["actual_kib"]
                    .as_u64()
                    .is_some_and(|actual| actual > 200 * MIB + 16 * MIB);
            if correlation["held_source"] != "report" && !from_history_before_the_kill {
                problems.push(format!(
                    "no balloon_at_oom, and the held figure is neither the report's nor a host sample above the target (held_source {}, actual_kib {})",
                    correlation["held_source"], correlation["actual_kib"]
                ));
            }
        }
    }
    match detail["correlation_detail"]["balloon_held_kb"].as_u64() {
        Some(held) if (64 * MIB..200 * MIB).contains(&held) => {}
        held => problems.push(format!(
            "the stalled balloon held {held:?} KiB, not well under its 312 MiB target"
        )),
    }
    if detail["correlation_detail"]["would_have_survived"] != true {
        problems.push("would_have_survived is not true".into());
    }
    problems
}

/// Boots a `kernel` guest (`autodeflate` as asked) and waits for it and the agent.
fn boot(lab: &'static Lab, stack: &Stack, kernel: GuestKernel, autodeflate: bool) -> Guest {
    let guest = lab
        .boot(GuestSpec {
            memory_mib: MAXIMUM_MIB,
            current_mib: MAXIMUM_MIB,
            stats_period_secs: 2,
            autodeflate,
            kernel,
            ..GuestSpec::default()
        })
        .expect("guest boots");
    guest
        .wait_ready(Duration::from_secs(240))
        .expect("guest ready");
    stack.wait_for_guest(&guest);
    guest
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| kernel | scenario | stored report verdict | stored correlation verdict | re-run at maximum | check |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.kernel,
            row.scenario.name(),
            row.report_verdict,
            row.correlation_verdict,
            row.rerun,
            row.problem.as_deref().unwrap_or("ok"),
        ));
    }
    out
}

#[test]
fn every_stored_verdict_matches_its_counterfactual_run_at_maximum() {
    let Some(lab) = lab_or_skip("every_stored_verdict_matches_its_counterfactual_run_at_maximum")
    else {
        return;
    };
    let started = Instant::now();
    let suite = std::env::var("BALLAST_VERDICT_SUITE").unwrap_or_else(|_| "ci".to_owned());
    let root = std::env::temp_dir().join(format!("ballast-verdicts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let collector = start_collector(&root.join("collector"), HOST, "storage:\n  type: sqlite\n");
    let agent_dir = root.join("agent");
    let agent: Daemon = start_agent(&agent_dir, HOST, &collector);
    let mut stack = Stack {
        collector,
        agent_dir,
        seen: HashSet::new(),
    };

    let mut rows = Vec::new();
    let kernels: &[(GuestKernel, &'static str)] = match suite.as_str() {
        "full" => &[
            (GuestKernel::Debian61, "6.1"),
            (GuestKernel::Backports612, "6.12"),
        ],
        _ if std::env::var("BALLAST_VERDICT_KERNEL").is_ok_and(|k| k == "6.12") => {
            &[(GuestKernel::Backports612, "6.12")]
        }
        _ => &[(GuestKernel::Debian61, "6.1")],
    };
    let scenarios: Vec<Scenario> = match suite.as_str() {
        "full" => Scenario::ALL.to_vec(),
        "ci" => vec![
            Scenario::HoldThenInflate,
            Scenario::GrowPastMaximum,
            Scenario::MemcgLimit,
            Scenario::Fragmentation,
        ],
        id => {
            let chosen: Vec<Scenario> = Scenario::ALL
                .into_iter()
                .filter(|s| id.split(',').any(|want| want == s.id()))
                .collect();
            assert!(
                !chosen.is_empty(),
                "BALLAST_VERDICT_SUITE={id}: ci, full or scenario names ({:?})",
                Scenario::ALL.map(Scenario::id)
            );
            chosen
        }
    };
    for &(kernel, label) in kernels {
        for autodeflate in [false, true] {
            let group: Vec<Scenario> = scenarios
                .iter()
                .copied()
                .filter(|s| s.autodeflate() == autodeflate)
                .collect();
            if group.is_empty() {
                continue;
            }
            let guest = boot(lab, &stack, kernel, autodeflate);
            rows.extend(run_scenarios(&mut stack, &guest, label, &group));
        }
    }
    let table = table(&rows);
    eprintln!(
        "\nReal-VM verdict suite ({} s):\n{table}",
        started.elapsed().as_secs()
    );
    if let Ok(path) = std::env::var("BALLAST_VERDICT_TABLE") {
        std::fs::write(Path::new(&path), &table).expect("table file");
    }
    agent.stop();
    stack.collector.daemon.stop();
    let _ = std::fs::remove_dir_all(&root);
    let problems: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            row.problem
                .as_ref()
                .map(|p| format!("[{}] {}: {p}", row.kernel, row.scenario.name()))
        })
        .collect();
    assert!(problems.is_empty(), "{}\n{table}", problems.join("\n"));
}
