//! FindCoordinator: the shard that coordinates a group (DESIGN section 2). Versions 4+ ask for
//! several keys at once; the first question creates `__consumer_offsets`, as on Kafka.

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

async fn find(shard: &Rc<Shard>, key: StrBytes, key_type: i8) -> Coordinator {
    let failed = |key: StrBytes, error: ErrorCode, message: &str| {
        Coordinator::default()
            .with_key(key)
            .with_node_id(BrokerId(-1))
            .with_host(StrBytes::default())
            .with_port(-1)
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(message)))
    };
    match key_type {
        KEY_TYPE_GROUP => match shard.find_coordinator(&key).await {
            Ok(broker) => match shard.broker_endpoint(broker) {
                Some((host, port)) => Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(broker))
                    .with_host(str_bytes(&host))
                    .with_port(i32::from(port)),
                None => failed(
                    key,
                    ErrorCode::CoordinatorNotAvailable,
                    "the coordinator's node has not registered",
                ),
            },
            Err(reason) => failed(key, ErrorCode::CoordinatorNotAvailable, &reason),
        },
        KEY_TYPE_TRANSACTION => failed(
            key,
            ErrorCode::CoordinatorNotAvailable,
            "transactions are not supported by this broker yet",
        ),
        other => failed(
            key,
            ErrorCode::InvalidRequest,
            &format!("unknown coordinator key type {other}"),
        ),
    }
}

pub async fn handle(
    shard: Rc<Shard>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let key_type = if version >= 1 { request.key_type } else { 0 };
    if version >= 4 {
        let mut coordinators = Vec::with_capacity(request.coordinator_keys.len());
        for key in request.coordinator_keys {
            coordinators.push(find(&shard, key, key_type).await);
        }
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let found = find(&shard, request.key, key_type).await;
    FindCoordinatorResponse::default()
        .with_error_code(found.error_code)
        .with_error_message(if version >= 1 {
            found.error_message
        } else {
            None
        })
        .with_node_id(found.node_id)
        .with_host(found.host)
        .with_port(found.port)
}
