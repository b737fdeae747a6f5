//! Several nodes, one cluster: each a separate broker process on its own loopback address
//! (127.0.0.1, .2, .3), with a controller quorum of all three.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::{
    describe_quorum_request, ApiKey, DescribeQuorumRequest, DescribeQuorumResponse,
    MetadataRequest, MetadataResponse, TopicName,
};

/// A free port on `host` a moment ago (the controller listeners must be known to every node's
/// `controller.quorum.voters` before any starts).
fn free_port(host: &str) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    nodes: Vec<Broker>,
    _scratch: tempfile::TempDir,
}

fn start_cluster(size: usize, extra: &[&str]) -> Cluster {
    let scratch = scratch_dir();
    let hosts: Vec<String> = (1..=size).map(|index| format!("127.0.0.{index}")).collect();
    let ports: Vec<u16> = hosts.iter().map(|host| free_port(host)).collect();
    let voters: Vec<String> = hosts
        .iter()
        .zip(&ports)
        .enumerate()
        .map(|(id, (host, port))| format!("{id}@{host}:{port}"))
        .collect();
    let voters = format!("controller.quorum.voters={}", voters.join(","));
    let nodes = hosts
        .iter()
        .zip(&ports)
        .enumerate()
        .map(|(id, (host, port))| {
            let listen = format!("PLAINTEXT://{host}:0,CONTROLLER://{host}:{port}");
            let id_text = id.to_string();
            let rack = format!("broker.rack=rack-{id}");
            let mut args = vec!["--node-id", &id_text, "--set", &voters, "--set", &rack];
            args.extend_from_slice(extra);
            Broker::start_node(&scratch.path().join(format!("node-{id}")), &listen, &args)
        })
        .collect();
    Cluster {
        nodes,
        _scratch: scratch,
    }
}

fn metadata(broker: &Broker) -> MetadataResponse {
    kafka_call(
        &mut connect(&broker.bootstrap),
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    )
}

fn describe_quorum(broker: &Broker) -> DescribeQuorumResponse {
    kafka_call(
        &mut connect(&broker.bootstrap),
        ApiKey::DescribeQuorum,
        2,
        &DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(text("__cluster_metadata")))
                .with_partitions(vec![
                    describe_quorum_request::PartitionData::default().with_partition_index(0)
                ]),
        ]),
    )
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three nodes register with one controller quorum. Every node's Metadata lists every node's
/// shards with their racks; a topic created through any node is placed across all of them;
/// librdkafka, bootstrapped from one node, produces to and consumes from all three; and the
/// quorum reports three voters and one leader from any node.
#[test]
fn three_nodes_form_one_cluster_that_librdkafka_uses_whole() {
    let cluster = start_cluster(3, &[]);
    let shards: usize = cluster.nodes[0].shard_addresses.len();
    for node in &cluster.nodes {
        until("every node to see every node's shards", || {
            metadata(node).brokers.len() == 3 * shards
        });
    }
    let listed = metadata(&cluster.nodes[1]);
    let nodes: BTreeSet<i32> = listed
        .brokers
        .iter()
        .map(|broker| broker.node_id.0 / 1000)
        .collect();
    assert_eq!(nodes, BTreeSet::from([0, 1, 2]));
    for broker in &listed.brokers {
        let node = broker.node_id.0 / 1000;
        assert_eq!(broker.host.as_str(), format!("127.0.0.{}", node + 1));
        assert_eq!(
            broker.rack.as_ref().map(|rack| rack.to_string()),
            Some(format!("rack-{node}"))
        );
    }

    // One cluster id, committed by the first controller, whichever node is asked.
    until("one cluster id on every node", || {
        let ids: BTreeSet<Option<String>> = cluster
            .nodes
            .iter()
            .map(|node| metadata(node).cluster_id.map(|id| id.to_string()))
            .collect();
        ids.len() == 1
    });

    let quorum = describe_quorum(&cluster.nodes[2]);
    assert_eq!(quorum.error_code, 0, "{quorum:?}");
    let partition = &quorum.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0, "{partition:?}");
    assert!((0..3).contains(&partition.leader_id.0));
    assert_eq!(partition.current_voters.len(), 3);

    // Created through a node that may not be the controller: the request is forwarded.
    create_topic(&cluster.nodes[2], "spread", 6, &[]);
    let leaders = leaders(&cluster.nodes[0], "spread");
    let leader_nodes: BTreeSet<i32> = leaders.iter().map(|leader| leader / 1000).collect();
    assert_eq!(leader_nodes, BTreeSet::from([0, 1, 2]), "{leaders:?}");

    let (producer, deliveries) = producer(&cluster.nodes[0], &[("enable.idempotence", "true")]);
    send_records(&producer, "spread", 6, 0..600, now_ms());
    let delivered = flush(&producer, &deliveries);
    assert_eq!(delivered.len(), 600);
    assert!(
        delivered.iter().all(|delivery| delivery.error.is_none()),
        "{:?}",
        delivered.iter().find(|delivery| delivery.error.is_some())
    );
    let partitions: BTreeSet<i32> = delivered
        .iter()
        .map(|delivery| delivery.partition)
        .collect();
    assert_eq!(partitions.len(), 6);
    let seen = consume_all(&cluster.nodes[1], "spread", 6, 600);
    assert_eq!(seen.len(), 600);
}

/// A node that stops heartbeating is fenced within `broker.session.timeout.ms`: clients are no
/// longer sent to it, its partitions report no leader, and new partitions go to the others. It
/// registers again when it restarts, with its new ports, and serves its partitions again.
#[test]
fn a_silent_node_is_fenced_and_serves_again_after_its_restart() {
    let mut cluster = start_cluster(
        3,
        &[
            "--set",
            "broker.session.timeout.ms=2000",
            "--set",
            "broker.heartbeat.interval.ms=250",
        ],
    );
    let shards = cluster.nodes[0].shard_addresses.len();
    until("every node's shards", || {
        metadata(&cluster.nodes[0]).brokers.len() == 3 * shards
    });
    create_topic(&cluster.nodes[0], "before", 6, &[]);
    let (producer, deliveries) = producer(&cluster.nodes[0], &[]);
    send_records(&producer, "before", 6, 0..60, now_ms());
    assert!(flush(&producer, &deliveries)
        .iter()
        .all(|delivery| delivery.error.is_none()));
    drop(producer);

    cluster.nodes[2].kill();
    until("node 2 to be fenced", || {
        metadata(&cluster.nodes[0]).brokers.len() == 2 * shards
    });
    let scrape = http(&cluster.nodes[0].admin_address, "GET", "/metrics").1;
    assert_eq!(metric_value(&scrape, "broker_cluster_nodes"), Some(3.0));
    assert_eq!(
        metric_value(&scrape, "broker_cluster_nodes_fenced"),
        Some(1.0)
    );
    let leaders_of_quorum: f64 = cluster.nodes[..2]
        .iter()
        .map(|node| {
            let scrape = http(&node.admin_address, "GET", "/metrics").1;
            metric_value(&scrape, "broker_controller_quorum_leader").unwrap_or(0.0)
        })
        .sum();
    assert_eq!(
        leaders_of_quorum, 1.0,
        "one of the two left leads the quorum"
    );
    let listed = metadata(&cluster.nodes[1]);
    assert!(listed
        .brokers
        .iter()
        .all(|broker| broker.node_id.0 / 1000 != 2));
    let before = listed
        .topics
        .iter()
        .find(|topic| topic.name.as_ref().map(|name| name.as_str()) == Some("before"))
        .unwrap();
    for partition in &before.partitions {
        let on_node_2 = partition
            .replica_nodes
            .iter()
            .all(|replica| replica.0 / 1000 == 2);
        assert_eq!(
            partition.error_code == 5,
            on_node_2,
            "LEADER_NOT_AVAILABLE exactly where the fenced node leads: {partition:?}"
        );
    }

    create_topic(&cluster.nodes[1], "after", 4, &[]);
    let leaders = leaders(&cluster.nodes[0], "after");
    assert!(
        leaders.iter().all(|leader| leader / 1000 != 2),
        "{leaders:?}"
    );
    let (second, deliveries) = common::producer(&cluster.nodes[1], &[]);
    send_records(&second, "after", 4, 0..40, now_ms());
    assert!(flush(&second, &deliveries)
        .iter()
        .all(|delivery| delivery.error.is_none()));
    assert_eq!(consume_all(&cluster.nodes[0], "after", 4, 40).len(), 40);

    cluster.nodes[2].restart();
    until("node 2 to register again", || {
        metadata(&cluster.nodes[0]).brokers.len() == 3 * shards
    });
    assert_eq!(consume_all(&cluster.nodes[0], "before", 6, 60).len(), 60);
}

/// A single node's metadata.json (from before the metadata log) cannot seed a quorum of
/// several voters: each voter would import its own. The start is refused, saying so.
#[test]
fn a_legacy_single_node_directory_cannot_seed_a_quorum_of_several() {
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    std::fs::create_dir_all(data.join("__cluster_metadata")).unwrap();
    std::fs::write(
        data.join("__cluster_metadata").join("metadata.json"),
        r#"{"cluster_id":"legacy","version":1,"topics":{}}"#,
    )
    .unwrap();
    let port = free_port("127.0.0.1");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["start", "--admin-listen", "", "--data-dir"])
        .arg(&data)
        .args([
            "--listen",
            &format!("PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{port}"),
            "--set",
            &format!("controller.quorum.voters=0@127.0.0.1:{port},1@127.0.0.2:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        log.contains("cannot seed a quorum of several voters"),
        "{log}"
    );
    assert!(data
        .join("__cluster_metadata")
        .join("metadata.json")
        .exists());
}
