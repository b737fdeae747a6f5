//! Opening a partition log, and recovering it after a crash (DESIGN section 3).
//!
//! The segments are walked in order from the first. A sealed segment whose index file is valid
//! and that lies wholly below the recovery point (or any sealed segment after a clean shutdown)
//! is restored from the index; every other segment is scanned batch by batch, with CRC-32C after
//! an unclean shutdown. Where the valid batches stop, the recovery point decides:
//! - below it, the bytes were synced, so this is corruption: the partition is refused, says
//!   where, and nothing is truncated;
//! - at or above it, the bytes were never covered by a completed sync and a power loss may have
//!   kept any subset of them: the segment is truncated there and every later segment removed.
//!
//! After an unclean shutdown everything from the recovery point's segment on is `fdatasync`'d
//! before the log is served, so bytes that were written but never synced do not count as durable
//! (nor answer an idempotent retry) until they are, and the new recovery point is the log end.
//! A log from before recovery points (none stored) gets the older, more careful rule: a torn
//! tail is cut, an invalid batch followed by a valid one is refused.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::rc::{Rc, Weak};

use tracing::{info, warn};

use super::snapshots::{rebuild_producer_state, remove_snapshots_after};
use super::{Gate, LogConfig, LogContext, LogError, PartitionLog, Progress, State, WritePoint};
use crate::io::{align_down, read_small_file};
use crate::memory::Reclaim;
use crate::recovery::{scan_segment, valid_batch_after, ScanEnd};
use crate::recovery_point::{self, RecoveryPoint};
use crate::segment::{index_file_name, parse_segment_file_name, segment_file_name, Segment};
use crate::Offset;

/// An index file far larger than a 1 GiB segment indexed every 4 KiB needs is not ours.
const INDEX_FILE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Where recovery decided to cut the log: truncate one segment (`base`, at `position`), or
/// none when a whole segment is the first thing to go, and remove every segment after that.
struct Cut {
    truncate: Option<(Offset, u64)>,
    reason: String,
}

impl PartitionLog {
    /// Opens (or creates) the log in `directory`. `clean_shutdown` says whether the last process
    /// closed it cleanly; if not, every batch from the recovery point on is checked and whatever
    /// is invalid there is cut.
    pub async fn open(
        context: &LogContext,
        directory: &Path,
        config: LogConfig,
        clean_shutdown: bool,
    ) -> Result<Rc<PartitionLog>, LogError> {
        let disk = context.disk.clone();
        let created = !disk.exists(directory).await?;
        disk.create_dir_all(directory).await?;
        if created {
            if let Some(parent) = directory.parent() {
                disk.sync_directory(parent).await?;
            }
        }
        let names = disk.list(directory).await?;
        let names =
            if super::compaction::finish_interrupted_swaps(context, directory, &names).await? {
                disk.list(directory).await?
            } else {
                names
            };
        let mut bases: Vec<Offset> = names
            .iter()
            .filter_map(|name| parse_segment_file_name(name))
            .collect();
        bases.sort();
        let mut recovery_point = recovery_point::load(&*disk, directory).await?;
        if let Some(point) = recovery_point.filter(|point| bases.is_empty() && point.offset.0 > 0) {
            return Err(LogError::Corrupt {
                path: directory.to_path_buf(),
                position: 0,
                reason: format!(
                    "every segment is missing, but the recovery point says offsets below {} \
                     were synced",
                    point.offset
                ),
            });
        }
        if bases.is_empty() {
            // A new log: its recovery point exists before its first segment does, so a log
            // with segments and no recovery point can only be one from an older broker.
            let point = RecoveryPoint {
                sequence: recovery_point.map_or(1, |point| point.sequence + 1),
                offset: Offset(0),
                segment_base: Offset(0),
                position: 0,
                log_start: Offset(0),
            };
            recovery_point::store(&*disk, directory, &point).await?;
            recovery_point = Some(point);
            disk.open(&directory.join(segment_file_name(Offset(0))), true)
                .await?;
            disk.sync_directory(directory).await?;
            bases.push(Offset(0));
        }

        // Segments wholly below the stored log start are what a retention pass or DeleteRecords
        // was removing when the process stopped (`retention`): finish that first.
        let stored_start = recovery_point.map_or(Offset(0), |point| point.log_start);
        let below_start = bases
            .windows(2)
            .take_while(|pair| pair[1] <= stored_start)
            .count();
        if below_start > 0 {
            for base in bases.drain(..below_start) {
                super::retention::remove_segment_files(context, directory, base).await?;
            }
            disk.sync_directory(directory).await?;
            info!(
                directory = %directory.display(),
                segments_removed = below_start,
                log_start_offset = stored_start.0,
                "removed segments below the log start"
            );
        }

        // Sizes first: which segment is the last to hold anything decides what recovery may
        // cut. Sealed segment files wait in the shard's bounded cache, not all open at once.
        let mut sizes = Vec::with_capacity(bases.len());
        for base in &bases {
            let path = directory.join(segment_file_name(*base));
            let file = disk.open(&path, false).await?;
            sizes.push(file.size().await?);
            context.files.insert(&path, file);
        }
        let last_holding = sizes.iter().rposition(|size| *size > 0);

        let mut kept: BTreeMap<Offset, Segment> = BTreeMap::new();
        let mut cut: Option<Cut> = None;
        let mut removed = Vec::new();
        let mut previous_next: Option<Offset> = None;
        for (index, base) in bases.iter().copied().enumerate() {
            if cut.is_some() {
                removed.push(base);
                continue;
            }
            let path = directory.join(segment_file_name(base));
            let file_size = sizes[index];
            let is_last = last_holding.is_none_or(|last| index >= last);
            // A roll seals only a segment that holds batches, so an empty segment is either the
            // fresh active one (the last file, where the log continues) or what a failed roll
            // left behind: nothing was ever in it.
            if file_size == 0 {
                let continues = previous_next.is_none_or(|expected| expected == base);
                if index + 1 == bases.len() && continues {
                    previous_next = Some(base);
                    kept.insert(base, Segment::new(base, path, 0));
                } else {
                    warn!(path = %path.display(), "removing an empty segment left by a failed roll");
                    context.files.forget(&path);
                    disk.remove_file(&path).await?;
                    disk.sync_directory(directory).await?;
                }
                continue;
            }
            // Bytes that were synced and must all be valid: all of a segment another one
            // follows (a roll syncs the sealed segment before it creates the next), and of the
            // last one, what the recovery point covers.
            let protected = match recovery_point {
                _ if !is_last => u64::MAX,
                Some(point) if base < point.segment_base => u64::MAX,
                Some(point) if base == point.segment_base => point.position,
                _ => 0,
            };
            let corrupt = |position: u64, reason: String| LogError::Corrupt {
                path: path.clone(),
                position,
                reason,
            };
            if let Some(expected) = previous_next.filter(|expected| *expected != base) {
                // The segment before was sealed (synced) at its end: a gap or an overlap here is
                // damage, never a torn write.
                return Err(corrupt(
                    0,
                    format!("the segment starts at offset {base} where {expected} was expected"),
                ));
            }
            let trust_index = !is_last
                && (clean_shutdown
                    || recovery_point.is_some_and(|point| base < point.segment_base));
            if trust_index {
                if let Some(segment) =
                    load_sealed(context, directory, base, &path, file_size).await?
                {
                    previous_next = Some(segment.next_offset);
                    kept.insert(base, segment);
                    continue;
                }
            }
            let file = context.files.open(&path).await?;
            let mut segment = Segment::new(base, path.clone(), file_size);
            // Gaps are compaction's, in a segment another follows (a roll syncs a segment
            // before it creates the next, and the cleaner only rewrites those).
            let sealed = index + 1 < bases.len();
            match scan_segment(&*file, &mut segment, file_size, !clean_shutdown, sealed).await? {
                ScanEnd::Clean => {
                    if segment.size < protected && protected != u64::MAX {
                        return Err(corrupt(
                            segment.size,
                            format!(
                                "the segment ends at byte {} but the recovery point says {} \
                                 bytes were synced",
                                segment.size, protected
                            ),
                        ));
                    }
                }
                ScanEnd::Invalid { position, reason } => {
                    if position < protected {
                        return Err(corrupt(position, reason));
                    }
                    if recovery_point.is_none() {
                        let (valid_at, _) = valid_batch_after(&*file, position, file_size).await?;
                        if let Some(valid_at) = valid_at {
                            return Err(LogError::CorruptWithoutRecoveryPoint {
                                path,
                                position,
                                valid_at,
                                reason,
                            });
                        }
                    }
                    cut = Some(Cut {
                        truncate: Some((base, position)),
                        reason,
                    });
                }
            }
            previous_next = Some(segment.next_offset);
            kept.insert(base, segment);
        }

        if let Some(cut) = &cut {
            apply_cut(context, directory, cut, &mut kept, &removed).await?;
        }
        let (log_start_offset, log_end_offset) =
            match (kept.values().next(), kept.values().next_back()) {
                (Some(first), Some(last)) => (
                    first.base_offset.max(stored_start).min(last.next_offset),
                    last.next_offset,
                ),
                _ => unreachable!("recovery keeps at least the first segment"),
            };
        if let Some(point) = recovery_point {
            if log_end_offset < point.offset {
                return Err(LogError::Corrupt {
                    path: directory.to_path_buf(),
                    position: 0,
                    reason: format!(
                        "the log ends at offset {log_end_offset} but the recovery point says \
                         offsets below {} were synced (a segment is missing)",
                        point.offset
                    ),
                });
            }
        }
        if !clean_shutdown || recovery_point.is_none() {
            // Bytes past the recovery point may have been written and never synced; they become
            // durable (and visible, and able to answer a retry) only now.
            for segment in kept.values() {
                if recovery_point.is_none_or(|point| segment.base_offset >= point.segment_base) {
                    context
                        .files
                        .open(segment.path())
                        .await?
                        .fdatasync()
                        .await?;
                }
            }
        }

        let segments = kept;
        let Some(active_path) = segments
            .values()
            .next_back()
            .map(|active| active.path().to_path_buf())
        else {
            unreachable!("recovery keeps at least the first segment");
        };
        // The active segment's file is the log's own for as long as it is active.
        let active_file = context.files.open(&active_path).await?;
        context.files.forget(&active_path);
        let (active_base, active_size) = match segments.values().next_back() {
            Some(active) => (active.base_offset, active.size),
            None => unreachable!("recovery keeps at least the first segment"),
        };
        let position = align_down(active_size);
        let tail_length = (active_size - position) as usize;
        let tail_block = active_file.read(position, tail_length).await?;
        if tail_block.len() != tail_length {
            return Err(LogError::Corrupt {
                path: active_path,
                position,
                reason: "the segment shrank while it was being opened".into(),
            });
        }

        remove_snapshots_after(&*disk, directory, log_end_offset).await;
        let producers = rebuild_producer_state(
            context,
            directory,
            &segments,
            &active_file,
            log_start_offset,
            log_end_offset,
        )
        .await?;

        let mut stored_point = recovery_point;
        if stored_point
            .is_none_or(|point| point.offset != log_end_offset || point.segment_base != active_base)
        {
            let point = RecoveryPoint {
                sequence: stored_point.map_or(1, |point| point.sequence + 1),
                offset: log_end_offset,
                segment_base: active_base,
                position: active_size,
                log_start: log_start_offset,
            };
            recovery_point::store(&*disk, directory, &point).await?;
            stored_point = Some(point);
        }
        let stored_point = stored_point.unwrap_or(RecoveryPoint {
            sequence: 0,
            offset: log_end_offset,
            segment_base: active_base,
            position: active_size,
            log_start: log_start_offset,
        });
        info!(
            directory = %directory.display(),
            log_start_offset = log_start_offset.0,
            log_end_offset = log_end_offset.0,
            segments = segments.len(),
            clean_shutdown,
            "log opened"
        );
        let write_point = WritePoint {
            offset: log_end_offset,
            position,
            tail_block,
            progress: Progress::default(),
        };
        // The cleaner goes on where it stopped, if that is still inside the log.
        let first_dirty = super::compaction::load_checkpoint(context, directory)
            .await
            .filter(|offset| *offset >= log_start_offset && *offset <= log_end_offset)
            .unwrap_or(log_start_offset);
        let epochs =
            super::epochs::EpochCache::load(&*disk, directory, log_start_offset, log_end_offset)
                .await?;
        let log = Rc::new_cyclic(|me| PartitionLog {
            me: me.clone(),
            replicated_high: std::cell::Cell::new(None),
            leader_epoch: std::cell::Cell::new(epochs.latest().unwrap_or(0)),
            leading: std::cell::Cell::new(true),
            epochs: std::cell::RefCell::new(epochs),
            read_ahead: std::cell::RefCell::new(super::read_ahead::ReadAhead::Idle),
            read_ahead_moved: event_listener::Event::new(),
            segments_moved: event_listener::Event::new(),
            swapping: std::cell::Cell::new(false),
            swap_generation: std::cell::Cell::new(0),
            directory: directory.to_path_buf(),
            context: context.clone(),
            config: std::cell::RefCell::new(config),
            state: std::cell::RefCell::new(State {
                segments,
                active_file,
                log_start_offset,
                log_start_stored: log_start_offset,
                log_end_offset,
                written_high: write_point.offset,
                written: write_point.clone(),
                durable: write_point,
                appended: Progress::default(),
                oldest_unsynced_ms: None,
                recent: VecDeque::new(),
                recent_bytes: 0,
                offline: None,
                stalled: None,
                producers,
                recovery_point: stored_point.offset,
                recovery_point_sequence: stored_point.sequence,
                prepared: 0,
                zeroing_from: None,
                write_bytes_average: 0,
                first_dirty,
            }),
            append_lock: async_lock::Mutex::new(()),
            write_lock: async_lock::Mutex::new(()),
            sync_lock: async_lock::Mutex::new(()),
            checkpoint_lock: async_lock::Mutex::new(()),
            prepare_lock: async_lock::Mutex::new(()),
            durable_moved: event_listener::Event::new(),
            written_moved: event_listener::Event::new(),
            high_watermark_moved: event_listener::Event::new(),
            appended: event_listener::Event::new(),
            written: event_listener::Event::new(),
            sync_wanted: std::cell::Cell::new(false),
            checkpoint_wanted: event_listener::Event::new(),
            closed: std::cell::Cell::new(false),
            gate: Gate::new(),
            observer: std::cell::RefCell::new(None),
        });
        let reclaimer: Weak<dyn Reclaim> = Rc::downgrade(&(log.clone() as Rc<dyn Reclaim>));
        context.memory.register(reclaimer);
        Ok(log)
    }
}

/// Truncates the log where recovery decided and removes the segments after it, durably.
async fn apply_cut(
    context: &LogContext,
    directory: &Path,
    cut: &Cut,
    kept: &mut BTreeMap<Offset, Segment>,
    removed: &[Offset],
) -> Result<(), crate::io::IoError> {
    let disk = &context.disk;
    let mut dropped_bytes = 0u64;
    if let Some((base, position)) = cut.truncate {
        if let Some(segment) = kept.get_mut(&base) {
            let file = context.files.open(segment.path()).await?;
            let size = file.size().await?;
            dropped_bytes += size.saturating_sub(position);
            file.truncate(position).await?;
            file.fdatasync().await?;
            segment.allocated = position;
            // The segment is the active one again: an index file of it would describe the old
            // end.
            let index = directory.join(index_file_name(base));
            if disk.exists(&index).await? {
                disk.remove_file(&index).await?;
            }
        }
    }
    for base in removed {
        let path = directory.join(segment_file_name(*base));
        context.files.forget(&path);
        if let Ok(file) = disk.open(&path, false).await {
            dropped_bytes += file.size().await.unwrap_or(0);
        }
        disk.remove_file(&path).await?;
        let index = directory.join(index_file_name(*base));
        if disk.exists(&index).await? {
            disk.remove_file(&index).await?;
        }
    }
    disk.sync_directory(directory).await?;
    let (segment, position) = cut
        .truncate
        .map_or((-1, 0), |(base, position)| (base.0, position));
    warn!(
        directory = %directory.display(),
        segment,
        position,
        dropped_bytes,
        segments_removed = removed.len(),
        reason = %cut.reason,
        "truncating bytes past the recovery point that were never synced (never acknowledged)"
    );
    Ok(())
}

/// A sealed segment restored from its index file, if that file exists and describes exactly this
/// segment file; `None` means scan the log instead.
async fn load_sealed(
    context: &LogContext,
    directory: &Path,
    base: Offset,
    path: &Path,
    file_size: u64,
) -> Result<Option<Segment>, LogError> {
    let index_path = directory.join(index_file_name(base));
    let Some(index) = read_small_file(&*context.disk, &index_path, INDEX_FILE_BYTES_MAX).await?
    else {
        return Ok(None);
    };
    let segment = Segment::from_index(base, path.to_path_buf(), file_size, &index);
    if segment.is_none() {
        warn!(path = %index_path.display(), "index file does not match its segment; scanning the log");
    }
    Ok(segment)
}
