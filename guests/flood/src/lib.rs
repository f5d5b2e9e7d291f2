//! Hostile: returns a huge output (config `{"bytes": N}`, 24 MiB by default), more than the
//! host's output limit. The host refuses the batch.

use sluice_guest::{Config, Error, Flows, Output, Transform};

/// Floods.
pub struct Flood {
    bytes: usize,
}

impl Transform for Flood {
    fn init(config: &Config) -> Result<Self, Error> {
        Ok(Flood {
            bytes: config.u64("bytes").unwrap_or(24 << 20) as usize,
        })
    }

    fn transform(&mut self, _flows: Flows<'_>, out: &mut Output) -> Result<(), Error> {
        let chunk = "x".repeat(64 << 10);
        for _ in 0..self.bytes.div_ceil(chunk.len()) {
            out.record().str("Flood", &chunk);
        }
        Ok(())
    }
}

sluice_guest::export_transform!(Flood);
