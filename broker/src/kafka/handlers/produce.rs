//! Produce (key 0), in two phases. The append phase runs inline on the connection's reader, so
//! batches from one connection reach each log in request order; the acknowledgement phase (wait
//! until the batch may be acknowledged: its covering `fdatasync` in durable mode, its write in
//! relaxed mode; then answer) is deferred, so the next request is read while this one waits and
//! one sync acknowledges them all (group commit). The wait is bounded by the request's
//! `timeout_ms` (`REQUEST_TIMED_OUT` past it, as Kafka answers an acks=all produce whose
//! replication did not finish in time).

use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use storage::record_batch::BatchHeader;
use storage::{AppendInfo, BatchError, LogError, Offset, PartitionLog};

use super::{owned_log, str_bytes, topic_name};
use crate::kafka::errors::{log_error_code, ErrorCode};
use crate::limits::{PRODUCE_TIMEOUT_DEFAULT, PRODUCE_TIMEOUT_MAX};
use crate::observability::metrics::ProduceStage;
use crate::replication::Replica;
use crate::shard::Shard;

/// Why a partition's batch was not acknowledged, as the response carries it.
struct PartitionError {
    code: ErrorCode,
    message: String,
    /// KIP-467: the records a validation rule refused, by index in the batch.
    records: Vec<(i32, String)>,
}

impl PartitionError {
    fn new(code: ErrorCode, message: impl Into<String>) -> PartitionError {
        PartitionError {
            code,
            message: message.into(),
            records: Vec::new(),
        }
    }

    fn from_log(error: &LogError) -> PartitionError {
        let records = match error {
            LogError::Batch(BatchError::Records { records, .. }) => records
                .iter()
                .map(|record| (record.batch_index, record.message.clone()))
                .collect(),
            _ => Vec::new(),
        };
        PartitionError {
            code: log_error_code(error),
            message: error.to_string(),
            records,
        }
    }
}

/// A batch appended: where, to which log, and (acks=all on a replicated partition) the replica
/// whose ISR must have it.
type AppendedBatch = (AppendInfo, Rc<PartitionLog>, Option<Rc<Replica>>);

/// One partition's outcome after the append phase.
struct Appended {
    index: i32,
    /// With the partition's replica when it is replicated and acks=all waits for its ISR.
    result: Result<AppendedBatch, PartitionError>,
}

/// Whether the response will be sent: `acks=0` producers get none (Kafka's contract).
pub struct AppendPhase {
    metrics: Rc<crate::observability::metrics::ShardMetrics>,
    acks: i16,
    version: i16,
    deadline: Instant,
    /// When the append phase ended: the first partition's write and sync stages are timed
    /// from here.
    appended_at: Instant,
    topics: Vec<(String, Vec<Appended>)>,
}

/// Checks that `records` is exactly one v2 batch (Kafka 3+ accepts only that in a produce).
fn single_batch(records: &[u8]) -> Result<(), PartitionError> {
    let header = BatchHeader::parse(records).ok_or_else(|| {
        PartitionError::new(
            ErrorCode::CorruptMessage,
            "records are shorter than a batch header",
        )
    })?;
    match header.total_bytes() {
        Some(total) if total == records.len() => Ok(()),
        Some(total) if total < records.len() && total >= storage::limits::BATCH_HEADER_BYTES => {
            Err(PartitionError::new(
                ErrorCode::InvalidRecord,
                "a produce request must hold exactly one record batch per partition",
            ))
        }
        _ => Err(PartitionError::new(
            ErrorCode::CorruptMessage,
            "batchLength does not match the record bytes",
        )),
    }
}

/// The request's `timeout_ms` as a wait bound: Kafka's clients send their `request.timeout.ms`
/// (30 s by default); none or a non-positive one gets that default, and no request may hold
/// its batches' memory for longer than `PRODUCE_TIMEOUT_MAX`.
fn timeout_of(timeout_ms: i32) -> Duration {
    match u64::try_from(timeout_ms) {
        Ok(milliseconds) if milliseconds > 0 => {
            Duration::from_millis(milliseconds).min(PRODUCE_TIMEOUT_MAX)
        }
        _ => PRODUCE_TIMEOUT_DEFAULT,
    }
}

pub async fn append(shard: &Rc<Shard>, request: ProduceRequest, version: i16) -> AppendPhase {
    let started = Instant::now();
    let deadline = started + timeout_of(request.timeout_ms);
    let acks_valid = matches!(request.acks, -1..=1);
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            let result = async {
                if !acks_valid {
                    return Err(PartitionError::new(
                        ErrorCode::InvalidRequiredAcks,
                        format!("acks={} is not 0, 1 or -1", request.acks),
                    ));
                }
                if request.transactional_id.is_some() {
                    return Err(PartitionError::new(
                        ErrorCode::TransactionalIdAuthorizationFailed,
                        "transactions are not supported yet",
                    ));
                }
                if name == crate::groups::OFFSETS_TOPIC {
                    return Err(PartitionError::new(
                        ErrorCode::InvalidTopicException,
                        format!("{name} is internal; only the group coordinator writes to it"),
                    ));
                }
                let log = owned_log(shard, &name, partition.index).map_err(|code| {
                    PartitionError::new(
                        code,
                        format!("{name}-{} is not served here", partition.index),
                    )
                })?;
                // acks=all needs min.insync.replicas in sync before the append (Kafka's
                // check); a partition of one replica has an ISR of one.
                let replica = shard.replica(&name, partition.index);
                let in_sync = replica.as_ref().map_or(1, |replica| replica.isr_len());
                let min_insync = log.min_insync_replicas();
                if request.acks == -1 && (in_sync as i64) < min_insync {
                    return Err(PartitionError::new(
                        ErrorCode::NotEnoughReplicas,
                        format!(
                            "the in-sync replicas of {name}-{} are {in_sync}, fewer than \
                             min.insync.replicas ({min_insync})",
                            partition.index
                        ),
                    ));
                }
                let records = partition.records.unwrap_or_default();
                single_batch(&records)?;
                let info = log
                    .append(&records)
                    .await
                    .map_err(|error| PartitionError::from_log(&error))?;
                let replica = replica.filter(|_| request.acks == -1);
                Ok((info, log, replica))
            }
            .await;
            partitions.push(Appended {
                index: partition.index,
                result,
            });
        }
        topics.push((name, partitions));
    }
    let appended_at = Instant::now();
    shard
        .metrics
        .produce_stage(ProduceStage::Append, appended_at - started);
    AppendPhase {
        metrics: shard.metrics.clone(),
        acks: request.acks,
        version,
        deadline,
        appended_at,
        topics,
    }
}

/// Waits until the batch ending at `last_offset` may be acknowledged (written in relaxed mode,
/// also synced in durable mode), timing the write and the sync stages apart.
async fn wait_timed(
    metrics: &crate::observability::metrics::ShardMetrics,
    log: &PartitionLog,
    last_offset: Offset,
    appended_at: Instant,
) -> Result<(), LogError> {
    let end = Offset(last_offset.0 + 1);
    log.wait_written(end).await?;
    let written_at = Instant::now();
    metrics.produce_stage(ProduceStage::Write, written_at - appended_at);
    if log.is_durable_mode() {
        log.wait_durable(end).await?;
        metrics.produce_stage(ProduceStage::Sync, written_at.elapsed());
    }
    Ok(())
}

/// Why an acks=all batch was not acknowledged before its timeout.
enum Unreplicated {
    Log(LogError),
    /// The leadership moved: the high watermark of this copy no longer says anything.
    LostLeadership,
}

impl From<LogError> for Unreplicated {
    fn from(error: LogError) -> Unreplicated {
        Unreplicated::Log(error)
    }
}

/// Waits until the high watermark passes the batch ending at `last_offset`, or this replica
/// stops leading.
async fn wait_replicated(
    replica: &Replica,
    log: &PartitionLog,
    last_offset: Offset,
) -> Result<(), Unreplicated> {
    let end = Offset(last_offset.0 + 1);
    loop {
        let changed = replica.changes();
        if log.high_watermark() >= end {
            return Ok(());
        }
        if !replica.is_leader() {
            return Err(Unreplicated::LostLeadership);
        }
        let replicated =
            futures_lite::future::or(async { Some(log.wait_high_watermark(end).await) }, async {
                changed.await;
                None
            })
            .await;
        if let Some(result) = replicated {
            return result.map_err(Unreplicated::Log);
        }
    }
}

impl AppendPhase {
    pub fn wants_response(&self) -> bool {
        self.acks != 0
    }

    /// Waits until each batch may be acknowledged (or the request's timeout passes), then
    /// builds the response.
    pub async fn acknowledge(self) -> ProduceResponse {
        let version = self.version;
        let deadline = self.deadline;
        let mut responses = Vec::with_capacity(self.topics.len());
        // The partitions are waited for one after another: each one's stages are timed from
        // when the wait for it began, so none counts the waits before it.
        let mut waiting_since = self.appended_at;
        for (name, partitions) in self.topics {
            let mut partition_responses = Vec::with_capacity(partitions.len());
            for appended in partitions {
                let outcome = match appended.result {
                    Ok((info, log, replica)) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let waited = shards::task::timeout(left, async {
                            wait_timed(&self.metrics, &log, info.last_offset, waiting_since)
                                .await?;
                            match &replica {
                                // acks=all: on disk on every in-sync replica.
                                Some(replica) => {
                                    wait_replicated(replica, &log, info.last_offset).await
                                }
                                None => Ok(()),
                            }
                        })
                        .await;
                        waiting_since = Instant::now();
                        let min_insync = log.min_insync_replicas();
                        match waited {
                            Some(Err(Unreplicated::LostLeadership)) => Err(PartitionError::new(
                                ErrorCode::NotLeaderOrFollower,
                                "this replica stopped leading the partition before the \
                                     batch was on every in-sync replica; retry on the new \
                                     leader (an idempotent retry is answered with its offsets \
                                     if it got there)",
                            )),
                            Some(Ok(()))
                                if replica.as_ref().is_some_and(|replica| {
                                    (replica.isr_len() as i64) < min_insync
                                }) =>
                            {
                                Err(PartitionError::new(
                                    ErrorCode::NotEnoughReplicasAfterAppend,
                                    format!(
                                        "the batch is written, but the in-sync replicas shrank \
                                         below min.insync.replicas ({min_insync}) before it was \
                                         on all of them"
                                    ),
                                ))
                            }
                            Some(Ok(())) => Ok(info),
                            Some(Err(Unreplicated::Log(error))) => {
                                Err(PartitionError::from_log(&error))
                            }
                            None => Err(PartitionError::new(
                                ErrorCode::RequestTimedOut,
                                "the batch was not durable on every in-sync replica within \
                                 the request's timeout_ms; it may still become so (an \
                                 idempotent retry is answered with its offsets)",
                            )),
                        }
                    }
                    Err(error) => Err(error),
                };
                let response = PartitionProduceResponse::default().with_index(appended.index);
                let response = match outcome {
                    Ok(info) => response
                        .with_base_offset(info.base_offset.0)
                        .with_log_append_time_ms(info.log_append_time_ms)
                        .with_log_start_offset(info.log_start_offset.0),
                    Err(error) => {
                        self.metrics.error("produce");
                        let response = response
                            .with_error_code(error.code.code())
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1);
                        if version >= 8 {
                            response
                                .with_error_message(Some(str_bytes(&error.message)))
                                .with_record_errors(
                                    error
                                        .records
                                        .iter()
                                        .map(|(index, message)| {
                                            BatchIndexAndErrorMessage::default()
                                                .with_batch_index(*index)
                                                .with_batch_index_error_message(Some(str_bytes(
                                                    message,
                                                )))
                                        })
                                        .collect(),
                                )
                        } else {
                            response
                        }
                    }
                };
                partition_responses.push(response);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(topic_name(&name))
                    .with_partition_responses(partition_responses),
            );
        }
        ProduceResponse::default().with_responses(responses)
    }
}
