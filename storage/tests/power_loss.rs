//! Power loss through the simulated disk: thousands of seeded cases of "several producers (two
//! of them idempotent) append with acks=all, the power goes at a random moment, the disk keeps a
//! random subset of what was never synced (one block maybe torn at 512-byte granularity),
//! recover", each asserting that every acknowledged batch is there, byte for byte at its offset,
//! that the partition was not refused (there is no corruption below its recovery point in these
//! cases), and that the producers' retries after the restart are answered correctly.
//!
//! The suite proves it can fail: with `fdatasync` turned into a lie (`fsync_is_noop`: it returns
//! and makes nothing durable, which is what removing it from the write path does), the same
//! cases lose acknowledged batches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use storage::record_batch::{BatchBuilder, BatchWalk};
use storage::sim::{FaultOp, SimDisk, SimRng};
use storage::{LogConfig, LogError, Offset, PartitionLog};

const DIRECTORY: &str = "/data/payments-0";

/// A batch whose acknowledgement the producer saw: where it is and what it must read back as.
#[derive(Debug, Clone)]
struct Acknowledged {
    base_offset: Offset,
    stored: Vec<u8>,
}

/// An idempotent producer's view of its last batches, for the retries after the restart.
#[derive(Debug, Default, Clone)]
struct ProducerView {
    producer_id: i64,
    /// The batch acknowledged last, and the first one sent without an acknowledgement.
    last_acknowledged: Option<(Vec<u8>, Offset)>,
    first_unacknowledged: Option<Vec<u8>>,
}

fn config(rng: &mut SimRng) -> LogConfig {
    LogConfig {
        segment_bytes: [4096u64, 12_288, 65_536, 1 << 20][rng.below(4) as usize],
        // Checkpoints as often as the timer allows, so power goes during them too.
        recovery_point_interval: Duration::from_millis(1 + rng.below(3)),
        ..LogConfig::default()
    }
}

fn batch(rng: &mut SimRng, producer: Option<(i64, i32)>, now: i64) -> Vec<u8> {
    let mut builder = match producer {
        Some((producer_id, sequence)) => BatchBuilder::for_producer(producer_id, 0, sequence),
        None => BatchBuilder::default(),
    };
    for index in 0..1 + rng.below(4) {
        let value = vec![b'a' + (rng.below(26) as u8); 1 + rng.below(2500) as usize];
        let key = format!("key-{index}");
        builder.push(now + index as i64, Some(key.as_bytes()), Some(&value));
    }
    builder.finish()
}

/// What one case exercised, so the suite can check that its cases are not trivial.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    /// Batches acknowledged before the power went.
    acknowledged: usize,
    /// The power went while producers were still sending.
    cut_mid_workload: bool,
    /// Recovery dropped batches that had been appended (never acknowledged).
    cut_unsynced: bool,
    /// Recovery started from a recovery point inside the log, not at its end.
    recovered_from_inside: bool,
    /// An injected fault (ENOSPC) hit an operation before the power went.
    faulted: bool,
}

/// One case: the workload until the power goes, then recovery and the checks. `Err` says what
/// broke a promise. The power goes at a uniformly chosen operation of the workload: a first run
/// of the same seed without a cut counts its operations.
async fn power_loss_case(seed: u64, mode: Mode) -> Result<Coverage, String> {
    let operations = workload(seed, mode, None).await.operations;
    let cut = 1 + SimRng::new(seed ^ 0xc07).below(operations + operations / 10);
    let run = workload(seed, mode, Some(cut)).await;
    recover_and_check(seed, run).await
}

/// What the disk does besides losing power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Honest,
    /// `fdatasync` returns and makes nothing durable.
    SyncIsALie,
    /// Some writes, syncs and allocations fail with ENOSPC first; producers retry refusals.
    DiskFullAtTimes,
}

/// What a workload left behind: the disk as the power went, and what the producers were told.
struct Run {
    disk: SimDisk,
    config: LogConfig,
    operations: u64,
    acknowledged: Vec<Acknowledged>,
    views: Vec<ProducerView>,
    coverage: Coverage,
    appended_end: Offset,
    recovery_point_at_cut: Offset,
}

async fn workload(seed: u64, mode: Mode, cut: Option<u64>) -> Run {
    let mut coverage = Coverage::default();
    let mut rng = SimRng::new(seed);
    let disk = SimDisk::new(seed);
    disk.set_fsync_is_noop(mode == Mode::SyncIsALie);
    if mode == Mode::DiskFullAtTimes {
        let mut faults = SimRng::new(seed ^ 0xf0);
        for _ in 0..1 + faults.below(3) {
            let op = [FaultOp::Write, FaultOp::Sync, FaultOp::Allocate][faults.below(3) as usize];
            disk.fail_nth(op, faults.below(20), storage::sim::ENOSPC);
        }
    }
    if let Some(cut) = cut {
        disk.cut_power_after(cut);
    }
    let config = config(&mut rng);
    let directory = Path::new(DIRECTORY);
    // Half the cases prepare segment blocks ahead of the log, as the real disk does, so zero
    // writes race the writer and the power loss.
    let mut context = common::simulated(&disk, 64 << 20);
    let mut prepare = SimRng::new(seed ^ 0x9e);
    if prepare.below(2) == 0 {
        context = context.preparing_ahead(4096 * (1 + prepare.below(16)));
    }
    let acknowledged = Rc::new(RefCell::new(Vec::<Acknowledged>::new()));
    let views = Rc::new(RefCell::new(Vec::<ProducerView>::new()));
    let now = common::now_ms();
    let mut appended_end = Offset(0);
    let mut durable_at_cut = Offset(0);

    if let Ok(log) = PartitionLog::open(&context, directory, config.clone(), true).await {
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let mut producers = Vec::new();
        for producer in 0..3i64 {
            let idempotent = producer > 0;
            let log = log.clone();
            let acknowledged = acknowledged.clone();
            let views = views.clone();
            let mut rng = SimRng::new(seed.wrapping_mul(7).wrapping_add(producer as u64));
            producers.push(glommio::spawn_local(async move {
                let producer_id = 100 + producer;
                let mut view = ProducerView {
                    producer_id,
                    ..ProducerView::default()
                };
                let mut sequence = 0i32;
                for _ in 0..12 {
                    let bytes = batch(&mut rng, idempotent.then_some((producer_id, sequence)), now);
                    let records = storage::BatchHeader::parse(&bytes).unwrap().records_count;
                    let mut appended = log.append(&bytes).await;
                    // A full disk refuses the append and changes nothing: a producer retries.
                    for _ in 0..100 {
                        match &appended {
                            Err(error) if error.is_no_space() => {
                                glommio::timer::sleep(Duration::from_millis(5)).await;
                                appended = log.append(&bytes).await;
                            }
                            _ => break,
                        }
                    }
                    let durable = match appended {
                        Ok(info) => log
                            .wait_durable(Offset(info.last_offset.0 + 1))
                            .await
                            .map(|()| info),
                        Err(error) => Err(error),
                    };
                    match durable {
                        Ok(info) => {
                            acknowledged.borrow_mut().push(Acknowledged {
                                base_offset: info.base_offset,
                                stored: common::stored_form(&bytes, info.base_offset),
                            });
                            view.last_acknowledged = Some((bytes, info.base_offset));
                            sequence += records;
                        }
                        Err(_) => {
                            view.first_unacknowledged = Some(bytes);
                            break;
                        }
                    }
                }
                if idempotent {
                    views.borrow_mut().push(view);
                }
            }));
        }
        for producer in producers {
            producer.await;
        }
        coverage.cut_mid_workload = !disk.powered();
        coverage.faulted = disk.faults_fired() > 0;
        appended_end = log.log_end_offset();
        durable_at_cut = log.recovery_point();
        drop(flusher);
        drop(log);
    }
    let operations = disk.operations();
    // The workload may have ended before the cut: the power goes now, then.
    disk.cut_power_now();
    Run {
        disk,
        config,
        operations,
        acknowledged: acknowledged.take(),
        views: views.take(),
        coverage,
        appended_end,
        recovery_point_at_cut: durable_at_cut,
    }
}

/// The stored batches of a log, by base offset.
fn by_base_offset(batches: Vec<Vec<u8>>) -> BTreeMap<Offset, Vec<u8>> {
    batches
        .into_iter()
        .map(|batch| {
            (
                storage::BatchHeader::parse(&batch).unwrap().base_offset,
                batch,
            )
        })
        .collect()
}

async fn recover_and_check(seed: u64, run: Run) -> Result<Coverage, String> {
    let Run {
        disk,
        config,
        acknowledged,
        views,
        mut coverage,
        appended_end,
        recovery_point_at_cut,
        ..
    } = run;
    let directory = Path::new(DIRECTORY);
    let image = disk.crash_image(seed ^ 0x5eed);
    let context = common::simulated(&image, 64 << 20);
    let log = match PartitionLog::open(&context, directory, config.clone(), false).await {
        Ok(log) => log,
        Err(error) => {
            return Err(format!(
                "the partition was refused after the crash: {error}"
            ))
        }
    };
    let recovered = by_base_offset(common::try_read_all(&log).await?);
    for promise in &acknowledged {
        match recovered.get(&promise.base_offset) {
            Some(found) if *found == promise.stored => {}
            Some(_) => return Err(format!("the batch at {} changed", promise.base_offset)),
            None => {
                return Err(format!(
                    "the acknowledged batch at {} is gone",
                    promise.base_offset
                ))
            }
        }
    }
    if log.recovery_point() != log.log_end_offset() {
        return Err("the recovery point was not moved to the recovered end".into());
    }
    coverage.acknowledged = acknowledged.len();
    coverage.cut_unsynced = log.log_end_offset() < appended_end;
    coverage.recovered_from_inside = recovery_point_at_cut < log.log_end_offset();
    // Retries after the restart: the batch acknowledged last is a duplicate with its original
    // offsets; the first one never acknowledged goes in (again, or for the first time).
    for view in &views {
        if let Some((bytes, base_offset)) = &view.last_acknowledged {
            let retry = log
                .append(bytes)
                .await
                .map_err(|error| format!("retry of producer {}: {error}", view.producer_id))?;
            if !retry.duplicate || retry.base_offset != *base_offset {
                return Err(format!(
                    "producer {}'s retry was not recognised: {retry:?}",
                    view.producer_id
                ));
            }
        }
        if let Some(bytes) = &view.first_unacknowledged {
            match log.append(bytes).await {
                Ok(_) => {}
                Err(LogError::Producer(error)) => {
                    return Err(format!(
                        "producer {}'s unacknowledged batch was refused: {error}",
                        view.producer_id
                    ))
                }
                Err(error) => return Err(format!("append after recovery: {error}")),
            }
        }
    }
    Ok(coverage)
}

fn cases(first_seed: u64, count: u64, mode: Mode) -> (Vec<(u64, String)>, Vec<Coverage>) {
    common::run(async move {
        let mut failures = Vec::new();
        let mut covered = Vec::new();
        for seed in first_seed..first_seed + count {
            match power_loss_case(seed, mode).await {
                Ok(coverage) => covered.push(coverage),
                Err(reason) => failures.push((seed, reason)),
            }
        }
        (failures, covered)
    })
}

/// The promise itself, over 2,000 seeds (a failing seed is printed and reproduces alone).
#[test]
fn every_acknowledged_batch_survives_power_loss_at_any_moment() {
    let (failures, covered) = cases(0, 2_000, Mode::Honest);
    assert!(
        failures.is_empty(),
        "{} of 2000 cases broke a promise; the first: {:?}",
        failures.len(),
        failures.first()
    );
    // The cases must be the interesting ones: power lost mid-stream after acknowledgements,
    // with unsynced batches to cut and a recovery point behind the end.
    let count =
        |test: fn(&Coverage) -> bool| covered.iter().filter(|coverage| test(coverage)).count();
    let mid_stream = count(|coverage| coverage.cut_mid_workload && coverage.acknowledged > 0);
    let cut = count(|coverage| coverage.cut_unsynced && coverage.acknowledged > 0);
    let inside = count(|coverage| coverage.recovered_from_inside);
    let acknowledged: usize = covered.iter().map(|coverage| coverage.acknowledged).sum();
    eprintln!(
        "power loss: {mid_stream} cases cut mid-stream after acknowledgements, {cut} cut unsynced          batches, {inside} recovered from a recovery point inside the log; {acknowledged} batches          acknowledged in all"
    );
    assert!(
        mid_stream > 1_000,
        "only {mid_stream} cases lost power mid-stream after acks"
    );
    assert!(cut > 200, "only {cut} cases had unsynced batches to cut");
    assert!(
        inside > 500,
        "only {inside} cases recovered from inside the log"
    );
}

/// The same cases with `fdatasync` made a lie: acknowledged batches go missing (or the recovery
/// point names bytes that never reached the disk and the partition is refused), so the suite
/// above would catch a write path that stopped syncing.
#[test]
fn without_fdatasync_the_same_cases_lose_acknowledged_batches() {
    let (failures, _) = cases(0, 300, Mode::SyncIsALie);
    assert!(
        failures.len() > 30,
        "only {} of 300 cases noticed that nothing was ever synced",
        failures.len()
    );
}

/// ENOSPC on writes, syncs and allocations on the way, then power loss: the refusals are
/// retriable, the log never goes offline for them, and every acknowledged batch survives.
#[test]
fn a_disk_that_fills_up_at_times_loses_nothing_acknowledged_either() {
    let (failures, covered) = cases(10_000, 300, Mode::DiskFullAtTimes);
    assert!(
        failures.is_empty(),
        "{} of 300 cases broke a promise; the first: {:?}",
        failures.len(),
        failures.first()
    );
    let faulted = covered
        .iter()
        .filter(|coverage| coverage.faulted && coverage.acknowledged > 0)
        .count();
    eprintln!("disk full at times: {faulted} of 300 cases hit ENOSPC and had acknowledgements");
    assert!(
        faulted > 100,
        "only {faulted} cases hit ENOSPC with acknowledgements to keep"
    );
}

/// A batch written and then damaged on the medium below the recovery point (here, after a clean
/// close, the whole log) is corruption: the partition is refused, with the place, and its file
/// is left exactly as it was.
#[test]
fn corruption_below_the_recovery_point_refuses_the_partition() {
    common::run(async {
        let disk = SimDisk::new(11);
        let context = common::simulated(&disk, 64 << 20);
        let directory = Path::new(DIRECTORY);
        let log = PartitionLog::open(&context, directory, LogConfig::default(), true)
            .await
            .unwrap();
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        let mut rng = SimRng::new(3);
        let mut last = Offset(0);
        for _ in 0..20 {
            let info = log
                .append(&batch(&mut rng, None, common::now_ms()))
                .await
                .unwrap();
            last = info.last_offset;
        }
        log.wait_durable(Offset(last.0 + 1)).await.unwrap();
        log.close().await.unwrap();
        flusher.await;
        drop(log);
        let segment = directory.join("00000000000000000000.log");
        let before = disk.file_bytes(&segment).unwrap();
        let second_batch = BatchWalk::new(&before).nth(1).unwrap().1;
        assert!(disk.corrupt_byte(&segment, second_batch.start + 30));
        let damaged = disk.file_bytes(&segment).unwrap();
        let image = disk.crash_image(1);
        let context = common::simulated(&image, 64 << 20);
        match PartitionLog::open(&context, directory, LogConfig::default(), false).await {
            Err(LogError::Corrupt { position, .. }) => {
                assert_eq!(position, second_batch.start as u64)
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("corruption below the recovery point was accepted"),
        }
        assert_eq!(
            image.file_bytes(&segment).unwrap(),
            damaged,
            "nothing was cut"
        );
    });
}

/// Relaxed mode (`flush.messages` > 1) acknowledges once the write has completed, before the
/// sync: a process crash (`kill -9`: the machine keeps what the process wrote) loses nothing
/// acknowledged, however the appends and writes interleaved.
#[test]
fn relaxed_mode_acknowledgements_survive_a_process_crash() {
    common::run(async {
        for seed in 0..200u64 {
            let disk = SimDisk::new(seed);
            let mut rng = SimRng::new(seed);
            let config = LogConfig {
                flush: storage::FlushPolicy::Relaxed {
                    messages: Some(1_000_000),
                    interval: Some(Duration::from_secs(3600)),
                },
                ..config(&mut rng)
            };
            let context = common::simulated(&disk, 64 << 20);
            let directory = Path::new(DIRECTORY);
            let log = PartitionLog::open(&context, directory, config.clone(), true)
                .await
                .unwrap();
            let flusher = glommio::spawn_local(log.clone().run_flusher());
            let mut acknowledged = Vec::new();
            for _ in 0..1 + rng.below(30) {
                let bytes = batch(&mut rng, None, common::now_ms());
                let info = log.append(&bytes).await.unwrap();
                if rng.chance(2, 3) {
                    log.wait_acknowledgeable(Offset(info.last_offset.0 + 1))
                        .await
                        .unwrap();
                    acknowledged.push(Acknowledged {
                        base_offset: info.base_offset,
                        stored: common::stored_form(&bytes, info.base_offset),
                    });
                }
            }
            assert!(
                log.durable_offset() < log.log_end_offset() || acknowledged.is_empty(),
                "seed {seed}: relaxed mode synced without being asked to"
            );
            drop(flusher);
            drop(log);
            let image = disk.process_crash_image();
            let context = common::simulated(&image, 64 << 20);
            let log = PartitionLog::open(&context, directory, config, false)
                .await
                .unwrap();
            let recovered = by_base_offset(common::read_all(&log).await);
            for promise in &acknowledged {
                assert_eq!(
                    recovered.get(&promise.base_offset),
                    Some(&promise.stored),
                    "seed {seed}: acknowledged batch at {}",
                    promise.base_offset
                );
            }
        }
    });
}
