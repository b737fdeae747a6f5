//! Reads: fetches and timestamp lookups. Recent batches come from memory as `Bytes` slices;
//! older ones by direct reads of the segment (one copy out of the DMA buffer), paid for from the
//! shard's memory budget until the caller is done with them.

use std::rc::Rc;

use bytes::Bytes;

use super::{LogError, PartitionLog};
use crate::io::DiskFile;
use crate::limits::SCAN_CHUNK_BYTES;
use crate::memory::{MemoryBudget, MemoryGrant};
use crate::record_batch::{first_offset_at_or_after, BatchHeader, BatchWalk};
use crate::segment::Segment;
use crate::Offset;

/// Whole batches read from a log: contiguous runs of stored batch bytes, and the memory they hold
/// while the caller keeps them (disk reads only; cached batches are paid for by the cache).
#[derive(Default)]
pub struct Fetched {
    pub runs: Vec<Bytes>,
    pub memory: Option<MemoryGrant>,
    /// The read needed the disk and the shard's memory had no room for it (`read_if_room`):
    /// nothing was read.
    pub short_of_memory: bool,
}

impl Fetched {
    pub fn bytes(&self) -> usize {
        self.runs.iter().map(Bytes::len).sum()
    }
}

/// How many times a read plans again after finding its segment file swapped away.
const SWAPPED_READ_ATTEMPTS: usize = 3;

impl PartitionLog {
    /// The file of `segment`: the log's own for the active segment, through the cache otherwise.
    async fn segment_file(
        &self,
        segment_path: &std::path::Path,
        active: bool,
    ) -> Result<Rc<dyn DiskFile>, LogError> {
        if active {
            return Ok(self.state.borrow().active_file.clone());
        }
        let Some(_inside) = self.gate.enter() else {
            return Err(LogError::Offline {
                path: self.directory.clone(),
                reason: "the partition is being deleted".into(),
            });
        };
        Ok(self.context.files.open(segment_path).await?)
    }

    /// Whole batches holding offsets `from..`, stopping before `upper` and after about
    /// `max_bytes` (the first batch is returned even if larger, as Kafka does since KIP-74).
    pub async fn read(
        &self,
        from: Offset,
        max_bytes: usize,
        upper: Offset,
    ) -> Result<Fetched, LogError> {
        self.read_with(from, max_bytes, upper, true).await
    }

    /// `read`, but a read that needs the disk takes memory only if it is free now: a caller that
    /// already holds memory (a fetch's earlier partitions) must not wait for more, or fetches
    /// holding part of the budget would wait on each other.
    pub async fn read_if_room(
        &self,
        from: Offset,
        max_bytes: usize,
        upper: Offset,
    ) -> Result<Fetched, LogError> {
        self.read_with(from, max_bytes, upper, false).await
    }

    async fn read_with(
        &self,
        from: Offset,
        max_bytes: usize,
        upper: Offset,
        wait_for_memory: bool,
    ) -> Result<Fetched, LogError> {
        // A clean swaps segments under a read at most a few times in a row: a read that finds
        // its file gone after a swap plans again once the swap has moved on.
        for _ in 0..SWAPPED_READ_ATTEMPTS {
            let moved = self.segments_moved.listen();
            match self
                .read_planned(from, max_bytes, upper, wait_for_memory)
                .await
            {
                Err(LogError::Io(error))
                    if error.is_not_found() && from >= self.log_start_offset() =>
                {
                    // Waits only for a swap under way, which notifies when it moves on.
                    if self.swapping.get() {
                        moved.await;
                    }
                }
                other => return other,
            }
        }
        self.read_planned(from, max_bytes, upper, wait_for_memory)
            .await
    }

    async fn read_planned(
        &self,
        from: Offset,
        max_bytes: usize,
        upper: Offset,
        wait_for_memory: bool,
    ) -> Result<Fetched, LogError> {
        let generation = self.swap_generation.get();
        let disk_plan = {
            let state = self.state.borrow();
            if from < state.log_start_offset || from > state.log_end_offset {
                return Err(LogError::OffsetOutOfRange {
                    requested: from,
                    log_start_offset: state.log_start_offset,
                    log_end_offset: state.log_end_offset,
                });
            }
            if from >= upper {
                return Ok(Fetched::default());
            }
            if state
                .recent
                .front()
                .is_some_and(|first| first.base_offset <= from)
            {
                let mut runs = Vec::new();
                let mut total = 0usize;
                let first = state.recent_ending_after(from);
                for batch in state.recent.range(first..) {
                    if batch.base_offset >= upper
                        || (!runs.is_empty() && total + batch.bytes.len() > max_bytes)
                    {
                        break;
                    }
                    total += batch.bytes.len();
                    runs.push(batch.bytes.clone());
                }
                return Ok(Fetched {
                    runs,
                    ..Fetched::default()
                });
            }
            let segment = state
                .segments
                .range(..=from)
                .next_back()
                .map(|(_, segment)| segment)
                .filter(|segment| from < segment.next_offset)
                .or_else(|| {
                    state
                        .segments
                        .range(from..)
                        .map(|(_, segment)| segment)
                        .find(|segment| segment.size > 0)
                });
            let Some(segment) = segment else {
                return Ok(Fetched::default());
            };
            (
                segment.path().to_path_buf(),
                state.is_active(segment),
                segment.position_for_offset(from),
                state.readable_end(segment),
            )
        };
        let (path, active, start, disk_end) = disk_plan;
        if let Some(fetched) = self.take_read_ahead(&path, from, max_bytes, upper).await {
            return Ok(fetched);
        }
        let file = match self.segment_file(&path, active).await {
            // Retention or DeleteRecords removed the segment after the read found it.
            Err(LogError::Io(error)) if error.is_not_found() && from < self.log_start_offset() => {
                let state = self.state.borrow();
                return Err(LogError::OffsetOutOfRange {
                    requested: from,
                    log_start_offset: state.log_start_offset,
                    log_end_offset: state.log_end_offset,
                });
            }
            file => file?,
        };
        if self.swap_generation.get() != generation {
            // A swap gave the planned name another file meanwhile: plan again.
            return Err(LogError::Io(crate::io::IoError::new(
                "open",
                &path,
                std::io::ErrorKind::NotFound.into(),
            )));
        }
        let (fetched, after) = read_batches_from_disk(
            &self.context.memory,
            wait_for_memory,
            &*file,
            start,
            disk_end,
            from,
            max_bytes,
            upper,
        )
        .await?;
        if let Some((position, next)) = after {
            let length = read_length(u64::MAX, max_bytes);
            self.start_read_ahead(path, file, position, next, disk_end, length);
        }
        Ok(fetched)
    }

    /// The first offset at or after the log start whose record timestamp is at least
    /// `target_ms`, with that timestamp, or `None` if every record is older (ListOffsets by
    /// timestamp).
    pub async fn offset_for_timestamp(
        &self,
        target_ms: i64,
    ) -> Result<Option<(Offset, i64)>, LogError> {
        match self.offset_for_timestamp_once(target_ms).await {
            // Retention removed the segment after the lookup chose it: look again.
            Err(LogError::Io(error)) if error.is_not_found() => {
                self.offset_for_timestamp_once(target_ms).await
            }
            found => found,
        }
    }

    async fn offset_for_timestamp_once(
        &self,
        target_ms: i64,
    ) -> Result<Option<(Offset, i64)>, LogError> {
        // Each segment that may hold the answer, in order: the first of them can come up
        // empty when the log start falls inside it and only records below the start are late
        // enough.
        let mut after: Option<Offset> = None;
        loop {
            let plan = {
                let state = self.state.borrow();
                let floor = state.log_start_offset;
                let Some(segment) = state.segments.values().find(|segment| {
                    segment.max_timestamp >= target_ms
                        && segment.next_offset > floor
                        && after.is_none_or(|after| segment.base_offset > after)
                }) else {
                    return Ok(None);
                };
                (
                    segment.base_offset,
                    segment.path().to_path_buf(),
                    segment.position_for_timestamp(target_ms),
                    state.readable_end(segment),
                    state.is_active(segment),
                    floor,
                )
            };
            let (base, path, position, disk_end, is_active, floor) = plan;
            let found = self
                .timestamp_in_segment(&path, position, disk_end, is_active, target_ms, floor)
                .await?;
            if found.is_some() || is_active {
                return Ok(found);
            }
            after = Some(base);
        }
    }

    async fn timestamp_in_segment(
        &self,
        path: &std::path::Path,
        mut position: u64,
        disk_end: u64,
        is_active: bool,
        target_ms: i64,
        floor: Offset,
    ) -> Result<Option<(Offset, i64)>, LogError> {
        let file = self.segment_file(path, is_active).await?;
        while position < disk_end {
            let length = ((disk_end - position) as usize).min(SCAN_CHUNK_BYTES);
            let _memory = self.context.memory.acquire(length).await;
            let chunk = file.read(position, length).await?;
            let mut walk = BatchWalk::new(&chunk);
            for (_, range) in walk.by_ref() {
                if let Some(found) = first_offset_at_or_after(&chunk[range], target_ms, floor) {
                    return Ok(Some(found));
                }
            }
            if walk.position() == 0 {
                break;
            }
            position += walk.position() as u64;
        }
        if is_active {
            let state = self.state.borrow();
            for batch in state.recent.iter() {
                if let Some(found) = first_offset_at_or_after(&batch.bytes, target_ms, floor) {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// The largest timestamp in the log and the offset of the batch holding it.
    pub fn max_timestamp(&self) -> Option<(Offset, i64)> {
        let state = self.state.borrow();
        let segment: &Segment = state
            .segments
            .values()
            .filter(|segment| segment.max_timestamp >= 0)
            .max_by_key(|segment| segment.max_timestamp)?;
        Some((segment.base_offset, segment.max_timestamp))
    }
}

/// The header and size of the batch starting `chunk` if it is a plausible batch too large to be
/// in the chunk whole: the one case where a walk of a chunk yields nothing and reading on helps.
pub(super) fn larger_batch(chunk: &[u8]) -> Option<(BatchHeader, usize)> {
    let header = BatchHeader::parse(chunk)?;
    let total = header.total_bytes()?;
    (header.magic == 2 && total > chunk.len() && total <= crate::limits::MAX_BATCH_BYTES)
        .then_some((header, total))
}

/// Memory for a disk read: waited for, or `None` at once if the budget is short and the caller
/// would rather answer with what it has.
async fn grant_for_read(
    memory: &Rc<MemoryBudget>,
    wait: bool,
    bytes: usize,
) -> Option<MemoryGrant> {
    if wait {
        Some(memory.acquire(bytes).await)
    } else {
        memory.try_acquire(bytes)
    }
}

/// Where the batches wanted from a chunk of a segment are: `Found` a contiguous run of whole
/// batches holding offsets `from..` (stopping before `upper` and after about `max_bytes`, the
/// first batch whole even if larger), at `first..end` of the chunk, with the offset after it;
/// or only batches below `from`, `Skipped` up to that position; or `Nothing` that walks.
pub(super) enum Run {
    Found {
        first: usize,
        end: usize,
        next: Offset,
    },
    Skipped(usize),
    Nothing,
}

pub(super) fn walk_run(chunk: &[u8], from: Offset, max_bytes: usize, upper: Offset) -> Run {
    let mut first: Option<usize> = None;
    let mut end = 0usize;
    let mut skipped = 0usize;
    let mut expected_next: Option<Offset> = None;
    for (header, range) in BatchWalk::new(chunk) {
        if header.last_offset() < from {
            skipped = range.end;
            continue;
        }
        // A run's offsets go forward or it ends: whatever goes back is not this log's next
        // batch (a damaged medium, or an index that does not describe its segment). Forward
        // gaps are what compaction leaves.
        if header.base_offset >= upper
            || expected_next.is_some_and(|expected| header.base_offset < expected)
        {
            break;
        }
        match first {
            None => first = Some(range.start),
            Some(first) if range.end - first > max_bytes => break,
            Some(_) => {}
        }
        expected_next = Some(header.next_offset());
        end = range.end;
    }
    match (first, expected_next) {
        (Some(first), Some(next)) => Run::Found { first, end, next },
        _ if skipped > 0 => Run::Skipped(skipped),
        _ => Run::Nothing,
    }
}

/// What a disk read returned, and where the segment continues after it: the file position
/// and offset of the next batch, for the read-ahead.
type DiskRead = (Fetched, Option<(u64, Offset)>);

#[allow(clippy::too_many_arguments)]
async fn read_batches_from_disk(
    memory: &Rc<MemoryBudget>,
    wait_for_memory: bool,
    file: &dyn DiskFile,
    start: u64,
    disk_end: u64,
    from: Offset,
    max_bytes: usize,
    upper: Offset,
) -> Result<DiskRead, LogError> {
    let short = || {
        (
            Fetched {
                short_of_memory: true,
                ..Fetched::default()
            },
            None,
        )
    };
    let mut position = start;
    // Skip batches before `from` a chunk at a time, then return one contiguous run.
    while position < disk_end {
        let length = read_length(disk_end - position, max_bytes);
        let Some(grant) = grant_for_read(memory, wait_for_memory, length).await else {
            return Ok(short());
        };
        let chunk = file.read(position, length).await?;
        match walk_run(&chunk, from, max_bytes, upper) {
            Run::Found { first, end, next } => {
                return Ok((
                    Fetched {
                        runs: vec![chunk.slice(first..end)],
                        memory: Some(grant),
                        short_of_memory: false,
                    },
                    Some((position + end as u64, next)),
                ));
            }
            Run::Skipped(skipped) => {
                position += skipped as u64;
                continue;
            }
            Run::Nothing => {}
        }
        // A batch larger than the chunk: read it whole by its header. Anything else that did
        // not walk is not a batch, and nothing after it is read.
        let Some((header, total)) = larger_batch(&chunk) else {
            break;
        };
        if header.base_offset >= upper || position + total as u64 > disk_end {
            break;
        }
        drop(grant);
        let Some(grant) = grant_for_read(memory, wait_for_memory, total).await else {
            return Ok(short());
        };
        let whole = file.read(position, total).await?;
        if header.last_offset() >= from {
            return Ok((
                Fetched {
                    runs: vec![whole],
                    memory: Some(grant),
                    short_of_memory: false,
                },
                Some((position + total as u64, header.next_offset())),
            ));
        }
        position += total as u64;
    }
    Ok((Fetched::default(), None))
}

/// How much a disk read for a fetch of `max_bytes` reads at once (`remaining` is what is left
/// of the readable segment): a little more than asked, so a run that ends mid-batch still
/// holds its last batch whole, and at least 64 KiB.
pub(super) fn read_length(remaining: u64, max_bytes: usize) -> usize {
    (remaining as usize).min(max_bytes.max(64 * 1024) + 64 * 1024)
}
