//! `loadgen`: drive any Kafka-compatible broker with a fixed-rate (open loop) or max-rate
//! (closed loop) produce load and report throughput and latency percentiles.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use loadgen::produce::{run_worker, KeyDistribution, ProduceSettings};
use loadgen::report::{interval_line, summary, summary_text, Shared, Stats};
use record_format::Compression;

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Produce load and latency percentiles for a Kafka-compatible broker"
)]
struct Args {
    /// A broker to bootstrap from.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "loadgen")]
    topic: String,
    /// Partitions to create the topic with if it does not exist.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Replicas of each partition when the topic is created (-1: the broker's
    /// default.replication.factor).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    replication_factor: i16,
    /// A topic config for when the topic is created, e.g. flush.ms=100; repeatable.
    #[arg(long = "topic-config", value_name = "NAME=VALUE")]
    topic_configs: Vec<String>,
    /// Bytes per record value (at least 8: the send time is stamped in the first 8).
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Producer workers, each with its own connections.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumers measuring end-to-end latency (the partitions are split between them).
    #[arg(long, default_value_t = 0)]
    consumers: usize,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    #[arg(long, default_value_t = 65_536)]
    batch_bytes: usize,
    #[arg(long, default_value_t = 1)]
    linger_ms: u64,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Seconds to measure, after the warm-up.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Records per second across all producers (open loop), or `max` (closed loop).
    #[arg(long, default_value = "max")]
    rate: String,
    /// Keys: none, sequential, or uniform:N (N distinct keys).
    #[arg(long, default_value = "none")]
    keys: String,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Write the latency percentile distributions (HdrHistogram text format) to this file.
    #[arg(long)]
    hdr: Option<std::path::PathBuf>,
    /// Draw the latency percentile curves (produce, end-to-end) as SVG to this file.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

fn parse(args: &Args) -> Result<(i16, Compression, Option<f64>, KeyDistribution), String> {
    if args.record_size < 8 {
        return Err(
            "--record-size must be at least 8 (the send time is stamped in the value)".into(),
        );
    }
    if args.producers == 0 || args.partitions <= 0 || args.batch_bytes == 0 || args.duration == 0 {
        return Err(
            "--producers, --partitions, --batch-bytes and --duration must be positive".into(),
        );
    }
    let acks = match args.acks.as_str() {
        "0" => 0,
        "1" => 1,
        "all" | "-1" => -1,
        other => return Err(format!("--acks {other:?}: expected 0, 1 or all")),
    };
    let compression = match args.compression.as_str() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => {
            return Err(format!(
                "--compression {other:?}: expected none, gzip, snappy, lz4 or zstd"
            ))
        }
    };
    let rate = match args.rate.as_str() {
        "max" => None,
        text => match text.parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate.is_finite() => Some(rate),
            _ => {
                return Err(format!(
                    "--rate {text:?}: expected records per second or max"
                ))
            }
        },
    };
    let keys = match args.keys.as_str() {
        "none" => KeyDistribution::None,
        "sequential" => KeyDistribution::Sequential,
        text => match text
            .strip_prefix("uniform:")
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(space) if space > 0 => KeyDistribution::Uniform(space),
            _ => {
                return Err(format!(
                    "--keys {text:?}: expected none, sequential or uniform:N"
                ))
            }
        },
    };
    Ok((acks, compression, rate, keys))
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |text| text.trim().to_string())
}

fn run(args: Args) -> Result<(), String> {
    let (acks, compression, rate, keys) = parse(&args)?;
    let configs = args
        .topic_configs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .ok_or_else(|| format!("--topic-config {pair:?}: expected NAME=VALUE"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let layout = loadgen::prepare_topic(
        &args.bootstrap,
        &args.topic,
        args.partitions,
        args.replication_factor,
        &configs,
    )
    .map_err(|error| error.to_string())?;
    if rate.is_none() {
        eprintln!("warning: --rate max is a closed loop: the generator waits for the broker, so its latency tail understates what a fixed-rate load would see");
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    let shared = Shared::new();
    let partitions: Vec<(i32, String)> = layout.leaders.into_iter().collect();
    let mut workers = Vec::new();
    if args.consumers > 0 {
        // Consumers measure against the wall clock the producers stamp records with.
        let epoch_ns = |at: Instant| {
            loadgen::now_ns() + at.saturating_duration_since(Instant::now()).as_nanos() as i64
        };
        let settings = Arc::new(loadgen::consume::ConsumeSettings {
            topic: args.topic.clone(),
            measure_from_ns: epoch_ns(measure_from),
            end_ns: epoch_ns(end + Duration::from_secs(2)),
        });
        for consumer in 0..args.consumers {
            let mut by_leader: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
            for (partition, leader) in partitions.iter().skip(consumer).step_by(args.consumers) {
                by_leader
                    .entry(leader.clone())
                    .or_default()
                    .push(*partition);
            }
            for (leader, owned) in by_leader {
                let (settings, shared) = (settings.clone(), shared.clone());
                workers.push(std::thread::spawn(move || {
                    loadgen::consume::run_consumer(leader, owned, settings, shared)
                }));
            }
        }
    }
    for worker in 0..args.producers {
        let mine: Vec<(i32, String)> = partitions
            .iter()
            .skip(worker)
            .step_by(args.producers)
            .cloned()
            .collect();
        if mine.is_empty() {
            continue;
        }
        let settings = Arc::new(ProduceSettings {
            topic: args.topic.clone(),
            record_bytes: args.record_size,
            acks,
            batch_bytes: args.batch_bytes,
            linger: Duration::from_millis(args.linger_ms),
            compression,
            rate: rate.map(|rate| rate / args.producers as f64),
            keys,
            start,
            measure_from,
            end,
        });
        let shared = shared.clone();
        workers.push(std::thread::spawn(move || {
            run_worker(worker, mine, settings, shared)
        }));
    }
    // A line per second of wall time; the workers are checked every 50 ms, so the run ends
    // promptly when they do.
    let mut second = 0;
    let mut next_line = Instant::now() + Duration::from_secs(1);
    while workers.iter().any(|worker| !worker.is_finished()) {
        std::thread::sleep(
            Duration::from_millis(50).min(next_line.saturating_duration_since(Instant::now())),
        );
        if Instant::now() < next_line {
            continue;
        }
        next_line += Duration::from_secs(1);
        second += 1;
        let interval = shared
            .interval
            .lock()
            .map(|mut stats| std::mem::take(&mut *stats))
            .unwrap_or_default();
        println!("{}", interval_line(second, &interval));
        if Instant::now() > end + loadgen::REQUEST_TIMEOUT {
            return Err(
                "the broker stopped answering: requests still pending 30 s after the run ended"
                    .into(),
            );
        }
    }
    for worker in workers {
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("broker error: {error}")),
            Err(_) => return Err("a producer worker panicked".into()),
        }
    }
    let measured: Stats = shared
        .measured
        .lock()
        .map(|mut stats| std::mem::take(&mut *stats))
        .unwrap_or_default();
    let facts = serde_json::json!({
        "cores": std::thread::available_parallelism().map_or(1, |count| count.get()),
        "kernel": kernel(),
        "bootstrap": args.bootstrap,
        "topic": args.topic,
        "acks": args.acks,
        "record_bytes": args.record_size,
        "batch_bytes": args.batch_bytes,
        "compression": args.compression,
        "rate": args.rate,
        "durability": loadgen::durability_facts(&args.bootstrap, &args.topic),
    });
    let report = summary(
        &measured,
        Duration::from_secs(args.duration),
        rate.is_some(),
        facts,
    );
    println!("{}", summary_text(&report));
    let curves = [
        ("produce", &measured.latency),
        ("end-to-end", &measured.end_to_end),
    ];
    if let Some(path) = &args.hdr {
        std::fs::write(path, loadgen::report::percentile_distribution(&curves))
            .map_err(|error| format!("{}: {error}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, loadgen::report::percentile_plot(&curves))
            .map_err(|error| format!("{}: {error}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|error| error.to_string())?;
        std::fs::write(path, text).map_err(|error| format!("{}: {error}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loadgen: {message}");
            ExitCode::from(2)
        }
    }
}
