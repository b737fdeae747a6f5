//! One command for the side-by-side table: the machine's floors (disk direct-I/O bandwidth and
//! fdatasync latency, loopback ping-pong) and the broker driven by loadgen and by a librdkafka
//! producer, in durable and in relaxed mode, all measured in this run; written as a Markdown
//! table with the ratios the performance targets are stated in. Runs the sibling release
//! binaries (`cargo build --release -p broker -p loadgen -p bench` first).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use clap::Parser;

#[derive(Parser)]
#[command(about = "Measure floors and broker figures in one run and write the results table")]
struct Args {
    /// Scratch directory on the disk to measure (removed and recreated).
    #[arg(long, default_value = "./bench-data")]
    dir: PathBuf,
    /// Seconds per measured load run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Where to write the table.
    #[arg(long, default_value = "bench/RESULTS.md")]
    output: PathBuf,
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|error| error.to_string())?;
    let path = exe.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: cargo build --release -p broker -p loadgen -p bench",
            path.display()
        ))
    }
}

/// Where the processes run: the broker on its own core(s), the clients (loadgen, librdkafka,
/// the floors) on the others, so that the broker's figures are not its clients' CPU time.
struct Pinning {
    broker_cores: Option<String>,
    client_cores: Option<String>,
}

impl Pinning {
    /// The broker on the last core this process may use, everything else on the rest; nothing
    /// pinned on a one-core machine.
    fn split() -> Pinning {
        let cores = shards::cpu::allowed_cores();
        match cores.split_last() {
            Some((last, rest)) if !rest.is_empty() => Pinning {
                broker_cores: Some(last.to_string()),
                client_cores: Some(
                    rest.iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            },
            _ => Pinning {
                broker_cores: None,
                client_cores: None,
            },
        }
    }
}

static PINNING: std::sync::OnceLock<Pinning> = std::sync::OnceLock::new();

fn pinning() -> &'static Pinning {
    PINNING.get_or_init(Pinning::split)
}

/// A sibling binary, on the client cores when there are any (through `taskset`).
fn client_command(binary: &str) -> Result<Command, String> {
    let path = sibling(binary)?;
    Ok(match &pinning().client_cores {
        Some(cores) => {
            let mut command = Command::new("taskset");
            command.args(["-c", cores]).arg(path);
            command
        }
        None => Command::new(path),
    })
}

/// Runs a sibling binary on the client cores; its stdout and stderr, or why it failed.
fn run(binary: &str, args: &[String]) -> Result<String, String> {
    run_command(client_command(binary)?, binary, args)
}

fn run_command(mut command: Command, binary: &str, args: &[String]) -> Result<String, String> {
    let output = command
        .args(args)
        .output()
        .map_err(|error| error.to_string())?;
    let mut text = String::from_utf8_lossy(&output.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        return Err(format!("{binary} {args:?} failed:\n{text}"));
    }
    Ok(text)
}

/// A summary loadgen wrote with `--json`.
fn read_json(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The number right after `key` in `text` (such as `p99.9 524 us`).
fn number_after(text: &str, key: &str) -> Option<f64> {
    let at = text.find(key)? + key.len();
    text[at..]
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|part| !part.is_empty())?
        .parse()
        .ok()
}

struct Floors {
    disk_mib_s: f64,
    /// Writes each followed by its fdatasync, 4 files at once: durable mode's own ceiling.
    synced_mib_s: f64,
    fsync_p99_9_us: f64,
    /// The log's own pattern: a sync after appending into preallocated space.
    append_fsync_p99_9_us: f64,
    /// The same with four logs appending and syncing at once, as the runs below do.
    concurrent_fsync_p99_9_us: f64,
    /// A 4 KiB direct write alone: what a relaxed acknowledgement waits for.
    write_p99_9_us: f64,
    /// The same while fdatasync runs back to back, as a log's writer overlaps its syncer.
    write_behind_syncs_p99_9_us: f64,
    ping_p99_us: f64,
    ping_p99_9_us: f64,
    /// What `hiccups` saw, every core spinning at once.
    pauses: Pauses,
}

/// The waits, in us, `hiccups` reports the share of time for.
const PAUSE_THRESHOLDS_US: [f64; 4] = [250.0, 500.0, 1000.0, 2000.0];

/// The machine's own pauses of a spinning thread (`hiccups`), every core measured at once.
#[derive(Clone, Default)]
struct Pauses {
    /// Pauses over 1 ms per second, summed over the cores.
    over_1ms_per_second: f64,
    longest_us: f64,
    /// For each core, the share of time (in %) a request arriving at a random moment would
    /// wait longer than each of `PAUSE_THRESHOLDS_US` for it.
    beyond_percent: Vec<(usize, [f64; 4])>,
}

impl Pauses {
    fn parse(text: &str) -> Result<Pauses, String> {
        let mut pauses = Pauses::default();
        for line in text.lines().filter(|line| line.starts_with("core ")) {
            let unreadable = || format!("unreadable hiccups line: {line}");
            let core = number_after(line, "core ").ok_or_else(unreadable)? as usize;
            pauses.over_1ms_per_second +=
                number_after(line, "over 1 ms (").ok_or_else(unreadable)?;
            pauses.longest_us = pauses
                .longest_us
                .max(number_after(line, "longest ").ok_or_else(unreadable)?);
            let waits = line
                .split_once("would wait ")
                .map(|(_, waits)| waits)
                .ok_or_else(unreadable)?;
            let mut shares = [0.0; 4];
            for (share, threshold) in shares.iter_mut().zip(PAUSE_THRESHOLDS_US) {
                *share = number_after(waits, &format!("over {threshold:.0} us "))
                    .ok_or_else(unreadable)?;
            }
            pauses.beyond_percent.push((core, shares));
        }
        if pauses.beyond_percent.is_empty() {
            return Err(format!("unreadable: {text}"));
        }
        Ok(pauses)
    }

    /// The worse of two measurements, figure by figure.
    fn worse(self, other: Pauses) -> Pauses {
        let mut beyond_percent = self.beyond_percent.clone();
        for (core, shares) in &other.beyond_percent {
            match beyond_percent.iter_mut().find(|(known, _)| known == core) {
                Some((_, known)) => {
                    for (known, share) in known.iter_mut().zip(shares) {
                        *known = known.max(*share);
                    }
                }
                None => beyond_percent.push((*core, *shares)),
            }
        }
        Pauses {
            over_1ms_per_second: self.over_1ms_per_second.max(other.over_1ms_per_second),
            longest_us: self.longest_us.max(other.longest_us),
            beyond_percent,
        }
    }

    /// The share of time (in %) a request using `cores` (all of them when `None`) would wait
    /// for one of them longer than `wait_us`, as a lower bound: the share for the smallest
    /// measured threshold at or above `wait_us`, with that threshold. `None` past the largest.
    fn beyond(&self, cores: Option<&str>, wait_us: f64) -> Option<(f64, f64)> {
        let index = PAUSE_THRESHOLDS_US
            .iter()
            .position(|threshold| *threshold >= wait_us)?;
        let wanted: Option<Vec<usize>> = cores.map(|list| {
            list.split(',')
                .filter_map(|core| core.trim().parse().ok())
                .collect()
        });
        let share = self
            .beyond_percent
            .iter()
            .filter(|(core, _)| wanted.as_ref().is_none_or(|wanted| wanted.contains(core)))
            .map(|(_, shares)| shares[index])
            .sum();
        Some((PAUSE_THRESHOLDS_US[index], share))
    }

    /// The share of time a request would wait over 1 ms for some core.
    fn beyond_1ms_percent(&self) -> f64 {
        self.beyond(None, 1000.0).map_or(0.0, |(_, share)| share)
    }
}

fn floors(dir: &Path) -> Result<Floors, String> {
    let disk = run(
        "disk-ceiling",
        &[
            "--dir".into(),
            dir.join("disk").display().to_string(),
            "--syncs".into(),
            "2000".into(),
        ],
    )?;
    let ping = run("pingpong", &["--round-trips".into(), "50000".into()])?;
    // Unpinned: it pins a thread to every core itself.
    let hiccups = run_command(
        Command::new(sibling("hiccups")?),
        "hiccups",
        &["--seconds".into(), "10".into()],
    )?;
    let unreadable = || format!("unreadable: {disk}");
    let disk_number = |key: &str| number_after(&disk, key).ok_or_else(unreadable);
    // The p99.9 of the disk-ceiling line that `label` begins.
    let p99_9_after = |label: &str| {
        disk.split_once(label)
            .and_then(|(_, after)| number_after(after, "p99.9"))
            .ok_or_else(unreadable)
    };
    Ok(Floors {
        disk_mib_s: disk_number("sequential write:")?,
        synced_mib_s: disk_number("synced writes:")?,
        fsync_p99_9_us: disk_number("p99.9")?,
        append_fsync_p99_9_us: p99_9_after("preallocated space:")?,
        concurrent_fsync_p99_9_us: p99_9_after("logs at once:")?,
        write_p99_9_us: p99_9_after("direct write over written blocks:")?,
        write_behind_syncs_p99_9_us: p99_9_after("while fdatasync runs back to back:")?,
        ping_p99_us: number_after(&ping, "p99 ").ok_or(format!("unreadable: {ping}"))?,
        ping_p99_9_us: number_after(&ping, "p99.9 ").ok_or(format!("unreadable: {ping}"))?,
        pauses: Pauses::parse(&hiccups)?,
    })
}

struct Broker {
    child: Child,
    bootstrap: String,
    admin: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid; SIGTERM lets it stop cleanly.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().ok();
    }
}

fn start_broker(dir: &Path, settings: &[&str]) -> Result<Broker, String> {
    let mut command = Command::new(sibling("broker")?);
    command
        .args([
            "start",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir);
    if let Some(cores) = &pinning().broker_cores {
        command.args(["--cores", cores]);
    }
    for setting in settings {
        command.args(["--set", setting]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| error.to_string())?;
    let stdout = child.stdout.take().ok_or("no broker stdout")?;
    let mut admin = String::new();
    let bootstrap = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            if let Some(address) = line.strip_prefix("admin listening on ") {
                admin = address.trim().to_string();
            }
            line.strip_prefix("bootstrap ").map(str::to_string)
        })
        .ok_or("the broker did not start")?;
    Ok(Broker {
        child,
        bootstrap,
        admin,
    })
}

/// User and system CPU seconds a process has used so far (`/proc/<pid>/stat`), 0 if unreadable.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command name, which is in parentheses and may hold spaces: utime
    // and stime are the 12th and 13th of them (fields 14 and 15 of proc(5)).
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|index| fields.get(*index)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf takes an integer constant and reads no memory of ours.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / (per_second.max(1) as f64)
}

/// The broker's `/metrics` text.
fn scrape(admin: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).map_err(|e| format!("{admin}: {e}"))?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// A histogram's cumulative bucket counts (upper bound in seconds, count), summed over the
/// shards, for the series of `metric` whose labels contain `filter`.
fn buckets(metrics: &str, metric: &str, filter: &str) -> Vec<(f64, f64)> {
    let mut sums: Vec<(f64, f64)> = Vec::new();
    let prefix = format!("{metric}_bucket{{");
    for line in metrics.lines().filter(|line| line.starts_with(&prefix)) {
        if !line.contains(filter) {
            continue;
        }
        let Some(bound) = line
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let bound = if bound == "+Inf" {
            f64::INFINITY
        } else {
            bound.parse().unwrap_or(f64::INFINITY)
        };
        let count: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|count| count.parse().ok())
            .unwrap_or(0.0);
        match sums.iter_mut().find(|(seen, _)| *seen == bound) {
            Some((_, sum)) => *sum += count,
            None => sums.push((bound, count)),
        }
    }
    sums.sort_by(|a, b| a.0.total_cmp(&b.0));
    sums
}

/// The upper bound (in us) of the bucket holding quantile `q` of what was recorded between two
/// scrapes: the broker's own view, as precise as its buckets (25-50 us steps below 500 us).
fn quantile_between(before: &str, after: &str, metric: &str, filter: &str, q: f64) -> f64 {
    let old = buckets(before, metric, filter);
    let new = buckets(after, metric, filter);
    let counts: Vec<(f64, f64)> = new
        .iter()
        .map(|(bound, count)| {
            let earlier = old
                .iter()
                .find(|(seen, _)| seen == bound)
                .map_or(0.0, |(_, count)| *count);
            (*bound, count - earlier)
        })
        .collect();
    let total = counts.last().map_or(0.0, |(_, count)| *count);
    if total <= 0.0 {
        return 0.0;
    }
    counts
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map_or(f64::INFINITY, |(bound, _)| bound * 1e6)
}

/// Latency percentiles of one fixed-rate run, in us.
#[derive(Default, Clone, Copy)]
struct Tail {
    p50: f64,
    p99: f64,
    p99_9: f64,
}

impl std::fmt::Display for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0} / {:.0} / {:.0}", self.p50, self.p99, self.p99_9)
    }
}

/// One fixed rate: loadgen and the librdkafka producer in turn, 1 KiB records, 1 partition,
/// acks=all, linger 0; with the broker's own produce and fdatasync histograms over the loadgen
/// run.
#[derive(Default, Clone, Copy)]
struct FixedRate {
    loadgen: Tail,
    /// How late loadgen's records left it (due time to the socket write): the generator's own
    /// share of its latency.
    send_lag: Tail,
    rdkafka: Tail,
    /// `raw-produce --spin`: a blocking socket and no client library, spinning instead of
    /// sleeping; at the lower rate only (one request in flight cannot keep 10,000/s).
    raw: Option<Tail>,
    broker_produce: Tail,
    broker_fsync_p99_9: f64,
    /// p99.9 of each produce stage (append, write, sync) from the broker's histograms.
    broker_stages_p99_9: [f64; 3],
}

fn fixed_rate(broker: &Broker, rate: u64, duration: u64) -> Result<FixedRate, String> {
    let json = std::env::temp_dir().join(format!(
        "side-by-side-fixed-{}-{rate}.json",
        std::process::id()
    ));
    let loadgen = |warmup: u64, duration: u64, json: Option<&Path>| {
        let mut args = [
            "--bootstrap",
            &broker.bootstrap,
            "--topic",
            &format!("fixed-{rate}-loadgen"),
            "--partitions",
            "1",
            "--record-size",
            "1024",
            "--acks",
            "all",
            "--linger-ms",
            "0",
            "--rate",
            &rate.to_string(),
            "--warmup",
            &warmup.to_string(),
            "--duration",
            &duration.to_string(),
        ]
        .map(String::from)
        .to_vec();
        if let Some(json) = json {
            args.extend(["--json".to_string(), json.display().to_string()]);
        }
        run("loadgen", &args)
    };
    // A warm-up run first (the topic's creation and its first segment), so that the broker's
    // histograms, scraped around the measured run, see a topic in its steady state. The
    // measured run has a warm-up second of its own for its new connections, which loadgen
    // leaves out of its figures and the broker's histograms include.
    loadgen(0, 2, None)?;
    let before = scrape(&broker.admin)?;
    loadgen(1, duration, Some(&json))?;
    let after = scrape(&broker.admin)?;
    let summary = read_json(&json)?;
    std::fs::remove_file(&json).ok();
    let tail = |latency: &serde_json::Value| Tail {
        p50: latency["p50_us"].as_f64().unwrap_or(0.0),
        p99: latency["p99_us"].as_f64().unwrap_or(0.0),
        p99_9: latency["p99_9_us"].as_f64().unwrap_or(0.0),
    };
    let loadgen = tail(&summary["produce_latency"]);
    let send_lag = tail(&summary["send_lag"]);
    let produce = |q| {
        quantile_between(
            &before,
            &after,
            "broker_request_latency_seconds",
            "api=\"produce\"",
            q,
        )
    };
    let broker_produce = Tail {
        p50: produce(0.5),
        p99: produce(0.99),
        p99_9: produce(0.999),
    };
    let broker_fsync_p99_9 =
        quantile_between(&before, &after, "broker_fsync_latency_seconds", "", 0.999);
    let broker_stages_p99_9 = ["append", "write", "sync"].map(|stage| {
        quantile_between(
            &before,
            &after,
            "broker_produce_stage_seconds",
            &format!("stage=\"{stage}\""),
            0.999,
        )
    });
    let probe = run(
        "produce-probe",
        &[
            "--bootstrap".into(),
            broker.bootstrap.clone(),
            "--topic".into(),
            format!("fixed-{rate}-rdkafka"),
            "--rate".into(),
            rate.to_string(),
            "--records".into(),
            (rate * duration).to_string(),
            "--warmup".into(),
            (rate * 2).to_string(),
            "--linger-ms".into(),
            "0".into(),
        ],
    )?;
    let rdkafka = Tail {
        p50: number_after(&probe, "p50 ").unwrap_or(0.0),
        p99: number_after(&probe, "p99 ").unwrap_or(0.0),
        p99_9: number_after(&probe, "p99.9 ").unwrap_or(0.0),
    };
    let raw = if rate <= RAW_CLIENT_RATE_MAX {
        let output = run(
            "raw-produce",
            &[
                "--bootstrap".into(),
                broker.bootstrap.clone(),
                "--topic".into(),
                format!("fixed-{rate}-raw"),
                "--rate".into(),
                rate.to_string(),
                "--requests".into(),
                (rate * duration).to_string(),
                "--warmup".into(),
                (rate * 2).to_string(),
                "--spin".into(),
                "--json".into(),
            ],
        )?;
        let summary: serde_json::Value = serde_json::from_str(output.trim())
            .map_err(|error| format!("raw-produce: {error}: {output}"))?;
        Some(tail(&summary["produce_latency"]))
    } else {
        None
    };
    Ok(FixedRate {
        loadgen,
        send_lag,
        rdkafka,
        raw,
        broker_produce,
        broker_fsync_p99_9,
        broker_stages_p99_9,
    })
}

struct ModeFigures {
    fixed: [FixedRate; 2],
    consume_records_s: f64,
    consume_mb_s: f64,
    max_mib_s: f64,
    /// The broker's CPU time over the maximum-rate run, in cores (1.0: one core's worth; all
    /// its threads count, the blocking pool's too).
    max_broker_cores: f64,
    rdkafka_mib_s: f64,
    half_rate: f64,
    p99_us: f64,
    p99_9_us: f64,
    e2e_p99_us: f64,
}

fn measure_mode(
    dir: &Path,
    name: &str,
    settings: &[&str],
    duration: u64,
) -> Result<ModeFigures, String> {
    let broker = start_broker(&dir.join(name), settings)?;
    // The fixed rates first, on a fresh broker with an empty disk.
    let fixed = [
        fixed_rate(&broker, FIXED_RATES[0], duration)?,
        fixed_rate(&broker, FIXED_RATES[1], duration)?,
    ];
    let json = |label: &str| dir.join(format!("{name}-{label}.json"));
    let common = |topic: &str| -> Vec<String> {
        [
            "--bootstrap",
            &broker.bootstrap,
            "--topic",
            topic,
            "--partitions",
            "4",
            "--record-size",
            "1024",
            "--batch-bytes",
            "131072",
            "--acks",
            "all",
            "--warmup",
            "2",
            "--duration",
            &duration.to_string(),
        ]
        .iter()
        .map(|part| part.to_string())
        .collect()
    };
    let mut max_args = common("max");
    max_args.extend(
        [
            "--rate",
            "max",
            "--producers",
            PRODUCERS,
            "--linger-ms",
            "1",
            "--json",
        ]
        .map(String::from),
    );
    max_args.push(json("max").display().to_string());
    let (cpu_before, wall_before) = (cpu_seconds(broker.child.id()), std::time::Instant::now());
    run("loadgen", &max_args)?;
    let max_broker_cores = (cpu_seconds(broker.child.id()) - cpu_before)
        / wall_before.elapsed().as_secs_f64().max(1e-9);
    let max = read_json(&json("max"))?;
    let max_rps = max["records_per_second"].as_f64().unwrap_or(0.0);
    let half_rate = (max_rps / 2.0).floor().max(1.0);
    let mut half_args = common("half");
    half_args.extend([
        "--rate".to_string(),
        half_rate.to_string(),
        "--producers".into(),
        PRODUCERS.into(),
        "--consumers".into(),
        "1".into(),
        "--linger-ms".into(),
        "1".into(),
        "--json".into(),
        json("half").display().to_string(),
    ]);
    run("loadgen", &half_args)?;
    let half = read_json(&json("half"))?;
    let probe = run(
        "produce-probe",
        &[
            "--bootstrap".into(),
            broker.bootstrap.clone(),
            "--topic".into(),
            "rdkafka".into(),
            "--records".into(),
            (max_rps as u64 * duration / 2).max(20_000).to_string(),
            "--warmup".into(),
            "20000".into(),
        ],
    )?;
    let consume = run(
        "consume-probe",
        &[
            "--bootstrap".into(),
            broker.bootstrap.clone(),
            "--topic".into(),
            "max".into(),
        ],
    )?;
    let mib = |mb: f64| mb * 1e6 / (1 << 20) as f64;
    // A mode writes tens of GB at today's rates: its data goes before the next mode starts.
    drop(broker);
    std::fs::remove_dir_all(dir.join(name)).ok();
    Ok(ModeFigures {
        fixed,
        consume_records_s: number_after(&consume, "s: ").unwrap_or(0.0),
        consume_mb_s: number_after(&consume, "records/s, ").unwrap_or(0.0),
        max_mib_s: mib(max["mb_per_second"].as_f64().unwrap_or(0.0)),
        max_broker_cores,
        rdkafka_mib_s: number_after(&probe, "records/s,").unwrap_or(0.0),
        half_rate,
        p99_us: half["produce_latency"]["p99_us"].as_f64().unwrap_or(0.0),
        p99_9_us: half["produce_latency"]["p99_9_us"].as_f64().unwrap_or(0.0),
        e2e_p99_us: half["end_to_end_latency"]["p99_us"].as_f64().unwrap_or(0.0),
    })
}

/// loadgen producers in the maximum-rate and half-rate runs: four of 5 requests in flight
/// each. With two, the 1.3 MiB in flight over a durable round trip of about 2 ms held the rate
/// near 650 MB/s with the broker's core a fifth idle (Little's law), which measured the window,
/// not the broker; and the half-rate run needs the window of the run it halves.
const PRODUCERS: &str = "4";

/// The fixed rates of the latency runs, records per second.
const FIXED_RATES: [u64; 2] = [1_000, 10_000];

/// The highest rate `raw-produce` runs at: one request in flight, so its round trip must fit
/// between two requests.
const RAW_CLIENT_RATE_MAX: u64 = 1_000;

fn main() -> Result<(), String> {
    let args = Args::parse();
    std::fs::remove_dir_all(&args.dir).ok();
    std::fs::create_dir_all(&args.dir).map_err(|error| error.to_string())?;
    let before = floors(&args.dir)?;
    let durable = measure_mode(&args.dir, "durable", &[], args.duration)?;
    let relaxed = measure_mode(
        &args.dir,
        "relaxed",
        &["log.flush.interval.ms=100"],
        args.duration,
    )?;
    let after = floors(&args.dir)?;
    // Unpinned: its cross-shard round trip needs two cores.
    let components = run_command(Command::new(sibling("components")?), "components", &[])?;
    let disk = (before.disk_mib_s + after.disk_mib_s) / 2.0;
    let synced = (before.synced_mib_s + after.synced_mib_s) / 2.0;
    let fsync = before.fsync_p99_9_us.max(after.fsync_p99_9_us);
    let append_fsync = before
        .append_fsync_p99_9_us
        .max(after.append_fsync_p99_9_us);
    let concurrent_fsync = before
        .concurrent_fsync_p99_9_us
        .max(after.concurrent_fsync_p99_9_us);
    let write = before.write_p99_9_us.max(after.write_p99_9_us);
    let write_behind_syncs = before
        .write_behind_syncs_p99_9_us
        .max(after.write_behind_syncs_p99_9_us);
    let ping = before.ping_p99_us.max(after.ping_p99_us);
    let ping_p99_9 = before.ping_p99_9_us.max(after.ping_p99_9_us);
    let pauses = before.pauses.clone().worse(after.pauses.clone());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |count| count.get());
    let date = run_date();
    let table = format!(
        "# Results\n\n\
         Measured {date} on this machine ({cores} cores, Linux {kernel}), one run of\n\
         `target/release/side-by-side --duration {duration}` (see bench/README.md). 1 KiB records,\n\
         128 KiB batches, acks=all, 4 partitions. Durable: every acknowledgement waits for its\n\
         fdatasync. Relaxed: `log.flush.interval.ms=100`, acknowledged once written, before the sync.\n\
         Floors were measured before and after the broker runs: bandwidth is their mean, the\n\
         latency floors the worse of the two.\n\n\
         | floor | value |\n|---|---|\n\
         | disk direct-I/O sequential write | {disk:.0} MiB/s ({:.0} before, {:.0} after) |\n\
         | disk synced writes (4 files, 128 KiB writes each followed by fdatasync) | {synced:.0} MiB/s |\n\
         | disk 4 KiB direct write p99.9 (no sync: what a relaxed acknowledgement waits for) | {write:.0} us |\n\
         | disk 4 KiB direct write p99.9 while fdatasync runs back to back (a log's writer beside its syncer) | {write_behind_syncs:.0} us |\n\
         | disk fdatasync p99.9 (overwriting written blocks) | {fsync:.0} us |\n\
         | disk fdatasync p99.9 (appending into preallocated space, as a log does) | {append_fsync:.0} us |\n\
         | disk fdatasync p99.9 (4 logs appending at once, as the 4 partitions below) | {concurrent_fsync:.0} us |\n\
         | loopback TCP ping-pong p99 | {ping:.0} us |\n\
         | pauses of a thread spinning on each core (all at once, 10 s; `hiccups`) | {:.2} a second over 1 ms, the longest {:.0} us; a request would wait over 1 ms for a core {:.3}% of the time |\n\n\
         | figure | durable | relaxed | target |\n|---|---|---|---|\n\
         | loadgen max throughput | {:.0} MiB/s = {:.0}% of disk, the broker using {:.0}% of a core | {:.0} MiB/s, the broker using {:.0}% of a core | durable >= 80% of disk |\n\
         | librdkafka producer throughput (closed loop) | {:.0} MiB/s | {:.0} MiB/s | |\n\
         | produce p99 at half max rate | {:.0} us | {:.0} us = {:.1}x ping-pong p99 | relaxed <= 3x ping-pong p99 |\n\
         | produce p99.9 at half max rate | {:.0} us = {:.1}x fdatasync p99.9 ({:.1}x the 4-log floor) | {:.0} us | durable <= 1.5x fdatasync p99.9 |\n\
         | end-to-end p99 at half max rate | {:.0} us = {:.1}x produce p99 | {:.0} us = {:.1}x produce p99 | <= 2x produce p99 |\n\
         | half max rate used | {:.0} rec/s | {:.0} rec/s | |\n\n\
         ## Components (`target/release/components`)\n\n\
         The relaxed append does not wait for its own flush, but a log holds at most 32 MiB\n\
         unflushed (`UNFLUSHED_MAX_BYTES`): over the 2 s it runs, it is held to the pace the\n\
         flusher writes and syncs at, so read it as the log's relaxed write throughput, not as\n\
         the CPU cost of an append.\n\n```\n{components}```\n{fixed_table}{cpu_cost}",
        before.disk_mib_s, after.disk_mib_s,
        pauses.over_1ms_per_second, pauses.longest_us, pauses.beyond_1ms_percent(),
        durable.max_mib_s, 100.0 * durable.max_mib_s / disk, 100.0 * durable.max_broker_cores,
        relaxed.max_mib_s, 100.0 * relaxed.max_broker_cores,
        durable.rdkafka_mib_s, relaxed.rdkafka_mib_s,
        durable.p99_us, relaxed.p99_us, relaxed.p99_us / ping,
        durable.p99_9_us, durable.p99_9_us / fsync, durable.p99_9_us / concurrent_fsync.max(1.0), relaxed.p99_9_us,
        durable.e2e_p99_us, durable.e2e_p99_us / durable.p99_us.max(1.0), relaxed.e2e_p99_us, relaxed.e2e_p99_us / relaxed.p99_us.max(1.0),
        durable.half_rate, relaxed.half_rate,
        kernel = kernel.trim(),
        duration = args.duration,
        fixed_table = fixed_rate_table(
            &durable,
            &relaxed,
            &RunFloors {
                append_fsync_p99_9: append_fsync,
                write_p99_9: write,
                write_behind_syncs_p99_9: write_behind_syncs,
                ping_p99: ping,
                ping_p99_9,
                disk_mib_s: disk,
                synced_mib_s: synced,
                pauses: pauses.clone(),
            },
        ),
        // Counted last and never fatal: a failure here must not throw the run's figures away.
        cpu_cost = cpu_cost_table().unwrap_or_else(|error| {
            format!("\n## CPU cost per record\n\nNot counted: cpu-cost failed: {error}\n")
        }),
    );
    std::fs::write(&args.output, &table)
        .map_err(|error| format!("{}: {error}", args.output.display()))?;
    println!("{table}");
    std::fs::remove_dir_all(&args.dir).ok();
    Ok(())
}

/// The fixed-rate section of the results, with the issue's targets beside the figures.
/// The floors of this run that the targets are stated against (the worse or the mean of the
/// measurements before and after the broker runs).
#[derive(Clone)]
struct RunFloors {
    append_fsync_p99_9: f64,
    write_p99_9: f64,
    write_behind_syncs_p99_9: f64,
    ping_p99: f64,
    ping_p99_9: f64,
    disk_mib_s: f64,
    synced_mib_s: f64,
    pauses: Pauses,
}

/// Why a latency target's p99.9 is out of this machine's reach, if this run's floors say so:
/// the device's own latency (`device`: its p99.9 and what it is), or the pauses of the cores
/// the figure depends on holding 0.1% or more of requests past the target with the median
/// already spent.
fn out_of_reach(
    target_us: f64,
    median_us: f64,
    device: Option<(f64, &str)>,
    pauses: &Pauses,
    cores: Option<&str>,
) -> Option<String> {
    let mut reasons = Vec::new();
    if let Some((floor_us, what)) = device {
        if floor_us >= target_us {
            reasons.push(format!("the device: {what} has p99.9 {floor_us:.0} us"));
        }
    }
    if let Some((threshold, share)) = pauses.beyond(cores, target_us - median_us) {
        if share >= 0.1 {
            reasons.push(format!(
                "the machine: its cores' own pauses keep {share:.3}% of requests waiting over \
                 {threshold:.0} us, more than the {:.0} us between the median ({median_us:.0} us) \
                 and the target",
                target_us - median_us
            ));
        }
    }
    (!reasons.is_empty()).then(|| reasons.join("; and "))
}

fn fixed_rate_table(durable: &ModeFigures, relaxed: &ModeFigures, floors: &RunFloors) -> String {
    let RunFloors {
        append_fsync_p99_9,
        write_p99_9,
        write_behind_syncs_p99_9,
        ping_p99,
        ping_p99_9,
        disk_mib_s,
        synced_mib_s,
        ref pauses,
    } = *floors;
    let pinning = pinning();
    let placement = match (&pinning.broker_cores, &pinning.client_cores) {
        (Some(broker), Some(clients)) => {
            format!("the broker on core {broker}, the clients and floors on core(s) {clients}")
        }
        _ => "nothing pinned (one core)".to_string(),
    };
    let runs = [
        &durable.fixed[0],
        &durable.fixed[1],
        &relaxed.fixed[0],
        &relaxed.fixed[1],
    ];
    let row = |name: &str, cell: &dyn Fn(&FixedRate) -> String| {
        let cells: Vec<String> = runs.iter().map(|run| cell(run)).collect();
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    let met = |ok: bool| if ok { "met" } else { "not met" }.to_string();
    // A target that a limit of this machine, measured in this run, puts out of reach says
    // which.
    let judged = |ok: bool, bounded: bool, why: String| match (ok, bounded) {
        (true, _) => "met".to_string(),
        (false, true) => format!("not met; bounded here by {why}"),
        (false, false) => "not met".to_string(),
    };
    let relaxed_broker = relaxed.fixed[0]
        .broker_produce
        .p99_9
        .max(relaxed.fixed[1].broker_produce.p99_9);
    let durable_broker = durable.fixed[0]
        .broker_produce
        .p99_9
        .max(durable.fixed[1].broker_produce.p99_9);
    let relaxed_client = relaxed.fixed[0]
        .loadgen
        .p99_9
        .max(relaxed.fixed[0].rdkafka.p99_9);
    let raw_client = relaxed.fixed[0].raw.map_or(0.0, |raw| raw.p99_9);
    let broker_core = pinning.broker_cores.as_deref();
    let relaxed_median = relaxed.fixed[0]
        .broker_produce
        .p50
        .max(relaxed.fixed[1].broker_produce.p50);
    let durable_median = durable.fixed[0]
        .broker_produce
        .p50
        .max(durable.fixed[1].broker_produce.p50);
    let client_median = relaxed.fixed[0]
        .loadgen
        .p50
        .min(relaxed.fixed[0].rdkafka.p50);
    let judged_latency = |ok: bool, bounded: Option<String>| match (ok, bounded) {
        (true, _) => "met".to_string(),
        (false, Some(why)) => format!("not met; bounded here by {why}"),
        (false, None) => "not met".to_string(),
    };
    let durable_share = 100.0 * durable.max_mib_s / disk_mib_s.max(1.0);
    let consume_gb_s = durable.consume_mb_s.max(relaxed.consume_mb_s) / 1000.0;
    let [low, high] = FIXED_RATES;
    format!(
        "\n## Fixed rates: 1 KiB records, 1 partition, acks=all, linger 0\n\n\
         Open loop at {low} and {high} records/s, {placement}. Each cell is p50 / p99 / p99.9\n\
         in us. loadgen (after a 2 s warm-up run) and the librdkafka producer (`produce-probe\n\
         --rate`) run in turn; the broker's own figures are its `/metrics` histograms over the\n\
         measured loadgen run (bucket upper bounds: 25-50 us steps below 500 us), its produce\n\
         stages timed apart: append (validation and the log append), write (until the batch's\n\
         write completed), sync (until its fdatasync returned). Floors in this run: loopback\n\
         ping-pong p99\n\
         {ping_p99:.0} us, p99.9 {ping_p99_9:.0} us; fdatasync after appending into preallocated\n\
         space p99.9 {append_fsync_p99_9:.0} us.\n\n\
         | figure | durable {low}/s | durable {high}/s | relaxed {low}/s | relaxed {high}/s |\n\
         |---|---|---|---|---|\n\
         {}{}{}{}{}{}{}\n\
         | target | measured | |\n|---|---|---|\n\
         | broker produce p99.9 relaxed < 250 us (it waits for a direct write: floor {write_p99_9:.0} us) | {relaxed_broker:.0} us | {} |\n\
         | broker produce p99.9 durable < 1.5x appending fdatasync p99.9 ({:.0} us) | {durable_broker:.0} us | {} |\n\
         | client p99.9 relaxed at {low}/s < 1 ms (loadgen, librdkafka; a raw socket spinning: {raw_client:.0} us; the machine's own pauses alone would hold {:.3}% of requests over 1 ms, against the 0.1% a p99.9 allows) | {relaxed_client:.0} us | {} |\n\
         | durable max throughput >= 80% of the disk (4 partitions, above) | {durable_share:.0}% of the sequential ceiling, {:.0}% of synced writes | {} |\n\
         | relaxed max throughput above durable | {:.0} vs {:.0} MiB/s | {} |\n\
         | one consumer, one partition from its start (durable / relaxed run) >= 1 GB/s | {:.0} / {:.0} MB/s ({:.0} / {:.0} records/s) | {} |\n",
        row("loadgen produce", &|run| run.loadgen.to_string()),
        row("loadgen send lag (its own share)", &|run| run.send_lag.to_string()),
        row("librdkafka produce", &|run| run.rdkafka.to_string()),
        row("raw socket, no library, spinning (`raw-produce --spin`)", &|run| {
            run.raw.map_or_else(|| "-".to_string(), |raw| raw.to_string())
        }),
        row("broker's own produce latency", &|run| run.broker_produce.to_string()),
        row("broker's own fdatasync p99.9", &|run| format!("{:.0}", run.broker_fsync_p99_9)),
        row("broker's produce stages p99.9: append / write / sync", &|run| {
            let [append, write, sync] = run.broker_stages_p99_9;
            format!("{append:.0} / {write:.0} / {sync:.0}")
        }),
        judged_latency(
            relaxed_broker < 250.0,
            out_of_reach(
                250.0,
                relaxed_median,
                Some((write_p99_9, "a 4 KiB direct write alone")),
                pauses,
                broker_core,
            ),
        ),
        1.5 * append_fsync_p99_9,
        judged_latency(
            durable_broker < 1.5 * append_fsync_p99_9,
            out_of_reach(
                1.5 * append_fsync_p99_9,
                durable_median,
                Some((write_behind_syncs_p99_9, "a write issued while a sync runs")),
                pauses,
                broker_core,
            ),
        ),
        pauses.beyond_1ms_percent(),
        judged_latency(
            relaxed_client < 1000.0,
            out_of_reach(1000.0, client_median, None, pauses, None),
        ),
        100.0 * durable.max_mib_s / synced_mib_s.max(1.0),
        judged(
            durable_share >= 80.0,
            durable.max_broker_cores >= 0.85,
            format!(
                "the broker's core: {:.0}% busy, on a VM that gives it one core beside its \
                 clients",
                100.0 * durable.max_broker_cores
            ),
        ),
        relaxed.max_mib_s,
        durable.max_mib_s,
        met(relaxed.max_mib_s > durable.max_mib_s),
        durable.consume_mb_s,
        relaxed.consume_mb_s,
        durable.consume_records_s,
        relaxed.consume_records_s,
        met(consume_gb_s >= 1.0),
    )
}

fn run_date() -> String {
    Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The checked-in instruction counts that `cpu-cost` figures are compared against: the last
/// deliberate baseline, with the commit it was counted at.
const CPU_COST_BASELINE: &str = include_str!("../../cpu-cost-baseline.json");

/// Instructions per record from `cpu-cost` (under callgrind) beside the baseline, or a line
/// saying why there are none (valgrind is not installed).
fn cpu_cost_table() -> Result<String, String> {
    let heading = "\n## CPU cost per record (`target/release/cpu-cost`, callgrind)\n\n";
    let has_valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_valgrind {
        return Ok(format!(
            "{heading}Not counted: valgrind is not installed (`apt-get install valgrind`).\n"
        ));
    }
    let output = run_command(
        Command::new(sibling("cpu-cost")?),
        "cpu-cost",
        &["--json".to_string()],
    )?;
    let baseline: serde_json::Value = serde_json::from_str(CPU_COST_BASELINE)
        .map_err(|error| format!("cpu-cost-baseline.json: {error}"))?;
    let number = |value: &serde_json::Value, key: &str| value[key].as_f64().unwrap_or(f64::NAN);
    let mut rows = String::new();
    for line in output.lines().filter(|line| line.starts_with('{')) {
        let now: serde_json::Value =
            serde_json::from_str(line).map_err(|error| format!("cpu-cost: {error}: {line}"))?;
        let before = baseline["workloads"]
            .as_array()
            .and_then(|workloads| {
                workloads
                    .iter()
                    .find(|workload| workload["workload"] == now["workload"])
            })
            .cloned()
            .unwrap_or_default();
        let cell = |key: &str| {
            let (was, is) = (number(&before, key), number(&now, key));
            if was.is_finite() {
                format!("{was:.0} -> {is:.0} ({:.2}x)", is / was)
            } else {
                format!("{is:.0}")
            }
        };
        rows.push_str(&format!(
            "| {} | {} | {} |\n",
            now["workload"].as_str().unwrap_or("?"),
            cell("produce_ir_per_record"),
            cell("fetch_ir_per_record"),
        ));
    }
    Ok(format!(
        "{heading}Instructions per 1 KiB record through one shard's dispatch and handlers in \
         process (durable topic, acks=all, one request in flight, simulated disk with its own \
         work taken off; see `cpu-cost --help`), against the baseline in \
         `bench/cpu-cost-baseline.json` ({}).\n\n\
         | workload | produce: baseline -> now | fetch: baseline -> now |\n|---|---|---|\n{rows}",
        baseline["measured_at"].as_str().unwrap_or("no baseline")
    ))
}
