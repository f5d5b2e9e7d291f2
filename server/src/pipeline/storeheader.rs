//! Store headers: what wraps an object's records before encoding.

use super::record::Record;
use crate::config::{StoreHeaderSection, StoreHeaderType};

/// What the encoder is given for one object.
#[derive(Debug)]
pub enum StoreObject<'a> {
    /// The records as a list (storeheader `none`).
    Records(&'a [Record]),
}

impl serde::Serialize for StoreObject<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StoreObject::Records(records) => records.serialize(s),
        }
    }
}

/// A configured store header.
#[derive(Debug, Clone)]
pub enum StoreHeader {
    /// The object is the record list.
    None,
}

impl StoreHeader {
    /// Builds from a validated config section.
    pub fn from_config(section: &StoreHeaderSection) -> Self {
        match section.kind {
            StoreHeaderType::None => StoreHeader::None,
            // Filled in by the vpclogs issue; config validation keeps it unreachable until then.
            StoreHeaderType::Vpclogs => StoreHeader::None,
        }
    }

    /// Wraps one object's records; `start_ms`/`end_ms` bound the time the object covers.
    pub fn wrap<'a>(
        &'a self,
        records: &'a [Record],
        _start_ms: i64,
        _end_ms: i64,
    ) -> StoreObject<'a> {
        match self {
            StoreHeader::None => StoreObject::Records(records),
        }
    }
}
