//! Produce throughput and produce-to-acknowledgement latency from a librdkafka client, against
//! any Kafka-compatible broker. By default a closed loop: it sends as fast as the broker
//! acknowledges, so its tail understates what a fixed-rate load would see. With `--rate` it is
//! an open loop: record n is due at n / rate seconds, and its latency counts from when it was
//! due, so a stall that delays the sending is counted too (no coordinated omission).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

#[derive(Parser)]
#[command(about = "Produce fixed-size records and report throughput and ack latency")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "probe")]
    topic: String,
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Records to send after the warm-up.
    #[arg(long, default_value_t = 500_000)]
    records: usize,
    /// Records sent first and left out of the figures.
    #[arg(long, default_value_t = 50_000)]
    warmup: usize,
    #[arg(long, default_value = "all")]
    acks: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    #[arg(long, default_value_t = 131_072)]
    batch_bytes: usize,
    /// librdkafka's send queue (queue.buffering.max.kbytes): small bounds the records in
    /// flight, so latency shows the broker rather than the client's own queue.
    #[arg(long, default_value_t = 1_048_576)]
    queue_kbytes: usize,
    /// Partitions to spread records over (records go round-robin; the topic must have them).
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Records per second (open loop); without it, as fast as the broker acknowledges.
    #[arg(long)]
    rate: Option<f64>,
    /// Any other librdkafka setting, as NAME=VALUE (repeatable), such as
    /// `socket.nagle.disable=true`.
    #[arg(long = "config", value_name = "NAME=VALUE")]
    configs: Vec<String>,
}

struct Measure {
    latencies: Mutex<(Histogram<u64>, u64, Option<String>)>,
}

struct Context(Arc<Measure>);

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<(Instant, bool)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (sent_at, counted) = *opaque;
        let Ok(mut guard) = self.0.latencies.lock() else {
            return;
        };
        match result {
            Ok(_) if counted => {
                let micros = sent_at.elapsed().as_micros().max(1) as u64;
                guard.0.saturating_record(micros);
            }
            Ok(_) => {}
            Err((error, _)) => {
                guard.1 += 1;
                guard.2.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    // Sleeps end within a microsecond or so of their deadline instead of the default 50 us of
    // timer slack, so records leave close to their due time.
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes an integer and changes only this thread's slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let measure = Arc::new(Measure {
        latencies: Mutex::new((bench::latency_histogram(), 0, None)),
    });
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", &args.acks)
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_bytes.to_string())
        .set("queue.buffering.max.kbytes", args.queue_kbytes.to_string())
        .set("enable.idempotence", "false");
    for setting in &args.configs {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("--config {setting:?} is not NAME=VALUE"))?;
        config.set(name, value);
    }
    // Delivery reports are served by the threaded producer's own polling thread, which blocks
    // until one arrives, so a record's acknowledgement is seen when it arrives, and this thread
    // only sends.
    let producer: ThreadedProducer<Context> = config
        .create_with_context(Context(measure.clone()))
        .map_err(|error| error.to_string())?;
    let payload = vec![b'r'; args.record_bytes];
    let total = args.warmup + args.records;
    if args
        .rate
        .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
    {
        return Err("--rate must be a positive number of records per second".into());
    }
    let mut measured_start = Instant::now();
    let mut schedule_start = Instant::now();
    for index in 0..total {
        if index == args.warmup {
            producer
                .flush(Duration::from_secs(60))
                .map_err(|e| e.to_string())?;
            measured_start = Instant::now();
            schedule_start = measured_start;
        }
        let sent_at = match args.rate {
            Some(rate) => {
                let due = schedule_start
                    + Duration::from_secs_f64((index - args.warmup.min(index)) as f64 / rate);
                // Sleep until the record's turn rather than spin: librdkafka's threads share
                // the client's core, and a spinning thread held it for a scheduler slice
                // (about 3 ms) before they ran, which was the probe's p99 at 1,000 records/s.
                let left = due.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    std::thread::sleep(left);
                }
                due
            }
            None => Instant::now(),
        };
        let key = (index as u64).to_be_bytes();
        let mut record =
            BaseRecord::with_opaque_to(&args.topic, Box::new((sent_at, index >= args.warmup)))
                .key(&key[..])
                .payload(&payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| e.to_string())?;
    let elapsed = measured_start.elapsed().as_secs_f64();
    let guard = measure
        .latencies
        .lock()
        .map_err(|_| "poisoned".to_string())?;
    let bytes = (args.records * args.record_bytes) as f64;
    println!(
        "produce acks={} {}-byte records: {:.0} records/s, {:.1} MiB/s over {:.2} s; errors {}{}",
        args.acks,
        args.record_bytes,
        args.records as f64 / elapsed,
        bytes / elapsed / (1 << 20) as f64,
        elapsed,
        guard.1,
        guard
            .2
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    let kind = match args.rate {
        Some(rate) => format!("open loop at {rate} records/s, from each record's due time"),
        None => "closed loop, understates the tail".to_string(),
    };
    println!(
        "produce-to-ack latency ({kind}): {}",
        bench::percentiles_line(&guard.0)
    );
    Ok(())
}
