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

/// Spawns a task on the current shard's executor.
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> Task<T> {
    Task(glommio::spawn_local(future))
}

pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await
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
