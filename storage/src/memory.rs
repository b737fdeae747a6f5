//! A shard-local byte budget. The shard's logs take their recent-batch caches, their unflushed
//! batches and their disk reads for fetches from one budget; the broker's request frames take
//! theirs from another. Never shared across cores: `Rc`, `Cell`.
//!
//! `acquire` waits until the bytes are free; the grant gives them back when dropped. Before
//! waiting, it asks the registered reclaimers (the logs) to drop cached batches that are already
//! durable, so a shard with many idle partitions does not hold back a busy one: the cache is
//! what gives way, the unflushed bytes are what waits.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use event_listener::Event;

/// Something that can give cached bytes back to the budget on request.
pub trait Reclaim {
    /// Drops cached data worth about `wanted` bytes if it can; returns the bytes freed.
    fn reclaim(&self, wanted: usize) -> usize;
}

pub struct MemoryBudget {
    available: Cell<usize>,
    total: usize,
    freed: Event,
    reclaimers: RefCell<Vec<Weak<dyn Reclaim>>>,
}

impl MemoryBudget {
    pub fn new(total: usize) -> Rc<MemoryBudget> {
        Rc::new(MemoryBudget {
            available: Cell::new(total),
            total,
            freed: Event::new(),
            reclaimers: RefCell::new(Vec::new()),
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn available(&self) -> usize {
        self.available.get()
    }

    pub fn in_use(&self) -> usize {
        self.total - self.available.get()
    }

    pub fn register(&self, reclaimer: Weak<dyn Reclaim>) {
        let mut reclaimers = self.reclaimers.borrow_mut();
        reclaimers.retain(|known| known.strong_count() > 0);
        reclaimers.push(reclaimer);
    }

    /// Something became reclaimable (a flush made cached batches durable): waiters try again.
    pub fn poke(&self) {
        self.freed.notify(usize::MAX);
    }

    fn reclaim(&self, wanted: usize) {
        let reclaimers: Vec<Rc<dyn Reclaim>> = self
            .reclaimers
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut freed = 0;
        for reclaimer in reclaimers {
            if freed >= wanted {
                break;
            }
            freed += reclaimer.reclaim(wanted - freed);
        }
    }

    fn take(self: &Rc<Self>, bytes: usize) -> MemoryGrant {
        self.available
            .set(self.available.get().saturating_sub(bytes));
        MemoryGrant {
            budget: self.clone(),
            bytes,
        }
    }

    /// A grant for `bytes` now, only if at least half the budget stays free after it, and
    /// without reclaiming anything: for reads made on speculation (read-ahead), which must
    /// not push out what others hold or wait for.
    pub fn try_acquire_spare(self: &Rc<Self>, bytes: usize) -> Option<MemoryGrant> {
        let left = self.available.get().checked_sub(bytes)?;
        (left >= self.total / 2).then(|| self.take(bytes))
    }

    /// A grant for `bytes` now, if they are free (after reclaiming caches).
    pub fn try_acquire(self: &Rc<Self>, bytes: usize) -> Option<MemoryGrant> {
        if self.available.get() < bytes {
            self.reclaim(bytes - self.available.get());
        }
        (self.available.get() >= bytes).then(|| self.take(bytes))
    }

    /// Waits for `bytes` and returns a grant for them. A request larger than the whole budget
    /// is granted once nothing else is held, so it can neither starve nor be refused forever.
    pub async fn acquire(self: &Rc<Self>, bytes: usize) -> MemoryGrant {
        loop {
            if let Some(grant) = self.try_acquire(bytes) {
                return grant;
            }
            if bytes > self.total && self.available.get() == self.total {
                return self.take(bytes);
            }
            let listener = self.freed.listen();
            if self.available.get() >= bytes.min(self.total) {
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

impl MemoryGrant {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes `more` bytes into this grant, waiting for them. A grant that would pass the whole
    /// budget is let through once its holder is the only one left (as `acquire` does for an
    /// oversized request), so growing can starve no one and wait on no one forever.
    pub async fn grow(&mut self, more: usize) {
        let budget = self.budget.clone();
        loop {
            if let Some(mut extra) = budget.try_acquire(more) {
                self.bytes += std::mem::take(&mut extra.bytes);
                return;
            }
            if self.bytes + more > budget.total
                && budget.available.get() + self.bytes >= budget.total
            {
                budget
                    .available
                    .set(budget.available.get().saturating_sub(more));
                self.bytes += more;
                return;
            }
            let listener = budget.freed.listen();
            if budget.available.get() >= more {
                continue;
            }
            listener.await;
        }
    }

    /// Gives back all but `keep` bytes.
    pub fn shrink_to(&mut self, keep: usize) {
        if keep < self.bytes {
            let returned = self.bytes - keep;
            self.bytes = keep;
            self.budget.give_back(returned);
        }
    }
}

impl MemoryBudget {
    fn give_back(&self, bytes: usize) {
        self.available
            .set((self.available.get() + bytes).min(self.total));
        self.freed.notify(usize::MAX);
    }
}

impl Drop for MemoryGrant {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Cache {
        held: RefCell<Vec<MemoryGrant>>,
    }

    impl Reclaim for Cache {
        fn reclaim(&self, _wanted: usize) -> usize {
            let dropped: usize = self.held.borrow().iter().map(MemoryGrant::bytes).sum();
            self.held.borrow_mut().clear();
            dropped
        }
    }

    #[test]
    fn grants_return_their_bytes_when_dropped() {
        futures_lite::future::block_on(async {
            let budget = MemoryBudget::new(100);
            let first = budget.acquire(60).await;
            assert_eq!(budget.available(), 40);
            let waiting = budget.acquire(50);
            futures_lite::pin!(waiting);
            assert!(futures_lite::future::poll_once(&mut waiting)
                .await
                .is_none());
            drop(first);
            let second = waiting.await;
            assert_eq!(budget.available(), 50);
            drop(second);
            assert_eq!(budget.available(), 100);
        });
    }

    #[test]
    fn caches_give_way_before_anyone_waits_and_oversized_grants_wait_for_an_empty_budget() {
        futures_lite::future::block_on(async {
            let budget = MemoryBudget::new(100);
            let cache = Rc::new(Cache {
                held: RefCell::new(vec![budget.acquire(70).await]),
            });
            let weak: Weak<dyn Reclaim> = Rc::downgrade(&(cache.clone() as Rc<dyn Reclaim>));
            budget.register(weak);
            let grant = budget.try_acquire(80).expect("the cache gave way");
            assert!(cache.held.borrow().is_empty());
            let oversized = budget.acquire(500);
            futures_lite::pin!(oversized);
            assert!(futures_lite::future::poll_once(&mut oversized)
                .await
                .is_none());
            drop(grant);
            let huge = oversized.await;
            assert_eq!(huge.bytes(), 500);
            drop(huge);
            assert_eq!(budget.available(), 100);
        });
    }

    #[test]
    fn a_lone_grant_may_grow_past_the_budget_and_gives_it_all_back() {
        futures_lite::future::block_on(async {
            let budget = MemoryBudget::new(100);
            let mut grant = budget.acquire(60).await;
            grant.grow(80).await;
            assert_eq!(grant.bytes(), 140);
            drop(grant);
            assert_eq!(budget.available(), 100);
        });
    }

    #[test]
    fn a_grant_grows_as_bytes_arrive_and_shrinks_back() {
        futures_lite::future::block_on(async {
            let budget = MemoryBudget::new(100);
            let mut grant = budget.acquire(10).await;
            grant.grow(30).await;
            assert_eq!((grant.bytes(), budget.available()), (40, 60));
            grant.shrink_to(5);
            assert_eq!((grant.bytes(), budget.available()), (5, 95));
        });
    }
}
