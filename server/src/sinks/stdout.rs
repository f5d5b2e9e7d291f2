//! `write: {type: stdout}`: upstream's format, `--- <bucket>/<key> ---`, the content, a newline.

use tokio::io::AsyncWriteExt;

use super::{Object, SinkError};

/// Prints objects to standard output.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdoutSink;

impl StdoutSink {
    /// Writes one object.
    pub async fn write(&self, object: &Object) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(object.body.len() + object.key.len() + 16);
        buf.extend_from_slice(format!("--- {}/{} ---\n", object.bucket, object.key).as_bytes());
        buf.extend_from_slice(&object.body);
        buf.push(b'\n');
        let mut out = tokio::io::stdout();
        let result = async {
            out.write_all(&buf).await?;
            out.flush().await
        }
        .await;
        result.map_err(|source| SinkError::Io {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            path: "<stdout>".into(),
            source,
        })
    }
}
