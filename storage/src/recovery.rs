//! Scanning a segment on open: rebuild its indexes, find its logical end, and tell a torn tail
//! (safe to cut) from corruption (never cut).
//!
//! A crash can leave the last segment with a partly written batch, or with garbage or zeros
//! after the last complete one. Those bytes were never acknowledged (an ack waits for the
//! `fdatasync` that covered them), so they are truncated. An invalid batch that is followed by a
//! valid one, or that sits in an older segment, cannot come from a torn append: truncating there
//! would delete acknowledged data, so the partition is refused instead and the operator is told
//! where.

use crate::dma::{IoError, SegmentFile};
use crate::limits::{BATCH_HEADER_BYTES, MAX_BATCH_BYTES, SCAN_CHUNK_BYTES};
use crate::record_batch::{check_integrity, BatchHeader, MAGIC_AT};
use crate::segment::Segment;
use crate::Offset;

/// What a scan found after the last valid batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// The valid batches run to the end of the file, or only zeros follow.
    Clean,
    /// Something invalid starts at `position` and nothing valid follows it.
    TornTail { position: u64, nonzero_bytes: u64 },
    /// Something invalid starts at `position` and a valid batch follows at `valid_at`.
    Corrupt {
        position: u64,
        valid_at: u64,
        reason: String,
    },
}

/// Why the batch at a position was not accepted during a scan.
fn reject_reason(
    bytes: &[u8],
    expected_offset: Offset,
    verify_crc: bool,
) -> Result<BatchHeader, String> {
    let header = BatchHeader::parse(bytes).ok_or("truncated batch header")?;
    let total = header
        .total_bytes()
        .filter(|total| (BATCH_HEADER_BYTES..=MAX_BATCH_BYTES).contains(total))
        .ok_or_else(|| format!("implausible batchLength {}", header.batch_length))?;
    if bytes.len() < total {
        return Err("batch runs past the end of the file".to_string());
    }
    if header.base_offset != expected_offset {
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
pub(crate) async fn scan_segment(
    segment: &mut Segment,
    file_size: u64,
    verify_crc: bool,
) -> Result<ScanEnd, IoError> {
    let mut position = 0u64;
    let mut chunk_start = 0u64;
    let mut chunk = segment.file.read(0, SCAN_CHUNK_BYTES).await?;
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
            chunk = segment
                .file
                .read(position, wanted.max(SCAN_CHUNK_BYTES))
                .await?;
            at = 0;
        }
        match reject_reason(&chunk[at..], segment.next_offset, verify_crc) {
            Ok(header) => {
                let total = header.total_bytes().unwrap_or(0) as u64;
                segment.note_batch(&header, position, total);
                position += total;
            }
            Err(reason) => {
                return classify_invalid(&segment.file, position, file_size, reason).await;
            }
        }
    }
}

/// Looks past an invalid position for any valid batch, reading the rest of the file in chunks.
async fn classify_invalid(
    file: &SegmentFile,
    position: u64,
    file_size: u64,
    reason: String,
) -> Result<ScanEnd, IoError> {
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
                return Ok(ScanEnd::Corrupt {
                    position,
                    valid_at: candidate_position,
                    reason,
                });
            }
        }
        chunk_start += chunk.len() as u64;
    }
    if nonzero_bytes == 0 {
        Ok(ScanEnd::Clean)
    } else {
        Ok(ScanEnd::TornTail {
            position,
            nonzero_bytes,
        })
    }
}
