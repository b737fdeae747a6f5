//! The leader epoch cache (Kafka's `leader-epoch-checkpoint`, KIP-101/KIP-279): for each leader
//! epoch the log's batches carry, the offset of its first batch. A leader answers
//! OffsetForLeaderEpoch from it, and a follower truncates by that answer before it fetches
//! from a new leader, so no follower keeps records its new leader does not have.
//!
//! An entry is stored (synced) before the first batch of its epoch is appended, so the file
//! always covers the log; entries past the log's end (their batch never became durable) are
//! dropped at open. Two slots take turns, as the recovery point's do, so a torn write leaves the
//! previous content readable. A log from before the cache has only epoch-0 batches.

use std::path::{Path, PathBuf};

use crate::envelope;
use crate::io::{read_small_file, write_small_file, Disk, IoError};
use crate::Offset;

const MAGIC: &[u8; 4] = b"KLEP";
const VERSION: u16 = 1;
/// Epochs kept: one per leader change; the oldest go first past this.
const ENTRIES_MAX: usize = 4096;
const FILE_BYTES_MAX: usize = 8 + 4 + ENTRIES_MAX * 12 + 64;

fn slot_path(directory: &Path, sequence: u64) -> PathBuf {
    directory.join(format!("leader-epoch-checkpoint-{}", sequence % 2))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct EpochCache {
    /// (epoch, first offset), both increasing.
    entries: Vec<(i32, Offset)>,
    sequence: u64,
    /// Both slots exist and neither reads (damage): which epochs the batches carry is not
    /// known. Nothing is answered from it or added to it (a follower's log starts over).
    unknown: bool,
}

impl EpochCache {
    fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(12 + self.entries.len() * 12);
        payload.extend_from_slice(&self.sequence.to_be_bytes());
        payload.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for (epoch, start) in &self.entries {
            payload.extend_from_slice(&epoch.to_be_bytes());
            payload.extend_from_slice(&start.0.to_be_bytes());
        }
        envelope::seal(MAGIC, VERSION, &payload)
    }

    fn decode(file: &[u8]) -> Option<EpochCache> {
        let payload = envelope::open(file, MAGIC, VERSION)?;
        let sequence = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
        let count = u32::from_be_bytes(payload.get(8..12)?.try_into().ok()?) as usize;
        if count > ENTRIES_MAX || payload.len() != 12 + count * 12 {
            return None;
        }
        let mut entries = Vec::with_capacity(count);
        for entry in payload[12..].chunks_exact(12) {
            let epoch = i32::from_be_bytes(entry[..4].try_into().ok()?);
            let start = Offset(i64::from_be_bytes(entry[4..].try_into().ok()?));
            if let Some((last_epoch, last_start)) = entries.last() {
                if epoch <= *last_epoch || start < *last_start {
                    return None;
                }
            }
            entries.push((epoch, start));
        }
        Some(EpochCache {
            entries,
            sequence,
            unknown: false,
        })
    }

    /// The cache stored in `directory`, fitted to a log of `log_start..log_end`.
    pub(super) async fn load(
        disk: &dyn Disk,
        directory: &Path,
        log_start: Offset,
        log_end: Offset,
    ) -> Result<EpochCache, IoError> {
        let mut best: Option<EpochCache> = None;
        let mut found = false;
        for slot in 0..2 {
            let path = slot_path(directory, slot);
            if let Some(file) = read_small_file(disk, &path, FILE_BYTES_MAX).await? {
                found = true;
                if let Some(cache) = EpochCache::decode(&file) {
                    if best
                        .as_ref()
                        .is_none_or(|best| cache.sequence > best.sequence)
                    {
                        best = Some(cache);
                    }
                }
            }
        }
        let mut cache = match best {
            Some(cache) => cache,
            None if found && log_end > log_start => {
                tracing::warn!(
                    directory = %directory.display(),
                    "the leader epoch cache cannot be read; this log answers no epoch"
                );
                EpochCache {
                    entries: Vec::new(),
                    sequence: 2,
                    unknown: true,
                }
            }
            // No cache: a log from before it, whose batches all carry epoch 0.
            None if log_end > log_start => EpochCache {
                entries: vec![(0, log_start)],
                sequence: 0,
                unknown: false,
            },
            None => EpochCache::default(),
        };
        cache.entries.retain(|(_, start)| *start < log_end);
        Ok(cache)
    }

    async fn store(&mut self, disk: &dyn Disk, directory: &Path) -> Result<(), IoError> {
        self.sequence += 1;
        write_small_file(
            disk,
            directory,
            &slot_path(directory, self.sequence),
            &self.encode(),
        )
        .await
    }

    pub(super) fn latest(&self) -> Option<i32> {
        self.entries.last().map(|(epoch, _)| *epoch)
    }

    pub(super) fn is_known(&self) -> bool {
        !self.unknown
    }

    /// Whether a batch of `epoch` at `start` needs an entry first (its epoch is newer than
    /// every one the log holds).
    pub(super) fn needs(&self, epoch: i32) -> bool {
        !self.unknown && self.latest().is_none_or(|latest| epoch > latest)
    }

    /// Records that `epoch` starts at `start`, durably.
    pub(super) async fn push(
        &mut self,
        disk: &dyn Disk,
        directory: &Path,
        epoch: i32,
        start: Offset,
    ) -> Result<(), IoError> {
        let mut next = self.clone();
        next.entries.retain(|(_, from)| *from < start);
        next.entries.push((epoch, start));
        if next.entries.len() > ENTRIES_MAX {
            next.entries.remove(0);
        }
        next.store(disk, directory).await?;
        *self = next;
        Ok(())
    }

    /// Forgets the epochs that start at or after `end` (the log was truncated there), durably.
    pub(super) async fn truncate_from(
        &mut self,
        disk: &dyn Disk,
        directory: &Path,
        end: Offset,
    ) -> Result<(), IoError> {
        if self.unknown || self.entries.iter().all(|(_, start)| *start < end) {
            return Ok(());
        }
        let mut next = self.clone();
        next.entries.retain(|(_, start)| *start < end);
        next.store(disk, directory).await?;
        *self = next;
        Ok(())
    }

    /// Empties the cache, durably, for a log that holds no batch any more (known again).
    pub(super) async fn reset(&mut self, disk: &dyn Disk, directory: &Path) -> Result<(), IoError> {
        let mut next = EpochCache {
            entries: Vec::new(),
            sequence: self.sequence.max(2),
            unknown: false,
        };
        next.store(disk, directory).await?;
        // Both slots: an unreadable one left behind would make the cache unknown again.
        next.store(disk, directory).await?;
        *self = next;
        Ok(())
    }

    /// Kafka's answer to OffsetForLeaderEpoch for `requested` (its
    /// `LeaderEpochFileCache.endOffsetFor`): the newest epoch is answered with the log's end;
    /// an older one with the largest epoch the log holds that is not newer (or `requested`
    /// itself, if the log holds none that old) and where the next epoch starts; `None`
    /// (undefined) for a negative epoch or one newer than every epoch the log holds.
    pub(super) fn end_offset_for(&self, requested: i32, log_end: Offset) -> Option<(i32, Offset)> {
        if requested < 0 || self.unknown {
            return None;
        }
        if self.latest() == Some(requested) {
            return Some((requested, log_end));
        }
        let higher = self
            .entries
            .iter()
            .position(|(epoch, _)| *epoch > requested)?;
        let start = self.entries[higher].1;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.entries[floor].0, start)),
            None => Some((requested, start)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        EpochCache {
            entries: entries
                .iter()
                .map(|(epoch, start)| (*epoch, Offset(*start)))
                .collect(),
            sequence: 3,
            unknown: false,
        }
    }

    #[test]
    fn entries_round_trip_and_damage_or_disorder_is_refused() {
        let stored = cache(&[(0, 0), (2, 40), (5, 90)]);
        let file = stored.encode();
        assert_eq!(EpochCache::decode(&file), Some(stored));
        let mut damaged = file.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(EpochCache::decode(&damaged), None);
        let disordered = cache(&[(2, 40), (1, 50)]).encode();
        assert_eq!(EpochCache::decode(&disordered), None);
    }

    /// Kafka's rule: the end of an epoch is the start of the next one the log holds; an
    /// epoch the log never had answers for the one before it; the newest ends at the log end.
    #[test]
    fn the_end_of_an_epoch_is_where_the_next_one_starts() {
        let epochs = cache(&[(0, 0), (2, 40), (5, 90)]);
        let end = Offset(120);
        assert_eq!(epochs.end_offset_for(0, end), Some((0, Offset(40))));
        assert_eq!(epochs.end_offset_for(1, end), Some((0, Offset(40))));
        assert_eq!(epochs.end_offset_for(2, end), Some((2, Offset(90))));
        assert_eq!(epochs.end_offset_for(4, end), Some((2, Offset(90))));
        assert_eq!(epochs.end_offset_for(5, end), Some((5, end)));
        assert_eq!(epochs.end_offset_for(9, end), None, "newer than any");
        assert_eq!(epochs.end_offset_for(-1, end), None);
        assert_eq!(
            cache(&[(3, 10)]).end_offset_for(2, end),
            Some((2, Offset(10))),
            "older than any: where the first starts"
        );
        assert!(epochs.needs(6));
        assert!(!epochs.needs(5));
        assert!(EpochCache::default().needs(0));
    }
}
