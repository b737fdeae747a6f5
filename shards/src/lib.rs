//! The thread-per-core runtime: which cores run shards, one pinned glommio executor per core,
//! typed cross-shard messages, and per-shard listeners.
//!
//! A shard is one executor on one core. It owns its partitions, its listener and its memory, and
//! talks to other shards only through the mesh, for metadata (and later replication), never for
//! the data path. This crate and `storage::dma` are the only places that name glommio; the
//! broker sees `Mesh`, `Listener`, `Connection`, `spawn` and `sleep` from here.

pub mod cpu;
pub mod mesh;
pub mod net;
pub mod pool;
pub mod task;

pub use mesh::Mesh;
pub use pool::{run_shards, stalls_detected, ExecutorOptions, ShardContext, ShardingError};

/// Index of a shard on this node: shard `s` runs on the `s`-th core of the plan and listens on
/// `base_port + s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ShardId(pub u16);

impl std::fmt::Display for ShardId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}
