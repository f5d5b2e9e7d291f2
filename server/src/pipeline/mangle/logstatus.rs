//! Mangler `logstatus` (docs/stages.md §7.2): marks every record `OK`, adds a `NODATA`
//! record for each link seen before but absent from this batch, and a `SKIPDATA` record for
//! each flow seen before whose counters may have skipped an update.
//!
//! Differences from upstream, on purpose:
//! - State is kept **per tag**: upstream shared it across tags, so a link seen only under
//!   another tag produced NODATA in every batch of this tag, forever.
//! - The link set is bounded ([`MAX_LINKS`]) and the UUID memory is a bounded TTL cache
//!   ([`UUID_TTL_MS`], [`DEFAULT_CAPACITY`]) instead of growing without end.
//! - NODATA records come in ascending link-id order (upstream: Go map order).
//! - Records other than secadvisor ones (upstream crashed on them) pass through unchanged in
//!   the OK position; they carry no log status and take no part in NODATA/SKIPDATA.
//!
//! SKIPDATA keeps upstream's observable rule (it compared metric pointers): a record whose
//! UUID was seen before gets one unless both its `LastUpdateMetric` and the previous record's
//! `Metric` are absent.

use std::collections::{BTreeSet, HashMap};

use crate::pipeline::record::{Record, SecAdvisorRecord};
use crate::pipeline::ttl_cache::{DEFAULT_CAPACITY, TtlCache};

/// Most link ids remembered per tag.
pub const MAX_LINKS: usize = 65_536;

/// How long a flow UUID is remembered after its last sighting.
pub const UUID_TTL_MS: i64 = 60 * 60 * 1000;

/// Tags seen; state beyond this many is not kept (tags are normally the four classes).
const MAX_TAGS: usize = 64;

#[derive(Debug)]
struct TagState {
    links: BTreeSet<i64>,
    /// UUID → what is known of that flow's records.
    seen: TtlCache<Seen>,
    /// Batches mangled, numbering them for [`Seen::batch`].
    batches: u64,
}

/// A flow's records so far: one cache entry, read and written with one lookup per record.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Whether its last record had a `Metric`.
    had_metric: bool,
    /// The batch of that last record.
    batch: u64,
    /// `had_metric` as it stood before that batch (`None`: first seen in it). Upstream
    /// compares a record with the state before its batch, even when the batch holds the same
    /// UUID twice.
    before_batch: Option<bool>,
}

impl Default for TagState {
    fn default() -> Self {
        TagState {
            links: BTreeSet::new(),
            seen: TtlCache::new(DEFAULT_CAPACITY),
            batches: 0,
        }
    }
}

/// The `logstatus` mangler's state.
#[derive(Debug, Default)]
pub struct LogStatus {
    tags: HashMap<String, TagState>,
    scratch: TagState,
}

impl LogStatus {
    /// A mangler that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// One tag's batch: OK records (input order), then NODATA, then SKIPDATA.
    pub fn mangle(&mut self, tag: &str, mut records: Vec<Record>, now_ms: i64) -> Vec<Record> {
        let state = if self.tags.contains_key(tag) || self.tags.len() < MAX_TAGS {
            self.tags.entry(tag.to_string()).or_default()
        } else {
            tracing::warn!(tag, "logstatus: too many tags, state not kept for this one");
            self.scratch = TagState::default();
            &mut self.scratch
        };
        state.batches += 1;
        let batch = state.batches;
        state.seen.prefetch(records.iter().filter_map(|r| match r {
            Record::SecAdvisor(r) => Some(r.uuid.as_str()),
            _ => None,
        }));
        let mut batch_links = BTreeSet::new();
        let mut skipped = Vec::new();
        for record in &mut records {
            let Record::SecAdvisor(r) = record else {
                continue;
            };
            r.log_status = "OK".into();
            batch_links.insert(r.link_id);
            let had_metric = r.metric.is_some();
            let seen = state.seen.update(&r.uuid, UUID_TTL_MS, now_ms, |old| Seen {
                had_metric,
                batch,
                before_batch: match old {
                    Some(old) if old.batch == batch => old.before_batch,
                    Some(old) => Some(old.had_metric),
                    None => None,
                },
            });
            if let Some(previous_had_metric) = seen.before_batch
                && (r.last_update_metric.is_some() || previous_had_metric)
            {
                skipped.push(Record::SecAdvisor(Box::new(SecAdvisorRecord {
                    uuid: r.uuid.clone(),
                    link_id: r.link_id,
                    network: r.network.clone(),
                    start: now_ms,
                    last: now_ms,
                    l3_tracking_id: r.l3_tracking_id.clone(),
                    log_status: "SKIPDATA".into(),
                    ..Default::default()
                })));
            }
        }
        let nodata: Vec<Record> = state
            .links
            .difference(&batch_links)
            .map(|&link_id| {
                Record::SecAdvisor(Box::new(SecAdvisorRecord {
                    link_id,
                    start: now_ms,
                    last: now_ms,
                    log_status: "NODATA".into(),
                    ..Default::default()
                }))
            })
            .collect();
        for link in batch_links {
            if state.links.len() >= MAX_LINKS && !state.links.contains(&link) {
                tracing::warn!(link, "logstatus: link set full, not remembering link");
                break;
            }
            state.links.insert(link);
        }
        records.extend(nodata);
        records.extend(skipped);
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::encode::write_go_json;
    use crate::skydive::flow::Flow;
    use serde_json::Value;

    const NOW: i64 = 1_546_338_030_000;

    fn vectors() -> Value {
        crate::test_vectors::json("exporter/mangle_logstatus.json")
    }

    fn record(v: &Value) -> Record {
        Record::SecAdvisor(Box::new(serde_json::from_value(v.clone()).unwrap()))
    }

    fn secadvisor(r: &Record) -> &SecAdvisorRecord {
        match r {
            Record::SecAdvisor(r) => r,
            other => panic!("not secadvisor: {other:?}"),
        }
    }

    /// Replaces the vector's "NOW" placeholders.
    fn with_now(mut v: Value) -> Value {
        for key in ["Start", "Last"] {
            if v[key] == "NOW" {
                v[key] = NOW.into();
            }
        }
        v
    }

    #[test]
    fn golden_logstatus_cases() {
        let v = vectors();
        for case in v["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let mut m = LogStatus::new();
            let mut out = Vec::new();
            for call in case["calls"].as_array().unwrap() {
                let input = call.as_array().unwrap().iter().map(record).collect();
                out = m.mangle("internal", input, NOW);
            }
            let expected: Vec<SecAdvisorRecord> = case["derived_full_output_last_call"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| serde_json::from_value(with_now(e.clone())).unwrap())
                .collect();
            let got: Vec<SecAdvisorRecord> = out.iter().map(|r| secadvisor(r).clone()).collect();
            assert_eq!(got, expected, "{name}");
            // The upstream assertion: filter by status, count, one field.
            let asserted = &case["asserted"];
            let wanted = asserted["filter_LogStatus"].as_str().unwrap();
            let hits: Vec<&SecAdvisorRecord> =
                got.iter().filter(|r| r.log_status == wanted).collect();
            assert_eq!(
                hits.len() as u64,
                asserted["count"].as_u64().unwrap(),
                "{name}"
            );
            if let Some(uuid) = asserted.get("first.UUID") {
                assert_eq!(hits[0].uuid, uuid.as_str().unwrap(), "{name}");
            }
            if let Some(link) = asserted.get("first.LinkID") {
                assert_eq!(hits[0].link_id, link.as_i64().unwrap(), "{name}");
            }
        }
    }

    #[test]
    fn generated_records_encode_as_documented() {
        let v = vectors();
        let mut m = LogStatus::new();
        m.mangle(
            "t",
            vec![record(
                &serde_json::json!({"UUID": "A", "LinkID": 2, "Metric": {"Start": 1}}),
            )],
            NOW,
        );
        let out = m.mangle(
            "t",
            vec![record(&serde_json::json!({"UUID": "A", "LinkID": 1}))],
            NOW,
        );
        assert_eq!(out.len(), 3);
        let json = |r: &Record| {
            let mut buf = Vec::new();
            write_go_json(&mut buf, false, r).unwrap();
            String::from_utf8(buf).unwrap().trim_end().to_string()
        };
        let generated = &v["derived_json_of_generated_records"];
        let now = NOW.to_string();
        assert_eq!(
            json(&out[1]),
            generated["NODATA"].as_str().unwrap().replace("NOW", &now)
        );
        assert_eq!(
            json(&out[2]),
            format!(
                "{{\"UUID\":\"A\",\"Start\":{now},\"Last\":{now},\"UpdateCount\":0,\"LogStatus\":\"SKIPDATA\"}}"
            )
        );
    }

    #[test]
    fn a_uuid_twice_in_a_batch_is_judged_against_the_batches_before() {
        let skipdata = |out: &[Record]| {
            out.iter()
                .filter(|r| secadvisor(r).log_status == "SKIPDATA")
                .count()
        };
        let mut m = LogStatus::new();
        // First seen twice in one batch: neither record was seen before that batch.
        let with_metric = serde_json::json!({"UUID": "A", "Metric": {"Start": 1}});
        let out = m.mangle("t", vec![record(&with_metric), record(&with_metric)], NOW);
        assert_eq!(skipdata(&out), 0);
        // Then, before this batch, A's last record had a Metric: both get SKIPDATA, although
        // the first of them has none.
        let bare = serde_json::json!({"UUID": "A"});
        let out = m.mangle("t", vec![record(&bare), record(&bare)], NOW);
        assert_eq!(skipdata(&out), 2);
        // The last record wins: A's last record had no Metric, and these have no
        // LastUpdateMetric.
        let out = m.mangle("t", vec![record(&bare)], NOW);
        assert_eq!(skipdata(&out), 0);
    }

    #[test]
    fn state_is_per_tag_and_other_records_pass_through() {
        let mut m = LogStatus::new();
        m.mangle(
            "ingress",
            vec![record(&serde_json::json!({"LinkID": 5}))],
            NOW,
        );
        // Link 5 was only seen under "ingress": no NODATA for it under "egress".
        let out = m.mangle(
            "egress",
            vec![record(&serde_json::json!({"LinkID": 6}))],
            NOW,
        );
        assert_eq!(out.len(), 1);
        let flow = Record::Flow(Box::new(Flow::new("f", 1, 2)));
        let out = m.mangle("egress", vec![flow], NOW);
        // The flow passes unchanged; link 6 is missing from this batch: NODATA.
        assert!(matches!(out[0], Record::Flow(_)));
        assert_eq!(secadvisor(&out[1]).log_status, "NODATA");
        assert_eq!(secadvisor(&out[1]).link_id, 6);
    }

    #[test]
    fn skipdata_needs_one_of_the_two_metrics() {
        let mut m = LogStatus::new();
        let bare = serde_json::json!({"UUID": "A"});
        m.mangle("t", vec![record(&bare)], NOW);
        assert_eq!(m.mangle("t", vec![record(&bare)], NOW).len(), 1);
        let with_last = serde_json::json!({"UUID": "A", "LastUpdateMetric": {"Start": 3}});
        let out = m.mangle("t", vec![record(&with_last)], NOW);
        assert_eq!(secadvisor(&out[1]).log_status, "SKIPDATA");
    }
}
