//! Every fixed limit of the broker, with the reason it has the value it has.

use std::time::Duration;

/// Partitions one topic may have; Kafka has no hard cap, but each partition costs a directory,
/// open files and memory on its shard, so an absurd request is refused up front.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// The most producer ids one allocation hands out.
pub const PRODUCER_ID_BLOCK_MAX: i64 = 1_000_000;

/// Producer ids a shard takes from the controller at a time: one durable controller write per
/// thousand InitProducerId requests on that shard.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// Kafka's limit on topic name length (a partition directory name must fit 255 bytes).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// How long a scrape waits for another shard's metrics.
pub const METRICS_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests one connection may have in flight (read, not yet answered). Clients keep up to 5
/// (`max.in.flight.requests.per.connection`); more are read only as earlier ones are answered.
pub const IN_FLIGHT_REQUESTS_PER_CONNECTION: usize = 32;

/// Bytes of request frames (and what they decode to) a shard holds at once, across all its
/// connections. A frame is paid for as its bytes arrive, so clients claiming large frames hold
/// only what they sent; when the budget runs out, readers wait (within `FRAME_STALL_TIMEOUT`).
/// The shard's budget is at least twice `socket.request.max.bytes`. Not counted: each
/// connection's read-ahead of at most `READ_AHEAD_BYTES` before a frame is recognized, bounded
/// by the connection limit.
pub const REQUEST_MEMORY_PER_SHARD_BYTES: usize = 256 * 1024 * 1024;

/// A frame's buffer grows by at most this much per read, and is paid for a step at a time as
/// its bytes arrive, so a client that claims a large frame and sends it slowly (or not at all)
/// holds at most one step more than it sent.
pub const FRAME_READ_STEP_BYTES: usize = 1024 * 1024;

/// Bytes a connection reads ahead when waiting for a frame: the next pipelined requests often
/// arrive in the same segment. An idle connection gives its buffer back.
pub const READ_AHEAD_BYTES: usize = 16 * 1024;

/// A frame that has begun must keep arriving: no byte for this long closes the connection (so a
/// client that sends a size prefix and stops holds nothing for long). Clients time requests out
/// after 30 s (`request.timeout.ms`).
pub const FRAME_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest request frame other than Produce, JoinGroup and SyncGroup: lists of names and
/// numbers (a Metadata of 20,000 topic names, an OffsetCommit of 20,000 partitions) stay well
/// under it. `socket.request.max.bytes` (100 MiB) is for record batches.
pub const REQUEST_BYTES_MAX: usize = 2 * 1024 * 1024;

/// JoinGroup and SyncGroup carry every member's subscription and assignment blobs, which grow
/// with group size and partition count (Kafka Streams' assignments run to megabytes).
pub const GROUP_REQUEST_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A request may decode to at most this many times its size, plus `DECODE_SLACK_BYTES`. Names
/// of a few bytes decode to a struct each (`shape::STRUCT_DECODED_BYTES`), so a legitimate list
/// of short names comes close to 30; empty names, the attack, reach 80.
pub const DECODE_AMPLIFICATION_MAX: usize = 32;
pub const DECODE_SLACK_BYTES: usize = 1024 * 1024;

/// A response the client does not read within this long closes the connection (its memory
/// would otherwise be held for as long as the client likes).
pub const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest a Produce waits for its batches to be acknowledgeable, whatever `timeout_ms`
/// asks; a request without a positive timeout gets `PRODUCE_TIMEOUT_DEFAULT`.
pub const PRODUCE_TIMEOUT_MAX: Duration = Duration::from_secs(300);
pub const PRODUCE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Kafka's broker `fetch.max.bytes` (55 MiB): a Fetch response holds at most this much record
/// data, whatever the request's `max_bytes` says.
pub const FETCH_RESPONSE_BYTES_MAX: usize = 55 * 1024 * 1024;

/// At shutdown, connections get this long to answer what they have read.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections one shard serves at once, whatever the open-file budget allows.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 10_000;

/// File descriptors kept out of the shards' budget: glommio's rings and eventfds, the admin
/// listener, the data directory lock, files opened for a moment (index, snapshot, metadata).
pub const FILE_DESCRIPTORS_RESERVED: usize = 256;

/// Descriptors a partition may hold at once: its active segment, plus an index, snapshot or
/// recovery-point file during a roll or checkpoint.
pub const FILE_DESCRIPTORS_PER_PARTITION: usize = 2;

/// The longest a Fetch may wait for data, whatever `max_wait_ms` asks (clients use 500 ms).
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(60);

/// Bytes a shard's logs may hold in memory: their recent-batch caches, their unflushed batches
/// and their disk reads for fetches, together. Caches give way first; appends and reads wait.
pub const LOG_MEMORY_PER_SHARD_BYTES: usize = 512 * 1024 * 1024;

/// Sealed segment files a shard keeps open for reads (its active segments are open anyway).
pub const OPEN_SEGMENTS_PER_SHARD: usize = 256;

const _: () = assert!(REQUEST_MEMORY_PER_SHARD_BYTES >= 2 * 100 * 1024 * 1024);
const _: () = assert!(REQUEST_BYTES_MAX <= GROUP_REQUEST_BYTES_MAX);
const _: () = assert!(READ_AHEAD_BYTES <= FRAME_READ_STEP_BYTES);
const _: () = assert!(
    DECODE_AMPLIFICATION_MAX * REQUEST_BYTES_MAX + DECODE_SLACK_BYTES
        <= REQUEST_MEMORY_PER_SHARD_BYTES / 2
);
const _: () = assert!(FRAME_READ_STEP_BYTES <= REQUEST_MEMORY_PER_SHARD_BYTES);

/// The most partitions one incremental fetch session holds: a consumer fetches from a shard
/// the partitions it leads, at most `topic_partitions_per_shard` (this bounds a session a
/// client keeps adding made-up partitions to).
pub const FETCH_SESSION_PARTITIONS_MAX: usize = 10_000;

/// The most partitions all of a shard's fetch sessions hold together (each costs its key, a
/// topic name of up to 249 bytes, and its fetch position: at most some 40 MiB).
pub const FETCH_SESSION_CACHED_PARTITIONS_MAX: usize = 100_000;
