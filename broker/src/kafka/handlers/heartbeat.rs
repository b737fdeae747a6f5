//! Heartbeat: keeps a member's session alive and tells it when the group rebalances.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::group_coordinator;
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

pub fn handle(shard: Rc<Shard>, request: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.to_string();
    let error = group_coordinator(&shard, &group_id)
        .err()
        .unwrap_or_else(|| {
            shard
                .groups
                .with_group(&group_id, false, |group| {
                    group.heartbeat(
                        &request.member_id,
                        request.group_instance_id.as_deref(),
                        request.generation_id,
                        Instant::now(),
                    )
                })
                .unwrap_or(ErrorCode::UnknownMemberId)
        });
    HeartbeatResponse::default().with_error_code(error.code())
}
