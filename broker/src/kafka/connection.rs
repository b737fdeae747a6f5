//! One client connection: a reader that starts requests in order and a writer that sends their
//! responses in the same order (clients pipeline up to `max.in.flight` requests).
//!
//! Every request's effects happen in request order, as if requests were sent one at a time
//! (Kafka processes one request per connection at a time): a request other than Produce starts
//! only once every earlier request on the connection has completed, and a Produce only once
//! every earlier request other than Produce has. So pipelined Produce requests still overlap
//! (their appends happen in order, inline, and their waits for the disk overlap, which is what
//! group commit needs), while an OffsetCommit followed by a LeaveGroup or an OffsetFetch sees the
//! commit done. Only the waiting is deferred to the writer, never the effects' order.
//!
//! Resources: the in-flight queue is bounded (`IN_FLIGHT_REQUESTS_PER_CONNECTION`); every frame
//! holds a grant from the shard's request memory (for its bytes as they arrive, then for what it
//! decodes to) until its response is written; a connection with nothing in flight and no byte
//! for `connections.max.idle.ms` is closed, as is one that does not read its responses for
//! `RESPONSE_WRITE_TIMEOUT`. At shutdown a connection stops reading, answers what it has read,
//! and closes.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use event_listener::Event;
use shards::net::Connection;
use shards::task::local_channel;
use storage::memory::MemoryGrant;
use tracing::{debug, warn};

use crate::kafka::wire::frame::{FrameReader, RequestStart};
use crate::kafka::{dispatch, Dispatch, ResponseFuture};
use crate::limits::{IN_FLIGHT_REQUESTS_PER_CONNECTION, RESPONSE_WRITE_TIMEOUT};
use crate::shard::Shard;

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
        Ok(ApiKey::DeleteRecords) => "delete_records",
        Ok(ApiKey::DescribeLogDirs) => "describe_log_dirs",
        Ok(ApiKey::DescribeCluster) => "describe_cluster",
        Ok(ApiKey::AlterConfigs) => "alter_configs",
        Ok(ApiKey::IncrementalAlterConfigs) => "incremental_alter_configs",
        Ok(ApiKey::CreatePartitions) => "create_partitions",
        Ok(ApiKey::DescribeTopicPartitions) => "describe_topic_partitions",
        Ok(ApiKey::DescribeQuorum) => "describe_quorum",
        _ => "unsupported",
    }
}

/// How far the connection's requests have got: the sequence number of the last one whose
/// response is complete (responses complete in order), how many are in flight, and whether the
/// writer has given up (then nothing more will complete).
#[derive(Default)]
struct Progress {
    completed: Cell<u64>,
    in_flight: Cell<usize>,
    writer_gone: Cell<bool>,
    moved: Event,
}

impl Progress {
    /// Waits until request `sequence` has completed; false if it never will (the writer gave up
    /// on the client).
    async fn wait_completed(&self, sequence: u64) -> bool {
        loop {
            let listener = self.moved.listen();
            if self.completed.get() >= sequence {
                return true;
            }
            if self.writer_gone.get() {
                return false;
            }
            listener.await;
        }
    }
}

/// One queued request: its sequence number, the response being prepared, the memory it holds,
/// its metric label and when it was read.
type Queued = (u64, ResponseFuture, MemoryGrant, &'static str, Instant);

/// What the reader waits for between frames.
enum Between {
    Frame(Result<bool, crate::kafka::wire::frame::FrameError>),
    Idle,
    Stop,
}

pub async fn serve(shard: Rc<Shard>, connection: Connection) {
    let peer = connection.peer_addr();
    let client_host: Rc<str> = peer
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
    let (queue, responses) = local_channel::bounded::<Queued>(IN_FLIGHT_REQUESTS_PER_CONNECTION);
    let progress = Rc::new(Progress::default());
    let metrics = shard.metrics.clone();
    let writer_task = shards::task::spawn({
        let progress = progress.clone();
        async move {
            while let Some((sequence, response, grant, api, started)) = responses.recv().await {
                let response = response.await;
                progress.completed.set(sequence);
                progress.moved.notify(usize::MAX);
                let written = match response {
                    Ok(response) => {
                        let bytes = response.chunks.iter().map(|chunk| chunk.len()).sum();
                        if bytes > 0 {
                            metrics.response(api, bytes, started.elapsed());
                        }
                        let write = writer.write_all_chunks(&response.chunks);
                        match shards::task::timeout(RESPONSE_WRITE_TIMEOUT, write).await {
                            Some(Ok(())) => true,
                            Some(Err(error)) => {
                                debug!(?peer, %error, "write failed; closing connection");
                                false
                            }
                            None => {
                                warn!(
                                    ?peer,
                                    "the client does not read its responses; closing connection"
                                );
                                false
                            }
                        }
                    }
                    Err(reason) => {
                        warn!(?peer, %reason, "cannot encode a response; closing connection");
                        false
                    }
                };
                drop(grant);
                progress.in_flight.set(progress.in_flight.get() - 1);
                progress.moved.notify(usize::MAX);
                if !written {
                    break;
                }
            }
            // The reader may be waiting on requests this task will never complete.
            progress.writer_gone.set(true);
            progress.moved.notify(usize::MAX);
        }
    });
    let idle = shard.node.config.millis("connections.max.idle.ms");
    let mut sequence = 0u64;
    let mut last_not_produce = 0u64;
    let mut last_activity = Instant::now();
    loop {
        if shard.connections.stopping() {
            break;
        }
        let between = futures_lite::future::or(
            async { Between::Frame(frames.wait_for_frame().await) },
            futures_lite::future::or(
                async {
                    shards::task::sleep(idle.saturating_sub(last_activity.elapsed())).await;
                    Between::Idle
                },
                async {
                    shard.connections.wait_stop().await;
                    Between::Stop
                },
            ),
        )
        .await;
        match between {
            Between::Frame(Ok(true)) => {}
            Between::Frame(Ok(false)) | Between::Stop => break,
            Between::Frame(Err(error)) => {
                debug!(?peer, %error, "closing connection");
                break;
            }
            Between::Idle => {
                if progress.in_flight.get() == 0 && last_activity.elapsed() >= idle {
                    debug!(
                        ?peer,
                        "closing a connection idle for connections.max.idle.ms"
                    );
                    break;
                }
                // Requests were in flight: the connection was busy, not idle.
                if progress.in_flight.get() > 0 {
                    last_activity = Instant::now();
                }
                continue;
            }
        }
        let mut frame = match frames.next_frame().await {
            Ok(frame) => frame,
            Err(error) => {
                warn!(?peer, %error, "closing connection");
                break;
            }
        };
        last_activity = Instant::now();
        let started = Instant::now();
        sequence += 1;
        let start = RequestStart::parse(&frame.bytes);
        let api = start.map_or("unknown", |start| api_name(start.api_key));
        let is_produce = start.is_some_and(|start| start.api_key == 0);
        // Effects in request order: see the module notes.
        let after = if is_produce {
            last_not_produce
        } else {
            sequence - 1
        };
        let ready = futures_lite::future::or(progress.wait_completed(after), async {
            shard.connections.wait_stop().await;
            false
        })
        .await;
        if !ready {
            break;
        }
        if !is_produce {
            last_not_produce = sequence;
        }
        shard.metrics.request(api, frame.bytes.len() + 4);
        let dispatched = dispatch(&shard, frame.bytes, &mut frame.grant, &client_host).await;
        let response = match dispatched {
            Dispatch::Respond(response) => response,
            Dispatch::NoResponse => {
                Box::pin(std::future::ready(Ok(crate::kafka::Response::none()))) as ResponseFuture
            }
            Dispatch::Close(reason) => {
                shard.metrics.error(api);
                warn!(?peer, %reason, "closing connection after an unanswerable request");
                break;
            }
        };
        progress.in_flight.set(progress.in_flight.get() + 1);
        if queue
            .send((sequence, response, frame.grant, api, started))
            .await
            .is_err()
        {
            break;
        }
    }
    // Answer what was read before the close, then drop the socket.
    drop(queue);
    writer_task.await;
}
