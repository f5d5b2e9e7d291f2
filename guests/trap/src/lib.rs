//! Hostile: panics, which is a wasm trap (`unreachable`).

use sluice_guest::{Config, Error, Flows, Output, Transform};

/// Panics on every batch.
pub struct Trap;

impl Transform for Trap {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Trap)
    }

    fn transform(&mut self, flows: Flows<'_>, _out: &mut Output) -> Result<(), Error> {
        panic!("trap guest: refusing {} flows", flows.len());
    }
}

sluice_guest::export_transform!(Trap);
