//! A partition's recovery point: a durable checkpoint of how far its log is known to be synced
//! (Kafka's recovery-point-offset-checkpoint, kept per partition here).
//!
//! Every byte below the recovery point was covered by a completed `fdatasync`, so after a crash
//! an invalid batch there is corruption (the partition is refused and nothing is cut), while
//! anything invalid above it may be what a power loss left of unsynced writes and is truncated.
//!
//! It also holds the log start offset (Kafka keeps it in log-start-offset-checkpoint): retention
//! and DeleteRecords store it here before they remove a segment or show the new start to a
//! client, so after a crash the log start is never below one that was acted on.
//!
//! Two slot files alternate (`recovery-point.0`, `.1`), each one checksummed envelope holding a
//! sequence number: a write is in place and synced, and whatever a crash does to the slot being
//! written, the other one still holds the previous recovery point. The newest valid slot wins.

use std::path::{Path, PathBuf};

use crate::io::{read_small_file, write_small_file, Disk, IoError};
use crate::Offset;

const MAGIC: &[u8; 4] = b"KRPT";
/// Version 2 added the log start; version 1 files (32-byte payloads) still open, with none.
const VERSION: u16 = 2;
const VERSION_1: u16 = 1;
const SLOTS: [&str; 2] = ["recovery-point.0", "recovery-point.1"];
const PAYLOAD_BYTES: usize = 40;
const PAYLOAD_BYTES_V1: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryPoint {
    pub sequence: u64,
    /// Every batch below this offset is synced.
    pub offset: Offset,
    /// The segment that holds `offset` and the byte position of `offset` in it.
    pub segment_base: Offset,
    pub position: u64,
    /// Nothing below this offset may be read: the log start, which only moves forward. 0 in
    /// a log that never moved it (the first segment's base then is the start).
    pub log_start: Offset,
}

impl RecoveryPoint {
    fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(PAYLOAD_BYTES);
        payload.extend_from_slice(&self.sequence.to_be_bytes());
        payload.extend_from_slice(&self.offset.0.to_be_bytes());
        payload.extend_from_slice(&self.segment_base.0.to_be_bytes());
        payload.extend_from_slice(&self.position.to_be_bytes());
        payload.extend_from_slice(&self.log_start.0.to_be_bytes());
        crate::envelope::seal(MAGIC, VERSION, &payload)
    }

    fn decode(file: &[u8]) -> Option<RecoveryPoint> {
        let payload = match crate::envelope::open(file, MAGIC, VERSION) {
            Some(payload) if payload.len() == PAYLOAD_BYTES => payload,
            Some(_) => return None,
            None => crate::envelope::open(file, MAGIC, VERSION_1)
                .filter(|payload| payload.len() == PAYLOAD_BYTES_V1)?,
        };
        let field =
            |index: usize| -> Option<[u8; 8]> { payload[index * 8..index * 8 + 8].try_into().ok() };
        let point = RecoveryPoint {
            sequence: u64::from_be_bytes(field(0)?),
            offset: Offset(i64::from_be_bytes(field(1)?)),
            segment_base: Offset(i64::from_be_bytes(field(2)?)),
            position: u64::from_be_bytes(field(3)?),
            log_start: match payload.len() {
                PAYLOAD_BYTES => Offset(i64::from_be_bytes(field(4)?)),
                _ => Offset(0),
            },
        };
        (point.offset >= point.segment_base && point.segment_base.0 >= 0 && point.log_start.0 >= 0)
            .then_some(point)
    }
}

pub(crate) fn decode_for_fuzzing(bytes: &[u8]) {
    let _ = RecoveryPoint::decode(bytes);
}

fn slot_path(directory: &Path, sequence: u64) -> PathBuf {
    directory.join(SLOTS[(sequence % 2) as usize])
}

/// The newest valid recovery point of the partition in `directory`, if any slot holds one.
pub(crate) async fn load(
    disk: &dyn Disk,
    directory: &Path,
) -> Result<Option<RecoveryPoint>, IoError> {
    let mut newest: Option<RecoveryPoint> = None;
    for slot in SLOTS {
        let Some(bytes) = read_small_file(disk, &directory.join(slot), 4096).await? else {
            continue;
        };
        if let Some(point) = RecoveryPoint::decode(&bytes) {
            if newest.is_none_or(|known| point.sequence > known.sequence) {
                newest = Some(point);
            }
        }
    }
    Ok(newest)
}

/// Writes `point` durably into the slot its sequence number selects.
pub(crate) async fn store(
    disk: &dyn Disk,
    directory: &Path,
    point: &RecoveryPoint,
) -> Result<(), IoError> {
    write_small_file(
        disk,
        directory,
        &slot_path(directory, point.sequence),
        &point.encode(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_round_trip_and_damage_is_refused() {
        let point = RecoveryPoint {
            sequence: 9,
            offset: Offset(1234),
            segment_base: Offset(1000),
            position: 8192,
            log_start: Offset(700),
        };
        let bytes = point.encode();
        assert_eq!(RecoveryPoint::decode(&bytes), Some(point));
        for position in 0..bytes.len() {
            if (6..8).contains(&position) {
                continue; // the envelope's reserved bytes
            }
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x20;
            assert_eq!(RecoveryPoint::decode(&damaged), None, "byte {position}");
        }
    }

    #[test]
    fn version_1_points_open_with_no_log_start() {
        let mut payload = Vec::new();
        for field in [4u64, 120, 100, 4096] {
            payload.extend_from_slice(&field.to_be_bytes());
        }
        let file = crate::envelope::seal(MAGIC, VERSION_1, &payload);
        assert_eq!(
            RecoveryPoint::decode(&file),
            Some(RecoveryPoint {
                sequence: 4,
                offset: Offset(120),
                segment_base: Offset(100),
                position: 4096,
                log_start: Offset(0),
            })
        );
        // A version 2 header on a version 1 payload is damage, not an old file.
        let file = crate::envelope::seal(MAGIC, VERSION, &payload);
        assert_eq!(RecoveryPoint::decode(&file), None);
    }

    #[test]
    fn a_negative_log_start_is_refused() {
        let point = RecoveryPoint {
            sequence: 1,
            offset: Offset(10),
            segment_base: Offset(0),
            position: 100,
            log_start: Offset(-1),
        };
        assert_eq!(RecoveryPoint::decode(&point.encode()), None);
    }

    #[test]
    fn the_newest_valid_slot_wins_and_a_torn_slot_falls_back_to_the_other() {
        futures_lite::future::block_on(async {
            let disk = crate::sim::SimDisk::new(5);
            let directory = Path::new("/p");
            disk.create_dir_all(directory).await.unwrap();
            assert_eq!(load(&disk, directory).await.unwrap(), None);
            for sequence in 1..=3 {
                let point = RecoveryPoint {
                    sequence,
                    offset: Offset(sequence as i64 * 10),
                    segment_base: Offset(0),
                    position: sequence * 100,
                    log_start: Offset(sequence as i64),
                };
                store(&disk, directory, &point).await.unwrap();
            }
            assert_eq!(
                load(&disk, directory)
                    .await
                    .unwrap()
                    .map(|point| point.sequence),
                Some(3)
            );
            // Damage the newest slot: the previous point is still there.
            assert!(disk.corrupt_byte(&slot_path(directory, 3), 20));
            assert_eq!(
                load(&disk, directory)
                    .await
                    .unwrap()
                    .map(|point| point.sequence),
                Some(2)
            );
        });
    }
}
