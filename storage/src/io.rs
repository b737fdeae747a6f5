//! The storage crate's seam to the disk: every file and directory operation of a partition log
//! goes through `Disk` and `DiskFile`, so the same log code runs on the real direct-I/O disk
//! (`dma::DmaDisk`, glommio on the shard's io_uring ring) and on the simulated one
//! (`sim::SimDisk`), which injects EIO and ENOSPC on any write or sync and loses power, keeping
//! any subset of what was written but not synced. The crash tests run on the simulated disk.
//!
//! The traits are object safe and `!Send`: a disk lives on one shard and is shared by the logs
//! of that shard as `Rc<dyn Disk>`. Operations return boxed futures: one small allocation per
//! I/O, against a system call or a simulated step each.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;

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

const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

impl IoError {
    pub fn new(op: &'static str, path: &Path, source: std::io::Error) -> IoError {
        IoError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The disk (or the user's quota) is full. Not a media error: the log refuses writes and
    /// keeps everything it has (DESIGN section 3), and takes writes again when space returns.
    pub fn is_no_space(&self) -> bool {
        matches!(self.source.raw_os_error(), Some(ENOSPC) | Some(EDQUOT))
            || self.source.kind() == std::io::ErrorKind::StorageFull
            || self.source.kind() == std::io::ErrorKind::QuotaExceeded
    }

    pub fn is_not_found(&self) -> bool {
        self.source.kind() == std::io::ErrorKind::NotFound
    }
}

/// The future of one disk operation.
pub type IoFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, IoError>> + 'a>>;

/// A shard's filesystem: opening files and changing directories.
pub trait Disk {
    /// Opens `path` for reading and direct writing; creates it when `create` is set. A file that
    /// was created must have its directory synced (`sync_directory`) to survive a crash.
    fn open<'a>(&'a self, path: &'a Path, create: bool) -> IoFuture<'a, Rc<dyn DiskFile>>;
    fn create_dir_all<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()>;
    fn remove_dir_all<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()>;
    fn remove_file<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()>;
    /// Renames a file within its directory, replacing `to` if it exists, atomically: after a
    /// crash the directory holds the old name or the new one (the change is durable once the
    /// directory is synced).
    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()>;
    /// The names in a directory (files and directories, no `.`/`..`).
    fn list<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Vec<String>>;
    fn exists<'a>(&'a self, path: &'a Path) -> IoFuture<'a, bool>;
    /// Makes the creation, removal or renaming of entries in this directory durable.
    fn sync_directory<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()>;
    /// Bytes free for unprivileged writers on the filesystem holding `path`.
    fn available_bytes<'a>(&'a self, path: &'a Path) -> IoFuture<'a, u64>;
    /// Bytes of the filesystem holding `path`.
    fn total_bytes<'a>(&'a self, path: &'a Path) -> IoFuture<'a, u64>;
}

/// One open file. Writes are direct: whole 4 KiB blocks at block-aligned positions.
pub trait DiskFile {
    fn path(&self) -> &Path;
    /// Writes the concatenation of `parts` at block-aligned `position`, zero-padding the last
    /// block. The padding is past the log's logical end and is overwritten by the next write.
    fn write_blocks<'a>(&'a self, position: u64, parts: &'a [&'a [u8]]) -> IoFuture<'a, ()>;
    /// Up to `length` bytes at `position` (short at the end of the file).
    fn read(&self, position: u64, length: usize) -> IoFuture<'_, Bytes>;
    fn fdatasync(&self) -> IoFuture<'_, ()>;
    fn size(&self) -> IoFuture<'_, u64>;
    /// Allocates blocks up to `size` bytes: the file's size becomes `size` and reads past the
    /// written data return zeros. On ENOSPC part of the range may stay allocated; the caller
    /// gives it back with `truncate`.
    fn allocate(&self, size: u64) -> IoFuture<'_, ()>;
    fn truncate(&self, size: u64) -> IoFuture<'_, ()>;
}

pub fn align_down(value: u64) -> u64 {
    value & !(BLOCK_BYTES - 1)
}

pub fn align_up(value: u64) -> u64 {
    align_down(value + BLOCK_BYTES - 1)
}

/// Writes `bytes` (a small metadata file: index, snapshot, recovery point) as the whole content
/// of `path`, creating it, and syncs it; syncs the directory too when the file is new.
pub async fn write_small_file(
    disk: &dyn Disk,
    directory: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<(), IoError> {
    let existed = disk.exists(path).await?;
    let file = disk.open(path, true).await?;
    // No truncate: the checksummed envelope says where the content ends, and an overwrite in
    // place has no metadata for the sync to commit.
    let written: Result<(), IoError> = async {
        file.write_blocks(0, &[bytes]).await?;
        file.fdatasync().await?;
        if !existed {
            disk.sync_directory(directory).await?;
        }
        Ok(())
    }
    .await;
    if written.is_err() && !existed {
        // A new file whose entry may not be durable must not be taken for a durable one next
        // time (which would skip the directory sync): it goes, and the next write creates it.
        drop(file);
        let _ = disk.remove_file(path).await;
    }
    written
}

/// The whole content of a small file (capped at `limit` bytes), or `None` if it does not exist.
pub async fn read_small_file(
    disk: &dyn Disk,
    path: &Path,
    limit: usize,
) -> Result<Option<Bytes>, IoError> {
    if !disk.exists(path).await? {
        return Ok(None);
    }
    let file = disk.open(path, false).await?;
    let size = file.size().await?;
    Ok(Some(file.read(0, (size as usize).min(limit)).await?))
}
