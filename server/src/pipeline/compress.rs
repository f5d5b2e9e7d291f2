//! Compressors. gzip runs on flate2's zlib-rs backend (1.7–2.3× faster than miniz_oxide here).

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::config::{CompressSection, CompressType};

/// The default gzip level, as Go's `compress/gzip`.
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// A configured compressor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressor {
    /// Bytes pass unchanged.
    None,
    /// gzip at a level 0–9.
    Gzip {
        /// Compression level.
        level: u32,
    },
}

impl Compressor {
    /// Builds from a validated config section.
    pub fn from_config(section: &CompressSection) -> Self {
        match section.kind {
            CompressType::None => Compressor::None,
            CompressType::Gzip => Compressor::Gzip {
                level: section.gzip.level.unwrap_or(DEFAULT_GZIP_LEVEL),
            },
        }
    }

    /// The object's Content-Encoding, if any.
    pub fn content_encoding(&self) -> Option<&'static str> {
        match self {
            Compressor::None => None,
            Compressor::Gzip { .. } => Some("gzip"),
        }
    }

    /// Compresses `data`; `None` hands the same buffer back without copying.
    pub fn compress(&self, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
        match self {
            Compressor::None => Ok(data),
            Compressor::Gzip { level } => {
                let mut gz = GzEncoder::new(
                    Vec::with_capacity(data.len() / 4 + 64),
                    Compression::new(*level),
                );
                gz.write_all(&data)?;
                gz.finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_round_trips_at_every_level() {
        let data: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for level in 0..=9 {
            let gz = Compressor::Gzip { level }.compress(data.clone()).unwrap();
            assert_eq!(&gz[..2], &[0x1f, 0x8b]);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "level {level}");
        }
        assert_eq!(Compressor::None.compress(data.clone()).unwrap(), data);
    }
}
