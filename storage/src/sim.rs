//! A simulated disk for crash tests, in memory and deterministic by seed (the habit of
//! TigerBeetle's simulator and sled's crash tests): the same `Disk` the logs use in production,
//! with a model of what a real disk keeps when the power goes.
//!
//! The model:
//! - Every file has its durable content (as of its last completed `fdatasync`) and the writes and
//!   size changes made since, in order. `fdatasync` makes all of them durable.
//! - Directory entries (create, remove) are durable once their directory is synced; until then a
//!   crash keeps a random prefix of each directory's changes, as a journaling filesystem commits
//!   them in order.
//! - Power loss (`cut_power_after`) freezes the disk: every later operation fails with EIO. A
//!   `crash_image` of it then starts from the durable state and keeps a random subset of each
//!   file's unsynced 4 KiB block writes (a volatile write cache reorders them freely), tears at
//!   most one of them at 512-byte granularity, and keeps or drops each unsynced size change.
//! - Faults: the n-th write, sync or allocation can fail with any errno (EIO, ENOSPC), or every
//!   one from now on; a capacity makes allocations and writes past it fail with ENOSPC; and
//!   `fsync_is_noop` turns `fdatasync` into a lie (it returns and makes nothing durable), which
//!   is what "fdatasync removed from the write path" looks like from the disk.
//! - Every operation yields to the executor a seeded number of times before it completes, so
//!   writes, syncs and appends interleave differently from seed to seed.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::io::{Disk, DiskFile, IoError, IoFuture};
use crate::limits::BLOCK_BYTES;

const EIO: i32 = 5;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const EXDEV: i32 = 18;
pub const ENOSPC: i32 = 28;
pub const SIM_EIO: i32 = EIO;

/// A small, fast, seedable generator (SplitMix64). The simulation's only source of chance.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }
}

/// The kinds of operation a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Write,
    Sync,
    Allocate,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { position: u64, data: Vec<u8> },
    SetLength(u64),
}

/// Replays one change onto a file's content.
fn apply(content: &mut Vec<u8>, change: &Pending) {
    match change {
        Pending::SetLength(length) => content.resize(*length as usize, 0),
        Pending::Write { position, data } => {
            let end = *position as usize + data.len();
            if content.len() < end {
                content.resize(end, 0);
            }
            content[*position as usize..end].copy_from_slice(data);
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
    /// The block ranges of writes in flight: a device may apply overlapping writes in flight
    /// in either order, so the simulator refuses to be given two.
    writing: Vec<(u64, u64)>,
    /// The end of the furthest block ever written (zeros or data), as opposed to allocated.
    written_end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(usize),
    Directory,
}

#[derive(Debug, Clone)]
enum DirectoryChange {
    Link(PathBuf, Entry),
    Unlink(PathBuf),
    /// One atomic change: the entry leaves the first name for the second.
    Rename(PathBuf, PathBuf, Entry),
}

#[derive(Debug, Clone)]
struct Fault {
    op: FaultOp,
    /// Operations of that kind to let through first; `None` fails every one.
    after: Option<u64>,
    errno: i32,
}

struct State {
    rng: SimRng,
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, Entry>,
    durable_names: BTreeMap<PathBuf, Entry>,
    /// Unsynced changes of each directory, in order.
    directory_changes: BTreeMap<PathBuf, Vec<DirectoryChange>>,
    faults: Vec<Fault>,
    counts: BTreeMap<&'static str, u64>,
    faults_fired: u64,
    operations: u64,
    power_cut_at: Option<u64>,
    powered: bool,
    capacity_bytes: Option<u64>,
    fsync_is_noop: bool,
    max_yields: u64,
}

/// The simulated disk. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct SimDisk {
    state: Rc<RefCell<State>>,
}

fn error(op: &'static str, path: &Path, errno: i32) -> IoError {
    IoError::new(op, path, std::io::Error::from_raw_os_error(errno))
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl State {
    fn used_bytes(&self) -> u64 {
        let mut live = vec![false; self.inodes.len()];
        for entry in self.names.values() {
            if let Entry::File(inode) = entry {
                live[*inode] = true;
            }
        }
        self.inodes
            .iter()
            .zip(live)
            .filter(|(_, live)| *live)
            .map(|(inode, _)| crate::io::align_up(inode.data.len() as u64))
            .sum()
    }

    /// Counts one operation and decides its fate: `Err(errno)` if it fails.
    fn begin(&mut self, kind: Option<FaultOp>) -> Result<(), i32> {
        if !self.powered {
            return Err(EIO);
        }
        self.operations += 1;
        if self.power_cut_at.is_some_and(|cut| self.operations >= cut) {
            self.powered = false;
            return Err(EIO);
        }
        let Some(kind) = kind else {
            return Ok(());
        };
        let name = match kind {
            FaultOp::Write => "write",
            FaultOp::Sync => "sync",
            FaultOp::Allocate => "allocate",
        };
        let seen = *self.counts.entry(name).or_default();
        *self.counts.entry(name).or_default() += 1;
        for (index, fault) in self.faults.iter().enumerate() {
            if fault.op != kind {
                continue;
            }
            match fault.after {
                None => {
                    self.faults_fired += 1;
                    return Err(fault.errno);
                }
                Some(after) if seen == after => {
                    let errno = fault.errno;
                    self.faults.remove(index);
                    self.faults_fired += 1;
                    return Err(errno);
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn link(&mut self, path: &Path, entry: Entry) {
        self.names.insert(path.to_path_buf(), entry);
        self.directory_changes
            .entry(parent_of(path))
            .or_default()
            .push(DirectoryChange::Link(path.to_path_buf(), entry));
    }

    fn unlink(&mut self, path: &Path) {
        self.names.remove(path);
        self.directory_changes
            .entry(parent_of(path))
            .or_default()
            .push(DirectoryChange::Unlink(path.to_path_buf()));
    }

    fn grow_within_capacity(&self, inode: usize, new_length: u64) -> bool {
        let Some(capacity) = self.capacity_bytes else {
            return true;
        };
        let current = crate::io::align_up(self.inodes[inode].data.len() as u64);
        let wanted = crate::io::align_up(new_length);
        wanted <= current || self.used_bytes() + (wanted - current) <= capacity
    }
}

impl Default for SimDisk {
    fn default() -> Self {
        SimDisk::new(0)
    }
}

impl SimDisk {
    /// An empty disk with only the root directory, its chances drawn from `seed`.
    pub fn new(seed: u64) -> SimDisk {
        let mut names = BTreeMap::new();
        names.insert(PathBuf::from("/"), Entry::Directory);
        SimDisk::powered_on(SimRng::new(seed), Vec::new(), names, None, 3)
    }

    /// A disk that has just come up holding `inodes` under `names`, all of it durable: no
    /// faults armed, nothing counted yet, the power on.
    fn powered_on(
        rng: SimRng,
        inodes: Vec<Inode>,
        names: BTreeMap<PathBuf, Entry>,
        capacity_bytes: Option<u64>,
        max_yields: u64,
    ) -> SimDisk {
        SimDisk {
            state: Rc::new(RefCell::new(State {
                rng,
                inodes,
                durable_names: names.clone(),
                names,
                directory_changes: BTreeMap::new(),
                faults: Vec::new(),
                counts: BTreeMap::new(),
                faults_fired: 0,
                operations: 0,
                power_cut_at: None,
                powered: true,
                capacity_bytes,
                fsync_is_noop: false,
                max_yields,
            })),
        }
    }

    /// The n-th (from 0, counted from now) operation of `op` fails with `errno`, once.
    pub fn fail_nth(&self, op: FaultOp, nth: u64, errno: i32) {
        let mut state = self.state.borrow_mut();
        let seen = state
            .counts
            .get(match op {
                FaultOp::Write => "write",
                FaultOp::Sync => "sync",
                FaultOp::Allocate => "allocate",
            })
            .copied()
            .unwrap_or(0);
        state.faults.push(Fault {
            op,
            after: Some(seen + nth),
            errno,
        });
    }

    /// Every operation of `op` fails with `errno` until `clear_faults`.
    pub fn fail_always(&self, op: FaultOp, errno: i32) {
        self.state.borrow_mut().faults.push(Fault {
            op,
            after: None,
            errno,
        });
    }

    /// Injected faults that have hit an operation so far.
    pub fn faults_fired(&self) -> u64 {
        self.state.borrow().faults_fired
    }

    pub fn clear_faults(&self) {
        self.state.borrow_mut().faults.clear();
    }

    /// Allocations and writes that would make the files larger than this fail with ENOSPC.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.state.borrow_mut().capacity_bytes = capacity_bytes;
    }

    pub fn used_bytes(&self) -> u64 {
        self.state.borrow().used_bytes()
    }

    /// `fdatasync` returns success and makes nothing durable.
    pub fn set_fsync_is_noop(&self, noop: bool) {
        self.state.borrow_mut().fsync_is_noop = noop;
    }

    /// The power goes when the operation count (from the disk's creation) reaches `operations`.
    pub fn cut_power_after(&self, operations: u64) {
        self.state.borrow_mut().power_cut_at = Some(operations);
    }

    pub fn cut_power_now(&self) {
        self.state.borrow_mut().powered = false;
    }

    pub fn powered(&self) -> bool {
        self.state.borrow().powered
    }

    pub fn operations(&self) -> u64 {
        self.state.borrow().operations
    }

    /// Operations yield to the executor at most this many times before completing.
    pub fn set_max_yields(&self, yields: u64) {
        self.state.borrow_mut().max_yields = yields;
    }

    /// The current content of a file, as a reader would see it now.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.borrow();
        match state.names.get(path)? {
            Entry::File(inode) => Some(state.inodes[*inode].data.clone()),
            Entry::Directory => None,
        }
    }

    /// How far a file's blocks have ever been written (zeros or data), as opposed to allocated.
    pub fn written_extent(&self, path: &Path) -> Option<u64> {
        let state = self.state.borrow();
        match state.names.get(path)? {
            Entry::File(inode) => Some(state.inodes[*inode].written_end),
            Entry::Directory => None,
        }
    }

    /// Media corruption: flips bits of one durable byte of a file (its current content too).
    pub fn corrupt_byte(&self, path: &Path, position: usize) -> bool {
        let mut state = self.state.borrow_mut();
        let Some(Entry::File(inode)) = state.names.get(path).copied() else {
            return false;
        };
        let inode = &mut state.inodes[inode];
        if position >= inode.durable.len() || position >= inode.data.len() {
            return false;
        }
        inode.durable[position] ^= 0x5a;
        inode.data[position] ^= 0x5a;
        true
    }

    /// The names under `directory` now (for tests' own checks).
    pub fn names_under(&self, directory: &Path) -> Vec<PathBuf> {
        self.state
            .borrow()
            .names
            .keys()
            .filter(|path| path.starts_with(directory) && path.as_path() != directory)
            .cloned()
            .collect()
    }

    /// What the disk holds after the power came back: the durable state, plus a random subset
    /// of the unsynced block writes (one maybe torn at 512-byte granularity), a random choice of
    /// unsynced size changes, and a random prefix of each directory's unsynced changes. Powered
    /// on, with no faults and a fresh seed.
    pub fn crash_image(&self, seed: u64) -> SimDisk {
        let state = self.state.borrow();
        let mut rng = SimRng::new(seed);
        let mut inodes = Vec::with_capacity(state.inodes.len());
        let mut torn_one = false;
        for inode in &state.inodes {
            let mut data = inode.durable.clone();
            for pending in &inode.pending {
                match pending {
                    Pending::SetLength(length) => {
                        if rng.chance(1, 2) {
                            data.resize(*length as usize, 0);
                        }
                    }
                    Pending::Write {
                        position,
                        data: written,
                    } => {
                        for (block_index, block) in written.chunks(BLOCK_BYTES as usize).enumerate()
                        {
                            let at = *position as usize + block_index * BLOCK_BYTES as usize;
                            if !rng.chance(1, 2) {
                                continue;
                            }
                            if data.len() < at + block.len() {
                                data.resize(at + block.len(), 0);
                            }
                            if !torn_one && rng.chance(1, 8) {
                                // A torn block: each 512-byte sector is either new or old.
                                torn_one = true;
                                for (sector_index, sector) in block.chunks(512).enumerate() {
                                    if rng.chance(1, 2) {
                                        let start = at + sector_index * 512;
                                        data[start..start + sector.len()].copy_from_slice(sector);
                                    }
                                }
                            } else {
                                data[at..at + block.len()].copy_from_slice(block);
                            }
                        }
                    }
                }
            }
            inodes.push(Inode {
                durable: data.clone(),
                written_end: data.len() as u64,
                data,
                ..Inode::default()
            });
        }
        let mut names = state.durable_names.clone();
        for changes in state.directory_changes.values() {
            let kept = rng.below(changes.len() as u64 + 1) as usize;
            for change in &changes[..kept] {
                match change {
                    DirectoryChange::Link(path, entry) => {
                        names.insert(path.clone(), *entry);
                    }
                    DirectoryChange::Unlink(path) => {
                        names.remove(path);
                    }
                    DirectoryChange::Rename(from, to, entry) => {
                        names.remove(from);
                        names.insert(to.clone(), *entry);
                    }
                }
            }
        }
        // A file whose directory survived without it is gone; an entry whose directory is gone
        // went with it.
        // A directory that survived implies its ancestors did (they were created first), so
        // a crash image of a crash image still has the files its directories hold.
        let directories: std::collections::BTreeSet<PathBuf> = names
            .iter()
            .filter(|(_, entry)| **entry == Entry::Directory)
            .flat_map(|(path, _)| path.ancestors().map(Path::to_path_buf))
            .collect();
        names.retain(|path, _| {
            path.as_path() == Path::new("/")
                || path
                    .parent()
                    .is_some_and(|parent| directories.contains(parent))
        });
        SimDisk::powered_on(
            SimRng::new(seed.wrapping_mul(31).wrapping_add(7)),
            inodes,
            names,
            state.capacity_bytes,
            state.max_yields,
        )
    }

    /// What the disk holds after the process died but the machine did not: every completed
    /// write and directory change, synced or not (a process death loses nothing the kernel or
    /// the device already took, which is what `kill -9` does to a broker).
    pub fn process_crash_image(&self) -> SimDisk {
        let state = self.state.borrow();
        let inodes = state
            .inodes
            .iter()
            .map(|inode| Inode {
                data: inode.data.clone(),
                durable: inode.data.clone(),
                written_end: inode.written_end,
                ..Inode::default()
            })
            .collect();
        SimDisk::powered_on(
            state.rng.clone(),
            inodes,
            state.names.clone(),
            state.capacity_bytes,
            state.max_yields,
        )
    }

    /// Starts one operation: counts it, lets the seeded faults and the power cut decide its
    /// fate, and hands over the disk's state for it.
    fn operate(
        &self,
        kind: Option<FaultOp>,
        op: &'static str,
        path: &Path,
    ) -> Result<RefMut<'_, State>, IoError> {
        let mut state = self.state.borrow_mut();
        state.begin(kind).map_err(|errno| error(op, path, errno))?;
        Ok(state)
    }

    /// Yields to the executor a seeded number of times: the operation "takes time".
    async fn take_time(&self) {
        let yields = {
            let mut state = self.state.borrow_mut();
            let bound = state.max_yields + 1;
            state.rng.below(bound)
        };
        for _ in 0..yields {
            futures_lite::future::yield_now().await;
        }
    }

    fn directory_exists(state: &State, path: &Path) -> bool {
        matches!(state.names.get(path), Some(Entry::Directory))
    }
}

struct SimFile {
    disk: SimDisk,
    inode: usize,
    path: PathBuf,
}

/// A write of `range` that the device has not completed yet (`Inode::writing`).
struct WriteInFlight<'a> {
    file: &'a SimFile,
    range: (u64, u64),
}

impl Drop for WriteInFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.file.disk.state.borrow_mut();
        let writing = &mut state.inodes[self.file.inode].writing;
        if let Some(at) = writing.iter().position(|range| *range == self.range) {
            writing.swap_remove(at);
        }
    }
}

impl Disk for SimDisk {
    fn open<'a>(&'a self, path: &'a Path, create: bool) -> IoFuture<'a, Rc<dyn DiskFile>> {
        Box::pin(async move {
            self.take_time().await;
            let mut state = self.operate(None, "open", path)?;
            let inode = match state.names.get(path).copied() {
                Some(Entry::File(inode)) => inode,
                Some(Entry::Directory) => return Err(error("open", path, EEXIST)),
                None if create => {
                    if !SimDisk::directory_exists(&state, &parent_of(path)) {
                        return Err(error("open", path, ENOENT));
                    }
                    state.inodes.push(Inode::default());
                    let inode = state.inodes.len() - 1;
                    state.link(path, Entry::File(inode));
                    inode
                }
                None => return Err(error("open", path, ENOENT)),
            };
            Ok(Rc::new(SimFile {
                disk: self.clone(),
                inode,
                path: path.to_path_buf(),
            }) as Rc<dyn DiskFile>)
        })
    }

    fn create_dir_all<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.take_time().await;
            let mut state = self.operate(None, "create directory", path)?;
            let mut missing = Vec::new();
            let mut at = Some(path);
            while let Some(directory) = at {
                match state.names.get(directory) {
                    Some(Entry::Directory) => break,
                    Some(Entry::File(_)) => return Err(error("create directory", path, EEXIST)),
                    None => missing.push(directory.to_path_buf()),
                }
                at = directory.parent();
            }
            for directory in missing.into_iter().rev() {
                state.link(&directory, Entry::Directory);
            }
            Ok(())
        })
    }

    fn remove_dir_all<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.take_time().await;
            let mut state = self.operate(None, "remove directory", path)?;
            let doomed: Vec<PathBuf> = state
                .names
                .keys()
                .filter(|name| name.starts_with(path))
                .cloned()
                .collect();
            // Deepest first, as a real walk unlinks children before their directory.
            for name in doomed.iter().rev() {
                state.unlink(name);
            }
            Ok(())
        })
    }

    fn remove_file<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.take_time().await;
            let mut state = self.operate(None, "remove file", path)?;
            match state.names.get(path) {
                Some(Entry::File(_)) => {
                    state.unlink(path);
                    Ok(())
                }
                _ => Err(error("remove file", path, ENOENT)),
            }
        })
    }

    fn rename<'a>(&'a self, from: &'a Path, to: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.take_time().await;
            let mut state = self.operate(None, "rename", from)?;
            let Some(Entry::File(inode)) = state.names.get(from).copied() else {
                return Err(error("rename", from, ENOENT));
            };
            if parent_of(from) != parent_of(to) {
                return Err(error("rename", to, EXDEV));
            }
            state.names.remove(from);
            state.names.insert(to.to_path_buf(), Entry::File(inode));
            state
                .directory_changes
                .entry(parent_of(from))
                .or_default()
                .push(DirectoryChange::Rename(
                    from.to_path_buf(),
                    to.to_path_buf(),
                    Entry::File(inode),
                ));
            Ok(())
        })
    }

    fn list<'a>(&'a self, path: &'a Path) -> IoFuture<'a, Vec<String>> {
        Box::pin(async move {
            self.take_time().await;
            let state = self.operate(None, "list directory", path)?;
            if !SimDisk::directory_exists(&state, path) {
                return Err(error("list directory", path, ENOENT));
            }
            Ok(state
                .names
                .keys()
                .filter(|name| name.parent() == Some(path))
                .filter_map(|name| name.file_name()?.to_str().map(str::to_string))
                .collect())
        })
    }

    fn exists<'a>(&'a self, path: &'a Path) -> IoFuture<'a, bool> {
        Box::pin(async move {
            let state = self.operate(None, "stat", path)?;
            Ok(state.names.contains_key(path))
        })
    }

    fn sync_directory<'a>(&'a self, path: &'a Path) -> IoFuture<'a, ()> {
        Box::pin(async move {
            self.take_time().await;
            let mut state = self.operate(Some(FaultOp::Sync), "fsync directory", path)?;
            if state.fsync_is_noop {
                return Ok(());
            }
            if let Some(changes) = state.directory_changes.remove(path) {
                for change in changes {
                    match change {
                        DirectoryChange::Link(name, entry) => {
                            state.durable_names.insert(name, entry);
                        }
                        DirectoryChange::Unlink(name) => {
                            state.durable_names.remove(&name);
                        }
                        DirectoryChange::Rename(from, to, entry) => {
                            state.durable_names.remove(&from);
                            state.durable_names.insert(to, entry);
                        }
                    }
                }
            }
            Ok(())
        })
    }

    fn available_bytes<'a>(&'a self, path: &'a Path) -> IoFuture<'a, u64> {
        Box::pin(async move {
            let state = self.operate(None, "statvfs", path)?;
            Ok(state.capacity_bytes.map_or(u64::MAX / 2, |capacity| {
                capacity.saturating_sub(state.used_bytes())
            }))
        })
    }

    fn total_bytes<'a>(&'a self, path: &'a Path) -> IoFuture<'a, u64> {
        Box::pin(async move {
            let state = self.operate(None, "statvfs", path)?;
            Ok(state.capacity_bytes.unwrap_or(u64::MAX / 2))
        })
    }
}

impl DiskFile for SimFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn write_blocks<'a>(&'a self, position: u64, parts: &'a [&'a [u8]]) -> IoFuture<'a, ()> {
        Box::pin(async move {
            assert_eq!(position % BLOCK_BYTES, 0, "direct writes start on a block");
            let mut data: Vec<u8> = parts.concat();
            data.resize(crate::io::align_up(data.len() as u64) as usize, 0);
            let end = position + data.len() as u64;
            {
                let mut state = self
                    .disk
                    .operate(Some(FaultOp::Write), "write", &self.path)?;
                if !state.grow_within_capacity(self.inode, end) {
                    return Err(error("write", &self.path, ENOSPC));
                }
                let inode = &mut state.inodes[self.inode];
                if let Some((from, to)) = inode
                    .writing
                    .iter()
                    .find(|(from, to)| *from < end && position < *to)
                {
                    panic!(
                        "{}: a write of [{position}, {end}) while one of [{from}, {to}) is in \
                         flight: the device may apply them in either order",
                        self.path.display()
                    );
                }
                inode.writing.push((position, end));
                inode.written_end = inode.written_end.max(end);
                if (inode.data.len() as u64) < end {
                    inode.data.resize(end as usize, 0);
                }
                inode.data[position as usize..end as usize].copy_from_slice(&data);
                inode.pending.push(Pending::Write { position, data });
            }
            // Out of flight when it completes, and also when its future is dropped halfway.
            let in_flight = WriteInFlight {
                file: self,
                range: (position, end),
            };
            self.disk.take_time().await;
            drop(in_flight);
            if !self.disk.powered() {
                return Err(error("write", &self.path, EIO));
            }
            Ok(())
        })
    }

    fn read(&self, position: u64, length: usize) -> IoFuture<'_, Bytes> {
        Box::pin(async move {
            self.disk.take_time().await;
            let state = self.disk.operate(None, "read", &self.path)?;
            let data = &state.inodes[self.inode].data;
            let start = (position as usize).min(data.len());
            let end = start.saturating_add(length).min(data.len());
            Ok(Bytes::copy_from_slice(&data[start..end]))
        })
    }

    fn fdatasync(&self) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.disk.take_time().await;
            let mut state = self.disk.state.borrow_mut();
            if let Err(errno) = state.begin(Some(FaultOp::Sync)) {
                // After a failed sync the kernel may have thrown away what it could not write
                // (and marked it clean): what was not durable is gone, for readers too. A
                // writer that carries on as if its writes were there loses them.
                if state.powered {
                    let inode = &mut state.inodes[self.inode];
                    inode.data = inode.durable.clone();
                    inode.pending.clear();
                }
                return Err(error("fdatasync", &self.path, errno));
            }
            if state.fsync_is_noop {
                return Ok(());
            }
            // What was written since the last sync becomes durable: replayed onto the durable
            // content, which costs what was written, not the size of the file.
            let inode = &mut state.inodes[self.inode];
            for pending in std::mem::take(&mut inode.pending) {
                apply(&mut inode.durable, &pending);
            }
            debug_assert_eq!(
                inode.durable.len(),
                inode.data.len(),
                "a sync makes the file durable"
            );
            Ok(())
        })
    }

    fn size(&self) -> IoFuture<'_, u64> {
        Box::pin(async move {
            let state = self.disk.operate(None, "stat", &self.path)?;
            Ok(state.inodes[self.inode].data.len() as u64)
        })
    }

    fn allocate(&self, size: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.disk.take_time().await;
            let mut state = self
                .disk
                .operate(Some(FaultOp::Allocate), "fallocate", &self.path)?;
            if !state.grow_within_capacity(self.inode, size) {
                // Like a real filesystem, a failed allocation may keep part of what it got:
                // the caller must give it back.
                let capacity = state.capacity_bytes.unwrap_or(u64::MAX);
                let room = capacity.saturating_sub(state.used_bytes());
                let inode = &mut state.inodes[self.inode];
                let partial = (inode.data.len() as u64 + room / 2).min(size);
                if partial > inode.data.len() as u64 {
                    inode.data.resize(partial as usize, 0);
                    inode.pending.push(Pending::SetLength(partial));
                }
                return Err(error("fallocate", &self.path, ENOSPC));
            }
            let inode = &mut state.inodes[self.inode];
            if size > inode.data.len() as u64 {
                inode.data.resize(size as usize, 0);
                inode.pending.push(Pending::SetLength(size));
            }
            Ok(())
        })
    }

    fn truncate(&self, size: u64) -> IoFuture<'_, ()> {
        Box::pin(async move {
            self.disk.take_time().await;
            let mut state = self.disk.operate(None, "truncate", &self.path)?;
            let inode = &mut state.inodes[self.inode];
            if let Some((from, to)) = inode.writing.iter().find(|(_, to)| *to > size) {
                panic!(
                    "{}: truncating to {size} while a write of [{from}, {to}) is in flight: it \
                     would land past the new end",
                    self.path.display()
                );
            }
            inode.data.resize(size as usize, 0);
            inode.written_end = inode.written_end.min(size);
            inode.pending.push(Pending::SetLength(size));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        futures_lite::future::block_on(future)
    }

    #[test]
    fn synced_bytes_survive_every_crash_and_unsynced_ones_may_not() {
        block_on(async {
            let disk = SimDisk::new(1);
            let directory = Path::new("/d");
            disk.create_dir_all(directory).await.unwrap();
            disk.sync_directory(Path::new("/")).await.unwrap();
            let file = disk.open(Path::new("/d/f"), true).await.unwrap();
            disk.sync_directory(directory).await.unwrap();
            file.write_blocks(0, &[&[1u8; 4096]]).await.unwrap();
            file.fdatasync().await.unwrap();
            file.write_blocks(4096, &[&[2u8; 8192]]).await.unwrap();
            let mut kept_second = 0;
            for seed in 0..64 {
                let image = disk.crash_image(seed);
                let bytes = image.file_bytes(Path::new("/d/f")).unwrap();
                assert_eq!(&bytes[..4096], &[1u8; 4096][..], "seed {seed}");
                if bytes.len() > 4096 && bytes[4096] == 2 {
                    kept_second += 1;
                }
            }
            assert!(
                kept_second > 0 && kept_second < 64,
                "{kept_second} of 64 kept the block"
            );
        });
    }

    #[test]
    fn unsynced_directory_entries_may_vanish_and_power_loss_fails_everything() {
        block_on(async {
            let disk = SimDisk::new(2);
            disk.create_dir_all(Path::new("/d")).await.unwrap();
            disk.open(Path::new("/d/new"), true).await.unwrap();
            let survived = (0..64)
                .filter(|seed| {
                    disk.crash_image(*seed)
                        .file_bytes(Path::new("/d/new"))
                        .is_some()
                })
                .count();
            assert!(survived < 64, "an unsynced entry survived every crash");
            disk.cut_power_now();
            assert!(disk.open(Path::new("/d/other"), true).await.is_err());
            assert!(disk.list(Path::new("/d")).await.is_err());
        });
    }

    #[test]
    fn faults_hit_the_chosen_operation_and_capacity_gives_enospc() {
        block_on(async {
            let disk = SimDisk::new(3);
            disk.create_dir_all(Path::new("/d")).await.unwrap();
            let file = disk.open(Path::new("/d/f"), true).await.unwrap();
            disk.fail_nth(FaultOp::Sync, 1, SIM_EIO);
            file.fdatasync().await.unwrap();
            let failed = file.fdatasync().await.unwrap_err();
            assert_eq!(failed.source.raw_os_error(), Some(SIM_EIO));
            file.fdatasync().await.unwrap();
            disk.set_capacity(Some(8192));
            file.allocate(8192).await.unwrap();
            let full = file.allocate(16384).await.unwrap_err();
            assert!(full.is_no_space());
            file.truncate(8192).await.unwrap();
            assert_eq!(disk.used_bytes(), 8192);
        });
    }
}
