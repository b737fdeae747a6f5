//! Every fixed limit of the broker, with the reason it has the value it has.

use std::time::Duration;

/// Requests one connection may have in flight (read, not yet answered). Clients keep up to 5
/// (`max.in.flight.requests.per.connection`); more are read only as earlier ones are answered.
pub const IN_FLIGHT_REQUESTS_PER_CONNECTION: usize = 32;

/// Bytes of request frames a shard holds at once, across all its connections. A frame is read
/// only after its size is granted from this budget, so many clients claiming large frames wait
/// instead of exhausting memory. Always at least two of the largest frames allowed.
pub const REQUEST_MEMORY_PER_SHARD_BYTES: usize = 256 * 1024 * 1024;

/// A frame's buffer grows by at most this much per read, so a client that claims a large frame
/// and sends it slowly holds memory only for what it sent.
pub const FRAME_READ_STEP_BYTES: usize = 1024 * 1024;

/// Connections one shard serves at once; more are accepted and closed at once with a log line.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 10_000;

/// The longest a Fetch may wait for data, whatever `max_wait_ms` asks (clients use 500 ms).
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(60);

/// Bytes a shard's logs may hold in memory: their recent-batch caches, their unflushed batches
/// and their disk reads for fetches, together. Caches give way first; appends and reads wait.
pub const LOG_MEMORY_PER_SHARD_BYTES: usize = 512 * 1024 * 1024;

/// Sealed segment files a shard keeps open for reads (its active segments are open anyway).
pub const OPEN_SEGMENTS_PER_SHARD: usize = 256;

const _: () = assert!(REQUEST_MEMORY_PER_SHARD_BYTES >= 2 * 100 * 1024 * 1024);
const _: () = assert!(FRAME_READ_STEP_BYTES <= REQUEST_MEMORY_PER_SHARD_BYTES);
