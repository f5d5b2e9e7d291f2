//! Bounds-checked little-endian reading and writing of the batch encoding (ENCODING.md §1).

use std::fmt;

/// Batch kind byte: flows.
pub const KIND_FLOWS: u8 = 1;
/// Batch kind byte: records.
pub const KIND_RECORDS: u8 = 2;

/// Why a batch could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The batch ended inside a field.
    Truncated,
    /// An encoding version this SDK doesn't know.
    Version(u8),
    /// Not the batch kind expected here.
    Kind(u8),
    /// A string that is not UTF-8.
    Utf8,
    /// Something else out of shape, described.
    Invalid(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("batch truncated"),
            WireError::Version(v) => write!(f, "unknown batch encoding version {v}"),
            WireError::Kind(k) => write!(f, "unexpected batch kind {k}"),
            WireError::Utf8 => f.write_str("string is not UTF-8"),
            WireError::Invalid(what) => write!(f, "malformed batch: {what}"),
        }
    }
}

impl std::error::Error for WireError {}

/// A cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// What is left.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let b = self.bytes(N)?;
        let mut out = [0; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// A `u8`.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    /// A `u16`.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        self.array().map(u16::from_le_bytes)
    }
    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_le_bytes)
    }
    /// An `i64`.
    pub fn i64(&mut self) -> Result<i64, WireError> {
        self.array().map(i64::from_le_bytes)
    }
    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        self.array().map(u64::from_le_bytes)
    }
    /// An `f64`.
    pub fn f64(&mut self) -> Result<f64, WireError> {
        self.array().map(f64::from_le_bytes)
    }
    /// A `str`: `u32` length and UTF-8 bytes.
    pub fn str(&mut self) -> Result<&'a str, WireError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| WireError::Utf8)
    }
}

/// Appends little-endian fields to a byte vector.
pub trait Writer {
    /// A `u8`.
    fn put_u8(&mut self, v: u8);
    /// A `u16`.
    fn put_u16(&mut self, v: u16);
    /// A `u32`.
    fn put_u32(&mut self, v: u32);
    /// An `i64`.
    fn put_i64(&mut self, v: i64);
    /// A `u64`.
    fn put_u64(&mut self, v: u64);
    /// An `f64`.
    fn put_f64(&mut self, v: f64);
    /// A `str`.
    fn put_str(&mut self, v: &str);
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_f64(&mut self, v: f64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_str(&mut self, v: &str) {
        self.put_u32(v.len() as u32);
        self.extend_from_slice(v.as_bytes());
    }
}
