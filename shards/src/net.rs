//! Per-shard TCP listeners and connections.
//!
//! Listener sockets are bound by the main thread with the standard library, which does not set
//! `SO_REUSEPORT` (glommio's own `bind` always does, so a second broker on the same port would
//! silently share it). The bound socket is then handed to its shard's executor.

use std::cell::RefCell;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncWrite};

/// A listening socket bound on the main thread, not yet owned by a shard. `Send`.
#[derive(Debug)]
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
    /// The next connection. Errors keep their errno (EMFILE tells the caller to back off).
    pub async fn accept(&self) -> std::io::Result<Connection> {
        let stream = self.0.accept().await.map_err(os_error)?;
        stream.set_nodelay(true).map_err(os_error)?;
        Ok(Connection(stream))
    }
}

fn os_error(error: glommio::GlommioError<()>) -> std::io::Error {
    match error.raw_os_error() {
        Some(errno) => std::io::Error::from_raw_os_error(errno),
        None => std::io::Error::other(error.to_string()),
    }
}

/// One client connection on the shard that accepted it.
pub struct Connection(glommio::net::TcpStream);

impl Connection {
    /// Dials `address` from this shard (connections between nodes).
    pub async fn connect(address: SocketAddr) -> std::io::Result<Connection> {
        let stream = glommio::net::TcpStream::connect(address)
            .await
            .map_err(os_error)?;
        stream.set_nodelay(true).map_err(os_error)?;
        Ok(Connection(stream))
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.0.peer_addr().ok()
    }

    /// Splits the connection so one task reads requests while another writes responses. Both
    /// halves live on this shard and share the stream without a lock: each read or write polls
    /// it for one synchronous step (glommio keeps separate readiness sources for the two
    /// directions), so a borrow never spans an await.
    pub fn split(self) -> (ConnectionReader, ConnectionWriter) {
        let stream = Rc::new(RefCell::new(self.0));
        (ConnectionReader(stream.clone()), ConnectionWriter(stream))
    }
}

pub struct ConnectionReader(Rc<RefCell<glommio::net::TcpStream>>);

impl ConnectionReader {
    /// Reads some bytes; 0 means the peer closed. Cancel-safe: dropping the future before it
    /// completes reads nothing.
    pub async fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        std::future::poll_fn(|context| {
            let mut stream = self.0.borrow_mut();
            Pin::new(&mut *stream).poll_read(context, buffer)
        })
        .await
    }
}

pub struct ConnectionWriter(Rc<RefCell<glommio::net::TcpStream>>);

impl ConnectionWriter {
    async fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> std::io::Result<usize> {
        std::future::poll_fn(|context| {
            let mut stream = self.0.borrow_mut();
            Pin::new(&mut *stream).poll_write_vectored(context, slices)
        })
        .await
    }

    /// Writes all chunks in order with vectored writes (one `sendmsg` for as many chunks as the
    /// kernel takes), so stored batches go out without a copy.
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
                .filter(|slice| !slice.is_empty())
                .take(WRITE_SLICES_MAX)
                .map(IoSlice::new)
                .collect();
            let mut written = self.write_vectored(&slices).await?;
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
}

/// Slices per `sendmsg`: the kernel's `UIO_MAXIOV` is 1024; a fetch response is a header and a
/// run of batches per partition, so this covers most responses in one call.
const WRITE_SLICES_MAX: usize = 256;
