//! DescribeCluster (key 60): the cluster id, the controller and every broker (each shard is
//! one), as Metadata lists them. Versions 0-2. Only the broker endpoint type exists here
//! (v1's controller endpoints come with cluster mode), so asking for another is
//! `UNSUPPORTED_ENDPOINT_TYPE`; no broker is ever fenced on one node. With no authorizer,
//! a client that asks for the cluster's authorized operations gets every operation Kafka
//! defines for the cluster resource, as Kafka answers without an authorizer.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use shards::ShardId;

use super::str_bytes;
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

/// Kafka's `EndpointType.BROKER`.
const ENDPOINT_TYPE_BROKER: i8 = 1;

/// Kafka's "not asked for" value of an authorized-operations field.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// The operations Kafka supports on the cluster resource, as its `AclOperation` codes (CREATE 5,
/// ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11,
/// IDEMPOTENT_WRITE 12) in a bit field: what an unsecured Kafka broker reports.
const CLUSTER_OPERATIONS: i32 = 1 << 5 | 1 << 7 | 1 << 8 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 12;

pub fn handle(
    shard: Rc<Shard>,
    request: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let node = &shard.node;
    let response = DescribeClusterResponse::default();
    let response = if version >= 1 {
        response.with_endpoint_type(ENDPOINT_TYPE_BROKER)
    } else {
        response
    };
    if version >= 1 && request.endpoint_type != ENDPOINT_TYPE_BROKER {
        return response
            .with_error_code(ErrorCode::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes(
                "only broker endpoints exist on a single node",
            )));
    }
    let brokers = shard
        .cluster_brokers()
        .into_iter()
        .map(|(id, host, port, rack)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(str_bytes(&host))
                .with_port(i32::from(port))
                .with_rack(rack.as_deref().map(str_bytes))
        })
        .collect();
    response
        .with_cluster_id(str_bytes(&shard.metadata().cluster_id))
        .with_controller_id(BrokerId(node.broker_id(ShardId(0))))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        })
}
