//! `write: {type: file, file: {dir: ...}}`: objects as files, a folder per bucket.
//!
//! `<dir>/<bucket>/<key>` holds the content and `<dir>/<bucket>/<key>.meta.json` the
//! content type, encoding and user metadata. Both are written to a temporary name, fsync'd and
//! renamed, so a reader never sees half an object and a crash leaves no torn file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;

use super::{Object, SinkError};

/// Suffix of the metadata file written beside each object.
pub const META_SUFFIX: &str = ".meta.json";

/// Writes objects under a root folder.
#[derive(Debug, Clone)]
pub struct FileSink {
    root: PathBuf,
    /// `sluice serve`: the folder every file must stay inside (symlinks resolved), and the
    /// tenant's disk quota.
    confined: Option<Confined>,
}

#[derive(Debug, Clone)]
struct Confined {
    within: PathBuf,
    quota: Arc<DiskQuota>,
    /// This writer's entry in the quota (its pipeline).
    owner: Arc<str>,
}

/// The bytes a tenant's `file` writers may keep on disk, over all its pipelines.
#[derive(Debug)]
pub struct DiskQuota {
    limit: u64,
    /// Bytes on disk per pipeline.
    used: Mutex<HashMap<Arc<str>, u64>>,
}

impl DiskQuota {
    /// A quota of `limit` bytes, nothing used yet.
    pub fn new(limit: u64) -> Self {
        DiskQuota {
            limit,
            used: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u64>> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes used over every pipeline.
    pub fn used(&self) -> u64 {
        self.lock().values().sum()
    }

    /// Sets what a pipeline has on disk (measured when its writer starts).
    pub fn set(&self, owner: &Arc<str>, bytes: u64) {
        self.lock().insert(owner.clone(), bytes);
    }

    /// Forgets a pipeline (deleted with its folder).
    pub fn remove(&self, owner: &str) {
        self.lock().remove(owner);
    }

    /// Takes `bytes` for `owner`, or refuses with what the tenant uses when it would go past
    /// the limit.
    fn take(&self, owner: &Arc<str>, bytes: u64) -> Result<(), u64> {
        let mut used = self.lock();
        let total: u64 = used.values().sum();
        if total.saturating_add(bytes) > self.limit {
            return Err(total);
        }
        *used.entry(owner.clone()).or_default() += bytes;
        Ok(())
    }
}

/// Creates `dir` and checks that, with every symlink resolved, it lies inside `root`.
pub fn ensure_within(dir: &Path, root: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let real = std::fs::canonicalize(dir)?;
    let root = std::fs::canonicalize(root)?;
    if real.starts_with(&root) {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} is outside {}", real.display(), root.display()),
        ))
    }
}

/// Bytes of the files below `dir` (0 when it doesn't exist).
fn bytes_below(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
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
        FileSink {
            root: root.into(),
            confined: None,
        }
    }

    /// A writer for `sluice serve`: every file stays inside `within` (checked with symlinks
    /// resolved) and counts against the tenant's `quota` as `owner`'s. Measures what `root`
    /// already holds.
    pub fn confined(
        root: impl Into<PathBuf>,
        within: &Path,
        quota: Arc<DiskQuota>,
        owner: &str,
    ) -> Self {
        let root = root.into();
        let owner: Arc<str> = owner.into();
        quota.set(&owner, bytes_below(&root));
        FileSink {
            root,
            confined: Some(Confined {
                within: within.to_path_buf(),
                quota,
                owner,
            }),
        }
    }

    /// The local path of an object, refusing segments that would leave the root.
    pub fn path_of(&self, bucket: &str, key: &str) -> Option<PathBuf> {
        // The bucket may hold '/' (a folder below the root, as `sluice run` always allowed),
        // but never a segment that leaves it.
        if bucket.starts_with('/') {
            return None;
        }
        let key: Vec<&str> = key.split('/').filter(|s| !s.is_empty()).collect();
        if key.is_empty() {
            return None;
        }
        let mut path = self.root.clone();
        for segment in bucket.split('/').chain(key) {
            if segment.is_empty() || segment == "." || segment == ".." || segment.contains('\\') {
                return None;
            }
            path.push(segment);
        }
        Some(path)
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
            match &self.confined {
                Some(c) => {
                    let (parent, within) = (parent.to_path_buf(), c.within.clone());
                    tokio::task::spawn_blocking(move || ensure_within(&parent, &within))
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|r| r)
                        .map_err(io_err)?;
                }
                None => tokio::fs::create_dir_all(parent).await.map_err(io_err)?,
            }
        }
        if let Some(c) = &self.confined {
            let bytes = (object.body.len() + meta.len()) as u64;
            c.quota
                .take(&c.owner, bytes)
                .map_err(|used| SinkError::QuotaExceeded {
                    bucket: object.bucket.clone(),
                    key: object.key.clone(),
                    used,
                    limit: c.quota.limit,
                })?;
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
    // A new file, never an existing one (O_EXCL doesn't follow a symlink left at that name);
    // the rename then replaces whatever the final name was, a symlink included.
    let _ = tokio::fs::remove_file(&tmp).await;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .await?;
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
