//! Masks IP addresses to a prefix length: one flat record per flow with the addresses
//! anonymized.
//!
//! Config: `{"ipv4_prefix": 24, "ipv6_prefix": 48}` (those are the defaults); `"log": true`
//! also writes a line per batch to the pipeline's guest log.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sluice_guest::{Config, Error, Flows, Level, Output, Transform};

/// The configured anonymizer.
pub struct Anonymize {
    ipv4_prefix: u32,
    ipv6_prefix: u32,
    log: bool,
    src: String,
    dst: String,
}

/// `addr` with the bits past `prefix` cleared; text that is not an address becomes `""`.
pub fn mask(addr: &str, ipv4_prefix: u32, ipv6_prefix: u32, out: &mut String) {
    out.clear();
    let _ = match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => {
            let bits = u32::from(a);
            let keep = u32::MAX.checked_shl(32 - ipv4_prefix).unwrap_or(0);
            write!(out, "{}", Ipv4Addr::from(bits & keep))
        }
        Ok(IpAddr::V6(a)) => {
            let bits = u128::from(a);
            let keep = u128::MAX.checked_shl(128 - ipv6_prefix).unwrap_or(0);
            write!(out, "{}", Ipv6Addr::from(bits & keep))
        }
        Err(_) => Ok(()),
    };
}

impl Transform for Anonymize {
    fn init(config: &Config) -> Result<Self, Error> {
        let ipv4_prefix = config.u64("ipv4_prefix").unwrap_or(24);
        let ipv6_prefix = config.u64("ipv6_prefix").unwrap_or(48);
        if ipv4_prefix > 32 || ipv6_prefix > 128 {
            return Err(Error::new(format!(
                "prefix out of range: ipv4_prefix {ipv4_prefix} (0-32), ipv6_prefix {ipv6_prefix} (0-128)"
            )));
        }
        Ok(Anonymize {
            ipv4_prefix: ipv4_prefix as u32,
            ipv6_prefix: ipv6_prefix as u32,
            log: config.bool("log").unwrap_or(false),
            src: String::new(),
            dst: String::new(),
        })
    }

    fn transform(&mut self, flows: Flows<'_>, out: &mut Output) -> Result<(), Error> {
        let mut count = 0;
        for flow in &flows {
            count += 1;
            let flow = flow?;
            let network = flow.network();
            mask(
                network.map_or("", |n| n.a),
                self.ipv4_prefix,
                self.ipv6_prefix,
                &mut self.src,
            );
            mask(
                network.map_or("", |n| n.b),
                self.ipv4_prefix,
                self.ipv6_prefix,
                &mut self.dst,
            );
            let transport = flow.transport();
            let metric = flow.metric().unwrap_or_default();
            out.record()
                .str("UUID", flow.uuid())
                .str("LayersPath", flow.layers_path())
                .str("SrcAddr", &self.src)
                .str("DstAddr", &self.dst)
                .int("SrcPort", transport.map_or(0, |t| t.a))
                .int("DstPort", transport.map_or(0, |t| t.b))
                .str("Protocol", transport.map_or("", |t| t.protocol.name()))
                .int("Packets", metric.ab_packets + metric.ba_packets)
                .int("Bytes", metric.ab_bytes + metric.ba_bytes)
                .int("Start", flow.start())
                .int("Last", flow.last());
        }
        if self.log {
            sluice_guest::log(
                Level::Info,
                &format!(
                    "anonymized {count} flows to /{} (IPv4) and /{} (IPv6)",
                    self.ipv4_prefix, self.ipv6_prefix
                ),
            );
        }
        Ok(())
    }
}

sluice_guest::export_transform!(Anonymize);

#[cfg(test)]
mod tests {
    use sluice_guest::testing::{FlowData, run_transform};

    use super::*;

    #[test]
    fn masks_to_the_configured_prefix() {
        let mut s = String::new();
        mask("192.168.77.201", 24, 48, &mut s);
        assert_eq!(s, "192.168.77.0");
        mask("192.168.77.201", 0, 48, &mut s);
        assert_eq!(s, "0.0.0.0");
        mask("fd00:1:2:3::42", 24, 48, &mut s);
        assert_eq!(s, "fd00:1:2::");
        mask("not an address", 24, 48, &mut s);
        assert_eq!(s, "");
    }

    #[test]
    fn records_carry_masked_addresses() {
        let flows = [FlowData::tcp4("10.1.2.3", 1234, "10.9.8.7", 80)];
        let r = run_transform::<Anonymize>(r#"{"ipv4_prefix": 16}"#, &flows).unwrap();
        assert_eq!(r[0].get_str("SrcAddr"), Some("10.1.0.0"));
        assert_eq!(r[0].get_str("DstAddr"), Some("10.9.0.0"));
        assert!(run_transform::<Anonymize>(r#"{"ipv4_prefix": 33}"#, &flows).is_err());
    }
}
