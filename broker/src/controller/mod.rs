//! The controller: the single writer of cluster metadata, on shard 0.
//!
//! Mutations (CreateTopics, DeleteTopics, auto-creation) arrive from any shard, are applied one at
//! a time, persisted, and pushed to every shard; the requester gets its answer only after every
//! shard has applied the change, so a client that is told "created" finds the topic on whichever
//! shard it asks next.

pub mod metadata;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use event_listener::Event;
use tracing::info;

use crate::config::check_topic_config;
use crate::groups::OFFSETS_TOPIC;
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;
use metadata::{MetadataChange, TopicMetadata};

/// Partitions one topic may have; Kafka has no hard cap, but each partition costs a directory,
/// open files and memory on its shard, so an absurd request is refused up front.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// The most producer ids one allocation hands out.
pub const PRODUCER_ID_BLOCK_MAX: i64 = 1_000_000;

/// Kafka's limit on topic name length (a partition directory name must fit 255 bytes).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1 for the broker default (`num.partitions`).
    pub num_partitions: i32,
    /// -1 for the broker default; anything above 1 is refused on a single node.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// Manual replica assignments are not supported: placement is the controller's job.
    pub has_assignments: bool,
}

#[derive(Debug, Clone)]
pub enum ControllerRequest {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    /// Creates `__consumer_offsets` (if it does not exist yet) with the broker's
    /// `offsets.topic.*` settings.
    CreateOffsetsTopic,
    /// A block of producer ids for a shard to hand out (InitProducerId) without asking again.
    AllocateProducerIds {
        count: i64,
    },
}

#[derive(Debug, Clone)]
pub enum ControllerReply {
    Topics(Vec<TopicOutcome>),
    /// Producer ids `first..first + count`, recorded durably as used before this reply.
    ProducerIds {
        first: i64,
        count: i64,
    },
    Failed(String),
}

/// The outcome for one topic of a request.
#[derive(Debug, Clone)]
pub struct TopicOutcome {
    pub name: String,
    pub error: ErrorCode,
    pub message: Option<String>,
    pub topic: Option<TopicMetadata>,
}

impl TopicOutcome {
    fn failed(name: &str, error: ErrorCode, message: impl Into<String>) -> TopicOutcome {
        TopicOutcome {
            name: name.to_string(),
            error,
            message: Some(message.into()),
            topic: None,
        }
    }
}

/// Checks a topic name as Kafka does: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "topic name is longer than {TOPIC_NAME_BYTES_MAX} characters"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name contains {bad:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// Shard 0's controller state.
pub struct Controller {
    /// One mutation at a time.
    lock: async_lock::Mutex<()>,
    /// Acknowledgements received per metadata version.
    acks: RefCell<HashMap<u64, usize>>,
    acked: Event,
}

impl Controller {
    pub fn new() -> Controller {
        Controller {
            lock: async_lock::Mutex::new(()),
            acks: RefCell::new(HashMap::new()),
            acked: Event::new(),
        }
    }

    /// A shard reports it applied `version`.
    pub fn note_applied(&self, version: u64) {
        *self.acks.borrow_mut().entry(version).or_default() += 1;
        self.acked.notify(usize::MAX);
    }

    /// Persists `change`, applies it on every shard and waits until all have.
    pub async fn publish(&self, shard: &Rc<Shard>, change: MetadataChange) -> Result<(), String> {
        let mut next = shard.metadata().clone();
        next.apply(&change);
        let version = next.version;
        next.store(&shard.node.data_dir)
            .map_err(|error| error.to_string())?;
        shard.apply(&change).await;
        let others = shard.node.shard_count - 1;
        for peer in 1..shard.node.shard_count {
            shard
                .send_to(
                    shards::ShardId(peer as u16),
                    crate::shard::ShardMessage::Apply {
                        change: change.clone(),
                    },
                )
                .await?;
        }
        loop {
            let listener = self.acked.listen();
            if self.acks.borrow().get(&version).copied().unwrap_or(0) >= others {
                self.acks.borrow_mut().remove(&version);
                return Ok(());
            }
            listener.await;
        }
    }

    pub async fn handle(&self, shard: &Rc<Shard>, request: ControllerRequest) -> ControllerReply {
        let _one_at_a_time = self.lock.lock().await;
        match request {
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => ControllerReply::Topics(self.create_topics(shard, topics, validate_only).await),
            ControllerRequest::DeleteTopics { names } => {
                ControllerReply::Topics(self.delete_topics(shard, names).await)
            }
            ControllerRequest::AllocateProducerIds { count } => {
                self.allocate_producer_ids(shard, count)
            }
            ControllerRequest::CreateOffsetsTopic => {
                ControllerReply::Topics(self.create_offsets_topic(shard).await)
            }
        }
    }

    /// Producer ids are unique for the life of the cluster: the next free id is persisted before
    /// a block is handed out, so a restart never reissues one.
    fn allocate_producer_ids(&self, shard: &Rc<Shard>, count: i64) -> ControllerReply {
        let mut next = shard.metadata().clone();
        let first = next.next_producer_id;
        let Some(end) = first.checked_add(count.clamp(1, PRODUCER_ID_BLOCK_MAX)) else {
            return ControllerReply::Failed("producer ids are exhausted".into());
        };
        next.next_producer_id = end;
        if let Err(error) = next.store(&shard.node.data_dir) {
            return ControllerReply::Failed(error.to_string());
        }
        shard.set_next_producer_id(end);
        ControllerReply::ProducerIds {
            first,
            count: end - first,
        }
    }

    /// The offsets topic: compacted (Kafka's setting; compaction itself is not implemented yet),
    /// durable like every topic, placed across shards like any other.
    async fn create_offsets_topic(&self, shard: &Rc<Shard>) -> Vec<TopicOutcome> {
        if shard.metadata().topics.contains_key(OFFSETS_TOPIC) {
            return Vec::new();
        }
        let settings = shard.node.config.group_settings();
        let placement = shard.metadata().place(
            settings.offsets_partitions as usize,
            shard.node.shard_count,
            &mut vec![0; shard.node.shard_count],
        );
        let topic = TopicMetadata {
            name: OFFSETS_TOPIC.to_string(),
            topic_id: uuid::Uuid::new_v4(),
            partitions: placement,
            configs: BTreeMap::from([
                ("cleanup.policy".to_string(), "compact".to_string()),
                (
                    "segment.bytes".to_string(),
                    settings.offsets_segment_bytes.to_string(),
                ),
            ]),
        };
        info!(
            partitions = topic.partitions.len(),
            "creating {OFFSETS_TOPIC}"
        );
        match self
            .publish(shard, MetadataChange::TopicsCreated(vec![topic.clone()]))
            .await
        {
            Ok(()) => vec![TopicOutcome {
                name: OFFSETS_TOPIC.to_string(),
                error: ErrorCode::None,
                message: None,
                topic: Some(topic),
            }],
            Err(reason) => vec![TopicOutcome::failed(
                OFFSETS_TOPIC,
                ErrorCode::KafkaStorageError,
                reason,
            )],
        }
    }

    async fn create_topics(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let shard_count = shard.node.shard_count;
        let mut outcomes = Vec::with_capacity(topics.len());
        let mut created = Vec::new();
        let mut extra = vec![0usize; shard_count];
        {
            let metadata = shard.metadata();
            for topic in &topics {
                match self.check_new_topic(shard, &metadata, topic, &created) {
                    Err((error, message)) => {
                        outcomes.push(TopicOutcome::failed(&topic.name, error, message))
                    }
                    Ok(partitions) => {
                        let placement =
                            metadata.place(partitions as usize, shard_count, &mut extra);
                        let created_topic = TopicMetadata {
                            name: topic.name.clone(),
                            topic_id: uuid::Uuid::new_v4(),
                            partitions: placement,
                            configs: topic.configs.clone(),
                        };
                        outcomes.push(TopicOutcome {
                            name: topic.name.clone(),
                            error: ErrorCode::None,
                            message: None,
                            topic: Some(created_topic.clone()),
                        });
                        created.push(created_topic);
                    }
                }
            }
        }
        if validate_only || created.is_empty() {
            return outcomes;
        }
        let names: Vec<String> = created.iter().map(|topic| topic.name.clone()).collect();
        if let Err(reason) = self
            .publish(shard, MetadataChange::TopicsCreated(created))
            .await
        {
            for outcome in outcomes.iter_mut().filter(|o| o.error == ErrorCode::None) {
                *outcome =
                    TopicOutcome::failed(&outcome.name, ErrorCode::KafkaStorageError, &reason);
            }
            return outcomes;
        }
        info!(topics = ?names, "topics created");
        outcomes
    }

    fn check_new_topic(
        &self,
        shard: &Shard,
        metadata: &metadata::ClusterMetadata,
        topic: &NewTopic,
        created: &[TopicMetadata],
    ) -> Result<i32, (ErrorCode, String)> {
        let name = &topic.name;
        validate_topic_name(name).map_err(|reason| (ErrorCode::InvalidTopicException, reason))?;
        if name == OFFSETS_TOPIC && !metadata.topics.contains_key(name) {
            return Err((
                ErrorCode::InvalidTopicException,
                format!("{OFFSETS_TOPIC} is internal; the broker creates it for consumer groups"),
            ));
        }
        if metadata.topics.contains_key(name) || created.iter().any(|t| &t.name == name) {
            return Err((
                ErrorCode::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        if topic.has_assignments {
            return Err((
                ErrorCode::InvalidReplicaAssignment,
                "manual replica assignment is not supported; partitions are placed by the broker"
                    .into(),
            ));
        }
        let partitions = if topic.num_partitions == -1 {
            shard.node.config.num_partitions()
        } else {
            topic.num_partitions
        };
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err((
                ErrorCode::InvalidPartitions,
                format!("number of partitions must be between 1 and {PARTITIONS_PER_TOPIC_MAX}"),
            ));
        }
        if topic.replication_factor != -1 && topic.replication_factor != 1 {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {} is larger than the 1 available broker node",
                    topic.replication_factor
                ),
            ));
        }
        for (config, value) in &topic.configs {
            check_topic_config(config, value)
                .map_err(|error| (ErrorCode::InvalidConfig, error.to_string()))?;
        }
        Ok(partitions)
    }

    async fn delete_topics(&self, shard: &Rc<Shard>, names: Vec<String>) -> Vec<TopicOutcome> {
        let mut outcomes = Vec::with_capacity(names.len());
        let mut deleted = Vec::new();
        {
            let metadata = shard.metadata();
            for name in &names {
                if name == OFFSETS_TOPIC {
                    outcomes.push(TopicOutcome::failed(
                        name,
                        ErrorCode::InvalidTopicException,
                        format!("{OFFSETS_TOPIC} is internal and cannot be deleted"),
                    ));
                    continue;
                }
                match metadata.topics.get(name) {
                    Some(topic) if !deleted.contains(name) => {
                        deleted.push(name.clone());
                        outcomes.push(TopicOutcome {
                            name: name.clone(),
                            error: ErrorCode::None,
                            message: None,
                            topic: Some(topic.clone()),
                        });
                    }
                    _ => outcomes.push(TopicOutcome::failed(
                        name,
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    )),
                }
            }
        }
        if deleted.is_empty() {
            return outcomes;
        }
        if let Err(reason) = self
            .publish(shard, MetadataChange::TopicsDeleted(deleted.clone()))
            .await
        {
            for outcome in outcomes.iter_mut().filter(|o| o.error == ErrorCode::None) {
                *outcome =
                    TopicOutcome::failed(&outcome.name, ErrorCode::KafkaStorageError, &reason);
            }
            return outcomes;
        }
        info!(topics = ?deleted, "topics deleted");
        outcomes
    }
}

impl Default for Controller {
    fn default() -> Self {
        Controller::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name("naïve").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }
}
