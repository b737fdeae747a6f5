//! Moving the log start forward: retention (`retention.ms`, `retention.bytes`) and
//! DeleteRecords.
//!
//! The new start is stored in the recovery point (`recovery_point`) before anything else
//! happens: before it is shown to a client and before a segment file is removed. A crash at any
//! point then leaves a log whose start is the new one, with perhaps some of the segments wholly
//! below it still on disk, which opening the log removes (`open`). So the start never moves
//! back, and no segment goes while a client could still be told it is there.
//!
//! Only whole segments are removed, and never the active one. A start inside a segment
//! (DeleteRecords) hides the offsets below it: reads of them get `OffsetOutOfRange`, and the
//! segment goes once the start passes its end. Removing files goes through the shard's `Disk`,
//! whose real implementation unlinks on a blocking thread, so the event loop does not wait.

use std::path::Path;

use tracing::info;

use super::{LogContext, LogError, PartitionLog};
use crate::io::IoError;
use crate::segment::{index_file_name, segment_file_name};
use crate::Offset;

/// What retention keeps: `-1` (or any negative value) in either means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `retention.ms`: a sealed segment whose newest record is older than this goes.
    pub ms: i64,
    /// `retention.bytes`: the oldest sealed segments go while the log is larger than this
    /// without them.
    pub bytes: i64,
}

impl Retention {
    pub const UNLIMITED: Retention = Retention { ms: -1, bytes: -1 };
}

impl PartitionLog {
    /// The log start retention wants at `now_ms`: the base of the first segment to keep, or the
    /// current start if nothing is due. Kafka's rules: whole sealed segments from the oldest
    /// on, by time while a segment's largest timestamp is more than `ms` before now, by size
    /// while the log without the segment is still at least `bytes` large.
    pub fn retention_start(&self, retention: Retention, now_ms: i64) -> Offset {
        let state = self.state.borrow();
        let mut size: u64 = state.segments.values().map(|segment| segment.size).sum();
        let mut start = state.log_start_offset;
        let sealed = state.segments.len().saturating_sub(1);
        for segment in state.segments.values().take(sealed) {
            let expired = retention.ms >= 0
                && segment.max_timestamp >= 0
                && now_ms.saturating_sub(segment.max_timestamp) > retention.ms;
            let oversized =
                retention.bytes >= 0 && size.saturating_sub(segment.size) >= retention.bytes as u64;
            if !(expired || oversized) {
                break;
            }
            size -= segment.size;
            start = start.max(segment.next_offset);
        }
        start
    }

    /// Applies the log's retention (`LogConfig::retention`) at `now_ms`; returns the log start
    /// afterwards.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<Offset, LogError> {
        let retention = self.config.borrow().retention;
        let start = self.retention_start(retention, now_ms);
        self.advance_log_start(start).await
    }

    /// Moves the log start forward to `new_start` (at most the log end; a start at or below the
    /// current one changes nothing), durably, then removes the segments wholly below it.
    /// Returns the log start afterwards. DeleteRecords checks its bound (the high watermark)
    /// before calling this.
    pub async fn advance_log_start(&self, new_start: Offset) -> Result<Offset, LogError> {
        // A start above what is synced (relaxed mode's high watermark is written data) would
        // be stored ahead of data a power loss could take back: sync up to it first.
        if new_start.min(self.log_end_offset()) > self.durable_offset() {
            self.flush().await?;
        }
        // One recovery-point write at a time: the checkpointer's and this one's each carry the
        // other's latest figures.
        let checkpoint = self.checkpoint_lock.lock().await;
        let Some(_inside) = self.gate.enter() else {
            return Err(LogError::Offline {
                path: self.directory.clone(),
                reason: "the partition is being deleted".into(),
            });
        };
        self.check_online()?;
        let point = {
            let mut state = self.state.borrow_mut();
            let new_start = new_start.min(state.log_end_offset);
            if new_start <= state.log_start_offset {
                return Ok(state.log_start_offset);
            }
            state.log_start_stored = state.log_start_stored.max(new_start);
            state.next_recovery_point()
        };
        self.write_recovery_point(&point).await?;
        let removed: Vec<(Offset, u64)> = {
            let mut state = self.state.borrow_mut();
            state.log_start_offset = state.log_start_offset.max(point.log_start);
            let active_base = state.active().base_offset;
            let below: Vec<Offset> = state
                .segments
                .values()
                .take_while(|segment| {
                    segment.base_offset != active_base && segment.next_offset <= point.log_start
                })
                .map(|segment| segment.base_offset)
                .collect();
            below
                .into_iter()
                .filter_map(|base| state.segments.remove(&base))
                .map(|segment| (segment.base_offset, segment.size))
                .collect()
        };
        drop(checkpoint);
        // A read-ahead of a removed segment would hold its disk blocks past the unlink.
        {
            let mut read_ahead = self.read_ahead.borrow_mut();
            let stale = removed.iter().any(|(base, _)| {
                read_ahead.is_for(
                    &self
                        .directory
                        .join(crate::segment::segment_file_name(*base)),
                )
            });
            if stale {
                *read_ahead = super::read_ahead::ReadAhead::Idle;
            }
        }
        for (base, _) in &removed {
            remove_segment_files(&self.context, &self.directory, *base).await?;
        }
        if !removed.is_empty() {
            self.context.disk.sync_directory(&self.directory).await?;
        }
        info!(
            directory = %self.directory.display(),
            log_start_offset = point.log_start.0,
            segments_removed = removed.len(),
            bytes_removed = removed.iter().map(|(_, size)| size).sum::<u64>(),
            "log start moved"
        );
        Ok(point.log_start)
    }
}

/// Removes a segment's log and index files (either may already be gone) and drops any open
/// handle the shard's file cache holds for it. The caller syncs the directory.
pub(super) async fn remove_segment_files(
    context: &LogContext,
    directory: &Path,
    base: Offset,
) -> Result<(), IoError> {
    for path in [
        directory.join(segment_file_name(base)),
        directory.join(index_file_name(base)),
    ] {
        context.files.forget(&path);
        match context.disk.remove_file(&path).await {
            Ok(()) => {}
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error),
        }
        // A read that opened the file meanwhile put it back in the cache.
        context.files.forget(&path);
    }
    Ok(())
}
