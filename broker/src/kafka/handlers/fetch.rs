//! Fetch (key 1): whole stored batches from the owning shard's logs, long-polled.
//!
//! A fetch that has less than `min_bytes` waits on its partitions' high-watermark events, so the
//! append (or flush, in durable mode) that satisfies it wakes it at once; the timer only bounds
//! the wait (DESIGN section 5).
//!
//! Fetch sessions (KIP-227, `fetch_sessions`): a full request with epoch 0 is answered with a
//! session id when the shard's cache has room; the session's incremental requests then carry
//! only changed fetch positions, and their answers only the partitions with news. Epoch -1
//! (librdkafka's every fetch) is served without a session and costs nothing extra.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::EventListener;
use kafka_protocol::messages::FetchRequest;
use storage::{Offset, PartitionLog};

use super::led_log;
use crate::kafka::errors::{log_error_code, ErrorCode};
use crate::kafka::fetch_sessions::{
    Context, FetchPosition, Outcome, PartitionKey, Reported, TopicKey, FETCH_SESSION_ID_NOT_FOUND,
    INVALID_SESSION_ID,
};
use crate::kafka::wire::fetch_response::{encode_fetch_response, FetchedPartition, FetchedTopic};
use crate::kafka::Response;
use crate::limits::TOPIC_NAME_BYTES_MAX;
use crate::limits::{FETCH_RESPONSE_BYTES_MAX, FETCH_WAIT_MAX};
use crate::shard::Shard;
use storage::memory::MemoryGrant;

pub(super) struct Wanted {
    pub(super) partition: i32,
    pub(super) position: FetchPosition,
    pub(super) log: Result<Rc<PartitionLog>, ErrorCode>,
    /// A follower's fetch: read up to what the leader may acknowledge itself at the time of
    /// the read, past the high watermark.
    pub(super) for_follower: bool,
}

impl Wanted {
    /// A partition of topic `name` (`None`: an id this broker does not know) to read from
    /// `position`, with its log or the error it gets.
    fn resolve(
        shard: &Shard,
        name: Option<&str>,
        partition: i32,
        position: FetchPosition,
    ) -> Wanted {
        let log = match name {
            None => Err(ErrorCode::UnknownTopicId),
            Some(name) => led_log(shard, name, partition, position.current_leader_epoch),
        };
        Wanted {
            partition,
            position,
            log,
            for_follower: false,
        }
    }
}

/// What a request asks of one partition.
pub(super) fn position_of(
    partition: &kafka_protocol::messages::fetch_request::FetchPartition,
) -> FetchPosition {
    FetchPosition {
        fetch_offset: partition.fetch_offset,
        max_bytes: partition.partition_max_bytes.max(0) as usize,
        current_leader_epoch: partition.current_leader_epoch,
    }
}

pub(super) struct WantedTopic {
    pub(super) name: String,
    pub(super) topic_id: uuid::Uuid,
    pub(super) partitions: Vec<Wanted>,
}

/// The name of a requested topic: by its id from v13, `None` for an id this broker does not
/// know.
pub(super) fn requested_name(
    shard: &Shard,
    topic: &kafka_protocol::messages::fetch_request::FetchTopic,
    version: i16,
) -> Option<String> {
    if version >= 13 {
        shard.topic_name_by_id(&topic.topic_id)
    } else {
        Some(topic.topic.0.to_string())
    }
}

/// Resolves every requested partition to its log once; reads repeat while the fetch waits.
fn resolve(shard: &Shard, request: &FetchRequest, version: i16) -> Vec<WantedTopic> {
    request
        .topics
        .iter()
        .map(|topic| {
            let name = requested_name(shard, topic, version);
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    Wanted::resolve(
                        shard,
                        name.as_deref(),
                        partition.partition,
                        position_of(partition),
                    )
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

/// The partitions of a session to read, in its order, as topics of consecutive partitions.
fn resolve_session(
    shard: &Shard,
    partitions: &[(PartitionKey, FetchPosition)],
) -> Vec<WantedTopic> {
    let mut topics: Vec<WantedTopic> = Vec::new();
    for ((topic, partition), position) in partitions {
        let (name, topic_id) = match topic {
            TopicKey::Id(id) => (shard.topic_name_by_id(id), *id),
            TopicKey::Name(name) => (Some(name.to_string()), uuid::Uuid::nil()),
        };
        let wanted = Wanted::resolve(shard, name.as_deref(), *partition, position.clone());
        let name = name.unwrap_or_default();
        match topics.last_mut() {
            Some(last) if last.name == name && last.topic_id == topic_id => {
                last.partitions.push(wanted)
            }
            _ => topics.push(WantedTopic {
                name,
                topic_id,
                partitions: vec![wanted],
            }),
        }
    }
    topics
}

/// A session's name for a topic: its id from v13, else its name, shared by its partitions.
fn topic_key(uses_topic_ids: bool, name: &str, topic_id: uuid::Uuid) -> TopicKey {
    if uses_topic_ids {
        TopicKey::Id(topic_id)
    } else {
        TopicKey::Name(Rc::from(name))
    }
}

/// Whether every topic a request names could be a topic of ours: a session keeps what it is
/// told, so a name longer than any topic's would only be stored to be refused each time.
fn names_are_plausible(request: &FetchRequest) -> bool {
    request
        .topics
        .iter()
        .map(|topic| topic.topic.0.len())
        .chain(
            request
                .forgotten_topics_data
                .iter()
                .map(|topic| topic.topic.0.len()),
        )
        .all(|length| length <= TOPIC_NAME_BYTES_MAX)
}

/// What an incremental request changes in its session: the partitions it names (new ones, or
/// new fetch positions) and the partitions it forgets.
fn session_changes(
    request: &FetchRequest,
    uses_topic_ids: bool,
) -> (Vec<(PartitionKey, FetchPosition)>, Vec<PartitionKey>) {
    let requested = request
        .topics
        .iter()
        .flat_map(|topic| {
            let key = topic_key(uses_topic_ids, &topic.topic.0, topic.topic_id);
            topic
                .partitions
                .iter()
                .map(move |partition| ((key.clone(), partition.partition), position_of(partition)))
        })
        .collect();
    let forgotten = request
        .forgotten_topics_data
        .iter()
        .flat_map(|topic| {
            let key = topic_key(uses_topic_ids, &topic.topic.0, topic.topic_id);
            topic
                .partitions
                .iter()
                .map(move |partition| (key.clone(), *partition))
        })
        .collect();
    (requested, forgotten)
}

/// What an answer told of a partition, for its session; `None` after an error, so that it is
/// sent again once the error clears.
fn reported(partition: &FetchedPartition) -> Option<Reported> {
    (partition.error_code == 0).then_some(Reported {
        high_watermark: partition.high_watermark,
        last_stable_offset: partition.last_stable_offset,
        log_start_offset: partition.log_start_offset,
    })
}

/// Makes a session of a full request's partitions, with what the answer told of each; its id,
/// or 0 if the cache has no room for it.
fn start_session(
    shard: &Shard,
    uses_topic_ids: bool,
    topics: &[WantedTopic],
    fetched: &[FetchedTopic],
) -> i32 {
    let size: usize = topics.iter().map(|topic| topic.partitions.len()).sum();
    if !shard
        .fetch_sessions
        .borrow()
        .could_make(size, Instant::now())
    {
        return INVALID_SESSION_ID;
    }
    let partitions = topics
        .iter()
        .zip(fetched)
        .flat_map(|(topic, answered)| {
            let key = topic_key(uses_topic_ids, &topic.name, topic.topic_id);
            topic
                .partitions
                .iter()
                .zip(&answered.partitions)
                .map(move |(wanted, partition)| {
                    (
                        (key.clone(), wanted.partition),
                        wanted.position.clone(),
                        reported(partition),
                    )
                })
        })
        .collect();
    shard
        .fetch_sessions
        .borrow_mut()
        .finish_full(uses_topic_ids, partitions, Instant::now())
}

/// Keeps of an incremental answer only the partitions its session says have news, or the
/// error code the whole answer gets instead (the session went away, or another request of it
/// was answered meanwhile).
fn incremental_answer(
    shard: &Shard,
    id: i32,
    epoch: i32,
    read: &[(PartitionKey, FetchPosition)],
    fetched: Vec<FetchedTopic>,
) -> Result<Vec<FetchedTopic>, i16> {
    let outcomes: Vec<(PartitionKey, Outcome)> = read
        .iter()
        .map(|(key, _)| key.clone())
        .zip(fetched.iter().flat_map(|topic| topic.partitions.iter()))
        .map(|(key, partition)| {
            let outcome = Outcome {
                reported: reported(partition).unwrap_or(Reported {
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                }),
                has_records: !partition.records.is_empty(),
                error: partition.error_code != 0,
            };
            (key, outcome)
        })
        .collect();
    let included = shard
        .fetch_sessions
        .borrow_mut()
        .finish_incremental(id, epoch, &outcomes)?;
    let mut included = included.into_iter();
    Ok(fetched
        .into_iter()
        .filter_map(|mut topic| {
            topic
                .partitions
                .retain(|_| included.next().unwrap_or(false));
            (!topic.partitions.is_empty()).then_some(topic)
        })
        .collect())
}

pub(super) async fn read_once(
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
                    let upper = if wanted.for_follower {
                        log.local_high_watermark()
                    } else if read_committed {
                        log.last_stable_offset()
                    } else {
                        log.high_watermark()
                    };
                    // KIP-74: the first batch of the first non-empty partition is returned even
                    // if it exceeds the limits; after that the request's max_bytes caps it.
                    let budget = wanted
                        .position
                        .max_bytes
                        .min(max_bytes.saturating_sub(total));
                    if (budget > 0 || total == 0) && !short_of_memory {
                        // Only a fetch that holds no memory yet may wait for some.
                        let read = if memory.is_empty() {
                            log.read(Offset(wanted.position.fetch_offset), budget.max(1), upper)
                                .await
                        } else {
                            log.read_if_room(
                                Offset(wanted.position.fetch_offset),
                                budget.max(1),
                                upper,
                            )
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
pub(super) async fn any_of(mut listeners: Vec<Pin<Box<EventListener>>>) {
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
    let refuse = |code: i16| {
        respond(
            encode_fetch_response(version, correlation_id, code, 0, &[]),
            Vec::new(),
        )
    };
    // A follower's fetch (Kafka's replica id: in the body before v15, in replica_state since).
    let replica_id = if version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    if replica_id >= 0 {
        return super::replica_fetch::handle(shard, request, version, correlation_id, replica_id)
            .await;
    }
    // Sessions exist from v7; topic ids identify their partitions from v13.
    let uses_topic_ids = version >= 13;
    let context = if version >= 7 && !names_are_plausible(&request) {
        // Served, but never kept: a session named by such a request goes.
        shard.fetch_sessions.borrow_mut().close(request.session_id);
        if request.session_epoch > 0 {
            return refuse(FETCH_SESSION_ID_NOT_FOUND);
        }
        Context::Sessionless
    } else if version >= 7 {
        shard.fetch_sessions.borrow_mut().begin(
            request.session_id,
            request.session_epoch,
            uses_topic_ids,
            || session_changes(&request, uses_topic_ids),
            Instant::now(),
        )
    } else {
        Context::Sessionless
    };
    let topics = match &context {
        Context::Refused(code) => return refuse(*code),
        Context::Incremental { partitions, .. } => resolve_session(&shard, partitions),
        Context::Sessionless | Context::Full => resolve(&shard, &request, version),
    };
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
            let (session_id, fetched) = match context {
                Context::Incremental {
                    id,
                    epoch,
                    ref partitions,
                } => match incremental_answer(&shard, id, epoch, partitions, fetched) {
                    Ok(fetched) => (id, fetched),
                    Err(code) => return refuse(code),
                },
                Context::Full => (
                    start_session(&shard, uses_topic_ids, &topics, &fetched),
                    fetched,
                ),
                Context::Sessionless | Context::Refused(_) => (0, fetched),
            };
            return respond(
                encode_fetch_response(version, correlation_id, 0, session_id, &fetched),
                memory,
            );
        }
        drop(memory);
        shards::task::timeout(deadline - now, any_of(listeners)).await;
    }
}
