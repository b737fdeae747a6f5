//! Every fixed limit of the storage crate, with the reason it has the value it has.

/// The fixed header of a v2 record batch; nothing shorter can be a batch.
pub const BATCH_HEADER_BYTES: usize = record_format::BATCH_HEADER_BYTES;

/// Direct I/O works in whole blocks. 4 KiB is the physical block of every NVMe and virtio disk we
/// target (the tail-block rewrite needs only 512-byte sectors to be atomic; see `partition_log`).
pub const BLOCK_BYTES: u64 = 4096;

/// Segment files grow by this much at a time (fallocate), so the file's size and block map
/// change once per step, not with every write. Clamped to `segment.bytes` for small segments.
/// Fallocated blocks are still unwritten extents: the preparer writes them (below).
pub const PREALLOCATE_STEP_BYTES: u64 = 64 * 1024 * 1024;

/// How far ahead of the log end the preparer keeps the active segment's blocks written with
/// zeros. A direct write into a fallocated but never written block makes the filesystem convert
/// an unwritten extent, a journal commit that the next `fdatasync` waits for; a write over a
/// written block has nothing to commit. Measured on the development VM (ext4 on virtio), 64 KiB
/// writes each followed by `fdatasync`: 477 MB/s over written blocks, 270 MB/s into fallocated
/// ones, while zeros go down at 2 GB/s in large writes; bench/README.md has the figures. 32 MiB
/// is about 100 ms of the disk's synced write rate: refilled in bursts of half of it, so a few
/// syncs per 16 MiB commit the conversions instead of every one.
pub const PREPARE_AHEAD_BYTES: u64 = 32 * 1024 * 1024;

/// The preparer stands aside while the log's writes average this many bytes or more: then
/// writing every byte twice costs more than the extent conversions it saves, which large writes
/// amortise. Measured on the development VM (ext4 on virtio, one file, each write followed by
/// `fdatasync`, the zeros' own time counted): prepared blocks carried 418-445 MB/s against
/// 305-325 MB/s fresh at 64 KiB per write, and 547-617 against 655-716 MB/s at 128 KiB; at
/// 512 KiB, 1,054-1,089 against 1,394-1,756. At the broker's durable maximum (4 partitions,
/// writes of 128 KiB batches) preparing cost a fifth of the throughput: 871-897 MB/s with it,
/// 1,098 without. bench/README.md has the figures.
pub const PREPARE_WRITE_BYTES_MAX: u64 = 96 * 1024;

/// The smallest window the preparer keeps ahead; it grows with the active segment's size to
/// `PREPARE_AHEAD_BYTES`, so a quiet partition costs 1 MiB of zeros, not 32.
pub const PREPARE_WINDOW_MIN_BYTES: u64 = 1024 * 1024;

/// One zero write of the preparer: large enough to stream, small enough that the write of a
/// batch that reaches it waits little.
pub const PREPARE_CHUNK_BYTES: usize = 256 * 1024;

/// Recovery and disk reads fetch this much per I/O: large enough to stream, small enough that a
/// shard's memory stays bounded while it scans.
pub const SCAN_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// The largest batch recovery will believe: a length field above it is garbage, not a batch. So
/// the broker refuses a `max.message.bytes` above it (a larger batch, once stored, would read
/// back as garbage).
pub const MAX_BATCH_BYTES: usize = 128 * 1024 * 1024;

/// A sparse index entry is added after this many bytes of log (Kafka's `index.interval.bytes`).
pub const INDEX_INTERVAL_BYTES: u64 = 4096;

/// A produced batch is checksummed and copied this many bytes at a time, with a chance between
/// pieces for the shard's other tasks to run: a 1 MiB batch is a few hundred microseconds of
/// CRC and copy, longer than the request queue's preemption period.
pub const APPEND_PIECE_BYTES: usize = 64 * 1024;

/// Recently appended batches kept in memory per partition, so consumers that keep up are served
/// without touching the disk. Unflushed batches are never evicted, whatever this says; durable
/// ones also give way earlier when the shard's memory budget is short.
pub const RECENT_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// Appended but unflushed bytes a partition may hold. An append that would go past it waits for
/// the flusher, so a producer faster than the disk (acks=0, or relaxed mode, where nothing else
/// waits for the disk) is slowed to the disk's pace instead of growing memory without bound. It
/// is several relaxed-mode flush triggers (`RECENT_CACHE_BYTES / 2`) deep, so a flush in flight
/// does not stall producers that the disk keeps up with.
pub const UNFLUSHED_MAX_BYTES: usize = 32 * 1024 * 1024;

const _: () = assert!(BLOCK_BYTES.is_power_of_two());
const _: () = assert!(PREALLOCATE_STEP_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(PREPARE_AHEAD_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(PREPARE_WINDOW_MIN_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!((PREPARE_CHUNK_BYTES as u64).is_multiple_of(BLOCK_BYTES));
const _: () = assert!((SCAN_CHUNK_BYTES as u64).is_multiple_of(BLOCK_BYTES));
const _: () = assert!(MAX_BATCH_BYTES >= SCAN_CHUNK_BYTES);
const _: () = assert!(UNFLUSHED_MAX_BYTES > RECENT_CACHE_BYTES / 2);
