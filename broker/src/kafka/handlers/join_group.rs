//! JoinGroup: a member joins (or rejoins) a group and waits for the rebalance to complete.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{group_coordinator, millis, str_bytes};
use crate::groups::group::{Answer, JoinRequest, JoinResult};
use crate::kafka::errors::ErrorCode;
use crate::kafka::RequestContext;
use crate::shard::Shard;

fn response(result: JoinResult, version: i16) -> JoinGroupResponse {
    let text = |value: Option<String>| value.map(|text| str_bytes(&text));
    let members = result
        .members
        .into_iter()
        .map(|member| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&member.member_id))
                .with_group_instance_id(if version >= 5 {
                    text(member.instance_id)
                } else {
                    None
                })
                .with_metadata(member.metadata)
        })
        .collect();
    // Before v7 the protocol name is not nullable: "" stands for none.
    let protocol_name = if version >= 7 {
        text(result.protocol_name)
    } else {
        Some(str_bytes(result.protocol_name.as_deref().unwrap_or("")))
    };
    JoinGroupResponse::default()
        .with_error_code(result.error.code())
        .with_generation_id(result.generation)
        .with_protocol_type(if version >= 7 {
            text(result.protocol_type)
        } else {
            None
        })
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(&result.leader))
        .with_member_id(str_bytes(&result.member_id))
        .with_members(members)
        .with_skip_assignment(version >= 9 && result.skip_assignment)
}

pub async fn handle(
    shard: Rc<Shard>,
    request: JoinGroupRequest,
    version: i16,
    context: RequestContext,
) -> JoinGroupResponse {
    let group_id = request.group_id.to_string();
    let member_id = request.member_id.to_string();
    if let Err(error) = group_coordinator(&shard, &group_id) {
        return response(JoinResult::failed(error, &member_id), version);
    }
    let session_timeout = millis(request.session_timeout_ms);
    let join = JoinRequest {
        member_id: member_id.clone(),
        instance_id: request.group_instance_id.map(|id| id.to_string()),
        client_id: context.client_id,
        client_host: context.client_host.to_string(),
        session_timeout,
        // v0 had no rebalance timeout: the session timeout served as both.
        rebalance_timeout: if version >= 1 {
            millis(request.rebalance_timeout_ms)
        } else {
            session_timeout
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let settings = shard.groups.settings;
    let answer = shard.groups.with_group(&group_id, true, |group| {
        group.join(join, &settings, Instant::now())
    });
    let result = match answer {
        Some(Answer::Now(result)) => result,
        Some(Answer::Later(receiver)) => receiver
            .await
            .unwrap_or_else(|_| JoinResult::failed(ErrorCode::UnknownMemberId, &member_id)),
        None => JoinResult::failed(ErrorCode::CoordinatorNotAvailable, &member_id),
    };
    response(result, version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::group::JoinedMember;
    use crate::kafka::wire::api_versions::supported_range;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::Encodable;

    /// Every version encodes, failures and a leader's full answer alike (the encoder refuses
    /// fields a version does not have).
    #[test]
    fn responses_encode_in_every_version() {
        let leader = JoinResult {
            error: ErrorCode::None,
            generation: 3,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            leader: "m-1".into(),
            member_id: "m-1".into(),
            members: vec![JoinedMember {
                member_id: "m-1".into(),
                instance_id: Some("i-1".into()),
                metadata: bytes::Bytes::from_static(b"meta"),
            }],
            skip_assignment: false,
        };
        for version in supported_range(ApiKey::JoinGroup).unwrap() {
            for result in [
                leader.clone(),
                JoinResult::failed(ErrorCode::MemberIdRequired, "x"),
            ] {
                let mut out = bytes::BytesMut::new();
                response(result, version)
                    .encode(&mut out, version)
                    .unwrap_or_else(|error| panic!("v{version}: {error}"));
            }
        }
    }
}
