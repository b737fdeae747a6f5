//! Latency histograms, per-second progress lines and the final summary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

/// Microseconds from 1 us to 10 minutes at three significant digits.
pub fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 600_000_000, 3) {
        Ok(histogram) => histogram,
        Err(_) => unreachable!("constant bounds are valid"),
    }
}

/// What the workers record, shared with the reporter. One lock per batch acknowledgement.
pub struct Stats {
    /// Produce-to-acknowledgement latency from each record's intended send time.
    pub latency: Histogram<u64>,
    /// How late records left compared with their intended send time (open loop only).
    pub send_lag: Histogram<u64>,
    pub records: u64,
    pub bytes: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            latency: histogram(),
            send_lag: histogram(),
            records: 0,
            bytes: 0,
            errors: 0,
            first_error: None,
        }
    }

    pub fn merge(&mut self, other: &Stats) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.send_lag.add(&other.send_lag);
        self.records += other.records;
        self.bytes += other.bytes;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// Stats for the current second (drained by the reporter) and for the measured run (warm-up
/// excluded).
pub struct Shared {
    pub interval: Mutex<Stats>,
    pub measured: Mutex<Stats>,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            interval: Mutex::new(Stats::new()),
            measured: Mutex::new(Stats::new()),
        })
    }
}

pub fn interval_line(second: u64, stats: &Stats) -> String {
    let mb = stats.bytes as f64 / 1e6;
    if stats.latency.is_empty() {
        return format!(
            "{second:>4}s {:>9} rec/s {mb:>8.1} MB/s errors {}",
            stats.records, stats.errors
        );
    }
    format!(
        "{second:>4}s {:>9} rec/s {mb:>8.1} MB/s errors {} | p50 {} us p99 {} us p99.9 {} us max {} us",
        stats.records,
        stats.errors,
        stats.latency.value_at_quantile(0.5),
        stats.latency.value_at_quantile(0.99),
        stats.latency.value_at_quantile(0.999),
        stats.latency.max(),
    )
}

fn percentiles(histogram: &Histogram<u64>) -> serde_json::Value {
    json!({
        "count": histogram.len(),
        "p50_us": histogram.value_at_quantile(0.50),
        "p90_us": histogram.value_at_quantile(0.90),
        "p99_us": histogram.value_at_quantile(0.99),
        "p99_9_us": histogram.value_at_quantile(0.999),
        "p99_99_us": histogram.value_at_quantile(0.9999),
        "max_us": histogram.max(),
    })
}

/// The final summary as JSON (also what `--json` writes).
pub fn summary(
    stats: &Stats,
    measured: Duration,
    open_loop: bool,
    facts: serde_json::Value,
) -> serde_json::Value {
    let seconds = measured.as_secs_f64().max(1e-9);
    json!({
        "records": stats.records,
        "bytes": stats.bytes,
        "seconds": seconds,
        "records_per_second": stats.records as f64 / seconds,
        "mb_per_second": stats.bytes as f64 / 1e6 / seconds,
        "errors": stats.errors,
        "first_error": stats.first_error,
        "mode": if open_loop { "open-loop" } else { "closed-loop" },
        "produce_latency": percentiles(&stats.latency),
        "send_lag": if open_loop { percentiles(&stats.send_lag) } else { serde_json::Value::Null },
        "facts": facts,
    })
}

pub fn summary_text(summary: &serde_json::Value) -> String {
    let latency = &summary["produce_latency"];
    let mut text = format!(
        "records {} bytes {} over {:.2} s: {:.0} rec/s, {:.1} MB/s, errors {}\n\
         produce latency ({}): p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, p99.99 {} us, max {} us",
        summary["records"], summary["bytes"], summary["seconds"].as_f64().unwrap_or(0.0),
        summary["records_per_second"].as_f64().unwrap_or(0.0), summary["mb_per_second"].as_f64().unwrap_or(0.0),
        summary["errors"], summary["mode"].as_str().unwrap_or(""),
        latency["p50_us"], latency["p90_us"], latency["p99_us"], latency["p99_9_us"], latency["p99_99_us"], latency["max_us"],
    );
    let lag = &summary["send_lag"];
    if !lag.is_null() {
        text.push_str(&format!(
            "\nsend lag: p50 {} us, p99 {} us, p99.9 {} us, max {} us",
            lag["p50_us"], lag["p99_us"], lag["p99_9_us"], lag["max_us"]
        ));
    }
    text
}
