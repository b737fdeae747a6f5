//! A full disk, for real: the broker's data directory on a 64 MiB ext4 filesystem mounted from a
//! loop device, filled until the broker refuses writes, then filled by someone else to the last
//! byte. Writes are refused with a retriable error and nothing acknowledged is lost; DeleteTopics
//! still works (the broker's space reserve makes room for its metadata) and frees space; writes
//! resume without a restart; and a broker restarted while the disk is full starts and serves
//! reads.
//!
//! Needs root (mount): `.ci/run` runs as root on CI. Elsewhere the test says it was skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;

/// Unmounts the filesystem when the test ends, however it ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A fresh 64 MiB ext4 filesystem (no blocks reserved for root) mounted at `mountpoint`, or
/// `None` if this machine does not let the test mount one.
fn small_filesystem(image: &Path, mountpoint: &Path) -> Option<Mounted> {
    std::fs::File::create(image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let formatted = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0"])
        .arg(image)
        .status()
        .ok()?;
    if !formatted.success() {
        return None;
    }
    std::fs::create_dir_all(mountpoint).unwrap();
    let mounted = Command::new("mount")
        .args(["-o", "loop"])
        .arg(image)
        .arg(mountpoint)
        .status()
        .ok()?;
    mounted.success().then(|| Mounted(mountpoint.to_path_buf()))
}

/// Writes into `path` until the filesystem has not one byte left.
fn fill_to_the_last_byte(path: &Path) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for chunk in [1 << 20, 64 << 10, 4096, 512, 1] {
        let bytes = vec![0x5au8; chunk];
        while file.write_all(&bytes).is_ok() && file.sync_data().is_ok() {}
    }
}

fn produce(stream: &mut std::net::TcpStream, topic: &str, records: Bytes) -> i16 {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(text(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let response: ProduceResponse = kafka_call(stream, ApiKey::Produce, 9, &request);
    response.responses[0].partition_responses[0].error_code
}

fn leader_of(broker: &Broker, topic: &str) -> std::net::TcpStream {
    connect(&broker.shard_addresses[(leaders(broker, topic)[0] % 1000) as usize])
}

const KAFKA_STORAGE_ERROR: i16 = 56;

#[test]
fn a_full_disk_refuses_writes_frees_space_on_delete_and_serves_reads_after_a_restart() {
    let scratch = scratch_dir();
    let mountpoint = scratch.path().join("disk");
    let Some(_mounted) = small_filesystem(&scratch.path().join("disk.img"), &mountpoint) else {
        eprintln!("skipped: this machine does not allow mounting a loop device (needs root)");
        return;
    };
    let mut broker = Broker::start(&mountpoint, &["--set", "log.segment.bytes=1048576"]);
    create_topic(&broker, "kept", 1, &[]);
    create_topic(&broker, "doomed", 1, &[]);
    let base = now_ms() - 1000;
    let (kept_producer, deliveries) = producer(&broker, &[("acks", "all")]);
    send_records(&kept_producer, "kept", 1, 0..200, base);
    assert!(flush(&kept_producer, &deliveries)
        .iter()
        .all(|delivery| delivery.error.is_none()));

    // The broker fills the disk itself until it refuses, retriably (librdkafka retries
    // KAFKA_STORAGE_ERROR after a metadata refresh).
    produce_until_refused(&broker, "doomed");

    // Someone else takes the rest, to the last byte.
    let filler = mountpoint.join("filler");
    fill_to_the_last_byte(&filler);
    // The broker looks at its free space every second (appends into blocks it already holds are
    // safe meanwhile); from then on every append is refused.
    let mut kept = leader_of(&broker, "kept");
    let small = Bytes::from(storage::record_batch::build_uncompressed_batch(
        1,
        100,
        now_ms(),
    ));
    let mut appended_meanwhile = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match produce(&mut kept, "kept", small.clone()) {
            KAFKA_STORAGE_ERROR => break,
            0 if Instant::now() < deadline => {
                appended_meanwhile += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => panic!("a full disk did not refuse the append (error {other})"),
        }
    }

    // DeleteTopics still works on the full disk, and frees the space its partition held.
    let deleted: DeleteTopicsResponse = kafka_call(
        &mut connect(&broker.bootstrap),
        ApiKey::DeleteTopics,
        4,
        &DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(text("doomed"))])
            .with_timeout_ms(10_000),
    );
    assert_eq!(
        deleted.responses[0].error_code, 0,
        "DeleteTopics on a full disk"
    );
    assert!(!mountpoint.join("doomed-0").exists());

    // Writes resume by themselves once the broker sees the space (it looks every second).
    wait_for_writes(&broker, "kept", "DeleteTopics");

    // Full again, to the last byte; the broker restarts on it and serves what it has.
    fill_to_the_last_byte(&filler);
    drop(kept_producer);
    broker.stop();
    broker.restart();
    broker.wait_ready();
    let acknowledged = 200 + appended_meanwhile + 1;
    let seen = consume_all(&broker, "kept", 1, acknowledged);
    assert_eq!(
        seen.len(),
        acknowledged,
        "every acknowledged record is read back on a full disk"
    );
    for (index, record) in seen.iter().take(200).enumerate() {
        assert_eq!(
            record.value.as_deref(),
            Some(test_record(index, base).value.as_bytes())
        );
    }
    let mut kept = leader_of(&broker, "kept");
    assert_eq!(
        produce(&mut kept, "kept", small),
        KAFKA_STORAGE_ERROR,
        "still full"
    );
    let (status, body) = http(&broker.admin_address, "GET", "/v1/status/ready");
    assert_eq!(status, 200);
    assert!(body.contains("disk full"), "{body}");
}

/// DeleteRecords (key 21) of partition 0 of `topic` up to its high watermark; the error code.
fn delete_all_records(broker: &Broker, topic: &str) -> i16 {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let response: DeleteRecordsResponse = kafka_call(
        &mut leader_of(broker, topic),
        ApiKey::DeleteRecords,
        2,
        &DeleteRecordsRequest::default()
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(text(topic)))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(-1)])])
            .with_timeout_ms(10_000),
    );
    response.topics[0].partitions[0].error_code
}

/// Produces to `topic` until the broker refuses (bounded), then lets someone else take the rest
/// of the disk to the last byte, and waits until the broker refuses even a small append.
fn fill_the_disk(broker: &Broker, topic: &str, filler: &Path) {
    produce_until_refused(broker, topic);
    fill_to_the_last_byte(filler);
    let mut stream = leader_of(broker, topic);
    let small = Bytes::from(storage::record_batch::build_uncompressed_batch(
        1,
        100,
        now_ms(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while produce(&mut stream, topic, small.clone()) != KAFKA_STORAGE_ERROR {
        assert!(
            Instant::now() < deadline,
            "a full disk did not refuse the append"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Produces large batches to `topic` until the broker refuses one for lack of space (bounded:
/// 400 batches of 256 KB are more than the 64 MiB disk holds).
fn produce_until_refused(broker: &Broker, topic: &str) {
    let mut stream = leader_of(broker, topic);
    let batch = Bytes::from(storage::record_batch::build_uncompressed_batch(
        64,
        4000,
        now_ms(),
    ));
    for _ in 0..400 {
        match produce(&mut stream, topic, batch.clone()) {
            0 => {}
            KAFKA_STORAGE_ERROR => return,
            other => panic!("unexpected error {other} while filling the disk"),
        }
    }
    panic!("the broker never refused writes on a 64 MiB disk");
}

/// Waits (bounded) until a small append to `topic` succeeds again.
fn wait_for_writes(broker: &Broker, topic: &str, after: &str) {
    let mut stream = leader_of(broker, topic);
    let small = Bytes::from(storage::record_batch::build_uncompressed_batch(
        1,
        100,
        now_ms(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match produce(&mut stream, topic, small.clone()) {
            0 => return,
            KAFKA_STORAGE_ERROR if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            other => panic!("writes did not resume after {after} (error {other})"),
        }
    }
}

#[test]
fn delete_records_and_retention_free_a_full_disk_and_writes_resume_without_a_restart() {
    let scratch = scratch_dir();
    let mountpoint = scratch.path().join("disk");
    let Some(_mounted) = small_filesystem(&scratch.path().join("disk.img"), &mountpoint) else {
        eprintln!("skipped: this machine does not allow mounting a loop device (needs root)");
        return;
    };
    let broker = Broker::start(
        &mountpoint,
        &[
            "--set",
            "log.segment.bytes=1048576",
            "--set",
            "log.retention.check.interval.ms=100",
        ],
    );
    create_topic(&broker, "ledger", 1, &[]);
    let filler = mountpoint.join("filler");

    // DeleteRecords on the full disk: the new start is stored, the segments below it go, and
    // the broker takes writes again.
    fill_the_disk(&broker, "ledger", &filler);
    assert_eq!(
        delete_all_records(&broker, "ledger"),
        0,
        "DeleteRecords on a full disk"
    );
    wait_for_writes(&broker, "ledger", "DeleteRecords");

    // Retention on the full disk: a byte limit set while the disk is full (AlterConfigs) takes
    // effect at the next check and frees the space.
    std::fs::remove_file(&filler).unwrap();
    fill_the_disk(&broker, "ledger", &filler);
    let altered: AlterConfigsResponse = kafka_call(
        &mut connect(&broker.bootstrap),
        ApiKey::AlterConfigs,
        1,
        &AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(text("ledger"))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(text("retention.bytes"))
                    .with_value(Some(text("1048576")))]),
        ]),
    );
    assert_eq!(
        altered.responses[0].error_code, 0,
        "AlterConfigs on a full disk: {:?}",
        altered.responses[0].error_message
    );
    let size_of_ledger = || -> u64 {
        std::fs::read_dir(mountpoint.join("ledger-0"))
            .unwrap()
            .filter_map(|entry| entry.ok()?.metadata().ok())
            .map(|metadata| metadata.len())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while size_of_ledger() > 8 << 20 {
        assert!(
            Instant::now() < deadline,
            "retention left {} bytes",
            size_of_ledger()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for_writes(&broker, "ledger", "retention");
}
