//! The one room of `storage` that names the runtime: direct-I/O files through glommio's `DmaFile`,
//! directory syncs, and the timer the flusher sleeps on.
//!
//! Everything here runs on the calling shard's io_uring ring. Errors carry the operation and the
//! path, so an operator reading a log line knows which file failed and how.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::io::{Directory, DmaFile, OpenOptions};

use crate::limits::BLOCK_BYTES;

/// An I/O failure with the operation and file it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct IoError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn io_error(op: &'static str, path: &Path, error: impl Into<std::io::Error>) -> IoError {
    IoError {
        op,
        path: path.to_path_buf(),
        source: error.into(),
    }
}

pub fn align_down(value: u64) -> u64 {
    value & !(BLOCK_BYTES - 1)
}

pub fn align_up(value: u64) -> u64 {
    align_down(value + BLOCK_BYTES - 1)
}

/// A segment file opened for direct I/O. Cheap to clone (shared handle on the owning shard).
#[derive(Clone)]
pub struct SegmentFile {
    file: Rc<DmaFile>,
    path: Rc<PathBuf>,
}

impl SegmentFile {
    /// Opens `path` for reading and writing, creating it if it does not exist.
    pub async fn open_or_create(path: &Path) -> Result<SegmentFile, IoError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(|error| io_error("open", path, error))?;
        Ok(SegmentFile {
            file: Rc::new(file),
            path: Rc::new(path.to_path_buf()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the concatenation of `parts` at block-aligned `position`, zero-padding the last
    /// block. The padding is past the log's logical end and is overwritten by the next flush's
    /// rewrite of that block. The parts are copied once, into the aligned DMA buffer.
    pub async fn write_blocks_gathered(
        &self,
        position: u64,
        parts: &[&[u8]],
    ) -> Result<(), IoError> {
        assert_eq!(position % BLOCK_BYTES, 0, "direct writes start on a block");
        let content: usize = parts.iter().map(|part| part.len()).sum();
        let length = align_up(content as u64) as usize;
        let mut buffer = self.file.alloc_dma_buffer(length);
        let target = buffer.as_bytes_mut();
        let mut at = 0;
        for part in parts {
            target[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        target[content..].fill(0);
        let written = self
            .file
            .write_at(buffer, position)
            .await
            .map_err(|error| io_error("write", &self.path, error))?;
        if written != length {
            return Err(io_error(
                "write",
                &self.path,
                std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short direct write: {written} of {length} bytes"),
                ),
            ));
        }
        Ok(())
    }

    pub async fn fdatasync(&self) -> Result<(), IoError> {
        self.file
            .fdatasync()
            .await
            .map_err(|error| io_error("fdatasync", &self.path, error))
    }

    /// Reads up to `length` bytes at `position` (short at end of file) into an owned buffer.
    pub async fn read(&self, position: u64, length: usize) -> Result<Bytes, IoError> {
        if length == 0 {
            return Ok(Bytes::new());
        }
        let read = self
            .file
            .read_at(position, length)
            .await
            .map_err(|error| io_error("read", &self.path, error))?;
        Ok(Bytes::copy_from_slice(&read))
    }

    pub async fn size(&self) -> Result<u64, IoError> {
        self.file
            .file_size()
            .await
            .map_err(|error| io_error("stat", &self.path, error))
    }

    /// Allocates blocks up to `size` bytes; the file's size becomes `size` and reads past the
    /// written data return zeros.
    pub async fn preallocate(&self, size: u64) -> Result<(), IoError> {
        self.file
            .pre_allocate(size, false)
            .await
            .map_err(|error| io_error("fallocate", &self.path, error))
    }

    pub async fn truncate(&self, size: u64) -> Result<(), IoError> {
        self.file
            .truncate(size)
            .await
            .map_err(|error| io_error("truncate", &self.path, error))
    }

    /// The (major, minor) of the device holding the file, to look up its block sizes in sysfs.
    pub fn device(&self) -> (u32, u32) {
        (self.file.dev_major(), self.file.dev_minor())
    }
}

/// Makes a directory entry change (file created, removed, renamed) durable.
pub async fn sync_directory(path: &Path) -> Result<(), IoError> {
    let directory = Directory::open(path)
        .await
        .map_err(|error| io_error("open directory", path, error))?;
    directory
        .sync()
        .await
        .map_err(|error| io_error("fsync directory", path, error))?;
    directory
        .close()
        .await
        .map_err(|error| io_error("close directory", path, error))
}

/// Sleeps on the shard's timer wheel (no thread, no syscall per sleeper).
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await
}

/// Whether one aligned 4 KiB write on this device is atomic: true when its physical block is
/// at least 4 KiB, or it advertises an atomic write unit of that size. The tail-block rewrite
/// relies on it (see `partition_log`), so the broker warns when it does not hold.
pub fn device_writes_blocks_atomically(device: (u32, u32)) -> bool {
    let queue = format!("/sys/dev/block/{}:{}/queue", device.0, device.1);
    let read_number = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("{queue}/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    // Partitions have no queue/ of their own; their parent device has it.
    let physical = read_number("physical_block_size").or_else(|| {
        let parent = std::fs::canonicalize(format!("/sys/dev/block/{}:{}/..", device.0, device.1));
        let parent = parent.ok()?;
        std::fs::read_to_string(parent.join("queue/physical_block_size"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let atomic_unit = read_number("atomic_write_unit_max_bytes");
    physical.is_some_and(|bytes| bytes >= BLOCK_BYTES)
        || atomic_unit.is_some_and(|bytes| bytes >= BLOCK_BYTES)
}

/// glommio refuses to start an executor with less locked memory than this.
pub const LOCKED_MEMORY_MIN_BYTES: u64 = 512 * 1024;

/// Raises `RLIMIT_MEMLOCK` towards `wanted_bytes` so io_uring can register its buffers, as far as
/// the hard limit allows, and returns the limit now in force. Fails with a readable reason only
/// when the limit stays below what glommio needs to start at all.
pub fn ensure_locked_memory(wanted_bytes: u64) -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and pass by valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Err(format!(
            "cannot read RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        ));
    }
    if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= wanted_bytes {
        return Ok(limit.rlim_cur);
    }
    // Try the wanted value with a raised hard limit (needs CAP_SYS_RESOURCE), then the hard limit.
    let attempts = [
        libc::rlimit {
            rlim_cur: wanted_bytes,
            rlim_max: wanted_bytes.max(limit.rlim_max),
        },
        libc::rlimit {
            rlim_cur: limit.rlim_max.min(wanted_bytes),
            rlim_max: limit.rlim_max,
        },
    ];
    for attempt in attempts {
        // SAFETY: setrlimit only reads the struct we pass by valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &attempt) } == 0 {
            return Ok(attempt.rlim_cur);
        }
    }
    if limit.rlim_cur >= LOCKED_MEMORY_MIN_BYTES {
        return Ok(limit.rlim_cur);
    }
    Err(format!(
        "locked memory limit is {} KiB and could not be raised to the {} KiB io_uring needs \
         ({}); run as root, grant CAP_IPC_LOCK, or raise `ulimit -l`",
        limit.rlim_cur / 1024,
        LOCKED_MEMORY_MIN_BYTES / 1024,
        std::io::Error::last_os_error()
    ))
}
