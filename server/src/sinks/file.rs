//! `write: {type: file, file: {dir: ...}}`: objects as files, a folder per bucket.
//!
//! `<dir>/<bucket>/<key>` holds the content and `<dir>/<bucket>/<key>.meta.json` the
//! content type, encoding and user metadata. Both are written to a temporary name, fsync'd and
//! renamed, so a reader never sees half an object and a crash leaves no torn file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::{Object, SinkError};

/// Suffix of the metadata file written beside each object.
pub const META_SUFFIX: &str = ".meta.json";

/// Writes objects under a root folder.
#[derive(Debug, Clone)]
pub struct FileSink {
    root: PathBuf,
}

/// The metadata file's content.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Content-Type.
    pub content_type: String,
    /// Content-Encoding.
    #[serde(default)]
    pub content_encoding: Option<String>,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
}

impl FileSink {
    /// Objects go below `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileSink { root: root.into() }
    }

    /// The local path of an object, refusing segments that would leave the root.
    pub fn path_of(&self, bucket: &str, key: &str) -> Option<PathBuf> {
        let mut path = self.root.clone();
        let mut segments = 0;
        for segment in std::iter::once(bucket).chain(key.split('/').filter(|s| !s.is_empty())) {
            if segment.is_empty() || segment == "." || segment == ".." || segment.contains('\\') {
                return None;
            }
            path.push(segment);
            segments += 1;
        }
        (segments >= 2).then_some(path)
    }

    /// Writes one object and its metadata.
    pub async fn write(&self, object: &Object) -> Result<(), SinkError> {
        let path =
            self.path_of(&object.bucket, &object.key)
                .ok_or_else(|| SinkError::UnsafeKey {
                    bucket: object.bucket.clone(),
                    key: object.key.clone(),
                })?;
        let meta = ObjectMeta {
            content_type: object.content_type.to_string(),
            content_encoding: object.content_encoding.map(str::to_string),
            metadata: object
                .metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let meta = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        let meta_path = PathBuf::from(format!("{}{META_SUFFIX}", path.display()));
        let io_err = |source| SinkError::Io {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io_err)?;
        }
        // Metadata first: an object file present means its metadata is too.
        write_atomically(&meta_path, &meta).await.map_err(io_err)?;
        write_atomically(&path, &object.body)
            .await
            .map_err(io_err)?;
        Ok(())
    }
}

async fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
    let mut file = tokio::fs::File::create(&tmp).await?;
    file.write_all(content).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(bucket: &str, key: &str) -> Object {
        Object {
            bucket: bucket.into(),
            key: key.into(),
            body: b"[]\n".to_vec(),
            content_type: "application/json",
            content_encoding: None,
            metadata: vec![("num-records", "0".into())],
            records: 0,
        }
    }

    #[tokio::test]
    async fn writes_object_and_metadata_under_bucket_folder() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::new(dir.path());
        sink.write(&object("bucket", "/egress/20190101T102030Z/00000000.json"))
            .await
            .unwrap();
        let path = dir
            .path()
            .join("bucket/egress/20190101T102030Z/00000000.json");
        assert_eq!(std::fs::read(&path).unwrap(), b"[]\n");
        let meta: ObjectMeta = serde_json::from_slice(
            &std::fs::read(format!("{}{META_SUFFIX}", path.display())).unwrap(),
        )
        .unwrap();
        assert_eq!(meta.metadata["num-records"], "0");
        assert_eq!(meta.content_type, "application/json");
    }

    #[tokio::test]
    async fn refuses_keys_that_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::new(dir.path());
        for (bucket, key) in [
            ("b", "../x"),
            ("..", "x"),
            ("b", "a/./x"),
            ("", "x"),
            ("b", ""),
        ] {
            assert!(
                matches!(
                    sink.write(&object(bucket, key)).await,
                    Err(SinkError::UnsafeKey { .. })
                ),
                "{bucket}/{key}"
            );
        }
    }
}
