//! Fetch from a follower (a request with a replica id): the leader's side of replication.
//!
//! Each partition's fetch offset is the follower's position: everything below it is durable on
//! the follower (`replication::fetcher` fetches only once it is). The leader records it, which
//! may move the high watermark and answer acks=all produces, and serves the follower up to what
//! the leader may acknowledge itself, past the high watermark. A follower that caught up and is
//! out of the ISR is proposed back into it. No fetch sessions: a follower sends full requests.
//!
//! The replica id is taken as the request says, as a Kafka broker without an authorizer does:
//! a client that claims to be a follower can only claim positions the leader holds durably.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;

use super::fetch::{any_of, position_of, read_once, requested_name, Wanted, WantedTopic};
use super::led_log;
use crate::kafka::errors::ErrorCode;
use crate::kafka::wire::fetch_response::encode_fetch_response;
use crate::kafka::Response;
use crate::limits::{FETCH_RESPONSE_BYTES_MAX, FETCH_WAIT_MAX};
use crate::shard::Shard;
use storage::memory::MemoryGrant;

pub async fn handle(
    shard: Rc<Shard>,
    request: FetchRequest,
    version: i16,
    correlation_id: i32,
    follower: i32,
) -> Response {
    let now = Instant::now();
    let topics: Vec<WantedTopic> = request
        .topics
        .iter()
        .map(|topic| {
            let name = requested_name(&shard, topic, version);
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let position = position_of(partition);
                    let served = match name.as_deref() {
                        None => Err(ErrorCode::UnknownTopicId),
                        Some(name) => led_log(
                            &shard,
                            name,
                            partition.partition,
                            position.current_leader_epoch,
                        )
                        .and_then(|log| {
                            let replica = shard
                                .replica(name, partition.partition)
                                .ok_or(ErrorCode::NotLeaderOrFollower)?;
                            let change =
                                replica.follower_fetched(follower, position.fetch_offset, now)?;
                            // A follower on a node the controller has fenced (one that
                            // restarted and has not registered yet) would be refused.
                            let fenced = shard
                                .metadata()
                                .fenced
                                .contains(&crate::controller::metadata::broker_place(follower).0);
                            if let Some(change) = change.filter(|_| !fenced) {
                                shard.send_isr_change(&replica, change);
                            }
                            Ok(log)
                        }),
                    };
                    Wanted {
                        partition: partition.partition,
                        position,
                        log: served,
                        for_follower: true,
                    }
                })
                .collect();
            WantedTopic {
                name: name.unwrap_or_default(),
                topic_id: topic.topic_id,
                partitions,
            }
        })
        .collect();
    let max_bytes = (request.max_bytes.max(0) as usize).min(FETCH_RESPONSE_BYTES_MAX);
    let min_bytes = request.min_bytes.max(0) as usize;
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let deadline = now + wait;
    let logs: Vec<_> = topics
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .filter_map(|wanted| wanted.log.as_ref().ok().cloned())
        .collect();
    let respond = |chunks: Vec<Bytes>, memory: Vec<MemoryGrant>| Response { chunks, memory };
    loop {
        // The leader's own durable offset moving wakes the high-watermark listeners too.
        let listeners: Vec<_> = logs
            .iter()
            .map(|log| Box::pin(log.high_watermark_listener()))
            .collect();
        let mut memory = Vec::new();
        let (fetched, bytes, errors) = read_once(&topics, max_bytes, false, &mut memory).await;
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || errors > 0 || now >= deadline || logs.is_empty() {
            for _ in 0..errors {
                shard.metrics.error("fetch");
            }
            return respond(
                encode_fetch_response(version, correlation_id, 0, 0, &fetched),
                memory,
            );
        }
        drop(memory);
        shards::task::timeout(deadline - now, any_of(listeners)).await;
    }
}
