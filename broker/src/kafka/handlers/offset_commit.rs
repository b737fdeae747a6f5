//! OffsetCommit: committed offsets are written to the group's `__consumer_offsets` partition
//! and acknowledged once durable.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::group_coordinator;
use crate::clock::now_ms;
use crate::groups::records::CommittedOffset;
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

pub async fn handle(
    shard: Rc<Shard>,
    request: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group_id = request.group_id.to_string();
    let instance_id = request.group_instance_id.as_ref().map(|id| id.to_string());
    let generation = request.generation_id_or_member_epoch;
    // The error for the whole request, if any: bad group id, wrong coordinator, or a commit the
    // group's membership does not allow.
    let (log, group_error) = match group_coordinator(&shard, &group_id) {
        Ok(log) => {
            let error = shard
                .groups
                .with_group(&group_id, false, |group| {
                    group
                        .validate_commit(&request.member_id, instance_id.as_deref(), generation)
                        .err()
                })
                .unwrap_or_else(|| {
                    // No such group: only a commit from outside any membership may create it.
                    let simple =
                        generation < 0 && request.member_id.is_empty() && instance_id.is_none();
                    (!simple).then_some(ErrorCode::IllegalGeneration)
                });
            (Some(log), error)
        }
        Err(error) => (None, Some(error)),
    };
    let metadata_max = shard.groups.settings.offset_metadata_max_bytes;
    let now = now_ms();
    let mut results: Vec<(kafka_protocol::messages::TopicName, Vec<(i32, ErrorCode)>)> =
        Vec::with_capacity(request.topics.len());
    let mut entries = Vec::new();
    for topic in request.topics {
        let name = topic.name.to_string();
        let partition_count = shard
            .metadata()
            .topics
            .get(&name)
            .map(|known| known.partition_count() as i32);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let metadata = partition
                .committed_metadata
                .as_ref()
                .map(|text| text.to_string())
                .unwrap_or_default();
            let error = if let Some(error) = group_error {
                error
            } else if !partition_count
                .is_some_and(|count| (0..count).contains(&partition.partition_index))
            {
                ErrorCode::UnknownTopicOrPartition
            } else if metadata.len() > metadata_max {
                ErrorCode::OffsetMetadataTooLarge
            } else {
                entries.push((
                    name.clone(),
                    partition.partition_index,
                    Some(CommittedOffset {
                        offset: partition.committed_offset,
                        leader_epoch: if version >= 6 {
                            partition.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata,
                        commit_timestamp_ms: now,
                    }),
                ));
                ErrorCode::None
            };
            partitions.push((partition.partition_index, error));
        }
        results.push((topic.name, partitions));
    }
    if let (Some(log), false) = (log, entries.is_empty()) {
        if let Err(error) = shard.groups.write(&log, &group_id, entries).await {
            for (_, partitions) in &mut results {
                for (_, partition_error) in partitions.iter_mut() {
                    if *partition_error == ErrorCode::None {
                        *partition_error = error;
                    }
                }
            }
        }
    }
    OffsetCommitResponse::default().with_topics(
        results
            .into_iter()
            .map(|(name, partitions)| {
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, error)| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(error.code())
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
