//! Compaction keeps the latest record of every key with its offset, drops tombstones once
//! their horizon has passed, keeps each idempotent producer's last batch, swaps cleaned
//! segments in so that a power cut at any step loses nothing, and refuses to rewrite a corrupt
//! batch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use storage::partition_log::compaction::Compaction;
use storage::record_batch::{records_section, BatchBuilder, BatchHeader, Compression, RecordIter};
use storage::sim::SimDisk;
use storage::{LogConfig, LogContext, LogError, Offset, PartitionLog};

const DIRECTORY: &str = "/data/prices-0";
const SEGMENT_BYTES: u64 = 8 * 1024;
const DAY_MS: i64 = 86_400_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        compaction: Some(Compaction {
            min_cleanable_ratio: 0.5,
            min_lag_ms: 0,
            max_lag_ms: i64::MAX,
            delete_retention_ms: DAY_MS,
        }),
        ..LogConfig::default()
    }
}

async fn open(context: &LogContext, clean: bool) -> Rc<PartitionLog> {
    PartitionLog::open(context, Path::new(DIRECTORY), config(), clean)
        .await
        .unwrap()
}

fn no_pace(_: u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    Box::pin(async {})
}

/// One record: key, value (`None`: a tombstone).
type Update = (String, Option<String>);

/// Appends one durable batch of `updates`, compressed every third batch.
/// `producer` is an idempotent producer's id and its next sequence number.
async fn append(
    log: &PartitionLog,
    updates: &[Update],
    round: usize,
    producer: &mut Option<(i64, i32)>,
) {
    let mut builder = match producer {
        Some((id, sequence)) => {
            let builder = BatchBuilder::for_producer(*id, 0, *sequence);
            *sequence += updates.len() as i32;
            builder
        }
        None => BatchBuilder::default(),
    };
    for (key, value) in updates {
        builder.push(
            common::now_ms(),
            Some(key.as_bytes()),
            value.as_deref().map(str::as_bytes),
        );
    }
    let compression = if round.is_multiple_of(3) {
        Compression::Zstd
    } else {
        Compression::None
    };
    let batch = builder.finish_compressed(compression).unwrap();
    let info = log.append(&batch).await.unwrap();
    log.wait_durable(Offset(info.last_offset.0 + 1))
        .await
        .unwrap();
}

/// Fills several segments with updates of ten keys, three records a batch, then deletes keys
/// 3 and 7, then adds filler updates so those deletes are sealed too.
async fn fill(log: &PartitionLog, producer: Option<i64>) {
    let mut producer = producer.map(|id| (id, 0));
    let value = "v".repeat(150);
    let mut round = 0;
    for pass in 0..20 {
        for chunk in (0..10).collect::<Vec<_>>().chunks(3) {
            let updates: Vec<Update> = chunk
                .iter()
                .map(|key| (format!("key-{key}"), Some(format!("{pass}-{value}"))))
                .collect();
            append(log, &updates, round, &mut producer).await;
            round += 1;
        }
    }
    append(
        log,
        &[("key-3".into(), None), ("key-7".into(), None)],
        round,
        &mut producer,
    )
    .await;
    for filler in 0..12 {
        round += 1;
        let updates = vec![(format!("filler-{}", filler % 2), Some(value.clone()))];
        append(log, &updates, round, &mut producer).await;
    }
}

/// Every record of the log: (offset, key, value).
async fn records(log: &PartitionLog) -> Vec<(i64, String, Option<String>)> {
    let mut all = Vec::new();
    for batch in common::read_all(log).await {
        let header = BatchHeader::parse(&batch).unwrap();
        let section = records_section(&batch).unwrap();
        for record in RecordIter::new(&section, header.records_count as usize) {
            let record = record.unwrap();
            all.push((
                header.base_offset.0 + record.offset_delta,
                String::from_utf8(record.key.unwrap().to_vec()).unwrap(),
                record.value.map(|v| String::from_utf8(v.to_vec()).unwrap()),
            ));
        }
    }
    all
}

/// The latest record of each key: key -> (offset, value).
fn latest(records: &[(i64, String, Option<String>)]) -> BTreeMap<String, (i64, Option<String>)> {
    records
        .iter()
        .map(|(offset, key, value)| (key.clone(), (*offset, value.clone())))
        .collect()
}

/// What a compacted log may hold, given the log before: records of it, in order, the latest of
/// every key among them.
fn assert_compacted_form_of(
    before: &[(i64, String, Option<String>)],
    after: &[(i64, String, Option<String>)],
    context: &str,
) {
    let originals: BTreeMap<i64, &(i64, String, Option<String>)> =
        before.iter().map(|record| (record.0, record)).collect();
    for pair in after.windows(2) {
        assert!(pair[0].0 < pair[1].0, "{context}: offsets go forward");
    }
    for record in after {
        assert_eq!(
            originals.get(&record.0).copied(),
            Some(record),
            "{context}: every record kept is one that was written, at its offset"
        );
    }
    let expected = latest(before);
    let kept = latest(after);
    for (key, newest) in &expected {
        // A tombstone may be gone once its horizon passed; a live value never.
        match (kept.get(key), &newest.1) {
            (Some(found), _) => assert_eq!(found, newest, "{context}: the latest of {key}"),
            (None, None) => {}
            (None, Some(_)) => panic!("{context}: the latest value of {key} was lost"),
        }
    }
}

fn files_with(disk: &SimDisk, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = disk
        .names_under(Path::new(DIRECTORY))
        .into_iter()
        .filter(|path| path.to_str().is_some_and(|name| name.ends_with(extension)))
        .collect();
    files.sort();
    files
}

#[test]
fn compaction_keeps_the_latest_record_of_every_key_at_its_offset() {
    common::run(async {
        let disk = SimDisk::new(31);
        let context = common::simulated(&disk, 64 << 20);
        let log = open(&context, true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        fill(&log, Some(9)).await;
        let before = records(&log).await;
        let end = log.log_end_offset();
        let size_before = log.size_bytes();
        assert!(files_with(&disk, ".log").len() >= 4, "several segments");
        assert!(log.wants_cleaning(common::now_ms()));

        let report = log
            .clean(1_000_000, common::now_ms(), &no_pace)
            .await
            .unwrap()
            .unwrap();
        assert!(report.bytes_after < report.bytes_before, "{report:?}");
        assert!(report.segments_after <= report.segments_before);
        let after = records(&log).await;
        assert_compacted_form_of(&before, &after, "after the clean");
        assert!(
            after.len() < before.len() / 3,
            "{} of {}",
            after.len(),
            before.len()
        );
        // The deletes stay for delete.retention.ms after their first clean.
        let kept = latest(&after);
        assert_eq!(kept["key-3"].1, None);
        assert_eq!(kept["key-7"].1, None);
        assert_eq!(log.log_end_offset(), end);
        assert!(log.size_bytes() < size_before);
        assert!(files_with(&disk, ".swap").is_empty() && files_with(&disk, ".cleaned").is_empty());
        // The idempotent producer's last batch is still there (its offsets end the log).
        let producers = log.producers();
        assert_eq!(producers.len(), 1);
        assert!(
            !log.wants_cleaning(common::now_ms()),
            "nothing dirty is left"
        );

        // A crash after the clean: the same log comes back, from the new segments' index
        // files or from a scan.
        drop(flusher);
        for image in [disk.process_crash_image(), disk.crash_image(3)] {
            let reopened = open(&common::simulated(&image, 64 << 20), false).await;
            assert_eq!(records(&reopened).await, after);
            assert_eq!(reopened.log_end_offset(), end);
            assert_eq!(reopened.producers().len(), 1);
            // The cleaner checkpoint came back too: nothing is dirty, nothing is cleaned again.
            assert_eq!(reopened.dirty_ratio(common::now_ms()), None);
        }

        // Past the horizon, a clean takes the deletes too (once the log is dirty again).
        let log = open(&common::simulated(&disk, 64 << 20), true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        fill(&log, None).await;
        let before = records(&log).await;
        log.clean(1_000_000, common::now_ms() + 2 * DAY_MS, &no_pace)
            .await
            .unwrap();
        let after = records(&log).await;
        assert_compacted_form_of(&before, &after, "past the horizon");
        let sealed_deletes = after
            .iter()
            .filter(|(offset, key, value)| {
                value.is_none() && (key == "key-3" || key == "key-7") && *offset < end.0
            })
            .count();
        assert_eq!(sealed_deletes, 0, "the first deletes are gone");
        drop(flusher);
    });
}

#[test]
fn a_map_smaller_than_the_dirty_keys_cleans_in_several_passes() {
    common::run(async {
        let disk = SimDisk::new(32);
        let context = common::simulated(&disk, 64 << 20);
        let log = open(&context, true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        fill(&log, None).await;
        let before = records(&log).await;
        let mut passes = 0;
        while let Some(report) = log.clean(4, common::now_ms(), &no_pace).await.unwrap() {
            passes += 1;
            assert!(passes < 100, "the cleaner makes progress: {report:?}");
            let after = records(&log).await;
            assert_compacted_form_of(&before, &after, &format!("pass {passes}"));
        }
        assert!(passes > 1, "{passes} passes");
        drop(flusher);
    });
}

#[test]
fn a_power_cut_at_any_step_of_a_clean_loses_nothing() {
    let mut outcomes = std::collections::BTreeSet::new();
    for cut_after in (0..60).step_by(3) {
        let seen = common::run(async move {
            let mut seen = Vec::new();
            let disk = SimDisk::new(33);
            let context = common::simulated(&disk, 64 << 20);
            let log = open(&context, true).await;
            let flusher = glommio::spawn_local(log.clone().run_flusher());
            fill(&log, None).await;
            let before = records(&log).await;
            let end = log.log_end_offset();
            disk.cut_power_after(disk.operations() + cut_after);
            let cleaned = log.clean(1_000_000, common::now_ms(), &no_pace).await;
            drop(flusher);
            for seed in 0..4 {
                let image = disk.crash_image(seed);
                let reopened = open(&common::simulated(&image, 64 << 20), false).await;
                let after = records(&reopened).await;
                let context = format!("cut after {cut_after}, image {seed}");
                assert_compacted_form_of(&before, &after, &context);
                assert_eq!(reopened.log_end_offset(), end, "{context}");
                if cleaned.is_ok() {
                    assert!(
                        after.len() < before.len(),
                        "{context}: a finished clean stays"
                    );
                }
                assert!(
                    files_with(&image, ".swap").is_empty()
                        && files_with(&image, ".cleaned").is_empty(),
                    "{context}: opening finished or undid the swap"
                );
                seen.push(after.len() == before.len());
                drop(reopened);
                // A second power cut while opening finishes the first one's swap: the next
                // open still finds the old group or the new one.
                for again in (0..12).step_by(4) {
                    let image = disk.crash_image(seed);
                    image.cut_power_after(image.operations() + again);
                    let _ = PartitionLog::open(
                        &common::simulated(&image, 64 << 20),
                        Path::new(DIRECTORY),
                        config(),
                        false,
                    )
                    .await;
                    let second = image.crash_image(seed + 100);
                    let reopened = open(&common::simulated(&second, 64 << 20), false).await;
                    let twice = records(&reopened).await;
                    assert_compacted_form_of(&before, &twice, &format!("{context}, then {again}"));
                }
            }
            seen
        });
        outcomes.extend(seen);
    }
    // Some cuts came before the commit (the old log), some after it (the cleaned one).
    assert_eq!(outcomes.into_iter().collect::<Vec<_>>(), [false, true]);
}

#[test]
fn a_cleaned_segment_followed_by_an_empty_active_one_opens() {
    common::run(async {
        let disk = SimDisk::new(35);
        let context = common::simulated(&disk, 64 << 20);
        let log = open(&context, true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        fill(&log, None).await;
        log.clean(1_000_000, common::now_ms(), &no_pace)
            .await
            .unwrap()
            .unwrap();
        let after = records(&log).await;
        let end = log.log_end_offset();
        drop(flusher);
        // What a roll leaves when the append that caused it fails: an empty segment at the
        // log end, after the last one that holds anything (here, a cleaned one with gaps).
        let empty = Path::new(DIRECTORY).join(format!("{:020}.log", end.0));
        let image = disk.process_crash_image();
        {
            use storage::io::Disk;
            image.open(&empty, true).await.unwrap();
            image.sync_directory(Path::new(DIRECTORY)).await.unwrap();
        }
        for clean in [false, true] {
            let reopened = open(&common::simulated(&image, 64 << 20), clean).await;
            assert_eq!(records(&reopened).await, after);
            assert_eq!(reopened.log_end_offset(), end);
        }
    });
}

#[test]
fn a_corrupt_batch_stops_the_clean_and_is_left_as_it_is() {
    common::run(async {
        let disk = SimDisk::new(34);
        let context = common::simulated(&disk, 64 << 20);
        let log = open(&context, true).await;
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        fill(&log, None).await;
        let first = files_with(&disk, ".log")[1].clone();
        let bytes_before = disk.file_bytes(&first).unwrap();
        // Flip a byte inside the first batch's records (past its 61-byte header).
        assert!(disk.corrupt_byte(&first, 100));
        let damaged = disk.file_bytes(&first).unwrap();
        assert_ne!(damaged, bytes_before);
        context.files.forget(&first);
        let result = log.clean(1_000_000, common::now_ms(), &no_pace).await;
        assert!(
            matches!(result, Err(LogError::Corrupt { .. })),
            "{result:?}"
        );
        assert_eq!(disk.file_bytes(&first).unwrap(), damaged, "not rewritten");
        assert!(files_with(&disk, ".cleaned").is_empty());
        drop(flusher);
    });
}

#[test]
fn a_dirty_record_past_max_compaction_lag_makes_the_log_due_whatever_its_ratio() {
    common::run(async {
        let disk = SimDisk::new(36);
        let context = common::simulated(&disk, 64 << 20);
        let strict = LogConfig {
            compaction: Some(Compaction {
                min_cleanable_ratio: 0.99,
                max_lag_ms: 60_000,
                ..config().compaction.unwrap()
            }),
            ..config()
        };
        let log = PartitionLog::open(&context, Path::new(DIRECTORY), strict, true)
            .await
            .unwrap();
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        fill(&log, None).await;
        log.clean(1_000_000, common::now_ms(), &no_pace)
            .await
            .unwrap();
        // A little new data: far below the ratio, so not due now...
        let value = "v".repeat(150);
        for round in 0..60 {
            let updates = vec![(format!("key-{}", round % 10), Some(value.clone()))];
            append(&log, &updates, round, &mut None).await;
        }
        let ratio = log.dirty_ratio(common::now_ms()).unwrap();
        assert!(ratio < 0.99, "{ratio}");
        assert!(!log.wants_cleaning(common::now_ms()));
        // ...but due once its oldest record has waited past max.compaction.lag.ms.
        assert!(log.wants_cleaning(common::now_ms() + 120_000));
        drop(flusher);
    });
}
