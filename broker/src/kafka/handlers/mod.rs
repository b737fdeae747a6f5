//! One file per Kafka API. Each handler takes the decoded request and returns the response body;
//! the connection frames and orders the answers.

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod replica_fetch;
pub mod sync_group;

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use std::rc::Rc;
use storage::PartitionLog;

use crate::kafka::errors::ErrorCode;
use crate::shard::{Lookup, Shard};

/// The offsets log of the group this shard coordinates, or the error a group request gets:
/// INVALID_GROUP_ID for an unusable id (any string is a valid group id on Kafka except the
/// empty one, but its key in the offsets log has an i16 length), else what
/// `Shard::coordinator_log` says.
pub fn group_coordinator(shard: &Shard, group_id: &str) -> Result<Rc<PartitionLog>, ErrorCode> {
    if group_id.is_empty() || group_id.len() > crate::groups::records::GROUP_ID_BYTES_MAX {
        return Err(ErrorCode::InvalidGroupId);
    }
    shard.coordinator_log(group_id)
}

/// A timeout in milliseconds from the wire; negative ones count as zero.
pub fn millis(value: i32) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// The leader epoch this shard serves a partition in: its replica's, or 0 for a partition of
/// one replica (its leader never changes).
pub fn leader_epoch_of(shard: &Shard, topic: &str, partition: i32) -> i32 {
    shard
        .replica(topic, partition)
        .map_or(0, |replica| replica.leader_epoch())
}

/// Checks a client's `current_leader_epoch` against `ours`, as Kafka does (KIP-320): -1 means
/// "not checked", a newer epoch is one this broker has not seen, an older one is fenced.
pub fn check_leader_epoch(current_leader_epoch: i32, ours: i32) -> Result<(), ErrorCode> {
    if current_leader_epoch < 0 || current_leader_epoch == ours {
        Ok(())
    } else if current_leader_epoch > ours {
        Err(ErrorCode::UnknownLeaderEpoch)
    } else {
        Err(ErrorCode::FencedLeaderEpoch)
    }
}

/// The log of a partition this shard leads, checked against the client's
/// `current_leader_epoch` first.
pub fn led_log(
    shard: &Shard,
    topic: &str,
    partition: i32,
    current_leader_epoch: i32,
) -> Result<Rc<PartitionLog>, ErrorCode> {
    check_leader_epoch(
        current_leader_epoch,
        leader_epoch_of(shard, topic, partition),
    )?;
    owned_log(shard, topic, partition)
}

/// The log of a partition this shard leads, or the error code a client should get.
pub fn owned_log(
    shard: &Shard,
    topic: &str,
    partition: i32,
) -> Result<Rc<PartitionLog>, ErrorCode> {
    match shard.lookup(topic, partition) {
        // A follower's copy is the leader's to serve (KIP-392's follower fetching is not
        // offered).
        Lookup::Owned(_) if !shard.leads(topic, partition) => Err(ErrorCode::NotLeaderOrFollower),
        Lookup::Owned(log) => Ok(log),
        Lookup::Offline(_) => Err(ErrorCode::KafkaStorageError),
        Lookup::NotOwned => Err(ErrorCode::NotLeaderOrFollower),
        Lookup::UnknownTopic | Lookup::UnknownPartition => Err(ErrorCode::UnknownTopicOrPartition),
    }
}
