//! One shard of the broker: its copy of the cluster metadata, the partition logs it owns, its
//! memory budgets and its end of the mesh. Lives on one core for the life of the process;
//! handed around as `Rc<Shard>`.
//!
//! - `mod.rs` (here): the shard's state and the lookups handlers make on every request;
//! - `mesh`: messages to and from other shards, requests to the controller matched with their
//!   replies, metadata changes fanned out to every shard, metrics gathered for a scrape;
//! - `lifecycle`: partitions opened, applied, reported offline and closed; start-up (with a
//!   changed core count); the shard's timers (producer expiry, offsets retention, disk space).

mod cleaner;
mod lifecycle;
pub(crate) mod mesh;
mod replicas;

use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use event_listener::Event;
use shards::{Mesh, ShardId};
use storage::memory::MemoryBudget;
use storage::PartitionLog;

use crate::config::BrokerConfig;
use crate::controller::metadata::ClusterMetadata;
use crate::controller::{Controller, ControllerReply, ControllerRequest};
use crate::error_code::ErrorCode;
use crate::groups::{GroupCoordinator, OFFSETS_TOPIC};
use crate::limits::{PRODUCER_ID_BLOCK, REQUEST_MEMORY_PER_SHARD_BYTES};
use crate::observability::metrics::{MetricsSnapshot, ShardMetrics};

pub use crate::node::NodeInfo;
pub use mesh::ShardMessage;

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
    /// Controller requests sent to shard 0, waiting for their replies.
    pending: RefCell<HashMap<u64, futures_channel::oneshot::Sender<ControllerReply>>>,
    /// Shard 0 only: acknowledgements of published metadata versions, per version.
    acks: RefCell<HashMap<u64, usize>>,
    acked: Event,
    /// Shard 0: one publish to the shards at a time. The metadata log's driver and the
    /// controller's unlogged reports both publish, and two at once would wait for the same
    /// version's acknowledgements.
    publishing: async_lock::Mutex<()>,
    /// This shard's block of producer ids: the next to hand out, and the end of the block.
    producer_ids: Cell<(i64, i64)>,
    next_request_id: Cell<u64>,
    pub controller: Option<Controller>,
    ready: Cell<bool>,
    ready_event: Event,
    /// Request frames (and what they decode to) are paid for from this budget.
    pub request_memory: Rc<MemoryBudget>,
    /// The disk, memory budget, file cache and space guard this shard's logs share.
    pub log_context: storage::LogContext,
    pub metrics: Rc<ShardMetrics>,
    metrics_pending: RefCell<HashMap<u64, futures_channel::oneshot::Sender<MetricsSnapshot>>>,
    /// Shard 0 only: every shard has applied the first metadata snapshot (logs recovered).
    node_ready: Cell<bool>,
    /// The consumer groups whose offsets partitions this shard owns.
    pub groups: GroupCoordinator,
    /// This shard's open client connections.
    pub connections: crate::connections::Connections,
    /// The local replicas of replicated partitions, by topic and partition.
    replicas: RefCell<HashMap<String, HashMap<i32, Rc<crate::replication::Replica>>>>,
    /// The leader brokers a fetcher of this shard follows.
    fetchers: RefCell<std::collections::HashSet<i32>>,
    /// The shard is shutting down: no fetcher starts or goes on.
    closing: Cell<bool>,
    /// Shard 0: this start's registration with the controller.
    incarnation: Cell<Option<uuid::Uuid>>,
    /// Offsets partitions whose groups are being loaded after a leadership change.
    loading: RefCell<std::collections::BTreeSet<i32>>,
    /// Incremental fetch sessions (KIP-227) of the consumers fetching from this shard.
    pub fetch_sessions: RefCell<crate::kafka::fetch_sessions::FetchSessions>,
    /// The node's config with the dynamic entries for this shard's broker layered over it
    /// (AlterConfigs); replaced whenever the metadata changes them.
    config: RefCell<Rc<BrokerConfig>>,
}

impl Shard {
    pub fn new(id: ShardId, node: Arc<NodeInfo>, mesh: Mesh<ShardMessage>) -> Rc<Shard> {
        let log_context = storage::LogContext::direct_io(
            node.limits.log_memory_per_shard_bytes,
            node.limits.open_segments_per_shard,
        );
        Shard::with_log_context(id, node, mesh, log_context)
    }

    /// A shard whose logs use `log_context`'s disk (the simulated one, for `in_process`).
    pub fn with_log_context(
        id: ShardId,
        node: Arc<NodeInfo>,
        mesh: Mesh<ShardMessage>,
        log_context: storage::LogContext,
    ) -> Rc<Shard> {
        let budget = REQUEST_MEMORY_PER_SHARD_BYTES.max(2 * node.config.socket_request_max_bytes());
        Rc::new(Shard {
            id,
            controller: (id == ShardId(0)).then(Controller::new),
            metadata: RefCell::new(ClusterMetadata::new()),
            topic_ids: RefCell::new(HashMap::new()),
            partitions: RefCell::new(HashMap::new()),
            mesh,
            pending: RefCell::new(HashMap::new()),
            acks: RefCell::new(HashMap::new()),
            acked: Event::new(),
            publishing: async_lock::Mutex::new(()),
            next_request_id: Cell::new(0),
            producer_ids: Cell::new((0, 0)),
            ready: Cell::new(false),
            ready_event: Event::new(),
            request_memory: MemoryBudget::new(budget),
            log_context,
            metrics: Rc::new(ShardMetrics::default()),
            metrics_pending: RefCell::new(HashMap::new()),
            node_ready: Cell::new(false),
            groups: GroupCoordinator::new(node.config.group_settings()),
            connections: Default::default(),
            replicas: RefCell::new(HashMap::new()),
            fetchers: RefCell::new(Default::default()),
            closing: Cell::new(false),
            incarnation: Cell::new(None),
            loading: RefCell::new(Default::default()),
            config: RefCell::new(Rc::new(node.config.clone())),
            fetch_sessions: RefCell::new(crate::kafka::fetch_sessions::FetchSessions::new(
                node.config.fetch_session_slots(),
                crate::limits::FETCH_SESSION_PARTITIONS_MAX,
                crate::limits::FETCH_SESSION_CACHED_PARTITIONS_MAX,
            )),
            node,
        })
    }

    pub fn metadata(&self) -> Ref<'_, ClusterMetadata> {
        self.metadata.borrow()
    }

    /// The config in force on this shard: static, with its dynamic entries layered over it.
    pub fn config(&self) -> Rc<BrokerConfig> {
        self.config.borrow().clone()
    }

    /// This shard's broker id, as clients see it.
    pub fn broker_id(&self) -> i32 {
        self.node.broker_id(self.id)
    }

    /// Every broker of the cluster as clients see it: this node's shards, then every other
    /// registered node's, with id, host, port and rack.
    pub fn cluster_brokers(&self) -> Vec<(i32, String, u16, Option<String>)> {
        let mut brokers: Vec<(i32, String, u16, Option<String>)> = self
            .node
            .brokers()
            .map(|(id, host, port)| (id, host.to_string(), port, self.node.rack.clone()))
            .collect();
        let metadata = self.metadata.borrow();
        for registration in metadata.other_live_nodes(self.node.node_id) {
            brokers.extend(
                registration.brokers().map(|(id, host, port)| {
                    (id, host.to_string(), port, registration.rack.clone())
                }),
            );
        }
        brokers.sort_by_key(|(id, _, _, _)| *id);
        brokers
    }

    /// Where clients reach `broker`: this node's advertised address for its own shards, the
    /// registered one for another node's; `None` for a broker no node has registered.
    pub fn broker_endpoint(&self, broker: i32) -> Option<(String, u16)> {
        let (node, shard) = crate::controller::metadata::broker_place(broker);
        if node == self.node.node_id {
            return self
                .node
                .advertised
                .get(usize::from(shard))
                .map(|(host, port)| (host.clone(), *port));
        }
        self.metadata
            .borrow()
            .endpoint(broker)
            .map(|(host, port)| (host.to_string(), port))
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
            Some((partition, leader)) if leader == self.broker_id() => self
                .groups
                .log(partition)
                .filter(|log| log.offline_reason().is_none())
                .ok_or(ErrorCode::CoordinatorNotAvailable),
            Some(_) => Err(ErrorCode::NotCoordinator),
            None => Err(ErrorCode::CoordinatorNotAvailable),
        }
    }

    /// The `__consumer_offsets` partition of `group_id` and the broker that leads it, if the
    /// topic exists.
    fn offsets_partition(&self, group_id: &str) -> Option<(i32, i32)> {
        let metadata = self.metadata.borrow();
        let topic = metadata.topics.get(OFFSETS_TOPIC)?;
        let partition = crate::groups::partition_for(group_id, topic.partition_count() as i32);
        let leader = topic.leader(usize::try_from(partition).ok()?)?;
        Some((partition, leader))
    }

    /// The broker coordinating `group_id`, creating the offsets topic first if it does not
    /// exist yet (as Kafka does on the first FindCoordinator).
    pub async fn find_coordinator(self: &Rc<Self>, group_id: &str) -> Result<i32, String> {
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

    /// Every partition this shard owns and serves, with its topic and index.
    pub fn owned_partitions(&self) -> Vec<(String, i32, Rc<PartitionLog>)> {
        let partitions = self.partitions.borrow();
        let mut owned = Vec::new();
        for (topic, slots) in partitions.iter() {
            for (index, slot) in slots.iter().enumerate() {
                if let Some(PartitionSlot::Online(log)) = slot {
                    owned.push((topic.clone(), index as i32, log.clone()));
                }
            }
        }
        owned
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
                ControllerReply::Topics(_)
                | ControllerReply::Configs(_)
                | ControllerReply::Quorum(_) => return Err("unexpected controller reply".into()),
            }
        }
    }

    /// Whether this shard refuses writes for lack of disk space.
    pub fn disk_full(&self) -> bool {
        self.log_context.space.refusing()
    }
}
