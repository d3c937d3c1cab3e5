//! Metric series as the engine stores them and every reader sees them: the catalogue of metrics
//! (name, kind, unit, description; documented in docs/metrics.md), the histogram buckets, and a
//! series' cumulative state ([`Series`]) with its [`Labels`]. How a series changes is the
//! engine's business (`engine::metrics`); exporters and analyses only read it.

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
/// and serializes (a JSON object) as the `BTreeMap` it replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(transparent)]
pub struct Labels(litemap::LiteMap<String, String>);

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
}

impl std::ops::Deref for Labels {
    type Target = litemap::LiteMap<String, String>;
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
    type Output = String;
    fn index(&self, key: &str) -> &String {
        self.0.get(key).expect("no such label")
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Labels(iter.into_iter().collect())
    }
}

impl IntoIterator for Labels {
    type Item = (String, String);
    type IntoIter = <litemap::LiteMap<String, String> as IntoIterator>::IntoIter;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = <&'a litemap::LiteMap<String, String> as IntoIterator>::IntoIter;
    fn into_iter(self) -> Self::IntoIter {
        (&self.0).into_iter()
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
