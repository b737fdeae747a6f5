//! One partition's log: segments on disk, the unflushed tail in memory, group commit.
//!
//! Lives on the shard that owns the partition, behind an `Rc`; never shared with another core.
//! Its files go through the shard's `Disk` (the real direct-I/O disk, or the simulated one in
//! crash tests), its memory comes from the shard's budget, and its sealed segments are opened
//! through the shard's bounded file cache (`LogContext`).
//!
//! The module is split along the log's seams:
//! - `open`: opening, and recovery after a crash against the partition's recovery point;
//! - `append`: validation, offsets, back-pressure, rolling segments, reserving disk space;
//! - `flusher`: the writer, the syncer and the recovery-point checkpointer, with the write-path
//!   invariants, and what ENOSPC and EIO do;
//! - `read`: fetches and timestamp lookups, from memory or disk;
//! - `snapshots`: producer-state snapshots and their replay.
//!
//! ## Durability modes (DESIGN section 4)
//! - Durable (the default, and `flush.messages=1`): an acknowledgement waits for the
//!   `fdatasync` that covers the batch; one sync covers every batch appended while the previous
//!   one was in flight (group commit). Consumers see only durable batches.
//! - Relaxed (`flush.messages` above 1, or `flush.ms`): an acknowledgement waits until the
//!   batch's write to the device has completed, so a process crash (`kill -9`) loses nothing;
//!   `fdatasync` runs when those settings say (and at least every second), so a power loss can
//!   lose acknowledged batches. Consumers see written batches.
//!
//! ## The tail block
//! Direct writes cover whole 4 KiB blocks, so each write rewrites the partly filled block that
//! ends the previous one: acknowledged bytes are written again. The rewrite carries exactly the
//! same leading bytes (`WritePoint::tail_block` is a copy of them), so a torn rewrite, where each
//! 512-byte sector is either the old or the new one, still holds every acknowledged byte: only
//! the not yet acknowledged bytes after them can be lost. This relies on sectors being written
//! atomically, which every disk guarantees for its logical sector; the simulated disk tears
//! blocks at that granularity in the crash tests.

mod append;
pub mod compaction;
mod epochs;
mod flusher;
mod open;
mod read;
mod read_ahead;
mod retention;
mod snapshots;
mod truncate;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use event_listener::{Event, EventListener};
use tracing::warn;

use crate::files::{FileCache, SpaceGuard};
use crate::io::{Disk, DiskFile, IoError};
use crate::limits::RECENT_CACHE_BYTES;
use crate::memory::{MemoryBudget, MemoryGrant, Reclaim};
use crate::producer_state::{ProducerEntry, ProducerError, ProducerStateTable};
use crate::record_batch::{BatchError, ProduceRules};
use crate::segment::Segment;
use crate::Offset;

pub use read::Fetched;
pub use retention::Retention;

/// Single-node logs have one leader epoch for their whole life; replication will bump it.
pub const LEADER_EPOCH: i32 = 0;

/// Told about every completed flush of a log and about the log going offline, for metrics and
/// for the cluster metadata. Implemented by the owning shard; called on that shard.
pub trait LogObserver {
    fn flushed(&self, bytes: u64, batches: usize, sync_latency: Duration);
    /// The log stopped taking writes for good (EIO, or corruption found while running).
    fn went_offline(&self, directory: &Path, reason: &str);
}

/// What the shard's logs share: the disk, the memory budget, the file cache and the space guard.
#[derive(Clone)]
pub struct LogContext {
    pub disk: Rc<dyn Disk>,
    pub memory: Rc<MemoryBudget>,
    pub files: Rc<FileCache>,
    pub space: Rc<SpaceGuard>,
    /// How far ahead of the log end the active segment's blocks are written with zeros before
    /// the log reaches them (`flusher::run_preparer`); 0 turns preparing off.
    pub prepare_ahead_bytes: u64,
}

impl LogContext {
    pub fn new(disk: Rc<dyn Disk>, memory_bytes: usize, open_files_max: usize) -> LogContext {
        LogContext {
            files: FileCache::new(disk.clone(), open_files_max),
            disk,
            memory: MemoryBudget::new(memory_bytes),
            space: SpaceGuard::new(),
            prepare_ahead_bytes: 0,
        }
    }

    /// A shard's real disk, through glommio, with segments prepared ahead of the log.
    pub fn direct_io(memory_bytes: usize, open_files_max: usize) -> LogContext {
        LogContext::new(Rc::new(crate::dma::DmaDisk), memory_bytes, open_files_max)
            .preparing_ahead(crate::limits::PREPARE_AHEAD_BYTES)
    }

    /// The same context with segments prepared `bytes` ahead of the log end.
    pub fn preparing_ahead(mut self, bytes: u64) -> LogContext {
        self.prepare_ahead_bytes = crate::io::align_up(bytes);
        self
    }
}

/// When acknowledgements wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Acknowledge after the `fdatasync` covering the batch.
    Durable,
    /// Acknowledge after the batch's write completed; sync every `messages` messages or after
    /// `interval` (at most `RELAXED_SYNC_INTERVAL_MAX`). A power loss can lose acknowledged data.
    Relaxed {
        messages: Option<u64>,
        interval: Option<Duration>,
    },
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: i64,
    pub flush: FlushPolicy,
    pub produce_rules: ProduceRules,
    /// `producer.id.expiration.ms`: idempotent-producer state is forgotten after this long
    /// without a batch from that producer.
    pub producer_id_expiration_ms: i64,
    /// `min.insync.replicas`: the broker refuses an acks=all produce when fewer replicas than
    /// this are in sync (on one node there is one).
    pub min_insync_replicas: i64,
    /// `log.flush.offset.checkpoint.interval.ms`: how often the recovery point is written.
    pub recovery_point_interval: Duration,
    /// `retention.ms` and `retention.bytes` where `cleanup.policy` includes `delete`;
    /// unlimited otherwise.
    pub retention: Retention,
    /// Compaction's settings where `cleanup.policy` includes `compact`; `None` otherwise.
    pub compaction: Option<compaction::Compaction>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3_600_000,
            flush: FlushPolicy::Durable,
            produce_rules: ProduceRules {
                max_message_bytes: 1_048_588,
                timestamp_after_max_ms: 3_600_000,
                timestamp_before_max_ms: i64::MAX,
                log_append_time: false,
                keys_required: false,
            },
            producer_id_expiration_ms: 86_400_000,
            min_insync_replicas: 1,
            recovery_point_interval: Duration::from_secs(5),
            retention: Retention::UNLIMITED,
            compaction: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Producer(#[from] ProducerError),
    #[error("offset {requested} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        requested: Offset,
        log_start_offset: Offset,
        log_end_offset: Offset,
    },
    #[error(transparent)]
    Io(#[from] IoError),
    /// A produced batch for a replica that stopped leading while the append waited.
    #[error("this replica does not lead the partition (any more)")]
    NotLeader,
    #[error("log {path} is offline: {reason}")]
    Offline { path: PathBuf, reason: String },
    /// The disk is full: the append was refused and nothing was written. Retriable: the log
    /// takes writes again by itself when space returns.
    #[error("log {path} refuses writes: {reason}")]
    NoSpace { path: PathBuf, reason: String },
    #[error(
        "corruption in {path} at byte {position}, below the partition's recovery point \
         ({reason}): those bytes were synced, so nothing was truncated and the partition stays \
         offline"
    )]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error(
        "corruption in {path} at byte {position} ({reason}); a valid batch follows at byte \
         {valid_at} and the log has no recovery point, so nothing was truncated and the \
         partition stays offline"
    )]
    CorruptWithoutRecoveryPoint {
        path: PathBuf,
        position: u64,
        valid_at: u64,
        reason: String,
    },
}

impl LogError {
    /// Whether the failure was a full disk (retriable), not a fault of the log or the request.
    pub fn is_no_space(&self) -> bool {
        matches!(self, LogError::NoSpace { .. })
            || matches!(self, LogError::Io(error) if error.is_no_space())
    }
}

/// What an append reports back to the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The broker's timestamp for `LogAppendTime` topics, -1 otherwise (Kafka's convention).
    pub log_append_time_ms: i64,
    pub log_start_offset: Offset,
    /// An idempotent producer's retry of a batch already in the log: nothing was written and
    /// the offsets are the original ones. It is acknowledged once the original is.
    pub duplicate: bool,
}

struct CachedBatch {
    base_offset: Offset,
    next_offset: Offset,
    bytes: Bytes,
    /// The batch's share of the shard's memory budget, given back when it leaves the cache.
    _memory: MemoryGrant,
}

/// Running totals of one stage of the write path.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Progress {
    messages: u64,
    bytes: u64,
    batches: u64,
}

/// Where the write path stands in the active segment: everything below `offset` is written
/// (for the durable point: synced), the next write starts at the block-aligned `position` with
/// `tail_block`, the bytes already on disk between `position` and the end of the last batch.
#[derive(Clone, Debug)]
struct WritePoint {
    offset: Offset,
    position: u64,
    tail_block: Bytes,
    progress: Progress,
}

impl WritePoint {
    fn start_of_segment(base: Offset, progress: Progress) -> WritePoint {
        WritePoint {
            offset: base,
            position: 0,
            tail_block: Bytes::new(),
            progress,
        }
    }

    /// The byte position in the active segment where the covered batches end.
    fn end_position(&self) -> u64 {
        self.position + self.tail_block.len() as u64
    }
}

struct State {
    segments: BTreeMap<Offset, Segment>,
    /// The active (last) segment's file, open for the life of the segment.
    active_file: Rc<dyn DiskFile>,
    log_start_offset: Offset,
    /// The highest log start a recovery-point write has carried, whether or not it completed
    /// (its caller may have been cancelled at that await): every later recovery point carries
    /// at least this, so a start that may have reached the disk is never written back lower.
    log_start_stored: Offset,
    log_end_offset: Offset,
    /// After the last completed write.
    written: WritePoint,
    /// The highest written offset ever: relaxed mode's high watermark and acknowledgement
    /// point. A sync that fails with ENOSPC rewinds `written` to rewrite from the durable point,
    /// but what was written once stays in the file (the rewrite writes the same bytes), so what
    /// consumers were shown and producers were told stays true, and never moves back.
    written_high: Offset,
    /// As of the last completed sync; a sync that fails with ENOSPC rewinds `written` to it.
    durable: WritePoint,
    appended: Progress,
    /// When the oldest written but unsynced batch was written (relaxed mode's `flush.ms`).
    oldest_unsynced_ms: Option<i64>,
    recent: VecDeque<CachedBatch>,
    recent_bytes: usize,
    offline: Option<String>,
    /// Writes are refused: a write or sync hit ENOSPC and the flusher is retrying it.
    stalled: Option<String>,
    producers: ProducerStateTable,
    /// The last recovery point stored, and its sequence number.
    recovery_point: Offset,
    recovery_point_sequence: u64,
    /// The active segment's blocks below this position have been written (zeros or batches),
    /// so a write there changes no extent and its `fdatasync` carries no filesystem metadata.
    prepared: u64,
    /// Where the zero write in flight starts, if there is one: the writer does not write over it.
    zeroing_from: Option<u64>,
    /// A moving average of the writer's write sizes (each write weighs an eighth): the
    /// preparer stands aside while it is at `limits::PREPARE_WRITE_BYTES_MAX` or above.
    write_bytes_average: u64,
    /// Where the cleaner's next map starts (Kafka's cleaner checkpoint; stored after each
    /// clean in the partition's `cleaner-checkpoint` file and read back at open).
    first_dirty: Offset,
}

impl State {
    /// Puts a batch that has its offsets at the log's end: its segment's index, the log end,
    /// its producer's state, the totals and the recent-batch cache. The produce and the
    /// follower append paths both end here.
    fn push_batch(
        &mut self,
        header: &crate::record_batch::BatchHeader,
        stored: Bytes,
        memory: MemoryGrant,
        now: i64,
    ) {
        let total_bytes = stored.len() as u64;
        let active = self.active_mut();
        let position = active.size;
        active.note_batch(header, position, total_bytes);
        active.first_append_ms.get_or_insert(now);
        self.log_end_offset = header.next_offset();
        self.producers.record(header, now);
        self.appended.messages += header.records_count.max(0) as u64;
        self.appended.bytes += total_bytes;
        self.appended.batches += 1;
        self.recent_bytes += stored.len();
        self.recent.push_back(CachedBatch {
            base_offset: header.base_offset,
            next_offset: header.next_offset(),
            bytes: stored,
            _memory: memory,
        });
    }

    /// The recovery point for what is durable now, with the log start that may have been
    /// stored (`log_start_stored`), numbered after the last one.
    fn next_recovery_point(&self) -> crate::recovery_point::RecoveryPoint {
        crate::recovery_point::RecoveryPoint {
            sequence: self.recovery_point_sequence + 1,
            offset: self.durable.offset,
            segment_base: self.active().base_offset,
            position: self.durable.end_position(),
            log_start: self.log_start_stored,
        }
    }

    fn durable_offset(&self) -> Offset {
        self.durable.offset
    }

    fn written_offset(&self) -> Offset {
        self.written.offset
    }

    /// What relaxed mode acknowledges and shows consumers (see `written_high`).
    fn written_high(&self) -> Offset {
        self.written_high.max(self.written.offset)
    }

    /// Appended bytes not yet durable: they are held in memory until they are.
    fn unflushed_bytes(&self) -> u64 {
        self.appended.bytes - self.durable.progress.bytes
    }

    fn active(&self) -> &Segment {
        // A log always has at least one segment: `open` creates one when the directory is empty.
        match self.segments.values().next_back() {
            Some(segment) => segment,
            None => unreachable!("a partition log always has an active segment"),
        }
    }

    fn active_mut(&mut self) -> &mut Segment {
        match self.segments.values_mut().next_back() {
            Some(segment) => segment,
            None => unreachable!("a partition log always has an active segment"),
        }
    }

    fn is_active(&self, segment: &Segment) -> bool {
        segment.base_offset == self.active().base_offset
    }

    /// How far a segment's file holds written bytes: all of a sealed segment; for the active
    /// one, up to the end of the last write (the rest is only in the recent-batch cache).
    fn readable_end(&self, segment: &Segment) -> u64 {
        if self.is_active(segment) {
            self.written.end_position()
        } else {
            segment.size
        }
    }

    /// The index in the recent-batch cache of the first batch that starts at `offset` or
    /// later. The cache holds consecutive batches in offset order (appended at the back,
    /// evicted from the front), so this is a binary search: a scan here ran over thousands of
    /// entries on every write (an 8 MiB cache holds some 7,000 one-record batches).
    fn recent_starting_at(&self, offset: Offset) -> usize {
        self.recent
            .partition_point(|batch| batch.base_offset < offset)
    }

    /// The index of the first cached batch that ends after `offset`: the one holding it, or
    /// the first after it.
    fn recent_ending_after(&self, offset: Offset) -> usize {
        self.recent
            .partition_point(|batch| batch.next_offset <= offset)
    }

    /// Drops cached batches that are durable, oldest first, while the cache holds more than
    /// `keep` bytes. Returns the bytes dropped.
    fn evict_recent(&mut self, keep: usize) -> usize {
        let mut dropped = 0;
        while self.recent_bytes > keep {
            match self.recent.front() {
                Some(front) if front.next_offset <= self.durable.offset => {
                    self.recent_bytes -= front.bytes.len();
                    dropped += front.bytes.len();
                    self.recent.pop_front();
                }
                _ => break,
            }
        }
        dropped
    }

    /// The write path's invariants (DESIGN section 3): the durable point never passes the written
    /// one, which never passes the log end; the next write starts on a block, with less than a
    /// block of tail, inside the active segment's batches; and every batch from the written
    /// offset on is still in memory, so the next write (or a rewind) can cover it.
    fn check_invariants(&self) {
        assert!(
            self.durable.offset <= self.written.offset,
            "durable <= written"
        );
        assert!(self.written.offset <= self.log_end_offset, "written <= end");
        assert!(
            self.durable.progress.bytes <= self.written.progress.bytes
                && self.written.progress.bytes <= self.appended.bytes,
            "durable, written and appended bytes are ordered"
        );
        assert_eq!(
            self.written.position % crate::limits::BLOCK_BYTES,
            0,
            "writes start on a block"
        );
        assert!(
            (self.written.tail_block.len() as u64) < crate::limits::BLOCK_BYTES,
            "the tail is less than a block"
        );
        assert!(
            self.written.end_position() <= self.active().size,
            "the written end is inside the active segment"
        );
        if let Some(zeroing) = self.zeroing_from {
            assert!(
                crate::io::align_up(self.written.end_position()) <= zeroing,
                "no zero write in flight is behind written batches"
            );
        }
        if self.written.offset < self.log_end_offset {
            let first_unwritten = self.recent_starting_at(self.written.offset);
            assert!(
                self.recent
                    .get(first_unwritten)
                    .is_some_and(|batch| batch.base_offset == self.written.offset),
                "the first unwritten batch is in memory"
            );
        }
    }
}

/// A door that operations opening files pass through; `remove` closes it and waits for those
/// inside to leave, so no open can race the removal of the partition's directory (glommio
/// panics on a file whose directory vanished in the middle of its open).
struct Gate {
    open: Cell<bool>,
    inside: Cell<usize>,
    left: Event,
}

struct GateGuard<'a>(&'a Gate);

impl Gate {
    fn new() -> Gate {
        Gate {
            open: Cell::new(true),
            inside: Cell::new(0),
            left: Event::new(),
        }
    }

    fn is_open(&self) -> bool {
        self.open.get()
    }

    fn enter(&self) -> Option<GateGuard<'_>> {
        self.open.get().then(|| {
            self.inside.set(self.inside.get() + 1);
            GateGuard(self)
        })
    }

    async fn close_and_wait(&self) {
        self.open.set(false);
        loop {
            let listener = self.left.listen();
            if self.inside.get() == 0 {
                return;
            }
            listener.await;
        }
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.0.inside.set(self.0.inside.get() - 1);
        self.0.left.notify(usize::MAX);
    }
}

pub struct PartitionLog {
    directory: PathBuf,
    context: LogContext,
    config: RefCell<LogConfig>,
    state: RefCell<State>,
    /// Held while offsets are assigned across a segment roll, the one await on the append path.
    append_lock: async_lock::Mutex<()>,
    /// One write at a time, in order: each continues the tail block the previous one left.
    write_lock: async_lock::Mutex<()>,
    /// One sync at a time; the next one waits and then covers everything written meanwhile.
    sync_lock: async_lock::Mutex<()>,
    /// One recovery-point write at a time.
    checkpoint_lock: async_lock::Mutex<()>,
    /// Held by the preparer while it writes zeros ahead of the log end; a roll or close holds it
    /// to trim the active segment with no zero write in flight behind its end.
    prepare_lock: async_lock::Mutex<()>,
    /// The durable offset moved, or the log went offline.
    durable_moved: Event,
    /// The written offset moved (relaxed mode's acknowledgements wait on it).
    written_moved: Event,
    /// The high watermark moved (wakes long-polling fetches).
    high_watermark_moved: Event,
    /// Something was appended and awaits a write (wakes the flusher's writer).
    appended: Event,
    /// Something was written and awaits a sync (wakes the flusher's syncer).
    written: Event,
    /// A sync should not wait for relaxed mode's triggers (an append is held for room).
    sync_wanted: Cell<bool>,
    /// The recovery point should be written soon (a segment rolled).
    checkpoint_wanted: Event,
    closed: Cell<bool>,
    gate: Gate,
    observer: RefCell<Option<Rc<dyn LogObserver>>>,
    /// The disk read made ahead of an in-order consumer (`read_ahead`), and its changes.
    read_ahead: RefCell<read_ahead::ReadAhead>,
    read_ahead_moved: Event,
    /// The cleaner swapped segments (a read that found its file gone plans again), and whether
    /// a swap is under way.
    segments_moved: Event,
    swapping: Cell<bool>,
    /// Bumped whenever a swap changes which file a segment's name holds: a read that planned
    /// before and opened after plans again.
    swap_generation: Cell<u64>,
    /// The log itself, for the background reads it starts.
    me: std::rc::Weak<PartitionLog>,
    /// Replication's bound on the high watermark (`set_replicated_high_watermark`): what every
    /// in-sync replica has made durable on a leader, the leader's high watermark on a
    /// follower. `None` while this log alone decides (a single replica).
    replicated_high: std::cell::Cell<Option<Offset>>,
    /// Each leader epoch's first offset (`epochs`).
    epochs: RefCell<epochs::EpochCache>,
    /// The leader epoch this log's produced batches are stamped with (`set_leader_epoch`).
    leader_epoch: Cell<i32>,
    /// Whether produced batches are taken (`set_leading`): a follower's log takes only its
    /// leader's batches.
    leading: Cell<bool>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// The last `length` bytes of the concatenation of `parts`.
fn tail_of(parts: &[Bytes], length: usize) -> Bytes {
    let mut tail = BytesMut::with_capacity(length);
    let mut remaining = length;
    let mut pieces = Vec::new();
    for part in parts.iter().rev() {
        if remaining == 0 {
            break;
        }
        let take = remaining.min(part.len());
        pieces.push(part.slice(part.len() - take..));
        remaining -= take;
    }
    for piece in pieces.iter().rev() {
        tail.extend_from_slice(piece);
    }
    tail.freeze()
}

impl Reclaim for PartitionLog {
    fn reclaim(&self, wanted: usize) -> usize {
        // A ready read-ahead is speculation: it goes first.
        let read_ahead = {
            let mut slot = self.read_ahead.borrow_mut();
            let held = slot.held_bytes();
            if held > 0 {
                *slot = read_ahead::ReadAhead::Idle;
            }
            held
        };
        if read_ahead >= wanted {
            return read_ahead;
        }
        let wanted = wanted - read_ahead;
        let mut state = self.state.borrow_mut();
        let keep = state.recent_bytes.saturating_sub(wanted);
        read_ahead + state.evict_recent(keep)
    }
}

impl PartitionLog {
    /// Reports flushes and going offline to `observer` from now on.
    pub fn set_observer(&self, observer: Rc<dyn LogObserver>) {
        *self.observer.borrow_mut() = Some(observer);
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    pub fn config(&self) -> LogConfig {
        self.config.borrow().clone()
    }

    pub fn set_config(&self, config: LogConfig) {
        *self.config.borrow_mut() = config;
        self.appended.notify(usize::MAX);
        self.written.notify(usize::MAX);
    }

    /// `min.insync.replicas` of the log's topic.
    pub fn min_insync_replicas(&self) -> i64 {
        self.config.borrow().min_insync_replicas
    }

    /// Whether acknowledgements wait for `fdatasync` (the durable mode).
    pub fn is_durable_mode(&self) -> bool {
        self.config.borrow().flush == FlushPolicy::Durable
    }

    pub fn log_start_offset(&self) -> Offset {
        self.state.borrow().log_start_offset
    }

    pub fn log_end_offset(&self) -> Offset {
        self.state.borrow().log_end_offset
    }

    pub fn durable_offset(&self) -> Offset {
        self.state.borrow().durable_offset()
    }

    pub fn written_offset(&self) -> Offset {
        self.state.borrow().written_offset()
    }

    /// The last recovery point written (every batch below it is known to be synced).
    pub fn recovery_point(&self) -> Offset {
        self.state.borrow().recovery_point
    }

    /// What consumers may read up to: what this log may acknowledge
    /// (`local_high_watermark`), bounded by what replication allows, if it bounds it.
    pub fn high_watermark(&self) -> Offset {
        let local = self.local_high_watermark();
        match self.replicated_high.get() {
            Some(replicated) => local.min(replicated),
            None => local,
        }
    }

    /// What this log may acknowledge on its own: durable data in durable mode, written data in
    /// relaxed mode (what a process crash cannot take back). A leader serves its followers up
    /// to here, and a follower reports a position only once it is here.
    pub fn local_high_watermark(&self) -> Offset {
        let state = self.state.borrow();
        if self.is_durable_mode() {
            state.durable_offset()
        } else {
            state.written_high()
        }
    }

    /// Bounds the high watermark by what replication allows (`None`: no bound, this log
    /// alone decides), waking the fetches and acknowledgements that wait on it.
    pub fn set_replicated_high_watermark(&self, bound: Option<Offset>) {
        if self.replicated_high.replace(bound) != bound {
            self.high_watermark_moved.notify(usize::MAX);
        }
    }

    /// Stamps batches produced from now on with `epoch` (this replica leads in it).
    pub fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.set(epoch);
    }

    /// Takes produced batches (`true`, a leader's log, the default) or refuses them with
    /// `NotLeader`, checked after the append's last wait, so a batch that was waiting when
    /// the replica stopped leading is not written to a follower's log.
    pub fn set_leading(&self, leading: bool) {
        self.leading.set(leading);
    }

    /// Whether the log knows which leader epochs its batches carry (its epoch cache reads).
    pub fn epochs_known(&self) -> bool {
        self.epochs.borrow().is_known()
    }

    /// The newest leader epoch of the log's batches, if it holds any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.borrow().latest()
    }

    /// OffsetForLeaderEpoch (KIP-279), as Kafka answers it from its leader epoch cache: the
    /// largest epoch of the log not newer than `requested` and the offset where it ends;
    /// `None` (undefined) for a negative epoch or one newer than every epoch the log holds.
    pub fn end_offset_for_epoch(&self, requested: i32) -> Option<(i32, Offset)> {
        self.epochs
            .borrow()
            .end_offset_for(requested, self.log_end_offset())
    }

    /// Makes sure the epoch cache has `epoch` before a batch of it is appended at the log's end
    /// (the append lock is held).
    async fn note_epoch(&self, epoch: i32) -> Result<(), LogError> {
        if !self.epochs.borrow().needs(epoch) {
            return Ok(());
        }
        let mut next = self.epochs.borrow().clone();
        next.push(
            &*self.context.disk,
            &self.directory,
            epoch,
            self.log_end_offset(),
        )
        .await
        .map_err(|error| self.write_failed(error))?;
        *self.epochs.borrow_mut() = next;
        Ok(())
    }

    /// Replication's bound on the high watermark, if it bounds it.
    pub fn replicated_high_watermark(&self) -> Option<Offset> {
        self.replicated_high.get()
    }

    /// Waits until the high watermark passes every offset below `offset`, or the log goes
    /// offline.
    pub async fn wait_high_watermark(&self, offset: Offset) -> Result<(), LogError> {
        loop {
            self.check_online()?;
            if self.high_watermark() >= offset {
                return Ok(());
            }
            let listener = self.high_watermark_moved.listen();
            self.check_online()?;
            if self.high_watermark() >= offset {
                return Ok(());
            }
            listener.await;
        }
    }

    /// Without transactions every batch is stable once it is below the high watermark.
    pub fn last_stable_offset(&self) -> Offset {
        self.high_watermark()
    }

    /// Bytes of whole batches across all segments.
    pub fn size_bytes(&self) -> u64 {
        self.state
            .borrow()
            .segments
            .values()
            .map(|segment| segment.size)
            .sum()
    }

    /// Bytes held in the recent-batch cache (durable or not).
    pub fn cached_bytes(&self) -> usize {
        self.state.borrow().recent_bytes
    }

    /// The reason the log stopped accepting writes for good, if it did.
    pub fn offline_reason(&self) -> Option<String> {
        self.state.borrow().offline.clone()
    }

    /// Why writes are refused for now (a full disk), if they are.
    pub fn stalled_reason(&self) -> Option<String> {
        self.state.borrow().stalled.clone()
    }

    fn check_online(&self) -> Result<(), LogError> {
        match &self.state.borrow().offline {
            Some(reason) => Err(LogError::Offline {
                path: self.directory.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Online, not closed, and not refusing writes for lack of space.
    fn check_writable(&self) -> Result<(), LogError> {
        self.check_online()?;
        if self.closed.get() {
            return Err(LogError::Offline {
                path: self.directory.clone(),
                reason: "the log is closed".into(),
            });
        }
        let no_space = |reason: String| LogError::NoSpace {
            path: self.directory.clone(),
            reason,
        };
        if let Some(reason) = &self.state.borrow().stalled {
            return Err(no_space(reason.clone()));
        }
        if self.context.space.refusing() {
            return Err(no_space(
                "the disk's free space is below storage_min_free_bytes; writes resume when space \
                 is freed"
                    .into(),
            ));
        }
        Ok(())
    }

    /// A failed write or sync is fatal for the log (DESIGN section 3): no retry, no carrying on.
    fn go_offline(&self, reason: String) {
        self.stop(reason, true);
    }

    fn stop(&self, reason: String, tell_observer: bool) {
        if self.state.borrow().offline.is_some() {
            return;
        }
        if tell_observer {
            warn!(directory = %self.directory.display(), %reason, "log goes offline");
        } else {
            tracing::info!(directory = %self.directory.display(), %reason, "log stopped");
        }
        self.state.borrow_mut().offline = Some(reason.clone());
        self.notify_everyone();
        if tell_observer {
            if let Some(observer) = self.observer.borrow().as_ref() {
                observer.went_offline(&self.directory, &reason);
            }
        }
    }

    fn notify_everyone(&self) {
        self.durable_moved.notify(usize::MAX);
        self.written_moved.notify(usize::MAX);
        self.high_watermark_moved.notify(usize::MAX);
        self.appended.notify(usize::MAX);
        self.written.notify(usize::MAX);
        self.checkpoint_wanted.notify(usize::MAX);
    }

    /// An I/O error on the write path: ENOSPC refuses writes for now, anything else is fatal.
    fn write_failed(&self, error: IoError) -> LogError {
        if error.is_no_space() {
            self.context.space.note_exhausted();
            return LogError::NoSpace {
                path: self.directory.clone(),
                reason: error.to_string(),
            };
        }
        self.go_offline(error.to_string());
        LogError::Io(error)
    }

    /// Every producer this partition currently knows (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerEntry> {
        let mut entries: Vec<ProducerEntry> =
            self.state.borrow().producers.entries().cloned().collect();
        entries.sort_by_key(|entry| entry.producer_id);
        entries
    }

    /// Forgets producers silent for longer than `producer.id.expiration.ms` (run on a timer by
    /// the shard, and at every roll).
    pub fn expire_producers(&self) -> usize {
        let expiration_ms = self.config.borrow().producer_id_expiration_ms;
        let mut state = self.state.borrow_mut();
        let before = state.producers.len();
        state.producers.expire(now_ms(), expiration_ms);
        before - state.producers.len()
    }

    /// Waits until every offset below `offset` is durable, or the log goes offline.
    pub async fn wait_durable(&self, offset: Offset) -> Result<(), LogError> {
        self.wait_until(&self.durable_moved, |state| {
            state.durable_offset() >= offset
        })
        .await
    }

    /// Waits until every offset below `offset` is written to the device, or the log goes offline.
    pub async fn wait_written(&self, offset: Offset) -> Result<(), LogError> {
        self.wait_until(&self.written_moved, |state| state.written_high() >= offset)
            .await
    }

    /// Waits until `reached` holds, re-checking whenever `moved` fires, or the log goes offline.
    /// The listener is made before the second check, so no notification is missed in between.
    async fn wait_until(
        &self,
        moved: &Event,
        reached: impl Fn(&State) -> bool,
    ) -> Result<(), LogError> {
        loop {
            self.check_online()?;
            if reached(&self.state.borrow()) {
                return Ok(());
            }
            let listener = moved.listen();
            self.check_online()?;
            if reached(&self.state.borrow()) {
                return Ok(());
            }
            listener.await;
        }
    }

    /// Waits until offsets below `offset` may be acknowledged: durable in durable mode, written
    /// in relaxed mode.
    pub async fn wait_acknowledgeable(&self, offset: Offset) -> Result<(), LogError> {
        if self.is_durable_mode() {
            self.wait_durable(offset).await
        } else {
            self.wait_written(offset).await
        }
    }

    /// A listener that fires when the high watermark next moves. Create it, then check the
    /// watermark, then await it: no wake-up is missed in between.
    pub fn high_watermark_listener(&self) -> EventListener {
        self.high_watermark_moved.listen()
    }
}

/// Keep the per-log cache bound honest with the memory budget's picture of it.
const _: () = assert!(RECENT_CACHE_BYTES > 0);
