//! Writes the seed corpora of the fuzz targets (`corpus/<target>/`): valid inputs of every kind,
//! for the fuzzer to mutate. Run from `broker/fuzz` with `cargo run --example seeds`; the files
//! are committed.

use std::path::Path;

use bytes::BytesMut;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use record_format::{BatchBuilder, Compression};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let directory = Path::new("corpus").join(target);
    std::fs::create_dir_all(&directory).expect("corpus directory");
    std::fs::write(directory.join(name), bytes).expect("seed file");
}

fn frame<R: Encodable>(api_key: ApiKey, version: i16, request: &R) -> Vec<u8> {
    let mut buffer = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("seed")))
        .encode(&mut buffer, api_key.request_header_version(version))
        .expect("header");
    request.encode(&mut buffer, version).expect("body");
    buffer.to_vec()
}

fn batch(compression: Compression, keys: bool) -> Vec<u8> {
    let mut builder = BatchBuilder::for_producer(3, 0, 0);
    for index in 0..5 {
        let key = format!("key-{index}");
        builder.push_parts(
            1_700_000_000_000 + index,
            keys.then_some(key.as_bytes()),
            Some(&[b"value-", key.as_bytes()]),
            &[(b"trace", Some(b"abc"))],
        );
    }
    builder.finish_compressed(compression).expect("batch")
}

fn main() {
    let text = |value: &'static str| StrBytes::from_static_str(value);
    let topic = TopicName(text("orders"));
    let records = batch(Compression::None, true);
    let requests: Vec<(&str, Vec<u8>)> = vec![
        (
            "api_versions_v3",
            frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
        ),
        (
            "metadata_v12",
            frame(
                ApiKey::Metadata,
                12,
                &MetadataRequest::default()
                    .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                    )
                    .with_name(Some(topic.clone()))])),
            ),
        ),
        (
            "metadata_v1",
            frame(
                ApiKey::Metadata,
                1,
                &MetadataRequest::default()
                    .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                    )
                    .with_name(Some(topic.clone()))])),
            ),
        ),
        (
            "produce_v9",
            frame(
                ApiKey::Produce,
                9,
                &ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(1000)
                    .with_topic_data(vec![produce_request::TopicProduceData::default()
                        .with_name(topic.clone())
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(bytes::Bytes::from(records.clone()))),
                        ])]),
            ),
        ),
        (
            "fetch_v12",
            frame(
                ApiKey::Fetch,
                12,
                &FetchRequest::default()
                    .with_max_bytes(1 << 20)
                    .with_topics(vec![fetch_request::FetchTopic::default()
                        .with_topic(topic.clone())
                        .with_partitions(vec![fetch_request::FetchPartition::default()
                            .with_partition_max_bytes(1 << 20)])]),
            ),
        ),
        (
            "offset_commit_v8",
            frame(
                ApiKey::OffsetCommit,
                8,
                &OffsetCommitRequest::default()
                    .with_group_id(GroupId(text("group")))
                    .with_topics(vec![
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(topic.clone())
                            .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_committed_offset(42),
                            ]),
                    ]),
            ),
        ),
        (
            "join_group_v7",
            frame(
                ApiKey::JoinGroup,
                7,
                &JoinGroupRequest::default()
                    .with_group_id(GroupId(text("group")))
                    .with_protocol_type(text("consumer"))
                    .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                    )
                    .with_name(text("range"))
                    .with_metadata(bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 6]))]),
            ),
        ),
        (
            "create_topics_v5",
            frame(
                ApiKey::CreateTopics,
                5,
                &CreateTopicsRequest::default().with_topics(vec![
                    create_topics_request::CreatableTopic::default()
                        .with_name(topic.clone())
                        .with_num_partitions(3)
                        .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                            .with_name(text("cleanup.policy"))
                            .with_value(Some(text("compact")))]),
                ]),
            ),
        ),
    ];
    for (name, bytes) in &requests {
        write("request_decode", name, bytes);
    }
    // The regression frame of the huge array claim, after its header.
    let mut claim = frame(ApiKey::Metadata, 0, &MetadataRequest::default());
    claim.truncate(claim.len() - 4);
    claim.extend_from_slice(&[0x03, 0x00, 0x00, 0x03, 0x3c, 0x0c, 0x00, 0xb6]);
    write("request_decode", "metadata_v0_huge_claim", &claim);

    for (name, compression) in [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        // The first byte picks the target's mode: 1 repairs the CRC after mutation.
        let mut seed = vec![1u8];
        seed.extend(batch(compression, name != "none"));
        write("batch_validation", name, &seed);
    }

    let mut segment = vec![2u8];
    let mut offset = 0i64;
    for compression in [Compression::None, Compression::Gzip, Compression::None] {
        let mut stored = batch(compression, true);
        record_format::assign_offset(&mut stored, record_format::Offset(offset), 0);
        offset += 5;
        segment.extend(stored);
    }
    write("recovery_scan", "three_batches_rp", &segment);
    segment[0] = 3;
    write("recovery_scan", "three_batches_legacy", &segment);

    write("metadata_files", "recovery_point", &{
        let mut payload = Vec::new();
        for field in [3u64, 100, 95, 4096] {
            payload.extend_from_slice(&field.to_be_bytes());
        }
        payload
    });
    write("metadata_files", "index_like", &{
        let mut payload = Vec::new();
        for field in [0i64, 10, 200, 1_700_000_000_000] {
            payload.extend_from_slice(&field.to_be_bytes());
        }
        payload.extend_from_slice(&1u32.to_be_bytes());
        payload.extend_from_slice(&0i64.to_be_bytes());
        payload.extend_from_slice(&0i64.to_be_bytes());
        payload.extend_from_slice(&0u32.to_be_bytes());
        payload
    });
}
