//! DescribeConfigs (key 32): a topic's configs (effective values, where each comes from, and
//! with `include_synonyms` every value in the chain behind it), a broker's properties (with
//! whether AlterConfigs may change them), and the dynamic cluster-wide defaults (the broker
//! resource named ""), as Kafka's `ConfigHelper` reports them.
//!
//! A resource named twice is answered in full once; its repetitions get INVALID_REQUEST (Kafka
//! answers each in full): a broker resource costs a few bytes to ask for and kilobytes to
//! answer, so repetitions would let a small request build an answer of gigabytes.

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::str_bytes;
use crate::config::ConfigEntry;
use crate::controller::configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use crate::controller::validate_topic_name;
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

pub fn handle(
    shard: Rc<Shard>,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let config = shard.config();
    let mut answered = HashSet::with_capacity(request.resources.len());
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let first = answered.insert((resource.resource_type, resource.resource_name.as_str()));
            let entries: Result<Vec<ConfigEntry>, (ErrorCode, String)> =
                match resource.resource_type {
                    _ if !first => Err((
                        ErrorCode::InvalidRequest,
                        "Each resource must appear at most once.".to_string(),
                    )),
                    RESOURCE_TOPIC => match shard.metadata().topics.get(&name) {
                        _ if validate_topic_name(&name).is_err() => Err((
                            ErrorCode::InvalidTopicException,
                            format!("'{name}' is not a valid topic name"),
                        )),
                        Some(topic) => Ok(config.topic_configs(&topic.configs)),
                        None => Err((
                            ErrorCode::UnknownTopicOrPartition,
                            format!("topic '{name}' does not exist"),
                        )),
                    },
                    RESOURCE_BROKER => {
                        let node = &shard.node;
                        // Each shard is a broker; a resource names one of them, whose dynamic
                        // entries are layered over the node's config.
                        let broker = node.brokers().find_map(|(id, _, _)| {
                            (id.to_string() == name).then(|| {
                                let metadata = shard.metadata();
                                let (cluster_default, own) = metadata.dynamic_broker_configs(id);
                                node.config.with_dynamic(cluster_default, own)
                            })
                        });
                        let entries = match broker {
                            Some(broker) => Some(broker.broker_entries()),
                            None if name.is_empty() => Some(config.dynamic_default_entries()),
                            None => None,
                        };
                        entries.ok_or_else(|| {
                            (
                                ErrorCode::InvalidRequest,
                                format!("broker {name} is not a broker of this node"),
                            )
                        })
                    }
                    other => Err((
                        ErrorCode::InvalidRequest,
                        format!("resource type {other} is not supported"),
                    )),
                };
            match entries {
                Err((code, message)) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(&message))),
                Ok(entries) => result.with_configs(
                    entries
                        .into_iter()
                        .filter(|entry| {
                            // An empty list asks for everything, as a missing one does.
                            resource
                                .configuration_keys
                                .as_ref()
                                .filter(|keys| !keys.is_empty())
                                .is_none_or(|keys| {
                                    keys.iter().any(|wanted| wanted.as_str() == entry.name)
                                })
                        })
                        .map(|entry| {
                            let synonyms = if request.include_synonyms {
                                entry
                                    .synonyms
                                    .iter()
                                    .map(|synonym| {
                                        DescribeConfigsSynonym::default()
                                            .with_name(str_bytes(&synonym.name))
                                            .with_value(Some(str_bytes(&synonym.value)))
                                            .with_source(synonym.source.code())
                                    })
                                    .collect()
                            } else {
                                Vec::new()
                            };
                            let result = DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(&entry.name))
                                .with_value(Some(str_bytes(&entry.value)))
                                .with_read_only(entry.read_only)
                                .with_config_source(entry.source.code())
                                .with_synonyms(synonyms);
                            if version >= 3 {
                                result.with_config_type(entry.config_type)
                            } else {
                                result
                            }
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
