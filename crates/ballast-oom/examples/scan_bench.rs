//! Benchmark of the OOM parser: one report's latency, and scan throughput over a big log.
//!
//! `scripts/bench-parser.sh` drives it and times `grep -c 'invoked oom-killer'` on
//! the same file. Subcommands:
//!
//! 1. `generate PATH [BYTES] [REPORTS] [SEED]`: writes a dmesg-style kernel log of
//!    about BYTES (default 1 GiB) of boot, driver, storage and network lines of
//!    varied length, with REPORTS (default 1000) full OOM reports spliced in at
//!    seeded random places (copies of three real fixtures, each with its own pid
//!    and time stamps). The victims' pids go to `PATH.expect`, one per line.
//!    Deterministic: the same arguments write the same bytes.
//! 2. `scan PATH [RUNS]`: per run (default 3), reads the file into memory, parses
//!    it and analyzes every report, timing each phase; prints the best of each
//!    phase and checks the reports against `PATH.expect` (exit 1 on mismatch).
//!    The first run reads into a fresh buffer, the others reuse it: both the
//!    first (`*_fresh_*`) and the best end-to-end figures are printed.
//! 3. `stream PATH [RUNS]`: end to end the way a long-running reader would do it:
//!    read 8 MiB chunks into one reused buffer and parse each chunk with the last
//!    1 MiB carried over (a report cut at a chunk end is parsed whole in the next
//!    one). Best of RUNS; checked against `PATH.expect` like `scan`.
//! 4. `founding [ITERATIONS]`: parse and analysis time of the founding report
//!    (`debian9-kvm-1g-tor.log`), averaged over ITERATIONS (default 20000).
//!
//! Output is `key=value`, one per line, for the script to read; MB are 10^6 bytes.

use std::error::Error;
use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

type BenchResult = Result<(), Box<dyn Error>>;

const FOUNDING: &str = include_str!("../tests/fixtures/oom/debian9-kvm-1g-tor.log");

/// Reports spliced into the log: (name, fixture text, weight). Each yields one report.
const TEMPLATES: [(&str, &str, u64); 3] = [
    ("debian9-kvm-1g-tor", FOUNDING, 8),
    (
        "6.11-qemu-global-rss-anon-uid-cpu",
        include_str!("../tests/fixtures/oom/6.11-qemu-global-rss-anon-uid-cpu.log"),
        1,
    ),
    (
        "5.2-memcg-v1-swap-oomkill-line",
        include_str!("../tests/fixtures/oom/5.2-memcg-v1-swap-oomkill-line.log"),
        1,
    ),
];

const DEFAULT_BYTES: u64 = 1 << 30;
const DEFAULT_REPORTS: u64 = 1000;
const DEFAULT_SEED: u64 = 0x0ba1_1a57;

fn main() -> BenchResult {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |index: usize| args.get(index).map(String::as_str);
    let number = |index: usize, default: u64| -> Result<u64, Box<dyn Error>> {
        Ok(match arg(index) {
            Some(text) => text.parse()?,
            None => default,
        })
    };
    match (arg(0), arg(1)) {
        (Some("generate"), Some(path)) => generate(
            Path::new(path),
            number(2, DEFAULT_BYTES)?,
            number(3, DEFAULT_REPORTS)?,
            number(4, DEFAULT_SEED)?,
        ),
        (Some("scan"), Some(path)) => scan(Path::new(path), number(2, 3)?),
        (Some("stream"), Some(path)) => stream(Path::new(path), number(2, 3)?),
        (Some("founding"), _) => founding(number(1, 20_000)?),
        _ => Err("usage: scan_bench generate PATH [BYTES] [REPORTS] [SEED] | scan PATH [RUNS] | stream PATH [RUNS] | founding [ITERATIONS]".into()),
    }
}

/// splitmix64: tiny, seedable, good enough to vary a log.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Writes lines with an increasing `[ seconds.micros] ` stamp and counts bytes.
struct LogWriter<W: Write> {
    out: W,
    micros: u64,
    written: u64,
    line: Vec<u8>,
}

impl<W: Write> LogWriter<W> {
    fn line(&mut self, body: &[u8]) -> std::io::Result<()> {
        self.line.clear();
        write!(
            self.line,
            "[{:5}.{:06}] ",
            self.micros / 1_000_000,
            self.micros % 1_000_000
        )?;
        self.line.extend_from_slice(body);
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        self.written += self.line.len() as u64;
        Ok(())
    }
}

fn generate(path: &Path, target_bytes: u64, reports: u64, seed: u64) -> BenchResult {
    let templates: Vec<(&str, Vec<&str>, u32, u64)> = TEMPLATES
        .iter()
        .map(|(name, text, weight)| {
            let (bodies, pid) = template(text)?;
            Ok((*name, bodies, pid, *weight))
        })
        .collect::<Result<_, Box<dyn Error>>>()?;
    let total_weight: u64 = templates.iter().map(|t| t.3).sum();
    let mut rng = Rng(seed);
    let mut log = LogWriter {
        out: BufWriter::with_capacity(1 << 20, File::create(path)?),
        micros: 1_000,
        written: 0,
        line: Vec::with_capacity(512),
    };
    let mut expect = BufWriter::new(File::create(path.with_extension("log.expect"))?);
    let spacing = target_bytes / reports.max(1);
    let mut body = Vec::with_capacity(512);
    let mut instance = String::with_capacity(16 * 1024);
    for report_index in 0..reports {
        let report_at = report_index * spacing + rng.below(spacing / 2);
        while log.written < report_at {
            body.clear();
            filler_line(&mut rng, &mut body)?;
            log.micros += rng.below(20_000);
            log.line(&body)?;
        }
        let mut pick = rng.below(total_weight);
        let (name, bodies, template_pid, _) = templates
            .iter()
            .find(|t| {
                let hit = pick < t.3;
                pick = pick.saturating_sub(t.3);
                hit
            })
            .ok_or("weights cover every pick")?;
        // Only the founding report's pid is rewritten: it appears nowhere but as the pid.
        let pid = if *name == TEMPLATES[0].0 {
            10_000 + rng.below(4_000_000) as u32
        } else {
            *template_pid
        };
        instance.clear();
        for line in bodies {
            let line = if pid == *template_pid {
                (*line).to_string()
            } else {
                line.replace(&template_pid.to_string(), &pid.to_string())
            };
            log.micros += rng.below(30);
            log.line(line.as_bytes())?;
            instance.push_str(&line);
            instance.push('\n');
        }
        check_instance(name, instance.as_bytes(), pid)?;
        writeln!(expect, "{pid}")?;
    }
    while log.written < target_bytes {
        body.clear();
        filler_line(&mut rng, &mut body)?;
        log.micros += rng.below(20_000);
        log.line(&body)?;
    }
    log.out.flush()?;
    expect.flush()?;
    println!("generated_bytes={}", log.written);
    println!("generated_reports={reports}");
    Ok(())
}

/// A fixture's lines without their `[ seconds] ` stamp, and the pid of its victim.
fn template(text: &str) -> Result<(Vec<&str>, u32), Box<dyn Error>> {
    // `[   30.745678] body` and `Jan 4 10:04:40 <host> kernel: [53542.948247] body` alike.
    let bodies: Vec<&str> = text
        .lines()
        .map(|line| line.find("] ").map_or(line, |at| &line[at + 2..]))
        .collect();
    let parsed = ballast_oom::parse(text.as_bytes());
    let [report] = parsed.reports.as_slice() else {
        return Err(format!("template has {} reports", parsed.reports.len()).into());
    };
    let pid = report.killed.as_ref().ok_or("template has a victim")?.pid;
    Ok((bodies, pid))
}

/// Each spliced report must parse alone as one report with the expected victim.
fn check_instance(name: &str, text: &[u8], pid: u32) -> BenchResult {
    let parsed = ballast_oom::parse(text);
    let victims: Vec<u32> = parsed
        .reports
        .iter()
        .filter_map(|report| report.killed.as_ref().map(|killed| killed.pid))
        .collect();
    if victims != [pid] {
        return Err(format!("{name} instance: victims {victims:?}, expected [{pid}]").into());
    }
    Ok(())
}

/// One ordinary kernel line: boot, drivers, storage, network, firewall; 20 to 300 bytes.
fn filler_line(rng: &mut Rng, out: &mut Vec<u8>) -> std::io::Result<()> {
    const IFACES: [&str; 5] = ["eth0", "ens3", "enp0s31f6", "docker0", "wlp2s0"];
    const DISKS: [&str; 4] = ["sda", "sdb", "vda", "nvme0n1"];
    const PROTOS: [&str; 3] = ["TCP", "UDP", "ICMP"];
    const SHORT: [&str; 12] = [
        "random: crng init done",
        "NET: Registered protocol family 10",
        "Segment Routing with IPv6",
        "kvm: zapping shadow pages for mmio generation wraparound",
        "nf_conntrack: default automatic helper assignment has been turned off for security reasons",
        "clocksource: Switched to clocksource tsc",
        "Freeing unused kernel image (initmem) memory: 2680K",
        "x86/fpu: Supporting XSAVE feature 0x002: 'SSE registers'",
        "systemd-journald[312]: Received client request to flush runtime journal.",
        "audit: type=1130 audit(1704362680.123:61): pid=1 uid=0 auid=4294967295 ses=4294967295 msg='unit=systemd-tmpfiles-setup comm=\"systemd\" exe=\"/usr/lib/systemd/systemd\" hostname=? addr=? terminal=? res=success'",
        "TCP: request_sock_TCP: Possible SYN flooding on port 443. Sending cookies.  Check SNMP counters.",
        "perf: interrupt took too long (2503 > 2500), lowering kernel.perf_event_max_sample_rate to 79750",
    ];
    let n = rng.next();
    match rng.below(16) {
        0..=3 => {
            // Firewall logs are the bulk of many real kern.logs, and long.
            let iface = rng.pick(&IFACES);
            write!(
                out,
                "[UFW BLOCK] IN={iface} OUT= MAC=52:54:00:{:02x}:{:02x}:{:02x}:fe:ff:ff:ff:ff:ff:08:00 SRC={}.{}.{}.{} DST=10.0.{}.{} LEN={} TOS=0x00 PREC=0x00 TTL={} ID={} PROTO={} SPT={} DPT={} WINDOW={} RES=0x00 SYN URGP=0",
                n & 0xff,
                (n >> 8) & 0xff,
                (n >> 16) & 0xff,
                (n >> 24) & 0xff,
                (n >> 32) & 0xff,
                (n >> 40) & 0xff,
                (n >> 48) & 0xff,
                n % 250,
                (n >> 8) % 250,
                40 + n % 1400,
                32 + n % 224,
                n % 65536,
                rng.pick(&PROTOS),
                1024 + (n >> 16) % 60000,
                (n >> 32) % 1024,
                (n >> 20) % 65535,
            )
        }
        4..=5 => {
            let iface = rng.pick(&IFACES);
            match n % 4 {
                0 => write!(out, "IPv6: ADDRCONF(NETDEV_CHANGE): {iface}: link becomes ready"),
                1 => write!(out, "{iface}: port {}(veth{:07x}) entered forwarding state", n % 8 + 1, n >> 36),
                2 => write!(out, "device veth{:07x} entered promiscuous mode", n >> 36),
                _ => write!(
                    out,
                    "e1000e 0000:00:{:02x}.0 {iface}: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx",
                    n % 32
                ),
            }
        }
        6..=7 => {
            let disk = rng.pick(&DISKS);
            match n % 4 {
                0 => write!(out, "EXT4-fs ({disk}{}): mounted filesystem with ordered data mode. Opts: (null)", n % 4 + 1),
                1 => write!(
                    out,
                    "sd {}:0:0:0: [{disk}] {} 512-byte logical blocks: ({}.{} GB/{}.{} GiB)",
                    n % 4,
                    (n >> 8) % 2_000_000_000,
                    n % 2000,
                    n % 10,
                    n % 1900,
                    n % 10
                ),
                2 => write!(out, "blk_update_request: I/O error, dev {disk}, sector {} op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 0", n >> 20),
                _ => write!(out, "EXT4-fs ({disk}1): re-mounted. Opts: errors=remount-ro"),
            }
        }
        8..=9 => write!(
            out,
            "audit: type=1400 audit({}.{:03}:{}): apparmor=\"DENIED\" operation=\"open\" profile=\"/usr/sbin/cupsd\" name=\"/etc/ssl/openssl.cnf\" pid={} comm=\"cupsd\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0",
            1_704_000_000 + n % 1_000_000,
            n % 1000,
            n % 10_000,
            n % 4_000_000
        ),
        10 => write!(
            out,
            "pci 0000:00:{:02x}.{}: [8086:{:04x}] type 00 class 0x{:06x}",
            n % 32,
            n % 8,
            (n >> 16) & 0xffff,
            (n >> 32) & 0xffffff
        ),
        11 => write!(
            out,
            "usb {}-{}: new high-speed USB device number {} using xhci_hcd",
            n % 4 + 1,
            n % 8 + 1,
            n % 128
        ),
        _ => out.write_all(rng.pick(&SHORT).as_bytes()),
    }
}

/// Best (shortest) of the runs.
fn best(times: &[Duration]) -> Duration {
    times.iter().copied().min().unwrap_or_default()
}

fn mb_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64().max(1e-9)
}

fn scan(path: &Path, runs: u64) -> BenchResult {
    let expected = read_expect(path)?;
    let (mut reads, mut scans, mut analyses, mut totals) = (vec![], vec![], vec![], vec![]);
    let mut victims = Vec::new();
    let mut n_reports = 0;
    // The first run reads into a fresh allocation (page faults included), later runs
    // reuse that buffer, as a long-running reader would.
    let mut input = Vec::new();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        input.clear();
        let mut file = File::open(path)?;
        input.reserve(usize::try_from(file.metadata()?.len())?);
        file.read_to_end(&mut input)?;
        let read = start.elapsed();
        let parsed = ballast_oom::parse(&input);
        let scanned = start.elapsed();
        for report in &parsed.reports {
            black_box(ballast_oom::analyze(report, None));
        }
        let total = start.elapsed();
        reads.push(read);
        scans.push(scanned - read);
        analyses.push(total - scanned);
        totals.push(total);
        n_reports = parsed.reports.len();
        victims = parsed
            .reports
            .iter()
            .map(|report| report.killed.as_ref().map_or(0, |killed| killed.pid))
            .collect();
    }
    let bytes = input.len();
    println!("file_bytes={bytes}");
    println!("reports={n_reports}");
    println!("read_fresh_secs={:.4}", reads[0].as_secs_f64());
    println!("read_secs={:.4}", best(&reads).as_secs_f64());
    println!("scan_secs={:.4}", best(&scans).as_secs_f64());
    println!("analyze_all_secs={:.4}", best(&analyses).as_secs_f64());
    println!("end_to_end_fresh_secs={:.4}", totals[0].as_secs_f64());
    println!("end_to_end_secs={:.4}", best(&totals).as_secs_f64());
    println!("read_mb_per_s={:.1}", mb_per_s(bytes, best(&reads)));
    println!("scan_mb_per_s={:.1}", mb_per_s(bytes, best(&scans)));
    println!(
        "end_to_end_fresh_mb_per_s={:.1}",
        mb_per_s(bytes, totals[0])
    );
    println!("end_to_end_mb_per_s={:.1}", mb_per_s(bytes, best(&totals)));
    if let Some(expected) = expected {
        if victims != expected {
            let first_difference = victims
                .iter()
                .zip(&expected)
                .position(|(got, want)| got != want);
            return Err(format!(
                "found {} reports, expected {}; first differing report: {first_difference:?}",
                victims.len(),
                expected.len()
            )
            .into());
        }
        println!("verified_reports={}", expected.len());
    }
    Ok(())
}

/// Bytes read per chunk by `stream`.
const STREAM_CHUNK_BYTES: usize = 8 << 20;
/// Bytes at the end of a chunk parsed again at the start of the next one; reports are far smaller.
const STREAM_CARRY_BYTES: usize = 1 << 20;

fn stream(path: &Path, runs: u64) -> BenchResult {
    let expected = read_expect(path)?;
    let mut times = Vec::new();
    let mut victims = Vec::new();
    let mut bytes = 0;
    let mut buffer = vec![0u8; STREAM_CARRY_BYTES + STREAM_CHUNK_BYTES];
    for _ in 0..runs.max(1) {
        victims.clear();
        let start = Instant::now();
        let mut file = File::open(path)?;
        // Absolute offset of buffer[0], bytes carried at its start, end of the last report kept.
        let (mut base, mut carried, mut covered_until) = (0usize, 0usize, 0usize);
        loop {
            let mut filled = carried;
            while filled < buffer.len() {
                let read = file.read(&mut buffer[filled..])?;
                if read == 0 {
                    break;
                }
                filled += read;
            }
            let at_end = filled < buffer.len();
            let text = &buffer[..filled];
            // The next chunk starts at the first line of the carried tail.
            let boundary = if at_end {
                filled
            } else {
                memchr::memrchr(b'\n', &text[..filled - STREAM_CARRY_BYTES]).map_or(0, |at| at + 1)
            };
            for report in ballast_oom::parse(text).reports {
                let (start_byte, end_byte) =
                    (base + report.span.start_byte, base + report.span.end_byte);
                if report.span.start_byte < boundary && start_byte >= covered_until {
                    black_box(ballast_oom::analyze(&report, None));
                    victims.push(report.killed.as_ref().map_or(0, |killed| killed.pid));
                    covered_until = end_byte;
                }
            }
            if at_end {
                bytes = base + filled;
                break;
            }
            buffer.copy_within(boundary..filled, 0);
            carried = filled - boundary;
            base += boundary;
        }
        times.push(start.elapsed());
    }
    println!("stream_secs={:.4}", best(&times).as_secs_f64());
    println!("stream_mb_per_s={:.1}", mb_per_s(bytes, best(&times)));
    println!("stream_reports={}", victims.len());
    if let Some(expected) = expected {
        if victims != expected {
            return Err(format!(
                "stream found {} reports, expected {}",
                victims.len(),
                expected.len()
            )
            .into());
        }
        println!("stream_verified_reports={}", expected.len());
    }
    Ok(())
}

fn read_expect(path: &Path) -> Result<Option<Vec<u32>>, Box<dyn Error>> {
    match std::fs::read_to_string(path.with_extension("log.expect")) {
        Ok(text) => Ok(Some(
            text.lines().map(str::parse).collect::<Result<_, _>>()?,
        )),
        Err(_) => Ok(None),
    }
}

fn founding(iterations: u64) -> BenchResult {
    let input = FOUNDING.as_bytes();
    let iterations = iterations.max(1);
    let parsed = ballast_oom::parse(input);
    let [report] = parsed.reports.as_slice() else {
        return Err("the founding fixture holds one report".into());
    };
    // Warm up caches and the lazily built searchers.
    for _ in 0..100 {
        black_box(ballast_oom::analyze(black_box(report), None));
        black_box(ballast_oom::parse(black_box(input)));
    }
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(ballast_oom::parse(black_box(input)));
    }
    let parse = start.elapsed();
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(ballast_oom::analyze(black_box(report), None));
    }
    let analyze = start.elapsed();
    let start = Instant::now();
    for _ in 0..iterations {
        let parsed = ballast_oom::parse(black_box(input));
        for report in &parsed.reports {
            black_box(ballast_oom::analyze(report, None));
        }
    }
    let both = start.elapsed();
    let per = |total: Duration| total.as_secs_f64() * 1e6 / iterations as f64;
    println!("founding_bytes={}", input.len());
    println!("founding_iterations={iterations}");
    println!("founding_parse_us={:.2}", per(parse));
    println!("founding_analyze_us={:.2}", per(analyze));
    println!("founding_parse_analyze_us={:.2}", per(both));
    Ok(())
}
