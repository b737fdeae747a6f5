//! Validation of a produced batch, as Kafka's `LogValidator` does it for magic 2: the header's
//! claims, then every record walked (through its codec when compressed) and checked against
//! them, so a batch that lies about its count, offsets or timestamps is refused before it costs
//! an offset.
//!
//! Where we are stricter than Kafka, on purpose: per-record offset deltas must count 0, 1, 2, ...
//! (Kafka rewrites a compressed batch whose deltas do not, and never looks on the uncompressed
//! path; the broker here never re-encodes, so it refuses instead), and a batch whose codec cannot
//! be decoded is `INVALID_RECORD` rather than Kafka's `UNKNOWN_SERVER_ERROR`.

use crate::error::{BatchError, RecordError, RecordErrorKind};
use crate::header::{
    check_integrity_with_crc, compute_crc, BatchHeader, Compression, BATCH_HEADER_BYTES,
    NO_TIMESTAMP,
};
use crate::records::walk_records;

/// Per-record errors listed in one response. Kafka lists every one; a batch of a million keyless
/// records would then answer with a million messages.
pub const RECORD_ERRORS_LISTED_MAX: usize = 100;

/// Limits a produced batch must respect; all come from topic configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceRules {
    /// `max.message.bytes`: the largest batch accepted, header included.
    pub max_message_bytes: usize,
    /// `message.timestamp.after.max.ms`, only for `CreateTime` topics.
    pub timestamp_after_max_ms: i64,
    /// `message.timestamp.before.max.ms`, only for `CreateTime` topics.
    pub timestamp_before_max_ms: i64,
    pub log_append_time: bool,
    /// `cleanup.policy` includes `compact`: every record needs a key.
    pub keys_required: bool,
}

/// What validation learned of a batch beyond its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validated {
    pub header: BatchHeader,
    /// The largest record timestamp (`CreateTime` topics; -1 when no record has one). When it
    /// differs from the header's `maxTimestamp` the stored batch carries this one.
    pub max_timestamp: i64,
}

/// Full validation of one produced batch.
pub fn validate_produced(
    batch: &[u8],
    rules: &ProduceRules,
    now_ms: i64,
) -> Result<Validated, BatchError> {
    validate_produced_with_crc(batch, rules, now_ms, None)
}

/// `validate_produced` for a caller that has already computed the batch's CRC-32C (over the
/// bytes from its attributes on, as `compute_crc` does), in pieces; `None` computes it here.
pub fn validate_produced_with_crc(
    batch: &[u8],
    rules: &ProduceRules,
    now_ms: i64,
    crc: Option<u32>,
) -> Result<Validated, BatchError> {
    if batch.len() > rules.max_message_bytes {
        return Err(BatchError::TooLarge {
            size: batch.len(),
            limit: rules.max_message_bytes,
        });
    }
    let header =
        check_integrity_with_crc(batch, |batch| crc.unwrap_or_else(|| compute_crc(batch)))?;
    if header.base_offset.0 != 0 {
        return Err(BatchError::invalid(format!(
            "The baseOffset of the record batch should be 0, but it is {}",
            header.base_offset
        )));
    }
    let compression = Compression::from_attributes(header.attributes).ok_or_else(|| {
        BatchError::invalid(format!(
            "unknown compression codec in attributes {:#06x}",
            header.attributes
        ))
    })?;
    if header.is_control() {
        return Err(BatchError::invalid(
            "Clients are not allowed to write control records",
        ));
    }
    if header.has_producer_id() && header.base_sequence < 0 {
        return Err(BatchError::invalid(format!(
            "Invalid sequence number {} in record batch with producerId {}",
            header.base_sequence, header.producer_id
        )));
    }
    if header.is_transactional() && !header.has_producer_id() {
        return Err(BatchError::invalid(
            "a transactional batch needs a producer id",
        ));
    }
    if !rules.log_append_time && header.is_log_append_time() {
        return Err(BatchError::InvalidTimestamp {
            reason: "Invalid timestamp type in the batch: producers should not set the timestamp \
                     type to LogAppendTime"
                .into(),
        });
    }
    let earliest = now_ms.saturating_sub(rules.timestamp_before_max_ms);
    let latest = now_ms.saturating_add(rules.timestamp_after_max_ms);
    let mut max_timestamp = NO_TIMESTAMP;
    let mut errors: Vec<(RecordErrorKind, RecordError)> = Vec::new();
    let mut refused = 0usize;
    let mut refuse = |kind: RecordErrorKind, index: usize, message: String| {
        refused += 1;
        if errors.len() < RECORD_ERRORS_LISTED_MAX {
            errors.push((
                kind,
                RecordError {
                    batch_index: index as i32,
                    message,
                },
            ));
        }
    };
    // check_integrity made recordsCount positive.
    let count = header.records_count as usize;
    walk_records(
        compression,
        &batch[BATCH_HEADER_BYTES..],
        count,
        |index, record| {
            if record.offset_delta != index as i64 {
                return Err(BatchError::invalid(format!(
                    "record {index} has offset delta {}; a batch's offset deltas count 0, 1, 2, ...",
                    record.offset_delta
                )));
            }
            if rules.keys_required && record.key.is_none() {
                refuse(
                    RecordErrorKind::InvalidRecord,
                    index,
                    "Compacted topic cannot accept message without key".into(),
                );
            }
            if !rules.log_append_time && header.base_timestamp != NO_TIMESTAMP {
                let timestamp = header.base_timestamp.saturating_add(record.timestamp_delta);
                if timestamp != NO_TIMESTAMP && (timestamp < earliest || timestamp > latest) {
                    refuse(
                        RecordErrorKind::InvalidTimestamp,
                        index,
                        format!(
                            "Timestamp {timestamp} of message with offset {index} is out of \
                             range. The timestamp should be within [{earliest}, {latest}]"
                        ),
                    );
                }
                max_timestamp = max_timestamp.max(timestamp);
            }
            Ok(())
        },
    )?;
    if !errors.is_empty() {
        let kind = if errors
            .iter()
            .any(|(kind, _)| *kind == RecordErrorKind::InvalidTimestamp)
        {
            RecordErrorKind::InvalidTimestamp
        } else {
            RecordErrorKind::InvalidRecord
        };
        let summary = match kind {
            RecordErrorKind::InvalidTimestamp => {
                "One or more records have been rejected due to invalid timestamp".to_string()
            }
            RecordErrorKind::InvalidRecord => format!(
                "One or more records have been rejected due to {refused} record errors in total, \
                 and only showing the first three errors at most: [{}]",
                errors
                    .iter()
                    .take(3)
                    .map(|(_, error)| format!(
                        "RecordError(batchIndex={}, message='{}')",
                        error.batch_index, error.message
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Err(BatchError::Records {
            kind,
            summary,
            records: errors.into_iter().map(|(_, error)| error).collect(),
        });
    }
    Ok(Validated {
        header,
        max_timestamp: if rules.log_append_time {
            header.max_timestamp
        } else {
            max_timestamp
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::check_integrity;
    use crate::header::*;
    use crate::{build_uncompressed_batch, BatchBuilder, BatchWalk, Offset, RecordIter};

    const RULES: ProduceRules = ProduceRules {
        max_message_bytes: 1 << 20,
        timestamp_after_max_ms: 3_600_000,
        timestamp_before_max_ms: i64::MAX,
        log_append_time: false,
        keys_required: false,
    };

    fn recrc(batch: &mut [u8]) {
        let crc = compute_crc(batch);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }

    fn keyed(count: usize, key: impl Fn(usize) -> Option<Vec<u8>>) -> BatchBuilder {
        let mut builder = BatchBuilder::default();
        for index in 0..count {
            let key = key(index);
            builder.push(1_000 + index as i64, key.as_deref(), Some(b"value"));
        }
        builder
    }

    #[test]
    fn a_well_formed_batch_passes_and_reports_its_header() {
        let batch = build_uncompressed_batch(3, 10, 1_000);
        let validated = validate_produced(&batch, &RULES, 1_000).unwrap();
        assert_eq!(validated.header.records_count, 3);
        assert_eq!(validated.header.last_offset_delta, 2);
        assert_eq!(validated.max_timestamp, 1_002);
        assert_eq!(validated.header.total_bytes(), Some(batch.len()));
    }

    #[test]
    fn every_flipped_byte_inside_the_crc_span_is_caught() {
        let batch = build_uncompressed_batch(2, 5, 0);
        for position in ATTRIBUTES_AT..batch.len() {
            let mut damaged = batch.clone();
            damaged[position] ^= 0x40;
            assert!(
                check_integrity(&damaged).is_err(),
                "flip at byte {position} went unnoticed"
            );
        }
    }

    #[test]
    fn offset_and_epoch_are_outside_the_crc() {
        let mut batch = build_uncompressed_batch(2, 5, 0);
        assign_offset(&mut batch, Offset(12345), 7);
        let header = check_integrity(&batch).unwrap();
        assert_eq!(header.base_offset, Offset(12345));
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.last_offset(), Offset(12346));
        // ...and a client may not choose its own base offset.
        assert!(matches!(
            validate_produced(&batch, &RULES, 0),
            Err(BatchError::Invalid { .. })
        ));
    }

    #[test]
    fn oversized_count_mismatch_and_old_magic_get_kafkas_errors() {
        let batch = build_uncompressed_batch(4, 100, 0);
        let tight = ProduceRules {
            max_message_bytes: batch.len() - 1,
            ..RULES
        };
        assert!(matches!(
            validate_produced(&batch, &tight, 0),
            Err(BatchError::TooLarge { .. })
        ));
        let mut miscounted = batch.clone();
        miscounted[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&9i32.to_be_bytes());
        recrc(&mut miscounted);
        assert!(matches!(
            validate_produced(&miscounted, &RULES, 0),
            Err(BatchError::Invalid { .. })
        ));
        let mut old = batch.clone();
        old[MAGIC_AT] = 1;
        assert_eq!(
            validate_produced(&old, &RULES, 0),
            Err(BatchError::UnsupportedMagic { magic: 1 })
        );
    }

    /// The attack: one record, a header claiming 2^31 - 1 of them, a valid CRC.
    #[test]
    fn a_batch_claiming_more_records_than_it_holds_is_refused() {
        let mut lying = build_uncompressed_batch(1, 40, 1_000);
        lying[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        lying[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        recrc(&mut lying);
        assert!(
            check_integrity(&lying).is_ok(),
            "the header alone is consistent"
        );
        let error = validate_produced(&lying, &RULES, 1_000).unwrap_err();
        assert!(
            matches!(&error, BatchError::Invalid { reason } if reason.contains("premature EOF")),
            "{error}"
        );
        // Fewer claimed than held: trailing records.
        let mut short = build_uncompressed_batch(3, 4, 1_000);
        short[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&2i32.to_be_bytes());
        short[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4].copy_from_slice(&1i32.to_be_bytes());
        recrc(&mut short);
        let error = validate_produced(&short, &RULES, 1_000).unwrap_err();
        assert!(error.to_string().contains("remaining"), "{error}");
    }

    #[test]
    fn extreme_header_values_are_refused_without_overflowing() {
        let mut batch = build_uncompressed_batch(1, 3, 1_000);
        batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
            .copy_from_slice(&i32::MAX.to_be_bytes());
        batch[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        recrc(&mut batch);
        assert!(validate_produced(&batch, &RULES, 1_000).is_err());
        let mut stored = batch.clone();
        assign_offset(&mut stored, Offset(i64::MAX - 1), 0);
        let header = BatchHeader::parse(&stored).unwrap();
        assert_eq!(header.next_offset(), Offset(i64::MAX));
    }

    #[test]
    fn offset_deltas_must_count_up_from_zero() {
        let mut batch = build_uncompressed_batch(2, 3, 1_000);
        // Record 0 is [length, attributes, timestampDelta, offsetDelta, ...]: make record 1's
        // offset delta 0 (its byte follows its length, attributes and timestamp delta).
        let first_length = batch[BATCH_HEADER_BYTES] as usize / 2;
        let second = BATCH_HEADER_BYTES + 1 + first_length;
        assert_eq!(batch[second + 3], 2, "record 1 has zigzag offset delta 1");
        batch[second + 3] = 0;
        recrc(&mut batch);
        let error = validate_produced(&batch, &RULES, 1_000).unwrap_err();
        assert!(error.to_string().contains("offset delta"), "{error}");
    }

    #[test]
    fn timestamps_are_checked_per_record_and_the_max_is_recomputed() {
        let mut builder = BatchBuilder::default();
        builder.push(1_000, None, Some(b"a"));
        builder.push(10_000_000, None, Some(b"b"));
        builder.push(1_001, None, Some(b"c"));
        let batch = builder.finish();
        match validate_produced(&batch, &RULES, 1_000) {
            Err(BatchError::Records { kind, records, .. }) => {
                assert_eq!(kind, RecordErrorKind::InvalidTimestamp);
                assert_eq!(records.len(), 1);
                assert_eq!(records[0].batch_index, 1);
            }
            other => panic!("expected a record error, got {other:?}"),
        }
        // A header that understates its max timestamp is corrected, not trusted.
        let mut builder = BatchBuilder::default();
        builder.push(2_000, None, Some(b"a"));
        builder.push(2_500, None, Some(b"b"));
        let mut batch = builder.finish();
        batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&2_000i64.to_be_bytes());
        recrc(&mut batch);
        assert_eq!(
            validate_produced(&batch, &RULES, 2_000)
                .unwrap()
                .max_timestamp,
            2_500
        );
        // A producer may not claim LogAppendTime on a CreateTime topic.
        let mut stamped = build_uncompressed_batch(1, 1, 5);
        stamp_log_append_time(&mut stamped, 6);
        assert!(matches!(
            validate_produced(&stamped, &RULES, 5),
            Err(BatchError::InvalidTimestamp { .. })
        ));
        let log_append = ProduceRules {
            log_append_time: true,
            ..RULES
        };
        assert!(validate_produced(&stamped, &log_append, 5).is_ok());
    }

    #[test]
    fn compacted_topics_refuse_keyless_records_by_index() {
        let compacted = ProduceRules {
            keys_required: true,
            ..RULES
        };
        let batch = keyed(5, |index| (index % 2 == 0).then(|| vec![b'k'; index])).finish();
        match validate_produced(&batch, &compacted, 1_000) {
            Err(BatchError::Records {
                kind,
                records,
                summary,
            }) => {
                assert_eq!(kind, RecordErrorKind::InvalidRecord);
                let indexes: Vec<i32> = records.iter().map(|error| error.batch_index).collect();
                assert_eq!(indexes, vec![1, 3]);
                assert!(summary.contains("2 record errors"), "{summary}");
            }
            other => panic!("expected record errors, got {other:?}"),
        }
        // An empty key is a key.
        let batch = keyed(2, |_| Some(Vec::new())).finish();
        assert!(validate_produced(&batch, &compacted, 1_000).is_ok());
    }

    #[test]
    fn compressed_batches_are_walked_through_their_codec() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut builder = keyed(50, |index| Some(index.to_string().into_bytes()));
            let batch = builder.finish_compressed(codec).unwrap();
            assert_eq!(BatchHeader::parse(&batch).unwrap().compression(), codec);
            let validated = validate_produced(&batch, &RULES, 1_000).unwrap();
            assert_eq!(validated.max_timestamp, 1_049, "{codec:?}");
            // The same lie as above, inside a compressed batch.
            let mut lying = batch.clone();
            lying[RECORDS_COUNT_AT..RECORDS_COUNT_AT + 4].copy_from_slice(&51i32.to_be_bytes());
            lying[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
                .copy_from_slice(&50i32.to_be_bytes());
            recrc(&mut lying);
            let error = validate_produced(&lying, &RULES, 1_000).unwrap_err();
            assert!(
                error.to_string().contains("premature EOF"),
                "{codec:?}: {error}"
            );
            // Records that are not a valid stream of that codec.
            let mut garbage = batch[..BATCH_HEADER_BYTES].to_vec();
            garbage.extend_from_slice(&[0x5a; 200]);
            let length = (garbage.len() - LOG_OVERHEAD) as i32;
            garbage[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
            recrc(&mut garbage);
            assert!(
                matches!(
                    validate_produced(&garbage, &RULES, 1_000),
                    Err(BatchError::Invalid { .. })
                ),
                "{codec:?}"
            );
        }
    }

    /// A few kilobytes that decompress to far more than any batch may: refused after the bound,
    /// without decompressing the rest.
    #[test]
    fn a_decompression_bomb_is_refused_at_the_bound() {
        let huge = vec![0u8; crate::codec::DECOMPRESSED_BATCH_BYTES_MAX + 4096];
        let compressed = crate::codec::compress(Compression::Zstd, &huge).unwrap();
        let mut batch = build_uncompressed_batch(1, 1, 1_000)[..BATCH_HEADER_BYTES].to_vec();
        batch.extend_from_slice(&compressed);
        let length = (batch.len() - LOG_OVERHEAD) as i32;
        batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&length.to_be_bytes());
        let attributes = 4i16;
        batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
        recrc(&mut batch);
        assert!(batch.len() < 64 * 1024, "the bomb is small");
        assert!(matches!(
            validate_produced(&batch, &RULES, 1_000),
            Err(BatchError::Invalid { .. })
        ));
    }

    #[test]
    fn damaged_record_structure_is_invalid_never_a_panic() {
        let mut builder = BatchBuilder::default();
        builder.push_parts(
            1_000,
            Some(b"key"),
            Some(&[b"value"]),
            &[(b"h", Some(b"v")), (b"h2", None)],
        );
        let batch = builder.finish();
        assert!(validate_produced(&batch, &RULES, 1_000).is_ok());
        for position in BATCH_HEADER_BYTES..batch.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut damaged = batch.clone();
                damaged[position] = value;
                recrc(&mut damaged);
                // Any outcome but a panic; most are refusals.
                let _ = validate_produced(&damaged, &RULES, 1_000);
            }
        }
        let records = &batch[BATCH_HEADER_BYTES..];
        let parsed: Vec<_> = RecordIter::new(records, 1).collect();
        let record = parsed[0].as_ref().unwrap();
        assert_eq!(record.key, Some(&b"key"[..]));
        assert_eq!(record.value, Some(&b"value"[..]));
        let headers: Vec<_> = record.headers.iter().collect();
        assert_eq!(
            headers,
            vec![(&b"h"[..], Some(&b"v"[..])), (&b"h2"[..], None)]
        );
    }

    #[test]
    fn control_batches_and_unknown_codecs_are_refused() {
        let mut control = build_uncompressed_batch(1, 1, 1_000);
        control[ATTRIBUTES_AT + 1] |= 0x20;
        recrc(&mut control);
        assert!(matches!(
            validate_produced(&control, &RULES, 1_000),
            Err(BatchError::Invalid { .. })
        ));
        let mut codec = build_uncompressed_batch(1, 1, 1_000);
        codec[ATTRIBUTES_AT + 1] |= 0x06;
        recrc(&mut codec);
        assert!(matches!(
            validate_produced(&codec, &RULES, 1_000),
            Err(BatchError::Invalid { .. })
        ));
    }

    #[test]
    fn log_append_time_rewrites_timestamp_and_keeps_the_crc_valid() {
        let mut batch = build_uncompressed_batch(2, 3, 5);
        stamp_log_append_time(&mut batch, 99_999);
        let header = check_integrity(&batch).unwrap();
        assert_eq!(header.max_timestamp, 99_999);
        assert!(header.is_log_append_time());
    }

    #[test]
    fn timestamp_lookup_inside_a_batch_finds_the_record() {
        for codec in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut builder = BatchBuilder::default();
            for index in 0..5 {
                builder.push(100 + index, None, Some(b"xy"));
            }
            let mut batch = builder.finish_compressed(codec).unwrap();
            assign_offset(&mut batch, Offset(50), 0);
            assert_eq!(
                crate::first_offset_at_or_after(&batch, 0, Offset(0)),
                Some((Offset(50), 100))
            );
            assert_eq!(
                crate::first_offset_at_or_after(&batch, 0, Offset(52)),
                Some((Offset(52), 102)),
                "a log start inside the batch hides the records below it"
            );
            assert_eq!(crate::first_offset_at_or_after(&batch, 0, Offset(55)), None);
            assert_eq!(
                crate::first_offset_at_or_after(&batch, 103, Offset(0)),
                Some((Offset(53), 103)),
                "{codec:?}"
            );
            assert_eq!(
                crate::first_offset_at_or_after(&batch, 105, Offset(0)),
                None
            );
        }
    }

    #[test]
    fn walk_stops_at_a_partial_batch() {
        let mut run = build_uncompressed_batch(1, 10, 0);
        let second = build_uncompressed_batch(2, 10, 0);
        run.extend(&second);
        run.extend(&second[..30]);
        let walked: Vec<_> = BatchWalk::new(&run).collect();
        assert_eq!(walked.len(), 2);
        assert_eq!(walked[1].1.end, run.len() - 30);
    }

    #[test]
    fn producer_batches_carry_their_fields_and_sequences_advance() {
        let mut builder = BatchBuilder::for_producer(7, 2, i32::MAX - 1);
        builder.push(1, None, Some(b"a"));
        builder.push(2, None, Some(b"b"));
        let first = builder.finish();
        let header = check_integrity(&first).unwrap();
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (7, 2, i32::MAX - 1)
        );
        builder.push(3, None, Some(b"c"));
        let second = builder.finish();
        assert_eq!(
            BatchHeader::parse(&second).unwrap().base_sequence,
            0,
            "sequences wrap"
        );
        assert!(validate_produced(&second, &RULES, 3).is_ok());
    }
}
