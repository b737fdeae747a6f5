//! Acknowledged records survive a clean stop and a crash of the broker process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// After SIGTERM the broker exits cleanly, and on restart every record is there at its offset.
#[test]
fn every_record_survives_a_sigterm_restart() {
    let scratch = scratch_dir();
    let mut broker = Broker::start(&scratch.path().join("data"), &[]);
    create_topic(&broker, "ledger", 3, &[("segment.bytes", "65536")]);
    let base = now_ms() - 60_000;
    let (producer, deliveries) = producer(&broker, &[("acks", "all")]);
    send_records(&producer, "ledger", 3, 0..3000, base);
    let reports = flush(&producer, &deliveries);
    assert!(reports.iter().all(|report| report.error.is_none()));
    drop(producer);

    assert!(broker.stop(), "broker exits with status 0 on SIGTERM");
    assert!(
        broker.data_dir.join(".clean_shutdown").exists(),
        "a clean stop is recorded"
    );
    broker.restart();
    let seen = consume_all(&broker, "ledger", 3, 3000);
    assert_exactly_the_sent_records(&seen, 3, 3000, base);
    // The topic, its placement and its configs survived too.
    assert_eq!(leaders(&broker, "ledger").len(), 3);

    // And it keeps taking appends at the right offsets.
    let (producer, deliveries) = common::producer(&broker, &[("acks", "all")]);
    send_records(&producer, "ledger", 3, 3000..3003, base);
    let reports = flush(&producer, &deliveries);
    assert_eq!(
        reports.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![1000, 1000, 1000]
    );
}

/// SIGKILL while producers are sending with acks=all: after a restart, every record whose
/// delivery was acknowledged is present at the acknowledged offset with its content, and each
/// partition is still a dense run of offsets.
#[test]
fn acknowledged_records_survive_sigkill_during_produce() {
    let scratch = scratch_dir();
    let mut broker = Broker::start(&scratch.path().join("data"), &[]);
    create_topic(&broker, "payments", 4, &[("segment.bytes", "262144")]);
    let base = now_ms() - 60_000;
    // Kill once a good number of records have been acknowledged, mid-stream.
    let (acknowledged, sent) = kill_while_producing(&mut broker, "payments", 4, base, 5000);
    assert!(
        acknowledged.len() >= 5000,
        "only {} acknowledged",
        acknowledged.len()
    );
    assert!(
        sent > acknowledged.len(),
        "the kill should interrupt the stream"
    );

    broker.restart();
    assert!(
        broker.log_text().contains("clean_shutdown=false"),
        "the restart after SIGKILL runs recovery"
    );
    let minimum = acknowledged_ends(&acknowledged, 4).iter().sum::<i64>() as usize;
    let seen = consume_all(&broker, "payments", 4, minimum);
    for partition in 0..4 {
        let offsets: Vec<i64> = seen
            .iter()
            .filter(|s| s.partition == partition)
            .map(|s| s.offset)
            .collect();
        let dense: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, dense, "partition {partition} is a dense run");
    }
    assert_acknowledged_present(&seen, &acknowledged, base);
}
