//! Crash recovery of the partition log, driven through the public API on real files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use storage::record_batch::{build_uncompressed_batch, BatchWalk};
use storage::{LogConfig, LogError, Offset, PartitionLog};

mod common;
use common::{read_all, real_disk, run};

fn segment_path(directory: &Path) -> std::path::PathBuf {
    directory.join("00000000000000000000.log")
}

/// Appends `count` batches of different sizes and waits until they are durable, then either
/// closes cleanly (the recovery point is then the log end: every byte counts as synced) or stops
/// as a crash would before any checkpoint (the recovery point stays at the start: every byte is
/// past it). Returns the stored batches as read back (with their assigned offsets).
async fn write_batches(directory: &Path, count: usize, clean_close: bool) -> Vec<Vec<u8>> {
    let config = LogConfig {
        recovery_point_interval: std::time::Duration::from_secs(3600),
        ..LogConfig::default()
    };
    let log = PartitionLog::open(&real_disk(), directory, config, true)
        .await
        .unwrap();
    let flusher = glommio::spawn_local(log.clone().run_flusher());
    let mut last = Offset(0);
    for index in 0..count {
        let batch = build_uncompressed_batch(1 + (index % 4) as i32, 10 + index * 7, 1_000);
        let info = log.append(&batch).await.unwrap();
        last = info.last_offset;
    }
    log.wait_durable(Offset(last.0 + 1)).await.unwrap();
    if clean_close {
        log.close().await.unwrap();
        flusher.await;
    } else {
        drop(flusher);
        assert_eq!(log.recovery_point(), Offset(0));
    }
    drop(log);
    let mut bytes = std::fs::read(segment_path(directory)).unwrap();
    // Without a clean close the preallocated zeros are still there.
    let end = BatchWalk::new(&bytes)
        .last()
        .map_or(0, |(_, range)| range.end);
    bytes.truncate(end);
    std::fs::write(segment_path(directory), &bytes).unwrap();
    BatchWalk::new(&bytes)
        .map(|(_, range)| bytes[range].to_vec())
        .collect()
}

fn copy_directory(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Past the recovery point, every cut of the last segment at any byte keeps exactly the batches
/// that end before the cut, and so does garbage written over the tail from that byte on; a log
/// from before recovery points (none stored) gets the same for a torn tail.
#[test]
fn torn_tails_at_many_positions_keep_exactly_the_valid_prefix() {
    for legacy in [false, true] {
        torn_tails(legacy);
    }
}

fn torn_tails(legacy: bool) {
    run(async {
        let scratch = tempfile::tempdir().unwrap();
        let original = scratch.path().join("original");
        let batches = write_batches(&original, 24, false).await;
        if legacy {
            for slot in ["recovery-point.0", "recovery-point.1"] {
                std::fs::remove_file(original.join(slot)).ok();
            }
        }
        let file_bytes = std::fs::read(segment_path(&original)).unwrap();
        let file_bytes = file_bytes[..batches.iter().map(Vec::len).sum::<usize>()].to_vec();
        let mut ends = Vec::new();
        let mut end = 0;
        for batch in &batches {
            end += batch.len();
            ends.push(end);
        }
        assert_eq!(end, file_bytes.len());

        // Every byte of the last two batches (every third for the older rule), and a stride
        // through the rest.
        let tail_start = ends[ends.len() - 3];
        let mut cuts: Vec<usize> = (tail_start..file_bytes.len())
            .step_by(if legacy { 3 } else { 1 })
            .collect();
        cuts.extend((0..tail_start).step_by(29));
        for (case, cut) in cuts.into_iter().enumerate() {
            let kept = ends.iter().filter(|end| **end <= cut).count();
            for garbage in [false, true] {
                let directory = scratch.path().join(format!("case-{case}-{garbage}"));
                copy_directory(&original, &directory);
                let mut damaged = file_bytes[..cut].to_vec();
                if garbage {
                    // Non-zero bytes that never form a batch (magic byte 0x5a).
                    damaged.extend(std::iter::repeat_n(0x5a, file_bytes.len() - cut));
                }
                std::fs::write(segment_path(&directory), &damaged).unwrap();

                let log = PartitionLog::open(&real_disk(), &directory, LogConfig::default(), false)
                    .await
                    .unwrap_or_else(|error| panic!("cut at {cut}: {error}"));
                let recovered = read_all(&log).await;
                assert_eq!(
                    recovered.len(),
                    kept,
                    "cut at byte {cut} (garbage {garbage})"
                );
                assert_eq!(recovered, batches[..kept], "cut at byte {cut}");
                let expected_end: i64 = batches[..kept]
                    .iter()
                    .map(|batch| {
                        i64::from(i32::from_be_bytes(batch[23..27].try_into().unwrap())) + 1
                    })
                    .sum();
                assert_eq!(log.log_end_offset(), Offset(expected_end));
                // The log takes appends again right after the recovered end.
                let info = log
                    .append(&build_uncompressed_batch(2, 5, 1_000))
                    .await
                    .unwrap();
                assert_eq!(info.base_offset, Offset(expected_end));
                log.close().await.unwrap();
                std::fs::remove_dir_all(&directory).unwrap();
            }
        }
    });
}

/// A damaged batch below the recovery point is corruption: the log refuses to open, says where,
/// and the file is left exactly as it was. (Past the recovery point the same damage is a torn
/// write and is cut: see the torn-tail test and the power-loss suite.)
#[test]
fn corruption_below_the_recovery_point_is_refused_and_nothing_is_deleted() {
    run(async {
        let scratch = tempfile::tempdir().unwrap();
        let original = scratch.path().join("original");
        let batches = write_batches(&original, 12, true).await;
        let file_bytes = std::fs::read(segment_path(&original)).unwrap();
        let mut start = 0;
        for (index, batch) in batches.iter().enumerate().take(batches.len() - 1) {
            for offset_in_batch in [8, 20, 40, batch.len() - 1] {
                let directory = scratch
                    .path()
                    .join(format!("batch-{index}-{offset_in_batch}"));
                copy_directory(&original, &directory);
                let mut damaged = file_bytes.clone();
                damaged[start + offset_in_batch] ^= 0xff;
                std::fs::write(segment_path(&directory), &damaged).unwrap();

                let opened =
                    PartitionLog::open(&real_disk(), &directory, LogConfig::default(), false).await;
                match opened {
                    Err(LogError::Corrupt { position, .. }) => {
                        assert_eq!(position, start as u64, "damage in batch {index}")
                    }
                    Err(other) => panic!("batch {index}: unexpected error {other}"),
                    Ok(_) => panic!("batch {index}: corruption was accepted"),
                }
                assert_eq!(
                    std::fs::read(segment_path(&directory)).unwrap(),
                    damaged,
                    "the refused segment must not be modified"
                );
            }
            start += batch.len();
        }
    });
}

/// Small segments roll; everything reads back across segments after a clean and an unclean
/// reopen, and timestamp lookups find the right records.
#[test]
fn rolled_segments_read_back_and_answer_timestamp_lookups() {
    run(async {
        let scratch = tempfile::tempdir().unwrap();
        let directory = scratch.path().join("rolled");
        let config = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&real_disk(), &directory, config.clone(), true)
            .await
            .unwrap();
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let now = common::now_ms();
        let mut written = Vec::new();
        for index in 0..60i64 {
            let batch = build_uncompressed_batch(3, 100, now - 100_000 + index * 10);
            let info = log.append(&batch).await.unwrap();
            assert_eq!(info.base_offset, Offset(index * 3));
            written.push(info);
        }
        log.wait_durable(Offset(180)).await.unwrap();
        let segments = std::fs::read_dir(&directory).unwrap().count();
        assert!(segments > 5, "expected several segments, found {segments}");
        let before = read_all(&log).await;
        assert_eq!(before.len(), 60);

        // Record 3*k+1 of batch k has timestamp base + 10k + 1.
        let target = now - 100_000 + 25 * 10 + 1;
        assert_eq!(
            log.offset_for_timestamp(target).await.unwrap(),
            Some((Offset(25 * 3 + 1), target))
        );
        assert_eq!(log.offset_for_timestamp(now).await.unwrap(), None);
        // Reads in the middle of a batch return the whole batch.
        let middle = log.read(Offset(4), 1, Offset(180)).await.unwrap();
        let header = storage::BatchHeader::parse(&middle.runs[0]).unwrap();
        assert_eq!(header.base_offset, Offset(3));

        // Simulated crash: no close, so no clean shutdown; everything durable survives.
        drop(flusher);
        drop(log);
        let reopened = PartitionLog::open(&real_disk(), &directory, config, false)
            .await
            .unwrap();
        assert_eq!(reopened.log_end_offset(), Offset(180));
        assert_eq!(read_all(&reopened).await, before);
        reopened.close().await.unwrap();
    });
}

/// Sealed segments get an index file at roll; reopening uses it, and a damaged or truncated
/// index file is ignored in favour of a scan, with the same result.
#[test]
fn sealed_segments_reopen_from_index_files_and_survive_damaged_ones() {
    run(async {
        let scratch = tempfile::tempdir().unwrap();
        let directory = scratch.path().join("indexed");
        let config = LogConfig {
            segment_bytes: 8192,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&real_disk(), &directory, config.clone(), true)
            .await
            .unwrap();
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        for index in 0..80 {
            log.append(&build_uncompressed_batch(2, 200, 1_000 + index))
                .await
                .unwrap();
        }
        log.wait_durable(Offset(160)).await.unwrap();
        let written = read_all(&log).await;
        log.close().await.unwrap();
        flusher.await;

        let mut index_files: Vec<_> = std::fs::read_dir(&directory)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "index"))
            .collect();
        index_files.sort();
        let segments = std::fs::read_dir(&directory)
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|ext| ext == "log")
            })
            .count();
        assert!(segments > 3, "expected several segments, found {segments}");
        assert_eq!(
            index_files.len(),
            segments - 1,
            "every sealed segment has an index"
        );

        let reopened = PartitionLog::open(&real_disk(), &directory, config.clone(), true)
            .await
            .unwrap();
        assert_eq!(read_all(&reopened).await, written);
        // Batch k holds offsets 2k and 2k+1 with timestamps 1000+k and 1001+k.
        assert_eq!(
            reopened.offset_for_timestamp(1_040).await.unwrap(),
            Some((Offset(79), 1_040))
        );
        reopened.close().await.unwrap();

        // Damage one index (a flipped payload byte) and cut another short.
        let mut damaged = std::fs::read(&index_files[0]).unwrap();
        damaged[20] ^= 0xff;
        std::fs::write(&index_files[0], damaged).unwrap();
        let cut = std::fs::read(&index_files[1]).unwrap();
        std::fs::write(&index_files[1], &cut[..10]).unwrap();
        let reopened = PartitionLog::open(&real_disk(), &directory, config, false)
            .await
            .unwrap();
        assert_eq!(read_all(&reopened).await, written);
        assert_eq!(reopened.log_end_offset(), Offset(160));
        reopened.close().await.unwrap();
    });
}

/// An idempotent producer's state survives a crash: rebuilt from the newest snapshot plus the
/// log after it (or from the whole log without snapshots), so a retry of the batch acknowledged
/// last is recognised as a duplicate and answered with its original offsets.
#[test]
fn producer_state_is_rebuilt_from_snapshots_and_the_log_tail() {
    use storage::record_batch::set_producer;
    use storage::{LogError, ProducerError};

    run(async {
        let scratch = tempfile::tempdir().unwrap();
        let directory = scratch.path().join("idempotent");
        let config = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let now = common::now_ms();
        let idempotent = |sequence: i32| {
            let mut batch = build_uncompressed_batch(4, 100, now);
            set_producer(&mut batch, 7, 0, sequence);
            batch
        };
        let log = PartitionLog::open(&real_disk(), &directory, config.clone(), true)
            .await
            .unwrap();
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let mut last = None;
        for index in 0..40 {
            let info = log.append(&idempotent(index * 4)).await.unwrap();
            assert!(!info.duplicate);
            last = Some(info);
        }
        let last = last.unwrap();
        log.wait_durable(Offset(160)).await.unwrap();
        // A retry before the crash is a duplicate already.
        let retry = log.append(&idempotent(39 * 4)).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, last.base_offset);
        drop(flusher);
        drop(log);

        let snapshots = std::fs::read_dir(&directory)
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|ext| ext == "snapshot")
            })
            .count();
        assert!((1..=2).contains(&snapshots), "{snapshots} snapshots kept");

        for remove_snapshots in [false, true] {
            if remove_snapshots {
                for entry in std::fs::read_dir(&directory).unwrap() {
                    let path = entry.unwrap().path();
                    if path.extension().is_some_and(|ext| ext == "snapshot") {
                        std::fs::remove_file(path).unwrap();
                    }
                }
            }
            let reopened = PartitionLog::open(&real_disk(), &directory, config.clone(), false)
                .await
                .unwrap();
            let retry = reopened.append(&idempotent(39 * 4)).await.unwrap();
            assert!(retry.duplicate, "snapshots removed: {remove_snapshots}");
            assert_eq!(retry.base_offset, last.base_offset);
            assert_eq!(retry.last_offset, last.last_offset);
            let older = reopened.append(&idempotent(36 * 4)).await.unwrap();
            assert!(older.duplicate);
            assert_eq!(older.base_offset, Offset(36 * 4));
            assert!(matches!(
                reopened.append(&idempotent(44 * 4)).await,
                Err(LogError::Producer(ProducerError::OutOfOrder {
                    expected: 160,
                    ..
                }))
            ));
            assert_eq!(reopened.log_end_offset(), Offset(160));
            assert_eq!(reopened.producers().len(), 1);
            drop(reopened);
        }
    });
}
