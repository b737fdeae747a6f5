//! Malformed frames and bad batches get Kafka's error codes or a closed connection, never a
//! crash, a hang or a huge allocation, and other connections carry on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

fn assert_closed(stream: &mut TcpStream, what: &str) {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected the broker to close the connection, got {other:?}"),
    }
}

/// ApiVersions on a fresh connection: proves the broker still serves.
fn assert_serving(broker: &Broker) {
    let mut stream = connect(&broker.bootstrap);
    stream
        .write_all(&request_frame(
            ApiKey::ApiVersions,
            3,
            7,
            &ApiVersionsRequest::default(),
        ))
        .unwrap();
    let mut response = read_frame(&mut stream).expect("ApiVersions answered");
    let _header = kafka_protocol::messages::ResponseHeader::decode(&mut response, 0).unwrap();
    let versions = ApiVersionsResponse::decode(&mut response, 3).unwrap();
    assert_eq!(versions.error_code, 0);
}

fn metadata_v0_header() -> Vec<u8> {
    let mut header = BytesMut::new();
    header.put_i16(3); // Metadata
    header.put_i16(0); // v0
    header.put_i32(1); // correlation id
    header.put_i16(-1); // null client id
    header.to_vec()
}

/// The regression frame of the issue: a Metadata v0 body `03 00 00 03 3c 0c 00 b6` whose topic
/// array claims 50 million entries. The broker closes the connection and keeps serving; it does
/// not try to allocate for the claim. Sent also raw, as the first 8 bytes on a connection.
#[test]
fn the_huge_array_claim_frame_closes_only_its_connection() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &[]);
    let claim = [0x03, 0x00, 0x00, 0x03, 0x3c, 0x0c, 0x00, 0xb6];

    // The claim, and the largest possible one (2^31-1 topics, some 160 GB of structs
    // that an unchecked decoder would try to reserve, and abort on).
    for claim in [claim, [0x7f, 0xff, 0xff, 0xff, 0, 1, b'a', 0]] {
        let mut body = metadata_v0_header();
        body.extend_from_slice(&claim);
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let mut stream = connect(&broker.bootstrap);
        stream.write_all(&frame).unwrap();
        assert_closed(&mut stream, "huge array claim");
    }
    assert!(
        broker
            .log_text()
            .contains("array claims more elements than the request has bytes"),
        "the shape check, not the decoder, refused it"
    );

    // The same 8 bytes as the whole stream: a 50 MB frame size followed by nothing.
    let mut stream = connect(&broker.bootstrap);
    stream.write_all(&claim).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_closed(&mut stream, "truncated frame");

    assert_serving(&broker);
    assert!(!broker.log_text().contains("panicked"));
}

/// Frame sizes beyond socket.request.max.bytes, negative or too small are refused before any
/// memory is reserved; unknown API keys and unsupported versions close the connection.
#[test]
fn bad_frames_close_the_connection_and_the_broker_carries_on() {
    let scratch = scratch_dir();
    let broker = Broker::start(
        &scratch.path().join("data"),
        &["--set", "socket.request.max.bytes=1048576"],
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "oversized frame",
            (2 * 1024 * 1024i32).to_be_bytes().to_vec(),
        ),
        ("negative frame", (-5i32).to_be_bytes().to_vec()),
        ("tiny frame", [0, 0, 0, 2, 0, 1].to_vec()),
        ("unknown api key", {
            let mut frame = vec![0, 0, 0, 10];
            frame.extend_from_slice(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
            frame
        }),
        // Produce v0-2 is advertised for librdkafka's feature checks but refused, as in Kafka 4.
        ("produce v2", {
            let mut frame = vec![0, 0, 0, 16];
            frame.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 1, 0xff, 0xff, 0, 1, 0, 0, 0x13, 0x88]);
            frame
        }),
        ("garbage body", {
            let mut body = metadata_v0_header();
            body.extend_from_slice(&[0xff; 3]);
            let mut frame = (body.len() as i32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            frame
        }),
    ];
    for (what, frame) in cases {
        let mut stream = connect(&broker.bootstrap);
        stream.write_all(&frame).unwrap();
        assert_closed(&mut stream, what);
    }
    assert_serving(&broker);
}

/// An ApiVersions request at a version we do not speak gets UNSUPPORTED_VERSION in the v0
/// layout with our table (KIP-511), so the client can retry at a version we do speak.
#[test]
fn an_unsupported_api_versions_version_gets_the_table_in_v0() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &[]);
    let mut stream = connect(&broker.bootstrap);
    let mut frame = BytesMut::new();
    frame.put_i32(10);
    frame.put_i16(ApiKey::ApiVersions as i16);
    frame.put_i16(99);
    frame.put_i32(42);
    frame.put_i16(-1);
    stream.write_all(&frame).unwrap();
    let mut response = read_frame(&mut stream).expect("answered");
    let header = kafka_protocol::messages::ResponseHeader::decode(&mut response, 0).unwrap();
    assert_eq!(header.correlation_id, 42);
    let versions = ApiVersionsResponse::decode(&mut response, 0).unwrap();
    assert_eq!(versions.error_code, 35, "UNSUPPORTED_VERSION");
    let produce = versions
        .api_keys
        .iter()
        .find(|key| key.api_key == ApiKey::Produce as i16)
        .unwrap();
    assert_eq!(produce.min_version, 0);
}

fn produce_frame(topic: &str, partition: i32, records: Bytes, correlation_id: i32) -> Vec<u8> {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    request_frame(ApiKey::Produce, 9, correlation_id, &request)
}

fn produce_error(stream: &mut TcpStream, topic: &str, partition: i32, records: Bytes) -> i16 {
    stream
        .write_all(&produce_frame(topic, partition, records, 5))
        .unwrap();
    let mut response = read_frame(stream).expect("produce answered");
    let _header = kafka_protocol::messages::ResponseHeader::decode(&mut response, 1).unwrap();
    let response = ProduceResponse::decode(&mut response, 9).unwrap();
    response.responses[0].partition_responses[0].error_code
}

/// Bad batches get CORRUPT_MESSAGE, INVALID_RECORD or MESSAGE_TOO_LARGE; unknown topics and
/// partitions and partitions owned by another shard get their codes; the connection stays open.
#[test]
fn bad_batches_and_wrong_partitions_get_kafkas_error_codes() {
    let scratch = scratch_dir();
    let broker = Broker::start(&scratch.path().join("data"), &[]);
    create_topic(&broker, "checked", 2, &[("max.message.bytes", "2000")]);
    let leaders = leaders(&broker, "checked");
    let shard_of_partition_0 = (leaders[0] % 1000) as usize;
    let mut stream = connect(&broker.shard_addresses[shard_of_partition_0]);

    let good = storage::record_batch::build_uncompressed_batch(3, 10, now_ms());
    assert_eq!(
        produce_error(&mut stream, "checked", 0, Bytes::from(good.clone())),
        0
    );

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(
        produce_error(&mut stream, "checked", 0, Bytes::from(flipped)),
        2,
        "CORRUPT_MESSAGE"
    );

    let mut truncated = good.clone();
    truncated.truncate(good.len() - 5);
    assert_eq!(
        produce_error(&mut stream, "checked", 0, Bytes::from(truncated)),
        2,
        "CORRUPT_MESSAGE"
    );

    let mut two = good.clone();
    two.extend_from_slice(&good);
    assert_eq!(
        produce_error(&mut stream, "checked", 0, Bytes::from(two)),
        87,
        "INVALID_RECORD"
    );

    let big = storage::record_batch::build_uncompressed_batch(1, 3000, now_ms());
    assert_eq!(
        produce_error(&mut stream, "checked", 0, Bytes::from(big)),
        10,
        "MESSAGE_TOO_LARGE"
    );

    assert_eq!(
        produce_error(&mut stream, "checked", 9, Bytes::from(good.clone())),
        3,
        "unknown partition"
    );
    assert_eq!(
        produce_error(&mut stream, "nowhere", 0, Bytes::from(good.clone())),
        3,
        "unknown topic"
    );
    if broker.shard_addresses.len() > 1 {
        let other = (0..leaders.len())
            .find(|index| leaders[*index] != leaders[0])
            .expect("a partition on another shard");
        assert_eq!(
            produce_error(
                &mut stream,
                "checked",
                other as i32,
                Bytes::from(good.clone())
            ),
            6,
            "NOT_LEADER_OR_FOLLOWER"
        );
    }
    // After all that, the good batch still lands right after the first one.
    assert_eq!(
        produce_error(&mut stream, "checked", 0, Bytes::from(good)),
        0
    );
    let seen = consume_all(&broker, "checked", 1, 6);
    assert_eq!(seen.len(), 6);
    assert_eq!(seen.last().unwrap().offset, 5);
}
