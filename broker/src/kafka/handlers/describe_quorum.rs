//! DescribeQuorum (key 55): the controller quorum as its leader sees it, for operators
//! (`kafka-metadata-quorum.sh describe --status`). Versions 0-2.
//!
//! Any shard answers: the request goes to shard 0's controller, as a Kafka broker forwards it to
//! the controller. As in Kafka's `KafkaRaftClient`, a request that does not name exactly
//! `__cluster_metadata` partition 0 gets `UNKNOWN_TOPIC_OR_PARTITION` on each partition it
//! names. Quorum members are nodes, so ids here are `node.id`s (shard 0 of node n is broker
//! `n * 1000`). Offsets are the metadata log's: entry i is offset i - 1, so the high watermark
//! is the commit index.

use std::rc::Rc;

use kafka_protocol::messages::describe_quorum_response::{
    Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};

use super::str_bytes;
use crate::controller::metadata::METADATA_DIRECTORY;
use crate::controller::quorum::VoterStatus;
use crate::controller::{ControllerReply, ControllerRequest};
use crate::kafka::errors::ErrorCode;
use crate::shard::Shard;

fn names_the_metadata_partition(request: &DescribeQuorumRequest) -> bool {
    matches!(&request.topics[..], [topic]
        if topic.topic_name.0.as_str() == METADATA_DIRECTORY
            && matches!(&topic.partitions[..], [partition] if partition.partition_index == 0))
}

fn replica(voter: &VoterStatus) -> ReplicaState {
    ReplicaState::default()
        .with_replica_id(BrokerId(voter.node_id))
        .with_log_end_offset(voter.log_end.min(i64::MAX as u64) as i64)
        .with_last_fetch_timestamp(voter.last_fetch_ms)
        .with_last_caught_up_timestamp(voter.last_caught_up_ms)
}

pub async fn handle(
    shard: Rc<Shard>,
    request: DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    if !names_the_metadata_partition(&request) {
        let topics = request
            .topics
            .iter()
            .map(|topic| {
                TopicData::default()
                    .with_topic_name(topic.topic_name.clone())
                    .with_partitions(
                        topic
                            .partitions
                            .iter()
                            .map(|partition| {
                                PartitionData::default()
                                    .with_partition_index(partition.partition_index)
                                    .with_error_code(ErrorCode::UnknownTopicOrPartition.code())
                            })
                            .collect(),
                    )
            })
            .collect();
        return DescribeQuorumResponse::default().with_topics(topics);
    }
    let partition = PartitionData::default().with_partition_index(0);
    let partition = match shard
        .controller_request(ControllerRequest::DescribeQuorum)
        .await
    {
        ControllerReply::Quorum(status) => match status.leader {
            Some(leader) => partition
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(status.term.min(i32::MAX as u64) as i32)
                .with_high_watermark(status.high_watermark.min(i64::MAX as u64) as i64)
                .with_current_voters(status.voters.iter().map(replica).collect()),
            None => partition
                .with_error_code(ErrorCode::NotLeaderOrFollower.code())
                .with_leader_id(BrokerId(-1))
                .with_leader_epoch(-1)
                .with_high_watermark(-1),
        },
        ControllerReply::Failed(reason) => {
            let response = DescribeQuorumResponse::default()
                .with_error_code(ErrorCode::CoordinatorNotAvailable.code());
            return if version >= 2 {
                response.with_error_message(Some(str_bytes(&reason)))
            } else {
                response
            };
        }
        _ => {
            return DescribeQuorumResponse::default()
                .with_error_code(ErrorCode::UnknownServerError.code())
        }
    };
    // v2 lists each voter's controller endpoints; a quorum of one has no controller listener.
    let nodes = if version >= 2 {
        partition
            .current_voters
            .iter()
            .map(|voter| Node::default().with_node_id(voter.replica_id))
            .collect()
    } else {
        Vec::new()
    };
    DescribeQuorumResponse::default()
        .with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(str_bytes(METADATA_DIRECTORY)))
            .with_partitions(vec![partition])])
        .with_nodes(nodes)
}
