//! Single-consumer fetch throughput from a librdkafka consumer, against any Kafka-compatible
//! broker: reads one partition from its first offset to its end (as it was when the probe
//! started) and reports records/s and MB/s of record values. No consumer group: the partition
//! is assigned, as `kcat -C -o beginning -e` does.

use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

#[derive(Parser)]
#[command(about = "Consume one partition from the beginning and report fetch throughput")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "probe")]
    topic: String,
    #[arg(long, default_value_t = 0)]
    partition: i32,
    /// Stop after this many records even if the partition holds more.
    #[arg(long, default_value_t = u64::MAX)]
    records: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", "consume-probe")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "8388608")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|error| error.to_string())?;
    let (_, high) = consumer
        .fetch_watermarks(&args.topic, args.partition, Duration::from_secs(10))
        .map_err(|error| format!("watermarks of {}: {error}", args.topic))?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&args.topic, args.partition, Offset::Beginning)
        .map_err(|error| error.to_string())?;
    consumer
        .assign(&assignment)
        .map_err(|error| error.to_string())?;
    let wanted = args.records.min(high.max(0) as u64);
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut started = None;
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < wanted && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                started.get_or_insert_with(Instant::now);
                records += 1;
                bytes += message.payload().map_or(0, |payload| payload.len() as u64);
            }
            // The end of the partition: everything there was is read.
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) if records > 0 => break,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(error)) => return Err(error.to_string()),
            None => {}
        }
    }
    let elapsed = started.map_or(0.0, |started| started.elapsed().as_secs_f64());
    if records == 0 {
        return Err(format!(
            "no record of {} was read before the timeout",
            args.topic
        ));
    }
    println!(
        "consume {records} records ({:.1} MB of values) in {elapsed:.2} s: {:.0} records/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        records as f64 / elapsed.max(1e-9),
        bytes as f64 / 1e6 / elapsed.max(1e-9)
    );
    Ok(())
}
