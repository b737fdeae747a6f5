//! DescribeTopicPartitions (key 75, v0): what newer admin clients use to describe topics, with
//! Kafka's cursor pagination (`DescribeTopicPartitionsRequestHandler`). Topics are listed in
//! name order from the cursor's topic (and, in that topic, from the cursor's partition); at
//! most `min(response_partition_limit, max.request.partition.size.limit)` partitions are
//! answered, and `next_cursor` says where the next request should start. An empty topic list
//! means every topic. A cursor naming a topic the list does not hold, or a negative partition,
//! is INVALID_REQUEST for every topic asked about.

use std::collections::BTreeSet;
use std::rc::Rc;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse};

use super::metadata::PartitionState;
use super::topic_name;
use crate::controller::validate_topic_name;
use crate::groups::OFFSETS_TOPIC;
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

/// The operations Kafka supports on a topic, as its `AclOperation` codes (READ 3, WRITE 4,
/// CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11) in a bit
/// field: what an unsecured Kafka broker reports.
const TOPIC_OPERATIONS: i32 =
    1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 10 | 1 << 11;

pub fn handle(
    shard: Rc<Shard>,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let metadata = shard.metadata();
    let listing_all = request.topics.is_empty();
    let requested: BTreeSet<String> = request
        .topics
        .iter()
        .map(|topic| topic.name.to_string())
        .collect();
    let (cursor_topic, cursor_partition) = request
        .cursor
        .as_ref()
        .map(|cursor| (cursor.topic_name.0.to_string(), cursor.partition_index))
        .unwrap_or_default();
    let bad_cursor = request.cursor.as_ref().is_some_and(|_| {
        cursor_partition < 0 || (!listing_all && !requested.contains(&cursor_topic))
    });
    if bad_cursor {
        return DescribeTopicPartitionsResponse::default().with_topics(
            requested
                .iter()
                .map(|name| {
                    DescribeTopicPartitionsResponseTopic::default()
                        .with_name(Some(topic_name(name)))
                        .with_error_code(ErrorCode::InvalidRequest.code())
                })
                .collect(),
        );
    }
    let names: Vec<&str> = if listing_all {
        metadata
            .topics
            .range(cursor_topic.clone()..)
            .map(|(name, _)| name.as_str())
            .collect()
    } else {
        requested
            .range(cursor_topic.clone()..)
            .map(String::as_str)
            .collect()
    };
    let limit = request
        .response_partition_limit
        .min(shard.config().partition_listing_limit())
        .max(1) as usize;
    let mut remaining = limit;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if remaining == 0 {
            next_cursor = Some(Cursor::default().with_topic_name(topic_name(name)));
            break;
        }
        let response = DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(topic_name(name)))
            .with_topic_authorized_operations(TOPIC_OPERATIONS);
        let Some(topic) = metadata.topics.get(name) else {
            let error = if validate_topic_name(name).is_err() {
                ErrorCode::InvalidTopicException
            } else {
                ErrorCode::UnknownTopicOrPartition
            };
            topics.push(response.with_error_code(error.code()));
            continue;
        };
        let count = topic.partition_count();
        let start = if name == cursor_topic {
            (cursor_partition as usize).min(count)
        } else {
            0
        };
        let end = count.min(start + remaining);
        remaining -= end - start;
        let partitions = (start..end)
            .map(|index| {
                let state = PartitionState::of(&metadata, topic, index);
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(index as i32)
                    .with_leader_id(state.leader)
                    .with_leader_epoch(state.leader_epoch)
                    .with_replica_nodes(state.replicas)
                    .with_isr_nodes(state.isr)
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
                    .with_offline_replicas(state.offline)
            })
            .collect();
        topics.push(
            response
                .with_topic_id(topic.topic_id)
                .with_is_internal(name == OFFSETS_TOPIC)
                .with_partitions(partitions),
        );
        if end < count {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index(end as i32),
            );
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
