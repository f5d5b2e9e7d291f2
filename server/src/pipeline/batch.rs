//! The store stage (upstream's `store:` section), called batch here: batch each tag's records
//! into objects (`buffered`) or write them at once (`direct`).
//!
//! `buffered` follows upstream's flush rules (docs/stages.md §9.1) with its bugs fixed (§16): a
//! flush keeps the remainder pending, zero limits are refused at config load, two objects never
//! share a key (a stream started in the same second continues: stream ids have one-second
//! resolution), every tag's timer is honoured, and a failed write is retried with backoff
//! instead of on every message.
//!
//! Keys are unique within a run; across runs of a pipeline (a restart, a stop and start, a
//! replace) the caller waits for [`wait_for_next_second`] before building the next run, so its
//! streams start in a later second than any stream of the run before.

pub mod prom_sky_con;

use std::collections::{BTreeMap, VecDeque};

use super::output::{EmitError, Output};
use super::record::Record;
use crate::config::{BufferedOptions, StoreSection, StoreType};
use crate::metrics::DropReason;

const RETRY_INITIAL_MS: i64 = 1_000;
const RETRY_MAX_MS: i64 = 30_000;

/// Waits until the wall clock is in a later second than at the call. Call it after the last run
/// of a pipeline has stopped and before building the next: every stream of the new run then
/// starts in a later second than every stream of the old one. Stream ids (in keys) have
/// one-second resolution and a new run numbers its objects from 0 again, so without this a run
/// started within the same second as the last one's first stream would overwrite its objects.
pub async fn wait_for_next_second() {
    let second = crate::now_ms().div_euclid(1000);
    loop {
        let now = crate::now_ms();
        if now.div_euclid(1000) > second {
            return;
        }
        let left = 1000 - now.rem_euclid(1000);
        tokio::time::sleep(std::time::Duration::from_millis(left as u64 + 1)).await;
    }
}

/// A configured store.
#[derive(Debug)]
pub enum Batcher {
    /// Batches into objects and streams.
    Buffered(BufferedBatcher),
    /// One object per tag per message.
    Direct(DirectBatcher),
    /// Prometheus gauges instead of objects.
    PromSkyCon(prom_sky_con::PromSkyConStore),
}

impl Batcher {
    /// Builds from a validated config section; `now_ms` starts the direct store's stream. A
    /// `prom_sky_con` store made here has gauges of its own and reads no interfaces: the
    /// pipeline builds its own with the gauges it serves and the analyzer's client.
    pub fn from_config(section: &StoreSection, now_ms: i64) -> Self {
        match section.kind {
            StoreType::Buffered => {
                Batcher::Buffered(BufferedBatcher::new(section.buffered.clone()))
            }
            StoreType::Direct => Batcher::Direct(DirectBatcher {
                stream_ms: now_ms,
                seq: BTreeMap::new(),
            }),
            StoreType::PromSkyCon => Batcher::PromSkyCon(prom_sky_con::PromSkyConStore::new(
                &section.prom_sky_con,
                Default::default(),
                None,
                now_ms,
            )),
        }
    }

    /// Takes one message's records, by tag, and writes what is due.
    pub async fn store(
        &mut self,
        now_ms: i64,
        input: Vec<(&'static str, Vec<Record>)>,
        out: &mut Output,
    ) {
        match self {
            Batcher::Buffered(s) => s.store(now_ms, input, out, false).await,
            Batcher::Direct(s) => s.store(now_ms, input, out).await,
            Batcher::PromSkyCon(s) => s.store(now_ms, input, &out.stats),
        }
    }

    /// Writes what is due without new input (the flush timer).
    pub async fn tick(&mut self, now_ms: i64, out: &mut Output) {
        match self {
            Batcher::Buffered(s) => s.store(now_ms, Vec::new(), out, false).await,
            Batcher::PromSkyCon(s) => s.tick(now_ms),
            Batcher::Direct(_) => {}
        }
    }

    /// Writes everything pending, whatever the limits (shutdown).
    pub async fn flush_all(&mut self, now_ms: i64, out: &mut Output) {
        if let Batcher::Buffered(s) = self {
            s.store(now_ms, Vec::new(), out, true).await;
        }
    }

    /// When [`Batcher::tick`] should next run, in ms since the epoch.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        match self {
            Batcher::Buffered(s) => s.next_deadline_ms(),
            Batcher::Direct(_) => None,
            Batcher::PromSkyCon(s) => Some(s.next_deadline_ms()),
        }
    }

    /// Records waiting to be written.
    pub fn pending(&self) -> usize {
        match self {
            Batcher::Buffered(s) => s.tags.values().map(|t| t.pending.len()).sum(),
            Batcher::Direct(_) | Batcher::PromSkyCon(_) => 0,
        }
    }
}

#[derive(Debug, Default)]
struct TagState {
    pending: VecDeque<Record>,
    last_flush_ms: i64,
    /// (stream start ms, next seq).
    stream: Option<(i64, u64)>,
    retry_at_ms: Option<i64>,
    retry_delay_ms: i64,
}

/// The `buffered` store.
#[derive(Debug)]
pub struct BufferedBatcher {
    opts: BufferedOptions,
    tags: BTreeMap<&'static str, TagState>,
}

impl BufferedBatcher {
    /// From validated options (both maxima > 0).
    pub fn new(opts: BufferedOptions) -> Self {
        BufferedBatcher {
            opts,
            tags: BTreeMap::new(),
        }
    }

    fn object_ms(&self) -> i64 {
        self.opts.max_seconds_per_object as i64 * 1000
    }

    /// Appends `input` and flushes every tag that is due (all of them when `force`).
    pub async fn store(
        &mut self,
        now_ms: i64,
        input: Vec<(&'static str, Vec<Record>)>,
        out: &mut Output,
        force: bool,
    ) {
        for (tag, records) in input {
            let state = self.tags.entry(tag).or_insert_with(|| TagState {
                last_flush_ms: now_ms,
                ..TagState::default()
            });
            state.pending.extend(records);
        }
        let per_object = self.opts.max_flows_per_object.max(1) as usize;
        let object_ms = self.object_ms();
        let stream_ms = self.opts.max_seconds_per_stream as i64 * 1000;
        let max_pending = self.opts.max_flow_array_size as usize;
        for (tag, state) in self.tags.iter_mut() {
            while !state.pending.is_empty() {
                let due = force
                    || state.pending.len() >= per_object
                    || now_ms - state.last_flush_ms >= object_ms;
                let backing_off = state.retry_at_ms.is_some_and(|t| now_ms < t);
                if !due || (backing_off && !force) {
                    break;
                }
                let n = state.pending.len().min(per_object);
                let records = state.pending.make_contiguous();
                // A new stream starts when the current one is old enough; one started in this
                // same second (its id in the key) continues, so two objects never share a key.
                let (stream_start, seq) = match state.stream {
                    Some((start, seq))
                        if now_ms - start < stream_ms
                            || start.div_euclid(1000) == now_ms.div_euclid(1000) =>
                    {
                        (start, seq)
                    }
                    _ => (now_ms, 0),
                };
                let key = out.keys.key(tag, stream_start, seq, state.last_flush_ms);
                match out
                    .emit(key, &records[..n], state.last_flush_ms, now_ms)
                    .await
                {
                    Ok(()) => {
                        state.pending.drain(..n);
                        state.last_flush_ms = now_ms;
                        state.stream = Some((stream_start, seq + 1));
                        state.retry_at_ms = None;
                        state.retry_delay_ms = 0;
                    }
                    Err(EmitError::Encode { key, message }) => {
                        tracing::error!(%tag, %key, %message, records = n, "dropping records that cannot be encoded");
                        state.pending.drain(..n);
                    }
                    Err(e @ EmitError::Write(_)) => {
                        state.retry_delay_ms =
                            (state.retry_delay_ms * 2).clamp(RETRY_INITIAL_MS, RETRY_MAX_MS);
                        state.retry_at_ms = Some(now_ms + state.retry_delay_ms);
                        tracing::warn!(%tag, error = %e, retry_in_ms = state.retry_delay_ms, "object not written; records kept pending");
                        break;
                    }
                }
                if force && state.retry_at_ms.is_some() {
                    break;
                }
            }
            if state.pending.len() > max_pending {
                let surplus = state.pending.len() - max_pending;
                state.pending.drain(..surplus);
                out.stats.count_drop(DropReason::Overflow, surplus as u64);
                tracing::warn!(%tag, discarded = surplus, "flow array for tag '{tag}' overflowed maximum size; discarding the oldest {surplus} flows");
            }
        }
    }

    /// The earliest time a tag with pending records becomes due, or its retry time.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let object_ms = self.object_ms();
        let per_object = self.opts.max_flows_per_object.max(1) as usize;
        self.tags
            .values()
            .filter(|s| !s.pending.is_empty())
            .map(|s| {
                let due = if s.pending.len() >= per_object {
                    s.last_flush_ms
                } else {
                    s.last_flush_ms + object_ms
                };
                s.retry_at_ms.map_or(due, |r| r.max(due))
            })
            .min()
    }
}

/// The `direct` store: each message's records for a tag become one object right away.
///
/// Upstream wrote every object to bucket `my_dirname` under the bare tag as key, so each
/// message overwrote the last. sluice uses the bucket and key layout of the buffered store
/// (bucket `my_dirname` only when `dirname` is empty) and skips tags with no records.
#[derive(Debug)]
pub struct DirectBatcher {
    stream_ms: i64,
    seq: BTreeMap<&'static str, u64>,
}

impl DirectBatcher {
    async fn store(
        &mut self,
        now_ms: i64,
        input: Vec<(&'static str, Vec<Record>)>,
        out: &mut Output,
    ) {
        for (tag, records) in input {
            if records.is_empty() {
                continue;
            }
            let seq = self.seq.entry(tag).or_default();
            let key = out.keys.key(tag, self.stream_ms, *seq, now_ms);
            match out.emit(key, &records, now_ms, now_ms).await {
                Ok(()) => *seq += 1,
                Err(e) => {
                    // Direct keeps no buffer to retry from; encode failures are already counted.
                    if matches!(e, EmitError::Write(_)) {
                        out.stats
                            .count_drop(DropReason::Write, records.len() as u64);
                    }
                    tracing::error!(%tag, error = %e, records = records.len(), "direct store: object lost");
                }
            }
        }
    }
}
