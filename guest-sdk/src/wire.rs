//! Bounds-checked little-endian reading and writing of the batch encoding (ENCODING.md §1),
//! from `sluice-wire`, the implementation the host uses too.

pub use sluice_wire::{KIND_FLOWS, KIND_RECORDS, Reader, WireError, Writer};
