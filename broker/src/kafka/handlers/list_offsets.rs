//! ListOffsets (key 2): earliest, latest, max timestamp, and by timestamp.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{leader_epoch_of, led_log};
use crate::kafka::errors::{log_error_code, ErrorCode};
use crate::shard::Shard;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub async fn handle(
    shard: Rc<Shard>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let read_committed = request.isolation_level == 1;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let response = ListOffsetsPartitionResponse::default()
                .with_partition_index(partition.partition_index);
            let outcome: Result<(i64, i64), ErrorCode> = async {
                let log = led_log(
                    &shard,
                    &name,
                    partition.partition_index,
                    partition.current_leader_epoch,
                )?;
                let upper = if read_committed {
                    log.last_stable_offset()
                } else {
                    log.high_watermark()
                };
                Ok(match partition.timestamp {
                    LATEST => (-1, upper.0),
                    EARLIEST | EARLIEST_LOCAL => (-1, log.log_start_offset().0),
                    MAX_TIMESTAMP => log
                        .max_timestamp()
                        .filter(|(offset, _)| *offset < upper)
                        .map_or((-1, -1), |(offset, timestamp)| (timestamp, offset.0)),
                    target if target >= 0 => log
                        .offset_for_timestamp(target)
                        .await
                        .map_err(|error| log_error_code(&error))?
                        .filter(|(offset, _)| *offset < upper)
                        .map_or((-1, -1), |(offset, timestamp)| (timestamp, offset.0)),
                    _ => return Err(ErrorCode::InvalidRequest),
                })
            }
            .await;
            partitions.push(match outcome {
                // leader_epoch exists from v4; kafka-protocol refuses to encode it earlier.
                Ok((timestamp, offset)) => response
                    .with_timestamp(timestamp)
                    .with_offset(offset)
                    .with_leader_epoch(if version >= 4 {
                        leader_epoch_of(&shard, &name, partition.partition_index)
                    } else {
                        -1
                    }),
                Err(code) => response
                    .with_error_code(code.code())
                    .with_timestamp(-1)
                    .with_offset(-1),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
