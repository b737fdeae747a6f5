//! A small metadata file with any content (segment index, producer snapshot, recovery point,
//! all behind the checksummed envelope): read as each of them. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    storage::fuzzing::metadata_file(data);
});
