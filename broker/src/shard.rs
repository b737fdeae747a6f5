//! One shard of the broker: its copy of the cluster metadata, the partition logs it owns, and its
//! end of the mesh. Lives on one core for the life of the process; handed around as `Rc<Shard>`.

use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use event_listener::Event;
use shards::{Mesh, ShardId};
use storage::PartitionLog;
use tracing::{error, info, warn};

use crate::config::BrokerConfig;
use crate::controller::metadata::{ClusterMetadata, MetadataChange, TopicMetadata};
use crate::controller::{Controller, ControllerReply, ControllerRequest, TopicOutcome};
use crate::groups::{GroupCoordinator, OFFSETS_TOPIC};
use crate::kafka::errors::ErrorCode;
use crate::limits::REQUEST_MEMORY_PER_SHARD_BYTES;
use crate::observability::metrics::{MetricsSnapshot, ShardMetrics};
use storage::memory::MemoryBudget;

/// How long a scrape waits for another shard's metrics.
pub const METRICS_REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Producer ids a shard takes from the controller at a time: one durable controller write per
/// thousand InitProducerId requests on that shard.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// What every shard knows about the node; fixed at start, shared read-only across cores.
#[derive(Debug)]
pub struct NodeInfo {
    pub config: BrokerConfig,
    pub node_id: i32,
    pub shard_count: usize,
    /// The host and port clients reach each shard at, by shard index.
    pub advertised: Vec<(String, u16)>,
    pub data_dir: PathBuf,
    /// Whether the previous process shut down cleanly (no recovery scan needed).
    pub clean_shutdown: bool,
}

impl NodeInfo {
    /// Each shard is advertised as its own broker: node n, shard s is broker `n * 1000 + s`.
    pub fn broker_id(&self, shard: ShardId) -> i32 {
        self.node_id * 1000 + i32::from(shard.0)
    }
}

/// Messages between shards. Only metadata crosses cores.
#[derive(Debug)]
pub enum ShardMessage {
    /// To the controller (shard 0): a mutation to perform, answered by `Reply` with the same id.
    ToController {
        id: u64,
        request: ControllerRequest,
    },
    Reply {
        id: u64,
        reply: ControllerReply,
    },
    /// From the controller: apply this change, then answer `Applied`.
    Apply {
        change: MetadataChange,
    },
    Applied {
        version: u64,
    },
    /// A scrape on shard 0 asks for this shard's metrics; answered by `MetricsReply`.
    MetricsRequest {
        id: u64,
    },
    MetricsReply {
        id: u64,
        snapshot: MetricsSnapshot,
    },
}

/// A partition as this shard sees it.
#[derive(Clone)]
pub enum PartitionSlot {
    Online(Rc<PartitionLog>),
    /// Owned here but its log could not be opened (corruption, I/O error): the reason.
    Offline(Rc<str>),
}

pub enum Lookup {
    Owned(Rc<PartitionLog>),
    Offline(Rc<str>),
    /// The partition exists on another shard.
    NotOwned,
    UnknownTopic,
    UnknownPartition,
}

pub struct Shard {
    pub id: ShardId,
    pub node: Arc<NodeInfo>,
    metadata: RefCell<ClusterMetadata>,
    topic_ids: RefCell<HashMap<uuid::Uuid, String>>,
    /// Owned partitions by topic, then partition index (`None` where another shard owns it).
    partitions: RefCell<HashMap<String, Vec<Option<PartitionSlot>>>>,
    mesh: Mesh<ShardMessage>,
    pending: RefCell<HashMap<u64, futures_channel::oneshot::Sender<ControllerReply>>>,
    /// This shard's block of producer ids: the next to hand out, and the end of the block.
    producer_ids: Cell<(i64, i64)>,
    next_request_id: Cell<u64>,
    pub controller: Option<Controller>,
    ready: Cell<bool>,
    ready_event: Event,
    pub request_memory: Rc<MemoryBudget>,
    /// The disk, memory budget and file cache this shard's logs share.
    pub log_context: storage::LogContext,
    pub metrics: Rc<ShardMetrics>,
    metrics_pending: RefCell<HashMap<u64, futures_channel::oneshot::Sender<MetricsSnapshot>>>,
    /// Shard 0 only: every shard has applied the first metadata snapshot (logs recovered).
    node_ready: Cell<bool>,
    /// The consumer groups whose offsets partitions this shard owns.
    pub groups: GroupCoordinator,
}

impl Shard {
    pub fn new(id: ShardId, node: Arc<NodeInfo>, mesh: Mesh<ShardMessage>) -> Rc<Shard> {
        let budget = REQUEST_MEMORY_PER_SHARD_BYTES.max(2 * node.config.socket_request_max_bytes());
        Rc::new(Shard {
            id,
            controller: (id == ShardId(0)).then(Controller::new),
            metadata: RefCell::new(ClusterMetadata::new()),
            topic_ids: RefCell::new(HashMap::new()),
            partitions: RefCell::new(HashMap::new()),
            mesh,
            pending: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(0),
            producer_ids: Cell::new((0, 0)),
            ready: Cell::new(false),
            ready_event: Event::new(),
            request_memory: MemoryBudget::new(budget),
            log_context: storage::LogContext::direct_io(
                crate::limits::LOG_MEMORY_PER_SHARD_BYTES,
                crate::limits::OPEN_SEGMENTS_PER_SHARD,
            ),
            metrics: Rc::new(ShardMetrics::default()),
            metrics_pending: RefCell::new(HashMap::new()),
            node_ready: Cell::new(false),
            groups: GroupCoordinator::new(node.config.group_settings()),
            node,
        })
    }

    pub fn metadata(&self) -> Ref<'_, ClusterMetadata> {
        self.metadata.borrow()
    }

    pub fn topic_name_by_id(&self, topic_id: &uuid::Uuid) -> Option<String> {
        self.topic_ids.borrow().get(topic_id).cloned()
    }

    /// Finds a partition's log, or why it cannot be served here.
    pub fn lookup(&self, topic: &str, partition: i32) -> Lookup {
        // Borrowed, not cloned: this runs for every partition of every Produce and Fetch.
        let partitions = self.partitions.borrow();
        let Some(slots) = partitions.get(topic) else {
            return Lookup::UnknownTopic;
        };
        match usize::try_from(partition)
            .ok()
            .and_then(|index| slots.get(index))
        {
            None => Lookup::UnknownPartition,
            Some(None) => Lookup::NotOwned,
            Some(Some(PartitionSlot::Online(log))) => Lookup::Owned(log.clone()),
            Some(Some(PartitionSlot::Offline(reason))) => Lookup::Offline(reason.clone()),
        }
    }

    /// The offsets log of the group's coordinator partition if this shard is its coordinator,
    /// or the error a group request gets: COORDINATOR_NOT_AVAILABLE before the offsets topic
    /// exists or while its partition is offline, NOT_COORDINATOR if another shard owns it.
    pub fn coordinator_log(&self, group_id: &str) -> Result<Rc<PartitionLog>, ErrorCode> {
        match self.offsets_partition(group_id) {
            Some((partition, owner)) if owner == self.id => self
                .groups
                .log(partition)
                .ok_or(ErrorCode::CoordinatorNotAvailable),
            Some(_) => Err(ErrorCode::NotCoordinator),
            None => Err(ErrorCode::CoordinatorNotAvailable),
        }
    }

    /// The `__consumer_offsets` partition of `group_id` and the shard that owns it, if the topic
    /// exists.
    fn offsets_partition(&self, group_id: &str) -> Option<(i32, ShardId)> {
        let metadata = self.metadata.borrow();
        let topic = metadata.topics.get(OFFSETS_TOPIC)?;
        let partition = crate::groups::partition_for(group_id, topic.partitions.len() as i32);
        let owner = topic.partitions.get(usize::try_from(partition).ok()?)?;
        Some((partition, ShardId(*owner)))
    }

    /// The shard coordinating `group_id`, creating the offsets topic first if it does not exist
    /// yet (as Kafka does on the first FindCoordinator).
    pub async fn find_coordinator(self: &Rc<Self>, group_id: &str) -> Result<ShardId, String> {
        if !self.metadata.borrow().topics.contains_key(OFFSETS_TOPIC) {
            if let ControllerReply::Failed(reason) = self
                .controller_request(ControllerRequest::CreateOffsetsTopic)
                .await
            {
                return Err(reason);
            }
        }
        self.offsets_partition(group_id)
            .map(|(_, owner)| owner)
            .ok_or_else(|| "the offsets topic could not be created".to_string())
    }

    /// Every log this shard owns.
    pub fn owned_logs(&self) -> Vec<Rc<PartitionLog>> {
        self.partitions
            .borrow()
            .values()
            .flatten()
            .filter_map(|slot| match slot {
                Some(PartitionSlot::Online(log)) => Some(log.clone()),
                _ => None,
            })
            .collect()
    }

    pub async fn send_to(&self, shard: ShardId, message: ShardMessage) -> Result<(), String> {
        self.mesh
            .send_to(shard, message)
            .await
            .map_err(|_| format!("shard {shard} has stopped"))
    }

    /// Runs a metadata mutation on the controller and returns once every shard applied it.
    pub async fn controller_request(
        self: &Rc<Self>,
        request: ControllerRequest,
    ) -> ControllerReply {
        if let Some(controller) = &self.controller {
            return controller.handle(self, request).await;
        }
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        let (sender, receiver) = futures_channel::oneshot::channel();
        self.pending.borrow_mut().insert(id, sender);
        if let Err(reason) = self
            .send_to(ShardId(0), ShardMessage::ToController { id, request })
            .await
        {
            self.pending.borrow_mut().remove(&id);
            error!(%reason, "controller unreachable");
            return ControllerReply::Failed(reason);
        }
        receiver
            .await
            .unwrap_or_else(|_| ControllerReply::Failed("the controller went away".into()))
    }

    /// A topic mutation on the controller: one outcome per topic (none if it was unreachable).
    pub async fn topic_request(self: &Rc<Self>, request: ControllerRequest) -> Vec<TopicOutcome> {
        match self.controller_request(request).await {
            ControllerReply::Topics(outcomes) => outcomes,
            _ => Vec::new(),
        }
    }

    /// Shard 0 only: the controller moved the next free producer id.
    pub fn set_next_producer_id(&self, next: i64) {
        self.metadata.borrow_mut().next_producer_id = next;
    }

    /// A producer id never handed out before, from this shard's block; a new block is fetched
    /// from the controller when this one is used up.
    pub async fn new_producer_id(self: &Rc<Self>) -> Result<i64, String> {
        loop {
            let (next, end) = self.producer_ids.get();
            if next < end {
                self.producer_ids.set((next + 1, end));
                return Ok(next);
            }
            match self
                .controller_request(ControllerRequest::AllocateProducerIds {
                    count: PRODUCER_ID_BLOCK,
                })
                .await
            {
                ControllerReply::ProducerIds { first, count } => {
                    self.producer_ids.set((first, first + count))
                }
                ControllerReply::Failed(reason) => return Err(reason),
                ControllerReply::Topics(_) => return Err("unexpected controller reply".into()),
            }
        }
    }

    fn partition_directory(&self, topic: &str, partition: usize) -> PathBuf {
        self.node.data_dir.join(format!("{topic}-{partition}"))
    }

    async fn open_topic(&self, topic: &TopicMetadata) -> Vec<Option<PartitionSlot>> {
        let config = self.node.config.log_config(&topic.configs);
        let mut slots = Vec::with_capacity(topic.partitions.len());
        for (index, owner) in topic.partitions.iter().enumerate() {
            if ShardId(*owner) != self.id {
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
                    log.set_observer(self.metrics.clone());
                    shards::task::spawn(log.clone().run_flusher()).detach();
                    if topic.name == OFFSETS_TOPIC {
                        self.groups.load(index as i32, log.clone()).await;
                    }
                    PartitionSlot::Online(log)
                }
                Err(error) => {
                    error!(topic = %topic.name, partition = index, %error, "partition offline");
                    PartitionSlot::Offline(error.to_string().into())
                }
            };
            slots.push(Some(slot));
        }
        slots
    }

    /// Applies a metadata change to this shard: the local copy, and the logs it owns.
    pub async fn apply(&self, change: &MetadataChange) {
        match change {
            MetadataChange::Snapshot(snapshot) => {
                for topic in snapshot.topics.values() {
                    let slots = self.open_topic(topic).await;
                    self.partitions
                        .borrow_mut()
                        .insert(topic.name.clone(), slots);
                }
            }
            MetadataChange::TopicsCreated(topics) => {
                for topic in topics {
                    // A new topic starts empty. A directory of the same name can only be left
                    // over from a deleted topic whose files were not removed before a crash.
                    for (index, owner) in topic.partitions.iter().enumerate() {
                        let directory = self.partition_directory(&topic.name, index);
                        if ShardId(*owner) == self.id && directory.exists() {
                            warn!(directory = %directory.display(), "removing leftovers of a deleted topic");
                            if let Err(error) = std::fs::remove_dir_all(&directory) {
                                error!(directory = %directory.display(), %error, "cannot remove leftovers");
                            }
                        }
                    }
                    let slots = self.open_topic(topic).await;
                    self.partitions
                        .borrow_mut()
                        .insert(topic.name.clone(), slots);
                }
            }
            MetadataChange::TopicsDeleted(names) => {
                self.groups
                    .forget_topics(names, |group_id| self.coordinator_log(group_id).ok())
                    .await;
                for name in names {
                    let removed = self.partitions.borrow_mut().remove(name);
                    for slot in removed.into_iter().flatten().flatten() {
                        if let PartitionSlot::Online(log) = slot {
                            if let Err(error) = log.remove().await {
                                warn!(topic = %name, %error, "removing a deleted partition's files");
                            }
                        }
                    }
                }
            }
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

    /// Handles one message from another shard.
    pub async fn handle_message(self: &Rc<Self>, from: ShardId, message: ShardMessage) {
        match message {
            ShardMessage::ToController { id, request } => {
                let shard = self.clone();
                // Spawned: the controller waits for acknowledgements that arrive on this same
                // receiver, so handling it inline would deadlock.
                shards::task::spawn(async move {
                    let reply = match &shard.controller {
                        Some(controller) => controller.handle(&shard, request).await,
                        None => ControllerReply::Failed("this shard is not the controller".into()),
                    };
                    if let Err(reason) =
                        shard.send_to(from, ShardMessage::Reply { id, reply }).await
                    {
                        warn!(%reason, "controller reply lost");
                    }
                })
                .detach();
            }
            ShardMessage::Reply { id, reply } => {
                if let Some(sender) = self.pending.borrow_mut().remove(&id) {
                    let _ = sender.send(reply);
                }
            }
            ShardMessage::Apply { change } => {
                self.apply(&change).await;
                let version = self.metadata.borrow().version;
                if let Err(reason) = self.send_to(from, ShardMessage::Applied { version }).await {
                    warn!(%reason, "metadata acknowledgement lost");
                }
            }
            ShardMessage::Applied { version } => {
                if let Some(controller) = &self.controller {
                    controller.note_applied(version);
                }
            }
            ShardMessage::MetricsRequest { id } => {
                let snapshot = self.metrics_snapshot();
                if let Err(reason) = self
                    .send_to(from, ShardMessage::MetricsReply { id, snapshot })
                    .await
                {
                    warn!(%reason, "metrics reply lost");
                }
            }
            ShardMessage::MetricsReply { id, snapshot } => {
                if let Some(sender) = self.metrics_pending.borrow_mut().remove(&id) {
                    let _ = sender.send(snapshot);
                }
            }
        }
    }

    /// Shard 0 at start: load (or create) the cluster metadata and push it to every shard.
    pub async fn bootstrap_metadata(self: &Rc<Self>) -> Result<(), String> {
        let Some(controller) = &self.controller else {
            return Ok(());
        };
        let metadata = ClusterMetadata::load(&self.node.data_dir)
            .map_err(|error| error.to_string())?
            .unwrap_or_default();
        remove_orphan_partitions(&self.node.data_dir, &metadata);
        info!(
            cluster_id = %metadata.cluster_id,
            topics = metadata.topics.len(),
            "cluster metadata loaded"
        );
        controller
            .publish(self, MetadataChange::Snapshot(metadata))
            .await
    }

    /// Shard 0: whether every shard has recovered its logs (`/v1/status/ready`).
    pub fn node_ready(&self) -> bool {
        self.node_ready.get()
    }

    pub fn set_node_ready(&self) {
        self.node_ready.set(true);
    }

    fn metrics_snapshot(&self) -> MetricsSnapshot {
        let logs = self.owned_logs();
        let bytes = logs.iter().map(|log| log.size_bytes()).sum();
        let mut snapshot = self.metrics.snapshot(self.id.0, logs.len() as u64, bytes);
        (snapshot.groups, snapshot.group_members) = self.groups.counts();
        snapshot
    }

    /// Every shard's metrics, for a scrape: this shard's own, and each other's over the mesh. A
    /// shard that does not answer within `METRICS_REPLY_TIMEOUT` is left out of this scrape.
    pub async fn collect_metrics(self: &Rc<Self>) -> Vec<MetricsSnapshot> {
        let mut snapshots = vec![self.metrics_snapshot()];
        let mut waiting = Vec::new();
        for peer in (0..self.node.shard_count as u16)
            .map(ShardId)
            .filter(|peer| *peer != self.id)
        {
            let id = self.next_request_id.get();
            self.next_request_id.set(id + 1);
            let (sender, receiver) = futures_channel::oneshot::channel();
            self.metrics_pending.borrow_mut().insert(id, sender);
            if self
                .send_to(peer, ShardMessage::MetricsRequest { id })
                .await
                .is_ok()
            {
                waiting.push((id, receiver));
            } else {
                self.metrics_pending.borrow_mut().remove(&id);
            }
        }
        for (id, receiver) in waiting {
            match shards::task::timeout(METRICS_REPLY_TIMEOUT, receiver).await {
                Some(Ok(snapshot)) => snapshots.push(snapshot),
                _ => {
                    self.metrics_pending.borrow_mut().remove(&id);
                    warn!("a shard did not answer the metrics scrape in time");
                }
            }
        }
        snapshots.sort_by_key(|snapshot| snapshot.shard);
        snapshots
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
}

/// Removes partition directories (`<topic>-<index>`) that no topic in `metadata` owns: files of
/// topics deleted just before a crash. Everything else in the data directory is left alone.
fn remove_orphan_partitions(data_dir: &std::path::Path, metadata: &ClusterMetadata) {
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
            .is_some_and(|known| index < known.partitions.len());
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
                partitions: vec![0, 1],
                configs: Default::default(),
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
