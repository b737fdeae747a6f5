//! A request frame from a stranger, through the broker's whole decode path: header, version,
//! the shape walk against the real bytes, the decoded-size bound, kafka-protocol's decoder.
//! Nothing may panic, and nothing may allocate far beyond the frame (libFuzzer's malloc limit
//! catches it).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let frame = bytes::Bytes::copy_from_slice(data);
    if let Ok(checked) = broker::kafka::request::check(frame) {
        let bound = checked.decoded_bytes;
        assert!(bound <= 32 * data.len() + (1 << 20), "the bound holds");
        let _ = checked.decode();
    }
});
