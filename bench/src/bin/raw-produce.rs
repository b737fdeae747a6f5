//! Produce-to-acknowledgement latency with no client library and no runtime: one thread, one
//! blocking loopback socket, Produce v9 frames encoded before the run, one request in flight.
//! What it measures is the broker, the kernel's loopback and this thread's wake-ups, so beside
//! `loadgen` and `produce-probe` at the same rate it shows how much of their tail is their own.
//!
//! Open loop: request n is due at n / rate seconds and its latency counts from when it was due,
//! so a slow response that delays the next send is counted (no coordinated omission). Between
//! requests the thread sleeps until the next one is due.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, ProduceRequest, ProduceResponse,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use storage::record_batch::BatchBuilder;

const PRODUCE_VERSION: i16 = 9;
const CREATE_TOPICS_VERSION: i16 = 5;
/// Kafka's TOPIC_ALREADY_EXISTS: a topic left by an earlier run is fine.
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// The largest response this client accepts; a produce response for one partition is tiny.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// How long a request waits for its response before the run fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(about = "Produce latency from a blocking socket with no client library")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "raw")]
    topic: String,
    /// Topic configs for the CreateTopics request, as NAME=VALUE (repeatable), such as
    /// `flush.ms=100`.
    #[arg(long = "topic-config", value_name = "NAME=VALUE")]
    topic_configs: Vec<String>,
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Requests per second; each carries one record.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Requests timed, after the warm-up.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Requests sent first and left out of the figures.
    #[arg(long, default_value_t = 2_000)]
    warmup: usize,
    /// Busy-wait instead of sleeping: spin until each request is due and poll the socket for
    /// its response. A sleeping thread's wake-up on a virtual machine can take milliseconds;
    /// spinning takes it out of the figure, leaving the broker's and the loopback's.
    #[arg(long)]
    spin: bool,
    /// Print the percentiles as one JSON object.
    #[arg(long)]
    json: bool,
}

fn frame<R: Encodable + HeaderVersion>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &R,
) -> Result<Bytes, String> {
    let body = bench::encode_request(api_key, version, correlation_id, "raw-produce", request)?;
    let mut sized = BytesMut::with_capacity(4 + body.len());
    sized.extend_from_slice(&(body.len() as u32).to_be_bytes());
    sized.extend_from_slice(&body);
    Ok(sized.freeze())
}

/// Moves `length` bytes with `step` (a read or write from the bytes done so far); on a
/// non-blocking socket it spins through `WouldBlock` until `deadline`, then fails with
/// `stalled`.
fn transfer(
    length: usize,
    deadline: Instant,
    stalled: &str,
    mut step: impl FnMut(usize) -> std::io::Result<usize>,
) -> Result<(), String> {
    let mut done = 0;
    while done < length {
        match step(done) {
            Ok(0) => return Err("the broker closed the connection".into()),
            Ok(count) => done += count,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                if Instant::now() > deadline {
                    return Err(stalled.into());
                }
                std::hint::spin_loop();
            }
            Err(error) => return Err(error.to_string()),
        }
    }
    Ok(())
}

/// Fills `buffer` from the socket.
fn read_full(stream: &mut TcpStream, buffer: &mut [u8], deadline: Instant) -> Result<(), String> {
    let length = buffer.len();
    transfer(length, deadline, "no response within the timeout", |done| {
        stream.read(&mut buffer[done..])
    })
}

/// Sends one frame and reads its response, returning the body after the size prefix.
fn round_trip(stream: &mut TcpStream, frame: &[u8], body: &mut Vec<u8>) -> Result<(), String> {
    let deadline = Instant::now() + RESPONSE_TIMEOUT;
    transfer(
        frame.len(),
        deadline,
        "the broker does not read its requests",
        |done| stream.write(&frame[done..]),
    )?;
    let mut size = [0u8; 4];
    read_full(stream, &mut size, deadline)?;
    let size = u32::from_be_bytes(size) as usize;
    if size > MAX_RESPONSE_BYTES {
        return Err(format!("a {size}-byte response"));
    }
    body.resize(size, 0);
    read_full(stream, body, deadline)
}

fn decode<R: Decodable + HeaderVersion>(body: &[u8], version: i16) -> Result<R, String> {
    let mut bytes = Bytes::copy_from_slice(body);
    ResponseHeader::decode(&mut bytes, R::header_version(version))
        .map_err(|error| error.to_string())?;
    R::decode(&mut bytes, version).map_err(|error| error.to_string())
}

fn create_topic(stream: &mut TcpStream, args: &Args) -> Result<(), String> {
    let mut configs = Vec::new();
    for pair in &args.topic_configs {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("--topic-config {pair}: expected NAME=VALUE"))?;
        configs.push(
            kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_string(name.to_string()))
                .with_value(Some(StrBytes::from_string(value.to_string()))),
        );
    }
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(args.topic.clone())))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(configs)]);
    let frame = frame(ApiKey::CreateTopics, CREATE_TOPICS_VERSION, 0, &request)?;
    let mut body = Vec::new();
    round_trip(stream, &frame, &mut body)?;
    let response: CreateTopicsResponse = decode(&body, CREATE_TOPICS_VERSION)?;
    for topic in &response.topics {
        if topic.error_code != 0 && topic.error_code != TOPIC_ALREADY_EXISTS {
            return Err(format!(
                "CreateTopics {}: error {} {:?}",
                args.topic, topic.error_code, topic.error_message
            ));
        }
    }
    Ok(())
}

fn produce_frames(args: &Args) -> Result<Vec<Bytes>, String> {
    let total = args.warmup + args.requests;
    let mut value = vec![0u8; args.record_bytes];
    let mut frames = Vec::with_capacity(total);
    for request in 0..total {
        for (index, byte) in value.iter_mut().enumerate() {
            *byte = ((request as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (index % 57)) as u8;
        }
        let mut builder = BatchBuilder::default();
        builder.push(1_700_000_000_000 + request as i64, None, Some(&value));
        let produce = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(args.topic.clone())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(builder.finish())))])]);
        frames.push(frame(
            ApiKey::Produce,
            PRODUCE_VERSION,
            1 + request as i32,
            &produce,
        )?);
    }
    Ok(frames)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.rate <= 0.0 || !args.rate.is_finite() {
        return Err("--rate must be a positive number".into());
    }
    let mut stream = TcpStream::connect(&args.bootstrap)
        .map_err(|error| format!("connect {}: {error}", args.bootstrap))?;
    stream
        .set_nodelay(true)
        .map_err(|error| error.to_string())?;
    stream
        .set_read_timeout(Some(RESPONSE_TIMEOUT))
        .map_err(|error| error.to_string())?;
    create_topic(&mut stream, &args)?;
    let frames = produce_frames(&args)?;
    if args.spin {
        stream
            .set_nonblocking(true)
            .map_err(|error| error.to_string())?;
    }
    let mut histogram = bench::latency_histogram();
    let mut late_sends = bench::latency_histogram();
    let mut body = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    for (index, frame) in frames.iter().enumerate() {
        let due = start + interval.mul_f64(index as f64);
        if args.spin {
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        } else {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let sent = Instant::now();
        round_trip(&mut stream, frame, &mut body)?;
        let done = Instant::now();
        let response: ProduceResponse = decode(&body, PRODUCE_VERSION)?;
        let error = response
            .responses
            .first()
            .and_then(|topic| topic.partition_responses.first())
            .map(|partition| partition.error_code)
            .ok_or("a produce response without the partition")?;
        if error != 0 {
            return Err(format!("produce {index}: error {error}"));
        }
        if index >= args.warmup {
            let micros = |duration: Duration| duration.as_micros().max(1) as u64;
            histogram.saturating_record(micros(done.saturating_duration_since(due)));
            late_sends.saturating_record(micros(sent.saturating_duration_since(due)));
        }
    }
    if args.json {
        let object = |h: &hdrhistogram::Histogram<u64>| {
            serde_json::json!({
                "p50_us": h.value_at_quantile(0.50),
                "p99_us": h.value_at_quantile(0.99),
                "p99_9_us": h.value_at_quantile(0.999),
                "max_us": h.max(),
            })
        };
        println!(
            "{}",
            serde_json::json!({
                "produce_latency": object(&histogram),
                "send_lag": object(&late_sends),
            })
        );
    } else {
        println!("produce latency: {}", bench::percentiles_line(&histogram));
        println!("send lag:        {}", bench::percentiles_line(&late_sends));
    }
    Ok(())
}
