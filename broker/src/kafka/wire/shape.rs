//! A walk over a request body that checks every length against the bytes that are really there,
//! before `kafka-protocol` decodes it.
//!
//! Why by hand: `kafka-protocol` reserves `Vec::with_capacity(n)` for an array count `n` read from
//! the wire, so a 12-byte Metadata request claiming 50 million topics makes it allocate gigabytes
//! (or abort on a larger claim) before it notices the bytes are missing. No library checks a
//! Kafka body's shape without decoding it, so this module carries each accepted request's field
//! layout (from Kafka's message specs) and walks it: an array may not claim more elements than
//! bytes remain (each element takes at least one byte), and a string or byte field may not claim
//! more bytes than remain. A body that passes can only make the decoder allocate in proportion to
//! its own size. Tagged fields are skipped by their sizes; none of the accepted requests carries
//! an array inside a known tagged field.
//!
//! The layouts are checked against the `kafka-protocol` encoder for every advertised version in
//! the tests below, so a layout that drifts from the decoder fails the build's tests.
//!
//! The walk also estimates what the body will decode to (`decoded_bytes`): a count bound alone
//! still lets a request of tiny elements decode to a hundred times its size (a Metadata request
//! naming millions of empty topics), so the connection refuses a request whose estimate passes
//! `DECODE_AMPLIFICATION_MAX` times its size, and pays for the estimate from the shard's request
//! memory before decoding.

use kafka_protocol::messages::ApiKey;

#[derive(Debug, Clone, Copy)]
enum Ty {
    I8,
    I16,
    I32,
    I64,
    Uuid,
    /// String, nullable or not (the decoder enforces nullability).
    Str,
    /// Bytes or records, nullable or not.
    Bytes,
    /// Array of structs, nullable or not.
    Structs(&'static [Field]),
    I32s,
    Strs,
    /// A nullable struct (not an array): a presence byte, then the struct.
    OptionalStruct(&'static [Field]),
}

#[derive(Debug, Clone, Copy)]
struct Field {
    ty: Ty,
    min_version: i16,
    max_version: i16,
}

const fn all(ty: Ty) -> Field {
    Field {
        ty,
        min_version: 0,
        max_version: i16::MAX,
    }
}

const fn from(min_version: i16, ty: Ty) -> Field {
    Field {
        ty,
        min_version,
        max_version: i16::MAX,
    }
}

const fn range(min_version: i16, max_version: i16, ty: Ty) -> Field {
    Field {
        ty,
        min_version,
        max_version,
    }
}

use Ty::*;

const API_VERSIONS: &[Field] = &[from(3, Str), from(3, Str)];

const METADATA: &[Field] = &[
    all(Structs(&[from(10, Uuid), all(Str)])),
    from(4, I8),
    range(8, 10, I8),
    from(8, I8),
];

const PRODUCE: &[Field] = &[
    from(3, Str),
    all(I16),
    all(I32),
    all(Structs(&[
        range(0, 12, Str),
        from(13, Uuid),
        all(Structs(&[all(I32), all(Bytes)])),
    ])),
];

const FETCH: &[Field] = &[
    range(0, 14, I32),
    all(I32),
    all(I32),
    from(3, I32),
    from(4, I8),
    from(7, I32),
    from(7, I32),
    all(Structs(&[
        range(0, 12, Str),
        from(13, Uuid),
        all(Structs(&[
            all(I32),
            from(9, I32),
            all(I64),
            from(12, I32),
            from(5, I64),
            all(I32),
        ])),
    ])),
    from(
        7,
        Structs(&[range(7, 12, Str), from(13, Uuid), from(7, I32s)]),
    ),
    from(11, Str),
];

const LIST_OFFSETS: &[Field] = &[
    all(I32),
    from(2, I8),
    all(Structs(&[
        all(Str),
        all(Structs(&[
            all(I32),
            from(4, I32),
            all(I64),
            range(0, 0, I32),
        ])),
    ])),
    from(10, I32),
];

const OFFSET_FOR_LEADER_EPOCH: &[Field] = &[
    from(3, I32),
    all(Structs(&[
        all(Str),
        all(Structs(&[all(I32), from(2, I32), all(I32)])),
    ])),
];

const CREATE_TOPICS: &[Field] = &[
    all(Structs(&[
        all(Str),
        all(I32),
        all(I16),
        all(Structs(&[all(I32), all(I32s)])),
        all(Structs(&[all(Str), all(Str)])),
    ])),
    all(I32),
    from(1, I8),
];

const DELETE_TOPICS: &[Field] = &[
    from(6, Structs(&[all(Str), all(Uuid)])),
    range(0, 5, Strs),
    all(I32),
];

const DESCRIBE_CONFIGS: &[Field] = &[
    all(Structs(&[all(I8), all(Str), all(Strs)])),
    from(1, I8),
    from(3, I8),
];

const INIT_PRODUCER_ID: &[Field] = &[
    all(Str),
    all(I32),
    from(3, I64),
    from(3, I16),
    from(6, I8),
    from(6, I8),
];

const DESCRIBE_PRODUCERS: &[Field] = &[all(Structs(&[all(Str), all(I32s)]))];

const FIND_COORDINATOR: &[Field] = &[range(0, 3, Str), from(1, I8), from(4, Strs)];

const JOIN_GROUP: &[Field] = &[
    all(Str),
    all(I32),
    from(1, I32),
    all(Str),
    from(5, Str),
    all(Str),
    all(Structs(&[all(Str), all(Bytes)])),
    from(8, Str),
];

const SYNC_GROUP: &[Field] = &[
    all(Str),
    all(I32),
    all(Str),
    from(3, Str),
    from(5, Str),
    from(5, Str),
    all(Structs(&[all(Str), all(Bytes)])),
];

const HEARTBEAT: &[Field] = &[all(Str), all(I32), all(Str), from(3, Str)];

const LEAVE_GROUP: &[Field] = &[
    all(Str),
    range(0, 2, Str),
    from(3, Structs(&[all(Str), all(Str), from(5, Str)])),
];

const OFFSET_COMMIT: &[Field] = &[
    all(Str),
    all(I32),
    all(Str),
    from(7, Str),
    range(0, 4, I64),
    all(Structs(&[
        all(Str),
        all(Structs(&[all(I32), all(I64), from(6, I32), all(Str)])),
    ])),
];

const OFFSET_FETCH: &[Field] = &[
    range(0, 7, Str),
    range(0, 7, Structs(&[all(Str), all(I32s)])),
    from(
        8,
        Structs(&[
            all(Str),
            from(9, Str),
            from(9, I32),
            all(Structs(&[all(Str), all(I32s)])),
        ]),
    ),
    from(7, I8),
];

const LIST_GROUPS: &[Field] = &[from(4, Strs), from(5, Strs)];

const DESCRIBE_GROUPS: &[Field] = &[all(Strs), from(3, I8)];

const DELETE_GROUPS: &[Field] = &[all(Strs)];

const OFFSET_DELETE: &[Field] = &[
    all(Str),
    all(Structs(&[all(Str), all(Structs(&[all(I32)]))])),
];

const DELETE_RECORDS: &[Field] = &[
    all(Structs(&[all(Str), all(Structs(&[all(I32), all(I64)]))])),
    all(I32),
];

const DESCRIBE_LOG_DIRS: &[Field] = &[all(Structs(&[all(Str), all(I32s)]))];

const DESCRIBE_CLUSTER: &[Field] = &[all(I8), from(1, I8), from(2, I8)];

const ALTER_CONFIGS: &[Field] = &[
    all(Structs(&[
        all(I8),
        all(Str),
        all(Structs(&[all(Str), all(Str)])),
    ])),
    all(I8),
];

const INCREMENTAL_ALTER_CONFIGS: &[Field] = &[
    all(Structs(&[
        all(I8),
        all(Str),
        all(Structs(&[all(Str), all(I8), all(Str)])),
    ])),
    all(I8),
];

const CREATE_PARTITIONS: &[Field] = &[
    all(Structs(&[all(Str), all(I32), all(Structs(&[all(I32s)]))])),
    all(I32),
    all(I8),
];

const DESCRIBE_TOPIC_PARTITIONS: &[Field] = &[
    all(Structs(&[all(Str)])),
    all(I32),
    all(OptionalStruct(&[all(Str), all(I32)])),
];

const DESCRIBE_QUORUM: &[Field] = &[all(Structs(&[all(Str), all(Structs(&[all(I32)]))]))];

/// FetchResponse, as a follower reads its leader's answers (the broker's only response
/// decoded from the wire): the same reason as for requests holds for a peer's bytes.
const FETCH_RESPONSE: &[Field] = &[
    from(1, I32),
    from(7, I16),
    from(7, I32),
    all(Structs(&[
        range(0, 12, Str),
        from(13, Uuid),
        all(Structs(&[
            all(I32),
            all(I16),
            all(I64),
            from(4, I64),
            from(5, I64),
            from(4, Structs(&[all(I64), all(I64)])),
            from(11, I32),
            all(Bytes),
        ])),
    ])),
];

/// OffsetForLeaderEpochResponse, as a follower reads its new leader's answer.
const OFFSET_FOR_LEADER_EPOCH_RESPONSE: &[Field] = &[
    from(2, I32),
    all(Structs(&[
        all(Str),
        all(Structs(&[all(I16), all(I32), from(1, I32), all(I64)])),
    ])),
];

/// The field layout of a response body the broker decodes.
fn response_layout(api_key: ApiKey) -> Option<&'static [Field]> {
    match api_key {
        ApiKey::Fetch => Some(FETCH_RESPONSE),
        ApiKey::OffsetForLeaderEpoch => Some(OFFSET_FOR_LEADER_EPOCH_RESPONSE),
        _ => None,
    }
}

/// Checks the body of a response from another node (after its header), as
/// `check_request_body` checks a request's.
pub fn check_response_body(
    api_key: ApiKey,
    version: i16,
    flexible: bool,
    body: &[u8],
) -> Result<usize, ShapeError> {
    let Some(layout) = response_layout(api_key) else {
        return Err(ShapeError {
            position: 0,
            reason: "no layout for this API",
        });
    };
    walk(layout, version, flexible, body)
}

fn walk(layout: &[Field], version: i16, flexible: bool, body: &[u8]) -> Result<usize, ShapeError> {
    let mut walker = Walker {
        bytes: body,
        at: 0,
        flexible,
        version,
        decoded: STRUCT_DECODED_BYTES,
    };
    walker.fields(layout)?;
    if flexible {
        walker.tagged_fields()?;
    }
    Ok(walker.decoded)
}

/// The field layout of a request body, if the broker accepts that API.
fn request_layout(api_key: ApiKey) -> Option<&'static [Field]> {
    Some(match api_key {
        ApiKey::ApiVersions => API_VERSIONS,
        ApiKey::Metadata => METADATA,
        ApiKey::Produce => PRODUCE,
        ApiKey::Fetch => FETCH,
        ApiKey::ListOffsets => LIST_OFFSETS,
        ApiKey::OffsetForLeaderEpoch => OFFSET_FOR_LEADER_EPOCH,
        ApiKey::CreateTopics => CREATE_TOPICS,
        ApiKey::DeleteTopics => DELETE_TOPICS,
        ApiKey::DescribeConfigs => DESCRIBE_CONFIGS,
        ApiKey::InitProducerId => INIT_PRODUCER_ID,
        ApiKey::DescribeProducers => DESCRIBE_PRODUCERS,
        ApiKey::FindCoordinator => FIND_COORDINATOR,
        ApiKey::JoinGroup => JOIN_GROUP,
        ApiKey::SyncGroup => SYNC_GROUP,
        ApiKey::Heartbeat => HEARTBEAT,
        ApiKey::LeaveGroup => LEAVE_GROUP,
        ApiKey::OffsetCommit => OFFSET_COMMIT,
        ApiKey::OffsetFetch => OFFSET_FETCH,
        ApiKey::ListGroups => LIST_GROUPS,
        ApiKey::DescribeGroups => DESCRIBE_GROUPS,
        ApiKey::DeleteGroups => DELETE_GROUPS,
        ApiKey::OffsetDelete => OFFSET_DELETE,
        ApiKey::DeleteRecords => DELETE_RECORDS,
        ApiKey::DescribeLogDirs => DESCRIBE_LOG_DIRS,
        ApiKey::DescribeCluster => DESCRIBE_CLUSTER,
        ApiKey::AlterConfigs => ALTER_CONFIGS,
        ApiKey::IncrementalAlterConfigs => INCREMENTAL_ALTER_CONFIGS,
        ApiKey::CreatePartitions => CREATE_PARTITIONS,
        ApiKey::DescribeTopicPartitions => DESCRIBE_TOPIC_PARTITIONS,
        ApiKey::DescribeQuorum => DESCRIBE_QUORUM,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed request body at byte {position}: {reason}")]
pub struct ShapeError {
    pub position: usize,
    pub reason: &'static str,
}

/// An upper bound on the decoded size of one element of any accepted request's arrays (a
/// struct of strings as `Bytes` slices, numbers, and a map for unknown tagged fields); the
/// test `the_decoded_estimate_covers_every_request_struct` holds it to the real sizes.
pub const STRUCT_DECODED_BYTES: usize = 160;

/// What one tagged field costs decoded (an entry of a `BTreeMap<i32, Bytes>`).
const TAGGED_FIELD_DECODED_BYTES: usize = 64;

/// What one element of an array of strings costs decoded (a `StrBytes`).
const STRING_DECODED_BYTES: usize = 32;

struct Walker<'a> {
    bytes: &'a [u8],
    at: usize,
    flexible: bool,
    version: i16,
    /// The estimated decoded size so far.
    decoded: usize,
}

impl Walker<'_> {
    fn fail(&self, reason: &'static str) -> ShapeError {
        ShapeError {
            position: self.at,
            reason,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn skip(&mut self, count: usize) -> Result<(), ShapeError> {
        if count > self.remaining() {
            return Err(self.fail("field runs past the end of the request"));
        }
        self.at += count;
        Ok(())
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], ShapeError> {
        let mut raw = [0u8; N];
        let slice = self
            .bytes
            .get(self.at..self.at + N)
            .ok_or_else(|| self.fail("field runs past the end of the request"))?;
        raw.copy_from_slice(slice);
        self.at += N;
        Ok(raw)
    }

    fn unsigned_varint(&mut self) -> Result<u32, ShapeError> {
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let [byte] = self.fixed::<1>()?;
            value |= u32::from(byte & 0x7f)
                .checked_shl(shift)
                .ok_or_else(|| self.fail("varint too long"))?;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.fail("varint too long"))
    }

    /// A length or count prefix: `None` for null.
    fn length(&mut self, wide: bool) -> Result<Option<usize>, ShapeError> {
        if self.flexible {
            let encoded = self.unsigned_varint()?;
            return Ok(encoded.checked_sub(1).map(|length| length as usize));
        }
        let length = if wide {
            i32::from_be_bytes(self.fixed::<4>()?)
        } else {
            i32::from(i16::from_be_bytes(self.fixed::<2>()?))
        };
        match length {
            -1 => Ok(None),
            length if length < 0 => Err(self.fail("negative length")),
            length => Ok(Some(length as usize)),
        }
    }

    fn count(&mut self) -> Result<usize, ShapeError> {
        let count = self.length(true)?.unwrap_or(0);
        if count > self.remaining() {
            return Err(self.fail("array claims more elements than the request has bytes"));
        }
        Ok(count)
    }

    fn tagged_fields(&mut self) -> Result<(), ShapeError> {
        let count = self.unsigned_varint()? as usize;
        if count > self.remaining() {
            return Err(self.fail("more tagged fields than bytes"));
        }
        for _ in 0..count {
            self.unsigned_varint()?;
            let size = self.unsigned_varint()? as usize;
            self.skip(size)?;
            self.decoded += TAGGED_FIELD_DECODED_BYTES + size;
        }
        Ok(())
    }

    fn fields(&mut self, fields: &[Field]) -> Result<(), ShapeError> {
        for field in fields {
            if self.version < field.min_version || self.version > field.max_version {
                continue;
            }
            match field.ty {
                I8 => self.skip(1)?,
                I16 => self.skip(2)?,
                I32 => self.skip(4)?,
                I64 => self.skip(8)?,
                Uuid => self.skip(16)?,
                Str => {
                    let length = self.length(false)?.unwrap_or(0);
                    self.skip(length)?
                }
                Bytes => {
                    let length = self.length(true)?.unwrap_or(0);
                    self.skip(length)?
                }
                I32s => {
                    let count = self.count()?;
                    self.skip(count.saturating_mul(4))?;
                    self.decoded += count * 4;
                }
                Strs => {
                    for _ in 0..self.count()? {
                        let length = self.length(false)?.unwrap_or(0);
                        self.skip(length)?;
                        self.decoded += STRING_DECODED_BYTES;
                    }
                }
                Structs(inner) => {
                    for _ in 0..self.count()? {
                        self.decoded += STRUCT_DECODED_BYTES;
                        self.fields(inner)?;
                        if self.flexible {
                            self.tagged_fields()?;
                        }
                    }
                }
                OptionalStruct(inner) => {
                    let [present] = self.fixed::<1>()?;
                    if present as i8 >= 0 {
                        self.decoded += STRUCT_DECODED_BYTES;
                        self.fields(inner)?;
                        if self.flexible {
                            self.tagged_fields()?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Checks the body of an accepted request and estimates what it decodes to, in bytes.
/// `flexible` is whether this version uses compact encodings and tagged fields (request header
/// v2).
pub fn check_request_body(
    api_key: ApiKey,
    version: i16,
    flexible: bool,
    body: &[u8],
) -> Result<usize, ShapeError> {
    let Some(layout) = request_layout(api_key) else {
        return Err(ShapeError {
            position: 0,
            reason: "no layout for this API",
        });
    };
    walk(layout, version, flexible, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, HeaderVersion};

    fn walk_exactly<T: Encodable + HeaderVersion>(api_key: ApiKey, request: &T, version: i16) {
        let mut encoded = BytesMut::new();
        request.encode(&mut encoded, version).unwrap();
        let flexible = T::header_version(version) >= 2;
        let mut walker = Walker {
            bytes: &encoded,
            at: 0,
            flexible,
            version,
            decoded: 0,
        };
        let layout = request_layout(api_key).unwrap();
        walker
            .fields(layout)
            .unwrap_or_else(|error| panic!("{api_key:?} v{version}: {error}"));
        if flexible {
            walker.tagged_fields().unwrap();
        }
        assert_eq!(
            walker.at,
            encoded.len(),
            "{api_key:?} v{version}: layout disagrees with the encoder"
        );
    }

    /// A leader's FetchResponse, with every array populated, walks to exactly its encoded
    /// length at the version followers use; a count larger than the bytes is refused.
    #[test]
    fn a_fetch_response_walks_to_its_end_and_a_lying_count_is_refused() {
        use kafka_protocol::messages::fetch_response::{
            AbortedTransaction, FetchableTopicResponse, PartitionData,
        };
        let response =
            FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
                .with_topic(TopicName(
                    kafka_protocol::protocol::StrBytes::from_static_str("topic"),
                ))
                .with_partitions(vec![
                    PartitionData::default()
                        .with_partition_index(3)
                        .with_high_watermark(10)
                        .with_aborted_transactions(Some(vec![AbortedTransaction::default()]))
                        .with_records(Some(bytes::Bytes::from_static(&[1, 2, 3]))),
                    PartitionData::default(),
                ])]);
        for version in [4, 7, 11, 12] {
            let mut encoded = BytesMut::new();
            response.encode(&mut encoded, version).unwrap();
            let flexible = FetchResponse::header_version(version) >= 1;
            check_response_body(ApiKey::Fetch, version, flexible, &encoded)
                .unwrap_or_else(|error| panic!("v{version}: {error}"));
        }
        use kafka_protocol::messages::offset_for_leader_epoch_response::{
            EpochEndOffset, OffsetForLeaderTopicResult,
        };
        let epochs = OffsetForLeaderEpochResponse::default().with_topics(vec![
            OffsetForLeaderTopicResult::default()
                .with_topic(TopicName(
                    kafka_protocol::protocol::StrBytes::from_static_str("topic"),
                ))
                .with_partitions(vec![EpochEndOffset::default(), EpochEndOffset::default()]),
        ]);
        for version in 2..=4 {
            let mut encoded = BytesMut::new();
            epochs.encode(&mut encoded, version).unwrap();
            let flexible = OffsetForLeaderEpochResponse::header_version(version) >= 1;
            let checked =
                check_response_body(ApiKey::OffsetForLeaderEpoch, version, flexible, &encoded);
            assert!(checked.is_ok(), "v{version}: {checked:?}");
        }
        let mut encoded = BytesMut::new();
        response.encode(&mut encoded, 12).unwrap();
        // The topics' compact count, just after throttle, error and session id.
        encoded[10] = 0x7f;
        assert!(check_response_body(ApiKey::Fetch, 12, true, &encoded).is_err());
        assert!(check_response_body(ApiKey::Fetch, 12, true, &encoded[..20]).is_err());
    }

    /// Every advertised version of every accepted request walks to exactly its encoded length,
    /// with every array populated so nested layouts are exercised.
    #[test]
    fn layouts_match_the_encoder_for_every_advertised_version() {
        use crate::kafka::wire::api_versions::supported_range;

        let fetch = FetchRequest::default().with_topics(vec![fetch_request::FetchTopic::default()
            .with_partitions(vec![fetch_request::FetchPartition::default(); 2])]);
        let produce = ProduceRequest::default().with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_partition_data(vec![produce_request::PartitionProduceData::default()
                    .with_records(Some(bytes::Bytes::from_static(b"abc")))]),
        ]);
        let metadata = MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName::from(
                kafka_protocol::protocol::StrBytes::from_static_str("t"),
            ))),
        ]));
        let list_offsets = ListOffsetsRequest::default().with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()]),
        ]);
        let epochs = OffsetForLeaderEpochRequest::default().with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default().with_partitions(vec![
                offset_for_leader_epoch_request::OffsetForLeaderPartition::default(),
            ]),
        ]);
        let create = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_assignments(vec![
                    create_topics_request::CreatableReplicaAssignment::default()
                        .with_broker_ids(vec![BrokerId(1)]),
                ])
                .with_configs(vec![create_topics_request::CreatableTopicConfig::default()]),
        ]);
        let describe = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_configuration_keys(Some(vec![Default::default()])),
        ]);
        for version in supported_range(ApiKey::Fetch).unwrap() {
            let mut fetch = fetch.clone();
            if version >= 7 {
                fetch =
                    fetch.with_forgotten_topics_data(vec![fetch_request::ForgottenTopic::default(
                    )
                    .with_partitions(vec![1, 2])]);
            }
            walk_exactly(ApiKey::Fetch, &fetch, version);
        }
        for version in 3..=supported_range(ApiKey::Produce).unwrap().end().to_owned() {
            walk_exactly(ApiKey::Produce, &produce, version);
        }
        for version in supported_range(ApiKey::Metadata).unwrap() {
            walk_exactly(ApiKey::Metadata, &metadata, version);
        }
        for version in supported_range(ApiKey::ListOffsets).unwrap() {
            walk_exactly(ApiKey::ListOffsets, &list_offsets, version);
        }
        for version in supported_range(ApiKey::OffsetForLeaderEpoch).unwrap() {
            walk_exactly(ApiKey::OffsetForLeaderEpoch, &epochs, version);
        }
        for version in supported_range(ApiKey::CreateTopics).unwrap() {
            walk_exactly(ApiKey::CreateTopics, &create, version);
        }
        for version in supported_range(ApiKey::DeleteTopics).unwrap() {
            let delete = if version >= 6 {
                DeleteTopicsRequest::default()
                    .with_topics(vec![delete_topics_request::DeleteTopicState::default()])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![Default::default()])
            };
            walk_exactly(ApiKey::DeleteTopics, &delete, version);
        }
        for version in supported_range(ApiKey::DescribeConfigs).unwrap() {
            walk_exactly(ApiKey::DescribeConfigs, &describe, version);
        }
        for version in supported_range(ApiKey::InitProducerId).unwrap() {
            walk_exactly(
                ApiKey::InitProducerId,
                &InitProducerIdRequest::default(),
                version,
            );
        }
        let describe_producers = DescribeProducersRequest::default()
            .with_topics(vec![describe_producers_request::TopicRequest::default()
                .with_partition_indexes(vec![0, 1])]);
        walk_exactly(ApiKey::DescribeProducers, &describe_producers, 0);
        group_layouts_match_the_encoder();
        for version in supported_range(ApiKey::ApiVersions).unwrap() {
            walk_exactly(ApiKey::ApiVersions, &ApiVersionsRequest::default(), version);
        }
    }

    fn group_layouts_match_the_encoder() {
        use crate::kafka::wire::api_versions::supported_range;
        use kafka_protocol::protocol::StrBytes;
        let text = || StrBytes::from_static_str("x");
        let some = || Some(text());
        for version in supported_range(ApiKey::FindCoordinator).unwrap() {
            let request = if version >= 4 {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![text(), text()])
            } else {
                FindCoordinatorRequest::default().with_key(text())
            };
            walk_exactly(ApiKey::FindCoordinator, &request, version);
        }
        for version in supported_range(ApiKey::JoinGroup).unwrap() {
            let mut request = JoinGroupRequest::default()
                .with_member_id(text())
                .with_protocol_type(text())
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(text())
                .with_metadata(bytes::Bytes::from_static(b"meta"))]);
            if version >= 5 {
                request = request.with_group_instance_id(some());
            }
            if version >= 8 {
                request = request.with_reason(some());
            }
            walk_exactly(ApiKey::JoinGroup, &request, version);
        }
        for version in supported_range(ApiKey::SyncGroup).unwrap() {
            let mut request = SyncGroupRequest::default().with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(text())
                    .with_assignment(bytes::Bytes::from_static(b"a")),
            ]);
            if version >= 3 {
                request = request.with_group_instance_id(some());
            }
            if version >= 5 {
                request = request
                    .with_protocol_type(some())
                    .with_protocol_name(some());
            }
            walk_exactly(ApiKey::SyncGroup, &request, version);
        }
        for version in supported_range(ApiKey::Heartbeat).unwrap() {
            let mut request = HeartbeatRequest::default().with_member_id(text());
            if version >= 3 {
                request = request.with_group_instance_id(some());
            }
            walk_exactly(ApiKey::Heartbeat, &request, version);
        }
        for version in supported_range(ApiKey::LeaveGroup).unwrap() {
            let request = if version >= 3 {
                let mut member = leave_group_request::MemberIdentity::default()
                    .with_member_id(text())
                    .with_group_instance_id(some());
                if version >= 5 {
                    member = member.with_reason(some());
                }
                LeaveGroupRequest::default().with_members(vec![member.clone(), member])
            } else {
                LeaveGroupRequest::default().with_member_id(text())
            };
            walk_exactly(ApiKey::LeaveGroup, &request, version);
        }
        for version in supported_range(ApiKey::OffsetCommit).unwrap() {
            let mut request = OffsetCommitRequest::default().with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default().with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_committed_metadata(some()),
                ]),
            ]);
            if version >= 7 {
                request = request.with_group_instance_id(some());
            }
            walk_exactly(ApiKey::OffsetCommit, &request, version);
        }
        for version in supported_range(ApiKey::OffsetFetch).unwrap() {
            let request = if version >= 8 {
                OffsetFetchRequest::default().with_groups(vec![
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopics::default()
                                .with_partition_indexes(vec![0, 1]),
                        ]))
                        .with_member_id(if version >= 9 { some() } else { None }),
                ])
            } else {
                OffsetFetchRequest::default().with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_partition_indexes(vec![3]),
                ]))
            };
            walk_exactly(ApiKey::OffsetFetch, &request, version);
        }
        for version in supported_range(ApiKey::ListGroups).unwrap() {
            let mut request = ListGroupsRequest::default();
            if version >= 4 {
                request = request.with_states_filter(vec![text()]);
            }
            if version >= 5 {
                request = request.with_types_filter(vec![text()]);
            }
            walk_exactly(ApiKey::ListGroups, &request, version);
        }
        for version in supported_range(ApiKey::DescribeGroups).unwrap() {
            let request = DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(text()), GroupId(text())]);
            walk_exactly(ApiKey::DescribeGroups, &request, version);
        }
        for version in supported_range(ApiKey::DeleteGroups).unwrap() {
            let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text())]);
            walk_exactly(ApiKey::DeleteGroups, &request, version);
        }
        let request = OffsetDeleteRequest::default().with_topics(vec![
            offset_delete_request::OffsetDeleteRequestTopic::default().with_partitions(vec![
                offset_delete_request::OffsetDeleteRequestPartition::default(),
            ]),
        ]);
        walk_exactly(ApiKey::OffsetDelete, &request, 0);
        for version in supported_range(ApiKey::DeleteRecords).unwrap() {
            let request = DeleteRecordsRequest::default()
                .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                    .with_name(TopicName(text()))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(3)
                            .with_offset(77),
                    ])])
                .with_timeout_ms(5000);
            walk_exactly(ApiKey::DeleteRecords, &request, version);
        }
        for version in supported_range(ApiKey::DescribeLogDirs).unwrap() {
            let request = DescribeLogDirsRequest::default().with_topics(Some(vec![
                describe_log_dirs_request::DescribableLogDirTopic::default()
                    .with_topic(TopicName(text()))
                    .with_partitions(vec![0, 1, 2]),
            ]));
            walk_exactly(ApiKey::DescribeLogDirs, &request, version);
            walk_exactly(
                ApiKey::DescribeLogDirs,
                &DescribeLogDirsRequest::default().with_topics(None),
                version,
            );
        }
        for version in supported_range(ApiKey::DescribeCluster).unwrap() {
            let mut request =
                DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
            if version >= 2 {
                request = request.with_include_fenced_brokers(true);
            }
            walk_exactly(ApiKey::DescribeCluster, &request, version);
        }
        for version in supported_range(ApiKey::AlterConfigs).unwrap() {
            let request = AlterConfigsRequest::default()
                .with_resources(vec![alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(text())
                    .with_configs(vec![
                        alter_configs_request::AlterableConfig::default()
                            .with_name(text())
                            .with_value(Some(text())),
                        alter_configs_request::AlterableConfig::default().with_name(text()),
                    ])])
                .with_validate_only(true);
            walk_exactly(ApiKey::AlterConfigs, &request, version);
        }
        for version in supported_range(ApiKey::IncrementalAlterConfigs).unwrap() {
            let request = IncrementalAlterConfigsRequest::default()
                .with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(text())
                        .with_configs(vec![
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(text())
                                .with_config_operation(2)
                                .with_value(Some(text())),
                        ]),
                ])
                .with_validate_only(true);
            walk_exactly(ApiKey::IncrementalAlterConfigs, &request, version);
        }
        for version in supported_range(ApiKey::CreatePartitions).unwrap() {
            let request = CreatePartitionsRequest::default()
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(TopicName(text()))
                        .with_count(5)
                        .with_assignments(Some(vec![
                            create_partitions_request::CreatePartitionsAssignment::default()
                                .with_broker_ids(vec![BrokerId(1), BrokerId(2)]),
                        ])),
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(TopicName(text())),
                ])
                .with_timeout_ms(100)
                .with_validate_only(true);
            walk_exactly(ApiKey::CreatePartitions, &request, version);
        }
        for version in supported_range(ApiKey::DescribeTopicPartitions).unwrap() {
            let topics = vec![describe_topic_partitions_request::TopicRequest::default()
                .with_name(TopicName(text()))];
            for cursor in [
                None,
                Some(
                    describe_topic_partitions_request::Cursor::default()
                        .with_topic_name(TopicName(text()))
                        .with_partition_index(3),
                ),
            ] {
                let request = DescribeTopicPartitionsRequest::default()
                    .with_topics(topics.clone())
                    .with_response_partition_limit(7)
                    .with_cursor(cursor);
                walk_exactly(ApiKey::DescribeTopicPartitions, &request, version);
            }
        }
        for version in supported_range(ApiKey::DescribeQuorum).unwrap() {
            let request = DescribeQuorumRequest::default().with_topics(vec![
                describe_quorum_request::TopicData::default()
                    .with_topic_name(TopicName(text()))
                    .with_partitions(vec![
                        describe_quorum_request::PartitionData::default().with_partition_index(0)
                    ]),
            ]);
            walk_exactly(ApiKey::DescribeQuorum, &request, version);
        }
    }

    /// The estimate's per-element bound holds for the element structs of every accepted request
    /// (if kafka-protocol's structs grow, this fails and the constant must follow).
    #[test]
    fn the_decoded_estimate_covers_every_request_struct() {
        use std::mem::size_of;
        let sizes = [
            size_of::<metadata_request::MetadataRequestTopic>(),
            size_of::<produce_request::TopicProduceData>(),
            size_of::<produce_request::PartitionProduceData>(),
            size_of::<fetch_request::FetchTopic>(),
            size_of::<fetch_request::FetchPartition>(),
            size_of::<fetch_request::ForgottenTopic>(),
            size_of::<list_offsets_request::ListOffsetsTopic>(),
            size_of::<list_offsets_request::ListOffsetsPartition>(),
            size_of::<create_topics_request::CreatableTopic>(),
            size_of::<create_topics_request::CreatableReplicaAssignment>(),
            size_of::<create_topics_request::CreatableTopicConfig>(),
            size_of::<delete_topics_request::DeleteTopicState>(),
            size_of::<describe_configs_request::DescribeConfigsResource>(),
            size_of::<describe_producers_request::TopicRequest>(),
            size_of::<join_group_request::JoinGroupRequestProtocol>(),
            size_of::<sync_group_request::SyncGroupRequestAssignment>(),
            size_of::<leave_group_request::MemberIdentity>(),
            size_of::<offset_commit_request::OffsetCommitRequestTopic>(),
            size_of::<offset_commit_request::OffsetCommitRequestPartition>(),
            size_of::<offset_fetch_request::OffsetFetchRequestTopic>(),
            size_of::<offset_fetch_request::OffsetFetchRequestGroup>(),
            size_of::<offset_fetch_request::OffsetFetchRequestTopics>(),
            size_of::<offset_delete_request::OffsetDeleteRequestTopic>(),
            size_of::<offset_delete_request::OffsetDeleteRequestPartition>(),
            size_of::<delete_records_request::DeleteRecordsTopic>(),
            size_of::<delete_records_request::DeleteRecordsPartition>(),
            size_of::<describe_log_dirs_request::DescribableLogDirTopic>(),
            size_of::<alter_configs_request::AlterConfigsResource>(),
            size_of::<alter_configs_request::AlterableConfig>(),
            size_of::<incremental_alter_configs_request::AlterConfigsResource>(),
            size_of::<incremental_alter_configs_request::AlterableConfig>(),
            size_of::<create_partitions_request::CreatePartitionsTopic>(),
            size_of::<create_partitions_request::CreatePartitionsAssignment>(),
            size_of::<describe_topic_partitions_request::TopicRequest>(),
            size_of::<describe_topic_partitions_request::Cursor>(),
            size_of::<describe_quorum_request::TopicData>(),
            size_of::<describe_quorum_request::PartitionData>(),
            size_of::<offset_for_leader_epoch_request::OffsetForLeaderTopic>(),
            size_of::<offset_for_leader_epoch_request::OffsetForLeaderPartition>(),
        ];
        let largest = sizes.iter().max().copied().unwrap();
        assert!(
            largest <= STRUCT_DECODED_BYTES,
            "a request struct takes {largest} bytes"
        );
    }

    /// Empty topic names cost a struct each but two bytes on the wire: the estimate sees the
    /// amplification the count check cannot.
    #[test]
    fn a_request_of_tiny_elements_is_estimated_at_what_it_decodes_to() {
        let mut body = vec![0u8; 4];
        let count = 100_000u32;
        body[..4].copy_from_slice(&count.to_be_bytes());
        body.extend(std::iter::repeat_n(0u8, count as usize * 2));
        let decoded = check_request_body(ApiKey::Metadata, 1, false, &body).unwrap();
        assert!(decoded >= count as usize * STRUCT_DECODED_BYTES);
        assert!(
            decoded / body.len() >= 50,
            "{} times its size",
            decoded / body.len()
        );
    }

    /// The regression frame of the issue: Metadata v0 whose topic array claims 0x03000003
    /// (about 50 million) entries in a 8-byte body.
    #[test]
    fn a_huge_array_claim_is_refused_before_decoding() {
        let body = [0x03, 0x00, 0x00, 0x03, 0x3c, 0x0c, 0x00, 0xb6];
        let error = check_request_body(ApiKey::Metadata, 0, false, &body).unwrap_err();
        assert_eq!(error.position, 4);
        assert!(error.reason.contains("more elements"));
    }

    #[test]
    fn truncated_strings_and_bad_varints_are_refused() {
        // CreateTopics v2: one topic whose name claims 300 bytes.
        let body = [0, 0, 0, 1, 0x01, 0x2c, b'a'];
        assert!(check_request_body(ApiKey::CreateTopics, 2, false, &body).is_err());
        // A flexible ApiVersions body that is one endless varint.
        let body = [0xff; 8];
        assert!(check_request_body(ApiKey::ApiVersions, 3, true, &body).is_err());
    }
}
