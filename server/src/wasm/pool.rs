//! The guest pool of `sluice serve`: guests run on threads of their own, never on the tokio
//! workers that serve the API, move flows and renew leases, so a guest that spins until its
//! deadline takes one guest thread, not the server.
//!
//! Each tenant may run at most `per_tenant` batches at once: one tenant's hundred pipelines
//! wait for their own slots while another tenant's guests use the other threads. Waiting for a
//! slot costs a batch nothing: its deadline and fuel start when a thread takes it.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, oneshot};

type Job = Box<dyn FnOnce() + Send>;

/// The pool is gone (the process is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the guest pool is closed")]
pub struct PoolClosed;

/// Threads that run guests, with a per-tenant share.
pub struct GuestPool {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// One permit per thread: a job is handed over only when a thread is free.
    free: Arc<Semaphore>,
    per_tenant: usize,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    threads: usize,
}

impl std::fmt::Debug for GuestPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestPool")
            .field("threads", &self.threads)
            .field("per_tenant", &self.per_tenant)
            .finish_non_exhaustive()
    }
}

impl GuestPool {
    /// Starts `threads` guest threads (0: one per core); a tenant runs at most `per_tenant`
    /// batches at once (0: half the threads, at least one).
    pub fn start(threads: usize, per_tenant: usize) -> Arc<GuestPool> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let per_tenant = match per_tenant {
            0 => (threads / 2).max(1),
            n => n.min(threads),
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("sluice-guest-{i}"))
                .spawn(move || {
                    loop {
                        let job = {
                            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                            rx.recv()
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                })
                .expect("a guest thread starts");
        }
        Arc::new(GuestPool {
            jobs: Mutex::new(tx),
            free: Arc::new(Semaphore::new(threads)),
            per_tenant,
            tenants: Mutex::new(HashMap::new()),
            threads,
        })
    }

    /// Guest threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Batches one tenant may run at once.
    pub fn per_tenant(&self) -> usize {
        self.per_tenant
    }

    fn tenant_slots(&self, tenant: &str) -> Arc<Semaphore> {
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone()
    }

    /// Runs `work` on a guest thread once the tenant has a slot and a thread is free.
    pub async fn run<R: Send + 'static>(
        &self,
        tenant: &str,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PoolClosed> {
        let _tenant = self
            .tenant_slots(tenant)
            .acquire_owned()
            .await
            .map_err(|_| PoolClosed)?;
        let thread = self
            .free
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolClosed)?;
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let r = work();
            drop(thread);
            let _ = done.send(r);
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| PoolClosed)?;
        result.await.map_err(|_| PoolClosed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenant_uses_its_share_and_another_tenant_still_runs() {
        let pool = GuestPool::start(2, 1);
        assert_eq!((pool.threads(), pool.per_tenant()), (2, 1));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (pool, running, most, finished) = (
                pool.clone(),
                running.clone(),
                most.clone(),
                finished.clone(),
            );
            tasks.push(tokio::spawn(async move {
                pool.run("greedy", move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(100));
                    running.fetch_sub(1, Ordering::SeqCst);
                    finished.fetch_add(1, Ordering::SeqCst);
                })
                .await
                .unwrap();
            }));
        }
        // The greedy tenant's four batches queue on its one slot; another tenant's batch takes
        // the other thread and is done before they are.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let name = pool
            .run("polite", || {
                std::thread::current().name().unwrap_or("").to_string()
            })
            .await
            .unwrap();
        assert!(name.starts_with("sluice-guest-"), "{name}");
        assert!(finished.load(Ordering::SeqCst) < 4);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(finished.load(Ordering::SeqCst), 4);
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "the greedy tenant ran two at once"
        );
    }
}
