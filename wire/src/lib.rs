//! The batch encoding, version 1 (`guest-sdk/ENCODING.md`): how flows and records cross the
//! wasm boundary as bytes. One implementation, used by both sides: the host (`server/src/wasm`)
//! encodes flow batches and record batches and checks the record batches guests return; the
//! guest SDK (`guest-sdk`) reads them and writes its records with it.
//!
//! - [`Reader`] and [`Writer`]: bounds-checked little-endian fields (§1);
//! - [`flow`]: the flow batch (§2): its writer of [`flow::FlowFields`] (a flow's fields, which
//!   each side borrows from its own flow model), and the reading of its header and sections;
//! - [`record`]: the record batch (§3): values and fields, the [`record::BatchWriter`] and the
//!   checking reader [`record::RecordBatch`].
//!
//! It depends on nothing, so every guest can carry it. What is not the format stays with its
//! user: how the host shares schemas between records and checks JSON texts, how the SDK lets a
//! guest build records by name.

#![deny(missing_docs)]

pub mod flow;
pub mod record;

mod bytes;

pub use bytes::{Reader, Writer};

/// The encoding version written and accepted: the first byte of every batch.
pub const VERSION: u8 = 1;
/// Batch kind byte (the second byte): flows.
pub const KIND_FLOWS: u8 = 1;
/// Batch kind byte: records.
pub const KIND_RECORDS: u8 = 2;

/// Why a batch could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The batch ended inside a field.
    Truncated,
    /// An encoding version this side doesn't know.
    Version(u8),
    /// Not the batch kind expected here.
    Kind(u8),
    /// A string that is not UTF-8.
    Utf8,
    /// Something else out of shape, described.
    Invalid(&'static str),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// Reads a batch's version and kind bytes and checks them.
fn read_kind(r: &mut Reader<'_>, kind: u8) -> Result<(), WireError> {
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let got = r.u8()?;
    if got != kind {
        return Err(WireError::Kind(got));
    }
    Ok(())
}
