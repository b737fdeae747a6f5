//! DeleteTopics (key 20): by name (v1-5) or by name or id (v6).

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use super::{str_bytes, topic_name};
use crate::controller::ControllerRequest;
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

pub async fn handle(
    shard: Rc<Shard>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let mut names = Vec::new();
    let mut unknown_ids = Vec::new();
    if version >= 6 {
        for topic in &request.topics {
            match (&topic.name, shard.topic_name_by_id(&topic.topic_id)) {
                (Some(name), _) => names.push(name.0.to_string()),
                (None, Some(name)) => names.push(name),
                (None, None) => unknown_ids.push(topic.topic_id),
            }
        }
    } else {
        names.extend(request.topic_names.iter().map(|name| name.0.to_string()));
    }
    let outcomes = if names.is_empty() {
        Vec::new()
    } else {
        shard
            .topic_request(ControllerRequest::DeleteTopics { names })
            .await
    };
    let mut responses: Vec<DeletableTopicResult> = outcomes
        .into_iter()
        .map(|outcome| {
            let mut result = DeletableTopicResult::default()
                .with_name(Some(topic_name(&outcome.name)))
                .with_error_code(outcome.error.code());
            if version >= 5 {
                result = result.with_error_message(outcome.message.as_deref().map(str_bytes));
            }
            if version >= 6 {
                if let Some(topic) = &outcome.topic {
                    result = result.with_topic_id(topic.topic_id);
                }
            }
            result
        })
        .collect();
    responses.extend(unknown_ids.into_iter().map(|topic_id| {
        DeletableTopicResult::default()
            .with_topic_id(topic_id)
            .with_error_code(ErrorCode::UnknownTopicId.code())
    }));
    DeleteTopicsResponse::default().with_responses(responses)
}
