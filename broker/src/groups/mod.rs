//! The group coordinator: consumer groups and their committed offsets (DESIGN section 2).
//!
//! A group lives on the shard that owns its `__consumer_offsets` partition, Kafka's
//! `abs(groupId.hashCode()) % partitions`, so FindCoordinator sends each group's members to one
//! core and nothing about a group ever crosses cores. Commits are records in that partition,
//! written through the same durable log as any topic and answered only once they are on disk;
//! on start each shard replays its offsets partitions to rebuild the committed offsets.
//!
//! Membership is kept in memory only, as a single node has no other coordinator to hand it to:
//! after a restart every member gets UNKNOWN_MEMBER_ID at its next heartbeat and rejoins, and
//! resumes from the committed offsets.

pub mod group;
pub mod records;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use storage::{Offset, PartitionLog};
use tracing::{error, info, warn};

use crate::config::GroupSettings;
use crate::error_code::ErrorCode;
use group::Group;
use records::{CommittedOffset, OffsetsRecord};

/// The internal topic holding committed offsets (Kafka's name).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often each shard runs its groups' clocks (session expiry, join and sync deadlines).
/// Session timeouts are seconds; a tenth of a second of lateness is invisible to clients.
pub const GROUP_TICK: Duration = Duration::from_millis(100);

/// Offset commits are written in batches of at most this many bytes, well under the offsets
/// topic's `max.message.bytes`.
const COMMIT_BATCH_BYTES: usize = 256 * 1024;

/// Bytes read per step when replaying an offsets partition at start.
const REPLAY_READ_BYTES: usize = 4 * 1024 * 1024;

/// Kafka's `Utils.abs(groupId.hashCode()) % partitions`: Java's String.hashCode over UTF-16
/// units, so a group lands on the same partition number as it would on Kafka.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let hash = group_id.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions.max(1)
}

/// One record for the offsets log: a topic partition's new committed offset, or `None` to
/// delete it.
pub type OffsetWrite = (String, i32, Option<CommittedOffset>);

/// This shard's groups and the offsets partitions it owns.
pub struct GroupCoordinator {
    pub settings: GroupSettings,
    groups: RefCell<HashMap<String, Group>>,
    logs: RefCell<BTreeMap<i32, Rc<PartitionLog>>>,
}

impl GroupCoordinator {
    pub fn new(settings: GroupSettings) -> GroupCoordinator {
        GroupCoordinator {
            settings,
            groups: RefCell::new(HashMap::new()),
            logs: RefCell::new(BTreeMap::new()),
        }
    }

    /// Runs `action` on the group, creating it (Empty) if `create` and it does not exist.
    pub fn with_group<R>(
        &self,
        group_id: &str,
        create: bool,
        action: impl FnOnce(&mut Group) -> R,
    ) -> Option<R> {
        let mut groups = self.groups.borrow_mut();
        if create && !groups.contains_key(group_id) {
            groups.insert(group_id.to_string(), Group::new());
        }
        groups.get_mut(group_id).map(action)
    }

    /// The groups of this shard, by id, for ListGroups: (id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let mut listed: Vec<_> = self
            .groups
            .borrow()
            .iter()
            .map(|(id, group)| {
                (
                    id.clone(),
                    group.protocol_type().to_string(),
                    group.state().name(),
                )
            })
            .collect();
        listed.sort();
        listed
    }

    /// (groups, members) this shard coordinates, for the metrics.
    pub fn counts(&self) -> (u64, u64) {
        let groups = self.groups.borrow();
        let members = groups
            .values()
            .map(|group| group.member_count() as u64)
            .sum();
        (groups.len() as u64, members)
    }

    /// The offsets log of partition `partition`, if this shard owns it and it is online.
    pub fn log(&self, partition: i32) -> Option<Rc<PartitionLog>> {
        self.logs.borrow().get(&partition).cloned()
    }

    /// Runs every group's clock; forgets groups left with nothing.
    pub fn tick(&self, now: Instant) {
        let mut groups = self.groups.borrow_mut();
        for group in groups.values_mut() {
            group.expire(&self.settings, now);
        }
        groups.retain(|_, group| !group.is_forgettable());
    }

    /// Gives up offsets partition `partition` (another broker leads it now): its groups are
    /// forgotten here, and reloaded by the new leader from the replicated log.
    pub fn unload(&self, partition: i32, partitions: i32) {
        self.logs.borrow_mut().remove(&partition);
        self.groups
            .borrow_mut()
            .retain(|group_id, _| partition_for(group_id, partitions) != partition);
        info!(partition, "offsets partition handed over");
    }

    /// Whether this shard coordinates the groups of `partition` now.
    pub fn holds(&self, partition: i32) -> bool {
        self.logs.borrow().contains_key(&partition)
    }

    /// Takes over offsets partition `partition`: replays its log into the groups it holds.
    pub async fn load(&self, partition: i32, log: Rc<PartitionLog>) {
        let started = Instant::now();
        let mut from = log.log_start_offset();
        let end = log.log_end_offset();
        let mut records = 0usize;
        // A partition whose commits cannot all be read is not served: its groups get
        // COORDINATOR_NOT_AVAILABLE rather than offsets older than those acknowledged.
        let unreadable = |reason: String| {
            error!(
                partition,
                %reason,
                "cannot replay committed offsets; this partition's groups stay unavailable"
            );
        };
        while from < end {
            let runs = match log.read(from, REPLAY_READ_BYTES, end).await {
                Ok(fetched) => fetched.runs,
                Err(error) => return unreadable(error.to_string()),
            };
            let before = from;
            for run in runs {
                for (header, _) in storage::record_batch::BatchWalk::new(&run) {
                    from = from.max(header.next_offset());
                }
                let decoded = match records::read_batches(run) {
                    Ok(decoded) => decoded,
                    Err(reason) => return unreadable(reason),
                };
                for (offset, key, value) in decoded {
                    let Some(key) = key else { continue };
                    match records::decode(&key, value.as_deref()) {
                        Ok(record) => {
                            self.apply_record(record, offset);
                            records += 1;
                        }
                        Err(reason) => return unreadable(format!("offset {offset}: {reason}")),
                    }
                }
            }
            if from == before {
                return unreadable(format!("no progress at offset {from}"));
            }
        }
        self.logs.borrow_mut().insert(partition, log);
        self.groups
            .borrow_mut()
            .retain(|_, group| !group.is_forgettable());
        info!(
            partition,
            records,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "offsets partition loaded"
        );
    }

    fn apply_record(&self, record: OffsetsRecord, log_offset: i64) {
        match record {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                self.with_group(&group, true, |group| {
                    group.apply_offset(topic, partition, value, log_offset)
                });
            }
            OffsetsRecord::GroupMetadata { .. } => {}
        }
    }

    /// Deletes every committed offset of topics that were deleted, as Kafka does, with
    /// tombstones so a topic created again under the same name starts without them.
    /// `log_for` finds a group's offsets log.
    pub async fn forget_topics(
        &self,
        topics: &[String],
        log_for: impl Fn(&str) -> Option<Rc<PartitionLog>>,
    ) {
        let mut doomed: Vec<(String, Vec<OffsetWrite>)> = Vec::new();
        for (group_id, group) in self.groups.borrow().iter() {
            let entries: Vec<_> = group
                .offsets
                .keys()
                .filter(|(topic, _)| topics.contains(topic))
                .map(|(topic, partition)| (topic.clone(), *partition, None))
                .collect();
            if !entries.is_empty() {
                doomed.push((group_id.clone(), entries));
            }
        }
        for (group_id, entries) in doomed {
            let Some(log) = log_for(&group_id) else {
                continue;
            };
            // Not waiting for the ISR: this runs while a metadata change is applied, which
            // the ISR's own changes (a fencing) may be queued behind.
            if let Err(error) = self.write_replicated(&log, &group_id, entries, false).await {
                warn!(group = %group_id, ?error, "cannot delete the offsets of deleted topics");
            }
        }
    }

    /// Deletes, with tombstones, the committed offsets `offsets.retention.minutes` has expired;
    /// a group left with no offsets and no members is forgotten at the next tick.
    pub async fn expire_offsets(
        &self,
        now_ms: i64,
        log_for: impl Fn(&str) -> Option<Rc<PartitionLog>>,
    ) {
        let now = Instant::now();
        let retention = self.settings.offsets_retention;
        let expired: Vec<(String, Vec<OffsetWrite>)> = self
            .groups
            .borrow()
            .iter()
            .filter_map(|(group_id, group)| {
                let entries: Vec<OffsetWrite> = group
                    .expired_offsets(now, now_ms, retention)
                    .into_iter()
                    .map(|(topic, partition)| (topic, partition, None))
                    .collect();
                (!entries.is_empty()).then(|| (group_id.clone(), entries))
            })
            .collect();
        for (group_id, entries) in expired {
            let Some(log) = log_for(&group_id) else {
                continue;
            };
            let count = entries.len();
            match self.write(&log, &group_id, entries).await {
                Ok(()) => {
                    info!(group = %group_id, offsets = count, "expired committed offsets (offsets.retention.minutes)")
                }
                Err(error) => warn!(group = %group_id, ?error, "cannot expire committed offsets"),
            }
        }
        // An empty group left with no offsets is gone, as Kafka removes it: nothing of it is
        // left in the log either once the cleaner has dropped its tombstones.
        let before = self.groups.borrow().len();
        self.groups
            .borrow_mut()
            .retain(|_, group| !group.is_forgettable());
        let removed = before - self.groups.borrow().len();
        if removed > 0 {
            info!(
                groups = removed,
                "removed empty groups whose offsets expired"
            );
        }
    }

    /// Writes records (commits or tombstones) of `group_id` to its offsets partition, waits
    /// until they are durable, then applies them. Returns the error for all of them on failure.
    pub async fn write(
        &self,
        log: &PartitionLog,
        group_id: &str,
        entries: Vec<OffsetWrite>,
    ) -> Result<(), ErrorCode> {
        self.write_replicated(log, group_id, entries, true).await
    }

    /// `write`, waiting for the partition's ISR (`replicated`) or only for this replica's disk.
    async fn write_replicated(
        &self,
        log: &PartitionLog,
        group_id: &str,
        entries: Vec<OffsetWrite>,
        replicated: bool,
    ) -> Result<(), ErrorCode> {
        let now_ms = crate::clock::now_ms();
        let mut written = Vec::with_capacity(entries.len());
        let mut chunk: Vec<(Bytes, Option<Bytes>)> = Vec::new();
        let mut chunk_entries = Vec::new();
        let mut chunk_bytes = 0usize;
        let mut last_offset = None;
        let mut entries = entries.into_iter().peekable();
        while let Some((topic, partition, value)) = entries.next() {
            let key = records::offset_key(group_id, &topic, partition);
            let encoded = value.as_ref().map(records::offset_value);
            chunk_bytes += key.len() + encoded.as_ref().map_or(0, Bytes::len) + 32;
            chunk.push((key, encoded));
            chunk_entries.push((topic, partition, value));
            if chunk_bytes >= COMMIT_BATCH_BYTES || entries.peek().is_none() {
                let batch = records::batch(&chunk, now_ms).map_err(|reason| {
                    warn!(%reason, "cannot build an offsets batch");
                    ErrorCode::UnknownServerError
                })?;
                let info = log.append(&batch).await.map_err(|error| {
                    warn!(%error, "cannot write committed offsets");
                    ErrorCode::CoordinatorNotAvailable
                })?;
                for (index, entry) in chunk_entries.drain(..).enumerate() {
                    written.push((entry, info.base_offset.0 + index as i64));
                }
                last_offset = Some(info.last_offset);
                chunk.clear();
                chunk_bytes = 0;
            }
        }
        if let Some(last) = last_offset {
            log.wait_durable(Offset(last.0 + 1))
                .await
                .map_err(|error| {
                    warn!(%error, "committed offsets did not reach the disk");
                    ErrorCode::CoordinatorNotAvailable
                })?;
            // A replicated offsets partition: on every in-sync replica, as Kafka commits with
            // acks=all (the high watermark is the durable offset with one replica).
            if replicated {
                let waited = shards::task::timeout(
                    self.settings.offsets_commit_timeout,
                    log.wait_high_watermark(Offset(last.0 + 1)),
                )
                .await;
                match waited {
                    Some(Ok(())) => {}
                    Some(Err(error)) => {
                        warn!(%error, "committed offsets did not reach the ISR");
                        return Err(ErrorCode::CoordinatorNotAvailable);
                    }
                    None => return Err(ErrorCode::RequestTimedOut),
                }
            }
        }
        // The partition may have been handed over while the commit waited: the new
        // coordinator replays it from the log; nothing is kept of it here.
        if !self
            .logs
            .borrow()
            .values()
            .any(|held| std::ptr::eq(Rc::as_ptr(held), log))
        {
            return Err(ErrorCode::NotCoordinator);
        }
        for ((topic, partition, value), log_offset) in written {
            self.with_group(group_id, true, |group| {
                group.apply_offset(topic, partition, value, log_offset)
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values computed with Java's `Math.abs("...".hashCode()) % 50`, as Kafka places groups.
    #[test]
    fn groups_land_on_kafkas_partitions() {
        assert_eq!(partition_for("", 50), 0);
        let java_hash = |text: &str| {
            let mut hash: i32 = 0;
            for unit in text.encode_utf16() {
                hash = hash.wrapping_mul(31).wrapping_add(unit as i32);
            }
            hash
        };
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("ab"), 97 * 31 + 98);
        assert_eq!(partition_for("ab", 50), (97 * 31 + 98) % 50);
        // Integer.MIN_VALUE has no absolute value; Kafka's Utils.abs makes it 0.
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for("polygenelubricants", 7), 0);
        // Other negative hashes take their absolute value.
        let negative = (0..1000)
            .map(|n| format!("group-{n}"))
            .find(|name| java_hash(name) < 0)
            .unwrap();
        assert_eq!(partition_for(&negative, 7), java_hash(&negative).abs() % 7);
        // Non-ASCII goes by UTF-16 units, as Java does.
        assert_eq!(partition_for("é", 1000), 233);
    }
}
