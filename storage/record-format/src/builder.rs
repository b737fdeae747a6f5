//! Building v2 batches, one record at a time, in place: the one encoder of the workspace (the
//! group coordinator's offsets records, loadgen's produce requests, tests and benchmarks).
//!
//! Why by hand: `kafka-protocol`'s encoder takes owned `Record`s (each value its own allocation)
//! and copies every value again into the batch, which at a few hundred thousand records a second
//! was the top of loadgen's profile; a batch is a fixed header and a run of varint-framed records.

use crate::codec::compress;
use crate::header::{
    Compression, ATTRIBUTES_AT, BATCH_HEADER_BYTES, CRC_AT, LOG_OVERHEAD, NO_TIMESTAMP,
};
use crate::varint::{put_varint, varint_len};

/// Appends one v2 record (length, attributes, deltas, key, value, headers) to `out`.
/// `value_parts` are concatenated into the value (`None` for a null value).
pub(crate) fn put_record(
    out: &mut Vec<u8>,
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<&[u8]>,
    value_parts: Option<&[&[u8]]>,
    headers: &[RecordHeader<'_>],
) {
    let key_length = key.map_or(-1, |key| key.len() as i64);
    let value_length = value_parts.map_or(-1, |parts| {
        parts.iter().map(|part| part.len()).sum::<usize>() as i64
    });
    let headers_length: usize = headers
        .iter()
        .map(|(key, value)| {
            varint_len(key.len() as i64)
                + key.len()
                + varint_len(value.map_or(-1, |value| value.len() as i64))
                + value.map_or(0, <[u8]>::len)
        })
        .sum();
    let length = 1
        + varint_len(timestamp_delta)
        + varint_len(offset_delta)
        + varint_len(key_length)
        + key.map_or(0, <[u8]>::len)
        + varint_len(value_length)
        + value_length.max(0) as usize
        + varint_len(headers.len() as i64)
        + headers_length;
    out.reserve(length + 5);
    put_varint(out, length as i64);
    out.push(0); // attributes: unused in v2
    put_varint(out, timestamp_delta);
    put_varint(out, offset_delta);
    put_varint(out, key_length);
    if let Some(key) = key {
        out.extend_from_slice(key);
    }
    put_varint(out, value_length);
    for part in value_parts.unwrap_or_default() {
        out.extend_from_slice(part);
    }
    put_varint(out, headers.len() as i64);
    for (key, value) in headers {
        put_varint(out, key.len() as i64);
        out.extend_from_slice(key);
        put_varint(out, value.map_or(-1, |value| value.len() as i64));
        if let Some(value) = value {
            out.extend_from_slice(value);
        }
    }
}

/// Records of one batch, encoded as they are added.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    records: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder {
            records: Vec::new(),
            count: 0,
            base_timestamp: NO_TIMESTAMP,
            max_timestamp: NO_TIMESTAMP,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}

/// One record header: key and (nullable) value.
pub type RecordHeader<'a> = (&'a [u8], Option<&'a [u8]>);

impl BatchBuilder {
    /// A builder for an idempotent producer's batch starting at `base_sequence`.
    pub fn for_producer(producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        BatchBuilder {
            producer_id,
            producer_epoch,
            base_sequence,
            ..BatchBuilder::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Bytes the uncompressed batch will have.
    pub fn encoded_bytes(&self) -> usize {
        BATCH_HEADER_BYTES + self.records.len()
    }

    /// Appends a record. `value_parts` are concatenated into the value (`None` for a null
    /// value), so a caller with a stamp and a payload need not join them first.
    pub fn push_parts(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value_parts: Option<&[&[u8]]>,
        headers: &[RecordHeader<'_>],
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let timestamp_delta = timestamp - self.base_timestamp;
        put_record(
            &mut self.records,
            timestamp_delta,
            i64::from(self.count),
            key,
            value_parts,
            headers,
        );
        self.count += 1;
    }

    /// Appends a record with a plain value.
    pub fn push(&mut self, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) {
        let parts = value.map(|value| [value]);
        self.push_parts(timestamp, key, parts.as_ref().map(|parts| &parts[..]), &[]);
    }

    fn header(&self, attributes: i16, records_bytes: usize) -> Vec<u8> {
        let mut batch = Vec::with_capacity(BATCH_HEADER_BYTES + records_bytes);
        batch.extend_from_slice(&0i64.to_be_bytes()); // base offset: the broker assigns it
        let length = (BATCH_HEADER_BYTES - LOG_OVERHEAD + records_bytes) as i32;
        batch.extend_from_slice(&length.to_be_bytes());
        batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        batch.push(2); // magic
        batch.extend_from_slice(&0u32.to_be_bytes()); // CRC, set by `seal`
        batch.extend_from_slice(&attributes.to_be_bytes());
        batch.extend_from_slice(&(self.count - 1).to_be_bytes());
        batch.extend_from_slice(&self.base_timestamp.to_be_bytes());
        batch.extend_from_slice(&self.max_timestamp.to_be_bytes());
        batch.extend_from_slice(&self.producer_id.to_be_bytes());
        batch.extend_from_slice(&self.producer_epoch.to_be_bytes());
        batch.extend_from_slice(&self.base_sequence.to_be_bytes());
        batch.extend_from_slice(&self.count.to_be_bytes());
        batch
    }

    fn seal(mut batch: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    /// The finished uncompressed batch; the builder starts empty again (same producer, the
    /// sequence moved past the records written).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut batch = self.header(0, self.records.len());
        batch.extend_from_slice(&self.records);
        self.reset();
        Self::seal(batch)
    }

    /// The finished batch with its records compressed by `compression`.
    pub fn finish_compressed(&mut self, compression: Compression) -> std::io::Result<Vec<u8>> {
        if compression == Compression::None {
            return Ok(self.finish());
        }
        let compressed = compress(compression, &self.records)?;
        let mut batch = self.header(compression.attribute_bits(), compressed.len());
        batch.extend_from_slice(&compressed);
        self.reset();
        Ok(Self::seal(batch))
    }

    fn reset(&mut self) {
        if self.base_sequence >= 0 {
            self.base_sequence = self.base_sequence.wrapping_add(self.count) & i32::MAX;
        }
        self.records.clear();
        self.count = 0;
        self.base_timestamp = NO_TIMESTAMP;
        self.max_timestamp = NO_TIMESTAMP;
    }
}

/// A valid uncompressed batch (for tests and benchmarks) of `count` records of `value_bytes`
/// bytes each, without keys, stamped `base_timestamp + i`.
pub fn build_uncompressed_batch(count: i32, value_bytes: usize, base_timestamp: i64) -> Vec<u8> {
    let value = vec![b'v'; value_bytes];
    let mut builder = BatchBuilder::default();
    for index in 0..count {
        builder.push(base_timestamp + i64::from(index), None, Some(&value));
    }
    builder.finish()
}
