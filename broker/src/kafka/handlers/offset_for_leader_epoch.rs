//! OffsetForLeaderEpoch (key 23): where a leader epoch ends in the leader's log (KIP-279), from
//! the log's leader epoch cache, as Kafka's leader answers it. Consumers ask it to detect a
//! truncated log after a leader change (KIP-320); followers ask it before they fetch from a new
//! leader. A log from before epochs has one epoch, 0, that ends at the log end.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{leader_epoch_of, led_log};
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
                    let outcome = led_log(
                        &shard,
                        &name,
                        partition.partition,
                        partition.current_leader_epoch,
                    );
                    match outcome {
                        Ok(log) => {
                            let current = leader_epoch_of(&shard, &name, partition.partition);
                            let requested = partition.leader_epoch;
                            let answer = match log.end_offset_for_epoch(requested) {
                                Some(answer) => Some(answer),
                                // Its epochs are lost: no answer, rather than a wrong one.
                                None if !log.epochs_known() => None,
                                // Older than this leadership, newer than any batch: it ends
                                // where this leadership began (Kafka's leader has the entry).
                                None if (0..current).contains(&requested) => Some((
                                    log.latest_epoch().unwrap_or(requested),
                                    log.log_end_offset(),
                                )),
                                // A single-node log's one epoch, if it holds no batch yet.
                                None if requested == current && log.latest_epoch().is_none() => {
                                    Some((current, log.log_end_offset()))
                                }
                                // Epochs we never had (newer, or negative) are undefined.
                                None => None,
                            };
                            match answer {
                                Some((epoch, end)) => {
                                    response.with_leader_epoch(epoch).with_end_offset(end.0)
                                }
                                None => response.with_leader_epoch(-1).with_end_offset(-1),
                            }
                        }
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
