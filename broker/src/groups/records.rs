//! What the coordinator writes to `__consumer_offsets`: Kafka's own record layout
//! (`OffsetCommitKey` version 1, `OffsetCommitValue` version 3, from Kafka's
//! `group-coordinator` message specs), so the topic reads the same as Kafka's to tools that know
//! it. A deleted offset is a tombstone: the key with a null value.
//!
//! Why by hand: `kafka-protocol` does not carry these internal record schemas; they are four
//! fixed fields each.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use storage::record_batch::{records_section, BatchBuilder, BatchWalk, RecordIter};

/// The key version of an offset commit (Kafka writes 1 for every classic-group commit).
const OFFSET_KEY_VERSION: i16 = 1;
/// Kafka's key version of a group-metadata record; read only to skip it.
const GROUP_KEY_VERSION: i16 = 2;
/// The value version we write: offset, leader epoch, metadata, commit timestamp.
const OFFSET_VALUE_VERSION: i16 = 3;

/// One committed offset of a group for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One record of the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    /// A commit (`Some`) or the deletion of one (`None`).
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
    },
    /// A group-metadata record (written by Kafka, not by us): carries nothing we keep.
    GroupMetadata { group: String },
}

fn put_string(out: &mut BytesMut, text: &str) {
    // Group ids and topic names reach here only after the request decoder read them from an
    // i16- or varint-prefixed field; a group id longer than i16::MAX is refused before writing.
    out.put_i16(text.len() as i16);
    out.put_slice(text.as_bytes());
}

fn get_string(bytes: &mut &[u8]) -> Result<String, &'static str> {
    if bytes.remaining() < 2 {
        return Err("truncated string length");
    }
    let length = bytes.get_i16();
    let length = usize::try_from(length).map_err(|_| "negative string length")?;
    if bytes.remaining() < length {
        return Err("truncated string");
    }
    let text = std::str::from_utf8(&bytes[..length]).map_err(|_| "string is not UTF-8")?;
    let text = text.to_string();
    bytes.advance(length);
    Ok(text)
}

fn get_i64(bytes: &mut &[u8]) -> Result<i64, &'static str> {
    (bytes.remaining() >= 8)
        .then(|| bytes.get_i64())
        .ok_or("truncated value")
}

fn get_i32(bytes: &mut &[u8]) -> Result<i32, &'static str> {
    (bytes.remaining() >= 4)
        .then(|| bytes.get_i32())
        .ok_or("truncated value")
}

/// The longest group id the coordinator stores (the key's string has an i16 length).
pub const GROUP_ID_BYTES_MAX: usize = i16::MAX as usize;

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + 2 + group.len() + 2 + topic.len() + 4);
    out.put_i16(OFFSET_KEY_VERSION);
    put_string(&mut out, group);
    put_string(&mut out, topic);
    out.put_i32(partition);
    out.freeze()
}

pub fn offset_value(committed: &CommittedOffset) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + 8 + 4 + 2 + committed.metadata.len() + 8);
    out.put_i16(OFFSET_VALUE_VERSION);
    out.put_i64(committed.offset);
    out.put_i32(committed.leader_epoch);
    put_string(&mut out, &committed.metadata);
    out.put_i64(committed.commit_timestamp_ms);
    out.freeze()
}

/// Reads one record's key and value. Values of versions 0-3 are understood (the versions of
/// Kafka's classic coordinator with fixed-width strings).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<OffsetsRecord, &'static str> {
    let mut key = key;
    if key.remaining() < 2 {
        return Err("truncated key");
    }
    match key.get_i16() {
        0 | OFFSET_KEY_VERSION => {
            let group = get_string(&mut key)?;
            let topic = get_string(&mut key)?;
            let partition = get_i32(&mut key)?;
            let value = match value {
                None => None,
                Some(mut value) => {
                    if value.remaining() < 2 {
                        return Err("truncated value");
                    }
                    let version = value.get_i16();
                    let offset = get_i64(&mut value)?;
                    let leader_epoch = if version >= 3 {
                        get_i32(&mut value)?
                    } else {
                        -1
                    };
                    let metadata = get_string(&mut value)?;
                    let commit_timestamp_ms = get_i64(&mut value)?;
                    if !(0..=3).contains(&version) {
                        return Err("unknown offset value version");
                    }
                    Some(CommittedOffset {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_timestamp_ms,
                    })
                }
            };
            Ok(OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        GROUP_KEY_VERSION => Ok(OffsetsRecord::GroupMetadata {
            group: get_string(&mut key)?,
        }),
        _ => Err("unknown key version"),
    }
}

/// One uncompressed v2 batch holding `records` (key, value) in order, stamped `now_ms`.
pub fn batch(records: &[(Bytes, Option<Bytes>)], now_ms: i64) -> Result<Bytes, String> {
    if records.is_empty() {
        return Err("an offsets batch needs at least one record".into());
    }
    let mut builder = BatchBuilder::default();
    for (key, value) in records {
        builder.push(now_ms, Some(key), value.as_deref());
    }
    Ok(Bytes::from(builder.finish()))
}

/// A stored record: its offset in the log, key and value.
pub type StoredRecord = (i64, Option<Bytes>, Option<Bytes>);

/// Every data record of stored batches, in log order (control batches skipped).
pub fn read_batches(bytes: Bytes) -> Result<Vec<StoredRecord>, String> {
    let mut records = Vec::new();
    let mut walk = BatchWalk::new(&bytes);
    for (header, range) in walk.by_ref() {
        if header.is_control() {
            continue;
        }
        let batch = &bytes[range];
        let section =
            records_section(batch).map_err(|error| format!("reading an offsets batch: {error}"))?;
        let count = usize::try_from(header.records_count)
            .map_err(|_| "negative record count".to_string())?;
        for record in RecordIter::new(&section, count) {
            let record = record.map_err(|error| format!("reading an offsets batch: {error}"))?;
            records.push((
                header.base_offset.0.saturating_add(record.offset_delta),
                record.key.map(Bytes::copy_from_slice),
                record.value.map(Bytes::copy_from_slice),
            ));
        }
    }
    if walk.position() != bytes.len() {
        return Err(format!(
            "reading an offsets batch: {} bytes after the last whole batch",
            bytes.len() - walk.position()
        ));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_and_tombstones_round_trip_through_a_batch() {
        let committed = CommittedOffset {
            offset: 42,
            leader_epoch: 0,
            metadata: "meta".into(),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        let batch = batch(
            &[
                (offset_key("g", "t", 3), Some(offset_value(&committed))),
                (offset_key("g", "t", 4), None),
            ],
            1,
        )
        .unwrap();
        let header = storage::record_batch::check_integrity(&batch).unwrap();
        assert_eq!(header.last_offset_delta, 1);
        let records = read_batches(batch).unwrap();
        let decoded: Vec<OffsetsRecord> = records
            .iter()
            .map(|(_, key, value)| decode(key.as_ref().unwrap(), value.as_deref()).unwrap())
            .collect();
        assert_eq!(
            decoded,
            vec![
                OffsetsRecord::Offset {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 3,
                    value: Some(committed),
                },
                OffsetsRecord::Offset {
                    group: "g".into(),
                    topic: "t".into(),
                    partition: 4,
                    value: None,
                },
            ]
        );
    }

    #[test]
    fn damaged_keys_and_values_are_errors_not_panics() {
        let key = offset_key("group", "topic", 1);
        for cut in 0..key.len() {
            assert!(decode(&key[..cut], None).is_err(), "cut at {cut}");
        }
        let value = offset_value(&CommittedOffset {
            offset: 1,
            leader_epoch: 2,
            metadata: "m".into(),
            commit_timestamp_ms: 3,
        });
        for cut in 0..value.len() {
            assert!(decode(&key, Some(&value[..cut])).is_err(), "cut at {cut}");
        }
        assert!(decode(&[0, 9, 0, 0], None).is_err());
        let mut negative = BytesMut::new();
        negative.put_i16(1);
        negative.put_i16(-5);
        assert!(decode(&negative, None).is_err());
    }
}
