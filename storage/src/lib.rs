//! The partition log: Kafka v2 record batches stored verbatim in segment files written with direct
//! I/O.
//!
//! Each partition's log is owned by exactly one shard (one core) and is never touched by another:
//! its types are `!Send` on purpose (`Rc`, `RefCell`). The shard opens a log at start (running
//! recovery when the last shutdown was not clean), appends produced batches, serves reads from
//! recently appended memory or from disk, and closes it on shutdown. Durability follows DESIGN
//! section 4: a batch is acknowledged once an `fdatasync` covering it has returned, and one sync
//! covers every batch appended since the previous one (group commit).
//!
//! Only `dma` names the runtime (glommio); everything else sees its small wrappers.

pub mod dma;
mod envelope;
pub mod limits;
pub mod partition_log;
pub mod producer_state;
pub mod record_batch;
mod recovery;
mod segment;

pub use partition_log::{
    AppendInfo, FlushObserver, FlushPolicy, LogConfig, LogError, PartitionLog,
};
pub use producer_state::{ProducerEntry, ProducerError};
pub use record_batch::{BatchError, BatchHeader, ProduceRules};

/// A Kafka offset. Offsets within one partition are dense and start at the log start offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

impl std::fmt::Display for Offset {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}
