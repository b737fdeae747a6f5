//! Truncating a closed log to an offset: what a follower does before it fetches from a new
//! leader whose log ends earlier (KIP-101/KIP-279). The log is closed first (everything synced,
//! its tasks stopped), truncated on disk, and opened again, so the open log's state is never
//! rewound in place: recovery rebuilds it (producer state included) from what is left.

use std::path::Path;

use tracing::warn;

use super::epochs::EpochCache;
use super::snapshots::remove_snapshots_after;
use super::{LogContext, LogError, PartitionLog};
use crate::io::read_small_file;
use crate::limits::BATCH_HEADER_BYTES;
use crate::record_batch::BatchHeader;
use crate::recovery_point::{self, RecoveryPoint};
use crate::segment::{index_file_name, parse_segment_file_name, segment_file_name, Segment};
use crate::Offset;

const INDEX_FILE_BYTES_MAX: usize = 64 * 1024 * 1024;

impl PartitionLog {
    /// Removes every batch of the closed log in `directory` that holds an offset at or past
    /// `offset` (a batch that spans it goes whole), durably: the segment that holds it is cut,
    /// the later ones removed, and the recovery point, producer snapshots and epoch cache made
    /// to match. Returns the log's new end. Open the log again to use it.
    pub async fn truncate_closed(
        context: &LogContext,
        directory: &Path,
        offset: Offset,
    ) -> Result<Offset, LogError> {
        let disk = &*context.disk;
        let mut bases: Vec<Offset> = disk
            .list(directory)
            .await?
            .iter()
            .filter_map(|name| parse_segment_file_name(name))
            .collect();
        bases.sort();
        let Some(first) = bases.first().copied() else {
            return Ok(offset);
        };
        // The segment that holds the cut: the last one starting at or before it.
        let holding = bases
            .iter()
            .copied()
            .rfind(|base| *base <= offset)
            .unwrap_or(first);
        let path = directory.join(segment_file_name(holding));
        let file = disk.open(&path, false).await?;
        let size = file.size().await?;
        // Start from the index where there is one (a sealed segment), else from the front.
        let index = read_small_file(
            disk,
            &directory.join(index_file_name(holding)),
            INDEX_FILE_BYTES_MAX,
        )
        .await?;
        let mut position = index
            .and_then(|index| Segment::from_index(holding, path.clone(), size, &index))
            .map_or(0, |segment| segment.position_for_offset(offset));
        let mut end = holding;
        if position > 0 {
            // The batch the index points at starts at or before the cut; its base is the end
            // if it is the one cut.
            let header = file.read(position, BATCH_HEADER_BYTES).await?;
            end = BatchHeader::parse(&header).map_or(holding, |header| header.base_offset);
        }
        while position < size {
            let bytes = file.read(position, BATCH_HEADER_BYTES).await?;
            let Some(header) = BatchHeader::parse(&bytes) else {
                break;
            };
            let Some(total) = header
                .total_bytes()
                .filter(|total| *total >= BATCH_HEADER_BYTES && position + *total as u64 <= size)
            else {
                break;
            };
            if header.next_offset() > offset {
                break;
            }
            end = header.next_offset();
            position += total as u64;
        }
        let cut_from = end;
        // The recovery point and the epoch cache move down first: a crash before the files
        // are cut leaves batches past the recovery point, which recovery keeps if they are
        // whole and the next check against the leader cuts again; never a recovery point
        // past the log's end, which would refuse the log as corrupt.
        let stored = recovery_point::load(disk, directory).await?;
        let log_start = stored.map_or(first, |point| point.log_start).min(cut_from);
        let point = RecoveryPoint {
            sequence: stored.map_or(1, |point| point.sequence + 1),
            offset: cut_from,
            segment_base: holding,
            position,
            log_start,
        };
        recovery_point::store(disk, directory, &point).await?;
        let mut epochs = EpochCache::load(disk, directory, log_start, Offset(i64::MAX)).await?;
        if cut_from <= log_start {
            epochs.reset(disk, directory).await?;
        } else {
            epochs.truncate_from(disk, directory, cut_from).await?;
        }
        file.truncate(position).await?;
        file.fdatasync().await?;
        drop(file);
        context.files.forget(&path);
        let index_path = directory.join(index_file_name(holding));
        if disk.exists(&index_path).await? {
            disk.remove_file(&index_path).await?;
        }
        let mut removed = 0;
        for base in bases.iter().copied().filter(|base| *base > holding) {
            let later = directory.join(segment_file_name(base));
            context.files.forget(&later);
            disk.remove_file(&later).await?;
            let later_index = directory.join(index_file_name(base));
            if disk.exists(&later_index).await? {
                disk.remove_file(&later_index).await?;
            }
            removed += 1;
        }
        disk.sync_directory(directory).await?;
        remove_snapshots_after(disk, directory, cut_from).await;
        warn!(
            directory = %directory.display(),
            requested = offset.0,
            log_end_offset = cut_from.0,
            segments_removed = removed,
            "truncated the log to follow a new leader"
        );
        Ok(cut_from)
    }
}
