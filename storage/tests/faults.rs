//! EIO and ENOSPC on the write path, through the simulated disk: EIO on a write or a sync takes
//! the log offline for good (fail-stop) and nothing acknowledged is lost; ENOSPC on a write, a
//! sync or an allocation refuses appends with a retriable error, keeps the log, and takes writes
//! again by itself once space returns, again losing nothing acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::pin::pin;
use std::rc::Rc;

use futures_lite::future::poll_once;
use storage::record_batch::build_uncompressed_batch;
use storage::sim::{FaultOp, SimDisk, ENOSPC, SIM_EIO};
use storage::{LogConfig, LogError, Offset, PartitionLog};

const DIRECTORY: &str = "/data/orders-0";

async fn open(disk: &SimDisk) -> Rc<PartitionLog> {
    let context = common::simulated(disk, 64 << 20);
    PartitionLog::open(&context, Path::new(DIRECTORY), LogConfig::default(), false)
        .await
        .unwrap()
}

fn small_batch() -> Vec<u8> {
    build_uncompressed_batch(2, 100, common::now_ms())
}

/// Appends `count` batches and waits for each to be durable; returns the offsets after each.
async fn acknowledged(log: &PartitionLog, count: usize) -> Vec<Offset> {
    acknowledged_of(log, count, &small_batch()).await
}

async fn acknowledged_of(log: &PartitionLog, count: usize, batch: &[u8]) -> Vec<Offset> {
    let mut ends = Vec::new();
    for _ in 0..count {
        let info = log.append(batch).await.unwrap();
        let end = Offset(info.last_offset.0 + 1);
        log.wait_durable(end).await.unwrap();
        ends.push(end);
    }
    ends
}

/// After a crash, the log reopens and holds at least everything below `end`.
async fn survives(disk: &SimDisk, end: Offset) {
    let image = disk.crash_image(7);
    let log = open(&image).await;
    assert!(
        log.log_end_offset() >= end,
        "{} < {end}",
        log.log_end_offset()
    );
    let batches = common::read_all(&log).await;
    let last = storage::BatchHeader::parse(batches.last().unwrap()).unwrap();
    assert_eq!(
        last.next_offset(),
        log.log_end_offset(),
        "a dense run up to the end"
    );
}

#[test]
fn eio_on_a_write_or_a_sync_takes_the_log_offline_and_keeps_what_was_acknowledged() {
    for op in [FaultOp::Write, FaultOp::Sync] {
        common::run(async {
            let disk = SimDisk::new(1);
            let log = open(&disk).await;
            let flusher = glommio::spawn_local(log.clone().run_flusher());
            let ends = acknowledged(&log, 5).await;
            disk.fail_nth(op, 0, SIM_EIO);
            let info = log.append(&small_batch()).await.unwrap();
            let waited = log.wait_durable(Offset(info.last_offset.0 + 1)).await;
            assert!(
                matches!(waited, Err(LogError::Offline { .. })),
                "{op:?}: {waited:?}"
            );
            assert!(log.offline_reason().is_some());
            // Fail-stop: no retry makes it take writes again, even once the disk behaves.
            disk.clear_faults();
            assert!(matches!(
                log.append(&small_batch()).await,
                Err(LogError::Offline { .. })
            ));
            flusher.await;
            survives(&disk, *ends.last().unwrap()).await;
        });
    }
}

#[test]
fn enospc_on_a_write_refuses_appends_until_the_retry_succeeds() {
    common::run(async {
        let disk = SimDisk::new(2);
        let log = open(&disk).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        acknowledged(&log, 3).await;
        disk.fail_always(FaultOp::Write, ENOSPC);
        let pending = log.append(&small_batch()).await.unwrap();
        let pending_end = Offset(pending.last_offset.0 + 1);
        // The writer hits ENOSPC and stalls the log: new appends are refused, retriably.
        loop {
            match log.append(&small_batch()).await {
                Err(error @ LogError::NoSpace { .. }) => {
                    assert!(error.is_no_space());
                    break;
                }
                Ok(_) => {}
                Err(other) => panic!("unexpected {other}"),
            }
            futures_lite::future::yield_now().await;
        }
        assert!(
            log.offline_reason().is_none(),
            "a full disk is not a failing one"
        );
        assert!(log.stalled_reason().is_some());
        // Space returns: the writer's retry lands, the waiting batch becomes durable, and
        // appends are taken again without a restart.
        disk.clear_faults();
        log.wait_durable(pending_end).await.unwrap();
        let after = acknowledged(&log, 2).await;
        assert!(log.stalled_reason().is_none());
        drop(flusher);
        survives(&disk, *after.last().unwrap()).await;
    });
}

#[test]
fn enospc_on_a_sync_rewrites_from_the_durable_point_and_loses_nothing() {
    common::run(async {
        let disk = SimDisk::new(3);
        let log = open(&disk).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        acknowledged(&log, 4).await;
        // A failed sync may lose what it was to make durable (the simulated disk drops it).
        // Batches of several blocks each: the next write starts past what was lost, so only a
        // rewrite from the durable point puts it back.
        let large = build_uncompressed_batch(3, 5000, common::now_ms());
        disk.fail_nth(FaultOp::Sync, 0, ENOSPC);
        disk.fail_nth(FaultOp::Sync, 1, ENOSPC);
        let ends = acknowledged_of(&log, 6, &large).await;
        assert!(log.offline_reason().is_none());
        drop(flusher);
        survives(&disk, *ends.last().unwrap()).await;
    });
}

#[test]
fn a_failed_allocation_is_given_back_and_the_append_refused_with_nothing_assigned() {
    common::run(async {
        let disk = SimDisk::new(4);
        let config = LogConfig {
            segment_bytes: 1 << 30,
            ..LogConfig::default()
        };
        let context = common::simulated(&disk, 64 << 20);
        let directory = Path::new(DIRECTORY);
        // A disk too small for a 64 MiB preallocation step, then smaller than what is used.
        disk.set_capacity(Some(1 << 20));
        let log = PartitionLog::open(&context, directory, config.clone(), true)
            .await
            .unwrap();
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let ends = acknowledged(&log, 3).await;
        let used = disk.used_bytes();
        assert!(
            used < 1 << 20,
            "the step shrank to what fits ({used} bytes)"
        );
        disk.set_capacity(Some(used));
        let end = log.log_end_offset();
        let large = build_uncompressed_batch(1, 200_000, common::now_ms());
        let refused = log.append(&large).await;
        assert!(
            matches!(refused, Err(LogError::NoSpace { .. })),
            "{refused:?}"
        );
        assert_eq!(log.log_end_offset(), end, "nothing was assigned");
        assert_eq!(
            disk.used_bytes(),
            used,
            "what the failed allocation got was given back"
        );
        // Room again: the same batch goes in at the same offset.
        disk.set_capacity(Some(16 << 20));
        let info = log.append(&large).await.unwrap();
        assert_eq!(info.base_offset, end);
        log.wait_durable(Offset(info.last_offset.0 + 1))
            .await
            .unwrap();
        drop(flusher);
        survives(&disk, Offset(info.last_offset.0 + 1)).await;
        assert!(end >= *ends.last().unwrap());
    });
}

/// The space guard (the shard's view of free space) refuses appends before any I/O.
#[test]
fn appends_are_refused_while_the_space_guard_says_the_disk_is_full() {
    common::run(async {
        let disk = SimDisk::new(5);
        let context = common::simulated(&disk, 64 << 20);
        let log = PartitionLog::open(&context, Path::new(DIRECTORY), LogConfig::default(), true)
            .await
            .unwrap();
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        acknowledged(&log, 1).await;
        context.space.set_refusing(true);
        let batch = small_batch();
        let mut append = pin!(log.append(&batch));
        let refused = poll_once(&mut append).await;
        assert!(
            matches!(refused, Some(Err(LogError::NoSpace { .. }))),
            "{refused:?}"
        );
        context.space.set_refusing(false);
        acknowledged(&log, 1).await;
        drop(flusher);
    });
}
