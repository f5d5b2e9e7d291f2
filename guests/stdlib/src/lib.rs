//! A guest written with ordinary `std`: a `HashMap` (seeded from WASI's random), `println!`
//! (into the pipeline's guest log), `SystemTime::now()` (WASI's wall clock) and a refused
//! `std::fs::read` (an error, not a trap). One record per flow says what each gave.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_guest::{Config, Error, Flows, Output, Transform};

/// Counts the flows of each layers path in the batch.
pub struct Stdlib;

impl Transform for Stdlib {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Stdlib)
    }

    fn transform(&mut self, flows: Flows<'_>, out: &mut Output) -> Result<(), Error> {
        let mut per_path: HashMap<String, i64> = HashMap::new();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let file = match std::fs::read("/etc/passwd") {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(e) => format!("refused: {e}"),
        };
        let mut count = 0;
        for flow in &flows {
            let flow = flow?;
            *per_path.entry(flow.layers_path().to_string()).or_default() += 1;
            count += 1;
            out.record()
                .str("UUID", flow.uuid())
                .int("SamePath", per_path[flow.layers_path()])
                .int("NowMs", now_ms)
                .str("File", &file);
        }
        println!(
            "stdlib guest: {count} flows, {} layers paths",
            per_path.len()
        );
        eprintln!("stdlib guest: done");
        Ok(())
    }
}

sluice_guest::export_transform!(Stdlib);
