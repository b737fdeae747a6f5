//! The admin HTTP listener: health endpoints and Prometheus metrics merged from every shard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

#[test]
fn health_turns_ready_and_metrics_count_the_produce_requests() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &[]);
    assert_eq!(http(&broker.admin_address, "GET", "/v1/status/live").0, 200);
    broker.wait_ready_within(Duration::from_secs(30));
    assert_eq!(http(&broker.admin_address, "GET", "/nowhere").0, 404);
    assert_eq!(http(&broker.admin_address, "POST", "/metrics").0, 405);

    create_topic(&broker, "observed", 2, &[]);
    let (producer, deliveries) = producer(&broker, &[("acks", "all"), ("linger.ms", "0")]);
    for round in 0..20 {
        send_records(
            &producer,
            "observed",
            2,
            round * 10..round * 10 + 10,
            now_ms(),
        );
        flush(&producer, &deliveries);
    }

    let (status, metrics) = http(&broker.admin_address, "GET", "/metrics");
    assert_eq!(status, 200);
    let produce_requests = metric_sum(&metrics, "broker_requests_total", "api=\"produce\"");
    let produce_latencies = metric_sum(
        &metrics,
        "broker_request_latency_seconds_count",
        "api=\"produce\"",
    );
    assert!(
        produce_requests >= 20.0,
        "{produce_requests} produce requests\n{metrics}"
    );
    assert_eq!(
        produce_latencies, produce_requests,
        "every produce was timed"
    );
    assert!(metric_sum(&metrics, "broker_fsync_latency_seconds_count", "shard=") >= 1.0);
    assert_eq!(metric_sum(&metrics, "broker_partitions", "shard="), 2.0);
    assert!(metric_sum(&metrics, "broker_partition_bytes", "shard=") > 0.0);
    assert!(metric_sum(&metrics, "broker_connections", "shard=") >= 1.0);
    assert_eq!(
        metric_sum(&metrics, "broker_under_replicated_partitions", "shard="),
        0.0
    );
    // A single node: its own quorum of one, which it leads, and the one node registered.
    assert_eq!(
        metric_value(&metrics, "broker_controller_quorum_leader"),
        Some(1.0)
    );
    assert!(metric_value(&metrics, "broker_controller_quorum_term").is_some_and(|term| term >= 1.0));
    assert!(metric_value(&metrics, "broker_metadata_log_applied_index")
        .is_some_and(|index| index >= 1.0));
    assert_eq!(metric_value(&metrics, "broker_cluster_nodes"), Some(1.0));
    assert_eq!(
        metric_value(&metrics, "broker_cluster_nodes_fenced"),
        Some(0.0)
    );
    for shard in 0..broker.shard_addresses.len() {
        assert!(
            metrics.contains(&format!("broker_partitions{{shard=\"{shard}\"}}")),
            "shard {shard} missing from the scrape"
        );
    }
}
