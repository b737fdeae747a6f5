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

/// A request as a client sends it, without the size prefix: the header (client id `client_id`)
/// and `request`, encoded at `version`. The benchmarks that speak Kafka themselves build
/// their frames with it.
pub fn encode_request<
    R: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion,
>(
    api_key: kafka_protocol::messages::ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &'static str,
    request: &R,
) -> Result<bytes::BytesMut, String> {
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let header = kafka_protocol::messages::RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(client_id)));
    let mut bytes = bytes::BytesMut::new();
    header
        .encode(&mut bytes, R::header_version(version))
        .map_err(|error| error.to_string())?;
    request
        .encode(&mut bytes, version)
        .map_err(|error| error.to_string())?;
    Ok(bytes)
}
