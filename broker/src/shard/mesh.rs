//! The shard's end of the mesh: messages to and from other shards, requests to the controller
//! matched with their replies, metadata changes fanned out to every shard and acknowledged, and
//! metrics gathered for a scrape. Only metadata crosses cores.

use std::cell::Ref;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use shards::ShardId;
use tracing::{error, warn};

use super::Shard;
use crate::controller::metadata::{ClusterMetadata, MetadataChange};
use crate::controller::quorum::calls::CallHandler;
use crate::controller::quorum::QuorumHost;
use crate::controller::{ControllerHost, ControllerReply, ControllerRequest, TopicOutcome};
use crate::limits::METRICS_REPLY_TIMEOUT;
use crate::node::NodeInfo;
use crate::observability::metrics::MetricsSnapshot;

/// Messages between shards.
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
        /// Boxed: a snapshot is several histograms, far larger than every other message.
        snapshot: Box<MetricsSnapshot>,
    },
}

impl Shard {
    fn next_request_id(&self) -> u64 {
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        id
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
        let id = self.next_request_id();
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

    /// Shard 0: applies `change` here, sends it to every other shard, and waits until each has
    /// applied it (they answer `Applied` with the version).
    async fn publish_to_all(self: &Rc<Self>, change: MetadataChange) -> Result<(), String> {
        let _one_at_a_time = self.publishing.lock().await;
        let mut next = self.metadata().clone();
        next.apply(&change);
        let version = next.version;
        self.apply(&change).await;
        let others = self.node.shard_count - 1;
        for peer in 1..self.node.shard_count {
            self.send_to(
                ShardId(peer as u16),
                ShardMessage::Apply {
                    change: change.clone(),
                },
            )
            .await?;
        }
        loop {
            let listener = self.acked.listen();
            if self.acks.borrow().get(&version).copied().unwrap_or(0) >= others {
                self.acks.borrow_mut().remove(&version);
                return Ok(());
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
                let version = self.metadata().version;
                if let Err(reason) = self.send_to(from, ShardMessage::Applied { version }).await {
                    warn!(%reason, "metadata acknowledgement lost");
                }
            }
            ShardMessage::Applied { version } => {
                *self.acks.borrow_mut().entry(version).or_default() += 1;
                self.acked.notify(usize::MAX);
            }
            ShardMessage::MetricsRequest { id } => {
                let snapshot = self.metrics_snapshot();
                if let Err(reason) = self
                    .send_to(
                        from,
                        ShardMessage::MetricsReply {
                            id,
                            snapshot: Box::new(snapshot),
                        },
                    )
                    .await
                {
                    warn!(%reason, "metrics reply lost");
                }
            }
            ShardMessage::MetricsReply { id, snapshot } => {
                if let Some(sender) = self.metrics_pending.borrow_mut().remove(&id) {
                    let _ = sender.send(*snapshot);
                }
            }
        }
    }

    fn metrics_snapshot(&self) -> MetricsSnapshot {
        let logs = self.owned_logs();
        let bytes = logs.iter().map(|log| log.size_bytes()).sum();
        let mut snapshot = self.metrics.snapshot(self.id.0, logs.len() as u64, bytes);
        (snapshot.groups, snapshot.group_members) = self.groups.counts();
        snapshot.partitions_offline = self.offline_partitions().len() as u64;
        snapshot.log_memory_bytes = self.log_context.memory.in_use() as u64;
        snapshot.request_memory_bytes = self.request_memory.in_use() as u64;
        snapshot.disk_full = self.disk_full();
        let sessions = self.fetch_sessions.borrow();
        snapshot.fetch_sessions = sessions.len() as u64;
        snapshot.fetch_session_partitions = sessions.cached_partitions() as u64;
        drop(sessions);
        {
            let metadata = self.metadata.borrow();
            snapshot.nodes_registered = metadata.nodes.len() as u64;
            snapshot.nodes_fenced = metadata.fenced.len() as u64;
        }
        for replica in self.all_replicas() {
            if !replica.is_leader() {
                continue;
            }
            let in_sync = replica.isr_len();
            if in_sync < replica.replica_count() {
                snapshot.under_replicated += 1;
            }
            if (in_sync as i64) < replica.log.min_insync_replicas() {
                snapshot.under_min_isr += 1;
            }
            for (_, lag) in replica.follower_lags() {
                snapshot.replica_max_lag = snapshot.replica_max_lag.max(lag);
            }
        }
        snapshot.quorum = self
            .controller
            .as_ref()
            .and_then(|controller| controller.open_quorum())
            .map(|quorum| {
                let (applied, term) = quorum.position();
                crate::observability::metrics::QuorumMetrics {
                    leader: quorum.is_leader(),
                    term,
                    applied,
                }
            });
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
            let id = self.next_request_id();
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
}

/// Shard 0 answers the controller calls other nodes forward to it.
pub struct ControllerCalls(pub Rc<Shard>);

impl CallHandler for ControllerCalls {
    fn handle(
        &self,
        from: i32,
        request: ControllerRequest,
    ) -> Pin<Box<dyn Future<Output = (ControllerReply, u64)> + '_>> {
        Box::pin(async move {
            match &self.0.controller {
                Some(controller) => controller.handle_forwarded(&self.0, from, request).await,
                None => (
                    ControllerReply::Failed("this shard is not the controller".into()),
                    0,
                ),
            }
        })
    }
}

/// Shard 0 applies what the metadata log commits on every shard of the node.
impl QuorumHost for Rc<Shard> {
    fn apply(
        &self,
        change: MetadataChange,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            let changes = match change {
                // The leader's snapshot, sent to a follower that was too far behind: the
                // shards get the changes that lead there.
                MetadataChange::Snapshot(state) => self.metadata.borrow().changes_to(&state),
                other => vec![other],
            };
            for change in changes {
                match change {
                    // The controller's own bookkeeping: no other shard reads it.
                    MetadataChange::ProducerIdsAllocated { .. } => {
                        self.metadata.borrow_mut().apply(&change)
                    }
                    other => self.publish_to_all(other).await?,
                }
            }
            Ok(())
        })
    }

    fn state(&self) -> ClusterMetadata {
        self.metadata.borrow().clone()
    }
}

impl ControllerHost for Rc<Shard> {
    fn node(&self) -> &NodeInfo {
        &self.node
    }

    fn metadata(&self) -> Ref<'_, ClusterMetadata> {
        self.metadata.borrow()
    }

    fn publish(
        &self,
        change: MetadataChange,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(self.publish_to_all(change))
    }

    fn partitions_per_shard_max(&self) -> usize {
        self.node.limits.partitions_per_shard
    }

    fn disk_full(&self) -> bool {
        Shard::disk_full(self)
    }
}
