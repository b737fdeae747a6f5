//! Metadata (key 3): every shard is a broker; each partition's leader is its owning shard.
//! Unknown topics are auto-created when the broker and the request allow it.
//!
//! A topic named twice is answered once (as Kafka does, which keeps the names in a set): a
//! request repeating a large topic's name must not make the response repeat its partitions. A
//! partition whose log cannot be served is `LEADER_NOT_AVAILABLE` with no leader and its
//! replica listed offline, as Kafka answers for a partition whose leader's log dir failed.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use shards::ShardId;

use super::{str_bytes, topic_name};
use crate::controller::metadata::ClusterMetadata;
use crate::controller::{validate_topic_name, ControllerRequest, NewTopic};
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

/// Kafka's "authorized operations not requested" marker.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// A partition's leader and replicas as Metadata and DescribeTopicPartitions report them: the
/// leader and ISR the controller recorded, unless the leader's node is fenced or its log
/// cannot be served. Replicas on fenced nodes are listed offline.
pub struct PartitionState {
    pub error: ErrorCode,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub offline: Vec<BrokerId>,
}

impl PartitionState {
    pub fn of(
        metadata: &ClusterMetadata,
        topic: &crate::controller::metadata::TopicMetadata,
        index: usize,
    ) -> PartitionState {
        let replicas_of = topic.replicas.get(index).map(Vec::as_slice).unwrap_or(&[]);
        let leadership = topic
            .leadership(index)
            .unwrap_or_else(|| crate::controller::metadata::Leadership::initial(replicas_of));
        let fenced = |broker: i32| {
            metadata
                .fenced
                .contains(&crate::controller::metadata::broker_place(broker).0)
        };
        let replicas: Vec<BrokerId> = replicas_of.iter().copied().map(BrokerId).collect();
        let mut offline: Vec<BrokerId> = replicas_of
            .iter()
            .copied()
            .filter(|broker| fenced(*broker))
            .map(BrokerId)
            .collect();
        let isr: Vec<BrokerId> = leadership.isr.iter().copied().map(BrokerId).collect();
        let leader = leadership.leader;
        if leader < 0 || fenced(leader) || metadata.is_offline(&topic.name, index as i32) {
            if leader >= 0 && !offline.contains(&BrokerId(leader)) {
                offline.push(BrokerId(leader));
            }
            PartitionState {
                error: ErrorCode::LeaderNotAvailable,
                leader: BrokerId(-1),
                leader_epoch: leadership.leader_epoch,
                // A partition of one replica that cannot be served has nothing in sync (as
                // before replication); a replicated one shows who holds what it acknowledged.
                isr: if replicas.len() > 1 { isr } else { Vec::new() },
                offline,
                replicas,
            }
        } else {
            PartitionState {
                error: ErrorCode::None,
                leader: BrokerId(leader),
                leader_epoch: leadership.leader_epoch,
                isr,
                offline,
                replicas,
            }
        }
    }
}

enum Wanted {
    Name(String),
    UnknownId(uuid::Uuid),
}

pub async fn handle(shard: Rc<Shard>, request: MetadataRequest, version: i16) -> MetadataResponse {
    let all_topics = match &request.topics {
        None => true,
        Some(topics) => version == 0 && topics.is_empty(),
    };
    let mut seen = std::collections::HashSet::new();
    let wanted: Vec<Wanted> = if all_topics {
        shard
            .metadata()
            .topics
            .keys()
            .cloned()
            .map(Wanted::Name)
            .collect()
    } else {
        request
            .topics
            .iter()
            .flatten()
            .map(|topic| match &topic.name {
                Some(name) => Wanted::Name(name.0.to_string()),
                None => shard
                    .topic_name_by_id(&topic.topic_id)
                    .map(Wanted::Name)
                    .unwrap_or(Wanted::UnknownId(topic.topic_id)),
            })
            .filter(|wanted| match wanted {
                Wanted::Name(name) => seen.insert(name.clone()),
                Wanted::UnknownId(_) => true,
            })
            .collect()
    };

    // Versions before 4 always allow auto-creation; later ones say so per request.
    let allow_create = shard.node.config.auto_create_topics()
        && (version < 4 || request.allow_auto_topic_creation);
    // Why auto-creation failed, by topic: the answer for that topic (a partition limit, a
    // full disk) instead of a plain unknown topic.
    let mut creation_errors = std::collections::HashMap::new();
    if allow_create {
        let missing: Vec<NewTopic> = wanted
            .iter()
            .filter_map(|wanted| match wanted {
                Wanted::Name(name)
                    if !shard.metadata().topics.contains_key(name)
                        && validate_topic_name(name).is_ok() =>
                {
                    Some(NewTopic {
                        name: name.clone(),
                        num_partitions: -1,
                        replication_factor: -1,
                        configs: Default::default(),
                        has_assignments: false,
                    })
                }
                _ => None,
            })
            .collect();
        if !missing.is_empty() {
            let outcomes = shard
                .topic_request(ControllerRequest::CreateTopics {
                    topics: missing,
                    validate_only: false,
                })
                .await;
            for outcome in outcomes {
                if outcome.error != ErrorCode::None
                    && outcome.error != ErrorCode::TopicAlreadyExists
                {
                    creation_errors.insert(outcome.name, outcome.error);
                }
            }
        }
    }

    let node = &shard.node;
    let brokers = shard
        .cluster_brokers()
        .into_iter()
        .map(|(id, host, port, rack)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(str_bytes(&host))
                .with_port(i32::from(port))
                .with_rack(rack.as_deref().map(str_bytes))
        })
        .collect();
    let metadata = shard.metadata();
    let topics = wanted
        .iter()
        .map(|wanted| {
            let name = match wanted {
                Wanted::Name(name) => name,
                Wanted::UnknownId(topic_id) => {
                    return MetadataResponseTopic::default()
                        .with_error_code(ErrorCode::UnknownTopicId.code())
                        .with_topic_id(*topic_id)
                        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
                }
            };
            let response = MetadataResponseTopic::default()
                .with_name(Some(topic_name(name)))
                .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
            let Some(topic) = metadata.topics.get(name) else {
                let error = if validate_topic_name(name).is_err() {
                    ErrorCode::InvalidTopicException
                } else {
                    creation_errors
                        .get(name)
                        .copied()
                        .unwrap_or(ErrorCode::UnknownTopicOrPartition)
                };
                return response.with_error_code(error.code());
            };
            let partitions = (0..topic.partition_count())
                .map(|index| {
                    let state = PartitionState::of(&metadata, topic, index);
                    MetadataResponsePartition::default()
                        .with_partition_index(index as i32)
                        .with_leader_epoch(state.leader_epoch)
                        .with_error_code(state.error.code())
                        .with_leader_id(state.leader)
                        .with_replica_nodes(state.replicas)
                        .with_isr_nodes(state.isr)
                        .with_offline_replicas(state.offline)
                })
                .collect();
            let response = response
                .with_partitions(partitions)
                .with_is_internal(version >= 1 && name == crate::groups::OFFSETS_TOPIC);
            if version >= 10 {
                response.with_topic_id(topic.topic_id)
            } else {
                response
            }
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&metadata.cluster_id)))
        .with_controller_id(BrokerId(node.broker_id(ShardId(0))))
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
