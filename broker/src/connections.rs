//! Accepting client connections: the node-wide quotas (Kafka's `max.connections` and
//! `max.connections.per.ip`, with Kafka's behaviour), each shard's own cap (its share of the
//! open-file budget), an accept loop that backs off when the process is out of file
//! descriptors instead of spinning, and the shard's registry of open connections, which
//! shutdown uses to stop reading and drain what is in flight.
//!
//! The quotas are shared by every shard's listener (`Arc<Mutex<..>>`): they are touched once
//! per accepted and closed connection, never on a request's path.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use event_listener::Event;
use tracing::{info, warn};

use crate::kafka::connection;
use crate::shard::Shard;

/// How long an accept loop waits after the process ran out of file descriptors, at first and
/// at most (doubling in between): the connection that could not be accepted stays in the
/// listen backlog, so an immediate retry fails again and a loop without a pause starves the
/// shard.
const ACCEPT_RETRY_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);

/// How often an accept loop that stopped at `max.connections` looks for a free slot (one may
/// free up on any shard).
const NODE_FULL_RECHECK: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Connections open on the node, against `max.connections` and `max.connections.per.ip`.
#[derive(Debug)]
pub struct ConnectionQuotas {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max.connections`: Kafka's acceptor waits for a slot; so do we.
    NodeFull,
    /// `max.connections.per.ip`: Kafka closes the new connection at once; so do we.
    TooManyFromAddress { count: usize },
}

/// One admitted connection's place in the quotas, given back when dropped.
pub struct ConnectionSlot {
    quotas: Arc<ConnectionQuotas>,
    ip: Option<IpAddr>,
}

impl ConnectionQuotas {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionQuotas> {
        Arc::new(ConnectionQuotas {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic aborts the process (see `main`), so a poisoned lock cannot be observed.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnectionSlot, Refusal> {
        let mut counts = self.counts();
        if counts.total >= self.max_total {
            return Err(Refusal::NodeFull);
        }
        if let Some(ip) = ip {
            let count = counts.per_ip.get(&ip).copied().unwrap_or(0);
            if count >= self.max_per_ip {
                return Err(Refusal::TooManyFromAddress { count });
            }
            counts.per_ip.insert(ip, count + 1);
        }
        counts.total += 1;
        Ok(ConnectionSlot {
            quotas: self.clone(),
            ip,
        })
    }

    /// Whether a new connection could be admitted now (the node is under `max.connections`).
    pub fn has_room(&self) -> bool {
        self.counts().total < self.max_total
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.quotas.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(count) = counts.per_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.per_ip.remove(&ip);
                }
            }
        }
    }
}

/// A shard's open connections: how many, and the signal that tells them to stop reading.
#[derive(Default)]
pub struct Connections {
    open: Cell<usize>,
    closed: Event,
    stopping: Cell<bool>,
    stop: Event,
}

impl Connections {
    pub fn open(&self) -> usize {
        self.open.get()
    }

    pub fn stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Resolves once shutdown asks connections to stop reading requests.
    pub async fn wait_stop(&self) {
        loop {
            let listener = self.stop.listen();
            if self.stopping.get() {
                return;
            }
            listener.await;
        }
    }

    /// Shutdown: every connection stops reading and answers what it has read; returns once all
    /// have closed or `deadline` passed.
    pub async fn drain(&self, deadline: Duration) {
        self.stopping.set(true);
        self.stop.notify(usize::MAX);
        let drained = async {
            loop {
                let listener = self.closed.listen();
                if self.open.get() == 0 {
                    return;
                }
                listener.await;
            }
        };
        if shards::task::timeout(deadline, drained).await.is_none() {
            warn!(
                open = self.open.get(),
                "connections still open after the drain deadline"
            );
        }
    }
}

/// Accepts connections on this shard's listener until the task is dropped.
pub async fn accept_loop(shard: Rc<Shard>, listener: shards::net::Listener) {
    let quotas = shard.node.connections.clone();
    let shard_cap = shard.node.limits.connections_per_shard;
    let mut retry = ACCEPT_RETRY_FIRST;
    loop {
        // Kafka's acceptor blocks while the node is at max.connections; new connections wait
        // in the listen backlog meanwhile.
        while !quotas.has_room() || shard.connections.open() >= shard_cap {
            shards::task::sleep(NODE_FULL_RECHECK).await;
        }
        let connection = match listener.accept().await {
            Ok(connection) => {
                retry = ACCEPT_RETRY_FIRST;
                connection
            }
            Err(error) => {
                let out_of_descriptors = matches!(
                    error.raw_os_error(),
                    Some(libc::EMFILE) | Some(libc::ENFILE)
                );
                if out_of_descriptors {
                    warn!(%error, wait_ms = retry.as_millis() as u64, "out of file descriptors; accepting again after a pause");
                } else {
                    warn!(%error, "accept failed");
                }
                shards::task::sleep(retry).await;
                retry = (retry * 2).min(ACCEPT_RETRY_MAX);
                continue;
            }
        };
        let ip = connection.peer_addr().map(|address| address.ip());
        let slot = loop {
            match quotas.admit(ip) {
                Ok(slot) => break Some(slot),
                Err(Refusal::TooManyFromAddress { count }) => {
                    info!(
                        address = ?ip,
                        count,
                        "Rejected connection: the address already has the configured maximum of \
                         connections (max.connections.per.ip)"
                    );
                    break None;
                }
                // The last slot went to another shard since the check above: this connection
                // waits for one, as Kafka's acceptor does.
                Err(Refusal::NodeFull) => shards::task::sleep(NODE_FULL_RECHECK).await,
            }
        };
        let Some(slot) = slot else {
            continue;
        };
        let registry = &shard.connections;
        registry.open.set(registry.open.get() + 1);
        shard.metrics.connection_opened();
        let shard = shard.clone();
        shards::task::spawn(async move {
            connection::serve(shard.clone(), connection).await;
            drop(slot);
            let registry = &shard.connections;
            registry.open.set(registry.open.get() - 1);
            registry.closed.notify(usize::MAX);
            shard.metrics.connection_closed();
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_refuse_past_each_limit_and_give_slots_back() {
        let quotas = ConnectionQuotas::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = quotas.admit(Some(a)).unwrap();
        let _second = quotas.admit(Some(a)).unwrap();
        assert_eq!(
            quotas.admit(Some(a)).err(),
            Some(Refusal::TooManyFromAddress { count: 2 })
        );
        let _third = quotas.admit(Some(b)).unwrap();
        assert_eq!(quotas.admit(Some(b)).err(), Some(Refusal::NodeFull));
        assert!(!quotas.has_room());
        drop(first);
        assert!(quotas.has_room());
        assert!(quotas.admit(Some(a)).is_ok());
    }
}
