//! SyncGroup: the leader hands out the assignment; every member waits for its share.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{group_coordinator, str_bytes};
use crate::groups::group::{Answer, SyncRequest, SyncResult};
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

fn response(result: SyncResult, version: i16) -> SyncGroupResponse {
    let text = |value: Option<String>| value.map(|text| str_bytes(&text));
    let (protocol_type, protocol_name) = if version >= 5 {
        (text(result.protocol_type), text(result.protocol_name))
    } else {
        (None, None)
    };
    SyncGroupResponse::default()
        .with_error_code(result.error.code())
        .with_protocol_type(protocol_type)
        .with_protocol_name(protocol_name)
        .with_assignment(result.assignment)
}

pub async fn handle(
    shard: Rc<Shard>,
    request: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let group_id = request.group_id.to_string();
    if let Err(error) = group_coordinator(&shard, &group_id) {
        return response(SyncResult::failed(error), version);
    }
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|id| id.to_string()),
        generation: request.generation_id,
        protocol_type: request.protocol_type.map(|kind| kind.to_string()),
        protocol_name: request.protocol_name.map(|name| name.to_string()),
        assignments: request
            .assignments
            .into_iter()
            .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
            .collect(),
    };
    let answer = shard
        .groups
        .with_group(&group_id, false, |group| group.sync(sync, Instant::now()));
    let result = match answer {
        Some(Answer::Now(result)) => result,
        Some(Answer::Later(receiver)) => receiver
            .await
            .unwrap_or_else(|_| SyncResult::failed(ErrorCode::UnknownMemberId)),
        None => SyncResult::failed(ErrorCode::UnknownMemberId),
    };
    response(result, version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::wire::api_versions::supported_range;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn responses_encode_in_every_version() {
        let done = SyncResult {
            error: ErrorCode::None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignment: bytes::Bytes::from_static(b"assignment"),
        };
        for version in supported_range(ApiKey::SyncGroup).unwrap() {
            for result in [
                done.clone(),
                SyncResult::failed(ErrorCode::RebalanceInProgress),
            ] {
                let mut out = bytes::BytesMut::new();
                response(result, version)
                    .encode(&mut out, version)
                    .unwrap_or_else(|error| panic!("v{version}: {error}"));
            }
        }
    }
}
