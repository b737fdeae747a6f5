//! bench: measurements that put the broker's figures beside the machine's physical floors,
//! measured in the same run.
//!
//! - `disk-ceiling`: the disk's direct-I/O sequential write bandwidth and its `fdatasync` latency
//!   distribution, through the same I/O path the broker's logs use (`storage::dma`).
//! - `produce-probe`: an independent librdkafka producer that reports produce throughput and
//!   produce-to-acknowledgement latency percentiles against any Kafka-compatible broker, closed
//!   loop or at a fixed rate.
//! - `raw-produce`: produce latency from a blocking socket with no client library.
//! - `hiccups`: the pauses a spinning thread sees on each core, the machine's own floor.
//! - `consume-probe`: a librdkafka consumer that reads one partition from its start and reports
//!   fetch throughput.
//!
//! The side-by-side harness and component benchmarks come with the benchmark issue.

pub mod callgrind;

use hdrhistogram::Histogram;

/// A latency histogram in microseconds, 1 us to 60 s at three significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 60_000_000, 3) {
        Ok(histogram) => histogram,
        Err(_) => unreachable!("constant bounds are valid"),
    }
}

/// `p50 .. max` of a microsecond histogram, as one human-readable line.
pub fn percentiles_line(histogram: &Histogram<u64>) -> String {
    format!(
        "p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us ({} samples)",
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.90),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        histogram.len()
    )
}
