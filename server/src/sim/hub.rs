//! Connections of `/ws/subscriber/flow`, the namespace registry, broadcast and the sent log
//! (docs/skydive-protocol.md §2.3).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::Record;

/// Messages a connection may queue before the broadcaster waits (Skydive's `queue_size`).
const QUEUE_SIZE: usize = 10_000;

/// One message queued for a connection.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// The compact JSON text frame.
    pub text: Utf8Bytes,
    /// The flow records it carries, logged as sent once a socket write succeeds.
    pub delivery: Option<Arc<Delivery>>,
}

/// Which records of a batch one message carries.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub batch: Arc<BatchLog>,
    pub indices: Vec<usize>,
}

/// A flushed batch and which of its records reached at least one socket.
#[derive(Debug)]
pub(crate) struct BatchLog {
    pub records: Vec<Record>,
    logged: Mutex<Vec<bool>>,
}

impl BatchLog {
    pub fn new(records: Vec<Record>) -> Self {
        let logged = Mutex::new(vec![false; records.len()]);
        BatchLog { records, logged }
    }
}

/// What a connection accepts: exact namespaces, or everything (`*`).
#[derive(Debug, Clone)]
pub(crate) struct Filter(Vec<String>);

impl Filter {
    pub fn new(namespaces: Vec<String>) -> Self {
        if namespaces.is_empty() {
            Filter(vec!["*".to_owned()])
        } else {
            Filter(namespaces)
        }
    }

    fn accepts(&self, namespace: &str) -> bool {
        self.0.iter().any(|n| n == "*" || n == namespace)
    }
}

struct Conn {
    registered: Vec<String>,
    filter: Filter,
    tx: mpsc::Sender<Outgoing>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    host_ids: HashSet<String>,
    conns: HashMap<u64, Conn>,
    registry: HashSet<String>,
}

/// Counters exposed by `GET /sim/sent`.
#[derive(Debug, Default)]
pub struct SentCounters {
    /// Distinct flow records written to at least one subscriber socket.
    pub records: AtomicU64,
    /// Messages written to sockets (one per connection).
    pub messages: AtomicU64,
}

/// Shared state of all subscriber connections.
pub(crate) struct Hub {
    inner: Mutex<Inner>,
    wipe_registry_bug: bool,
    live: watch::Sender<usize>,
    pub counters: SentCounters,
    log: Mutex<Option<BufWriter<File>>>,
}

/// Holds a host id while its connection is live; dropping it frees the id.
pub(crate) struct Reservation {
    hub: Arc<Hub>,
    host_id: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.hub.lock().host_ids.remove(&self.host_id);
    }
}

/// Detaches a streaming connection when dropped.
pub(crate) struct Attached {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let live = {
            let mut inner = self.hub.lock();
            inner.conns.remove(&self.id);
            if self.hub.wipe_registry_bug {
                // Skydive empties the whole registry when any subscriber leaves.
                inner.registry.clear();
            } else {
                inner.registry = inner
                    .conns
                    .values()
                    .flat_map(|c| c.registered.iter().cloned())
                    .collect();
            }
            inner.conns.len()
        };
        self.hub.live.send_replace(live);
    }
}

impl Hub {
    pub fn new(wipe_registry_bug: bool, sent_log: Option<&Path>) -> anyhow::Result<Arc<Self>> {
        let log = match sent_log {
            Some(path) => Some(BufWriter::new(
                File::options().create(true).append(true).open(path)?,
            )),
            None => None,
        };
        Ok(Arc::new(Hub {
            inner: Mutex::new(Inner::default()),
            wipe_registry_bug,
            live: watch::Sender::new(0),
            counters: SentCounters::default(),
            log: Mutex::new(log),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches the number of streaming connections.
    pub fn live(&self) -> watch::Receiver<usize> {
        self.live.subscribe()
    }

    /// Takes `host_id` for a new connection, or `None` if a live connection holds it.
    pub fn reserve(self: &Arc<Self>, host_id: String) -> Option<Reservation> {
        if !self.lock().host_ids.insert(host_id.clone()) {
            return None;
        }
        Some(Reservation {
            hub: self.clone(),
            host_id,
        })
    }

    /// Adds a streaming connection: `registered` goes to the registry (absent means `flow` and
    /// `stats`), `filter` decides what it receives.
    pub fn attach(
        self: &Arc<Self>,
        registered: Vec<String>,
        filter: Filter,
    ) -> (Attached, mpsc::Receiver<Outgoing>) {
        let registered = if registered.is_empty() {
            vec!["flow".to_owned(), "stats".to_owned()]
        } else {
            registered
        };
        let (tx, rx) = mpsc::channel(QUEUE_SIZE);
        let (id, live) = {
            let mut inner = self.lock();
            let id = inner.next_id;
            inner.next_id += 1;
            inner.registry.extend(registered.iter().cloned());
            inner.conns.insert(
                id,
                Conn {
                    registered,
                    filter,
                    tx,
                },
            );
            (id, inner.conns.len())
        };
        self.live.send_replace(live);
        (
            Attached {
                hub: self.clone(),
                id,
            },
            rx,
        )
    }

    /// Whether some subscriber registered `namespace`.
    pub fn registered(&self, namespace: &str) -> bool {
        self.lock().registry.contains(namespace)
    }

    /// Queues a message for every connection whose filter accepts `namespace` (all of them when
    /// `namespace` is `None`). Waits when a queue is full, as Skydive's broadcaster does.
    pub async fn broadcast(&self, namespace: Option<&str>, message: Outgoing) {
        let targets: Vec<mpsc::Sender<Outgoing>> = self
            .lock()
            .conns
            .values()
            .filter(|c| namespace.is_none_or(|ns| c.filter.accepts(ns)))
            .map(|c| c.tx.clone())
            .collect();
        for tx in targets {
            // A connection that ended meanwhile just misses the message.
            let _ = tx.send(message.clone()).await;
        }
    }

    /// Records that `message` reached a socket: logs the records it carries that no earlier
    /// write logged.
    pub fn written(&self, message: &Outgoing) {
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        let Some(delivery) = &message.delivery else {
            return;
        };
        let mut logged = delivery
            .batch
            .logged
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh = 0;
        for &i in &delivery.indices {
            if std::mem::replace(&mut logged[i], true) {
                continue;
            }
            fresh += 1;
            if let Some(log) = log.as_mut()
                && let Err(e) = writeln!(log, "{}", delivery.batch.records[i].json.get())
            {
                warn!(error = %e, "Cannot write the sent log.");
            }
        }
        if let Some(log) = log.as_mut()
            && let Err(e) = log.flush()
        {
            warn!(error = %e, "Cannot flush the sent log.");
        }
        self.counters.records.fetch_add(fresh, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_is_exact_or_wildcard() {
        let f = Filter::new(vec!["flow".into()]);
        assert!(f.accepts("flow"));
        assert!(!f.accepts("flow/x"));
        let any = Filter::new(vec![]);
        assert!(any.accepts("flow/x"));
    }

    #[test]
    fn registry_defaults_wipes_and_host_ids() {
        let hub = Hub::new(true, None).unwrap();
        let (a, _rx_a) = hub.attach(vec![], Filter::new(vec![]));
        let (b, _rx_b) = hub.attach(vec!["flow/c".into()], Filter::new(vec!["flow/c".into()]));
        assert!(hub.registered("flow") && hub.registered("stats") && hub.registered("flow/c"));
        drop(b);
        assert!(!hub.registered("flow"), "the wipe bug empties the registry");
        drop(a);

        let hub = Hub::new(false, None).unwrap();
        let (a, _rx_a) = hub.attach(vec!["flow".into()], Filter::new(vec![]));
        let (b, _rx_b) = hub.attach(vec!["flow/c".into()], Filter::new(vec![]));
        drop(b);
        assert!(hub.registered("flow") && !hub.registered("flow/c"));
        drop(a);

        let r = hub.reserve("h".into()).unwrap();
        assert!(hub.reserve("h".into()).is_none());
        drop(r);
        assert!(hub.reserve("h".into()).is_some());
    }
}
