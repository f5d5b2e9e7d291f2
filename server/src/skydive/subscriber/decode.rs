//! Decoding of analyzer messages (docs/skydive-protocol.md §2.2): the envelope first, keeping
//! `Obj` raw, then the payload according to `Type`.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::skydive::flow::Flow;

/// The JSON envelope of every message. `UUID` and `Status` are read but not used.
#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "Namespace", default)]
    namespace: String,
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Obj", borrow, default)]
    obj: Option<&'a RawValue>,
}

/// What one text message turned out to be.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A `store` message: the flows that decoded, and one reason per flow that did not.
    Store {
        namespace: String,
        flows: Vec<Flow>,
        malformed: Vec<String>,
    },
    /// A `stats` message (its content is not used).
    Stats,
    /// A message for a namespace we did not ask for (a `*` duplicate).
    Foreign { namespace: String },
    /// A well-formed envelope with a type we do not handle.
    Unknown { namespace: String, kind: String },
    /// Not an envelope, or a `store` whose `Obj` is not an array.
    Malformed { reason: String },
}

/// Decodes one message, keeping only the namespaces in `accepted`.
pub(crate) fn decode(text: &str, accepted: &[String]) -> Decoded {
    let envelope: Envelope<'_> = match serde_json::from_str(text) {
        Ok(envelope) => envelope,
        Err(e) => {
            return Decoded::Malformed {
                reason: format!("not a message envelope: {e}"),
            };
        }
    };
    if !accepted.contains(&envelope.namespace) {
        return Decoded::Foreign {
            namespace: envelope.namespace,
        };
    }
    match envelope.kind.as_str() {
        "store" => {
            let Some(obj) = envelope.obj else {
                return Decoded::Malformed {
                    reason: "store message without Obj".to_owned(),
                };
            };
            let items: Vec<&RawValue> = match serde_json::from_str(obj.get()) {
                Ok(items) => items,
                Err(e) => {
                    return Decoded::Malformed {
                        reason: format!("store Obj is not an array: {e}"),
                    };
                }
            };
            let mut flows = Vec::with_capacity(items.len());
            let mut malformed = Vec::new();
            for (index, item) in items.into_iter().enumerate() {
                match serde_json::from_str::<Flow>(item.get()) {
                    Ok(flow) => flows.push(flow),
                    Err(e) => malformed.push(format!("flow {index}: {e}")),
                }
            }
            Decoded::Store {
                namespace: envelope.namespace,
                flows,
                malformed,
            }
        }
        "stats" => Decoded::Stats,
        _ => Decoded::Unknown {
            namespace: envelope.namespace,
            kind: envelope.kind,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(name: &str) -> String {
        crate::test_vectors::text(&format!("skydive/{name}"))
    }

    fn ns(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn store_vectors_decode_to_flows() {
        let text = vector("ws-msg-flow-store.json");
        match decode(text.trim(), &ns(&["flow", "stats"])) {
            Decoded::Store {
                namespace,
                flows,
                malformed,
            } => {
                assert_eq!(namespace, "flow");
                assert_eq!(flows.len(), 2);
                assert_eq!(flows[0].uuid, "d25c8e1f4b7a0639");
                assert!(malformed.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        let text = vector("ws-msg-flow-store-capture-namespace.json");
        let capture = "flow/3d1c7e52-9a8f-4b6e-7f21-0c5d9e8a4b17";
        assert!(matches!(
            decode(text.trim(), &ns(&[capture])),
            Decoded::Store { flows, .. } if flows.len() == 1
        ));
        assert!(matches!(
            decode(text.trim(), &ns(&["flow"])),
            Decoded::Foreign { namespace } if namespace == capture
        ));
    }

    #[test]
    fn stats_and_unknown_types() {
        let text = vector("ws-msg-stats.json");
        assert!(matches!(
            decode(text.trim(), &ns(&["flow", "stats"])),
            Decoded::Stats
        ));
        let unknown = r#"{"Namespace":"flow","Type":"delete","UUID":"x","Status":200,"Obj":{}}"#;
        assert!(matches!(
            decode(unknown, &ns(&["flow"])),
            Decoded::Unknown { kind, .. } if kind == "delete"
        ));
    }

    #[test]
    fn one_bad_flow_is_dropped_and_the_rest_kept() {
        let text = r#"{"Namespace":"flow","Type":"store","UUID":"u","Status":200,"Obj":[
            {"UUID":"a","Start":1,"Last":2},
            {"UUID":"b","Start":"oops","Last":2},
            {"UUID":"c","Start":3,"Last":4}]}"#;
        match decode(text, &ns(&["flow"])) {
            Decoded::Store {
                flows, malformed, ..
            } => {
                let ids: Vec<_> = flows.iter().map(|f| f.uuid.as_str()).collect();
                assert_eq!(ids, ["a", "c"]);
                assert_eq!(malformed.len(), 1);
                assert!(malformed[0].starts_with("flow 1:"), "{}", malformed[0]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn broken_messages_are_malformed() {
        for bad in [
            "not json",
            "[1,2]",
            r#"{"Namespace":"flow","Type":"store","Obj":{"a":1}}"#,
            r#"{"Namespace":"flow","Type":"store"}"#,
            r#"{"Namespace":"flow","Type":"store","Obj":[1,2"#,
        ] {
            assert!(
                matches!(decode(bad, &ns(&["flow"])), Decoded::Malformed { .. }),
                "{bad}"
            );
        }
    }
}
