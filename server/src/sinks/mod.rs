//! Sinks: where encoded objects go. One file per writer type.

mod file;
pub mod ibm_iam;
mod memory;
mod s3;
pub mod spool;
mod stdout;

pub use file::{DiskQuota, FileSink, ensure_within};
pub use memory::MemorySink;
pub use s3::S3Sink;
pub use spool::{SpoolSettings, SpooledSink};
pub use stdout::StdoutSink;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{WriteSection, WriteType};
use crate::egress::EgressPolicy;
use crate::metrics::PipelineStats;

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
    /// The object store refused the object or could not be reached.
    #[error("PutObject {bucket}/{key} at {endpoint}: {message}")]
    Store {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The store's endpoint.
        endpoint: String,
        /// HTTP status, when the store answered.
        status: Option<u16>,
        /// What went wrong, and what to fix when known.
        message: String,
    },
    /// The spool holds as much as it may: the object store is not keeping up or is down.
    #[error(
        "spool {dir} is full ({objects} objects, {bytes} bytes; limits {max_objects} objects, {max_bytes} bytes): uploads are failing or behind"
    )]
    SpoolFull {
        /// Spool folder.
        dir: String,
        /// Objects spooled.
        objects: u64,
        /// Bytes spooled.
        bytes: u64,
        /// `pipeline.write.spool.max_objects`.
        max_objects: u64,
        /// `pipeline.write.spool.max_bytes`.
        max_bytes: u64,
    },
    /// The spool folder can't be used.
    #[error("spool {dir}: {source}")]
    Spool {
        /// Spool folder.
        dir: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The tenant's `file` writers hold as many bytes as its quota allows.
    #[error(
        "not writing {bucket}/{key}: the tenant's files use {used} bytes of the {limit} allowed (limits.file_bytes_per_tenant)"
    )]
    QuotaExceeded {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// Bytes the tenant's files use.
        used: u64,
        /// Its quota.
        limit: u64,
    },
}

/// Where the files of a pipeline of `sluice serve` must stay, and whose quota they use.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// The pipeline's folder: every file it writes resolves (symlinks too) inside it.
    pub within: PathBuf,
    /// The tenant's quota for `file` writer bytes.
    pub quota: Arc<DiskQuota>,
    /// The pipeline's id (its entry in the quota).
    pub owner: String,
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
    /// An S3-compatible object store, written directly (no spool).
    S3(S3Sink),
    /// Objects spooled to disk and uploaded in the background to another writer.
    Spooled(SpooledSink),
}

impl Sink {
    /// Builds from a validated config section. `s3` is written directly, without a spool:
    /// use [`Sink::from_config_spooled`] for delivery that survives outages and crashes.
    /// Connections go where `egress` allows; with `confine`, files stay in the pipeline's
    /// folder and count against the tenant's quota.
    pub fn from_config(
        section: &WriteSection,
        egress: &EgressPolicy,
        confine: Option<&Confinement>,
    ) -> Result<Self, SinkError> {
        match section.kind {
            WriteType::Stdout => Ok(Sink::Stdout(StdoutSink)),
            WriteType::File => Ok(Sink::File(match confine {
                Some(c) => {
                    FileSink::confined(&section.file.dir, &c.within, c.quota.clone(), &c.owner)
                }
                None => FileSink::new(&section.file.dir),
            })),
            WriteType::S3 => Ok(Sink::S3(S3Sink::from_options(&section.s3, egress))),
        }
    }

    /// Builds from a validated config section; `s3` goes through a spool in
    /// `pipeline.write.spool.dir`, else `default_spool_dir` (see [`spool`]), whose uploader
    /// starts here (needs a tokio runtime) and counts failed uploads in `stats.write_errors`.
    /// Call [`Sink::close`] after the pipeline's last write.
    pub fn from_config_spooled(
        section: &WriteSection,
        default_spool_dir: PathBuf,
        stats: Arc<PipelineStats>,
        egress: &EgressPolicy,
        confine: Option<&Confinement>,
    ) -> Result<Self, SinkError> {
        let sink = Self::from_config(section, egress, confine)?;
        if section.kind != WriteType::S3 {
            return Ok(sink);
        }
        let opts = &section.spool;
        let dir = if opts.dir.is_empty() {
            default_spool_dir
        } else {
            PathBuf::from(&opts.dir)
        };
        if let Some(c) = confine {
            file::ensure_within(&dir, &c.within).map_err(|source| SinkError::Spool {
                dir: dir.display().to_string(),
                source,
            })?;
        }
        let settings = SpoolSettings {
            dir,
            max_objects: opts.max_objects.unwrap_or(spool::DEFAULT_MAX_OBJECTS),
            max_bytes: opts.max_bytes.unwrap_or(spool::DEFAULT_MAX_BYTES),
        };
        Ok(Sink::Spooled(SpooledSink::open(settings, sink, stats)?))
    }

    /// After the last write: waits up to `timeout` for background uploads. Returns the objects
    /// left for the next start (always 0 for writers without a spool).
    pub async fn close(&self, timeout: Duration) -> usize {
        match self {
            Sink::Spooled(s) => s.close(timeout).await,
            _ => 0,
        }
    }

    /// Writes one object.
    pub async fn write(&self, object: &Object) -> Result<(), SinkError> {
        match self {
            Sink::Stdout(s) => s.write(object).await,
            Sink::File(s) => s.write(object).await,
            Sink::Memory(s) => s.write(object),
            Sink::S3(s) => s.write(object).await,
            Sink::Spooled(s) => s.write(object).await,
        }
    }
}
