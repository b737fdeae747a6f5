//! Start-up, configuration, topic administration and long polling, against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};

fn run_broker(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(args)
        .output()
        .unwrap()
}

/// A second broker on the same data directory, or on a port in use, refuses to start with a
/// message that says why; the first keeps serving.
#[test]
fn a_second_broker_on_the_same_directory_or_port_is_refused() {
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    let broker = Broker::start(&data, &[]);

    let same_dir = run_broker(&[
        "start",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!same_dir.status.success());
    let message = String::from_utf8_lossy(&same_dir.stderr);
    assert!(message.contains("in use by another broker"), "{message}");

    let other_dir = scratch.path().join("other");
    let same_port = run_broker(&[
        "start",
        "--listen",
        &broker.bootstrap,
        "--data-dir",
        other_dir.to_str().unwrap(),
    ]);
    assert!(!same_port.status.success());
    let message = String::from_utf8_lossy(&same_port.stderr);
    assert!(message.contains("address already in use"), "{message}");

    create_topic(&broker, "still-serving", 1, &[]);
}

/// `--help` documents every flag with its default; bad flags and properties get a readable
/// error and a non-zero exit.
#[test]
fn the_command_line_documents_defaults_and_refuses_bad_input() {
    let help = run_broker(&["start", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for expected in [
        "--data-dir",
        "./data",
        "--listen",
        "127.0.0.1:9092",
        "--cores",
        "--config",
        "--set",
    ] {
        assert!(text.contains(expected), "help lacks {expected}:\n{text}");
    }
    let bad = run_broker(&["start", "--set", "num.partitions=zero"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("num.partitions"));
    let bad = run_broker(&["start", "--listen", "nowhere"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("HOST:PORT"));
    let bad = run_broker(&["start", "--cores", "4096"]);
    assert!(!bad.status.success());
}

/// A TOML config file with Kafka property names takes effect: auto-created topics get its
/// `num.partitions`.
#[test]
fn a_toml_config_file_sets_kafka_properties() {
    let scratch = scratch_dir();
    let config = scratch.path().join("broker.toml");
    std::fs::write(
        &config,
        "num.partitions = 3\nauto.create.topics.enable = true\n",
    )
    .unwrap();
    let broker = Broker::start(
        &scratch.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let (producer, deliveries) = producer(&broker, &[]);
    send_records(&producer, "auto", 1, 0..1, now_ms());
    flush(&producer, &deliveries);
    assert_eq!(leaders(&broker, "auto").len(), 3);
}

/// DeleteTopics removes the topic and its files; the name can be created again, empty.
#[test]
fn deleted_topics_disappear_with_their_files() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    let broker = Broker::start(&data, &[]);
    create_topic(&broker, "doomed", 2, &[]);
    let (producer, deliveries) = producer(&broker, &[]);
    send_records(&producer, "doomed", 2, 0..10, now_ms());
    flush(&producer, &deliveries);
    assert!(data.join("doomed-0").exists() && data.join("doomed-1").exists());

    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        broker.client_config().create().unwrap();
    let results =
        futures_lite::future::block_on(admin.delete_topics(&["doomed"], &AdminOptions::new()))
            .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    let missing =
        futures_lite::future::block_on(admin.delete_topics(&["doomed"], &AdminOptions::new()))
            .unwrap();
    assert!(
        missing[0].is_err(),
        "deleting twice reports the topic unknown"
    );
    assert!(!data.join("doomed-0").exists() && !data.join("doomed-1").exists());

    create_topic(&broker, "doomed", 1, &[]);
    assert!(consume_all(&broker, "doomed", 1, 0).is_empty());
}

/// A Fetch waiting for data (long max_wait_ms) is answered as soon as a produce makes data
/// available, not when its wait runs out.
#[test]
fn a_long_poll_fetch_is_woken_by_the_append() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &[]);
    create_topic(&broker, "wake", 1, &[]);
    let leader = leaders(&broker, "wake")[0];
    let mut stream = connect(&broker.shard_addresses[(leader % 1000) as usize]);

    let request = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(30_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("wake")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let started = Instant::now();
    stream
        .write_all(&request_frame(ApiKey::Fetch, 11, 1, &request))
        .unwrap();

    // Give the fetch time to park before the append. Not needed for correctness: a fetch
    // that arrives after the append returns at once, and every assertion below still holds.
    std::thread::sleep(Duration::from_millis(300));
    let (producer, deliveries) = producer(&broker, &[("acks", "all")]);
    send_records(&producer, "wake", 1, 0..1, now_ms());
    flush(&producer, &deliveries);

    let mut response = read_frame(&mut stream).expect("fetch answered");
    let waited = started.elapsed();
    let _header = kafka_protocol::messages::ResponseHeader::decode(&mut response, 0).unwrap();
    let response = FetchResponse::decode(&mut response, 11).unwrap();
    let partition = &response.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert!(partition
        .records
        .as_ref()
        .is_some_and(|records| !records.is_empty()));
    assert_eq!(partition.high_watermark, 1);
    // Woken by the append: far sooner than the 30 s the fetch was willing to wait.
    assert!(
        waited < Duration::from_secs(20),
        "the fetch waited {waited:?}"
    );
}

/// The default relative data directory works: topics are created, records round-trip, and a
/// SIGINT stops the broker cleanly.
#[test]
fn a_relative_data_directory_works_and_sigint_stops_cleanly() {
    let scratch = scratch_dir();
    let mut broker = Broker::start_relative(scratch.path());
    let (producer, deliveries) = producer(&broker, &[("acks", "all")]);
    send_records(&producer, "relative", 1, 0..20, now_ms() - 1000);
    let reports = flush(&producer, &deliveries);
    assert!(
        reports.iter().all(|report| report.error.is_none()),
        "{reports:?}"
    );
    assert!(scratch.path().join("data/relative-0").is_dir());
    assert!(
        !broker.log_text().contains("offline"),
        "{}",
        broker.log_text()
    );
    assert!(
        broker.stop_with(libc::SIGINT),
        "clean exit: {}",
        broker.log_text()
    );
    assert!(scratch.path().join("data/.clean_shutdown").exists());
}

/// `--profile` takes the broker's cores from a tuning profile and runs its preflight checks;
/// an unknown profile is refused with a readable message.
#[test]
fn a_tuning_profile_chooses_the_cores_and_unknown_profiles_are_refused() {
    let scratch = scratch_dir();
    let profile = scratch.path().join("one-core.toml");
    std::fs::write(&profile, "include = \"dev\"\ncores = \"0\"\n").unwrap();
    let broker = Broker::start(
        &scratch.path().join("data"),
        &["--profile", profile.to_str().unwrap()],
    );
    assert_eq!(broker.shard_addresses.len(), 1, "the profile's one core");
    create_topic(&broker, "profiled", 2, &[]);
    assert_eq!(leaders(&broker, "profiled"), vec![0, 0]);

    let production = Broker::start(
        &scratch.path().join("production"),
        &["--profile", "production"],
    );
    assert!(!production.shard_addresses.is_empty());

    let unknown = run_broker(&[
        "start",
        "--profile",
        "turbo",
        "--data-dir",
        scratch.path().join("unknown").to_str().unwrap(),
    ]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no profile \"turbo\""));
}

/// A data directory from before the metadata log (its metadata in `metadata.json`) is imported
/// once: the topic keeps its id and placement, the JSON file is gone, and a restart reads the
/// log.
#[test]
fn a_data_directory_from_before_the_metadata_log_is_imported_once() {
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    let metadata_dir = data.join("__cluster_metadata");
    std::fs::create_dir_all(&metadata_dir).unwrap();
    let topic_id = "6f1f5a3c-2b1e-4c7a-9d55-0a1b2c3d4e5f";
    std::fs::write(
        metadata_dir.join("metadata.json"),
        format!(
            r#"{{"cluster_id":"legacyclusterid00000000000000000","version":3,
               "topics":{{"legacy":{{"name":"legacy","topic_id":"{topic_id}",
               "partitions":[0,0,0],"configs":{{"retention.ms":"123456"}}}}}},
               "next_producer_id":9000,"broker_configs":{{}}}}"#
        ),
    )
    .unwrap();

    let mut broker = Broker::start(&data, &[]);
    let check = |broker: &Broker| {
        let metadata: MetadataResponse = kafka_call(
            &mut connect(&broker.bootstrap),
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        );
        assert_eq!(
            metadata.cluster_id.as_ref().map(|id| id.as_str()),
            Some("legacyclusterid00000000000000000")
        );
        let topic = metadata
            .topics
            .iter()
            .find(|topic| topic.name.as_ref().map(|name| name.as_str()) == Some("legacy"))
            .expect("the imported topic");
        assert_eq!(topic.topic_id.to_string(), topic_id);
        assert_eq!(topic.partitions.len(), 3);
        assert!(topic
            .partitions
            .iter()
            .all(|partition| partition.leader_id.0 == 0));
    };
    check(&broker);
    assert!(!metadata_dir.join("metadata.json").exists());
    assert!(metadata_dir.join("quorum.snapshot").exists());
    assert!(broker
        .log_text()
        .contains("imported metadata.json into the metadata log"));

    // Producer ids continue above the imported ones, and the topic serves.
    let init: kafka_protocol::messages::InitProducerIdResponse = kafka_call(
        &mut connect(&broker.bootstrap),
        ApiKey::InitProducerId,
        4,
        &kafka_protocol::messages::InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(kafka_protocol::messages::ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0);
    assert!(init.producer_id.0 >= 9000, "{:?}", init.producer_id);
    let (producer, deliveries) = producer(&broker, &[("enable.idempotence", "true")]);
    send_records(&producer, "legacy", 3, 0..30, now_ms());
    assert_eq!(flush(&producer, &deliveries).len(), 30);
    drop(producer);
    broker.kill();
    broker.restart();
    check(&broker);
    assert_eq!(consume_all(&broker, "legacy", 3, 30).len(), 30);
}
