//! Retention and DeleteRecords move the log start forward: whole sealed segments go, reads
//! below the start are out of range, and the start survives a crash, including one in the
//! middle of the move, and never moves back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use storage::record_batch::build_uncompressed_batch;
use storage::sim::SimDisk;
use storage::{LogConfig, LogContext, LogError, Offset, PartitionLog, Retention};

const DIRECTORY: &str = "/data/trades-0";
/// Small segments, so that a few dozen 1 KiB batches make several.
const SEGMENT_BYTES: u64 = 8 * 1024;

fn config(retention: Retention) -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        retention,
        ..LogConfig::default()
    }
}

async fn open(context: &LogContext, config: LogConfig, clean: bool) -> Rc<PartitionLog> {
    PartitionLog::open(context, Path::new(DIRECTORY), config, clean)
        .await
        .unwrap()
}

/// Appends `count` one-record batches with timestamp `timestamp_ms`, each acknowledged
/// (durable) before the next.
async fn produce(log: &PartitionLog, count: usize, timestamp_ms: i64) {
    for _ in 0..count {
        let batch = build_uncompressed_batch(1, 1000, timestamp_ms);
        let info = log.append(&batch).await.unwrap();
        log.wait_durable(Offset(info.last_offset.0 + 1))
            .await
            .unwrap();
    }
}

fn segment_files(disk: &SimDisk) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = disk
        .names_under(Path::new(DIRECTORY))
        .into_iter()
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    files.sort();
    files
}

fn is_out_of_range(result: Result<storage::Fetched, LogError>) -> bool {
    matches!(result, Err(LogError::OffsetOutOfRange { .. }))
}

#[test]
fn retention_by_bytes_removes_the_oldest_sealed_segments_and_the_start_survives_a_crash() {
    common::run(async {
        let disk = SimDisk::new(21);
        let context = common::simulated(&disk, 64 << 20);
        let retention = Retention {
            ms: -1,
            bytes: 3 * SEGMENT_BYTES as i64,
        };
        let log = open(&context, config(retention), true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        produce(&log, 60, common::now_ms()).await;
        let segments_before = segment_files(&disk).len();
        assert!(segments_before >= 6, "{segments_before} segments");
        let end = log.log_end_offset();

        let start = log.enforce_retention(common::now_ms()).await.unwrap();
        assert!(start > Offset(0), "nothing was removed");
        assert_eq!(log.log_start_offset(), start);
        // Kafka's rule: what is left is at least retention.bytes, and less than that plus a
        // segment.
        let size = log.size_bytes();
        assert!(
            size >= retention.bytes as u64 && size < retention.bytes as u64 + SEGMENT_BYTES,
            "{size} bytes left"
        );
        let segments_after = segment_files(&disk);
        assert!(segments_after.len() < segments_before);
        assert!(is_out_of_range(
            log.read(Offset(start.0 - 1), 1 << 20, end).await
        ));
        let kept = common::read_all(&log).await;
        assert_eq!(kept.len() as i64, end.0 - start.0);
        // Again: nothing more is due.
        assert_eq!(
            log.enforce_retention(common::now_ms()).await.unwrap(),
            start
        );

        drop(flusher);
        let image = disk.crash_image(7);
        let reopened = open(
            &common::simulated(&image, 64 << 20),
            config(retention),
            false,
        )
        .await;
        assert_eq!(reopened.log_start_offset(), start);
        assert_eq!(reopened.log_end_offset(), end);
        assert_eq!(common::read_all(&reopened).await, kept);
    });
}

#[test]
fn retention_by_time_goes_by_each_segments_newest_record() {
    common::run(async {
        let disk = SimDisk::new(22);
        let context = common::simulated(&disk, 64 << 20);
        let hour = 3_600_000;
        let retention = Retention {
            ms: hour,
            bytes: -1,
        };
        let log = open(&context, config(retention), true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let now = common::now_ms();
        produce(&log, 30, now - 10 * hour).await;
        let old_end = log.log_end_offset();
        produce(&log, 30, now).await;
        let start = log.enforce_retention(now).await.unwrap();
        // Every segment of old records only is gone; the one where the new ones begin stays,
        // old records and all.
        assert!(start > Offset(0) && start <= old_end, "start {start:?}");
        let first_kept = common::read_all(&log).await;
        assert!(!first_kept.is_empty());
        // Nothing is older than an hour but those: ten hours later, everything sealed goes.
        let later = log.enforce_retention(now + 10 * hour).await.unwrap();
        assert!(later > old_end);
        assert_eq!(
            segment_files(&disk).len(),
            1,
            "only the active segment is left"
        );
        drop(flusher);
    });
}

#[test]
fn a_start_inside_a_segment_hides_what_is_below_it_and_survives_a_crash() {
    common::run(async {
        let disk = SimDisk::new(23);
        let context = common::simulated(&disk, 64 << 20);
        let log = open(&context, config(Retention::UNLIMITED), true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        produce(&log, 20, common::now_ms()).await;
        let end = log.log_end_offset();
        assert_eq!(log.advance_log_start(Offset(3)).await.unwrap(), Offset(3));
        // Never back.
        assert_eq!(log.advance_log_start(Offset(1)).await.unwrap(), Offset(3));
        assert!(is_out_of_range(log.read(Offset(2), 1 << 20, end).await));
        let fetched = log.read(Offset(3), 1 << 20, end).await.unwrap();
        assert!(!fetched.runs.is_empty());
        let (first, _) = log.offset_for_timestamp(0).await.unwrap().unwrap();
        assert_eq!(
            first,
            Offset(3),
            "a timestamp lookup starts at the log start"
        );
        // Past the end is held at the end.
        assert_eq!(log.advance_log_start(Offset(1_000)).await.unwrap(), end);
        assert_eq!(common::read_all(&log).await.len(), 0);
        produce(&log, 2, common::now_ms()).await;
        assert_eq!(common::read_all(&log).await.len(), 2);
        drop(flusher);
        let image = disk.crash_image(3);
        let reopened = open(
            &common::simulated(&image, 64 << 20),
            config(Retention::UNLIMITED),
            false,
        )
        .await;
        assert_eq!(reopened.log_start_offset(), end);
        assert_eq!(common::read_all(&reopened).await.len(), 2);
    });
}

#[test]
fn a_power_cut_at_any_step_of_a_move_leaves_the_old_start_or_the_new_one() {
    let mut starts_seen = std::collections::BTreeSet::new();
    let mut failed_moves = 0;
    for cut_after in 0..24 {
        let (starts, failed) = common::run(async move {
            let mut starts = Vec::new();
            let disk = SimDisk::new(24);
            let context = common::simulated(&disk, 64 << 20);
            let log = open(&context, config(Retention::UNLIMITED), true).await;
            let flusher = glommio::spawn_local(log.clone().run_flusher());
            produce(&log, 40, common::now_ms()).await;
            let end = log.log_end_offset();
            let batches = common::read_all(&log).await;
            let target = Offset(25);
            disk.cut_power_after(disk.operations() + cut_after);
            let moved = log.advance_log_start(target).await;
            drop(flusher);
            for seed in 0..4 {
                let image = disk.crash_image(seed);
                let reopened = open(
                    &common::simulated(&image, 64 << 20),
                    config(Retention::UNLIMITED),
                    false,
                )
                .await;
                let start = reopened.log_start_offset();
                starts.push(start);
                assert!(
                    start == Offset(0) || start == target,
                    "cut after {cut_after}: start {start:?}"
                );
                if moved.is_ok() {
                    assert_eq!(
                        start, target,
                        "cut after {cut_after}: a completed move stays"
                    );
                }
                assert_eq!(reopened.log_end_offset(), end);
                // What is left reads back as it was.
                let kept = common::read_all(&reopened).await;
                let skipped = batches.len() - kept.len();
                assert_eq!(kept[..], batches[skipped..], "cut after {cut_after}");
                // No segment wholly below the start is left behind.
                let files = segment_files(&image);
                let bases: Vec<i64> = files
                    .iter()
                    .filter_map(|path| path.file_stem()?.to_str()?.parse().ok())
                    .collect();
                for pair in bases.windows(2) {
                    assert!(
                        pair[1] > start.0,
                        "cut after {cut_after}: segment {} lies below start {start:?}",
                        pair[0]
                    );
                }
            }
            (starts, moved.is_err())
        });
        starts_seen.extend(starts);
        failed_moves += usize::from(failed);
    }
    // The cuts landed on both sides of the recovery-point write, and some stopped the move.
    assert_eq!(
        starts_seen.into_iter().collect::<Vec<_>>(),
        [Offset(0), Offset(25)]
    );
    assert!(failed_moves > 0);
}

#[test]
fn a_timestamp_lookup_goes_past_a_segment_whose_late_records_lie_below_the_start() {
    common::run(async {
        let disk = SimDisk::new(25);
        let context = common::simulated(&disk, 64 << 20);
        let log = open(&context, config(Retention::UNLIMITED), true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let t = common::now_ms() - 3_600_000;
        // Late records first (CreateTime need not grow), then early ones filling segments,
        // then late ones again in a later segment.
        produce(&log, 3, t + 10_000).await;
        produce(&log, 20, t).await;
        produce(&log, 5, t + 20_000).await;
        assert!(segment_files(&disk).len() >= 3);
        log.advance_log_start(Offset(3)).await.unwrap();
        let (offset, timestamp) = log.offset_for_timestamp(t + 5_000).await.unwrap().unwrap();
        assert_eq!((offset, timestamp), (Offset(23), t + 20_000));
        drop(flusher);
    });
}

#[test]
fn a_start_past_what_is_synced_is_synced_before_it_is_stored() {
    common::run(async {
        let disk = SimDisk::new(26);
        let context = common::simulated(&disk, 64 << 20);
        let relaxed = LogConfig {
            flush: storage::FlushPolicy::Relaxed {
                messages: None,
                interval: Some(std::time::Duration::from_secs(3600)),
            },
            ..config(Retention::UNLIMITED)
        };
        let log = open(&context, relaxed.clone(), true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        for _ in 0..10 {
            let batch = build_uncompressed_batch(1, 1000, common::now_ms());
            let info = log.append(&batch).await.unwrap();
            log.wait_written(Offset(info.last_offset.0 + 1))
                .await
                .unwrap();
        }
        let end = log.high_watermark();
        assert!(log.durable_offset() < end, "written, not yet synced");
        assert_eq!(log.advance_log_start(end).await.unwrap(), end);
        assert!(log.durable_offset() >= end);
        drop(flusher);
        // A power loss now keeps the log up to its start: no offset below it comes back.
        let image = disk.crash_image(9);
        let reopened = open(&common::simulated(&image, 64 << 20), relaxed, false).await;
        assert_eq!(reopened.log_start_offset(), end);
        assert_eq!(reopened.log_end_offset(), end);
    });
}
