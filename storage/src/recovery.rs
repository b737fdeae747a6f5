//! Scanning a segment on open: rebuild its indexes, find its logical end, and say where the valid
//! batches stop and why.
//!
//! What happens at that place is the opener's decision, made against the partition's recovery
//! point (`partition_log::open`): below it every byte was synced, so an invalid batch is
//! corruption; above it the bytes were never covered by a completed sync and are cut. A log from
//! before recovery points existed has none, and falls back to the older rule: a torn tail (only
//! garbage after the last valid batch) is cut, an invalid batch followed by a valid one is
//! refused (`valid_batch_after`).

use crate::io::{DiskFile, IoError};
use crate::limits::{BATCH_HEADER_BYTES, MAX_BATCH_BYTES, SCAN_CHUNK_BYTES};
use crate::record_batch::{check_stored_integrity as check_integrity, BatchHeader, MAGIC_AT};
use crate::segment::Segment;
use crate::Offset;

/// Where a scan of a segment stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Valid batches run to the end of the file.
    Clean,
    /// The bytes at `position` are not the next valid batch (garbage, zeros, a torn write, a
    /// wrong offset, a bad CRC); every batch before it is valid and noted in the segment.
    Invalid { position: u64, reason: String },
}

/// Why the batch at a position was not accepted during a scan.
fn reject_reason(
    bytes: &[u8],
    expected_offset: Offset,
    verify_crc: bool,
    allow_gaps: bool,
) -> Result<BatchHeader, String> {
    let header = BatchHeader::parse(bytes).ok_or("truncated batch header")?;
    let total = header
        .total_bytes()
        .filter(|total| (BATCH_HEADER_BYTES..=MAX_BATCH_BYTES).contains(total))
        .ok_or_else(|| format!("implausible batchLength {}", header.batch_length))?;
    if bytes.len() < total {
        return Err("batch runs past the end of the file".to_string());
    }
    // Compaction leaves gaps in sealed segments (whole batches gone); an offset going back is
    // damage everywhere, and so is any gap where appends write (the last segment).
    let in_order = if allow_gaps {
        header.base_offset >= expected_offset
    } else {
        header.base_offset == expected_offset
    };
    if !in_order {
        return Err(format!(
            "base offset {} where {} was expected",
            header.base_offset, expected_offset
        ));
    }
    if verify_crc {
        check_integrity(&bytes[..total]).map_err(|error| error.to_string())?;
    } else if header.magic != 2 {
        return Err(format!("magic {}", header.magic));
    }
    Ok(header)
}

/// Scans `segment` from its start, noting every valid batch in its indexes. `verify_crc` is set
/// after an unclean shutdown; a clean one only checks the length chain and offsets.
/// `allow_gaps` is set for a sealed segment, which compaction may have left with gaps.
pub(crate) async fn scan_segment(
    file: &dyn DiskFile,
    segment: &mut Segment,
    file_size: u64,
    verify_crc: bool,
    allow_gaps: bool,
) -> Result<ScanEnd, IoError> {
    let mut position = 0u64;
    let mut chunk_start = 0u64;
    let mut chunk = file.read(0, SCAN_CHUNK_BYTES).await?;
    loop {
        if position >= file_size {
            return Ok(ScanEnd::Clean);
        }
        let mut at = (position - chunk_start) as usize;
        // Make sure the chunk holds at least a header, and the whole batch its header announces.
        let wanted = BatchHeader::parse(&chunk[at.min(chunk.len())..])
            .and_then(|header| header.total_bytes())
            .filter(|total| *total <= MAX_BATCH_BYTES)
            .unwrap_or(BATCH_HEADER_BYTES)
            .max(BATCH_HEADER_BYTES);
        if chunk.len() < at + wanted && chunk_start + (chunk.len() as u64) < file_size {
            chunk_start = position;
            chunk = file.read(position, wanted.max(SCAN_CHUNK_BYTES)).await?;
            at = 0;
        }
        match reject_reason(
            &chunk[at.min(chunk.len())..],
            segment.next_offset,
            verify_crc,
            allow_gaps,
        ) {
            Ok(header) => {
                let total = header.total_bytes().unwrap_or(0) as u64;
                segment.note_batch(&header, position, total);
                position += total;
            }
            Err(reason) => return Ok(ScanEnd::Invalid { position, reason }),
        }
    }
}

/// For a log without a recovery point: whether anything after `position` is a valid batch (the
/// first such position), and how many bytes after `position` are not zero. A valid batch after
/// an invalid one cannot come from a torn append, so such a log is refused rather than cut.
pub(crate) async fn valid_batch_after(
    file: &dyn DiskFile,
    position: u64,
    file_size: u64,
) -> Result<(Option<u64>, u64), IoError> {
    let mut nonzero_bytes = 0u64;
    let mut chunk_start = position;
    while chunk_start < file_size {
        let chunk = file.read(chunk_start, SCAN_CHUNK_BYTES).await?;
        if chunk.is_empty() {
            break;
        }
        nonzero_bytes += chunk.iter().filter(|byte| **byte != 0).count() as u64;
        // A candidate is any position whose magic byte says 2; the CRC decides. Candidates
        // whose batch crosses the chunk end are re-read whole. The invalid position itself is a
        // candidate too: a batch there with a good CRC but the wrong offset is not a torn write.
        for at in 0..chunk.len() {
            if chunk.get(at + MAGIC_AT) != Some(&2) {
                continue;
            }
            let Some(header) = BatchHeader::parse(&chunk[at..]) else {
                continue;
            };
            let Some(total) = header
                .total_bytes()
                .filter(|total| (BATCH_HEADER_BYTES..=MAX_BATCH_BYTES).contains(total))
            else {
                continue;
            };
            let candidate_position = chunk_start + at as u64;
            if candidate_position + total as u64 > file_size {
                continue;
            }
            let valid = if at + total <= chunk.len() {
                check_integrity(&chunk[at..at + total]).is_ok()
            } else {
                let whole = file.read(candidate_position, total).await?;
                check_integrity(&whole).is_ok()
            };
            if valid {
                return Ok((Some(candidate_position), nonzero_bytes));
            }
        }
        chunk_start += chunk.len() as u64;
    }
    Ok((None, nonzero_bytes))
}
