//! Typed messages between shards: a full mesh of bounded glommio channels.
//!
//! Only metadata (and later replication) crosses cores, so the capacity is small and a full
//! channel means the receiver is behind on work that is not on the data path; senders wait.

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};

use crate::ShardId;

/// Messages queued per pair of shards before a sender waits.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// What every shard gets before it starts: a handle to join the mesh.
pub struct MeshJoin<M: Send + 'static>(MeshBuilder<M, Full>);

impl<M: Send + 'static> Clone for MeshJoin<M> {
    fn clone(&self) -> Self {
        MeshJoin(self.0.clone())
    }
}

impl<M: Send + 'static> MeshJoin<M> {
    pub fn new(shard_count: usize) -> Self {
        MeshJoin(MeshBuilder::full(shard_count, MESH_CHANNEL_CAPACITY))
    }
}

/// This shard's end of the mesh.
pub struct Mesh<M: Send + 'static> {
    senders: Senders<M>,
    receivers: Receivers<M>,
}

impl<M: Send + 'static> Mesh<M> {
    /// Joins the mesh; returns once every shard has joined.
    pub async fn join(join: MeshJoin<M>) -> Result<Mesh<M>, String> {
        let (senders, receivers) = join
            .0
            .join()
            .await
            .map_err(|_| "joining the shard mesh failed".to_string())?;
        Ok(Mesh { senders, receivers })
    }

    pub fn me(&self) -> ShardId {
        ShardId(self.senders.peer_id() as u16)
    }

    pub fn shard_count(&self) -> usize {
        self.senders.nr_consumers()
    }

    /// Sends to another shard, waiting for room. Fails if that shard has stopped.
    pub async fn send_to(&self, shard: ShardId, message: M) -> Result<(), ()> {
        assert_ne!(
            shard,
            self.me(),
            "a shard does not message itself through the mesh"
        );
        self.senders
            .send_to(usize::from(shard.0), message)
            .await
            .map_err(|_| ())
    }

    /// One receiver per other shard, to be drained by one task each.
    pub fn take_receivers(&mut self) -> Vec<(ShardId, Receiver<M>)> {
        self.receivers
            .streams()
            .into_iter()
            .map(|(peer, receiver)| (ShardId(peer as u16), Receiver(receiver)))
            .collect()
    }
}

pub struct Receiver<M: Send + 'static>(glommio::channels::shared_channel::ConnectedReceiver<M>);

impl<M: Send + 'static> Receiver<M> {
    /// The next message, or `None` once the sending shard has stopped.
    pub async fn recv(&self) -> Option<M> {
        self.0.recv().await
    }
}
