//! Produce (key 0), in two phases. The append phase runs inline on the connection's reader, so
//! batches from one connection reach each log in request order; the acknowledgement phase (wait
//! for the covering `fdatasync` in durable mode, then answer) is deferred, so the next request is
//! read while this one waits and one sync acknowledges them all (group commit).

use std::rc::Rc;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use storage::record_batch::BatchHeader;
use storage::{AppendInfo, Offset, PartitionLog};

use super::{owned_log, str_bytes, topic_name};
use crate::kafka::errors::{log_error_code, ErrorCode};
use crate::shard::Shard;

/// One partition's outcome after the append phase.
struct Appended {
    index: i32,
    result: Result<(AppendInfo, Rc<PartitionLog>), (ErrorCode, String)>,
}

/// Whether the response will be sent: `acks=0` producers get none (Kafka's contract).
pub struct AppendPhase {
    metrics: Rc<crate::observability::metrics::ShardMetrics>,
    acks: i16,
    version: i16,
    topics: Vec<(String, Vec<Appended>)>,
}

/// Checks that `records` is exactly one v2 batch (Kafka 3+ accepts only that in a produce).
fn single_batch(records: &[u8]) -> Result<(), (ErrorCode, String)> {
    let header = BatchHeader::parse(records).ok_or((
        ErrorCode::CorruptMessage,
        "records are shorter than a batch header".to_string(),
    ))?;
    match header.total_bytes() {
        Some(total) if total == records.len() => Ok(()),
        Some(total) if total < records.len() && total >= storage::limits::BATCH_HEADER_BYTES => {
            Err((
                ErrorCode::InvalidRecord,
                "a produce request must hold exactly one record batch per partition".to_string(),
            ))
        }
        _ => Err((
            ErrorCode::CorruptMessage,
            "batchLength does not match the record bytes".to_string(),
        )),
    }
}

pub async fn append(shard: &Rc<Shard>, request: ProduceRequest, version: i16) -> AppendPhase {
    let acks_valid = matches!(request.acks, -1..=1);
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            let result = async {
                if !acks_valid {
                    return Err((
                        ErrorCode::InvalidRequiredAcks,
                        format!("acks={} is not 0, 1 or -1", request.acks),
                    ));
                }
                if request.transactional_id.is_some() {
                    return Err((
                        ErrorCode::TransactionalIdAuthorizationFailed,
                        "transactions are not supported yet".to_string(),
                    ));
                }
                if name == crate::groups::OFFSETS_TOPIC {
                    return Err((
                        ErrorCode::InvalidTopicException,
                        format!("{name} is internal; only the group coordinator writes to it"),
                    ));
                }
                let log = owned_log(shard, &name, partition.index).map_err(|code| {
                    (
                        code,
                        format!("{name}-{} is not served here", partition.index),
                    )
                })?;
                let records = partition.records.unwrap_or_default();
                single_batch(&records)?;
                let info = log
                    .append(&records)
                    .await
                    .map_err(|error| (log_error_code(&error), error.to_string()))?;
                Ok((info, log))
            }
            .await;
            partitions.push(Appended {
                index: partition.index,
                result,
            });
        }
        topics.push((name, partitions));
    }
    AppendPhase {
        metrics: shard.metrics.clone(),
        acks: request.acks,
        version,
        topics,
    }
}

impl AppendPhase {
    pub fn wants_response(&self) -> bool {
        self.acks != 0
    }

    /// Waits for durability where the topic needs it, then builds the response.
    pub async fn acknowledge(self) -> ProduceResponse {
        let version = self.version;
        let mut responses = Vec::with_capacity(self.topics.len());
        for (name, partitions) in self.topics {
            let mut partition_responses = Vec::with_capacity(partitions.len());
            for appended in partitions {
                let outcome = match appended.result {
                    Ok((info, log)) => {
                        let durable = log
                            .wait_acknowledgeable(Offset(info.last_offset.0 + 1))
                            .await;
                        durable
                            .map(|()| info)
                            .map_err(|error| (log_error_code(&error), error.to_string()))
                    }
                    Err(error) => Err(error),
                };
                let response = PartitionProduceResponse::default().with_index(appended.index);
                let response = match outcome {
                    Ok(info) => response
                        .with_base_offset(info.base_offset.0)
                        .with_log_append_time_ms(info.log_append_time_ms)
                        .with_log_start_offset(info.log_start_offset.0),
                    Err((code, message)) => {
                        self.metrics.error("produce");
                        let response = response
                            .with_error_code(code.code())
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1);
                        if version >= 8 {
                            response.with_error_message(Some(str_bytes(&message)))
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
