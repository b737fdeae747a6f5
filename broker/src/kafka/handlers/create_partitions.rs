//! CreatePartitions (key 37): forwarded to the controller, which places the new partitions on
//! the least-loaded shards; answered once every shard has opened the ones it owns, so a client
//! told "done" finds them in the next Metadata answer. Consumer groups pick them up when their
//! leader sees the new partition count and rejoins, as with Kafka. A topic named twice gets
//! INVALID_REQUEST ("Duplicate topic name.") for each mention; Kafka's ControllerApis answers
//! it once per name.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{str_bytes, topic_name};
use crate::controller::{ControllerRequest, NewPartitions};
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

pub async fn handle(
    shard: Rc<Shard>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut mentions: HashMap<&str, usize> = HashMap::with_capacity(request.topics.len());
    for topic in &request.topics {
        *mentions.entry(topic.name.0.as_str()).or_default() += 1;
    }
    let mut results = Vec::with_capacity(request.topics.len());
    let mut forwarded = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.as_str();
        if mentions[name] > 1 {
            results.push(
                CreatePartitionsTopicResult::default()
                    .with_name(topic.name.clone())
                    .with_error_code(ErrorCode::InvalidRequest.code())
                    .with_error_message(Some(str_bytes("Duplicate topic name."))),
            );
        } else {
            forwarded.push(NewPartitions {
                name: name.to_string(),
                count: topic.count,
                has_assignments: topic.assignments.is_some(),
            });
        }
    }
    if !forwarded.is_empty() {
        let outcomes = shard
            .topic_request(ControllerRequest::CreatePartitions {
                topics: forwarded,
                validate_only: request.validate_only,
            })
            .await;
        results.extend(outcomes.into_iter().map(|outcome| {
            CreatePartitionsTopicResult::default()
                .with_name(topic_name(&outcome.name))
                .with_error_code(outcome.error.code())
                .with_error_message(outcome.message.as_deref().map(str_bytes))
        }));
    }
    CreatePartitionsResponse::default().with_results(results)
}
