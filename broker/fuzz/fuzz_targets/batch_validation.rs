//! A produced batch from a stranger, through the LogValidator checks (every record walked,
//! through the codec when compressed), under each set of topic rules, and through the other
//! readers of stored batches. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use record_format::{
    first_offset_at_or_after, records_section, validate_produced, BatchHeader, BatchWalk,
    ProduceRules, RecordIter,
};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    // The fuzzer cannot forge CRC-32C: on odd modes the batch's CRC is made right, so the
    // record walk behind it gets the bytes.
    let mut batch = data.to_vec();
    if mode % 2 == 1 && batch.len() >= record_format::BATCH_HEADER_BYTES {
        let crc = record_format::compute_crc(&batch);
        batch[record_format::CRC_AT..record_format::CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
    let data = &batch[..];
    for (log_append_time, keys_required) in [(false, false), (true, true)] {
        let rules = ProduceRules {
            max_message_bytes: 1 << 20,
            timestamp_after_max_ms: 3_600_000,
            timestamp_before_max_ms: i64::MAX,
            log_append_time,
            keys_required,
        };
        let _ = validate_produced(data, &rules, 1_700_000_000_000);
    }
    let _ = first_offset_at_or_after(data, 0, record_format::Offset(0));
    for (header, range) in BatchWalk::new(data) {
        if let Ok(section) = records_section(&data[range]) {
            let count = usize::try_from(header.records_count)
                .unwrap_or(0)
                .min(1 << 16);
            for record in RecordIter::new(&section, count).flatten() {
                let _ = record.headers.iter().count();
            }
        }
    }
    let _ = BatchHeader::parse(data).map(|header| header.total_bytes());
});
