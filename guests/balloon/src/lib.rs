//! Hostile: allocates without end. The host's memory cap stops it.

use sluice_guest::{Config, Error, Flows, Output, Transform};

/// Grows.
pub struct Balloon;

impl Transform for Balloon {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Balloon)
    }

    fn transform(&mut self, _flows: Flows<'_>, _out: &mut Output) -> Result<(), Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
}

sluice_guest::export_transform!(Balloon);
