//! Incremental fetch sessions (KIP-227), one cache per shard, as Kafka's `FetchSession.scala`
//! keeps them: a consumer of many partitions sends them all once (a full request with epoch
//! 0), gets a session id, and from then on sends only the partitions whose fetch position
//! changed; the shard answers only the partitions with news (records, a moved high watermark,
//! log start or last stable offset, an error).
//!
//! Pure bookkeeping (the clock is passed in); the Fetch handler reads the logs. Bounded: at
//! most `max.incremental.fetch.session.cache.slots` sessions per shard, each of at most
//! `SESSION_PARTITIONS_MAX` partitions and all of them together at most
//! `CACHED_PARTITIONS_MAX`; a session that would pass a bound is not made (the request is
//! answered without one) or is dropped (FETCH_SESSION_ID_NOT_FOUND, and the client starts
//! over with a full request). When the cache is full, a new session takes the place of one
//! idle for two minutes, or of a smaller one older than that, as Kafka's eviction does.

use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;

/// Kafka's `FetchMetadata` constants.
pub const INVALID_SESSION_ID: i32 = 0;
pub const INITIAL_EPOCH: i32 = 0;
pub const FINAL_EPOCH: i32 = -1;

/// Kafka's error codes for sessions.
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
pub const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

/// Kafka's `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`.
const EVICTION_AGE: Duration = Duration::from_secs(120);

/// A session partition's identity: by topic id from Fetch v13 on, by name before.
/// Names are shared by every partition of a topic (a request names a topic once).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Id(uuid::Uuid),
    Name(Rc<str>),
}

pub type PartitionKey = (TopicKey, i32);

/// What the client asked of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPosition {
    pub fetch_offset: i64,
    pub max_bytes: usize,
    pub current_leader_epoch: i32,
}

/// What the client was last told about a partition; `None` until it was told anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone)]
struct Cached {
    position: FetchPosition,
    reported: Option<Reported>,
}

struct Session {
    /// The epoch the next request of this session must carry.
    epoch: i32,
    uses_topic_ids: bool,
    partitions: IndexMap<PartitionKey, Cached>,
    created: Instant,
    last_used: Instant,
}

/// How a Fetch request is to be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Context {
    /// Every partition asked, answered; no session (epoch -1, or none could be made).
    Sessionless,
    /// A full request (epoch 0) that asks for a session: answered in full, and a session of
    /// its partitions is made when the answer is built (`finish_full`).
    Full,
    /// Session `id`: read these partitions (the session's, in its order), answer the changed.
    /// `epoch` is the session's epoch once this request is answered: another request of the
    /// session meanwhile (a duplicate) moves it, and this one is then refused.
    Incremental {
        id: i32,
        epoch: i32,
        partitions: Vec<(PartitionKey, FetchPosition)>,
    },
    /// The whole request is refused with this error code (session id 0 in the answer).
    Refused(i16),
}

/// One partition as the Fetch handler read it, for deciding what an answer includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub reported: Reported,
    pub has_records: bool,
    pub error: bool,
}

/// Kafka's `FetchMetadata.nextEpoch`.
fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

pub struct FetchSessions {
    sessions: std::collections::HashMap<i32, Session>,
    slots: usize,
    session_partitions_max: usize,
    cached_partitions_max: usize,
    /// Partitions held by all sessions together.
    cached: usize,
    /// Sessions made and sessions evicted to make room, for the log and metrics.
    pub created_total: u64,
    pub evicted_total: u64,
}

impl FetchSessions {
    pub fn new(
        slots: usize,
        session_partitions_max: usize,
        cached_partitions_max: usize,
    ) -> FetchSessions {
        FetchSessions {
            sessions: Default::default(),
            slots,
            session_partitions_max,
            cached_partitions_max,
            cached: 0,
            created_total: 0,
            evicted_total: 0,
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Partitions held by all sessions together.
    pub fn cached_partitions(&self) -> usize {
        self.cached
    }

    /// A full or sessionless request closes the session it names, if any.
    pub fn close(&mut self, session_id: i32) {
        if session_id != INVALID_SESSION_ID {
            self.remove(session_id);
        }
    }

    fn remove(&mut self, id: i32) -> Option<Session> {
        let session = self.sessions.remove(&id)?;
        self.cached -= session.partitions.len();
        Some(session)
    }

    /// Works out how to serve a request from its session fields, its partitions (what it asks
    /// of each) and its forgotten partitions. `uses_topic_ids` is whether the request is v13+.
    ///
    /// `changes` gives the request's partitions and forgotten partitions; it is only called for
    /// an incremental request, so full ones (every librdkafka fetch) build nothing.
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        uses_topic_ids: bool,
        changes: impl FnOnce() -> (Vec<(PartitionKey, FetchPosition)>, Vec<PartitionKey>),
        now: Instant,
    ) -> Context {
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            self.close(session_id);
            return if epoch == FINAL_EPOCH || self.slots == 0 {
                Context::Sessionless
            } else {
                Context::Full
            };
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Context::Refused(FETCH_SESSION_ID_NOT_FOUND);
        };
        if session.epoch != epoch {
            return Context::Refused(INVALID_FETCH_SESSION_EPOCH);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return Context::Refused(FETCH_SESSION_TOPIC_ID_ERROR);
        }
        let (requested, forgotten) = changes();
        let before = session.partitions.len();
        for (key, position) in requested {
            match session.partitions.get_mut(&key) {
                Some(cached) => cached.position = position,
                None => {
                    session.partitions.insert(
                        key,
                        Cached {
                            position,
                            reported: None,
                        },
                    );
                }
            }
        }
        if !forgotten.is_empty() {
            let forgotten: HashSet<PartitionKey> = forgotten.into_iter().collect();
            session.partitions.retain(|key, _| !forgotten.contains(key));
        }
        let after = session.partitions.len();
        self.cached = (self.cached + after).saturating_sub(before);
        if after > self.session_partitions_max {
            // Past a session's bound: the client starts over with a full request, which is
            // answered without a session if it is still too large.
            self.remove(session_id);
            return Context::Refused(FETCH_SESSION_ID_NOT_FOUND);
        }
        if self.cached > self.cached_partitions_max
            && !self.make_room(
                false,
                self.cached - self.cached_partitions_max,
                Some(session_id),
                now,
            )
        {
            self.remove(session_id);
            return Context::Refused(FETCH_SESSION_ID_NOT_FOUND);
        }
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return Context::Refused(FETCH_SESSION_ID_NOT_FOUND);
        };
        if session.partitions.is_empty() {
            self.remove(session_id);
            return Context::Sessionless;
        }
        session.epoch = next_epoch(epoch);
        session.last_used = now;
        Context::Incremental {
            id: session_id,
            epoch: session.epoch,
            partitions: session
                .partitions
                .iter()
                .map(|(key, cached)| (key.clone(), cached.position.clone()))
                .collect(),
        }
    }

    /// Whether a session of `size` partitions could be made now (perhaps by evicting others):
    /// checked before a full answer's partitions are gathered for one.
    pub fn could_make(&self, size: usize, now: Instant) -> bool {
        self.slots > 0
            && size <= self.session_partitions_max
            && size <= self.cached_partitions_max
            && self.victims(true, size, None, now).is_some()
    }

    /// A full request answered: makes a session of its partitions (with what the answer told
    /// of each) if there is room, and returns its id, or 0 for none.
    pub fn finish_full(
        &mut self,
        uses_topic_ids: bool,
        partitions: Vec<(PartitionKey, FetchPosition, Option<Reported>)>,
        now: Instant,
    ) -> i32 {
        let size = partitions.len();
        if self.slots == 0
            || size > self.session_partitions_max
            || size > self.cached_partitions_max
            || !self.make_room(true, size, None, now)
        {
            return INVALID_SESSION_ID;
        }
        let id = loop {
            let candidate = (uuid::Uuid::new_v4().as_u128() as u32 & 0x7fff_ffff) as i32;
            if candidate != INVALID_SESSION_ID && !self.sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        let partitions: IndexMap<PartitionKey, Cached> = partitions
            .into_iter()
            .map(|(key, position, reported)| (key, Cached { position, reported }))
            .collect();
        self.cached += partitions.len();
        self.sessions.insert(
            id,
            Session {
                epoch: next_epoch(INITIAL_EPOCH),
                uses_topic_ids,
                partitions,
                created: now,
                last_used: now,
            },
        );
        self.created_total += 1;
        id
    }

    /// The sessions to evict so that `partitions` more fit under the partition bound (and,
    /// with `slot`, a new session fits under the slot bound), never `exclude`; `None` if no
    /// choice allowed by Kafka's rules makes room. Candidates, in order: sessions idle past the
    /// eviction age, least recently used first; then sessions older than that age that are no
    /// larger than the newcomer, smallest first.
    fn victims(
        &self,
        slot: bool,
        partitions: usize,
        exclude: Option<i32>,
        now: Instant,
    ) -> Option<Vec<i32>> {
        let aged = |instant: Instant| now.saturating_duration_since(instant) > EVICTION_AGE;
        let fits = |sessions: usize, cached: usize| {
            (!slot || sessions < self.slots) && cached + partitions <= self.cached_partitions_max
        };
        let (mut sessions, mut cached) = (self.sessions.len(), self.cached);
        let mut chosen = Vec::new();
        if fits(sessions, cached) {
            return Some(chosen);
        }
        let mut idle: Vec<(Instant, i32, usize)> = self
            .sessions
            .iter()
            .filter(|(id, session)| Some(**id) != exclude && aged(session.last_used))
            .map(|(id, session)| (session.last_used, *id, session.partitions.len()))
            .collect();
        idle.sort_unstable();
        let mut old: Vec<(usize, i32)> = self
            .sessions
            .iter()
            .filter(|(id, session)| {
                Some(**id) != exclude
                    && !aged(session.last_used)
                    && aged(session.created)
                    && session.partitions.len() <= partitions.max(1)
            })
            .map(|(id, session)| (session.partitions.len(), *id))
            .collect();
        old.sort_unstable();
        let candidates = idle
            .into_iter()
            .map(|(_, id, size)| (id, size))
            .chain(old.into_iter().map(|(size, id)| (id, size)));
        for (id, size) in candidates {
            chosen.push(id);
            sessions -= 1;
            cached -= size;
            if fits(sessions, cached) {
                return Some(chosen);
            }
        }
        None
    }

    /// Evicts what `victims` chooses; false (and nothing evicted) if no choice makes room.
    fn make_room(
        &mut self,
        slot: bool,
        partitions: usize,
        exclude: Option<i32>,
        now: Instant,
    ) -> bool {
        let Some(victims) = self.victims(slot, partitions, exclude, now) else {
            return false;
        };
        for id in victims {
            self.remove(id);
            self.evicted_total += 1;
        }
        true
    }

    /// An incremental request answered: for each partition read (by its key), whether the
    /// answer includes it. A partition is included when it has records, an error, or offsets
    /// the client was not told yet; those are remembered. Partitions that returned records
    /// move to the end of the session's order, so that the next fetch gives the others the
    /// first share of its byte budget. Refused with FETCH_SESSION_ID_NOT_FOUND if the session
    /// is gone (evicted while the request waited), or INVALID_FETCH_SESSION_EPOCH if another
    /// request of the session was served meanwhile (Kafka's "possible duplicate request").
    pub fn finish_incremental(
        &mut self,
        id: i32,
        epoch: i32,
        outcomes: &[(PartitionKey, Outcome)],
    ) -> Result<Vec<bool>, i16> {
        let session = self
            .sessions
            .get_mut(&id)
            .ok_or(FETCH_SESSION_ID_NOT_FOUND)?;
        if session.epoch != epoch {
            return Err(INVALID_FETCH_SESSION_EPOCH);
        }
        let mut included = Vec::with_capacity(outcomes.len());
        let mut with_records = HashSet::new();
        for (key, outcome) in outcomes {
            let Some(cached) = session.partitions.get_mut(key) else {
                included.push(true);
                continue;
            };
            let changed = cached.reported != Some(outcome.reported);
            included.push(outcome.has_records || outcome.error || changed);
            cached.reported = if outcome.error {
                // Sent again once the error clears.
                None
            } else {
                Some(outcome.reported)
            };
            if outcome.has_records {
                with_records.insert(key.clone());
            }
        }
        if !with_records.is_empty() {
            let (moved, stayed): (IndexMap<_, _>, IndexMap<_, _>) =
                std::mem::take(&mut session.partitions)
                    .into_iter()
                    .partition(|(key, _)| with_records.contains(key));
            session.partitions = stayed;
            session.partitions.extend(moved);
        }
        Ok(included)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(partition: i32) -> PartitionKey {
        (TopicKey::Name(Rc::from("t")), partition)
    }

    fn at(offset: i64) -> FetchPosition {
        FetchPosition {
            fetch_offset: offset,
            max_bytes: 1024,
            current_leader_epoch: -1,
        }
    }

    fn reported(high_watermark: i64) -> Reported {
        Reported {
            high_watermark,
            last_stable_offset: high_watermark,
            log_start_offset: 0,
        }
    }

    fn quiet(high_watermark: i64) -> Outcome {
        Outcome {
            reported: reported(high_watermark),
            has_records: false,
            error: false,
        }
    }

    /// A cache with one session of partitions 0..count, all told high watermark 10.
    fn with_session(count: i32, now: Instant) -> (FetchSessions, i32) {
        let mut sessions = FetchSessions::new(2, 100, 1000);
        assert_eq!(
            sessions.begin(0, INITIAL_EPOCH, false, || unreachable!(), now),
            Context::Full
        );
        let id = sessions.finish_full(
            false,
            (0..count)
                .map(|p| (key(p), at(0), Some(reported(10))))
                .collect(),
            now,
        );
        assert_ne!(id, INVALID_SESSION_ID);
        (sessions, id)
    }

    fn no_changes() -> (Vec<(PartitionKey, FetchPosition)>, Vec<PartitionKey>) {
        (Vec::new(), Vec::new())
    }

    /// Begins an incremental request and returns the partitions to read and the epoch.
    fn incremental(
        sessions: &mut FetchSessions,
        id: i32,
        epoch: i32,
        changes: impl FnOnce() -> (Vec<(PartitionKey, FetchPosition)>, Vec<PartitionKey>),
        now: Instant,
    ) -> (Vec<(PartitionKey, FetchPosition)>, i32) {
        match sessions.begin(id, epoch, false, changes, now) {
            Context::Incremental {
                partitions, epoch, ..
            } => (partitions, epoch),
            other => panic!("incremental expected, got {other:?}"),
        }
    }

    fn answer(
        sessions: &mut FetchSessions,
        id: i32,
        epoch: i32,
        read: &[(PartitionKey, FetchPosition)],
        outcomes: &[Outcome],
    ) -> Vec<bool> {
        let keyed: Vec<(PartitionKey, Outcome)> = read
            .iter()
            .map(|(key, _)| key.clone())
            .zip(outcomes.iter().copied())
            .collect();
        sessions.finish_incremental(id, epoch, &keyed).unwrap()
    }

    #[test]
    fn an_incremental_answer_holds_only_the_partitions_with_news() {
        let now = Instant::now();
        let (mut sessions, id) = with_session(4, now);
        let (read, epoch) = incremental(&mut sessions, id, 1, no_changes, now);
        assert_eq!(read.len(), 4, "every session partition is read");
        let mut outcomes = vec![quiet(10); 4];
        outcomes[1].has_records = true;
        outcomes[1].reported = reported(12);
        outcomes[3].reported = reported(11);
        outcomes[2].error = true;
        let included = answer(&mut sessions, id, epoch, &read, &outcomes);
        assert_eq!(included, vec![false, true, true, true]);
        // Next time: the partition that had records moved to the end; the errored one is sent
        // again; the others, unchanged, are not.
        let (read, epoch) = incremental(&mut sessions, id, 2, no_changes, now);
        let order: Vec<i32> = read.iter().map(|(key, _)| key.1).collect();
        assert_eq!(order, vec![0, 2, 3, 1]);
        let outcomes = [quiet(10), quiet(10), quiet(11), quiet(12)];
        let included = answer(&mut sessions, id, epoch, &read, &outcomes);
        assert_eq!(included, vec![false, true, false, false]);
    }

    #[test]
    fn a_request_overtaken_by_another_of_its_session_is_refused_when_answered() {
        let now = Instant::now();
        let (mut sessions, id) = with_session(2, now);
        let (read, first_epoch) = incremental(&mut sessions, id, 1, no_changes, now);
        let (_, _) = incremental(&mut sessions, id, 2, no_changes, now);
        let keyed: Vec<(PartitionKey, Outcome)> = read
            .iter()
            .map(|(key, _)| (key.clone(), quiet(10)))
            .collect();
        assert_eq!(
            sessions.finish_incremental(id, first_epoch, &keyed),
            Err(INVALID_FETCH_SESSION_EPOCH)
        );
        assert_eq!(
            sessions.finish_incremental(id + 1, first_epoch, &keyed),
            Err(FETCH_SESSION_ID_NOT_FOUND)
        );
    }

    #[test]
    fn requests_update_positions_add_and_forget_partitions() {
        let now = Instant::now();
        let (mut sessions, id) = with_session(3, now);
        let (read, epoch) = incremental(
            &mut sessions,
            id,
            1,
            || (vec![(key(0), at(5)), (key(7), at(0))], vec![key(1)]),
            now,
        );
        let positions: Vec<(i32, i64)> = read
            .iter()
            .map(|(key, position)| (key.1, position.fetch_offset))
            .collect();
        assert_eq!(positions, vec![(0, 5), (2, 0), (7, 0)]);
        assert_eq!(sessions.cached_partitions(), 3);
        // The new partition has never been reported: it is in the next answer.
        let included = answer(
            &mut sessions,
            id,
            epoch,
            &read,
            &[quiet(10), quiet(10), quiet(10)],
        );
        assert_eq!(included, vec![false, false, true]);
        // Forgetting every partition ends the session.
        let context = sessions.begin(
            id,
            2,
            false,
            || (Vec::new(), vec![key(0), key(2), key(7)]),
            now,
        );
        assert_eq!(context, Context::Sessionless);
        assert!(sessions.is_empty());
        assert_eq!(sessions.cached_partitions(), 0);
    }

    #[test]
    fn wrong_ids_epochs_and_topic_id_modes_are_refused() {
        let now = Instant::now();
        let (mut sessions, id) = with_session(2, now);
        assert_eq!(
            sessions.begin(id + 1, 1, false, no_changes, now),
            Context::Refused(FETCH_SESSION_ID_NOT_FOUND)
        );
        assert_eq!(
            sessions.begin(id, 5, false, no_changes, now),
            Context::Refused(INVALID_FETCH_SESSION_EPOCH)
        );
        assert_eq!(
            sessions.begin(id, 1, true, no_changes, now),
            Context::Refused(FETCH_SESSION_TOPIC_ID_ERROR)
        );
        // The right epoch still works, once: a repeat is a stale epoch.
        assert!(matches!(
            sessions.begin(id, 1, false, no_changes, now),
            Context::Incremental { .. }
        ));
        assert_eq!(
            sessions.begin(id, 1, false, no_changes, now),
            Context::Refused(INVALID_FETCH_SESSION_EPOCH)
        );
        // A full request naming the session closes it.
        assert_eq!(
            sessions.begin(id, FINAL_EPOCH, false, no_changes, now),
            Context::Sessionless
        );
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_session_past_its_bounds_is_not_made_or_is_dropped() {
        let now = Instant::now();
        let mut sessions = FetchSessions::new(4, 3, 5);
        let partitions =
            |count: i32| -> Vec<_> { (0..count).map(|p| (key(p), at(0), None)).collect() };
        assert_eq!(sessions.finish_full(false, partitions(4), now), 0);
        let id = sessions.finish_full(false, partitions(3), now);
        assert_ne!(id, 0);
        assert_eq!(
            sessions.begin(id, 1, false, || (vec![(key(9), at(0))], Vec::new()), now),
            Context::Refused(FETCH_SESSION_ID_NOT_FOUND),
            "growing past the per-session bound drops the session"
        );
        assert_eq!(sessions.cached_partitions(), 0);
        let first = sessions.finish_full(false, partitions(3), now);
        assert_ne!(first, 0);
        assert!(!sessions.could_make(3, now));
        assert_eq!(
            sessions.finish_full(false, partitions(3), now),
            0,
            "all sessions together hold at most 5 partitions, and the first is new"
        );
        assert_eq!(sessions.len(), 1, "nothing was evicted for nothing");
        // Once the first is idle past the eviction age, it makes room.
        let later = now + Duration::from_secs(180);
        assert!(sessions.could_make(3, later));
        assert_ne!(sessions.finish_full(false, partitions(3), later), 0);
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions.cached_partitions(), 3);
    }

    #[test]
    fn a_full_cache_evicts_an_idle_session_or_a_smaller_old_one() {
        let start = Instant::now();
        let mut sessions = FetchSessions::new(2, 100, 1000);
        let partitions =
            |count: i32| -> Vec<_> { (0..count).map(|p| (key(p), at(0), None)).collect() };
        let small = sessions.finish_full(false, partitions(2), start);
        let large = sessions.finish_full(false, partitions(10), start);
        assert!(small != 0 && large != 0);
        // Full, and every session is new: no room.
        assert_eq!(sessions.finish_full(false, partitions(50), start), 0);
        // Three minutes on, both are old; the large one is used, the small one idle.
        let later = start + Duration::from_secs(180);
        assert!(matches!(
            sessions.begin(large, 1, false, no_changes, later),
            Context::Incremental { .. }
        ));
        let newcomer = sessions.finish_full(false, partitions(1), later);
        assert_ne!(newcomer, 0, "the idle session made room");
        assert_eq!(
            sessions.begin(small, 1, false, no_changes, later),
            Context::Refused(FETCH_SESSION_ID_NOT_FOUND)
        );
        // Nothing is idle now; an old session smaller than the newcomer would go, a larger
        // one stays.
        assert_eq!(sessions.finish_full(false, partitions(5), later), 0);
        assert_eq!(sessions.evicted_total, 1);
    }
}
