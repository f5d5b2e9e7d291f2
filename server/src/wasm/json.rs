//! The JSON form of batches (guest-sdk/ENCODING.md §4), for guests that say they take it
//! (`batch-encoding` → `json`): the Python and JavaScript shims. Flows go out as the analyzer's
//! JSON (the `none` transform's objects), records as the JSON encoder writes them; what comes
//! back is an array of objects whose keys, in order, are a record's fields. The records are
//! turned into the binary record batch and checked by the same decoder as every guest's.

use std::sync::Arc;

use super::encoding::{DecodeError, OrderedFields, RecordWriter, SchemaCache, decode_records};
use super::record::{Schema, WasmRecord};
use crate::pipeline::record::Record;
use crate::skydive::flow::Flow;

/// `flows` as a JSON array, into `out` (cleared first).
pub fn encode_flows_json(flows: &[Flow], out: &mut Vec<u8>) {
    out.clear();
    // Serialising the flow model can't fail: every field is a plain value.
    let _ = serde_json::to_writer(&mut *out, flows);
}

/// `records` as a JSON array, each as the JSON encoder writes it.
pub fn encode_records_json(records: &[Record]) -> Vec<u8> {
    serde_json::to_vec(records).unwrap_or_else(|_| b"[]".to_vec())
}

/// A guest's JSON answer (an array of objects) as records.
pub fn decode_json_records(
    bytes: &[u8],
    cache: &mut SchemaCache,
) -> Result<Vec<WasmRecord>, DecodeError> {
    let objects: Vec<OrderedFields> =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    let mut w = RecordWriter::default();
    let mut shapes: Vec<Arc<Schema>> = Vec::new();
    for object in &objects {
        super::encoding::push_object(&mut w, &object.0, &mut shapes);
    }
    decode_records(w.finish(), cache)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::record::WasmValue;

    #[test]
    fn json_records_keep_their_key_order_and_types() {
        let text = br#"[{"b": 1, "a": "x", "n": null, "f": 1.5, "big": 18446744073709551615,
            "neg": -3, "t": true, "o": {"k": [1, 2]}},
            {"b": 2, "a": "y", "n": null, "f": 0.5, "big": 0, "neg": 0, "t": false, "o": []}]"#;
        let records = decode_json_records(text, &mut SchemaCache::default()).unwrap();
        assert_eq!(records.len(), 2);
        let names: Vec<&str> = records[0].schema().names.iter().map(|n| &**n).collect();
        assert_eq!(names, ["b", "a", "n", "f", "big", "neg", "t", "o"]);
        assert!(Arc::ptr_eq(records[0].schema(), records[1].schema()));
        let values: Vec<WasmValue<'_>> = records[0].fields().map(|f| f.value).collect();
        assert_eq!(values[0], WasmValue::Int(1));
        assert_eq!(values[1], WasmValue::Str("x"));
        assert_eq!(values[2], WasmValue::Null);
        assert_eq!(values[3], WasmValue::Float(1.5));
        assert_eq!(values[4], WasmValue::UInt(u64::MAX));
        assert_eq!(values[5], WasmValue::Int(-3));
        assert_eq!(values[6], WasmValue::Bool(true));
        assert_eq!(values[7], WasmValue::Json(r#"{"k": [1, 2]}"#));
    }

    #[test]
    fn anything_but_an_array_of_objects_is_refused() {
        for bad in [
            &b"{}"[..],
            b"[1]",
            b"[{\"a\":1,\"a\":2}]",
            b"not json",
            b"[{}",
        ] {
            assert!(
                decode_json_records(bad, &mut SchemaCache::default()).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
