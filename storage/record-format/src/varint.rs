//! Kafka's variable-length integers: zigzag-encoded signed varints (record fields) and unsigned
//! varints (compact lengths), seven bits a byte, least significant group first.

/// The bytes `value` takes as a zigzag varint.
pub fn varint_len(value: i64) -> usize {
    let mut zigzag = zigzag(value);
    let mut length = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        length += 1;
    }
    length
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Appends `value` as a zigzag varint.
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = zigzag(value);
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// Reads a zigzag varint of at most ten bytes: the value and the bytes it took, or `None` if
/// `bytes` ends first or the encoding is longer than a 64-bit value needs.
pub fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for (index, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((unzigzag(value), index + 1));
        }
    }
    None
}

pub(crate) fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_with_their_encoded_length() {
        for value in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
            assert_eq!(read_varint(&out), Some((value, out.len())), "{value}");
        }
    }

    #[test]
    fn truncated_and_overlong_encodings_are_refused() {
        assert_eq!(read_varint(&[]), None);
        assert_eq!(read_varint(&[0x80, 0x80]), None);
        assert_eq!(read_varint(&[0xff; 11]), None);
        // Kafka's encoding of -1 is one byte.
        assert_eq!(read_varint(&[0x01]), Some((-1, 1)));
    }
}
