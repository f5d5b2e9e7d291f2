//! `GET /sim/subscriptions`: every subscription attempt the simulator answered, accepted (101)
//! or refused because its host id was connected already (409), with the time and the peer, so
//! that a test can check that no two subscribers ever held one host id and when each came.

use std::sync::Mutex;

use serde::Serialize;

/// One attempt.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Attempt {
    /// The host id asked for.
    pub host_id: String,
    /// The subscriber's address.
    pub peer: String,
    /// Epoch milliseconds.
    pub at_ms: i64,
    /// 101 (accepted) or 409 (host id in use).
    pub status: u16,
}

/// Every attempt, oldest first (bounded: a test's worth).
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    attempts: Mutex<Vec<Attempt>>,
}

impl Subscriptions {
    /// At most this many attempts are kept (the oldest stay: a test reads from its start).
    const MAX: usize = 1_000_000;

    pub fn record(&self, host_id: &str, peer: std::net::SocketAddr, status: u16) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        if attempts.len() < Self::MAX {
            attempts.push(Attempt {
                host_id: host_id.to_owned(),
                peer: peer.to_string(),
                at_ms: crate::now_ms(),
                status,
            });
        }
    }

    pub fn all(&self) -> Vec<Attempt> {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
