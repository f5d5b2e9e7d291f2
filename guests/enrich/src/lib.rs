//! A mangler that appends fields from its config to every record, and optionally the tag.
//!
//! Config: `{"fields": {"env": "prod", "zone": 3}, "tag_field": "Tag"}`. `fields` are added
//! in key order after the record's own fields (a record's field of the same name is replaced);
//! `tag_field`, when set, names a field holding the batch's tag.

use sluice_guest::json::Value as Json;
use sluice_guest::{Config, Error, Mangle, Output, Records, Value};

/// The configured enricher.
pub struct Enrich {
    fields: Vec<(String, Json, String)>,
    tag_field: Option<String>,
}

impl Mangle for Enrich {
    fn init(config: &Config) -> Result<Self, Error> {
        let fields = match config.get("fields") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Object(map)) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone(), v.to_string()))
                .collect(),
            Some(_) => return Err(Error::new("`fields` must be an object")),
        };
        Ok(Enrich {
            fields,
            tag_field: config.str("tag_field").map(str::to_owned),
        })
    }

    fn mangle(&mut self, tag: &str, records: Records<'_>, out: &mut Output) -> Result<(), Error> {
        for record in records.iter() {
            let record = record?;
            let mut b = out.record();
            for (i, name) in record.names().iter().enumerate() {
                let replaced = self.fields.iter().any(|(n, _, _)| n == name)
                    || self.tag_field.as_deref() == Some(*name);
                if !replaced {
                    // With its CSV column and text, if it has them.
                    b = b.field_of(&record, i);
                }
            }
            for (name, value, text) in &self.fields {
                let v = match value {
                    Json::Null => Value::Null,
                    Json::Bool(x) => Value::Bool(*x),
                    Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                        (Some(i), _, _) => Value::Int(i),
                        (_, Some(u), _) => Value::UInt(u),
                        (_, _, f) => Value::Float(f.unwrap_or(0.0)),
                    },
                    Json::String(s) => Value::Str(s),
                    Json::Array(_) | Json::Object(_) => Value::Json(text),
                };
                b = b.value(name, v);
            }
            if let Some(t) = &self.tag_field {
                b.str(t, tag);
            }
        }
        Ok(())
    }
}

sluice_guest::export_mangle!(Enrich);

#[cfg(test)]
mod tests {
    use sluice_guest::testing::{RecordData, ValueData, run_mangle};

    use super::*;

    #[test]
    fn appends_config_fields_and_the_tag() {
        let input = RecordData {
            fields: vec![
                ("UUID".into(), ValueData::Str("u1".into())),
                ("env".into(), ValueData::Str("old".into())),
            ],
            ..RecordData::default()
        };
        let config =
            r#"{"fields": {"env": "prod", "zone": 3, "owners": ["a"]}, "tag_field": "Tag"}"#;
        let out = run_mangle::<Enrich>(config, "ingress", &[input]).unwrap();
        assert_eq!(
            out[0].to_json_text(),
            r#"{"UUID":"u1","env":"prod","owners":["a"],"zone":3,"Tag":"ingress"}"#
        );
    }

    #[test]
    fn keeps_csv_columns_and_texts() {
        let input = RecordData {
            fields: vec![
                ("SrcAddr".into(), ValueData::Str("10.0.0.1".into())),
                (
                    "DstAddr".into(),
                    ValueData::WithCsv(Box::new(ValueData::Str(String::new())), "-".into()),
                ),
            ],
            columns: Some(vec!["srcaddr".into(), "dstaddr".into()]),
        };
        let out = run_mangle::<Enrich>(r#"{"tag_field": "Tag"}"#, "ingress", &[input]).unwrap();
        assert_eq!(out[0].columns(), ["srcaddr", "dstaddr", "Tag"]);
        assert_eq!(out[0].to_csv_fields(), ["10.0.0.1", "-", "ingress"]);
        assert_eq!(
            out[0].to_json_text(),
            r#"{"SrcAddr":"10.0.0.1","DstAddr":"","Tag":"ingress"}"#
        );
    }
}
