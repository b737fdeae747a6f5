//! The checksummed envelope around the storage crate's small metadata files (segment index
//! files, producer-state snapshots): a 16-byte header of magic (4), version (u16), reserved
//! (u16, zero), payload length (u32) and CRC-32C of the payload (u32), big-endian, then the
//! payload. A file whose envelope does not check out is ignored and rebuilt from the log.

const HEADER_BYTES: usize = 16;

/// `payload` inside an envelope with `magic` and `version`.
pub(crate) fn seal(magic: &[u8; 4], version: u16, payload: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(HEADER_BYTES + payload.len());
    file.extend_from_slice(magic);
    file.extend_from_slice(&version.to_be_bytes());
    file.extend_from_slice(&0u16.to_be_bytes());
    file.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    file.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    file.extend_from_slice(payload);
    file
}

/// The payload of `file`, or `None` unless magic, version, length and CRC all check out.
pub(crate) fn open<'a>(file: &'a [u8], magic: &[u8; 4], version: u16) -> Option<&'a [u8]> {
    let header = file.get(..HEADER_BYTES)?;
    if &header[..4] != magic || header[4..6] != version.to_be_bytes() {
        return None;
    }
    let length = u32::from_be_bytes(header[8..12].try_into().ok()?) as usize;
    let crc = u32::from_be_bytes(header[12..16].try_into().ok()?);
    let payload = file.get(HEADER_BYTES..HEADER_BYTES.checked_add(length)?)?;
    (crc32c::crc32c(payload) == crc).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_payloads_open_and_any_damage_is_refused() {
        let file = seal(b"TEST", 3, b"payload bytes");
        assert_eq!(open(&file, b"TEST", 3), Some(&b"payload bytes"[..]));
        assert_eq!(open(&file, b"TSET", 3), None);
        assert_eq!(open(&file, b"TEST", 4), None);
        assert_eq!(open(&file[..file.len() - 1], b"TEST", 3), None);
        for position in 0..file.len() {
            if (6..8).contains(&position) {
                continue; // the reserved bytes are not checked
            }
            let mut damaged = file.clone();
            damaged[position] ^= 0x01;
            assert_eq!(open(&damaged, b"TEST", 3), None, "byte {position}");
        }
    }
}
