//! The preparer writes zeros into a segment's fallocated blocks ahead of the log end, so that
//! the log's own writes overwrite written blocks. These tests run it on the simulated disk,
//! which refuses (panics on) two overlapping writes in flight and a truncation behind a write in
//! flight: the two ways a zero write could clobber a batch or outlive a segment's trimming.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use storage::record_batch::build_uncompressed_batch;
use storage::sim::SimDisk;
use storage::{LogConfig, LogContext, Offset, PartitionLog};

const DIRECTORY: &str = "/data/quotes-0";

fn first_segment() -> PathBuf {
    Path::new(DIRECTORY).join(format!("{:020}.log", 0))
}

async fn open(context: &LogContext, segment_bytes: u64, clean: bool) -> Rc<PartitionLog> {
    let config = LogConfig {
        segment_bytes,
        ..LogConfig::default()
    };
    PartitionLog::open(context, Path::new(DIRECTORY), config, clean)
        .await
        .unwrap()
}

/// Appends `count` 1 KiB batches from `producers` tasks at once, each waiting for its batches
/// to be durable, so that the writer's writes race the preparer's.
async fn produce(log: &Rc<PartitionLog>, producers: usize, count: usize) -> Offset {
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let log = log.clone();
            glommio::spawn_local(async move {
                for _ in 0..count {
                    let batch = build_uncompressed_batch(1, 1000, common::now_ms());
                    let info = log.append(&batch).await.unwrap();
                    log.wait_durable(Offset(info.last_offset.0 + 1))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    log.log_end_offset()
}

/// Yields until `done` holds, at most `rounds` times; returns whether it held.
async fn eventually(rounds: usize, done: impl Fn() -> bool) -> bool {
    for _ in 0..rounds {
        if done() {
            return true;
        }
        futures_lite::future::yield_now().await;
    }
    done()
}

#[test]
fn blocks_ahead_of_the_log_end_are_written_before_the_log_reaches_them() {
    common::run(async {
        let disk = SimDisk::new(11);
        let window = 64 * 1024;
        let context = common::simulated(&disk, 64 << 20).preparing_ahead(window);
        let log = open(&context, 1 << 30, true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let end = produce(&log, 4, 50).await;
        let batches = common::read_all(&log).await;
        assert_eq!(batches.len(), 200, "every batch reads back");
        let logical: u64 = batches.iter().map(|batch| batch.len() as u64).sum();
        let prepared = || disk.written_extent(&first_segment()).unwrap();
        assert!(
            eventually(10_000, || prepared() >= logical + window / 2).await,
            "blocks up to {} of {logical} logical bytes were written (window {window})",
            prepared()
        );
        assert!(
            prepared() <= storage::io::align_up(logical) + window,
            "the preparer stays within its window: {}",
            prepared()
        );
        log.close().await.unwrap();
        drop(flusher);
        // Closing trimmed the segment to its batches, with no zero write landing after it.
        let file = disk.file_bytes(&first_segment()).unwrap();
        assert_eq!(
            file.len() as u64,
            logical,
            "the closed segment holds its batches only"
        );
        let reopened = open(&common::simulated(&disk, 64 << 20), 1 << 30, true).await;
        assert_eq!(reopened.log_end_offset(), end);
        assert_eq!(common::read_all(&reopened).await, batches);
    });
}

#[test]
fn without_preparing_no_block_past_the_log_end_is_written() {
    // The control for the test above: the same workload leaves the blocks ahead unwritten.
    common::run(async {
        let disk = SimDisk::new(11);
        let context = common::simulated(&disk, 64 << 20);
        let log = open(&context, 1 << 30, true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        produce(&log, 4, 50).await;
        let logical: u64 = common::read_all(&log)
            .await
            .iter()
            .map(|batch| batch.len() as u64)
            .sum();
        // The same chance to run that a preparer had above, were there one.
        eventually(1_000, || false).await;
        assert_eq!(
            disk.written_extent(&first_segment()),
            Some(storage::io::align_up(logical))
        );
        drop(flusher);
    });
}

#[test]
fn rolling_segments_while_preparing_keeps_every_batch_and_trims_each_segment() {
    common::run(async {
        let disk = SimDisk::new(12);
        let context = common::simulated(&disk, 64 << 20).preparing_ahead(256 * 1024);
        // About 32 batches per segment: many rolls, each with zero writes pending behind it.
        let log = open(&context, 32 * 1024, true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let end = produce(&log, 3, 120).await;
        let batches = common::read_all(&log).await;
        assert_eq!(batches.len(), 360);
        drop(flusher);
        // A power loss now keeps every acknowledged batch, and no sealed segment grew zeros
        // after its end (recovery would call those corruption).
        let image = disk.crash_image(3);
        let recovered = open(&common::simulated(&image, 64 << 20), 32 * 1024, false).await;
        assert!(recovered.log_end_offset() >= end);
        assert_eq!(
            common::read_all(&recovered).await[..batches.len()],
            batches[..]
        );
    });
}

#[test]
fn large_writes_make_the_preparer_stand_aside_until_writes_are_small_again() {
    common::run(async {
        let disk = SimDisk::new(13);
        let window = 64 * 1024;
        let context = common::simulated(&disk, 64 << 20).preparing_ahead(window);
        let log = open(&context, 1 << 30, true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let logical = |batches: &[Vec<u8>]| -> u64 { batches.iter().map(|b| b.len() as u64).sum() };
        let prepared = || disk.written_extent(&first_segment()).unwrap();
        // Batches of about 128 KiB, one at a time: every write is above the preparer's bound,
        // so once the average has risen past it, no zeros go ahead of the log.
        for _ in 0..40 {
            let batch = build_uncompressed_batch(128, 1000, common::now_ms());
            assert!(batch.len() as u64 > storage::limits::PREPARE_WRITE_BYTES_MAX);
            let info = log.append(&batch).await.unwrap();
            log.wait_durable(Offset(info.last_offset.0 + 1))
                .await
                .unwrap();
        }
        let large = logical(&common::read_all(&log).await);
        eventually(1_000, || false).await;
        assert_eq!(
            prepared(),
            storage::io::align_up(large),
            "nothing is prepared past the end of large writes"
        );
        // Small writes bring the average down and the preparer back.
        produce(&log, 1, 20).await;
        let small = logical(&common::read_all(&log).await);
        assert!(
            eventually(10_000, || prepared() >= small + window / 2).await,
            "blocks up to {} of {small} logical bytes were written after small writes",
            prepared()
        );
        drop(flusher);
    });
}
