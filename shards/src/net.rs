//! Per-shard TCP listeners and connections.
//!
//! Listener sockets are bound by the main thread with the standard library, which does not set
//! `SO_REUSEPORT` (glommio's own `bind` always does, so a second broker on the same port would
//! silently share it). The bound socket is then handed to its shard's executor.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

/// A listening socket bound on the main thread, not yet owned by a shard. `Send`.
pub struct BoundListener(std::net::TcpListener);

impl BoundListener {
    /// Binds `address` exclusively; a port in use (by anyone, including another broker) fails.
    pub fn bind(address: SocketAddr) -> std::io::Result<BoundListener> {
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        Ok(BoundListener(listener))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// Moves the socket into the calling shard's executor.
    pub fn into_listener(self) -> Listener {
        let fd = self.0.into_raw_fd();
        // SAFETY: `fd` is a listening TCP socket we own (taken out of the std listener with
        // into_raw_fd, so nothing else will close it); glommio takes over its ownership.
        Listener(unsafe { glommio::net::TcpListener::from_raw_fd(fd) })
    }
}

pub struct Listener(glommio::net::TcpListener);

impl Listener {
    pub async fn accept(&self) -> std::io::Result<Connection> {
        let stream = self.0.accept().await.map_err(std::io::Error::from)?;
        stream.set_nodelay(true).map_err(std::io::Error::from)?;
        Ok(Connection(stream))
    }
}

/// One client connection on the shard that accepted it.
pub struct Connection(glommio::net::TcpStream);

impl Connection {
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.0.peer_addr().ok()
    }

    /// Splits the connection so one task reads requests while another writes responses.
    pub fn split(self) -> (ConnectionReader, ConnectionWriter) {
        let (reader, writer) = futures_lite::io::split(self.0);
        (ConnectionReader(reader), ConnectionWriter(writer))
    }
}

pub struct ConnectionReader(futures_lite::io::ReadHalf<glommio::net::TcpStream>);

impl ConnectionReader {
    /// Reads some bytes; 0 means the peer closed.
    pub async fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buffer).await
    }
}

pub struct ConnectionWriter(futures_lite::io::WriteHalf<glommio::net::TcpStream>);

impl ConnectionWriter {
    /// Writes all chunks in order with vectored writes, so stored batches go out without a copy.
    pub async fn write_all_chunks(&mut self, chunks: &[Bytes]) -> std::io::Result<()> {
        let mut chunk_index = 0;
        let mut within = 0;
        loop {
            // An empty slice first would make the vectored write return 0: skip empty chunks.
            while chunk_index < chunks.len() && chunks[chunk_index].len() == within {
                chunk_index += 1;
                within = 0;
            }
            if chunk_index == chunks.len() {
                break;
            }
            let slices: Vec<IoSlice<'_>> = std::iter::once(&chunks[chunk_index][within..])
                .chain(chunks[chunk_index + 1..].iter().map(|chunk| &chunk[..]))
                .take(64)
                .map(IoSlice::new)
                .collect();
            let mut written = self.0.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while chunk_index < chunks.len() && written > 0 {
                let left = chunks[chunk_index].len() - within;
                if written >= left {
                    written -= left;
                    chunk_index += 1;
                    within = 0;
                } else {
                    within += written;
                    written = 0;
                }
            }
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().await
    }
}
