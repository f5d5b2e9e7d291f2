//! The spool: nothing is lost between the store and the object store (docs/service.md §4).
//!
//! [`SpooledSink::write`] puts each encoded object in the pipeline's spool folder (written to a
//! temporary name, fsync'd, renamed, folder fsync'd) and returns at once; the pipeline's buffered
//! store then forgets the records. One uploader task sends the spooled objects in order to the
//! real writer, retrying each with exponential backoff and jitter (0.5 s doubling to 15 s)
//! until it is stored, then deletes its file. A new spool on a folder that holds objects (a
//! crash, an outage at the last shutdown) uploads those first. Keys are deterministic, so an
//! upload repeated after a crash overwrites the same key.
//!
//! The spool is bounded in objects and bytes. When it is full, `write` fails: the buffered store
//! keeps the records pending and retries, and past `max_flow_array_size` drops the oldest with
//! the reason `overflow`. [`SpooledSink::close`] waits (bounded) for the uploads to finish; what
//! is left stays on disk for the next start.
//!
//! A file is `sluice-spool 1\n`, one line of JSON (bucket, key, content type and encoding,
//! metadata, record count), then the object's bytes. A folder is used by one process at a time
//! (an exclusive lock on `<dir>/.lock`).

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Object, Sink, SinkError};
use crate::metrics::PipelineStats;

/// Objects a spool holds at most when `pipeline.write.spool.max_objects` is not set.
pub const DEFAULT_MAX_OBJECTS: u64 = 10_000;
/// Bytes a spool holds at most when `pipeline.write.spool.max_bytes` is not set (1 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
const MAGIC: &[u8] = b"sluice-spool 1\n";
const SUFFIX: &str = ".obj";
const RETRY_INITIAL: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(15);
/// Retry cap while [`SpooledSink::close`] waits for the last uploads.
const RETRY_MAX_CLOSING: Duration = Duration::from_secs(1);

/// Where a spool lives and how much it may hold.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// The folder (one per pipeline).
    pub dir: PathBuf,
    /// Objects held at most.
    pub max_objects: u64,
    /// Bytes held at most (spool files, headers included).
    pub max_bytes: u64,
}

/// Spooled objects anywhere below `dir` (a deleted pipeline's folder, before it goes).
pub fn count_in(dir: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(SUFFIX) {
                count += 1;
            }
        }
    }
    count
}

/// The default spool folder of `sluice run <config>`: `$XDG_STATE_HOME/sluice/spool/
/// <bucket>-<hash of the config file's absolute path>` (`~/.local/state` when `XDG_STATE_HOME`
/// is unset), so a restart on the same file finds what the last run left.
pub fn default_dir(config_path: &Path, bucket: &str) -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".local/state"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-state"));
    let absolute = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let absolute = absolute.canonicalize().unwrap_or(absolute);
    let bucket: String = bucket
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    state.join("sluice/spool").join(format!(
        "{bucket}-{:016x}",
        fnv1a(absolute.as_os_str().as_encoded_bytes())
    ))
}

/// FNV-1a, 64 bits: stable across builds and Rust versions (std's hasher is not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A writer that spools objects and uploads them in the background.
#[derive(Debug, Clone)]
pub struct SpooledSink {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: SpoolSettings,
    target: Sink,
    stats: Arc<PipelineStats>,
    state: Mutex<State>,
    /// The number of spooled objects, for [`SpooledSink::close`].
    queued: watch::Sender<usize>,
    wake: Notify,
    retry_now: Notify,
    closing: AtomicBool,
    stop: CancellationToken,
    uploader: Mutex<Option<JoinHandle<()>>>,
    /// Holds the folder's lock while the spool is open.
    _lock: File,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Entry>,
    /// Bytes of the queued files plus those being written.
    bytes: u64,
    /// Files being written (counted against `max_objects`).
    writing: u64,
    next_seq: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    size: u64,
}

/// What the JSON line of a spool file holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    bucket: String,
    key: String,
    content_type: String,
    content_encoding: Option<String>,
    metadata: Vec<(String, String)>,
    records: usize,
}

impl SpooledSink {
    /// Opens (creating) the spool folder, queues the objects a previous run left there, and
    /// starts the uploader, which writes to `target`. Needs a tokio runtime.
    pub fn open(
        settings: SpoolSettings,
        target: Sink,
        stats: Arc<PipelineStats>,
    ) -> Result<Self, SinkError> {
        let dir = settings.dir.clone();
        let io_err = |source: std::io::Error| SinkError::Spool {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io_err)?;
        let lock = File::create(dir.join(".lock")).map_err(io_err)?;
        if let Err(e) = lock.try_lock() {
            return Err(io_err(std::io::Error::other(format!(
                "in use by another sluice process ({e})"
            ))));
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp") {
                // A write that never completed: its object was never acknowledged.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(seq) = name
                .strip_suffix(SUFFIX)
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let size = entry.metadata().map_err(io_err)?.len();
            found.push((
                seq,
                Entry {
                    path: entry.path(),
                    size,
                },
            ));
        }
        found.sort_by_key(|(seq, _)| *seq);
        let state = State {
            next_seq: found.last().map_or(0, |(seq, _)| seq + 1),
            bytes: found.iter().map(|(_, e)| e.size).sum(),
            writing: 0,
            queue: found.into_iter().map(|(_, e)| e).collect(),
        };
        if !state.queue.is_empty() {
            tracing::info!(dir = %dir.display(), objects = state.queue.len(), bytes = state.bytes, "spool holds objects from a previous run; uploading them first");
        }
        let (queued, _) = watch::channel(state.queue.len());
        let inner = Arc::new(Inner {
            settings,
            target,
            stats,
            state: Mutex::new(state),
            queued,
            wake: Notify::new(),
            retry_now: Notify::new(),
            closing: AtomicBool::new(false),
            stop: CancellationToken::new(),
            uploader: Mutex::new(None),
            _lock: lock,
        });
        let task = tokio::spawn(upload_loop(inner.clone()));
        *inner.lock_uploader() = Some(task);
        Ok(SpooledSink { inner })
    }

    /// The spool folder.
    pub fn dir(&self) -> &Path {
        &self.inner.settings.dir
    }

    /// Objects waiting for upload.
    pub fn queued(&self) -> usize {
        *self.inner.queued.borrow()
    }

    /// Spools one object durably and queues it for upload. Fails when the spool is full or the
    /// folder can't be written; the caller keeps the records and retries.
    pub async fn write(&self, object: &Object) -> Result<(), SinkError> {
        let inner = &self.inner;
        let encoded = encode(object);
        let size = encoded.len() as u64;
        let seq = {
            let mut state = inner.lock_state();
            let objects = state.queue.len() as u64 + state.writing;
            // One object always fits in an empty spool, however large.
            let full = objects > 0
                && (objects >= inner.settings.max_objects
                    || state.bytes + size > inner.settings.max_bytes);
            if full {
                return Err(SinkError::SpoolFull {
                    dir: inner.settings.dir.display().to_string(),
                    objects,
                    bytes: state.bytes,
                    max_objects: inner.settings.max_objects,
                    max_bytes: inner.settings.max_bytes,
                });
            }
            state.writing += 1;
            state.bytes += size;
            state.next_seq += 1;
            state.next_seq - 1
        };
        let dir = inner.settings.dir.clone();
        let path = dir.join(format!("{seq:020}{SUFFIX}"));
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || write_durably(&dir, &target, &encoded))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let mut state = inner.lock_state();
        state.writing -= 1;
        if let Err(source) = written {
            state.bytes -= size;
            return Err(SinkError::Io {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                path: path.display().to_string(),
                source,
            });
        }
        state.queue.push_back(Entry { path, size });
        inner.queued.send_replace(state.queue.len());
        drop(state);
        inner.wake.notify_one();
        Ok(())
    }

    /// Waits up to `timeout` for every spooled object to be uploaded, then stops the uploader.
    /// Returns how many objects stay in the spool for the next start.
    pub async fn close(&self, timeout: Duration) -> usize {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::Relaxed);
        inner.retry_now.notify_one();
        let mut queued = inner.queued.subscribe();
        let waiting = *queued.borrow();
        if waiting > 0 {
            tracing::info!(objects = waiting, dir = %inner.settings.dir.display(), "waiting for the spool to drain");
        }
        let _ = tokio::time::timeout(timeout, queued.wait_for(|n| *n == 0)).await;
        inner.stop.cancel();
        let task = inner.lock_uploader().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let left = *inner.queued.borrow();
        if left > 0 {
            tracing::warn!(objects = left, dir = %inner.settings.dir.display(), "objects not uploaded yet stay in the spool; the next start uploads them");
        }
        left
    }
}

impl Inner {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_uploader(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.uploader.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn front(&self) -> Option<Entry> {
        self.lock_state().queue.front().cloned()
    }

    /// Drops the first entry (uploaded or unreadable).
    fn pop(&self) {
        let mut state = self.lock_state();
        if let Some(e) = state.queue.pop_front() {
            state.bytes -= e.size;
        }
        self.queued.send_replace(state.queue.len());
    }

    fn endpoint(&self) -> &str {
        match &self.target {
            Sink::S3(s3) => s3.endpoint(),
            _ => "",
        }
    }
}

async fn upload_loop(inner: Arc<Inner>) {
    loop {
        let Some(entry) = inner.front() else {
            tokio::select! {
                () = inner.wake.notified() => continue,
                () = inner.stop.cancelled() => return,
            }
        };
        let read = tokio::fs::read(&entry.path).await;
        let object = match read.and_then(|bytes| parse_spooled(&bytes)) {
            Ok(object) => object,
            Err(e) => {
                let aside = entry.path.with_extension("corrupt");
                tracing::error!(path = %entry.path.display(), error = %e, moved_to = %aside.display(), "unreadable spool file set aside");
                let _ = std::fs::rename(&entry.path, &aside);
                inner.pop();
                continue;
            }
        };
        let mut delay = RETRY_INITIAL;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result = tokio::select! {
                r = inner.target.write(&object) => r,
                () = inner.stop.cancelled() => return,
            };
            match result {
                Ok(()) => {
                    if let Err(e) = tokio::fs::remove_file(&entry.path).await {
                        tracing::warn!(path = %entry.path.display(), error = %e, "uploaded object's spool file not removed; it will be uploaded again at the next start");
                    }
                    inner.pop();
                    if attempt > 1 {
                        tracing::info!(bucket = %object.bucket, key = %object.key, endpoint = %inner.endpoint(), attempts = attempt, "object uploaded after retries");
                    }
                    break;
                }
                Err(e) => {
                    inner.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    let cap = if inner.closing.load(Ordering::Relaxed) {
                        RETRY_MAX_CLOSING
                    } else {
                        RETRY_MAX
                    };
                    delay = delay.min(cap);
                    let wait = rand::rng().random_range(delay / 2..=delay);
                    tracing::warn!(bucket = %object.bucket, key = %object.key, endpoint = %inner.endpoint(), error = %e, attempt, retry_in_ms = wait.as_millis() as u64, spooled = *inner.queued.borrow(), "upload failed; the object stays in the spool");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = inner.retry_now.notified() => {}
                        () = inner.stop.cancelled() => return,
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

fn encode(object: &Object) -> Vec<u8> {
    let header = Header {
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        content_type: object.content_type.to_string(),
        content_encoding: object.content_encoding.map(str::to_string),
        metadata: object
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        records: object.records,
    };
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(MAGIC.len() + header.len() + 1 + object.body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header);
    out.push(b'\n');
    out.extend_from_slice(&object.body);
    out
}

fn parse_spooled(bytes: &[u8]) -> std::io::Result<Object> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| invalid("not a sluice spool file"))?;
    let end = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| invalid("no header line"))?;
    let header: Header =
        serde_json::from_slice(&rest[..end]).map_err(|e| invalid(&format!("bad header: {e}")))?;
    Ok(Object {
        bucket: header.bucket,
        key: header.key,
        body: rest[end + 1..].to_vec(),
        content_type: intern(&header.content_type),
        content_encoding: header.content_encoding.as_deref().map(intern),
        metadata: header
            .metadata
            .into_iter()
            .map(|(k, v)| (intern(&k), v))
            .collect(),
        records: header.records,
    })
}

/// `Object` holds `&'static str` names; spooled ones come back as these. Values other than the
/// known ones (from another sluice version) are leaked once each, so memory stays bounded.
fn intern(s: &str) -> &'static str {
    const KNOWN: [&str; 7] = [
        "application/json",
        "text/csv",
        "gzip",
        "first-timestamp",
        "last-timestamp",
        "num-records",
        "application/octet-stream",
    ];
    if let Some(known) = KNOWN.iter().find(|k| **k == s) {
        return known;
    }
    static OTHERS: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut others = OTHERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = others.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    others.insert(leaked);
    leaked
}

/// Writes `content` to `path` so that after a crash either the whole file or nothing is there.
fn write_durably(dir: &Path, path: &Path, content: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::MemorySink;

    fn object(key: &str, body: &[u8]) -> Object {
        Object {
            bucket: "bucket".into(),
            key: key.into(),
            body: body.to_vec(),
            content_type: "application/json",
            content_encoding: Some("gzip"),
            metadata: vec![
                ("first-timestamp", "1".into()),
                ("last-timestamp", "2".into()),
                ("num-records", "3".into()),
            ],
            records: 3,
        }
    }

    fn settings(dir: &Path, max_objects: u64, max_bytes: u64) -> SpoolSettings {
        SpoolSettings {
            dir: dir.to_path_buf(),
            max_objects,
            max_bytes,
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(SUFFIX))
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn uploads_in_order_and_removes_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let memory = MemorySink::default();
        let stats = Arc::new(PipelineStats::default());
        let spool = SpooledSink::open(
            settings(dir.path(), 100, 1 << 20),
            Sink::Memory(memory.clone()),
            stats,
        )
        .unwrap();
        for i in 0..5 {
            spool
                .write(&object(&format!("k{i}"), b"body"))
                .await
                .unwrap();
        }
        assert_eq!(spool.close(Duration::from_secs(5)).await, 0);
        let got = memory.take();
        assert_eq!(
            got.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
            ["k0", "k1", "k2", "k3", "k4"]
        );
        assert_eq!(got[0], object("k0", b"body"));
        assert!(files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn keeps_objects_while_the_target_fails_and_retries() {
        let dir = tempfile::tempdir().unwrap();
        let memory = MemorySink::default();
        memory.set_failing(true);
        let stats = Arc::new(PipelineStats::default());
        let spool = SpooledSink::open(
            settings(dir.path(), 100, 1 << 20),
            Sink::Memory(memory.clone()),
            stats.clone(),
        )
        .unwrap();
        spool.write(&object("a", b"1")).await.unwrap();
        spool.write(&object("b", b"2")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(files(dir.path()).len(), 2);
        let errors = stats.write_errors.load(Ordering::Relaxed);
        assert!((2..=6).contains(&errors), "backoff from 0.5 s: {errors}");
        memory.set_failing(false);
        let mut queued = spool.inner.queued.subscribe();
        tokio::time::timeout(Duration::from_secs(10), queued.wait_for(|n| *n == 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(memory.take().len(), 2);
        assert!(files(dir.path()).is_empty());
        spool.close(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn full_spool_refuses_writes_until_it_drains() {
        let dir = tempfile::tempdir().unwrap();
        let memory = MemorySink::default();
        memory.set_failing(true);
        let spool = SpooledSink::open(
            settings(dir.path(), 2, 1 << 20),
            Sink::Memory(memory.clone()),
            Arc::new(PipelineStats::default()),
        )
        .unwrap();
        spool.write(&object("a", b"1")).await.unwrap();
        spool.write(&object("b", b"2")).await.unwrap();
        let err = spool.write(&object("c", b"3")).await.unwrap_err();
        assert!(
            matches!(err, SinkError::SpoolFull { objects: 2, .. }),
            "{err}"
        );
        memory.set_failing(false);
        spool.inner.retry_now.notify_one();
        let mut queued = spool.inner.queued.subscribe();
        tokio::time::timeout(Duration::from_secs(5), queued.wait_for(|n| *n == 0))
            .await
            .unwrap()
            .unwrap();
        spool.write(&object("c", b"3")).await.unwrap();
        spool.close(Duration::from_secs(5)).await;
        assert_eq!(memory.take().len(), 3);
    }

    #[tokio::test]
    async fn byte_bound_admits_one_large_object_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let memory = MemorySink::default();
        memory.set_failing(true);
        let spool = SpooledSink::open(
            settings(dir.path(), 100, 64),
            Sink::Memory(memory.clone()),
            Arc::new(PipelineStats::default()),
        )
        .unwrap();
        spool.write(&object("big", &[7; 500])).await.unwrap();
        assert!(matches!(
            spool.write(&object("small", b"x")).await,
            Err(SinkError::SpoolFull { .. })
        ));
        spool.close(Duration::from_millis(10)).await;
    }

    #[tokio::test]
    async fn a_new_spool_uploads_what_the_last_one_left_first() {
        let dir = tempfile::tempdir().unwrap();
        let memory = MemorySink::default();
        memory.set_failing(true);
        let stats = Arc::new(PipelineStats::default());
        let first = SpooledSink::open(
            settings(dir.path(), 100, 1 << 20),
            Sink::Memory(memory.clone()),
            stats.clone(),
        )
        .unwrap();
        first.write(&object("old-1", b"1")).await.unwrap();
        first.write(&object("old-2", b"2")).await.unwrap();
        assert!(
            SpooledSink::open(
                settings(dir.path(), 100, 1 << 20),
                Sink::Memory(memory.clone()),
                stats.clone()
            )
            .is_err(),
            "the folder is locked while open"
        );
        assert_eq!(first.close(Duration::from_millis(10)).await, 2);
        drop(first);
        // A torn write from the crash is discarded.
        std::fs::write(dir.path().join("00000000000000000099.tmp"), b"torn").unwrap();
        memory.set_failing(false);
        let second = SpooledSink::open(
            settings(dir.path(), 100, 1 << 20),
            Sink::Memory(memory.clone()),
            stats,
        )
        .unwrap();
        second.write(&object("new", b"3")).await.unwrap();
        assert_eq!(second.close(Duration::from_secs(5)).await, 0);
        let keys: Vec<String> = memory.take().into_iter().map(|o| o.key).collect();
        assert_eq!(keys, ["old-1", "old-2", "new"]);
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name == ".lock"
        }));
    }

    /// With the store down and the spool full, the buffered store keeps records pending, then
    /// drops the oldest past `max_flow_array_size` as `overflow`; the rest arrives later.
    #[tokio::test]
    async fn full_spool_pushes_back_on_the_buffered_store() {
        use crate::config::{BufferedOptions, CompressSection, EncodeSection, StoreHeaderSection};
        use crate::metrics::DropReason;
        use crate::pipeline::batch::{Batcher, BufferedBatcher};
        use crate::pipeline::output::{KeyLayout, Output};
        use crate::pipeline::record::Record;
        use crate::pipeline::{compress, encode, storeheader};

        let dir = tempfile::tempdir().unwrap();
        let memory = MemorySink::default();
        memory.set_failing(true);
        let stats = Arc::new(PipelineStats::default());
        let spool = SpooledSink::open(
            settings(dir.path(), 1, 1 << 20),
            Sink::Memory(memory.clone()),
            stats.clone(),
        )
        .unwrap();
        let mut out = Output {
            header: storeheader::StoreHeader::from_config(&StoreHeaderSection::default()),
            encoder: encode::Encoder::from_config(&EncodeSection::default()),
            compressor: compress::Compressor::from_config(&CompressSection::default()),
            sink: Sink::Spooled(spool.clone()),
            bucket: "bucket".into(),
            keys: KeyLayout {
                prefix: "logs".into(),
                extension: "json",
                ..KeyLayout::default()
            },
            stats: stats.clone(),
            account_file: None,
        };
        let mut store = Batcher::Buffered(BufferedBatcher::new(BufferedOptions {
            filename_prefix: "logs".into(),
            dirname: "bucket".into(),
            max_flows_per_object: 10,
            max_seconds_per_object: 60,
            max_seconds_per_stream: 3600,
            max_flow_array_size: 25,
            ..BufferedOptions::default()
        }));
        let records = |from: usize, n: usize| -> Vec<Record> {
            (from..from + n)
                .map(|i| {
                    Record::Flow(Box::new(crate::skydive::flow::Flow::new(
                        format!("f{i}"),
                        0,
                        0,
                    )))
                })
                .collect()
        };
        let t0 = 1_546_338_030_000;
        store
            .store(t0, vec![("egress", records(0, 10))], &mut out)
            .await;
        assert_eq!(spool.queued(), 1, "the first object is spooled");
        store
            .store(t0 + 1, vec![("egress", records(10, 10))], &mut out)
            .await;
        assert_eq!(store.pending(), 10, "spool full: the records stay pending");
        store
            .store(t0 + 2, vec![("egress", records(20, 20))], &mut out)
            .await;
        assert_eq!(store.pending(), 25);
        assert_eq!(stats.dropped(DropReason::Overflow), 5);

        memory.set_failing(false);
        spool.inner.retry_now.notify_one();
        let mut queued = spool.inner.queued.subscribe();
        tokio::time::timeout(Duration::from_secs(5), queued.wait_for(|n| *n == 0))
            .await
            .unwrap()
            .unwrap();
        let mut now = t0 + 2;
        while store.pending() > 0 {
            now = store.next_deadline_ms().unwrap().max(now);
            store.tick(now, &mut out).await;
            let mut queued = spool.inner.queued.subscribe();
            tokio::time::timeout(Duration::from_secs(5), queued.wait_for(|n| *n == 0))
                .await
                .unwrap()
                .unwrap();
        }
        spool.close(Duration::from_secs(5)).await;
        let uploaded: usize = memory.take().iter().map(|o| o.records).sum();
        assert_eq!(uploaded, 35, "40 sent, 5 dropped as overflow");
        assert!(stats.write_errors.load(Ordering::Relaxed) >= 2);
    }

    #[test]
    fn default_dir_is_per_bucket_and_config_file() {
        let a = default_dir(Path::new("/etc/sluice/a.yml"), "my bucket");
        let b = default_dir(Path::new("/etc/sluice/b.yml"), "my bucket");
        assert_ne!(a, b);
        assert_eq!(a, default_dir(Path::new("/etc/sluice/a.yml"), "my bucket"));
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("my_bucket-"), "{name}");
        assert!(a.parent().unwrap().ends_with("sluice/spool"));
    }

    #[test]
    fn spool_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.obj");
        let o = object(
            "logs/egress/20190101T000000Z/00000000.gz",
            b"\x1f\x8b\n\nbinary",
        );
        write_durably(dir.path(), &path, &encode(&o)).unwrap();
        assert_eq!(parse_spooled(&std::fs::read(&path).unwrap()).unwrap(), o);
        assert!(parse_spooled(b"garbage").is_err());
        assert!(parse_spooled(b"sluice-spool 1\n{not json").is_err());
    }
}
