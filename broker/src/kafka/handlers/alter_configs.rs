//! AlterConfigs (key 33) and IncrementalAlterConfigs (key 44): topic and broker configs changed
//! while the broker runs. The controller checks each resource's change as CreateTopics checks
//! configs, persists the result with the cluster metadata and publishes it; every shard then
//! gives its live logs the new settings before the answer goes out. `validate_only` checks
//! without changing anything.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::str_bytes;
use crate::controller::configs::{
    ConfigAlteration, ConfigChange, ConfigOp, ConfigOutcome, ConfigResource, RESOURCE_BROKER,
    RESOURCE_BROKER_LOGGER, RESOURCE_TOPIC,
};
use crate::controller::{ControllerReply, ControllerRequest};
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

pub async fn alter(shard: Rc<Shard>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let resources = request
        .resources
        .iter()
        .map(|resource| {
            let entries = resource
                .configs
                .iter()
                .map(|config| {
                    (
                        config.name.to_string(),
                        config.value.as_ref().map(|value| value.to_string()),
                    )
                })
                .collect();
            (
                resource.resource_type,
                resource.resource_name.to_string(),
                ConfigChange::Replace(entries),
            )
        })
        .collect();
    let outcomes = run(&shard, resources, request.validate_only).await;
    AlterConfigsResponse::default().with_responses(
        outcomes
            .into_iter()
            .map(|(resource_type, name, outcome)| {
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(str_bytes(&name))
                    .with_error_code(outcome.error.code())
                    .with_error_message(outcome.message.as_deref().map(str_bytes))
            })
            .collect(),
    )
}

pub async fn incremental(
    shard: Rc<Shard>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources = request
        .resources
        .iter()
        .map(|resource| {
            let ops = resource
                .configs
                .iter()
                .map(|config| ConfigOp {
                    name: config.name.to_string(),
                    operation: config.config_operation,
                    value: config.value.as_ref().map(|value| value.to_string()),
                })
                .collect();
            (
                resource.resource_type,
                resource.resource_name.to_string(),
                ConfigChange::Incremental(ops),
            )
        })
        .collect();
    let outcomes = run(&shard, resources, request.validate_only).await;
    IncrementalAlterConfigsResponse::default().with_responses(
        outcomes
            .into_iter()
            .map(|(resource_type, name, outcome)| {
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(str_bytes(&name))
                    .with_error_code(outcome.error.code())
                    .with_error_message(outcome.message.as_deref().map(str_bytes))
            })
            .collect(),
    )
}

/// Refuses what no controller needs to see (a resource named twice, a type other than topic
/// or broker), sends the rest to the controller, and answers every resource in request order.
async fn run(
    shard: &Rc<Shard>,
    resources: Vec<(i8, String, ConfigChange)>,
    validate_only: bool,
) -> Vec<(i8, String, ConfigOutcome)> {
    let mut outcomes: Vec<Option<ConfigOutcome>> = Vec::with_capacity(resources.len());
    let mut forwarded = Vec::new();
    let mut appearances: HashMap<(i8, &str), usize> = HashMap::with_capacity(resources.len());
    for (resource_type, name, _) in &resources {
        *appearances.entry((*resource_type, name)).or_default() += 1;
    }
    for (index, (resource_type, name, change)) in resources.iter().enumerate() {
        let repeated = appearances[&(*resource_type, name.as_str())] > 1;
        let resource = match *resource_type {
            _ if repeated => Err(ConfigOutcome::failed(
                ErrorCode::InvalidRequest,
                "Each resource must appear at most once.",
            )),
            RESOURCE_TOPIC => Ok(ConfigResource::Topic(name.clone())),
            RESOURCE_BROKER => Ok(ConfigResource::Broker(name.clone())),
            RESOURCE_BROKER_LOGGER => Err(ConfigOutcome::failed(
                ErrorCode::InvalidRequest,
                "log levels cannot be changed while the broker runs; set RUST_LOG at start",
            )),
            other => Err(ConfigOutcome::failed(
                ErrorCode::InvalidRequest,
                format!("Unknown resource type {other}"),
            )),
        };
        match resource {
            Ok(resource) => {
                outcomes.push(None);
                forwarded.push((
                    index,
                    ConfigAlteration {
                        resource,
                        change: change.clone(),
                    },
                ));
            }
            Err(outcome) => outcomes.push(Some(outcome)),
        }
    }
    if !forwarded.is_empty() {
        let (indices, alterations): (Vec<usize>, Vec<ConfigAlteration>) =
            forwarded.into_iter().unzip();
        let replies = match shard
            .controller_request(ControllerRequest::AlterConfigs {
                alterations,
                validate_only,
            })
            .await
        {
            ControllerReply::Configs(replies) => replies,
            ControllerReply::Failed(reason) => {
                vec![ConfigOutcome::failed(ErrorCode::UnknownServerError, reason); indices.len()]
            }
            ControllerReply::Topics(_)
            | ControllerReply::ProducerIds { .. }
            | ControllerReply::Quorum(_) => Vec::new(),
        };
        for (index, reply) in indices
            .into_iter()
            .zip(
                replies
                    .into_iter()
                    .chain(std::iter::repeat(ConfigOutcome::failed(
                        ErrorCode::UnknownServerError,
                        "the controller gave no answer for this resource",
                    ))),
            )
        {
            outcomes[index] = Some(reply);
        }
    }
    resources
        .into_iter()
        .zip(outcomes)
        .map(|((resource_type, name, _), outcome)| {
            (
                resource_type,
                name,
                outcome.unwrap_or_else(|| {
                    ConfigOutcome::failed(ErrorCode::UnknownServerError, "no answer")
                }),
            )
        })
        .collect()
}
