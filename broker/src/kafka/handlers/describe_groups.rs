//! DescribeGroups: state, protocol and members of groups this shard coordinates.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{group_coordinator, str_bytes};
use crate::groups::group::GroupState;
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

/// Kafka's AclOperation bits a group supports (READ 3, DELETE 6, DESCRIBE 8): with no ACLs
/// configured, every client may do all of them.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

pub fn handle(
    shard: Rc<Shard>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    // A group named twice is described once: each description carries every member's
    // metadata and assignment, which a request must not be able to multiply.
    let mut seen = std::collections::HashSet::new();
    let groups = request
        .groups
        .into_iter()
        .filter(|group_id| seen.insert(group_id.clone()))
        .map(|group_id| {
            let mut described = DescribedGroup::default().with_group_id(group_id.clone());
            if version >= 3 && request.include_authorized_operations {
                described = described.with_authorized_operations(GROUP_OPERATIONS);
            }
            let error = group_coordinator(&shard, &group_id).err();
            if let Some(error) = error {
                return described
                    .with_error_code(error.code())
                    .with_group_state(str_bytes("Dead"));
            }
            let found = shard.groups.with_group(&group_id, false, |group| {
                let members = group
                    .member_summaries()
                    .into_iter()
                    .map(|member| {
                        DescribedGroupMember::default()
                            .with_member_id(str_bytes(&member.member_id))
                            .with_group_instance_id(if version >= 4 {
                                member.instance_id.as_deref().map(str_bytes)
                            } else {
                                None
                            })
                            .with_client_id(str_bytes(&member.client_id))
                            .with_client_host(str_bytes(&member.client_host))
                            .with_member_metadata(member.metadata)
                            .with_member_assignment(member.assignment)
                    })
                    .collect();
                let protocol = if group.state() == GroupState::Stable {
                    group.protocol().unwrap_or("")
                } else {
                    ""
                };
                (
                    str_bytes(group.state().name()),
                    str_bytes(group.protocol_type()),
                    str_bytes(protocol),
                    members,
                )
            });
            match found {
                Some((state, protocol_type, protocol, members)) => described
                    .with_group_state(state)
                    .with_protocol_type(protocol_type)
                    .with_protocol_data(protocol)
                    .with_members(members),
                // Kafka reports an unknown group as Dead; v6 adds an error code for it.
                None if version >= 6 => described
                    .with_error_code(ErrorCode::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes("group not found")))
                    .with_group_state(str_bytes("Dead")),
                None => described.with_group_state(str_bytes("Dead")),
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
