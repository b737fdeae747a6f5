//! Every fixed limit of the broker, with the reason it has the value it has.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use event_listener::Event;

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

const _: () = assert!(REQUEST_MEMORY_PER_SHARD_BYTES >= 2 * 100 * 1024 * 1024);
const _: () = assert!(FRAME_READ_STEP_BYTES <= REQUEST_MEMORY_PER_SHARD_BYTES);

/// A shard-local byte budget. `acquire` waits until the bytes are free; the grant gives them back
/// when dropped. Never shared across cores.
pub struct MemoryBudget {
    available: Cell<usize>,
    total: usize,
    freed: Event,
}

impl MemoryBudget {
    pub fn new(total: usize) -> Rc<MemoryBudget> {
        Rc::new(MemoryBudget {
            available: Cell::new(total),
            total,
            freed: Event::new(),
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Waits for `bytes` (which must not exceed the total) and returns a grant for them.
    pub async fn acquire(self: &Rc<Self>, bytes: usize) -> MemoryGrant {
        assert!(
            bytes <= self.total,
            "a grant larger than the budget never succeeds"
        );
        loop {
            if self.available.get() >= bytes {
                self.available.set(self.available.get() - bytes);
                return MemoryGrant {
                    budget: self.clone(),
                    bytes,
                };
            }
            let listener = self.freed.listen();
            if self.available.get() >= bytes {
                continue;
            }
            listener.await;
        }
    }
}

pub struct MemoryGrant {
    budget: Rc<MemoryBudget>,
    bytes: usize,
}

impl Drop for MemoryGrant {
    fn drop(&mut self) {
        self.budget
            .available
            .set(self.budget.available.get() + self.bytes);
        self.budget.freed.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_return_their_bytes_when_dropped() {
        futures_lite::future::block_on(async {
            let budget = MemoryBudget::new(100);
            let first = budget.acquire(60).await;
            assert_eq!(budget.available.get(), 40);
            let waiting = budget.acquire(50);
            futures_lite::pin!(waiting);
            assert!(futures_lite::future::poll_once(&mut waiting)
                .await
                .is_none());
            drop(first);
            let second = waiting.await;
            assert_eq!(budget.available.get(), 50);
            drop(second);
            assert_eq!(budget.available.get(), 100);
        });
    }
}
