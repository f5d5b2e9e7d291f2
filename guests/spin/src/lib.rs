//! Hostile: never returns (an infinite loop). The host stops it by fuel or by the deadline.

use sluice_guest::{Config, Error, Flows, Output, Transform};

/// Spins.
pub struct Spin;

impl Transform for Spin {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Spin)
    }

    fn transform(&mut self, _flows: Flows<'_>, _out: &mut Output) -> Result<(), Error> {
        let mut x: u64 = 1;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

sluice_guest::export_transform!(Spin);
