//! DeleteRecords (key 21): moves a partition's log start forward, as Kafka's
//! `Partition.deleteRecordsOnLeader` does. Offset -1 means the high watermark; an offset below
//! 0 otherwise, or above the high watermark, is `OFFSET_OUT_OF_RANGE`; a topic whose
//! `cleanup.policy` does not include `delete` is `POLICY_VIOLATION`. The new start is durable
//! before the answer (`PartitionLog::advance_log_start`), and the answer's low watermark is
//! the log start afterwards, which never moves back (a smaller offset leaves it as it is).

use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use storage::Offset;

use super::owned_log;
use crate::kafka::errors::{log_error_code, ErrorCode};
use crate::shard::Shard;

/// Kafka's `DeleteRecordsRequest.HIGH_WATERMARK`.
const HIGH_WATERMARK: i64 = -1;

pub async fn handle(shard: Rc<Shard>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let deletable = {
            let metadata = shard.metadata();
            metadata.topics.get(&name).map(|known| {
                shard
                    .config()
                    .topic_value(&known.configs, "cleanup.policy")
                    .is_some_and(|policy| policy.split(',').any(|one| one.trim() == "delete"))
            })
        };
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(partition.partition_index);
            let outcome: Result<i64, ErrorCode> = async {
                let log = owned_log(&shard, &name, partition.partition_index)?;
                if deletable == Some(false) {
                    return Err(ErrorCode::PolicyViolation);
                }
                let high_watermark = log.high_watermark().0;
                let offset = match partition.offset {
                    HIGH_WATERMARK => high_watermark,
                    offset if offset < 0 || offset > high_watermark => {
                        return Err(ErrorCode::OffsetOutOfRange)
                    }
                    offset => offset,
                };
                log.advance_log_start(Offset(offset))
                    .await
                    .map(|start| start.0)
                    .map_err(|error| log_error_code(&error))
            }
            .await;
            partitions.push(match outcome {
                Ok(low_watermark) => result.with_low_watermark(low_watermark),
                Err(code) => result.with_low_watermark(-1).with_error_code(code.code()),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
