//! DescribeProducers (key 61): the idempotent producers each partition knows, for operators.

use std::rc::Rc;

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::owned_log;
use crate::shard::Shard;

pub fn handle(shard: Rc<Shard>, request: DescribeProducersRequest) -> DescribeProducersResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|index| {
                    let response = PartitionResponse::default().with_partition_index(*index);
                    match owned_log(&shard, &name, *index) {
                        Err(code) => response.with_error_code(code.code()),
                        Ok(log) => response.with_active_producers(
                            log.producers()
                                .into_iter()
                                .map(|entry| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(entry.producer_id))
                                        .with_producer_epoch(i32::from(entry.epoch))
                                        .with_last_sequence(entry.last_sequence())
                                        .with_last_timestamp(entry.last_timestamp)
                                        .with_coordinator_epoch(-1)
                                        .with_current_txn_start_offset(-1)
                                })
                                .collect(),
                        ),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
