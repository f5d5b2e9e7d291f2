//! The golden vectors of `tests/vectors/` (each folder's `INDEX.md` says where they come
//! from), read by the unit tests: one loader instead of one per test module.

use serde_json::Value;

/// The path of `tests/vectors/<name>`.
pub(crate) fn path(name: &str) -> String {
    format!("{}/../tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The text of `tests/vectors/<name>`.
pub(crate) fn text(name: &str) -> String {
    std::fs::read_to_string(path(name)).unwrap_or_else(|e| panic!("tests/vectors/{name}: {e}"))
}

/// `tests/vectors/<name>`, parsed as JSON.
pub(crate) fn json(name: &str) -> Value {
    serde_json::from_str(&text(name)).unwrap_or_else(|e| panic!("tests/vectors/{name}: {e}"))
}
