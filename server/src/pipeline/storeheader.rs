//! Store headers: what wraps an object's records before encoding.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::record::Record;
use super::transform::vpclogs::rfc3339;
use crate::config::{StoreHeaderSection, StoreHeaderType};

/// The `version` the vpclogs header carries (upstream's and IBM's example).
pub const VPCLOGS_VERSION: &str = "0.0.1";

/// The `state` of a vpclogs object: collected and shipped without error (IBM's `ok`).
pub const VPCLOGS_STATE_OK: &str = "ok";

/// What the encoder is given for one object.
#[derive(Debug)]
pub enum StoreObject<'a> {
    /// The records as a list (storeheader `none`).
    Records(&'a [Record]),
    /// An IBM VPC Flow Logs object: header fields and `flow_logs` (storeheader `vpclogs`).
    VpcLogs(VpcLogsObject<'a>),
}

impl serde::Serialize for StoreObject<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StoreObject::Records(records) => records.serialize(s),
            StoreObject::VpcLogs(object) => object.serialize(s),
        }
    }
}

/// One vpclogs object; it encodes as a JSON map with sorted keys.
#[derive(Debug)]
pub struct VpcLogsObject<'a> {
    /// `pipeline.storeheader.vpclogs`, lowercased keys, string values.
    pub fields: &'a BTreeMap<String, String>,
    /// `flow_logs`.
    pub records: &'a [Record],
    /// `capture_start_time`, ms.
    pub start_ms: i64,
    /// `capture_end_time`, ms.
    pub end_ms: i64,
}

enum Value<'a> {
    Str(&'a str),
    String(String),
    Count(usize),
    Records(&'a [Record]),
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Str(v) => s.serialize_str(v),
            Value::String(v) => s.serialize_str(v),
            Value::Count(n) => s.serialize_u64(*n as u64),
            Value::Records(r) => r.serialize(s),
        }
    }
}

impl Serialize for VpcLogsObject<'_> {
    /// The configured fields, then the fixed ones (which win over a configured field of the
    /// same name), all in key order as Go writes a map.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map: BTreeMap<&str, Value<'_>> = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), Value::Str(v)))
            .collect();
        map.insert("version", Value::Str(VPCLOGS_VERSION));
        map.insert("capture_start_time", Value::String(rfc3339(self.start_ms)));
        map.insert("capture_end_time", Value::String(rfc3339(self.end_ms)));
        map.insert("number_of_flow_logs", Value::Count(self.records.len()));
        map.insert("flow_logs", Value::Records(self.records));
        map.insert("state", Value::Str(VPCLOGS_STATE_OK));
        let mut m = s.serialize_map(Some(map.len()))?;
        for (k, v) in &map {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// A configured store header.
#[derive(Debug, Clone)]
pub enum StoreHeader {
    /// The object is the record list.
    None,
    /// IBM VPC Flow Logs object header.
    VpcLogs {
        /// `pipeline.storeheader.vpclogs` as strings.
        fields: BTreeMap<String, String>,
    },
}

/// A YAML scalar as viper's `GetStringMapString` gives it.
pub fn yaml_string(value: &serde_yaml::Value) -> String {
    match value {
        serde_yaml::Value::Null => String::new(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    }
}

/// `pipeline.storeheader.vpclogs` with keys lowercased (as viper does) and values as strings.
pub fn vpclogs_fields(section: &StoreHeaderSection) -> BTreeMap<String, String> {
    section
        .vpclogs
        .iter()
        .map(|(k, v)| (k.to_lowercase(), yaml_string(v)))
        .collect()
}

impl StoreHeader {
    /// Builds from a validated config section.
    pub fn from_config(section: &StoreHeaderSection) -> Self {
        match section.kind {
            StoreHeaderType::None => StoreHeader::None,
            StoreHeaderType::Vpclogs => StoreHeader::VpcLogs {
                fields: vpclogs_fields(section),
            },
        }
    }

    /// Wraps one object's records; `start_ms`/`end_ms` bound the time the object covers.
    pub fn wrap<'a>(
        &'a self,
        records: &'a [Record],
        start_ms: i64,
        end_ms: i64,
    ) -> StoreObject<'a> {
        match self {
            StoreHeader::None => StoreObject::Records(records),
            StoreHeader::VpcLogs { fields } => StoreObject::VpcLogs(VpcLogsObject {
                fields,
                records,
                start_ms,
                end_ms,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::encode::Encoder;
    use crate::pipeline::transform::vpclogs::VpcLog;
    use crate::pipeline::transform::vpclogs::tests::vectors;
    use crate::skydive::flow::Flow;

    const T0: i64 = 1546338030000;

    #[test]
    fn golden_vpclogs_header_with_sorted_keys() {
        let v = vectors();
        let case = &v["storeheader_cases"][0];
        let section: StoreHeaderSection = serde_yaml::from_str(
            "type: vpclogs\nvpclogs:\n  Collector_CRN: crn:abc\n  vpc_crn: crn:vpc\n  version: mine\n",
        )
        .unwrap();
        let header = StoreHeader::from_config(&section);
        let flow: Flow =
            serde_json::from_value(v["transform_cases"][0]["input_flow"].clone()).unwrap();
        let record = Record::VpcLog(Box::new(VpcLog::from_flow(&flow, &[]).unwrap()));
        let records = vec![record];
        let mut out = Vec::new();
        Encoder::Json { pretty: false }
            .encode(&header.wrap(&records, T0, T0 + 60_000), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut want = case["expected_object_sorted_keys"].clone();
        want["flow_logs"] = serde_json::json!([serde_json::to_value(&records[0]).unwrap()]);
        want["state"] = "ok".into();
        let got: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(got, want);
        // Sorted key order in the bytes; a fixed key wins over a configured one.
        let order = [
            "capture_end_time",
            "capture_start_time",
            "collector_crn",
            "flow_logs",
            "number_of_flow_logs",
            "state",
            "version",
            "vpc_crn",
        ];
        let mut at = 0;
        for key in order {
            at += text[at..].find(&format!("\"{key}\":")).expect(key);
        }
        assert!(
            text.ends_with("\"version\":\"0.0.1\",\"vpc_crn\":\"crn:vpc\"}\n"),
            "{text}"
        );
    }

    #[test]
    fn csv_and_secadvisor_refuse_the_header_object() {
        let header = StoreHeader::VpcLogs {
            fields: BTreeMap::new(),
        };
        let object = header.wrap(&[], 0, 0);
        for encoder in [
            Encoder::Csv { delimiter: ',' },
            Encoder::Secadvisor { pretty: false },
        ] {
            assert!(encoder.encode(&object, &mut Vec::new()).is_err());
        }
        let mut out = Vec::new();
        Encoder::Json { pretty: false }
            .encode(&object, &mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"capture_end_time\":\"1970-01-01T00:00:00Z\",\"capture_start_time\":\"1970-01-01T00:00:00Z\",\"flow_logs\":[],\"number_of_flow_logs\":0,\"state\":\"ok\",\"version\":\"0.0.1\"}\n"
        );
    }
}
