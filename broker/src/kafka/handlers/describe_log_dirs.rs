//! DescribeLogDirs (key 35): the data directory this shard writes to, with the size of every
//! partition it owns (all of them, or those asked for), and from v4 the filesystem's total and
//! usable bytes. Each shard is a broker to clients, so each answers for its own partitions;
//! admin clients ask every broker and put the answers together.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::shard::{Lookup, Shard};

pub async fn handle(
    shard: Rc<Shard>,
    request: DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    let mut sizes: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    match request.topics {
        None => {
            for (topic, partition, log) in shard.owned_partitions() {
                sizes
                    .entry(topic)
                    .or_default()
                    .push((partition, log.size_bytes() as i64));
            }
        }
        Some(topics) => {
            for topic in topics {
                let name = topic.topic.0.to_string();
                for partition in topic.partitions {
                    // Kafka answers for the partitions it hosts and leaves out the rest.
                    if let Lookup::Owned(log) = shard.lookup(&name, partition) {
                        sizes
                            .entry(name.clone())
                            .or_default()
                            .push((partition, log.size_bytes() as i64));
                    }
                }
            }
        }
    }
    let topics = sizes
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_unstable();
            partitions.dedup_by_key(|(partition, _)| *partition);
            DescribeLogDirsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(partition, size)| {
                            DescribeLogDirsPartition::default()
                                .with_partition_index(partition)
                                .with_partition_size(size)
                                .with_offset_lag(0)
                                .with_is_future_key(false)
                        })
                        .collect(),
                )
        })
        .collect();
    let data_dir = &shard.node.data_dir;
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(data_dir.display().to_string()))
        .with_topics(topics);
    if version >= 4 {
        let disk = &shard.log_context.disk;
        let total = disk
            .total_bytes(data_dir)
            .await
            .map_or(-1, |bytes| bytes as i64);
        let usable = disk
            .available_bytes(data_dir)
            .await
            .map_or(-1, |bytes| bytes as i64);
        result = result.with_total_bytes(total).with_usable_bytes(usable);
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}
