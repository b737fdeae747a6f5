//! OffsetForLeaderEpoch (key 23): a single-node log has one epoch, 0, that ends at the log end.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{check_leader_epoch, owned_log, LEADER_EPOCH};
use crate::shard::Shard;

pub fn handle(
    shard: Rc<Shard>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.topic.0.to_string();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|partition| {
                    let response = EpochEndOffset::default().with_partition(partition.partition);
                    let outcome = check_leader_epoch(partition.current_leader_epoch)
                        .and_then(|()| owned_log(&shard, &name, partition.partition));
                    match outcome {
                        // Epochs we never had (newer, or negative) are undefined, as in Kafka.
                        Ok(_) if partition.leader_epoch != LEADER_EPOCH => {
                            response.with_leader_epoch(-1).with_end_offset(-1)
                        }
                        Ok(log) => response
                            .with_leader_epoch(LEADER_EPOCH)
                            .with_end_offset(log.log_end_offset().0),
                        Err(code) => response
                            .with_error_code(code.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
