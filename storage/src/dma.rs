//! The one room of `storage` that names the runtime: the real `Disk`, direct-I/O files through
//! glommio's `DmaFile` on the shard's io_uring ring, directory operations on glommio's blocking
//! thread pool (never on the executor thread), the timer, and locked memory.
//!
//! Errors carry the operation, the path and the errno, so an operator reading a log line knows
//! which file failed and how, and the log can tell ENOSPC (refuse writes, keep the log) from EIO
//! (fail-stop).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::io::{Directory, DmaFile, OpenOptions};

use crate::io::{align_up, Disk, DiskFile, IoError, IoFuture};
use crate::limits::BLOCK_BYTES;

/// glommio's error as an `std::io::Error` that keeps its errno (glommio's own conversion drops
/// it for file errors, and the errno is what tells a full disk from a failing one).
fn os_error(error: glommio::GlommioError<()>) -> std::io::Error {
    match error.raw_os_error() {
        Some(errno) => std::io::Error::from_raw_os_error(errno),
        None => std::io::Error::other(error.to_string()),
    }
}

fn failed<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(glommio::GlommioError<()>) -> IoError + 'a {
    move |error| IoError::new(op, path, os_error(error))
}

/// Runs a blocking filesystem call on glommio's blocking thread pool, so the shard's executor
/// keeps serving while the kernel walks directories.
async fn blocking<T: Send + 'static>(
    op: &'static str,
    path: &Path,
    call: impl FnOnce(&Path) -> std::io::Result<T> + Send + 'static,
) -> Result<T, IoError> {
    let owned = path.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || call(&owned))
        .await
        .map_err(|error| IoError::new(op, path, error))
}

/// The real disk of a shard: direct I/O through glommio.
#[derive(Debug, Default, Clone, Copy)]
pub struct DmaDisk;

struct DmaDiskFile {
    file: DmaFile,
    path: PathBuf,
}

impl Disk for DmaDisk {
    fn open<'a>(&'a self, path: &'a Path, create: bool) -> IoFuture<'a, Rc<dyn DiskFile>> {
        Box::pin(async move {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .dma_open(path)
                .await
                .map_err(failed("open", path))?;
            Ok(Rc::new(DmaDiskFile {
                file,
                path: path.to_path_buf(),
            }) as Rc<dyn DiskFile>)
        })
    }

    fn create_dir_all<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(blocking("create directory", path, |path| {
            std::fs::create_dir_all(path)
        }))
    }

    fn remove_dir_all<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(blocking(
            "remove directory",
            path,
            |path| match std::fs::remove_dir_all(path) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
        ))
    }

    fn remove_file<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(blocking("remove file", path, |path| {
            std::fs::remove_file(path)
        }))
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        let to = to.to_path_buf();
        Box::pin(blocking("rename", from, move |from| {
            std::fs::rename(from, &to)
        }))
    }

    fn list<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Vec<String>> {
        Box::pin(blocking("list directory", path, |path| {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(path)? {
                if let Ok(name) = entry?.file_name().into_string() {
                    names.push(name);
                }
            }
            Ok(names)
        }))
    }

    fn exists<'a>(&'a self, path: &'a Path) -> IoFuture<'a, bool> {
        Box::pin(blocking("stat", path, |path| path.try_exists()))
    }

    fn sync_directory<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            let directory = Directory::open(path)
                .await
                .map_err(failed("open directory", path))?;
            directory
                .sync()
                .await
                .map_err(failed("fsync directory", path))?;
            directory
                .close()
                .await
                .map_err(failed("close directory", path))
        })
    }

    fn available_bytes<'a>(&'a self, path: &'a Path) -> IoFuture<'a, u64> {
        Box::pin(blocking("statvfs", path, |path| {
            statvfs(path).map(|stat| stat.f_bavail.saturating_mul(stat.f_frsize))
        }))
    }

    fn total_bytes<'a>(&'a self, path: &'a Path) -> IoFuture<'a, u64> {
        Box::pin(blocking("statvfs", path, |path| {
            statvfs(path).map(|stat| stat.f_blocks.saturating_mul(stat.f_frsize))
        }))
    }
}

fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value that the call overwrites.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stat` is a valid
    // pointer to a struct we own.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat)
}

impl DiskFile for DmaDiskFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn write_blocks<'a>(&'a self, position: u64, parts: &'a [&'a [u8]]) -> IoFuture<'a, ()> {
        Box::pin(async move {
            assert_eq!(position % BLOCK_BYTES, 0, "direct writes start on a block");
            let content: usize = parts.iter().map(|part| part.len()).sum();
            let length = align_up(content as u64) as usize;
            // The parts are copied once, into the aligned DMA buffer the kernel reads from.
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
                .map_err(failed("write", &self.path))?;
            if written != length {
                return Err(IoError::new(
                    "write",
                    &self.path,
                    std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        format!("short direct write: {written} of {length} bytes"),
                    ),
                ));
            }
            Ok(())
        })
    }

    fn read(&self, position: u64, length: usize) -> IoFuture<'_, Bytes> {
        Box::pin(async move {
            if length == 0 {
                return Ok(Bytes::new());
            }
            let read = self
                .file
                .read_at(position, length)
                .await
                .map_err(failed("read", &self.path))?;
            Ok(Bytes::copy_from_slice(&read))
        })
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.file
                .fdatasync()
                .await
                .map_err(failed("fdatasync", &self.path))
        })
    }

    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(async move {
            self.file
                .file_size()
                .await
                .map_err(failed("stat", &self.path))
        })
    }

    fn allocate(&self, size: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.file
                .pre_allocate(size, false)
                .await
                .map_err(failed("fallocate", &self.path))
        })
    }

    fn truncate(&self, size: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.file
                .truncate(size)
                .await
                .map_err(failed("truncate", &self.path))
        })
    }
}

/// Lets other tasks of this shard run if this one has had its share of the CPU.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
}

/// Sleeps on the shard's timer wheel (no thread, no syscall per sleeper), through
/// `shards::task::sleep`, which keeps a timer polled many times to one wheel entry.
pub async fn sleep(duration: Duration) {
    shards::task::sleep(duration).await
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
