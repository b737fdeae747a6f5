//! The data directory's free space: the threshold below which appends are refused, and a space
//! reserve that keeps room for the broker's own metadata on a disk someone else filled to the
//! last byte (so a DeleteTopics that would free space can still be recorded).
//!
//! Blocking file calls: run them on the main thread at start, or on the blocking pool.

use std::path::{Path, PathBuf};

/// The reserve: a file of real (allocated) blocks the broker deletes when it cannot otherwise
/// write its cluster metadata, and creates again once there is room. The metadata of thousands
/// of topics is well under a megabyte.
pub const RESERVE_BYTES: u64 = 8 * 1024 * 1024;

const RESERVE_FILE: &str = ".space-reserve";

fn reserve_path(data_dir: &Path) -> PathBuf {
    data_dir.join(RESERVE_FILE)
}

/// The free-space threshold in force: `storage_min_free_bytes`, but at most a twentieth of the
/// filesystem, so a small disk is not "full" while it is nearly empty.
pub fn min_free_bytes(configured: u64, total_bytes: u64) -> u64 {
    configured.min(total_bytes / 20)
}

/// Makes sure the reserve exists with its blocks allocated. A disk without room for it is left
/// without one (and nothing half-allocated is kept).
pub fn ensure_reserve(data_dir: &Path) {
    use std::os::fd::AsRawFd;
    let path = reserve_path(data_dir);
    if std::fs::metadata(&path).is_ok_and(|metadata| metadata.len() == RESERVE_BYTES) {
        return;
    }
    let Ok(file) = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
    else {
        return;
    };
    // SAFETY: fallocate on a file descriptor we own and keep open for the call's duration.
    let status = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, RESERVE_BYTES as libc::off_t) };
    if status != 0 {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return;
    }
    let _ = file.sync_all();
}

/// Frees the reserve; true if there was one to free.
pub fn release_reserve(data_dir: &Path) -> bool {
    std::fs::remove_file(reserve_path(data_dir)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_made_once_and_released_once() {
        let directory = tempfile::tempdir().unwrap();
        ensure_reserve(directory.path());
        let metadata = std::fs::metadata(reserve_path(directory.path())).unwrap();
        assert_eq!(metadata.len(), RESERVE_BYTES);
        use std::os::unix::fs::MetadataExt;
        assert!(
            metadata.blocks() * 512 >= RESERVE_BYTES,
            "its blocks are really allocated"
        );
        assert!(release_reserve(directory.path()));
        assert!(!release_reserve(directory.path()));
        assert_eq!(min_free_bytes(1 << 30, 64 << 20), (64 << 20) / 20);
        assert_eq!(min_free_bytes(1 << 30, 100 << 30), 1 << 30);
    }
}
