//! A node's hold on one pipeline, judged by the node's own monotonic clock (docs/service.md
//! §9): valid until a deadline that each successful lease renewal pushes forward, and never
//! longer than the lease the database gave. A pipeline whose fence lapses stops itself, and its
//! subscriber does not connect past it, whatever the database says meanwhile: a node that was
//! paused (SIGSTOP, a VM freeze) or cut off from the database cannot know whether another node
//! has taken the pipeline over, and must assume it has.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The hold of `node` on a pipeline at `generation`.
#[derive(Debug)]
pub struct Fence {
    node: String,
    generation: i64,
    base: Instant,
    /// Nanoseconds after `base` until which the hold is valid.
    until: AtomicU64,
}

impl Fence {
    /// A hold valid until `until`.
    pub fn new(node: &str, generation: i64, until: Instant) -> Fence {
        let base = Instant::now();
        let fence = Fence {
            node: node.to_string(),
            generation,
            base,
            until: AtomicU64::new(0),
        };
        fence.extend(until);
        fence
    }

    /// A hold that never lapses: `sluice run`'s pipeline and tests, which no other node can
    /// take over.
    pub fn unbounded(node: &str) -> Fence {
        Fence::new(
            node,
            0,
            Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600),
        )
    }

    /// The node holding it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The generation (fencing token) every database write of the pipeline carries.
    pub fn generation(&self) -> i64 {
        self.generation
    }

    fn deadline(&self) -> Instant {
        self.base + Duration::from_nanos(self.until.load(Ordering::Acquire))
    }

    /// Whether the hold is valid now.
    pub fn holds(&self) -> bool {
        Instant::now() < self.deadline()
    }

    /// Pushes the deadline to `until` (never back).
    pub fn extend(&self, until: Instant) {
        let nanos = until.saturating_duration_since(self.base).as_nanos();
        self.until
            .fetch_max(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::AcqRel);
    }

    /// Ends the hold now (the node lost or gave up the pipeline).
    pub fn revoke(&self) {
        self.until.store(0, Ordering::Release);
    }

    /// Returns once the hold has lapsed (re-reading the deadline, which renewals move).
    pub async fn lapsed(&self) {
        loop {
            let deadline = self.deadline();
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fence_holds_until_its_deadline_and_extends_only_forward() {
        let fence = Fence::new("n1", 3, Instant::now() + Duration::from_secs(600));
        assert!(fence.holds());
        assert_eq!((fence.node(), fence.generation()), ("n1", 3));
        fence.extend(Instant::now());
        assert!(fence.holds(), "an earlier deadline does not shorten it");
        fence.revoke();
        assert!(!fence.holds());
        fence.lapsed().await;
        fence.extend(Instant::now() + Duration::from_millis(50));
        fence.lapsed().await;
        assert!(
            !fence.holds(),
            "lapsed() returns only once the deadline passed"
        );
        assert!(Fence::unbounded("n").holds());
    }
}
