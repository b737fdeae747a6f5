//! Controller calls between nodes: a node that is not the controller sends its shards'
//! controller requests (CreateTopics, a block of producer ids, its registration) to the node
//! that is, on that node's CONTROLLER listener, and reads the reply on the same connection, as
//! a Kafka broker forwards to the active controller.
//!
//! A call connection opens with its own hello (`KQRC`, the format version, sender and
//! receiver), then carries one request frame and one reply frame: a u32 length, then JSON.
//! The reply carries the metadata log index the leader had applied when it answered, so the
//! caller answers its client only once its own node has applied as much.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use shards::net::{Connection, ConnectionWriter};
use tracing::warn;

use super::transport::{check_hello, hello_with, read_frames, FrameReader, FRAME_BYTES_MAX};
use crate::config::Voter;
use crate::controller::{ControllerReply, ControllerRequest};

pub const CALL_MAGIC: &[u8; 4] = b"KQRC";

/// A call is answered within this long, or fails: longer than the controller's own wait for a
/// change to commit.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(40);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What answers calls on the controller: the controller's own `handle`, and the log index it
/// had applied by then.
pub trait CallHandler {
    fn handle(
        &self,
        from: i32,
        request: ControllerRequest,
    ) -> Pin<Box<dyn Future<Output = (ControllerReply, u64)> + '_>>;
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Reply {
    applied: u64,
    reply: ControllerReply,
}

fn frame(json: Vec<u8>) -> Bytes {
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
    frame.extend_from_slice(&json);
    Bytes::from(frame)
}

/// Serves one call connection whose hello `from` sent: one request, one reply, then the next.
pub(super) async fn serve(
    mut frames: FrameReader,
    mut writer: ConnectionWriter,
    from: i32,
    handler: &dyn CallHandler,
) {
    loop {
        let body = match frames.frame().await {
            Ok(Some(body)) => body,
            Ok(None) => return,
            Err(reason) => {
                warn!(from, %reason, "closed a controller call connection");
                return;
            }
        };
        let request: ControllerRequest = match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(error) => {
                warn!(from, %error, "closed a controller call connection: a malformed request");
                return;
            }
        };
        let (reply, applied) = handler.handle(from, request).await;
        let Ok(json) = serde_json::to_vec(&Reply { applied, reply }) else {
            return;
        };
        if json.len() > FRAME_BYTES_MAX || writer.write_all_chunks(&[frame(json)]).await.is_err() {
            return;
        }
    }
}

/// Sends `request` to the controller on `voter` (node `me` calling) and returns its reply
/// with the log index it had applied.
pub async fn call(
    me: i32,
    voter: &Voter,
    cluster: Option<&str>,
    request: &ControllerRequest,
) -> Result<(ControllerReply, u64), String> {
    let json = serde_json::to_vec(request).map_err(|error| error.to_string())?;
    let address = format!("{}:{}", voter.host, voter.port);
    let attempt = async {
        let resolved = {
            let address = address.clone();
            shards::task::spawn_blocking(move || {
                use std::net::ToSocketAddrs;
                address
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut all| all.next())
            })
            .await
        }
        .ok_or_else(|| format!("cannot resolve {address}"))?;
        let connection = shards::task::timeout(CONNECT_TIMEOUT, Connection::connect(resolved))
            .await
            .ok_or_else(|| format!("connecting to {address} timed out"))?
            .map_err(|error| format!("connecting to {address}: {error}"))?;
        let (reader, mut writer) = connection.split();
        writer
            .write_all_chunks(&[
                Bytes::from(hello_with(CALL_MAGIC, me, voter.id, cluster)),
                frame(json),
            ])
            .await
            .map_err(|error| format!("calling node {}: {error}", voter.id))?;
        let mut frames = read_frames(reader);
        let body = frames
            .frame()
            .await?
            .ok_or_else(|| format!("node {} closed the call without a reply", voter.id))?;
        let reply: Reply = serde_json::from_slice(&body)
            .map_err(|error| format!("node {}'s reply is malformed: {error}", voter.id))?;
        Ok((reply.reply, reply.applied))
    };
    shards::task::timeout(CALL_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|| {
            Err(format!(
                "node {} did not answer within {CALL_TIMEOUT:?}",
                voter.id
            ))
        })
}

/// Checks a call hello as the Raft one is checked.
pub(super) fn check_call_hello(
    bytes: &[u8],
    me: i32,
    voters: &[i32],
    ours: Option<&str>,
) -> Result<i32, String> {
    check_hello(bytes, CALL_MAGIC, me, voters, ours)
}
