//! A follower's log (`append_replicated`): it takes a leader's stored batches as they are,
//! skips what it already holds, refuses a batch that does not start at its end or whose CRC
//! is wrong, survives a crash with what it made durable, and keeps the leader's producer state
//! so that the same producer's retry is known as a duplicate; the replication bound keeps the
//! high watermark at what the leader confirmed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::rc::Rc;

use storage::record_batch::{BatchBuilder, BatchHeader};
use storage::sim::SimDisk;
use storage::{LogConfig, LogError, Offset, PartitionLog};

async fn open(disk: &SimDisk, directory: &str) -> Rc<PartitionLog> {
    let context = common::simulated(disk, 64 << 20);
    let log = PartitionLog::open(&context, Path::new(directory), LogConfig::default(), false)
        .await
        .unwrap();
    glommio::spawn_local(log.clone().run_flusher()).detach();
    log
}

fn producer_batch(sequence: i32) -> Vec<u8> {
    let mut builder = BatchBuilder::for_producer(7, 0, sequence);
    for index in 0..3 {
        builder.push(
            common::now_ms(),
            None,
            Some(format!("value-{index}").as_bytes()),
        );
    }
    builder.finish()
}

#[test]
fn a_follower_appends_the_leaders_batches_as_they_are_and_nothing_else() {
    common::run(async {
        let disk = SimDisk::new(11);
        let leader = open(&disk, "/data/leader/t-0").await;
        for sequence in [0, 3, 6] {
            leader.append(&producer_batch(sequence)).await.unwrap();
        }
        leader.wait_durable(Offset(9)).await.unwrap();
        let stored = common::read_all(&leader).await.concat();

        let follower = open(&disk, "/data/follower/t-0").await;
        assert_eq!(
            follower.append_replicated(&stored).await.unwrap(),
            stored.len()
        );
        follower.wait_durable(Offset(9)).await.unwrap();
        assert_eq!(follower.log_end_offset(), Offset(9));
        // Byte for byte the leader's batches: offsets, epochs and producer fields included.
        assert_eq!(common::read_all(&follower).await.concat(), stored);

        // The same fetch answered twice appends nothing; a partial batch at the end waits.
        assert_eq!(follower.append_replicated(&stored).await.unwrap(), 0);
        assert_eq!(
            follower
                .append_replicated(&stored[..stored.len() - 5])
                .await
                .unwrap(),
            0
        );

        // A batch whose bytes were damaged, and one overlapping the follower's end, are
        // refused and change nothing.
        leader.append(&producer_batch(9)).await.unwrap();
        leader.append(&producer_batch(12)).await.unwrap();
        leader.wait_durable(Offset(15)).await.unwrap();
        let all = common::read_all(&leader).await;
        let mut damaged = all[3].clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(
            follower.append_replicated(&damaged).await,
            Err(LogError::Batch(_))
        ));
        let mut overlapping = all[3].clone();
        storage::record_batch::assign_offset(&mut overlapping, Offset(8), 0);
        assert!(matches!(
            follower.append_replicated(&overlapping).await,
            Err(LogError::Batch(_))
        ));
        assert_eq!(follower.log_end_offset(), Offset(9));

        // A gap (the leader's cleaner dropped the batch at 9..12) is filled with an empty
        // batch: the follower's offsets stay the leader's.
        follower.append_replicated(&all[4]).await.unwrap();
        assert_eq!(follower.log_end_offset(), Offset(15));
        follower.wait_durable(Offset(15)).await.unwrap();
        let copied = common::read_all(&follower).await;
        let filler = BatchHeader::parse(&copied[3]).unwrap();
        assert_eq!(
            (filler.base_offset, filler.next_offset()),
            (Offset(9), Offset(12))
        );
        assert_eq!(filler.records_count, 0);
        assert_eq!(copied[4], all[4]);

        // The producer state came along: the producer's retry of a replicated batch is a
        // duplicate on the follower's log too.
        let retry = follower.append(&producer_batch(12)).await.unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, Offset(12));

        // What the follower made durable survives its crash.
        let image = disk.crash_image(3);
        let reopened = open(&image, "/data/follower/t-0").await;
        assert_eq!(reopened.log_end_offset(), Offset(15));
        let header = BatchHeader::parse(&common::read_all(&reopened).await[2]).unwrap();
        assert_eq!(header.base_sequence, 6);
    });
}

#[test]
fn the_replication_bound_holds_the_high_watermark_back_until_lifted() {
    common::run(async {
        let disk = SimDisk::new(12);
        let log = open(&disk, "/data/t-0").await;
        log.set_replicated_high_watermark(Some(Offset(0)));
        log.append(&producer_batch(0)).await.unwrap();
        log.wait_durable(Offset(3)).await.unwrap();
        assert_eq!(log.local_high_watermark(), Offset(3));
        assert_eq!(log.high_watermark(), Offset(0), "nothing confirmed yet");
        let waiting = log.wait_high_watermark(Offset(3));
        futures_lite::pin!(waiting);
        assert!(futures_lite::future::poll_once(&mut waiting)
            .await
            .is_none());
        log.set_replicated_high_watermark(Some(Offset(3)));
        waiting.await.unwrap();
        log.set_replicated_high_watermark(Some(Offset(100)));
        assert_eq!(
            log.high_watermark(),
            Offset(3),
            "never past what the log holds"
        );
        log.set_replicated_high_watermark(None);
        assert_eq!(log.high_watermark(), Offset(3));
    });
}

/// Batches carry the epoch their leader appended them in, and the epoch cache answers where
/// each epoch ends, on the leader and on a follower that copied it. A closed follower log
/// truncated to an offset keeps only the whole batches below it (a batch spanning the offset
/// goes whole), with its epochs and producer state to match, and stays so through a crash.
#[test]
fn epochs_end_where_the_next_begins_and_a_truncated_log_keeps_only_what_is_below() {
    common::run(async {
        let disk = SimDisk::new(13);
        let leader = open(&disk, "/data/leader/t-0").await;
        assert_eq!(leader.latest_epoch(), None);
        leader.append(&producer_batch(0)).await.unwrap();
        leader.append(&producer_batch(3)).await.unwrap();
        leader.set_leader_epoch(2);
        leader.append(&producer_batch(6)).await.unwrap();
        leader.wait_durable(Offset(9)).await.unwrap();
        let batches = common::read_all(&leader).await;
        let epochs: Vec<i32> = batches
            .iter()
            .map(|batch| BatchHeader::parse(batch).unwrap().partition_leader_epoch)
            .collect();
        assert_eq!(epochs, vec![0, 0, 2]);
        assert_eq!(leader.latest_epoch(), Some(2));
        assert_eq!(leader.end_offset_for_epoch(0), Some((0, Offset(6))));
        assert_eq!(leader.end_offset_for_epoch(1), Some((0, Offset(6))));
        assert_eq!(leader.end_offset_for_epoch(2), Some((2, Offset(9))));
        assert_eq!(leader.end_offset_for_epoch(-1), None);

        let directory = "/data/follower/t-0";
        let follower = open(&disk, directory).await;
        follower.append_replicated(&batches.concat()).await.unwrap();
        follower.wait_durable(Offset(9)).await.unwrap();
        assert_eq!(follower.end_offset_for_epoch(0), Some((0, Offset(6))));
        assert_eq!(follower.latest_epoch(), Some(2));
        follower.close().await.unwrap();

        // Offset 7 is inside the last batch: it goes whole.
        let context = common::simulated(&disk, 64 << 20);
        let end = PartitionLog::truncate_closed(&context, Path::new(directory), Offset(7))
            .await
            .unwrap();
        assert_eq!(end, Offset(6));
        let truncated = open(&disk, directory).await;
        assert_eq!(truncated.log_end_offset(), Offset(6));
        assert_eq!(common::read_all(&truncated).await, batches[..2].to_vec());
        assert_eq!(
            truncated.latest_epoch(),
            Some(0),
            "epoch 2 is gone with its batch"
        );
        // The producer's third batch is no longer known: appended again, it is new.
        let again = truncated.append(&producer_batch(6)).await.unwrap();
        assert!(!again.duplicate);
        assert_eq!(again.base_offset, Offset(6));
        truncated.wait_durable(Offset(9)).await.unwrap();

        let image = disk.crash_image(5);
        let reopened = open(&image, directory).await;
        assert_eq!(reopened.log_end_offset(), Offset(9));
        assert_eq!(reopened.end_offset_for_epoch(0), Some((0, Offset(9))));
    });
}

/// A follower's log refuses produced batches (a produce that waited while its replica stopped
/// leading must not land there). A sealed log takes nothing at all, and its waiters fail
/// rather than hang. A log whose epoch cache cannot be read answers no epoch, and is known
/// again once it is cut back to its start.
#[test]
fn a_followers_log_refuses_produce_a_sealed_one_everything_and_lost_epochs_are_not_guessed() {
    common::run(async {
        let disk = SimDisk::new(14);
        let directory = "/data/t-0";
        let log = open(&disk, directory).await;
        log.append(&producer_batch(0)).await.unwrap();
        log.set_leading(false);
        assert!(matches!(
            log.append(&producer_batch(3)).await,
            Err(LogError::NotLeader)
        ));
        log.set_leading(true);
        log.append(&producer_batch(3)).await.unwrap();
        log.wait_durable(Offset(6)).await.unwrap();
        log.seal("a test").await.unwrap();
        assert!(log.append(&producer_batch(6)).await.is_err());
        assert!(log.wait_durable(Offset(100)).await.is_err(), "no hang");

        // Both slots of the epoch cache damaged.
        for slot in 0..2 {
            let path = Path::new(directory).join(format!("leader-epoch-checkpoint-{slot}"));
            if disk.file_bytes(&path).is_some() {
                assert!(disk.corrupt_byte(&path, 20));
            } else {
                let context = common::simulated(&disk, 1 << 20);
                let file = context.disk.open(&path, true).await.unwrap();
                file.write_blocks(0, &[&[7u8; 64]]).await.unwrap();
                file.fdatasync().await.unwrap();
            }
        }
        let damaged = open(&disk, directory).await;
        assert!(!damaged.epochs_known());
        assert_eq!(damaged.end_offset_for_epoch(0), None);
        assert_eq!(damaged.latest_epoch(), None);
        damaged.seal("a test").await.unwrap();
        let context = common::simulated(&disk, 64 << 20);
        PartitionLog::truncate_closed(&context, Path::new(directory), Offset(0))
            .await
            .unwrap();
        let restarted = open(&disk, directory).await;
        assert!(restarted.epochs_known());
        assert_eq!(restarted.log_end_offset(), Offset(0));
    });
}
