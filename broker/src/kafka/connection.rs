//! One client connection: a reader that decodes requests in order and a writer that sends their
//! responses in the same order (clients pipeline up to `max.in.flight` requests).
//!
//! The reader runs each request's inline phase (for Produce: the append) before reading the
//! next, then queues the rest as a future; the writer awaits those futures strictly in order.
//! The queue is bounded (`IN_FLIGHT_REQUESTS_PER_CONNECTION`) and every frame holds a grant from
//! the shard's request-memory budget until its response is written.

use std::rc::Rc;

use shards::net::Connection;
use shards::task::local_channel;
use tracing::{debug, warn};

use crate::kafka::wire::frame::FrameReader;
use crate::kafka::{dispatch, Dispatch, ResponseFuture};
use crate::limits::{MemoryGrant, IN_FLIGHT_REQUESTS_PER_CONNECTION};
use crate::shard::Shard;

pub async fn serve(shard: Rc<Shard>, connection: Connection) {
    let peer = connection.peer_addr();
    let (reader, mut writer) = connection.split();
    let mut frames = FrameReader::new(
        reader,
        shard.node.config.socket_request_max_bytes(),
        shard.request_memory.clone(),
    );
    let (queue, responses) =
        local_channel::bounded::<(ResponseFuture, MemoryGrant)>(IN_FLIGHT_REQUESTS_PER_CONNECTION);
    let writer_task = shards::task::spawn(async move {
        while let Some((response, grant)) = responses.recv().await {
            match response.await {
                Ok(chunks) => {
                    if let Err(error) = writer.write_all_chunks(&chunks).await {
                        debug!(?peer, %error, "write failed; closing connection");
                        break;
                    }
                }
                Err(reason) => {
                    warn!(?peer, %reason, "cannot encode a response; closing connection");
                    break;
                }
            }
            drop(grant);
        }
    });
    loop {
        let frame = match frames.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error) => {
                warn!(?peer, %error, "closing connection");
                break;
            }
        };
        match dispatch(&shard, frame.bytes).await {
            Dispatch::Respond(response) => {
                if queue.send((response, frame.grant)).await.is_err() {
                    break;
                }
            }
            Dispatch::NoResponse => {}
            Dispatch::Close(reason) => {
                warn!(?peer, %reason, "closing connection after an unanswerable request");
                break;
            }
        }
    }
    // Answer what was read before the close, then drop the socket.
    drop(queue);
    writer_task.await;
}
