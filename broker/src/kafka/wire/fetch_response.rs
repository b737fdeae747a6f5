//! The Fetch response, written by hand so stored batches go to the socket without a copy.
//!
//! `kafka-protocol`'s encoder copies every record set into one buffer. Here the fixed fields are
//! encoded into small buffers and each partition's stored batch runs are passed through as the
//! `Bytes` the log returned, for one vectored write. Layout from Kafka's `FetchResponse.json`,
//! versions 4-16 (flexible from 12, topic ids instead of names from 13).

use bytes::{BufMut, Bytes, BytesMut};

pub struct FetchedPartition {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Contiguous runs of stored record batches.
    pub records: Vec<Bytes>,
}

impl FetchedPartition {
    pub fn records_bytes(&self) -> usize {
        self.records.iter().map(Bytes::len).sum()
    }
}

pub struct FetchedTopic {
    pub name: String,
    pub topic_id: uuid::Uuid,
    pub partitions: Vec<FetchedPartition>,
}

struct Writer {
    flexible: bool,
    current: BytesMut,
    chunks: Vec<Bytes>,
}

impl Writer {
    fn unsigned_varint(&mut self, mut value: u32) {
        while value >= 0x80 {
            self.current.put_u8((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.current.put_u8(value as u8);
    }

    fn array_length(&mut self, length: usize) {
        if self.flexible {
            self.unsigned_varint(length as u32 + 1);
        } else {
            self.current.put_i32(length as i32);
        }
    }

    fn string(&mut self, text: &str) {
        if self.flexible {
            self.unsigned_varint(text.len() as u32 + 1);
        } else {
            self.current.put_i16(text.len() as i16);
        }
        self.current.put_slice(text.as_bytes());
    }

    fn no_tagged_fields(&mut self) {
        if self.flexible {
            self.current.put_u8(0);
        }
    }

    fn records(&mut self, runs: &[Bytes]) {
        let length: usize = runs.iter().map(Bytes::len).sum();
        if self.flexible {
            self.unsigned_varint(length as u32 + 1);
        } else {
            self.current.put_i32(length as i32);
        }
        if length > 0 {
            self.chunks.push(self.current.split().freeze());
            self.chunks
                .extend(runs.iter().filter(|run| !run.is_empty()).cloned());
        }
    }
}

/// Encodes a whole Fetch response frame (size prefix included) as chunks for a vectored write.
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    error_code: i16,
    session_id: i32,
    topics: &[FetchedTopic],
) -> Vec<Bytes> {
    assert!(
        (4..=16).contains(&version),
        "fetch v{version} is not served"
    );
    let flexible = version >= 12;
    let mut writer = Writer {
        flexible,
        current: BytesMut::with_capacity(512),
        chunks: Vec::new(),
    };
    writer.current.put_i32(correlation_id);
    writer.no_tagged_fields(); // response header v1 in flexible versions
    writer.current.put_i32(0); // throttle_time_ms
    if version >= 7 {
        writer.current.put_i16(error_code);
        writer.current.put_i32(session_id);
    }
    writer.array_length(topics.len());
    for topic in topics {
        if version >= 13 {
            writer.current.put_slice(topic.topic_id.as_bytes());
        } else {
            writer.string(&topic.name);
        }
        writer.array_length(topic.partitions.len());
        for partition in &topic.partitions {
            writer.current.put_i32(partition.partition_index);
            writer.current.put_i16(partition.error_code);
            writer.current.put_i64(partition.high_watermark);
            writer.current.put_i64(partition.last_stable_offset);
            if version >= 5 {
                writer.current.put_i64(partition.log_start_offset);
            }
            // No aborted transactions: an empty list (not null), as read_committed expects.
            writer.array_length(0);
            if version >= 11 {
                writer.current.put_i32(-1); // preferred_read_replica
            }
            writer.records(&partition.records);
            writer.no_tagged_fields();
        }
        writer.no_tagged_fields();
    }
    writer.no_tagged_fields();
    let tail = writer.current.split().freeze();
    // Non-flexible versions end with the last record set, leaving nothing after it.
    if !tail.is_empty() {
        writer.chunks.push(tail);
    }
    let size: usize = writer.chunks.iter().map(Bytes::len).sum();
    let mut chunks = Vec::with_capacity(writer.chunks.len() + 1);
    chunks.push(Bytes::copy_from_slice(&(size as i32).to_be_bytes()));
    chunks.extend(writer.chunks);
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    /// What we write decodes with kafka-protocol's own decoder, field for field, in every
    /// version we serve.
    #[test]
    fn every_version_decodes_with_the_reference_decoder() {
        let topic_id = uuid::Uuid::new_v4();
        for version in 4..=16 {
            let topics = vec![FetchedTopic {
                name: "payments".into(),
                topic_id,
                partitions: vec![
                    FetchedPartition {
                        partition_index: 3,
                        error_code: 0,
                        high_watermark: 42,
                        last_stable_offset: 41,
                        log_start_offset: 7,
                        records: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg")],
                    },
                    FetchedPartition {
                        partition_index: 4,
                        error_code: 6,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        records: vec![],
                    },
                ],
            }];
            let chunks = encode_fetch_response(version, 99, 0, 0, &topics);
            assert!(
                chunks.iter().all(|chunk| !chunk.is_empty()),
                "v{version}: empty chunk"
            );
            let mut frame: Vec<u8> = chunks.iter().flat_map(|chunk| chunk.to_vec()).collect();
            let size = i32::from_be_bytes(frame[..4].try_into().unwrap());
            assert_eq!(size as usize, frame.len() - 4, "v{version}");
            let mut body = Bytes::from(frame.split_off(4));
            let header_version = if version >= 12 { 1 } else { 0 };
            let header = ResponseHeader::decode(&mut body, header_version).unwrap();
            assert_eq!(header.correlation_id, 99);
            let response = FetchResponse::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "v{version}: trailing bytes");
            let topic = &response.responses[0];
            if version >= 13 {
                assert_eq!(topic.topic_id, topic_id);
            } else {
                assert_eq!(topic.topic.0.as_str(), "payments");
            }
            let first = &topic.partitions[0];
            assert_eq!(first.partition_index, 3);
            assert_eq!(first.high_watermark, 42);
            assert_eq!(first.last_stable_offset, 41);
            if version >= 5 {
                assert_eq!(first.log_start_offset, 7);
            }
            assert_eq!(first.records.as_deref(), Some(&b"abcdefg"[..]));
            assert_eq!(first.aborted_transactions.as_deref(), Some(&[][..]));
            assert_eq!(topic.partitions[1].error_code, 6);
        }
    }
}
