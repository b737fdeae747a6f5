//! Size-prefixed frames in, size-prefixed frames out.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use shards::net::ConnectionReader;

use crate::limits::FRAME_READ_STEP_BYTES;
use std::rc::Rc;
use storage::memory::{MemoryBudget, MemoryGrant};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes is outside 8..={limit} (socket.request.max.bytes)")]
    BadSize { size: i64, limit: usize },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One request frame (without its size prefix) and the memory grant that pays for it.
pub struct Frame {
    pub bytes: Bytes,
    pub grant: MemoryGrant,
}

/// Reads request frames from one connection, bounding each by `socket.request.max.bytes` before
/// any memory is reserved for it, and paying for it from the shard's request budget.
pub struct FrameReader {
    reader: ConnectionReader,
    buffer: BytesMut,
    size_limit: usize,
    budget: Rc<MemoryBudget>,
}

impl FrameReader {
    pub fn new(reader: ConnectionReader, size_limit: usize, budget: Rc<MemoryBudget>) -> Self {
        FrameReader {
            reader,
            buffer: BytesMut::with_capacity(64 * 1024),
            size_limit,
            budget,
        }
    }

    /// Reads into the buffer until it holds `wanted` bytes, growing it by at most one step per
    /// read. Returns false on a clean end of stream before any byte of this frame.
    async fn fill(&mut self, wanted: usize) -> Result<bool, FrameError> {
        while self.buffer.len() < wanted {
            let before = self.buffer.len();
            // Read ahead up to 64 KiB (the next small requests usually follow), but grow a large
            // frame's buffer only a step at a time, as its bytes arrive.
            let step = (wanted - before).clamp(64 * 1024, FRAME_READ_STEP_BYTES);
            self.buffer.resize(before + step, 0);
            let read = self.reader.read(&mut self.buffer[before..]).await;
            let read = match read {
                Ok(read) => read,
                Err(error) => {
                    self.buffer.truncate(before);
                    return Err(error.into());
                }
            };
            self.buffer.truncate(before + read);
            if read == 0 {
                return if before == 0 {
                    Ok(false)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
        Ok(true)
    }

    /// The next frame, or `None` when the client closed the connection between frames.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if !self.fill(4).await? {
            return Ok(None);
        }
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
            });
        }
        let size = size as usize;
        let grant = self.budget.acquire(size).await;
        if !self.fill(4 + size).await? {
            return Err(FrameError::Truncated);
        }
        let mut frame = self.buffer.split_to(4 + size);
        let bytes = frame.split_off(4).freeze();
        Ok(Some(Frame { bytes, grant }))
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
