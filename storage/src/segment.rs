//! One segment file of a partition log and its sparse indexes.
//!
//! The offset index maps an offset to a file position every `INDEX_INTERVAL_BYTES`; the time
//! index maps the largest timestamp seen so far to the offset where it was reached. Both live in
//! memory. When a segment is sealed (rolled), they are written with its summary to one
//! `<base>.index` file behind a magic, a version, a length and a CRC-32C, after the segment itself
//! is synced; opening a sealed segment with a valid index file then needs no scan. The active
//! segment has no index file: it is always rebuilt from the log, which after a crash is the only
//! thing to trust (DESIGN section 3). Kafka keeps `.index` and `.timeindex` apart; one file here
//! costs one sync per roll instead of two.
//!
//! A segment knows its file by path: the active segment's file stays open in the log, sealed
//! segments are opened on demand through the shard's `FileCache`.

use std::path::{Path, PathBuf};

use crate::limits::INDEX_INTERVAL_BYTES;
use crate::record_batch::BatchHeader;
use crate::Offset;

pub(crate) fn segment_file_name(base_offset: Offset) -> String {
    format!("{:020}.log", base_offset.0)
}

/// Parses `00000000000000000042.log` into offset 42.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Offset)
}

pub(crate) fn index_file_name(base_offset: Offset) -> String {
    format!("{:020}.index", base_offset.0)
}

const INDEX_MAGIC: &[u8; 4] = b"KIDX";
const INDEX_VERSION: u16 = 1;

pub(crate) struct Segment {
    pub base_offset: Offset,
    pub path: PathBuf,
    /// Logical size: the bytes of whole batches. The file may be larger (preallocated zeros).
    pub size: u64,
    /// Bytes allocated on disk (the file's size while it is the active segment).
    pub allocated: u64,
    /// One past the last offset stored in this segment.
    pub next_offset: Offset,
    /// Largest batch `maxTimestamp` in the segment, -1 while it is empty.
    pub max_timestamp: i64,
    /// When the first batch was appended (for `segment.ms`); opening a segment resets it.
    pub first_append_ms: Option<i64>,
    offset_index: Vec<(Offset, u64)>,
    time_index: Vec<(i64, Offset)>,
    bytes_since_index_entry: u64,
}

impl Segment {
    pub fn new(base_offset: Offset, path: PathBuf, allocated: u64) -> Segment {
        Segment {
            base_offset,
            path,
            size: 0,
            allocated,
            next_offset: base_offset,
            max_timestamp: -1,
            first_append_ms: None,
            offset_index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index_entry: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first batch's `maxTimestamp` (the time index's first entry), -1 if none has one:
    /// how old the segment's oldest records are, for `max.compaction.lag.ms`.
    pub fn first_timestamp(&self) -> i64 {
        self.time_index
            .first()
            .map_or(-1, |(timestamp, _)| *timestamp)
    }

    /// Records a batch that now sits at `position` with `total_bytes` bytes.
    pub fn note_batch(&mut self, header: &BatchHeader, position: u64, total_bytes: u64) {
        assert_eq!(position, self.size, "batches are appended contiguously");
        // Dense where appends write; compaction leaves gaps in sealed segments.
        assert!(header.base_offset >= self.next_offset, "offsets go forward");
        if self.offset_index.is_empty() || self.bytes_since_index_entry >= INDEX_INTERVAL_BYTES {
            self.offset_index.push((header.base_offset, position));
            self.bytes_since_index_entry = 0;
        }
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.time_index
                .push((header.max_timestamp, header.base_offset));
        }
        self.bytes_since_index_entry += total_bytes;
        self.size = position + total_bytes;
        self.next_offset = header.next_offset();
    }

    /// The index file content: header (magic, version, reserved, payload length, CRC-32C of the
    /// payload), then the summary and both indexes, all big-endian.
    pub fn encode_index(&self) -> Vec<u8> {
        let mut payload =
            Vec::with_capacity(40 + 8 + self.offset_index.len() * 16 + self.time_index.len() * 16);
        payload.extend_from_slice(&self.base_offset.0.to_be_bytes());
        payload.extend_from_slice(&self.next_offset.0.to_be_bytes());
        payload.extend_from_slice(&self.size.to_be_bytes());
        payload.extend_from_slice(&self.max_timestamp.to_be_bytes());
        payload.extend_from_slice(&(self.offset_index.len() as u32).to_be_bytes());
        for (offset, position) in &self.offset_index {
            payload.extend_from_slice(&offset.0.to_be_bytes());
            payload.extend_from_slice(&position.to_be_bytes());
        }
        payload.extend_from_slice(&(self.time_index.len() as u32).to_be_bytes());
        for (timestamp, offset) in &self.time_index {
            payload.extend_from_slice(&timestamp.to_be_bytes());
            payload.extend_from_slice(&offset.0.to_be_bytes());
        }
        crate::envelope::seal(INDEX_MAGIC, INDEX_VERSION, &payload)
    }

    /// Restores a sealed segment from its index file, or `None` if the file is not a valid index
    /// of exactly this segment (then the caller scans the log instead).
    pub fn from_index(
        base_offset: Offset,
        path: PathBuf,
        file_size: u64,
        index: &[u8],
    ) -> Option<Segment> {
        let payload = crate::envelope::open(index, INDEX_MAGIC, INDEX_VERSION)?;
        let mut at = 0usize;
        let mut take = |width: usize| -> Option<&[u8]> {
            let field = payload.get(at..at + width)?;
            at += width;
            Some(field)
        };
        let read_i64 = |field: Option<&[u8]>| -> Option<i64> {
            Some(i64::from_be_bytes(field?.try_into().ok()?))
        };
        let indexed_base = read_i64(take(8))?;
        let next_offset = read_i64(take(8))?;
        let size = read_i64(take(8))? as u64;
        let max_timestamp = read_i64(take(8))?;
        if indexed_base != base_offset.0 || size != file_size || next_offset < base_offset.0 {
            return None;
        }
        let offset_count = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let mut offset_index = Vec::with_capacity(offset_count.min(payload.len() / 16));
        for _ in 0..offset_count {
            let offset = read_i64(take(8))?;
            let position = read_i64(take(8))? as u64;
            if position >= size {
                return None;
            }
            offset_index.push((Offset(offset), position));
        }
        let time_count = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let mut time_index = Vec::with_capacity(time_count.min(payload.len() / 16));
        for _ in 0..time_count {
            let timestamp = read_i64(take(8))?;
            let offset = read_i64(take(8))?;
            time_index.push((timestamp, Offset(offset)));
        }
        Some(Segment {
            base_offset,
            path,
            size,
            allocated: file_size,
            next_offset: Offset(next_offset),
            max_timestamp,
            first_append_ms: None,
            offset_index,
            time_index,
            bytes_since_index_entry: 0,
        })
    }

    /// The file position of the last indexed batch at or before `offset`.
    pub fn position_for_offset(&self, offset: Offset) -> u64 {
        let index = self
            .offset_index
            .partition_point(|(indexed, _)| *indexed <= offset);
        if index == 0 {
            0
        } else {
            self.offset_index[index - 1].1
        }
    }

    /// A file position from which a scan finds the first batch with `maxTimestamp >= target`.
    pub fn position_for_timestamp(&self, target_ms: i64) -> u64 {
        let index = self
            .time_index
            .partition_point(|(timestamp, _)| *timestamp < target_ms);
        if index == 0 {
            return 0;
        }
        // The entry before `index` is the last whose running max is below the target: every
        // batch up to its offset is older than the target, so start from that batch.
        self.position_for_offset(self.time_index[index - 1].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_strangers() {
        assert_eq!(segment_file_name(Offset(42)), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log"),
            Some(Offset(42))
        );
        assert_eq!(parse_segment_file_name("42.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.index"), None);
    }
}
