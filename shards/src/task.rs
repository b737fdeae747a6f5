//! Tasks and time on the current shard.

use std::future::Future;
use std::time::Duration;

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

/// Waits `duration` on the shard's timer wheel.
///
/// Not `glommio::timer::sleep`: glommio-ng 0.12's `Timer` registers a new wheel entry every
/// time it is polled while pending and forgets the one before, which stays in the wheel until
/// its deadline. A timer raced against other futures (`timeout`, an idle wait beside a read)
/// is polled at every wake-up of its task, so a connection's 10-minute idle timer left one
/// entry per request it served, and the reactor scans every entry on each poll for the next
/// deadline: at 450 MB/s of produce that scan was 20-30% of the shard's CPU. This replaces
/// the glommio timer at every poll instead, so one sleep holds one entry.
pub async fn sleep(duration: Duration) {
    Sleep::new(duration).await
}

/// A sleep that keeps at most one entry in glommio's timer wheel (see `sleep`).
pub struct Sleep {
    deadline: std::time::Instant,
    timer: Option<glommio::timer::Timer>,
}

impl Sleep {
    pub fn new(duration: Duration) -> Sleep {
        Sleep {
            deadline: std::time::Instant::now() + duration,
            timer: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let now = std::time::Instant::now();
        if now >= self.deadline {
            // Dropping the glommio timer takes its entry out of the wheel.
            self.timer = None;
            return std::task::Poll::Ready(());
        }
        // A fresh glommio timer for what is left, rather than the same one polled again:
        // dropping the old one takes its entry out, and the new one makes exactly one. Every
        // poll re-arms, so a wake-up before the deadline (another future's, or the wheel's)
        // is never mistaken for a registration still pending.
        let left = self.deadline - now;
        let timer = self.timer.insert(glommio::timer::Timer::new(left));
        match std::pin::Pin::new(timer).poll(context) {
            std::task::Poll::Ready(_) => std::task::Poll::Ready(()),
            std::task::Poll::Pending => std::task::Poll::Pending,
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

/// Runs `future` to completion on a fresh executor on the calling thread, as a shard runs it
/// (timers, the blocking pool), for tests and tools that need a shard's runtime without a node.
pub fn run_local<T>(future: impl Future<Output = T>) -> std::io::Result<T> {
    let executor = glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .make()
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    Ok(executor.run(future))
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
