//! An in-memory writer, for dry runs, tests and benchmarks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Object, SinkError};

/// Keeps every object written.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    objects: Arc<Mutex<Vec<Object>>>,
    failing: Arc<AtomicBool>,
}

impl MemorySink {
    /// Stores one object, or fails while [`MemorySink::set_failing`] is on.
    pub fn write(&self, object: &Object) -> Result<(), SinkError> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(SinkError::Io {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                path: "<memory>".into(),
                source: std::io::Error::other("memory sink set to fail"),
            });
        }
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(object.clone());
        Ok(())
    }

    /// Makes every write fail (fault injection for tests).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// Takes the objects written so far.
    pub fn take(&self) -> Vec<Object> {
        std::mem::take(&mut *self.objects.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
