//! An uncompressed v2 record batch built in place, one record at a time.
//!
//! Why by hand: `kafka-protocol`'s encoder takes owned `Record`s (each value its own
//! allocation) and copies every value again into the batch. At a few hundred thousand records
//! a second that is a large share of the generator's one core (memmove and malloc were the top
//! of its profile), and a load generator slower than the broker measures itself. Compressed
//! batches still go through `kafka-protocol`.

use bytes::{BufMut, Bytes, BytesMut};

/// The fixed header of a v2 batch, before its first record.
const HEADER_BYTES: usize = 61;
/// Where the CRC-32C'd part starts (the attributes) and where the CRC itself sits.
const ATTRIBUTES_AT: usize = 21;
const CRC_AT: usize = 17;

fn varint_len(value: i64) -> usize {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let mut length = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        length += 1;
    }
    length
}

fn put_varint(out: &mut BytesMut, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.put_u8((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.put_u8(zigzag as u8);
}

/// Records of one batch, encoded as they are added.
#[derive(Default)]
pub struct BatchBuilder {
    body: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends a record whose value is `stamp` followed by `filler`.
    pub fn push(&mut self, timestamp: i64, key: Option<&[u8]>, stamp: [u8; 8], filler: &[u8]) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let timestamp_delta = timestamp - self.base_timestamp;
        let offset_delta = i64::from(self.count);
        let value_length = (8 + filler.len()) as i64;
        let key_length = key.map_or(-1, |key| key.len() as i64);
        let length = 1
            + varint_len(timestamp_delta)
            + varint_len(offset_delta)
            + varint_len(key_length)
            + key.map_or(0, <[u8]>::len)
            + varint_len(value_length)
            + value_length as usize
            + 1;
        self.body.reserve(length + 5);
        put_varint(&mut self.body, length as i64);
        self.body.put_u8(0); // attributes
        put_varint(&mut self.body, timestamp_delta);
        put_varint(&mut self.body, offset_delta);
        put_varint(&mut self.body, key_length);
        if let Some(key) = key {
            self.body.put_slice(key);
        }
        put_varint(&mut self.body, value_length);
        self.body.put_slice(&stamp);
        self.body.put_slice(filler);
        put_varint(&mut self.body, 0); // no headers
        self.count += 1;
    }

    /// The finished batch (header, CRC-32C and records); the builder starts empty again.
    pub fn finish(&mut self) -> Bytes {
        let mut batch = BytesMut::with_capacity(HEADER_BYTES + self.body.len());
        batch.put_i64(0); // base offset: the broker assigns it
        batch.put_i32((HEADER_BYTES - 12 + self.body.len()) as i32);
        batch.put_i32(-1); // partition leader epoch
        batch.put_i8(2); // magic
        batch.put_u32(0); // CRC, below
        batch.put_i16(0); // attributes: no compression, create time
        batch.put_i32(self.count - 1);
        batch.put_i64(self.base_timestamp);
        batch.put_i64(self.max_timestamp);
        batch.put_i64(-1); // producer id
        batch.put_i16(-1); // producer epoch
        batch.put_i32(-1); // base sequence
        batch.put_i32(self.count);
        batch.put_slice(&self.body);
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        self.body.clear();
        self.count = 0;
        batch.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    /// What the builder writes, kafka-protocol's decoder (which checks the CRC) reads back.
    #[test]
    fn batches_decode_with_an_independent_decoder() {
        let mut builder = BatchBuilder::default();
        let filler = vec![b'x'; 300];
        builder.push(1_700_000_000_000, None, 1u64.to_be_bytes(), &filler);
        builder.push(
            1_700_000_000_005,
            Some(b"key-1"),
            2u64.to_be_bytes(),
            &filler,
        );
        builder.push(1_700_000_000_003, Some(b""), u64::MAX.to_be_bytes(), &[]);
        let mut batch = builder.finish();
        assert!(builder.is_empty());
        let set = RecordBatchDecoder::decode(&mut batch).unwrap();
        assert_eq!(set.records.len(), 3);
        let records = &set.records;
        assert_eq!(records[0].key, None);
        assert_eq!(records[1].key.as_deref(), Some(&b"key-1"[..]));
        assert_eq!(records[2].key.as_deref(), Some(&b""[..]));
        assert_eq!(records[1].timestamp, 1_700_000_000_005);
        assert_eq!(records[2].timestamp, 1_700_000_000_003);
        assert_eq!(records[2].offset, 2);
        let value = records[1].value.as_deref().unwrap();
        assert_eq!(&value[..8], &2u64.to_be_bytes());
        assert_eq!(value.len(), 308);
        assert_eq!(
            records[2].value.as_deref().unwrap(),
            &u64::MAX.to_be_bytes()
        );
        assert_eq!(records[0].producer_id, -1);
        assert_eq!(records[0].sequence, -1);
    }
}
