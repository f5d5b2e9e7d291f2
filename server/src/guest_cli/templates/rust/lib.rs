//! A sluice transform: keeps the flows to one destination port and writes a small record for
//! each. Config: `{"port": 443}` (the default).
//!
//! `cargo test` runs the tests below natively; `sluice guest build .` makes the component.

use sluice_guest::{Config, Error, Flows, Output, Transform};

/// The configured stage, built in every fresh instance (one per analyzer message). (Not
/// `Guest`: the bindings the export macro generates define a trait of that name.)
pub struct KeepPort {
    port: i64,
}

impl Transform for KeepPort {
    /// `config` is the pipeline's `transform.wasm.config`; an error refuses it.
    fn init(config: &Config) -> Result<Self, Error> {
        let port = match config.get("port") {
            None => 443,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| Error::new(format!("port must be an integer, not {v}")))?,
        };
        Ok(KeepPort { port })
    }

    fn transform(&mut self, flows: Flows<'_>, out: &mut Output) -> Result<(), Error> {
        let (mut seen, mut kept) = (0, 0);
        for flow in &flows {
            let flow = flow?;
            seen += 1;
            // A flow without a record is dropped (counted as `transform`).
            let Some(t) = flow.transport() else { continue };
            if t.b != self.port {
                continue;
            }
            let net = flow.network();
            out.record()
                .str("UUID", flow.uuid())
                .str("Src", net.map_or("", |n| n.a))
                .str("Dst", net.map_or("", |n| n.b))
                .int("Port", t.b)
                .int("Bytes", flow.metric().map_or(0, |m| m.ab_bytes + m.ba_bytes));
            kept += 1;
        }
        // Into the pipeline's guest log (GET /v1/pipelines/{id}/logs). Every line counts
        // against the log's budget: drop this once the guest works.
        println!("kept {kept} of {seen} flows");
        Ok(())
    }
}

sluice_guest::export_transform!(KeepPort);

#[cfg(test)]
mod tests {
    use sluice_guest::testing::{FlowData, run_transform};

    use super::KeepPort;

    #[test]
    fn keeps_the_configured_port() {
        let flows = [
            FlowData::tcp4("10.0.0.1", 40000, "10.0.0.2", 443),
            FlowData::tcp4("10.0.0.1", 40001, "10.0.0.2", 80),
        ];
        let out = run_transform::<KeepPort>(r#"{"port": 443}"#, &flows).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].to_json_text(),
            r#"{"UUID":"10.0.0.1:40000-10.0.0.2:443","Src":"10.0.0.1","Dst":"10.0.0.2","Port":443,"Bytes":1276}"#
        );
    }

    #[test]
    fn refuses_a_port_that_is_not_a_number() {
        let flows = [FlowData::tcp4("10.0.0.1", 40000, "10.0.0.2", 443)];
        assert!(run_transform::<KeepPort>(r#"{"port": "https"}"#, &flows).is_err());
    }
}
