//! The append path: a produced batch is validated (every record walked, as Kafka's
//! `LogValidator` does), checked against its producer's sequence, given its offsets in the one
//! copy that becomes the stored bytes, and kept in memory until the flusher has written it.
//!
//! Appends are refused, with a retriable error and nothing changed, while the disk is full or
//! the flusher is retrying a write that hit ENOSPC; disk space for a batch is reserved (the
//! segment preallocated past it) before it gets an offset, so the flusher never has to allocate.

use bytes::{Bytes, BytesMut};
use tracing::{info, warn};

use super::{now_ms, AppendInfo, LogError, PartitionLog, WritePoint};
use crate::io::{align_up, write_small_file};
use crate::limits::{APPEND_PIECE_BYTES, BLOCK_BYTES, PREALLOCATE_STEP_BYTES, UNFLUSHED_MAX_BYTES};
use crate::producer_state::SequenceCheck;
use crate::record_batch::{
    assign_offset, check_stored_integrity, compute_crc, set_max_timestamp, stamp_log_append_time,
    validate_produced_with_crc, BatchError, BatchHeader, BatchWalk, ATTRIBUTES_AT,
};
use crate::segment::{index_file_name, segment_file_name, Segment};

impl PartitionLog {
    /// Validates and appends one produced batch, assigning its offsets. Returns once it is in the
    /// log's memory; call `wait_acknowledgeable` before acknowledging.
    pub async fn append(&self, batch: &[u8]) -> Result<AppendInfo, LogError> {
        let now = now_ms();
        let rules = self.config.borrow().produce_rules;
        let crc = checksum_in_pieces(batch, rules.max_message_bytes).await;
        let validated = validate_produced_with_crc(batch, &rules, now, crc)?;
        self.check_writable()?;
        let memory = self.context.memory.acquire(batch.len()).await;
        let total_bytes = batch.len() as u64;

        let _append = self.append_lock.lock().await;
        self.make_room(total_bytes, now).await?;
        // Never older than the log's newest epoch: epochs only grow along a log.
        let epoch = self
            .leader_epoch
            .get()
            .max(self.latest_epoch().unwrap_or(0));
        self.note_epoch(epoch).await?;
        // The one copy on the produce path: the stored batch differs from the produced one in
        // its offset (and, for LogAppendTime or a header that understated its newest record,
        // its max timestamp and CRC). Made before the state is borrowed, since it may yield.
        let mut stored = copy_in_pieces(batch).await;
        // The log may have gone offline or stalled while the copy yielded, or stopped leading
        // at any of the waits above.
        self.check_writable()?;
        if !self.leading.get() {
            return Err(LogError::NotLeader);
        }

        let mut state = self.state.borrow_mut();
        let produced = validated.header;
        let expiration_ms = self.config.borrow().producer_id_expiration_ms;
        if let SequenceCheck::Duplicate(original) =
            state.producers.check(&produced, now, expiration_ms)?
        {
            return Ok(AppendInfo {
                base_offset: crate::Offset(original.base_offset),
                last_offset: crate::Offset(original.last_offset),
                log_append_time_ms: if rules.log_append_time {
                    original.max_timestamp
                } else {
                    -1
                },
                log_start_offset: state.log_start_offset,
                duplicate: true,
            });
        }
        let base_offset = state.log_end_offset;
        assign_offset(&mut stored, base_offset, epoch);
        let log_append_time_ms = if rules.log_append_time {
            stamp_log_append_time(&mut stored, now);
            now
        } else {
            if validated.max_timestamp != produced.max_timestamp {
                set_max_timestamp(&mut stored, validated.max_timestamp);
            }
            -1
        };
        let stored = stored.freeze();
        let Some(header) = BatchHeader::parse(&stored) else {
            unreachable!("validated batches have a header")
        };
        state.push_batch(&header, stored, memory, now);
        let info = AppendInfo {
            base_offset,
            last_offset: header.last_offset(),
            log_append_time_ms,
            log_start_offset: state.log_start_offset,
            duplicate: false,
        };
        state.check_invariants();
        drop(state);
        self.appended.notify(usize::MAX);
        Ok(info)
    }

    /// Appends batches a leader sent to this follower, as they are: their offsets, leader epochs
    /// and producer fields are the leader's (Kafka's follower append, which assigns nothing).
    /// Each batch is checked as recovery checks a stored one (length, magic, CRC, counts).
    /// Batches the log already holds (a fetch answered twice) are skipped; one that overlaps
    /// the log's end is refused; a gap before one (the leader's cleaner dropped whole
    /// batches) is filled with an empty batch, so offsets stay the leader's. A
    /// partial batch at the end (a response cut short at its size limit) is left for the next
    /// fetch. Returns the bytes appended; acknowledge positions only once they are durable
    /// (`wait_acknowledgeable`).
    pub async fn append_replicated(&self, batches: &[u8]) -> Result<usize, LogError> {
        let mut appended = 0;
        for (_, range) in BatchWalk::new(batches) {
            let batch = &batches[range];
            let header = check_stored_integrity(batch)?;
            let end = self.log_end_offset();
            if header.next_offset() <= end {
                continue;
            }
            if header.base_offset < end {
                return Err(LogError::Batch(BatchError::Corrupt {
                    reason: format!(
                        "the leader sent a batch at offset {} inside a log that ends at {end}",
                        header.base_offset
                    ),
                }));
            }
            if header.base_offset > end {
                // The leader's cleaner dropped whole batches here: an empty batch keeps this
                // log dense, in the epoch of what comes before it.
                let epoch = self.latest_epoch().unwrap_or(header.partition_leader_epoch);
                let filler = crate::record_batch::compact::filler_batch(
                    end,
                    header.base_offset,
                    epoch.min(header.partition_leader_epoch),
                )
                .ok_or_else(|| {
                    LogError::Batch(BatchError::Corrupt {
                        reason: format!(
                            "the leader sent a batch at offset {} for a log that ends at {end}",
                            header.base_offset
                        ),
                    })
                })?;
                let Some(filler_header) = BatchHeader::parse(&filler) else {
                    unreachable!("a filler batch has a header")
                };
                self.append_stored(Bytes::from(filler), filler_header)
                    .await?;
            }
            // One copy, as on the produce path: the cache keeps this batch, not the response.
            self.append_stored(Bytes::copy_from_slice(batch), header)
                .await?;
            appended += batch.len();
        }
        Ok(appended)
    }

    /// Appends one whole, checked batch that already has its offsets, at the log's end.
    async fn append_stored(&self, stored: Bytes, header: BatchHeader) -> Result<(), LogError> {
        let now = now_ms();
        self.check_writable()?;
        let memory = self.context.memory.acquire(stored.len()).await;
        let total_bytes = stored.len() as u64;
        let _append = self.append_lock.lock().await;
        self.make_room(total_bytes, now).await?;
        self.note_epoch(header.partition_leader_epoch).await?;
        self.check_writable()?;
        let mut state = self.state.borrow_mut();
        if header.base_offset != state.log_end_offset {
            return Err(LogError::Batch(BatchError::Corrupt {
                reason: format!(
                    "a batch at offset {} for a log that ends at {}",
                    header.base_offset, state.log_end_offset
                ),
            }));
        }
        state.push_batch(&header, stored, memory, now);
        state.check_invariants();
        drop(state);
        self.appended.notify(usize::MAX);
        Ok(())
    }

    /// With the append lock held, before a batch of `incoming` bytes gets its offsets: the log
    /// takes writes, has room for it in memory, has rolled if it is due, and has disk space
    /// reserved for it.
    async fn make_room(&self, incoming: u64, now: i64) -> Result<(), LogError> {
        self.check_writable()?;
        self.wait_for_room(incoming as usize).await?;
        if self.should_roll(incoming, now) {
            self.roll().await?;
        }
        self.reserve(incoming).await
    }

    /// Waits, with the append lock held so that appends keep their order, until the log holds
    /// few enough unflushed bytes to take `incoming` more (`UNFLUSHED_MAX_BYTES`). A batch larger
    /// than the bound on its own goes in once everything before it is flushed.
    async fn wait_for_room(&self, incoming: usize) -> Result<(), LogError> {
        loop {
            self.check_writable()?;
            let unflushed = self.state.borrow().unflushed_bytes();
            if unflushed == 0 || unflushed + incoming as u64 <= UNFLUSHED_MAX_BYTES as u64 {
                self.sync_wanted.set(false);
                return Ok(());
            }
            let listener = self.durable_moved.listen();
            self.check_writable()?;
            if self.state.borrow().unflushed_bytes() < unflushed {
                continue;
            }
            // The flusher is due: relaxed mode's triggers must not hold a full log back.
            self.sync_wanted.set(true);
            self.appended.notify(usize::MAX);
            self.written.notify(usize::MAX);
            listener.await;
        }
    }

    fn should_roll(&self, incoming_bytes: u64, now: i64) -> bool {
        let config = self.config.borrow();
        let state = self.state.borrow();
        let active = state.active();
        if active.size == 0 {
            return false;
        }
        let full = active.size + incoming_bytes > config.segment_bytes;
        let old = active
            .first_append_ms
            .is_some_and(|first| now - first >= config.segment_ms);
        // Relative offsets must fit the index's 32 bits, as in Kafka.
        let offsets_exhausted = state.log_end_offset.0 - active.base_offset.0 > i32::MAX as i64 / 2;
        full || old || offsets_exhausted
    }

    /// Makes sure the active segment has blocks allocated for `incoming` more bytes, allocating
    /// a step ahead. A full disk gives back whatever a failed allocation got and refuses the
    /// append: nothing was assigned yet, so nothing is lost or half-done.
    async fn reserve(&self, incoming: u64) -> Result<(), LogError> {
        let (file, allocated, needed, segment_bytes) = {
            let state = self.state.borrow();
            let active = state.active();
            (
                state.active_file.clone(),
                active.allocated,
                align_up(active.size + incoming),
                self.config.borrow().segment_bytes,
            )
        };
        // The preparer works inside allocated blocks: keep its window allocated too.
        let window = self.prepare_window_max();
        if needed + window <= allocated {
            return Ok(());
        }
        let step = PREALLOCATE_STEP_BYTES
            .min(align_up(segment_bytes))
            .max(BLOCK_BYTES);
        let ahead = align_up((needed + window).max(allocated + step));
        for size in [ahead, needed] {
            if size <= allocated {
                // Only the window ahead could not be had: the batch itself fits.
                return Ok(());
            }
            match file.allocate(size).await {
                Ok(()) => {
                    self.state.borrow_mut().active_mut().allocated = size;
                    return Ok(());
                }
                Err(error) if error.is_no_space() => {
                    // Give back what the failed allocation may have kept, or it fills the disk.
                    if let Err(error) = file.truncate(allocated).await {
                        warn!(directory = %self.directory.display(), %error, "cannot give back a failed allocation");
                    }
                    self.context.space.note_exhausted();
                }
                Err(error) => return Err(self.write_failed(error)),
            }
        }
        Err(LogError::NoSpace {
            path: self.directory.clone(),
            reason: "no space left on the device for the next batch; writes resume when space is \
                     freed"
                .into(),
        })
    }

    /// Seals the active segment (flushed, trimmed to its logical size, its index and a producer
    /// snapshot written) and starts a new one at the log end offset. A failure before the new
    /// segment is in place leaves the log on the old one, whole: ENOSPC refuses the append,
    /// anything else takes the log offline.
    async fn roll(&self) -> Result<(), LogError> {
        let Some(_inside) = self.gate.enter() else {
            return Err(LogError::Offline {
                path: self.directory.clone(),
                reason: "the partition is being deleted".into(),
            });
        };
        self.flush().await?;
        // No zero write may land behind the sealed segment's end once it is trimmed.
        let _prepare = self.prepare_lock.lock().await;
        let (sealed_file, sealed_size, sealed_base, index, new_base) = {
            let state = self.state.borrow();
            let active = state.active();
            (
                state.active_file.clone(),
                active.size,
                active.base_offset,
                active.encode_index(),
                state.log_end_offset,
            )
        };
        let sealed: Result<(), crate::io::IoError> = async {
            sealed_file.truncate(sealed_size).await?;
            sealed_file.fdatasync().await
        }
        .await;
        sealed.map_err(|error| self.write_failed(error))?;
        self.state.borrow_mut().active_mut().allocated = sealed_size;
        let disk = &*self.context.disk;
        let index_path = self.directory.join(index_file_name(sealed_base));
        write_small_file(disk, &self.directory, &index_path, &index)
            .await
            .map_err(|error| self.write_failed(error))?;
        self.write_producer_snapshot(new_base).await?;
        let path = self.directory.join(segment_file_name(new_base));
        let created: Result<_, crate::io::IoError> = async {
            let file = disk.open(&path, true).await?;
            disk.sync_directory(&self.directory).await?;
            Ok(file)
        }
        .await;
        let file = match created {
            Ok(file) => file,
            Err(error) => {
                // The log stays on the old segment: the new file, if it exists, must not outlive
                // this attempt (recovery also drops such empty leftovers).
                if let Err(error) = disk.remove_file(&path).await {
                    if !error.is_not_found() {
                        warn!(path = %path.display(), %error, "cannot remove the segment of a failed roll");
                    }
                }
                return Err(self.write_failed(error));
            }
        };
        let mut state = self.state.borrow_mut();
        let sealed_path = state.active().path().to_path_buf();
        let sealed_handle = std::mem::replace(&mut state.active_file, file);
        self.context.files.insert(&sealed_path, sealed_handle);
        state
            .segments
            .insert(new_base, Segment::new(new_base, path, 0));
        let progress = state.appended;
        state.written = WritePoint::start_of_segment(new_base, progress);
        state.written_high = new_base;
        state.durable = WritePoint::start_of_segment(new_base, progress);
        state.prepared = 0;
        state.check_invariants();
        drop(state);
        self.checkpoint_wanted.notify(usize::MAX);
        info!(directory = %self.directory.display(), base_offset = new_base.0, "segment rolled");
        Ok(())
    }
}

/// The CRC-32C of a batch larger than one piece, computed a piece at a time with a chance to
/// yield between pieces. `None` for a batch of one piece (validation computes it in one go)
/// and for one that validation refuses before its CRC (too large, a header that does not
/// parse, a length that does not match, an old magic): a batch is not checksummed in full
/// just to be refused for its first bytes.
async fn checksum_in_pieces(batch: &[u8], max_message_bytes: usize) -> Option<u32> {
    if batch.len() <= APPEND_PIECE_BYTES || batch.len() > max_message_bytes {
        return None;
    }
    let header = BatchHeader::parse(batch)?;
    if header.total_bytes() != Some(batch.len()) || header.magic != 2 {
        return None;
    }
    let covered = batch.get(ATTRIBUTES_AT..)?;
    let mut crc = 0;
    for piece in covered.chunks(APPEND_PIECE_BYTES) {
        crc = crc32c::crc32c_append(crc, piece);
        crate::dma::yield_if_needed().await;
    }
    debug_assert_eq!(crc, compute_crc(batch));
    Some(crc)
}

/// A copy of `batch`, made a piece at a time with a chance to yield between pieces.
async fn copy_in_pieces(batch: &[u8]) -> BytesMut {
    if batch.len() <= APPEND_PIECE_BYTES {
        return BytesMut::from(batch);
    }
    let mut copy = BytesMut::with_capacity(batch.len());
    for piece in batch.chunks(APPEND_PIECE_BYTES) {
        copy.extend_from_slice(piece);
        crate::dma::yield_if_needed().await;
    }
    copy
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pieces_add_up_to_the_whole_batch_and_its_crc() {
        let executor = glommio::LocalExecutorBuilder::default().make().unwrap();
        executor.run(async {
            for records in [1, 40, 65, 300] {
                let batch = crate::record_batch::build_uncompressed_batch(records, 1000, 0);
                let crc = checksum_in_pieces(&batch, usize::MAX).await;
                if batch.len() <= APPEND_PIECE_BYTES {
                    assert_eq!(crc, None, "{} bytes are one piece", batch.len());
                } else {
                    assert_eq!(crc, Some(compute_crc(&batch)), "{} bytes", batch.len());
                }
                assert_eq!(&copy_in_pieces(&batch).await[..], &batch[..]);
            }
            assert_eq!(
                checksum_in_pieces(&[0; 10], usize::MAX).await,
                None,
                "shorter than a header"
            );
            let large = crate::record_batch::build_uncompressed_batch(300, 1000, 0);
            assert_eq!(
                checksum_in_pieces(&large, large.len() - 1).await,
                None,
                "too large: refused before its CRC"
            );
            let mut lying = large.clone();
            lying[8..12].copy_from_slice(&1_000_000i32.to_be_bytes());
            assert_eq!(
                checksum_in_pieces(&lying, usize::MAX).await,
                None,
                "a batchLength that does not match"
            );
        });
    }
}
