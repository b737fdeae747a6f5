//! A segment file with any content, opened by the recovery scan after an unclean shutdown on
//! the simulated disk: with a recovery point at the start (everything may be cut) or without
//! one (an older log's rules), and then read back whole. Recovery may refuse the partition; it
//! may never panic, loop, or serve a run of batches with a gap.
#![no_main]

use std::path::Path;
use std::rc::Rc;

use libfuzzer_sys::fuzz_target;
use storage::io::Disk;
use storage::sim::SimDisk;
use storage::{LogConfig, LogContext, Offset, PartitionLog};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, content)) = data.split_first() else {
        return;
    };
    futures_lite::future::block_on(async {
        let disk = SimDisk::new(u64::from(mode));
        disk.set_max_yields(0);
        let directory = Path::new("/data/fuzzed-0");
        let context = LogContext::new(Rc::new(disk.clone()), 64 << 20, 4);
        if mode % 4 < 2 {
            // A fresh log: its recovery point (offset 0) and first segment exist.
            let Ok(log) = PartitionLog::open(&context, directory, LogConfig::default(), true).await
            else {
                return;
            };
            drop(log);
        } else {
            disk.create_dir_all(directory).await.ok();
        }
        // On modes 2 and 3 every batch the content holds by its length fields gets a right
        // CRC, so the scan's offset and continuity checks see what the fuzzer wrote.
        let mut content = content.to_vec();
        if mode & 2 != 0 {
            let mut at = 0;
            while let Some(header) = storage::BatchHeader::parse(&content[at..]) {
                let Some(total) = header
                    .total_bytes()
                    .filter(|total| *total >= 61 && at + total <= content.len())
                else {
                    break;
                };
                let crc = storage::record_batch::compute_crc(&content[at..at + total]);
                content[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
                at += total;
            }
        }
        let content = &content[..];
        let segment = directory.join("00000000000000000000.log");
        let Ok(file) = disk.open(&segment, true).await else {
            return;
        };
        if file.write_blocks(0, &[content]).await.is_err()
            || file.truncate(content.len() as u64).await.is_err()
        {
            return;
        }
        drop(file);
        let context = LogContext::new(Rc::new(disk.clone()), 64 << 20, 4);
        let Ok(log) = PartitionLog::open(&context, directory, LogConfig::default(), false).await
        else {
            return;
        };
        let mut next = log.log_start_offset();
        let end = log.high_watermark();
        while next < end {
            let Ok(fetched) = log.read(next, 1 << 20, end).await else {
                return;
            };
            let Some(run) = fetched.runs.first() else {
                panic!("a read inside the log returned nothing at {next}");
            };
            let mut walked = false;
            for (header, _) in storage::record_batch::BatchWalk::new(run) {
                assert!(header.next_offset() > next, "offsets go forward");
                next = header.next_offset();
                walked = true;
            }
            assert!(walked, "a read returned no whole batch");
        }
        assert_eq!(next.max(Offset(0)), end.max(Offset(0)));
    });
});
