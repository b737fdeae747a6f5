//! OffsetFetch: a group's committed offsets, for one group (v1-7) or several (v8+). A
//! partition without a commit reads as offset -1, as on Kafka.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};

use super::{group_coordinator, str_bytes, topic_name};
use crate::groups::records::CommittedOffset;
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

/// Topic -> (partition, committed offset if any).
type Fetched = BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>>;

/// The committed offsets of `group_id` for `topics` (`None`: every partition it has committed).
fn fetch_group(
    shard: &Shard,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Fetched, ErrorCode> {
    group_coordinator(shard, group_id)?;
    let mut fetched = Fetched::new();
    if topics.is_none() {
        shard.groups.with_group(group_id, false, |group| {
            for ((topic, partition), stored) in &group.offsets {
                fetched
                    .entry(topic.clone())
                    .or_default()
                    .push((*partition, Some(stored.committed.clone())));
            }
        });
        for partitions in fetched.values_mut() {
            partitions.sort_by_key(|(partition, _)| *partition);
        }
    }
    if let Some(topics) = topics {
        for (topic, partitions) in topics {
            let entry = fetched.entry(topic.clone()).or_default();
            for partition in partitions {
                let committed = shard
                    .groups
                    .with_group(group_id, false, |group| {
                        group
                            .offsets
                            .get(&(topic.clone(), partition))
                            .map(|stored| stored.committed.clone())
                    })
                    .flatten();
                entry.push((partition, committed));
            }
        }
    }
    Ok(fetched)
}

fn partition_fields(committed: Option<CommittedOffset>, version: i16) -> (i64, i32, String) {
    match committed {
        Some(committed) => (
            committed.offset,
            if version >= 5 {
                committed.leader_epoch
            } else {
                -1
            },
            committed.metadata,
        ),
        None => (-1, -1, String::new()),
    }
}

pub fn handle(shard: Rc<Shard>, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        // A group named twice is answered once: an all-topics answer lists every committed
        // offset of the group, which a request must not be able to multiply.
        let mut seen = std::collections::HashSet::new();
        let groups = request
            .groups
            .into_iter()
            .filter(|group| seen.insert(group.group_id.clone()))
            .map(|group| {
                let topics = group.topics.map(|topics| {
                    topics
                        .into_iter()
                        .map(|topic| (topic.name.to_string(), topic.partition_indexes))
                        .collect()
                });
                let response =
                    OffsetFetchResponseGroup::default().with_group_id(group.group_id.clone());
                match fetch_group(&shard, &group.group_id, topics) {
                    Err(error) => response.with_error_code(error.code()),
                    Ok(fetched) => response.with_topics(
                        fetched
                            .into_iter()
                            .map(|(topic, partitions)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(topic_name(&topic))
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|(index, committed)| {
                                                let (offset, epoch, metadata) =
                                                    partition_fields(committed, version);
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(index)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(str_bytes(&metadata)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let requested: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|topic| (topic.name.to_string(), topic.partition_indexes))
            .collect()
    });
    let (fetched, error) = match fetch_group(&shard, &request.group_id, requested.clone()) {
        Ok(fetched) => (fetched, ErrorCode::None),
        // v1 has no top-level error: every requested partition carries it.
        Err(error) => (
            requested
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partitions)| {
                    (topic, partitions.into_iter().map(|p| (p, None)).collect())
                })
                .collect(),
            error,
        ),
    };
    let topics = fetched
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&topic))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, committed)| {
                            let (offset, epoch, metadata) = partition_fields(committed, version);
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(Some(str_bytes(&metadata)))
                                .with_error_code(error.code())
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default()
        .with_topics(topics)
        .with_error_code(if version >= 2 { error.code() } else { 0 })
}
