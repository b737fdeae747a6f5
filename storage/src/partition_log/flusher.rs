//! The flusher: one task per log, three loops side by side.
//! - The writer writes every batch appended since the last write in one direct write that starts
//!   with the partial tail block of the previous one.
//! - The syncer makes everything written so far durable with one `fdatasync` (at once in durable
//!   mode, when `flush.messages`/`flush.ms` say in relaxed mode). While a sync is in flight the
//!   writer already writes what arrived meanwhile, so the disk keeps busy during the flush, and
//!   the next sync covers all of it (group commit).
//! - The checkpointer writes the recovery point now and then, off the hot path.
//! - The preparer writes zeros into the active segment's fallocated blocks ahead of the log end
//!   (`limits::PREPARE_AHEAD_BYTES`), so that the writer overwrites written blocks and the
//!   `fdatasync` an acknowledgement waits for has no extent conversion to commit. It never
//!   writes below the end of the appended batches, and the writer never writes over a zero
//!   write in flight: it waits for it (`prepare_lock`). It stands aside while the log's writes
//!   are large (`limits::PREPARE_WRITE_BYTES_MAX`): they amortise their conversions, and the
//!   zeros would take disk bandwidth from them.
//!
//! Failures: EIO (anything but ENOSPC) on a write or sync takes the log offline for good
//! (fail-stop: after a failed `fdatasync` the kernel may have dropped the data it could not
//! write, so a retry that succeeds proves nothing). ENOSPC is a full disk, not a bad one: the
//! write is retried with back-off while appends are refused, and a sync that fails with ENOSPC
//! rewinds the writer to the last durable point, so everything since is written again from
//! memory (every batch above the durable offset is still in the recent-batch cache) before the
//! next sync. Nothing acknowledged is lost either way.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::warn;

use super::{now_ms, tail_of, FlushPolicy, LogError, PartitionLog, WritePoint};
use crate::io::{align_down, align_up};
use crate::limits::{
    PREPARE_CHUNK_BYTES, PREPARE_WINDOW_MIN_BYTES, PREPARE_WRITE_BYTES_MAX, RECENT_CACHE_BYTES,
};
use crate::recovery_point::{self, RecoveryPoint};

/// How long a relaxed-mode log may hold written but unsynced data at most, whatever `flush.ms`
/// says: direct writes may sit in a volatile device cache, and an OS flushes its page cache
/// about this often.
pub const RELAXED_SYNC_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// Written but unsynced bytes that make a relaxed-mode log sync whatever its settings, so its
/// memory (unsynced batches stay cached) is bounded well before `UNFLUSHED_MAX_BYTES`.
const RELAXED_SYNC_BYTES: u64 = RECENT_CACHE_BYTES as u64 / 2;

/// How long the writer waits before retrying a write that hit ENOSPC, at first and at most.
const NO_SPACE_RETRY_FIRST: Duration = Duration::from_millis(50);
const NO_SPACE_RETRY_MAX: Duration = Duration::from_secs(1);

/// What the preparer writes.
static ZEROS: [u8; PREPARE_CHUNK_BYTES] = [0; PREPARE_CHUNK_BYTES];

impl PartitionLog {
    /// The log's flusher, all of it as one future: run it on the owning shard for the life of
    /// the log. A shard runs its two halves apart instead, each in its own task queue.
    pub async fn run_flusher(self: std::rc::Rc<Self>) {
        futures_lite::future::zip(self.clone().run_write_path(), self.run_upkeep()).await;
    }

    /// The writer and the syncer: what acknowledgements wait for.
    pub async fn run_write_path(self: std::rc::Rc<Self>) {
        futures_lite::future::zip(self.run_writer(), self.run_syncer()).await;
    }

    /// The checkpointer and the preparer: work no acknowledgement waits for.
    pub async fn run_upkeep(self: std::rc::Rc<Self>) {
        futures_lite::future::zip(self.run_checkpointer(), self.run_preparer()).await;
    }

    fn stopped(&self) -> bool {
        self.closed.get() || self.state.borrow().offline.is_some()
    }

    async fn run_writer(&self) {
        let mut retry = NO_SPACE_RETRY_FIRST;
        loop {
            let listener = self.appended.listen();
            if self.stopped() {
                return;
            }
            let unwritten = {
                let state = self.state.borrow();
                state.log_end_offset > state.written_offset()
            };
            if !unwritten {
                listener.await;
                continue;
            }
            drop(listener);
            match self.write_appended().await {
                Ok(()) => retry = NO_SPACE_RETRY_FIRST,
                Err(error) if error.is_no_space() => {
                    self.stall(error.to_string());
                    crate::dma::sleep(retry).await;
                    retry = (retry * 2).min(NO_SPACE_RETRY_MAX);
                }
                Err(_) => return,
            }
        }
    }

    async fn run_syncer(&self) {
        let mut retry = NO_SPACE_RETRY_FIRST;
        loop {
            let listener = self.written.listen();
            if self.stopped() {
                return;
            }
            let unsynced = {
                let state = self.state.borrow();
                state.written_offset() > state.durable_offset()
            };
            if !unsynced {
                listener.await;
                continue;
            }
            if let Err(wait) = self.sync_due() {
                futures_lite::future::or(listener, crate::dma::sleep(wait)).await;
                continue;
            }
            drop(listener);
            match self.sync_written().await {
                Ok(()) => retry = NO_SPACE_RETRY_FIRST,
                Err(error) if error.is_no_space() => {
                    crate::dma::sleep(retry).await;
                    retry = (retry * 2).min(NO_SPACE_RETRY_MAX);
                }
                Err(_) => return,
            }
        }
    }

    async fn run_checkpointer(&self) {
        loop {
            let listener = self.checkpoint_wanted.listen();
            if self.stopped() {
                return;
            }
            let interval = self.config.borrow().recovery_point_interval;
            futures_lite::future::or(listener, crate::dma::sleep(interval)).await;
            if self.stopped() {
                return;
            }
            if let Err(error) = self.store_recovery_point().await {
                if !error.is_no_space() {
                    return;
                }
                warn!(directory = %self.directory.display(), %error, "cannot write the recovery point; retrying later");
            }
        }
    }

    async fn run_preparer(&self) {
        if self.context.prepare_ahead_bytes == 0 {
            return;
        }
        let mut filling = false;
        loop {
            let listener = self.appended.listen();
            if self.stopped() {
                return;
            }
            match self.prepare_chunk(filling).await {
                Ok(wrote) => {
                    filling = wrote;
                    if !wrote {
                        listener.await;
                    }
                }
                Err(error) => {
                    if error.is_no_space() {
                        // Inside fallocated space this cannot happen; if it does, the log
                        // still works, only its syncs cost more.
                        warn!(directory = %self.directory.display(), %error, "stopped preparing segment blocks ahead");
                    }
                    return;
                }
            }
        }
    }

    /// Writes the next chunk of zeros ahead of the log end, if the active segment wants one:
    /// refilling starts when less than half of the window ahead is prepared (`filling` is false)
    /// and goes on to the whole window (`filling` is true), within the allocated blocks, and
    /// not while the log's writes are large. Returns whether it wrote.
    async fn prepare_chunk(&self, filling: bool) -> Result<bool, LogError> {
        let _prepare = self.prepare_lock.lock().await;
        if self.stopped() {
            return Ok(false);
        }
        let window = self.prepare_window_max();
        let (file, from, length) = {
            let mut state = self.state.borrow_mut();
            if state.write_bytes_average >= PREPARE_WRITE_BYTES_MAX {
                return Ok(false);
            }
            let active = state.active();
            let end = align_up(active.size);
            // The window grows with the segment up to its full size: a partition that has
            // taken one small batch is not worth the full window of zeros.
            let window = window.min(end.max(PREPARE_WINDOW_MIN_BYTES));
            let from = state.prepared.max(end);
            let target = (end + window).min(align_down(active.allocated));
            let start_below = if filling { target } else { end + window / 2 };
            if from >= target || from >= start_below {
                return Ok(false);
            }
            let length = (target - from).min(PREPARE_CHUNK_BYTES as u64);
            state.zeroing_from = Some(from);
            (state.active_file.clone(), from, length)
        };
        let written = file.write_blocks(from, &[&ZEROS[..length as usize]]).await;
        let mut state = self.state.borrow_mut();
        state.zeroing_from = None;
        match written {
            Ok(()) => {
                state.prepared = from + length;
                state.check_invariants();
                Ok(true)
            }
            // A full disk (not expected inside fallocated space) only stops the preparing: the
            // blocks past the log end hold nothing, and the writer overwrites them anyway.
            Err(error) if error.is_no_space() => Err(LogError::Io(error)),
            Err(error) => {
                drop(state);
                Err(self.write_failed(error))
            }
        }
    }

    /// The most the preparer keeps written ahead of the log end: its setting, within a segment.
    pub(super) fn prepare_window_max(&self) -> u64 {
        self.context
            .prepare_ahead_bytes
            .min(align_up(self.config.borrow().segment_bytes))
    }

    /// Refuses appends until a sync succeeds again.
    fn stall(&self, reason: String) {
        let mut state = self.state.borrow_mut();
        if state.stalled.is_none() {
            warn!(directory = %self.directory.display(), %reason, "writes refused until space is freed");
        }
        state.stalled = Some(reason);
    }

    /// Whether the syncer should sync now, and if not, how long it may wait at most.
    fn sync_due(&self) -> Result<(), Duration> {
        if self.closed.get() || self.sync_wanted.get() {
            return Ok(());
        }
        let config = self.config.borrow();
        let state = self.state.borrow();
        match config.flush {
            FlushPolicy::Durable => Ok(()),
            FlushPolicy::Relaxed { messages, interval } => {
                let unsynced = state.written.progress.messages - state.durable.progress.messages;
                if messages.is_some_and(|limit| unsynced >= limit)
                    || state.written.progress.bytes - state.durable.progress.bytes
                        >= RELAXED_SYNC_BYTES
                {
                    return Ok(());
                }
                let interval = interval
                    .unwrap_or(RELAXED_SYNC_INTERVAL_MAX)
                    .min(RELAXED_SYNC_INTERVAL_MAX);
                let age_ms = state
                    .oldest_unsynced_ms
                    .map(|oldest| (now_ms() - oldest).max(0) as u64)
                    .unwrap_or(0);
                let left = interval.saturating_sub(Duration::from_millis(age_ms));
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(left)
                }
            }
        }
    }

    /// Writes and syncs everything appended so far, and returns once it is durable. Concurrent
    /// callers queue; each flush covers all batches appended before it started. A sync that
    /// failed with ENOSPC elsewhere may have rewound the writer meanwhile: the loop writes again
    /// until the target is durable or a step of its own fails.
    pub async fn flush(&self) -> Result<(), LogError> {
        let target = self.log_end_offset();
        loop {
            self.check_online()?;
            if self.durable_offset() >= target {
                return Ok(());
            }
            self.write_appended().await?;
            self.sync_written().await?;
        }
    }

    /// The flusher's first stage: writes every batch appended and not yet written, in one
    /// direct write that starts with the partial tail block of the previous one.
    async fn write_appended(&self) -> Result<(), LogError> {
        let _write = self.write_lock.lock().await;
        self.check_online()?;
        let (file, from, parts, end_position, end_offset, end_progress) = {
            let state = self.state.borrow();
            if state.log_end_offset == state.written_offset() {
                return Ok(());
            }
            let from = state.written.clone();
            let mut parts = vec![from.tail_block.clone()];
            let first = state.recent_starting_at(from.offset);
            parts.extend(state.recent.range(first..).map(|batch| batch.bytes.clone()));
            (
                state.active_file.clone(),
                from,
                parts,
                state.active().size,
                state.log_end_offset,
                state.appended,
            )
        };
        // Each write's parts cover exactly its range: from the block it starts on to the end of
        // the last appended batch, with no gap and no overlap.
        let covered: u64 = parts.iter().map(|part| part.len() as u64).sum();
        assert_eq!(
            from.position + covered,
            end_position,
            "a write covers exactly its range"
        );
        // A zero write in flight that this write reaches ends before this one starts. Any
        // zero write started later begins past the appended batches, so past this write.
        let zeroing = self.state.borrow().zeroing_from;
        if zeroing.is_some_and(|start| start < align_up(end_position)) {
            drop(self.prepare_lock.lock().await);
        }
        // A write may run while the previous write's sync is in flight. It rewrites that
        // write's tail block with the same leading bytes, so whichever version the sync
        // catches (each sector old or new, see the module notes) holds them.
        let bytes: Vec<&[u8]> = parts.iter().map(|part| part.as_ref()).collect();
        if let Err(error) = file.write_blocks(from.position, &bytes).await {
            return Err(self.write_failed(error));
        }
        let mut state = self.state.borrow_mut();
        // Only a failed sync moves the written point back, and it takes the write lock first.
        assert_eq!(
            state.written.offset, from.offset,
            "nothing rewinds a write in flight"
        );
        let position = align_down(end_position);
        state.written = WritePoint {
            offset: end_offset,
            position,
            tail_block: tail_of(&parts, (end_position - position) as usize),
            progress: end_progress,
        };
        state.oldest_unsynced_ms.get_or_insert_with(now_ms);
        state.write_bytes_average =
            state.write_bytes_average - state.write_bytes_average / 8 + covered / 8;
        state.check_invariants();
        drop(state);
        self.written.notify(usize::MAX);
        self.written_moved.notify(usize::MAX);
        if !self.is_durable_mode() {
            self.high_watermark_moved.notify(usize::MAX);
        }
        Ok(())
    }

    /// The flusher's second stage: one `fdatasync` of the active segment makes everything
    /// written before it started durable.
    async fn sync_written(&self) -> Result<(), LogError> {
        let _sync = self.sync_lock.lock().await;
        self.check_online()?;
        // A roll seals a segment only after flushing it under the append lock, so everything
        // written to an older segment is durable by now: the active one is the one to sync.
        let (file, target, previous) = {
            let state = self.state.borrow();
            if state.written_offset() == state.durable_offset() {
                return Ok(());
            }
            (
                state.active_file.clone(),
                state.written.clone(),
                state.durable.progress,
            )
        };
        let started = Instant::now();
        if let Err(error) = file.fdatasync().await {
            let failed = self.write_failed(error);
            if failed.is_no_space() {
                // The sync may have lost what it was to make durable: write it all again.
                let _write = self.write_lock.lock().await;
                let mut state = self.state.borrow_mut();
                state.written_high = state.written_high();
                state.written = state.durable.clone();
                state.check_invariants();
                drop(state);
                self.stall(failed.to_string());
                self.appended.notify(usize::MAX);
            }
            return Err(failed);
        }
        let sync_latency = started.elapsed();
        let mut state = self.state.borrow_mut();
        let end_progress = target.progress;
        state.durable = target;
        state.oldest_unsynced_ms = (state.written.offset > state.durable.offset).then(now_ms);
        state.stalled = None;
        state.evict_recent(RECENT_CACHE_BYTES);
        state.check_invariants();
        drop(state);
        if let Some(observer) = self.observer.borrow().as_ref() {
            observer.flushed(
                end_progress.bytes - previous.bytes,
                (end_progress.batches - previous.batches) as usize,
                sync_latency,
            );
        }
        self.context.memory.poke();
        self.durable_moved.notify(usize::MAX);
        if self.is_durable_mode() {
            self.high_watermark_moved.notify(usize::MAX);
        }
        Ok(())
    }

    /// Writes the recovery point for what is durable now, if it moved.
    pub(super) async fn store_recovery_point(&self) -> Result<(), LogError> {
        let _one = self.checkpoint_lock.lock().await;
        let Some(_inside) = self.gate.enter() else {
            return Ok(());
        };
        let point = {
            let state = self.state.borrow();
            if state.durable.offset <= state.recovery_point {
                return Ok(());
            }
            state.next_recovery_point()
        };
        self.write_recovery_point(&point).await
    }

    /// Stores `point` (under the checkpoint lock) and records it as the log's latest.
    pub(super) async fn write_recovery_point(&self, point: &RecoveryPoint) -> Result<(), LogError> {
        recovery_point::store(&*self.context.disk, &self.directory, point)
            .await
            .map_err(|error| self.write_failed(error))?;
        let mut state = self.state.borrow_mut();
        state.recovery_point = point.offset;
        state.recovery_point_sequence = point.sequence;
        Ok(())
    }

    /// Flushes, trims the active segment to its logical size, records the recovery point at the
    /// log end and stops the flusher.
    pub async fn close(&self) -> Result<(), LogError> {
        let _append = self.append_lock.lock().await;
        self.closed.set(true);
        self.notify_everyone();
        self.flush().await?;
        let _prepare = self.prepare_lock.lock().await;
        let (file, size) = {
            let state = self.state.borrow();
            (state.active_file.clone(), state.active().size)
        };
        file.truncate(size).await?;
        file.fdatasync().await?;
        self.store_recovery_point().await
    }

    /// Closes the log for good and waits until nothing uses its files any more (no append,
    /// roll, read, checkpoint or clean in flight; waiters fail), so they can be changed on disk
    /// (`truncate_closed`) and the log opened again.
    pub async fn seal(&self, reason: &str) -> Result<(), LogError> {
        let closed = self.close().await;
        self.stop(reason.to_string(), false);
        self.gate.close_and_wait().await;
        // The append lock orders this after an append that was rolling: its files are closed.
        let _append = self.append_lock.lock().await;
        let _checkpoint = self.checkpoint_lock.lock().await;
        self.context.files.forget_under(&self.directory);
        closed
    }

    /// Stops the log and removes its directory (DeleteTopics). Appends, rolls, reads and
    /// checkpoints in flight finish or fail first; none can open a file once this has begun.
    pub async fn remove(&self) -> Result<(), LogError> {
        self.closed.set(true);
        self.stop("partition deleted".into(), false);
        self.gate.close_and_wait().await;
        // The append lock orders this after an append that was rolling: its files are closed.
        let _append = self.append_lock.lock().await;
        self.context.files.forget_under(&self.directory);
        let disk = &*self.context.disk;
        disk.remove_dir_all(&self.directory).await?;
        if let Some(parent) = self.directory.parent() {
            disk.sync_directory(parent).await?;
        }
        Ok(())
    }

    /// The bytes of the batches in memory from `from` on (tests and the crash simulator's
    /// checks use it to see what the writer would write).
    #[doc(hidden)]
    pub fn cached_batches(&self) -> Vec<Bytes> {
        self.state
            .borrow()
            .recent
            .iter()
            .map(|batch| batch.bytes.clone())
            .collect()
    }
}
