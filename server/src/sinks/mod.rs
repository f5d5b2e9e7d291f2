//! Sinks: where encoded objects go. One file per writer type.

mod file;
mod memory;
mod stdout;

pub use file::FileSink;
pub use memory::MemorySink;
pub use stdout::StdoutSink;

use crate::config::{WriteSection, WriteType};

/// One encoded, compressed object ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Bucket (`store.buffered.dirname`).
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Content.
    pub body: Vec<u8>,
    /// Content-Type.
    pub content_type: &'static str,
    /// Content-Encoding, if compressed.
    pub content_encoding: Option<&'static str>,
    /// User metadata (`first-timestamp`, `last-timestamp`, `num-records`).
    pub metadata: Vec<(&'static str, String)>,
    /// Records inside, for accounting.
    pub records: usize,
}

/// Why a write failed. The object stays pending and is retried.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Local I/O failed.
    #[error("writing {bucket}/{key} to {path}: {source}")]
    Io {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Local path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A key or bucket that would escape the writer's folder.
    #[error("refusing key '{key}' in bucket '{bucket}': empty, '.' or '..' path segment")]
    UnsafeKey {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// The writer type isn't in this build yet.
    #[error("write type {0} is not available yet")]
    Unavailable(&'static str),
}

/// A configured writer.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Upstream's stdout format.
    Stdout(StdoutSink),
    /// A folder per bucket.
    File(FileSink),
    /// In memory (tests, benchmarks, dry runs).
    Memory(MemorySink),
}

impl Sink {
    /// Builds from a validated config section.
    pub fn from_config(section: &WriteSection) -> Result<Self, SinkError> {
        match section.kind {
            WriteType::Stdout => Ok(Sink::Stdout(StdoutSink)),
            WriteType::File => Ok(Sink::File(FileSink::new(&section.file.dir))),
            WriteType::S3 => Err(SinkError::Unavailable("s3")),
        }
    }

    /// Writes one object.
    pub async fn write(&self, object: &Object) -> Result<(), SinkError> {
        match self {
            Sink::Stdout(s) => s.write(object).await,
            Sink::File(s) => s.write(object).await,
            Sink::Memory(s) => s.write(object),
        }
    }
}
