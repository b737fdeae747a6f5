//! The node's cluster settings, by Kafka's names: what a node runs reaches clients, and what it
//! cannot run is refused at start with the property named. And the controller quorum the node
//! runs, as DescribeQuorum reports it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use kafka_protocol::messages::{
    describe_quorum_request, ApiKey, DescribeClusterRequest, DescribeClusterResponse,
    DescribeQuorumRequest, DescribeQuorumResponse, MetadataRequest, MetadataResponse, TopicName,
};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Each of these starts is refused with exit code 2 and a message naming the property and why;
/// none leaves a broker running or a data directory behind.
#[test]
fn cluster_settings_this_node_cannot_honour_are_refused_at_start() {
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--set", "process.roles=broker"],
            &["process.roles", "separate controller quorum"],
        ),
        (
            &["--set", "process.roles=controller"],
            &["process.roles", "controller-only"],
        ),
        (
            &["--listen", "SSL://127.0.0.1:0"],
            &["listeners", "TLS and SASL are not supported"],
        ),
        (
            &["--set", "controller.quorum.voters=0@127.0.0.1:1"],
            &["listeners", "controller.listener.names"],
        ),
        (
            &[
                "--listen",
                "PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:1,C2://127.0.0.1:2",
                "--set",
                "controller.listener.names=CONTROLLER,C2",
                "--set",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,C2:PLAINTEXT",
                "--set",
                "controller.quorum.voters=0@127.0.0.1:1,1@127.0.0.2:1",
            ],
            &["listeners", "one controller listener per node"],
        ),
        (
            &["--set", "controller.quorum.voters=1@127.0.0.2:1"],
            &[
                "controller.quorum.voters",
                "node.id 0 is not among the voters",
            ],
        ),
        (
            &["--set", "advertised.listeners=PLAINTEXT://0.0.0.0:9092"],
            &["advertised.listeners", "not an address clients can reach"],
        ),
        (
            &["--set", "node.id=2147483"],
            &["node.id", "must be between 0 and 2147482"],
        ),
    ];
    for (args, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["start", "--admin-listen", "", "--data-dir"])
            .arg(&data)
            .args(*args)
            .output()
            .unwrap();
        let message = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        for needle in *expected {
            assert!(message.contains(needle), "{args:?}: {message}");
        }
    }
    assert!(!data.exists(), "a refused start made the data directory");
}

/// `broker.rack` is every shard's rack in Metadata and DescribeCluster, and
/// `advertised.listeners` is the host clients are sent to; librdkafka produces and consumes
/// through it.
#[test]
fn the_rack_and_the_advertised_host_reach_clients() {
    let scratch = scratch_dir();
    let broker = Broker::start(
        &scratch.path().join("data"),
        &[
            "--set",
            "broker.rack=rack-a",
            "--set",
            "advertised.listeners=PLAINTEXT://localhost:0",
        ],
    );
    let metadata: MetadataResponse = kafka_call(
        &mut connect(&broker.bootstrap),
        ApiKey::Metadata,
        12,
        &MetadataRequest::default(),
    );
    assert!(!metadata.brokers.is_empty());
    for listed in &metadata.brokers {
        assert_eq!(listed.host.as_str(), "localhost");
        assert_eq!(
            listed.rack.as_ref().map(|rack| rack.as_str()),
            Some("rack-a")
        );
    }
    let cluster: DescribeClusterResponse = kafka_call(
        &mut connect(&broker.bootstrap),
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default().with_endpoint_type(1),
    );
    assert_eq!(cluster.brokers.len(), metadata.brokers.len());
    for listed in &cluster.brokers {
        assert_eq!(listed.host.as_str(), "localhost");
        assert_eq!(
            listed.rack.as_ref().map(|rack| rack.as_str()),
            Some("rack-a")
        );
    }

    // librdkafka learns the brokers from Metadata, so it reaches them by "localhost".
    create_topic(&broker, "through-advertised", 2, &[]);
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "unused")
        .create()
        .unwrap();
    let listed = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    assert!(listed
        .brokers()
        .iter()
        .all(|listed| listed.host() == "localhost"));
    let (producer, deliveries) = producer(&broker, &[]);
    send_records(&producer, "through-advertised", 2, 0..20, now_ms());
    assert_eq!(flush(&producer, &deliveries).len(), 20);
    assert_eq!(consume_all(&broker, "through-advertised", 2, 20).len(), 20);
}

fn describe_quorum(address: &str, topic: &str, version: i16) -> DescribeQuorumResponse {
    kafka_call(
        &mut connect(address),
        ApiKey::DescribeQuorum,
        version,
        &DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(text(topic)))
                .with_partitions(vec![
                    describe_quorum_request::PartitionData::default().with_partition_index(0)
                ]),
        ]),
    )
}

/// A single node is its own controller quorum of one. Every shard answers DescribeQuorum (v0
/// to v2) for it: this node leads, in a term that grows with each start, and the high watermark
/// grows with each committed metadata change.
#[test]
fn describe_quorum_reports_the_quorum_of_one_from_every_shard() {
    let scratch = scratch_dir();
    let mut broker = Broker::start(&scratch.path().join("data"), &["--node-id", "4"]);
    let status = |broker: &Broker, version: i16| {
        let response = describe_quorum(&broker.shard_addresses[0], "__cluster_metadata", version);
        assert_eq!(response.error_code, 0);
        let partition = &response.topics[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        assert_eq!(partition.leader_id.0, 4);
        assert_eq!(partition.current_voters.len(), 1);
        let voter = &partition.current_voters[0];
        assert_eq!(voter.replica_id.0, 4);
        assert!(voter.log_end_offset >= partition.high_watermark);
        if version >= 1 {
            assert!(voter.last_caught_up_timestamp > 0);
        }
        assert!(partition.observers.is_empty());
        if version >= 2 {
            assert_eq!(response.nodes.len(), 1);
            assert_eq!(response.nodes[0].node_id.0, 4);
        }
        (partition.leader_epoch, partition.high_watermark)
    };
    let (epoch, high_watermark) = status(&broker, 0);
    assert!(
        epoch >= 1 && high_watermark >= 1,
        "{epoch} {high_watermark}"
    );
    for version in 1..=2 {
        assert_eq!(status(&broker, version).0, epoch);
    }
    for address in &broker.shard_addresses {
        let response = describe_quorum(address, "__cluster_metadata", 1);
        assert_eq!(response.topics[0].partitions[0].leader_id.0, 4);
    }

    create_topic(&broker, "recorded", 2, &[]);
    let (_, after_create) = status(&broker, 2);
    assert!(
        after_create > high_watermark,
        "{after_create} > {high_watermark}"
    );

    let wrong = describe_quorum(&broker.bootstrap, "not-the-metadata", 2);
    assert_eq!(
        wrong.topics[0].partitions[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );

    broker.stop();
    broker.restart();
    let (restarted_epoch, restarted_high_watermark) = status(&broker, 2);
    assert!(restarted_epoch > epoch, "a new term at each start");
    assert!(restarted_high_watermark > after_create);
    assert_eq!(leaders(&broker, "recorded").len(), 2);
}
