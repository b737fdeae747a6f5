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

/// The session of `start_fencing_cluster`'s nodes, in milliseconds.
const FENCING_SESSION_MS: &str = "2000";

/// `start_cluster` with fencing within 2 s of silence (heartbeats every 250 ms), once every
/// node lists every node's shards; with the shard count of a node.
fn start_fencing_cluster(size: usize) -> (Cluster, usize) {
    let cluster = start_cluster(
        size,
        &[
            "--set",
            &format!("broker.session.timeout.ms={FENCING_SESSION_MS}"),
            "--set",
            "broker.heartbeat.interval.ms=250",
        ],
    );
    let shards = cluster.nodes[0].shard_addresses.len();
    for node in &cluster.nodes {
        until("every node's shards", || {
            metadata(node).brokers.len() == size * shards
        });
    }
    (cluster, shards)
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
    let (mut cluster, shards) = start_fencing_cluster(3);
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

/// A topic's partition as Metadata (asked of `broker`) reports it: leader, replicas, ISR.
fn partition_state(broker: &Broker, topic: &str, partition: i32) -> (i16, i32, Vec<i32>, Vec<i32>) {
    let listed = metadata(broker);
    let topic = listed
        .topics
        .iter()
        .find(|found| found.name.as_ref().map(|name| name.as_str()) == Some(topic))
        .unwrap_or_else(|| panic!("{topic} is listed"));
    let partition = topic
        .partitions
        .iter()
        .find(|found| found.partition_index == partition)
        .unwrap();
    (
        partition.error_code,
        partition.leader_id.0,
        partition.replica_nodes.iter().map(|id| id.0).collect(),
        partition.isr_nodes.iter().map(|id| id.0).collect(),
    )
}

/// One acks=all produce of a 3-record batch straight to the shard at `address`, with the
/// request's `timeout_ms`; its partition's error code.
fn produce_acks_all(address: &str, topic: &str, partition: i32, timeout_ms: i32) -> i16 {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
    let batch = storage::record_batch::build_uncompressed_batch(3, 10, now_ms());
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(text(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(bytes::Bytes::from(batch)))])]);
    let response: ProduceResponse = kafka_call(&mut connect(address), ApiKey::Produce, 9, &request);
    response.responses[0].partition_responses[0].error_code
}

/// Where clients reach `broker_id`, from Metadata.
fn address_of(broker: &Broker, broker_id: i32) -> String {
    let listed = metadata(broker);
    let found = listed
        .brokers
        .iter()
        .find(|found| found.node_id.0 == broker_id)
        .unwrap_or_else(|| panic!("broker {broker_id} is listed"));
    format!("{}:{}", found.host, found.port)
}

/// The size of `topic`-`partition`'s log on the broker at `address` (DescribeLogDirs, which
/// lists followers' replicas too).
fn replica_size(address: &str, topic: &str, partition: i32) -> Option<i64> {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
    let request =
        DescribeLogDirsRequest::default()
            .with_topics(Some(vec![DescribableLogDirTopic::default()
                .with_topic(TopicName(text(topic)))
                .with_partitions(vec![partition])]));
    let response: DescribeLogDirsResponse =
        kafka_call(&mut connect(address), ApiKey::DescribeLogDirs, 2, &request);
    response
        .results
        .iter()
        .flat_map(|dir| dir.topics.iter())
        .filter(|found| found.name.as_str() == topic)
        .flat_map(|found| found.partitions.iter())
        .find(|found| found.partition_index == partition)
        .map(|found| found.partition_size)
}

fn scrape_sum(node: &Broker, name: &str) -> f64 {
    metric_sum(
        &http(&node.admin_address, "GET", "/metrics").1,
        name,
        "shard",
    )
}

/// Replication factor 3: each partition's replicas are on the three nodes (three racks), all
/// in sync. acks=all produce from librdkafka is acknowledged once every in-sync replica has it,
/// and the followers catch up to no lag. When a follower's node dies, it is fenced and leaves
/// the ISRs: a topic with `min.insync.replicas=2` keeps taking acks=all, one that needs all
/// three gets NOT_ENOUGH_REPLICAS. When the node comes back, its replicas fetch what they
/// missed, rejoin the ISRs, and the topic that needs three takes acks=all again. Nothing
/// acknowledged is lost: a consumer reads every record back.
#[test]
fn replicas_follow_their_leader_and_the_isr_decides_acks_all() {
    let (mut cluster, _) = start_fencing_cluster(3);
    create_replicated_topic(
        &cluster.nodes[1],
        "two",
        1,
        3,
        &[("min.insync.replicas", "2")],
    );
    create_replicated_topic(
        &cluster.nodes[1],
        "three",
        1,
        3,
        &[("min.insync.replicas", "3")],
    );
    for topic in ["two", "three"] {
        let (error, leader, replicas, isr) = partition_state(&cluster.nodes[0], topic, 0);
        assert_eq!(error, 0);
        let nodes: BTreeSet<i32> = replicas.iter().map(|replica| replica / 1000).collect();
        assert_eq!(nodes, BTreeSet::from([0, 1, 2]), "{topic}: {replicas:?}");
        assert_eq!(leader, replicas[0]);
        assert_eq!(isr, replicas, "{topic}: every replica starts in sync");
    }

    let (producer, deliveries) = producer(
        &cluster.nodes[0],
        &[("enable.idempotence", "true"), ("acks", "all")],
    );
    send_records(&producer, "two", 1, 0..200, now_ms());
    let delivered = flush(&producer, &deliveries);
    assert_eq!(delivered.len(), 200);
    assert!(
        delivered.iter().all(|delivery| delivery.error.is_none()),
        "{:?}",
        delivered.iter().find(|delivery| delivery.error.is_some())
    );
    let three_leader = partition_state(&cluster.nodes[0], "three", 0).1;
    let three_address = address_of(&cluster.nodes[0], three_leader);
    assert_eq!(produce_acks_all(&three_address, "three", 0, 10_000), 0);
    until("the followers to catch up", || {
        cluster
            .nodes
            .iter()
            .all(|node| scrape_sum(node, "broker_replica_max_lag") == 0.0)
    });

    // A node that leads neither partition dies.
    let leaders: BTreeSet<i32> = ["two", "three"]
        .iter()
        .map(|topic| partition_state(&cluster.nodes[0], topic, 0).1 / 1000)
        .collect();
    let victim = (0..3).find(|node| !leaders.contains(node)).unwrap() as usize;
    let asked = (victim + 1) % 3;
    // Paused, its replicas fetch nothing: acks=all cannot be answered while it is in the ISR
    // (the request times out, or, once it is fenced, the ISR is below three).
    let pid = cluster.nodes[victim].pid().unwrap() as i32;
    // SAFETY: signalling a child process this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let paused = produce_acks_all(&three_address, "three", 0, 1000);
    assert!(
        paused == 7 || paused == 20,
        "REQUEST_TIMED_OUT or NOT_ENOUGH_REPLICAS_AFTER_APPEND, not {paused}"
    );
    // The topic that needs two is answered once the paused node is fenced.
    let two_leader = partition_state(&cluster.nodes[asked], "two", 0).1;
    let answer = produce_acks_all(
        &address_of(&cluster.nodes[asked], two_leader),
        "two",
        0,
        30_000,
    );
    assert_eq!(answer, 0);
    cluster.nodes[victim].kill();
    until("the dead node's replicas to leave the ISRs", || {
        ["two", "three"].iter().all(|topic| {
            let (_, _, _, isr) = partition_state(&cluster.nodes[asked], topic, 0);
            isr.len() == 2 && isr.iter().all(|broker| broker / 1000 != victim as i32)
        })
    });
    let survivors = [asked, (victim + 2) % 3];
    let survivors_sum = |name: &str| -> f64 {
        survivors
            .iter()
            .map(|node| scrape_sum(&cluster.nodes[*node], name))
            .sum()
    };
    until("both partitions to count as under-replicated", || {
        survivors_sum("broker_under_replicated_partitions") == 2.0
    });
    assert_eq!(
        survivors_sum("broker_under_min_isr_partitions"),
        1.0,
        "only the topic that needs three is under its minimum"
    );

    send_records(&producer, "two", 1, 200..400, now_ms());
    let delivered = flush(&producer, &deliveries);
    assert_eq!(delivered.len(), 400);
    assert!(
        delivered.iter().all(|delivery| delivery.error.is_none()),
        "two in sync are enough for min.insync.replicas=2: {:?}",
        delivered.iter().find(|delivery| delivery.error.is_some())
    );
    assert_eq!(
        produce_acks_all(&three_address, "three", 0, 10_000),
        19,
        "NOT_ENOUGH_REPLICAS"
    );

    cluster.nodes[victim].restart();
    until("the restarted node's replicas to rejoin the ISRs", || {
        ["two", "three"]
            .iter()
            .all(|topic| partition_state(&cluster.nodes[asked], topic, 0).3.len() == 3)
    });
    assert_eq!(produce_acks_all(&three_address, "three", 0, 10_000), 0);
    until("no follower to lag", || {
        cluster
            .nodes
            .iter()
            .all(|node| scrape_sum(node, "broker_replica_max_lag") == 0.0)
    });
    // Every replica holds the same batches, the restarted one included.
    let replicas = partition_state(&cluster.nodes[asked], "two", 0).2;
    let sizes: Vec<Option<i64>> = replicas
        .iter()
        .map(|replica| replica_size(&address_of(&cluster.nodes[asked], *replica), "two", 0))
        .collect();
    assert!(sizes[0].is_some_and(|size| size > 0), "{sizes:?}");
    assert!(sizes.iter().all(|size| *size == sizes[0]), "{sizes:?}");
    // librdkafka's 400 and the 3 of the produce made while the node was paused.
    let seen = consume_all(&cluster.nodes[asked], "two", 1, 403);
    assert_eq!(seen.len(), 403);
    assert_acknowledged_present(&seen, &delivered, 0);
}

/// The time from a leader's loss to the first acknowledgement after it on that partition:
/// reports that arrive later than `after` past the loss can only come from the new leader.
fn failover_time(
    deliveries: &Deliveries,
    partition: i32,
    lost_at: Instant,
    after: Duration,
) -> Duration {
    let mut first = None;
    until("an acknowledgement from the new leader", || {
        first = deliveries
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|delivery| delivery.partition == partition && delivery.error.is_none())
            .map(|delivery| delivery.at)
            .filter(|at| *at > lost_at + after)
            .min();
        first.is_some()
    });
    first.unwrap() - lost_at
}

/// A fault of the harness, done to a node.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// SIGKILL a partition's leader, then start it again.
    Kill,
    /// SIGTERM a partition's leader (a controlled shutdown), then start it again.
    Stop,
    /// SIGSTOP a partition's leader until another replica leads, then SIGCONT it.
    Pause,
    /// SIGTERM and start again every node in turn, each once the ISRs are whole again.
    RollingRestart,
}

/// Runs `faults` one after another on a cluster of `size` nodes under continuous acks=all
/// produce from idempotent librdkafka (replication factor 3, `min.insync.replicas=2`), then
/// checks, Jepsen-style, that every record sent is there exactly once, at the offset it was
/// acknowledged with, in order, and nothing else. After each fault that takes a leader, an
/// in-sync follower leads in a new leader epoch, the old leader comes back as a follower
/// (truncated to what the new one holds) and rejoins the ISR, and the producer goes on.
/// Prints the failover times: from the loss of a leader to the first acknowledgement after it.
fn run_faults(size: usize, faults: &[Fault]) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let session = FENCING_SESSION_MS;
    let (mut cluster, _) = start_fencing_cluster(size);
    let partitions = 3;
    create_replicated_topic(
        &cluster.nodes[0],
        "orders",
        partitions,
        3,
        &[("min.insync.replicas", "2")],
    );
    let (producer, deliveries) = producer(
        &cluster.nodes[0],
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("message.timeout.ms", "60000"),
            // A paused leader answers nothing: librdkafka gives up on a request in flight to
            // it after socket.timeout.ms (60 s by default, as long as message.timeout.ms)
            // and retries it on the new leader.
            ("socket.timeout.ms", "5000"),
            ("request.timeout.ms", "5000"),
        ],
    );
    let producer = Arc::new(producer);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let base_timestamp = now_ms();
    let sender = {
        let (producer, stop, sent) = (producer.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut next = 0;
            // Bounded in count and in time: about a thousand records a second.
            while !stop.load(Ordering::Relaxed) && next < 100_000 {
                send_records(
                    &producer,
                    "orders",
                    partitions,
                    next..next + 10,
                    base_timestamp,
                );
                next += 10;
                sent.store(next, Ordering::Relaxed);
                producer.poll(Duration::from_millis(10));
            }
        })
    };
    let acknowledged = |deliveries: &Deliveries| {
        deliveries
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|delivery| delivery.error.is_none())
            .count()
    };
    let all_in_sync = |cluster: &Cluster, asked: usize| {
        (0..partitions).all(|partition| {
            partition_state(&cluster.nodes[asked], "orders", partition)
                .3
                .len()
                == 3
        })
    };
    let mut failovers = Vec::new();
    for (round, fault) in faults.iter().enumerate() {
        let wanted = acknowledged(&deliveries) + 300;
        until("records acknowledged before the fault", || {
            acknowledged(&deliveries) >= wanted
        });
        if *fault == Fault::RollingRestart {
            for node in 0..size {
                assert!(cluster.nodes[node].stop(), "a clean stop");
                cluster.nodes[node].restart();
                let asked = (node + 1) % size;
                until("the restarted node to rejoin every ISR", || {
                    all_in_sync(&cluster, asked)
                });
            }
            failovers.push((format!("{fault:?} of {size} nodes"), None));
            continue;
        }
        let partition = round as i32 % partitions;
        let (_, leader, _, _) =
            partition_state(&cluster.nodes[(round + 1) % size], "orders", partition);
        let victim = (leader / 1000) as usize;
        let asked = (victim + 1) % size;
        let epoch_before = {
            let listed = metadata(&cluster.nodes[asked]);
            listed.topics[0].partitions[partition as usize].leader_epoch
        };
        let led_the_quorum = {
            let scrape = http(&cluster.nodes[victim].admin_address, "GET", "/metrics").1;
            metric_value(&scrape, "broker_controller_quorum_leader") == Some(1.0)
        };
        let lost_at = Instant::now();
        let pid = cluster.nodes[victim].pid().unwrap() as i32;
        match fault {
            Fault::Kill => cluster.nodes[victim].kill(),
            Fault::Stop => assert!(cluster.nodes[victim].stop(), "a clean stop"),
            // SAFETY: signalling a child process this test started and still owns.
            Fault::Pause => assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0),
            Fault::RollingRestart => unreachable!(),
        }
        let took = failover_time(&deliveries, partition, lost_at, Duration::from_millis(200));
        let (_, new_leader, _, _) = partition_state(&cluster.nodes[asked], "orders", partition);
        assert_ne!(
            new_leader / 1000,
            victim as i32,
            "a new leader on another node"
        );
        let listed = metadata(&cluster.nodes[asked]);
        assert!(
            listed.topics[0].partitions[partition as usize].leader_epoch > epoch_before,
            "a new leader epoch"
        );
        // A node that also led the controller quorum costs a Raft election and the new
        // controller's wait of one session before it fences anyone.
        let what = format!(
            "{fault:?}{}",
            if led_the_quorum {
                " of a leader that led the quorum too"
            } else {
                ""
            }
        );
        failovers.push((what, Some(took)));
        if *fault == Fault::Pause {
            // SAFETY: as above.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        } else {
            cluster.nodes[victim].restart();
        }
        until("the old leader to rejoin every ISR", || {
            all_in_sync(&cluster, asked)
        });
    }
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    assert_eq!(
        rdkafka::producer::Producer::flush(&*producer, Duration::from_secs(60)),
        Ok(())
    );
    let count = sent.load(Ordering::Relaxed);
    let delivered = deliveries.0.lock().unwrap().clone();
    assert_eq!(delivered.len(), count, "a report for every record");
    assert!(
        delivered.iter().all(|delivery| delivery.error.is_none()),
        "{:?}",
        delivered.iter().find(|delivery| delivery.error.is_some())
    );
    let seen = consume_all(&cluster.nodes[0], "orders", partitions, count);
    // Exactly the records sent, each once, in order, at dense offsets...
    assert_exactly_the_sent_records(&seen, partitions, count, base_timestamp);
    // ...and each at the offset it was acknowledged with.
    assert_acknowledged_present(&seen, &delivered, base_timestamp);
    let mut times: Vec<Duration> = failovers.iter().filter_map(|(_, took)| *took).collect();
    times.sort();
    eprintln!(
        "failover on {size} nodes (loss of a leader to the first acknowledgement after it; \
         broker.session.timeout.ms={session}): {failovers:?}; p50 {:?}, max {:?}; {count} \
         records",
        times.get(times.len() / 2),
        times.last()
    );
}

/// Three nodes: two SIGKILLs, a SIGSTOP and a SIGTERM of leaders.
#[test]
fn killed_paused_and_stopped_leaders_are_replaced_from_the_isr_and_nothing_acknowledged_is_lost() {
    run_faults(3, &[Fault::Kill, Fault::Pause, Fault::Kill, Fault::Stop]);
}

/// Five nodes: a SIGKILL, a SIGSTOP, then a rolling restart of every node.
#[test]
fn five_nodes_keep_every_acknowledged_record_through_kills_pauses_and_a_rolling_restart() {
    run_faults(5, &[Fault::Kill, Fault::Pause, Fault::RollingRestart]);
}

/// The broker that coordinates `group`, as `node` answers FindCoordinator; `None` while none
/// does.
fn coordinator_of(node: &Broker, group: &str) -> Option<i32> {
    use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
    let found: FindCoordinatorResponse = kafka_call(
        &mut connect(&node.bootstrap),
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(text(group)),
    );
    (found.error_code == 0).then_some(found.node_id.0)
}

/// `__consumer_offsets` is replicated like any topic (`offsets.topic.replication.factor`, 3),
/// and the group coordinator moves with the leadership of its partition: when the
/// coordinator's node is killed, the partition's new leader loads the group's commits from its
/// replica, and a consumer of the group resumes exactly where the last commit was, never
/// earlier, and commits on from there.
#[test]
fn the_group_coordinator_moves_with_its_offsets_partition_and_commits_never_go_back() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::Message;
    let (mut cluster, _) = start_fencing_cluster(3);
    create_replicated_topic(
        &cluster.nodes[0],
        "events",
        2,
        3,
        &[("min.insync.replicas", "2")],
    );
    let (producer, deliveries) = producer(&cluster.nodes[0], &[("acks", "all")]);
    send_records(&producer, "events", 2, 0..200, now_ms());
    assert!(flush(&producer, &deliveries)
        .iter()
        .all(|delivery| delivery.error.is_none()));
    let group_consumer = |node: &Broker| -> BaseConsumer {
        let mut config = node.client_config();
        config
            .set("group.id", "movers")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000");
        config.create().unwrap()
    };
    let read_until = |consumer: &BaseConsumer, wanted: usize| {
        let mut read = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while read < wanted {
            assert!(Instant::now() < deadline, "read {read} of {wanted}");
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                assert!(message.offset() >= 0);
                read += 1;
            }
        }
        read
    };
    let first = group_consumer(&cluster.nodes[0]);
    first.subscribe(&["events"]).unwrap();
    read_until(&first, 100);
    first.commit_consumer_state(CommitMode::Sync).unwrap();
    let before = committed(&first, "events", 2);
    // -1: nothing read from that partition yet.
    let total = |committed: &[i64]| committed.iter().map(|offset| offset.max(&0)).sum::<i64>();
    assert!(total(&before) >= 100, "{before:?}");
    drop(first);

    let (_, _, replicas, _) = partition_state(&cluster.nodes[0], "__consumer_offsets", 0);
    assert_eq!(replicas.len(), 3, "offsets.topic.replication.factor");
    let coordinator = coordinator_of(&cluster.nodes[0], "movers").unwrap();
    let victim = (coordinator / 1000) as usize;
    let asked = (victim + 1) % 3;
    cluster.nodes[victim].kill();
    until("a coordinator on another node", || {
        coordinator_of(&cluster.nodes[asked], "movers")
            .is_some_and(|broker| broker / 1000 != victim as i32)
    });
    let second = group_consumer(&cluster.nodes[asked]);
    assert_eq!(
        committed(&second, "events", 2),
        before,
        "the new coordinator has every commit"
    );
    second.subscribe(&["events"]).unwrap();
    let remaining = 200 - total(&before) as usize;
    read_until(&second, remaining);
    second.commit_consumer_state(CommitMode::Sync).unwrap();
    let after = committed(&second, "events", 2);
    assert!(
        after
            .iter()
            .zip(&before)
            .all(|(after, before)| after >= before),
        "{before:?} then {after:?}"
    );
    assert_eq!(total(&after), 200);
}
