//! The partition log: Kafka v2 record batches stored verbatim in segment files written with direct
//! I/O.
//!
//! Each partition's log is owned by exactly one shard (one core) and is never touched by another:
//! its types are `!Send` on purpose (`Rc`, `RefCell`). The shard opens a log at start (running
//! recovery when the last shutdown was not clean), appends produced batches, serves reads from
//! recently appended memory or from disk, and closes it on shutdown. Durability follows DESIGN
//! section 4: a batch is acknowledged once an `fdatasync` covering it has returned (or, in the
//! relaxed mode a topic opts into, once its write has completed), and one sync covers every
//! batch appended since the previous one (group commit).
//!
//! What a shard's logs share is one `LogContext`: the disk they write through (`io::Disk`, real
//! in `dma`, simulated with faults and power loss in `sim`), one memory budget for their caches,
//! unflushed batches and disk reads (`memory`), one bounded cache of open sealed segments and a
//! view of the disk's free space (`files`). Only `dma` names the runtime (glommio).

pub mod dma;
mod envelope;
pub mod files;
pub mod io;
pub mod limits;
pub mod memory;
pub mod partition_log;
pub mod producer_state;
mod recovery;
mod recovery_point;
mod segment;
pub mod sim;

/// Entry points for the fuzz targets (`broker/fuzz`) into formats that are private to the crate.
#[doc(hidden)]
pub mod fuzzing {
    /// Reads `bytes` as each of the crate's small metadata files (the checksummed envelope, a
    /// segment index, a producer snapshot, a recovery point), and again with `bytes` sealed in
    /// a valid envelope of each kind, so the parsers behind the checksum get the bytes too.
    /// Must never panic.
    pub fn metadata_file(bytes: &[u8]) {
        let read_all = |file: &[u8]| {
            for magic in [b"KIDX", b"KPSN", b"KRPT", b"KCLN"] {
                let _ = crate::envelope::open(file, magic, 1);
            }
            let _ = crate::partition_log::compaction::decode_checkpoint(file);
            let _ = crate::segment::Segment::from_index(
                crate::Offset(0),
                std::path::PathBuf::from("/fuzz"),
                file.len() as u64,
                file,
            );
            let _ = crate::producer_state::ProducerStateTable::from_snapshot(file);
            crate::recovery_point::decode_for_fuzzing(file);
        };
        read_all(bytes);
        for magic in [b"KIDX", b"KPSN", b"KRPT", b"KCLN"] {
            read_all(&crate::envelope::seal(magic, 1, bytes));
        }
    }
}

/// Kafka v2 batches: the `record-format` crate, under the name the log's callers know it by.
pub mod record_batch {
    pub use record_format::*;
}

pub use partition_log::{
    AppendInfo, Fetched, FlushPolicy, LogConfig, LogContext, LogError, LogObserver, PartitionLog,
    Retention,
};
pub use producer_state::{ProducerEntry, ProducerError};
pub use record_format::{BatchError, BatchHeader, Offset, ProduceRules};
