//! From a request frame to a decoded request, within the broker's limits: the header, the API
//! and version we speak, the body's shape walked against its real bytes (`wire::shape`), the
//! decoded-size bound, and only then `kafka-protocol`'s decoder. Pure: no shard, no I/O, so the
//! fuzz target (`broker/fuzz`) runs exactly this path.

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

use super::wire::api_versions::supported_range;
use super::wire::frame::RequestStart;
use super::wire::shape::check_request_body;
use crate::limits::{DECODE_AMPLIFICATION_MAX, DECODE_SLACK_BYTES};

/// Why a frame cannot be handled.
#[derive(Debug)]
pub enum Undecodable {
    /// Kafka closes the connection (after answering the requests before it), and so do we.
    Close(String),
    /// An ApiVersions request in a version we do not speak: KIP-511 wants our table in v0.
    UnsupportedApiVersions { correlation_id: i32 },
}

/// A frame whose header and body passed the checks, with what the body decodes to (about).
pub struct Checked {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub header: RequestHeader,
    /// The frame after its header.
    body: Bytes,
    pub decoded_bytes: usize,
}

macro_rules! requests {
    ($($api:ident => $request:ident),* $(,)?) => {
        /// Every request the broker handles, decoded.
        pub enum Request {
            $($api($request),)*
        }

        fn decode_body(api_key: ApiKey, body: &mut Bytes, version: i16) -> Result<Request, Undecodable> {
            match api_key {
                $(ApiKey::$api => <$request>::decode(body, version)
                    .map(Request::$api)
                    .map_err(|error| {
                        Undecodable::Close(format!("malformed {api_key:?} v{version}: {error}"))
                    }),)*
                other => Err(Undecodable::Close(format!("{other:?} has no handler"))),
            }
        }
    };
}

requests! {
    ApiVersions => ApiVersionsRequest,
    Metadata => MetadataRequest,
    Produce => ProduceRequest,
    Fetch => FetchRequest,
    ListOffsets => ListOffsetsRequest,
    OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
    CreateTopics => CreateTopicsRequest,
    DeleteTopics => DeleteTopicsRequest,
    DescribeConfigs => DescribeConfigsRequest,
    InitProducerId => InitProducerIdRequest,
    DescribeProducers => DescribeProducersRequest,
    FindCoordinator => FindCoordinatorRequest,
    JoinGroup => JoinGroupRequest,
    SyncGroup => SyncGroupRequest,
    Heartbeat => HeartbeatRequest,
    LeaveGroup => LeaveGroupRequest,
    OffsetCommit => OffsetCommitRequest,
    OffsetFetch => OffsetFetchRequest,
    ListGroups => ListGroupsRequest,
    DescribeGroups => DescribeGroupsRequest,
    DeleteGroups => DeleteGroupsRequest,
    OffsetDelete => OffsetDeleteRequest,
    DeleteRecords => DeleteRecordsRequest,
    DescribeLogDirs => DescribeLogDirsRequest,
    DescribeCluster => DescribeClusterRequest,
    AlterConfigs => AlterConfigsRequest,
    IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
    CreatePartitions => CreatePartitionsRequest,
    DescribeTopicPartitions => DescribeTopicPartitionsRequest,
    DescribeQuorum => DescribeQuorumRequest,
}

/// Checks a frame's header and body before anything is decoded.
pub fn check(frame: Bytes) -> Result<Checked, Undecodable> {
    let close = |reason: String| Err(Undecodable::Close(reason));
    let Some(start) = RequestStart::parse(&frame) else {
        return close("frame shorter than a request header".into());
    };
    let Ok(api_key) = ApiKey::try_from(start.api_key) else {
        return close(format!("unknown API key {}", start.api_key));
    };
    let version = start.api_version;
    let Some(range) = supported_range(api_key) else {
        return close(format!("{api_key:?} is not supported"));
    };
    if !range.contains(&version) {
        if api_key == ApiKey::ApiVersions {
            return Err(Undecodable::UnsupportedApiVersions {
                correlation_id: start.correlation_id,
            });
        }
        return close(format!(
            "{api_key:?} v{version} is not supported (supported: {}-{})",
            range.start(),
            range.end()
        ));
    }
    let header_version = api_key.request_header_version(version);
    let mut body = frame;
    let header = match RequestHeader::decode(&mut body, header_version) {
        Ok(header) => header,
        Err(error) => return close(format!("malformed {api_key:?} request header: {error}")),
    };
    let decoded_bytes = match check_request_body(api_key, version, header_version >= 2, &body) {
        Ok(decoded_bytes) => decoded_bytes,
        Err(error) => return close(format!("{api_key:?} v{version}: {error}")),
    };
    // No request may cost more than a small multiple of its own size.
    let allowed = DECODE_AMPLIFICATION_MAX * body.len() + DECODE_SLACK_BYTES;
    if decoded_bytes > allowed {
        return close(format!(
            "{api_key:?} v{version} of {} bytes would decode to about {decoded_bytes} bytes, \
             more than {DECODE_AMPLIFICATION_MAX} times its size",
            body.len()
        ));
    }
    Ok(Checked {
        api_key,
        version,
        correlation_id: start.correlation_id,
        header,
        body,
        decoded_bytes,
    })
}

impl Checked {
    /// Decodes the body (the caller has paid for `decoded_bytes` by now).
    pub fn decode(mut self) -> Result<(Self, Request), Undecodable> {
        let request = decode_body(self.api_key, &mut self.body, self.version)?;
        Ok((self, request))
    }
}
