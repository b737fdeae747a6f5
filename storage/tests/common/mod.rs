//! Helpers shared by the storage crate's integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::rc::Rc;

use storage::record_batch::BatchWalk;
use storage::{LogContext, Offset, PartitionLog};

/// Runs `future` on a glommio executor, as a shard would.
pub fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    storage::dma::ensure_locked_memory(64 * 1024 * 1024).expect("locked memory for io_uring");
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .make()
        .expect("glommio executor")
        .run(future)
}

/// A shard's context on the real disk: 256 MiB of log memory, 64 open sealed segments.
pub fn real_disk() -> LogContext {
    LogContext::direct_io(256 << 20, 64)
}

/// A context on a simulated disk.
pub fn simulated(disk: &storage::sim::SimDisk, memory_bytes: usize) -> LogContext {
    LogContext::new(Rc::new(disk.clone()), memory_bytes, 8)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Reads the whole log (up to the high watermark) back as the list of stored batches.
pub async fn read_all(log: &PartitionLog) -> Vec<Vec<u8>> {
    match try_read_all(log).await {
        Ok(batches) => batches,
        Err(reason) => panic!("{reason}"),
    }
}

/// The whole log as stored batches, or why it cannot be read as a dense run of offsets.
pub async fn try_read_all(log: &PartitionLog) -> Result<Vec<Vec<u8>>, String> {
    let mut batches = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.high_watermark() {
        let fetched = log
            .read(next, 1 << 20, log.high_watermark())
            .await
            .map_err(|error| format!("read at {next}: {error}"))?;
        if fetched.runs.is_empty() {
            return Err(format!("read at {next} returned nothing"));
        }
        for run in fetched.runs {
            for (header, range) in BatchWalk::new(&run) {
                if header.next_offset() <= next {
                    return Err(format!(
                        "the batch at {} does not follow {next}",
                        header.base_offset
                    ));
                }
                batches.push(run[range].to_vec());
                next = header.next_offset();
            }
        }
    }
    Ok(batches)
}

/// The stored form of a produced batch: the same bytes with its offset and epoch assigned.
pub fn stored_form(produced: &[u8], base_offset: Offset) -> Vec<u8> {
    let mut stored = produced.to_vec();
    storage::record_batch::assign_offset(&mut stored, base_offset, 0);
    stored
}
