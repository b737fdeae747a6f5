//! The shard's replicas of replicated partitions (`crate::replication`): made and updated from
//! the metadata, their followers' fetchers started, and their ISR changes sent to the
//! controller.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shards::task::{spawn_in, Queue};
use tracing::{info, warn};

use super::{PartitionSlot, Shard};
use crate::controller::ControllerReply;
use crate::replication::{fetcher, IsrChange, Replica};

/// How often a leader looks for followers to drop from its ISRs, at most (Kafka checks every
/// half `replica.lag.time.max.ms`).
const ISR_CHECK_MAX: Duration = Duration::from_secs(5);
const ISR_CHECK_MIN: Duration = Duration::from_millis(100);
/// An ISR change whose fate is unknown is asked again after this, doubling up to the max.
const ISR_CHANGE_RETRY: Duration = Duration::from_millis(200);
const ISR_CHANGE_RETRY_MAX: Duration = Duration::from_secs(5);

impl Shard {
    /// The local replica of a replicated partition, if this shard holds one.
    pub fn replica(&self, topic: &str, partition: i32) -> Option<Rc<Replica>> {
        self.replicas.borrow().get(topic)?.get(&partition).cloned()
    }

    /// Whether clients may produce to and fetch from this shard's copy of the partition: this
    /// shard leads it, or the metadata gives it one replica. A replicated partition whose
    /// replica is not made yet (its log opened, the metadata change not applied) is not led.
    pub fn leads(&self, topic: &str, partition: i32) -> bool {
        if let Some(replica) = self
            .replicas
            .borrow()
            .get(topic)
            .and_then(|partitions| partitions.get(&partition))
        {
            return replica.is_leader();
        }
        let metadata = self.metadata.borrow();
        let replicas = metadata.topics.get(topic).and_then(|found| {
            found
                .replicas
                .get(usize::try_from(partition).ok()?)
                .map(Vec::len)
        });
        replicas.is_some_and(|count| count < 2)
    }

    /// Truncates a followed log to `offset` (it diverged from its new leader's): the log is
    /// sealed (nothing uses its files any more), cut on disk and opened again, and its replica
    /// made anew. Only while `replica` still follows the leadership `asked_of` the cut was
    /// worked out for, and its slot still holds its log. A failure takes the partition offline
    /// here.
    pub async fn truncate_replica(
        self: &Rc<Self>,
        replica: &Rc<Replica>,
        asked_of: (i32, i32),
        offset: storage::Offset,
    ) -> Result<(), String> {
        let topic: &str = &replica.topic;
        let partition = replica.partition;
        let index = usize::try_from(partition).map_err(|_| "a negative partition".to_string())?;
        let holds = |shard: &Shard| {
            let slot = shard
                .partitions
                .borrow()
                .get(topic)
                .and_then(|slots| slots.get(index).cloned())
                .flatten();
            matches!(slot, Some(PartitionSlot::Online(log)) if Rc::ptr_eq(&log, &replica.log))
        };
        if replica.leadership_key() != asked_of || replica.is_leader() || !holds(self) {
            return Err("the leadership or the log changed meanwhile".into());
        }
        let config = {
            let metadata = self.metadata.borrow();
            match metadata.topics.get(topic) {
                Some(found) if found.topic_id == replica.topic_id => {
                    self.config().log_config(&found.configs)
                }
                _ => return Err("the topic is gone".into()),
            }
        };
        let log = replica.log.clone();
        let directory = log.directory().to_path_buf();
        let reopened = async {
            log.seal("truncating to follow a new leader")
                .await
                .map_err(|error| error.to_string())?;
            storage::PartitionLog::truncate_closed(&self.log_context, &directory, offset)
                .await
                .map_err(|error| error.to_string())?;
            self.open_partition(topic, partition, config).await
        }
        .await;
        // The topic may have been deleted (and created again) while the log was cut.
        let same_topic = self
            .metadata
            .borrow()
            .topics
            .get(topic)
            .is_some_and(|found| found.topic_id == replica.topic_id);
        if !same_topic || !holds(self) {
            if let Ok(opened) = &reopened {
                let _ = opened.close().await;
            }
            return Err("the topic changed while its log was cut".into());
        }
        let slot = match &reopened {
            Ok(log) => PartitionSlot::Online(log.clone()),
            Err(reason) => PartitionSlot::Offline(reason.as_str().into()),
        };
        if let Some(entry) = self
            .partitions
            .borrow_mut()
            .get_mut(topic)
            .and_then(|slots| slots.get_mut(index))
        {
            *entry = Some(slot);
        }
        self.refresh_replicas();
        match reopened {
            Ok(_) => Ok(()),
            Err(reason) => {
                self.report_offline(vec![crate::controller::metadata::OfflinePartition {
                    topic: topic.to_string(),
                    partition,
                    reason: reason.clone(),
                }]);
                Err(reason)
            }
        }
    }

    /// Every replica this shard follows from `leader`, in topic order.
    pub fn followed_from(&self, leader: i32) -> Vec<Rc<Replica>> {
        let replicas = self.replicas.borrow();
        let mut followed: Vec<Rc<Replica>> = replicas
            .values()
            .flat_map(|partitions| partitions.values())
            .filter(|replica| !replica.is_leader() && replica.leader() == leader)
            .filter(|replica| replica.log.offline_reason().is_none())
            .cloned()
            .collect();
        followed.sort_by(|a, b| (&*a.topic, a.partition).cmp(&(&*b.topic, b.partition)));
        followed
    }

    /// Every replica this shard holds.
    pub fn all_replicas(&self) -> Vec<Rc<Replica>> {
        self.replicas
            .borrow()
            .values()
            .flat_map(|partitions| partitions.values())
            .cloned()
            .collect()
    }

    pub fn fetcher_stopped(self: &Rc<Self>, leader: i32) {
        self.fetchers.borrow_mut().remove(&leader);
        // Something to follow from it may have come while the fetcher was stopping.
        if !self.followed_from(leader).is_empty() && !self.is_closing() {
            self.start_fetcher(leader);
        }
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    pub fn set_closing(&self) {
        self.closing.set(true);
    }

    fn start_fetcher(self: &Rc<Self>, leader: i32) {
        if self.fetchers.borrow_mut().insert(leader) {
            spawn_in(Queue::Requests, fetcher::run(self.clone(), leader)).detach();
        }
    }

    /// Makes, updates and drops replicas to match the metadata, and starts a fetcher for each
    /// leader followed. Runs after every metadata change this shard applies.
    pub(super) fn refresh_replicas(self: &Rc<Self>) {
        let me = self.broker_id();
        let mut next: HashMap<String, HashMap<i32, Rc<Replica>>> = HashMap::new();
        {
            let metadata = self.metadata.borrow();
            let partitions = self.partitions.borrow();
            let current = self.replicas.borrow();
            for (name, slots) in partitions.iter() {
                let Some(topic) = metadata.topics.get(name) else {
                    continue;
                };
                for (index, slot) in slots.iter().enumerate() {
                    let Some(PartitionSlot::Online(log)) = slot else {
                        continue;
                    };
                    let (Some(replicas), Some(leadership)) =
                        (topic.replicas.get(index), topic.leadership(index))
                    else {
                        continue;
                    };
                    if replicas.len() < 2 || !replicas.contains(&me) {
                        continue;
                    }
                    let partition = index as i32;
                    let replica = match current.get(name).and_then(|known| known.get(&partition)) {
                        Some(replica) if Rc::ptr_eq(&replica.log, log) => {
                            replica.update(leadership, replicas.clone());
                            replica.clone()
                        }
                        _ => Replica::new(
                            Rc::from(name.as_str()),
                            topic.topic_id,
                            partition,
                            log.clone(),
                            me,
                            leadership,
                            replicas.clone(),
                        ),
                    };
                    next.entry(name.clone())
                        .or_default()
                        .insert(partition, replica);
                }
            }
        }
        *self.replicas.borrow_mut() = next;
        self.refresh_coordination();
        let leaders: std::collections::BTreeSet<i32> = self
            .all_replicas()
            .iter()
            .filter(|replica| !replica.is_leader())
            .map(|replica| replica.leader())
            .collect();
        if self.is_closing() {
            return;
        }
        for leader in leaders {
            if leader >= 0 {
                self.start_fetcher(leader);
            }
        }
    }

    /// The group coordinator follows the leadership of its `__consumer_offsets` partitions:
    /// a partition this shard now leads is loaded (its groups replayed from the replicated
    /// log, from a task of its own: meanwhile its groups get COORDINATOR_NOT_AVAILABLE), and
    /// one it no longer leads is unloaded. The transaction coordinator will move the same way
    /// with `__transaction_state`.
    fn refresh_coordination(self: &Rc<Self>) {
        let Some(count) = self
            .metadata
            .borrow()
            .topics
            .get(crate::groups::OFFSETS_TOPIC)
            .map(|topic| topic.partition_count() as i32)
        else {
            return;
        };
        let local: Vec<(i32, Option<Rc<storage::PartitionLog>>)> = self
            .partitions
            .borrow()
            .get(crate::groups::OFFSETS_TOPIC)
            .map(|slots| {
                slots
                    .iter()
                    .enumerate()
                    .filter_map(|(index, slot)| {
                        let log = match slot.as_ref()? {
                            PartitionSlot::Online(log) => Some(log.clone()),
                            PartitionSlot::Offline(_) => None,
                        };
                        Some((index as i32, log))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (partition, log) in local {
            // A partition of one replica is loaded once, when it opens (`open_topic`).
            if self
                .replica(crate::groups::OFFSETS_TOPIC, partition)
                .is_none()
            {
                continue;
            }
            let leads = self.leads(crate::groups::OFFSETS_TOPIC, partition);
            let held = self.groups.holds(partition);
            match (leads, log) {
                (true, Some(log)) if !held => {
                    if !self.loading.borrow_mut().insert(partition) {
                        continue;
                    }
                    let Some(loaded_under) = self
                        .replica(crate::groups::OFFSETS_TOPIC, partition)
                        .map(|replica| replica.leadership_key())
                    else {
                        self.loading.borrow_mut().remove(&partition);
                        continue;
                    };
                    let shard = self.clone();
                    spawn_in(Queue::Background, async move {
                        shard.groups.load(partition, log.clone()).await;
                        shard.loading.borrow_mut().remove(&partition);
                        // The leadership may have moved (and come back: commits replicated
                        // meanwhile were not replayed) or the log been replaced while it
                        // loaded: start over from what holds now.
                        let current = shard.replica(crate::groups::OFFSETS_TOPIC, partition);
                        let same = current.as_ref().is_some_and(|replica| {
                            Rc::ptr_eq(&replica.log, &log)
                                && replica.leadership_key() == loaded_under
                        });
                        if !same {
                            shard.groups.unload(partition, count);
                            shard.refresh_coordination();
                        }
                    })
                    .detach();
                }
                (false, _) if held => self.groups.unload(partition, count),
                _ => {}
            }
        }
    }

    /// Sends an ISR change of `replica` to the controller, from a task of its own.
    pub fn send_isr_change(self: &Rc<Self>, replica: &Rc<Replica>, change: IsrChange) {
        let crate::controller::ControllerRequest::AlterPartition { isr, .. } = &change.request
        else {
            return;
        };
        let isr = isr.clone();
        if !replica.begin_altering(&isr) {
            return;
        }
        let shard = self.clone();
        let replica = replica.clone();
        spawn_in(Queue::Background, async move {
            // Refusals that say the change was not made end it; anything else (no controller
            // yet, a timeout) may have been made, so the pending ISR stays until the
            // partition epoch moves, and the request is sent again.
            const DEFINITE: [&str; 4] = [
                "NOT_LEADER_OR_FOLLOWER",
                "INELIGIBLE_REPLICA",
                "INVALID_REQUEST",
                "UNKNOWN_TOPIC_OR_PARTITION",
            ];
            let mut pause = ISR_CHANGE_RETRY;
            let mut attempt = 0usize;
            // While this change (not a later one) is on its way and this replica leads.
            while replica.altering_to(&isr) && replica.is_leader() && !shard.is_closing() {
                if attempt > 0 {
                    shards::task::sleep(pause).await;
                    pause = (pause * 2).min(ISR_CHANGE_RETRY_MAX);
                }
                attempt += 1;
                match shard.controller_request(change.request.clone()).await {
                    ControllerReply::Failed(reason)
                        if DEFINITE.iter().any(|code| reason.starts_with(code)) =>
                    {
                        if replica.altering_to(&isr) {
                            replica.end_altering();
                        }
                        warn!(
                            topic = %replica.topic,
                            partition = replica.partition,
                            ?isr,
                            %reason,
                            "the controller refused an ISR change"
                        );
                        return;
                    }
                    // Undecided (including another change first, which this replica has not
                    // applied yet): applying the partition epoch that moved ends it.
                    ControllerReply::Failed(reason) => {
                        if attempt == 1 || attempt.is_multiple_of(10) {
                            warn!(topic = %replica.topic, partition = replica.partition, %reason, "an ISR change is not decided yet; asking again");
                        }
                    }
                    _ => {
                        info!(
                            topic = %replica.topic,
                            partition = replica.partition,
                            ?isr,
                            why = change.why,
                            "ISR changed"
                        );
                        return;
                    }
                }
            }
        })
        .detach();
    }

    /// A stopping node's controlled shutdown (Kafka's): shard 0 asks the controller to fence
    /// this node now, so the partitions it leads move to their ISRs and its replicas leave the
    /// ISRs while it can still answer; every shard waits until it has applied that (at most
    /// `within`) before it stops taking requests. Nothing to do for a node alone.
    pub async fn hand_over_leaderships(self: &Rc<Self>, within: Duration) {
        if self.node.voters.is_empty() {
            return;
        }
        let node_id = self.node.node_id;
        let deadline = Instant::now() + within;
        if let (true, Some(incarnation)) = (self.controller.is_some(), self.incarnation.get()) {
            let request = crate::controller::ControllerRequest::ControlledShutdown {
                node_id,
                incarnation,
            };
            match shards::task::timeout(within, self.controller_request(request)).await {
                Some(ControllerReply::Failed(reason)) => {
                    warn!(%reason, "controlled shutdown refused; stopping without it")
                }
                None => warn!("the controller did not answer the controlled shutdown in time"),
                Some(_) => info!("controlled shutdown: leaderships handed over"),
            }
        }
        while !self.metadata.borrow().fenced.contains(&node_id) && Instant::now() < deadline {
            shards::task::sleep(Duration::from_millis(20)).await;
        }
    }

    /// As leader of replicated partitions: drops from their ISRs the followers that have not
    /// caught up within `replica.lag.time.max.ms`. Runs for the shard's life.
    pub async fn run_isr_checks(self: Rc<Self>) {
        loop {
            let lag_max = self.config().millis("replica.lag.time.max.ms");
            shards::task::sleep((lag_max / 2).clamp(ISR_CHECK_MIN, ISR_CHECK_MAX)).await;
            let now = Instant::now();
            for replica in self.all_replicas() {
                if let Some(change) = replica.shrinkage(now, lag_max) {
                    self.send_isr_change(&replica, change);
                }
            }
        }
    }
}
