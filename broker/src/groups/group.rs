//! One consumer group under the classic protocol: its members, generation and state, and its
//! committed offsets. Pure state: every method takes the current time and answers at once, or
//! hands back a receiver that a later event (the rebalance completing, the leader's SyncGroup)
//! answers. The coordinator drives the clock (`expire`) and the persistence of offsets.
//!
//! The state machine is Kafka's (`ClassicGroup`): Empty -> PreparingRebalance (members rejoin,
//! bounded by the rebalance timeout, and by `group.initial.rebalance.delay.ms` for a group
//! that starts empty) -> CompletingRebalance (the leader computes the assignment) -> Stable.
//! A member that stops heart-beating for its session timeout is removed and the group
//! rebalances. KIP-394 (member id round trip) and KIP-345 (static membership) are followed;
//! cooperative rebalancing is the clients' protocol on top of the same generations.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use super::records::CommittedOffset;
use crate::config::GroupSettings;
use crate::error_code::ErrorCode;

/// Kafka's `NewMemberJoinTimeoutMs`: how long a member that has never completed a join may wait
/// in a rebalance without heart-beating.
const NEW_MEMBER_JOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// Protocol metadata one member may bring, all protocols together. A consumer's subscription
/// (topics, owned partitions, user data) is far below this; the bound keeps a group of
/// `group.max.size` members within a known amount of memory.
pub const MEMBER_METADATA_BYTES_MAX: usize = 256 * 1024;

/// Protocols (assignors) one member may offer.
pub const MEMBER_PROTOCOLS_MAX: usize = 64;

/// One member's assignment, as the leader sends it in SyncGroup.
pub const MEMBER_ASSIGNMENT_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka reports in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A JoinGroup as the group sees it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// KIP-394: JoinGroup v4+ with no member id is answered MEMBER_ID_REQUIRED with a new id.
    pub require_known_member_id: bool,
    /// KIP-814: JoinGroup v9+ can tell a rejoining static leader to skip the assignment.
    pub supports_skip_assignment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: ErrorCode,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<JoinedMember>,
    /// The leader keeps the current assignment instead of computing one (KIP-814).
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn failed(error: ErrorCode, member_id: &str) -> JoinResult {
        JoinResult {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn failed(error: ErrorCode) -> SyncResult {
        SyncResult {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer now, or one that a later event of the group sends.
pub enum Answer<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// A SyncGroup as the group sees it.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberSummary {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
    last_heartbeat: Instant,
    /// Joined in the current rebalance and has not completed one yet.
    is_new: bool,
    /// Join order: the first member becomes leader, and members are listed in this order.
    order: u64,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

/// A committed offset with the position of its record in the offsets log: a record replaces
/// another only if it comes later in the log, so the cache agrees with a replay of the log
/// whatever order concurrent commits finish in.
#[derive(Debug, Clone)]
pub struct StoredOffset {
    pub committed: CommittedOffset,
    pub log_offset: i64,
}

pub struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: HashMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they must rejoin by.
    pending: HashMap<String, Instant>,
    /// Static members: group.instance.id -> member id.
    static_members: HashMap<String, String>,
    next_order: u64,
    /// PreparingRebalance: when the join completes with whoever has rejoined.
    rebalance_deadline: Option<Instant>,
    /// The initial delayed join of a group that started empty: when it began, and its cap.
    initial_join: Option<(Instant, Duration)>,
    /// CompletingRebalance: when members that have not sent SyncGroup are removed.
    sync_deadline: Option<Instant>,
    /// When the group last became Empty (`offsets.retention.minutes` counts from it).
    empty_since: Option<Instant>,
    pub offsets: HashMap<(String, i32), StoredOffset>,
}

impl Default for Group {
    fn default() -> Self {
        Group::new()
    }
}

impl Group {
    pub fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: HashMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            next_order: 0,
            rebalance_deadline: None,
            initial_join: None,
            sync_deadline: None,
            empty_since: None,
            offsets: HashMap::new(),
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> &str {
        self.protocol_type.as_deref().unwrap_or("")
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Nothing to keep: no members, none pending, no offsets.
    pub fn is_forgettable(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.offsets.is_empty()
    }

    /// Applies a committed offset (or its deletion) found at `log_offset` of the offsets log.
    pub fn apply_offset(
        &mut self,
        topic: String,
        partition: i32,
        value: Option<CommittedOffset>,
        log_offset: i64,
    ) {
        let key = (topic, partition);
        if self
            .offsets
            .get(&key)
            .is_some_and(|stored| stored.log_offset > log_offset)
        {
            return;
        }
        match value {
            Some(committed) => {
                self.offsets.insert(
                    key,
                    StoredOffset {
                        committed,
                        log_offset,
                    },
                );
            }
            None => {
                self.offsets.remove(&key);
            }
        }
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .all(|member| member.protocols.iter().any(|(other, _)| other == name))
            })
    }

    /// Checks that `member_id` (and its instance id, for a static member) belongs to the group.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ErrorCode> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                None => return Err(ErrorCode::UnknownMemberId),
                Some(known) if known != member_id => return Err(ErrorCode::FencedInstanceId),
                Some(_) => {}
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(ErrorCode::UnknownMemberId)
        }
    }

    pub fn join(
        &mut self,
        request: JoinRequest,
        settings: &GroupSettings,
        now: Instant,
    ) -> Answer<JoinResult> {
        let fail = |error| Answer::Now(JoinResult::failed(error, &request.member_id));
        if request.session_timeout < settings.min_session_timeout
            || request.session_timeout > settings.max_session_timeout
        {
            return fail(ErrorCode::InvalidSessionTimeout);
        }
        if request.protocols.len() > MEMBER_PROTOCOLS_MAX
            || request
                .protocols
                .iter()
                .map(|(name, metadata)| name.len() + metadata.len())
                .sum::<usize>()
                > MEMBER_METADATA_BYTES_MAX
        {
            return fail(ErrorCode::InvalidRequest);
        }
        if !self.supports(&request.protocol_type, &request.protocols) {
            return fail(ErrorCode::InconsistentGroupProtocol);
        }
        if request.member_id.is_empty() {
            return self.join_unknown_member(request, settings, now);
        }
        if let Some(instance) = &request.instance_id {
            match self.static_members.get(instance) {
                Some(known) if *known != request.member_id => {
                    return fail(ErrorCode::FencedInstanceId)
                }
                _ => {}
            }
        }
        if self.pending.remove(&request.member_id).is_some() {
            let member_id = request.member_id.clone();
            return self.add_member_and_rebalance(member_id, request, settings, now);
        }
        let Some(member) = self.members.get(&request.member_id) else {
            return fail(ErrorCode::UnknownMemberId);
        };
        let unchanged = member.protocols == request.protocols;
        let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
        match self.state {
            GroupState::Empty => fail(ErrorCode::UnknownMemberId),
            GroupState::CompletingRebalance if unchanged => {
                Answer::Now(self.current_join_result(&request.member_id))
            }
            GroupState::Stable if unchanged && !is_leader => {
                Answer::Now(self.current_join_result(&request.member_id))
            }
            GroupState::PreparingRebalance
            | GroupState::CompletingRebalance
            | GroupState::Stable => {
                let member_id = request.member_id.clone();
                let receiver = self.update_member(&member_id, request, now);
                if self.state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(settings, now);
                }
                self.try_complete_join(now);
                Answer::Later(receiver)
            }
        }
    }

    fn join_unknown_member(
        &mut self,
        request: JoinRequest,
        settings: &GroupSettings,
        now: Instant,
    ) -> Answer<JoinResult> {
        let new_id = format!("{}-{}", request.client_id, uuid::Uuid::new_v4());
        if let Some(instance) = request.instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                return self.replace_static_member(old_id, new_id, request, settings, now);
            }
        }
        if self.members.len() + self.pending.len() >= settings.max_size {
            return Answer::Now(JoinResult::failed(ErrorCode::GroupMaxSizeReached, ""));
        }
        if request.instance_id.is_none() && request.require_known_member_id {
            self.pending
                .insert(new_id.clone(), now + request.session_timeout);
            return Answer::Now(JoinResult::failed(ErrorCode::MemberIdRequired, &new_id));
        }
        self.add_member_and_rebalance(new_id, request, settings, now)
    }

    /// KIP-345: a static member rejoining under a new member id takes over its old identity; the
    /// old id is fenced. A follower that rejoins a stable group with unchanged metadata gets the
    /// current generation back without a rebalance.
    fn replace_static_member(
        &mut self,
        old_id: String,
        new_id: String,
        request: JoinRequest,
        settings: &GroupSettings,
        now: Instant,
    ) -> Answer<JoinResult> {
        let Some(mut member) = self.members.remove(&old_id) else {
            self.static_members
                .remove(request.instance_id.as_deref().unwrap_or(""));
            return self.add_member_and_rebalance(new_id, request, settings, now);
        };
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinResult::failed(ErrorCode::FencedInstanceId, &old_id));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(SyncResult::failed(ErrorCode::FencedInstanceId));
        }
        let previous_leader = self.leader.clone().unwrap_or_default();
        let was_leader = previous_leader == old_id;
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = &request.instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        let supports_skip_assignment = request.supports_skip_assignment;
        let receiver = self.update_member(&new_id, request, now);
        match self.state {
            // Kafka: a stable group whose chosen protocol stays the same keeps its generation
            // and assignment. A leader that can skip the assignment (v9+) learns it leads; an
            // older one is told the previous leader id, so it does not compute an assignment
            // that a stable group would not hand out.
            GroupState::Stable if self.select_protocol() == self.protocol => {
                let is_leader = was_leader && supports_skip_assignment;
                let members = if is_leader {
                    self.member_list()
                } else {
                    Vec::new()
                };
                if let Some(member) = self.members.get_mut(&new_id) {
                    member.join_waiter = None;
                }
                Answer::Now(JoinResult {
                    error: ErrorCode::None,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    leader: if is_leader {
                        new_id.clone()
                    } else {
                        previous_leader
                    },
                    member_id: new_id,
                    members,
                    skip_assignment: is_leader,
                })
            }
            GroupState::PreparingRebalance => {
                self.try_complete_join(now);
                Answer::Later(receiver)
            }
            // Completing a rebalance, the leader may already be assigning to the old member id:
            // start over, as Kafka does. (A group with a static member is never Empty.)
            _ => {
                self.prepare_rebalance(settings, now);
                self.try_complete_join(now);
                Answer::Later(receiver)
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        request: JoinRequest,
        settings: &GroupSettings,
        now: Instant,
    ) -> Answer<JoinResult> {
        let (sender, receiver) = oneshot::channel();
        if let Some(instance) = &request.instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        if self.members.is_empty() {
            // The first member sets the group's protocol type; later ones must share it.
            self.protocol_type = Some(request.protocol_type.clone());
        }
        let order = self.next_order;
        self.next_order += 1;
        self.members.insert(
            member_id,
            Member {
                instance_id: request.instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout: request.session_timeout,
                rebalance_timeout: request.rebalance_timeout,
                protocol_type: request.protocol_type,
                protocols: request.protocols,
                assignment: Bytes::new(),
                join_waiter: Some(sender),
                sync_waiter: None,
                last_heartbeat: now,
                is_new: true,
                order,
            },
        );
        if self.state == GroupState::PreparingRebalance {
            // Kafka's InitialDelayedJoin: each newcomer extends the initial delay, up to the
            // rebalance timeout, so a fleet starting together lands in one generation.
            if let Some((started, cap)) = self.initial_join {
                let extended = (now + settings.initial_rebalance_delay).min(started + cap);
                self.rebalance_deadline = Some(extended);
            }
        } else {
            self.prepare_rebalance(settings, now);
        }
        self.try_complete_join(now);
        Answer::Later(receiver)
    }

    /// Records a known member's new join and returns where its answer will arrive.
    fn update_member(
        &mut self,
        member_id: &str,
        request: JoinRequest,
        now: Instant,
    ) -> oneshot::Receiver<JoinResult> {
        let (sender, receiver) = oneshot::channel();
        if let Some(member) = self.members.get_mut(member_id) {
            member.session_timeout = request.session_timeout;
            member.rebalance_timeout = request.rebalance_timeout;
            member.protocol_type = request.protocol_type;
            member.protocols = request.protocols;
            member.client_id = request.client_id;
            member.client_host = request.client_host;
            member.last_heartbeat = now;
            if let Some(previous) = member.join_waiter.replace(sender) {
                let _ = previous.send(JoinResult::failed(
                    ErrorCode::RebalanceInProgress,
                    member_id,
                ));
            }
        }
        receiver
    }

    fn current_join_result(&self, member_id: &str) -> JoinResult {
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResult {
            error: ErrorCode::None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.member_list()
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    fn ordered_members(&self) -> Vec<(&String, &Member)> {
        let mut members: Vec<_> = self.members.iter().collect();
        members.sort_by_key(|(_, member)| member.order);
        members
    }

    fn member_list(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol.as_deref().unwrap_or("");
        self.ordered_members()
            .into_iter()
            .map(|(id, member)| JoinedMember {
                member_id: id.clone(),
                instance_id: member.instance_id.clone(),
                metadata: member.metadata_for(protocol),
            })
            .collect()
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|member| member.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    fn prepare_rebalance(&mut self, settings: &GroupSettings, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(SyncResult::failed(ErrorCode::RebalanceInProgress));
                }
            }
        }
        let timeout = self.max_rebalance_timeout();
        let delay = settings.initial_rebalance_delay;
        if self.state == GroupState::Empty && !delay.is_zero() {
            self.rebalance_deadline = Some(now + delay.min(timeout));
            self.initial_join = Some((now, timeout));
        } else {
            self.rebalance_deadline = Some(now + timeout);
            self.initial_join = None;
        }
        self.sync_deadline = None;
        self.state = GroupState::PreparingRebalance;
        self.empty_since = None;
    }

    /// Completes the join phase if every member has rejoined (and no initial delay is running),
    /// or its deadline has passed: members that did not rejoin are removed, the generation
    /// moves on, a protocol is chosen and every waiting member gets its answer.
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let deadline_passed = self.rebalance_deadline.is_some_and(|at| now >= at);
        let all_joined = self
            .members
            .values()
            .all(|member| member.join_waiter.is_some())
            && self.pending.is_empty();
        let complete = if self.initial_join.is_some() {
            deadline_passed
        } else {
            all_joined || deadline_passed
        };
        if !complete {
            return;
        }
        // Dynamic members that did not rejoin are gone; static ones keep their place until their
        // session runs out, so a restarting instance finds its partitions waiting (Kafka's rule).
        let absent: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| member.join_waiter.is_none() && member.instance_id.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in absent {
            self.remove_member(&id);
        }
        if !self.members.is_empty() && self.members.values().all(|m| m.join_waiter.is_none()) {
            // Only absent static members remain: nobody could compute an assignment. Wait
            // another rebalance timeout; their sessions expire meanwhile if they are gone.
            self.rebalance_deadline = Some(now + self.max_rebalance_timeout());
            self.initial_join = None;
            return;
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        self.rebalance_deadline = None;
        self.initial_join = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.empty_since = Some(now);
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        self.protocol_type = self
            .ordered_members()
            .first()
            .map(|(_, member)| member.protocol_type.clone());
        // The leader must be a member that is waiting for this answer.
        let joined = |id: &String| {
            self.members
                .get(id)
                .is_some_and(|member| member.join_waiter.is_some())
        };
        if !self.leader.as_ref().is_some_and(joined) {
            self.leader = self
                .ordered_members()
                .into_iter()
                .find(|(_, member)| member.join_waiter.is_some())
                .map(|(id, _)| id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
        let everyone = self.member_list();
        let leader = self.leader.clone().unwrap_or_default();
        for (id, member) in self.members.iter_mut() {
            member.is_new = false;
            member.last_heartbeat = now;
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(JoinResult {
                    error: ErrorCode::None,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        everyone.clone()
                    } else {
                        Vec::new()
                    },
                    skip_assignment: false,
                });
            }
        }
    }

    /// Kafka's vote: among the protocols every member supports, each member votes for the first
    /// in its own preference order; the most votes wins, ties going to the earlier protocol of
    /// the first member.
    fn select_protocol(&self) -> Option<String> {
        let members = self.ordered_members();
        let (_, first) = members.first()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                members
                    .iter()
                    .all(|(_, member)| member.protocols.iter().any(|(other, _)| other == *name))
            })
            .collect();
        let mut best: Option<(&String, usize)> = None;
        for candidate in &candidates {
            let votes = members
                .iter()
                .filter(|(_, member)| {
                    member
                        .protocols
                        .iter()
                        .map(|(name, _)| name)
                        .find(|name| candidates.contains(name))
                        == Some(*candidate)
                })
                .count();
            if best.is_none_or(|(_, most)| votes > most) {
                best = Some((candidate, votes));
            }
        }
        best.map(|(name, _)| name.clone())
            .or_else(|| first.protocols.first().map(|(name, _)| name.clone()))
    }

    fn remove_member(&mut self, member_id: &str) {
        let Some(mut member) = self.members.remove(member_id) else {
            return;
        };
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinResult::failed(ErrorCode::UnknownMemberId, member_id));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(SyncResult::failed(ErrorCode::UnknownMemberId));
        }
    }

    /// After members left or expired: a settled group rebalances; a rebalancing one may now be
    /// complete.
    fn members_removed(&mut self, settings: &GroupSettings, now: Instant) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(settings, now);
                self.try_complete_join(now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty => {}
        }
    }

    pub fn sync(&mut self, request: SyncRequest, now: Instant) -> Answer<SyncResult> {
        let fail = |error| Answer::Now(SyncResult::failed(error));
        if let Err(error) = self.validate_member(&request.member_id, request.instance_id.as_deref())
        {
            return fail(error);
        }
        if request.generation != self.generation {
            return fail(ErrorCode::IllegalGeneration);
        }
        if request
            .protocol_type
            .as_ref()
            .is_some_and(|kind| Some(kind) != self.protocol_type.as_ref())
            || request
                .protocol_name
                .as_ref()
                .is_some_and(|name| Some(name) != self.protocol.as_ref())
        {
            return fail(ErrorCode::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty => fail(ErrorCode::UnknownMemberId),
            GroupState::PreparingRebalance => fail(ErrorCode::RebalanceInProgress),
            GroupState::Stable => {
                let Some(member) = self.members.get_mut(&request.member_id) else {
                    return fail(ErrorCode::UnknownMemberId);
                };
                member.last_heartbeat = now;
                Answer::Now(SyncResult {
                    error: ErrorCode::None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment: member.assignment.clone(),
                })
            }
            GroupState::CompletingRebalance => {
                let is_leader = self.leader.as_deref() == Some(request.member_id.as_str());
                if is_leader
                    && request
                        .assignments
                        .iter()
                        .any(|(_, assignment)| assignment.len() > MEMBER_ASSIGNMENT_BYTES_MAX)
                {
                    return fail(ErrorCode::InvalidRequest);
                }
                let (sender, receiver) = oneshot::channel();
                if let Some(member) = self.members.get_mut(&request.member_id) {
                    member.last_heartbeat = now;
                    if let Some(previous) = member.sync_waiter.replace(sender) {
                        let _ = previous.send(SyncResult::failed(ErrorCode::RebalanceInProgress));
                    }
                }
                if is_leader {
                    for member in self.members.values_mut() {
                        member.assignment = Bytes::new();
                    }
                    for (member_id, assignment) in request.assignments {
                        if let Some(member) = self.members.get_mut(&member_id) {
                            member.assignment = assignment;
                        }
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    for member in self.members.values_mut() {
                        if let Some(waiter) = member.sync_waiter.take() {
                            let _ = waiter.send(SyncResult {
                                error: ErrorCode::None,
                                protocol_type: self.protocol_type.clone(),
                                protocol_name: self.protocol.clone(),
                                assignment: member.assignment.clone(),
                            });
                        }
                    }
                }
                Answer::Later(receiver)
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> ErrorCode {
        if let Err(error) = self.validate_member(member_id, instance_id) {
            return error;
        }
        if generation != self.generation {
            return ErrorCode::IllegalGeneration;
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.last_heartbeat = now;
        }
        match self.state {
            GroupState::Empty => ErrorCode::UnknownMemberId,
            GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
            GroupState::CompletingRebalance | GroupState::Stable => ErrorCode::None,
        }
    }

    /// LeaveGroup for each (member id, instance id); an error per member.
    pub fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        settings: &GroupSettings,
        now: Instant,
    ) -> Vec<ErrorCode> {
        let mut removed = false;
        let mut errors = Vec::with_capacity(leaving.len());
        for (member_id, instance_id) in leaving {
            let error = if let Some(instance) = instance_id {
                match self.static_members.get(instance).cloned() {
                    None => ErrorCode::UnknownMemberId,
                    Some(known) if !member_id.is_empty() && known != *member_id => {
                        ErrorCode::FencedInstanceId
                    }
                    Some(known) => {
                        self.remove_member(&known);
                        removed = true;
                        ErrorCode::None
                    }
                }
            } else if self.pending.remove(member_id).is_some() {
                removed = true;
                ErrorCode::None
            } else if self.members.contains_key(member_id) {
                self.remove_member(member_id);
                removed = true;
                ErrorCode::None
            } else {
                ErrorCode::UnknownMemberId
            };
            errors.push(error);
        }
        if removed {
            self.members_removed(settings, now);
        }
        errors
    }

    /// Runs the group's clock: expired member ids and sessions, and the deadlines of the join
    /// and sync phases.
    pub fn expire(&mut self, settings: &GroupSettings, now: Instant) {
        let pending_before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| {
                let alive = if member.join_waiter.is_some() {
                    !member.is_new || member.last_heartbeat + NEW_MEMBER_JOIN_TIMEOUT > now
                } else if member.sync_waiter.is_some() {
                    true
                } else {
                    member.last_heartbeat + member.session_timeout > now
                };
                !alive
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id);
        }
        if !expired.is_empty() {
            self.members_removed(settings, now);
        } else if self.pending.len() != pending_before {
            self.try_complete_join(now);
        }
        match self.state {
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::CompletingRebalance if self.sync_deadline.is_some_and(|at| now >= at) => {
                let unsynced: Vec<String> = self
                    .members
                    .iter()
                    .filter(|(_, member)| member.sync_waiter.is_none())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &unsynced {
                    self.remove_member(id);
                }
                self.members_removed(settings, now);
            }
            _ => {}
        }
    }

    /// Whether an OffsetCommit from this member and generation may be written (Kafka's
    /// `validateOffsetCommit`): a commit without a member (generation -1, no member id) is
    /// allowed only while the group has no members.
    pub fn validate_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ErrorCode> {
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.validate_member(member_id, instance_id)?;
            if generation != self.generation {
                return Err(ErrorCode::IllegalGeneration);
            }
            if self.state == GroupState::CompletingRebalance {
                return Err(ErrorCode::RebalanceInProgress);
            }
            Ok(())
        } else if self.state != GroupState::Empty {
            Err(ErrorCode::UnknownMemberId)
        } else {
            Ok(())
        }
    }

    /// Members as DescribeGroups shows them: metadata and assignment only once stable, as Kafka.
    pub fn member_summaries(&self) -> Vec<MemberSummary> {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol.as_deref().unwrap_or("");
        self.ordered_members()
            .into_iter()
            .map(|(id, member)| MemberSummary {
                member_id: id.clone(),
                instance_id: member.instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                metadata: if stable {
                    member.metadata_for(protocol)
                } else {
                    Bytes::new()
                },
                assignment: if stable {
                    member.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect()
    }

    /// The committed offsets that `offsets.retention.minutes` has expired, as Kafka's classic
    /// coordinator decides (KIP-211): in an Empty group, every offset once the group has been
    /// empty that long (counted from each offset's commit when it is not known since when, as
    /// after a restart or for a group that never had members); in a consumer group with members,
    /// the offsets of topics it no longer subscribes to, counted from their commit.
    pub fn expired_offsets(
        &self,
        now: Instant,
        now_ms: i64,
        retention: Duration,
    ) -> Vec<(String, i32)> {
        let retention_ms = retention.as_millis().min(i64::MAX as u128) as i64;
        let committed_long_ago = |stored: &StoredOffset| {
            now_ms.saturating_sub(stored.committed.commit_timestamp_ms) >= retention_ms
        };
        if self.state == GroupState::Empty && self.members.is_empty() {
            if let Some(since) = self.empty_since {
                return if now.saturating_duration_since(since) >= retention {
                    self.offsets.keys().cloned().collect()
                } else {
                    Vec::new()
                };
            }
            return self
                .offsets
                .iter()
                .filter(|(_, stored)| committed_long_ago(stored))
                .map(|(key, _)| key.clone())
                .collect();
        }
        let Some(subscribed) = (self.state == GroupState::Stable)
            .then(|| self.subscribed_topics())
            .flatten()
        else {
            return Vec::new();
        };
        self.offsets
            .iter()
            .filter(|((topic, _), stored)| {
                !subscribed.contains(topic) && committed_long_ago(stored)
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Topics the members of a consumer group subscribe to (from the selected protocol's
    /// subscription metadata), or `None` if that cannot be known (another protocol type).
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type() != "consumer" {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = Vec::new();
        for member in self.members.values() {
            topics.extend(subscription_topics(&member.metadata_for(protocol))?);
        }
        topics.sort();
        topics.dedup();
        Some(topics)
    }
}

/// The topic list at the start of a ConsumerProtocolSubscription (every version starts with
/// version:i16, then topics as an i32 count of i16-length strings).
///
/// Why by hand: `kafka-protocol`'s decoder reserves capacity from the count before checking it,
/// and member metadata is whatever a client sent; this reads only the first field and checks
/// every length against the bytes present.
fn subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut bytes = metadata.get(2..)?;
    let count = i32::from_be_bytes(bytes.get(..4)?.try_into().ok()?);
    bytes = &bytes[4..];
    let count = usize::try_from(count).ok()?;
    if count > bytes.len() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let length = i16::from_be_bytes(bytes.get(..2)?.try_into().ok()?);
        let length = usize::try_from(length).ok()?;
        let name = bytes.get(2..2 + length)?;
        topics.push(String::from_utf8(name.to_vec()).ok()?);
        bytes = &bytes[2 + length..];
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(delay_ms: u64) -> GroupSettings {
        GroupSettings {
            offsets_retention: Duration::from_secs(7 * 24 * 3600),
            offsets_partitions: 1,
            offsets_segment_bytes: 1 << 20,
            offsets_replication_factor: 1,
            offsets_commit_timeout: Duration::from_secs(5),
            offset_metadata_max_bytes: 4096,
            min_session_timeout: Duration::from_millis(100),
            max_session_timeout: Duration::from_secs(600),
            initial_rebalance_delay: Duration::from_millis(delay_ms),
            max_size: 10,
        }
    }

    fn join_request(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|name| (name.to_string(), Bytes::from(name.to_string())))
                .collect(),
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    /// A SyncGroup without the v5 protocol fields.
    fn sync_request(
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncRequest {
        SyncRequest {
            member_id: member_id.to_string(),
            instance_id: instance_id.map(str::to_string),
            generation,
            protocol_type: None,
            protocol_name: None,
            assignments,
        }
    }

    fn now_value<T>(answer: Answer<T>) -> T {
        match answer {
            Answer::Now(value) => value,
            Answer::Later(_) => panic!("expected an immediate answer"),
        }
    }

    fn later<T>(answer: Answer<T>) -> oneshot::Receiver<T> {
        match answer {
            Answer::Now(_) => panic!("expected a deferred answer"),
            Answer::Later(receiver) => receiver,
        }
    }

    fn answered<T>(receiver: &mut oneshot::Receiver<T>) -> T {
        receiver
            .try_recv()
            .expect("sender dropped")
            .expect("not answered yet")
    }

    /// KIP-394 round trip: the first join gets MEMBER_ID_REQUIRED and an id to rejoin with.
    fn member_id_for(group: &mut Group, settings: &GroupSettings, now: Instant) -> String {
        let first = now_value(group.join(join_request("", &["range"]), settings, now));
        assert_eq!(first.error, ErrorCode::MemberIdRequired);
        assert!(first.member_id.starts_with("client-"));
        first.member_id
    }

    fn committed(offset: i64, at_ms: i64) -> Option<CommittedOffset> {
        Some(CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: at_ms,
        })
    }

    #[test]
    fn an_empty_groups_offsets_expire_after_the_retention_and_then_it_can_go() {
        let retention = Duration::from_secs(60);
        let now = Instant::now();
        let mut group = Group::new();
        group.apply_offset("t".into(), 0, committed(5, 1_000), 10);
        group.apply_offset("t".into(), 1, committed(6, 50_000), 11);
        // Never had members: each offset counts from its own commit.
        assert_eq!(
            group.expired_offsets(now, 61_000, retention),
            vec![("t".into(), 0)]
        );
        assert!(group.expired_offsets(now, 30_000, retention).is_empty());
        let mut all = group.expired_offsets(now, 200_000, retention);
        all.sort();
        assert_eq!(all, vec![("t".into(), 0), ("t".into(), 1)]);
        assert!(!group.is_forgettable(), "it still has offsets");
        // The tombstones applied: nothing is left, and the group may be forgotten.
        group.apply_offset("t".into(), 0, None, 12);
        group.apply_offset("t".into(), 1, None, 13);
        assert!(group.is_forgettable());
    }

    #[test]
    fn two_members_join_sync_and_become_stable() {
        let settings = settings(0);
        let now = Instant::now();
        let mut group = Group::new();
        let a = member_id_for(&mut group, &settings, now);
        let mut join_a = later(group.join(join_request(&a, &["range"]), &settings, now));
        // With one member and no initial delay, the join completes at once.
        let result = answered(&mut join_a);
        assert_eq!(result.generation, 1);
        assert_eq!(result.leader, a);
        assert_eq!(result.members.len(), 1);
        let sync = later(group.sync(
            sync_request(&a, None, 1, vec![(a.clone(), Bytes::from_static(b"all"))]),
            now,
        ));
        assert_eq!(group.state(), GroupState::Stable);
        drop(sync);

        // A second member triggers a rebalance; the first learns of it from its heartbeat.
        let b = member_id_for(&mut group, &settings, now);
        let mut join_b =
            later(group.join(join_request(&b, &["range", "roundrobin"]), &settings, now));
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(
            group.heartbeat(&a, None, 1, now),
            ErrorCode::RebalanceInProgress
        );
        assert!(join_b.try_recv().unwrap().is_none());
        let mut join_a = later(group.join(join_request(&a, &["range"]), &settings, now));
        let for_a = answered(&mut join_a);
        let for_b = answered(&mut join_b);
        assert_eq!(for_a.generation, 2);
        assert_eq!(for_a.protocol_name.as_deref(), Some("range"));
        assert_eq!(for_a.members.len(), 2, "the leader gets every member");
        assert!(for_b.members.is_empty());
        let mut sync_b = later(group.sync(
            SyncRequest {
                member_id: b.clone(),
                instance_id: None,
                generation: 2,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignments: vec![],
            },
            now,
        ));
        let mut sync_a = later(group.sync(
            sync_request(
                &a,
                None,
                2,
                vec![
                    (a.clone(), Bytes::from_static(b"p0")),
                    (b.clone(), Bytes::from_static(b"p1")),
                ],
            ),
            now,
        ));
        assert_eq!(answered(&mut sync_a).assignment, Bytes::from_static(b"p0"));
        assert_eq!(answered(&mut sync_b).assignment, Bytes::from_static(b"p1"));
        assert_eq!(group.heartbeat(&b, None, 2, now), ErrorCode::None);
        assert_eq!(
            group.heartbeat(&b, None, 1, now),
            ErrorCode::IllegalGeneration
        );
        assert_eq!(
            group.heartbeat("nobody", None, 2, now),
            ErrorCode::UnknownMemberId
        );
    }

    #[test]
    fn a_silent_member_is_removed_after_its_session_timeout() {
        let settings = settings(0);
        let start = Instant::now();
        let mut group = Group::new();
        let a = member_id_for(&mut group, &settings, start);
        let mut join = later(group.join(join_request(&a, &["range"]), &settings, start));
        answered(&mut join);
        let _sync = group.sync(sync_request(&a, None, 1, vec![]), start);
        group.expire(&settings, start + Duration::from_secs(9));
        assert_eq!(group.member_count(), 1);
        group.expire(&settings, start + Duration::from_secs(11));
        assert_eq!(group.member_count(), 0);
        assert_eq!(group.state(), GroupState::Empty);
        assert_eq!(group.generation(), 2);
    }

    #[test]
    fn the_initial_delay_gathers_members_into_one_generation() {
        let settings = settings(3000);
        let start = Instant::now();
        let mut group = Group::new();
        let a = member_id_for(&mut group, &settings, start);
        let mut join_a = later(group.join(join_request(&a, &["range"]), &settings, start));
        let b = member_id_for(&mut group, &settings, start);
        let mut join_b = later(group.join(
            join_request(&b, &["range"]),
            &settings,
            start + Duration::from_secs(2),
        ));
        // The newcomer extended the delay to 2 s + 3 s.
        group.expire(&settings, start + Duration::from_secs(4));
        assert!(join_a.try_recv().unwrap().is_none());
        group.expire(&settings, start + Duration::from_secs(5));
        assert_eq!(answered(&mut join_a).generation, 1);
        assert_eq!(answered(&mut join_b).generation, 1);
    }

    #[test]
    fn protocols_must_be_shared_and_timeouts_in_bounds() {
        let settings = settings(0);
        let now = Instant::now();
        let mut group = Group::new();
        let a = member_id_for(&mut group, &settings, now);
        let _join = group.join(join_request(&a, &["range"]), &settings, now);
        let other = now_value(group.join(join_request("", &["sticky"]), &settings, now));
        assert_eq!(other.error, ErrorCode::InconsistentGroupProtocol);
        let mut short = join_request("", &["range"]);
        short.session_timeout = Duration::from_millis(1);
        let result = now_value(group.join(short, &settings, now));
        assert_eq!(result.error, ErrorCode::InvalidSessionTimeout);
        let mut huge = join_request("", &["range"]);
        huge.protocols = vec![(
            "range".into(),
            Bytes::from(vec![0u8; MEMBER_METADATA_BYTES_MAX]),
        )];
        let result = now_value(group.join(huge, &settings, now));
        assert_eq!(result.error, ErrorCode::InvalidRequest);
        let result = now_value(group.join(join_request("made-up", &["range"]), &settings, now));
        assert_eq!(result.error, ErrorCode::UnknownMemberId);
    }

    #[test]
    fn a_static_member_rejoining_takes_over_without_a_rebalance() {
        let settings = settings(0);
        let now = Instant::now();
        let mut group = Group::new();
        let mut leader = join_request("", &["range"]);
        leader.instance_id = Some("leader".into());
        let mut join = later(group.join(leader.clone(), &settings, now));
        let leader_id = answered(&mut join).member_id;
        let mut follower = join_request("", &["range"]);
        follower.instance_id = Some("follower".into());
        let mut join_f = later(group.join(follower.clone(), &settings, now));
        let mut rejoin = leader.clone();
        rejoin.member_id = leader_id.clone();
        let mut join_l = later(group.join(rejoin, &settings, now));
        let follower_id = answered(&mut join_f).member_id;
        let generation = answered(&mut join_l).generation;
        let _sync = group.sync(
            sync_request(
                &leader_id,
                Some("leader"),
                generation,
                vec![(follower_id.clone(), Bytes::from_static(b"mine"))],
            ),
            now,
        );
        assert_eq!(group.state(), GroupState::Stable);
        // The follower restarts: same instance id, no member id.
        let result = now_value(group.join(follower, &settings, now));
        assert_eq!(result.error, ErrorCode::None);
        assert_eq!(result.generation, generation, "no rebalance");
        assert_ne!(result.member_id, follower_id);
        assert_eq!(group.state(), GroupState::Stable);
        // The old incarnation is fenced.
        assert_eq!(
            group.heartbeat(&follower_id, Some("follower"), generation, now),
            ErrorCode::FencedInstanceId
        );
        let sync = now_value(group.sync(
            sync_request(&result.member_id, Some("follower"), generation, vec![]),
            now,
        ));
        assert_eq!(sync.assignment, Bytes::from_static(b"mine"));
    }

    /// A stable group of two static members (leader first), returned with the leader's id.
    fn stable_static_pair(group: &mut Group, settings: &GroupSettings, now: Instant) -> String {
        let mut leader = join_request("", &["range"]);
        leader.instance_id = Some("leader".into());
        let mut join = later(group.join(leader.clone(), settings, now));
        let leader_id = answered(&mut join).member_id;
        let mut follower = join_request("", &["range"]);
        follower.instance_id = Some("follower".into());
        follower.session_timeout = Duration::from_secs(60);
        let mut join_f = later(group.join(follower, settings, now));
        leader.member_id = leader_id.clone();
        let mut join_l = later(group.join(leader, settings, now));
        answered(&mut join_f);
        let generation = answered(&mut join_l).generation;
        let _sync = group.sync(
            sync_request(
                &leader_id,
                Some("leader"),
                generation,
                vec![(leader_id.clone(), Bytes::from_static(b"lead"))],
            ),
            now,
        );
        assert_eq!(group.state(), GroupState::Stable);
        leader_id
    }

    #[test]
    fn a_restarted_static_leader_keeps_the_generation() {
        let settings = settings(0);
        let now = Instant::now();
        for supports_skip_assignment in [false, true] {
            let mut group = Group::new();
            let old_leader = stable_static_pair(&mut group, &settings, now);
            let generation = group.generation();
            let mut rejoin = join_request("", &["range"]);
            rejoin.instance_id = Some("leader".into());
            rejoin.supports_skip_assignment = supports_skip_assignment;
            let result = now_value(group.join(rejoin, &settings, now));
            assert_eq!(result.error, ErrorCode::None);
            assert_eq!(result.generation, generation, "no rebalance");
            assert_eq!(group.state(), GroupState::Stable);
            assert_ne!(result.member_id, old_leader);
            if supports_skip_assignment {
                // v9+: told it leads, with the members, and to keep the assignment.
                assert_eq!(result.leader, result.member_id);
                assert!(result.skip_assignment);
                assert_eq!(result.members.len(), 2);
            } else {
                // Older clients are given the previous leader id, so they do not assign.
                assert_eq!(result.leader, old_leader);
                assert!(!result.skip_assignment && result.members.is_empty());
            }
            let sync = now_value(group.sync(
                sync_request(&result.member_id, Some("leader"), generation, vec![]),
                now,
            ));
            assert_eq!(sync.assignment, Bytes::from_static(b"lead"));
        }
    }

    #[test]
    fn a_static_member_that_has_not_rejoined_keeps_its_place_in_a_rebalance() {
        let settings = settings(0);
        let now = Instant::now();
        let mut group = Group::new();
        let leader = stable_static_pair(&mut group, &settings, now);
        // A dynamic newcomer starts a rebalance; the static follower is restarting and silent.
        let newcomer = member_id_for(&mut group, &settings, now);
        let _join_n = group.join(join_request(&newcomer, &["range"]), &settings, now);
        let mut rejoin = join_request(&leader, &["range"]);
        rejoin.instance_id = Some("leader".into());
        let mut join_l = later(group.join(rejoin, &settings, now));
        // The rebalance timeout (30 s) passes without the follower, whose session (60 s) has
        // not: it stays a member.
        group.expire(&settings, now + Duration::from_secs(5));
        assert!(join_l.try_recv().unwrap().is_none());
        group.expire(&settings, now + Duration::from_secs(31));
        let result = answered(&mut join_l);
        assert_eq!(result.leader, leader);
        assert_eq!(
            result.members.len(),
            3,
            "the absent static member is still assigned"
        );
    }

    #[test]
    fn leaving_rebalances_and_commits_follow_kafkas_rules() {
        let settings = settings(0);
        let now = Instant::now();
        let mut group = Group::new();
        assert_eq!(group.validate_commit("", None, -1), Ok(()));
        let a = member_id_for(&mut group, &settings, now);
        let mut join = later(group.join(join_request(&a, &["range"]), &settings, now));
        answered(&mut join);
        assert_eq!(
            group.validate_commit(&a, None, 1),
            Err(ErrorCode::RebalanceInProgress)
        );
        let _sync = group.sync(sync_request(&a, None, 1, vec![]), now);
        assert_eq!(group.validate_commit(&a, None, 1), Ok(()));
        assert_eq!(
            group.validate_commit(&a, None, 0),
            Err(ErrorCode::IllegalGeneration)
        );
        assert_eq!(
            group.validate_commit("", None, -1),
            Err(ErrorCode::UnknownMemberId)
        );
        assert_eq!(
            group.leave(&[(a.clone(), None), ("ghost".into(), None)], &settings, now),
            vec![ErrorCode::None, ErrorCode::UnknownMemberId]
        );
        assert_eq!(group.state(), GroupState::Empty);
        assert_eq!(group.validate_commit("", None, -1), Ok(()));
    }

    #[test]
    fn later_log_records_win_whatever_order_they_are_applied_in() {
        let mut group = Group::new();
        let committed = |offset| CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 0,
        };
        group.apply_offset("t".into(), 0, Some(committed(20)), 11);
        group.apply_offset("t".into(), 0, Some(committed(10)), 10);
        assert_eq!(group.offsets[&("t".into(), 0)].committed.offset, 20);
        group.apply_offset("t".into(), 0, None, 12);
        assert!(group.offsets.is_empty());
    }

    #[test]
    fn subscriptions_are_read_without_trusting_their_counts() {
        let mut metadata = vec![0, 1, 0, 0, 0, 2];
        for topic in ["a", "bc"] {
            metadata.extend((topic.len() as i16).to_be_bytes());
            metadata.extend(topic.as_bytes());
        }
        assert_eq!(
            subscription_topics(&metadata),
            Some(vec!["a".to_string(), "bc".to_string()])
        );
        assert_eq!(subscription_topics(&[0, 1, 0x7f, 0xff, 0xff, 0xff]), None);
        assert_eq!(subscription_topics(&metadata[..metadata.len() - 1]), None);
    }
}
