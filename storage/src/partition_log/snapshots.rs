//! Producer-state snapshots: written at every roll (covering every batch below the new
//! segment's base), the newest two kept, and replayed at open from the newest valid one plus the
//! log after it.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use tracing::{info, warn};

use super::{now_ms, LogContext, LogError, PartitionLog};
use crate::io::{read_small_file, write_small_file, Disk, DiskFile};
use crate::limits::SCAN_CHUNK_BYTES;
use crate::producer_state::ProducerStateTable;
use crate::record_batch::BatchWalk;
use crate::segment::Segment;
use crate::Offset;

/// A snapshot holds at most a few hundred bytes per producer; anything far larger is not ours.
const SNAPSHOT_FILE_BYTES_MAX: usize = 256 * 1024 * 1024;

fn snapshot_file_name(offset: Offset) -> String {
    format!("{:020}.snapshot", offset.0)
}

/// Offsets of the producer snapshot files in a partition directory, oldest first.
async fn list_snapshots(disk: &dyn Disk, directory: &Path) -> Vec<Offset> {
    let Ok(names) = disk.list(directory).await else {
        return Vec::new();
    };
    let mut offsets: Vec<Offset> = names
        .iter()
        .filter_map(|name| {
            let stem = name.strip_suffix(".snapshot")?;
            (stem.len() == 20).then(|| stem.parse().ok().map(Offset))?
        })
        .collect();
    offsets.sort();
    offsets
}

/// Removes snapshots of offsets past `log_end`: they describe batches recovery cut, and a later
/// roll at the same offsets would otherwise find them and believe them.
pub(super) async fn remove_snapshots_after(disk: &dyn Disk, directory: &Path, log_end: Offset) {
    for offset in list_snapshots(disk, directory).await {
        if offset > log_end {
            let path = directory.join(snapshot_file_name(offset));
            if let Err(error) = disk.remove_file(&path).await {
                warn!(path = %path.display(), %error, "cannot remove a stale producer snapshot");
            }
        }
    }
}

impl PartitionLog {
    /// Snapshots the producer state as of `offset` (the new active segment's base, so every
    /// batch below it is covered) and removes all but the newest two snapshots.
    pub(super) async fn write_producer_snapshot(&self, offset: Offset) -> Result<(), LogError> {
        self.expire_producers();
        let bytes = self.state.borrow().producers.snapshot_bytes(offset);
        let disk = &*self.context.disk;
        let path = self.directory.join(snapshot_file_name(offset));
        write_small_file(disk, &self.directory, &path, &bytes)
            .await
            .map_err(|error| self.write_failed(error))?;
        let snapshots = list_snapshots(disk, &self.directory).await;
        let keep_from = snapshots.len().saturating_sub(2);
        for old in &snapshots[..keep_from] {
            let old_path = self.directory.join(snapshot_file_name(*old));
            if let Err(error) = disk.remove_file(&old_path).await {
                warn!(path = %old_path.display(), %error, "cannot remove an old producer snapshot");
            }
        }
        Ok(())
    }
}

/// The producer state after recovery: the newest valid snapshot inside the log, then every
/// batch after it replayed from the log (all of the log if there is no usable snapshot).
pub(super) async fn rebuild_producer_state(
    context: &LogContext,
    directory: &Path,
    segments: &BTreeMap<Offset, Segment>,
    active_file: &Rc<dyn DiskFile>,
    log_start_offset: Offset,
    log_end_offset: Offset,
) -> Result<ProducerStateTable, LogError> {
    let disk = &*context.disk;
    let mut table = ProducerStateTable::default();
    let mut replay_from = log_start_offset;
    // Producers found again get a fresh expiration lease from now: the restart is not their
    // silence.
    let now = now_ms();
    for offset in list_snapshots(disk, directory).await.into_iter().rev() {
        if offset > log_end_offset || offset < log_start_offset {
            continue;
        }
        let path = directory.join(snapshot_file_name(offset));
        let Some(bytes) = read_small_file(disk, &path, SNAPSHOT_FILE_BYTES_MAX).await? else {
            continue;
        };
        match ProducerStateTable::from_snapshot(&bytes) {
            Some((covered, loaded)) if covered == offset => {
                table = loaded;
                replay_from = offset;
                break;
            }
            _ => warn!(path = %path.display(), "unreadable producer snapshot; trying an older one"),
        }
    }
    let active_base = segments.keys().next_back().copied();
    for segment in segments
        .values()
        .filter(|segment| segment.next_offset > replay_from)
    {
        // The active segment's file is the log's own; sealed ones go through the cache.
        let file = if Some(segment.base_offset) == active_base {
            active_file.clone()
        } else {
            context.files.open(segment.path()).await?
        };
        let mut position = if replay_from > segment.base_offset {
            segment.position_for_offset(replay_from)
        } else {
            0
        };
        while position < segment.size {
            let length = ((segment.size - position) as usize).min(SCAN_CHUNK_BYTES);
            let chunk = file.read(position, length).await?;
            let mut walk = BatchWalk::new(&chunk);
            for (header, _) in walk.by_ref() {
                if header.base_offset >= replay_from {
                    table.record(&header, now);
                }
            }
            if walk.position() > 0 {
                position += walk.position() as u64;
                continue;
            }
            // A batch larger than the chunk: its header is all the replay needs.
            let Some((header, total)) = super::read::larger_batch(&chunk) else {
                break;
            };
            if header.base_offset >= replay_from {
                table.record(&header, now);
            }
            position += total as u64;
        }
    }
    info!(
        directory = %directory.display(),
        producers = table.len(),
        replayed_from = replay_from.0,
        "producer state rebuilt"
    );
    Ok(table)
}
