//! DeleteGroups: an empty group and all its committed offsets go; tombstones in the offsets
//! log make the deletion survive a restart.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::group_coordinator;
use crate::groups::group::GroupState;
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

async fn delete(shard: &Shard, group_id: &str) -> ErrorCode {
    let log = match group_coordinator(shard, group_id) {
        Ok(log) => log,
        Err(error) => return error,
    };
    let offsets = shard.groups.with_group(group_id, false, |group| {
        if group.state() != GroupState::Empty || group.member_count() > 0 {
            return Err(ErrorCode::NonEmptyGroup);
        }
        Ok(group
            .offsets
            .keys()
            .map(|(topic, partition)| (topic.clone(), *partition, None))
            .collect::<Vec<_>>())
    });
    match offsets {
        None => ErrorCode::GroupIdNotFound,
        Some(Err(error)) => error,
        Some(Ok(tombstones)) if tombstones.is_empty() => ErrorCode::None,
        Some(Ok(tombstones)) => match shard.groups.write(&log, group_id, tombstones).await {
            Ok(()) => ErrorCode::None,
            Err(error) => error,
        },
    }
}

pub async fn handle(shard: Rc<Shard>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let error = delete(&shard, &group_id).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(error.code()),
        );
    }
    shard.groups.tick(std::time::Instant::now());
    DeleteGroupsResponse::default().with_results(results)
}
