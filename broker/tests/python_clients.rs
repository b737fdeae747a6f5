//! kafka-python, a second and independent client implementation, against the real broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;

#[test]
fn kafka_python_round_trips_records_and_topic_configs() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &[]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/kafka_python_roundtrip.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(&broker.bootstrap)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kafka-python failed (is it installed? .ci/run installs it)\n{stdout}\n{stderr}"
    );
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
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/kafka_python_groups.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(&broker.bootstrap)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "kafka-python group scenario failed\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("800 records read exactly once by three members")
            && stdout.contains("group resumed, described, listed and deleted"),
        "{stdout}"
    );
}
