//! CreateTopics (key 19): forwarded to the controller; answered once every shard has the topic.

use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{str_bytes, topic_name};
use crate::controller::{ControllerRequest, NewTopic};
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

pub async fn handle(
    shard: Rc<Shard>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let topics: Vec<NewTopic> = request
        .topics
        .iter()
        .map(|topic| NewTopic {
            name: topic.name.0.to_string(),
            num_partitions: topic.num_partitions,
            replication_factor: topic.replication_factor,
            configs: topic
                .configs
                .iter()
                .filter_map(|config| {
                    config
                        .value
                        .as_ref()
                        .map(|value| (config.name.to_string(), value.to_string()))
                })
                .collect(),
            has_assignments: !topic.assignments.is_empty(),
        })
        .collect();
    let outcomes = shard
        .topic_request(ControllerRequest::CreateTopics {
            topics,
            validate_only: request.validate_only,
        })
        .await;
    let results = outcomes
        .into_iter()
        .map(|outcome| {
            let mut result = CreatableTopicResult::default()
                .with_name(topic_name(&outcome.name))
                .with_error_code(outcome.error.code());
            if version >= 1 {
                result = result.with_error_message(outcome.message.as_deref().map(str_bytes));
            }
            if let (Some(topic), true) = (&outcome.topic, outcome.error == ErrorCode::None) {
                if version >= 5 {
                    let configs = shard
                        .config()
                        .topic_configs(&topic.configs)
                        .into_iter()
                        .map(|config| {
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(&config.name))
                                .with_value(Some(str_bytes(&config.value)))
                                .with_config_source(config.source.code())
                        })
                        .collect();
                    result = result
                        .with_num_partitions(topic.partition_count() as i32)
                        .with_replication_factor(1)
                        .with_configs(Some(configs));
                }
                if version >= 7 {
                    result = result.with_topic_id(topic.topic_id);
                }
            }
            result
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}
