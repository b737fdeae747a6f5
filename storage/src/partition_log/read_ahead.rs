//! Read-ahead for consumers reading a segment in order. Segments are read with direct I/O, so
//! no page cache reads ahead for us: a consumer catching up on old data would otherwise wait
//! for the disk at every fetch, one fetch at a time (librdkafka keeps one in flight per
//! broker). After a disk read, the log reads the next stretch of the same segment in the
//! background; the next fetch from where the last one ended takes it from memory, and starts
//! the read after it.
//!
//! One read-ahead per log, in flight or ready. It takes memory only while at least half of the
//! shard's budget stays free, and a ready one is the first thing the log gives back when the
//! budget is short (`Reclaim`). A fetch from anywhere else drops a ready one. What it reads
//! never changes under it: sealed segments are immutable and the active one is read only below
//! the end that was readable when the read started, through the file handle the fetch used.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::read::{walk_run, Run};
use super::{Fetched, PartitionLog};
use crate::io::DiskFile;
use crate::memory::MemoryGrant;
use crate::Offset;

pub(super) enum ReadAhead {
    Idle,
    /// A read of the segment at `path` from the batch that starts at `from` is in flight.
    Reading {
        path: PathBuf,
        from: Offset,
    },
    Ready(Buffer),
}

pub(super) struct Buffer {
    path: PathBuf,
    /// The offset the buffer's first batch starts at, and that batch's file position.
    from: Offset,
    position: u64,
    bytes: Bytes,
    memory: MemoryGrant,
    file: Rc<dyn DiskFile>,
    disk_end: u64,
    length: usize,
}

impl ReadAhead {
    fn is_reading(&self, path: &Path, from: Offset) -> bool {
        matches!(self, ReadAhead::Reading { path: reading, from: at } if reading == path && *at == from)
    }

    /// Whether it reads or holds the segment at `path`.
    pub(super) fn is_for(&self, path: &Path) -> bool {
        match self {
            ReadAhead::Idle => false,
            ReadAhead::Reading { path: reading, .. } => reading == path,
            ReadAhead::Ready(buffer) => buffer.path == path,
        }
    }

    /// Bytes a ready read-ahead holds.
    pub(super) fn held_bytes(&self) -> usize {
        match self {
            ReadAhead::Ready(buffer) => buffer.bytes.len(),
            _ => 0,
        }
    }
}

impl PartitionLog {
    /// Whether a read-ahead is in flight ("reading"), holds bytes ("ready") or neither
    /// ("idle"), for tests.
    #[doc(hidden)]
    pub fn read_ahead_state(&self) -> &'static str {
        match &*self.read_ahead.borrow() {
            ReadAhead::Idle => "idle",
            ReadAhead::Reading { .. } => "reading",
            ReadAhead::Ready(_) => "ready",
        }
    }

    /// A fetch of `from..` in the segment at `path` answered from the read-ahead, if it holds
    /// that place (waiting for it if it is still being read); `None` sends the fetch to the
    /// disk.
    pub(super) async fn take_read_ahead(
        &self,
        path: &Path,
        from: Offset,
        max_bytes: usize,
        upper: Offset,
    ) -> Option<Fetched> {
        loop {
            let listener = self.read_ahead_moved.listen();
            if !self.read_ahead.borrow().is_reading(path, from) {
                break;
            }
            listener.await;
        }
        let buffer = {
            let mut slot = self.read_ahead.borrow_mut();
            match &*slot {
                ReadAhead::Ready(buffer) if buffer.path == path && buffer.from == from => {}
                // In flight for another place: let it land; the fetch there will want it.
                ReadAhead::Reading { .. } | ReadAhead::Idle => return None,
                // Ready for another place: that reader has moved on or gone.
                ReadAhead::Ready(_) => {
                    *slot = ReadAhead::Idle;
                    return None;
                }
            }
            match std::mem::replace(&mut *slot, ReadAhead::Idle) {
                ReadAhead::Ready(buffer) => buffer,
                _ => return None,
            }
        };
        let Run::Found { first, end, next } = walk_run(&buffer.bytes, from, max_bytes, upper)
        else {
            return None;
        };
        self.start_read_ahead(
            path.to_path_buf(),
            buffer.file.clone(),
            buffer.position + end as u64,
            next,
            buffer.disk_end,
            buffer.length,
        );
        Some(Fetched {
            runs: vec![buffer.bytes.slice(first..end)],
            memory: Some(buffer.memory),
            short_of_memory: false,
        })
    }

    /// Reads `length` bytes of `file` (the segment at `path`) from `position`, where the batch
    /// starting at offset `from` begins, up to `disk_end`, in the background, unless one is in
    /// flight already or memory is not plentiful.
    pub(super) fn start_read_ahead(
        &self,
        path: PathBuf,
        file: Rc<dyn DiskFile>,
        position: u64,
        from: Offset,
        disk_end: u64,
        length: usize,
    ) {
        if position >= disk_end || matches!(*self.read_ahead.borrow(), ReadAhead::Reading { .. }) {
            return;
        }
        let wanted = ((disk_end - position) as usize).min(length);
        let Some(memory) = self.context.memory.try_acquire_spare(wanted) else {
            return;
        };
        let Some(log) = self.me.upgrade() else {
            return;
        };
        *self.read_ahead.borrow_mut() = ReadAhead::Reading {
            path: path.clone(),
            from,
        };
        glommio::spawn_local(async move {
            let read = file.read(position, wanted).await;
            {
                let mut slot = log.read_ahead.borrow_mut();
                // Still the read the slot waits for (nothing replaced it meanwhile).
                if slot.is_reading(&path, from) {
                    *slot = match read {
                        Ok(bytes) => ReadAhead::Ready(Buffer {
                            path,
                            from,
                            position,
                            bytes,
                            memory,
                            file,
                            disk_end,
                            length,
                        }),
                        // The fetch that wants it reads the disk itself and sees the error.
                        Err(_) => ReadAhead::Idle,
                    };
                }
            }
            log.read_ahead_moved.notify(usize::MAX);
            // A ready read-ahead is memory a waiter may reclaim: let waiters look again.
            log.context.memory.poke();
        })
        .detach();
    }
}
