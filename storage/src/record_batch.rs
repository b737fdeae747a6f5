//! Kafka v2 record batches (magic 2), read in place.
//!
//! A batch is stored exactly as the producer sent it; the broker only writes the fields that lie
//! outside the CRC (`baseOffset`, `partitionLeaderEpoch`), or, for `LogAppendTime` topics, rewrites
//! the timestamps and recomputes the CRC. Everything here works on byte slices so the produce and
//! fetch paths can keep batches as `bytes::Bytes` without decoding them.
//!
//! Layout (big-endian), as in Kafka's `DefaultRecordBatch`:
//! ```text
//!  0 baseOffset i64        8 batchLength i32      12 partitionLeaderEpoch i32
//! 16 magic i8             17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16       23 lastOffsetDelta i32 27 baseTimestamp i64
//! 35 maxTimestamp i64     43 producerId i64      51 producerEpoch i16
//! 53 baseSequence i32     57 recordsCount i32    61 records...
//! ```

use crate::limits::BATCH_HEADER_BYTES;
use crate::Offset;

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

const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
const ATTRIBUTE_LOG_APPEND_TIME: i16 = 0x08;
const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
const ATTRIBUTE_CONTROL: i16 = 0x20;

/// Why a batch was refused. The broker maps these to Kafka error codes in one place
/// (`broker::kafka::errors`): `Corrupt` is `CORRUPT_MESSAGE`, `Invalid` is `INVALID_RECORD`,
/// `TooLarge` is `MESSAGE_TOO_LARGE`, `UnsupportedMagic` is `UNSUPPORTED_FOR_MESSAGE_FORMAT`,
/// `InvalidTimestamp` is `INVALID_TIMESTAMP`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("corrupt record batch: {reason}")]
    Corrupt { reason: &'static str },
    #[error("invalid record batch: {reason}")]
    Invalid { reason: &'static str },
    #[error("record batch of {size} bytes exceeds max.message.bytes {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("record batch magic {magic} is not supported (only v2)")]
    UnsupportedMagic { magic: i8 },
    #[error("record batch timestamp {timestamp} is out of the allowed range")]
    InvalidTimestamp { timestamp: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
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

fn i16_at(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}
fn i32_at(bytes: &[u8], at: usize) -> i32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    i32::from_be_bytes(raw)
}
fn i64_at(bytes: &[u8], at: usize) -> i64 {
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

    pub fn last_offset(&self) -> Offset {
        Offset(self.base_offset.0 + i64::from(self.last_offset_delta))
    }

    pub fn next_offset(&self) -> Offset {
        Offset(self.last_offset().0 + 1)
    }

    pub fn compression(&self) -> Compression {
        match self.attributes & ATTRIBUTE_COMPRESSION_MASK {
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => Compression::None,
        }
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

/// Structural checks that need no configuration: length chain, magic, CRC, record count.
/// `batch` must be exactly one batch (the caller split it by `batchLength`).
pub fn check_integrity(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(batch).ok_or(BatchError::Corrupt {
        reason: "shorter than a batch header",
    })?;
    if header.total_bytes() != Some(batch.len()) {
        return Err(BatchError::Corrupt {
            reason: "batchLength does not match the bytes given",
        });
    }
    if header.magic != 2 {
        if header.magic == 0 || header.magic == 1 {
            return Err(BatchError::UnsupportedMagic {
                magic: header.magic,
            });
        }
        return Err(BatchError::Corrupt {
            reason: "unknown magic byte",
        });
    }
    if compute_crc(batch) != header.crc {
        return Err(BatchError::Corrupt {
            reason: "CRC-32C mismatch",
        });
    }
    if header.records_count <= 0 {
        return Err(BatchError::Invalid {
            reason: "batch holds no records",
        });
    }
    if header.last_offset_delta < 0 || header.records_count != header.last_offset_delta + 1 {
        return Err(BatchError::Invalid {
            reason: "recordsCount does not match lastOffsetDelta + 1",
        });
    }
    Ok(header)
}

/// Limits a produced batch must respect; all come from topic configs.
#[derive(Debug, Clone, Copy)]
pub struct ProduceRules {
    /// `max.message.bytes`: the largest batch accepted, header included.
    pub max_message_bytes: usize,
    /// `message.timestamp.after.max.ms`, only for `CreateTime` topics.
    pub timestamp_after_max_ms: i64,
    /// `message.timestamp.before.max.ms`, only for `CreateTime` topics.
    pub timestamp_before_max_ms: i64,
    pub log_append_time: bool,
}

/// Full validation of one produced batch, as Kafka's `LogValidator` does for magic 2.
pub fn validate_produced(
    batch: &[u8],
    rules: &ProduceRules,
    now_ms: i64,
) -> Result<BatchHeader, BatchError> {
    if batch.len() > rules.max_message_bytes {
        return Err(BatchError::TooLarge {
            size: batch.len(),
            limit: rules.max_message_bytes,
        });
    }
    let header = check_integrity(batch)?;
    if header.is_control() {
        return Err(BatchError::Invalid {
            reason: "clients may not produce control batches",
        });
    }
    if header.is_transactional() && !header.has_producer_id() {
        return Err(BatchError::Invalid {
            reason: "transactional batch without a producer id",
        });
    }
    if !rules.log_append_time && header.max_timestamp >= 0 {
        let too_late = header.max_timestamp.saturating_sub(now_ms) > rules.timestamp_after_max_ms;
        let too_early =
            now_ms.saturating_sub(header.base_timestamp) > rules.timestamp_before_max_ms;
        if too_late || too_early {
            return Err(BatchError::InvalidTimestamp {
                timestamp: header.max_timestamp,
            });
        }
    }
    Ok(header)
}

/// Writes the broker-owned fields of a batch that the CRC does not cover.
pub fn assign_offset(batch: &mut [u8], base_offset: Offset, partition_leader_epoch: i32) {
    assert!(batch.len() >= BATCH_HEADER_BYTES);
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.0.to_be_bytes());
    batch[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// For `message.timestamp.type=LogAppendTime`: stamps the batch with the broker's clock, sets the
/// timestamp-type attribute and recomputes the CRC, as Kafka does (records keep their deltas).
pub fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) {
    assert!(batch.len() >= BATCH_HEADER_BYTES);
    let attributes = i16_at(batch, ATTRIBUTES_AT) | ATTRIBUTE_LOG_APPEND_TIME;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Reads an unsigned-zigzag varint (Kafka's record field encoding). Returns value and length.
fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for (index, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Some((decoded, index + 1));
        }
    }
    None
}

/// For an uncompressed batch: the offset and timestamp of the first record whose timestamp is at
/// least `target_ms`. Compressed batches would need decompression; for those the batch's base
/// offset and max timestamp stand in, so a timestamp lookup lands at most one batch early.
pub fn first_offset_at_or_after(batch: &[u8], target_ms: i64) -> Option<(Offset, i64)> {
    let header = BatchHeader::parse(batch)?;
    if header.compression() != Compression::None {
        return (header.max_timestamp >= target_ms)
            .then_some((header.base_offset, header.max_timestamp));
    }
    let mut at = BATCH_HEADER_BYTES;
    for _ in 0..header.records_count {
        let (length, length_bytes) = read_varint(batch.get(at..)?)?;
        let record_start = at + length_bytes;
        let record = batch.get(record_start..record_start + usize::try_from(length).ok()?)?;
        // attributes: i8, then timestampDelta varint, then offsetDelta varint.
        let (timestamp_delta, timestamp_bytes) = read_varint(record.get(1..)?)?;
        let (offset_delta, _) = read_varint(record.get(1 + timestamp_bytes..)?)?;
        let timestamp = if header.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0 {
            header.max_timestamp
        } else {
            header.base_timestamp + timestamp_delta
        };
        if timestamp >= target_ms {
            return Some((Offset(header.base_offset.0 + offset_delta), timestamp));
        }
        at = record_start + record.len();
    }
    None
}

/// Walks a run of stored batches, yielding each batch's header and byte range. Stops at the
/// first place that is not a complete batch by its length field (no CRC check: see `check_integrity`).
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

/// Builds a valid uncompressed v2 batch (for tests and benchmarks) with `count` records of `value_bytes` bytes each,
/// timestamps `base_timestamp + i`.
pub fn build_uncompressed_batch(count: i32, value_bytes: usize, base_timestamp: i64) -> Vec<u8> {
    fn put_varint(out: &mut Vec<u8>, value: i64) {
        let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
        loop {
            if zigzag < 0x80 {
                out.push(zigzag as u8);
                return;
            }
            out.push((zigzag as u8 & 0x7f) | 0x80);
            zigzag >>= 7;
        }
    }
    let mut records = Vec::new();
    for index in 0..count {
        let mut record = vec![0u8]; // attributes
        put_varint(&mut record, i64::from(index)); // timestamp delta
        put_varint(&mut record, i64::from(index)); // offset delta
        put_varint(&mut record, -1); // null key
        put_varint(&mut record, value_bytes as i64);
        record.extend(std::iter::repeat_n(b'v', value_bytes));
        put_varint(&mut record, 0); // no headers
        put_varint(&mut records, record.len() as i64);
        records.extend(record);
    }
    let mut batch = vec![0u8; BATCH_HEADER_BYTES];
    let length = (BATCH_HEADER_BYTES + records.len() - LOG_OVERHEAD) as i32;
    batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
    batch[MAGIC_AT] = 2;
    batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
        .copy_from_slice(&(count - 1).to_be_bytes());
    batch[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&base_timestamp.to_be_bytes());
    let max_timestamp = base_timestamp + i64::from(count - 1);
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&(-1i64).to_be_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&(-1i16).to_be_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
    batch[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&count.to_be_bytes());
    batch.extend(records);
    let crc = compute_crc(&batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Sets a batch's idempotent-producer fields and recomputes its CRC (for tests and benchmarks).
pub fn set_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    assert!(batch.len() >= BATCH_HEADER_BYTES);
    batch[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_batch(count: i32, value_bytes: usize, base_timestamp: i64) -> Vec<u8> {
        build_uncompressed_batch(count, value_bytes, base_timestamp)
    }

    const RULES: ProduceRules = ProduceRules {
        max_message_bytes: 1 << 20,
        timestamp_after_max_ms: 3_600_000,
        timestamp_before_max_ms: i64::MAX,
        log_append_time: false,
    };

    #[test]
    fn a_well_formed_batch_passes_and_reports_its_header() {
        let batch = build_batch(3, 10, 1_000);
        let header = validate_produced(&batch, &RULES, 1_000).unwrap();
        assert_eq!(header.records_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.max_timestamp, 1_002);
        assert_eq!(header.total_bytes(), Some(batch.len()));
    }

    #[test]
    fn every_flipped_byte_inside_the_crc_span_is_caught() {
        let batch = build_batch(2, 5, 0);
        for position in ATTRIBUTES_AT..batch.len() {
            let mut damaged = batch.clone();
            damaged[position] ^= 0x40;
            assert!(
                check_integrity(&damaged).is_err(),
                "flip at byte {position} went unnoticed"
            );
        }
    }

    #[test]
    fn offset_and_epoch_are_outside_the_crc() {
        let mut batch = build_batch(2, 5, 0);
        assign_offset(&mut batch, Offset(12345), 7);
        let header = check_integrity(&batch).unwrap();
        assert_eq!(header.base_offset, Offset(12345));
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.last_offset(), Offset(12346));
    }

    #[test]
    fn oversized_count_mismatch_and_old_magic_get_kafkas_errors() {
        let batch = build_batch(4, 100, 0);
        let tight = ProduceRules {
            max_message_bytes: batch.len() - 1,
            ..RULES
        };
        assert!(matches!(
            validate_produced(&batch, &tight, 0),
            Err(BatchError::TooLarge { .. })
        ));

        let mut miscounted = batch.clone();
        miscounted[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&9i32.to_be_bytes());
        let crc = compute_crc(&miscounted);
        miscounted[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_produced(&miscounted, &RULES, 0),
            Err(BatchError::Invalid { .. })
        ));

        let mut old = batch.clone();
        old[MAGIC_AT] = 1;
        assert_eq!(
            validate_produced(&old, &RULES, 0),
            Err(BatchError::UnsupportedMagic { magic: 1 })
        );
    }

    #[test]
    fn future_timestamps_beyond_the_allowed_skew_are_refused() {
        let batch = build_batch(1, 1, 10_000_000);
        assert!(matches!(
            validate_produced(&batch, &RULES, 0),
            Err(BatchError::InvalidTimestamp { .. })
        ));
    }

    #[test]
    fn log_append_time_rewrites_timestamp_and_keeps_the_crc_valid() {
        let mut batch = build_batch(2, 3, 5);
        stamp_log_append_time(&mut batch, 99_999);
        let header = check_integrity(&batch).unwrap();
        assert_eq!(header.max_timestamp, 99_999);
        assert_ne!(header.attributes & ATTRIBUTE_LOG_APPEND_TIME, 0);
    }

    #[test]
    fn timestamp_lookup_inside_an_uncompressed_batch_finds_the_record() {
        let mut batch = build_batch(5, 2, 100);
        assign_offset(&mut batch, Offset(50), 0);
        assert_eq!(first_offset_at_or_after(&batch, 0), Some((Offset(50), 100)));
        assert_eq!(
            first_offset_at_or_after(&batch, 103),
            Some((Offset(53), 103))
        );
        assert_eq!(first_offset_at_or_after(&batch, 105), None);
    }

    #[test]
    fn walk_stops_at_a_partial_batch() {
        let mut run = build_batch(1, 10, 0);
        let second = build_batch(2, 10, 0);
        run.extend(&second);
        run.extend(&second[..30]);
        let walked: Vec<_> = BatchWalk::new(&run).collect();
        assert_eq!(walked.len(), 2);
        assert_eq!(walked[1].1.end, run.len() - 30);
    }
}
