//! The controller quorum: raft-rs (`RawNode`) driven on shard 0, its log the metadata log.
//!
//! Every metadata change the controller makes is a log entry. It takes effect only once it is
//! committed: durable on this node's disk and, with other voters, on a majority of theirs. The
//! driver task then applies it on every shard of the node, in log order, on followers as on the
//! leader. The cluster metadata is the state machine. A snapshot of it replaces the log it
//! covers every `metadata.log.max.record.bytes.between.snapshots` bytes or
//! `metadata.log.max.snapshot.interval.ms`, as in KRaft, and a follower too far behind is sent
//! that snapshot.
//!
//! A node with no other voters is a quorum of one: it elects itself when the log opens and
//! commits an entry as soon as the entry is on disk, so no timer runs and no message leaves the
//! process. With other voters, the driver ticks raft-rs every `tick` and the transport carries
//! its messages; see CLUSTER.md.

pub mod calls;
pub mod store;
pub mod transport;
pub mod wire;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType, Message};
use raft::{Config, RawNode, StateRole};
use tracing::{debug, error, info, warn};

use super::metadata::{ClusterMetadata, MetadataChange, METADATA_DIRECTORY};
use store::{DurableLog, QuorumStore};

/// Raft ids cannot be 0 (raft-rs's `INVALID_ID`) and `node.id` can: node n is voter n + 1.
pub fn raft_id(node_id: i32) -> u64 {
    u64::from(node_id.unsigned_abs()) + 1
}

fn node_of(raft_id: u64) -> i32 {
    raft_id.saturating_sub(1).min(i32::MAX as u64) as i32
}

/// Messages waiting to be stepped, at most: a peer that floods is dropped from, and Raft
/// sends again what mattered.
const INBOX_MAX: usize = 4096;

/// When the log is replaced by a snapshot of the metadata (Kafka's settings, same names).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotPolicy {
    /// `metadata.log.max.record.bytes.between.snapshots`
    pub max_bytes: u64,
    /// `metadata.log.max.snapshot.interval.ms`; `None` for 0 (no time-based snapshots).
    pub max_interval: Option<Duration>,
}

/// How a node takes part in the quorum.
#[derive(Debug, Clone)]
pub struct QuorumSettings {
    pub node_id: i32,
    /// Every voter's node id, this node's among them; empty for a quorum of this node alone.
    pub voters: Vec<i32>,
    pub policy: SnapshotPolicy,
    /// How often raft-rs is ticked: a heartbeat every tick, an election after 10 to 20 ticks
    /// without one.
    pub tick: Duration,
    /// How long a change may wait to be committed before its request fails.
    pub append_timeout: Duration,
}

/// What the quorum needs of the node it runs on.
pub trait QuorumHost {
    /// Applies a committed change on every shard of this node; called in log order, one at a
    /// time. `Snapshot` replaces the whole state (a follower sent the leader's snapshot).
    fn apply(
        &self,
        change: MetadataChange,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>>;
    /// The state machine as applied so far, for a snapshot.
    fn state(&self) -> ClusterMetadata;
}

/// Carries messages to other voters. Sending never waits: what cannot be delivered is
/// dropped, and Raft sends it again.
pub trait Transport {
    fn send(&self, message: Message);
}

/// The transport of a quorum of one: there is no one to send to.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, message: Message) {
        warn!(
            to = message.to,
            "the controller quorum of one tried to reach another voter"
        );
    }
}

/// raft-rs logs through `slog`; its records go to `tracing` with their key-value pairs.
struct TracingDrain;

struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments) -> slog::Result {
        use std::fmt::Write;
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        use slog::KV;
        let mut pairs = Pairs(String::new());
        let _ = record.kv().serialize(record, &mut pairs);
        let _ = values.serialize(record, &mut pairs);
        let message = record.msg();
        let pairs = pairs.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{message}{pairs}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{message}{pairs}"),
            slog::Level::Info => tracing::info!(target: "raft", "{message}{pairs}"),
            slog::Level::Debug => tracing::debug!(target: "raft", "{message}{pairs}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{message}{pairs}"),
        }
        Ok(())
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

type Waiter = futures_channel::oneshot::Sender<Result<(), String>>;

/// The quorum on shard 0.
pub struct Quorum {
    id: u64,
    voters: Vec<u64>,
    node: RefCell<RawNode<QuorumStore>>,
    store: QuorumStore,
    durable: Arc<Mutex<DurableLog>>,
    inbox: RefCell<VecDeque<Message>>,
    wake: event_listener::Event,
    /// Changes waiting for the driver to propose them (raft-rs takes a proposal only between
    /// Readies, never while one is being persisted).
    proposals: RefCell<VecDeque<(Vec<u8>, Waiter)>>,
    /// Proposals waiting for their entry to be applied: by index, with the term proposed in.
    pending: RefCell<BTreeMap<u64, (u64, Waiter)>>,
    /// The index of the last entry applied to the state machine.
    applied: Cell<u64>,
    last_snapshot: Cell<Instant>,
    settings: QuorumSettings,
    directory: PathBuf,
    /// Why the log stopped taking changes (a write failed): fail-stop, until a restart.
    failed: RefCell<Option<String>>,
    stopped: Cell<bool>,
    /// The driver is running (it stops at `stop`, or when the log fails).
    running: Cell<bool>,
    /// Notified whenever `applied` moves.
    applied_moved: event_listener::Event,
    /// Messages the transport lost, by receiver, and whether one was a snapshot: reported to
    /// raft-rs between Readies.
    lost: RefCell<BTreeMap<u64, bool>>,
}

/// What `Quorum::open` found.
pub struct Opened {
    pub quorum: Rc<Quorum>,
    /// The state machine at the last committed entry.
    pub metadata: ClusterMetadata,
    /// The log was created by this open (from `import`, or empty).
    pub created: bool,
}

fn decode_change(entry: &Entry) -> Result<Option<MetadataChange>, String> {
    if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
        // A new leader's empty entry.
        return Ok(None);
    }
    serde_json::from_slice(&entry.data)
        .map(Some)
        .map_err(|error| format!("metadata log entry {} is unreadable: {error}", entry.index))
}

fn voter_list(ids: &[u64]) -> String {
    let nodes: Vec<String> = ids.iter().map(|id| node_of(*id).to_string()).collect();
    nodes.join(", ")
}

/// Where committed changes go: collected (while the log opens), or applied by the host.
enum Sink<'a> {
    Collect(&'a mut Vec<MetadataChange>),
    Host(&'a dyn QuorumHost),
}

impl Sink<'_> {
    async fn apply(&mut self, change: MetadataChange) -> Result<(), String> {
        match self {
            Sink::Collect(changes) => {
                changes.push(change);
                Ok(())
            }
            Sink::Host(host) => host.apply(change).await,
        }
    }
}

impl Quorum {
    /// Opens the metadata log under `data_dir` (creating it from `import`, or empty, with the
    /// configured voters) and replays it onto its snapshot. A quorum of one elects itself here,
    /// so it can take changes as soon as this returns.
    pub async fn open(
        data_dir: &Path,
        settings: QuorumSettings,
        import: Option<ClusterMetadata>,
    ) -> Result<Opened, String> {
        let directory = data_dir.join(METADATA_DIRECTORY);
        let id = raft_id(settings.node_id);
        let mut voters: Vec<u64> = settings.voters.iter().map(|node| raft_id(*node)).collect();
        if voters.is_empty() {
            voters.push(id);
        }
        voters.sort_unstable();
        let initial = import.unwrap_or_default();
        let initial_bytes = serde_json::to_vec(&initial).map_err(|error| error.to_string())?;
        let opened = {
            let directory = directory.clone();
            let voters = voters.clone();
            shards::task::spawn_blocking(move || {
                store::open(&directory, || (voters, Bytes::from(initial_bytes)))
            })
            .await
        };
        let (created, loaded, durable) = opened.map_err(|error| error.to_string())?;
        let store = QuorumStore::from(loaded);

        let mut stored_voters = store.conf_state().voters;
        stored_voters.sort_unstable();
        if !stored_voters.contains(&id) {
            return Err(format!(
                "the metadata log in {} belongs to a quorum of node(s) {}, and this node is \
                 node.id {}; start it with its own node.id or its own data directory",
                directory.display(),
                voter_list(&stored_voters),
                settings.node_id
            ));
        }
        if stored_voters != voters {
            return Err(format!(
                "the metadata log in {} was made by a quorum of node(s) {}, and \
                 controller.quorum.voters now lists node(s) {}; the voters of a static quorum \
                 cannot change",
                directory.display(),
                voter_list(&stored_voters),
                voter_list(&voters)
            ));
        }
        let mut metadata: ClusterMetadata = serde_json::from_slice(&store.snapshot_data())
            .map_err(|error| {
                format!(
                    "the metadata snapshot in {} is unreadable: {error}",
                    directory.display()
                )
            })?;
        let replayed = store.committed_entries();
        for entry in &replayed {
            if let Some(change) = decode_change(entry)? {
                metadata.apply(&change);
            }
        }
        let applied = store.hard_state().commit.max(store.snapshot_metadata().0);

        let config = Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            applied,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        config.validate().map_err(|error| error.to_string())?;
        let node = RawNode::new(&config, store.clone(), &logger())
            .map_err(|error| format!("starting the controller quorum: {error}"))?;
        let quorum = Rc::new(Quorum {
            id,
            voters: voters.clone(),
            node: RefCell::new(node),
            store,
            durable: Arc::new(Mutex::new(durable)),
            inbox: RefCell::new(VecDeque::new()),
            wake: event_listener::Event::new(),
            proposals: RefCell::new(VecDeque::new()),
            pending: RefCell::new(BTreeMap::new()),
            applied: Cell::new(applied),
            last_snapshot: Cell::new(Instant::now()),
            settings,
            directory,
            failed: RefCell::new(None),
            stopped: Cell::new(false),
            running: Cell::new(false),
            applied_moved: event_listener::Event::new(),
            lost: RefCell::new(BTreeMap::new()),
        });
        if quorum.is_alone() {
            // The empty entry of its new term commits whatever earlier entries were on disk
            // but not yet known to be committed.
            quorum
                .node
                .borrow_mut()
                .campaign()
                .map_err(|error| format!("electing the controller: {error}"))?;
            let mut changes = Vec::new();
            quorum
                .handle_readies(&mut Sink::Collect(&mut changes), &NoPeers)
                .await?;
            for change in &changes {
                metadata.apply(change);
            }
            if quorum.node.borrow().raft.state != StateRole::Leader {
                return Err("the controller quorum of one did not elect its only voter".into());
            }
        }
        info!(
            entries = replayed.len(),
            applied = quorum.applied.get(),
            term = quorum.node.borrow().raft.term,
            voters = %voter_list(&voters),
            "metadata log opened"
        );
        Ok(Opened {
            quorum,
            metadata,
            created,
        })
    }

    fn is_alone(&self) -> bool {
        self.voters == [self.id]
    }

    /// The driver: ticks raft-rs (with other voters), steps what the transport received,
    /// persists and sends what each Ready asks, applies committed changes through `host` and
    /// takes snapshots. Runs until `stop` or until the log fails.
    pub async fn run(self: Rc<Self>, host: Rc<dyn QuorumHost>, transport: Rc<dyn Transport>) {
        self.running.set(true);
        let ticking = !self.is_alone();
        let mut next_tick = Instant::now() + self.settings.tick;
        while !self.stopped.get() {
            let listener = self.wake.listen();
            let idle = self.inbox.borrow().is_empty()
                && self.proposals.borrow().is_empty()
                && self.lost.borrow().is_empty()
                && !self.node.borrow().has_ready();
            if idle {
                if ticking {
                    let wait = next_tick.saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        shards::task::timeout(wait, listener).await;
                    }
                } else {
                    listener.await;
                }
            }
            if self.stopped.get() {
                break;
            }
            if ticking && Instant::now() >= next_tick {
                self.node.borrow_mut().tick();
                next_tick = Instant::now() + self.settings.tick;
            }
            let messages: Vec<Message> = self.inbox.borrow_mut().drain(..).collect();
            for mut message in messages {
                if let Err(reason) = self.sanitize(&mut message) {
                    warn!(from = node_of(message.from), %reason, "dropped a Raft message");
                    continue;
                }
                if let Err(error) = self.node.borrow_mut().step(message) {
                    debug!(%error, "a Raft message was not taken");
                }
            }
            self.propose_waiting();
            let lost = std::mem::take(&mut *self.lost.borrow_mut());
            for (to, snapshot) in lost {
                let mut node = self.node.borrow_mut();
                node.report_unreachable(to);
                if snapshot {
                    node.report_snapshot(to, raft::SnapshotStatus::Failure);
                }
            }
            if let Err(reason) = self
                .handle_readies(&mut Sink::Host(&*host), &*transport)
                .await
            {
                self.fail(reason);
                break;
            }
            if self.snapshot_due() {
                let state = host.state();
                if let Err(reason) = self.snapshot(&state).await {
                    self.fail(reason);
                    break;
                }
            }
        }
        self.running.set(false);
        self.wake.notify(usize::MAX);
    }

    /// Stops the driver and waits until it has (its writes done).
    pub async fn stop_and_wait(&self) {
        self.stop();
        while self.running.get() {
            let listener = self.wake.listen();
            if !self.running.get() {
                break;
            }
            listener.await;
        }
    }

    /// Checks what raft-rs takes on trust from a peer, just before it is stepped: raft-rs
    /// aborts the process on a commit index or a match past the end of the log, and assumes
    /// entries are consecutive. A voter that sends such a message is broken or not a voter; the
    /// message is dropped. A heartbeat's commit index is capped at this log's end, as a
    /// correct leader's already is.
    fn sanitize(&self, message: &mut Message) -> Result<(), String> {
        use raft::eraftpb::MessageType;
        let last_index = self.node.borrow().raft.raft_log.last_index();
        match message.get_msg_type() {
            MessageType::MsgHeartbeat => message.commit = message.commit.min(last_index),
            MessageType::MsgAppend => {
                if message.log_term > message.term {
                    return Err("an append whose previous term is past its own".into());
                }
                let mut expected = message.index;
                let mut term = message.log_term;
                for entry in message.entries.iter() {
                    expected = expected
                        .checked_add(1)
                        .ok_or("an append past the last index")?;
                    if entry.index != expected || entry.term < term || entry.term > message.term {
                        return Err("an append whose entries do not follow one another".into());
                    }
                    term = entry.term;
                }
            }
            MessageType::MsgAppendResponse if !message.reject && message.index > last_index => {
                return Err("an append response past the end of this log".into())
            }
            MessageType::MsgSnapshot => {
                let Some(snapshot) = message.snapshot.as_ref() else {
                    return Err("a snapshot message without a snapshot".into());
                };
                let conf_state = snapshot.get_metadata().get_conf_state();
                let mut voters = conf_state.voters.clone();
                voters.sort_unstable();
                if voters != self.voters
                    || !conf_state.learners.is_empty()
                    || !conf_state.voters_outgoing.is_empty()
                    || !conf_state.learners_next.is_empty()
                {
                    return Err("a snapshot of another quorum's voters".into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Stops the driver at its next turn.
    pub fn stop(&self) {
        self.stopped.set(true);
        self.wake.notify(usize::MAX);
    }

    /// Proposes the queued changes: each waits, by its index and term, for its entry to be
    /// applied.
    fn propose_waiting(&self) {
        let proposals: Vec<(Vec<u8>, Waiter)> = self.proposals.borrow_mut().drain(..).collect();
        for (data, waiter) in proposals {
            if !self.is_leader() {
                let _ = waiter.send(Err(self.not_leader()));
                continue;
            }
            let mut node = self.node.borrow_mut();
            match node.propose(Vec::new(), data) {
                Ok(()) => {
                    let index = node.raft.raft_log.last_index();
                    let term = node.raft.term;
                    self.pending.borrow_mut().insert(index, (term, waiter));
                }
                Err(error) => {
                    let _ = waiter.send(Err(format!("proposing a metadata change: {error}")));
                }
            }
        }
    }

    fn not_leader(&self) -> String {
        match self.leader() {
            Some(leader) => format!("node {leader} is the controller, not this node"),
            None => "the controller quorum has no leader".into(),
        }
    }

    fn fail(&self, reason: String) {
        error!(
            %reason,
            "the metadata log failed; this node takes no metadata change until it restarts"
        );
        for (_, (_, waiter)) in std::mem::take(&mut *self.pending.borrow_mut()) {
            let _ = waiter.send(Err(format!("the metadata log failed: {reason}")));
        }
        for (_, waiter) in std::mem::take(&mut *self.proposals.borrow_mut()) {
            let _ = waiter.send(Err(format!("the metadata log failed: {reason}")));
        }
        *self.failed.borrow_mut() = Some(reason);
    }

    /// The transport lost a message to `to` (a full queue, a broken connection, a frame too
    /// large): raft-rs is told, so it probes that voter again, and sends another snapshot if
    /// the lost one was a snapshot.
    pub fn report_lost(&self, to: u64, snapshot: bool) {
        *self.lost.borrow_mut().entry(to).or_insert(false) |= snapshot;
        self.wake.notify(1);
    }

    /// Takes a message from another voter (the transport has checked who sent it).
    pub fn receive(&self, message: Message) {
        if message.to != self.id || !self.voters.contains(&message.from) {
            debug!(
                to = message.to,
                from = message.from,
                "dropped a Raft message not between voters of this quorum"
            );
            return;
        }
        let mut inbox = self.inbox.borrow_mut();
        if inbox.len() >= INBOX_MAX {
            return;
        }
        inbox.push_back(message);
        drop(inbox);
        self.wake.notify(1);
    }

    /// The leader's node id, if this node knows one.
    pub fn leader(&self) -> Option<i32> {
        let leader = self.node.borrow().raft.leader_id;
        (leader != raft::INVALID_ID).then(|| node_of(leader))
    }

    pub fn is_leader(&self) -> bool {
        self.node.borrow().raft.state == StateRole::Leader
    }

    /// Appends `change` to the metadata log and returns once it is committed and applied on
    /// every shard of this node. Only the leader takes changes.
    pub async fn append(&self, change: &MetadataChange) -> Result<(), String> {
        if let Some(reason) = self.failed.borrow().as_ref() {
            return Err(format!("the metadata log failed: {reason}"));
        }
        let data = serde_json::to_vec(change).map_err(|error| error.to_string())?;
        if data.len() > store::RECORD_BYTES_MAX / 2 {
            return Err(format!(
                "a metadata change of {} bytes is more than the metadata log takes",
                data.len()
            ));
        }
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let (sender, receiver) = futures_channel::oneshot::channel();
        self.proposals.borrow_mut().push_back((data, sender));
        self.wake.notify(1);
        match shards::task::timeout(self.settings.append_timeout, receiver).await {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => Err("the metadata log stopped".into()),
            None => Err(format!(
                "the metadata change was not committed within {:?}: the controller quorum may \
                 have lost its majority (it may still be committed later)",
                self.settings.append_timeout
            )),
        }
    }

    /// Handles Readies until raft-rs has none: sends, persists, applies, in raft-rs's order.
    async fn handle_readies(
        &self,
        sink: &mut Sink<'_>,
        transport: &dyn Transport,
    ) -> Result<(), String> {
        loop {
            let mut ready = {
                let mut node = self.node.borrow_mut();
                if !node.has_ready() {
                    return Ok(());
                }
                node.ready()
            };
            // A leader's messages may go before its own write (Raft's parallel append).
            for message in ready.take_messages() {
                transport.send(message);
            }
            if !ready.snapshot().is_empty() {
                let hard_state = ready.hs().cloned();
                self.install(ready.snapshot().clone(), hard_state.as_ref(), sink)
                    .await?;
            }
            self.apply_entries(ready.take_committed_entries(), sink)
                .await?;
            if !ready.entries().is_empty() || ready.hs().is_some() {
                let records = self.store.stage(ready.entries(), ready.hs())?;
                self.persist(records).await?;
            }
            for message in ready.take_persisted_messages() {
                transport.send(message);
            }
            let mut light = self.node.borrow_mut().advance(ready);
            if let Some(commit) = light.commit_index() {
                self.store.note_commit(commit);
            }
            for message in light.take_messages() {
                transport.send(message);
            }
            self.apply_entries(light.take_committed_entries(), sink)
                .await?;
            self.node.borrow_mut().advance_apply();
        }
    }

    async fn apply_entries(&self, entries: Vec<Entry>, sink: &mut Sink<'_>) -> Result<(), String> {
        for entry in entries {
            if let Some(change) = decode_change(&entry)? {
                sink.apply(change).await?;
            }
            self.applied.set(entry.index);
            self.applied_moved.notify(usize::MAX);
            self.resolve(entry.index, Some(entry.term));
        }
        Ok(())
    }

    /// Answers the proposals at or below `index` now that it is applied: the one proposed at
    /// `index` in `term` was committed; any other was overwritten by another leader's entry.
    fn resolve(&self, index: u64, term: Option<u64>) {
        let mut pending = self.pending.borrow_mut();
        while let Some(waiting) = pending.first_entry() {
            if *waiting.key() > index {
                break;
            }
            let at = *waiting.key();
            let (proposed_in, waiter) = waiting.remove();
            let _ = waiter.send(if at == index && term == Some(proposed_in) {
                Ok(())
            } else {
                Err(
                    "the controller changed before this metadata change was committed; it \
                     was not made"
                        .into(),
                )
            });
        }
    }

    /// A follower sent the leader's snapshot: it replaces the log and the state.
    async fn install(
        &self,
        snapshot: raft::eraftpb::Snapshot,
        hard_state: Option<&raft::eraftpb::HardState>,
        sink: &mut Sink<'_>,
    ) -> Result<(), String> {
        let index = snapshot.get_metadata().index;
        let metadata: ClusterMetadata = serde_json::from_slice(&snapshot.data)
            .map_err(|error| format!("the leader's metadata snapshot is unreadable: {error}"))?;
        let (snapshot_bytes, log_bytes) = self.store.install(snapshot, hard_state)?;
        self.replace_files(snapshot_bytes, log_bytes).await?;
        sink.apply(MetadataChange::Snapshot(metadata)).await?;
        self.applied.set(index);
        self.applied_moved.notify(usize::MAX);
        self.resolve(index, None);
        info!(index, "installed the controller's metadata snapshot");
        Ok(())
    }

    /// Runs `work` on the log file, on the blocking pool.
    async fn with_durable<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut DurableLog) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let durable = self.durable.clone();
        shards::task::spawn_blocking(move || {
            let mut durable = durable
                .lock()
                .map_err(|_| "the metadata log writer failed earlier".to_string())?;
            work(&mut durable)
        })
        .await
    }

    /// Appends and syncs records, one after another. On a full disk the data directory's
    /// space reserve is released once and the write tried again, so a DeleteTopics that frees
    /// space can still be recorded.
    async fn persist(&self, records: Vec<Vec<u8>>) -> Result<(), String> {
        let data_dir = self.directory.parent().map(Path::to_path_buf);
        self.with_durable(move |durable| {
            for record in &records {
                match durable.append(record) {
                    Err(error) if store::is_no_space(&error) => {
                        let released = data_dir
                            .as_deref()
                            .is_some_and(crate::disk_space::release_reserve);
                        if !released {
                            return Err(format!("writing the metadata log: {error}"));
                        }
                        warn!(
                            "the disk is full: released the space reserve to record the metadata"
                        );
                        durable.append(record)
                    }
                    other => other,
                }
                .map_err(|error| format!("writing the metadata log: {error}"))?;
            }
            Ok(())
        })
        .await
    }

    async fn replace_files(&self, snapshot: Vec<u8>, log: Vec<u8>) -> Result<u64, String> {
        self.with_durable(move |durable| {
            let bytes = durable.bytes_since_snapshot;
            durable
                .replace(&snapshot, &log)
                .map_err(|error| format!("writing a metadata snapshot: {error}"))?;
            Ok(bytes)
        })
        .await
    }

    /// Whether the log has grown or aged enough to be replaced by a snapshot.
    pub fn snapshot_due(&self) -> bool {
        let bytes = self
            .durable
            .lock()
            .map(|durable| durable.bytes_since_snapshot)
            .unwrap_or(0);
        let aged = self
            .settings
            .policy
            .max_interval
            .is_some_and(|interval| self.last_snapshot.get().elapsed() >= interval);
        self.applied.get() > self.store.snapshot_metadata().0
            && (bytes >= self.settings.policy.max_bytes || aged)
    }

    /// Replaces the log up to the last applied entry with a snapshot of `state`, the state
    /// machine at that entry.
    async fn snapshot(&self, state: &ClusterMetadata) -> Result<(), String> {
        let applied = self.applied.get();
        let data = serde_json::to_vec(state).map_err(|error| error.to_string())?;
        let (snapshot, log) = self.store.compact(applied, Bytes::from(data))?;
        let bytes = self.replace_files(snapshot, log).await?;
        self.last_snapshot.set(Instant::now());
        info!(
            index = applied,
            log_bytes = bytes,
            "metadata snapshot written; the log it covers is gone"
        );
        Ok(())
    }

    /// Waits until this node has applied the log up to `index`; false if not within `limit`.
    pub async fn wait_applied(&self, index: u64, limit: Duration) -> bool {
        let wait = async {
            while self.applied.get() < index {
                let listener = self.applied_moved.listen();
                if self.applied.get() >= index {
                    break;
                }
                listener.await;
            }
        };
        shards::task::timeout(limit, wait).await.is_some()
    }

    /// The index of the last applied entry and the current term.
    pub fn position(&self) -> (u64, u64) {
        (self.applied.get(), self.node.borrow().raft.term)
    }

    /// The quorum as this voter sees it (DescribeQuorum).
    pub fn status(&self) -> QuorumStatus {
        let node = self.node.borrow();
        let raft = &node.raft;
        let last_index = raft.raft_log.last_index();
        let now = crate::clock::now_ms();
        let mut voters: Vec<VoterStatus> = raft
            .prs()
            .iter()
            .map(|(id, progress)| {
                let own = *id == raft.id;
                VoterStatus {
                    node_id: node_of(*id),
                    log_end: if own { last_index } else { progress.matched },
                    last_fetch_ms: if own { now } else { -1 },
                    last_caught_up_ms: if own { now } else { -1 },
                }
            })
            .collect();
        voters.sort_by_key(|voter| voter.node_id);
        QuorumStatus {
            leader: (raft.state == StateRole::Leader).then(|| node_of(raft.id)),
            term: raft.term,
            high_watermark: raft.raft_log.committed,
            voters,
        }
    }
}

/// One voter's place in the log, as the leader tracks it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VoterStatus {
    pub node_id: i32,
    /// The index after its last entry (Kafka's log end offset: index i is offset i - 1).
    pub log_end: u64,
    /// When it last fetched and was last caught up, in ms since the epoch; -1 if unknown.
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

/// The quorum as DescribeQuorum reports it: `leader` is set only on the leader, which alone
/// knows every voter's progress.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumStatus {
    pub leader: Option<i32>,
    pub term: u64,
    /// The commit index (Kafka's high watermark: every offset below it is committed).
    pub high_watermark: u64,
    pub voters: Vec<VoterStatus>,
}

/// A node's state machine as the shards would hold it, for the tests of the quorum.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub struct Recorder {
        state: RefCell<ClusterMetadata>,
    }

    impl Recorder {
        pub fn new(state: ClusterMetadata) -> Recorder {
            Recorder {
                state: RefCell::new(state),
            }
        }
    }

    /// Waits (bounded) until `done` holds; the quorum's own timers do the work meanwhile.
    pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            shards::task::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A change that creates topic `name` with two partitions.
    pub fn topic(name: &str) -> MetadataChange {
        MetadataChange::TopicsCreated(vec![crate::controller::metadata::TopicMetadata {
            name: name.into(),
            topic_id: uuid::Uuid::new_v4(),
            replicas: vec![vec![0], vec![1]],
            configs: Default::default(),
            leaderships: Vec::new(),
        }])
    }

    impl QuorumHost for Recorder {
        fn apply(
            &self,
            change: MetadataChange,
        ) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
            match change {
                MetadataChange::Snapshot(state) => *self.state.borrow_mut() = state,
                other => self.state.borrow_mut().apply(&other),
            }
            Box::pin(async { Ok(()) })
        }

        fn state(&self) -> ClusterMetadata {
            self.state.borrow().clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{topic, until, Recorder};
    use super::*;
    use std::collections::BTreeSet;

    const KEEP_THE_LOG: SnapshotPolicy = SnapshotPolicy {
        max_bytes: u64::MAX,
        max_interval: None,
    };

    fn run<T>(future: impl Future<Output = T>) -> T {
        shards::task::run_local(future).unwrap()
    }

    fn settings(node_id: i32, voters: &[i32], policy: SnapshotPolicy) -> QuorumSettings {
        QuorumSettings {
            node_id,
            voters: voters.to_vec(),
            policy,
            tick: Duration::from_millis(10),
            append_timeout: Duration::from_secs(2),
        }
    }

    /// Voters in one process, their messages carried through the wire encoding, with links
    /// that can be cut.
    #[derive(Default)]
    struct Network {
        nodes: RefCell<BTreeMap<u64, Rc<Quorum>>>,
        cut: RefCell<BTreeSet<u64>>,
        delivered: Cell<u64>,
        /// Loses the next snapshot sent, as a full queue or a broken connection would, and
        /// tells the sender as the TCP transport does.
        lose_a_snapshot: Cell<bool>,
    }

    struct Link {
        from: u64,
        network: Rc<Network>,
    }

    impl Transport for Link {
        fn send(&self, message: Message) {
            let cut = self.network.cut.borrow();
            if cut.contains(&self.from) || cut.contains(&message.to) {
                return;
            }
            if message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot
                && self.network.lose_a_snapshot.replace(false)
            {
                if let Some(sender) = self.network.nodes.borrow().get(&self.from) {
                    sender.report_lost(message.to, true);
                }
                return;
            }
            let mut bytes = Vec::new();
            wire::encode(&message, &mut bytes);
            let decoded = wire::decode(&bytes).expect("our own encoding decodes");
            if let Some(target) = self.network.nodes.borrow().get(&message.to) {
                self.network.delivered.set(self.network.delivered.get() + 1);
                target.receive(decoded);
            }
        }
    }

    struct Node {
        quorum: Rc<Quorum>,
        host: Rc<Recorder>,
    }

    async fn start_node(
        network: &Rc<Network>,
        directory: &Path,
        node_id: i32,
        voters: &[i32],
        policy: SnapshotPolicy,
    ) -> Node {
        let opened = Quorum::open(directory, settings(node_id, voters, policy), None)
            .await
            .unwrap();
        let host = Rc::new(Recorder::new(opened.metadata));
        let quorum = opened.quorum;
        network.nodes.borrow_mut().insert(quorum.id, quorum.clone());
        let link = Rc::new(Link {
            from: quorum.id,
            network: network.clone(),
        });
        shards::task::spawn(quorum.clone().run(host.clone(), link)).detach();
        Node { quorum, host }
    }

    /// Three voters on `network`, one in each directory, once one of them leads.
    async fn start_three(
        network: &Rc<Network>,
        directories: &[tempfile::TempDir],
        policy: SnapshotPolicy,
    ) -> Vec<Node> {
        let mut nodes = Vec::new();
        for (node_id, directory) in directories.iter().enumerate() {
            nodes.push(
                start_node(
                    network,
                    directory.path(),
                    node_id as i32,
                    &[0, 1, 2],
                    policy,
                )
                .await,
            );
        }
        until("a leader", || leader_of(&nodes).is_some()).await;
        nodes
    }

    async fn stop_node(network: &Network, node: Node) {
        network.nodes.borrow_mut().remove(&node.quorum.id);
        node.quorum.stop_and_wait().await;
    }

    fn leader_of(nodes: &[Node]) -> Option<&Node> {
        let leaders: Vec<&Node> = nodes
            .iter()
            .filter(|node| node.quorum.is_leader())
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    fn topic_names(node: &Node) -> Vec<String> {
        node.host.state().topics.keys().cloned().collect()
    }

    #[test]
    fn a_quorum_of_one_commits_what_it_appends_and_a_reopen_replays_it() {
        let directory = tempfile::tempdir().unwrap();
        run(async {
            let network = Rc::new(Network::default());
            let node = start_node(&network, directory.path(), 0, &[], KEEP_THE_LOG).await;
            assert!(
                node.quorum.is_leader(),
                "a quorum of one leads from the start"
            );
            let cluster_id = node.host.state().cluster_id;
            node.quorum.append(&topic("a")).await.unwrap();
            node.quorum
                .append(&MetadataChange::ProducerIdsAllocated { next: 5000 })
                .await
                .unwrap();
            assert!(node.host.state().topics.contains_key("a"));
            assert_eq!(network.delivered.get(), 0, "no message left the node");
            stop_node(&network, node).await;

            // The commit index of the last appends never reached the file (it needs no
            // sync): the reopened quorum's new term commits them again, applied once.
            let opened = Quorum::open(directory.path(), settings(0, &[], KEEP_THE_LOG), None)
                .await
                .unwrap();
            assert!(!opened.created);
            assert_eq!(opened.metadata.cluster_id, cluster_id);
            assert!(opened.metadata.topics.contains_key("a"));
            assert_eq!(opened.metadata.next_producer_id, 5000);
            assert_eq!(opened.metadata.version, 1, "the topic was applied once");
            assert_eq!(opened.quorum.position().1, 2, "each open is a new term");
        });
    }

    #[test]
    fn a_snapshot_replaces_the_log_and_reads_back_the_same_state() {
        let directory = tempfile::tempdir().unwrap();
        let policy = SnapshotPolicy {
            max_bytes: 1,
            max_interval: None,
        };
        run(async {
            let network = Rc::new(Network::default());
            let node = start_node(&network, directory.path(), 3, &[], policy).await;
            for name in ["a", "b", "c"] {
                node.quorum.append(&topic(name)).await.unwrap();
            }
            until("a snapshot of everything applied", || {
                node.quorum.store.snapshot_metadata().0 == node.quorum.position().0
            })
            .await;
            let state = node.host.state();
            stop_node(&network, node).await;
            let log_bytes = std::fs::metadata(
                directory
                    .path()
                    .join(METADATA_DIRECTORY)
                    .join(store::LOG_FILE),
            )
            .unwrap()
            .len();
            assert!(
                log_bytes < 100,
                "the log holds only the hard state: {log_bytes}"
            );
            let reopened = Quorum::open(directory.path(), settings(3, &[], policy), None)
                .await
                .unwrap();
            assert_eq!(reopened.metadata.topics, state.topics);
            assert_eq!(reopened.metadata.version, state.version);
        });
    }

    #[test]
    fn an_import_seeds_a_new_log_only() {
        let directory = tempfile::tempdir().unwrap();
        let mut legacy = ClusterMetadata::new();
        legacy.apply(&topic("from-json"));
        legacy.next_producer_id = 77;
        run(async {
            let first = Quorum::open(
                directory.path(),
                settings(0, &[], KEEP_THE_LOG),
                Some(legacy.clone()),
            )
            .await
            .unwrap();
            assert!(first.created);
            assert_eq!(first.metadata.topics, legacy.topics);
            assert_eq!(first.metadata.next_producer_id, 77);
            drop(first);
            let second = Quorum::open(
                directory.path(),
                settings(0, &[], KEEP_THE_LOG),
                Some(ClusterMetadata::new()),
            )
            .await
            .unwrap();
            assert!(!second.created);
            assert_eq!(
                second.metadata.cluster_id, legacy.cluster_id,
                "the log wins"
            );
        });
    }

    #[test]
    fn another_nodes_log_or_other_voters_are_refused_naming_them() {
        let directory = tempfile::tempdir().unwrap();
        run(async {
            drop(
                Quorum::open(directory.path(), settings(0, &[], KEEP_THE_LOG), None)
                    .await
                    .unwrap(),
            );
            let refused = Quorum::open(directory.path(), settings(7, &[], KEEP_THE_LOG), None)
                .await
                .err()
                .unwrap();
            assert!(refused.contains("node(s) 0"), "{refused}");
            assert!(refused.contains("node.id 7"), "{refused}");
            let refused = Quorum::open(
                directory.path(),
                settings(0, &[0, 1, 2], KEEP_THE_LOG),
                None,
            )
            .await
            .err()
            .unwrap();
            assert!(refused.contains("cannot change"), "{refused}");
        });
    }

    /// Three voters elect one leader; what it appends is applied on every voter in the same
    /// order; a follower's append is refused, naming the leader.
    #[test]
    fn three_voters_agree_on_one_leader_and_one_history() {
        let directories: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        run(async {
            let network = Rc::new(Network::default());
            let nodes = start_three(&network, &directories, KEEP_THE_LOG).await;
            let leader = leader_of(&nodes).unwrap();
            for index in 0..20 {
                leader
                    .quorum
                    .append(&topic(&format!("t{index}")))
                    .await
                    .unwrap();
            }
            until("every voter to apply all 20", || {
                nodes
                    .iter()
                    .all(|node| node.host.state().topics.len() == 20)
            })
            .await;
            let first = nodes[0].host.state();
            for node in &nodes[1..] {
                let state = node.host.state();
                assert_eq!(state.topics, first.topics);
                assert_eq!(state.version, first.version);
            }
            let follower = nodes.iter().find(|node| !node.quorum.is_leader()).unwrap();
            let refused = follower.quorum.append(&topic("nope")).await.unwrap_err();
            let leader_id = node_of(leader.quorum.id);
            assert!(
                refused.contains(&format!("node {leader_id} is the controller")),
                "{refused}"
            );
            let status = leader.quorum.status();
            assert_eq!(status.leader, Some(leader_id));
            assert_eq!(status.voters.len(), 3);
            assert!(status
                .voters
                .iter()
                .all(|voter| voter.log_end >= status.high_watermark));
        });
    }

    /// Messages that would make raft-rs abort the process (a commit index past the log's end,
    /// a match past it, entries with gaps), sent as if by the leader or a follower, are
    /// dropped or capped; the quorum goes on.
    #[test]
    fn messages_raft_rs_would_abort_on_are_dropped() {
        use raft::eraftpb::MessageType;
        let directories: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        run(async {
            let network = Rc::new(Network::default());
            let nodes = start_three(&network, &directories, KEEP_THE_LOG).await;
            let leader = leader_of(&nodes).unwrap();
            leader.quorum.append(&topic("first")).await.unwrap();
            let term = leader.quorum.position().1;
            let follower = nodes.iter().find(|node| !node.quorum.is_leader()).unwrap();

            let mut heartbeat = Message::default();
            heartbeat.set_msg_type(MessageType::MsgHeartbeat);
            heartbeat.from = leader.quorum.id;
            heartbeat.to = follower.quorum.id;
            heartbeat.term = term;
            heartbeat.commit = u64::MAX;
            follower.quorum.receive(heartbeat);

            let mut gap = Message::default();
            gap.set_msg_type(MessageType::MsgAppend);
            gap.from = leader.quorum.id;
            gap.to = follower.quorum.id;
            gap.term = term;
            gap.index = 1;
            gap.log_term = 1;
            gap.set_entries(
                vec![Entry {
                    term,
                    index: 9,
                    ..Entry::default()
                }]
                .into(),
            );
            follower.quorum.receive(gap);

            let mut response = Message::default();
            response.set_msg_type(MessageType::MsgAppendResponse);
            response.from = follower.quorum.id;
            response.to = leader.quorum.id;
            response.term = term;
            response.index = u64::MAX / 2;
            leader.quorum.receive(response);

            // Still one quorum, taking changes, with the same history everywhere.
            leader.quorum.append(&topic("second")).await.unwrap();
            until("every voter to apply both", || {
                nodes.iter().all(|node| node.host.state().topics.len() == 2)
            })
            .await;
        });
    }

    /// A leader cut off from the others loses its leadership; they elect a new one and go on;
    /// what the old one took while cut off is refused, never applied; after the heal it
    /// catches up to the same history.
    #[test]
    fn a_cut_off_leader_is_replaced_and_catches_up_after_the_heal() {
        let directories: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        run(async {
            let network = Rc::new(Network::default());
            let nodes = start_three(&network, &directories, KEEP_THE_LOG).await;
            let old = leader_of(&nodes).unwrap().quorum.id;
            let old_node = nodes.iter().find(|node| node.quorum.id == old).unwrap();
            old_node.quorum.append(&topic("before")).await.unwrap();
            network.cut.borrow_mut().insert(old);
            let lost = old_node.quorum.append(&topic("while-cut-off")).await;
            assert!(lost.is_err(), "a leader without a majority commits nothing");
            until("a new leader", || {
                nodes
                    .iter()
                    .any(|node| node.quorum.id != old && node.quorum.is_leader())
            })
            .await;
            let new = nodes
                .iter()
                .find(|node| node.quorum.id != old && node.quorum.is_leader())
                .unwrap();
            new.quorum.append(&topic("after")).await.unwrap();
            network.cut.borrow_mut().clear();
            until("the old leader to catch up", || {
                topic_names(old_node).contains(&"after".to_string())
            })
            .await;
            for node in &nodes {
                assert_eq!(
                    topic_names(node),
                    vec!["after".to_string(), "before".to_string()]
                );
            }
        });
    }

    /// A follower that was down while the leader replaced its log with a snapshot gets the
    /// snapshot when it comes back, then the entries after it.
    #[test]
    fn a_follower_behind_a_snapshot_is_sent_the_snapshot() {
        let directories: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let policy = SnapshotPolicy {
            max_bytes: 512,
            max_interval: None,
        };
        run(async {
            let network = Rc::new(Network::default());
            let mut nodes = start_three(&network, &directories, policy).await;
            let position = nodes
                .iter()
                .position(|node| !node.quorum.is_leader())
                .unwrap();
            let down = nodes.remove(position);
            let down_id = node_of(down.quorum.id);
            stop_node(&network, down).await;
            let leader = leader_of(&nodes).unwrap();
            for index in 0..30 {
                leader
                    .quorum
                    .append(&topic(&format!("t{index}")))
                    .await
                    .unwrap();
            }
            until("the leader's snapshot", || {
                leader.quorum.store.snapshot_metadata().0 > 0
            })
            .await;
            network.lose_a_snapshot.set(true);
            let back = start_node(
                &network,
                directories[down_id as usize].path(),
                down_id,
                &[0, 1, 2],
                policy,
            )
            .await;
            until("the follower to catch up", || {
                back.host.state().topics.len() == 30
            })
            .await;
            assert_eq!(back.host.state().topics, leader.host.state().topics);
            assert!(
                back.quorum.store.snapshot_metadata().0 > 0,
                "it installed a snapshot"
            );
            assert!(
                !network.lose_a_snapshot.get(),
                "the first snapshot was lost"
            );
        });
    }
}
