//! The records of one produce batch, encoded in place as they are generated.
//!
//! The encoding is `record-format`'s, the workspace's one batch encoder (the broker's group
//! coordinator uses the same): each record's value is the send-time stamp followed by the
//! filler, appended without joining them first.

use bytes::Bytes;
use record_format::{BatchBuilder as Records, Compression};

/// Records of one batch, encoded as they are added.
#[derive(Default)]
pub struct BatchBuilder {
    records: Records,
}

impl BatchBuilder {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends a record whose value is `stamp` followed by `filler`.
    pub fn push(&mut self, timestamp: i64, key: Option<&[u8]>, stamp: [u8; 8], filler: &[u8]) {
        self.records
            .push_parts(timestamp, key, Some(&[&stamp, filler]), &[]);
    }

    /// The finished batch (header, CRC-32C and records, compressed with `compression`); the
    /// builder starts empty again.
    pub fn finish(&mut self, compression: Compression) -> std::io::Result<Bytes> {
        self.records.finish_compressed(compression).map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    /// What the builder writes, kafka-protocol's decoder (which checks the CRC) reads back:
    /// an independent codec, for every compression.
    #[test]
    fn batches_decode_with_an_independent_decoder() {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
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
            let mut batch = builder.finish(compression).unwrap();
            assert!(builder.is_empty());
            let set = RecordBatchDecoder::decode(&mut batch).unwrap();
            let records = &set.records;
            assert_eq!(records.len(), 3, "{compression:?}");
            assert_eq!(records[0].key, None);
            assert_eq!(records[1].key.as_deref(), Some(&b"key-1"[..]));
            assert_eq!(records[2].key.as_deref(), Some(&b""[..]));
            assert_eq!(records[1].timestamp, 1_700_000_000_005);
            assert_eq!(records[2].offset, 2);
            let value = records[1].value.as_deref().unwrap();
            assert_eq!(&value[..8], &2u64.to_be_bytes());
            assert_eq!(value.len(), 308);
            assert_eq!(records[0].producer_id, -1);
            assert_eq!(records[0].sequence, -1);
        }
    }
}
