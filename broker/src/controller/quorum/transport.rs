//! Raft messages between voters over TCP: shard 0 of each node listens on its CONTROLLER
//! listener and dials every other voter's.
//!
//! A connection carries one direction: the dialer sends, the listener receives. It opens with a
//! hello (`KQRM`, the format version, the sender's and the receiver's `node.id`), then carries
//! frames: a u32 length and one message in `wire`'s encoding. The listener takes a connection
//! only from a configured voter that names this node as the receiver, and drops it at the first
//! frame that is too long, malformed, or claims another sender. Everything is bounded: a hello
//! must arrive within `HELLO_TIMEOUT`, a frame is at most `FRAME_BYTES_MAX`, at most
//! `UNIDENTIFIED_MAX` connections may wait for their hello, and each peer's outgoing queue holds
//! at most `PEER_QUEUE_MAX` messages (the oldest go first; Raft sends again what mattered).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use raft::eraftpb::Message;
use shards::net::{Connection, ConnectionReader, Listener};
use tracing::{debug, info, warn};

use super::calls::{self, check_call_hello, CallHandler, CALL_MAGIC};
use super::{raft_id, wire, Quorum, Transport};
use crate::config::Voter;

const HELLO_MAGIC: &[u8; 4] = b"KQRM";
const HELLO_VERSION: u16 = 1;
/// The fixed part of a hello; the sender's cluster id (its length, then its bytes) follows.
const HELLO_BYTES: usize = 4 + 2 + 4 + 4 + 1;
/// The longest cluster id a hello carries (ours are 32 hex digits).
const CLUSTER_ID_BYTES_MAX: usize = 64;

/// The cluster id this node has committed, if any: a hello carries it, and one naming
/// another cluster is refused.
pub type ClusterId = Rc<dyn Fn() -> Option<String>>;

/// The largest frame: a snapshot of the metadata is the largest message, and the metadata log
/// takes no record above this either.
pub const FRAME_BYTES_MAX: usize = super::store::RECORD_BYTES_MAX;
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
pub const UNIDENTIFIED_MAX: usize = 64;
/// Connections one address may hold waiting for their hello: a stranger with many sockets
/// cannot use up `UNIDENTIFIED_MAX` and keep the voters' connections out.
pub const UNIDENTIFIED_PER_ADDRESS_MAX: usize = 4;
/// Raft connections one voter may hold open at once (it dials one; the rest are stale ones
/// not yet closed).
pub const PER_VOTER_MAX: usize = 4;
/// Controller calls one voter may have open at once: each of its shards' forwarded requests
/// is a call of its own, so more than Raft needs.
pub const CALLS_PER_VOTER_MAX: usize = 64;
/// A voter's Raft connection that carries nothing for this long is closed (a leader
/// heartbeats every tick; the sender dials again when it has something).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const PEER_QUEUE_MAX: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REDIAL_AFTER_MIN: Duration = Duration::from_millis(50);
const REDIAL_AFTER_MAX: Duration = Duration::from_secs(1);

fn hello(from: i32, to: i32, cluster: Option<&str>) -> Vec<u8> {
    hello_with(HELLO_MAGIC, from, to, cluster)
}

/// A hello of either kind of connection: Raft messages (`KQRM`) or controller calls
/// (`KQRC`), with the sender's committed cluster id (none before one is committed).
pub(super) fn hello_with(magic: &[u8; 4], from: i32, to: i32, cluster: Option<&str>) -> Vec<u8> {
    let cluster = cluster
        .map(str::as_bytes)
        .filter(|id| id.len() <= CLUSTER_ID_BYTES_MAX)
        .unwrap_or_default();
    let mut bytes = Vec::with_capacity(HELLO_BYTES + cluster.len());
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&HELLO_VERSION.to_be_bytes());
    bytes.extend_from_slice(&from.to_be_bytes());
    bytes.extend_from_slice(&to.to_be_bytes());
    bytes.push(cluster.len() as u8);
    bytes.extend_from_slice(cluster);
    bytes
}

/// The sender's node id, if `bytes` is a hello with `magic` from one of `voters` to `me`, of
/// this node's cluster (`ours`) where both have committed a cluster id.
pub(super) fn check_hello(
    bytes: &[u8],
    magic: &[u8; 4],
    me: i32,
    voters: &[i32],
    ours: Option<&str>,
) -> Result<i32, String> {
    if bytes.len() < HELLO_BYTES
        || bytes.len() != HELLO_BYTES + usize::from(bytes[HELLO_BYTES - 1])
        || &bytes[..4] != magic
    {
        return Err("not a controller quorum connection".into());
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != HELLO_VERSION {
        return Err(format!(
            "quorum format {version}; this node speaks {HELLO_VERSION}"
        ));
    }
    let from = i32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let to = i32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]);
    if to != me {
        return Err(format!(
            "node {from} dialled node {to}, but this is node {me}: its controller.quorum.voters \
             gives this address to another node"
        ));
    }
    if from == me || !voters.contains(&from) {
        return Err(format!("node {from} is not another voter of this quorum"));
    }
    let theirs = &bytes[HELLO_BYTES..];
    if let Some(ours) = ours {
        if !theirs.is_empty() && theirs != ours.as_bytes() {
            return Err(format!(
                "node {from} belongs to cluster {}, this node to cluster {ours}: it, or its \
                 data directory, is another cluster's",
                String::from_utf8_lossy(theirs)
            ));
        }
    }
    Ok(from)
}

/// Reads whole frames off a connection, never holding more than one frame's bytes.
pub(crate) struct FrameReader {
    reader: ConnectionReader,
    buffer: Vec<u8>,
    filled: usize,
    /// The largest frame body taken.
    limit: usize,
}

impl FrameReader {
    fn new(reader: ConnectionReader, limit: usize) -> FrameReader {
        FrameReader {
            reader,
            buffer: vec![0; 64 * 1024],
            filled: 0,
            limit,
        }
    }

    /// Reads until `wanted` bytes are buffered; false if the peer closed first.
    async fn fill(&mut self, wanted: usize) -> std::io::Result<bool> {
        while self.filled < wanted {
            // The buffer grows with what arrives, never to what a length claims up front: a
            // peer that announces a large frame and sends nothing holds no memory for it.
            if self.filled == self.buffer.len() {
                let grown = (self.buffer.len() * 2).clamp(64 * 1024, wanted.max(64 * 1024));
                self.buffer.resize(grown, 0);
            }
            let read = self.reader.read(&mut self.buffer[self.filled..]).await?;
            if read == 0 {
                return Ok(false);
            }
            self.filled += read;
        }
        Ok(true)
    }

    /// Takes `length` buffered bytes off the front.
    fn take(&mut self, length: usize) -> Vec<u8> {
        let taken = self.buffer[..length].to_vec();
        self.buffer.copy_within(length..self.filled, 0);
        self.filled -= length;
        // A large frame's buffer is not kept for the small ones after it.
        if self.buffer.len() > 1024 * 1024 && self.filled <= 64 * 1024 {
            self.buffer.truncate(64 * 1024);
            self.buffer.shrink_to_fit();
        }
        taken
    }

    async fn hello(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if !self.fill(HELLO_BYTES).await? {
            return Ok(None);
        }
        let cluster = usize::from(self.buffer[HELLO_BYTES - 1]);
        if cluster > CLUSTER_ID_BYTES_MAX {
            // Not ours: refused by `check_hello` without reading on.
            return Ok(Some(self.take(HELLO_BYTES)));
        }
        if !self.fill(HELLO_BYTES + cluster).await? {
            return Ok(None);
        }
        Ok(Some(self.take(HELLO_BYTES + cluster)))
    }

    /// The next frame's body, `None` at a clean close.
    pub(crate) async fn frame(&mut self) -> Result<Option<Vec<u8>>, String> {
        if !self.fill(4).await.map_err(|error| error.to_string())? {
            return Ok(None);
        }
        let length = u32::from_be_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]) as usize;
        if length > self.limit {
            return Err(format!("a frame of {length} bytes"));
        }
        if !self
            .fill(4 + length)
            .await
            .map_err(|error| error.to_string())?
        {
            return Err("the connection closed inside a frame".into());
        }
        self.take(4);
        Ok(Some(self.take(length)))
    }
}

pub(crate) fn read_frames(reader: ConnectionReader) -> FrameReader {
    FrameReader::new(reader, FRAME_BYTES_MAX)
}

/// Frames of at most `limit` bytes (a follower's fetch responses, which carry a batch of up to
/// `max.message.bytes` whole).
pub(crate) fn read_frames_up_to(reader: ConnectionReader, limit: usize) -> FrameReader {
    FrameReader::new(reader, limit)
}

/// The listener's connection counts: waiting for a hello (in all and by address), and open by
/// voter and kind.
#[derive(Default)]
struct Limits {
    waiting: Cell<usize>,
    waiting_by_address: RefCell<BTreeMap<Option<std::net::IpAddr>, usize>>,
    open: RefCell<BTreeMap<(i32, bool), usize>>,
}

impl Limits {
    fn enter_waiting(self: &Rc<Self>, address: Option<std::net::IpAddr>) -> Option<Waiting> {
        let mut by_address = self.waiting_by_address.borrow_mut();
        let from_here = by_address.entry(address).or_insert(0);
        if self.waiting.get() >= UNIDENTIFIED_MAX || *from_here >= UNIDENTIFIED_PER_ADDRESS_MAX {
            return None;
        }
        *from_here += 1;
        self.waiting.set(self.waiting.get() + 1);
        Some(Waiting {
            limits: self.clone(),
            address,
        })
    }

    fn enter_voter(self: &Rc<Self>, voter: i32, call: bool) -> Option<Open> {
        let mut open = self.open.borrow_mut();
        let count = open.entry((voter, call)).or_insert(0);
        let max = if call {
            CALLS_PER_VOTER_MAX
        } else {
            PER_VOTER_MAX
        };
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Open {
            limits: self.clone(),
            key: (voter, call),
        })
    }
}

/// A connection waiting for its hello; counted until `identified` or dropped.
struct Waiting {
    limits: Rc<Limits>,
    address: Option<std::net::IpAddr>,
}

impl Waiting {
    fn identified(self) -> Rc<Limits> {
        self.limits.clone()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.limits
            .waiting
            .set(self.limits.waiting.get().saturating_sub(1));
        let mut by_address = self.limits.waiting_by_address.borrow_mut();
        if let Some(count) = by_address.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                by_address.remove(&self.address);
            }
        }
    }
}

/// An identified voter's open connection; counted until dropped.
struct Open {
    limits: Rc<Limits>,
    key: (i32, bool),
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut open = self.limits.open.borrow_mut();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// One other voter: the messages waiting for it, and its dialer's wake-up.
struct Peer {
    node_id: i32,
    address: String,
    queue: RefCell<VecDeque<Message>>,
    wake: event_listener::Event,
    dropped: Cell<u64>,
}

/// The TCP transport of one voter.
pub struct TcpTransport {
    peers: BTreeMap<u64, Rc<Peer>>,
    stopped: Cell<bool>,
    /// Told of messages that were lost, so raft-rs probes the peer again (and, for a lost
    /// snapshot, sends another rather than wait for an answer that cannot come).
    quorum: Rc<Quorum>,
    cluster: ClusterId,
}

fn is_snapshot(message: &Message) -> bool {
    message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot
}

impl Transport for TcpTransport {
    fn send(&self, message: Message) {
        let Some(peer) = self.peers.get(&message.to) else {
            debug!(to = message.to, "no voter to send a Raft message to");
            return;
        };
        let mut queue = peer.queue.borrow_mut();
        if queue.len() >= PEER_QUEUE_MAX {
            if let Some(lost) = queue.pop_front() {
                self.quorum.report_lost(lost.to, is_snapshot(&lost));
            }
            peer.dropped.set(peer.dropped.get() + 1);
        }
        queue.push_back(message);
        drop(queue);
        peer.wake.notify(1);
    }
}

impl TcpTransport {
    /// Starts the listener's acceptor and a dialer for every other voter, on this shard.
    pub fn start(
        quorum: Rc<Quorum>,
        calls: Rc<dyn CallHandler>,
        cluster: ClusterId,
        me: i32,
        listener: Listener,
        voters: &[Voter],
    ) -> Rc<TcpTransport> {
        let voter_ids: Vec<i32> = voters.iter().map(|voter| voter.id).collect();
        let peers: BTreeMap<u64, Rc<Peer>> = voters
            .iter()
            .filter(|voter| voter.id != me)
            .map(|voter| {
                (
                    raft_id(voter.id),
                    Rc::new(Peer {
                        node_id: voter.id,
                        address: format!("{}:{}", voter.host, voter.port),
                        queue: RefCell::new(VecDeque::new()),
                        wake: event_listener::Event::new(),
                        dropped: Cell::new(0),
                    }),
                )
            })
            .collect();
        let transport = Rc::new(TcpTransport {
            peers,
            stopped: Cell::new(false),
            quorum: quorum.clone(),
            cluster,
        });
        shards::task::spawn(accept(
            transport.clone(),
            quorum,
            calls,
            me,
            voter_ids,
            listener,
        ))
        .detach();
        for peer in transport.peers.values() {
            shards::task::spawn(dial(transport.clone(), peer.clone(), me)).detach();
        }
        transport
    }

    pub fn stop(&self) {
        self.stopped.set(true);
        for peer in self.peers.values() {
            peer.wake.notify(usize::MAX);
        }
    }
}

async fn accept(
    transport: Rc<TcpTransport>,
    quorum: Rc<Quorum>,
    calls: Rc<dyn CallHandler>,
    me: i32,
    voters: Vec<i32>,
    listener: Listener,
) {
    let unidentified = Rc::new(Limits::default());
    let voters = Rc::new(voters);
    while !transport.stopped.get() {
        let connection = match listener.accept().await {
            Ok(connection) => connection,
            Err(error) => {
                warn!(%error, "accepting a controller quorum connection");
                shards::task::sleep(REDIAL_AFTER_MAX).await;
                continue;
            }
        };
        let address = connection.peer_addr().map(|address| address.ip());
        let Some(waiting) = unidentified.enter_waiting(address) else {
            debug!("too many controller quorum connections waiting for their hello; closed one");
            continue;
        };
        shards::task::spawn(receive(
            connection,
            quorum.clone(),
            calls.clone(),
            transport.cluster.clone(),
            me,
            voters.clone(),
            waiting,
        ))
        .detach();
    }
}

async fn receive(
    connection: Connection,
    quorum: Rc<Quorum>,
    calls: Rc<dyn CallHandler>,
    cluster: ClusterId,
    me: i32,
    voters: Rc<Vec<i32>>,
    waiting: Waiting,
) {
    let peer_address = connection.peer_addr();
    let (reader, writer) = connection.split();
    let mut frames = FrameReader::new(reader, FRAME_BYTES_MAX);
    let hello = shards::task::timeout(HELLO_TIMEOUT, frames.hello()).await;
    let limits = waiting.identified();
    let Some(Ok(Some(bytes))) = hello else {
        return;
    };
    if bytes.starts_with(CALL_MAGIC) {
        match check_call_hello(&bytes, me, &voters, cluster().as_deref()) {
            Ok(from) => {
                let Some(_open) = limits.enter_voter(from, true) else {
                    warn!(from, "refused a controller call connection: too many open");
                    return;
                };
                calls::serve(frames, writer, from, &*calls).await
            }
            Err(reason) => {
                warn!(peer = ?peer_address, %reason, "refused a controller call connection");
            }
        }
        return;
    }
    let from = match check_hello(&bytes, HELLO_MAGIC, me, &voters, cluster().as_deref()) {
        Ok(from) => from,
        Err(reason) => {
            warn!(peer = ?peer_address, %reason, "refused a controller quorum connection");
            return;
        }
    };
    let Some(_open) = limits.enter_voter(from, false) else {
        warn!(from, "refused a voter's connection: too many open");
        return;
    };
    debug!(from, "a voter connected");
    let sender = raft_id(from);
    loop {
        let body = match shards::task::timeout(IDLE_TIMEOUT, frames.frame()).await {
            None => {
                debug!(from, "closed a voter's idle connection");
                return;
            }
            Some(Ok(Some(body))) => body,
            Some(Ok(None)) => return,
            Some(Err(reason)) => {
                warn!(from, %reason, "closed a voter's connection");
                return;
            }
        };
        match wire::decode(&body) {
            Ok(message) if message.from == sender => quorum.receive(message),
            Ok(message) => {
                warn!(
                    from,
                    claimed = message.from,
                    "closed a voter's connection: a message claimed another sender"
                );
                return;
            }
            Err(reason) => {
                warn!(from, %reason, "closed a voter's connection");
                return;
            }
        }
    }
}

/// Resolves a voter's `host:port` (a name is looked up each time, as it may move).
pub(crate) async fn resolve(address: &str) -> Option<std::net::SocketAddr> {
    let address = address.to_string();
    shards::task::spawn_blocking(move || {
        use std::net::ToSocketAddrs;
        address.to_socket_addrs().ok()?.next()
    })
    .await
}

async fn dial(transport: Rc<TcpTransport>, peer: Rc<Peer>, me: i32) {
    let mut backoff = REDIAL_AFTER_MIN;
    let mut was_connected = false;
    while !transport.stopped.get() {
        // Dial only when there is something to send.
        while peer.queue.borrow().is_empty() && !transport.stopped.get() {
            let listener = peer.wake.listen();
            if !peer.queue.borrow().is_empty() {
                break;
            }
            listener.await;
        }
        if transport.stopped.get() {
            return;
        }
        let connected = match resolve(&peer.address).await {
            Some(address) => shards::task::timeout(CONNECT_TIMEOUT, Connection::connect(address))
                .await
                .and_then(Result::ok),
            None => None,
        };
        let Some(connection) = connected else {
            if was_connected {
                info!(node = peer.node_id, address = %peer.address, "lost the connection to a voter");
                was_connected = false;
            }
            shards::task::sleep(backoff).await;
            backoff = (backoff * 2).min(REDIAL_AFTER_MAX);
            continue;
        };
        let (_reader, mut writer) = connection.split();
        if writer
            .write_all_chunks(&[Bytes::from(hello(
                me,
                peer.node_id,
                (transport.cluster)().as_deref(),
            ))])
            .await
            .is_err()
        {
            shards::task::sleep(backoff).await;
            continue;
        }
        if !was_connected {
            info!(node = peer.node_id, address = %peer.address, "connected to a voter");
            was_connected = true;
        }
        backoff = REDIAL_AFTER_MIN;
        loop {
            let batch: Vec<Message> = peer.queue.borrow_mut().drain(..).collect();
            if batch.is_empty() {
                if transport.stopped.get() {
                    return;
                }
                let listener = peer.wake.listen();
                if peer.queue.borrow().is_empty() {
                    listener.await;
                }
                continue;
            }
            let mut chunks = Vec::with_capacity(batch.len());
            for message in &batch {
                let mut frame = vec![0; 4];
                wire::encode(message, &mut frame);
                if frame.len() - 4 > FRAME_BYTES_MAX {
                    warn!(
                        node = peer.node_id,
                        bytes = frame.len() - 4,
                        "a Raft message is larger than a frame takes; not sent"
                    );
                    transport
                        .quorum
                        .report_lost(message.to, is_snapshot(message));
                    continue;
                }
                let length = (frame.len() - 4) as u32;
                frame[..4].copy_from_slice(&length.to_be_bytes());
                chunks.push(Bytes::from(frame));
            }
            if writer.write_all_chunks(&chunks).await.is_err() {
                // What was in flight is lost; Raft sends again what mattered, once told.
                for message in &batch {
                    transport
                        .quorum
                        .report_lost(message.to, is_snapshot(message));
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_cannot_hold_every_waiting_slot_nor_a_voter_every_connection() {
        let limits = Rc::new(Limits::default());
        let stranger = Some("10.0.0.9".parse().unwrap());
        let held: Vec<Waiting> = (0..UNIDENTIFIED_PER_ADDRESS_MAX)
            .map(|_| limits.enter_waiting(stranger).unwrap())
            .collect();
        assert!(
            limits.enter_waiting(stranger).is_none(),
            "its share is used up"
        );
        let voter = limits.enter_waiting(Some("10.0.0.2".parse().unwrap()));
        assert!(voter.is_some(), "another address still gets in");
        drop(held);
        assert!(
            limits.enter_waiting(stranger).is_some(),
            "slots come back when dropped"
        );

        let open: Vec<Open> = (0..PER_VOTER_MAX)
            .map(|_| limits.enter_voter(1, false).unwrap())
            .collect();
        assert!(limits.enter_voter(1, false).is_none());
        assert!(
            limits.enter_voter(1, true).is_some(),
            "calls are counted apart"
        );
        assert!(limits.enter_voter(2, false).is_some());
        drop(open);
        assert!(limits.enter_voter(1, false).is_some());
    }

    #[test]
    fn a_hello_names_a_voter_and_this_node() {
        let voters = [0, 1, 2];
        let check = |bytes: &[u8]| check_hello(bytes, HELLO_MAGIC, 0, &voters, None);
        assert_eq!(check(&hello(1, 0, None)), Ok(1));
        assert!(check(&hello(1, 2, None))
            .unwrap_err()
            .contains("gives this address to another node"));
        assert!(check(&hello(7, 0, None))
            .unwrap_err()
            .contains("not another voter"));
        assert!(check(&hello(0, 0, None)).is_err());
        assert!(check(b"GET / HTTP/1.1").is_err());
        assert!(
            check(&hello_with(CALL_MAGIC, 1, 0, None)).is_err(),
            "the other kind"
        );
        // Cluster ids: refused only when both sides have one and they differ.
        let ours = Some("cluster-a");
        let with_ids =
            |theirs: Option<&str>| check_hello(&hello(1, 0, theirs), HELLO_MAGIC, 0, &voters, ours);
        assert_eq!(with_ids(Some("cluster-a")), Ok(1));
        assert_eq!(
            with_ids(None),
            Ok(1),
            "a node that has not learnt the id yet"
        );
        assert!(with_ids(Some("cluster-b"))
            .unwrap_err()
            .contains("belongs to cluster cluster-b, this node to cluster cluster-a"));
        assert_eq!(
            check(&hello(1, 0, Some("cluster-b"))),
            Ok(1),
            "ours is not known yet"
        );
        let mut lying = hello(1, 0, Some("cluster-a"));
        lying[HELLO_BYTES - 1] = 200;
        assert!(
            check(&lying).is_err(),
            "a cluster id length that is not the rest"
        );
        let mut other_version = hello(1, 0, None);
        other_version[5] = 9;
        assert!(check(&other_version).unwrap_err().contains("quorum format"));
    }
}

#[cfg(test)]
mod cluster_tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::controller::quorum::testing::{topic, until, Recorder};
    use crate::controller::quorum::{QuorumHost, QuorumSettings, SnapshotPolicy};

    /// These voters take no controller calls.
    struct RefuseCalls;

    impl CallHandler for RefuseCalls {
        fn handle(
            &self,
            _from: i32,
            _request: crate::controller::ControllerRequest,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = (crate::controller::ControllerReply, u64)> + '_>,
        > {
            Box::pin(async {
                (
                    crate::controller::ControllerReply::Failed("no calls here".into()),
                    0,
                )
            })
        }
    }

    /// Three voters in one process, each with its own CONTROLLER listener on loopback: they
    /// elect a leader and replicate over TCP, and a stranger's connections (a non-voter, a
    /// wrong receiver, another cluster's node, garbage, a lying frame length) are closed
    /// without disturbing them.
    #[test]
    fn three_voters_replicate_over_tcp_and_strangers_are_refused() {
        let directories: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let listeners: Vec<shards::net::BoundListener> = (0..3)
            .map(|_| shards::net::BoundListener::bind("127.0.0.1:0".parse().unwrap()).unwrap())
            .collect();
        let addresses: Vec<SocketAddr> = listeners
            .iter()
            .map(|listener| listener.local_addr().unwrap())
            .collect();
        let voters: Vec<Voter> = addresses
            .iter()
            .enumerate()
            .map(|(id, address)| Voter {
                id: id as i32,
                host: address.ip().to_string(),
                port: address.port(),
            })
            .collect();
        shards::task::run_local(async move {
            let mut nodes = Vec::new();
            for ((id, directory), listener) in directories.iter().enumerate().zip(listeners) {
                let settings = QuorumSettings {
                    node_id: id as i32,
                    voters: vec![0, 1, 2],
                    policy: SnapshotPolicy {
                        max_bytes: u64::MAX,
                        max_interval: None,
                    },
                    tick: Duration::from_millis(10),
                    append_timeout: Duration::from_secs(5),
                };
                let opened = Quorum::open(directory.path(), settings, None)
                    .await
                    .unwrap();
                let host = Rc::new(Recorder::new(opened.metadata));
                let transport = TcpTransport::start(
                    opened.quorum.clone(),
                    Rc::new(RefuseCalls),
                    Rc::new(|| Some("the-cluster".to_string())),
                    id as i32,
                    listener.into_listener(),
                    &voters,
                );
                shards::task::spawn(opened.quorum.clone().run(host.clone(), transport.clone()))
                    .detach();
                nodes.push((opened.quorum, host, transport));
            }
            until("a leader", || {
                nodes
                    .iter()
                    .filter(|(quorum, _, _)| quorum.is_leader())
                    .count()
                    == 1
            })
            .await;

            // Strangers, each on its own connection to every voter.
            use std::io::Write;
            let mut strangers = Vec::new();
            for address in &addresses {
                for bytes in [
                    hello(7, 0, None),
                    hello(1, 9, None),
                    hello(1, 0, Some("another-cluster")),
                    b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                    [hello(1, 0, None), u32::MAX.to_be_bytes().to_vec()].concat(),
                ] {
                    let mut stream = std::net::TcpStream::connect(address).unwrap();
                    let _ = stream.write_all(&bytes);
                    strangers.push(stream);
                }
            }

            let (leader, _, _) = nodes
                .iter()
                .find(|(quorum, _, _)| quorum.is_leader())
                .unwrap();
            for index in 0..10 {
                leader.append(&topic(&format!("t{index}"))).await.unwrap();
            }
            until("every voter to apply all 10", || {
                nodes
                    .iter()
                    .all(|(_, host, _)| host.state().topics.len() == 10)
            })
            .await;
            let first = nodes[0].1.state().topics;
            assert!(nodes
                .iter()
                .all(|(_, host, _)| host.state().topics == first));
            drop(strangers);
            for (quorum, _, transport) in &nodes {
                transport.stop();
                quorum.stop_and_wait().await;
            }
        })
        .unwrap();
    }
}
