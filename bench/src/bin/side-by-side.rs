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

fn run(binary: &str, args: &[String]) -> Result<String, String> {
    let output = Command::new(sibling(binary)?)
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
    fsync_p99_9_us: f64,
    /// The log's own pattern: a sync after appending into preallocated space.
    append_fsync_p99_9_us: f64,
    /// The same with four logs appending and syncing at once, as the runs below do.
    concurrent_fsync_p99_9_us: f64,
    ping_p99_us: f64,
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
    Ok(Floors {
        disk_mib_s: number_after(&disk, "sequential write:")
            .ok_or(format!("unreadable: {disk}"))?,
        fsync_p99_9_us: number_after(&disk, "p99.9").ok_or(format!("unreadable: {disk}"))?,
        append_fsync_p99_9_us: disk
            .split_once("preallocated space:")
            .and_then(|(_, after)| number_after(after, "p99.9"))
            .ok_or(format!("unreadable: {disk}"))?,
        concurrent_fsync_p99_9_us: disk
            .split_once("logs at once:")
            .and_then(|(_, after)| number_after(after, "p99.9"))
            .ok_or(format!("unreadable: {disk}"))?,
        ping_p99_us: number_after(&ping, "p99 ").ok_or(format!("unreadable: {ping}"))?,
    })
}

struct Broker {
    child: Child,
    bootstrap: String,
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
            "",
            "--data-dir",
        ])
        .arg(dir);
    for setting in settings {
        command.args(["--set", setting]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| error.to_string())?;
    let stdout = child.stdout.take().ok_or("no broker stdout")?;
    let bootstrap = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("bootstrap ").map(str::to_string))
        .ok_or("the broker did not start")?;
    Ok(Broker { child, bootstrap })
}

struct ModeFigures {
    max_mib_s: f64,
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
            "2",
            "--linger-ms",
            "1",
            "--json",
        ]
        .map(String::from),
    );
    max_args.push(json("max").display().to_string());
    run("loadgen", &max_args)?;
    let max: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json("max")).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let max_rps = max["records_per_second"].as_f64().unwrap_or(0.0);
    let half_rate = (max_rps / 2.0).floor().max(1.0);
    let mut half_args = common("half");
    half_args.extend([
        "--rate".to_string(),
        half_rate.to_string(),
        "--consumers".into(),
        "1".into(),
        "--linger-ms".into(),
        "1".into(),
        "--json".into(),
        json("half").display().to_string(),
    ]);
    run("loadgen", &half_args)?;
    let half: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json("half")).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
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
    let mib = |mb: f64| mb * 1e6 / (1 << 20) as f64;
    Ok(ModeFigures {
        max_mib_s: mib(max["mb_per_second"].as_f64().unwrap_or(0.0)),
        rdkafka_mib_s: number_after(&probe, "records/s,").unwrap_or(0.0),
        half_rate,
        p99_us: half["produce_latency"]["p99_us"].as_f64().unwrap_or(0.0),
        p99_9_us: half["produce_latency"]["p99_9_us"].as_f64().unwrap_or(0.0),
        e2e_p99_us: half["end_to_end_latency"]["p99_us"].as_f64().unwrap_or(0.0),
    })
}

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
    let components = run("components", &[])?;
    let disk = (before.disk_mib_s + after.disk_mib_s) / 2.0;
    let fsync = before.fsync_p99_9_us.max(after.fsync_p99_9_us);
    let append_fsync = before
        .append_fsync_p99_9_us
        .max(after.append_fsync_p99_9_us);
    let concurrent_fsync = before
        .concurrent_fsync_p99_9_us
        .max(after.concurrent_fsync_p99_9_us);
    let ping = before.ping_p99_us.max(after.ping_p99_us);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |count| count.get());
    let date = run_date();
    let table = format!(
        "# Results\n\n\
         Measured {date} on this machine ({cores} cores, Linux {kernel}), one run of\n\
         `target/release/side-by-side --duration {duration}` (see bench/README.md). 1 KiB records,\n\
         128 KiB batches, acks=all, 4 partitions. Durable: every acknowledgement waits for its\n\
         fdatasync. Relaxed: `log.flush.interval.ms=100`, acknowledged before the flush.\n\
         Floors were measured before and after the broker runs: bandwidth is their mean, the\n\
         latency floors the worse of the two.\n\n\
         | floor | value |\n|---|---|\n\
         | disk direct-I/O sequential write | {disk:.0} MiB/s ({:.0} before, {:.0} after) |\n\
         | disk fdatasync p99.9 (overwriting written blocks) | {fsync:.0} us |\n\
         | disk fdatasync p99.9 (appending into preallocated space, as a log does) | {append_fsync:.0} us |\n\
         | disk fdatasync p99.9 (4 logs appending at once, as the 4 partitions below) | {concurrent_fsync:.0} us |\n\
         | loopback TCP ping-pong p99 | {ping:.0} us |\n\n\
         | figure | durable | relaxed | target |\n|---|---|---|---|\n\
         | loadgen max throughput | {:.0} MiB/s = {:.0}% of disk | {:.0} MiB/s | durable >= 80% of disk |\n\
         | librdkafka producer throughput (closed loop) | {:.0} MiB/s | {:.0} MiB/s | |\n\
         | produce p99 at half max rate | {:.0} us | {:.0} us = {:.1}x ping-pong p99 | relaxed <= 3x ping-pong p99 |\n\
         | produce p99.9 at half max rate | {:.0} us = {:.1}x fdatasync p99.9 ({:.1}x the 4-log floor) | {:.0} us | durable <= 1.5x fdatasync p99.9 |\n\
         | end-to-end p99 at half max rate | {:.0} us = {:.1}x produce p99 | {:.0} us = {:.1}x produce p99 | <= 2x produce p99 |\n\
         | half max rate used | {:.0} rec/s | {:.0} rec/s | |\n\n\
         ## Components (`target/release/components`)\n\n\
         The relaxed append does not wait for its own flush, but a log holds at most 32 MiB\n\
         unflushed (`UNFLUSHED_MAX_BYTES`): over the 2 s it runs, it is held to the pace the\n\
         flusher writes and syncs at, so read it as the log's relaxed write throughput, not as\n\
         the CPU cost of an append.\n\n```\n{components}```\n",
        before.disk_mib_s, after.disk_mib_s,
        durable.max_mib_s, 100.0 * durable.max_mib_s / disk, relaxed.max_mib_s,
        durable.rdkafka_mib_s, relaxed.rdkafka_mib_s,
        durable.p99_us, relaxed.p99_us, relaxed.p99_us / ping,
        durable.p99_9_us, durable.p99_9_us / fsync, durable.p99_9_us / concurrent_fsync.max(1.0), relaxed.p99_9_us,
        durable.e2e_p99_us, durable.e2e_p99_us / durable.p99_us.max(1.0), relaxed.e2e_p99_us, relaxed.e2e_p99_us / relaxed.p99_us.max(1.0),
        durable.half_rate, relaxed.half_rate,
        kernel = kernel.trim(),
        duration = args.duration,
    );
    std::fs::write(&args.output, &table)
        .map_err(|error| format!("{}: {error}", args.output.display()))?;
    println!("{table}");
    std::fs::remove_dir_all(&args.dir).ok();
    Ok(())
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
