//! kafka-python, a second and independent client implementation, against the real broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;

/// Runs `tests/python/<script>` against the broker and returns its stdout; fails the test with
/// both outputs if the script fails.
fn run_script(broker: &Broker, script: &str) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(path)
        .arg(&broker.bootstrap)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed (is kafka-python installed? .ci/run installs it)\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn kafka_python_round_trips_records_and_topic_configs() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &[]);
    let stdout = run_script(&broker, "kafka_python_roundtrip.py");
    assert!(
        stdout.contains("gzip: 600 records round-tripped"),
        "{stdout}"
    );
}

#[test]
fn kafka_python_consumer_group_shares_commits_and_resumes() {
    let scratch = scratch_dir();
    let broker = Broker::start(
        &scratch.path().join("data"),
        &["--set", "group.initial.rebalance.delay.ms=1000"],
    );
    let stdout = run_script(&broker, "kafka_python_groups.py");
    assert!(
        stdout.contains("800 records read exactly once by three members")
            && stdout.contains("group resumed, described, listed and deleted"),
        "{stdout}"
    );
}

#[test]
fn kafka_python_admin_describes_log_dirs_and_the_cluster_and_deletes_records() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &[]);
    let stdout = run_script(&broker, "kafka_python_admin.py");
    assert!(
        stdout.contains("log dirs described for 3 partitions; records below 40 deleted")
            && stdout.contains("cluster described:"),
        "{stdout}"
    );
}

#[test]
fn kafka_python_admin_alters_and_describes_configs_adds_partitions_and_pages_topics() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &[]);
    let stdout = run_script(&broker, "kafka_python_configs.py");
    assert!(
        stdout.contains("configs altered and described; partitions added; 3 pages described"),
        "{stdout}"
    );
}

#[test]
fn kafka_python_consumer_of_100_partitions_uses_incremental_fetch_sessions() {
    let scratch = scratch_dir();
    // Two shards, so each session holds some 50 partitions whatever the machine's size.
    let cores = shards::cpu::allowed_cores();
    if cores.len() < 2 {
        eprintln!(
            "skipped: needs two cores, this process may use {}",
            cores.len()
        );
        return;
    }
    let two = format!("{},{}", cores[0], cores[1]);
    let broker = Broker::start(&scratch.path().join("data"), &["--cores", &two]);
    let stdout = run_script(&broker, "kafka_python_fetch_sessions.py");
    assert!(stdout.contains("fetch sessions;"), "{stdout}");
    // The shards keep the sessions (the consumer closed without ending them).
    let (status, metrics) = http(&broker.admin_address, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(
        metric_sum(&metrics, "broker_fetch_sessions", "shard=") >= 1.0,
        "{metrics}"
    );
    assert!(metric_sum(&metrics, "broker_fetch_session_partitions", "shard=") >= 1.0);
}
