//! Starting one pinned executor per planned core and waiting for them all.

use std::future::Future;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::mesh::MeshJoin;
use crate::ShardId;

#[derive(Debug, thiserror::Error)]
pub enum ShardingError {
    #[error("invalid core list {text:?}: expected something like 0-3,6")]
    InvalidCoreList { text: String },
    #[error("cores {outside:?} are outside this process's affinity mask {allowed:?}")]
    CoresNotAllowed {
        outside: Vec<usize>,
        allowed: Vec<usize>,
    },
    #[error("starting the executor for shard {shard} on core {core}: {reason}")]
    ExecutorStart {
        shard: ShardId,
        core: usize,
        reason: String,
    },
    #[error("shard {shard} panicked")]
    ShardPanicked { shard: ShardId },
}

/// How long an idle executor spins before it parks on its eventfd, by default: a cross-shard
/// message or an I/O completion that arrives within this time costs no wake-up. Short, because
/// spinning burns the core.
pub const SPIN_BEFORE_PARK: Duration = Duration::from_micros(50);

/// How each shard's executor runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The io_uring buffer arena (it counts against the locked-memory limit).
    pub io_memory_bytes: usize,
    /// With a threshold, a shard that runs that long past its budget without yielding is
    /// logged with its stack.
    pub stall_threshold: Option<Duration>,
    /// How long an idle executor polls for work before it sleeps (`Duration::MAX`: it never
    /// sleeps, and its core is always busy).
    pub idle_poll: Duration,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            io_memory_bytes: 1 << 20,
            stall_threshold: None,
            idle_poll: SPIN_BEFORE_PARK,
        }
    }
}

/// Logs every time a task queue of a shard runs longer than its budget (the preemption period
/// of the queues with work) plus `threshold` without yielding: glommio's stall detector, which
/// samples the stalled thread's stack with a signal, so the log says where it was.
#[derive(Debug)]
struct StallLogger {
    threshold: Duration,
}

impl glommio::StallDetectionHandler for StallLogger {
    fn threshold(&self, _queue: glommio::TaskQueueHandle, _budget: Duration) -> Option<Duration> {
        Some(self.threshold)
    }

    fn stall(&self, detection: glommio::StallDetection<'_>) {
        STALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            executor = detection.executor,
            queue = detection.queue_name,
            over_budget_us = detection.overage.as_micros() as u64,
            budget_us = detection.budget.as_micros() as u64,
            backtrace = ?detection.trace,
            "a shard ran past its budget without yielding"
        );
    }
}

static STALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Stalls the detector has logged in this process (see `run_shards`' `stall_threshold`).
pub fn stalls_detected() -> u64 {
    STALLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// What a shard's main function is given.
pub struct ShardContext<M: Send + 'static> {
    pub shard: ShardId,
    pub core: usize,
    pub shard_count: usize,
    pub mesh: MeshJoin<M>,
}

/// Runs `shard_main` on one executor per core in `cores`, pinned, and returns each shard's result
/// in shard order once all have finished.
pub fn run_shards<M, F, Fut, T>(
    cores: &[usize],
    options: &ExecutorOptions,
    shard_main: F,
) -> Result<Vec<T>, ShardingError>
where
    M: Send + Sync + 'static,
    F: Fn(ShardContext<M>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let mesh = MeshJoin::<M>::new(cores.len());
    let mut handles = Vec::with_capacity(cores.len());
    for (index, core) in cores.iter().copied().enumerate() {
        let shard = ShardId(index as u16);
        let context = ShardContext {
            shard,
            core,
            shard_count: cores.len(),
            mesh: mesh.clone(),
        };
        let shard_main = shard_main.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("shard-{index}"))
            .io_memory(options.io_memory_bytes)
            .spin_before_park(options.idle_poll)
            .detect_stalls(options.stall_threshold.map(|threshold| {
                Box::new(StallLogger { threshold }) as Box<dyn glommio::StallDetectionHandler>
            }))
            .spawn(move || shard_main(context))
            .map_err(|error| ShardingError::ExecutorStart {
                shard,
                core,
                reason: error.to_string(),
            })?;
        handles.push((shard, handle));
    }
    let mut results = Vec::with_capacity(handles.len());
    for (shard, handle) in handles {
        results.push(
            handle
                .join()
                .map_err(|_| ShardingError::ShardPanicked { shard })?,
        );
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_shard_that_blocks_past_its_budget_is_reported() {
        let cores = crate::cpu::allowed_cores();
        let before = stalls_detected();
        let results = run_shards::<u8, _, _, _>(
            &cores[..1],
            &ExecutorOptions {
                stall_threshold: Some(Duration::from_millis(5)),
                ..ExecutorOptions::default()
            },
            |_| async {
                // Blocks the shard's thread, as a long synchronous step would: six times the
                // budget (the default queue's 100 ms preemption period) plus threshold, so a
                // busy machine only makes the stall longer.
                std::thread::sleep(Duration::from_millis(600));
            },
        )
        .unwrap();
        assert_eq!(results.len(), 1);
        assert!(stalls_detected() > before, "no stall was reported");
    }
}
