//! Helpers shared by the storage crate's integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

/// Runs `future` on a glommio executor, as a shard would.
pub fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    storage::dma::ensure_locked_memory(64 * 1024 * 1024).expect("locked memory for io_uring");
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .make()
        .expect("glommio executor")
        .run(future)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
