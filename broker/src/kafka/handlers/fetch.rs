//! Fetch (key 1): whole stored batches from the owning shard's logs, long-polled.
//!
//! A fetch that has less than `min_bytes` waits on its partitions' high-watermark events, so the
//! append (or flush, in durable mode) that satisfies it wakes it at once; the timer only bounds
//! the wait (DESIGN section 5). Fetch sessions (KIP-227) are not kept: every response says session
//! 0, which tells clients to send full requests, as Kafka does when it has no session to give.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::EventListener;
use kafka_protocol::messages::FetchRequest;
use storage::{Offset, PartitionLog};

use super::{check_leader_epoch, owned_log};
use crate::kafka::errors::{log_error_code, ErrorCode};
use crate::kafka::wire::fetch_response::{encode_fetch_response, FetchedPartition, FetchedTopic};
use crate::kafka::Response;
use crate::limits::{FETCH_RESPONSE_BYTES_MAX, FETCH_WAIT_MAX};
use crate::shard::Shard;
use storage::memory::MemoryGrant;

/// Kafka's FETCH_SESSION_ID_NOT_FOUND.
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;

struct Wanted {
    partition: i32,
    offset: i64,
    max_bytes: usize,
    log: Result<Rc<PartitionLog>, ErrorCode>,
}

struct WantedTopic {
    name: String,
    topic_id: uuid::Uuid,
    partitions: Vec<Wanted>,
}

/// Resolves every requested partition to its log once; reads repeat while the fetch waits.
fn resolve(shard: &Shard, request: &FetchRequest, version: i16) -> Vec<WantedTopic> {
    request
        .topics
        .iter()
        .map(|topic| {
            let name = if version >= 13 {
                shard.topic_name_by_id(&topic.topic_id)
            } else {
                Some(topic.topic.0.to_string())
            };
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| Wanted {
                    partition: partition.partition,
                    offset: partition.fetch_offset,
                    max_bytes: partition.partition_max_bytes.max(0) as usize,
                    log: match &name {
                        None => Err(ErrorCode::UnknownTopicId),
                        Some(name) => check_leader_epoch(partition.current_leader_epoch)
                            .and_then(|()| owned_log(shard, name, partition.partition)),
                    },
                })
                .collect();
            WantedTopic {
                name: name.unwrap_or_default(),
                topic_id: topic.topic_id,
                partitions,
            }
        })
        .collect()
}

async fn read_once(
    topics: &[WantedTopic],
    max_bytes: usize,
    read_committed: bool,
    memory: &mut Vec<MemoryGrant>,
) -> (Vec<FetchedTopic>, usize, usize) {
    let mut total = 0usize;
    let mut errors = 0usize;
    let mut short_of_memory = false;
    let mut fetched = Vec::with_capacity(topics.len());
    for topic in topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in &topic.partitions {
            let mut partition = FetchedPartition {
                partition_index: wanted.partition,
                error_code: 0,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                records: Vec::new(),
            };
            match &wanted.log {
                Err(code) => {
                    partition.error_code = code.code();
                    errors += 1;
                }
                Ok(log) => {
                    partition.high_watermark = log.high_watermark().0;
                    partition.last_stable_offset = log.last_stable_offset().0;
                    partition.log_start_offset = log.log_start_offset().0;
                    let upper = if read_committed {
                        log.last_stable_offset()
                    } else {
                        log.high_watermark()
                    };
                    // KIP-74: the first batch of the first non-empty partition is returned even
                    // if it exceeds the limits; after that the request's max_bytes caps it.
                    let budget = wanted.max_bytes.min(max_bytes.saturating_sub(total));
                    if (budget > 0 || total == 0) && !short_of_memory {
                        // Only a fetch that holds no memory yet may wait for some.
                        let read = if memory.is_empty() {
                            log.read(Offset(wanted.offset), budget.max(1), upper).await
                        } else {
                            log.read_if_room(Offset(wanted.offset), budget.max(1), upper)
                                .await
                        };
                        match read {
                            Ok(fetched) => {
                                // Out of memory: answer with what was read, as Kafka returns
                                // a partial response; the client fetches the rest next time.
                                short_of_memory = fetched.short_of_memory;
                                memory.extend(fetched.memory);
                                partition.records = fetched.runs;
                                total += partition.records_bytes();
                            }
                            Err(error) => {
                                partition.error_code = log_error_code(&error).code();
                                errors += 1;
                            }
                        }
                    }
                }
            }
            partitions.push(partition);
        }
        fetched.push(FetchedTopic {
            name: topic.name.clone(),
            topic_id: topic.topic_id,
            partitions,
        });
    }
    (fetched, total, errors)
}

/// Resolves when any of the listeners fires.
async fn any_of(mut listeners: Vec<Pin<Box<EventListener>>>) {
    std::future::poll_fn(move |context| {
        for listener in listeners.iter_mut() {
            if listener.as_mut().poll(context).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

pub async fn handle(
    shard: Rc<Shard>,
    request: FetchRequest,
    version: i16,
    correlation_id: i32,
) -> Response {
    let respond = |chunks: Vec<Bytes>, memory: Vec<MemoryGrant>| Response { chunks, memory };
    if request.session_id != 0 {
        let chunks =
            encode_fetch_response(version, correlation_id, FETCH_SESSION_ID_NOT_FOUND, 0, &[]);
        return respond(chunks, Vec::new());
    }
    let topics = resolve(&shard, &request, version);
    let read_committed = request.isolation_level == 1;
    // Kafka's broker `fetch.max.bytes` caps what the client may ask for.
    let max_bytes = (request.max_bytes.max(0) as usize).min(FETCH_RESPONSE_BYTES_MAX);
    let min_bytes = request.min_bytes.max(0) as usize;
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    let logs: Vec<Rc<PartitionLog>> = topics
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .filter_map(|wanted| wanted.log.as_ref().ok().cloned())
        .collect();
    loop {
        // Listen before reading, so an append between the read and the wait is not missed.
        let listeners: Vec<_> = logs
            .iter()
            .map(|log| Box::pin(log.high_watermark_listener()))
            .collect();
        // The disk reads' memory is held until the response is written.
        let mut memory = Vec::new();
        let (fetched, bytes, errors) =
            read_once(&topics, max_bytes, read_committed, &mut memory).await;
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
