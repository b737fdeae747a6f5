//! One partition's log: segments on disk, the unflushed tail in memory, group commit.
//!
//! Lives on the shard that owns the partition, behind an `Rc`; never shared with another core.
//!
//! ## Write path
//! `append` validates a batch, assigns its offsets in a copy that becomes the stored bytes, and
//! keeps that copy in the recent-batch cache. The flusher (`run_flusher`, one task per log) is a
//! two-stage pipeline: its writer writes every batch appended since the last write in one direct
//! write, and its syncer makes everything written so far durable with one `fdatasync`. Producers
//! that need durability wait in `wait_durable`. While a sync is in flight, the writer already
//! writes what arrived meanwhile, so the disk keeps busy during the flush, and the next sync
//! covers all of it: its cost is shared by everyone who arrived meanwhile (group commit).
//!
//! ## The tail block
//! Direct writes cover whole 4 KiB blocks, so each flush rewrites the partly filled block that
//! ends the previous flush: acknowledged bytes are written again. A torn rewrite of that block
//! could destroy them. We rely on the device writing one aligned 4 KiB block atomically, which
//! holds for NVMe and virtio disks with 4 KiB physical blocks; `open` checks the device and logs a
//! warning where it cannot confirm this (a 512-byte-sector disk would need a tail copy instead).
//! The alternative, a copy of the tail block written and synced elsewhere before each rewrite,
//! would double the syncs on the latency path.
//!
//! ## Read path
//! Recent batches come from memory as `Bytes` slices; older ones by direct reads of the segment
//! (one copy out of the DMA buffer). The high watermark is the durable offset in durable mode and
//! the log end in relaxed mode, so consumers never see data a crash could take back, unless the
//! topic opted into relaxed flushing.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use event_listener::{Event, EventListener};
use tracing::{info, warn};

use crate::dma::{self, align_down, IoError, SegmentFile};
use crate::limits::{
    BLOCK_BYTES, PREALLOCATE_STEP_BYTES, RECENT_CACHE_BYTES, SCAN_CHUNK_BYTES, UNFLUSHED_MAX_BYTES,
};
use crate::producer_state::{ProducerEntry, ProducerError, ProducerStateTable, SequenceCheck};
use crate::record_batch::{
    assign_offset, first_offset_at_or_after, stamp_log_append_time, validate_produced, BatchError,
    BatchHeader, BatchWalk, ProduceRules,
};
use crate::recovery::{scan_segment, ScanEnd};
use crate::segment::{index_file_name, parse_segment_file_name, segment_file_name, Segment};
use crate::Offset;

/// Single-node logs have one leader epoch for their whole life; replication will bump it.
pub const LEADER_EPOCH: i32 = 0;

/// How long a relaxed-mode log may hold unflushed data at most, whatever `flush.ms` says: the
/// data waits in memory, not in a page cache, so it is flushed about as often as an OS would.
const RELAXED_FLUSH_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// Told about every completed flush of a log, for metrics. Implemented by the owning shard; called
/// on that shard, after the `fdatasync` returned.
pub trait FlushObserver {
    fn flushed(&self, bytes: u64, batches: usize, sync_latency: Duration);
}

/// When acknowledgements wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Acknowledge after the `fdatasync` covering the batch (the default, DESIGN section 4).
    Durable,
    /// `flush.messages` / `flush.ms`: acknowledge after the append, flush in the background.
    /// Acknowledged data can be lost on a crash or power loss.
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
            },
            producer_id_expiration_ms: 86_400_000,
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
    #[error("log {path} is offline: {reason}")]
    Offline { path: PathBuf, reason: String },
    #[error(
        "corruption in {path} at byte {position} ({reason}); a valid batch follows at byte \
         {valid_at}, so nothing was truncated and the partition stays offline"
    )]
    Corrupt {
        path: PathBuf,
        position: u64,
        valid_at: u64,
        reason: String,
    },
    #[error("invalid batch in older segment {path} at byte {position}: {reason}")]
    CorruptSealedSegment {
        path: PathBuf,
        position: u64,
        reason: String,
    },
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
    /// the offsets are the original ones. It is acknowledged once the original is durable.
    pub duplicate: bool,
}

struct CachedBatch {
    base_offset: Offset,
    next_offset: Offset,
    bytes: Bytes,
}

struct State {
    segments: BTreeMap<Offset, Segment>,
    log_start_offset: Offset,
    log_end_offset: Offset,
    /// Every batch below this offset is written and synced.
    durable_offset: Offset,
    /// Every batch below this offset is written (and maybe not yet synced).
    written_offset: Offset,
    /// File position (block aligned) in the active segment where the next write starts.
    flush_position: u64,
    /// The bytes already on disk between `flush_position` and the first unwritten batch: the
    /// partial tail block, written again by the next write.
    tail_block: Bytes,
    /// Running totals since open, of what was appended, written and made durable.
    appended: Progress,
    written: Progress,
    durable: Progress,
    oldest_unwritten_ms: Option<i64>,
    recent: VecDeque<CachedBatch>,
    recent_bytes: usize,
    offline: Option<String>,
    producers: ProducerStateTable,
}

/// Running totals of one stage of the write path.
#[derive(Clone, Copy, Default)]
struct Progress {
    messages: u64,
    bytes: u64,
    batches: u64,
}

impl State {
    /// Appended bytes not yet durable: they are held in memory until they are.
    fn unflushed_bytes(&self) -> u64 {
        self.appended.bytes - self.durable.bytes
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
    /// one, up to the end of the last flush (the rest is only in the recent-batch cache).
    fn readable_end(&self, segment: &Segment) -> u64 {
        if self.is_active(segment) {
            self.flush_position + self.tail_block.len() as u64
        } else {
            segment.size
        }
    }

    fn evict_recent(&mut self) {
        while self.recent_bytes > RECENT_CACHE_BYTES {
            match self.recent.front() {
                Some(front) if front.next_offset <= self.durable_offset => {
                    self.recent_bytes -= front.bytes.len();
                    self.recent.pop_front();
                }
                _ => break,
            }
        }
    }
}

pub struct PartitionLog {
    directory: PathBuf,
    config: RefCell<LogConfig>,
    state: RefCell<State>,
    /// Held while offsets are assigned across a segment roll, the one await on the append path.
    append_lock: async_lock::Mutex<()>,
    /// One write at a time, in order: each continues the tail block the previous one left.
    write_lock: async_lock::Mutex<()>,
    /// One sync at a time; the next one waits and then covers everything written meanwhile.
    sync_lock: async_lock::Mutex<()>,
    /// The durable offset moved, or the log went offline.
    durable_moved: Event,
    /// The high watermark moved (wakes long-polling fetches).
    high_watermark_moved: Event,
    /// Something was appended and awaits a write (wakes the flusher's writer).
    appended: Event,
    /// Something was written and awaits a sync (wakes the flusher's syncer).
    written: Event,
    closed: Cell<bool>,
    flush_observer: RefCell<Option<Rc<dyn FlushObserver>>>,
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

impl PartitionLog {
    /// Opens (or creates) the log in `directory`. `clean_shutdown` says whether the last process
    /// closed it cleanly; if not, every batch's CRC is checked and a torn tail is cut.
    pub async fn open(
        directory: &Path,
        config: LogConfig,
        clean_shutdown: bool,
    ) -> Result<Rc<PartitionLog>, LogError> {
        let created = !directory.exists();
        std::fs::create_dir_all(directory).map_err(|source| IoError {
            op: "create directory",
            path: directory.to_path_buf(),
            source,
        })?;
        if created {
            if let Some(parent) = directory.parent() {
                dma::sync_directory(parent).await?;
            }
        }
        let mut bases = Vec::new();
        let listing = std::fs::read_dir(directory).map_err(|source| IoError {
            op: "list directory",
            path: directory.to_path_buf(),
            source,
        })?;
        for entry in listing.flatten() {
            if let Some(base) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                bases.push(base);
            }
        }
        bases.sort();

        let mut segments = BTreeMap::new();
        let segment_count = bases.len();
        for (index, base) in bases.into_iter().enumerate() {
            let is_last = index + 1 == segment_count;
            let path = directory.join(segment_file_name(base));
            let file = SegmentFile::open_or_create(&path).await?;
            let file_size = file.size().await?;
            // A sealed segment was synced before its index was written: a valid index spares
            // the scan. The last segment is always rebuilt from the log.
            if !is_last {
                if let Some(segment) = load_sealed(directory, base, &file, file_size).await? {
                    segments.insert(base, segment);
                    continue;
                }
            }
            let mut segment = Segment::new(base, file, file_size);
            match scan_segment(&mut segment, file_size, !clean_shutdown).await? {
                ScanEnd::Clean => {}
                ScanEnd::TornTail {
                    position,
                    nonzero_bytes,
                } if is_last => {
                    warn!(
                        path = %path.display(),
                        position,
                        nonzero_bytes,
                        "torn tail after an unclean shutdown: truncating unacknowledged bytes"
                    );
                    segment.file.truncate(position).await?;
                    segment.file.fdatasync().await?;
                    segment.allocated = position;
                }
                ScanEnd::TornTail { position, .. } => {
                    return Err(LogError::CorruptSealedSegment {
                        path,
                        position,
                        reason: "invalid bytes inside a segment that is not the last".into(),
                    });
                }
                ScanEnd::Corrupt {
                    position,
                    valid_at,
                    reason,
                } => {
                    return Err(LogError::Corrupt {
                        path,
                        position,
                        valid_at,
                        reason,
                    });
                }
            }
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            let path = directory.join(segment_file_name(Offset(0)));
            let file = SegmentFile::open_or_create(&path).await?;
            dma::sync_directory(directory).await?;
            segments.insert(Offset(0), Segment::new(Offset(0), file, 0));
        }

        let (log_start_offset, log_end_offset, flush_position, tail_block, device) = {
            let first = segments.values().next().map(|segment| segment.base_offset);
            let active = segments.values().next_back();
            match (first, active) {
                (Some(first), Some(active)) => {
                    let flush_position = align_down(active.size);
                    let tail_length = (active.size - flush_position) as usize;
                    let tail = active.file.read(flush_position, tail_length).await?;
                    assert_eq!(tail.len(), tail_length, "tail block reads back whole");
                    (
                        first,
                        active.next_offset,
                        flush_position,
                        tail,
                        active.file.device(),
                    )
                }
                _ => unreachable!("segments is not empty here"),
            }
        };
        let producers =
            rebuild_producer_state(directory, &segments, log_start_offset, log_end_offset).await?;
        if !dma::device_writes_blocks_atomically(device) {
            warn!(
                directory = %directory.display(),
                "cannot confirm that this disk writes 4 KiB blocks atomically; a crash during \
                 a tail-block rewrite could damage acknowledged bytes"
            );
        }
        info!(
            directory = %directory.display(),
            log_start_offset = log_start_offset.0,
            log_end_offset = log_end_offset.0,
            segments = segments.len(),
            clean_shutdown,
            "log opened"
        );
        Ok(Rc::new(PartitionLog {
            directory: directory.to_path_buf(),
            config: RefCell::new(config),
            state: RefCell::new(State {
                segments,
                log_start_offset,
                log_end_offset,
                durable_offset: log_end_offset,
                written_offset: log_end_offset,
                flush_position,
                tail_block,
                appended: Progress::default(),
                written: Progress::default(),
                durable: Progress::default(),
                oldest_unwritten_ms: None,
                recent: VecDeque::new(),
                recent_bytes: 0,
                offline: None,
                producers,
            }),
            append_lock: async_lock::Mutex::new(()),
            write_lock: async_lock::Mutex::new(()),
            sync_lock: async_lock::Mutex::new(()),
            durable_moved: Event::new(),
            high_watermark_moved: Event::new(),
            appended: Event::new(),
            written: Event::new(),
            closed: Cell::new(false),
            flush_observer: RefCell::new(None),
        }))
    }

    /// Reports every flush to `observer` from now on.
    pub fn set_flush_observer(&self, observer: Rc<dyn FlushObserver>) {
        *self.flush_observer.borrow_mut() = Some(observer);
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
    }

    /// Whether acknowledgements wait for `fdatasync` (no `flush.messages`/`flush.ms` set).
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
        self.state.borrow().durable_offset
    }

    /// What consumers may read up to: durable data in durable mode, everything in relaxed mode.
    pub fn high_watermark(&self) -> Offset {
        let state = self.state.borrow();
        if self.is_durable_mode() {
            state.durable_offset
        } else {
            state.log_end_offset
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

    /// The reason the log stopped accepting writes, if it did.
    pub fn offline_reason(&self) -> Option<String> {
        self.state.borrow().offline.clone()
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

    /// A failed write or sync is fatal for the log (DESIGN section 3): no retry, no carrying on.
    fn go_offline(&self, reason: String) {
        warn!(directory = %self.directory.display(), %reason, "log goes offline");
        self.state.borrow_mut().offline = Some(reason);
        self.durable_moved.notify(usize::MAX);
        self.high_watermark_moved.notify(usize::MAX);
        self.appended.notify(usize::MAX);
        self.written.notify(usize::MAX);
    }

    /// Validates and appends one produced batch, assigning its offsets. Returns once it is in the
    /// log's memory; call `wait_durable` before acknowledging in durable mode.
    pub async fn append(&self, batch: &[u8]) -> Result<AppendInfo, LogError> {
        let now = now_ms();
        let rules = self.config.borrow().produce_rules;
        validate_produced(batch, &rules, now)?;
        let total_bytes = batch.len() as u64;

        let _append = self.append_lock.lock().await;
        self.wait_for_room(batch.len()).await?;
        if self.should_roll(total_bytes, now) {
            if let Err(error) = self.roll().await {
                self.go_offline(error.to_string());
                return Err(error);
            }
        }

        let mut state = self.state.borrow_mut();
        let produced = match BatchHeader::parse(batch) {
            Some(header) => header,
            None => unreachable!("validated batches have a header"),
        };
        let expiration_ms = self.config.borrow().producer_id_expiration_ms;
        if let SequenceCheck::Duplicate(original) =
            state.producers.check(&produced, now, expiration_ms)?
        {
            return Ok(AppendInfo {
                base_offset: Offset(original.base_offset),
                last_offset: Offset(original.last_offset),
                log_append_time_ms: if rules.log_append_time {
                    original.max_timestamp
                } else {
                    -1
                },
                log_start_offset: state.log_start_offset,
                duplicate: true,
            });
        }
        let base_offset = state.log_end_offset;
        // The one copy on the produce path: the stored batch differs from the produced one in
        // its offset (and, for LogAppendTime, its timestamp and CRC).
        let mut stored = BytesMut::from(batch);
        assign_offset(&mut stored, base_offset, LEADER_EPOCH);
        let log_append_time_ms = if rules.log_append_time {
            stamp_log_append_time(&mut stored, now);
            now
        } else {
            -1
        };
        let stored = stored.freeze();
        let header = match BatchHeader::parse(&stored) {
            Some(header) => header,
            None => unreachable!("validated batches have a header"),
        };
        let active = state.active_mut();
        let position = active.size;
        active.note_batch(&header, position, total_bytes);
        active.first_append_ms.get_or_insert(now);
        state.log_end_offset = header.next_offset();
        state.producers.record(&header, now);
        state.appended.messages += header.records_count as u64;
        state.appended.bytes += stored.len() as u64;
        state.appended.batches += 1;
        state.oldest_unwritten_ms.get_or_insert(now);
        state.recent_bytes += stored.len();
        state.recent.push_back(CachedBatch {
            base_offset,
            next_offset: header.next_offset(),
            bytes: stored,
        });
        let info = AppendInfo {
            base_offset,
            last_offset: header.last_offset(),
            log_append_time_ms,
            log_start_offset: state.log_start_offset,
            duplicate: false,
        };
        drop(state);
        self.appended.notify(usize::MAX);
        if !self.is_durable_mode() {
            self.high_watermark_moved.notify(usize::MAX);
        }
        Ok(info)
    }

    /// Waits, with the append lock held so that appends keep their order, until the log holds
    /// few enough unflushed bytes to take `incoming` more (`UNFLUSHED_MAX_BYTES`). A batch larger
    /// than the bound on its own goes in once everything before it is flushed.
    async fn wait_for_room(&self, incoming: usize) -> Result<(), LogError> {
        loop {
            self.check_online()?;
            let unflushed = self.state.borrow().unflushed_bytes();
            if unflushed == 0 || unflushed + incoming as u64 <= UNFLUSHED_MAX_BYTES as u64 {
                return Ok(());
            }
            let listener = self.durable_moved.listen();
            self.check_online()?;
            if self.state.borrow().unflushed_bytes() < unflushed {
                continue;
            }
            // The flusher is due: more than a relaxed-mode flush trigger is waiting.
            self.appended.notify(usize::MAX);
            listener.await;
        }
    }

    fn should_roll(&self, incoming_bytes: u64, now: i64) -> bool {
        let config = self.config.borrow();
        let state = self.state.borrow();
        let active = state.active();
        if active.size == 0 {
            return false;
        }
        let full = active.size + incoming_bytes > config.segment_bytes;
        let old = active
            .first_append_ms
            .is_some_and(|first| now - first >= config.segment_ms);
        // Relative offsets must fit the index's 32 bits, as in Kafka.
        let offsets_exhausted = state.log_end_offset.0 - active.base_offset.0 > i32::MAX as i64 / 2;
        full || old || offsets_exhausted
    }

    /// Seals the active segment (flushed, trimmed to its logical size) and starts a new one at
    /// the log end offset.
    async fn roll(&self) -> Result<(), LogError> {
        self.flush().await?;
        let (sealed_file, sealed_size, new_base) = {
            let state = self.state.borrow();
            let active = state.active();
            (active.file.clone(), active.size, state.log_end_offset)
        };
        sealed_file.truncate(sealed_size).await?;
        sealed_file.fdatasync().await?;
        let (sealed_base, index) = {
            let state = self.state.borrow();
            (state.active().base_offset, state.active().encode_index())
        };
        let index_file =
            SegmentFile::open_or_create(&self.directory.join(index_file_name(sealed_base))).await?;
        index_file.write_blocks_gathered(0, &[&index]).await?;
        index_file.fdatasync().await?;
        self.write_producer_snapshot(new_base).await?;
        let path = self.directory.join(segment_file_name(new_base));
        let file = SegmentFile::open_or_create(&path).await?;
        dma::sync_directory(&self.directory).await?;
        let mut state = self.state.borrow_mut();
        if let Some(sealed) = state.segments.values_mut().next_back() {
            sealed.allocated = sealed_size;
        }
        state
            .segments
            .insert(new_base, Segment::new(new_base, file, 0));
        state.flush_position = 0;
        state.tail_block = Bytes::new();
        info!(directory = %self.directory.display(), base_offset = new_base.0, "segment rolled");
        Ok(())
    }

    /// Snapshots the producer state as of `offset` (the new active segment's base, so every
    /// batch below it is covered) and removes all but the newest two snapshots.
    async fn write_producer_snapshot(&self, offset: Offset) -> Result<(), LogError> {
        let expiration_ms = self.config.borrow().producer_id_expiration_ms;
        let bytes = {
            let mut state = self.state.borrow_mut();
            state.producers.expire(now_ms(), expiration_ms);
            state.producers.snapshot_bytes(offset)
        };
        let path = self.directory.join(snapshot_file_name(offset));
        let file = SegmentFile::open_or_create(&path).await?;
        file.truncate(0).await?;
        file.write_blocks_gathered(0, &[&bytes]).await?;
        file.fdatasync().await?;
        let mut snapshots = list_snapshots(&self.directory);
        snapshots.sort();
        let keep_from = snapshots.len().saturating_sub(2);
        for old in &snapshots[..keep_from] {
            let old_path = self.directory.join(snapshot_file_name(*old));
            if let Err(error) = std::fs::remove_file(&old_path) {
                warn!(path = %old_path.display(), %error, "cannot remove an old producer snapshot");
            }
        }
        Ok(())
    }

    /// Every producer this partition currently knows (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerEntry> {
        let mut entries: Vec<ProducerEntry> =
            self.state.borrow().producers.entries().cloned().collect();
        entries.sort_by_key(|entry| entry.producer_id);
        entries
    }

    /// Writes and syncs everything appended so far. Concurrent callers queue; each flush covers
    /// all batches appended before it started.
    pub async fn flush(&self) -> Result<(), LogError> {
        self.write_appended().await?;
        self.sync_written().await
    }

    /// The flusher's first stage: writes every batch appended and not yet written, in one
    /// direct write that starts with the partial tail block of the previous one.
    async fn write_appended(&self) -> Result<(), LogError> {
        let _write = self.write_lock.lock().await;
        self.check_online()?;
        let config = self.config.borrow().clone();
        let (file, position, parts, end_position, end_offset, end, preallocate_to) = {
            let state = self.state.borrow();
            if state.log_end_offset == state.written_offset {
                return Ok(());
            }
            let active = state.active();
            let mut parts = vec![state.tail_block.clone()];
            parts.extend(
                state
                    .recent
                    .iter()
                    .filter(|batch| batch.base_offset >= state.written_offset)
                    .map(|batch| batch.bytes.clone()),
            );
            let end_position = active.size;
            let written_end = dma::align_up(end_position);
            let preallocate_to = (written_end > active.allocated).then(|| {
                let step = PREALLOCATE_STEP_BYTES.min(dma::align_up(config.segment_bytes));
                dma::align_up(written_end.max(active.allocated + step.max(BLOCK_BYTES)))
            });
            (
                active.file.clone(),
                state.flush_position,
                parts,
                end_position,
                state.log_end_offset,
                state.appended,
                preallocate_to,
            )
        };
        // A write may run while the previous write's sync is in flight. It rewrites that
        // write's tail block with the same leading bytes, so whichever version the sync
        // catches (the block is written atomically, see the module notes) holds them.
        let written: Result<(), IoError> = async {
            if let Some(size) = preallocate_to {
                file.preallocate(size).await?;
            }
            let bytes: Vec<&[u8]> = parts.iter().map(|part| part.as_ref()).collect();
            file.write_blocks_gathered(position, &bytes).await
        }
        .await;
        if let Err(error) = written {
            self.go_offline(error.to_string());
            return Err(error.into());
        }
        let mut state = self.state.borrow_mut();
        if let Some(size) = preallocate_to {
            state.active_mut().allocated = size;
        }
        let tail_length = (end_position - align_down(end_position)) as usize;
        state.tail_block = tail_of(&parts, tail_length);
        state.flush_position = align_down(end_position);
        state.written_offset = end_offset;
        state.written = end;
        state.oldest_unwritten_ms = (state.log_end_offset > end_offset).then(now_ms);
        drop(state);
        self.written.notify(usize::MAX);
        Ok(())
    }

    /// The flusher's second stage: one `fdatasync` of the active segment makes everything
    /// written before it started durable.
    async fn sync_written(&self) -> Result<(), LogError> {
        let _sync = self.sync_lock.lock().await;
        self.check_online()?;
        // A roll seals a segment only after flushing it under the append lock, so everything
        // written to an older segment is durable by now: the active one is the one to sync.
        let (file, end_offset, end) = {
            let state = self.state.borrow();
            if state.written_offset == state.durable_offset {
                return Ok(());
            }
            (
                state.active().file.clone(),
                state.written_offset,
                state.written,
            )
        };
        let started = std::time::Instant::now();
        if let Err(error) = file.fdatasync().await {
            self.go_offline(error.to_string());
            return Err(error.into());
        }
        let sync_latency = started.elapsed();
        let mut state = self.state.borrow_mut();
        let previous = std::mem::replace(&mut state.durable, end);
        state.durable_offset = end_offset;
        state.evict_recent();
        drop(state);
        if let Some(observer) = self.flush_observer.borrow().as_ref() {
            observer.flushed(
                end.bytes - previous.bytes,
                (end.batches - previous.batches) as usize,
                sync_latency,
            );
        }
        self.durable_moved.notify(usize::MAX);
        if self.is_durable_mode() {
            self.high_watermark_moved.notify(usize::MAX);
        }
        Ok(())
    }

    /// Waits until every offset below `offset` is durable, or the log goes offline.
    pub async fn wait_durable(&self, offset: Offset) -> Result<(), LogError> {
        loop {
            self.check_online()?;
            if self.state.borrow().durable_offset >= offset {
                return Ok(());
            }
            let listener = self.durable_moved.listen();
            self.check_online()?;
            if self.state.borrow().durable_offset >= offset {
                return Ok(());
            }
            listener.await;
        }
    }

    /// A listener that fires when the high watermark next moves. Create it, then check the
    /// watermark, then await it: no wake-up is missed in between.
    pub fn high_watermark_listener(&self) -> EventListener {
        self.high_watermark_moved.listen()
    }

    /// Whether the flusher should write now, and if not, how long it may wait at most.
    fn flush_due(&self) -> Result<(), Duration> {
        let config = self.config.borrow();
        let state = self.state.borrow();
        match config.flush {
            FlushPolicy::Durable => Ok(()),
            FlushPolicy::Relaxed { messages, interval } => {
                let unwritten = state.appended.messages - state.written.messages;
                if messages.is_some_and(|limit| unwritten >= limit)
                    || state.appended.bytes - state.written.bytes >= RECENT_CACHE_BYTES as u64 / 2
                {
                    return Ok(());
                }
                let interval = interval
                    .unwrap_or(RELAXED_FLUSH_INTERVAL_MAX)
                    .min(RELAXED_FLUSH_INTERVAL_MAX);
                let age_ms = state
                    .oldest_unwritten_ms
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

    /// The log's flusher: run it as one task on the owning shard for the life of the log. Its
    /// writer and syncer run side by side, so a write overlaps the sync before it.
    pub async fn run_flusher(self: Rc<Self>) {
        futures_lite::future::zip(self.run_writer(), self.run_syncer()).await;
    }

    fn stopped(&self) -> bool {
        self.closed.get() || self.state.borrow().offline.is_some()
    }

    async fn run_writer(&self) {
        loop {
            let listener = self.appended.listen();
            if self.stopped() {
                return;
            }
            let unwritten = {
                let state = self.state.borrow();
                state.log_end_offset > state.written_offset
            };
            if !unwritten {
                listener.await;
                continue;
            }
            if let Err(wait) = self.flush_due() {
                futures_lite::future::or(listener, dma::sleep(wait)).await;
                continue;
            }
            drop(listener);
            if self.write_appended().await.is_err() {
                return;
            }
        }
    }

    async fn run_syncer(&self) {
        loop {
            let listener = self.written.listen();
            if self.stopped() {
                return;
            }
            let unsynced = {
                let state = self.state.borrow();
                state.written_offset > state.durable_offset
            };
            if !unsynced {
                listener.await;
                continue;
            }
            drop(listener);
            if self.sync_written().await.is_err() {
                return;
            }
        }
    }

    /// Flushes, trims the active segment to its logical size and stops the flusher.
    pub async fn close(&self) -> Result<(), LogError> {
        let _append = self.append_lock.lock().await;
        self.closed.set(true);
        self.appended.notify(usize::MAX);
        self.written.notify(usize::MAX);
        self.flush().await?;
        let (file, size) = {
            let state = self.state.borrow();
            (state.active().file.clone(), state.active().size)
        };
        file.truncate(size).await?;
        file.fdatasync().await?;
        Ok(())
    }

    /// Closes the log and removes its directory (DeleteTopics).
    pub async fn remove(&self) -> Result<(), LogError> {
        self.closed.set(true);
        self.go_offline("partition deleted".into());
        std::fs::remove_dir_all(&self.directory).map_err(|source| IoError {
            op: "remove directory",
            path: self.directory.clone(),
            source,
        })?;
        if let Some(parent) = self.directory.parent() {
            dma::sync_directory(parent).await?;
        }
        Ok(())
    }

    /// Whole batches holding offsets `from..`, stopping before `upper` and after about
    /// `max_bytes` (the first batch is returned even if larger, as Kafka does since KIP-74).
    /// Returns contiguous runs of stored batch bytes.
    pub async fn read(
        &self,
        from: Offset,
        max_bytes: usize,
        upper: Offset,
    ) -> Result<Vec<Bytes>, LogError> {
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
                return Ok(Vec::new());
            }
            if state
                .recent
                .front()
                .is_some_and(|first| first.base_offset <= from)
            {
                let mut runs = Vec::new();
                let mut total = 0usize;
                for batch in state.recent.iter() {
                    if batch.next_offset <= from {
                        continue;
                    }
                    if batch.base_offset >= upper
                        || (!runs.is_empty() && total + batch.bytes.len() > max_bytes)
                    {
                        break;
                    }
                    total += batch.bytes.len();
                    runs.push(batch.bytes.clone());
                }
                return Ok(runs);
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
                return Ok(Vec::new());
            };
            (
                segment.file.clone(),
                segment.position_for_offset(from),
                state.readable_end(segment),
            )
        };
        let (file, start, disk_end) = disk_plan;
        read_batches_from_disk(&file, start, disk_end, from, max_bytes, upper).await
    }

    /// The first offset whose record timestamp is at least `target_ms`, with that timestamp, or
    /// `None` if every record is older (ListOffsets by timestamp).
    pub async fn offset_for_timestamp(
        &self,
        target_ms: i64,
    ) -> Result<Option<(Offset, i64)>, LogError> {
        let plan = {
            let state = self.state.borrow();
            let Some(segment) = state
                .segments
                .values()
                .find(|segment| segment.max_timestamp >= target_ms)
            else {
                return Ok(None);
            };
            (
                segment.file.clone(),
                segment.position_for_timestamp(target_ms),
                state.readable_end(segment),
                state.is_active(segment),
            )
        };
        let (file, mut position, disk_end, is_active) = plan;
        while position < disk_end {
            let length = ((disk_end - position) as usize).min(SCAN_CHUNK_BYTES);
            let chunk = file.read(position, length).await?;
            let mut walk = BatchWalk::new(&chunk);
            for (header, range) in walk.by_ref() {
                if header.max_timestamp >= target_ms {
                    return Ok(first_offset_at_or_after(&chunk[range], target_ms));
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
                if let Some(found) = first_offset_at_or_after(&batch.bytes, target_ms) {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// The largest timestamp in the log and the offset of the batch holding it.
    pub fn max_timestamp(&self) -> Option<(Offset, i64)> {
        let state = self.state.borrow();
        let segment = state
            .segments
            .values()
            .filter(|segment| segment.max_timestamp >= 0)
            .max_by_key(|segment| segment.max_timestamp)?;
        Some((segment.base_offset, segment.max_timestamp))
    }
}

fn snapshot_file_name(offset: Offset) -> String {
    format!("{:020}.snapshot", offset.0)
}

/// Offsets of the producer snapshot files in a partition directory.
fn list_snapshots(directory: &Path) -> Vec<Offset> {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".snapshot")?;
            (stem.len() == 20).then(|| stem.parse().ok().map(Offset))?
        })
        .collect()
}

/// The producer state after recovery: the newest valid snapshot inside the log, then every
/// batch after it replayed from the log (all of the log if there is no usable snapshot).
async fn rebuild_producer_state(
    directory: &Path,
    segments: &BTreeMap<Offset, Segment>,
    log_start_offset: Offset,
    log_end_offset: Offset,
) -> Result<ProducerStateTable, LogError> {
    let mut snapshots = list_snapshots(directory);
    snapshots.sort();
    let mut table = ProducerStateTable::default();
    let mut replay_from = log_start_offset;
    // Producers found again get a fresh expiration lease from now: the restart is not their
    // silence.
    let now = now_ms();
    for offset in snapshots.into_iter().rev() {
        if offset > log_end_offset || offset < log_start_offset {
            continue;
        }
        let path = directory.join(snapshot_file_name(offset));
        let file = SegmentFile::open_or_create(&path).await?;
        let size = file.size().await?;
        let bytes = file.read(0, size.min(256 * 1024 * 1024) as usize).await?;
        match ProducerStateTable::from_snapshot(&bytes) {
            Some((covered, loaded)) if covered == offset => {
                table = loaded;
                replay_from = offset;
                break;
            }
            _ => warn!(path = %path.display(), "unreadable producer snapshot; trying an older one"),
        }
    }
    for segment in segments
        .values()
        .filter(|segment| segment.next_offset > replay_from)
    {
        let mut position = if replay_from > segment.base_offset {
            segment.position_for_offset(replay_from)
        } else {
            0
        };
        while position < segment.size {
            let length = ((segment.size - position) as usize).min(SCAN_CHUNK_BYTES);
            let chunk = segment.file.read(position, length).await?;
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
            let Some(header) = BatchHeader::parse(&chunk) else {
                break;
            };
            let Some(total) = header.total_bytes() else {
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

/// A sealed segment restored from its index file, if that file exists and describes exactly this
/// segment file; `None` means scan the log instead.
async fn load_sealed(
    directory: &Path,
    base: Offset,
    file: &SegmentFile,
    file_size: u64,
) -> Result<Option<Segment>, LogError> {
    let index_path = directory.join(index_file_name(base));
    if !index_path.exists() {
        return Ok(None);
    }
    let index_file = SegmentFile::open_or_create(&index_path).await?;
    let index_size = index_file.size().await?;
    // A 1 GiB segment indexed every 4 KiB needs 4 MiB; anything far larger is not ours.
    if index_size > 64 * 1024 * 1024 {
        warn!(path = %index_path.display(), index_size, "oversized index file; scanning the log");
        return Ok(None);
    }
    let index = index_file.read(0, index_size as usize).await?;
    let segment = Segment::from_index(base, file.clone(), file_size, &index);
    if segment.is_none() {
        warn!(path = %index_path.display(), "index file does not match its segment; scanning the log");
    }
    Ok(segment)
}

async fn read_batches_from_disk(
    file: &SegmentFile,
    start: u64,
    disk_end: u64,
    from: Offset,
    max_bytes: usize,
    upper: Offset,
) -> Result<Vec<Bytes>, LogError> {
    let mut position = start;
    // Skip batches before `from` a chunk at a time, then return one contiguous run.
    while position < disk_end {
        let length = ((disk_end - position) as usize).min(max_bytes.max(64 * 1024) + 64 * 1024);
        let chunk = file.read(position, length).await?;
        let mut first: Option<usize> = None;
        let mut end = 0usize;
        let mut skipped = 0usize;
        let mut walk = BatchWalk::new(&chunk);
        for (header, range) in walk.by_ref() {
            if header.last_offset() < from {
                skipped = range.end;
                continue;
            }
            if header.base_offset >= upper {
                break;
            }
            match first {
                None => first = Some(range.start),
                Some(first) if range.end - first > max_bytes => break,
                Some(_) => {}
            }
            end = range.end;
        }
        if let Some(first) = first {
            return Ok(vec![chunk.slice(first..end)]);
        }
        if skipped > 0 {
            position += skipped as u64;
            continue;
        }
        // A batch larger than the chunk: read it whole by its header.
        let Some(header) = BatchHeader::parse(&chunk) else {
            break;
        };
        let Some(total) = header.total_bytes() else {
            break;
        };
        if header.base_offset >= upper || position + total as u64 > disk_end {
            break;
        }
        let whole = file.read(position, total).await?;
        if header.last_offset() >= from {
            return Ok(vec![whole]);
        }
        position += total as u64;
    }
    Ok(Vec::new())
}
