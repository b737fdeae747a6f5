//! Tasks and time on the current shard.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A task running on this shard; dropping it cancels it, `detach` lets it run on.
pub struct Task<T>(glommio::Task<T>);

impl<T> Task<T> {
    pub fn detach(self) {
        self.0.detach();
    }
}

impl<T> Future for Task<T> {
    type Output = T;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        std::pin::Pin::new(&mut self.0).poll(context)
    }
}

/// Spawns a task on the current shard's executor, in the task queue of the task that spawns it
/// (a connection's tasks run where its accept loop runs).
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    Task(glommio::spawn_local(future))
}

/// Which of a shard's task queues a task runs in. glommio runs one queue at a time and picks
/// the next by the CPU time each has had against its shares; a queue whose latency matters
/// also has its I/O on the executor's latency ring, whose completions (a client's bytes, a
/// sync's return) preempt whatever queue is running at its next task boundary, and caps how
/// long any queue runs before the executor looks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// Everything a request waits on: connections, and the writing and syncing that a produce
    /// acknowledgement waits for.
    Requests,
    /// Work no request waits on: housekeeping timers, metrics and health answers, group
    /// timers, checkpoints, segments prepared ahead.
    Background,
}

/// The request queue's shares against the background's: under load on both, requests get
/// ten times the CPU.
const REQUEST_SHARES: usize = 1000;
const BACKGROUND_SHARES: usize = 100;

/// The longest the executor runs one queue before it looks for request work again, while
/// request work may be waiting. A quarter of the sub-millisecond tail the broker is built for.
pub const REQUEST_PREEMPTION: Duration = Duration::from_micros(250);

std::thread_local! {
    /// This thread's executor (by id) and its two queues, made on first use.
    static QUEUES: std::cell::Cell<Option<(usize, glommio::TaskQueueHandle, glommio::TaskQueueHandle)>> =
        const { std::cell::Cell::new(None) };
}

fn queue_handle(queue: Queue) -> glommio::TaskQueueHandle {
    let executor = glommio::executor();
    let (requests, background) = QUEUES.with(|queues| match queues.get() {
        Some((id, requests, background)) if id == executor.id() => (requests, background),
        _ => {
            let requests = executor.create_task_queue(
                glommio::Shares::Static(REQUEST_SHARES),
                glommio::Latency::Matters(REQUEST_PREEMPTION),
                "requests",
            );
            let background = executor.create_task_queue(
                glommio::Shares::Static(BACKGROUND_SHARES),
                glommio::Latency::NotImportant,
                "background",
            );
            queues.set(Some((executor.id(), requests, background)));
            (requests, background)
        }
    });
    match queue {
        Queue::Requests => requests,
        Queue::Background => background,
    }
}

/// Spawns a task on the current shard's executor in `queue`; tasks it spawns run there too.
pub fn spawn_in<T: 'static>(queue: Queue, future: impl Future<Output = T> + 'static) -> Task<T> {
    // Only a handle of another executor can fail here, and the handle is this executor's own.
    match glommio::spawn_local_into(future, queue_handle(queue)) {
        Ok(task) => Task(task),
        Err(error) => unreachable!("spawning into this executor's own {queue:?} queue: {error}"),
    }
}

/// Waits `duration` on the shard's timers.
///
/// Not `glommio::timer::sleep`. glommio-ng 0.12's `Timer` has two faults that a broker's
/// timers hit. It registers a new wheel entry every time it is polled while pending and
/// forgets the one before, which stays until its deadline: a connection's 10-minute idle timer,
/// raced beside its reads, left one entry per request, and the reactor scans every entry on
/// each poll (20-30% of a shard's CPU at 450 MB/s of produce). And its `TimerId` keeps 32 bits
/// of the wheel's 64-bit id, so after 2^32 timers on one shard a dropped timer's entry is no
/// longer removed. So every sleep of a shard is an entry in the shard's own deadline map
/// (`Timers`), and a driver task keeps one glommio timer armed for the earliest deadline: a
/// glommio timer is made only when no armed one fires at or before the earliest deadline, is
/// polled once, and is dropped only once its deadline has passed. Sleeps come and go in the
/// map at no cost to glommio's wheel, which holds a handful of entries.
pub async fn sleep(duration: Duration) {
    Sleep::new(duration).await
}

/// A sleep on the shard's timers (see `sleep`); dropping it takes its deadline out.
pub struct Sleep {
    deadline: Instant,
    /// Its key in the shard's deadline map once polled.
    entry: Option<(Instant, u64)>,
}

impl Sleep {
    pub fn new(duration: Duration) -> Sleep {
        Sleep {
            deadline: Instant::now()
                .checked_add(duration)
                .unwrap_or_else(far_future),
            entry: None,
        }
    }
}

/// A deadline for a sleep too long to add to now: about thirty years, which no timer of the
/// broker outlives.
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(30 * 365 * 86_400))
        .unwrap_or(now)
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            // The driver took the entry out when it woke this sleep; a sleep that saw its
            // deadline pass first takes it out itself (when it is dropped).
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let entry = self.entry;
        let (entry, replaced) =
            with_timers(|timers| timers.register(entry, deadline, context.waker()));
        self.entry = Some(entry);
        // Dropped outside the timers' borrow: a waker can be the last hold on a task, whose
        // own sleeps would then want the timers.
        drop(replaced);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            // Not `with_timers`: a task's sleep may be dropped with its executor, when there
            // is no executor to ask for.
            // If the timers are in use (this drop runs inside one of their operations), or gone
            // with the thread, the entry stays until its deadline and wakes a waker nobody
            // waits on.
            let removed = TIMERS
                .try_with(|cell| {
                    cell.try_borrow_mut()
                        .ok()
                        .and_then(|mut slot| slot.as_mut()?.remove(entry))
                })
                .ok()
                .flatten();
            drop(removed);
        }
    }
}

/// A shard's sleeps, by deadline, and the glommio timers armed for them.
struct Timers {
    executor: usize,
    sleeping: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    /// The deadline of the glommio timer the driver has armed, until it fires.
    armed: Option<Instant>,
    /// The driver's waker, once it has run: a sleep earlier than every armed deadline wakes it
    /// to arm one.
    driver: Option<Waker>,
    driver_started: bool,
    /// glommio timers armed on this shard so far.
    arms: u64,
}

impl Timers {
    /// Files (or refreshes) a sleep's waker; returns its key and the waker it replaced, which
    /// the caller drops once the timers are no longer borrowed.
    fn register(
        &mut self,
        entry: Option<(Instant, u64)>,
        deadline: Instant,
        waker: &Waker,
    ) -> ((Instant, u64), Option<Waker>) {
        let key = match entry {
            Some(key) => key,
            None => {
                self.next_id += 1;
                (deadline, self.next_id)
            }
        };
        let replaced = match self.sleeping.get_mut(&key) {
            Some(known) if known.will_wake(waker) => None,
            Some(known) => Some(std::mem::replace(known, waker.clone())),
            None => self.sleeping.insert(key, waker.clone()),
        };
        if !self.covered(deadline) {
            if let Some(driver) = &self.driver {
                driver.wake_by_ref();
            }
        }
        (key, replaced)
    }

    fn remove(&mut self, key: (Instant, u64)) -> Option<Waker> {
        self.sleeping.remove(&key)
    }

    /// Whether the armed glommio timer fires at or before `deadline`.
    fn covered(&self, deadline: Instant) -> bool {
        self.armed.is_some_and(|armed| armed <= deadline)
    }
}

std::thread_local! {
    /// This thread's executor's timers, made on first use.
    static TIMERS: RefCell<Option<Timers>> = const { RefCell::new(None) };
}

/// Runs `action` on the current executor's timers, starting its driver the first time.
fn with_timers<T>(action: impl FnOnce(&mut Timers) -> T) -> T {
    let executor = glommio::executor().id();
    let (result, start_driver) = TIMERS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let timers = match &mut *slot {
            Some(timers) if timers.executor == executor => timers,
            _ => slot.insert(Timers {
                executor,
                sleeping: BTreeMap::new(),
                next_id: 0,
                armed: None,
                driver: None,
                driver_started: false,
                arms: 0,
            }),
        };
        let result = action(timers);
        let start = !timers.driver_started;
        timers.driver_started = true;
        (result, start)
    });
    if start_driver {
        // In the request queue, so that a sleep's end is not held behind background work.
        spawn_in(Queue::Requests, Driver::default()).detach();
    }
    result
}

/// glommio timers armed on this thread's executor so far (see `sleep`).
pub fn timers_armed() -> u64 {
    TIMERS.with(|cell| cell.borrow().as_ref().map_or(0, |timers| timers.arms))
}

/// The task that wakes a shard's sleeps when their deadlines pass, with one glommio timer
/// armed for the earliest of them.
///
/// The armed timer is polled again whenever the driver runs: glommio's wheel may fire an entry
/// a little before its deadline, and only the timer's own poll tells whether it is done (its
/// deadline passed: `Ready`) or must wait on (it registers again). A timer replaced by an
/// earlier one is dropped. Either way, an entry glommio could not remove (see `sleep`) stays
/// only until its own deadline, and then wakes the driver once for nothing.
#[derive(Default)]
struct Driver {
    armed: Option<(Instant, glommio::timer::Timer)>,
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some((_, timer)) = &mut self.armed {
                if std::pin::Pin::new(timer).poll(context).is_ready() {
                    self.armed = None;
                }
            }
            let armed = self.armed.as_ref().map(|(deadline, _)| *deadline);
            let now = Instant::now();
            let mut woken = Vec::new();
            let mut replaced = None;
            let earliest = TIMERS.with(|cell| {
                let mut slot = cell.borrow_mut();
                let timers = slot.as_mut()?;
                while let Some(entry) = timers.sleeping.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    woken.push(entry.remove());
                }
                timers.armed = armed;
                replaced = timers.driver.replace(context.waker().clone());
                let earliest = timers
                    .sleeping
                    .keys()
                    .next()
                    .map(|(deadline, _)| *deadline)?;
                (!timers.covered(earliest)).then(|| {
                    timers.armed = Some(earliest);
                    timers.arms += 1;
                    earliest
                })
            });
            drop(replaced);
            for waker in woken {
                waker.wake();
            }
            let Some(earliest) = earliest else {
                return Poll::Pending;
            };
            let mut timer = glommio::timer::Timer::new(earliest.saturating_duration_since(now));
            match std::pin::Pin::new(&mut timer).poll(context) {
                // Already due: wake what it was for, and look again.
                Poll::Ready(_) => {
                    self.armed = None;
                    continue;
                }
                Poll::Pending => {
                    // The one it replaces (if any) is dropped here.
                    self.armed = Some((earliest, timer));
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Runs `future` for at most `duration`; `None` if the time ran out first.
pub async fn timeout<T>(duration: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        sleep(duration).await;
        None
    })
    .await
}

/// Runs a blocking call (file system metadata, a `std::fs` write and its fsync) on the
/// executor's blocking thread pool, so the shard keeps serving meanwhile. Dropping the future
/// does not cancel the call; it runs to completion and its result is dropped.
pub async fn spawn_blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor().spawn_blocking(call).await
}

/// Yields to other tasks if this one has run for its share of the CPU.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
}

/// A bounded FIFO between tasks of one shard (not `Send`).
pub mod local_channel {
    pub struct Sender<T>(glommio::channels::local_channel::LocalSender<T>);
    pub struct Receiver<T>(glommio::channels::local_channel::LocalReceiver<T>);

    pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
        let (sender, receiver) = glommio::channels::local_channel::new_bounded(capacity);
        (Sender(sender), Receiver(receiver))
    }

    impl<T> Sender<T> {
        /// Waits for room; fails only if the receiver is gone.
        pub async fn send(&self, item: T) -> Result<(), ()> {
            self.0.send(item).await.map_err(|_| ())
        }
    }

    impl<T> Receiver<T> {
        /// The next item, or `None` once every sender is gone and the queue is empty.
        pub async fn recv(&self) -> Option<T> {
            self.0.recv().await
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_sleep_polled_many_times_leaves_nothing_behind_when_dropped() {
        let executor = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("glommio executor");
        executor.run(async {
            let counter = std::sync::Arc::new(CountingWaker(Default::default()));
            let waker = std::task::Waker::from(counter.clone());
            let mut context = std::task::Context::from_waker(&waker);
            let mut sleep = Box::pin(Sleep::new(Duration::from_millis(100)));
            for _ in 0..1000 {
                assert!(sleep.as_mut().poll(&mut context).is_pending());
            }
            drop(sleep);
            // Past that deadline, every wheel entry those polls left behind wakes `waker`:
            // glommio's own timer, polled so and dropped, wakes it 999 times.
            super::sleep(Duration::from_millis(200)).await;
            assert_eq!(
                counter.0.load(std::sync::atomic::Ordering::Relaxed),
                0,
                "a dropped sleep left wheel entries that woke its task"
            );
            // And sleeps end, raced against other futures or not. A watchdog on glommio's own
            // timer turns a sleep that never ends into a failure rather than a hang.
            let sleeps = async {
                for round in 0..200u64 {
                    let started = std::time::Instant::now();
                    let wanted = Duration::from_micros(50 + round % 7 * 30);
                    if round % 2 == 0 {
                        super::sleep(wanted).await;
                    } else {
                        let raced = futures_lite::future::or(
                            async {
                                super::sleep(wanted).await;
                                true
                            },
                            async {
                                for _ in 0..3 {
                                    futures_lite::future::yield_now().await;
                                }
                                std::future::pending::<bool>().await
                            },
                        );
                        assert!(raced.await);
                    }
                    assert!(started.elapsed() >= wanted, "a sleep ended early");
                }
                true
            };
            let watchdog = async {
                glommio::timer::sleep(Duration::from_secs(20)).await;
                false
            };
            assert!(
                futures_lite::future::or(sleeps, watchdog).await,
                "a sleep never ended"
            );
        });
    }

    #[test]
    fn sleeps_later_than_an_armed_timer_arm_no_glommio_timer_and_all_end_in_order() {
        let executor = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("glommio executor");
        executor.run(async {
            let waker = std::task::Waker::noop();
            let mut context = std::task::Context::from_waker(waker);
            let mut earliest = Box::pin(Sleep::new(Duration::from_secs(10)));
            assert!(earliest.as_mut().poll(&mut context).is_pending());
            // Let the driver (a request-queue task) arm a timer for it: a request-queue task
            // spawned after it runs after it.
            spawn_in(Queue::Requests, async {}).await;
            let armed = timers_armed();
            assert!(armed >= 1);
            // A connection's idle timer raced beside each of its reads: many later sleeps,
            // each polled and dropped, and one polled again and again.
            for index in 0..1000u64 {
                let mut later = Box::pin(Sleep::new(Duration::from_secs(20 + index)));
                assert!(later.as_mut().poll(&mut context).is_pending());
                assert!(later.as_mut().poll(&mut context).is_pending());
            }
            spawn_in(Queue::Requests, async {}).await;
            assert_eq!(timers_armed(), armed, "later sleeps armed glommio timers");
            drop(earliest);
            // Sleeps end in the order of their deadlines, each after it.
            let order = std::rc::Rc::new(RefCell::new(Vec::new()));
            let tasks: Vec<_> = [30u64, 10, 20, 0, 15]
                .into_iter()
                .map(|millis| {
                    let order = order.clone();
                    spawn(async move {
                        let started = Instant::now();
                        super::sleep(Duration::from_millis(millis)).await;
                        assert!(started.elapsed() >= Duration::from_millis(millis));
                        order.borrow_mut().push(millis);
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
            assert_eq!(*order.borrow(), [0, 10, 15, 20, 30]);
        });
    }

    #[test]
    fn a_task_runs_in_its_queue_and_so_do_the_tasks_it_spawns() {
        let executor = glommio::LocalExecutorBuilder::default()
            .make()
            .expect("glommio executor");
        executor.run(async {
            let here = || glommio::executor().current_task_queue();
            let main_queue = here();
            let (requests, nested) = spawn_in(Queue::Requests, async move {
                let nested = spawn(async move { here() }).await;
                (here(), nested)
            })
            .await;
            assert_eq!(requests, queue_handle(Queue::Requests));
            assert_eq!(
                nested, requests,
                "a spawned task stays in its spawner's queue"
            );
            let background = spawn_in(Queue::Background, async move { here() }).await;
            assert_eq!(background, queue_handle(Queue::Background));
            assert_ne!(background, requests);
            assert_ne!(requests, main_queue);
        });
    }
}
