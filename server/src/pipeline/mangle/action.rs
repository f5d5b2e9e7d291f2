//! `action`: accept or reject vpclogs records seen by two capture points (docs/stages.md §7.3).
//!
//! Flows of one connection share an `L3TrackingID`. When both capture points (`tid1`, `tid2`)
//! report it, the traffic confirmed on both sides is reported as `accepted`; when only one side
//! keeps reporting for longer than `reject_timeout`, it is reported as `rejected`. Everything else
//! is withheld. The algorithm is upstream's, with its crash paths made total (`docs/vpclogs.md`):
//! more than two previous flows, a reject without a reported metric, and a combine after a
//! capture-point mismatch. Map iteration is ordered, so results are deterministic.

use std::collections::BTreeMap;

use crate::config::ActionSection;
use crate::log_throttle::LogThrottle;
use crate::pipeline::record::Record;
use crate::pipeline::transform::vpclogs::{Action, VpcLog};
use crate::skydive::flow::FlowMetric;

/// `reject_timeout` when the file says 0 or nothing (upstream's default), in seconds.
pub const DEFAULT_REJECT_TIMEOUT_S: i64 = 5;

/// Seconds between sweeps of finished entries (upstream's).
const CLEANUP_EVERY_S: i64 = 20;

/// An entry that saw no flow for this long is dropped (Skydive expires idle flows well before).
const IDLE_EXPIRY_S: i64 = 3600;

#[derive(Debug, Default)]
struct Entry {
    /// This round's records by UUID.
    flows: BTreeMap<String, VpcLog>,
    /// Earlier rounds' records by UUID (the last one of each UUID).
    prev: BTreeMap<String, VpcLog>,
    /// The last record reported.
    reported: Option<VpcLog>,
    /// The combined cumulative metric last reported.
    metric_reported: Option<FlowMetric>,
    /// Unix seconds of the last report (or of the first sighting).
    last_report_s: i64,
    /// Unix seconds of the last flow seen.
    last_seen_s: i64,
}

/// The `action` mangler.
#[derive(Debug)]
pub struct ActionMangler {
    tid1: String,
    tid2: String,
    reject_timeout_s: i64,
    table: BTreeMap<String, Entry>,
    last_cleanup_s: i64,
    strangers: LogThrottle,
}

impl ActionMangler {
    /// From `pipeline.action` (validated: both TIDs set).
    pub fn new(section: &ActionSection) -> Self {
        ActionMangler {
            tid1: section.tid1.clone(),
            tid2: section.tid2.clone(),
            reject_timeout_s: match section.reject_timeout {
                0 => DEFAULT_REJECT_TIMEOUT_S,
                t => i64::try_from(t).unwrap_or(i64::MAX),
            },
            table: BTreeMap::new(),
            last_cleanup_s: 0,
            strangers: LogThrottle::default(),
        }
    }

    /// Connections currently tracked.
    pub fn tracked(&self) -> usize {
        self.table.len()
    }

    /// One tag's batch; `now_ms` is the wall clock. Records other than vpclogs pass unchanged.
    pub fn mangle(&mut self, records: Vec<Record>, now_ms: i64) -> Vec<Record> {
        let now = now_ms.div_euclid(1000);
        let mut out = Vec::new();
        // Rotate.
        for entry in self.table.values_mut() {
            let flows = std::mem::take(&mut entry.flows);
            entry.prev.extend(flows);
        }
        // Collect.
        for record in records {
            let flow = match record {
                Record::VpcLog(flow) => *flow,
                other => {
                    out.push(other);
                    continue;
                }
            };
            if flow.node_tid != self.tid1 && flow.node_tid != self.tid2 {
                if let Some(not_logged) = self.strangers.allow() {
                    tracing::error!(tid = %flow.node_tid, uuid = %flow.uuid, not_logged, "flow from neither tid1 nor tid2: skipped");
                }
                continue;
            }
            let entry = self.table.entry(flow.l3_tracking_id.clone()).or_default();
            entry.last_seen_s = now;
            match entry.flows.get(&flow.uuid) {
                Some(have) if flow.last_update_metric.last <= have.last_update_metric.last => {}
                _ => {
                    entry.flows.insert(flow.uuid.clone(), flow);
                }
            }
        }
        // Decide.
        let cfg = Cfg {
            tid1: &self.tid1,
            tid2: &self.tid2,
            timeout: self.reject_timeout_s,
        };
        for (l3, entry) in self.table.iter_mut() {
            let result = match entry.flows.len() {
                0 => cfg.zero_flows(entry, now),
                1 => cfg.one_flow(entry, now),
                2 => {
                    let mut both = entry.flows.values().cloned();
                    match (both.next(), both.next()) {
                        (Some(a), Some(b)) => cfg.combine(entry, a, b, now),
                        _ => None,
                    }
                }
                n => {
                    tracing::error!(l3_tracking_id = %l3, flows = n, "more than two flows for one connection: rejecting one");
                    entry.flows.values().next().cloned().map(|mut r| {
                        r.action = Some(Action::Rejected);
                        entry.metric_reported = Some(r.metric);
                        entry.last_report_s = now;
                        r
                    })
                }
            };
            if let Some(r) = result {
                entry.reported = Some(r.clone());
                out.push(Record::VpcLog(Box::new(r)));
            }
        }
        // Cleanup.
        if now > self.last_cleanup_s + CLEANUP_EVERY_S {
            self.table.retain(|_, e| {
                let done = e
                    .reported
                    .as_ref()
                    .is_some_and(|r| r.action == Some(Action::Rejected) || r.was_terminated);
                !done && now - e.last_seen_s <= IDLE_EXPIRY_S
            });
            self.last_cleanup_s = now;
        }
        out
    }
}

/// The settings, borrowed apart from the table so entries can be changed while iterating.
struct Cfg<'a> {
    tid1: &'a str,
    tid2: &'a str,
    timeout: i64,
}

impl Cfg<'_> {
    fn lum_gap_exceeds_timeout(&self, a: &VpcLog, b: &VpcLog) -> bool {
        let gap = a
            .last_update_metric
            .last
            .saturating_sub(b.last_update_metric.last)
            .saturating_abs()
            / 1000;
        gap > self.timeout
    }

    /// Both capture points reported: the traffic seen on both sides is accepted.
    fn combine(&self, entry: &mut Entry, a: VpcLog, b: VpcLog, now: i64) -> Option<VpcLog> {
        // flow1 is tid1's when there is one, so the result doesn't depend on UUID order.
        let (f1, f2) = if b.node_tid == self.tid1 && a.node_tid != self.tid1 {
            (b, a)
        } else {
            (a, b)
        };
        let mut copy = f1.clone();
        let pair_ok = (f1.node_tid == self.tid1 && f2.node_tid == self.tid2)
            || (f1.node_tid == self.tid2 && f2.node_tid == self.tid1);
        if !pair_ok {
            copy.action = Some(Action::Rejected);
            return Some(copy);
        }
        let (m1, m2) = (&f1.metric, &f2.metric);
        let mut combined = FlowMetric {
            ab_packets: m1.ab_packets.min(m2.ab_packets),
            ab_bytes: m1.ab_bytes.min(m2.ab_bytes),
            ba_packets: m1.ba_packets.min(m2.ba_packets),
            ba_bytes: m1.ba_bytes.min(m2.ba_bytes),
            start: m1.start,
            last: m1.last.min(m2.last),
            rtt: 0,
        };
        if f1.was_terminated && f2.was_terminated {
            combined.last = m1.last.max(m2.last);
        }
        if let Some(reported) = entry.metric_reported
            && reported == combined
        {
            if self.lum_gap_exceeds_timeout(&f1, &f2) {
                return Some(self.timeout_reject(entry, &f1, now));
            }
            return None;
        }
        let interval = match entry.metric_reported {
            Some(r) => FlowMetric {
                ab_packets: combined.ab_packets.saturating_sub(r.ab_packets).max(0),
                ab_bytes: combined.ab_bytes.saturating_sub(r.ab_bytes).max(0),
                ba_packets: combined.ba_packets.saturating_sub(r.ba_packets).max(0),
                ba_bytes: combined.ba_bytes.saturating_sub(r.ba_bytes).max(0),
                start: r.last,
                last: combined.last,
                rtt: 0,
            },
            None => {
                let (l1, l2) = (&f1.last_update_metric, &f2.last_update_metric);
                FlowMetric {
                    ab_packets: l1.ab_packets.min(l2.ab_packets),
                    ab_bytes: l1.ab_bytes.min(l2.ab_bytes),
                    ba_packets: l1.ba_packets.min(l2.ba_packets),
                    ba_bytes: l1.ba_bytes.min(l2.ba_bytes),
                    start: combined.start,
                    last: combined.last,
                    rtt: 0,
                }
            }
        };
        copy.metric = combined;
        copy.last_update_metric = interval;
        copy.action = Some(Action::Accepted);
        entry.metric_reported = Some(combined);
        entry.last_report_s = now;
        Some(copy)
    }

    /// Nothing new was confirmed for too long: reject what was last reported (or, when nothing
    /// was, `f`'s own counters).
    fn timeout_reject(&self, entry: &mut Entry, f: &VpcLog, now: i64) -> VpcLog {
        let m = entry.metric_reported.unwrap_or(f.metric);
        let mut copy = f.clone();
        copy.last_update_metric = FlowMetric {
            start: m.start,
            last: m.last,
            ..FlowMetric::default()
        };
        copy.metric = m;
        copy.action = Some(Action::Rejected);
        entry.metric_reported = Some(m);
        entry.last_report_s = now;
        copy
    }

    /// A lone record is rejected once `timeout` passed since the last report.
    fn reject_alone(&self, entry: &mut Entry, mut r: VpcLog, now: i64) -> Option<VpcLog> {
        if now <= entry.last_report_s.saturating_add(self.timeout) {
            return None;
        }
        r.action = Some(Action::Rejected);
        entry.metric_reported = Some(r.metric);
        entry.last_report_s = now;
        Some(r)
    }

    /// The previous record to pair `cur` with: another UUID, preferably the other capture point.
    fn partner(entry: &Entry, cur: &VpcLog) -> Option<VpcLog> {
        let others = || entry.prev.values().filter(|p| p.uuid != cur.uuid);
        others()
            .find(|p| p.node_tid != cur.node_tid)
            .or_else(|| others().next())
            .cloned()
    }

    fn one_flow(&self, entry: &mut Entry, now: i64) -> Option<VpcLog> {
        let cur = entry.flows.values().next()?.clone();
        if entry.prev.is_empty() {
            entry.last_report_s = now;
            return None;
        }
        match Self::partner(entry, &cur) {
            Some(other) => {
                entry.flows.insert(other.uuid.clone(), other.clone());
                self.combine(entry, cur, other, now)
            }
            None => self.reject_alone(entry, cur, now),
        }
    }

    fn zero_flows(&self, entry: &mut Entry, now: i64) -> Option<VpcLog> {
        let first = entry.prev.values().next()?.clone();
        let Some(second) = Self::partner(entry, &first) else {
            return self.reject_alone(entry, first, now);
        };
        entry.flows.insert(first.uuid.clone(), first.clone());
        entry.flows.insert(second.uuid.clone(), second.clone());
        if self.lum_gap_exceeds_timeout(&first, &second) {
            Some(self.timeout_reject(entry, &first, now))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::pipeline::transform::vpclogs::tests::{assert_matches_upstream, vectors};
    use crate::skydive::flow::Flow;

    fn mangler(case: &Value) -> ActionMangler {
        ActionMangler::new(&ActionSection {
            tid1: case["config"]["tid1"].as_str().unwrap().into(),
            tid2: case["config"]["tid2"].as_str().unwrap().into(),
            reject_timeout: case["config"]["reject_timeout"].as_u64().unwrap(),
        })
    }

    /// The transform's record for a flow, with no node addresses known (direction empty).
    fn record(flow: &Value) -> Record {
        let flow: Flow = serde_json::from_value(flow.clone()).unwrap();
        Record::VpcLog(Box::new(VpcLog::from_flow(&flow, &[]).unwrap()))
    }

    fn json(records: &[Record]) -> Vec<Value> {
        records
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    }

    #[test]
    fn golden_accept_from_two_capture_points_over_three_rounds() {
        let v = vectors();
        let case = &v["action_mangler_cases"][0];
        let mut m = mangler(case);
        for (i, round) in case["rounds"].as_array().unwrap().iter().enumerate() {
            let input: Vec<Record> = round["input_flows"]
                .as_array()
                .unwrap()
                .iter()
                .map(record)
                .collect();
            let now_ms = 1_546_338_200_000 + i as i64 * 60_000;
            let got = json(&m.mangle(input, now_ms));
            let want = round["expected_output"].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "round {i}: {got:?}");
            for (g, w) in got.iter().zip(want) {
                assert_matches_upstream(g, w, &format!("round {i}"));
            }
        }
    }

    #[test]
    fn golden_accept_does_not_depend_on_input_order() {
        let v = vectors();
        let case = &v["action_mangler_cases"][0];
        let round = &case["rounds"][0];
        let mut flows: Vec<Record> = round["input_flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(record)
            .collect();
        flows.reverse();
        let got = json(&mangler(case).mangle(flows, 0));
        assert_matches_upstream(&got[0], &round["expected_output"][0], "reversed");
    }

    #[test]
    fn golden_reject_after_timeout_from_a_single_capture_point() {
        let v = vectors();
        let accept = &v["action_mangler_cases"][0];
        let case = &v["action_mangler_cases"][1];
        let mut u3 = accept["rounds"][0]["input_flows"][0].clone();
        u3["UUID"] = "u3".into();
        u3["L3TrackingID"] = "L3b".into();
        let transformed = serde_json::to_value(record(&u3)).unwrap();
        let mut m = mangler(case);
        for round in case["rounds"].as_array().unwrap() {
            let now_ms = round["wall_clock_s"].as_i64().unwrap() * 1000;
            let got = json(&m.mangle(vec![record(&u3)], now_ms));
            let want = round["expected_output"].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{}", round["explain"]);
            if let Some(r) = got.first() {
                let mut expected = transformed.clone();
                expected["action"] = "rejected".into();
                assert_eq!(r, &expected);
            }
        }
    }

    #[test]
    fn upstream_crash_paths_are_total() {
        let v = vectors();
        let base = v["action_mangler_cases"][0]["rounds"][0]["input_flows"][0].clone();
        let flow = |uuid: &str, tid: &str, last: i64| {
            let mut f = base.clone();
            f["UUID"] = uuid.into();
            f["NodeTID"] = tid.into();
            f["LastUpdateMetric"]["Last"] = last.into();
            record(&f)
        };
        let mut m = ActionMangler::new(&ActionSection {
            tid1: "tidA".into(),
            tid2: "tidB".into(),
            reject_timeout: 0,
        });
        // Same TID twice: a mismatch reject with no metric reported...
        let out = m.mangle(vec![flow("a", "tidA", 1), flow("b", "tidA", 2)], 1_000_000);
        assert_eq!(out.len(), 1);
        // ...then a good pair combines without a reported metric.
        let out = m.mangle(vec![flow("a", "tidA", 1), flow("c", "tidB", 2)], 1_001_000);
        assert_eq!(out.len(), 1);
        // More than two previous flows, then rounds with one flow and with none.
        m.mangle(
            vec![
                flow("d", "tidA", 1),
                flow("e", "tidB", 2),
                flow("f", "tidA", 3),
            ],
            1_002_000,
        );
        m.mangle(vec![flow("a", "tidA", 1)], 1_003_000);
        for s in 0..40 {
            m.mangle(Vec::new(), 1_004_000 + s * 1000);
        }
        // Zero flows with two previous whose gap exceeds the timeout, never reported before.
        let mut m = ActionMangler::new(&ActionSection {
            tid1: "tidA".into(),
            tid2: "tidB".into(),
            reject_timeout: 5,
        });
        let mut g = flow("g", "tidA", 0);
        if let Record::VpcLog(r) = &mut g {
            r.l3_tracking_id = "other".into();
        }
        let mut h = flow("h", "tidB", 60_000);
        if let Record::VpcLog(r) = &mut h {
            r.l3_tracking_id = "other".into();
        }
        m.mangle(vec![g], 0);
        m.mangle(vec![h], 1000);
        let out = m.mangle(Vec::new(), 2000);
        assert!(out.len() <= 1);
        // A flow from an unknown TID is skipped; other records pass.
        let out = m.mangle(
            vec![
                flow("z", "tidZ", 0),
                Record::Flow(Box::new(Flow::new("x", 0, 0))),
            ],
            3000,
        );
        assert!(matches!(out[0], Record::Flow(_)));
        assert!(
            out.iter()
                .all(|r| !matches!(r, Record::VpcLog(v) if v.node_tid == "tidZ"))
        );
    }

    #[test]
    fn finished_and_idle_entries_are_dropped() {
        let v = vectors();
        let base = v["action_mangler_cases"][0]["rounds"][0]["input_flows"][0].clone();
        let mut m = ActionMangler::new(&ActionSection {
            tid1: "tidA".into(),
            tid2: "tidB".into(),
            reject_timeout: 5,
        });
        m.mangle(vec![record(&base)], 100_000);
        assert_eq!(m.tracked(), 1);
        m.mangle(Vec::new(), 100_000 + (IDLE_EXPIRY_S + 60) * 1000);
        // The lone flow was rejected (and so dropped) or expired.
        assert_eq!(m.tracked(), 0);
    }
}
