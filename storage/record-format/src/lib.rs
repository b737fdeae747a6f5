//! Kafka v2 record batches (magic 2): the header read in place, the records walked, produced
//! batches validated as Kafka's `LogValidator` does, and batches built for the few places that
//! write them (the group coordinator's offsets records, loadgen, tests).
//!
//! This crate is pure: no runtime, no I/O, no shard. It sits under `storage` (which stores
//! batches verbatim and assigns their offsets), and `loadgen` and the fuzz targets use it
//! directly, so there is exactly one encoder, one decoder and one varint codec in the workspace.
//! Every function takes bytes from strangers: nothing here panics on any input, and everything a
//! batch decompresses to is bounded (`codec::DECOMPRESSED_BATCH_BYTES_MAX`).

pub mod builder;
pub mod codec;
pub mod compact;
mod error;
pub mod header;
pub mod records;
pub mod validate;
pub mod varint;

pub use builder::{build_uncompressed_batch, BatchBuilder};
pub use error::{BatchError, RecordError, RecordErrorKind};
pub use header::*;
pub use records::{
    first_offset_at_or_after, parse_record, records_section, walk_records, Record, RecordIter,
};
pub use validate::{validate_produced, validate_produced_with_crc, ProduceRules, Validated};

/// A Kafka offset. Offsets within one partition are dense and start at the log start offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

impl std::fmt::Display for Offset {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}
