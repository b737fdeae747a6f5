//! A shard's partitions over their life: opened when metadata names them (recovering after a
//! crash), reported offline when they cannot be served, removed when their topic is deleted,
//! closed at shutdown. Also the shard's start-up (its metadata, and on shard 0 the controller's
//! bootstrap, which reassigns the partitions of shards that no longer exist) and its timers.

use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use shards::task::{spawn_in, Queue};
use shards::ShardId;
use storage::PartitionLog;
use tracing::{error, info, warn};

use super::{PartitionSlot, Shard};
use crate::controller::metadata::NodeRegistration;
use crate::controller::metadata::{
    ClusterMetadata, MetadataChange, OfflinePartition, TopicMetadata,
};
use crate::controller::quorum::calls::CallHandler;
use crate::controller::quorum::transport::{ClusterId, TcpTransport};
use crate::controller::quorum::{NoPeers, Quorum, QuorumHost, QuorumSettings, Transport};
use crate::controller::{ControllerReply, QuorumParts, UNREGISTERED};
use crate::shard::mesh::ControllerCalls;

/// How long a node waits before trying its registration again.
const REGISTER_RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// How often the controller quorum's Raft clock ticks (a heartbeat per tick, an election after
/// 10 to 20 silent ones), and how long a metadata change may wait to be committed.
const QUORUM_TICK: std::time::Duration = std::time::Duration::from_millis(100);
///
/// With other voters the wait is bounded by how long a majority may take; a quorum of one has
/// no majority to lose, so its wait only covers a large change being applied (thousands of
/// partitions opening on a slow disk).
const QUORUM_APPEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const QUORUM_OF_ONE_APPEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
use crate::controller::ControllerRequest;
use crate::groups::OFFSETS_TOPIC;

/// How often a shard looks at its disk's free space and runs its other timers.
const HOUSEKEEPING_TICK: Duration = Duration::from_secs(1);

/// Reports a log's flushes to the shard's metrics and its going offline to the controller, so
/// every shard's Metadata answers show the partition as unavailable.
struct PartitionObserver {
    shard: Weak<Shard>,
    topic: String,
    partition: i32,
}

impl storage::LogObserver for PartitionObserver {
    fn flushed(&self, bytes: u64, batches: usize, sync_latency: Duration) {
        let _ = batches;
        if let Some(shard) = self.shard.upgrade() {
            shard.metrics.flushed(bytes, sync_latency);
        }
    }

    fn went_offline(&self, directory: &Path, reason: &str) {
        error!(directory = %directory.display(), %reason, "partition offline");
        if let Some(shard) = self.shard.upgrade() {
            shard.report_offline(vec![OfflinePartition {
                topic: self.topic.clone(),
                partition: self.partition,
                reason: reason.to_string(),
            }]);
        }
    }
}

impl Shard {
    fn partition_directory(&self, topic: &str, partition: usize) -> PathBuf {
        self.node.data_dir.join(format!("{topic}-{partition}"))
    }

    /// Tells the controller (later, from a task of its own: this may run while the controller is
    /// busy publishing the change that opened the partition) that partitions cannot be served.
    pub(super) fn report_offline(self: &Rc<Self>, partitions: Vec<OfflinePartition>) {
        if partitions.is_empty() {
            return;
        }
        let shard = self.clone();
        shards::task::spawn(async move {
            shard
                .controller_request(ControllerRequest::ReportOffline(partitions))
                .await;
        })
        .detach();
    }

    /// Opens the partitions of `topic` from index `from` on that this shard owns; a slot per
    /// partition from `from` on (`None` where another shard owns it).
    async fn open_topic(
        self: &Rc<Self>,
        topic: &TopicMetadata,
        from: usize,
    ) -> Vec<Option<PartitionSlot>> {
        let config = self.config().log_config(&topic.configs);
        let mut slots = Vec::with_capacity(topic.partition_count().saturating_sub(from));
        let mut offline = Vec::new();
        for index in from..topic.partition_count() {
            if topic.local_shard(index, self.node.node_id) != Some(self.id) {
                slots.push(None);
                continue;
            }
            let directory = self.partition_directory(&topic.name, index);
            let slot = match PartitionLog::open(
                &self.log_context,
                &directory,
                config.clone(),
                self.node.clean_shutdown,
            )
            .await
            {
                Ok(log) => {
                    log.set_observer(Rc::new(PartitionObserver {
                        shard: Rc::downgrade(self),
                        topic: topic.name.clone(),
                        partition: index as i32,
                    }));
                    spawn_in(Queue::Requests, log.clone().run_write_path()).detach();
                    spawn_in(Queue::Background, log.clone().run_upkeep()).detach();
                    // A replicated offsets partition is taken over by its leader only
                    // (`refresh_coordination`), after the metadata is applied.
                    if topic.name == OFFSETS_TOPIC && topic.replicas[index].len() < 2 {
                        self.groups.load(index as i32, log.clone()).await;
                    }
                    PartitionSlot::Online(log)
                }
                Err(error) => {
                    error!(topic = %topic.name, partition = index, %error, "partition offline");
                    offline.push(OfflinePartition {
                        topic: topic.name.clone(),
                        partition: index as i32,
                        reason: error.to_string(),
                    });
                    PartitionSlot::Offline(error.to_string().into())
                }
            };
            slots.push(Some(slot));
        }
        self.report_offline(offline);
        slots
    }

    /// Opens a partition's log again after it was closed and changed on disk (a follower's
    /// truncation): recovered as after a crash, with its flusher and observer.
    pub(super) async fn open_partition(
        self: &Rc<Self>,
        topic: &str,
        partition: i32,
        config: storage::LogConfig,
    ) -> Result<Rc<PartitionLog>, String> {
        let index = usize::try_from(partition).map_err(|_| "a negative partition".to_string())?;
        let directory = self.partition_directory(topic, index);
        let log = PartitionLog::open(&self.log_context, &directory, config, false)
            .await
            .map_err(|error| error.to_string())?;
        log.set_observer(Rc::new(PartitionObserver {
            shard: Rc::downgrade(self),
            topic: topic.to_string(),
            partition,
        }));
        spawn_in(Queue::Requests, log.clone().run_write_path()).detach();
        spawn_in(Queue::Background, log.clone().run_upkeep()).detach();
        Ok(log)
    }

    /// A new partition starts empty. A directory of the same name can only be left over from a
    /// deleted topic whose files were not removed before a crash.
    async fn remove_leftovers(&self, topic: &TopicMetadata, from: usize) {
        let disk = self.log_context.disk.clone();
        for index in from..topic.partition_count() {
            let directory = self.partition_directory(&topic.name, index);
            if topic.local_shard(index, self.node.node_id) == Some(self.id)
                && disk.exists(&directory).await.unwrap_or(false)
            {
                warn!(directory = %directory.display(), "removing leftovers of a deleted topic");
                if let Err(error) = disk.remove_dir_all(&directory).await {
                    error!(directory = %directory.display(), %error, "cannot remove leftovers");
                }
            }
        }
    }

    /// Works out this shard's config from the node's and the metadata's dynamic entries.
    fn refresh_config(&self, metadata: &ClusterMetadata) {
        let (cluster_default, broker) = metadata.dynamic_broker_configs(self.broker_id());
        *self.config.borrow_mut() = Rc::new(self.node.config.with_dynamic(cluster_default, broker));
    }

    /// Gives every owned log of `topics` (all of them for `None`) the storage settings its
    /// topic's configs now make, so a changed retention, segment size or flush policy holds
    /// from the next append, flush or retention check on.
    fn reconfigure_logs(&self, topics: Option<&[String]>) {
        let config = self.config();
        let metadata = self.metadata.borrow();
        let partitions = self.partitions.borrow();
        for (name, slots) in partitions.iter() {
            if topics.is_some_and(|wanted| !wanted.contains(name)) {
                continue;
            }
            let Some(topic) = metadata.topics.get(name) else {
                continue;
            };
            let log_config = config.log_config(&topic.configs);
            for slot in slots.iter().flatten() {
                if let PartitionSlot::Online(log) = slot {
                    log.set_config(log_config.clone());
                }
            }
        }
    }

    /// Applies a metadata change to this shard: the local copy, and the logs it owns.
    pub async fn apply(self: &Rc<Self>, change: &MetadataChange) {
        match change {
            MetadataChange::Snapshot(snapshot) => {
                self.refresh_config(snapshot);
                for topic in snapshot.topics.values() {
                    let slots = self.open_topic(topic, 0).await;
                    self.partitions
                        .borrow_mut()
                        .insert(topic.name.clone(), slots);
                }
            }
            MetadataChange::TopicsCreated(topics) => {
                for topic in topics {
                    self.remove_leftovers(topic, 0).await;
                    let slots = self.open_topic(topic, 0).await;
                    self.partitions
                        .borrow_mut()
                        .insert(topic.name.clone(), slots);
                }
            }
            MetadataChange::PartitionsAdded(additions) => {
                for (name, replicas) in additions {
                    let Some(mut topic) = self.metadata.borrow().topics.get(name).cloned() else {
                        continue;
                    };
                    let from = topic.partition_count();
                    topic.replicas.extend_from_slice(replicas);
                    self.remove_leftovers(&topic, from).await;
                    let slots = self.open_topic(&topic, from).await;
                    self.partitions
                        .borrow_mut()
                        .entry(name.clone())
                        .or_insert_with(|| vec![None; from])
                        .extend(slots);
                }
            }
            MetadataChange::TopicConfigsChanged(_) | MetadataChange::BrokerConfigsChanged(_) => {}
            MetadataChange::TopicsDeleted(names) => {
                self.groups
                    .forget_topics(names, |group_id| self.coordinator_log(group_id).ok())
                    .await;
                for name in names {
                    let removed = self.partitions.borrow_mut().remove(name);
                    for slot in removed.into_iter().flatten().flatten() {
                        match slot {
                            PartitionSlot::Online(log) => {
                                if let Err(error) = log.remove().await {
                                    warn!(topic = %name, %error, "removing a deleted partition's files");
                                }
                            }
                            PartitionSlot::Offline(_) => {}
                        }
                    }
                }
            }
            MetadataChange::PartitionsOffline(_)
            | MetadataChange::ProducerIdsAllocated { .. }
            | MetadataChange::NodeRegistered(_)
            | MetadataChange::NodeFenced { .. }
            | MetadataChange::NodeUnfenced { .. }
            | MetadataChange::ClusterIdCommitted { .. }
            | MetadataChange::LeadershipsChanged(_) => {}
        }
        self.metadata.borrow_mut().apply(change);
        let ids = self
            .metadata
            .borrow()
            .topics
            .values()
            .map(|topic| (topic.topic_id, topic.name.clone()))
            .collect();
        *self.topic_ids.borrow_mut() = ids;
        match change {
            MetadataChange::TopicConfigsChanged(changes) => {
                let names: Vec<String> = changes.iter().map(|(name, _)| name.clone()).collect();
                self.reconfigure_logs(Some(&names));
            }
            MetadataChange::BrokerConfigsChanged(_) => {
                self.refresh_config(&self.metadata.borrow());
                self.reconfigure_logs(None);
            }
            _ => {}
        }
        self.refresh_replicas();
        if matches!(change, MetadataChange::Snapshot(_)) {
            self.ready.set(true);
            self.ready_event.notify(usize::MAX);
        }
    }

    /// Waits until the first metadata snapshot is applied (logs open, recovery done).
    pub async fn wait_ready(&self) {
        loop {
            let listener = self.ready_event.listen();
            if self.ready.get() {
                return;
            }
            listener.await;
        }
    }

    /// Shard 0 at start: open the metadata log (importing the `metadata.json` of a data
    /// directory from before it existed), give the partitions of shards that no longer exist
    /// (a start with fewer `--cores`) to the shards that do, and push it to every shard.
    pub async fn bootstrap_metadata(self: &Rc<Self>) -> Result<(), String> {
        let Some(controller) = &self.controller else {
            return Ok(());
        };
        let data_dir = self.node.data_dir.clone();
        let shard_count = self.node.shard_count;
        let legacy = {
            let data_dir = data_dir.clone();
            shards::task::spawn_blocking(move || ClusterMetadata::load(&data_dir))
                .await
                .map_err(|error| error.to_string())?
        };
        let had_legacy = legacy.is_some();
        let legacy = legacy.map(|mut metadata| {
            metadata.adopt_legacy_node(self.node.node_id);
            metadata
        });
        let voters = &self.node.voters;
        if had_legacy && !voters.is_empty() {
            return Err(format!(
                "{} holds a single node's metadata.json, from before the metadata log; it \
                 cannot seed a quorum of several voters (each would import its own). Start \
                 this node once without controller.quorum.voters to import it, or give it an \
                 empty data directory",
                data_dir.display()
            ));
        }
        let settings = QuorumSettings {
            node_id: self.node.node_id,
            voters: voters.iter().map(|voter| voter.id).collect(),
            policy: self.node.config.metadata_snapshot_policy(),
            tick: QUORUM_TICK,
            append_timeout: if voters.is_empty() {
                QUORUM_OF_ONE_APPEND_TIMEOUT
            } else {
                QUORUM_APPEND_TIMEOUT
            },
        };
        let opened = Quorum::open(&data_dir, settings, legacy).await?;
        if had_legacy {
            if opened.created {
                info!("imported metadata.json into the metadata log");
            }
            let data_dir = data_dir.clone();
            shards::task::spawn_blocking(move || ClusterMetadata::remove_legacy(&data_dir))
                .await
                .map_err(|error| error.to_string())?;
        }
        let mut metadata = opened.metadata;
        // Only a quorum of one knows at start every topic it acknowledged: with other voters,
        // a topic committed just before a crash may reach this node only from the leader, and
        // its data must not be swept away meanwhile (a re-created name still starts empty:
        // `remove_leftovers`).
        if voters.is_empty() {
            let data_dir = data_dir.clone();
            let kept = metadata.clone();
            shards::task::spawn_blocking(move || remove_orphan_partitions(&data_dir, &kept)).await;
        }
        let moved = metadata.reassign_missing_shards(self.node.node_id, shard_count);
        if moved > 0 {
            warn!(
                partitions = moved,
                shards = shard_count,
                "partitions owned by shards that no longer exist (the broker started with fewer \
                 cores) were reassigned to the least loaded shards; their data stays where it is"
            );
        }
        info!(
            cluster_id = %metadata.cluster_id,
            topics = metadata.topics.len(),
            "cluster metadata loaded"
        );
        let quorum_host: Rc<dyn QuorumHost> = Rc::new(self.clone());
        let (transport, route): (Rc<dyn Transport>, _) = if voters.is_empty() {
            (Rc::new(NoPeers), None)
        } else {
            let listener = self
                .node
                .controller_listener
                .lock()
                .ok()
                .and_then(|mut listener| listener.take())
                .ok_or("the controller listener was not bound")?
                .into_listener();
            let calls: Rc<dyn CallHandler> = Rc::new(ControllerCalls(self.clone()));
            let shard = self.clone();
            let cluster: ClusterId = Rc::new(move || shard.metadata().committed_cluster_id());
            let transport = TcpTransport::start(
                opened.quorum.clone(),
                calls,
                cluster,
                self.node.node_id,
                listener,
                voters,
            );
            (
                transport as Rc<dyn Transport>,
                Some((self.node.node_id, voters.clone())),
            )
        };
        let parts = QuorumParts {
            quorum: opened.quorum,
            host: quorum_host,
            transport,
            route,
        };
        controller
            .bootstrap(self, parts, metadata, moved > 0)
            .await?;
        let heartbeat = (!voters.is_empty()).then(|| {
            (
                self.node.config.millis("broker.heartbeat.interval.ms"),
                self.node.config.millis("broker.session.timeout.ms"),
            )
        });
        self.register_node(heartbeat);
        Ok(())
    }

    /// Shard 0: registers this node with the controller (its shards' endpoints and rack), as
    /// a Kafka broker does at start, trying again until the quorum has a leader that takes it.
    /// With other voters it then heartbeats every `heartbeat` and registers again whenever the
    /// controller no longer holds this start's registration; the leader's controller fences
    /// nodes that fall silent for `session`.
    fn register_node(self: &Rc<Self>, heartbeat: Option<(Duration, Duration)>) {
        let registration = NodeRegistration {
            node_id: self.node.node_id,
            incarnation: uuid::Uuid::new_v4(),
            endpoints: self.node.advertised.clone(),
            rack: self.node.rack.clone(),
        };
        self.incarnation.set(Some(registration.incarnation));
        if let Some((_, session)) = heartbeat {
            let shard = self.clone();
            shards::task::spawn(async move {
                if let Some(controller) = &shard.controller {
                    controller.run_fencing(&shard, session).await;
                }
            })
            .detach();
        }
        let shard = self.clone();
        shards::task::spawn(async move {
            let mut registered = false;
            let mut attempts = 0u32;
            loop {
                // A stopping node heartbeats no more: its controlled shutdown fenced it.
                if shard.is_closing() {
                    return;
                }
                let request = if registered {
                    ControllerRequest::Heartbeat {
                        node_id: registration.node_id,
                        incarnation: registration.incarnation,
                    }
                } else {
                    ControllerRequest::RegisterNode(registration.clone())
                };
                // A heartbeat that gets no answer within a third of the session is given up
                // and sent again, to whichever controller leads by then: one forwarded to a
                // leader that stopped answering (paused, cut off) must not wait out the call
                // timeout while the new leader fences this node for silence.
                let answered = match heartbeat {
                    Some((_, session)) if registered => {
                        shards::task::timeout(session / 3, shard.controller_request(request)).await
                    }
                    _ => Some(shard.controller_request(request).await),
                };
                let Some(answer) = answered else {
                    continue;
                };
                match answer {
                    ControllerReply::Failed(reason)
                        if registered && reason.starts_with(UNREGISTERED) =>
                    {
                        info!(%reason, "registering with the controller again");
                        registered = false;
                    }
                    ControllerReply::Failed(reason) => {
                        if attempts.is_multiple_of(20) {
                            warn!(%reason, "reaching the controller; trying again");
                        }
                        attempts += 1;
                        shards::task::sleep(REGISTER_RETRY_AFTER).await;
                    }
                    _ => {
                        if !registered {
                            info!("registered with the controller");
                            registered = true;
                        }
                        attempts = 0;
                        match heartbeat {
                            Some((interval, _)) => shards::task::sleep(interval).await,
                            None => return,
                        }
                    }
                }
            }
        })
        .detach();
    }

    /// Shard 0: whether every shard has recovered its logs (`/v1/status/ready`).
    pub fn node_ready(&self) -> bool {
        self.node_ready.get()
    }

    pub fn set_node_ready(&self) {
        self.node_ready.set(true);
    }

    /// Partitions of the cluster that cannot be served, with why (Metadata, readiness).
    pub fn offline_partitions(&self) -> Vec<OfflinePartition> {
        self.metadata.borrow().offline_partitions()
    }

    /// Flushes and closes every owned log; true if all closed cleanly.
    pub async fn close_logs(&self) -> bool {
        let mut clean = true;
        for log in self.owned_logs() {
            if let Err(error) = log.close().await {
                error!(directory = %log.directory().display(), %error, "closing log");
                clean = false;
            }
        }
        let offline = self
            .partitions
            .borrow()
            .values()
            .flatten()
            .any(|slot| matches!(slot, Some(PartitionSlot::Offline(_))));
        clean && !offline
    }

    /// The shard's timers, for its life: free disk space (appends are refused below
    /// `storage_min_free_bytes` and taken again above it), idle producers' state
    /// (`producer.id.expiration.ms`, checked every `producer.id.expiration.check.interval.ms`)
    /// and empty groups' offsets (`offsets.retention.minutes`).
    pub async fn run_housekeeping(self: Rc<Self>) {
        let config = &self.node.config;
        let producer_check = config.millis("producer.id.expiration.check.interval.ms");
        let offsets_check = config.millis("offsets.retention.check.interval.ms");
        let mut last_producer_check = Instant::now();
        let mut last_offsets_check = Instant::now();
        loop {
            self.check_disk_space().await;
            if last_producer_check.elapsed() >= producer_check {
                last_producer_check = Instant::now();
                let expired: usize = self
                    .owned_logs()
                    .iter()
                    .map(|log| log.expire_producers())
                    .sum();
                if expired > 0 {
                    info!(expired, "forgot idle producers");
                }
            }
            if last_offsets_check.elapsed() >= offsets_check {
                last_offsets_check = Instant::now();
                self.groups
                    .expire_offsets(crate::clock::now_ms(), |group_id| {
                        self.coordinator_log(group_id).ok()
                    })
                    .await;
            }
            // A log that just hit ENOSPC wants the free space looked at now, not in a second.
            let mut waited = Duration::ZERO;
            while waited < HOUSEKEEPING_TICK && !self.log_context.space.take_exhausted() {
                shards::task::sleep(HOUSEKEEPING_TICK / 10).await;
                waited += HOUSEKEEPING_TICK / 10;
            }
        }
    }

    /// Retention, for the shard's life: every `log.retention.check.interval.ms`, each owned
    /// log whose `cleanup.policy` includes `delete` drops the sealed segments its
    /// `retention.ms` and `retention.bytes` no longer keep. It runs on a full disk too, which
    /// is how the space comes back.
    pub async fn run_retention(self: Rc<Self>) {
        let interval = self.config().millis("log.retention.check.interval.ms");
        loop {
            shards::task::sleep(interval).await;
            for log in self.owned_logs() {
                let before = log.log_start_offset();
                match log.enforce_retention(crate::clock::now_ms()).await {
                    Ok(after) if after > before => {
                        self.log_context.space.note_freed();
                    }
                    Ok(_) => {}
                    Err(error) => {
                        warn!(directory = %log.directory().display(), %error, "retention failed");
                    }
                }
            }
        }
    }

    /// Refuses appends while free space is below the threshold, takes them again above it, and
    /// (shard 0) keeps the data directory's space reserve in place when there is room for it.
    async fn check_disk_space(&self) {
        let disk = &self.log_context.disk;
        let data_dir = &self.node.data_dir;
        let (Ok(free), Ok(total)) = (
            disk.available_bytes(data_dir).await,
            disk.total_bytes(data_dir).await,
        ) else {
            return;
        };
        let threshold =
            crate::disk_space::min_free_bytes(self.node.config.storage_min_free_bytes(), total);
        let refusing = free < threshold;
        if refusing != self.log_context.space.refusing() {
            if refusing {
                warn!(
                    free,
                    threshold, "the disk is nearly full: appends are refused until space is freed"
                );
            } else {
                info!(
                    free,
                    threshold, "free space is back: appends are taken again"
                );
            }
            self.log_context.space.set_refusing(refusing);
        }
        if self.id == ShardId(0) && free > threshold + crate::disk_space::RESERVE_BYTES {
            let data_dir = data_dir.clone();
            shards::task::spawn_blocking(move || crate::disk_space::ensure_reserve(&data_dir))
                .await;
        }
    }
}

/// Removes partition directories (`<topic>-<index>`) that no topic in `metadata` owns: files of
/// topics deleted just before a crash. Everything else in the data directory is left alone.
fn remove_orphan_partitions(data_dir: &Path, metadata: &ClusterMetadata) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some((topic, index)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        if !entry.path().is_dir() || crate::controller::validate_topic_name(topic).is_err() {
            continue;
        }
        let owned = metadata
            .topics
            .get(topic)
            .is_some_and(|known| index < known.partition_count());
        if !owned {
            warn!(directory = %entry.path().display(), "removing a partition no topic owns");
            if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                error!(directory = %entry.path().display(), %error, "cannot remove it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::TopicMetadata;

    #[test]
    fn only_partition_directories_without_a_topic_are_removed() {
        let data = tempfile::tempdir().unwrap();
        for directory in [
            "kept-0",
            "kept-1",
            "gone-0",
            "kept-7",
            "__cluster_metadata",
            "odd-name",
        ] {
            std::fs::create_dir(data.path().join(directory)).unwrap();
        }
        let mut metadata = ClusterMetadata::new();
        metadata.topics.insert(
            "kept".into(),
            TopicMetadata {
                name: "kept".into(),
                topic_id: uuid::Uuid::new_v4(),
                replicas: vec![vec![0], vec![1]],
                configs: Default::default(),
                leaderships: Vec::new(),
            },
        );
        remove_orphan_partitions(data.path(), &metadata);
        let mut left: Vec<String> = std::fs::read_dir(data.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec!["__cluster_metadata", "kept-0", "kept-1", "odd-name"]
        );
    }
}
