//! One segment file of a partition log and its sparse indexes.
//!
//! The offset index maps a relative offset to a file position every `INDEX_INTERVAL_BYTES`; the
//! time index maps the largest timestamp seen so far to the offset where it was reached. Both are
//! kept in memory and rebuilt from the log when the segment is opened, because after a crash only
//! the log itself is trustworthy (DESIGN section 3).

use crate::dma::SegmentFile;
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

pub(crate) struct Segment {
    pub base_offset: Offset,
    pub file: SegmentFile,
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
    pub fn new(base_offset: Offset, file: SegmentFile, allocated: u64) -> Segment {
        Segment {
            base_offset,
            file,
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

    /// Records a batch that now sits at `position` with `total_bytes` bytes.
    pub fn note_batch(&mut self, header: &BatchHeader, position: u64, total_bytes: u64) {
        assert_eq!(position, self.size, "batches are appended contiguously");
        assert_eq!(header.base_offset, self.next_offset, "offsets are dense");
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
