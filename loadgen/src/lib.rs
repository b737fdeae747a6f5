//! loadgen: a load generator for any Kafka-compatible broker (this one, Kafka, Redpanda).
//!
//! It speaks the Kafka protocol itself (`kafka-protocol`), so the client is the same whatever
//! the broker. Two modes:
//! - **open loop** (`--rate N`): every record has an intended send time on a fixed schedule and
//!   its latency is measured from that time, so a broker that stalls shows up in the tail
//!   instead of slowing the generator down (no coordinated omission). How late records actually
//!   left (send lag) is reported separately.
//! - **closed loop** (`--rate max`): records are sent as fast as acknowledgements allow; its
//!   tail understates what users see, and the report says so.
//!
//! Latencies go into HdrHistograms (microseconds) kept per worker and merged, never averaged.

pub mod batch;
pub mod client;
pub mod consume;
pub mod produce;
pub mod report;

use std::collections::BTreeMap;
use std::time::Duration;

use client::{ClientError, Connection};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// Wall-clock nanoseconds since the epoch: the send stamp producers write into each record and
/// consumers compare against (both run on this host, on this clock).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as i64)
}

/// Kafka's TOPIC_ALREADY_EXISTS.
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// How long a request may wait for its response before the broker counts as gone.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where each partition of a topic is led: partition index -> leader address.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub leaders: BTreeMap<i32, String>,
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Looks the topic up; creates it with `partitions` partitions and `configs` when it is missing.
pub fn prepare_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(String, String)],
) -> Result<TopicLayout, ClientError> {
    let mut connection = Connection::connect(bootstrap, REQUEST_TIMEOUT)?;
    let current = fetch_metadata(&mut connection, topic)?;
    let known = current
        .topics
        .first()
        .is_some_and(|entry| entry.error_code == 0 && !entry.partitions.is_empty());
    if !known {
        let controller = current
            .brokers
            .iter()
            .find(|broker| broker.node_id == current.controller_id)
            .map(|broker| format!("{}:{}", broker.host, broker.port))
            .unwrap_or_else(|| bootstrap.to_string());
        let mut controller = Connection::connect(&controller, REQUEST_TIMEOUT)?;
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(
                    configs
                        .iter()
                        .map(|(name, value)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(name.clone()))
                                .with_value(Some(StrBytes::from_string(value.clone())))
                        })
                        .collect(),
                )]);
        let response: CreateTopicsResponse = controller.call(ApiKey::CreateTopics, 4, &request)?;
        let code = response
            .topics
            .first()
            .map_or(-1, |result| result.error_code);
        if code != 0 && code != TOPIC_ALREADY_EXISTS {
            return Err(ClientError::Protocol {
                address: controller.address.clone(),
                reason: format!("creating topic {topic}: error code {code}"),
            });
        }
    }
    // Metadata may lag the creation briefly on multi-broker clusters.
    for _ in 0..50 {
        let metadata = fetch_metadata(&mut connection, topic)?;
        let brokers: BTreeMap<i32, String> = metadata
            .brokers
            .iter()
            .map(|broker| (broker.node_id.0, format!("{}:{}", broker.host, broker.port)))
            .collect();
        if let Some(entry) = metadata
            .topics
            .first()
            .filter(|entry| entry.error_code == 0)
        {
            let leaders: BTreeMap<i32, String> = entry
                .partitions
                .iter()
                .filter_map(|partition| {
                    Some((
                        partition.partition_index,
                        brokers.get(&partition.leader_id.0)?.clone(),
                    ))
                })
                .collect();
            if !leaders.is_empty() && leaders.len() == entry.partitions.len() {
                return Ok(TopicLayout { leaders });
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(ClientError::Protocol {
        address: bootstrap.to_string(),
        reason: format!("topic {topic} has no leaders after creation"),
    })
}

fn fetch_metadata(
    connection: &mut Connection,
    topic: &str,
) -> Result<MetadataResponse, ClientError> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
        ]))
        .with_allow_auto_topic_creation(false);
    connection.call(ApiKey::Metadata, 4, &request)
}

/// The topic's flush settings as the broker reports them (DescribeConfigs), and what they mean
/// for this broker: durable unless flush.messages or flush.ms is set. On Kafka and Redpanda the
/// same settings mean something else, so the raw values are reported too.
pub fn durability_facts(bootstrap: &str, topic: &str) -> serde_json::Value {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
    const RESOURCE_TOPIC: i8 = 2;
    const NEVER: &str = "9223372036854775807";
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(Some(vec![
                StrBytes::from_static_str("flush.messages"),
                StrBytes::from_static_str("flush.ms"),
            ]))]);
    let response: Result<DescribeConfigsResponse, ClientError> =
        Connection::connect(bootstrap, REQUEST_TIMEOUT)
            .and_then(|mut connection| connection.call(ApiKey::DescribeConfigs, 1, &request));
    let Ok(response) = response else {
        return serde_json::json!({ "mode": "unknown (DescribeConfigs failed)" });
    };
    let value = |name: &str| {
        response
            .results
            .iter()
            .flat_map(|result| result.configs.iter())
            .find(|config| config.name.as_str() == name)
            .and_then(|config| config.value.as_ref().map(|value| value.to_string()))
    };
    let messages = value("flush.messages");
    let ms = value("flush.ms");
    let durable =
        messages.as_deref().is_none_or(|v| v == NEVER) && ms.as_deref().is_none_or(|v| v == NEVER);
    serde_json::json!({
        "mode": if durable { "durable (this broker: every acknowledgement waits for fdatasync)" } else { "relaxed (acknowledged before the flush)" },
        "flush.messages": messages,
        "flush.ms": ms,
    })
}
