//! What log compaction does to one stored batch, as Kafka's cleaner does it
//! (`MemoryRecords.filterTo`, KIP-534 for tombstones): records the caller no longer wants are
//! dropped, the rest keep their absolute offsets and timestamps, and the batch keeps its base
//! offset, `lastOffsetDelta`, producer fields, attributes and codec, so consumers and
//! idempotent producers see the same log with gaps.
//!
//! A tombstone (a record with a null value) is kept until the batch's delete horizon has
//! passed. A batch that keeps a tombstone and has no horizon yet is rewritten with one
//! (`now + delete.retention.ms`) in `baseTimestamp`, attribute bit 6 set and every record's
//! timestamp delta shifted so its absolute timestamp stays put: consumers then have
//! `delete.retention.ms` after the first clean to see the delete before it goes.

use crate::builder::{put_record, RecordHeader};
use crate::codec::compress;
use crate::error::BatchError;
use crate::header::{
    BatchHeader, Compression, ATTRIBUTES_AT, ATTRIBUTE_CONTROL, ATTRIBUTE_LOG_APPEND_TIME,
    ATTRIBUTE_TRANSACTIONAL, BASE_TIMESTAMP_AT, BATCH_HEADER_BYTES, BATCH_LENGTH_AT, CRC_AT,
    LOG_OVERHEAD, MAX_TIMESTAMP_AT, NO_TIMESTAMP, RECORDS_COUNT_AT,
};
use crate::records::{records_section, RecordIter};
use crate::Offset;

/// Attribute bit 6: `baseTimestamp` holds the batch's delete horizon (KIP-534).
pub const ATTRIBUTE_DELETE_HORIZON: i16 = 0x40;

/// What the cleaner's map says of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A later record of the same key exists: this one goes.
    Superseded,
    /// The newest of its key: it stays (a tombstone until its horizon has passed).
    Latest,
    /// Past what the map covers: it stays as it is, whatever it is.
    Unmapped,
}

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filtered {
    /// Every record stays and nothing needs stamping: the stored bytes are kept as they are.
    Unchanged,
    /// Some records stay (or a horizon was stamped): the new batch.
    Rewritten(Vec<u8>),
    /// No record stays, but the batch must (its offsets end a segment, or it is its producer's
    /// last): a header with no records and the same offset range and producer fields.
    Empty(Vec<u8>),
    /// No record stays and the batch may go.
    Dropped,
}

/// The batch's delete horizon, if one was stamped.
pub fn delete_horizon(header: &BatchHeader) -> Option<i64> {
    (header.attributes & ATTRIBUTE_DELETE_HORIZON != 0).then_some(header.base_timestamp)
}

fn put_i32(batch: &mut [u8], at: usize, value: i32) {
    batch[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn put_i64(batch: &mut [u8], at: usize, value: i64) {
    batch[at..at + 8].copy_from_slice(&value.to_be_bytes());
}

fn put_i16(batch: &mut [u8], at: usize, value: i16) {
    batch[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

fn seal(mut batch: Vec<u8>) -> Vec<u8> {
    let length = (batch.len() - LOG_OVERHEAD) as i32;
    put_i32(&mut batch, BATCH_LENGTH_AT, length);
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// A header with no records for `original`'s offsets and producer (Kafka's
/// `writeEmptyHeader`): no codec, no base timestamp, the original `maxTimestamp`.
pub fn empty_batch(original: &[u8], header: &BatchHeader) -> Vec<u8> {
    let mut batch = original[..BATCH_HEADER_BYTES].to_vec();
    let keep = ATTRIBUTE_LOG_APPEND_TIME | ATTRIBUTE_TRANSACTIONAL | ATTRIBUTE_CONTROL;
    put_i16(&mut batch, ATTRIBUTES_AT, header.attributes & keep);
    put_i64(&mut batch, BASE_TIMESTAMP_AT, NO_TIMESTAMP);
    put_i64(&mut batch, MAX_TIMESTAMP_AT, header.max_timestamp);
    put_i32(&mut batch, RECORDS_COUNT_AT, 0);
    seal(batch)
}

/// A header with no records holding offsets `base..next` (fewer than 2^31 of them), in leader
/// epoch `epoch`, with no producer: what a follower stores where its leader's compacted log has
/// a gap (the cleaner dropped whole batches), so the follower's log stays dense and its offsets
/// stay the leader's. Shaped like the cleaner's own empty batches.
pub fn filler_batch(base: crate::Offset, next: crate::Offset, epoch: i32) -> Option<Vec<u8>> {
    let delta = i32::try_from(next.0 - base.0 - 1)
        .ok()
        .filter(|delta| *delta >= 0)?;
    let mut batch = vec![0u8; BATCH_HEADER_BYTES];
    put_i64(&mut batch, crate::header::BASE_OFFSET_AT, base.0);
    put_i32(&mut batch, crate::header::PARTITION_LEADER_EPOCH_AT, epoch);
    batch[crate::header::MAGIC_AT] = 2;
    put_i16(&mut batch, ATTRIBUTES_AT, 0);
    put_i32(&mut batch, crate::header::LAST_OFFSET_DELTA_AT, delta);
    put_i64(&mut batch, BASE_TIMESTAMP_AT, NO_TIMESTAMP);
    put_i64(&mut batch, MAX_TIMESTAMP_AT, NO_TIMESTAMP);
    put_i64(&mut batch, crate::header::PRODUCER_ID_AT, -1);
    put_i16(&mut batch, crate::header::PRODUCER_EPOCH_AT, -1);
    put_i32(&mut batch, crate::header::BASE_SEQUENCE_AT, -1);
    put_i32(&mut batch, RECORDS_COUNT_AT, 0);
    Some(seal(batch))
}

/// Filters one stored batch (exactly one, as stored: its CRC is checked here).
///
/// `verdict(offset, key)` says whether the record at `offset` with `key` is superseded, the
/// newest of its key, or past what the cleaner mapped; a record without a key, which a
/// compacted topic refuses at produce, is dropped. An empty batch that need not stay goes. `now_ms` decides whether a stamped horizon has passed;
/// `delete_retention_ms` makes the horizon of a batch stamped now. `keep_empty` asks for an
/// empty batch rather than none when no record stays. Control batches (transaction markers)
/// are kept as they are.
pub fn filter_batch(
    batch: &[u8],
    now_ms: i64,
    delete_retention_ms: i64,
    keep_empty: bool,
    mut verdict: impl FnMut(Offset, &[u8]) -> Verdict,
) -> Result<Filtered, BatchError> {
    let header = crate::header::check_stored_integrity(batch)?;
    if header.is_control() {
        return Ok(Filtered::Unchanged);
    }
    if header.records_count == 0 {
        return Ok(if keep_empty {
            Filtered::Unchanged
        } else {
            Filtered::Dropped
        });
    }
    let horizon = delete_horizon(&header);
    let horizon_passed = horizon.is_some_and(|horizon| now_ms >= horizon);
    let records = records_section(batch)?;
    let count = usize::try_from(header.records_count)
        .map_err(|_| BatchError::invalid("negative records count"))?;
    let mut kept = Vec::with_capacity(count);
    let mut tombstones = false;
    for record in RecordIter::new(&records, count) {
        let record = record.map_err(BatchError::invalid)?;
        let offset = Offset(header.base_offset.0.saturating_add(record.offset_delta));
        let keep = match record.key.map(|key| verdict(offset, key)) {
            None | Some(Verdict::Superseded) => false,
            Some(Verdict::Unmapped) => true,
            Some(Verdict::Latest) => {
                // Only a mapped tombstone is stamped and, past its horizon, dropped.
                tombstones |= record.value.is_none();
                record.value.is_some() || !horizon_passed
            }
        };
        if keep {
            kept.push(record);
        }
    }
    let stamp = tombstones && horizon.is_none();
    if kept.len() == count && !stamp {
        return Ok(Filtered::Unchanged);
    }
    if kept.is_empty() {
        return Ok(if keep_empty {
            Filtered::Empty(empty_batch(batch, &header))
        } else {
            Filtered::Dropped
        });
    }
    // Absolute timestamps stay: with a new base (the horizon), every delta moves by the same.
    let base_timestamp = if stamp {
        now_ms.saturating_add(delete_retention_ms)
    } else {
        header.base_timestamp
    };
    let shift = header.base_timestamp.saturating_sub(base_timestamp);
    let mut body = Vec::with_capacity(records.len());
    let mut max_timestamp = NO_TIMESTAMP;
    for record in &kept {
        let timestamp = header.base_timestamp.saturating_add(record.timestamp_delta);
        max_timestamp = max_timestamp.max(timestamp);
        let headers: Vec<RecordHeader<'_>> = record.headers.iter().collect();
        let value = record.value.map(|value| [value]);
        put_record(
            &mut body,
            record.timestamp_delta.saturating_add(shift),
            record.offset_delta,
            record.key,
            value.as_ref().map(|value| &value[..]),
            &headers,
        );
    }
    let compression = Compression::from_attributes(header.attributes).unwrap_or(Compression::None);
    let body = compress(compression, &body)
        .map_err(|error| BatchError::invalid(format!("recompressing a batch: {error}")))?;
    let mut rewritten = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    rewritten.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    let mut attributes = header.attributes;
    if stamp {
        attributes |= ATTRIBUTE_DELETE_HORIZON;
    }
    put_i16(&mut rewritten, ATTRIBUTES_AT, attributes);
    put_i64(&mut rewritten, BASE_TIMESTAMP_AT, base_timestamp);
    if !header.is_log_append_time() {
        put_i64(&mut rewritten, MAX_TIMESTAMP_AT, max_timestamp);
    }
    put_i32(&mut rewritten, RECORDS_COUNT_AT, kept.len() as i32);
    rewritten.extend_from_slice(&body);
    Ok(Filtered::Rewritten(seal(rewritten)))
}

/// The keys (with each record's offset) of a stored batch's records, for building the
/// cleaner's map; a control batch has none. Its CRC is checked here.
pub fn keyed_offsets(
    batch: &[u8],
    mut visit: impl FnMut(Offset, &[u8]),
) -> Result<BatchHeader, BatchError> {
    let header = crate::header::check_stored_integrity(batch)?;
    if header.is_control() || header.records_count == 0 {
        return Ok(header);
    }
    let records = records_section(batch)?;
    let count = usize::try_from(header.records_count)
        .map_err(|_| BatchError::invalid("negative records count"))?;
    for record in RecordIter::new(&records, count) {
        let record = record.map_err(BatchError::invalid)?;
        if let Some(key) = record.key {
            visit(
                Offset(header.base_offset.0.saturating_add(record.offset_delta)),
                key,
            );
        }
    }
    Ok(header)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::builder::BatchBuilder;
    use crate::header::{assign_offset, check_integrity};

    /// A batch at offset 100 of records (key, value), timestamps 1000 + index.
    fn batch(records: &[(&str, Option<&str>)], compression: Compression) -> Vec<u8> {
        let mut builder = BatchBuilder::for_producer(7, 1, 40);
        for (index, (key, value)) in records.iter().enumerate() {
            builder.push_parts(
                1000 + index as i64,
                Some(key.as_bytes()),
                value
                    .map(|value| [value.as_bytes()])
                    .as_ref()
                    .map(|v| &v[..]),
                &[(b"h", Some(b"x"))],
            );
        }
        let mut batch = builder.finish_compressed(compression).unwrap();
        assign_offset(&mut batch, Offset(100), 0);
        batch
    }

    /// (offset, timestamp, key, value) of every record of a stored batch.
    fn contents(batch: &[u8]) -> Vec<(i64, i64, String, Option<String>)> {
        let header = crate::header::check_stored_integrity(batch).unwrap();
        let records = records_section(batch).unwrap();
        RecordIter::new(&records, header.records_count as usize)
            .map(|record| {
                let record = record.unwrap();
                assert_eq!(record.headers.count, 1, "headers are kept");
                (
                    header.base_offset.0 + record.offset_delta,
                    header.base_timestamp + record.timestamp_delta,
                    String::from_utf8(record.key.unwrap().to_vec()).unwrap(),
                    record.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
                )
            })
            .collect()
    }

    #[test]
    fn superseded_records_go_and_the_rest_keep_offsets_timestamps_and_codec() {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let original = batch(
                &[("a", Some("1")), ("b", Some("2")), ("a", Some("3"))],
                compression,
            );
            let filtered = filter_batch(&original, 5000, 1000, false, |offset, key| {
                if key == b"a" && offset.0 == 100 {
                    Verdict::Superseded
                } else {
                    Verdict::Latest
                }
            })
            .unwrap();
            let Filtered::Rewritten(rewritten) = filtered else {
                panic!("{filtered:?}")
            };
            let header = BatchHeader::parse(&rewritten).unwrap();
            let before = BatchHeader::parse(&original).unwrap();
            assert_eq!(header.base_offset, before.base_offset);
            assert_eq!(header.last_offset_delta, 2, "the offset range is kept");
            assert_eq!(header.records_count, 2);
            assert_eq!(header.compression(), compression);
            assert_eq!(
                (
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence
                ),
                (7, 1, 40)
            );
            assert_eq!(header.max_timestamp, 1002);
            assert_eq!(
                contents(&rewritten),
                vec![
                    (101, 1001, "b".into(), Some("2".into())),
                    (102, 1002, "a".into(), Some("3".into()))
                ]
            );
            assert!(
                check_integrity(&rewritten).is_err(),
                "a produce check refuses the gap"
            );
        }
    }

    #[test]
    fn a_batch_keeps_its_bytes_or_goes_or_leaves_an_empty_header() {
        let original = batch(&[("a", Some("1")), ("b", Some("2"))], Compression::Snappy);
        assert_eq!(
            filter_batch(&original, 0, 0, false, |_, _| Verdict::Latest).unwrap(),
            Filtered::Unchanged
        );
        assert_eq!(
            filter_batch(&original, 0, 0, false, |_, _| Verdict::Superseded).unwrap(),
            Filtered::Dropped
        );
        let Filtered::Empty(empty) =
            filter_batch(&original, 0, 0, true, |_, _| Verdict::Superseded).unwrap()
        else {
            panic!("an empty batch expected")
        };
        assert_eq!(empty.len(), BATCH_HEADER_BYTES);
        let header = crate::header::check_stored_integrity(&empty).unwrap();
        assert_eq!(header.next_offset(), Offset(102));
        assert_eq!(header.records_count, 0);
        assert_eq!(header.compression(), Compression::None);
        assert_eq!(header.producer_id, 7);
    }

    #[test]
    fn tombstones_get_a_horizon_at_the_first_clean_and_go_after_it() {
        let original = batch(&[("a", Some("1")), ("b", None)], Compression::Lz4);
        let keep_b = |_: Offset, key: &[u8]| {
            if key == b"b" {
                Verdict::Latest
            } else {
                Verdict::Superseded
            }
        };
        let Filtered::Rewritten(stamped) =
            filter_batch(&original, 10_000, 500, false, keep_b).unwrap()
        else {
            panic!("a stamped batch expected")
        };
        let header = BatchHeader::parse(&stamped).unwrap();
        assert_eq!(delete_horizon(&header), Some(10_500));
        assert_eq!(
            contents(&stamped),
            vec![(101, 1001, "b".into(), None)],
            "the absolute timestamp stays"
        );
        // Before the horizon the tombstone stays as it is; after it, it goes.
        assert_eq!(
            filter_batch(&stamped, 10_499, 500, false, keep_b).unwrap(),
            Filtered::Unchanged
        );
        assert_eq!(
            filter_batch(&stamped, 10_500, 500, false, keep_b).unwrap(),
            Filtered::Dropped
        );
    }

    #[test]
    fn a_tombstone_past_the_map_stays_whatever_its_horizon() {
        let original = batch(&[("a", None)], Compression::None);
        let Filtered::Rewritten(stamped) =
            filter_batch(&original, 10_000, 500, false, |_, _| Verdict::Latest).unwrap()
        else {
            panic!("a stamped batch expected")
        };
        // Long past the horizon, but beyond what this pass mapped: kept as it is.
        assert_eq!(
            filter_batch(&stamped, 1_000_000, 500, false, |_, _| Verdict::Unmapped).unwrap(),
            Filtered::Unchanged
        );
        let Filtered::Empty(empty) =
            filter_batch(&stamped, 1_000_000, 500, true, |_, _| Verdict::Latest).unwrap()
        else {
            panic!("an empty batch expected")
        };
        // An empty batch goes once nothing needs it.
        assert_eq!(
            filter_batch(&empty, 0, 0, false, |_, _| Verdict::Latest).unwrap(),
            Filtered::Dropped
        );
        assert_eq!(
            filter_batch(&empty, 0, 0, true, |_, _| Verdict::Latest).unwrap(),
            Filtered::Unchanged
        );
    }

    #[test]
    fn a_damaged_batch_is_refused_not_rewritten() {
        let mut damaged = batch(&[("a", Some("1"))], Compression::None);
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        assert!(filter_batch(&damaged, 0, 0, false, |_, _| Verdict::Superseded).is_err());
        assert!(keyed_offsets(&damaged, |_, _| {}).is_err());
    }
}
