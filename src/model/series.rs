//! Metric series as the engine stores them and every reader sees them: the catalogue of metrics
//! (name, kind, unit, description; documented in docs/metrics.md), the histogram buckets, and a
//! series' cumulative state ([`Series`]) with its [`Labels`]. How a series changes is the
//! engine's business (`engine::metrics`); exporters and analyses only read it.

use crate::model::attr;
use crate::model::attr::metric::*;
use crate::model::Time;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Counter,
    Histogram,
}

/// One entry of the metric catalogue.
pub struct MetricDef {
    pub name: &'static str,
    pub kind: MetricKind,
    /// UCUM unit: `s` for durations, `{deployment}` style annotations for counts.
    pub unit: &'static str,
    pub description: &'static str,
}

pub const CATALOGUE: &[MetricDef] = &[
    MetricDef { name: ISSUE_DURATION, kind: MetricKind::Histogram, unit: "s", description: "Time from an issue's creation to its closing." },
    MetricDef { name: CHANGE_DURATION, kind: MetricKind::Histogram, unit: "s", description: "Time from a change's (PR/MR) opening to its merge or close." },
    MetricDef { name: RUN_DURATION, kind: MetricKind::Histogram, unit: "s", description: "Duration of a pipeline run, from start to completion." },
    MetricDef { name: TASK_DURATION, kind: MetricKind::Histogram, unit: "s", description: "Duration of a task (job) in a pipeline run." },
    MetricDef { name: DEPLOYMENT_DURATION, kind: MetricKind::Histogram, unit: "s", description: "Duration of a deployment, from creation to its final status." },
    MetricDef { name: INCIDENT_DURATION, kind: MetricKind::Histogram, unit: "s", description: "Duration of an incident, from trigger to resolution." },
    MetricDef { name: DEPLOYMENTS, kind: MetricKind::Counter, unit: "{deployment}", description: "Finished deployments, by environment and result." },
    MetricDef { name: LEAD_TIME, kind: MetricKind::Histogram, unit: "s", description: "Lead time for changes: production deployment finish minus the change's first commit (or PR creation), one point per change." },
    MetricDef { name: CHANGE_FAILURES, kind: MetricKind::Counter, unit: "{deployment}", description: "Production deployments that led to a failure (failed, or followed by an incident), counted once per deployment." },
    MetricDef { name: TIME_TO_RESTORE, kind: MetricKind::Histogram, unit: "s", description: "Time to restore service: incident resolved minus incident triggered." },
    MetricDef { name: RECOVERY_TIME, kind: MetricKind::Histogram, unit: "s", description: "Failed deployment recovery time: first failed deployment to the next successful deployment of the same repository and environment." },
    MetricDef { name: REWORK, kind: MetricKind::Counter, unit: "{deployment}", description: "Deployment rework: finished production deployments that were unplanned (started while the repository and environment were failed or had an open incident, or shipped a revert/hotfix change), by reason; divided by valuestream.deployments it is the deployment rework rate." },
    MetricDef { name: STAGE_DURATION, kind: MetricKind::Histogram, unit: "s", description: "Where a merged change's time went, by valuestream.change.stage: coding (first commit to ready for review), pickup (ready to first review), review (first review to merge), deploy (merge to the first successful production deployment that shipped it)." },
];

/// Histogram bucket upper bounds, in seconds: from a second (jobs) to a year (issues).
pub const BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0, 86400.0, 172800.0, 345600.0, 604800.0, 1209600.0, 2592000.0, 5184000.0, 7776000.0,
    15552000.0, 31536000.0,
];

/// The catalogue's entry of metric `name` (every name the engine uses is in it).
pub fn def(name: &str) -> &'static MetricDef {
    CATALOGUE
        .iter()
        .find(|d| d.name == name)
        .expect("every metric name is in the catalogue")
}

/// A series' labels, in key order: a sorted vector (`litemap`), not a B-tree. Every span
/// summary and every tally of a repository's settlement carries a set of about four labels: a
/// B-tree allocates a node for eleven pairs whatever the count (~560 bytes), the vector what
/// it holds, which keeps a settlement's memory per merged PR lower. It reads, orders, compares
/// and serializes (a JSON object) as the `BTreeMap` it replaced. Its keys and values are
/// [`LabelStr`]s: the names and values that recur in every series take no allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(transparent)]
pub struct Labels(litemap::LiteMap<LabelStr, LabelStr>);

/// Always a JSON object, as the `BTreeMap` wrote it (`litemap` writes an empty map as `[]`).
impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter())
    }
}

impl Labels {
    pub fn new() -> Self {
        Labels(litemap::LiteMap::new_vec())
    }

    /// A copy with room for `more` labels: one allocation, where a clone and then inserts
    /// would grow the vector again.
    pub fn with_room(&self, more: usize) -> Labels {
        let mut copy = litemap::LiteMap::with_capacity(self.len() + more);
        copy.extend(self.iter().map(|(k, v)| (k.clone(), v.clone())));
        Labels(copy)
    }
}

impl std::ops::Deref for Labels {
    type Target = litemap::LiteMap<LabelStr, LabelStr>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Labels {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl std::ops::Index<&str> for Labels {
    type Output = LabelStr;
    fn index(&self, key: &str) -> &LabelStr {
        self.0.get(key).expect("no such label")
    }
}

impl<K: Into<LabelStr>, V: Into<LabelStr>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Labels(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl IntoIterator for Labels {
    type Item = (LabelStr, LabelStr);
    type IntoIter = <litemap::LiteMap<LabelStr, LabelStr> as IntoIterator>::IntoIter;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a LabelStr, &'a LabelStr);
    type IntoIter = <&'a litemap::LiteMap<LabelStr, LabelStr> as IntoIterator>::IntoIter;
    fn into_iter(self) -> Self::IntoIter {
        (&self.0).into_iter()
    }
}

/// A label's name or value, or a metric's name. The ones every series repeats (the metric
/// names, the label names the engine writes, results, stages, `true` and `false`: [`KNOWN`]
/// and the [`CATALOGUE`]; not the sources' names, which the model does not know) point at one
/// static copy, so that
/// cloning, building or reading a label set allocates only for the values that vary
/// (repositories, teams, environments, pipelines). A settlement handles thousands of label
/// sets; before this type each of their strings was an allocation (docs/performance.md).
/// The others are shared, not copied, when a label set is cloned. It compares, orders, hashes
/// and serializes as the string it holds.
#[derive(Clone)]
pub struct LabelStr(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(std::sync::Arc<str>),
}

/// The label names and values that take no allocation ([`LabelStr`]).
const KNOWN: &[&str] = &[
    attr::SOURCE,
    attr::REPOSITORY,
    attr::TEAM,
    attr::LANGUAGE,
    attr::DEPLOYMENT_TYPE,
    attr::RESULT,
    attr::PRODUCTION,
    attr::CHANGE_STAGE,
    attr::CICD_PIPELINE_NAME,
    attr::CICD_PIPELINE_RESULT,
    attr::DEPLOYMENT_ENVIRONMENT_NAME,
    attr::DEPLOYMENT_REWORK_REASON,
    "team",
    "true",
    "false",
    "unknown",
    "production",
    "staging",
    "success",
    "failure",
    "error",
    "timeout",
    "cancellation",
    "skip",
    "merged",
    "closed",
    "not_planned",
    "deleted",
    "resolved",
    "coding",
    "pickup",
    "review",
    "deploy",
];

fn known(s: &str) -> Option<&'static str> {
    static SORTED: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let sorted = SORTED.get_or_init(|| {
        let mut v = KNOWN.to_vec();
        v.extend(CATALOGUE.iter().map(|d| d.name));
        v.sort_unstable();
        v.dedup();
        v
    });
    sorted.binary_search(&s).ok().map(|i| sorted[i])
}

impl LabelStr {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// Whether the string is one of [`KNOWN`] (no allocation behind it).
    pub fn is_static(&self) -> bool {
        matches!(self.0, Repr::Static(_))
    }
}

impl From<&str> for LabelStr {
    fn from(s: &str) -> Self {
        LabelStr(known(s).map_or_else(|| Repr::Shared(s.into()), Repr::Static))
    }
}

impl From<String> for LabelStr {
    fn from(s: String) -> Self {
        s.as_str().into()
    }
}

impl From<&String> for LabelStr {
    fn from(s: &String) -> Self {
        s.as_str().into()
    }
}

impl From<LabelStr> for String {
    fn from(s: LabelStr) -> Self {
        s.as_str().to_string()
    }
}

impl std::ops::Deref for LabelStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for LabelStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for LabelStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for LabelStr {
    fn eq(&self, other: &LabelStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for LabelStr {}

impl PartialOrd for LabelStr {
    fn partial_cmp(&self, other: &LabelStr) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for LabelStr {
    fn cmp(&self, other: &LabelStr) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// As the `str` it holds (so that a map keyed by it finds a `&str`).
impl std::hash::Hash for LabelStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq<str> for LabelStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for LabelStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for LabelStr {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl std::fmt::Debug for LabelStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for LabelStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LabelStr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Read from a borrowed string when the input has one (no allocation for a known string).
impl<'de> Deserialize<'de> for LabelStr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = LabelStr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<LabelStr, E> {
                Ok(s.into())
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// The stored cumulative state of one series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub kind: MetricKind,
    pub labels: Labels,
    /// When the series was created (OTLP start time), epoch nanoseconds.
    pub start_ns: u64,
    /// The last sample time, epoch nanoseconds; strictly increases with every update.
    pub time_ns: u64,
    /// Counter total, or histogram observation count.
    pub count: u64,
    /// Histogram sum, in seconds (`sum_ms` / 1000).
    #[serde(default)]
    pub sum: f64,
    /// Histogram sum in milliseconds: an integer, so that the total does not depend on the
    /// order observations were added in.
    #[serde(default)]
    pub sum_ms: i64,
    /// Histogram bucket counts (not cumulative), one per bound plus the overflow bucket.
    #[serde(default)]
    pub buckets: Vec<u64>,
}

/// A time as epoch nanoseconds (0 before 1970).
pub fn time_ns(t: Time) -> u64 {
    t.timestamp_nanos_opt().unwrap_or(0).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_string_is_the_string_it_holds_and_static_when_known() {
        let known = LabelStr::from(attr::RESULT);
        let owned = LabelStr::from("acme/payments".to_string());
        assert!(known.is_static() && !owned.is_static());
        let copy = owned.clone();
        assert!(
            std::ptr::eq(copy.as_str(), owned.as_str()),
            "a clone shares the string"
        );
        assert!(LabelStr::from(String::from("success")).is_static());
        assert_eq!(known, attr::RESULT);
        assert_eq!(owned, "acme/payments");
        let mut sorted = [
            LabelStr::from("b"),
            LabelStr::from(attr::RESULT),
            "a".into(),
        ];
        sorted.sort();
        let sorted: Vec<&str> = sorted.iter().map(LabelStr::as_str).collect();
        assert_eq!(sorted, ["a", "b", attr::RESULT], "ordered as the strings");
        let labels: Labels = [(attr::RESULT, "success"), ("custom", "x\"y")]
            .into_iter()
            .collect();
        let json = serde_json::to_string(&labels).unwrap();
        let as_map: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&json).unwrap();
        assert_eq!(
            json,
            serde_json::to_string(&as_map).unwrap(),
            "written as the map it replaced"
        );
        let read: Labels = serde_json::from_str(&json).unwrap();
        assert_eq!(read, labels);
        assert!(read[attr::RESULT].is_static());
        assert_eq!(read["custom"], "x\"y");
        assert!(!read["custom"].is_static());
        assert_eq!(serde_json::to_string(&Labels::new()).unwrap(), "{}");
    }
}
