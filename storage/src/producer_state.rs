//! Idempotent-producer state of one partition (KIP-98): for each producer id, its epoch and the
//! sequence ranges and offsets of its last five batches.
//!
//! Owned by the partition's log on its shard and updated in the same step that assigns offsets,
//! so a check and the append it allows cannot interleave with another append. Durable through
//! snapshots written at segment roll plus a replay of the log after the newest snapshot: a batch
//! acknowledged just before a crash is found again, so the client's retry after the restart is
//! recognised as a duplicate. Designed to be extended with transaction state (the entry is the
//! place for an ongoing transaction's first offset).
//!
//! Rules, as Kafka applies them to client appends: an older epoch is `INVALID_PRODUCER_EPOCH`;
//! a newer epoch must start at sequence 0; within an epoch, a batch equal to one of the last
//! five is a duplicate (answered with its original offsets, not written), and any other batch
//! must continue the sequence exactly (wrapping after `i32::MAX`) or it is
//! `OUT_OF_ORDER_SEQUENCE_NUMBER`. A producer the partition has no state for may start at 0 only;
//! any other sequence is `UNKNOWN_PRODUCER_ID`, which makes librdkafka and the Java client bump
//! their epoch (KIP-360) and start over at 0, as Kafka 3.x does.

use std::collections::HashMap;

use rkyv::{Archive, Deserialize, Serialize};

use crate::record_batch::BatchHeader;
use crate::Offset;

/// Batches remembered per producer: clients keep at most five requests in flight per partition
/// with idempotence, so a retry always repeats one of the last five.
pub const PRODUCER_WINDOW_BATCHES: usize = 5;

/// One remembered batch of a producer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRecord {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    /// Oldest first, at most `PRODUCER_WINDOW_BATCHES`, never empty.
    pub batches: Vec<BatchRecord>,
    /// The newest batch's max timestamp (what DescribeProducers reports).
    pub last_timestamp: i64,
    /// The broker's clock at the newest append (or at the replay that found it after a
    /// restart), which `producer.id.expiration.ms` counts from. Batch timestamps are the
    /// client's and can be arbitrarily old, so they cannot decide expiry.
    pub last_append_ms: i64,
}

impl ProducerEntry {
    pub fn last_sequence(&self) -> i32 {
        self.batches.last().map_or(-1, |batch| batch.last_sequence)
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// Every batch below this offset is reflected in `producers`.
    offset: i64,
    producers: Vec<ProducerEntry>,
}

/// Why a batch of an idempotent producer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("producer {producer_id}: sequence {found} where {expected} was expected")]
    OutOfOrder {
        producer_id: i64,
        found: i32,
        expected: i32,
    },
    #[error(
        "producer {producer_id} is unknown to this partition and sent sequence {found}, not 0"
    )]
    UnknownProducer { producer_id: i64, found: i32 },
    #[error("invalid producer fields: {reason}")]
    InvalidFields { reason: &'static str },
}

/// What to do with a batch that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    Append,
    /// A retry of a batch already in the log: answer with these offsets, write nothing.
    Duplicate(BatchRecord),
}

/// `sequence + increment`, wrapping to 0 after `i32::MAX` as Kafka's sequences do.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"KPSN";
const SNAPSHOT_VERSION: u16 = 1;

impl ProducerStateTable {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &ProducerEntry> {
        self.producers.values()
    }

    fn live_entry(
        &self,
        producer_id: i64,
        now_ms: i64,
        expiration_ms: i64,
    ) -> Option<&ProducerEntry> {
        self.producers
            .get(&producer_id)
            .filter(|entry| now_ms.saturating_sub(entry.last_append_ms) <= expiration_ms)
    }

    /// Checks a produced batch against the producer's state. Batches without a producer id are
    /// not idempotent and always pass.
    pub fn check(
        &self,
        header: &BatchHeader,
        now_ms: i64,
        expiration_ms: i64,
    ) -> Result<SequenceCheck, ProducerError> {
        if !header.has_producer_id() {
            return Ok(SequenceCheck::Append);
        }
        if header.producer_epoch < 0 {
            return Err(ProducerError::InvalidFields {
                reason: "a batch with a producer id has a negative producer epoch",
            });
        }
        if header.base_sequence < 0 {
            return Err(ProducerError::InvalidFields {
                reason: "a batch with a producer id has a negative base sequence",
            });
        }
        let producer_id = header.producer_id;
        let first = header.base_sequence;
        let last = increment_sequence(first, header.last_offset_delta);
        let Some(entry) = self.live_entry(producer_id, now_ms, expiration_ms) else {
            return if first == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ProducerError::UnknownProducer {
                    producer_id,
                    found: first,
                })
            };
        };
        if header.producer_epoch < entry.epoch {
            return Err(ProducerError::InvalidEpoch {
                producer_id,
                epoch: header.producer_epoch,
                current: entry.epoch,
            });
        }
        if header.producer_epoch > entry.epoch {
            return if first == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ProducerError::OutOfOrder {
                    producer_id,
                    found: first,
                    expected: 0,
                })
            };
        }
        if let Some(duplicate) = entry
            .batches
            .iter()
            .find(|batch| batch.first_sequence == first && batch.last_sequence == last)
        {
            return Ok(SequenceCheck::Duplicate(*duplicate));
        }
        let expected = increment_sequence(entry.last_sequence(), 1);
        if first != expected {
            return Err(ProducerError::OutOfOrder {
                producer_id,
                found: first,
                expected,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch now in the log (with its assigned offsets) at broker time `now_ms`. Used
    /// after a checked append and when replaying the log on recovery.
    pub fn record(&mut self, header: &BatchHeader, now_ms: i64) {
        if !header.has_producer_id() {
            return;
        }
        let record = BatchRecord {
            first_sequence: header.base_sequence,
            last_sequence: increment_sequence(header.base_sequence, header.last_offset_delta),
            base_offset: header.base_offset.0,
            last_offset: header.last_offset().0,
            max_timestamp: header.max_timestamp,
        };
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                batches: Vec::with_capacity(PRODUCER_WINDOW_BATCHES),
                last_timestamp: header.max_timestamp,
                last_append_ms: now_ms,
            });
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == PRODUCER_WINDOW_BATCHES {
            entry.batches.remove(0);
        }
        entry.batches.push(record);
        entry.last_timestamp = entry.last_timestamp.max(header.max_timestamp);
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
    }

    /// Forgets producers silent for longer than `producer.id.expiration.ms`.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers
            .retain(|_, entry| now_ms.saturating_sub(entry.last_append_ms) <= expiration_ms);
    }

    /// The snapshot file content for the state covering every batch below `offset`: a header
    /// (magic, version, reserved, payload length, CRC-32C of the payload), then rkyv.
    pub fn snapshot_bytes(&self, offset: Offset) -> Vec<u8> {
        let mut producers: Vec<ProducerEntry> = self.producers.values().cloned().collect();
        producers.sort_by_key(|entry| entry.producer_id);
        let snapshot = Snapshot {
            offset: offset.0,
            producers,
        };
        let payload = match rkyv::to_bytes::<rkyv::rancor::Error>(&snapshot) {
            Ok(payload) => payload,
            Err(_) => unreachable!("plain integers and vectors always serialize"),
        };
        crate::envelope::seal(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, &payload)
    }

    /// Reads a snapshot file; `None` unless magic, version, length and CRC all check out.
    pub fn from_snapshot(bytes: &[u8]) -> Option<(Offset, ProducerStateTable)> {
        let payload = crate::envelope::open(bytes, SNAPSHOT_MAGIC, SNAPSHOT_VERSION)?;
        // rkyv reads from aligned memory; the file's bytes carry no alignment guarantee.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        let snapshot = rkyv::from_bytes::<Snapshot, rkyv::rancor::Error>(&aligned).ok()?;
        let producers = snapshot
            .producers
            .into_iter()
            .filter(|entry| {
                !entry.batches.is_empty() && entry.batches.len() <= PRODUCER_WINDOW_BATCHES
            })
            .map(|entry| (entry.producer_id, entry))
            .collect();
        Some((Offset(snapshot.offset), ProducerStateTable { producers }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_batch::{
        BASE_OFFSET_AT, BASE_SEQUENCE_AT, PRODUCER_EPOCH_AT, PRODUCER_ID_AT,
    };

    const DAY_MS: i64 = 86_400_000;

    /// A header of a `count`-record batch from producer `id` at `epoch`, sequence `first`,
    /// stored at `offset`, stamped `timestamp`.
    fn batch(
        id: i64,
        epoch: i16,
        first: i32,
        count: i32,
        offset: i64,
        timestamp: i64,
    ) -> BatchHeader {
        let mut bytes = crate::record_batch::build_uncompressed_batch(count, 1, timestamp);
        bytes[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&id.to_be_bytes());
        bytes[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&epoch.to_be_bytes());
        bytes[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&first.to_be_bytes());
        bytes[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&offset.to_be_bytes());
        BatchHeader::parse(&bytes).unwrap()
    }

    fn append(
        table: &mut ProducerStateTable,
        header: &BatchHeader,
    ) -> Result<SequenceCheck, ProducerError> {
        let outcome = table.check(header, header.max_timestamp, DAY_MS)?;
        if outcome == SequenceCheck::Append {
            table.record(header, header.max_timestamp);
        }
        Ok(outcome)
    }

    #[test]
    fn retries_of_the_last_five_batches_are_duplicates_with_their_offsets() {
        let mut table = ProducerStateTable::default();
        for index in 0..7 {
            let header = batch(9, 0, index * 2, 2, 100 + i64::from(index) * 2, 1_000);
            assert_eq!(append(&mut table, &header), Ok(SequenceCheck::Append));
        }
        // Batches 2..=6 are remembered; batch 6 starts at sequence 12, offset 112.
        match append(&mut table, &batch(9, 0, 12, 2, 999, 1_000)) {
            Ok(SequenceCheck::Duplicate(original)) => {
                assert_eq!(original.base_offset, 112);
                assert_eq!(original.last_offset, 113);
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert!(matches!(
            append(&mut table, &batch(9, 0, 4, 2, 999, 1_000)),
            Ok(SequenceCheck::Duplicate(_))
        ));
        // Batch 0 fell out of the window: no longer recognised, and out of order.
        assert_eq!(
            append(&mut table, &batch(9, 0, 0, 2, 999, 1_000)),
            Err(ProducerError::OutOfOrder {
                producer_id: 9,
                found: 0,
                expected: 14
            })
        );
    }

    #[test]
    fn gaps_and_overlaps_are_out_of_order() {
        let mut table = ProducerStateTable::default();
        append(&mut table, &batch(1, 0, 0, 3, 0, 1_000)).unwrap();
        assert_eq!(
            append(&mut table, &batch(1, 0, 4, 1, 3, 1_000)),
            Err(ProducerError::OutOfOrder {
                producer_id: 1,
                found: 4,
                expected: 3
            })
        );
        assert!(append(&mut table, &batch(1, 0, 1, 3, 3, 1_000)).is_err());
        assert_eq!(
            append(&mut table, &batch(1, 0, 3, 1, 3, 1_000)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn epochs_fence_older_producers_and_restart_sequences() {
        let mut table = ProducerStateTable::default();
        append(&mut table, &batch(5, 3, 0, 10, 0, 1_000)).unwrap();
        assert_eq!(
            append(&mut table, &batch(5, 2, 10, 1, 10, 1_000)),
            Err(ProducerError::InvalidEpoch {
                producer_id: 5,
                epoch: 2,
                current: 3
            })
        );
        assert_eq!(
            append(&mut table, &batch(5, 4, 10, 1, 10, 1_000)),
            Err(ProducerError::OutOfOrder {
                producer_id: 5,
                found: 10,
                expected: 0
            })
        );
        // The KIP-360 bump: new epoch, sequence 0.
        assert_eq!(
            append(&mut table, &batch(5, 4, 0, 1, 10, 1_000)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(table.entries().next().unwrap().epoch, 4);
        // The old epoch is now fenced.
        assert!(matches!(
            append(&mut table, &batch(5, 3, 10, 1, 11, 1_000)),
            Err(ProducerError::InvalidEpoch { .. })
        ));
    }

    #[test]
    fn unknown_producers_start_at_zero_and_bad_fields_are_refused() {
        let table = ProducerStateTable::default();
        assert_eq!(
            table.check(&batch(77, 0, 5, 1, 0, 1_000), 1_000, DAY_MS),
            Err(ProducerError::UnknownProducer {
                producer_id: 77,
                found: 5
            })
        );
        assert!(matches!(
            table.check(&batch(77, -1, 0, 1, 0, 1_000), 1_000, DAY_MS),
            Err(ProducerError::InvalidFields { .. })
        ));
        assert!(matches!(
            table.check(&batch(77, 0, -3, 1, 0, 1_000), 1_000, DAY_MS),
            Err(ProducerError::InvalidFields { .. })
        ));
        // Not idempotent at all: always appended.
        assert_eq!(
            table.check(&batch(-1, -1, -1, 1, 0, 1_000), 1_000, DAY_MS),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        let mut table = ProducerStateTable::default();
        append(&mut table, &batch(2, 0, 0, 1, 0, 1_000)).unwrap();
        table.producers.get_mut(&2).unwrap().batches[0].last_sequence = i32::MAX - 1;
        assert_eq!(
            append(&mut table, &batch(2, 0, i32::MAX, 2, 1, 1_000)),
            Ok(SequenceCheck::Append)
        );
        assert_eq!(table.entries().next().unwrap().last_sequence(), 0);
        assert_eq!(
            append(&mut table, &batch(2, 0, 1, 1, 3, 1_000)),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn expiry_follows_the_broker_clock_not_batch_timestamps() {
        let mut table = ProducerStateTable::default();
        // A client stamping records three years in the past is still live right after appending.
        table.record(&batch(4, 0, 0, 1, 0, 1_000), 100 * DAY_MS);
        assert_eq!(
            table.check(&batch(4, 0, 1, 1, 1, 1_000), 100 * DAY_MS + 5, DAY_MS),
            Ok(SequenceCheck::Append)
        );
    }

    #[test]
    fn silent_producers_expire() {
        let mut table = ProducerStateTable::default();
        append(&mut table, &batch(3, 0, 0, 1, 0, 1_000)).unwrap();
        let later = 1_000 + DAY_MS + 1;
        assert!(matches!(
            table.check(&batch(3, 0, 1, 1, 1, later), later, DAY_MS),
            Err(ProducerError::UnknownProducer { .. })
        ));
        table.expire(later, DAY_MS);
        assert!(table.is_empty());
    }

    #[test]
    fn snapshots_round_trip_and_reject_damage() {
        let mut table = ProducerStateTable::default();
        for id in 0..20 {
            for index in 0..7 {
                table.record(
                    &batch(id, 1, index, 1, id * 100 + i64::from(index), 5_000),
                    9_000,
                );
            }
        }
        let bytes = table.snapshot_bytes(Offset(4242));
        let (offset, restored) = ProducerStateTable::from_snapshot(&bytes).unwrap();
        assert_eq!(offset, Offset(4242));
        assert_eq!(restored.producers, table.producers);
        for position in [0, 5, 13, 20, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x10;
            assert!(
                ProducerStateTable::from_snapshot(&damaged).is_none(),
                "byte {position}"
            );
        }
        assert!(ProducerStateTable::from_snapshot(&bytes[..bytes.len() - 1]).is_none());
    }
}
