//! OffsetDelete: removes a group's committed offsets for some partitions, refused for topics
//! the group's live members subscribe to.

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::group_coordinator;
use crate::groups::group::GroupState;
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

pub async fn handle(shard: Rc<Shard>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = request.group_id.to_string();
    let failed = |error: ErrorCode| OffsetDeleteResponse::default().with_error_code(error.code());
    let log = match group_coordinator(&shard, &group_id) {
        Ok(log) => log,
        Err(error) => return failed(error),
    };
    // Which topics are off limits: those a live consumer group subscribes to.
    let subscribed = shard.groups.with_group(&group_id, false, |group| {
        if group.state() == GroupState::Empty {
            Ok(Vec::new())
        } else {
            group.subscribed_topics().ok_or(ErrorCode::NonEmptyGroup)
        }
    });
    let subscribed = match subscribed {
        None => return failed(ErrorCode::GroupIdNotFound),
        Some(Err(error)) => return failed(error),
        Some(Ok(topics)) => topics,
    };
    let mut tombstones = Vec::new();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.to_string();
        let known = shard.metadata().topics.contains_key(&name);
        let partitions = topic
            .partitions
            .iter()
            .map(|partition| {
                let index = partition.partition_index;
                let error = if !known {
                    ErrorCode::UnknownTopicOrPartition
                } else if subscribed.contains(&name) {
                    ErrorCode::GroupSubscribedToTopic
                } else {
                    let committed = shard
                        .groups
                        .with_group(&group_id, false, |group| {
                            group.offsets.contains_key(&(name.clone(), index))
                        })
                        .unwrap_or(false);
                    if committed {
                        tombstones.push((name.clone(), index, None));
                    }
                    ErrorCode::None
                };
                (index, error)
            })
            .collect::<Vec<_>>();
        topics.push((topic.name, partitions));
    }
    let mut write_error = None;
    if !tombstones.is_empty() {
        write_error = shard.groups.write(&log, &group_id, tombstones).await.err();
    }
    OffsetDeleteResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                OffsetDeleteResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, error)| {
                                let error = match (error, write_error) {
                                    (ErrorCode::None, Some(failed)) => failed,
                                    (error, _) => error,
                                };
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_error_code(error.code())
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}
