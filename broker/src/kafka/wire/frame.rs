//! Size-prefixed frames in, size-prefixed frames out.
//!
//! A request frame is paid for from the shard's request memory as its bytes arrive, not from
//! the size it claims: a client that sends a 4-byte prefix claiming 100 MiB and then nothing holds
//! a few kilobytes, not the budget. Each API has its own frame limit (`request_bytes_max`): only
//! Produce needs `socket.request.max.bytes`. A frame that stops arriving for
//! `FRAME_STALL_TIMEOUT` closes the connection.

use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use shards::net::ConnectionReader;
use storage::memory::{MemoryBudget, MemoryGrant};

use crate::limits::{
    FRAME_READ_STEP_BYTES, FRAME_STALL_TIMEOUT, GROUP_REQUEST_BYTES_MAX, READ_AHEAD_BYTES,
    REQUEST_BYTES_MAX,
};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes is outside 8..={limit} ({what})")]
    BadSize {
        size: i64,
        limit: usize,
        what: &'static str,
    },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("no byte of the frame arrived for {0:?}")]
    Stalled(std::time::Duration),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One request frame (without its size prefix) and the memory grant that pays for it.
pub struct Frame {
    pub bytes: Bytes,
    pub grant: MemoryGrant,
}

/// The largest frame a request of `api_key` may be. Produce carries record batches and may use
/// all of `socket.request.max.bytes`; JoinGroup and SyncGroup carry members' subscription and
/// assignment blobs (decoded in place); every other request is a list of names and numbers,
/// whose largest legitimate instances are far below a few megabytes.
pub fn request_bytes_max(api_key: i16, socket_request_max_bytes: usize) -> (usize, &'static str) {
    match ApiKey::try_from(api_key) {
        Ok(ApiKey::Produce) => (socket_request_max_bytes, "socket.request.max.bytes"),
        Ok(ApiKey::JoinGroup) | Ok(ApiKey::SyncGroup) => (
            GROUP_REQUEST_BYTES_MAX.min(socket_request_max_bytes),
            "the JoinGroup and SyncGroup frame limit",
        ),
        _ => (
            REQUEST_BYTES_MAX.min(socket_request_max_bytes),
            "the frame limit for requests other than Produce",
        ),
    }
}

/// Reads request frames from one connection. Cancel-safe: a read that is dropped before it
/// completes (an idle or shutdown timer won the race) loses nothing, because only `filled`
/// says which bytes of the buffer are real.
pub struct FrameReader {
    reader: ConnectionReader,
    /// Initialized bytes; the first `filled` of them are what the client sent.
    buffer: BytesMut,
    filled: usize,
    size_limit: usize,
    budget: Rc<MemoryBudget>,
}

impl FrameReader {
    pub fn new(reader: ConnectionReader, size_limit: usize, budget: Rc<MemoryBudget>) -> Self {
        FrameReader {
            reader,
            buffer: BytesMut::new(),
            filled: 0,
            size_limit,
            budget,
        }
    }

    /// One read of at most `step` more bytes. Returns the bytes read (0 at the end of the
    /// stream).
    async fn read_some(&mut self, step: usize) -> Result<usize, FrameError> {
        if self.buffer.len() < self.filled + step {
            self.buffer.resize(self.filled + step, 0);
        }
        let read = self
            .reader
            .read(&mut self.buffer[self.filled..self.filled + step])
            .await?;
        self.filled += read;
        Ok(read)
    }

    /// Reads until `wanted` bytes are in, each read bounded by the stall timeout.
    async fn fill(&mut self, wanted: usize, grant: &mut MemoryGrant) -> Result<(), FrameError> {
        while self.filled < wanted {
            let step = (wanted - self.filled).min(FRAME_READ_STEP_BYTES);
            // Pay for the bytes before they arrive: at most one step more than has arrived. The
            // wait for memory counts against the stall timeout too: partly read frames that
            // together hold the whole budget would otherwise wait on each other forever; this
            // way the one that waited longest gives its memory back.
            let needed = self.filled + step;
            let step_read = async {
                if grant.bytes() < needed {
                    grant.grow(needed - grant.bytes()).await;
                }
                self.read_some(step).await
            };
            match shards::task::timeout(FRAME_STALL_TIMEOUT, step_read).await {
                None => return Err(FrameError::Stalled(FRAME_STALL_TIMEOUT)),
                Some(Err(error)) => return Err(error),
                Some(Ok(0)) => return Err(FrameError::Truncated),
                Some(Ok(_)) => {}
            }
        }
        Ok(())
    }

    /// Waits for the first byte of the next frame, with no timeout of its own (an idle
    /// connection is the caller's to close). `false` when the client closed between frames.
    pub async fn wait_for_frame(&mut self) -> Result<bool, FrameError> {
        if self.filled > 0 {
            return Ok(true);
        }
        // A small read-ahead: the next requests of a pipelining client often come in the same
        // segment.
        Ok(self.read_some(READ_AHEAD_BYTES).await? > 0)
    }

    /// The next frame, once `wait_for_frame` said one has begun.
    pub async fn next_frame(&mut self) -> Result<Frame, FrameError> {
        let mut grant = self.budget.acquire(self.filled.max(8)).await;
        self.fill(4, &mut grant).await?;
        let size = i32::from_be_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]);
        // The smallest request header (api key, version, correlation id) is 8 bytes.
        if size < 8 || size as usize > self.size_limit {
            return Err(FrameError::BadSize {
                size: i64::from(size),
                limit: self.size_limit,
                what: "socket.request.max.bytes",
            });
        }
        let size = size as usize;
        // The API key decides the frame's own limit: read the header's first bytes first.
        self.fill(4 + 2, &mut grant).await?;
        let api_key = i16::from_be_bytes([self.buffer[4], self.buffer[5]]);
        let (limit, what) = request_bytes_max(api_key, self.size_limit);
        if size > limit {
            return Err(FrameError::BadSize {
                size: size as i64,
                limit,
                what,
            });
        }
        self.fill(4 + size, &mut grant).await?;
        let mut frame = self.buffer.split_to(4 + size);
        self.filled -= 4 + size;
        let bytes = frame.split_off(4).freeze();
        if self.filled == 0 {
            // Give the read-ahead buffer back: an idle connection holds no memory.
            self.buffer = BytesMut::new();
        }
        grant.shrink_to(bytes.len());
        Ok(Frame { bytes, grant })
    }
}

/// The fixed start of every request header.
#[derive(Debug, Clone, Copy)]
pub struct RequestStart {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestStart {
    pub fn parse(frame: &[u8]) -> Option<RequestStart> {
        let field = |at: usize, width: usize| frame.get(at..at + width);
        Some(RequestStart {
            api_key: i16::from_be_bytes(field(0, 2)?.try_into().ok()?),
            api_version: i16::from_be_bytes(field(2, 2)?.try_into().ok()?),
            correlation_id: i32::from_be_bytes(field(4, 4)?.try_into().ok()?),
        })
    }
}

/// Encodes a response (size prefix, header, body) for `api_key` at `version`.
pub fn encode_response<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<Bytes, String> {
    // ApiVersions answers always use header v0, whatever the request version (KIP-511).
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let mut buffer = BytesMut::with_capacity(256);
    buffer.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buffer, header_version)
        .map_err(|error| error.to_string())?;
    body.encode(&mut buffer, version)
        .map_err(|error| format!("encoding {api_key:?} v{version}: {error}"))?;
    let size = (buffer.len() - 4) as i32;
    buffer[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buffer.freeze())
}
