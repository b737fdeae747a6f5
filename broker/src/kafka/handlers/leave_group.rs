//! LeaveGroup: members leave at once instead of waiting out their session (v3+: several
//! members, static ones by instance id, with an error each).

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{group_coordinator, str_bytes};
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

pub fn handle(shard: Rc<Shard>, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group_id = request.group_id.to_string();
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|member| {
                (
                    member.member_id.to_string(),
                    member.group_instance_id.as_ref().map(|id| id.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    if let Err(error) = group_coordinator(&shard, &group_id) {
        return LeaveGroupResponse::default().with_error_code(error.code());
    }
    let settings = shard.groups.settings;
    let Some(errors) = shard.groups.with_group(&group_id, false, |group| {
        group.leave(&leaving, &settings, Instant::now())
    }) else {
        return LeaveGroupResponse::default().with_error_code(ErrorCode::UnknownMemberId.code());
    };
    if version < 3 {
        let error = errors.first().copied().unwrap_or(ErrorCode::None);
        return LeaveGroupResponse::default().with_error_code(error.code());
    }
    let members = leaving
        .into_iter()
        .zip(errors)
        .map(|((member_id, instance_id), error)| {
            MemberResponse::default()
                .with_member_id(str_bytes(&member_id))
                .with_group_instance_id(instance_id.map(|id| str_bytes(&id)))
                .with_error_code(error.code())
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
