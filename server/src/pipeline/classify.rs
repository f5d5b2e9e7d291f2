//! Classify: tag each flow internal / ingress / egress / other by its addresses.

pub mod autodiscovery;

use std::net::IpAddr;

use crate::skydive::flow::Flow;
use ipnet::IpNet;

/// A flow's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tag {
    /// Both ends inside the cluster.
    Internal,
    /// From outside to inside.
    Ingress,
    /// From inside to outside.
    Egress,
    /// Neither end inside, no network layer, or an unparsable address.
    Other,
}

impl Tag {
    /// The tag's name in keys and `excluded_tags`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Internal => "internal",
            Tag::Ingress => "ingress",
            Tag::Egress => "egress",
            Tag::Other => "other",
        }
    }
}

/// The `subnet` classifier.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    masks: Vec<IpNet>,
}

impl Classifier {
    /// From already validated masks.
    pub fn new(masks: Vec<IpNet>) -> Self {
        Classifier { masks }
    }

    /// The masks in use.
    pub fn masks(&self) -> &[IpNet] {
        &self.masks
    }

    /// Tags a flow as upstream's `subnet` classifier does.
    pub fn tag(&self, flow: &Flow) -> Tag {
        let Some(network) = &flow.network else {
            return Tag::Other;
        };
        let (Some(a), Some(b)) = (parse_ip(&network.a), parse_ip(&network.b)) else {
            tracing::debug!(a = %network.a, b = %network.b, uuid = %flow.uuid, "cannot parse IP");
            return Tag::Other;
        };
        match (self.inside(a), self.inside(b)) {
            (true, true) => Tag::Internal,
            (true, false) => Tag::Egress,
            (false, true) => Tag::Ingress,
            (false, false) => Tag::Other,
        }
    }

    fn inside(&self, addr: IpAddr) -> bool {
        self.masks.iter().any(|m| m.contains(&addr))
    }
}

/// Parses an address; an IPv4-mapped IPv6 address counts as IPv4, as in Go.
fn parse_ip(text: &str) -> Option<IpAddr> {
    match text.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 => Some(v4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExporterConfig;
    use crate::pipeline::filter::Filter;
    use serde_json::Value;

    fn vectors() -> Value {
        crate::test_vectors::json("exporter/classify.json")
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn golden_classify_cases() {
        let v = vectors();
        let cases = v["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let masks = strings(&case["masks"])
                .iter()
                .map(|m| m.parse::<IpNet>().unwrap().trunc())
                .collect();
            let mut flow = case["flow"].clone();
            flow["Start"] = 0.into();
            flow["Last"] = 0.into();
            let flow: Flow = serde_json::from_value(flow).unwrap();
            let tag = Classifier::new(masks).tag(&flow);
            assert_eq!(tag.as_str(), case["tag"].as_str().unwrap(), "{case}");
        }
    }

    #[test]
    fn golden_config_errors() {
        for case in vectors()["config_errors"].as_array().unwrap() {
            let masks = strings(&case["masks"]);
            let text = format!(
                "pipeline:\n  subscriber:\n    url: ws://x/ws/subscriber/flow\n  classify:\n    cluster_net_masks: [{}]\n  store:\n    buffered: {{dirname: b, max_flows_per_object: 1, max_flow_array_size: 1}}\n",
                masks.join(",")
            );
            let err = ExporterConfig::load(&text).unwrap_err();
            let prefix = case["error_prefix"].as_str().unwrap();
            assert!(
                err.0[0].message.starts_with(prefix),
                "{} vs {prefix}",
                err.0[0].message
            );
            assert_eq!(err.0[0].line, Some(5));
        }
    }

    #[test]
    fn golden_filter_cases() {
        for case in vectors()["filter_cases"].as_array().unwrap() {
            let filter = Filter::new(strings(&case["excluded_tags"]));
            let tag = match case["tag"].as_str().unwrap() {
                "internal" => Tag::Internal,
                "ingress" => Tag::Ingress,
                "egress" => Tag::Egress,
                _ => Tag::Other,
            };
            assert_eq!(
                filter.is_excluded(tag),
                case["dropped"].as_bool().unwrap(),
                "{case}"
            );
        }
    }
}
