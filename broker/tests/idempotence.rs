//! The idempotent-producer contract (KIP-98): retries never write a record twice and never skip
//! one, across lost responses and broker crashes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::proxy::ChaosProxy;
use common::*;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::Producer;

const IDEMPOTENT: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("max.in.flight.requests.per.connection", "5"),
    ("message.timeout.ms", "120000"),
    ("retry.backoff.ms", "20"),
    ("socket.timeout.ms", "10000"),
    // Many small requests, so there are many responses to lose.
    ("batch.num.messages", "50"),
    // librdkafka doubles its reconnect delay up to 10 s per failed connection; dozens of cuts
    // in a row would otherwise spend the whole message timeout waiting to reconnect.
    ("reconnect.backoff.ms", "10"),
    ("reconnect.backoff.max.ms", "200"),
];

/// Many thousands of records produced while a proxy keeps cutting connections mid-response:
/// every record arrives exactly once, in order per partition, with no gaps.
#[test]
fn lost_responses_never_duplicate_or_skip_records() {
    let scratch = scratch_dir();
    let broker = Broker::start(
        &scratch.path().join("data"),
        &["--advertised-host", "127.0.0.2"],
    );
    // Each shard is a broker at 127.0.0.2:<its port>; the proxy sits there, the shard at
    // 127.0.0.1:<same port>.
    let routes: Vec<(SocketAddr, SocketAddr)> = broker
        .shard_addresses
        .iter()
        .map(|address| {
            let port: u16 = address.rsplit_once(':').unwrap().1.parse().unwrap();
            (
                SocketAddr::from(([127, 0, 0, 2], port)),
                SocketAddr::from(([127, 0, 0, 1], port)),
            )
        })
        .collect();
    let proxy = ChaosProxy::start(&routes, 7, 80);
    create_topic(&broker, "retried", 4, &[]);

    let base = now_ms() - 60_000;
    let (producer, deliveries) = producer(&broker, IDEMPOTENT);
    proxy.unleash();
    send_records(&producer, "retried", 4, 0..20_000, base);
    let deadline = Instant::now() + Duration::from_secs(120);
    while deliveries.0.lock().unwrap().len() < 20_000 && Instant::now() < deadline {
        producer.poll(Duration::from_millis(10));
        if proxy.cuts() >= 80 {
            proxy.calm();
        }
    }
    proxy.calm();
    let reports = flush(&producer, &deliveries);
    assert!(
        proxy.cuts() >= 10,
        "only {} connections were cut",
        proxy.cuts()
    );
    assert_eq!(reports.len(), 20_000);
    let failed: Vec<_> = reports.iter().filter(|r| r.error.is_some()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first {:?}",
        failed.len(),
        failed.first()
    );

    let seen = consume_all(&broker, "retried", 4, 20_000);
    assert_exactly_the_sent_records(&seen, 4, 20_000, base);
}

/// The broker is SIGKILLed and restarted (same ports) while an idempotent producer streams:
/// batches that were written but whose acknowledgements died with the process are retried after
/// the restart and recognised as duplicates, so every record is present exactly once, in order.
#[test]
fn retries_after_a_sigkill_restart_are_recognised_as_duplicates() {
    let scratch = scratch_dir();
    let mut broker = Broker::start_on_fixed_ports(&scratch.path().join("data"), &[]);
    create_topic(&broker, "crashing", 4, &[("segment.bytes", "262144")]);
    let base = now_ms() - 60_000;
    let (producer, deliveries) = producer(&broker, IDEMPOTENT);
    let producer = Arc::new(producer);
    let stop = Arc::new(AtomicBool::new(false));
    const TOTAL: usize = 30_000;
    let sender = {
        let producer = producer.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut next = 0;
            while next < TOTAL && !stop.load(Ordering::Relaxed) {
                send_records(&producer, "crashing", 4, next..next + 100, base);
                next += 100;
                producer.poll(Duration::from_millis(1));
            }
            next
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while deliveries.0.lock().unwrap().len() < 6_000 && Instant::now() < deadline {
        // Delivery reports run inside poll(); the sender may be done queueing already.
        producer.poll(Duration::from_millis(2));
    }
    broker.kill();
    let acknowledged_before_kill = deliveries.0.lock().unwrap().len();
    broker.restart();
    let sent = sender.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(sent, TOTAL);
    producer.flush(Duration::from_secs(120)).unwrap();
    let mut reports = deliveries.0.lock().unwrap().clone();
    reports.sort_by_key(|report| report.index);
    assert!(acknowledged_before_kill >= 6_000);
    assert!(
        acknowledged_before_kill < TOTAL,
        "the kill should interrupt the stream"
    );
    let failed: Vec<_> = reports.iter().filter(|r| r.error.is_some()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(reports.len(), TOTAL);

    let seen = consume_all(&broker, "crashing", 4, TOTAL);
    assert_exactly_the_sent_records(&seen, 4, TOTAL, base);
    for report in &reports {
        let found = seen
            .iter()
            .find(|s| s.partition == report.partition && s.offset == report.offset)
            .expect("acknowledged offset present");
        assert_eq!(
            found.value.as_deref(),
            Some(test_record(report.index, base).value.as_bytes()),
            "the acknowledged offset holds the acknowledged record"
        );
    }
}

/// (error code, base offset) of producing one batch from `producer_id` at `epoch`/`sequence`.
fn produce(
    stream: &mut TcpStream,
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    records: i32,
) -> (i16, i64) {
    let mut batch = storage::record_batch::build_uncompressed_batch(records, 8, now_ms());
    storage::record_batch::set_producer(&mut batch, producer_id, epoch, sequence);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("sequenced")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch)))])]);
    let response: ProduceResponse = kafka_call(stream, ApiKey::Produce, 9, &request);
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

/// Duplicates, gaps, stale epochs, unknown producers and bad producer fields get Kafka's codes;
/// the epoch bump of KIP-360 works; producer ids are unique across restarts; DescribeProducers
/// shows the producer.
#[test]
fn sequence_errors_get_kafkas_codes_and_producer_ids_stay_unique() {
    let scratch = scratch_dir();
    let mut broker = Broker::start(&scratch.path().join("data"), &[]);
    create_topic(&broker, "sequenced", 1, &[]);
    let leader = leaders(&broker, "sequenced")[0];
    let address = broker.shard_addresses[(leader % 1000) as usize].clone();
    let mut stream = TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let init: InitProducerIdResponse = kafka_call(
        &mut stream,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_timeout_ms(60_000),
    );
    assert_eq!(init.error_code, 0);
    let (id, epoch) = (init.producer_id.0, init.producer_epoch);
    assert!(id >= 0);
    assert_eq!(epoch, 0);

    assert_eq!(produce(&mut stream, id, 0, 0, 3), (0, 0));
    assert_eq!(produce(&mut stream, id, 0, 3, 2), (0, 3));
    assert_eq!(
        produce(&mut stream, id, 0, 0, 3),
        (0, 0),
        "duplicate: original offsets"
    );
    assert_eq!(
        produce(&mut stream, id, 0, 3, 2),
        (0, 3),
        "duplicate: original offsets"
    );
    assert_eq!(
        produce(&mut stream, id, 0, 9, 1).0,
        45,
        "gap: OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    assert_eq!(
        produce(&mut stream, id, 0, -4, 1).0,
        87,
        "negative sequence: INVALID_RECORD"
    );
    assert_eq!(
        produce(&mut stream, id, 1, 5, 1).0,
        45,
        "new epoch must start at 0"
    );
    assert_eq!(
        produce(&mut stream, 999_999, 0, 7, 1).0,
        59,
        "UNKNOWN_PRODUCER_ID"
    );

    // KIP-360 bump: same id, next epoch; the old epoch is fenced afterwards.
    let bumped: InitProducerIdResponse = kafka_call(
        &mut stream,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch)
            .with_transaction_timeout_ms(60_000),
    );
    assert_eq!((bumped.producer_id.0, bumped.producer_epoch), (id, 1));
    assert_eq!(produce(&mut stream, id, 1, 0, 1), (0, 5));
    assert_eq!(
        produce(&mut stream, id, 0, 5, 1).0,
        47,
        "INVALID_PRODUCER_EPOCH"
    );

    let transactional: InitProducerIdResponse = kafka_call(
        &mut stream,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("txn"))))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(
        transactional.error_code, 53,
        "transactions are refused for now"
    );

    let described: DescribeProducersResponse = kafka_call(
        &mut stream,
        ApiKey::DescribeProducers,
        0,
        &DescribeProducersRequest::default().with_topics(vec![
            kafka_protocol::messages::describe_producers_request::TopicRequest::default()
                .with_name(TopicName(StrBytes::from_static_str("sequenced")))
                .with_partition_indexes(vec![0]),
        ]),
    );
    let producers = &described.topics[0].partitions[0].active_producers;
    assert_eq!(producers.len(), 1);
    assert_eq!(producers[0].producer_id.0, id);
    assert_eq!(producers[0].producer_epoch, 1);
    assert_eq!(producers[0].last_sequence, 0);

    // After a restart, new producer ids never repeat one handed out before.
    drop(stream);
    assert!(broker.stop());
    broker.restart();
    let mut stream = TcpStream::connect(&broker.shard_addresses[0]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let again: InitProducerIdResponse = kafka_call(
        &mut stream,
        ApiKey::InitProducerId,
        0,
        &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
    );
    assert_eq!(again.error_code, 0);
    assert!(
        again.producer_id.0 > id,
        "{} reissued after {}",
        again.producer_id.0,
        id
    );
}
