//! The controller: the single writer of cluster metadata, on shard 0.
//!
//! Mutations (CreateTopics, DeleteTopics, auto-creation) arrive from any shard, are applied one at
//! a time, persisted, and pushed to every shard; the requester gets its answer only after every
//! shard has applied the change, so a client that is told "created" finds the topic on whichever
//! shard it asks next.
//!
//! The controller decides and persists; pushing a change to every shard and waiting for them is
//! the host shard's job (`ControllerHost::publish`), so this module knows nothing of the mesh.

pub mod configs;
pub mod metadata;
pub mod quorum;

use std::cell::{Ref, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use tracing::info;

use crate::config::check_topic_config;
use crate::error_code::ErrorCode;
use crate::groups::OFFSETS_TOPIC;
use crate::limits::{PARTITIONS_PER_TOPIC_MAX, PRODUCER_ID_BLOCK_MAX, TOPIC_NAME_BYTES_MAX};
use crate::node::NodeInfo;
use configs::{ConfigAlteration, ConfigOutcome, ConfigResource};
use metadata::{ClusterMetadata, MetadataChange, TopicMetadata};
use quorum::{Quorum, QuorumHost};

/// What the controller needs of the shard it runs on.
pub trait ControllerHost {
    fn node(&self) -> &NodeInfo;
    fn metadata(&self) -> Ref<'_, ClusterMetadata>;
    /// Applies `change` on every shard (this one included) and returns once all have.
    fn publish(
        &self,
        change: MetadataChange,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>>;
    /// Partitions each shard may hold (`topic_partitions_per_shard`).
    fn partitions_per_shard_max(&self) -> usize;
    /// Whether the disk is too full to create anything (below `storage_min_free_bytes`).
    fn disk_full(&self) -> bool;
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewTopic {
    pub name: String,
    /// -1 for the broker default (`num.partitions`).
    pub num_partitions: i32,
    /// -1 for the broker default; anything above 1 is refused on a single node.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// Manual replica assignments are not supported: placement is the controller's job.
    pub has_assignments: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ControllerRequest {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    /// Creates `__consumer_offsets` (if it does not exist yet) with the broker's
    /// `offsets.topic.*` settings.
    CreateOffsetsTopic,
    /// A block of producer ids for a shard to hand out (InitProducerId) without asking again.
    AllocateProducerIds {
        count: i64,
    },
    /// A shard found partitions it cannot serve: every shard's Metadata should say so.
    ReportOffline(Vec<metadata::OfflinePartition>),
    /// AlterConfigs / IncrementalAlterConfigs on topic and broker resources (the handler has
    /// refused duplicates and unknown resource types); answered by `Configs`, in order.
    AlterConfigs {
        alterations: Vec<ConfigAlteration>,
        validate_only: bool,
    },
    /// CreatePartitions: answered by `Topics`, in order.
    CreatePartitions {
        topics: Vec<NewPartitions>,
        validate_only: bool,
    },
    /// DescribeQuorum: answered by `Quorum`.
    DescribeQuorum,
    /// A node registers at its start: its shards' endpoints and rack. Answered by `Topics`
    /// (empty) once committed.
    RegisterNode(metadata::NodeRegistration),
    /// A node is alive (every `broker.heartbeat.interval.ms`): answered by `Topics` (empty),
    /// or `Failed` starting with `UNREGISTERED` if the controller holds no registration of
    /// this incarnation (the node registers again).
    Heartbeat {
        node_id: i32,
        incarnation: uuid::Uuid,
    },
    /// A node is stopping (SIGTERM): it is fenced now, so the partitions it leads move to
    /// their ISR and its replicas leave the ISRs before it goes (Kafka's controlled
    /// shutdown). Answered by `Topics` (empty) once committed.
    ControlledShutdown {
        node_id: i32,
        incarnation: uuid::Uuid,
    },
    /// A partition's leader changes its ISR (Kafka's AlterPartition): the new ISR, made
    /// against the leadership of `partition_epoch`. Answered by `Topics` (empty) once
    /// committed, or `Failed` with the Kafka error's name first.
    AlterPartition {
        topic: String,
        partition: i32,
        leader: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
}

/// One topic of a CreatePartitions request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewPartitions {
    pub name: String,
    /// The partition count asked for (the new total).
    pub count: i32,
    /// Manual replica assignments are not supported, as in CreateTopics.
    pub has_assignments: bool,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ControllerReply {
    Topics(Vec<TopicOutcome>),
    /// Producer ids `first..first + count`, recorded durably as used before this reply.
    ProducerIds {
        first: i64,
        count: i64,
    },
    Configs(Vec<ConfigOutcome>),
    Quorum(quorum::QuorumStatus),
    Failed(String),
}

/// The outcome for one topic of a request.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TopicOutcome {
    pub name: String,
    pub error: ErrorCode,
    pub message: Option<String>,
    pub topic: Option<TopicMetadata>,
}

impl TopicOutcome {
    fn failed(name: &str, error: ErrorCode, message: impl Into<String>) -> TopicOutcome {
        TopicOutcome {
            name: name.to_string(),
            error,
            message: Some(message.into()),
            topic: None,
        }
    }
}

/// Checks a topic name as Kafka does: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "topic name is longer than {TOPIC_NAME_BYTES_MAX} characters"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name contains {bad:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// What the controller runs with once the metadata log is open.
pub struct QuorumParts {
    pub quorum: Rc<Quorum>,
    /// Applies what the log commits on the node's shards.
    pub host: Rc<dyn QuorumHost>,
    /// Carries Raft messages to the other voters.
    pub transport: Rc<dyn quorum::Transport>,
    /// With other voters: this node's id and where each voter's controller listens.
    pub route: Option<(i32, Vec<crate::config::Voter>)>,
}

/// Shard 0's controller state.
pub struct Controller {
    /// One mutation at a time.
    lock: async_lock::Mutex<()>,
    /// The metadata log, open from bootstrap on.
    quorum: RefCell<Option<Rc<Quorum>>>,
    /// With other voters: this node's id and where each voter's controller listens, to forward
    /// requests to the one that leads.
    route: RefCell<Option<(i32, Vec<crate::config::Voter>)>>,
    /// While this node leads: when each node last heartbeat, and since when it leads (a new
    /// leader waits a whole session before it fences anyone).
    heartbeats: RefCell<BTreeMap<i32, std::time::Instant>>,
    leading_since: std::cell::Cell<Option<std::time::Instant>>,
    leading_term: std::cell::Cell<u64>,
    /// Node starts that announced their controlled shutdown: a heartbeat of theirs that
    /// arrives after it does not unfence them.
    shut_down: RefCell<std::collections::BTreeSet<(i32, uuid::Uuid)>>,
}

/// How a heartbeat's refusal starts when the node must register again.
pub const UNREGISTERED: &str = "UNREGISTERED";

impl Controller {
    pub fn new() -> Controller {
        Controller {
            lock: async_lock::Mutex::new(()),
            quorum: RefCell::new(None),
            route: RefCell::new(None),
            heartbeats: RefCell::new(BTreeMap::new()),
            leading_since: std::cell::Cell::new(None),
            leading_term: std::cell::Cell::new(0),
            shut_down: RefCell::new(Default::default()),
        }
    }

    fn quorum(&self) -> Result<Rc<Quorum>, String> {
        self.quorum
            .borrow()
            .clone()
            .ok_or_else(|| "the metadata log is not open yet".to_string())
    }

    /// The open metadata log, if bootstrap has opened it (DescribeQuorum, metrics).
    pub fn open_quorum(&self) -> Option<Rc<Quorum>> {
        self.quorum.borrow().clone()
    }

    /// Commits `change` to the metadata log and returns once the quorum's driver has applied
    /// it on every shard of this node.
    pub async fn publish(&self, change: MetadataChange) -> Result<(), String> {
        self.quorum()?.append(&change).await
    }

    /// Publishes the metadata loaded at start to every shard, holding the lock like every
    /// mutation: what shards report while they open their logs (offline partitions) must come
    /// after the snapshot everywhere, not be overtaken and then overwritten by it.
    ///
    /// `repaired` says the metadata was changed at start (partitions of missing shards moved):
    /// the change is committed to the log first, as one whole-state entry.
    ///
    /// Then it starts the quorum's driver, which applies what is committed from here on through
    /// `quorum_host`.
    pub async fn bootstrap(
        &self,
        host: &dyn ControllerHost,
        parts: QuorumParts,
        snapshot: ClusterMetadata,
        repaired: bool,
    ) -> Result<(), String> {
        let QuorumParts {
            quorum,
            host: quorum_host,
            transport,
            route,
        } = parts;
        let _one_at_a_time = self.lock.lock().await;
        *self.quorum.borrow_mut() = Some(quorum.clone());
        *self.route.borrow_mut() = route;
        host.publish(MetadataChange::Snapshot(snapshot.clone()))
            .await?;
        shards::task::spawn(quorum.clone().run(quorum_host, transport)).detach();
        if repaired && quorum.is_leader() {
            // Applied, it changes nothing: the shards hold this state already.
            quorum.append(&MetadataChange::Snapshot(snapshot)).await?;
        } else if repaired {
            tracing::warn!(
                "the moved partitions are recorded only by a controller that leads; this \
                 node moves them again at each start until then"
            );
        }
        Ok(())
    }

    pub async fn handle(
        &self,
        host: &dyn ControllerHost,
        request: ControllerRequest,
    ) -> ControllerReply {
        let shard = host;
        // What a shard found offline is this node's to report; everything else is decided by
        // the controller that leads the quorum.
        if !matches!(request, ControllerRequest::ReportOffline(_)) {
            if let Some(reply) = self.forward(shard, &request).await {
                return reply;
            }
        }
        // A heartbeat is answered at once, never queued behind a long mutation: a node must
        // not be fenced because the controller was busy.
        if let ControllerRequest::Heartbeat {
            node_id,
            incarnation,
        } = request
        {
            return self.heartbeat(shard, node_id, incarnation).await;
        }
        // A read: answered at once, not queued behind the mutations.
        if let ControllerRequest::DescribeQuorum = request {
            return match self.quorum() {
                Ok(quorum) => ControllerReply::Quorum(quorum.status()),
                Err(reason) => ControllerReply::Failed(reason),
            };
        }
        let _one_at_a_time = self.lock.lock().await;
        match request {
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => ControllerReply::Topics(self.create_topics(shard, topics, validate_only).await),
            ControllerRequest::DeleteTopics { names } => {
                ControllerReply::Topics(self.delete_topics(shard, names).await)
            }
            ControllerRequest::AllocateProducerIds { count } => {
                self.allocate_producer_ids(shard, count).await
            }
            ControllerRequest::CreateOffsetsTopic => {
                ControllerReply::Topics(self.create_offsets_topic(shard).await)
            }
            ControllerRequest::AlterConfigs {
                alterations,
                validate_only,
            } => ControllerReply::Configs(
                self.alter_configs(shard, alterations, validate_only).await,
            ),
            ControllerRequest::CreatePartitions {
                topics,
                validate_only,
            } => {
                ControllerReply::Topics(self.create_partitions(shard, topics, validate_only).await)
            }
            ControllerRequest::DescribeQuorum | ControllerRequest::Heartbeat { .. } => {
                ControllerReply::Failed("answered above".into())
            }
            ControllerRequest::ControlledShutdown {
                node_id,
                incarnation,
            } => {
                self.shut_down.borrow_mut().insert((node_id, incarnation));
                if shard.metadata().fenced.contains(&node_id) {
                    return ControllerReply::Topics(Vec::new());
                }
                match self.publish(MetadataChange::NodeFenced { node_id }).await {
                    Ok(()) => {
                        info!(
                            node = node_id,
                            "a node is shutting down: fenced, its leaderships moved to the ISRs"
                        );
                        ControllerReply::Topics(Vec::new())
                    }
                    Err(reason) => ControllerReply::Failed(reason),
                }
            }
            ControllerRequest::AlterPartition {
                topic,
                partition,
                leader,
                partition_epoch,
                isr,
            } => {
                let checked = check_alter_partition(
                    &shard.metadata(),
                    &topic,
                    partition,
                    leader,
                    partition_epoch,
                    isr,
                );
                let leadership = match checked {
                    Ok(leadership) => leadership,
                    Err(refusal) => return ControllerReply::Failed(refusal),
                };
                let isr = leadership.isr.clone();
                match self
                    .publish(MetadataChange::LeadershipsChanged(vec![(
                        topic.clone(),
                        partition,
                        leadership,
                    )]))
                    .await
                {
                    Ok(()) => {
                        info!(%topic, partition, ?isr, "ISR changed");
                        ControllerReply::Topics(Vec::new())
                    }
                    Err(reason) => ControllerReply::Failed(reason),
                }
            }
            ControllerRequest::RegisterNode(registration) => {
                let node_id = registration.node_id;
                if let Some(refusal) = self.refuse_registration(shard, &registration) {
                    return ControllerReply::Failed(refusal);
                }
                match self
                    .publish(MetadataChange::NodeRegistered(registration))
                    .await
                {
                    Ok(()) => {
                        // A registration counts as a heartbeat: a node that registers again
                        // after a restart is not fenced on the word of its last life's.
                        self.heartbeats
                            .borrow_mut()
                            .insert(node_id, std::time::Instant::now());
                        info!(node = node_id, "a node registered");
                        ControllerReply::Topics(Vec::new())
                    }
                    Err(reason) => ControllerReply::Failed(reason),
                }
            }
            ControllerRequest::ReportOffline(partitions) => {
                // In memory only: a partition is found offline again at every start.
                match shard
                    .publish(MetadataChange::PartitionsOffline(partitions))
                    .await
                {
                    Ok(()) => ControllerReply::Topics(Vec::new()),
                    Err(reason) => ControllerReply::Failed(reason),
                }
            }
        }
    }

    /// Why a registration is refused: more shards than a node runs, or a second live process
    /// with a node id whose registered process still heartbeats (Kafka's
    /// DUPLICATE_BROKER_REGISTRATION).
    fn refuse_registration(
        &self,
        host: &dyn ControllerHost,
        registration: &metadata::NodeRegistration,
    ) -> Option<String> {
        let node_id = registration.node_id;
        if registration.endpoints.is_empty()
            || registration.endpoints.len() > crate::config::node::SHARDS_PER_NODE_MAX
            || !(0..=crate::config::node::NODE_ID_MAX).contains(&i64::from(node_id))
        {
            return Some(format!("node {node_id}'s registration is malformed"));
        }
        let session = host.node().config.millis("broker.session.timeout.ms");
        let live = host
            .metadata()
            .nodes
            .get(&node_id)
            .is_some_and(|known| known.incarnation != registration.incarnation)
            && self
                .heartbeats
                .borrow()
                .get(&node_id)
                .is_some_and(|last| last.elapsed() < session);
        live.then(|| {
            format!(
                "DUPLICATE_BROKER_REGISTRATION: node {node_id} is registered by another process \
                 that still heartbeats; two nodes cannot share a node.id"
            )
        })
    }

    async fn heartbeat(
        &self,
        host: &dyn ControllerHost,
        node_id: i32,
        incarnation: uuid::Uuid,
    ) -> ControllerReply {
        let (registered, fenced) = {
            let metadata = host.metadata();
            (
                metadata
                    .nodes
                    .get(&node_id)
                    .is_some_and(|registration| registration.incarnation == incarnation),
                metadata.fenced.contains(&node_id),
            )
        };
        if !registered {
            return ControllerReply::Failed(format!(
                "{UNREGISTERED}: node {node_id} has no registration of this start"
            ));
        }
        if self.shut_down.borrow().contains(&(node_id, incarnation)) {
            return ControllerReply::Failed(format!(
                "node {node_id} is shutting down; its heartbeats do not unfence it"
            ));
        }
        self.heartbeats
            .borrow_mut()
            .insert(node_id, std::time::Instant::now());
        if fenced {
            let _one_at_a_time = self.lock.lock().await;
            if let Err(reason) = self.publish(MetadataChange::NodeUnfenced { node_id }).await {
                return ControllerReply::Failed(reason);
            }
            info!(node = node_id, "a fenced node heartbeats again; unfenced");
        }
        ControllerReply::Topics(Vec::new())
    }

    /// While this node leads the quorum: fences every registered node that has not
    /// heartbeat within `session`. Runs on shard 0 (with other voters) for the node's life.
    pub async fn run_fencing(&self, host: &dyn ControllerHost, session: std::time::Duration) {
        let every = (session / 4).max(std::time::Duration::from_millis(100));
        loop {
            shards::task::sleep(every).await;
            let Ok(quorum) = self.quorum() else {
                continue;
            };
            let now = std::time::Instant::now();
            if !quorum.is_leader() {
                self.leading_since.set(None);
                self.heartbeats.borrow_mut().clear();
                continue;
            }
            // A new term is a new leadership, even if this node led before it: heartbeats
            // meanwhile went to another leader.
            let term = quorum.position().1;
            if self.leading_term.replace(term) != term {
                self.leading_since.set(None);
                self.heartbeats.borrow_mut().clear();
            }
            let since = *self.leading_since.get().get_or_insert(now);
            self.leading_since.set(Some(since));
            let uncommitted_id = {
                let metadata = host.metadata();
                (!metadata.cluster_id_committed).then(|| metadata.cluster_id.clone())
            };
            if let Some(cluster_id) = uncommitted_id {
                let _one_at_a_time = self.lock.lock().await;
                match self
                    .publish(MetadataChange::ClusterIdCommitted {
                        cluster_id: cluster_id.clone(),
                    })
                    .await
                {
                    Ok(()) => info!(%cluster_id, "committed the cluster id"),
                    Err(reason) => tracing::warn!(%reason, "committing the cluster id"),
                }
            }
            if now.duration_since(since) < session {
                continue;
            }
            let silent: Vec<i32> = {
                let metadata = host.metadata();
                let heartbeats = self.heartbeats.borrow();
                metadata
                    .nodes
                    .keys()
                    .filter(|node| **node != host.node().node_id && !metadata.fenced.contains(node))
                    .filter(|node| {
                        heartbeats
                            .get(node)
                            .is_none_or(|last| now.duration_since(*last) >= session)
                    })
                    .copied()
                    .collect()
            };
            for node_id in silent {
                let _one_at_a_time = self.lock.lock().await;
                match self.publish(MetadataChange::NodeFenced { node_id }).await {
                    Ok(()) => tracing::warn!(
                        node = node_id,
                        "fenced a node that stopped heartbeating (broker.session.timeout.ms)"
                    ),
                    Err(reason) => tracing::warn!(node = node_id, %reason, "fencing a node"),
                }
            }
        }
    }

    /// Sends `request` to the controller that leads, if that is another node; `None` when this
    /// node decides (it leads, or it is a quorum of one).
    async fn forward(
        &self,
        host: &dyn ControllerHost,
        request: &ControllerRequest,
    ) -> Option<ControllerReply> {
        let (me, voters) = self.route.borrow().clone()?;
        let quorum = self.quorum().ok()?;
        if quorum.is_leader() {
            return None;
        }
        let Some(leader) = quorum.leader() else {
            return Some(ControllerReply::Failed(
                "the controller quorum has no leader yet".into(),
            ));
        };
        let voter = voters.iter().find(|voter| voter.id == leader)?;
        // Answer a change that clients see (topics, partitions, configs) only once this node
        // applies what the leader had: a client told a topic exists finds it on this node's
        // shards too. Heartbeats, registrations, reads and producer ids need no wait, and a
        // slow node's heartbeat must not be late for it.
        let wait = matches!(
            request,
            ControllerRequest::CreateTopics { .. }
                | ControllerRequest::DeleteTopics { .. }
                | ControllerRequest::CreateOffsetsTopic
                | ControllerRequest::AlterConfigs { .. }
                | ControllerRequest::CreatePartitions { .. }
                | ControllerRequest::AlterPartition { .. }
                | ControllerRequest::ControlledShutdown { .. }
        );
        let cluster = host.metadata().committed_cluster_id();
        match quorum::calls::call(me, voter, cluster.as_deref(), request).await {
            Ok((reply, applied)) => {
                if wait
                    && !quorum
                        .wait_applied(applied, quorum::calls::CALL_TIMEOUT)
                        .await
                {
                    return Some(ControllerReply::Failed(format!(
                        "this node did not apply the controller's change {applied} in time"
                    )));
                }
                Some(reply)
            }
            Err(reason) => Some(ControllerReply::Failed(reason)),
        }
    }

    /// A request another node forwarded: answered only if this node leads (no second hop),
    /// with the log index applied by then.
    pub async fn handle_forwarded(
        &self,
        host: &dyn ControllerHost,
        from: i32,
        request: ControllerRequest,
    ) -> (ControllerReply, u64) {
        let Ok(quorum) = self.quorum() else {
            return (
                ControllerReply::Failed("the metadata log is not open yet".into()),
                0,
            );
        };
        // A node speaks for itself only: its registration and heartbeats carry its own id.
        let speaks_for = match &request {
            ControllerRequest::RegisterNode(registration) => Some(registration.node_id),
            ControllerRequest::Heartbeat { node_id, .. }
            | ControllerRequest::ControlledShutdown { node_id, .. } => Some(*node_id),
            ControllerRequest::AlterPartition { leader, .. } => {
                Some(metadata::broker_place(*leader).0)
            }
            _ => None,
        };
        if speaks_for.is_some_and(|node_id| node_id != from) {
            return (
                ControllerReply::Failed(format!("node {from} spoke for another node")),
                0,
            );
        }
        if !quorum.is_leader() || matches!(request, ControllerRequest::ReportOffline(_)) {
            return (
                ControllerReply::Failed(format!(
                    "node {from} asked a node that is not the controller"
                )),
                0,
            );
        }
        let reply = self.handle(host, request).await;
        (reply, quorum.position().0)
    }

    /// Producer ids are unique for the life of the cluster: the next free id is persisted before
    /// a block is handed out, so a restart never reissues one.
    async fn allocate_producer_ids(
        &self,
        shard: &dyn ControllerHost,
        count: i64,
    ) -> ControllerReply {
        let first = shard.metadata().next_producer_id;
        let Some(end) = first.checked_add(count.clamp(1, PRODUCER_ID_BLOCK_MAX)) else {
            return ControllerReply::Failed("producer ids are exhausted".into());
        };
        if let Err(error) = self
            .publish(MetadataChange::ProducerIdsAllocated { next: end })
            .await
        {
            return ControllerReply::Failed(error);
        }
        ControllerReply::ProducerIds {
            first,
            count: end - first,
        }
    }

    /// The offsets topic: compacted (Kafka's setting; compaction itself is not implemented yet),
    /// durable like every topic, placed across shards like any other.
    async fn create_offsets_topic(&self, shard: &dyn ControllerHost) -> Vec<TopicOutcome> {
        if shard.metadata().topics.contains_key(OFFSETS_TOPIC) {
            return Vec::new();
        }
        let settings = shard.node().config.group_settings();
        let candidates = candidate_brokers(shard);
        // Kafka's rule: the offsets topic waits until the cluster has the nodes its
        // replication factor needs (a node alone has one replica, whatever it says).
        let replication_factor = if shard.node().voters.is_empty() {
            1
        } else {
            settings.offsets_replication_factor
        };
        if replication_factor > candidates.nodes() {
            return vec![TopicOutcome::failed(
                OFFSETS_TOPIC,
                ErrorCode::CoordinatorNotAvailable,
                format!(
                    "{OFFSETS_TOPIC} needs {replication_factor} live nodes \
                     (offsets.topic.replication.factor); {} are live",
                    candidates.nodes()
                ),
            )];
        }
        let existing = shard.metadata().partitions_on(&candidates.ids);
        let mut extra = vec![0; candidates.ids.len()];
        let replicas = if replication_factor == 1 {
            on_brokers(
                &candidates.ids,
                ClusterMetadata::place(&existing, settings.offsets_partitions as usize, &mut extra),
            )
        } else {
            ClusterMetadata::place_replicas(
                &candidates.ids,
                &candidates.racks,
                &existing,
                settings.offsets_partitions as usize,
                replication_factor,
                &mut extra,
            )
        };
        let topic = TopicMetadata {
            name: OFFSETS_TOPIC.to_string(),
            topic_id: uuid::Uuid::new_v4(),
            leaderships: Vec::new(),
            replicas,
            configs: BTreeMap::from([
                ("cleanup.policy".to_string(), "compact".to_string()),
                (
                    "segment.bytes".to_string(),
                    settings.offsets_segment_bytes.to_string(),
                ),
            ]),
        };
        info!(
            partitions = topic.partition_count(),
            "creating {OFFSETS_TOPIC}"
        );
        match self
            .publish(MetadataChange::TopicsCreated(vec![topic.clone()]))
            .await
        {
            Ok(()) => vec![TopicOutcome {
                name: OFFSETS_TOPIC.to_string(),
                error: ErrorCode::None,
                message: None,
                topic: Some(topic),
            }],
            Err(reason) => vec![TopicOutcome::failed(
                OFFSETS_TOPIC,
                ErrorCode::KafkaStorageError,
                reason,
            )],
        }
    }

    async fn create_topics(
        &self,
        shard: &dyn ControllerHost,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let brokers = candidate_brokers(shard);
        let mut outcomes = Vec::with_capacity(topics.len());
        let mut created = Vec::new();
        let mut extra = vec![0usize; brokers.ids.len()];
        let per_shard_max = shard.partitions_per_shard_max();
        {
            let metadata = shard.metadata();
            let existing = metadata.partitions_on(&brokers.ids);
            for topic in &topics {
                match self.check_new_topic(shard, &metadata, topic, &created, brokers.nodes()) {
                    Err((error, message)) => {
                        outcomes.push(TopicOutcome::failed(&topic.name, error, message))
                    }
                    Ok((partitions, replication_factor)) => {
                        let placement = match place_within_cap(
                            &brokers,
                            &existing,
                            partitions as usize,
                            replication_factor,
                            &mut extra,
                            per_shard_max,
                        ) {
                            Ok(placement) => placement,
                            Err((full, would_hold)) => {
                                outcomes.push(TopicOutcome::failed(
                                &topic.name,
                                ErrorCode::InvalidPartitions,
                                format!(
                                    "Cannot create {partitions} partitions: broker {full} would hold {} \
                                     partitions, more than topic_partitions_per_shard ({per_shard_max}) \
                                     allows; the cluster holds at most {} partitions",
                                    would_hold,
                                    per_shard_max * brokers.ids.len()
                                ),
                            ));
                                continue;
                            }
                        };
                        let created_topic = TopicMetadata {
                            name: topic.name.clone(),
                            topic_id: uuid::Uuid::new_v4(),
                            leaderships: Vec::new(),
                            replicas: placement,
                            configs: topic.configs.clone(),
                        };
                        outcomes.push(TopicOutcome {
                            name: topic.name.clone(),
                            error: ErrorCode::None,
                            message: None,
                            topic: Some(created_topic.clone()),
                        });
                        created.push(created_topic);
                    }
                }
            }
        }
        if validate_only || created.is_empty() {
            return outcomes;
        }
        let names: Vec<String> = created.iter().map(|topic| topic.name.clone()).collect();
        if let Err(reason) = self.publish(MetadataChange::TopicsCreated(created)).await {
            for outcome in outcomes.iter_mut().filter(|o| o.error == ErrorCode::None) {
                *outcome =
                    TopicOutcome::failed(&outcome.name, ErrorCode::KafkaStorageError, &reason);
            }
            return outcomes;
        }
        info!(topics = ?names, "topics created");
        outcomes
    }

    fn check_new_topic(
        &self,
        shard: &dyn ControllerHost,
        metadata: &metadata::ClusterMetadata,
        topic: &NewTopic,
        created: &[TopicMetadata],
        live_nodes: usize,
    ) -> Result<(i32, usize), (ErrorCode, String)> {
        let name = &topic.name;
        validate_topic_name(name).map_err(|reason| (ErrorCode::InvalidTopicException, reason))?;
        if shard.disk_full() {
            return Err((
                ErrorCode::KafkaStorageError,
                "the disk is full (free space is below storage_min_free_bytes): no topic can be \
                 created until space is freed"
                    .into(),
            ));
        }
        if name == OFFSETS_TOPIC && !metadata.topics.contains_key(name) {
            return Err((
                ErrorCode::InvalidTopicException,
                format!("{OFFSETS_TOPIC} is internal; the broker creates it for consumer groups"),
            ));
        }
        if metadata.topics.contains_key(name) || created.iter().any(|t| &t.name == name) {
            return Err((
                ErrorCode::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        if topic.has_assignments {
            return Err((
                ErrorCode::InvalidReplicaAssignment,
                "manual replica assignment is not supported; partitions are placed by the broker"
                    .into(),
            ));
        }
        let partitions = if topic.num_partitions == -1 {
            shard.node().config.num_partitions()
        } else {
            topic.num_partitions
        };
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err((
                ErrorCode::InvalidPartitions,
                format!("number of partitions must be between 1 and {PARTITIONS_PER_TOPIC_MAX}"),
            ));
        }
        let replication_factor = if topic.replication_factor == -1 {
            shard.node().config.default_replication_factor()
        } else {
            i64::from(topic.replication_factor)
        };
        // Kafka's checks and words: at least 1, and no more than the nodes that can hold a
        // replica each (a node's shards are one failure domain, so never two replicas).
        if replication_factor < 1 {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ));
        }
        if replication_factor > live_nodes as i64 {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "Unable to replicate the partition {replication_factor} time(s): The target \
                     replication factor of {replication_factor}{} cannot be reached because only \
                     {live_nodes} node(s) are registered and unfenced.",
                    if topic.replication_factor == -1 {
                        " (default.replication.factor)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        for (config, value) in &topic.configs {
            check_topic_config(config, value)
                .map_err(|error| (ErrorCode::InvalidConfig, error.to_string()))?;
        }
        Ok((partitions, replication_factor as usize))
    }

    /// Works out every resource's new configs, then (unless validating) persists and publishes
    /// them, topics in one change and broker resources in another. Live logs pick the new
    /// values up as their shards apply the change.
    async fn alter_configs(
        &self,
        shard: &dyn ControllerHost,
        alterations: Vec<ConfigAlteration>,
        validate_only: bool,
    ) -> Vec<ConfigOutcome> {
        let mut outcomes = Vec::with_capacity(alterations.len());
        let mut topic_changes = Vec::new();
        let mut broker_changes = Vec::new();
        {
            let metadata = shard.metadata();
            let node = shard.node();
            for alteration in &alterations {
                let outcome = match &alteration.resource {
                    ConfigResource::Topic(name) => {
                        check_topic_resource(&metadata, &alteration.resource, name, alteration)
                            .map(|configs| topic_changes.push((name.clone(), configs)))
                    }
                    ConfigResource::Broker(name) => {
                        check_broker_resource(node, name).and_then(|()| {
                            let empty = BTreeMap::new();
                            let current = metadata.broker_configs.get(name).unwrap_or(&empty);
                            configs::altered(&alteration.resource, current, &alteration.change)
                                .map(|configs| broker_changes.push((name.clone(), configs)))
                        })
                    }
                };
                outcomes.push(match outcome {
                    Ok(()) => ConfigOutcome::ok(),
                    Err((error, message)) => ConfigOutcome::failed(error, message),
                });
            }
        }
        if validate_only {
            return outcomes;
        }
        let resource_of = |alteration: &ConfigAlteration| alteration.resource.clone();
        for (change, is_topic) in [
            (MetadataChange::TopicConfigsChanged(topic_changes), true),
            (MetadataChange::BrokerConfigsChanged(broker_changes), false),
        ] {
            let empty = match &change {
                MetadataChange::TopicConfigsChanged(changes)
                | MetadataChange::BrokerConfigsChanged(changes) => changes.is_empty(),
                _ => true,
            };
            if empty {
                continue;
            }
            if let Err(reason) = self.publish(change).await {
                for (outcome, alteration) in outcomes.iter_mut().zip(&alterations) {
                    let matches =
                        matches!(resource_of(alteration), ConfigResource::Topic(_)) == is_topic;
                    if matches && outcome.error == ErrorCode::None {
                        *outcome = ConfigOutcome::failed(ErrorCode::KafkaStorageError, &reason);
                    }
                }
            }
        }
        let altered = outcomes
            .iter()
            .filter(|outcome| outcome.error == ErrorCode::None)
            .count();
        if altered > 0 {
            info!(resources = altered, "configs altered");
        }
        outcomes
    }

    /// Adds partitions to topics, each placed on the least-loaded shard, within the per-shard
    /// cap; the new partitions open on their shards before the answer.
    async fn create_partitions(
        &self,
        shard: &dyn ControllerHost,
        topics: Vec<NewPartitions>,
        validate_only: bool,
    ) -> Vec<TopicOutcome> {
        let brokers = candidate_brokers(shard);
        let per_shard_max = shard.partitions_per_shard_max();
        let mut outcomes = Vec::with_capacity(topics.len());
        let mut additions = Vec::new();
        let mut extra = vec![0usize; brokers.ids.len()];
        {
            let metadata = shard.metadata();
            let existing = metadata.partitions_on(&brokers.ids);
            for request in &topics {
                let added = match check_new_partitions(shard, &metadata, request) {
                    Err((error, message)) => {
                        outcomes.push(TopicOutcome::failed(&request.name, error, message));
                        continue;
                    }
                    Ok(added) => added,
                };
                // New partitions have the topic's replication factor.
                let replication_factor = metadata
                    .topics
                    .get(&request.name)
                    .map_or(1, TopicMetadata::replication_factor);
                if replication_factor > brokers.nodes() {
                    outcomes.push(TopicOutcome::failed(
                        &request.name,
                        ErrorCode::InvalidReplicationFactor,
                        format!(
                            "Unable to replicate the partition {replication_factor} time(s): \
                             only {} node(s) are registered and unfenced.",
                            brokers.nodes()
                        ),
                    ));
                    continue;
                }
                let owners = match place_within_cap(
                    &brokers,
                    &existing,
                    added,
                    replication_factor,
                    &mut extra,
                    per_shard_max,
                ) {
                    Ok(owners) => owners,
                    Err((full, would_hold)) => {
                        outcomes.push(TopicOutcome::failed(
                            &request.name,
                            ErrorCode::InvalidPartitions,
                            format!(
                            "Cannot add {added} partitions: broker {full} would hold {would_hold} \
                             partitions, more than topic_partitions_per_shard ({per_shard_max}) \
                             allows"
                        ),
                        ));
                        continue;
                    }
                };
                outcomes.push(TopicOutcome {
                    name: request.name.clone(),
                    error: ErrorCode::None,
                    message: None,
                    topic: None,
                });
                additions.push((request.name.clone(), owners));
            }
        }
        if validate_only || additions.is_empty() {
            return outcomes;
        }
        let added: Vec<(String, usize)> = additions
            .iter()
            .map(|(name, owners)| (name.clone(), owners.len()))
            .collect();
        if let Err(reason) = self
            .publish(MetadataChange::PartitionsAdded(additions))
            .await
        {
            for outcome in outcomes.iter_mut().filter(|o| o.error == ErrorCode::None) {
                *outcome =
                    TopicOutcome::failed(&outcome.name, ErrorCode::KafkaStorageError, &reason);
            }
            return outcomes;
        }
        info!(topics = ?added, "partitions added");
        outcomes
    }

    async fn delete_topics(
        &self,
        shard: &dyn ControllerHost,
        names: Vec<String>,
    ) -> Vec<TopicOutcome> {
        let mut outcomes = Vec::with_capacity(names.len());
        let mut deleted = Vec::new();
        {
            let metadata = shard.metadata();
            for name in &names {
                if name == OFFSETS_TOPIC {
                    outcomes.push(TopicOutcome::failed(
                        name,
                        ErrorCode::InvalidTopicException,
                        format!("{OFFSETS_TOPIC} is internal and cannot be deleted"),
                    ));
                    continue;
                }
                match metadata.topics.get(name) {
                    Some(topic) if !deleted.contains(name) => {
                        deleted.push(name.clone());
                        outcomes.push(TopicOutcome {
                            name: name.clone(),
                            error: ErrorCode::None,
                            message: None,
                            topic: Some(topic.clone()),
                        });
                    }
                    _ => outcomes.push(TopicOutcome::failed(
                        name,
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    )),
                }
            }
        }
        if deleted.is_empty() {
            return outcomes;
        }
        if let Err(reason) = self
            .publish(MetadataChange::TopicsDeleted(deleted.clone()))
            .await
        {
            for outcome in outcomes.iter_mut().filter(|o| o.error == ErrorCode::None) {
                *outcome =
                    TopicOutcome::failed(&outcome.name, ErrorCode::KafkaStorageError, &reason);
            }
            return outcomes;
        }
        info!(topics = ?deleted, "topics deleted");
        outcomes
    }
}

/// A leader's AlterPartition checked as Kafka's controller checks it, and the leadership it
/// makes; or why not, the Kafka error's name first:
/// - the partition must exist and be led by `leader` (NOT_LEADER_OR_FOLLOWER);
/// - it must be made against the current state (INVALID_UPDATE_VERSION): an ISR change the
///   controller made since (a fenced follower removed) is not undone by an older request;
/// - the ISR must be replicas of the partition, without repeats, including the leader
///   (INVALID_REQUEST);
/// - a replica joining the ISR must be on a node that is not fenced (INELIGIBLE_REPLICA).
fn check_alter_partition(
    metadata: &ClusterMetadata,
    topic: &str,
    partition: i32,
    leader: i32,
    partition_epoch: i32,
    isr: Vec<i32>,
) -> Result<metadata::Leadership, String> {
    let current = metadata
        .topics
        .get(topic)
        .zip(usize::try_from(partition).ok())
        .and_then(|(found, index)| Some((found.leadership(index)?, &found.replicas[index])));
    let Some((current, replicas)) = current else {
        return Err(format!(
            "UNKNOWN_TOPIC_OR_PARTITION: {topic}-{partition} does not exist"
        ));
    };
    if current.leader != leader {
        return Err(format!(
            "NOT_LEADER_OR_FOLLOWER: broker {leader} does not lead {topic}-{partition}; {} does",
            current.leader
        ));
    }
    if current.partition_epoch != partition_epoch {
        return Err(format!(
            "INVALID_UPDATE_VERSION: {topic}-{partition} is at partition epoch {}, not {partition_epoch}",
            current.partition_epoch
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if !isr.contains(&leader)
        || !isr
            .iter()
            .all(|broker| replicas.contains(broker) && seen.insert(*broker))
    {
        return Err(format!(
            "INVALID_REQUEST: ISR {isr:?} of {topic}-{partition} must be distinct replicas of              {replicas:?} including the leader"
        ));
    }
    if let Some(fenced) = isr.iter().find(|broker| {
        !current.isr.contains(broker)
            && metadata
                .fenced
                .contains(&metadata::broker_place(**broker).0)
    }) {
        return Err(format!(
            "INELIGIBLE_REPLICA: broker {fenced} is on a fenced node and cannot join the ISR of              {topic}-{partition}"
        ));
    }
    // Kept in replica order, whatever order the leader sent.
    let isr = replicas
        .iter()
        .copied()
        .filter(|broker| isr.contains(broker))
        .collect();
    Ok(metadata::Leadership {
        leader,
        leader_epoch: current.leader_epoch,
        partition_epoch: current.partition_epoch + 1,
        isr,
    })
}

/// Places `count` new partitions on `brokers` (see `ClusterMetadata::place`) unless that
/// would put a broker past `per_shard_max`: each partition holds an open file, a flusher and
/// memory on its shard, so a shard takes at most `topic_partitions_per_shard` (Redpanda's
/// rule). On refusal `extra` is left as it was, and the answer is the first broker over and
/// what it would hold.
fn place_within_cap(
    brokers: &Candidates,
    existing: &[usize],
    count: usize,
    replication_factor: usize,
    extra: &mut Vec<usize>,
    per_shard_max: usize,
) -> Result<Vec<Vec<i32>>, (i32, usize)> {
    let before = extra.clone();
    let placement = if replication_factor <= 1 {
        on_brokers(&brokers.ids, ClusterMetadata::place(existing, count, extra))
    } else {
        ClusterMetadata::place_replicas(
            &brokers.ids,
            &brokers.racks,
            existing,
            count,
            replication_factor,
            extra,
        )
    };
    match (0..existing.len()).find(|index| existing[*index] + extra[*index] > per_shard_max) {
        Some(full) => {
            let would_hold = existing[full] + extra[full];
            *extra = before;
            Err((brokers.ids[full], would_hold))
        }
        None => Ok(placement),
    }
}

/// Where new partitions may go: broker ids in order, and each node's rack.
struct Candidates {
    ids: Vec<i32>,
    racks: BTreeMap<i32, Option<String>>,
}

impl Candidates {
    fn nodes(&self) -> usize {
        self.racks.len()
    }
}

/// Where new partitions may go: every shard of this node and of every other registered node,
/// as broker ids, in order.
fn candidate_brokers(host: &dyn ControllerHost) -> Candidates {
    let node = host.node();
    let mut brokers: Vec<i32> = node.brokers().map(|(id, _, _)| id).collect();
    let mut racks = BTreeMap::from([(node.node_id, node.rack.clone())]);
    for registration in host.metadata().other_live_nodes(node.node_id) {
        brokers.extend(registration.brokers().map(|(id, _, _)| id));
        racks.insert(registration.node_id, registration.rack.clone());
    }
    brokers.sort_unstable();
    Candidates {
        ids: brokers,
        racks,
    }
}

/// Partitions placed by index into `brokers`: one replica each.
fn on_brokers(brokers: &[i32], placement: Vec<u16>) -> Vec<Vec<i32>> {
    placement
        .into_iter()
        .map(|index| vec![brokers[usize::from(index)]])
        .collect()
}

/// A topic resource's new overrides, or why not: the name first, then the configs, then
/// whether the topic exists (Kafka's order, so a bad key on a missing topic is INVALID_CONFIG).
fn check_topic_resource(
    metadata: &ClusterMetadata,
    resource: &ConfigResource,
    name: &str,
    alteration: &ConfigAlteration,
) -> Result<BTreeMap<String, String>, (ErrorCode, String)> {
    if name.is_empty() {
        return Err((
            ErrorCode::InvalidRequest,
            "Default topic resources are not allowed.".into(),
        ));
    }
    validate_topic_name(name).map_err(|reason| (ErrorCode::InvalidTopicException, reason))?;
    let empty = BTreeMap::new();
    let current = metadata
        .topics
        .get(name)
        .map_or(&empty, |topic| &topic.configs);
    let next = configs::altered(resource, current, &alteration.change)?;
    if !metadata.topics.contains_key(name) {
        return Err((
            ErrorCode::UnknownTopicOrPartition,
            format!("The topic '{name}' does not exist."),
        ));
    }
    Ok(next)
}

/// A broker resource names the cluster-wide defaults ("") or one of this node's brokers.
fn check_broker_resource(node: &NodeInfo, name: &str) -> Result<(), (ErrorCode, String)> {
    if name.is_empty() {
        return Ok(());
    }
    let id: i32 = name.parse().map_err(|_| {
        (
            ErrorCode::InvalidRequest,
            format!("Node id must be an integer, but it is: {name}"),
        )
    })?;
    // Stored and looked up by the id's canonical spelling: "00" or "+0" would be stored and
    // never found.
    if node.brokers().any(|(broker, _, _)| broker == id) && id.to_string() == name {
        Ok(())
    } else {
        let ours: Vec<String> = node
            .brokers()
            .map(|(broker, _, _)| broker.to_string())
            .collect();
        Err((
            ErrorCode::InvalidRequest,
            format!(
                "Unexpected broker id, expected one of {}, but received {name}",
                ours.join(", ")
            ),
        ))
    }
}

/// How many partitions a CreatePartitions request adds to a topic, or why it cannot.
fn check_new_partitions(
    shard: &dyn ControllerHost,
    metadata: &ClusterMetadata,
    request: &NewPartitions,
) -> Result<usize, (ErrorCode, String)> {
    let name = &request.name;
    let Some(topic) = metadata.topics.get(name) else {
        return Err((
            ErrorCode::UnknownTopicOrPartition,
            format!("The topic '{name}' does not exist."),
        ));
    };
    let current = topic.partition_count() as i32;
    if request.count == current {
        return Err((
            ErrorCode::InvalidPartitions,
            format!("Topic already has {current} partition(s)."),
        ));
    }
    if request.count < current {
        return Err((
            ErrorCode::InvalidPartitions,
            format!(
                "The topic {name} currently has {current} partition(s); {} would not be an \
                 increase.",
                request.count
            ),
        ));
    }
    if request.count > PARTITIONS_PER_TOPIC_MAX {
        return Err((
            ErrorCode::InvalidPartitions,
            format!("number of partitions must be between 1 and {PARTITIONS_PER_TOPIC_MAX}"),
        ));
    }
    if name == OFFSETS_TOPIC {
        // Kafka allows it and warns; every group whose hash lands elsewhere would lose its
        // committed offsets, so it is refused here.
        return Err((
            ErrorCode::InvalidPartitions,
            format!(
                "partitions cannot be added to {OFFSETS_TOPIC}: groups would move to other \
                 partitions and lose their committed offsets"
            ),
        ));
    }
    if request.has_assignments {
        return Err((
            ErrorCode::InvalidReplicaAssignment,
            "manual replica assignment is not supported; partitions are placed by the broker"
                .into(),
        ));
    }
    if shard.disk_full() {
        return Err((
            ErrorCode::KafkaStorageError,
            "the disk is full (free space is below storage_min_free_bytes): no partition can be \
             added until space is freed"
                .into(),
        ));
    }
    Ok((request.count - current) as usize)
}

impl Default for Controller {
    fn default() -> Self {
        Controller::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name("naïve").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    /// AlterPartition is taken only from the partition's leader, against its current partition
    /// epoch, for an ISR of distinct replicas that includes the leader, and adds no replica of
    /// a fenced node; the ISR it makes is in replica order, at the next partition epoch.
    #[test]
    fn alter_partition_is_checked_as_kafkas_controller_checks_it() {
        let mut metadata = ClusterMetadata::new();
        metadata.apply(&MetadataChange::TopicsCreated(vec![TopicMetadata {
            name: "t".into(),
            topic_id: uuid::Uuid::new_v4(),
            replicas: vec![vec![0, 1000, 2000]],
            configs: BTreeMap::new(),
            leaderships: Vec::new(),
        }]));
        let check = |metadata: &ClusterMetadata, leader, epoch, isr: Vec<i32>| {
            check_alter_partition(metadata, "t", 0, leader, epoch, isr)
        };
        let shrunk = check(&metadata, 0, 0, vec![1000, 0]).unwrap();
        assert_eq!(shrunk.isr, vec![0, 1000]);
        assert_eq!(shrunk.partition_epoch, 1);
        assert_eq!(shrunk.leader, 0);
        let refused = |result: Result<metadata::Leadership, String>, code: &str| {
            let reason = result.unwrap_err();
            assert!(reason.starts_with(code), "{reason}");
        };
        refused(
            check(&metadata, 1000, 0, vec![1000]),
            "NOT_LEADER_OR_FOLLOWER",
        );
        refused(check(&metadata, 0, 5, vec![0]), "INVALID_UPDATE_VERSION");
        refused(check(&metadata, 0, 0, vec![1000, 2000]), "INVALID_REQUEST");
        refused(check(&metadata, 0, 0, vec![0, 0]), "INVALID_REQUEST");
        refused(check(&metadata, 0, 0, vec![0, 3000]), "INVALID_REQUEST");
        refused(
            check_alter_partition(&metadata, "t", 1, 0, 0, vec![0]),
            "UNKNOWN_TOPIC_OR_PARTITION",
        );
        metadata.apply(&MetadataChange::NodeFenced { node_id: 2 });
        let isr = metadata.topics["t"].leadership(0).unwrap();
        assert_eq!(isr.isr, vec![0, 1000]);
        refused(
            check(&metadata, 0, isr.partition_epoch, vec![0, 1000, 2000]),
            "INELIGIBLE_REPLICA",
        );
        metadata.apply(&MetadataChange::NodeUnfenced { node_id: 2 });
        let grown = check(&metadata, 0, isr.partition_epoch, vec![2000, 0, 1000]).unwrap();
        assert_eq!(grown.isr, vec![0, 1000, 2000]);
    }
}
