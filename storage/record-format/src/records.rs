//! The records inside a batch: parsing one record's body, walking an uncompressed records
//! section in place, and reading a compressed one through its codec.
//!
//! A v2 record is `length varint`, then `length` bytes: attributes i8, timestampDelta varlong,
//! offsetDelta varint, key (varint length, -1 for null), value (the same), a varint header count
//! and each header as a key (non-null) and a value (nullable). The checks are Kafka's
//! (`DefaultRecord.readFrom`): the body must be exactly `length` bytes, header counts and header
//! key lengths must not be negative, and any other negative length reads as null.

use std::borrow::Cow;
use std::io::{BufRead, Read};

use crate::codec::{decompressing_reader, DECOMPRESSED_BATCH_BYTES_MAX};
use crate::error::BatchError;
use crate::header::{BatchHeader, Compression, BATCH_HEADER_BYTES};
use crate::varint::{read_varint, unzigzag};
use crate::Offset;

/// One record, borrowed from the bytes it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
}

/// A record's headers, still encoded; `iter` reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    pub count: usize,
    bytes: &'a [u8],
}

impl<'a> Headers<'a> {
    /// The headers as (key, value) pairs. They were checked when the record was parsed.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let mut rest = self.bytes;
        (0..self.count).map_while(move |_| {
            let key = take_bytes(&mut rest).ok()??;
            let value = take_bytes(&mut rest).ok()?;
            Some((key, value))
        })
    }
}

fn take_varint(rest: &mut &[u8]) -> Result<i64, &'static str> {
    let (value, length) = read_varint(rest).ok_or("Found invalid record structure")?;
    *rest = &rest[length..];
    Ok(value)
}

/// A length-prefixed byte field: `None` for any negative length, as Kafka reads them.
fn take_bytes<'a>(rest: &mut &'a [u8]) -> Result<Option<&'a [u8]>, &'static str> {
    let length = take_varint(rest)?;
    let Ok(length) = usize::try_from(length) else {
        return Ok(None);
    };
    if length > rest.len() {
        return Err("Found invalid record structure");
    }
    let (field, after) = rest.split_at(length);
    *rest = after;
    Ok(Some(field))
}

/// Parses one record's body (the bytes after its length varint), which must be exactly the
/// record.
pub fn parse_record(body: &[u8]) -> Result<Record<'_>, String> {
    let mut rest = body;
    let (&attributes, after) = rest.split_first().ok_or("Found invalid record structure")?;
    rest = after;
    let timestamp_delta = take_varint(&mut rest)?;
    let offset_delta = take_varint(&mut rest)?;
    let key = take_bytes(&mut rest)?;
    let value = take_bytes(&mut rest)?;
    let count = take_varint(&mut rest)?;
    let count = usize::try_from(count)
        .map_err(|_| format!("Found invalid number of record headers {count}"))?;
    // A header takes at least two bytes: a stranger's count cannot make us walk for long.
    if count > rest.len() / 2 {
        return Err(format!(
            "Found invalid number of record headers {count}, larger than the remaining size of the record"
        ));
    }
    let headers_start = rest;
    for _ in 0..count {
        let key_length = take_varint(&mut rest)?;
        if key_length < 0 {
            return Err(format!("Invalid negative header key size {key_length}"));
        }
        let key_length = key_length as usize;
        if key_length > rest.len() {
            return Err("Found invalid record structure".into());
        }
        rest = &rest[key_length..];
        take_bytes(&mut rest)?;
    }
    if !rest.is_empty() {
        return Err(format!(
            "Invalid record size: expected to read {} bytes in record payload, but instead read {}",
            body.len(),
            body.len() - rest.len()
        ));
    }
    Ok(Record {
        attributes: attributes as i8,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers: Headers {
            count,
            bytes: &headers_start[..headers_start.len() - rest.len()],
        },
    })
}

/// The records of an uncompressed records section, in place. Yields an error (and then stops)
/// at the first record that does not parse.
pub struct RecordIter<'a> {
    rest: &'a [u8],
    left: usize,
    failed: bool,
}

impl<'a> RecordIter<'a> {
    /// `count` records from `records`; the iterator reports a shortfall, not trailing bytes
    /// (call `remaining` after it ends to check those).
    pub fn new(records: &'a [u8], count: usize) -> RecordIter<'a> {
        RecordIter {
            rest: records,
            left: count,
            failed: false,
        }
    }

    /// Bytes after the records walked so far.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 || self.failed {
            return None;
        }
        self.left -= 1;
        let result = (|| {
            let Some((length, length_bytes)) = read_varint(self.rest) else {
                return Err("Incorrect declared batch size, premature EOF reached".to_string());
            };
            let length =
                usize::try_from(length).map_err(|_| format!("Invalid record size {length}"))?;
            let body = self
                .rest
                .get(length_bytes..length_bytes + length)
                .ok_or_else(|| {
                    format!(
                        "Invalid record size: expected {length} bytes in record payload, but the \
                     buffer has only {} remaining bytes.",
                        self.rest.len() - length_bytes
                    )
                })?;
            self.rest = &self.rest[length_bytes + length..];
            parse_record(body)
        })();
        self.failed = result.is_err();
        Some(result)
    }
}

/// Reads one unsigned varint from a stream; `Ok(None)` at a clean end of the stream.
fn read_stream_varint(input: &mut dyn BufRead) -> std::io::Result<Option<i64>> {
    let mut value: u64 = 0;
    for index in 0..10 {
        let mut byte = [0u8; 1];
        if input.read(&mut byte)? == 0 {
            return if index == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * index);
        if byte[0] & 0x80 == 0 {
            return Ok(Some(unzigzag(value)));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "varint is too long",
    ))
}

/// Walks the `count` records of a batch's records section through its codec, calling `visit`
/// with each record's index and the record. Each record body is read into one reused buffer, so
/// memory stays at the largest record (bounded by `DECOMPRESSED_BATCH_BYTES_MAX`) whatever the
/// batch decompresses to. Fails on a shortfall, trailing bytes, or a record that does not parse.
pub fn walk_records(
    compression: Compression,
    records: &[u8],
    count: usize,
    mut visit: impl FnMut(usize, &Record<'_>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    if compression == Compression::None {
        let mut walk = RecordIter::new(records, count);
        let mut walked = 0;
        for record in walk.by_ref() {
            let record = record.map_err(BatchError::invalid)?;
            visit(walked, &record)?;
            walked += 1;
        }
        if walked < count {
            return Err(BatchError::invalid(
                "Incorrect declared batch size, premature EOF reached",
            ));
        }
        if walk.remaining() > 0 {
            return Err(BatchError::invalid(
                "Incorrect declared batch size, records still remaining in file",
            ));
        }
        return Ok(());
    }
    let decompress_failed = |error: std::io::Error| {
        BatchError::invalid(format!("Failed to decompress record stream: {error}"))
    };
    let mut input = decompressing_reader(compression, records, DECOMPRESSED_BATCH_BYTES_MAX)
        .map_err(decompress_failed)?;
    let mut body = Vec::new();
    for index in 0..count {
        let length = match read_stream_varint(&mut *input) {
            Ok(Some(length)) => length,
            Ok(None) => {
                return Err(BatchError::invalid(
                    "Incorrect declared batch size, premature EOF reached",
                ))
            }
            Err(error) => return Err(decompress_failed(error)),
        };
        let length = usize::try_from(length)
            .ok()
            .filter(|length| *length <= DECOMPRESSED_BATCH_BYTES_MAX)
            .ok_or_else(|| BatchError::invalid(format!("Invalid record size {length}")))?;
        body.resize(length, 0);
        input.read_exact(&mut body).map_err(|error| {
            if error.kind() == std::io::ErrorKind::UnexpectedEof {
                BatchError::invalid(format!(
                    "Invalid record size: expected {length} bytes in record payload, but the \
                     record payload reached EOF."
                ))
            } else {
                decompress_failed(error)
            }
        })?;
        let record = parse_record(&body).map_err(BatchError::invalid)?;
        visit(index, &record)?;
    }
    let mut probe = [0u8; 1];
    match input.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => Err(BatchError::invalid(
            "Incorrect declared batch size, records still remaining in file",
        )),
        Err(error) => Err(decompress_failed(error)),
    }
}

/// A batch's records section, decompressed when it has to be (bounded by
/// `DECOMPRESSED_BATCH_BYTES_MAX`), ready for `RecordIter`.
pub fn records_section(batch: &[u8]) -> Result<Cow<'_, [u8]>, BatchError> {
    let header = BatchHeader::parse(batch)
        .ok_or_else(|| BatchError::corrupt("shorter than a batch header"))?;
    let records = &batch[BATCH_HEADER_BYTES..];
    let compression = Compression::from_attributes(header.attributes).ok_or_else(|| {
        BatchError::invalid(format!(
            "unknown compression codec {}",
            header.attributes & crate::header::ATTRIBUTE_COMPRESSION_MASK
        ))
    })?;
    if compression == Compression::None {
        return Ok(Cow::Borrowed(records));
    }
    let mut decompressed = Vec::new();
    decompressing_reader(compression, records, DECOMPRESSED_BATCH_BYTES_MAX)
        .and_then(|mut reader| reader.read_to_end(&mut decompressed))
        .map_err(|error| {
            BatchError::invalid(format!("Failed to decompress record stream: {error}"))
        })?;
    Ok(Cow::Owned(decompressed))
}

/// The offset and timestamp of the first record at or after offset `floor` whose timestamp is
/// at least `target_ms` (ListOffsets by timestamp; the floor is the log start, which may fall
/// inside a batch), reading through the codec for compressed batches.
pub fn first_offset_at_or_after(
    batch: &[u8],
    target_ms: i64,
    floor: Offset,
) -> Option<(Offset, i64)> {
    let header = BatchHeader::parse(batch)?;
    if header.max_timestamp < target_ms || header.last_offset() < floor {
        return None;
    }
    if header.is_log_append_time() {
        return Some((header.base_offset.max(floor), header.max_timestamp));
    }
    let records = records_section(batch).ok()?;
    for record in RecordIter::new(&records, usize::try_from(header.records_count).ok()?) {
        let record = record.ok()?;
        let timestamp = header.base_timestamp.saturating_add(record.timestamp_delta);
        let offset = Offset(header.base_offset.0.saturating_add(record.offset_delta));
        if timestamp >= target_ms && offset >= floor {
            return Some((offset, timestamp));
        }
    }
    None
}
