//! Data replication, Kafka's protocol (DESIGN section 6, `broker/CLUSTER.md`).
//!
//! Every local replica of a partition with more than one replica has a `Replica` here, next
//! to its log. What it is follows the metadata (`update`): the leader the controller recorded
//! serves produce and fetch; the others follow it.
//!
//! - **Followers** fetch from the leader's owning shard with Fetch requests that carry their
//!   replica id (`fetcher`), one connection per leader broker, so replication never hops
//!   cores. A follower appends what it gets as it is (`PartitionLog::append_replicated`) and
//!   makes it durable before its next fetch: the fetch offset it reports is a position it has
//!   `fdatasync`'d.
//! - **The leader** serves its followers up to what it may acknowledge itself (its durable
//!   offset), records each follower's fetch offset as its position, and bounds the high
//!   watermark by the lowest position in the ISR. So "acknowledged with acks=all" means "on
//!   disk on every in-sync replica", and every follower's log is a prefix of the leader's.
//! - **ISR changes** go to the controller as AlterPartition: the leader removes followers
//!   that have not caught up for `replica.lag.time.max.ms`, and adds back those that caught
//!   up with the high watermark. The controller itself removes a fenced node's replicas.
//!
//! - **A new leader** (the controller elects one from the ISR when the leader's node is
//!   fenced) stamps its batches with its leader epoch. A follower checks its log against the
//!   leader's before it fetches in a new epoch (OffsetForLeaderEpoch, KIP-279) and truncates
//!   where they diverge, so it never keeps records its new leader does not have.

pub mod client;
pub mod fetcher;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use storage::{Offset, PartitionLog};

use crate::controller::metadata::Leadership;
use crate::controller::ControllerRequest;
use crate::error_code::ErrorCode;

/// What the leader knows of one follower, from its fetches.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Its last fetch offset: everything below is durable on it.
    position: Offset,
    /// The last time it had everything the leader could serve (Kafka's lastCaughtUpTime).
    caught_up_at: Instant,
    last_fetch_at: Instant,
    /// What the leader could serve at its last fetch.
    servable_at_last_fetch: Offset,
}

struct State {
    leadership: Leadership,
    replicas: Vec<i32>,
    /// As leader: each follower that fetched since this leadership began.
    followers: HashMap<i32, Progress>,
    /// When this broker last became the leader (followers that never fetched count as caught
    /// up then).
    leading_since: Instant,
    /// The log's end when this leadership began: a follower rejoins the ISR only once it has
    /// that much (Kafka's leader-epoch start offset), whatever the high watermark says.
    leading_from: Offset,
}

/// A local replica of a replicated partition.
pub struct Replica {
    pub topic: Rc<str>,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub log: Rc<PartitionLog>,
    /// This shard's broker id.
    me: i32,
    state: RefCell<State>,
    /// The ISR an AlterPartition on its way to the controller asks for: one at a time per
    /// partition. Until it is decided the high watermark counts the union of both ISRs
    /// (Kafka's maximal ISR), so a follower joining is not left without what is acknowledged
    /// meanwhile.
    altering: RefCell<Option<Vec<i32>>>,
    /// As follower: the leader epoch for which this log was checked against its leader
    /// (truncated where it diverged) and may fetch.
    checked_epoch: Cell<Option<i32>>,
    /// The leadership changed (wakes acks=all produces waiting on a leader that lost it).
    changed: event_listener::Event,
    /// As follower: the leader refused this partition's last fetch; not again before this.
    resting_until: Cell<Option<Instant>>,
    /// Each pause doubles while the leader keeps refusing.
    rest_length: Cell<Duration>,
}

/// An ISR change the leader asks the controller for.
#[derive(Debug)]
pub struct IsrChange {
    pub request: ControllerRequest,
    pub why: &'static str,
}

impl Replica {
    pub fn new(
        topic: Rc<str>,
        topic_id: uuid::Uuid,
        partition: i32,
        log: Rc<PartitionLog>,
        me: i32,
        leadership: Leadership,
        replicas: Vec<i32>,
    ) -> Rc<Replica> {
        let leading_from = log.log_end_offset();
        let replica = Rc::new(Replica {
            topic,
            topic_id,
            partition,
            log,
            me,
            state: RefCell::new(State {
                leadership,
                replicas,
                followers: HashMap::new(),
                leading_since: Instant::now(),
                leading_from,
            }),
            altering: RefCell::new(None),
            checked_epoch: Cell::new(None),
            changed: event_listener::Event::new(),
            resting_until: Cell::new(None),
            rest_length: Cell::new(Duration::ZERO),
        });
        if replica.is_leader() {
            replica.log.set_leader_epoch(replica.leader_epoch());
        }
        replica.log.set_leading(replica.is_leader());
        replica.bound_high_watermark(None);
        replica
    }

    /// Who leads and in which epoch, as this replica last applied it: a follower's requests
    /// remember it, and an answer that comes back under another one is dropped.
    pub fn leadership_key(&self) -> (i32, i32) {
        let state = self.state.borrow();
        (state.leadership.leader, state.leadership.leader_epoch)
    }

    /// A listener that fires when the leadership next changes.
    pub fn changes(&self) -> event_listener::EventListener {
        self.changed.listen()
    }

    /// As follower: whether this log was checked against the current leader epoch.
    pub fn checked_for_epoch(&self) -> bool {
        self.checked_epoch.get() == Some(self.leader_epoch())
    }

    pub fn set_checked_for_epoch(&self, epoch: i32) {
        self.checked_epoch.set(Some(epoch));
    }

    /// Checks the log against the leader again before the next fetch.
    pub fn recheck(&self) {
        self.checked_epoch.set(None);
    }

    /// As follower: whether this partition may be fetched now (it is not resting after a
    /// refusal). A partition that may fetch again has its pauses start over.
    pub fn may_fetch(&self, now: Instant) -> bool {
        match self.resting_until.get() {
            Some(until) if until > now => false,
            Some(_) => {
                self.resting_until.set(None);
                true
            }
            None => {
                self.rest_length.set(Duration::ZERO);
                true
            }
        }
    }

    pub fn fetch_not_before(&self) -> Option<Instant> {
        self.resting_until.get()
    }

    /// The leader refused this partition: it rests, twice as long as last time, from 50 ms up
    /// to `max`, while the fetcher goes on with the others.
    pub fn rest(&self, max: Duration) {
        let length = (self.rest_length.get() * 2).clamp(
            Duration::from_millis(50),
            max.max(Duration::from_millis(50)),
        );
        self.rest_length.set(length);
        self.resting_until.set(Some(Instant::now() + length));
    }

    pub fn is_leader(&self) -> bool {
        self.state.borrow().leadership.leader == self.me
    }

    pub fn leader(&self) -> i32 {
        self.state.borrow().leadership.leader
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state.borrow().leadership.leader_epoch
    }

    pub fn isr_len(&self) -> usize {
        self.state.borrow().leadership.isr.len()
    }

    pub fn replica_count(&self) -> usize {
        self.state.borrow().replicas.len()
    }

    /// The lag of each follower in messages behind the leader's log end, for metrics.
    pub fn follower_lags(&self) -> Vec<(i32, i64)> {
        let state = self.state.borrow();
        let end = self.log.log_end_offset().0;
        state
            .replicas
            .iter()
            .filter(|broker| **broker != self.me)
            .map(|broker| {
                let position = state
                    .followers
                    .get(broker)
                    .map_or(self.log.log_start_offset().0, |progress| {
                        progress.position.0
                    });
                (*broker, (end - position).max(0))
            })
            .collect()
    }

    /// Takes the leadership the metadata now records.
    pub fn update(&self, leadership: Leadership, replicas: Vec<i32>) {
        let mut state = self.state.borrow_mut();
        let became_leader = leadership.leader == self.me
            && (state.leadership.leader != self.me
                || state.leadership.leader_epoch != leadership.leader_epoch);
        if became_leader {
            state.followers.clear();
            state.leading_since = Instant::now();
            state.leading_from = self.log.log_end_offset();
            self.log.set_leader_epoch(leadership.leader_epoch);
        }
        let moved = state.leadership.leader != leadership.leader
            || state.leadership.leader_epoch != leadership.leader_epoch;
        // An ISR change on its way is decided once the partition epoch moves (or the
        // leadership does): the metadata's ISR holds from here.
        let decided = moved || state.leadership.partition_epoch != leadership.partition_epoch;
        self.log.set_leading(leadership.leader == self.me);
        state.leadership = leadership;
        state.replicas = replicas;
        drop(state);
        if moved {
            self.checked_epoch.set(None);
        }
        if decided {
            self.altering.borrow_mut().take();
        }
        self.bound_high_watermark(None);
        self.changed.notify(usize::MAX);
    }

    /// Sets the log's high-watermark bound from what the ISR holds: as leader, the lowest
    /// position of its in-sync followers (none with an ISR of one: the log alone decides);
    /// as follower, `leader_high_watermark` when a fetch brought one. Never moves it back.
    pub fn bound_high_watermark(&self, leader_high_watermark: Option<Offset>) {
        let state = self.state.borrow();
        let before = self.log.replicated_high_watermark();
        if state.leadership.leader != self.me {
            match (leader_high_watermark, before) {
                (Some(high), _) => self.log.set_replicated_high_watermark(Some(high)),
                // A new follower serves nothing its leader has not confirmed.
                (None, None) => self
                    .log
                    .set_replicated_high_watermark(Some(self.log.log_start_offset())),
                (None, Some(_)) => {}
            }
            return;
        }
        let pending = self.altering.borrow();
        let followers: Vec<i32> = state
            .leadership
            .isr
            .iter()
            .chain(pending.iter().flatten())
            .copied()
            .filter(|broker| *broker != self.me)
            .collect::<std::collections::BTreeSet<i32>>()
            .into_iter()
            .collect();
        drop(pending);
        if followers.is_empty() {
            self.log.set_replicated_high_watermark(None);
            return;
        }
        // A follower that has not fetched in this leadership holds no known position.
        let lowest = followers
            .iter()
            .map(|broker| {
                state
                    .followers
                    .get(broker)
                    .map(|progress| progress.position)
            })
            .try_fold(Offset(i64::MAX), |lowest, position| {
                position.map(|position| lowest.min(position))
            });
        let bound = match (lowest, before) {
            (Some(lowest), Some(before)) => lowest.max(before),
            // The ISR grew from the leader alone: what was visible stays so (the follower
            // joined at or past it).
            (Some(lowest), None) => lowest.max(self.log.high_watermark()),
            (None, Some(before)) => before,
            // A new leadership whose followers have not fetched yet: nothing is known to be
            // on them, so nothing counts as replicated (an idempotent retry of a batch this
            // log holds is acknowledged only once the ISR has it).
            (None, None) => self.log.log_start_offset(),
        };
        self.log.set_replicated_high_watermark(Some(bound));
    }

    /// A follower's fetch from `fetch_offset`, as leader: records its position, or says the
    /// error it gets: NOT_LEADER_OR_FOLLOWER if this broker does not lead or the fetcher is not a
    /// replica, OFFSET_OUT_OF_RANGE for a position past what the leader holds. Also returns
    /// the ISR change to ask for, if the follower has caught up and is out of the ISR.
    pub fn follower_fetched(
        &self,
        follower: i32,
        fetch_offset: i64,
        now: Instant,
    ) -> Result<Option<IsrChange>, ErrorCode> {
        let servable = self.log.local_high_watermark();
        {
            let mut state = self.state.borrow_mut();
            if state.leadership.leader != self.me {
                return Err(ErrorCode::NotLeaderOrFollower);
            }
            if follower == self.me || !state.replicas.contains(&follower) {
                return Err(ErrorCode::NotLeaderOrFollower);
            }
            if fetch_offset < 0 || fetch_offset > self.log.log_end_offset().0 {
                return Err(ErrorCode::OffsetOutOfRange);
            }
            let position = Offset(fetch_offset);
            let leading_since = state.leading_since;
            let progress = state.followers.entry(follower).or_insert(Progress {
                position,
                caught_up_at: leading_since,
                last_fetch_at: now,
                servable_at_last_fetch: Offset(0),
            });
            // Kafka's rule: caught up now if it has all the leader can serve; caught up at
            // its last fetch if it has all the leader could serve then.
            if position >= servable {
                progress.caught_up_at = now;
            } else if position >= progress.servable_at_last_fetch {
                progress.caught_up_at = progress.caught_up_at.max(progress.last_fetch_at);
            }
            let went_back = position < progress.position;
            progress.position = position;
            progress.last_fetch_at = now;
            progress.servable_at_last_fetch = servable;
            if went_back {
                // Its log lost what it had reported (a replaced disk, a cut tail): it is not
                // in sync, whatever it had before, until it has it all again.
                progress.caught_up_at = leading_since.min(progress.caught_up_at);
                let in_isr = state.leadership.isr.contains(&follower);
                drop(state);
                self.bound_high_watermark(None);
                if in_isr && self.altering.borrow().is_none() {
                    let state = self.state.borrow();
                    let isr = state
                        .leadership
                        .isr
                        .iter()
                        .copied()
                        .filter(|broker| *broker != follower)
                        .collect();
                    return Ok(Some(self.isr_change(
                        &state,
                        isr,
                        "a follower's log went back below what it had reported",
                    )));
                }
                return Ok(None);
            }
        }
        self.bound_high_watermark(None);
        Ok(self.expansion(follower))
    }

    /// The ISR with `follower` added, if it is out of the ISR and has caught up with the high
    /// watermark (Kafka's condition), and no other change is on its way.
    fn expansion(&self, follower: i32) -> Option<IsrChange> {
        let state = self.state.borrow();
        if self.altering.borrow().is_some() || state.leadership.isr.contains(&follower) {
            return None;
        }
        let position = state.followers.get(&follower)?.position;
        if position < self.log.high_watermark() || position < state.leading_from {
            return None;
        }
        let mut isr = state.leadership.isr.clone();
        isr.push(follower);
        Some(self.isr_change(&state, isr, "a follower caught up"))
    }

    /// The ISR without the followers that have not caught up within `lag_max`, if any.
    pub fn shrinkage(&self, now: Instant, lag_max: Duration) -> Option<IsrChange> {
        let state = self.state.borrow();
        if self.altering.borrow().is_some() || state.leadership.leader != self.me {
            return None;
        }
        let lagging = |broker: &i32| {
            let caught_up_at = state
                .followers
                .get(broker)
                .map_or(state.leading_since, |progress| progress.caught_up_at);
            now.saturating_duration_since(caught_up_at) > lag_max
        };
        if !state
            .leadership
            .isr
            .iter()
            .any(|broker| *broker != self.me && lagging(broker))
        {
            return None;
        }
        let isr = state
            .leadership
            .isr
            .iter()
            .copied()
            .filter(|broker| *broker == self.me || !lagging(broker))
            .collect();
        Some(self.isr_change(
            &state,
            isr,
            "followers fell behind (replica.lag.time.max.ms)",
        ))
    }

    fn isr_change(&self, state: &State, isr: Vec<i32>, why: &'static str) -> IsrChange {
        IsrChange {
            request: ControllerRequest::AlterPartition {
                topic: self.topic.to_string(),
                partition: self.partition,
                leader: self.me,
                partition_epoch: state.leadership.partition_epoch,
                isr,
            },
            why,
        }
    }

    /// Marks an ISR change asking for `isr` as on its way (false if one already is).
    pub fn begin_altering(&self, isr: &[i32]) -> bool {
        let mut altering = self.altering.borrow_mut();
        if altering.is_some() {
            return false;
        }
        *altering = Some(isr.to_vec());
        true
    }

    /// Whether an ISR change is on its way.
    pub fn is_altering(&self) -> bool {
        self.altering.borrow().is_some()
    }

    /// Whether the ISR change on its way is the one asking for `isr`.
    pub fn altering_to(&self, isr: &[i32]) -> bool {
        self.altering.borrow().as_deref() == Some(isr)
    }

    /// The change was refused for good: the ISR is the metadata's again. (A change that was
    /// taken ends when its partition epoch is applied, in `update`.)
    pub fn end_altering(&self) {
        self.altering.borrow_mut().take();
        self.bound_high_watermark(None);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use std::path::Path;

    use storage::sim::SimDisk;
    use storage::{LogConfig, LogContext};

    fn run<T>(future: impl std::future::Future<Output = T>) -> T {
        storage::dma::ensure_locked_memory(64 << 20).unwrap();
        shards::task::run_local(future).unwrap()
    }

    async fn durable_log_of(records: i32) -> Rc<PartitionLog> {
        let context = LogContext::new(Rc::new(SimDisk::new(5)), 64 << 20, 8);
        let log = PartitionLog::open(
            &context,
            Path::new("/data/t-0"),
            LogConfig::default(),
            false,
        )
        .await
        .unwrap();
        shards::task::spawn(log.clone().run_flusher()).detach();
        append(&log, records).await;
        log
    }

    async fn append(log: &PartitionLog, records: i32) {
        let batch = storage::record_batch::build_uncompressed_batch(records, 10, 0);
        let info = log.append(&batch).await.unwrap();
        log.wait_durable(Offset(info.last_offset.0 + 1))
            .await
            .unwrap();
    }

    fn leadership(isr: Vec<i32>, partition_epoch: i32) -> Leadership {
        Leadership {
            leader: 0,
            leader_epoch: 0,
            partition_epoch,
            isr,
        }
    }

    /// Broker 0's replica of partition t-0 on `log`, as `leadership` has it.
    fn leader_of(
        log: &Rc<PartitionLog>,
        leadership: Leadership,
        replicas: Vec<i32>,
    ) -> Rc<Replica> {
        Replica::new(
            "t".into(),
            uuid::Uuid::nil(),
            0,
            log.clone(),
            0,
            leadership,
            replicas,
        )
    }

    fn isr_of(change: &IsrChange) -> (Vec<i32>, i32) {
        match &change.request {
            ControllerRequest::AlterPartition {
                isr,
                partition_epoch,
                ..
            } => (isr.clone(), *partition_epoch),
            _ => panic!("not an AlterPartition"),
        }
    }

    /// The leader's high watermark is the lowest durable position in its ISR: nothing before
    /// every in-sync follower has fetched past it, and no follower's claim beyond the
    /// leader's log.
    #[test]
    fn the_high_watermark_is_the_lowest_position_in_the_isr() {
        run(async {
            let log = durable_log_of(3).await;
            let replicas = vec![0, 1000, 2000];
            let replica = leader_of(&log, leadership(replicas.clone(), 0), replicas);
            assert_eq!(log.local_high_watermark(), Offset(3));
            assert_eq!(log.high_watermark(), Offset(0), "no follower heard from");
            let now = Instant::now();
            replica.follower_fetched(1000, 3, now).unwrap();
            assert_eq!(log.high_watermark(), Offset(0), "one follower of two");
            replica.follower_fetched(2000, 1, now).unwrap();
            assert_eq!(log.high_watermark(), Offset(1));
            replica.follower_fetched(2000, 3, now).unwrap();
            assert_eq!(log.high_watermark(), Offset(3));
            assert_eq!(
                replica.follower_fetched(2000, 4, now).unwrap_err(),
                ErrorCode::OffsetOutOfRange
            );
            assert_eq!(
                replica.follower_fetched(5000, 0, now).unwrap_err(),
                ErrorCode::NotLeaderOrFollower,
                "not a replica"
            );
            assert_eq!(
                replica.follower_fetched(0, 0, now).unwrap_err(),
                ErrorCode::NotLeaderOrFollower,
                "itself"
            );
            // An ISR of the leader alone: the log decides.
            replica.update(leadership(vec![0], 1), vec![0, 1000, 2000]);
            append(&log, 2).await;
            assert_eq!(log.high_watermark(), Offset(5));
        });
    }

    /// A follower that has not caught up within the lag bound leaves the ISR; one that caught
    /// up with the high watermark comes back; one change at a time.
    #[test]
    fn lagging_followers_leave_the_isr_and_caught_up_ones_return() {
        run(async {
            let log = durable_log_of(3).await;
            let replicas = vec![0, 1000, 2000];
            let replica = leader_of(&log, leadership(replicas.clone(), 0), replicas.clone());
            let lag = Duration::from_secs(30);
            let start = Instant::now();
            replica.follower_fetched(1000, 3, start).unwrap();
            replica.follower_fetched(2000, 3, start).unwrap();
            assert!(replica.shrinkage(start + lag / 2, lag).is_none());
            append(&log, 3).await;
            replica.follower_fetched(2000, 6, start + lag / 3).unwrap();
            // 1000 last had everything the leader could serve at `start`.
            let change = replica.shrinkage(start + lag + lag / 6, lag).unwrap();
            assert_eq!(isr_of(&change), (vec![0, 2000], 0));
            assert!(replica.begin_altering(&[0, 2000]));
            assert!(
                replica.shrinkage(start + lag * 2, lag).is_none(),
                "one at a time"
            );
            replica.end_altering();

            replica.update(leadership(vec![0, 2000], 1), replicas);
            assert_eq!(log.high_watermark(), Offset(6));
            let behind = replica.follower_fetched(1000, 5, start + lag * 2).unwrap();
            assert!(behind.is_none(), "not caught up with the high watermark");
            let caught_up = replica
                .follower_fetched(1000, 6, start + lag * 2)
                .unwrap()
                .unwrap();
            assert_eq!(isr_of(&caught_up), (vec![0, 2000, 1000], 1));
        });
    }

    /// A pending ISR change counts for the high watermark until the partition epoch moves; a
    /// follower whose position goes back leaves the ISR.
    #[test]
    fn a_pending_isr_holds_until_decided_and_a_follower_that_went_back_leaves() {
        run(async {
            let log = durable_log_of(3).await;
            let replicas = vec![0, 1000, 2000];
            let replica = leader_of(&log, leadership(vec![0, 1000], 0), replicas.clone());
            let now = Instant::now();
            replica.follower_fetched(1000, 3, now).unwrap();
            let joining = replica.follower_fetched(2000, 3, now).unwrap().unwrap();
            assert!(replica.begin_altering(&isr_of(&joining).0));
            append(&log, 2).await;
            replica.follower_fetched(1000, 5, now).unwrap();
            assert_eq!(
                log.high_watermark(),
                Offset(3),
                "the joining follower counts"
            );
            // An unrelated metadata change in the same partition epoch keeps it pending.
            replica.update(leadership(vec![0, 1000], 0), replicas.clone());
            assert!(replica.is_altering());
            replica.update(leadership(vec![0, 1000, 2000], 1), replicas.clone());
            assert!(!replica.is_altering(), "decided");
            replica.follower_fetched(2000, 5, now).unwrap();
            assert_eq!(log.high_watermark(), Offset(5));

            let went_back = replica.follower_fetched(2000, 1, now).unwrap().unwrap();
            assert_eq!(isr_of(&went_back), (vec![0, 1000], 1));
            assert_eq!(log.high_watermark(), Offset(5), "never moves back");
        });
    }
}
