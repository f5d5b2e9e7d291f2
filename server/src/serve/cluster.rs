//! Scale-out (docs/service.md §9): this node's heartbeat, its leases on the pipelines it runs,
//! placement of new and orphaned pipelines, takeovers, fencing and handover. SQLite is the
//! one-node case of the same code: the node is alone in the `nodes` table and holds every
//! pipeline.
//!
//! Two loops per node, every [`Timings::renew_every`]. The renewal ([`Cluster::renew`]):
//! heartbeat, renew every unexpired lease it holds, extend the fences of what it still holds;
//! it never waits on a pipeline (a stop may wait 30 s for uploads), so a slow flush cannot
//! make the node lose its other pipelines. The round ([`Cluster::round`]): stop what it lost
//! (another node took it over, or it was deleted); start what was placed on it; take over, by
//! the same placement rule on every node, the pipelines whose lease expired
//! [`Timings::grace`] ago (their node is gone) or that have none; apply definitions and
//! desired states changed through other nodes; publish each pipeline's status.
//! A node never trusts a lease past what its own monotonic clock allows
//! ([`crate::fence::Fence`]): a renewal sent at `t` keeps its pipelines running until
//! `t + 4/5 ttl` only, so they stop before the lease (`wall(t) + ttl`) expires for the others,
//! who wait `grace` more before taking over.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::db::ownership::{self, Held, Published};
use crate::db::{Db, DbError, DesiredState, PipelineRow, Placement, nodes, pipelines};
use crate::fence::Fence;
use crate::supervisor::Supervisor;

/// The cluster's timings, all derived from `limits.lease_ttl_secs`.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// A lease's lifetime without renewal.
    pub ttl: Duration,
    /// The loop's period: heartbeat and renewals (a fifteenth of `ttl`: 1 s at 15 s).
    pub renew_every: Duration,
    /// How long after a renewal was sent this node keeps running its pipelines without
    /// another (4/5 of `ttl`).
    pub fence_window: Duration,
    /// How long past a lease's expiry the others wait before taking it over (2/15 of `ttl`:
    /// room for clock skew between nodes).
    pub grace: Duration,
}

impl Timings {
    /// The timings for a lease lifetime.
    pub fn for_ttl(ttl: Duration) -> Timings {
        let ttl = ttl.max(Duration::from_secs(1));
        Timings {
            ttl,
            renew_every: (ttl / 15).max(Duration::from_millis(50)),
            fence_window: ttl * 4 / 5,
            grace: ttl * 2 / 15,
        }
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis() as i64
    }
}

/// A pipeline this node runs, as it runs it.
#[derive(Debug, Clone)]
struct Local {
    fence: Arc<Fence>,
    updated_at: i64,
    desired: DesiredState,
}

/// This node in the cluster. A cheap clone.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    node: String,
    address: String,
    timings: Timings,
    supervisor: Supervisor,
    data_dir: PathBuf,
    local: Mutex<HashMap<String, Local>>,
    published: Mutex<HashMap<String, Published>>,
    /// Set once this node hands its pipelines over (drain or shutdown): it takes none.
    leaving: AtomicBool,
    /// Set by the renewal when the node's row asks it to drain.
    drain_asked: AtomicBool,
    /// Serialises the loop's rounds with handovers.
    round: tokio::sync::Mutex<()>,
}

impl Cluster {
    /// Joins the cluster: registers this node, then runs one round so that the pipelines it
    /// held (or that nobody holds) are running before the API answers.
    pub async fn join(
        db: Db,
        node: String,
        address: String,
        timings: Timings,
        supervisor: Supervisor,
        data_dir: PathBuf,
    ) -> Result<Cluster, DbError> {
        let cluster = Cluster {
            inner: Arc::new(Inner {
                db,
                node,
                address,
                timings,
                supervisor,
                data_dir,
                local: Mutex::new(HashMap::new()),
                published: Mutex::new(HashMap::new()),
                leaving: AtomicBool::new(false),
                drain_asked: AtomicBool::new(false),
                round: tokio::sync::Mutex::new(()),
            }),
        };
        let i = &cluster.inner;
        nodes::register(&i.db, &i.node, &i.address, crate::now_ms()).await?;
        cluster.take_back_own().await?;
        cluster.renew().await?;
        cluster.round().await?;
        Ok(cluster)
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The timings.
    pub fn timings(&self) -> Timings {
        self.inner.timings
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, Local>> {
        self.inner.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a new pipeline goes: the live node with the fewest pipelines (ties: the lowest
    /// id), this node if none is known. `sent` is when its lease is granted from.
    pub async fn place_new(&self) -> Result<Placement, DbError> {
        let now = crate::now_ms();
        let t = self.inner.timings;
        let counts = ownership::placement_counts(&self.inner.db, now - t.ttl_ms(), now).await?;
        let node = counts
            .iter()
            .min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
            .map_or_else(|| self.inner.node.clone(), |(n, _)| n.clone());
        Ok(Placement {
            node,
            expires_at: now + t.ttl_ms(),
        })
    }

    /// Starts a pipeline just created with a placement on this node (generation 1), whose
    /// lease was granted at `sent` or later.
    pub async fn start_created(&self, row: &PipelineRow, sent: Instant) {
        let _round = self.inner.round.lock().await;
        self.start_local(row, 1, sent + self.inner.timings.fence_window)
            .await;
    }

    /// Holds off the loop while the API applies a change to a pipeline itself (its round would
    /// otherwise apply the same change again).
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.round.lock().await
    }

    /// Records that this node applied `row` (its definition and desired state) itself, so the
    /// loop does not apply it again.
    pub fn applied(&self, row: &PipelineRow) {
        if let Some(local) = self.local().get_mut(&row.id) {
            local.updated_at = row.updated_at;
            local.desired = row.desired_state;
        }
    }

    /// Forgets a pipeline this node deleted itself.
    pub fn forget(&self, id: &str) {
        if let Some(local) = self.local().remove(id) {
            local.fence.revoke();
        }
    }

    /// Runs a pipeline this node holds at `generation`, its fence valid until `until`.
    async fn start_local(&self, row: &PipelineRow, generation: i64, until: Instant) {
        let fence = Arc::new(Fence::new(&self.inner.node, generation, until));
        self.local().insert(
            row.id.clone(),
            Local {
                fence: fence.clone(),
                updated_at: row.updated_at,
                desired: row.desired_state,
            },
        );
        info!(pipeline = %row.id, generation, node = %self.inner.node, "Pipeline held by this node.");
        self.inner.supervisor.add(row, fence).await;
    }

    /// At start: the leases this node's previous run held are taken again at the next
    /// generation (whatever that run may still write is refused).
    async fn take_back_own(&self) -> Result<(), DbError> {
        let i = &self.inner;
        let now = crate::now_ms();
        for held in ownership::held_by(&i.db, &i.node).await? {
            let sent = Instant::now();
            let taken = ownership::take(
                &i.db,
                &held.pipeline_id,
                Some(held.generation),
                &i.node,
                i64::MAX,
                now + i.timings.ttl_ms(),
            )
            .await?;
            if let Some(generation) = taken
                && let Some(row) = pipelines::get(&i.db, &held.pipeline_id, None).await?
            {
                self.start_local(&row, generation, sent + i.timings.fence_window)
                    .await;
            }
        }
        Ok(())
    }

    /// Runs the renewal and the round until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let renewal = {
            let (cluster, stop) = (self.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(cluster.inner.timings.renew_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => {
                            if let Err(e) = cluster.renew().await {
                                warn!(error = %e, "Cannot renew this node's leases (the database is out of reach?); its pipelines stop when their hold lapses.");
                            }
                        }
                    }
                }
            })
        };
        let mut tick = tokio::time::interval(self.inner.timings.renew_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = self.round().await {
                        warn!(error = %e, "Cluster round failed (the database is out of reach?).");
                    }
                }
                _ = sweep.tick() => self.sweep_spools().await,
            }
        }
        let _ = renewal.await;
    }

    /// The heartbeat and the renewal of every unexpired lease this node holds; the fence of
    /// each pipeline it runs at the generation still held is extended to the renewal's send
    /// time + [`Timings::fence_window`]. Waits on no pipeline.
    pub async fn renew(&self) -> Result<(), DbError> {
        let i = &self.inner;
        let sent = Instant::now();
        let now = crate::now_ms();
        let expires = now + i.timings.ttl_ms();
        let draining = match nodes::heartbeat(&i.db, &i.node, now).await? {
            Some(draining) => draining,
            None => {
                // The row went (an operator's cleanup): join again.
                nodes::register(&i.db, &i.node, &i.address, now).await?;
                false
            }
        };
        i.drain_asked.store(draining, Ordering::Release);
        ownership::renew(&i.db, &i.node, now, expires).await?;
        let held = ownership::held_by(&i.db, &i.node).await?;
        let local = self.local();
        for h in held.iter().filter(|h| h.expires_at == expires) {
            if let Some(l) = local.get(&h.pipeline_id)
                && l.fence.generation() == h.generation
            {
                l.fence.extend(sent + i.timings.fence_window);
            }
        }
        Ok(())
    }

    /// One round of the loop (see the module's comment).
    pub async fn round(&self) -> Result<(), DbError> {
        let i = &self.inner;
        let _round = i.round.lock().await;
        // Pipelines whose hold lapsed have stopped themselves; forget them (a lease still ours
        // is picked up again below, under a fresh fence).
        let lapsed: Vec<String> = self
            .local()
            .iter()
            .filter(|(_, l)| !l.fence.holds())
            .map(|(id, _)| id.clone())
            .collect();
        for id in lapsed {
            self.local().remove(&id);
            i.supervisor.release(&id).await;
        }
        if i.drain_asked.load(Ordering::Acquire) && !i.leaving.load(Ordering::Acquire) {
            info!(node = %i.node, "Asked to drain: handing every pipeline over.");
            drop(_round);
            self.hand_over().await;
            return Ok(());
        }
        let held: HashMap<String, Held> = ownership::held_by(&i.db, &i.node)
            .await?
            .into_iter()
            .map(|h| (h.pipeline_id.clone(), h))
            .collect();
        self.apply_held(&held).await?;
        if !i.leaving.load(Ordering::Acquire) {
            self.take_over().await?;
        }
        self.publish().await;
        Ok(())
    }

    /// Keeps what this node still holds, drops what it lost, starts what was placed on it,
    /// and applies changes made through other nodes.
    async fn apply_held(&self, held: &HashMap<String, Held>) -> Result<(), DbError> {
        let i = &self.inner;
        let local: Vec<(String, Local)> = self
            .local()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, l) in &local {
            match held.get(id) {
                Some(h) if h.generation == l.fence.generation() => {
                    if h.updated_at != l.updated_at || h.desired_state != l.desired {
                        self.apply_change(id, h).await?;
                    }
                }
                _ => {
                    // Taken over by another node, or deleted through one.
                    l.fence.revoke();
                    self.local().remove(id);
                    if pipelines::get(&i.db, id, None).await?.is_some() {
                        info!(pipeline = %id, generation = l.fence.generation(), "Pipeline lost to another node: stopping it here.");
                        i.supervisor.release(id).await;
                    } else {
                        info!(pipeline = %id, "Pipeline deleted through another node.");
                        i.supervisor.remove(id).await;
                    }
                    i.published
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(id);
                }
            }
        }
        if i.leaving.load(Ordering::Acquire) {
            return Ok(());
        }
        for (id, h) in held {
            // Placed here by another node (or held under a lapsed fence, still ours): run it
            // while its lease has more than the fence's margin left. The fence ends where a
            // renewal sent when the lease was last extended would have put it.
            let left = h.expires_at
                - crate::now_ms()
                - (i.timings.ttl - i.timings.fence_window).as_millis() as i64;
            if left <= 0 || self.local().contains_key(id) {
                continue;
            }
            let until = Instant::now() + Duration::from_millis(left as u64);
            if let Some(row) = pipelines::get(&i.db, id, None).await? {
                self.start_local(&row, h.generation, until).await;
            }
        }
        Ok(())
    }

    /// Applies a definition or desired state changed through another node.
    async fn apply_change(&self, id: &str, held: &Held) -> Result<(), DbError> {
        let i = &self.inner;
        let Some(row) = pipelines::get(&i.db, id, None).await? else {
            return Ok(());
        };
        let previous = self.local().get(id).map(|l| l.updated_at);
        if previous != Some(held.updated_at) && row.desired_state == DesiredState::Running {
            info!(pipeline = %id, "Definition changed through another node: restarting it.");
            i.supervisor.replace(&row).await;
        } else if row.desired_state == DesiredState::Running {
            i.supervisor.start(&row).await;
        } else {
            i.supervisor.stop(id).await;
        }
        self.applied(&row);
        Ok(())
    }

    /// Takes over, by placement, the pipelines whose lease expired `grace` ago or that have
    /// none. Every node computes the same assignment from the same rows (the fewest pipelines
    /// first, ties by id, pipelines in id order), and takes only its own share; the
    /// generation's compare-and-set settles any race.
    async fn take_over(&self) -> Result<(), DbError> {
        let i = &self.inner;
        let t = i.timings;
        let now = crate::now_ms();
        let before = now - t.grace.as_millis() as i64;
        let up = ownership::claimable(&i.db, before).await?;
        if up.is_empty() {
            return Ok(());
        }
        let mut counts = ownership::placement_counts(&i.db, now - t.ttl_ms(), now).await?;
        if counts.is_empty() {
            return Ok(());
        }
        for claim in up {
            let Some(target) = counts
                .iter_mut()
                .min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
            else {
                break;
            };
            target.1 += 1;
            if target.0 != i.node {
                continue;
            }
            let sent = Instant::now();
            let now = crate::now_ms();
            let taken = ownership::take(
                &i.db,
                &claim.pipeline_id,
                claim.generation,
                &i.node,
                before,
                now + t.ttl_ms(),
            )
            .await?;
            let Some(generation) = taken else { continue };
            if let Some(row) = pipelines::get(&i.db, &claim.pipeline_id, None).await? {
                info!(pipeline = %row.id, generation, "Pipeline taken over by this node.");
                self.start_local(&row, generation, sent + t.fence_window)
                    .await;
            }
        }
        Ok(())
    }

    /// Publishes each local pipeline's status that changed since last published.
    async fn publish(&self) {
        let i = &self.inner;
        let local: Vec<(String, Arc<Fence>)> = self
            .local()
            .iter()
            .map(|(k, v)| (k.clone(), v.fence.clone()))
            .collect();
        let now = crate::now_ms();
        for (id, fence) in local {
            let Some(live) = i.supervisor.live(&id) else {
                continue;
            };
            let (state, last_error) = live.state();
            let status = Published {
                state: state.as_str(),
                connected: live.connected(),
                restarts: live.restarts.load(Ordering::Relaxed) as i64,
                last_error,
            };
            let unchanged = i
                .published
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&id)
                == Some(&status);
            if unchanged {
                continue;
            }
            match ownership::publish(&i.db, &id, &i.node, fence.generation(), &status, now).await {
                Ok(()) => {
                    i.published
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id, status);
                }
                Err(e) => debug!(pipeline = %id, error = %e, "Status not published."),
            }
        }
    }

    /// Hands every pipeline over: this node takes no more, and each of its pipelines stops
    /// (flushing, counters saved under its generation) and is released at once, so the next
    /// round of another node takes it. Used by the drain route and at shutdown.
    pub async fn hand_over(&self) {
        let i = &self.inner;
        {
            // After the round in progress, if any: it may be starting a pipeline.
            let _round = i.round.lock().await;
            i.leaving.store(true, Ordering::Release);
        }
        if let Err(e) = nodes::set_draining(&i.db, &i.node).await {
            warn!(error = %e, "Cannot mark this node as draining.");
        }
        // Rounds go on meanwhile (renewing the leases of the pipelines still flushing) but
        // start and take nothing.
        let local: Vec<(String, Local)> = self.local().drain().collect();
        let stops = local.iter().map(|(id, l)| async move {
            i.supervisor.release(id).await;
            l.fence.revoke();
            if let Err(e) = ownership::release(&i.db, id, &i.node, l.fence.generation()).await {
                warn!(pipeline = %id, error = %e, "Cannot hand the pipeline over; its lease expires instead.");
            }
        });
        futures_util::future::join_all(stops).await;
        if let Err(e) = ownership::release_all(&i.db, &i.node).await {
            warn!(error = %e, "Cannot release this node's leases; they expire instead.");
        }
        info!(node = %i.node, pipelines = local.len(), "Pipelines handed over.");
    }

    /// Uploads what the spools of pipelines this node no longer runs still hold (a node back
    /// after a crash, or after losing its pipelines): the pipeline runs elsewhere now, with a
    /// spool on that node's disk, so nobody else would. A folder whose pipeline was deleted
    /// meanwhile goes, as a delete through this node would have removed it.
    pub async fn sweep_spools(&self) {
        let i = &self.inner;
        let Ok(entries) = std::fs::read_dir(i.data_dir.join("pipelines")) else {
            return;
        };
        let ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        for id in ids {
            if self.local().contains_key(&id) {
                continue;
            }
            let dir = i.supervisor.pipeline_dir(&id);
            if crate::sinks::spool::count_in(&dir) == 0 {
                continue;
            }
            match pipelines::get(&i.db, &id, None).await {
                Ok(Some(row)) => {
                    let left = i.supervisor.drain_spool(&row).await;
                    info!(pipeline = %id, left, "Spool of a pipeline running elsewhere uploaded.");
                }
                Ok(None) => {
                    warn!(pipeline = %id, "Removing the folder of a pipeline deleted while this node was away (its spooled objects are discarded, as a delete does).");
                    let _ = tokio::fs::remove_dir_all(&dir).await;
                }
                Err(e) => debug!(pipeline = %id, error = %e, "Spool sweep skipped."),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Tenant, account};
    use crate::supervisor::{RunState, SupervisorSettings};

    const DEFINITION: &str = "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:9/ws/subscriber/flow\n  store:\n    buffered:\n      dirname: b\n      max_flows_per_object: 10\n      max_flow_array_size: 100\n  write:\n    type: file\n    file:\n      dir: out\n";
    const WAIT: Duration = Duration::from_secs(20);

    fn row(id: &str) -> PipelineRow {
        PipelineRow {
            id: id.into(),
            tenant_id: "t1".into(),
            definition: DEFINITION.into(),
            desired_state: DesiredState::Running,
            created_at: 0,
            updated_at: 0,
            analyzer: String::new(),
            host_id: String::new(),
            spool_bytes: 0,
        }
    }

    async fn node(db: &Db, id: &str, dir: &std::path::Path) -> (Cluster, Supervisor) {
        let data = dir.join(id);
        let supervisor =
            Supervisor::new(db.clone(), SupervisorSettings::with_defaults(data.clone()));
        let timings = Timings::for_ttl(Duration::from_secs(1));
        let cluster = Cluster::join(
            db.clone(),
            id.into(),
            format!("{id}:1"),
            timings,
            supervisor.clone(),
            data,
        )
        .await
        .unwrap();
        (cluster, supervisor)
    }

    /// Runs `round` of each cluster every 50 ms until `done`, or panics after [`WAIT`].
    async fn rounds_until(clusters: &[&Cluster], what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            for c in clusters {
                step(c).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the node's two loops do once: renew, then a round.
    async fn step(c: &Cluster) {
        c.renew().await.unwrap();
        c.round().await.unwrap();
    }

    fn generations(all: &[ownership::Owner]) -> Vec<(String, String, i64)> {
        let mut v: Vec<_> = all
            .iter()
            .map(|o| (o.pipeline_id.clone(), o.node.clone(), o.generation))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_silent_nodes_pipelines_are_taken_over_and_fenced_then_handed_back() {
        for test in crate::db::testing::databases().await {
            let db = test.db.clone();
            let tenant = Tenant {
                id: "t1".into(),
                name: "one".into(),
                created_at: 0,
            };
            db.create_tenant(&tenant, "k1", "hash1").await.unwrap();
            let dir = tempfile::tempdir().unwrap();
            let (a, sup_a) = node(&db, "a", dir.path()).await;
            let (b, sup_b) = node(&db, "b", dir.path()).await;
            // Placement alternates: the node with the fewest pipelines, ties by id.
            for id in ["p1", "p2", "p3", "p4"] {
                let sent = Instant::now();
                let placed = a.place_new().await.unwrap();
                db.create_pipeline(&row(id), &[], None, Some(&placed), 10)
                    .await
                    .unwrap();
                if placed.node == "a" {
                    a.start_created(&row(id), sent).await;
                } else {
                    step(&b).await;
                }
            }
            assert_eq!(sup_a.all().len(), 2);
            assert_eq!(sup_b.all().len(), 2);
            let on_a: Vec<String> = sup_a.all().into_iter().map(|(id, _)| id).collect();
            let lives_a: Vec<_> = sup_a.all().into_iter().map(|(_, l)| l).collect();

            // a goes silent (no more rounds: dead, paused or cut off). b takes its pipelines
            // over at the next generation; a's own clock stops them before that.
            rounds_until(&[&b], "b to run all four and a's to stop", || {
                sup_b.all().len() == 4 && lives_a.iter().all(|l| l.state().0 == RunState::Stopped)
            })
            .await;
            assert!(lives_a.iter().all(|l| !l.fence.holds()));
            let owners = generations(&ownership::owners(&db, None).await.unwrap());
            for (id, node, generation) in &owners {
                let expected = if on_a.contains(id) { 2 } else { 1 };
                assert_eq!((node.as_str(), *generation), ("b", expected), "{id}");
            }
            // What a writes for them now is refused.
            let counters = account::AccountRow {
                pipeline_id: on_a[0].clone(),
                dropped: "{}".into(),
                ..Default::default()
            };
            assert!(matches!(
                account::save(&db, &counters, "a", 1).await,
                Err(DbError::Stale { .. })
            ));

            // a is back: it forgets what it lost and starts nothing (b holds everything).
            step(&a).await;
            assert!(sup_a.all().is_empty());

            // b leaves: a takes everything over at once (no waiting for the lease to expire).
            b.hand_over().await;
            assert!(sup_b.all().is_empty());
            step(&a).await;
            assert_eq!(sup_a.all().len(), 4);
            let owners = generations(&ownership::owners(&db, None).await.unwrap());
            assert!(owners.iter().all(|(_, node, _)| node == "a"), "{owners:?}");
            for (id, _, generation) in &owners {
                let expected = if on_a.contains(id) { 3 } else { 2 };
                assert_eq!(*generation, expected, "{id}");
            }
            // Published status follows the new owner.
            rounds_until(&[&a], "a's status published", || true).await;
            let published = ownership::owner(&db, "p1").await.unwrap().unwrap();
            assert_eq!(published.node, "a");
            assert_ne!(published.status_at, 0);
            // Deleting through b: a forgets it at its next round.
            assert!(db.delete_pipeline("p1").await.unwrap());
            step(&a).await;
            assert_eq!(sup_a.all().len(), 3);
            sup_a.shutdown().await;
            test.finish().await;
        }
    }
}
