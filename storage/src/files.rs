//! The shard's bounded cache of open sealed-segment files.
//!
//! A partition keeps its active segment open for as long as it lives; its sealed segments are
//! opened on demand through this cache, which holds at most `capacity` of them and closes the
//! least recently used one to make room. So the file descriptors a shard holds are its
//! partitions plus this capacity plus its connections, however many segments the logs have.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::io::{Disk, DiskFile, IoError};

/// An open file and when it was last used (a tick of the cache's clock).
struct Cached {
    file: Rc<dyn DiskFile>,
    used: u64,
}

pub struct FileCache {
    disk: Rc<dyn Disk>,
    capacity: usize,
    entries: RefCell<HashMap<PathBuf, Cached>>,
    tick: Cell<u64>,
    /// Counts `forget`s: an open that a forget overtook does not put its file back.
    forgets: Cell<u64>,
}

impl FileCache {
    pub fn new(disk: Rc<dyn Disk>, capacity: usize) -> Rc<FileCache> {
        Rc::new(FileCache {
            disk,
            capacity: capacity.max(1),
            entries: RefCell::new(HashMap::new()),
            tick: Cell::new(0),
            forgets: Cell::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }

    fn touch(&self) -> u64 {
        self.tick.set(self.tick.get() + 1);
        self.tick.get()
    }

    /// The open file at `path` (an existing file), opening it if it is not cached.
    pub async fn open(&self, path: &Path) -> Result<Rc<dyn DiskFile>, IoError> {
        let tick = self.touch();
        if let Some(cached) = self.entries.borrow_mut().get_mut(path) {
            cached.used = tick;
            return Ok(cached.file.clone());
        }
        let forgets = self.forgets.get();
        let file = self.disk.open(path, false).await?;
        if self.forgets.get() == forgets {
            self.insert(path, file.clone());
        }
        Ok(file)
    }

    /// Keeps `file` (already open) for later reads of `path`.
    pub fn insert(&self, path: &Path, file: Rc<dyn DiskFile>) {
        let tick = self.touch();
        let mut entries = self.entries.borrow_mut();
        while entries.len() >= self.capacity && !entries.contains_key(path) {
            let oldest = entries
                .iter()
                .min_by_key(|(_, cached)| cached.used)
                .map(|(path, _)| path.clone());
            match oldest {
                // Dropping the handle closes the file once no read holds it.
                Some(oldest) => entries.remove(&oldest),
                None => break,
            };
        }
        entries.insert(path.to_path_buf(), Cached { file, used: tick });
    }

    /// Forgets every file under `directory` (the partition is being removed or truncated).
    pub fn forget_under(&self, directory: &Path) {
        self.forgets.set(self.forgets.get() + 1);
        self.entries
            .borrow_mut()
            .retain(|path, _| !path.starts_with(directory));
    }

    pub fn forget(&self, path: &Path) {
        self.forgets.set(self.forgets.get() + 1);
        self.entries.borrow_mut().remove(path);
    }
}

/// The shard's view of the disk's free space. The shard's monitor refreshes it; logs read it
/// before every append, so a full disk refuses writes with a retriable error instead of failing
/// them one fallocate at a time.
#[derive(Debug, Default)]
pub struct SpaceGuard {
    refusing: Cell<bool>,
    /// Set by a log whose allocation or write hit ENOSPC, or that freed space (retention), so
    /// the monitor looks again at once.
    exhausted: Cell<bool>,
}

impl SpaceGuard {
    pub fn new() -> Rc<SpaceGuard> {
        Rc::new(SpaceGuard::default())
    }

    /// Whether appends are refused because free space is below the threshold.
    pub fn refusing(&self) -> bool {
        self.refusing.get()
    }

    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.set(refusing);
    }

    pub fn note_exhausted(&self) {
        self.exhausted.set(true);
    }

    /// Space was freed: the monitor should look at it now rather than at its next tick.
    pub fn note_freed(&self) {
        self.exhausted.set(true);
    }

    /// Takes the "look at the free space now" flag.
    pub fn take_exhausted(&self) -> bool {
        self.exhausted.replace(false)
    }
}
