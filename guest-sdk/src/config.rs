//! The stage's `config` (`pipeline.<stage>.wasm.config`), given to `init`.

use serde_json::Value;

/// The stage's configuration: the JSON value of `pipeline.<stage>.wasm.config` (`null` when
/// absent), with typed accessors for its top-level keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    value: Value,
}

impl Config {
    /// Parses the JSON text the host passes to `init`; an empty text is `null`.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        Ok(Config {
            value: serde_json::from_str(text)?,
        })
    }

    /// The whole value.
    pub fn json(&self) -> &Value {
        &self.value
    }

    /// A top-level key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.value.get(key)
    }

    /// A top-level string.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// A top-level unsigned integer.
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// A top-level signed integer.
    pub fn i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    /// A top-level boolean.
    pub fn bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    /// The top-level keys and values when the config is an object, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.value
            .as_object()
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
    }
}
