//! The Kafka protocol front end: connections, request dispatch, handlers, error codes.

pub mod connection;
pub mod errors;
pub mod fetch_sessions;
pub mod handlers;
pub mod request;
pub mod wire;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;

use crate::shard::Shard;
use errors::ErrorCode;
use handlers::*;
use request::{Request, Undecodable};
use storage::memory::MemoryGrant;
use wire::frame::encode_response;

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
    let checked = match request::check(frame) {
        Ok(checked) => checked,
        Err(Undecodable::Close(reason)) => return Dispatch::Close(reason),
        Err(Undecodable::UnsupportedApiVersions { correlation_id }) => {
            // KIP-511: answer in the v0 layout with UNSUPPORTED_VERSION and our table, so the
            // client can pick a version we speak and retry.
            let body = api_versions::response(ErrorCode::UnsupportedVersion);
            return ready(encode_response(
                ApiKey::ApiVersions,
                0,
                correlation_id,
                &body,
            ));
        }
    };
    // What the request decodes to is paid for from the shard's request memory, as its bytes are;
    // a request that could never be paid for is refused rather than waited on.
    if grant.bytes() + checked.decoded_bytes > shard.request_memory.total() {
        return Dispatch::Close(format!(
            "{:?} would need {} bytes of request memory, more than the shard has ({})",
            checked.api_key,
            grant.bytes() + checked.decoded_bytes,
            shard.request_memory.total()
        ));
    }
    grant.grow(checked.decoded_bytes).await;
    let (checked, request) = match checked.decode() {
        Ok(decoded) => decoded,
        Err(Undecodable::Close(reason)) => return Dispatch::Close(reason),
        Err(Undecodable::UnsupportedApiVersions { .. }) => {
            return Dispatch::Close("unexpected version refusal".into())
        }
    };
    let (api_key, version, correlation_id) =
        (checked.api_key, checked.version, checked.correlation_id);
    macro_rules! later {
        ($future:expr) => {{
            let future = $future;
            Dispatch::Respond(Box::pin(async move {
                let body = future.await;
                encode_response(api_key, version, correlation_id, &body).map(Response::bytes)
            }))
        }};
    }
    macro_rules! now {
        ($body:expr) => {{
            let body = $body;
            ready(encode_response(api_key, version, correlation_id, &body))
        }};
    }
    let shard = shard.clone();
    match request {
        Request::ApiVersions(_) => now!(api_versions::response(ErrorCode::None)),
        Request::Metadata(request) => later!(metadata::handle(shard, request, version)),
        Request::Produce(request) => {
            let phase = produce::append(&shard, request, version).await;
            if phase.wants_response() {
                later!(phase.acknowledge())
            } else {
                Dispatch::NoResponse
            }
        }
        Request::Fetch(request) => Dispatch::Respond(Box::pin(async move {
            Ok(fetch::handle(shard, request, version, correlation_id).await)
        })),
        Request::ListOffsets(request) => later!(list_offsets::handle(shard, request, version)),
        Request::OffsetForLeaderEpoch(request) => {
            now!(offset_for_leader_epoch::handle(shard, request))
        }
        Request::CreateTopics(request) => later!(create_topics::handle(shard, request, version)),
        Request::DeleteTopics(request) => later!(delete_topics::handle(shard, request, version)),
        Request::DescribeConfigs(request) => {
            now!(describe_configs::handle(shard, request, version))
        }
        Request::InitProducerId(request) => later!(init_producer_id::handle(shard, request)),
        Request::DescribeProducers(request) => now!(describe_producers::handle(shard, request)),
        Request::FindCoordinator(request) => {
            later!(find_coordinator::handle(shard, request, version))
        }
        Request::JoinGroup(request) => {
            let context = RequestContext {
                client_id: checked
                    .header
                    .client_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                client_host: client_host.clone(),
            };
            later!(join_group::handle(shard, request, version, context))
        }
        Request::SyncGroup(request) => later!(sync_group::handle(shard, request, version)),
        Request::Heartbeat(request) => now!(heartbeat::handle(shard, request)),
        Request::LeaveGroup(request) => now!(leave_group::handle(shard, request, version)),
        Request::OffsetCommit(request) => later!(offset_commit::handle(shard, request, version)),
        Request::OffsetFetch(request) => now!(offset_fetch::handle(shard, request, version)),
        Request::ListGroups(request) => now!(list_groups::handle(shard, request, version)),
        Request::DescribeGroups(request) => now!(describe_groups::handle(shard, request, version)),
        Request::DeleteGroups(request) => later!(delete_groups::handle(shard, request)),
        Request::OffsetDelete(request) => later!(offset_delete::handle(shard, request)),
        Request::DeleteRecords(request) => later!(delete_records::handle(shard, request)),
        Request::DescribeCluster(request) => {
            now!(describe_cluster::handle(shard, request, version))
        }
        Request::DescribeLogDirs(request) => {
            later!(describe_log_dirs::handle(shard, request, version))
        }
        Request::AlterConfigs(request) => later!(alter_configs::alter(shard, request)),
        Request::IncrementalAlterConfigs(request) => {
            later!(alter_configs::incremental(shard, request))
        }
        Request::CreatePartitions(request) => later!(create_partitions::handle(shard, request)),
        Request::DescribeTopicPartitions(request) => {
            now!(describe_topic_partitions::handle(shard, request))
        }
        Request::DescribeQuorum(request) => {
            later!(describe_quorum::handle(shard, request, version))
        }
    }
}
