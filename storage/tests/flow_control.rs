//! A producer faster than the disk is slowed to the disk's pace: the unflushed bytes a log holds
//! in memory are bounded, in relaxed mode too, where no acknowledgement waits for the disk.
//!
//! On the simulated disk with no simulated latency, so an append that does not wait for the
//! bound completes within a few polls (it may yield between the pieces of a large batch) and
//! the test can tell exactly which append is held back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::pin::pin;
use std::time::Duration;

use futures_lite::future::poll_once;
use storage::limits::UNFLUSHED_MAX_BYTES;
use storage::partition_log::FlushPolicy;
use storage::record_batch::build_uncompressed_batch;
use storage::{LogConfig, Offset, PartitionLog};

/// Polls `future` until it completes or stays pending for as many polls in a row as a batch
/// has pieces (an append yields between pieces of a large batch when its task has run its
/// share, and each yield wakes it at once; only a wait on something else keeps it pending).
async fn poll_until_stuck<T>(
    mut future: std::pin::Pin<&mut impl std::future::Future<Output = T>>,
) -> Option<T> {
    let pieces_max = 64 * 1024 * 1024 / storage::limits::APPEND_PIECE_BYTES;
    for _ in 0..2 * pieces_max {
        if let Some(done) = poll_once(&mut future).await {
            return Some(done);
        }
    }
    None
}

#[test]
fn appends_wait_for_the_flusher_once_the_unflushed_bound_is_reached() {
    common::run(async {
        let disk = storage::sim::SimDisk::new(1);
        disk.set_max_yields(0);
        let context = common::simulated(&disk, 1 << 30);
        let directory = std::path::Path::new("/data/relaxed");
        let config = LogConfig {
            flush: FlushPolicy::Relaxed {
                messages: None,
                interval: Some(Duration::from_secs(3600)),
            },
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&context, directory, config.clone(), true)
            .await
            .unwrap();
        // No flusher runs: nothing but the test flushes, so the bound is all that can stop an
        // append.
        let batch = build_uncompressed_batch(16, 60_000, common::now_ms());
        let mut appended = 0usize;
        loop {
            let mut append = pin!(log.append(&batch));
            match poll_until_stuck(append.as_mut()).await {
                Some(result) => {
                    result.unwrap();
                    appended += 1;
                    assert!(
                        appended * batch.len() <= UNFLUSHED_MAX_BYTES,
                        "{appended} batches of {} bytes appended without waiting",
                        batch.len()
                    );
                }
                None => {
                    // Held back exactly where the next batch would pass the bound.
                    assert!((appended + 1) * batch.len() > UNFLUSHED_MAX_BYTES);
                    assert!(poll_until_stuck(append.as_mut()).await.is_none());
                    assert_eq!(log.log_end_offset(), Offset(appended as i64 * 16));
                    log.flush().await.unwrap();
                    let info = append.await.unwrap();
                    assert_eq!(info.base_offset, Offset(appended as i64 * 16));
                    appended += 1;
                    break;
                }
            }
        }
        log.close().await.unwrap();
        drop(log);
        let reopened = PartitionLog::open(&context, directory, config, false)
            .await
            .unwrap();
        assert_eq!(reopened.log_end_offset(), Offset(appended as i64 * 16));
        reopened.close().await.unwrap();
    });
}

#[test]
fn a_batch_larger_than_the_bound_waits_for_an_empty_backlog_and_goes_in() {
    common::run(async {
        let disk = storage::sim::SimDisk::new(2);
        disk.set_max_yields(0);
        let context = common::simulated(&disk, 1 << 30);
        let config = LogConfig {
            flush: FlushPolicy::Relaxed {
                messages: None,
                interval: Some(Duration::from_secs(3600)),
            },
            produce_rules: storage::ProduceRules {
                max_message_bytes: 64 * 1024 * 1024,
                ..LogConfig::default().produce_rules
            },
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&context, std::path::Path::new("/data/large"), config, true)
            .await
            .unwrap();
        let small = build_uncompressed_batch(1, 100, common::now_ms());
        log.append(&small).await.unwrap();
        let large = build_uncompressed_batch(600, 60_000, common::now_ms());
        assert!(large.len() > UNFLUSHED_MAX_BYTES);
        let mut append = pin!(log.append(&large));
        assert!(poll_until_stuck(append.as_mut()).await.is_none());
        log.flush().await.unwrap();
        assert_eq!(append.await.unwrap().base_offset, Offset(1));
        log.close().await.unwrap();
    });
}
