//! What every shard knows about the node it runs on: fixed at start, shared read-only across
//! cores (`Arc<NodeInfo>`).

use std::path::PathBuf;

use shards::ShardId;

use crate::config::BrokerConfig;

/// What every shard knows about the node; fixed at start, shared read-only across cores.
#[derive(Debug)]
pub struct NodeInfo {
    pub config: BrokerConfig,
    pub node_id: i32,
    /// `broker.rack`, reported for each of the node's shards.
    pub rack: Option<String>,
    /// The controller quorum's voters (`controller.quorum.voters`); empty for a quorum of
    /// this node alone.
    pub voters: Vec<crate::config::Voter>,
    pub shard_count: usize,
    /// The host and port clients reach each shard at, by shard index.
    pub advertised: Vec<(String, u16)>,
    pub data_dir: PathBuf,
    /// Whether the previous process shut down cleanly (no recovery scan needed).
    pub clean_shutdown: bool,
    /// What each shard may hold, worked out at start from the config and the open-file limit.
    pub limits: NodeLimits,
    /// Shard 0's CONTROLLER listener, bound at start and taken by shard 0 (with other voters).
    pub controller_listener: std::sync::Mutex<Option<shards::net::BoundListener>>,
    /// Connections open on the whole node, by peer address (`max.connections`,
    /// `max.connections.per.ip` are node-wide, as Kafka's are broker-wide).
    pub connections: std::sync::Arc<crate::connections::ConnectionQuotas>,
}

/// Per-shard resource limits in force.
#[derive(Debug, Clone, Copy)]
pub struct NodeLimits {
    /// Partitions a shard may hold (`topic_partitions_per_shard`, within the open-file budget).
    pub partitions_per_shard: usize,
    /// Connections a shard serves at once (within the open-file budget).
    pub connections_per_shard: usize,
    /// Sealed segment files a shard keeps open for reads.
    pub open_segments_per_shard: usize,
    /// Bytes a shard's logs may hold in memory.
    pub log_memory_per_shard_bytes: usize,
}

impl NodeInfo {
    /// Each shard is advertised as its own broker: node n, shard s is broker `n * 1000 + s`.
    pub fn broker_id(&self, shard: ShardId) -> i32 {
        self.node_id * 1000 + i32::from(shard.0)
    }

    /// Every shard as clients see it, a broker each: its broker id and advertised address.
    pub fn brokers(&self) -> impl Iterator<Item = (i32, &str, u16)> + '_ {
        self.advertised
            .iter()
            .take(self.shard_count)
            .enumerate()
            .map(|(index, (host, port))| {
                (self.broker_id(ShardId(index as u16)), host.as_str(), *port)
            })
    }
}
