//! The Kafka protocol front end: connections, request dispatch, handlers, error codes.

pub mod connection;
pub mod errors;
pub mod handlers;
pub mod wire;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

use crate::limits::{DECODE_AMPLIFICATION_MAX, DECODE_SLACK_BYTES};
use crate::shard::Shard;
use errors::ErrorCode;
use handlers::*;
use storage::memory::MemoryGrant;
use wire::api_versions::supported_range;
use wire::frame::{encode_response, RequestStart};
use wire::shape::check_request_body;

/// A response: its framed bytes (stored batches among them, not copied), and the memory they
/// hold until they are written (disk reads for a fetch).
pub struct Response {
    pub chunks: Vec<Bytes>,
    pub memory: Vec<MemoryGrant>,
}

impl Response {
    pub fn bytes(bytes: Bytes) -> Response {
        Response {
            chunks: vec![bytes],
            memory: Vec::new(),
        }
    }

    /// No response at all (`acks=0`).
    pub fn none() -> Response {
        Response {
            chunks: Vec::new(),
            memory: Vec::new(),
        }
    }
}

/// A response being prepared, or why the connection must close.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, String>>>>;

/// Who sent a request: what group membership records about a member.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub client_id: String,
    /// The peer's address as Kafka reports it (`/127.0.0.1`).
    pub client_host: Rc<str>,
}

pub enum Dispatch {
    Respond(ResponseFuture),
    /// `acks=0` produce: nothing is sent back.
    NoResponse,
    /// A request the broker cannot answer (unknown API, unsupported version, malformed body):
    /// Kafka closes the connection, and so do we, after answering the requests before it.
    Close(String),
}

fn ready(response: Result<Bytes, String>) -> Dispatch {
    Dispatch::Respond(Box::pin(std::future::ready(response.map(Response::bytes))))
}

/// Decodes one request frame and starts handling it. Runs on the connection's reader, in request
/// order; anything that waits is returned as a future for the writer to await in order. The
/// frame's `grant` grows by what the request decodes to before it is decoded.
pub async fn dispatch(
    shard: &Rc<Shard>,
    frame: Bytes,
    grant: &mut MemoryGrant,
    client_host: &Rc<str>,
) -> Dispatch {
    let Some(start) = RequestStart::parse(&frame) else {
        return Dispatch::Close("frame shorter than a request header".into());
    };
    let Ok(api_key) = ApiKey::try_from(start.api_key) else {
        return Dispatch::Close(format!("unknown API key {}", start.api_key));
    };
    let version = start.api_version;
    let correlation_id = start.correlation_id;
    let Some(range) = supported_range(api_key) else {
        return Dispatch::Close(format!("{api_key:?} is not supported"));
    };
    if !range.contains(&version) {
        if api_key == ApiKey::ApiVersions {
            // KIP-511: answer in the v0 layout with UNSUPPORTED_VERSION and our table, so the
            // client can pick a version we speak and retry.
            let body = api_versions::response(ErrorCode::UnsupportedVersion);
            return ready(encode_response(api_key, 0, correlation_id, &body));
        }
        return Dispatch::Close(format!(
            "{api_key:?} v{version} is not supported (supported: {}-{})",
            range.start(),
            range.end()
        ));
    }
    let header_version = api_key.request_header_version(version);
    let mut body = frame;
    let header = match RequestHeader::decode(&mut body, header_version) {
        Ok(header) => header,
        Err(error) => {
            return Dispatch::Close(format!("malformed {api_key:?} request header: {error}"))
        }
    };
    let decoded_bytes = match check_request_body(api_key, version, header_version >= 2, &body) {
        Ok(decoded_bytes) => decoded_bytes,
        Err(error) => return Dispatch::Close(format!("{api_key:?} v{version}: {error}")),
    };
    // No request may cost more than a small multiple of its own size, and what it decodes to is
    // paid for from the shard's request memory like its bytes are.
    let allowed = DECODE_AMPLIFICATION_MAX * body.len() + DECODE_SLACK_BYTES;
    if decoded_bytes > allowed {
        return Dispatch::Close(format!(
            "{api_key:?} v{version} of {} bytes would decode to about {decoded_bytes} bytes, \
             more than {DECODE_AMPLIFICATION_MAX} times its size",
            body.len()
        ));
    }
    grant.grow(decoded_bytes).await;
    macro_rules! decode {
        ($request:ty) => {
            match <$request>::decode(&mut body, version) {
                Ok(request) => request,
                Err(error) => {
                    return Dispatch::Close(format!("malformed {api_key:?} v{version}: {error}"))
                }
            }
        };
    }
    macro_rules! later {
        ($future:expr) => {{
            let future = $future;
            Dispatch::Respond(Box::pin(async move {
                let body = future.await;
                encode_response(api_key, version, correlation_id, &body).map(Response::bytes)
            }))
        }};
    }
    let shard = shard.clone();
    match api_key {
        ApiKey::ApiVersions => {
            let _request = decode!(ApiVersionsRequest);
            ready(encode_response(
                api_key,
                version,
                correlation_id,
                &api_versions::response(ErrorCode::None),
            ))
        }
        ApiKey::Metadata => {
            let request = decode!(MetadataRequest);
            later!(metadata::handle(shard, request, version))
        }
        ApiKey::Produce => {
            let request = decode!(ProduceRequest);
            let phase = produce::append(&shard, request, version).await;
            if phase.wants_response() {
                later!(phase.acknowledge())
            } else {
                Dispatch::NoResponse
            }
        }
        ApiKey::Fetch => {
            let request = decode!(FetchRequest);
            Dispatch::Respond(Box::pin(async move {
                Ok(fetch::handle(shard, request, version, correlation_id).await)
            }))
        }
        ApiKey::ListOffsets => {
            let request = decode!(ListOffsetsRequest);
            later!(list_offsets::handle(shard, request, version))
        }
        ApiKey::OffsetForLeaderEpoch => {
            let request = decode!(OffsetForLeaderEpochRequest);
            let body = offset_for_leader_epoch::handle(shard, request);
            ready(encode_response(api_key, version, correlation_id, &body))
        }
        ApiKey::CreateTopics => {
            let request = decode!(CreateTopicsRequest);
            later!(create_topics::handle(shard, request, version))
        }
        ApiKey::DeleteTopics => {
            let request = decode!(DeleteTopicsRequest);
            later!(delete_topics::handle(shard, request, version))
        }
        ApiKey::DescribeConfigs => {
            let request = decode!(DescribeConfigsRequest);
            let body = describe_configs::handle(shard, request, version);
            ready(encode_response(api_key, version, correlation_id, &body))
        }
        ApiKey::InitProducerId => {
            let request = decode!(InitProducerIdRequest);
            later!(init_producer_id::handle(shard, request))
        }
        ApiKey::DescribeProducers => {
            let request = decode!(DescribeProducersRequest);
            let body = describe_producers::handle(shard, request);
            ready(encode_response(api_key, version, correlation_id, &body))
        }
        ApiKey::FindCoordinator => {
            let request = decode!(FindCoordinatorRequest);
            later!(find_coordinator::handle(shard, request, version))
        }
        ApiKey::JoinGroup => {
            let request = decode!(JoinGroupRequest);
            let context = RequestContext {
                client_id: header
                    .client_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                client_host: client_host.clone(),
            };
            later!(join_group::handle(shard, request, version, context))
        }
        ApiKey::SyncGroup => {
            let request = decode!(SyncGroupRequest);
            later!(sync_group::handle(shard, request, version))
        }
        ApiKey::Heartbeat => {
            let request = decode!(HeartbeatRequest);
            let body = heartbeat::handle(shard, request);
            ready(encode_response(api_key, version, correlation_id, &body))
        }
        ApiKey::LeaveGroup => {
            let request = decode!(LeaveGroupRequest);
            let body = leave_group::handle(shard, request, version);
            ready(encode_response(api_key, version, correlation_id, &body))
        }
        ApiKey::OffsetCommit => {
            let request = decode!(OffsetCommitRequest);
            later!(offset_commit::handle(shard, request, version))
        }
        ApiKey::OffsetFetch => {
            let request = decode!(OffsetFetchRequest);
            let body = offset_fetch::handle(shard, request, version);
            ready(encode_response(api_key, version, correlation_id, &body))
        }
        ApiKey::ListGroups => {
            let request = decode!(ListGroupsRequest);
            let body = list_groups::handle(shard, request, version);
            ready(encode_response(api_key, version, correlation_id, &body))
        }
        ApiKey::DescribeGroups => {
            let request = decode!(DescribeGroupsRequest);
            let body = describe_groups::handle(shard, request, version);
            ready(encode_response(api_key, version, correlation_id, &body))
        }
        ApiKey::DeleteGroups => {
            let request = decode!(DeleteGroupsRequest);
            later!(delete_groups::handle(shard, request))
        }
        ApiKey::OffsetDelete => {
            let request = decode!(OffsetDeleteRequest);
            later!(offset_delete::handle(shard, request))
        }
        other => Dispatch::Close(format!("{other:?} has no handler")),
    }
}
