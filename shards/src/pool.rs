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

/// How long an idle executor spins before it parks on its eventfd: a cross-shard message that
/// arrives within this time costs no wake-up syscall. Short, because spinning burns the core.
pub const SPIN_BEFORE_PARK: Duration = Duration::from_micros(50);

/// What a shard's main function is given.
pub struct ShardContext<M: Send + 'static> {
    pub shard: ShardId,
    pub core: usize,
    pub shard_count: usize,
    pub mesh: MeshJoin<M>,
}

/// Runs `shard_main` on one executor per core in `cores`, pinned, and returns each shard's result
/// in shard order once all have finished. `io_memory_bytes` is each executor's io_uring buffer
/// arena (it counts against the locked-memory limit).
pub fn run_shards<M, F, Fut, T>(
    cores: &[usize],
    io_memory_bytes: usize,
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
            .io_memory(io_memory_bytes)
            .spin_before_park(SPIN_BEFORE_PARK)
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
