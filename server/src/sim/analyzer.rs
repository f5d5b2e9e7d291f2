//! The analyzer side of the simulator (docs/skydive-protocol.md §2.4): it takes flow records
//! from the generator or the replay file at `--rate`, buffers them, flushes at 100 records or on
//! the `--batch-secs` ticker, and builds one message per registered namespace. Stats go out every
//! `--stats-secs`. Nothing is generated while no subscriber is connected.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::generator::{Generator, Timing, uuid_like};
use super::hub::{BatchLog, Delivery, Outgoing};
use super::{Record, SimState};

/// Skydive flushes its flow buffer at this many flows.
pub(crate) const MAX_BATCH: usize = 100;
/// The generator pauses while this many records wait for the rate limit.
const MAX_PENDING: usize = 100_000;

/// A message envelope, fields in Skydive's order (`Format` 0 is omitted).
#[derive(Serialize)]
pub(crate) struct Envelope<'a, T> {
    #[serde(rename = "Namespace")]
    pub namespace: &'a str,
    #[serde(rename = "Type")]
    pub kind: &'a str,
    #[serde(rename = "UUID")]
    pub uuid: String,
    #[serde(rename = "Status")]
    pub status: u16,
    #[serde(rename = "Obj")]
    pub obj: T,
}

impl<'a, T: Serialize> Envelope<'a, T> {
    pub fn new(namespace: &'a str, kind: &'a str, obj: T) -> Self {
        Envelope {
            namespace,
            kind,
            uuid: uuid_like(&mut rand::rng()),
            status: 200,
            obj,
        }
    }
}

/// A flow table's counters (`stats` messages).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Stats<'a> {
    #[serde(rename = "CaptureID", skip_serializing_if = "str::is_empty")]
    pub capture_id: &'a str,
    pub flow_count: i64,
    pub flow_dropped: i64,
    pub kernel_flow_dropped: i64,
    pub packets_dropped: i64,
    pub packets_received: i64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn interval(secs: f64) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(Duration::from_secs_f64(secs));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

pub(crate) async fn run(
    sim: Arc<SimState>,
    replay: Option<Vec<Record>>,
    shutdown: CancellationToken,
) {
    let args = &sim.args;
    let mut generator = match replay {
        Some(_) => None,
        None => Some(Generator::new(
            args.seed,
            &args.captures,
            args.flows,
            Timing {
                update_ms: (args.update_secs * 1000.0) as i64,
                expire_ms: (args.expire_secs * 1000.0) as i64,
                app_timeout_ms: (args.app_timeout_secs * 1000.0) as i64,
            },
        )),
    };
    let mut pending: VecDeque<Record> = replay.unwrap_or_default().into();
    let mut buffer: Vec<Record> = Vec::with_capacity(MAX_BATCH);
    let total = args.total.unwrap_or(u64::MAX);
    let mut produced: u64 = 0;
    let mut tokens = 0.0_f64;
    let burst = args.rate.max(1.0);

    let mut live = sim.hub.live();
    let mut update = interval(args.update_secs);
    let mut pace = interval(0.02);
    let mut batch = interval(args.batch_secs);
    let mut stats = interval(args.stats_secs);
    let mut last_pace = Instant::now();
    loop {
        if *live.borrow_and_update() == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = live.wait_for(|n| *n > 0) => if changed.is_err() { return },
            }
            debug!("A subscriber is connected; generating flows.");
            update.reset_immediately();
            stats.reset_immediately();
            batch.reset();
            last_pace = Instant::now();
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = live.changed() => {}
            _ = update.tick() => {
                if let Some(generator) = generator.as_mut()
                    && produced < total
                    && pending.len() < MAX_PENDING
                {
                    for flow in generator.tick(now_ms()) {
                        match Record::from_flow(&flow) {
                            Ok(record) => pending.push_back(record),
                            Err(e) => warn!(error = %e, "Cannot encode a generated flow."),
                        }
                    }
                }
            }
            _ = pace.tick() => {
                let now = Instant::now();
                tokens = (tokens + args.rate * (now - last_pace).as_secs_f64()).min(burst);
                last_pace = now;
                while tokens >= 1.0 && produced < total {
                    let Some(record) = pending.pop_front() else { break };
                    tokens -= 1.0;
                    produced += 1;
                    buffer.push(record);
                    if buffer.len() >= MAX_BATCH {
                        flush(&sim, &mut buffer).await;
                    }
                }
                if produced >= total {
                    pending.clear();
                }
            }
            _ = batch.tick() => flush(&sim, &mut buffer).await,
            _ = stats.tick() => send_stats(&sim, generator.as_ref()).await,
        }
    }
}

/// Sends the buffered records: the whole batch on `flow`, each capture's part on
/// `flow/<capture>`, each only if someone registered it. Never sends an empty batch.
async fn flush(sim: &SimState, buffer: &mut Vec<Record>) {
    if buffer.is_empty() {
        return;
    }
    let batch = Arc::new(BatchLog::new(std::mem::take(buffer)));
    let mut messages = Vec::new();
    if sim.hub.registered("flow") {
        messages.push(("flow".to_owned(), (0..batch.records.len()).collect()));
    }
    let mut captures: Vec<&str> = Vec::new();
    for record in &batch.records {
        if !record.capture_id.is_empty() && !captures.contains(&record.capture_id.as_str()) {
            captures.push(&record.capture_id);
        }
    }
    for capture in captures {
        let namespace = format!("flow/{capture}");
        if sim.hub.registered(&namespace) {
            let indices: Vec<usize> = (0..batch.records.len())
                .filter(|&i| batch.records[i].capture_id == capture)
                .collect();
            messages.push((namespace, indices));
        }
    }
    for (namespace, indices) in messages {
        let obj: Vec<&RawValue> = indices.iter().map(|&i| &*batch.records[i].json).collect();
        let text = match serde_json::to_string(&Envelope::new(&namespace, "store", obj)) {
            Ok(text) => text,
            Err(e) => {
                warn!(error = %e, "Cannot encode a store message.");
                continue;
            }
        };
        let delivery = Arc::new(Delivery {
            batch: batch.clone(),
            indices,
        });
        let message = Outgoing {
            text: text.into(),
            delivery: Some(delivery),
        };
        sim.hub.broadcast(Some(&namespace), message).await;
    }
}

async fn send_stats(sim: &SimState, generator: Option<&Generator>) {
    if !sim.hub.registered("stats") {
        return;
    }
    let per_capture = match generator {
        Some(generator) => generator.capture_stats(),
        None => sim
            .args
            .captures
            .iter()
            .map(|c| (c.clone(), 0, 0))
            .collect(),
    };
    for (capture_id, flows, packets) in per_capture {
        let obj = Stats {
            capture_id: &capture_id,
            flow_count: flows as i64,
            flow_dropped: 0,
            kernel_flow_dropped: 0,
            packets_dropped: 0,
            packets_received: packets,
        };
        match serde_json::to_string(&Envelope::new("stats", "stats", obj)) {
            Ok(text) => {
                let message = Outgoing {
                    text: text.into(),
                    delivery: None,
                };
                sim.hub.broadcast(Some("stats"), message).await;
            }
            Err(e) => warn!(error = %e, "Cannot encode a stats message."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_keep_skydive_key_order() {
        let flow: Box<RawValue> = serde_json::from_str(r#"{"Start":1,"Last":2}"#).unwrap();
        let text = serde_json::to_string(&Envelope::new("flow", "store", vec![&*flow])).unwrap();
        let uuid = text.split('"').nth(11).unwrap().to_owned();
        assert_eq!(
            text,
            format!(
                r#"{{"Namespace":"flow","Type":"store","UUID":"{uuid}","Status":200,"Obj":[{{"Start":1,"Last":2}}]}}"#
            )
        );
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4", "a v4 UUID");
    }

    #[test]
    fn stats_match_the_vector_shape() {
        let vector = crate::test_vectors::text("skydive/ws-msg-stats.json");
        let obj = Stats {
            capture_id: "3d1c7e52-9a8f-4b6e-7f21-0c5d9e8a4b17",
            flow_count: 3,
            flow_dropped: 0,
            kernel_flow_dropped: 0,
            packets_dropped: 0,
            packets_received: 16,
        };
        let mut envelope = Envelope::new("stats", "stats", obj);
        envelope.uuid = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d".into();
        assert_eq!(serde_json::to_string(&envelope).unwrap(), vector.trim());
        let anonymous = Stats {
            capture_id: "",
            ..envelope.obj
        };
        assert!(
            serde_json::to_string(&anonymous)
                .unwrap()
                .starts_with(r#"{"FlowCount""#)
        );
    }
}
