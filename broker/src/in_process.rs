//! One broker shard in this process with no sockets: request frames in, response bytes out,
//! through the same `dispatch` and handlers a connection uses, on a disk of the caller's choice.
//! It exists for measuring the request path where io_uring cannot run: valgrind delivers no
//! io_uring completions, so `bench`'s `cpu-cost` counts instructions per record here, on the
//! simulated disk. Runs on a glommio executor, as a shard does; serves the topics it is started
//! with and nothing that needs the controller (creating topics, groups).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use shards::mesh::MeshJoin;
use shards::{Mesh, ShardId};

use crate::config::BrokerConfig;
use crate::connections::ConnectionQuotas;
use crate::controller::metadata::{ClusterMetadata, MetadataChange, TopicMetadata};
use crate::kafka::{dispatch, Dispatch};
use crate::limits::{
    CONNECTIONS_PER_SHARD_MAX, LOG_MEMORY_PER_SHARD_BYTES, OPEN_SEGMENTS_PER_SHARD,
};
use crate::node::{NodeInfo, NodeLimits};
use crate::shard::{Lookup, Shard};

/// A topic to serve: its name, partition count and config overrides (Kafka names).
pub struct TopicSpec {
    pub name: String,
    pub partitions: usize,
    pub configs: BTreeMap<String, String>,
}

pub struct InProcessShard {
    shard: Rc<Shard>,
    client_host: Rc<str>,
}

impl InProcessShard {
    /// Opens `topics` (every partition on this one shard) under `data_dir` on `disk`.
    pub async fn start(
        config: BrokerConfig,
        disk: Rc<dyn storage::io::Disk>,
        data_dir: PathBuf,
        topics: Vec<TopicSpec>,
    ) -> Result<InProcessShard, String> {
        let limits = NodeLimits {
            partitions_per_shard: config.topic_partitions_per_shard(),
            connections_per_shard: CONNECTIONS_PER_SHARD_MAX,
            open_segments_per_shard: OPEN_SEGMENTS_PER_SHARD,
            log_memory_per_shard_bytes: LOG_MEMORY_PER_SHARD_BYTES,
        };
        let node = Arc::new(NodeInfo {
            node_id: config.node_id(),
            rack: None,
            voters: Vec::new(),
            shard_count: 1,
            advertised: vec![("localhost".to_string(), 9092)],
            data_dir,
            clean_shutdown: false,
            limits,
            connections: ConnectionQuotas::new(config.max_connections(), 1),
            controller_listener: std::sync::Mutex::new(None),
            config,
        });
        let log_context = storage::LogContext::new(
            disk,
            limits.log_memory_per_shard_bytes,
            limits.open_segments_per_shard,
        );
        let mesh: Mesh<_> = Mesh::join(MeshJoin::new(1)).await?;
        let shard = Shard::with_log_context(ShardId(0), node, mesh, log_context);
        let mut metadata = ClusterMetadata::new();
        let partitions: Vec<(String, usize)> = topics
            .iter()
            .map(|topic| (topic.name.clone(), topic.partitions))
            .collect();
        for topic in topics {
            metadata.topics.insert(
                topic.name.clone(),
                TopicMetadata {
                    name: topic.name,
                    topic_id: uuid::Uuid::new_v4(),
                    replicas: vec![vec![shard.broker_id()]; topic.partitions],
                    configs: topic.configs,
                    leaderships: Vec::new(),
                },
            );
        }
        shard.apply(&MetadataChange::Snapshot(metadata)).await;
        for (topic, count) in partitions {
            for partition in 0..count as i32 {
                if let Lookup::Offline(reason) = shard.lookup(&topic, partition) {
                    return Err(format!("{topic}-{partition} did not open: {reason}"));
                }
            }
        }
        Ok(InProcessShard {
            shard,
            client_host: Rc::from("/127.0.0.1"),
        })
    }

    /// Handles one request frame (without its size prefix) as a connection would, and returns
    /// the response's bytes (size prefix first; none for `acks=0`), or why a connection would
    /// have been closed.
    pub async fn request(&self, frame: Bytes) -> Result<Vec<Bytes>, String> {
        let mut grant = self.shard.request_memory.acquire(frame.len()).await;
        match dispatch(&self.shard, frame, &mut grant, &self.client_host).await {
            Dispatch::Respond(response) => Ok(response.await?.chunks),
            Dispatch::NoResponse => Ok(Vec::new()),
            Dispatch::Close(reason) => Err(reason),
        }
    }

    /// Closes every log (their final flush); false if one could not be closed cleanly.
    pub async fn close(self) -> bool {
        self.shard.close_logs().await
    }
}
