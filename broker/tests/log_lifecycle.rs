//! The data lifecycle against the real binary and librdkafka: retention removes old segments
//! while producers and consumers run, and a consumer positioned below the new log start is
//! reset by its `auto.offset.reset`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// Retention runs every 100 ms in these tests instead of Kafka's 5 minutes.
const RETENTION_CHECK: &str = "log.retention.check.interval.ms=100";

fn watermarks(consumer: &BaseConsumer, topic: &str) -> (i64, i64) {
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap()
}

/// Waits (bounded) until the log start of partition 0 passes `above`; returns it.
fn wait_for_log_start_above(consumer: &BaseConsumer, topic: &str, above: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (low, _) = watermarks(consumer, topic);
        if low > above {
            return low;
        }
        assert!(
            Instant::now() < deadline,
            "the log start of {topic} stayed at {low}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first record a consumer with `auto.offset.reset=earliest` gets when assigned offset 0.
fn first_offset_from_zero(broker: &Broker, topic: &str) -> i64 {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "below-the-start")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Offset(0))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => return message.offset(),
            Some(Err(error)) => panic!("consumer error: {error}"),
            None => {}
        }
    }
    panic!("no record reached the consumer")
}

#[test]
fn retention_by_bytes_removes_old_segments_while_producing_and_resets_a_consumer_below_it() {
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    let broker = Broker::start(&data, &["--set", RETENTION_CHECK]);
    let segment_bytes = 16 * 1024;
    let retention_bytes = 64 * 1024;
    create_topic(
        &broker,
        "capped",
        1,
        &[
            ("segment.bytes", &segment_bytes.to_string()),
            ("retention.bytes", &retention_bytes.to_string()),
        ],
    );
    let watcher: BaseConsumer = broker.client_config().create().unwrap();
    let (producer, deliveries) = producer(&broker, &[("acks", "all")]);
    // Produce in rounds while retention runs, until it has moved the start at least twice.
    let mut sent = 0;
    let mut starts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while starts.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "retention never moved: {starts:?}"
        );
        send_records(&producer, "capped", 1, sent..sent + 200, now_ms());
        sent += 200;
        flush(&producer, &deliveries);
        let (low, _) = watermarks(&watcher, "capped");
        if low > starts.last().copied().unwrap_or(0) {
            starts.push(low);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    let reports = flush(&producer, &deliveries);
    assert!(reports.iter().all(|report| report.error.is_none()));
    let (_, high) = watermarks(&watcher, "capped");
    assert_eq!(high, sent as i64, "every record was acknowledged");
    let low = wait_for_log_start_above(&watcher, "capped", 0);

    // What is left is what retention.bytes keeps: at least the limit, less than it plus a
    // segment and the active one.
    let partition_dir = data.join("capped-0");
    let on_disk = common::segment_bytes(&partition_dir);
    assert!(
        on_disk < (retention_bytes + 3 * segment_bytes) as u64 * 2,
        "{on_disk} bytes of segments left"
    );
    assert!(segment_files(&partition_dir) >= 2);

    // A consumer at offset 0 is below the start: OFFSET_OUT_OF_RANGE, then earliest.
    let first = first_offset_from_zero(&broker, "capped");
    assert!(first >= low, "first record {first}, log start {low}");
    // Everything from the start on reads back, in order.
    let seen = consume_all(&broker, "capped", 1, (high - first) as usize);
    assert_eq!(seen.first().map(|record| record.offset), Some(first));
    assert_eq!(seen.len() as i64, high - first);
}

#[test]
fn retention_by_time_removes_segments_whose_newest_record_is_too_old() {
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    let broker = Broker::start(&data, &["--set", RETENTION_CHECK]);
    create_topic(
        &broker,
        "aging",
        1,
        &[("segment.bytes", "16384"), ("retention.ms", "3600000")],
    );
    let (producer, deliveries) = producer(&broker, &[("acks", "all")]);
    // Records stamped two hours ago fill several segments; then current ones.
    let two_hours_ago = now_ms() - 2 * 3_600_000;
    send_records(&producer, "aging", 1, 0..300, two_hours_ago);
    flush(&producer, &deliveries);
    send_records(&producer, "aging", 1, 300..310, now_ms());
    let reports = flush(&producer, &deliveries);
    assert!(reports.iter().all(|report| report.error.is_none()));
    let watcher: BaseConsumer = broker.client_config().create().unwrap();
    let low = wait_for_log_start_above(&watcher, "aging", 0);
    let (_, high) = watermarks(&watcher, "aging");
    assert_eq!(high, 310);
    // Only the old records' segments went: the current ones are all still there.
    assert!(low <= 300, "log start {low} passed the current records");
    let seen = consume_all(&broker, "aging", 1, (high - low) as usize);
    assert_eq!(seen.len() as i64, high - low);
    assert!(seen.iter().any(|record| record.offset == 309));
}

#[test]
fn a_compacted_topic_is_not_deleted_by_retention() {
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    // One shard, so that one retention task passes over both topics.
    let core = shards::cpu::allowed_cores()[0].to_string();
    let broker = Broker::start(&data, &["--set", RETENTION_CHECK, "--cores", &core]);
    create_topic(
        &broker,
        "kept",
        1,
        &[
            ("segment.bytes", "16384"),
            ("retention.bytes", "1"),
            ("cleanup.policy", "compact"),
        ],
    );
    // The control: the same records and limits with the delete policy.
    create_topic(
        &broker,
        "dropped",
        1,
        &[("segment.bytes", "16384"), ("retention.bytes", "1")],
    );
    let (producer, deliveries) = producer(&broker, &[("acks", "all")]);
    // In rounds: each flush makes a batch of its own, so segments roll.
    for round in 0..3 {
        send_records(
            &producer,
            "kept",
            1,
            round * 100..(round + 1) * 100,
            now_ms(),
        );
        send_records(
            &producer,
            "dropped",
            1,
            round * 100..(round + 1) * 100,
            now_ms(),
        );
        flush(&producer, &deliveries);
    }
    let reports = flush(&producer, &deliveries);
    assert!(reports.iter().all(|report| report.error.is_none()));
    let watcher: BaseConsumer = broker.client_config().create().unwrap();
    // Once retention has moved the control twice, it has passed over the compacted topic at
    // least once after its records were in (one pass covers every log of the shard).
    let first = wait_for_log_start_above(&watcher, "dropped", 0);
    for round in 3..6 {
        send_records(
            &producer,
            "dropped",
            1,
            round * 100..(round + 1) * 100,
            now_ms(),
        );
        flush(&producer, &deliveries);
    }
    wait_for_log_start_above(&watcher, "dropped", first);
    assert_eq!(watermarks(&watcher, "kept"), (0, 300));
}

/// DeleteRecords through librdkafka's admin client: the start moves to the offset asked (or to
/// the high watermark for `Offset::End`), survives a restart, and an offset past the high
/// watermark or a compacted topic is refused with Kafka's errors.
#[test]
fn delete_records_moves_the_log_start_durably_and_refuses_what_kafka_refuses() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::error::RDKafkaErrorCode;
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    let mut broker = Broker::start(&data, &[]);
    create_topic(&broker, "ledger", 2, &[("segment.bytes", "16384")]);
    create_topic(&broker, "keyed", 1, &[("cleanup.policy", "compact")]);
    let (producer, deliveries) = producer(&broker, &[("acks", "all")]);
    for round in 0..4 {
        send_records(
            &producer,
            "ledger",
            2,
            round * 100..(round + 1) * 100,
            now_ms(),
        );
        flush(&producer, &deliveries);
    }
    send_records(&producer, "keyed", 1, 0..10, now_ms());
    let reports = flush(&producer, &deliveries);
    assert!(reports.iter().all(|report| report.error.is_none()));
    let watcher: BaseConsumer = broker.client_config().create().unwrap();
    let high = |partition| {
        watcher
            .fetch_watermarks("ledger", partition, Duration::from_secs(10))
            .unwrap()
    };
    assert_eq!(high(0), (0, 200));

    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        broker.client_config().create().unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted
        .add_partition_offset("ledger", 0, Offset::Offset(150))
        .unwrap();
    wanted
        .add_partition_offset("ledger", 1, Offset::End)
        .unwrap();
    let deleted =
        futures_lite::future::block_on(admin.delete_records(&wanted, &AdminOptions::new()))
            .unwrap();
    let result = |list: &TopicPartitionList, topic: &str, partition| {
        let element = list.find_partition(topic, partition).unwrap();
        (element.offset(), element.error())
    };
    assert_eq!(result(&deleted, "ledger", 0), (Offset::Offset(150), Ok(())));
    assert_eq!(result(&deleted, "ledger", 1), (Offset::Offset(200), Ok(())));
    assert_eq!(high(0), (150, 200));
    assert_eq!(high(1), (200, 200));
    // What is left of partition 0 reads from 150 on.
    let seen = consume_all_of(&broker, "ledger", &[0], 50);
    assert_eq!(seen.first().map(|record| record.offset), Some(150));
    assert_eq!(seen.len(), 50);

    // Past the high watermark, and a compacted topic: refused, nothing moves.
    let mut refused = TopicPartitionList::new();
    refused
        .add_partition_offset("ledger", 0, Offset::Offset(201))
        .unwrap();
    refused
        .add_partition_offset("keyed", 0, Offset::Offset(5))
        .unwrap();
    let outcome =
        futures_lite::future::block_on(admin.delete_records(&refused, &AdminOptions::new()))
            .unwrap();
    let error_of = |topic: &str| match result(&outcome, topic, 0).1 {
        Err(rdkafka::error::KafkaError::OffsetFetch(code)) => Some(code),
        Err(other) => panic!("{topic}: {other:?}"),
        Ok(()) => None,
    };
    assert_eq!(error_of("ledger"), Some(RDKafkaErrorCode::OffsetOutOfRange));
    assert_eq!(error_of("keyed"), Some(RDKafkaErrorCode::PolicyViolation));
    assert_eq!(high(0), (150, 200));

    // The start survives a crash of the broker.
    drop(admin);
    drop(watcher);
    broker.kill();
    broker.restart();
    let watcher: BaseConsumer = broker.client_config().create().unwrap();
    assert_eq!(
        watcher
            .fetch_watermarks("ledger", 0, Duration::from_secs(10))
            .unwrap(),
        (150, 200)
    );
}
