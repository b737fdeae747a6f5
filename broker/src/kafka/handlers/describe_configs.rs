//! DescribeConfigs (key 32): topic configs (effective values and whether overridden) and the
//! broker's properties.

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{str_bytes, topic_config_source};
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_STATIC_BROKER: i8 = 4;

/// One config entry as reported: name, value, Kafka's ConfigSource and ConfigType.
struct Entry {
    name: String,
    value: String,
    source: i8,
    config_type: i8,
}

pub fn handle(
    shard: Rc<Shard>,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let entries: Result<Vec<Entry>, (ErrorCode, String)> = match resource.resource_type {
                RESOURCE_TOPIC => match shard.metadata().topics.get(&name) {
                    Some(topic) => Ok(shard
                        .node
                        .config
                        .topic_configs(&topic.configs)
                        .into_iter()
                        .map(|config| {
                            let source = topic_config_source(config.is_override);
                            Entry {
                                name: config.name,
                                value: config.value,
                                source,
                                config_type: config.config_type,
                            }
                        })
                        .collect()),
                    None => Err((
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    )),
                },
                RESOURCE_BROKER => {
                    let node = &shard.node;
                    let ours = (0..node.shard_count).any(|index| {
                        node.broker_id(shards::ShardId(index as u16)).to_string() == name
                    });
                    if ours || name.is_empty() {
                        Ok(node
                            .config
                            .properties()
                            .iter()
                            .map(|(key, value)| Entry {
                                name: key.clone(),
                                value: value.clone(),
                                source: SOURCE_STATIC_BROKER,
                                config_type: 2,
                            })
                            .collect())
                    } else {
                        Err((
                            ErrorCode::InvalidRequest,
                            format!("broker {name} is not this node"),
                        ))
                    }
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
                            resource.configuration_keys.as_ref().is_none_or(|keys| {
                                keys.iter().any(|wanted| wanted.as_str() == entry.name)
                            })
                        })
                        .map(|entry| {
                            let result = DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(&entry.name))
                                .with_value(Some(str_bytes(&entry.value)))
                                .with_config_source(entry.source);
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
