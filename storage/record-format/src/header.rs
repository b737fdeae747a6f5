//! The fixed 61-byte header of a v2 batch, read in place, and the few fields the broker writes.
//!
//! Layout (big-endian), as in Kafka's `DefaultRecordBatch`:
//! ```text
//!  0 baseOffset i64        8 batchLength i32      12 partitionLeaderEpoch i32
//! 16 magic i8             17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16       23 lastOffsetDelta i32 27 baseTimestamp i64
//! 35 maxTimestamp i64     43 producerId i64      51 producerEpoch i16
//! 53 baseSequence i32     57 recordsCount i32    61 records...
//! ```

use crate::error::BatchError;
use crate::Offset;

/// The fixed header of a v2 record batch; nothing shorter can be a batch.
pub const BATCH_HEADER_BYTES: usize = 61;

pub const BASE_OFFSET_AT: usize = 0;
pub const BATCH_LENGTH_AT: usize = 8;
pub const PARTITION_LEADER_EPOCH_AT: usize = 12;
pub const MAGIC_AT: usize = 16;
pub const CRC_AT: usize = 17;
pub const ATTRIBUTES_AT: usize = 21;
pub const LAST_OFFSET_DELTA_AT: usize = 23;
pub const BASE_TIMESTAMP_AT: usize = 27;
pub const MAX_TIMESTAMP_AT: usize = 35;
pub const PRODUCER_ID_AT: usize = 43;
pub const PRODUCER_EPOCH_AT: usize = 51;
pub const BASE_SEQUENCE_AT: usize = 53;
pub const RECORDS_COUNT_AT: usize = 57;
/// The bytes before `batchLength` starts counting: baseOffset and batchLength themselves.
pub const LOG_OVERHEAD: usize = 12;

pub(crate) const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
pub const ATTRIBUTE_LOG_APPEND_TIME: i16 = 0x08;
pub const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
pub const ATTRIBUTE_CONTROL: i16 = 0x20;

/// Kafka's "no timestamp" value.
pub const NO_TIMESTAMP: i64 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec in attribute bits 0-2, or `None` for the unassigned values 5-7.
    pub fn from_attributes(attributes: i16) -> Option<Compression> {
        match attributes & ATTRIBUTE_COMPRESSION_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub(crate) fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// The fixed header of one batch, decoded from its first 61 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: Offset,
    /// `batchLength`: bytes after the length field; the whole batch is `LOG_OVERHEAD + batch_length`.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

pub(crate) fn i16_at(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn i32_at(bytes: &[u8], at: usize) -> i32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    i32::from_be_bytes(raw)
}

pub(crate) fn i64_at(bytes: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(raw)
}

impl BatchHeader {
    /// Decodes the header from the first 61 bytes, or `None` if fewer are given. No checks.
    pub fn parse(bytes: &[u8]) -> Option<BatchHeader> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return None;
        }
        Some(BatchHeader {
            base_offset: Offset(i64_at(bytes, BASE_OFFSET_AT)),
            batch_length: i32_at(bytes, BATCH_LENGTH_AT),
            partition_leader_epoch: i32_at(bytes, PARTITION_LEADER_EPOCH_AT),
            magic: bytes[MAGIC_AT] as i8,
            crc: i32_at(bytes, CRC_AT) as u32,
            attributes: i16_at(bytes, ATTRIBUTES_AT),
            last_offset_delta: i32_at(bytes, LAST_OFFSET_DELTA_AT),
            base_timestamp: i64_at(bytes, BASE_TIMESTAMP_AT),
            max_timestamp: i64_at(bytes, MAX_TIMESTAMP_AT),
            producer_id: i64_at(bytes, PRODUCER_ID_AT),
            producer_epoch: i16_at(bytes, PRODUCER_EPOCH_AT),
            base_sequence: i32_at(bytes, BASE_SEQUENCE_AT),
            records_count: i32_at(bytes, RECORDS_COUNT_AT),
        })
    }

    /// The whole batch's size on disk and on the wire, or `None` if `batchLength` is negative.
    pub fn total_bytes(&self) -> Option<usize> {
        usize::try_from(self.batch_length)
            .ok()
            .map(|length| length + LOG_OVERHEAD)
    }

    /// Saturating, like `next_offset`: headers read from strangers or from a damaged disk may
    /// hold any values, and arithmetic on them must not panic (validation refuses such a batch).
    pub fn last_offset(&self) -> Offset {
        Offset(
            self.base_offset
                .0
                .saturating_add(i64::from(self.last_offset_delta)),
        )
    }

    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset().0.saturating_add(1))
    }

    /// The codec; the unassigned values 5-7 read as `None` here and are refused by validation.
    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes).unwrap_or(Compression::None)
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// CRC-32C over `attributes..end`, the span Kafka's v2 CRC covers.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

fn set_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Structural checks that need no configuration and no record walk: length, magic, CRC and the
/// count fields. `batch` must be exactly one batch (the caller split it by `batchLength`). This
/// is what recovery checks of every stored batch; a produced batch gets `validate_produced`.
pub fn check_integrity(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    check_integrity_with_crc(batch, compute_crc)
}

/// The header of `batch`, which must be exactly one whole batch.
fn parse_whole(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch)
        .ok_or_else(|| BatchError::corrupt("shorter than a batch header"))?;
    if header.total_bytes() != Some(batch.len()) {
        return Err(BatchError::corrupt(
            "batchLength does not match the bytes given",
        ));
    }
    Ok(header)
}

/// `check_integrity` with the batch's CRC-32C computed by `crc` (given the whole batch, once
/// its header and length are known to be sound), for a caller that computes it in pieces.
pub fn check_integrity_with_crc(
    batch: &[u8],
    crc: impl FnOnce(&[u8]) -> u32,
) -> Result<BatchHeader, BatchError> {
    let header = parse_whole(batch)?;
    if header.magic != 2 {
        if header.magic == 0 || header.magic == 1 {
            return Err(BatchError::UnsupportedMagic {
                magic: header.magic,
            });
        }
        return Err(BatchError::corrupt("Invalid magic found in record"));
    }
    if crc(batch) != header.crc {
        return Err(BatchError::Corrupt {
            reason: format!("Record is corrupt (stored crc = {})", header.crc),
        });
    }
    if header.records_count <= 0 {
        return Err(BatchError::Invalid {
            reason: format!(
                "Invalid reported count for record batch: {}",
                header.records_count
            ),
        });
    }
    if header.last_offset_delta < 0
        || i64::from(header.records_count) != i64::from(header.last_offset_delta) + 1
    {
        return Err(BatchError::Invalid {
            reason: format!(
                "Inconsistent batch offset range [0, {}] and count of records {}",
                header.last_offset_delta, header.records_count
            ),
        });
    }
    Ok(header)
}

/// What recovery and the cleaner check of a stored batch: length, magic and CRC, and counts
/// that compaction can leave (Kafka's cleaner keeps a batch's offset range when it drops
/// records from it, and may leave a header with no records at all), so fewer records than the
/// offset range spans, but never more.
pub fn check_stored_integrity(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_whole(batch)?;
    if header.magic != 2 {
        return Err(BatchError::corrupt("Invalid magic found in record"));
    }
    if compute_crc(batch) != header.crc {
        return Err(BatchError::Corrupt {
            reason: format!("Record is corrupt (stored crc = {})", header.crc),
        });
    }
    let empty = batch.len() == BATCH_HEADER_BYTES;
    if header.last_offset_delta < 0
        || header.records_count < 0
        || (header.records_count == 0) != empty
        || i64::from(header.records_count) > i64::from(header.last_offset_delta) + 1
    {
        return Err(BatchError::Invalid {
            reason: format!(
                "Inconsistent batch offset range [0, {}] and count of records {}",
                header.last_offset_delta, header.records_count
            ),
        });
    }
    Ok(header)
}

/// Writes the broker-owned fields of a batch that the CRC does not cover.
pub fn assign_offset(batch: &mut [u8], base_offset: Offset, partition_leader_epoch: i32) {
    assert!(batch.len() >= BATCH_HEADER_BYTES, "a batch has a header");
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.0.to_be_bytes());
    batch[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// For `message.timestamp.type=LogAppendTime`: stamps the batch with the broker's clock, sets the
/// timestamp-type attribute and recomputes the CRC, as Kafka does (records keep their deltas).
pub fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) {
    assert!(batch.len() >= BATCH_HEADER_BYTES, "a batch has a header");
    let attributes = i16_at(batch, ATTRIBUTES_AT) | ATTRIBUTE_LOG_APPEND_TIME;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    set_crc(batch);
}

/// Sets `maxTimestamp` to what the records say and recomputes the CRC, as Kafka's validator does
/// when a producer's batch header disagrees with its records (the time index trusts the header).
pub fn set_max_timestamp(batch: &mut [u8], max_timestamp: i64) {
    assert!(batch.len() >= BATCH_HEADER_BYTES, "a batch has a header");
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    set_crc(batch);
}

/// Sets a batch's idempotent-producer fields and recomputes its CRC.
pub fn set_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    assert!(batch.len() >= BATCH_HEADER_BYTES, "a batch has a header");
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    set_crc(batch);
}

/// Walks a run of stored batches, yielding each batch's header and byte range. Stops at the
/// first place that is not a complete batch by its length field (no CRC check: see
/// `check_integrity`).
pub struct BatchWalk<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> BatchWalk<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BatchWalk { bytes, at: 0 }
    }

    /// Bytes consumed by the complete batches yielded so far.
    pub fn position(&self) -> usize {
        self.at
    }
}

impl Iterator for BatchWalk<'_> {
    type Item = (BatchHeader, std::ops::Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        let header = BatchHeader::parse(&self.bytes[self.at..])?;
        let total = header.total_bytes()?;
        if total < BATCH_HEADER_BYTES || self.at + total > self.bytes.len() {
            return None;
        }
        let range = self.at..self.at + total;
        self.at += total;
        Some((header, range))
    }
}
