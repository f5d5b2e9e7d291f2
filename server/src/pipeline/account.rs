//! `account: {type: file}`: upstream's JSON account record of bytes written.
//!
//! The counters themselves (bytes, records, objects per pipeline) are always kept in
//! [`crate::metrics::PipelineStats`]; this adds the file that upstream consumers read.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

const VERSION: &str = "1.1.0";

/// The account record, keys in upstream's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Always `1.1.0`.
    pub version: String,
    /// First add, ms.
    #[serde(rename = "accumulate-start")]
    pub accumulate_start: i64,
    /// Last add, ms.
    #[serde(rename = "accumulate-end")]
    pub accumulate_end: i64,
    /// Bytes since the first add.
    #[serde(rename = "accumulate-bytes")]
    pub accumulate_bytes: i64,
    /// Last add, ms.
    #[serde(rename = "current-start")]
    pub current_start: i64,
    /// Last add, ms.
    #[serde(rename = "current-end")]
    pub current_end: i64,
    /// Bytes of the last add.
    #[serde(rename = "current-bytes")]
    pub current_bytes: i64,
}

impl AccountRecord {
    fn is_valid(&self) -> bool {
        self.version == VERSION
            && self.accumulate_start != 0
            && self.accumulate_start <= self.accumulate_end
            && self.current_start != 0
            && self.current_start <= self.current_end
    }
}

/// Keeps the account record in a file.
#[derive(Debug, Clone)]
pub struct AccountFile {
    path: PathBuf,
}

impl AccountFile {
    /// The record lives at `path` (with `<path>.bak` while it is replaced).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AccountFile { path: path.into() }
    }

    fn bak(&self) -> PathBuf {
        PathBuf::from(format!("{}.bak", self.path.display()))
    }

    /// Reads the record: the file, else its backup, else none.
    pub fn read(&self) -> Option<AccountRecord> {
        [self.path.clone(), self.bak()].iter().find_map(|p| {
            let text = std::fs::read(p).ok()?;
            serde_json::from_slice::<AccountRecord>(&text)
                .ok()
                .filter(AccountRecord::is_valid)
        })
    }

    /// Deletes the record.
    pub fn reset(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.bak());
    }

    /// Adds `bytes` written at `now_ms`.
    pub fn add(&self, bytes: i64, now_ms: i64) -> std::io::Result<()> {
        let mut record = self.read().unwrap_or(AccountRecord {
            version: VERSION.into(),
            accumulate_start: now_ms,
            accumulate_end: now_ms,
            accumulate_bytes: 0,
            current_start: now_ms,
            current_end: now_ms,
            current_bytes: 0,
        });
        record.current_start = now_ms;
        record.current_end = now_ms;
        record.current_bytes = bytes;
        record.accumulate_end = now_ms;
        record.accumulate_bytes += bytes;
        let mut text = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut text,
            serde_json::ser::PrettyFormatter::with_indent(b" "),
        );
        record.serialize(&mut ser).map_err(std::io::Error::other)?;
        std::fs::write(self.bak(), &text)?;
        let _ = std::fs::remove_file(&self.path);
        std::fs::rename(self.bak(), &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_account_file_test() {
        let dir = tempfile::tempdir().unwrap();
        let account = AccountFile::new(dir.path().join("account.json"));
        account.reset();
        account.add(10, 1546338030000).unwrap();
        account.add(100, 1546338090000).unwrap();
        let text = std::fs::read_to_string(dir.path().join("account.json")).unwrap();
        assert_eq!(
            text,
            "{\n \"version\": \"1.1.0\",\n \"accumulate-start\": 1546338030000,\n \"accumulate-end\": 1546338090000,\n \"accumulate-bytes\": 110,\n \"current-start\": 1546338090000,\n \"current-end\": 1546338090000,\n \"current-bytes\": 100\n}"
        );
        std::fs::write(dir.path().join("account.json"), "garbage").unwrap();
        account.add(1, 1546338095000).unwrap();
        assert_eq!(
            account.read().unwrap().accumulate_bytes,
            1,
            "invalid file and no backup: fresh record"
        );
    }
}
