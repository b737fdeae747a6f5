//! The four codecs of Kafka's batches, both ways, with the decompressed size bounded.
//!
//! Decompression is streaming for gzip, lz4 and zstd, and for xerial-framed snappy (the Java
//! producer's format, blocks of at most 32 KiB); raw snappy (librdkafka's and kafka-protocol's
//! fallback) is one block whose decompressed length is declared up front and checked against
//! the bound before anything is allocated. Every reader stops with an error once it has produced
//! `limit` bytes, so a small batch that decompresses to gigabytes costs at most `limit`.

use std::io::{BufRead, BufReader, Cursor, Read, Write};

use crate::header::Compression;

/// The most bytes a batch may decompress to. Kafka sets no bound; producers' batches are at most
/// `max.message.bytes` compressed, and even very repetitive data seldom compresses 64 times, so a
/// larger claim is treated as an attack. It bounds both the memory and the CPU one batch costs.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 * 1024 * 1024;

/// zstd's window is memory the decoder allocates from a frame's own header. Level 19, the
/// highest level producers use in practice, needs 8 MiB (2^23); libzstd would accept 2^27.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// xerial's snappy framing, as the Java producer writes it (`SnappyOutputStream`): this 8-byte
/// magic, two 4-byte version fields, then blocks of [i32 length][raw snappy block]. xerial's
/// reader, and so Kafka, decides between framed and raw by these 8 bytes alone.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
const XERIAL_HEADER_BYTES: usize = 16;

fn invalid(error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string())
}

/// A reader that refuses to produce more than `limit` bytes.
struct Capped<R> {
    inner: R,
    left: usize,
    limit: usize,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a stream that ends exactly at the limit from one that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(invalid(format!(
                    "the records decompress to more than {} bytes",
                    self.limit
                ))),
            };
        }
        let wanted = buffer.len().min(self.left);
        let read = self.inner.read(&mut buffer[..wanted])?;
        self.left -= read;
        Ok(read)
    }
}

/// The blocks of a xerial-framed snappy stream, decompressed one at a time.
struct XerialSnappy<'a> {
    input: &'a [u8],
    block: Vec<u8>,
    at: usize,
    left: usize,
    decoder: snap::raw::Decoder,
}

impl XerialSnappy<'_> {
    /// Decompresses the next block into `self.block`; false at the end of the input.
    fn next_block(&mut self) -> std::io::Result<bool> {
        // Concatenated framed streams repeat the header; xerial skips it.
        while self.input.starts_with(XERIAL_MAGIC) {
            self.input = self
                .input
                .get(XERIAL_HEADER_BYTES..)
                .ok_or_else(|| invalid("truncated snappy stream header"))?;
        }
        if self.input.is_empty() {
            return Ok(false);
        }
        let length = self
            .input
            .get(..4)
            .map(|raw| i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
            .ok_or_else(|| invalid("truncated snappy block length"))?;
        let length =
            usize::try_from(length).map_err(|_| invalid("negative snappy block length"))?;
        let block = self
            .input
            .get(4..4 + length)
            .ok_or_else(|| invalid("snappy block runs past the batch"))?;
        let decompressed = snap::raw::decompress_len(block).map_err(invalid)?;
        if decompressed > self.left {
            return Err(invalid("the records decompress to more than the limit"));
        }
        self.block.resize(decompressed, 0);
        let written = self
            .decoder
            .decompress(block, &mut self.block)
            .map_err(invalid)?;
        self.block.truncate(written);
        self.left -= written;
        self.at = 0;
        self.input = &self.input[4 + length..];
        Ok(true)
    }
}

impl Read for XerialSnappy<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let count = buffer.len().min(self.block.len() - self.at);
        buffer[..count].copy_from_slice(&self.block[self.at..self.at + count]);
        self.at += count;
        Ok(count)
    }
}

/// A buffered reader over the decompressed records of a batch whose records section (the bytes
/// after the 61-byte header) is `compressed`. Fails when the codec's framing is broken or the
/// output would pass `limit` bytes.
pub fn decompressing_reader<'a>(
    compression: Compression,
    compressed: &'a [u8],
    limit: usize,
) -> std::io::Result<Box<dyn BufRead + 'a>> {
    let capped = |inner: Box<dyn Read + 'a>| -> Box<dyn BufRead + 'a> {
        Box::new(BufReader::with_capacity(
            16 * 1024,
            Capped {
                inner,
                left: limit,
                limit,
            },
        ))
    };
    Ok(match compression {
        Compression::None => Box::new(compressed),
        Compression::Gzip => capped(Box::new(flate2::bufread::MultiGzDecoder::new(compressed))),
        Compression::Lz4 => capped(Box::new(lz4::Decoder::new(compressed)?)),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed)?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            capped(Box::new(decoder))
        }
        Compression::Snappy if compressed.starts_with(XERIAL_MAGIC) => {
            Box::new(BufReader::with_capacity(
                16 * 1024,
                XerialSnappy {
                    input: compressed,
                    block: Vec::new(),
                    at: 0,
                    left: limit,
                    decoder: snap::raw::Decoder::new(),
                },
            ))
        }
        Compression::Snappy => {
            let length = snap::raw::decompress_len(compressed).map_err(invalid)?;
            if length > limit {
                return Err(invalid(format!(
                    "the records decompress to {length} bytes, more than {limit}"
                )));
            }
            let records = snap::raw::Decoder::new()
                .decompress_vec(compressed)
                .map_err(invalid)?;
            Box::new(Cursor::new(records))
        }
    })
}

/// Compresses a batch's records section with `compression` as Kafka's clients do: gzip, raw
/// snappy (as librdkafka writes it; every reader accepts it), an LZ4 frame with independent
/// blocks, or one zstd frame at level 3.
pub fn compress(compression: Compression, records: &[u8]) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::None => Ok(records.to_vec()),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(records)?;
            encoder.finish()
        }
        Compression::Snappy => snap::raw::Encoder::new()
            .compress_vec(records)
            .map_err(invalid),
        Compression::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())?;
            encoder.write_all(records)?;
            let (compressed, result) = encoder.finish();
            result.map(|()| compressed)
        }
        Compression::Zstd => zstd::bulk::compress(records, 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decompress_all(
        compression: Compression,
        bytes: &[u8],
        limit: usize,
    ) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decompressing_reader(compression, bytes, limit)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn every_codec_round_trips() {
        let records: Vec<u8> = (0..100_000u32).map(|n| (n % 251) as u8).collect();
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let compressed = compress(codec, &records).unwrap();
            assert_eq!(
                decompress_all(codec, &compressed, records.len()).unwrap(),
                records,
                "{codec:?}"
            );
        }
    }

    #[test]
    fn output_beyond_the_limit_is_refused_for_every_codec() {
        let records = vec![0u8; 1 << 20];
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let compressed = compress(codec, &records).unwrap();
            assert!(
                compressed.len() < records.len() / 10,
                "{codec:?} compresses zeros"
            );
            assert!(
                decompress_all(codec, &compressed, records.len() - 1).is_err(),
                "{codec:?}"
            );
            assert!(
                decompress_all(codec, &compressed, records.len()).is_ok(),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn xerial_framed_snappy_is_read_in_blocks() {
        let records: Vec<u8> = (0..70_000u32).map(|n| (n % 7) as u8).collect();
        let mut framed = Vec::new();
        framed.extend_from_slice(XERIAL_MAGIC);
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for block in records.chunks(32 * 1024) {
            let compressed = snap::raw::Encoder::new().compress_vec(block).unwrap();
            framed.extend_from_slice(&(compressed.len() as i32).to_be_bytes());
            framed.extend_from_slice(&compressed);
        }
        assert_eq!(
            decompress_all(Compression::Snappy, &framed, records.len()).unwrap(),
            records
        );
        assert!(decompress_all(Compression::Snappy, &framed, records.len() - 1).is_err());
        // A block length that runs past the end is an error, not a panic.
        let mut cut = framed.clone();
        cut.truncate(framed.len() - 3);
        assert!(decompress_all(Compression::Snappy, &cut, records.len()).is_err());
    }

    #[test]
    fn garbage_is_an_error_for_every_codec() {
        let garbage = [0x55u8; 300];
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(
                decompress_all(codec, &garbage, 1 << 20).is_err(),
                "{codec:?}"
            );
        }
    }
}
