//! ListGroups: the groups this shard coordinates. Each shard is its own broker to clients, and
//! admin tools ask every broker, as with Kafka.

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::shard::Shard;

/// The group type of every group here: the classic protocol (KIP-848's "consumer" type is
/// not offered yet).
const GROUP_TYPE: &str = "classic";

pub fn handle(shard: Rc<Shard>, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let wanted = |filter: &[kafka_protocol::protocol::StrBytes], value: &str| {
        filter.is_empty() || filter.iter().any(|entry| entry.eq_ignore_ascii_case(value))
    };
    let groups = shard
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, state)| version < 4 || wanted(&request.states_filter, state))
        .filter(|_| version < 5 || wanted(&request.types_filter, GROUP_TYPE))
        .map(|(id, protocol_type, state)| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&protocol_type));
            if version >= 4 {
                listed = listed.with_group_state(str_bytes(state));
            }
            if version >= 5 {
                listed = listed.with_group_type(str_bytes(GROUP_TYPE));
            }
            listed
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
