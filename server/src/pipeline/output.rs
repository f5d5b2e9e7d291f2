//! The back half of a pipeline: storeheader → encode → compress → write → account.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::compress::Compressor;
use super::encode::Encoder;
use super::record::Record;
use super::storeheader::StoreHeader;
use crate::metrics::{DropReason, PipelineStats};
use crate::sinks::{Object, Sink};

/// Why an object was not written.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// Encoding or compression failed: retrying won't help, the records are dropped.
    #[error("failed to encode object {key}: {message}")]
    Encode {
        /// Object key.
        key: String,
        /// Cause.
        message: String,
    },
    /// The write failed: the records stay pending and are retried.
    #[error("failed to write object: {0}")]
    Write(#[from] crate::sinks::SinkError),
}

pub use super::keyformat::KeyLayout;

/// A stream's folder name: its start time in UTC.
pub fn stream_id(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

/// Turns batches of records into written objects.
#[derive(Debug)]
pub struct Output {
    /// Wraps records.
    pub header: StoreHeader,
    /// Serialises.
    pub encoder: Encoder,
    /// Compresses.
    pub compressor: Compressor,
    /// Writes.
    pub sink: Sink,
    /// The bucket.
    pub bucket: String,
    /// Key layout.
    pub keys: KeyLayout,
    /// Counters (the account stage).
    pub stats: Arc<PipelineStats>,
    /// Upstream's account file, when configured.
    pub account_file: Option<super::account::AccountFile>,
}

impl Output {
    /// Encodes, compresses and writes one object covering `[start_ms, end_ms]`.
    pub async fn emit(
        &mut self,
        key: String,
        records: &[Record],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<(), EmitError> {
        let object = self.build(key, records, start_ms, end_ms)?;
        if let Err(e) = self.sink.write(&object).await {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            return Err(e.into());
        }
        self.stats
            .records_written
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        self.stats.objects_written.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_written
            .fetch_add(object.body.len() as u64, Ordering::Relaxed);
        if let Some(account) = &self.account_file
            && let Err(e) = account.add(object.body.len() as i64, end_ms)
        {
            tracing::warn!(error = %e, "account file not updated");
        }
        tracing::debug!(bucket = %object.bucket, key = %object.key, records = records.len(), bytes = object.body.len(), "wrote object");
        Ok(())
    }

    /// Builds an object without writing it (dry runs use this too).
    pub fn build(
        &self,
        key: String,
        records: &[Record],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Object, EmitError> {
        let object = self.header.wrap(records, start_ms, end_ms);
        let mut encoded = Vec::with_capacity(records.len() * 256);
        let encode_failed = |key: &String, message: String| {
            self.stats
                .count_drop(DropReason::Encode, records.len() as u64);
            EmitError::Encode {
                key: key.clone(),
                message,
            }
        };
        if let Err(e) = self.encoder.encode(&object, &mut encoded) {
            return Err(encode_failed(&key, e.to_string()));
        }
        let body = match self.compressor.compress(encoded) {
            Ok(body) => body,
            Err(e) => return Err(encode_failed(&key, e.to_string())),
        };
        Ok(Object {
            bucket: self.bucket.clone(),
            key,
            body,
            content_type: self.encoder.content_type(),
            content_encoding: self.compressor.content_encoding(),
            metadata: vec![
                ("first-timestamp", start_ms.to_string()),
                ("last-timestamp", end_ms.to_string()),
                ("num-records", records.len().to_string()),
            ],
            records: records.len(),
        })
    }
}
