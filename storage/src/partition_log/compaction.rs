//! Log compaction (`cleanup.policy=compact`): the latest record of every key stays, older ones
//! go, offsets never change. Kafka's cleaner, per partition and driven by the shard
//! (`broker::shard` runs one cleaner per shard, with its own memory and I/O budget):
//!
//! 1. The dirty part of the log (sealed segments from the cleaner's first dirty offset up to
//!    the active segment, or to the first segment younger than `min.compaction.lag.ms`) is read
//!    into a map of each key's latest offset, as large as the map's budget allows.
//! 2. Every sealed segment from the log start up to where the map ends is rewritten, in groups
//!    of consecutive segments no larger together than `segment.bytes`, keeping a record only if
//!    no later offset of its key is mapped (`record_batch::compact` filters each batch:
//!    tombstones stay until `delete.retention.ms` after their first clean, batches keep their
//!    offset range, producer fields and codec, and each group's last batch and each idempotent
//!    producer's last batch stay, as empty headers if need be, so segments stay contiguous and
//!    producer state survives).
//! 3. Each group is swapped in crash-safely. The cleaned segment is written to
//!    `<base>.cleaned` and synced; renaming it to `<base>.<end>.swap` (and syncing the
//!    directory) is the commit point; then the old segments of `[base, end)` are removed and
//!    the swap file renamed to `<base>.log`. Opening a log finishes what a crash interrupted:
//!    a `.cleaned` file is removed (the old segments are whole), a `.swap` file replaces every
//!    segment of its range. So a crash at any point leaves the old segments of a group or the
//!    new one, never a mix and never a loss.
//!
//! A batch that fails its CRC or does not parse stops the clean with `LogError::Corrupt`
//! before anything is rewritten: the caller stops cleaning that partition and says why, and
//! the corrupt batch stays as it is. Reads in flight during a swap that find their file gone
//! plan again (`read`).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use tracing::info;

use super::{LogError, PartitionLog};
use crate::io::{align_down, DiskFile, IoError};
use crate::limits::{MAX_BATCH_BYTES, SCAN_CHUNK_BYTES};
use crate::record_batch::compact::{filter_batch, keyed_offsets, Filtered, Verdict};
use crate::record_batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::segment::{index_file_name, segment_file_name, Segment};
use crate::Offset;

/// A topic's compaction settings (Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compaction {
    /// `min.cleanable.dirty.ratio`: clean once this share of the sealed log is dirty.
    pub min_cleanable_ratio: f64,
    /// `min.compaction.lag.ms`: a segment whose newest record is younger is not cleaned yet.
    pub min_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty segment older than this is cleaned whatever the ratio.
    pub max_lag_ms: i64,
    /// `delete.retention.ms`: how long a tombstone stays after its first clean.
    pub delete_retention_ms: i64,
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction {
            min_cleanable_ratio: 0.5,
            min_lag_ms: 0,
            max_lag_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
        }
    }
}

/// Waits as long as the cleaner's I/O budget says `bytes` more read or written should take
/// (`log.cleaner.io.max.bytes.per.second`); the shard supplies the clock.
pub type Pace<'a> = &'a dyn Fn(u64) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// What a clean did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The first offset the next clean maps from.
    pub first_dirty: Offset,
}

/// Steps of a swap, for tests that stop the process at one.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapStep {
    /// The cleaned segment is written and synced, not yet committed.
    Cleaned,
    /// Committed: the `.swap` file is durable, the old segments are all there.
    Committed,
    /// The old segments are removed; the `.swap` file is not yet renamed.
    OldRemoved,
}

/// A sealed segment as the cleaner sees it.
#[derive(Debug, Clone)]
struct Sealed {
    base: Offset,
    path: PathBuf,
    size: u64,
    next_offset: Offset,
    max_timestamp: i64,
    /// The first batch's max timestamp (Kafka's measure of a dirty segment's age).
    first_timestamp: i64,
}

/// Where the cleaner's next map starts, kept across restarts (Kafka's cleaner checkpoint, per
/// partition here): a checksummed 8-byte offset. Missing or damaged, the whole log counts as
/// dirty once, which costs a full rewrite and loses nothing.
const CHECKPOINT_FILE: &str = "cleaner-checkpoint";
const CHECKPOINT_MAGIC: &[u8; 4] = b"KCLN";

/// The stored first dirty offset of the log in `directory`, if a valid one is there.
pub(super) async fn load_checkpoint(
    context: &super::LogContext,
    directory: &Path,
) -> Option<Offset> {
    let bytes = crate::io::read_small_file(&*context.disk, &directory.join(CHECKPOINT_FILE), 64)
        .await
        .ok()??;
    decode_checkpoint(&bytes)
}

/// The stored first dirty offset in a checkpoint file's bytes (the fuzz target reads it too).
pub(crate) fn decode_checkpoint(file: &[u8]) -> Option<Offset> {
    let payload = crate::envelope::open(file, CHECKPOINT_MAGIC, 1)?;
    Some(Offset(i64::from_be_bytes(payload.try_into().ok()?)))
}

pub(super) fn cleaned_file_name(base: Offset) -> String {
    format!("{:020}.cleaned", base.0)
}

pub(super) fn swap_file_name(base: Offset, end: Offset) -> String {
    format!("{:020}.{:020}.swap", base.0, end.0)
}

/// Parses `<base>.<end>.swap`.
pub(super) fn parse_swap_file_name(name: &str) -> Option<(Offset, Offset)> {
    let stem = name.strip_suffix(".swap")?;
    let (base, end) = stem.split_once('.')?;
    let digits = |text: &str| text.len() == 20 && text.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(base) || !digits(end) {
        return None;
    }
    Some((Offset(base.parse().ok()?), Offset(end.parse().ok()?)))
}

/// The batches of a segment file, in order, a chunk of the file at a time.
struct SegmentBatches {
    file: Rc<dyn DiskFile>,
    size: u64,
    position: u64,
    chunk: Bytes,
    chunk_start: u64,
}

impl SegmentBatches {
    fn new(file: Rc<dyn DiskFile>, size: u64) -> SegmentBatches {
        SegmentBatches {
            file,
            size,
            position: 0,
            chunk: Bytes::new(),
            chunk_start: 0,
        }
    }

    /// The next batch and its position, `None` at the segment's end. A place that is not a
    /// whole batch by its length is corruption: sealed segments were synced whole.
    async fn next(&mut self, path: &Path) -> Result<Option<(u64, Bytes)>, LogError> {
        if self.position >= self.size {
            return Ok(None);
        }
        let corrupt = |position: u64, reason: &str| LogError::Corrupt {
            path: path.to_path_buf(),
            position,
            reason: reason.to_string(),
        };
        let mut at = (self.position - self.chunk_start) as usize;
        if self.chunk.len() < at + BATCH_HEADER_BYTES {
            self.chunk = self.file.read(self.position, SCAN_CHUNK_BYTES).await?;
            self.chunk_start = self.position;
            at = 0;
        }
        let header = BatchHeader::parse(&self.chunk[at.min(self.chunk.len())..])
            .ok_or_else(|| corrupt(self.position, "truncated batch header"))?;
        let total = header
            .total_bytes()
            .filter(|total| (BATCH_HEADER_BYTES..=MAX_BATCH_BYTES).contains(total))
            .ok_or_else(|| corrupt(self.position, "implausible batchLength"))?;
        if self.position + total as u64 > self.size {
            return Err(corrupt(self.position, "batch runs past the segment's end"));
        }
        if self.chunk.len() < at + total {
            self.chunk = self
                .file
                .read(self.position, total.max(SCAN_CHUNK_BYTES))
                .await?;
            self.chunk_start = self.position;
            at = 0;
            if self.chunk.len() < total {
                return Err(corrupt(self.position, "batch runs past the file's end"));
            }
        }
        let batch = self.chunk.slice(at..at + total);
        let position = self.position;
        self.position += total as u64;
        Ok(Some((position, batch)))
    }
}

/// Writes a new segment file front to back with block-aligned direct writes, noting each batch
/// in the segment's indexes.
struct SegmentWriter {
    file: Rc<dyn DiskFile>,
    segment: Segment,
    /// Bytes not yet written: the unwritten tail, starting at `written`.
    pending: Vec<u8>,
    written: u64,
}

/// Direct writes go out in pieces of this size.
const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

impl SegmentWriter {
    async fn append(&mut self, batch: &[u8], pace: Pace<'_>) -> Result<(), IoError> {
        let header = match BatchHeader::parse(batch) {
            Some(header) => header,
            None => return Ok(()),
        };
        let position = self.segment.size;
        self.segment
            .note_batch(&header, position, batch.len() as u64);
        self.pending.extend_from_slice(batch);
        if self.pending.len() >= WRITE_CHUNK_BYTES {
            let whole = align_down(self.pending.len() as u64) as usize;
            self.file
                .write_blocks(self.written, &[&self.pending[..whole]])
                .await?;
            pace(whole as u64).await;
            self.pending.drain(..whole);
            self.written += whole as u64;
        }
        Ok(())
    }

    /// Writes the rest, cuts the file to the batches' end and syncs it.
    async fn finish(mut self) -> Result<Segment, IoError> {
        if !self.pending.is_empty() {
            self.file
                .write_blocks(self.written, &[&self.pending])
                .await?;
            self.written += self.pending.len() as u64;
            self.pending.clear();
        }
        self.file.truncate(self.segment.size).await?;
        self.file.fdatasync().await?;
        self.segment.allocated = self.segment.size;
        Ok(self.segment)
    }
}

/// A key's fingerprint in the cleaner's map: 128 bits from two independently keyed SipHashes,
/// so two keys mistaken for one (which would drop a live record) take some 2^64 keys.
struct Fingerprints(RandomState, RandomState);

impl Fingerprints {
    fn new() -> Fingerprints {
        Fingerprints(RandomState::new(), RandomState::new())
    }

    fn of(&self, key: &[u8]) -> u128 {
        (u128::from(self.0.hash_one(key)) << 64) | u128::from(self.1.hash_one(key))
    }
}

impl PartitionLog {
    /// The sealed segments, the cleaner's first dirty offset and the active segment's base.
    fn sealed_segments(&self) -> (Vec<Sealed>, Offset, Offset) {
        let mut state = self.state.borrow_mut();
        if state.first_dirty < state.log_start_offset {
            state.first_dirty = state.log_start_offset;
        }
        let active = state.active().base_offset;
        // Below the stored recovery point only: recovery holds the segment it names to the
        // position it stored, which a clean would shrink.
        let recovery_point = state.recovery_point;
        let sealed = state
            .segments
            .values()
            .take_while(|segment| {
                segment.base_offset != active && segment.next_offset < recovery_point
            })
            .filter(|segment| {
                segment.size > 0
                    && segment.path().file_name().and_then(|name| name.to_str())
                        == Some(segment_file_name(segment.base_offset).as_str())
            })
            .map(|segment| Sealed {
                base: segment.base_offset,
                path: segment.path().to_path_buf(),
                size: segment.size,
                next_offset: segment.next_offset,
                max_timestamp: segment.max_timestamp,
                first_timestamp: segment.first_timestamp(),
            })
            .collect();
        (sealed, state.first_dirty, active)
    }

    /// The sealed segments a clean may touch at `now_ms`: those before the first one younger
    /// than `min.compaction.lag.ms`.
    fn cleanable_segments(&self, compaction: &Compaction, now_ms: i64) -> (Vec<Sealed>, Offset) {
        let (sealed, first_dirty, _) = self.sealed_segments();
        let cleanable = sealed
            .into_iter()
            .take_while(|segment| {
                compaction.min_lag_ms <= 0
                    || segment.next_offset <= first_dirty
                    || now_ms.saturating_sub(segment.max_timestamp) >= compaction.min_lag_ms
            })
            .collect();
        (cleanable, first_dirty)
    }

    /// How much of the cleanable log is dirty (Kafka's cleanable ratio), or `None` if the log
    /// is not compacted or has nothing to clean. A log whose dirty part holds a record older
    /// than `max.compaction.lag.ms` reports 1.0: it is due whatever its ratio.
    pub fn dirty_ratio(&self, now_ms: i64) -> Option<f64> {
        let compaction = self.config.borrow().compaction?;
        let (segments, first_dirty) = self.cleanable_segments(&compaction, now_ms);
        let (mut clean, mut dirty) = (0u64, 0u64);
        let mut overdue = false;
        for segment in &segments {
            if segment.next_offset <= first_dirty {
                clean += segment.size;
            } else {
                dirty += segment.size;
                // Kafka's rule: the earliest first-batch timestamp of the dirty segments.
                overdue |= compaction.max_lag_ms >= 0
                    && segment.first_timestamp > 0
                    && now_ms.saturating_sub(segment.first_timestamp) > compaction.max_lag_ms;
            }
        }
        if dirty == 0 {
            return None;
        }
        if overdue {
            return Some(1.0);
        }
        Some(dirty as f64 / (clean + dirty) as f64)
    }

    /// Whether the log is due a clean: compacted, with a dirty ratio above
    /// `min.cleanable.dirty.ratio` (or a record past `max.compaction.lag.ms`).
    pub fn wants_cleaning(&self, now_ms: i64) -> bool {
        let Some(compaction) = self.config.borrow().compaction else {
            return false;
        };
        self.dirty_ratio(now_ms)
            .is_some_and(|ratio| ratio >= 1.0 || ratio > compaction.min_cleanable_ratio)
    }

    /// Cleans the log once (see the module doc): maps at most `map_entries` keys, rewrites what
    /// the map covers, and swaps the cleaned segments in. `None` if there was nothing to do.
    pub async fn clean(
        &self,
        map_entries: usize,
        now_ms: i64,
        pace: Pace<'_>,
    ) -> Result<Option<CleanReport>, LogError> {
        let Some(compaction) = self.config.borrow().compaction else {
            return Ok(None);
        };
        // Held for the whole clean: the partition's removal waits for it rather than remove
        // the directory under the files it opens.
        let Some(_inside) = self.gate.enter() else {
            return Ok(None);
        };
        // Only segments below the stored recovery point are cleaned: bring it up to what is
        // durable first.
        self.store_recovery_point().await?;
        let (segments, first_dirty) = self.cleanable_segments(&compaction, now_ms);
        if !segments
            .iter()
            .any(|segment| segment.next_offset > first_dirty)
        {
            return Ok(None);
        }

        // 1. Each key's latest offset in the dirty part, as far as the map's budget goes.
        let fingerprints = Fingerprints::new();
        let mut latest: HashMap<u128, i64> = HashMap::new();
        let mut map_end = first_dirty;
        'mapping: for segment in segments.iter().filter(|s| s.next_offset > first_dirty) {
            let file = self.context.files.open(&segment.path).await?;
            let mut batches = SegmentBatches::new(file, segment.size);
            while let Some((position, batch)) = batches.next(&segment.path).await? {
                let header = BatchHeader::parse(&batch).ok_or_else(|| LogError::Corrupt {
                    path: segment.path.clone(),
                    position,
                    reason: "truncated batch header".into(),
                })?;
                if header.next_offset() <= first_dirty {
                    continue;
                }
                // A batch's keys all go in, or none: the map stays within its budget (the
                // first batch excepted, or a log with a huge batch would never be cleaned).
                let adding = usize::try_from(header.records_count).unwrap_or(0);
                if !latest.is_empty() && latest.len() + adding > map_entries.max(1) {
                    break 'mapping;
                }
                if !self.gate.is_open() {
                    return Ok(None);
                }
                keyed_offsets(&batch, |offset, key| {
                    if offset >= first_dirty {
                        latest.insert(fingerprints.of(key), offset.0);
                    }
                })
                .map_err(|error| LogError::Corrupt {
                    path: segment.path.clone(),
                    position,
                    reason: error.to_string(),
                })?;
                map_end = header.next_offset();
                pace(batch.len() as u64).await;
                futures_lite::future::yield_now().await;
            }
            map_end = map_end.max(segment.next_offset);
        }
        if map_end <= first_dirty {
            return Ok(None);
        }

        // 2. Groups of consecutive segments below the map's end, each at most a segment's size.
        let segment_bytes = self.config.borrow().segment_bytes.max(1);
        let mut groups: Vec<Vec<Sealed>> = Vec::new();
        for segment in segments.into_iter().filter(|s| s.base < map_end) {
            match groups.last_mut() {
                Some(group)
                    if group.iter().map(|s| s.size).sum::<u64>() + segment.size
                        <= segment_bytes =>
                {
                    group.push(segment)
                }
                _ => groups.push(vec![segment]),
            }
        }
        let mut report = CleanReport {
            first_dirty: map_end,
            ..CleanReport::default()
        };
        for group in groups {
            let producers_last: HashSet<i64> = self
                .state
                .borrow()
                .producers
                .entries()
                .filter_map(|entry| entry.batches.last().map(|batch| batch.last_offset))
                .collect();
            let verdict = |offset: Offset, key: &[u8]| {
                if offset >= map_end {
                    Verdict::Unmapped
                } else if latest
                    .get(&fingerprints.of(key))
                    .is_none_or(|newest| offset.0 >= *newest)
                {
                    Verdict::Latest
                } else {
                    Verdict::Superseded
                }
            };
            report.segments_before += group.len();
            report.bytes_before += group.iter().map(|s| s.size).sum::<u64>();
            match self
                .clean_group(&group, &compaction, now_ms, &producers_last, &verdict, pace)
                .await?
            {
                Some(size) => {
                    report.segments_after += 1;
                    report.bytes_after += size;
                }
                None => {
                    // The group changed under the clean (retention removed part of it):
                    // nothing was swapped; the next clean starts over.
                    report.first_dirty = first_dirty;
                    return Ok(Some(report));
                }
            }
        }
        self.state.borrow_mut().first_dirty = report.first_dirty;
        // Best effort: a checkpoint that did not reach the disk only means more work later.
        let checkpoint =
            crate::envelope::seal(CHECKPOINT_MAGIC, 1, &report.first_dirty.0.to_be_bytes());
        if let Err(error) = crate::io::write_small_file(
            &*self.context.disk,
            &self.directory,
            &self.directory.join(CHECKPOINT_FILE),
            &checkpoint,
        )
        .await
        {
            tracing::warn!(directory = %self.directory.display(), %error, "cannot store the cleaner checkpoint");
        }
        info!(
            directory = %self.directory.display(),
            segments_before = report.segments_before,
            segments_after = report.segments_after,
            bytes_before = report.bytes_before,
            bytes_after = report.bytes_after,
            first_dirty = report.first_dirty.0,
            "log compacted"
        );
        Ok(Some(report))
    }

    /// Writes one group's cleaned segment and swaps it in; its size, or `None` if the group's
    /// segments changed meanwhile (then nothing was swapped).
    async fn clean_group(
        &self,
        group: &[Sealed],
        compaction: &Compaction,
        now_ms: i64,
        producers_last: &HashSet<i64>,
        verdict: &dyn Fn(Offset, &[u8]) -> Verdict,
        pace: Pace<'_>,
    ) -> Result<Option<u64>, LogError> {
        let Some(first) = group.first() else {
            return Ok(None);
        };
        let Some(last) = group.last() else {
            return Ok(None);
        };
        let (base, end) = (first.base, last.next_offset);
        let disk = self.context.disk.clone();
        let cleaned_path = self.directory.join(cleaned_file_name(base));
        if disk.exists(&cleaned_path).await? {
            disk.remove_file(&cleaned_path).await?;
        }
        let file = disk.open(&cleaned_path, true).await?;
        let mut writer = SegmentWriter {
            file,
            segment: Segment::new(base, cleaned_path.clone(), 0),
            pending: Vec::new(),
            written: 0,
        };
        let written: Result<Segment, LogError> = async {
            for segment in group {
                let source = self.context.files.open(&segment.path).await?;
                let mut batches = SegmentBatches::new(source, segment.size);
                while let Some((position, batch)) = batches.next(&segment.path).await? {
                    pace(batch.len() as u64).await;
                    let header = BatchHeader::parse(&batch).ok_or_else(|| LogError::Corrupt {
                        path: segment.path.clone(),
                        position,
                        reason: "truncated batch header".into(),
                    })?;
                    // A group ends where its last segment ended, and a producer's last batch
                    // stays, whatever their records.
                    let keep_empty = header.next_offset() == end
                        || (header.has_producer_id()
                            && producers_last.contains(&header.last_offset().0));
                    let filtered = filter_batch(
                        &batch,
                        now_ms,
                        compaction.delete_retention_ms,
                        keep_empty,
                        |offset, key| verdict(offset, key),
                    )
                    .map_err(|error| LogError::Corrupt {
                        path: segment.path.clone(),
                        position,
                        reason: error.to_string(),
                    })?;
                    match filtered {
                        Filtered::Unchanged => writer.append(&batch, pace).await,
                        Filtered::Rewritten(bytes) | Filtered::Empty(bytes) => {
                            writer.append(&bytes, pace).await
                        }
                        Filtered::Dropped => Ok(()),
                    }
                    .map_err(|error| self.write_failed(error))?;
                    if !self.gate.is_open() {
                        return Err(LogError::Offline {
                            path: self.directory.clone(),
                            reason: "the partition is being deleted".into(),
                        });
                    }
                    futures_lite::future::yield_now().await;
                }
            }
            writer
                .finish()
                .await
                .map_err(|error| self.write_failed(error))
        }
        .await;
        let mut cleaned = match written {
            Ok(segment) => segment,
            Err(error) => {
                let _ = disk.remove_file(&cleaned_path).await;
                return Err(error);
            }
        };
        crash_point(SwapStep::Cleaned);

        // 3. The swap, holding off retention and DeleteRecords (which take the same lock to
        // change the segments) and the partition's removal (the gate).
        let _segments_change = self.checkpoint_lock.lock().await;
        let Some(_inside) = self.gate.enter() else {
            let _ = disk.remove_file(&cleaned_path).await;
            return Ok(None);
        };
        let unchanged = {
            let state = self.state.borrow();
            let active = state.active().base_offset;
            group.iter().all(|old| {
                old.base != active
                    && state
                        .segments
                        .get(&old.base)
                        .is_some_and(|segment| segment.size == old.size)
            }) && state
                .segments
                .range(base..end)
                .all(|(offset, _)| group.iter().any(|old| old.base == *offset))
        };
        if !unchanged || cleaned.next_offset != end {
            let _ = disk.remove_file(&cleaned_path).await;
            return Ok(None);
        }
        let swap_path = self.directory.join(swap_file_name(base, end));
        let _swapping = SwapInProgress::new(self);
        disk.rename(&cleaned_path, &swap_path).await?;
        disk.sync_directory(&self.directory).await?;
        crash_point(SwapStep::Committed);
        let size = cleaned.size;
        cleaned.path = swap_path.clone();
        let finished = self
            .finish_swap(group, base, end, cleaned, &swap_path)
            .await;
        if let Err(error) = finished {
            // Committed but not finished: the next open finishes it. Until then the log
            // cannot be trusted to name its files.
            self.go_offline(format!("a compaction swap could not be finished: {error}"));
            return Err(error);
        }
        Ok(Some(size))
    }

    /// Everything of a swap after its commit: the cleaned segment replaces the group in
    /// memory, the old files go, the swap file takes its final name, the index is written.
    async fn finish_swap(
        &self,
        group: &[Sealed],
        base: Offset,
        end: Offset,
        cleaned: Segment,
        swap_path: &Path,
    ) -> Result<(), LogError> {
        let disk = self.context.disk.clone();
        let swap_path = swap_path.to_path_buf();
        let final_path = self.directory.join(segment_file_name(base));
        {
            let mut state = self.state.borrow_mut();
            for old in group {
                state.segments.remove(&old.base);
            }
            state.segments.insert(base, cleaned);
            // The recent-batch cache serves reads before the segments do: what it holds of
            // the group is the old, uncleaned log. (It holds consecutive batches from its
            // front, and the group lies below the active segment, so this keeps it so.)
            while state
                .recent
                .front()
                .is_some_and(|batch| batch.next_offset <= end)
            {
                if let Some(batch) = state.recent.pop_front() {
                    state.recent_bytes -= batch.bytes.len();
                }
            }
        }
        self.drop_read_ahead_of(group.iter().map(|old| old.path.as_path()));
        self.swap_generation.set(self.swap_generation.get() + 1);
        self.segments_moved.notify(usize::MAX);
        for old in group {
            self.context.files.forget(&old.path);
            // The index first: an old index must never outlive its log next to a new one.
            for path in [
                self.directory.join(index_file_name(old.base)),
                old.path.clone(),
            ] {
                match disk.remove_file(&path).await {
                    Err(error) if !error.is_not_found() => return Err(error.into()),
                    _ => {}
                }
            }
        }
        disk.sync_directory(&self.directory).await?;
        crash_point(SwapStep::OldRemoved);
        // Readers now find the segment under its own name; one that planned with the swap
        // file's name and finds it gone plans again once this is done.
        if let Some(segment) = self.state.borrow_mut().segments.get_mut(&base) {
            segment.path = final_path.clone();
        }
        self.context.files.forget(&final_path);
        self.context.files.forget(&swap_path);
        disk.rename(&swap_path, &final_path).await?;
        self.swap_generation.set(self.swap_generation.get() + 1);
        disk.sync_directory(&self.directory).await?;
        self.drop_read_ahead_of([swap_path.as_path()].into_iter());
        self.segments_moved.notify(usize::MAX);
        let index = self
            .state
            .borrow()
            .segments
            .get(&base)
            .map(Segment::encode_index);
        if let Some(index) = index {
            crate::io::write_small_file(
                &*disk,
                &self.directory,
                &self.directory.join(index_file_name(base)),
                &index,
            )
            .await?;
        }
        Ok(())
    }

    fn drop_read_ahead_of<'a>(&self, mut paths: impl Iterator<Item = &'a Path>) {
        let mut read_ahead = self.read_ahead.borrow_mut();
        if paths.any(|path| read_ahead.is_for(path)) {
            *read_ahead = super::read_ahead::ReadAhead::Idle;
        }
    }
}

/// Marks a swap under way for the reads that find their file gone, and wakes them when it
/// ends, however it ends.
struct SwapInProgress<'a>(&'a PartitionLog);

impl<'a> SwapInProgress<'a> {
    fn new(log: &'a PartitionLog) -> SwapInProgress<'a> {
        log.swapping.set(true);
        SwapInProgress(log)
    }
}

impl Drop for SwapInProgress<'_> {
    fn drop(&mut self) {
        self.0.swapping.set(false);
        self.0.segments_moved.notify(usize::MAX);
    }
}

/// Finishes, at open, a swap a crash interrupted: a `.cleaned` file goes (its group's old
/// segments are whole), a `.swap` file replaces every segment of its range. Returns whether
/// anything changed (the caller lists the segments after this).
pub(super) async fn finish_interrupted_swaps(
    context: &super::LogContext,
    directory: &Path,
    names: &[String],
) -> Result<bool, IoError> {
    let disk = &context.disk;
    let mut changed = false;
    for name in names {
        if name.ends_with(".cleaned") {
            disk.remove_file(&directory.join(name)).await?;
            changed = true;
        }
    }
    let mut swaps: Vec<(Offset, Offset, &String)> = names
        .iter()
        .filter_map(|name| parse_swap_file_name(name).map(|(base, end)| (base, end, name)))
        .collect();
    swaps.sort();
    if swaps.windows(2).any(|pair| pair[1].0 < pair[0].1) {
        return Err(IoError::new(
            "finish a compaction swap",
            directory,
            std::io::Error::other("two compaction swap files cover the same offsets"),
        ));
    }
    for (base, end, name) in swaps {
        for other in names {
            let Some(index_base) = other
                .strip_suffix(".index")
                .filter(|stem| stem.len() == 20)
                .and_then(|stem| stem.parse::<i64>().ok())
                .map(Offset)
            else {
                continue;
            };
            if index_base >= base && index_base < end {
                disk.remove_file(&directory.join(other)).await?;
            }
        }
        for other in names {
            let Some(other_base) = crate::segment::parse_segment_file_name(other) else {
                continue;
            };
            if other_base >= base && other_base < end {
                context.files.forget(&directory.join(other));
                disk.remove_file(&directory.join(other)).await?;
            }
        }
        disk.sync_directory(directory).await?;
        disk.rename(
            &directory.join(name),
            &directory.join(segment_file_name(base)),
        )
        .await?;
        changed = true;
        info!(
            directory = %directory.display(),
            base = base.0,
            end = end.0,
            "finished a compaction swap a crash interrupted"
        );
    }
    if changed {
        disk.sync_directory(directory).await?;
    }
    Ok(changed)
}

/// Test builds may stop the process at a step of a swap (`BROKER_TEST_CRASH_AT=compaction:<step>`),
/// to show a crash there loses nothing.
fn crash_point(step: SwapStep) {
    let wanted = match step {
        SwapStep::Cleaned => "compaction:cleaned",
        SwapStep::Committed => "compaction:committed",
        SwapStep::OldRemoved => "compaction:old-removed",
    };
    if std::env::var("BROKER_TEST_CRASH_AT").is_ok_and(|value| value == wanted) {
        tracing::error!(
            step = wanted,
            "stopping at a compaction step, as the test asked"
        );
        std::process::abort();
    }
}
