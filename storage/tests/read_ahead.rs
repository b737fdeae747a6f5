//! A consumer reading a segment in order gets its next fetch from the read-ahead, not the
//! disk, and reads exactly what it would have read from the disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use storage::record_batch::build_uncompressed_batch;
use storage::sim::SimDisk;
use storage::{LogConfig, Offset, PartitionLog};

const DIRECTORY: &str = "/data/ticks-0";

#[test]
fn in_order_fetches_after_the_first_come_from_memory_and_match_the_disk() {
    common::run(async {
        let disk = SimDisk::new(31);
        let config = LogConfig {
            segment_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let context = common::simulated(&disk, 64 << 20);
        let log = PartitionLog::open(&context, Path::new(DIRECTORY), config.clone(), true)
            .await
            .unwrap();
        let flusher = glommio::spawn_local(log.clone().run_flusher());
        for _ in 0..300 {
            let batch = build_uncompressed_batch(8, 1000, common::now_ms());
            let info = log.append(&batch).await.unwrap();
            log.wait_durable(Offset(info.last_offset.0 + 1))
                .await
                .unwrap();
        }
        let written = common::read_all(&log).await;
        log.close().await.unwrap();
        drop(flusher);

        // Reopened, nothing is cached: every fetch needs the segments. Disk operations complete
        // at their first poll, so the yields below let a read-ahead land.
        disk.set_max_yields(0);
        let context = common::simulated(&disk, 64 << 20);
        let log = PartitionLog::open(&context, Path::new(DIRECTORY), config, true)
            .await
            .unwrap();
        let end = log.high_watermark();
        let mut next = Offset(0);
        let mut read = Vec::new();
        let mut from_memory = 0;
        let mut fetches = 0;
        while next < end {
            // Let a read-ahead the previous fetch started land, if it has not already: tasks
            // spawned after it run after it.
            for _ in 0..4 {
                glommio::spawn_local(async {}).await;
            }
            let ready = log.read_ahead_state() == "ready";
            let operations = disk.operations();
            let fetched = log.read(next, 64 * 1024, end).await.unwrap();
            // From memory, the fetch's only disk operation is the next read-ahead it starts
            // (which may run at once); from the disk, its own read comes first.
            if ready && disk.operations() - operations <= 1 {
                from_memory += 1;
            }
            fetches += 1;
            for run in fetched.runs {
                for (header, range) in storage::record_batch::BatchWalk::new(&run) {
                    read.push(run[range].to_vec());
                    next = header.next_offset();
                }
            }
        }
        assert_eq!(read, written, "the read-ahead changes nothing that is read");
        // Every fetch but the first of each segment (the read-ahead stays within one).
        let segments = disk
            .names_under(Path::new(DIRECTORY))
            .iter()
            .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
            .count();
        assert!(
            from_memory >= fetches - segments,
            "{from_memory} of {fetches} fetches came from memory ({segments} segments)"
        );
        // A fetch elsewhere drops what was read ahead; reading from there is still right.
        let again = log.read(Offset(0), 64 * 1024, end).await.unwrap();
        assert_eq!(
            again.runs[0][..written[0].len()],
            written[0][..],
            "a fetch from the start after the read-ahead moved on"
        );
        log.close().await.unwrap();
    });
}
