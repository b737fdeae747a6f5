//! The cluster metadata: topics, their ids, partition placement and config overrides.
//!
//! The controller on shard 0 owns the authoritative copy and persists it; every shard keeps a
//! read-only copy that the controller updates with `MetadataChange`s over the mesh. Placement is
//! stored, never recomputed: a partition stays on the shard it was created on across restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shards::ShardId;

/// Config names and values.
pub type Configs = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredTopic")]
pub struct TopicMetadata {
    pub name: String,
    pub topic_id: uuid::Uuid,
    /// Each partition's replicas, by partition index, as broker ids (shard s of node n is
    /// broker `n * 1000 + s`); the first is the preferred leader. One replica each until
    /// replication lands.
    pub replicas: Vec<Vec<i32>>,
    /// Topic config overrides (Kafka names); everything else falls back to broker defaults.
    pub configs: BTreeMap<String, String>,
    /// Each partition's leadership and in-sync replicas, by partition index, once it changed
    /// from the initial one (see `leadership`); shorter than `replicas`, or empty, otherwise.
    #[serde(default)]
    pub leaderships: Vec<Leadership>,
}

/// A partition's leader and in-sync replicas as the controller decided them (the fields of
/// Kafka's PartitionRecord that clients and replicas act on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    pub leader: i32,
    pub leader_epoch: i32,
    /// Bumped by every change of the leader or the ISR (Kafka's partition epoch): an
    /// AlterPartition made against an older state is refused.
    pub partition_epoch: i32,
    /// The in-sync replicas, leader included, in replica order.
    pub isr: Vec<i32>,
}

impl Leadership {
    /// A new partition's: its first replica leads, in epoch 0, with every replica in sync.
    pub fn initial(replicas: &[i32]) -> Leadership {
        Leadership {
            leader: replicas.first().copied().unwrap_or(-1),
            leader_epoch: 0,
            partition_epoch: 0,
            isr: replicas.to_vec(),
        }
    }
}

/// A topic as stored: before cluster mode, `metadata.json` held each partition's owning shard
/// (`partitions`) instead of its replicas; those shards are node 0's brokers, and a node with
/// another id moves them to its own when it imports the file (`adopt_legacy_node`).
#[derive(Deserialize)]
struct StoredTopic {
    name: String,
    topic_id: uuid::Uuid,
    #[serde(default)]
    replicas: Option<Vec<Vec<i32>>>,
    #[serde(default)]
    partitions: Option<Vec<u16>>,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

impl From<StoredTopic> for TopicMetadata {
    fn from(stored: StoredTopic) -> TopicMetadata {
        let replicas = stored.replicas.unwrap_or_else(|| {
            stored
                .partitions
                .unwrap_or_default()
                .into_iter()
                .map(|shard| vec![i32::from(shard)])
                .collect()
        });
        TopicMetadata {
            name: stored.name,
            topic_id: stored.topic_id,
            replicas,
            configs: stored.configs,
            leaderships: Vec::new(),
        }
    }
}

/// Shard s of node n is broker `n * 1000 + s`.
pub fn broker_id(node: i32, shard: u16) -> i32 {
    node * 1000 + i32::from(shard)
}

/// The node and shard of a broker id.
pub fn broker_place(broker: i32) -> (i32, u16) {
    (broker / 1000, (broker % 1000) as u16)
}

impl TopicMetadata {
    pub fn partition_count(&self) -> usize {
        self.replicas.len()
    }

    /// The broker that leads `partition`, if the partition exists.
    pub fn leader(&self, partition: usize) -> Option<i32> {
        self.leadership(partition)
            .map(|leadership| leadership.leader)
    }

    /// The leadership and ISR of `partition`, if it exists.
    pub fn leadership(&self, partition: usize) -> Option<Leadership> {
        match self.leaderships.get(partition) {
            Some(leadership) => Some(leadership.clone()),
            None => Some(Leadership::initial(self.replicas.get(partition)?)),
        }
    }

    /// Records a partition's new leadership, filling the ones before it that never changed.
    fn set_leadership(&mut self, partition: usize, leadership: Leadership) {
        if partition >= self.replicas.len() {
            return;
        }
        while self.leaderships.len() <= partition {
            let initial = Leadership::initial(&self.replicas[self.leaderships.len()]);
            self.leaderships.push(initial);
        }
        self.leaderships[partition] = leadership;
    }

    /// The replication factor: the replica count of its first partition.
    pub fn replication_factor(&self) -> usize {
        self.replicas.first().map_or(1, Vec::len)
    }

    /// The shard of `node` that holds a replica of `partition`, if any.
    pub fn local_shard(&self, partition: usize, node: i32) -> Option<ShardId> {
        self.replicas
            .get(partition)?
            .iter()
            .map(|broker| broker_place(*broker))
            .find(|(on, _)| *on == node)
            .map(|(_, shard)| ShardId(shard))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    pub cluster_id: String,
    /// With other voters, each starts from its own random `cluster_id`; the first controller
    /// to lead commits its own, and from then on every node reports that one.
    #[serde(default)]
    pub cluster_id_committed: bool,
    /// Bumped by every change; shards acknowledge the version they applied.
    pub version: u64,
    pub topics: BTreeMap<String, TopicMetadata>,
    /// The lowest producer id never handed out (InitProducerId); only the controller moves it.
    #[serde(default)]
    pub next_producer_id: i64,
    /// Dynamic broker configs (AlterConfigs on broker resources) by resource name: "" for the
    /// cluster-wide defaults, a broker id for one broker's own entries.
    #[serde(default)]
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// Every node that has registered, by `node.id`: how clients reach its shards.
    #[serde(default)]
    pub nodes: BTreeMap<i32, NodeRegistration>,
    /// Registered nodes the controller fenced: they stopped heartbeating within
    /// `broker.session.timeout.ms`. Clients are not sent to them and nothing new is placed
    /// there, until they heartbeat again.
    #[serde(default)]
    pub fenced: std::collections::BTreeSet<i32>,
    /// Partitions whose log cannot be served (corruption, I/O errors), with why. Found again at
    /// every start, so never persisted.
    #[serde(skip)]
    pub offline: BTreeMap<(String, i32), String>,
}

/// A node as it registered with the controller at its last start (Kafka's
/// BrokerRegistration): each of its shards is a broker to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub node_id: i32,
    /// Different at every start, so a registration from an older process is told apart.
    pub incarnation: uuid::Uuid,
    /// Each shard's advertised host and port, by shard index.
    pub endpoints: Vec<(String, u16)>,
    pub rack: Option<String>,
}

impl NodeRegistration {
    /// Its shards as clients see them: broker id, host, port.
    pub fn brokers(&self) -> impl Iterator<Item = (i32, &str, u16)> + '_ {
        self.endpoints
            .iter()
            .enumerate()
            .map(|(shard, (host, port))| {
                (broker_id(self.node_id, shard as u16), host.as_str(), *port)
            })
    }
}

/// A partition that cannot be served, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflinePartition {
    pub topic: String,
    pub partition: i32,
    pub reason: String,
}

/// One change pushed from the controller to every shard, and one entry of the metadata log
/// (all but `PartitionsOffline`, which is found again at every start).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetadataChange {
    /// The whole metadata, sent once at start.
    Snapshot(ClusterMetadata),
    TopicsCreated(Vec<TopicMetadata>),
    TopicsDeleted(Vec<String>),
    /// Partitions found offline by their shard.
    PartitionsOffline(Vec<OfflinePartition>),
    /// Topics' config overrides replaced (AlterConfigs), each by its whole new set.
    TopicConfigsChanged(Vec<(String, BTreeMap<String, String>)>),
    /// Broker resources' dynamic configs replaced, each by its whole new set (empty removes it).
    BrokerConfigsChanged(Vec<(String, BTreeMap<String, String>)>),
    /// Partitions added to topics (CreatePartitions): each topic with its new partitions'
    /// replicas, which follow the existing ones.
    PartitionsAdded(Vec<(String, Vec<Vec<i32>>)>),
    /// Producer ids below `next` are handed out (InitProducerId): none is ever reissued.
    ProducerIdsAllocated {
        next: i64,
    },
    /// A node registered at its start (replacing what it registered before).
    NodeRegistered(NodeRegistration),
    /// A node stopped heartbeating and is fenced.
    NodeFenced {
        node_id: i32,
    },
    /// A fenced node heartbeats again.
    NodeUnfenced {
        node_id: i32,
    },
    /// The cluster's id, committed once by the first controller to lead several voters.
    ClusterIdCommitted {
        cluster_id: String,
    },
    /// Partitions' leaderships or ISRs changed (AlterPartition from their leader).
    LeadershipsChanged(Vec<(String, i32, Leadership)>),
}

/// Where the metadata log lives in the data directory.
pub const METADATA_DIRECTORY: &str = "__cluster_metadata";
/// The JSON file the metadata log replaced, imported once.
const METADATA_FILE: &str = "metadata.json";

#[derive(Debug, thiserror::Error)]
#[error("cluster metadata {path}: {reason}")]
pub struct MetadataStoreError {
    pub path: PathBuf,
    pub reason: String,
    /// The write failed because the disk is full.
    pub no_space: bool,
}

impl ClusterMetadata {
    pub fn new() -> ClusterMetadata {
        ClusterMetadata {
            cluster_id: uuid::Uuid::new_v4().simple().to_string(),
            cluster_id_committed: false,
            version: 0,
            topics: BTreeMap::new(),
            next_producer_id: 0,
            broker_configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            fenced: Default::default(),
            offline: BTreeMap::new(),
        }
    }

    /// The cluster id, once a controller has committed it (with other voters).
    pub fn committed_cluster_id(&self) -> Option<String> {
        self.cluster_id_committed.then(|| self.cluster_id.clone())
    }

    /// Every registered node but `me` that is not fenced: the other nodes clients are sent
    /// to and partitions are placed on.
    pub fn other_live_nodes(&self, me: i32) -> impl Iterator<Item = &NodeRegistration> {
        self.nodes.values().filter(move |registration| {
            registration.node_id != me && !self.fenced.contains(&registration.node_id)
        })
    }

    /// Where clients reach `broker`: its node's registered endpoint (none while it is fenced).
    pub fn endpoint(&self, broker: i32) -> Option<(&str, u16)> {
        let (node, shard) = broker_place(broker);
        if self.fenced.contains(&node) {
            return None;
        }
        self.nodes
            .get(&node)?
            .endpoints
            .get(usize::from(shard))
            .map(|(host, port)| (host.as_str(), *port))
    }

    /// Applies a change; returns the new version.
    pub fn apply(&mut self, change: &MetadataChange) {
        match change {
            MetadataChange::Snapshot(snapshot) => *self = snapshot.clone(),
            MetadataChange::TopicsCreated(topics) => {
                for topic in topics {
                    self.topics.insert(topic.name.clone(), topic.clone());
                }
                self.version += 1;
            }
            MetadataChange::TopicsDeleted(names) => {
                for name in names {
                    self.topics.remove(name);
                }
                self.offline.retain(|(topic, _), _| !names.contains(topic));
                self.version += 1;
            }
            MetadataChange::PartitionsOffline(partitions) => {
                for partition in partitions {
                    if self.topics.contains_key(&partition.topic) {
                        self.offline.insert(
                            (partition.topic.clone(), partition.partition),
                            partition.reason.clone(),
                        );
                    }
                }
                self.version += 1;
            }
            MetadataChange::TopicConfigsChanged(changes) => {
                for (name, configs) in changes {
                    if let Some(topic) = self.topics.get_mut(name) {
                        topic.configs = configs.clone();
                    }
                }
                self.version += 1;
            }
            MetadataChange::BrokerConfigsChanged(changes) => {
                for (resource, configs) in changes {
                    if configs.is_empty() {
                        self.broker_configs.remove(resource);
                    } else {
                        self.broker_configs
                            .insert(resource.clone(), configs.clone());
                    }
                }
                self.version += 1;
            }
            MetadataChange::PartitionsAdded(additions) => {
                for (name, replicas) in additions {
                    if let Some(topic) = self.topics.get_mut(name) {
                        topic.replicas.extend_from_slice(replicas);
                    }
                }
                self.version += 1;
            }
            MetadataChange::ProducerIdsAllocated { next } => {
                self.next_producer_id = self.next_producer_id.max(*next);
            }
            MetadataChange::NodeRegistered(registration) => {
                // A new start of a node that was not fenced (it came back within its session):
                // it is fenced first, as KRaft fences a new incarnation, so its replicas leave
                // the ISRs and its leaderships move. Whatever its disk lost, it comes back as
                // a follower that catches up, never as a leader or in-sync replica on trust.
                let restarted = self
                    .nodes
                    .get(&registration.node_id)
                    .is_some_and(|known| known.incarnation != registration.incarnation);
                if restarted && self.fenced.insert(registration.node_id) {
                    self.fence_replicas_of(registration.node_id);
                }
                self.nodes
                    .insert(registration.node_id, registration.clone());
                // A registration is a node alive: it heartbeats from here on.
                self.fenced.remove(&registration.node_id);
                self.version += 1;
            }
            MetadataChange::NodeFenced { node_id } => {
                self.fenced.insert(*node_id);
                self.fence_replicas_of(*node_id);
                self.version += 1;
            }
            MetadataChange::NodeUnfenced { node_id } => {
                self.fenced.remove(node_id);
                self.version += 1;
            }
            MetadataChange::LeadershipsChanged(changes) => {
                for (name, partition, leadership) in changes {
                    if let (Some(topic), Ok(index)) =
                        (self.topics.get_mut(name), usize::try_from(*partition))
                    {
                        topic.set_leadership(index, leadership.clone());
                    }
                }
                self.version += 1;
            }
            MetadataChange::ClusterIdCommitted { cluster_id } => {
                if !self.cluster_id_committed {
                    self.cluster_id = cluster_id.clone();
                    self.cluster_id_committed = true;
                    self.version += 1;
                }
            }
        }
    }

    /// What fencing a node does to the partitions it holds replicas of, as KRaft's controller
    /// does it. Part of applying `NodeFenced`, so every node's copy changes the same
    /// partitions at the same entry:
    /// - its follower replicas leave every ISR: the leader no longer waits for them, and they
    ///   come back through their leader's AlterPartition once caught up;
    /// - a partition it leads gets a new leader, in a new leader epoch: the first replica, in
    ///   replica order, that is in the ISR and on an unfenced node. Every ISR member holds
    ///   every acknowledged record, so the election is clean (`unclean.leader.election.enable`
    ///   is false). With no such replica the partition keeps its leader and waits for it;
    /// - the last member of an ISR stays: whoever was last in sync holds what was
    ///   acknowledged.
    fn fence_replicas_of(&mut self, node: i32) {
        let fenced = &self.fenced;
        for topic in self.topics.values_mut() {
            for index in 0..topic.partition_count() {
                let Some(mut leadership) = topic.leadership(index) else {
                    continue;
                };
                let on_node = |broker: &i32| broker_place(*broker).0 == node;
                let remaining: Vec<i32> = leadership
                    .isr
                    .iter()
                    .copied()
                    .filter(|broker| !on_node(broker))
                    .collect();
                if on_node(&leadership.leader) {
                    let elected = topic.replicas[index].iter().copied().find(|broker| {
                        remaining.contains(broker) && !fenced.contains(&broker_place(*broker).0)
                    });
                    let Some(elected) = elected else {
                        continue;
                    };
                    leadership.leader = elected;
                    leadership.leader_epoch += 1;
                    leadership.isr = remaining;
                } else if remaining.len() < leadership.isr.len() && !remaining.is_empty() {
                    let leader = leadership.leader;
                    // The leader stays a member, whatever node it is on.
                    leadership
                        .isr
                        .retain(|broker| *broker == leader || !on_node(broker));
                } else {
                    continue;
                }
                leadership.partition_epoch += 1;
                topic.set_leadership(index, leadership);
            }
        }
    }

    /// The changes that take this metadata to `target` (a snapshot a follower was sent), in
    /// the order shards apply them: deletions, then creations, added partitions, configs and
    /// producer ids. A snapshot never moves an existing partition (placement moves only at a
    /// start, before any shard opens a log), so placement of partitions both hold is kept.
    pub fn changes_to(&self, target: &ClusterMetadata) -> Vec<MetadataChange> {
        let same = |name: &str| match (self.topics.get(name), target.topics.get(name)) {
            (Some(mine), Some(theirs)) if mine.topic_id == theirs.topic_id => Some((mine, theirs)),
            _ => None,
        };
        let mut changes = Vec::new();
        if target.cluster_id_committed && !self.cluster_id_committed {
            changes.push(MetadataChange::ClusterIdCommitted {
                cluster_id: target.cluster_id.clone(),
            });
        }
        let deleted: Vec<String> = self
            .topics
            .keys()
            .filter(|name| same(name).is_none())
            .cloned()
            .collect();
        if !deleted.is_empty() {
            changes.push(MetadataChange::TopicsDeleted(deleted));
        }
        let created: Vec<TopicMetadata> = target
            .topics
            .values()
            .filter(|topic| same(&topic.name).is_none())
            .cloned()
            .collect();
        if !created.is_empty() {
            changes.push(MetadataChange::TopicsCreated(created));
        }
        let added: Vec<(String, Vec<Vec<i32>>)> = target
            .topics
            .keys()
            .filter_map(|name| {
                let (mine, theirs) = same(name)?;
                (theirs.partition_count() > mine.partition_count()).then(|| {
                    (
                        name.clone(),
                        theirs.replicas[mine.partition_count()..].to_vec(),
                    )
                })
            })
            .collect();
        if !added.is_empty() {
            changes.push(MetadataChange::PartitionsAdded(added));
        }
        let configs: Vec<(String, Configs)> = target
            .topics
            .keys()
            .filter_map(|name| {
                let (mine, theirs) = same(name)?;
                (mine.configs != theirs.configs).then(|| (name.clone(), theirs.configs.clone()))
            })
            .collect();
        if !configs.is_empty() {
            changes.push(MetadataChange::TopicConfigsChanged(configs));
        }
        let resources: std::collections::BTreeSet<&String> = self
            .broker_configs
            .keys()
            .chain(target.broker_configs.keys())
            .collect();
        let broker_configs: Vec<(String, Configs)> = resources
            .into_iter()
            .filter(|resource| {
                self.broker_configs.get(*resource) != target.broker_configs.get(*resource)
            })
            .map(|resource| {
                (
                    resource.clone(),
                    target
                        .broker_configs
                        .get(resource)
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        if !broker_configs.is_empty() {
            changes.push(MetadataChange::BrokerConfigsChanged(broker_configs));
        }
        for registration in target.nodes.values() {
            if self.nodes.get(&registration.node_id) != Some(registration) {
                changes.push(MetadataChange::NodeRegistered(registration.clone()));
            }
        }
        for node_id in target.fenced.difference(&self.fenced) {
            changes.push(MetadataChange::NodeFenced { node_id: *node_id });
        }
        for node_id in self.fenced.difference(&target.fenced) {
            changes.push(MetadataChange::NodeUnfenced { node_id: *node_id });
        }
        if target.next_producer_id > self.next_producer_id {
            changes.push(MetadataChange::ProducerIdsAllocated {
                next: target.next_producer_id,
            });
        }
        // Last, since fencing above shrinks ISRs on its own: whatever differs after it.
        let mut leaderships = Vec::new();
        for theirs in target.topics.values() {
            // A created topic carries its leaderships.
            let Some((mine, _)) = same(&theirs.name) else {
                continue;
            };
            for index in 0..theirs.partition_count() {
                let wanted = theirs.leadership(index);
                // A partition added above starts with its initial leadership.
                let had = mine
                    .leadership(index)
                    .or_else(|| Some(Leadership::initial(&theirs.replicas[index])));
                if let Some(wanted) = wanted {
                    if had.as_ref() != Some(&wanted) {
                        leaderships.push((theirs.name.clone(), index as i32, wanted));
                    }
                }
            }
        }
        if !leaderships.is_empty() {
            changes.push(MetadataChange::LeadershipsChanged(leaderships));
        }
        changes
    }

    /// A broker's dynamic configs: the cluster-wide defaults and its own entries.
    pub fn dynamic_broker_configs(&self, broker_id: i32) -> (Option<&Configs>, Option<&Configs>) {
        (
            self.broker_configs.get(""),
            self.broker_configs.get(&broker_id.to_string()),
        )
    }

    pub fn is_offline(&self, topic: &str, partition: i32) -> bool {
        self.offline.contains_key(&(topic.to_string(), partition))
    }

    pub fn offline_partitions(&self) -> Vec<OfflinePartition> {
        self.offline
            .iter()
            .map(|((topic, partition), reason)| OfflinePartition {
                topic: topic.clone(),
                partition: *partition,
                reason: reason.clone(),
            })
            .collect()
    }

    /// Gives every replica on a shard of `node` at or past `shard_count` (the node now runs
    /// fewer shards) to the node's least loaded shard that exists. Returns how many moved.
    /// Partition data is per partition, not per shard, so the new owner opens the same
    /// directory.
    pub fn reassign_missing_shards(&mut self, node: i32, shard_count: usize) -> usize {
        let mut counts = self.partitions_per_shard(node, shard_count);
        let mut moved = 0;
        for topic in self.topics.values_mut() {
            for broker in topic.replicas.iter_mut().flatten() {
                let (on, shard) = broker_place(*broker);
                if on == node && usize::from(shard) >= shard_count {
                    let Some(target) =
                        (0..shard_count).min_by_key(|shard| (counts[*shard], *shard))
                    else {
                        continue;
                    };
                    counts[target] += 1;
                    *broker = broker_id(node, target as u16);
                    moved += 1;
                }
            }
        }
        if moved > 0 {
            self.version += 1;
        }
        moved
    }

    /// Replicas on each of `brokers`, for least-loaded placement.
    pub fn partitions_on(&self, brokers: &[i32]) -> Vec<usize> {
        let index: BTreeMap<i32, usize> = brokers
            .iter()
            .enumerate()
            .map(|(index, broker)| (*broker, index))
            .collect();
        let mut counts = vec![0usize; brokers.len()];
        for broker in self
            .topics
            .values()
            .flat_map(|topic| topic.replicas.iter().flatten())
        {
            if let Some(at) = index.get(broker) {
                counts[*at] += 1;
            }
        }
        counts
    }

    /// Replicas on each of `node`'s shards, for least-loaded placement.
    pub fn partitions_per_shard(&self, node: i32, shard_count: usize) -> Vec<usize> {
        let mut counts = vec![0usize; shard_count];
        for broker in self
            .topics
            .values()
            .flat_map(|topic| topic.replicas.iter().flatten())
        {
            let (on, shard) = broker_place(*broker);
            if on == node {
                if let Some(count) = counts.get_mut(usize::from(shard)) {
                    *count += 1;
                }
            }
        }
        counts
    }

    /// Moves the brokers of a `metadata.json` written before cluster mode (node 0's, by
    /// `StoredTopic`) to `node`'s: the file was this node's alone.
    pub fn adopt_legacy_node(&mut self, node: i32) {
        if node == 0 {
            return;
        }
        for broker in self
            .topics
            .values_mut()
            .flat_map(|topic| topic.replicas.iter_mut().flatten())
        {
            let (_, shard) = broker_place(*broker);
            *broker = broker_id(node, shard);
        }
    }

    /// Places `partition_count` new partitions, each on the shard with the fewest partitions
    /// (`existing`, from `partitions_per_shard`, plus the `extra` just placed, which this
    /// adds to), lowest shard first on ties.
    pub fn place(existing: &[usize], partition_count: usize, extra: &mut [usize]) -> Vec<u16> {
        (0..partition_count)
            .map(|_| {
                let shard = (0..existing.len())
                    .min_by_key(|shard| (existing[*shard] + extra[*shard], *shard))
                    .unwrap_or(0);
                extra[shard] += 1;
                shard as u16
            })
            .collect()
    }

    /// Places `partition_count` partitions of `replication_factor` replicas on `brokers`
    /// (every live shard, as broker ids, with `existing` replicas each and `extra` placed by
    /// this request so far), each replica on a distinct node:
    /// - the nodes are ordered rack by rack in turn (Kafka's rack-alternating list), so the
    ///   replicas of a partition, taken in that order, are on distinct racks where there are
    ///   enough of them;
    /// - partition i starts, as its leader, i nodes further along that list than the one
    ///   before it, so leaders spread (Kafka starts at a random node);
    /// - on each node the replica goes to the least-loaded shard.
    ///
    /// The caller has checked that there are at least `replication_factor` nodes.
    pub fn place_replicas(
        brokers: &[i32],
        racks: &BTreeMap<i32, Option<String>>,
        existing: &[usize],
        partition_count: usize,
        replication_factor: usize,
        extra: &mut [usize],
    ) -> Vec<Vec<i32>> {
        let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
        let mut nodes: Vec<i32> = brokers.iter().map(|b| broker_place(*b).0).collect();
        nodes.dedup();
        for node in &nodes {
            let rack = racks.get(node).and_then(|rack| rack.as_deref());
            by_rack.entry(rack).or_default().push(*node);
        }
        let mut alternating = Vec::with_capacity(nodes.len());
        for turn in 0.. {
            let before = alternating.len();
            alternating.extend(by_rack.values().filter_map(|nodes| nodes.get(turn)));
            if alternating.len() == before {
                break;
            }
        }
        let load = |extra: &[usize], at: usize| existing[at] + extra[at];
        // The least-loaded shard of a node, as an index into `brokers`.
        let least_loaded = |extra: &[usize], node: i32| {
            (0..brokers.len())
                .filter(|at| broker_place(brokers[*at]).0 == node)
                .min_by_key(|at| (load(extra, *at), *at))
        };
        // Each request starts where the replicas placed so far leave off, so topics do not all
        // lead from the first node.
        let base = (existing.iter().sum::<usize>() + extra.iter().sum::<usize>())
            / replication_factor.max(1);
        let mut placed = Vec::with_capacity(partition_count);
        for index in 0..partition_count {
            let start = (base + index) % alternating.len().max(1);
            let mut replicas = Vec::with_capacity(replication_factor);
            for step in 0..replication_factor.min(alternating.len()) {
                let node = alternating[(start + step) % alternating.len()];
                if let Some(at) = least_loaded(extra, node) {
                    extra[at] += 1;
                    replicas.push(brokers[at]);
                }
            }
            placed.push(replicas);
        }
        placed
    }

    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(METADATA_DIRECTORY).join(METADATA_FILE)
    }

    /// Loads the persisted metadata, or `None` on a fresh data directory.
    pub fn load(data_dir: &Path) -> Result<Option<ClusterMetadata>, MetadataStoreError> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(MetadataStoreError {
                    path,
                    reason: error.to_string(),
                    no_space: false,
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| MetadataStoreError {
                path,
                reason: format!("unreadable ({error}); refusing to start without it"),
                no_space: false,
            })
    }

    /// Removes `metadata.json` once the metadata log holds what it held (the log's snapshot
    /// is synced before this runs). Blocking.
    pub fn remove_legacy(data_dir: &Path) -> Result<(), MetadataStoreError> {
        let path = Self::path(data_dir);
        let failed = |error: std::io::Error| MetadataStoreError {
            path: path.clone(),
            reason: error.to_string(),
            no_space: false,
        };
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            other => other.map_err(failed)?,
        }
        std::fs::File::open(data_dir.join(METADATA_DIRECTORY))
            .and_then(|directory| directory.sync_all())
            .map_err(failed)
    }
}

impl Default for ClusterMetadata {
    fn default() -> Self {
        ClusterMetadata::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metadata with one topic, "a", whose partitions are on these brokers, one replica each.
    fn with_topic_on(brokers: Vec<i32>) -> ClusterMetadata {
        let mut metadata = ClusterMetadata::new();
        metadata.topics.insert(
            "a".into(),
            TopicMetadata {
                name: "a".into(),
                topic_id: uuid::Uuid::new_v4(),
                replicas: brokers.into_iter().map(|broker| vec![broker]).collect(),
                configs: BTreeMap::new(),
                leaderships: Vec::new(),
            },
        );
        metadata
    }

    fn leaders(metadata: &ClusterMetadata, topic: &str) -> Vec<i32> {
        let topic = &metadata.topics[topic];
        (0..topic.partition_count())
            .filter_map(|index| topic.leader(index))
            .collect()
    }

    #[test]
    fn placement_fills_the_least_loaded_shards_first() {
        let metadata = with_topic_on(vec![0, 0, 1, 2001]);
        let mut extra = vec![0; 3];
        let existing = metadata.partitions_per_shard(0, 3);
        assert_eq!(
            existing,
            vec![2, 1, 0],
            "another node's broker is not counted"
        );
        assert_eq!(
            ClusterMetadata::place(&existing, 4, &mut extra),
            vec![2, 1, 2, 0]
        );
    }

    #[test]
    fn partitions_of_missing_shards_move_to_the_least_loaded_ones() {
        let mut metadata = with_topic_on(vec![5000, 5001, 5002, 5003, 5003, 5000, 3]);
        assert_eq!(metadata.reassign_missing_shards(5, 2), 3);
        assert_eq!(
            leaders(&metadata, "a"),
            vec![5000, 5001, 5001, 5000, 5001, 5000, 3],
            "only node 5's brokers move"
        );
        assert_eq!(
            metadata.reassign_missing_shards(5, 2),
            0,
            "nothing left to move"
        );
    }

    #[test]
    fn the_changes_to_a_snapshot_take_a_follower_there_and_nothing_when_equal() {
        let mut follower = with_topic_on(vec![0, 1]);
        follower.apply(&MetadataChange::TopicsCreated(vec![TopicMetadata {
            name: "gone".into(),
            topic_id: uuid::Uuid::new_v4(),
            replicas: vec![vec![0]],
            configs: BTreeMap::new(),
            leaderships: Vec::new(),
        }]));
        let mut leader = follower.clone();
        leader.apply(&MetadataChange::TopicsDeleted(vec!["gone".into()]));
        leader.apply(&MetadataChange::TopicsCreated(vec![TopicMetadata {
            name: "new".into(),
            topic_id: uuid::Uuid::new_v4(),
            replicas: vec![vec![1]],
            configs: BTreeMap::new(),
            leaderships: Vec::new(),
        }]));
        leader.apply(&MetadataChange::PartitionsAdded(vec![(
            "a".into(),
            vec![vec![0], vec![0]],
        )]));
        leader.apply(&MetadataChange::TopicConfigsChanged(vec![(
            "a".into(),
            BTreeMap::from([("retention.ms".into(), "9".into())]),
        )]));
        leader.apply(&MetadataChange::BrokerConfigsChanged(vec![(
            "".into(),
            BTreeMap::from([("log.retention.bytes".into(), "1".into())]),
        )]));
        leader.apply(&MetadataChange::ProducerIdsAllocated { next: 4000 });

        assert!(leader.changes_to(&leader).is_empty());
        let changes = follower.changes_to(&leader);
        assert_eq!(changes.len(), 6, "{changes:?}");
        for change in &changes {
            follower.apply(change);
        }
        assert_eq!(follower.topics, leader.topics);
        assert_eq!(follower.broker_configs, leader.broker_configs);
        assert_eq!(follower.next_producer_id, leader.next_producer_id);
    }

    #[test]
    fn a_file_from_before_cluster_mode_reads_as_the_importing_nodes_brokers() {
        let legacy = r#"{"cluster_id":"c","version":2,"topics":{"t":{"name":"t",
            "topic_id":"6f1f5a3c-2b1e-4c7a-9d55-0a1b2c3d4e5f","partitions":[1,0],
            "configs":{}}},"next_producer_id":3}"#;
        let mut metadata: ClusterMetadata = serde_json::from_str(legacy).unwrap();
        assert_eq!(metadata.topics["t"].replicas, vec![vec![1], vec![0]]);
        metadata.adopt_legacy_node(4);
        assert_eq!(metadata.topics["t"].replicas, vec![vec![4001], vec![4000]]);
        assert_eq!(metadata.topics["t"].local_shard(0, 4), Some(ShardId(1)));
        assert_eq!(metadata.topics["t"].local_shard(0, 0), None);
        // Written again, it is in the new form and reads back the same.
        let again: ClusterMetadata =
            serde_json::from_str(&serde_json::to_string(&metadata).unwrap()).unwrap();
        assert_eq!(again.topics, metadata.topics);
    }

    #[test]
    fn a_legacy_file_loads_and_is_removed_once_imported() {
        let directory = tempfile::tempdir().unwrap();
        assert!(ClusterMetadata::load(directory.path()).unwrap().is_none());
        let mut metadata = ClusterMetadata::new();
        metadata.apply(&MetadataChange::TopicsCreated(vec![TopicMetadata {
            name: "t".into(),
            topic_id: uuid::Uuid::new_v4(),
            replicas: vec![vec![1], vec![0]],
            configs: BTreeMap::from([("retention.ms".into(), "5".into())]),
            leaderships: Vec::new(),
        }]));
        std::fs::create_dir_all(directory.path().join(METADATA_DIRECTORY)).unwrap();
        std::fs::write(
            ClusterMetadata::path(directory.path()),
            serde_json::to_string_pretty(&metadata).unwrap(),
        )
        .unwrap();
        assert_eq!(
            ClusterMetadata::load(directory.path()).unwrap(),
            Some(metadata)
        );
        ClusterMetadata::remove_legacy(directory.path()).unwrap();
        assert!(ClusterMetadata::load(directory.path()).unwrap().is_none());
        ClusterMetadata::remove_legacy(directory.path()).unwrap();
    }

    /// Four nodes of two shards on two racks: every partition's three replicas are on three
    /// nodes and both racks, leaders go round the nodes, and every shard ends up with as many
    /// replicas as any other.
    #[test]
    fn replicas_go_to_distinct_nodes_and_racks_and_leaders_spread() {
        let brokers: Vec<i32> = (0..4)
            .flat_map(|node| (0..2).map(move |shard| broker_id(node, shard)))
            .collect();
        let racks = BTreeMap::from([
            (0, Some("a".to_string())),
            (1, Some("a".to_string())),
            (2, Some("b".to_string())),
            (3, Some("b".to_string())),
        ]);
        let mut extra = vec![0; brokers.len()];
        let placed = ClusterMetadata::place_replicas(&brokers, &racks, &[0; 8], 8, 3, &mut extra);
        assert_eq!(placed.len(), 8);
        let mut leaders = BTreeMap::new();
        for replicas in &placed {
            let nodes: std::collections::BTreeSet<i32> = replicas
                .iter()
                .map(|broker| broker_place(*broker).0)
                .collect();
            assert_eq!(nodes.len(), 3, "{replicas:?}");
            let on_racks: std::collections::BTreeSet<&Option<String>> =
                nodes.iter().map(|node| &racks[node]).collect();
            assert_eq!(on_racks.len(), 2, "{replicas:?}");
            *leaders.entry(broker_place(replicas[0]).0).or_insert(0) += 1;
        }
        assert_eq!(leaders, BTreeMap::from([(0, 2), (1, 2), (2, 2), (3, 2)]));
        assert_eq!(extra, vec![3; 8], "24 replicas over 8 shards");
    }

    fn replicated(replicas: Vec<Vec<i32>>) -> ClusterMetadata {
        let mut metadata = ClusterMetadata::new();
        metadata.apply(&MetadataChange::TopicsCreated(vec![TopicMetadata {
            name: "t".into(),
            topic_id: uuid::Uuid::new_v4(),
            replicas,
            configs: BTreeMap::new(),
            leaderships: Vec::new(),
        }]));
        metadata
    }

    /// A fenced node leaves the ISRs it follows in, each with a new partition epoch; a
    /// partition it leads gets the first in-sync replica on a live node as leader, in a new
    /// leader epoch; an ISR it is the last of keeps it, and so does a partition with no other
    /// replica in sync, which waits for its leader.
    #[test]
    fn a_fenced_node_leaves_the_isrs_and_its_leaderships_go_to_the_isr() {
        let mut metadata = replicated(vec![
            vec![0, 1000, 2000],
            vec![2000, 0, 1000],
            vec![1000, 2001],
        ]);
        metadata.apply(&MetadataChange::LeadershipsChanged(vec![(
            "t".into(),
            2,
            Leadership {
                leader: 1000,
                leader_epoch: 0,
                partition_epoch: 1,
                isr: vec![2001],
            },
        )]));
        metadata.apply(&MetadataChange::NodeFenced { node_id: 2 });
        let topic = &metadata.topics["t"];
        let first = topic.leadership(0).unwrap();
        assert_eq!(first.isr, vec![0, 1000]);
        assert_eq!(first.partition_epoch, 1);
        let led = topic.leadership(1).unwrap();
        assert_eq!(led.leader, 0, "the first in-sync replica of the others");
        assert_eq!(led.leader_epoch, 1);
        assert_eq!(led.partition_epoch, 1);
        assert_eq!(led.isr, vec![0, 1000]);
        assert_eq!(
            topic.leadership(2).unwrap().isr,
            vec![2001],
            "the last in sync stays"
        );

        // Node 0 goes too: partition 1's only other in-sync replica is node 1's.
        metadata.apply(&MetadataChange::NodeFenced { node_id: 0 });
        let led = metadata.topics["t"].leadership(1).unwrap();
        assert_eq!(
            (led.leader, led.leader_epoch, led.isr),
            (1000, 2, vec![1000])
        );
        // And node 1: nobody else is in sync, so the partition waits for it.
        metadata.apply(&MetadataChange::NodeFenced { node_id: 1 });
        let waiting = metadata.topics["t"].leadership(1).unwrap();
        assert_eq!((waiting.leader, waiting.leader_epoch), (1000, 2));
        assert_eq!(waiting.isr, vec![1000]);
    }

    /// A follower that installs a snapshot gets the leaderships and ISRs the leader has.
    #[test]
    fn the_changes_to_a_snapshot_carry_leaderships() {
        let mut leader = replicated(vec![vec![0, 1000], vec![1000, 0]]);
        let mut follower = leader.clone();
        leader.apply(&MetadataChange::NodeFenced { node_id: 1 });
        leader.apply(&MetadataChange::LeadershipsChanged(vec![(
            "t".into(),
            1,
            Leadership {
                leader: 1000,
                leader_epoch: 0,
                partition_epoch: 3,
                isr: vec![1000],
            },
        )]));
        for change in follower.changes_to(&leader) {
            follower.apply(&change);
        }
        assert_eq!(follower.topics, leader.topics);
        assert_eq!(follower.changes_to(&leader).len(), 0);
    }

    /// A node that starts again before it was fenced (a new incarnation) is fenced first: its
    /// leaderships go to the ISR and it leaves the ISRs, so it comes back as a follower
    /// whatever its disk lost. The same registration again changes nothing.
    #[test]
    fn a_new_start_of_a_node_is_fenced_before_it_is_taken_back() {
        let registration = |node_id: i32| NodeRegistration {
            node_id,
            incarnation: uuid::Uuid::new_v4(),
            endpoints: vec![("host".into(), 9092)],
            rack: None,
        };
        let mut metadata = replicated(vec![vec![1000, 0], vec![0, 1000]]);
        let first = registration(1);
        metadata.apply(&MetadataChange::NodeRegistered(first.clone()));
        metadata.apply(&MetadataChange::NodeRegistered(first));
        assert_eq!(metadata.topics["t"].leadership(0).unwrap().leader_epoch, 0);
        metadata.apply(&MetadataChange::NodeRegistered(registration(1)));
        let topic = &metadata.topics["t"];
        let moved = topic.leadership(0).unwrap();
        assert_eq!(
            (moved.leader, moved.leader_epoch, moved.isr),
            (0, 1, vec![0])
        );
        assert_eq!(topic.leadership(1).unwrap().isr, vec![0]);
        assert!(!metadata.fenced.contains(&1), "registered, so unfenced");
    }
}
