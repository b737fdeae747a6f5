//! One client connection: a reader that decodes requests in order and a writer that sends their
//! responses in the same order (clients pipeline up to `max.in.flight` requests).
//!
//! The reader runs each request's inline phase (for Produce: the append) before reading the
//! next, then queues the rest as a future; the writer awaits those futures strictly in order.
//! The queue is bounded (`IN_FLIGHT_REQUESTS_PER_CONNECTION`) and every frame holds a grant from
//! the shard's request-memory budget until its response is written.

use std::rc::Rc;
use std::time::Instant;

use shards::net::Connection;
use shards::task::local_channel;
use tracing::{debug, warn};

use crate::kafka::wire::frame::{FrameReader, RequestStart};
use crate::kafka::{dispatch, Dispatch, ResponseFuture};
use crate::limits::IN_FLIGHT_REQUESTS_PER_CONNECTION;
use crate::shard::Shard;
use storage::memory::MemoryGrant;

/// The metric label of an API key: Kafka's API name in snake case.
pub fn api_name(api_key: i16) -> &'static str {
    use kafka_protocol::messages::ApiKey;
    match ApiKey::try_from(api_key) {
        Ok(ApiKey::Produce) => "produce",
        Ok(ApiKey::Fetch) => "fetch",
        Ok(ApiKey::ListOffsets) => "list_offsets",
        Ok(ApiKey::Metadata) => "metadata",
        Ok(ApiKey::OffsetForLeaderEpoch) => "offset_for_leader_epoch",
        Ok(ApiKey::ApiVersions) => "api_versions",
        Ok(ApiKey::CreateTopics) => "create_topics",
        Ok(ApiKey::DeleteTopics) => "delete_topics",
        Ok(ApiKey::DescribeConfigs) => "describe_configs",
        Ok(ApiKey::InitProducerId) => "init_producer_id",
        Ok(ApiKey::DescribeProducers) => "describe_producers",
        Ok(ApiKey::FindCoordinator) => "find_coordinator",
        Ok(ApiKey::JoinGroup) => "join_group",
        Ok(ApiKey::SyncGroup) => "sync_group",
        Ok(ApiKey::Heartbeat) => "heartbeat",
        Ok(ApiKey::LeaveGroup) => "leave_group",
        Ok(ApiKey::OffsetCommit) => "offset_commit",
        Ok(ApiKey::OffsetFetch) => "offset_fetch",
        Ok(ApiKey::ListGroups) => "list_groups",
        Ok(ApiKey::DescribeGroups) => "describe_groups",
        Ok(ApiKey::DeleteGroups) => "delete_groups",
        Ok(ApiKey::OffsetDelete) => "offset_delete",
        _ => "unsupported",
    }
}

pub async fn serve(shard: Rc<Shard>, connection: Connection) {
    let peer = connection.peer_addr();
    let client_host: std::rc::Rc<str> = peer
        .map_or_else(
            || "/unknown".to_string(),
            |address| format!("/{}", address.ip()),
        )
        .into();
    let (reader, mut writer) = connection.split();
    let mut frames = FrameReader::new(
        reader,
        shard.node.config.socket_request_max_bytes(),
        shard.request_memory.clone(),
    );
    let (queue, responses) =
        local_channel::bounded::<(ResponseFuture, MemoryGrant, &'static str, Instant)>(
            IN_FLIGHT_REQUESTS_PER_CONNECTION,
        );
    let metrics = shard.metrics.clone();
    let writer_task = shards::task::spawn(async move {
        while let Some((response, grant, api, started)) = responses.recv().await {
            match response.await {
                Ok(chunks) => {
                    let bytes = chunks.iter().map(|chunk| chunk.len()).sum();
                    metrics.response(api, bytes, started.elapsed());
                    if let Err(error) = writer.write_all_chunks(&chunks).await {
                        debug!(?peer, %error, "write failed; closing connection");
                        break;
                    }
                }
                Err(reason) => {
                    warn!(?peer, %reason, "cannot encode a response; closing connection");
                    break;
                }
            }
            drop(grant);
        }
    });
    loop {
        let frame = match frames.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error) => {
                warn!(?peer, %error, "closing connection");
                break;
            }
        };
        let started = Instant::now();
        let api =
            RequestStart::parse(&frame.bytes).map_or("unknown", |start| api_name(start.api_key));
        shard.metrics.request(api, frame.bytes.len() + 4);
        match dispatch(&shard, frame.bytes, &client_host).await {
            Dispatch::Respond(response) => {
                if queue
                    .send((response, frame.grant, api, started))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Dispatch::NoResponse => {}
            Dispatch::Close(reason) => {
                shard.metrics.error(api);
                warn!(?peer, %reason, "closing connection after an unanswerable request");
                break;
            }
        }
    }
    // Answer what was read before the close, then drop the socket.
    drop(queue);
    writer_task.await;
}
