//! Compaction against the real binary and real clients: a compacted topic with many updates
//! per key and deletes ends up holding the latest value of every key at its original offset,
//! read back by librdkafka; a crash in the middle of a swap loses nothing; and
//! `__consumer_offsets` is compacted, so a restart after 100,000 commits replays only what is
//! live.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// The cleaner looks for work every 100 ms, and cleans at the first dirty byte.
const CLEANER: [&str; 4] = [
    "--set",
    "log.cleaner.backoff.ms=100",
    "--set",
    "log.cleaner.min.cleanable.ratio=0.01",
];

const KEYS: usize = 20;
const ROUNDS: usize = 40;

/// Every record of partition 0 of `topic` from the log start: offset, key, value.
fn read_partition(broker: &Broker, topic: &str) -> Vec<(i64, String, Option<String>)> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "compaction-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "reading {topic} did not reach its end"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => records.push((
                message.offset(),
                String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
                message
                    .payload()
                    .map(|value| String::from_utf8(value.to_vec()).unwrap()),
            )),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return records,
            Some(Err(error)) => panic!("consumer error: {error}"),
            None => {}
        }
    }
}

/// Produces `ROUNDS` updates of each of `KEYS` keys (a batch per round), then deletes keys 5
/// and 15, then writes filler records until the deletes are in sealed segments. Returns what
/// a compacted log must hold: each key's latest (offset, value), deletes as `None`.
fn produce_updates(broker: &Broker, topic: &str) -> BTreeMap<String, (i64, Option<String>)> {
    let (producer, deliveries) = producer(broker, &[("acks", "all"), ("linger.ms", "0")]);
    let mut sent = Vec::new();
    let value = "v".repeat(200);
    let send = |key: String, payload: Option<String>, sent: &mut Vec<(String, Option<String>)>| {
        let index = sent.len();
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(index))
            .partition(0)
            .key(key.as_bytes());
        if let Some(payload) = &payload {
            record = record.payload(payload.as_bytes());
        }
        producer.send(record).map_err(|(error, _)| error).unwrap();
        sent.push((key, payload));
    };
    for round in 0..ROUNDS {
        for key in 0..KEYS {
            send(
                format!("key-{key}"),
                Some(format!("{round}-{value}")),
                &mut sent,
            );
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }
    send("key-5".into(), None, &mut sent);
    send("key-15".into(), None, &mut sent);
    producer.flush(Duration::from_secs(30)).unwrap();
    for filler in 0..200 {
        send(
            format!("filler-{}", filler % 3),
            Some(value.clone()),
            &mut sent,
        );
        if filler % 20 == 19 {
            producer.flush(Duration::from_secs(30)).unwrap();
        }
    }
    let reports = flush(&producer, &deliveries);
    assert_eq!(reports.len(), sent.len());
    let mut latest = BTreeMap::new();
    for report in reports {
        assert!(report.error.is_none(), "{:?}", report.error);
        let (key, value) = sent[report.index].clone();
        latest.insert(key, (report.offset, value));
    }
    latest
}

/// The latest (offset, value) of every key in what was read.
fn latest_of(records: &[(i64, String, Option<String>)]) -> BTreeMap<String, (i64, Option<String>)> {
    records
        .iter()
        .map(|(offset, key, value)| (key.clone(), (*offset, value.clone())))
        .collect()
}

/// Reads until compaction has left fewer than `fewer_than` records (bounded in time).
fn wait_for_compaction(
    broker: &Broker,
    topic: &str,
    fewer_than: usize,
) -> Vec<(i64, String, Option<String>)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records = read_partition(broker, topic);
        if records.len() < fewer_than {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "{topic} still holds {} records",
            records.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_compacted_topic_keeps_the_latest_value_of_every_key_at_its_offset() {
    let scratch = scratch_dir();
    let mut broker = Broker::start(&scratch.path().join("data"), &CLEANER);
    create_topic(
        &broker,
        "prices",
        1,
        &[("cleanup.policy", "compact"), ("segment.bytes", "16384")],
    );
    let expected = produce_updates(&broker, "prices");
    let total = ROUNDS * KEYS + 2 + 200;
    let records = wait_for_compaction(&broker, "prices", total / 4);
    // Offsets go forward with gaps; each key's latest value is there at its own offset, and
    // the deletes too (delete.retention.ms has not passed).
    for pair in records.windows(2) {
        assert!(pair[0].0 < pair[1].0);
    }
    assert_eq!(latest_of(&records), expected);
    let deletes: Vec<&(i64, String, Option<String>)> = records
        .iter()
        .filter(|(_, _, value)| value.is_none())
        .collect();
    assert_eq!(deletes.len(), 2, "{deletes:?}");

    // The compacted log survives a crash as it is.
    broker.kill();
    broker.restart();
    let after = read_partition(&broker, "prices");
    assert_eq!(latest_of(&after), expected);
    assert!(after.len() <= records.len());
}

#[test]
fn a_crash_in_the_middle_of_a_swap_loses_nothing() {
    for step in ["compaction:committed", "compaction:old-removed"] {
        let scratch = scratch_dir();
        let core = shards::cpu::allowed_cores()[0].to_string();
        let mut args: Vec<&str> = CLEANER.to_vec();
        args.extend(["--cores", &core]);
        let mut broker = Broker::start(&scratch.path().join("data"), &args);
        create_topic(
            &broker,
            "ledger",
            1,
            &[("cleanup.policy", "compact"), ("segment.bytes", "16384")],
        );
        // The cleaner is held off while the updates go in: the broker starts over with the
        // crash point armed only once they are all there.
        broker.stop();
        broker.restart_with(&[&args[..], &["--set", "log.cleaner.enable=false"]].concat());
        let expected = produce_updates(&broker, "ledger");
        broker.stop();
        broker.env = vec![("BROKER_TEST_CRASH_AT".into(), step.into())];
        broker.restart_with(&args);
        assert!(
            broker.wait_for_exit(Duration::from_secs(60)),
            "the broker did not stop at {step}"
        );
        assert!(
            broker.log_text().contains("stopping at a compaction step"),
            "{}",
            broker.log_text()
        );
        broker.env.clear();
        broker.restart_with(&[&args[..], &["--set", "log.cleaner.enable=false"]].concat());
        let records = read_partition(&broker, "ledger");
        assert_eq!(latest_of(&records), expected, "after a crash at {step}");
        assert!(
            broker
                .log_text()
                .contains("finished a compaction swap a crash interrupted"),
            "{step}"
        );
    }
}

#[test]
fn consumer_offsets_is_compacted_and_a_restart_replays_only_live_commits() {
    use kafka_protocol::messages::{
        offset_commit_request, ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse,
        TopicName,
    };
    const GROUPS: usize = 4;
    const PARTITIONS: i32 = 100;
    const REQUESTS: usize = 1000;
    let scratch = scratch_dir();
    let mut args: Vec<&str> = CLEANER.to_vec();
    args.extend([
        "--set",
        "offsets.topic.num.partitions=1",
        "--set",
        "offsets.topic.segment.bytes=65536",
    ]);
    let mut broker = Broker::start(&scratch.path().join("data"), &args);
    create_topic(&broker, "positions", PARTITIONS, &[]);
    let groups: Vec<String> = (0..GROUPS)
        .map(|group| format!("readers-{group}"))
        .collect();
    let mut stream = coordinator(&broker, &groups[0]);
    // 1,000 requests of 100 commits: 100,000 commits, 400 of them live at the end.
    for request in 0..REQUESTS {
        let group = &groups[request % GROUPS];
        let partitions = (0..PARTITIONS)
            .map(|partition| {
                offset_commit_request::OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(request as i64)
            })
            .collect();
        let response: OffsetCommitResponse = kafka_call(
            &mut stream,
            ApiKey::OffsetCommit,
            8,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(text(group)))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(TopicName(text("positions")))
                        .with_partitions(partitions),
                ]),
        );
        assert!(response.topics[0]
            .partitions
            .iter()
            .all(|partition| partition.error_code == 0));
    }
    // Wait until the cleaner has compacted what the commits wrote: some 10 MB of commits
    // hold 400 live ones.
    let offsets_dir = broker.data_dir.join("__consumer_offsets-0");
    let size = || segment_bytes(&offsets_dir);
    let deadline = Instant::now() + Duration::from_secs(90);
    while size() > 1 << 20 {
        assert!(
            Instant::now() < deadline,
            "__consumer_offsets still holds {} bytes",
            size()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.stop();
    let before = broker.log_text().len();
    broker.restart();
    broker.wait_ready();
    let log = broker.log_text()[before..].to_string();
    let loaded = log
        .lines()
        .find(|line| line.contains("offsets partition loaded"))
        .unwrap_or_else(|| panic!("{log}"))
        .to_string();
    let replayed: usize = loaded
        .split_whitespace()
        .find_map(|field| field.strip_prefix("records="))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("{loaded}"));
    eprintln!("after 100,000 commits: {loaded}");
    // What is live, plus what the active segment and the not yet cleaned tail still hold.
    assert!(replayed < 10_000, "{loaded}");
    // And the committed offsets are the last ones.
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", &groups[GROUPS - 1])
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition("positions", 7);
    let committed = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        committed.find_partition("positions", 7).unwrap().offset(),
        Offset::Offset((REQUESTS - 1) as i64)
    );
}
