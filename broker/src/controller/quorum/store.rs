//! The metadata log on disk and in memory.
//!
//! raft-rs reads the log through its `Storage` trait, from memory. This module keeps that
//! memory and the two files behind it, in `__cluster_metadata/`:
//! - `quorum.snapshot`: the state machine (the cluster metadata, as JSON) at a log index, with
//!   that index's term and the voters;
//! - `quorum.log`: an append-only file of the entries after the snapshot and of hard-state
//!   updates (term, vote, commit).
//!
//! Both formats are ours, length-prefixed and checked with CRC32C. Raft's protobuf messages
//! are never written here, and never parsed from disk or from a peer: see CLUSTER.md on
//! protobuf 2.
//!
//! **What a torn write leaves.** Each append is one record (the entries and hard state of one
//! Raft `Ready`), written and then `fdatasync`'d before the next, and nobody is answered before
//! the sync. So a crash can leave a torn record only at the end of the file: cut short, failing
//! its checksum as the last record, or zeros where the file grew. The next open cuts it off. A
//! bad record with anything after it is damage, not a torn write. The open then refuses,
//! because guessing could drop a committed change (a topic), and the orphan sweep would then
//! delete that topic's data.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

pub const SNAPSHOT_FILE: &str = "quorum.snapshot";
pub const LOG_FILE: &str = "quorum.log";

const SNAPSHOT_MAGIC: &[u8; 4] = b"KQSN";
const LOG_MAGIC: &[u8; 4] = b"KQLG";
const FORMAT_VERSION: u16 = 1;

const RECORD_ENTRY: u8 = 1;
const RECORD_HARD_STATE: u8 = 2;

/// A record longer than this is damage: the largest entry is one metadata change, which the
/// controller bounds far below it (a CreateTopics of thousands of partitions is a few MB).
pub const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The files are read whole at start. Snapshots keep the log small
/// (`metadata.log.max.record.bytes.between.snapshots`); a file above this is not ours.
const FILE_BYTES_MAX: u64 = 1 << 30;

/// Voters and learners in a snapshot's configuration, at most.
const MEMBERS_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata log {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error(
        "metadata log {path} is damaged at byte {offset}: {reason}; refusing to start rather \
         than lose committed metadata (restore the directory from a replica or a backup)"
    )]
    Damaged {
        path: PathBuf,
        offset: usize,
        reason: String,
    },
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

/// Whether an I/O error means the disk is full.
pub fn is_no_space(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(28) | Some(122))
        || error.kind() == std::io::ErrorKind::StorageFull
}

/// What raft-rs reads: the snapshot, the entries after it, the hard state.
#[derive(Debug, Default)]
struct Memory {
    hard_state: HardState,
    snapshot: Snapshot,
    /// Entries `snapshot.index + 1 ..`, contiguous.
    entries: Vec<Entry>,
}

impl Memory {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |entry| entry.index)
    }

    /// Appends `entries`, first dropping any at or after the first one's index (Raft's
    /// overwrite of an uncommitted suffix). `false` if they would leave a gap.
    fn append(&mut self, entries: &[Entry]) -> bool {
        let Some(first) = entries.first() else {
            return true;
        };
        if first.index <= self.snapshot_index() || first.index > self.last_index() + 1 {
            return false;
        }
        let keep = (first.index - self.snapshot_index() - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        true
    }
}

/// A log read from disk, before it is handed to raft-rs (it crosses back from the blocking
/// pool; `QuorumStore` stays on its shard).
#[derive(Debug)]
pub struct LoadedLog(Memory);

impl From<LoadedLog> for QuorumStore {
    fn from(loaded: LoadedLog) -> QuorumStore {
        QuorumStore {
            memory: Rc::new(RefCell::new(loaded.0)),
        }
    }
}

/// The in-memory log raft-rs reads. Cheap to clone: the node and the driver share one.
#[derive(Clone, Debug, Default)]
pub struct QuorumStore {
    memory: Rc<RefCell<Memory>>,
}

impl QuorumStore {
    pub fn hard_state(&self) -> HardState {
        self.memory.borrow().hard_state.clone()
    }

    pub fn snapshot_metadata(&self) -> (u64, u64) {
        let memory = self.memory.borrow();
        let metadata = memory.snapshot.get_metadata();
        (metadata.index, metadata.term)
    }

    pub fn snapshot_data(&self) -> Bytes {
        self.memory.borrow().snapshot.data.clone()
    }

    pub fn conf_state(&self) -> ConfState {
        self.memory
            .borrow()
            .snapshot
            .get_metadata()
            .get_conf_state()
            .clone()
    }

    /// The committed entries after the snapshot, up to the hard state's commit index: what a
    /// restart replays onto the snapshot.
    pub fn committed_entries(&self) -> Vec<Entry> {
        let memory = self.memory.borrow();
        let commit = memory.hard_state.commit;
        memory
            .entries
            .iter()
            .take_while(|entry| entry.index <= commit)
            .cloned()
            .collect()
    }

    pub fn last_index(&self) -> u64 {
        self.memory.borrow().last_index()
    }

    /// Takes what a `Ready` asks to persist into memory and returns the bytes that make it
    /// durable, for `DurableLog::append`. Errors only on a gap, which raft-rs never asks for.
    ///
    /// The bytes are one record per `RECORD_CHUNK_BYTES` of entries (the hard state in the
    /// last), each to be written and synced before the next, so a crash tears only the last.
    pub fn stage(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<Vec<Vec<u8>>, String> {
        let records = encode_chunked(entries, hard_state)?;
        let mut memory = self.memory.borrow_mut();
        if !memory.append(entries) {
            return Err(format!(
                "entries from index {} would leave a gap after {}",
                entries.first().map_or(0, |entry| entry.index),
                memory.last_index()
            ));
        }
        if let Some(hard_state) = hard_state {
            memory.hard_state = hard_state.clone();
        }
        Ok(records)
    }

    /// Takes a new commit index (a light ready's) into memory only: it reaches the file with
    /// the next hard state, and a restart that lost it commits the same entries again (Raft
    /// never needs the commit index to be durable).
    pub fn note_commit(&self, commit: u64) {
        let mut memory = self.memory.borrow_mut();
        memory.hard_state.commit = memory.hard_state.commit.max(commit);
    }

    /// Replaces the snapshot with the state machine at `index` and drops the entries it
    /// covers. Returns the bytes of the new snapshot file and of the new log (the entries
    /// after `index` and the hard state), for `DurableLog::replace`.
    pub fn compact(&self, index: u64, data: Bytes) -> Result<(Vec<u8>, Vec<u8>), String> {
        let mut memory = self.memory.borrow_mut();
        if index <= memory.snapshot_index() || index > memory.hard_state.commit {
            return Err(format!(
                "a snapshot at {index} is outside the committed log ({}..={})",
                memory.snapshot_index() + 1,
                memory.hard_state.commit
            ));
        }
        let position = (index - memory.snapshot_index() - 1) as usize;
        let term = memory.entries[position].term;
        let conf_state = memory.snapshot.get_metadata().get_conf_state().clone();
        memory.entries.drain(..=position);
        let mut snapshot = Snapshot {
            data,
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.set_conf_state(conf_state);
        memory.snapshot = snapshot;
        Ok((encode_snapshot(&memory.snapshot), encode_log(&memory)?))
    }
}

impl QuorumStore {
    /// Replaces the log with the leader's snapshot (a follower too far behind). Returns the
    /// bytes of the new snapshot file and of the new log, for `DurableLog::replace`.
    ///
    /// The new log's hard state is the Ready's own (`hard_state`, raft-rs's term and vote as
    /// of the message that brought the snapshot), never one made up here: a term paired with
    /// an older vote could let this node vote twice in one term.
    pub fn install(
        &self,
        snapshot: Snapshot,
        hard_state: Option<&HardState>,
    ) -> Result<(Vec<u8>, Vec<u8>), String> {
        let mut memory = self.memory.borrow_mut();
        let metadata = snapshot.get_metadata();
        if metadata.index <= memory.hard_state.commit {
            return Err(format!(
                "a snapshot at {} is behind the commit index {}",
                metadata.index, memory.hard_state.commit
            ));
        }
        if let Some(hard_state) = hard_state {
            memory.hard_state = hard_state.clone();
        }
        memory.hard_state.commit = memory.hard_state.commit.max(metadata.index);
        memory.entries.clear();
        memory.snapshot = snapshot;
        Ok((encode_snapshot(&memory.snapshot), encode_log(&memory)?))
    }
}

impl Storage for QuorumStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let memory = self.memory.borrow();
        Ok(RaftState::new(
            memory.hard_state.clone(),
            memory.snapshot.get_metadata().get_conf_state().clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let memory = self.memory.borrow();
        let first = memory.snapshot_index() + 1;
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > memory.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut entries = memory.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let memory = self.memory.borrow();
        let metadata = memory.snapshot.get_metadata();
        if index == metadata.index {
            return Ok(metadata.term);
        }
        if index < metadata.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match memory.entries.get((index - metadata.index - 1) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.memory.borrow().snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.memory.borrow().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let memory = self.memory.borrow();
        if memory.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(memory.snapshot.clone())
    }
}

/// The open log file, for the blocking pool: appends are written, then synced; a failed write
/// is cut back off so the file never holds a torn record before a good one.
#[derive(Debug)]
pub struct DurableLog {
    directory: PathBuf,
    file: File,
    /// Bytes of the file that hold whole records.
    length: u64,
    /// Record bytes appended since the snapshot.
    pub bytes_since_snapshot: u64,
}

impl DurableLog {
    fn log_path(&self) -> PathBuf {
        self.directory.join(LOG_FILE)
    }

    /// Appends one record (from `QuorumStore::stage`), then `fdatasync`s. On failure the file
    /// is cut back to its last whole record.
    pub fn append(&mut self, records: &[u8]) -> std::io::Result<()> {
        let written = self
            .file
            .write_all(records)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.length += records.len() as u64;
                self.bytes_since_snapshot += records.len() as u64;
                Ok(())
            }
            Err(error) => {
                // If even this fails, the torn tail is cut off by the next open (it is the
                // last record) and no later append is made: the controller stops on the error.
                let _ = self.file.set_len(self.length);
                Err(error)
            }
        }
    }

    /// Installs a new snapshot, then a new log holding what follows it. The order keeps every
    /// crash point readable: the old snapshot with the old log, or the new snapshot with
    /// either log (entries the new snapshot covers are skipped when read).
    pub fn replace(&mut self, snapshot: &[u8], log: &[u8]) -> std::io::Result<()> {
        write_atomically(&self.directory, SNAPSHOT_FILE, snapshot)?;
        write_atomically(&self.directory, LOG_FILE, log)?;
        let file = File::options().append(true).open(self.log_path())?;
        file.sync_data()?;
        self.length = file.metadata()?.len();
        self.file = file;
        self.bytes_since_snapshot = 0;
        Ok(())
    }
}

/// Writes `name` in `directory` whole or not at all: a temporary file, synced, renamed over
/// it, and the directory synced.
fn write_atomically(directory: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = directory.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, directory.join(name))?;
    File::open(directory)?.sync_all()
}

/// Opens the metadata log in `directory`, or creates it with a snapshot at index 0 holding
/// `initial()`'s voters and state. Blocking: call it on the blocking pool.
///
/// Returns whether it was created, the store raft-rs reads and the file appends go to.
pub fn open(
    directory: &Path,
    initial: impl FnOnce() -> (Vec<u64>, Bytes),
) -> Result<(bool, LoadedLog, DurableLog), StoreError> {
    std::fs::create_dir_all(directory).map_err(io_error(directory))?;
    let snapshot_path = directory.join(SNAPSHOT_FILE);
    let log_path = directory.join(LOG_FILE);
    let created = !snapshot_path.exists();
    if created {
        let (voters, data) = initial();
        let mut snapshot = Snapshot {
            data,
            ..Snapshot::default()
        };
        snapshot
            .mut_metadata()
            .mut_conf_state()
            .voters
            .clone_from(&voters);
        let memory = Memory {
            snapshot,
            ..Memory::default()
        };
        // The log first: a snapshot without its log is read as a fresh start's.
        write_atomically(
            directory,
            LOG_FILE,
            &encode_log(&memory).map_err(|reason| StoreError::Io {
                path: log_path.clone(),
                reason,
            })?,
        )
        .map_err(io_error(&log_path))?;
        write_atomically(directory, SNAPSHOT_FILE, &encode_snapshot(&memory.snapshot))
            .map_err(io_error(&snapshot_path))?;
    }
    let snapshot_bytes = read_bounded(&snapshot_path)?;
    let snapshot =
        decode_snapshot(&snapshot_bytes).map_err(|(offset, reason)| StoreError::Damaged {
            path: snapshot_path.clone(),
            offset,
            reason,
        })?;
    let mut memory = Memory {
        snapshot,
        ..Memory::default()
    };
    let log_bytes = read_bounded(&log_path)?;
    let whole =
        read_log(&log_bytes, &mut memory).map_err(|(offset, reason)| StoreError::Damaged {
            path: log_path.clone(),
            offset,
            reason,
        })?;
    let file = File::options()
        .append(true)
        .open(&log_path)
        .map_err(io_error(&log_path))?;
    if whole < log_bytes.len() {
        // Kept aside, not destroyed: if this was not a torn write after all, the bytes are
        // there for whoever looks.
        let aside = directory.join(format!("{LOG_FILE}.torn"));
        std::fs::write(&aside, &log_bytes[whole..]).map_err(io_error(&aside))?;
        tracing::warn!(
            path = %log_path.display(),
            bytes = log_bytes.len() - whole,
            kept_in = %aside.display(),
            "cut a torn record off the end of the metadata log (a write a crash interrupted; \
             it was never acknowledged)"
        );
        file.set_len(whole as u64).map_err(io_error(&log_path))?;
        file.sync_data().map_err(io_error(&log_path))?;
    }
    // The commit index may run ahead of what this node holds after a restart that lost
    // nothing it acknowledged: Raft never commits past the last entry.
    memory.hard_state.commit = memory
        .hard_state
        .commit
        .clamp(memory.snapshot_index(), memory.last_index());
    let durable = DurableLog {
        directory: directory.to_path_buf(),
        file,
        length: whole as u64,
        bytes_since_snapshot: whole.saturating_sub(LOG_MAGIC.len() + 2) as u64,
    };
    Ok((created, LoadedLog(memory), durable))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, StoreError> {
    let file = File::open(path).map_err(io_error(path))?;
    let length = file.metadata().map_err(io_error(path))?.len();
    if length > FILE_BYTES_MAX {
        return Err(StoreError::Damaged {
            path: path.to_path_buf(),
            offset: 0,
            reason: format!("{length} bytes is more than a metadata log file holds"),
        });
    }
    let mut bytes = Vec::with_capacity(length as usize);
    file.take(FILE_BYTES_MAX)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    Ok(bytes)
}

/// `[length u32][crc32c u32][body]`, the CRC over the body.
fn encode_record(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    body(out);
    let length = (out.len() - start - 8) as u32;
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

/// An entry, tagged, as the log and Raft messages carry it.
pub(super) fn encode_entry(out: &mut Vec<u8>, entry: &Entry) {
    out.put_u8(RECORD_ENTRY);
    out.put_u64(entry.term);
    out.put_u64(entry.index);
    out.put_u8(entry.get_entry_type() as u8);
    put_bytes(out, &entry.data);
    put_bytes(out, &entry.context);
}

fn encode_hard_state(out: &mut Vec<u8>, hard_state: &HardState) {
    out.put_u8(RECORD_HARD_STATE);
    out.put_u64(hard_state.term);
    out.put_u64(hard_state.vote);
    out.put_u64(hard_state.commit);
}

fn header(out: &mut Vec<u8>, magic: &[u8; 4]) {
    out.put_slice(magic);
    out.put_u16(FORMAT_VERSION);
}

/// A record holds about this much at most: a Ready's entries take as many records as they
/// need, well below what a reader takes (`RECORD_BYTES_MAX`).
const RECORD_CHUNK_BYTES: usize = 16 * 1024 * 1024;

/// `entries` and `hard_state` as records of at most `RECORD_CHUNK_BYTES` (an entry larger
/// than a record holds is refused), the hard state in the last.
fn encode_chunked(
    entries: &[Entry],
    hard_state: Option<&HardState>,
) -> Result<Vec<Vec<u8>>, String> {
    let mut records = Vec::new();
    let mut body = Vec::new();
    for entry in entries {
        let mut encoded = Vec::new();
        encode_entry(&mut encoded, entry);
        if encoded.len() > RECORD_BYTES_MAX - 64 {
            return Err(format!(
                "metadata log entry {} of {} bytes is larger than a record holds",
                entry.index,
                encoded.len()
            ));
        }
        if !body.is_empty() && body.len() + encoded.len() > RECORD_CHUNK_BYTES {
            let mut record = Vec::new();
            encode_record(&mut record, |out| out.extend_from_slice(&body));
            records.push(record);
            body.clear();
        }
        body.extend_from_slice(&encoded);
    }
    if let Some(hard_state) = hard_state {
        encode_hard_state(&mut body, hard_state);
    }
    if !body.is_empty() {
        let mut record = Vec::new();
        encode_record(&mut record, |out| out.extend_from_slice(&body));
        records.push(record);
    }
    Ok(records)
}

/// A log file holding `memory`'s entries and hard state.
fn encode_log(memory: &Memory) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    header(&mut out, LOG_MAGIC);
    for record in encode_chunked(&memory.entries, Some(&memory.hard_state))? {
        out.extend_from_slice(&record);
    }
    Ok(out)
}

/// A snapshot's index, term, members and data, as its file and Raft messages carry it.
pub(super) fn encode_snapshot_body(body: &mut Vec<u8>, snapshot: &Snapshot) {
    let metadata = snapshot.get_metadata();
    let conf_state = metadata.get_conf_state();
    body.put_u64(metadata.index);
    body.put_u64(metadata.term);
    for members in [&conf_state.voters, &conf_state.learners] {
        body.put_u32(members.len() as u32);
        for member in members {
            body.put_u64(*member);
        }
    }
    put_bytes(body, &snapshot.data);
}

fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = Vec::new();
    header(&mut out, SNAPSHOT_MAGIC);
    encode_record(&mut out, |body| encode_snapshot_body(body, snapshot));
    out
}

/// A decoding failure: where, and why.
type Damage = (usize, String);

fn check_header(bytes: &[u8], magic: &[u8; 4]) -> Result<(), Damage> {
    if bytes.len() < 6 || &bytes[..4] != magic {
        return Err((0, "not a metadata log file (bad magic)".into()));
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err((
            4,
            format!("format version {version}, this broker reads {FORMAT_VERSION}"),
        ));
    }
    Ok(())
}

/// Why a record could not be read.
enum Cut {
    /// It runs past the end of the file: a torn append.
    Short,
    /// Its length is impossible or its body fails its checksum.
    Bad(String),
}

/// Where the record at `offset` claims to end, if its header is whole and its length
/// possible.
fn record_end(bytes: &[u8], offset: usize) -> Option<usize> {
    record_end_within(bytes, offset, RECORD_BYTES_MAX)
}

fn record_end_within(bytes: &[u8], offset: usize, max: usize) -> Option<usize> {
    let header = bytes.get(offset..offset + 8)?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    (length <= max).then_some(offset + 8 + length)
}

/// The next record at `offset`: `Ok(Some((body, next)))`, or `Ok(None)` at a clean end.
fn next_record(bytes: &[u8], offset: usize) -> Result<Option<(&[u8], usize)>, Cut> {
    next_record_within(bytes, offset, RECORD_BYTES_MAX)
}

/// `next_record` for a record of up to `max` bytes (a snapshot's, which may be larger than a
/// log record).
fn next_record_within(
    bytes: &[u8],
    offset: usize,
    max: usize,
) -> Result<Option<(&[u8], usize)>, Cut> {
    if offset == bytes.len() {
        return Ok(None);
    }
    if bytes.len() - offset < 8 {
        return Err(Cut::Short);
    }
    let end = record_end_within(bytes, offset, max)
        .ok_or_else(|| Cut::Bad("a record claims more bytes than a record holds".into()))?;
    if end > bytes.len() {
        return Err(Cut::Short);
    }
    let crc = u32::from_be_bytes([
        bytes[offset + 4],
        bytes[offset + 5],
        bytes[offset + 6],
        bytes[offset + 7],
    ]);
    let body = &bytes[offset + 8..end];
    if crc32c::crc32c(body) != crc {
        return Err(Cut::Bad("a record fails its checksum".into()));
    }
    Ok(Some((body, end)))
}

fn get_bytes(body: &mut &[u8]) -> Option<Bytes> {
    if body.remaining() < 4 {
        return None;
    }
    let length = body.get_u32() as usize;
    if body.remaining() < length {
        return None;
    }
    let bytes = Bytes::copy_from_slice(&body[..length]);
    body.advance(length);
    Some(bytes)
}

/// An entry written by `encode_entry`, its tag included.
pub(super) fn decode_entry(body: &mut &[u8]) -> Option<Entry> {
    if body.remaining() < 1 || body.get_u8() != RECORD_ENTRY {
        return None;
    }
    decode_entry_fields(body)
}

fn decode_entry_fields(body: &mut &[u8]) -> Option<Entry> {
    if body.remaining() < 17 {
        return None;
    }
    let mut entry = Entry {
        term: body.get_u64(),
        index: body.get_u64(),
        ..Entry::default()
    };
    entry.set_entry_type(match body.get_u8() {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return None,
    });
    entry.data = get_bytes(body)?;
    entry.context = get_bytes(body)?;
    Some(entry)
}

fn decode_hard_state(body: &mut &[u8]) -> Option<HardState> {
    if body.remaining() < 24 {
        return None;
    }
    Some(HardState {
        term: body.get_u64(),
        vote: body.get_u64(),
        commit: body.get_u64(),
        ..HardState::default()
    })
}

/// Reads a log file into `memory` (over its snapshot); returns how many bytes hold whole
/// records. A bad record is accepted only as a torn append: the file's last record, or zeros
/// to its end.
fn read_log(bytes: &[u8], memory: &mut Memory) -> Result<usize, Damage> {
    check_header(bytes, LOG_MAGIC)?;
    let mut offset = 6;
    let mut diverged = false;
    loop {
        // A record that is cut short, fails its checksum or is empty (a zero header, where the
        // file grew but its bytes never came) is a torn append only if no whole record follows
        // it anywhere: a damaged length in the middle of the file would otherwise cut off
        // everything after it.
        let torn_or_damaged = |reason: String| {
            if whole_record_after(bytes, offset) {
                Err((offset, reason))
            } else {
                Ok(offset)
            }
        };
        let (mut body, next) = match next_record(bytes, offset) {
            Ok(None) => return Ok(offset),
            Ok(Some(([], _))) => return torn_or_damaged("an empty record".into()),
            Ok(Some(record)) => record,
            Err(Cut::Short) => return torn_or_damaged("a record runs past the end".into()),
            Err(Cut::Bad(reason)) => return torn_or_damaged(reason),
        };
        while !body.is_empty() {
            let kind = body.get_u8();
            match kind {
                RECORD_ENTRY => {
                    let entry = decode_entry_fields(&mut body)
                        .ok_or((offset, "a malformed entry".to_string()))?;
                    // Entries the snapshot already covers (a crash between writing the
                    // snapshot and the log that follows it) are skipped. If the old log's
                    // entry at the snapshot's index has another term, its history parted
                    // from the snapshot's there (a follower that installed the leader's), and
                    // what followed it in that log is dropped too.
                    let snapshot = memory.snapshot.get_metadata();
                    if entry.index == snapshot.index && entry.term != snapshot.term {
                        diverged = true;
                    }
                    if entry.index <= snapshot.index || diverged {
                        continue;
                    }
                    if !memory.append(std::slice::from_ref(&entry)) {
                        return Err((
                            offset,
                            format!(
                                "entry {} does not follow entry {}",
                                entry.index,
                                memory.last_index()
                            ),
                        ));
                    }
                }
                RECORD_HARD_STATE => {
                    memory.hard_state = decode_hard_state(&mut body)
                        .ok_or((offset, "a malformed hard state".to_string()))?;
                }
                other => return Err((offset, format!("unknown item type {other}"))),
            }
        }
        offset = next;
    }
}

/// Whether a whole record (its length possible, its checksum right, its first item a known
/// kind) starts anywhere after `offset`.
fn whole_record_after(bytes: &[u8], offset: usize) -> bool {
    (offset + 1..bytes.len().saturating_sub(8)).any(|start| {
        let Some(end) = record_end(bytes, start) else {
            return false;
        };
        if end > bytes.len() || end == start + 8 {
            return false;
        }
        if !matches!(bytes[start + 8], RECORD_ENTRY | RECORD_HARD_STATE) {
            return false;
        }
        matches!(next_record(bytes, start), Ok(Some(_)))
    })
}

/// A snapshot written by `encode_snapshot_body`.
pub(super) fn decode_snapshot_body(body: &mut &[u8]) -> Option<Snapshot> {
    if body.remaining() < 16 {
        return None;
    }
    let index = body.get_u64();
    let term = body.get_u64();
    let mut members = [Vec::new(), Vec::new()];
    for list in &mut members {
        if body.remaining() < 4 {
            return None;
        }
        let count = body.get_u32() as usize;
        if count > MEMBERS_MAX || body.remaining() < count * 8 {
            return None;
        }
        *list = (0..count).map(|_| body.get_u64()).collect();
    }
    let mut snapshot = Snapshot {
        data: get_bytes(body)?,
        ..Snapshot::default()
    };
    let [voters, learners] = members;
    let metadata = snapshot.mut_metadata();
    metadata.index = index;
    metadata.term = term;
    metadata.mut_conf_state().voters = voters;
    metadata.mut_conf_state().learners = learners;
    Some(snapshot)
}

fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, Damage> {
    check_header(bytes, SNAPSHOT_MAGIC)?;
    let (mut body, end) = match next_record_within(bytes, 6, FILE_BYTES_MAX as usize) {
        Ok(Some(record)) => record,
        Ok(None) => return Err((6, "no snapshot record".into())),
        Err(Cut::Short) => return Err((6, "the snapshot record is cut short".into())),
        Err(Cut::Bad(reason)) => return Err((6, reason)),
    };
    if end != bytes.len() {
        return Err((end, "bytes after the snapshot record".into()));
    }
    let snapshot =
        decode_snapshot_body(&mut body).ok_or((6usize, "a malformed snapshot".to_string()))?;
    if !body.is_empty() {
        return Err((6, "a malformed snapshot".into()));
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64, data: &str) -> Entry {
        Entry {
            term,
            index,
            data: Bytes::copy_from_slice(data.as_bytes()),
            ..Entry::default()
        }
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..HardState::default()
        }
    }

    fn fresh(directory: &Path) -> (bool, QuorumStore, DurableLog) {
        let (created, loaded, durable) = open(directory, || {
            (vec![1], Bytes::from_static(b"{\"initial\":true}"))
        })
        .unwrap();
        (created, loaded.into(), durable)
    }

    #[test]
    fn a_fresh_log_is_a_snapshot_at_zero_with_its_voters() {
        let directory = tempfile::tempdir().unwrap();
        let (created, store, _) = fresh(directory.path());
        assert!(created);
        assert_eq!(store.snapshot_metadata(), (0, 0));
        assert_eq!(store.conf_state().voters, vec![1]);
        assert_eq!(&store.snapshot_data()[..], b"{\"initial\":true}");
        assert_eq!(store.last_index(), 0);
        let (created, again, _) = fresh(directory.path());
        assert!(!created, "the second open reads what the first made");
        assert_eq!(again.conf_state().voters, vec![1]);
    }

    #[test]
    fn entries_and_hard_state_survive_a_reopen_and_overwrites_truncate() {
        let directory = tempfile::tempdir().unwrap();
        let (_, store, mut durable) = fresh(directory.path());
        let records = store
            .stage(
                &[entry(1, 1, "a"), entry(1, 2, "b"), entry(1, 3, "c")],
                Some(&hard_state(1, 1, 0)),
            )
            .unwrap();
        for record in &records {
            durable.append(record).unwrap();
        }
        // A new leader overwrites the uncommitted suffix from index 2.
        let records = store
            .stage(&[entry(2, 2, "B")], Some(&hard_state(2, 1, 2)))
            .unwrap();
        for record in &records {
            durable.append(record).unwrap();
        }
        assert!(store.stage(&[entry(2, 9, "gap")], None).is_err());

        let (_, reopened, _) = fresh(directory.path());
        assert_eq!(reopened.last_index(), 2);
        assert_eq!(reopened.hard_state(), hard_state(2, 1, 2));
        let committed = reopened.committed_entries();
        assert_eq!(
            committed
                .iter()
                .map(|entry| (entry.term, entry.index, entry.data.to_vec()))
                .collect::<Vec<_>>(),
            vec![(1, 1, b"a".to_vec()), (2, 2, b"B".to_vec())]
        );
        assert_eq!(reopened.term(2).unwrap(), 2);
        assert!(reopened.term(3).is_err());
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_damage_before_good_records_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let (_, store, mut durable) = fresh(directory.path());
        let records = store
            .stage(&[entry(1, 1, "one")], Some(&hard_state(1, 1, 1)))
            .unwrap();
        for record in &records {
            durable.append(record).unwrap();
        }
        let good_length = std::fs::metadata(directory.path().join(LOG_FILE))
            .unwrap()
            .len();
        let records = store.stage(&[entry(1, 2, "two")], None).unwrap();
        for record in &records {
            durable.append(record).unwrap();
        }
        let path = directory.path().join(LOG_FILE);
        let full = std::fs::read(&path).unwrap();

        // Every cut inside the last record is a torn append: it is dropped, the rest kept.
        for cut in good_length as usize + 1..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let (_, reopened, _) = fresh(directory.path());
            assert_eq!(reopened.last_index(), 1, "cut at {cut}");
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                good_length,
                "the torn end is removed"
            );
        }

        // A flipped byte in the first record, with a good one after it, is damage.
        let mut damaged = full.clone();
        damaged[14] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        let refused = open(directory.path(), || unreachable!()).unwrap_err();
        assert!(matches!(refused, StoreError::Damaged { .. }), "{refused}");
        assert!(refused.to_string().contains("refusing to start"));
    }

    #[test]
    fn large_readies_take_several_records_and_an_oversized_entry_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let (_, store, mut durable) = fresh(directory.path());
        let big = "x".repeat(7 * 1024 * 1024);
        let entries: Vec<Entry> = (1..=3).map(|index| entry(1, index, &big)).collect();
        let records = store.stage(&entries, Some(&hard_state(1, 1, 3))).unwrap();
        assert_eq!(
            records.len(),
            2,
            "two entries fill a record, the third starts another"
        );
        assert!(records
            .iter()
            .all(|record| record.len() <= RECORD_BYTES_MAX));
        for record in &records {
            durable.append(record).unwrap();
        }
        let (_, reopened, _) = fresh(directory.path());
        assert_eq!(reopened.last_index(), 3);
        assert_eq!(reopened.hard_state(), hard_state(1, 1, 3));

        let huge = entry(1, 4, &"y".repeat(RECORD_BYTES_MAX));
        assert!(reopened
            .stage(&[huge], None)
            .unwrap_err()
            .contains("larger than a record holds"));
        assert_eq!(reopened.last_index(), 3, "nothing was taken into memory");
    }

    #[test]
    fn an_old_log_that_parted_from_an_installed_snapshot_is_not_read_past_it() {
        let directory = tempfile::tempdir().unwrap();
        let (_, store, mut durable) = fresh(directory.path());
        // This follower's own history: entries 1..=3 of term 1, none committed.
        let records = store
            .stage(
                &[entry(1, 1, "a"), entry(1, 2, "b"), entry(1, 3, "stale")],
                Some(&hard_state(1, 1, 0)),
            )
            .unwrap();
        for record in &records {
            durable.append(record).unwrap();
        }
        let old_log = std::fs::read(directory.path().join(LOG_FILE)).unwrap();
        // The leader's snapshot at index 2, whose entry 2 had term 2.
        let mut snapshot = Snapshot {
            data: Bytes::from_static(b"leader"),
            ..Snapshot::default()
        };
        snapshot.mut_metadata().index = 2;
        snapshot.mut_metadata().term = 2;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1];
        let (snapshot_bytes, _) = store.install(snapshot, Some(&hard_state(2, 0, 2))).unwrap();
        // A crash after the snapshot file, before the new log.
        write_atomically(directory.path(), SNAPSHOT_FILE, &snapshot_bytes).unwrap();
        std::fs::write(directory.path().join(LOG_FILE), &old_log).unwrap();
        let (_, reopened, _) = fresh(directory.path());
        assert_eq!(reopened.snapshot_metadata(), (2, 2));
        assert_eq!(reopened.last_index(), 2, "the stale entry 3 is not read");
    }

    #[test]
    fn a_damaged_length_in_the_middle_is_refused_not_taken_for_a_torn_end() {
        let directory = tempfile::tempdir().unwrap();
        let (_, store, mut durable) = fresh(directory.path());
        for index in 1..=3 {
            let record = store
                .stage(&[entry(1, index, "x")], Some(&hard_state(1, 1, index)))
                .unwrap();
            for record in &record {
                durable.append(record).unwrap();
            }
        }
        let path = directory.path().join(LOG_FILE);
        let good = std::fs::read(&path).unwrap();
        // The second record's length, pointed past the end of the file.
        let second = {
            let mut offset = 6;
            offset += 8 + u32::from_be_bytes(good[offset..offset + 4].try_into().unwrap()) as usize;
            offset += 8 + u32::from_be_bytes(good[offset..offset + 4].try_into().unwrap()) as usize;
            offset
        };
        let mut damaged = good.clone();
        damaged[second..second + 4].copy_from_slice(&(1u32 << 20).to_be_bytes());
        std::fs::write(&path, &damaged).unwrap();
        assert!(matches!(
            open(directory.path(), || unreachable!()),
            Err(StoreError::Damaged { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), damaged, "nothing was cut");

        // Zeros where the file grew, of any length, are a torn end; the cut bytes are kept.
        for zeros in [3, 8, 20] {
            let mut grown = good.clone();
            grown.extend(std::iter::repeat_n(0u8, zeros));
            std::fs::write(&path, &grown).unwrap();
            let (_, reopened, _) = fresh(directory.path());
            assert_eq!(reopened.last_index(), 3, "{zeros} zeros");
            assert_eq!(
                std::fs::read(directory.path().join(format!("{LOG_FILE}.torn")))
                    .unwrap()
                    .len(),
                zeros
            );
        }
    }

    #[test]
    fn a_compaction_keeps_what_follows_and_survives_every_crash_point() {
        let directory = tempfile::tempdir().unwrap();
        let (_, store, mut durable) = fresh(directory.path());
        let records = store
            .stage(
                &[entry(1, 1, "a"), entry(1, 2, "b"), entry(1, 3, "c")],
                Some(&hard_state(1, 1, 2)),
            )
            .unwrap();
        for record in &records {
            durable.append(record).unwrap();
        }
        assert!(
            store.compact(3, Bytes::new()).is_err(),
            "3 is not committed"
        );
        let old_log = std::fs::read(directory.path().join(LOG_FILE)).unwrap();
        let (snapshot, log) = store.compact(2, Bytes::from_static(b"at-2")).unwrap();

        // Crash after the snapshot, before the new log: the old log's covered entries are
        // skipped.
        write_atomically(directory.path(), SNAPSHOT_FILE, &snapshot).unwrap();
        std::fs::write(directory.path().join(LOG_FILE), &old_log).unwrap();
        let (_, mid, _) = fresh(directory.path());
        assert_eq!(mid.snapshot_metadata(), (2, 1));
        assert_eq!(mid.last_index(), 3);
        assert_eq!(&mid.snapshot_data()[..], b"at-2");

        durable.replace(&snapshot, &log).unwrap();
        let (_, after, _) = fresh(directory.path());
        assert_eq!(after.snapshot_metadata(), (2, 1));
        assert_eq!(after.last_index(), 3);
        assert_eq!(after.first_index().unwrap(), 3);
        assert!(matches!(
            after.entries(1, 3, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(
            after
                .entries(3, 4, None, GetEntriesContext::empty(false))
                .unwrap()[0]
                .data,
            Bytes::from_static(b"c")
        );
    }

    #[test]
    fn lying_lengths_and_foreign_files_are_refused_without_reading_them() {
        let directory = tempfile::tempdir().unwrap();
        fresh(directory.path());
        let path = directory.path().join(LOG_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        // A record that claims 4 GiB, followed by a good one.
        let mut lying = Vec::new();
        lying.extend_from_slice(&u32::MAX.to_be_bytes());
        lying.extend_from_slice(&[0; 4]);
        let mut good = Vec::new();
        encode_record(&mut good, |buffer| {
            encode_hard_state(buffer, &hard_state(1, 1, 0))
        });
        bytes.splice(6..6, lying.into_iter().chain(good.clone()));
        bytes.extend_from_slice(&good);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            open(directory.path(), || unreachable!()),
            Err(StoreError::Damaged { .. })
        ));
        std::fs::write(&path, b"not ours").unwrap();
        assert!(open(directory.path(), || unreachable!())
            .unwrap_err()
            .to_string()
            .contains("bad magic"));
    }
}
