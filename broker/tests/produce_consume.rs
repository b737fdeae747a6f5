//! librdkafka producers and consumers against the real broker binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// Thousands of keyed records with headers and timestamps, spread over partitions that live on
/// different shards, come back complete, in order per partition, at dense offsets.
#[test]
fn keyed_records_with_headers_round_trip_across_shards() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &[]);
    create_topic(&broker, "orders", 4, &[]);
    let leaders = leaders(&broker, "orders");
    assert_eq!(leaders.len(), 4);
    if broker.shard_addresses.len() > 1 {
        let distinct: std::collections::BTreeSet<_> = leaders.iter().collect();
        assert!(
            distinct.len() > 1,
            "partitions should sit on several shards: {leaders:?}"
        );
    }
    let base = now_ms() - 60_000;
    let (producer, deliveries) = producer(&broker, &[("acks", "all")]);
    send_records(&producer, "orders", 4, 0..4000, base);
    let reports = flush(&producer, &deliveries);
    assert_eq!(reports.len(), 4000);
    assert!(
        reports.iter().all(|report| report.error.is_none()),
        "{:?}",
        reports.iter().find(|r| r.error.is_some())
    );
    let seen = consume_all(&broker, "orders", 4, 4000);
    assert_exactly_the_sent_records(&seen, 4, 4000, base);
    // Each delivery report's offset is where the consumer found that record.
    for report in &reports {
        let record = test_record(report.index, base);
        let found = seen
            .iter()
            .find(|s| s.partition == report.partition && s.offset == report.offset)
            .expect("acknowledged offset present");
        assert_eq!(found.key.as_deref(), Some(record.key.as_bytes()));
    }
}

/// Batches compressed with every codec librdkafka offers are stored and served as produced.
#[test]
fn every_compression_codec_round_trips() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &["--set", "num.partitions=2"]);
    let base = now_ms() - 60_000;
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        let (producer, deliveries) = producer(
            &broker,
            &[("compression.codec", codec), ("linger.ms", "20")],
        );
        send_records(&producer, &topic, 2, 0..1500, base);
        let reports = flush(&producer, &deliveries);
        assert!(
            reports.iter().all(|report| report.error.is_none()),
            "{codec}: {:?}",
            reports.iter().find(|r| r.error.is_some())
        );
        let seen = consume_all(&broker, &topic, 2, 1500);
        assert_exactly_the_sent_records(&seen, 2, 1500, base);
    }
}

/// acks=0, 1 and all each deliver every record (acks=0 gets no response but loses nothing on a
/// healthy broker), and acks=1/all report the offsets the records landed at.
#[test]
fn acks_zero_one_and_all_deliver_every_record() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &["--set", "num.partitions=3"]);
    let base = now_ms() - 60_000;
    for acks in ["0", "1", "all"] {
        let topic = format!("acks-{acks}");
        let (producer, deliveries) = producer(&broker, &[("acks", acks)]);
        send_records(&producer, &topic, 3, 0..900, base);
        let reports = flush(&producer, &deliveries);
        assert_eq!(reports.len(), 900);
        assert!(
            reports.iter().all(|report| report.error.is_none()),
            "acks={acks}"
        );
        if acks != "0" {
            for partition in 0..3 {
                let mut offsets: Vec<i64> = reports
                    .iter()
                    .filter(|r| r.partition == partition)
                    .map(|r| r.offset)
                    .collect();
                offsets.sort();
                assert_eq!(
                    offsets,
                    (0..300).collect::<Vec<i64>>(),
                    "acks={acks} p{partition}"
                );
            }
        }
        let seen = consume_all(&broker, &topic, 3, 900);
        assert_exactly_the_sent_records(&seen, 3, 900, base);
    }
}
