//! The controller quorum: raft-rs (`RawNode`) driven on shard 0, its log the metadata log.
//!
//! Every metadata change the controller makes is a log entry. It takes effect (is published
//! to the shards) only once it is committed: durable on this node's disk and, with other
//! voters, on a majority of theirs. The cluster metadata is the state machine. A snapshot of it
//! replaces the log it covers every `metadata.log.max.record.bytes.between.snapshots` bytes or
//! `metadata.log.max.snapshot.interval.ms`, as in KRaft.
//!
//! Today the quorum has one voter, this node: it elects itself at open and commits an entry as
//! soon as the entry is on disk, so no timer runs and no message leaves the process. The
//! driver's shape (Ready, persist, advance) is the one other voters will use; see CLUSTER.md.

pub mod store;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType};
use raft::{Config, RawNode, StateRole};
use tracing::{info, warn};

use super::metadata::{ClusterMetadata, MetadataChange, METADATA_DIRECTORY};
use store::{DurableLog, QuorumStore};

/// Raft ids cannot be 0 (raft-rs's `INVALID_ID`) and `node.id` can: node n is voter n + 1.
pub fn raft_id(node_id: i32) -> u64 {
    u64::from(node_id.unsigned_abs()) + 1
}

/// When the log is replaced by a snapshot of the metadata (Kafka's settings, same names).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotPolicy {
    /// `metadata.log.max.record.bytes.between.snapshots`
    pub max_bytes: u64,
    /// `metadata.log.max.snapshot.interval.ms`; `None` for 0 (no time-based snapshots).
    pub max_interval: Option<Duration>,
}

/// raft-rs logs through `slog`; its records go to `tracing` with their key-value pairs.
struct TracingDrain;

struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        use slog::KV;
        let mut pairs = Pairs(String::new());
        let _ = record.kv().serialize(record, &mut pairs);
        let _ = values.serialize(record, &mut pairs);
        let message = record.msg();
        let pairs = pairs.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{message}{pairs}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{message}{pairs}"),
            slog::Level::Info => tracing::info!(target: "raft", "{message}{pairs}"),
            slog::Level::Debug => tracing::debug!(target: "raft", "{message}{pairs}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{message}{pairs}"),
        }
        Ok(())
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

/// The quorum on shard 0.
pub struct Quorum {
    node: RefCell<RawNode<QuorumStore>>,
    store: QuorumStore,
    durable: Arc<Mutex<DurableLog>>,
    /// One Ready at a time: raft-rs needs each handled and advanced before the next.
    driving: async_lock::Mutex<()>,
    /// The index of the last entry applied to the state machine.
    applied: Cell<u64>,
    last_snapshot: Cell<Instant>,
    policy: SnapshotPolicy,
    directory: PathBuf,
}

/// One voter's place in the log, as the leader tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterStatus {
    pub node_id: i32,
    /// The index after its last entry (Kafka's log end offset: index i is offset i - 1).
    pub log_end: u64,
    /// When it last fetched and was last caught up, in ms since the epoch; -1 if unknown.
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

/// The quorum as DescribeQuorum reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumStatus {
    /// The leader's node id, if there is one.
    pub leader: Option<i32>,
    pub term: u64,
    /// The commit index (Kafka's high watermark: every offset below it is committed).
    pub high_watermark: u64,
    pub voters: Vec<VoterStatus>,
}

/// What `Quorum::open` found.
pub struct Opened {
    pub quorum: Quorum,
    /// The state machine at the last committed entry.
    pub metadata: ClusterMetadata,
    /// The log was created by this open (from `import`, or empty).
    pub created: bool,
}

fn decode_change(entry: &Entry) -> Result<Option<MetadataChange>, String> {
    if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
        // A new leader's empty entry, or (with other voters) a configuration change.
        return Ok(None);
    }
    serde_json::from_slice(&entry.data)
        .map(Some)
        .map_err(|error| format!("metadata log entry {} is unreadable: {error}", entry.index))
}

impl Quorum {
    /// Opens the metadata log under `data_dir` (creating it, as a quorum of this node alone,
    /// from `import` or empty) and replays it onto its snapshot.
    pub async fn open(
        data_dir: &Path,
        node_id: i32,
        import: Option<ClusterMetadata>,
        policy: SnapshotPolicy,
    ) -> Result<Opened, String> {
        let directory = data_dir.join(METADATA_DIRECTORY);
        let id = raft_id(node_id);
        let initial = import.unwrap_or_default();
        let initial_bytes = serde_json::to_vec(&initial).map_err(|error| error.to_string())?;
        let opened = {
            let directory = directory.clone();
            shards::task::spawn_blocking(move || {
                store::open(&directory, || (vec![id], Bytes::from(initial_bytes)))
            })
            .await
        };
        let (created, loaded, durable) = opened.map_err(|error| error.to_string())?;
        let store = QuorumStore::from(loaded);

        let voters = store.conf_state().voters;
        if !voters.contains(&id) {
            let nodes: Vec<String> = voters
                .iter()
                .map(|voter| (voter.saturating_sub(1)).to_string())
                .collect();
            return Err(format!(
                "the metadata log in {} belongs to a quorum of node(s) {}, and this node is \
                 node.id {node_id}; start it with its own node.id or its own data directory",
                directory.display(),
                nodes.join(", ")
            ));
        }
        let mut metadata: ClusterMetadata = serde_json::from_slice(&store.snapshot_data())
            .map_err(|error| {
                format!(
                    "the metadata snapshot in {} is unreadable: {error}",
                    directory.display()
                )
            })?;
        let replayed = store.committed_entries();
        for entry in &replayed {
            if let Some(change) = decode_change(entry)? {
                metadata.apply(&change);
            }
        }
        let applied = store.hard_state().commit.max(store.snapshot_metadata().0);

        let config = Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        config.validate().map_err(|error| error.to_string())?;
        let node = RawNode::new(&config, store.clone(), &logger())
            .map_err(|error| format!("starting the controller quorum: {error}"))?;
        let quorum = Quorum {
            node: RefCell::new(node),
            store,
            durable: Arc::new(Mutex::new(durable)),
            driving: async_lock::Mutex::new(()),
            applied: Cell::new(applied),
            last_snapshot: Cell::new(Instant::now()),
            policy,
            directory,
        };
        // A quorum of one elects itself; the empty entry of its new term commits whatever
        // earlier entries were on disk but not yet known to be committed.
        if voters == [id] {
            quorum
                .node
                .borrow_mut()
                .campaign()
                .map_err(|error| format!("electing the controller: {error}"))?;
        }
        for change in quorum.drive().await? {
            metadata.apply(&change);
        }
        if quorum.node.borrow().raft.state != StateRole::Leader {
            return Err("the controller quorum of one did not elect its only voter".into());
        }
        info!(
            entries = replayed.len(),
            applied = quorum.applied.get(),
            term = quorum.node.borrow().raft.term,
            "metadata log opened"
        );
        Ok(Opened {
            quorum,
            metadata,
            created,
        })
    }

    /// Appends `change` to the metadata log and returns once it is committed, with every
    /// change committed up to it, in log order (the caller applies and publishes them).
    pub async fn append(&self, change: &MetadataChange) -> Result<Vec<MetadataChange>, String> {
        let data = serde_json::to_vec(change).map_err(|error| error.to_string())?;
        if data.len() > store::RECORD_BYTES_MAX / 2 {
            return Err(format!(
                "a metadata change of {} bytes is more than the metadata log takes",
                data.len()
            ));
        }
        let _one = self.driving.lock().await;
        let index = {
            let mut node = self.node.borrow_mut();
            if node.raft.state != StateRole::Leader {
                return Err("this node is not the controller".into());
            }
            node.propose(Vec::new(), data)
                .map_err(|error| format!("proposing a metadata change: {error}"))?;
            node.raft.raft_log.last_index()
        };
        let committed = self.drive_locked().await?;
        if self.applied.get() < index {
            return Err(format!(
                "metadata change {index} was not committed (applied up to {})",
                self.applied.get()
            ));
        }
        Ok(committed)
    }

    async fn drive(&self) -> Result<Vec<MetadataChange>, String> {
        let _one = self.driving.lock().await;
        self.drive_locked().await
    }

    /// Handles Readies until raft-rs has none: persists what each asks, and collects the
    /// changes it commits.
    async fn drive_locked(&self) -> Result<Vec<MetadataChange>, String> {
        let mut changes = Vec::new();
        loop {
            let mut ready = {
                let mut node = self.node.borrow_mut();
                if !node.has_ready() {
                    break;
                }
                node.ready()
            };
            if !ready.messages().is_empty() || !ready.persisted_messages().is_empty() {
                // No voter but this one exists, so raft-rs has no one to write to.
                return Err("the controller quorum tried to reach another voter".into());
            }
            if !ready.snapshot().is_empty() {
                return Err("the controller quorum was sent a snapshot".into());
            }
            self.take_committed(ready.take_committed_entries(), &mut changes)?;
            if !ready.entries().is_empty() || ready.hs().is_some() {
                let record = self.store.stage(ready.entries(), ready.hs())?;
                self.persist(record).await?;
            }
            let mut light = self.node.borrow_mut().advance(ready);
            if let Some(commit) = light.commit_index() {
                self.store.note_commit(commit);
            }
            self.take_committed(light.take_committed_entries(), &mut changes)?;
            self.node.borrow_mut().advance_apply();
        }
        Ok(changes)
    }

    fn take_committed(
        &self,
        entries: Vec<Entry>,
        changes: &mut Vec<MetadataChange>,
    ) -> Result<(), String> {
        for entry in &entries {
            if let Some(change) = decode_change(entry)? {
                changes.push(change);
            }
            self.applied.set(entry.index);
        }
        Ok(())
    }

    /// Appends and syncs one record on the blocking pool. On a full disk the data directory's
    /// space reserve is released once and the write tried again, so a DeleteTopics that frees
    /// space can still be recorded.
    async fn persist(&self, record: Vec<u8>) -> Result<(), String> {
        let durable = self.durable.clone();
        let data_dir = self.directory.parent().map(Path::to_path_buf);
        shards::task::spawn_blocking(move || {
            let mut durable = durable
                .lock()
                .map_err(|_| "the metadata log writer failed earlier".to_string())?;
            match durable.append(&record) {
                Err(error) if store::is_no_space(&error) => {
                    let released = data_dir
                        .as_deref()
                        .is_some_and(crate::disk_space::release_reserve);
                    if !released {
                        return Err(format!("writing the metadata log: {error}"));
                    }
                    warn!("the disk is full: released the space reserve to record the metadata");
                    durable.append(&record)
                }
                other => other,
            }
            .map_err(|error| format!("writing the metadata log: {error}"))
        })
        .await
    }

    /// Whether the log has grown or aged enough to be replaced by a snapshot.
    pub fn snapshot_due(&self) -> bool {
        let bytes = self
            .durable
            .lock()
            .map(|durable| durable.bytes_since_snapshot)
            .unwrap_or(0);
        let aged = self
            .policy
            .max_interval
            .is_some_and(|interval| self.last_snapshot.get().elapsed() >= interval);
        self.applied.get() > self.store.snapshot_metadata().0
            && (bytes >= self.policy.max_bytes || aged)
    }

    /// Replaces the log with a snapshot of `state`, the state machine at the last applied
    /// entry (the caller holds the controller's lock, so nothing is applied meanwhile).
    pub async fn snapshot(&self, state: &ClusterMetadata) -> Result<(), String> {
        let _one = self.driving.lock().await;
        let applied = self.applied.get();
        let data = serde_json::to_vec(state).map_err(|error| error.to_string())?;
        let (snapshot, log) = self.store.compact(applied, Bytes::from(data))?;
        let durable = self.durable.clone();
        let bytes = shards::task::spawn_blocking(move || {
            let mut durable = durable
                .lock()
                .map_err(|_| "the metadata log writer failed earlier".to_string())?;
            let bytes = durable.bytes_since_snapshot;
            durable
                .replace(&snapshot, &log)
                .map_err(|error| format!("writing a metadata snapshot: {error}"))?;
            Ok::<_, String>(bytes)
        })
        .await?;
        self.last_snapshot.set(Instant::now());
        info!(
            index = applied,
            log_bytes = bytes,
            "metadata snapshot written; the log it covers is gone"
        );
        Ok(())
    }

    /// The index of the last applied entry and the current term.
    pub fn position(&self) -> (u64, u64) {
        (self.applied.get(), self.node.borrow().raft.term)
    }

    /// The quorum as this voter sees it (DescribeQuorum).
    pub fn status(&self) -> QuorumStatus {
        let node = self.node.borrow();
        let raft = &node.raft;
        let node_of = |id: u64| id.saturating_sub(1).min(i32::MAX as u64) as i32;
        let last_index = raft.raft_log.last_index();
        let now = crate::clock::now_ms();
        let mut voters: Vec<VoterStatus> = raft
            .prs()
            .iter()
            .map(|(id, progress)| {
                let own = *id == raft.id;
                VoterStatus {
                    node_id: node_of(*id),
                    log_end: if own { last_index } else { progress.matched },
                    last_fetch_ms: if own { now } else { -1 },
                    last_caught_up_ms: if own { now } else { -1 },
                }
            })
            .collect();
        voters.sort_by_key(|voter| voter.node_id);
        QuorumStatus {
            leader: (raft.leader_id != raft::INVALID_ID).then(|| node_of(raft.leader_id)),
            term: raft.term,
            high_watermark: raft.raft_log.committed,
            voters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::TopicMetadata;

    const KEEP_THE_LOG: SnapshotPolicy = SnapshotPolicy {
        max_bytes: u64::MAX,
        max_interval: None,
    };

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        shards::task::run_local(future).unwrap()
    }

    fn topic(name: &str) -> MetadataChange {
        MetadataChange::TopicsCreated(vec![TopicMetadata {
            name: name.into(),
            topic_id: uuid::Uuid::new_v4(),
            partitions: vec![0, 1],
            configs: Default::default(),
        }])
    }

    fn open(directory: &Path, node_id: i32, import: Option<ClusterMetadata>) -> Opened {
        run(Quorum::open(directory, node_id, import, KEEP_THE_LOG)).unwrap()
    }

    #[test]
    fn a_quorum_of_one_commits_what_it_appends_and_a_reopen_replays_it() {
        let directory = tempfile::tempdir().unwrap();
        let first = open(directory.path(), 0, None);
        assert!(first.created);
        assert!(first.metadata.topics.is_empty());
        let cluster_id = first.metadata.cluster_id.clone();
        let committed = run(first.quorum.append(&topic("a"))).unwrap();
        assert!(
            matches!(&committed[..], [MetadataChange::TopicsCreated(topics)] if topics[0].name == "a")
        );
        let committed = run(first
            .quorum
            .append(&MetadataChange::ProducerIdsAllocated { next: 5000 }))
        .unwrap();
        assert_eq!(committed.len(), 1);
        drop(first);

        // The commit index of the last appends never reached the file (it needs no sync):
        // the reopened quorum's new term commits them again, and they are applied once.
        let second = open(directory.path(), 0, None);
        assert!(!second.created);
        assert_eq!(second.metadata.cluster_id, cluster_id);
        assert!(second.metadata.topics.contains_key("a"));
        assert_eq!(second.metadata.next_producer_id, 5000);
        assert_eq!(second.metadata.version, 1, "the topic was applied once");
        let (applied, term) = second.quorum.position();
        assert_eq!(term, 2, "each open is a new term");
        assert!(applied >= 3);
    }

    #[test]
    fn a_snapshot_replaces_the_log_and_reads_back_the_same_state() {
        let directory = tempfile::tempdir().unwrap();
        let policy = SnapshotPolicy {
            max_bytes: 1,
            max_interval: None,
        };
        let opened = run(Quorum::open(directory.path(), 3, None, policy)).unwrap();
        let mut state = opened.metadata.clone();
        for name in ["a", "b", "c"] {
            for change in run(opened.quorum.append(&topic(name))).unwrap() {
                state.apply(&change);
            }
        }
        assert!(opened.quorum.snapshot_due());
        run(opened.quorum.snapshot(&state)).unwrap();
        assert!(!opened.quorum.snapshot_due(), "nothing since the snapshot");
        let log_bytes = std::fs::metadata(
            directory
                .path()
                .join(METADATA_DIRECTORY)
                .join(store::LOG_FILE),
        )
        .unwrap()
        .len();
        assert!(
            log_bytes < 100,
            "the log holds only the hard state: {log_bytes}"
        );
        drop(opened);
        let reopened = run(Quorum::open(directory.path(), 3, None, policy)).unwrap();
        assert_eq!(reopened.metadata.topics, state.topics);
        assert_eq!(reopened.metadata.version, state.version);
    }

    #[test]
    fn an_import_seeds_a_new_log_only() {
        let directory = tempfile::tempdir().unwrap();
        let mut legacy = ClusterMetadata::new();
        legacy.apply(&topic("from-json"));
        legacy.next_producer_id = 77;
        let first = open(directory.path(), 0, Some(legacy.clone()));
        assert!(first.created);
        assert_eq!(first.metadata.topics, legacy.topics);
        assert_eq!(first.metadata.next_producer_id, 77);
        assert_eq!(first.metadata.cluster_id, legacy.cluster_id);
        drop(first);
        let second = open(directory.path(), 0, Some(ClusterMetadata::new()));
        assert!(!second.created);
        assert_eq!(
            second.metadata.cluster_id, legacy.cluster_id,
            "the log wins"
        );
    }

    #[test]
    fn another_nodes_metadata_log_is_refused_naming_both_ids() {
        let directory = tempfile::tempdir().unwrap();
        drop(open(directory.path(), 0, None));
        let refused = run(Quorum::open(directory.path(), 7, None, KEEP_THE_LOG))
            .err()
            .unwrap();
        assert!(refused.contains("node(s) 0"), "{refused}");
        assert!(refused.contains("node.id 7"), "{refused}");
    }
}
