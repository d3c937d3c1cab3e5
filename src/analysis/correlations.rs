//! Root-cause correlations: what the slow (or failed) work items of one kind have in common.
//!
//! Computed from the stored metric series (partition `metric`), so it works on both stores and
//! needs no trace backend. Every duration histogram series carries the item's labels (team,
//! language, deployment type, `valuestream.attr.*`, source, environment, result…); for one kind:
//!
//! - **total**: the observations of every series of the kind's duration histogram;
//! - **slow** (`by=duration`): observations in the buckets above `threshold_s`. Thresholds are
//!   bucket bounds (a histogram cannot say more): a requested threshold is raised to the next
//!   bound, and the default is the kind's 90th-percentile bucket bound, the smallest bound with
//!   at least 90 % of all observations at or below it (so at most 10 % are slow);
//! - **failed** (`by=failure`, runs and deployments): observations whose `valuestream.result` is
//!   a failure ([`FAILED_RESULTS`]);
//! - **rework** (`by=rework`, deployments): the production deployments that ran (not cancelled
//!   or skipped) are the total (`valuestream.deployments`) and the rework ones the selected
//!   (`valuestream.deployment.rework`, docs/metrics.md "Deployment rework rate");
//! - for every label value (except the result labels, `valuestream.production` and
//!   `valuestream.repository`, which is what the attributes group): `count` (items with the value),
//!   `share_all` = count ÷ total, `share_selected` = its share among the slow or failed ones, and
//!   `lift` = share_selected ÷ share_all. A lift of 2 means the value is twice as common among the
//!   slow ones as among all. Values seen fewer than [`MIN_COUNT`] times are marked `rare` and
//!   ranked after the others; `noise_lift` says what lift chance alone reaches ([`noise_lift`]).
//!
//! [`correlate`] is a pure function of the series; [`read_series`] is the thin store reader.

use crate::engine::metrics;
use crate::model::attr;
use crate::model::series::{LabelStr, Series, BUCKETS};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Values seen fewer times than this are marked `rare` and never ranked first.
pub const MIN_COUNT: u64 = 10;

/// How many standard deviations of chance [`noise_lift`] allows.
pub const NOISE_SIGMAS: f64 = 3.0;

/// The lift that chance alone reaches for a value with `share_all` of all items when
/// `selected` items are picked at random: 1 + 3 standard deviations of the binomial share,
/// `1 + 3 · sqrt((1 − share_all) / (share_all · selected))`. With a third of the items and 11
/// slow ones that is 2.28; with 27 failed ones, 1.82. A lift above it is a signal (a value with
/// no relation to slowness stays below it 99.7 % of the time); `None` when nothing is selected.
pub fn noise_lift(share_all: f64, selected: u64) -> Option<f64> {
    if selected == 0 || share_all <= 0.0 {
        return None;
    }
    Some(1.0 + NOISE_SIGMAS * ((1.0 - share_all) / (share_all * selected as f64)).sqrt())
}

/// Results that count as failed (the error results of `cicd.pipeline.result`).
pub const FAILED_RESULTS: &[&str] = &["failure", "error", "timeout"];

/// Labels that are not attributes to correlate with.
const NOT_ATTRIBUTES: &[&str] = &[
    attr::RESULT,
    attr::CICD_PIPELINE_RESULT,
    attr::PRODUCTION,
    attr::REPOSITORY,
    attr::DEPLOYMENT_REWORK_REASON,
];

/// Results of deployments that deployed nothing: neither in the rework rate's total nor in it.
const RAN_NOTHING: &[&str] = &["cancellation", "skip"];

/// The value a series without a label has for it.
pub const UNSET: &str = "(unset)";

/// The kinds of work item the analysis knows: each has a duration histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    Issue,
    Change,
    Run,
    Deployment,
}

impl WorkKind {
    pub const ALL: [WorkKind; 4] = [
        WorkKind::Issue,
        WorkKind::Change,
        WorkKind::Run,
        WorkKind::Deployment,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            WorkKind::Issue => "issue",
            WorkKind::Change => "change",
            WorkKind::Run => "run",
            WorkKind::Deployment => "deployment",
        }
    }
    /// The duration histogram of the kind.
    pub fn metric(self) -> &'static str {
        match self {
            WorkKind::Issue => metrics::ISSUE_DURATION,
            WorkKind::Change => metrics::CHANGE_DURATION,
            WorkKind::Run => metrics::RUN_DURATION,
            WorkKind::Deployment => metrics::DEPLOYMENT_DURATION,
        }
    }
    fn has_failures(self) -> bool {
        matches!(self, WorkKind::Run | WorkKind::Deployment)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    Duration,
    Failure,
    /// Deployments only: unplanned production deployments.
    Rework,
}

impl By {
    pub fn as_str(self) -> &'static str {
        match self {
            By::Duration => "duration",
            By::Failure => "failure",
            By::Rework => "rework",
        }
    }
}

/// A bad question: answered with a 400 that says why.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueryError {
    #[error("parameter `kind` is required: one of issue, change, run, deployment")]
    MissingKind,
    #[error("parameter `kind` must be one of issue, change, run, deployment, got {0:?}")]
    Kind(String),
    #[error("parameter `by` must be duration, failure or rework, got {0:?}")]
    By(String),
    #[error("parameter `threshold_s` must be a positive number of seconds, at most {max}, got {0:?}", max = BUCKETS[BUCKETS.len() - 1])]
    Threshold(String),
    #[error("parameter `threshold_s` applies to by=duration only")]
    ThresholdWithFailure,
    #[error("{0}s have no failed result: use by=duration")]
    NoFailures(&'static str),
    #[error("by=rework applies to kind=deployment only, got kind {0}")]
    ReworkOfDeploymentsOnly(&'static str),
    #[error("unknown parameter `{0}` (the parameters are kind, by, threshold_s)")]
    Unknown(String),
}

/// What is asked.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub kind: WorkKind,
    pub by: By,
    /// Requested threshold, seconds (`by=duration`); raised to the next bucket bound.
    pub threshold_s: Option<f64>,
}

impl Query {
    /// Reads `kind`, `by` (default duration) and `threshold_s` from query pairs.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Query, QueryError> {
        let (mut kind, mut by, mut threshold) = (None, By::Duration, None);
        for (k, v) in pairs {
            match k {
                "kind" => {
                    kind = Some(
                        WorkKind::ALL
                            .into_iter()
                            .find(|w| w.as_str() == v)
                            .ok_or_else(|| QueryError::Kind(v.to_string()))?,
                    )
                }
                "by" => {
                    by = match v {
                        "duration" => By::Duration,
                        "failure" => By::Failure,
                        "rework" => By::Rework,
                        other => return Err(QueryError::By(other.to_string())),
                    }
                }
                "threshold_s" => {
                    let t: f64 = v
                        .trim()
                        .parse()
                        .map_err(|_| QueryError::Threshold(v.to_string()))?;
                    if !(t.is_finite() && t > 0.0 && t <= BUCKETS[BUCKETS.len() - 1]) {
                        return Err(QueryError::Threshold(v.to_string()));
                    }
                    threshold = Some(t);
                }
                other => return Err(QueryError::Unknown(other.to_string())),
            }
        }
        let kind = kind.ok_or(QueryError::MissingKind)?;
        if by != By::Duration && threshold.is_some() {
            return Err(QueryError::ThresholdWithFailure);
        }
        if by == By::Failure && !kind.has_failures() {
            return Err(QueryError::NoFailures(kind.as_str()));
        }
        if by == By::Rework && kind != WorkKind::Deployment {
            return Err(QueryError::ReworkOfDeploymentsOnly(kind.as_str()));
        }
        Ok(Query {
            kind,
            by,
            threshold_s: threshold,
        })
    }

    /// The query string of this question (for `--url`).
    pub fn to_query_string(&self) -> String {
        let mut s = format!("kind={}&by={}", self.kind.as_str(), self.by.as_str());
        if let Some(t) = self.threshold_s {
            s.push_str(&format!("&threshold_s={t}"));
        }
        s
    }
}

/// One attribute value and how much more common it is among the slow or failed ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    pub attribute: String,
    pub value: String,
    /// Items with this value.
    pub count: u64,
    pub share_all: f64,
    pub share_selected: f64,
    pub lift: f64,
    /// The lift chance alone reaches for this value ([`noise_lift`]); none when nothing is
    /// selected. Not an exact test: read `lift` above it as a signal, below it as noise.
    pub noise_lift: Option<f64>,
    /// Seen fewer than `min_count` times: shown, never ranked first.
    pub rare: bool,
}

/// The answer of `GET /correlations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub kind: WorkKind,
    pub by: By,
    /// The bucket bound above which an item is slow (`by=duration`; none without data).
    pub threshold_s: Option<f64>,
    pub total: u64,
    pub slow_or_failed: u64,
    pub min_count: u64,
    /// Sorted: values seen at least `min_count` times first, then by lift, highest first.
    pub attributes: Vec<Correlation>,
}

/// Every stored series of the kind's duration histogram; for deployments also those of the
/// deployment and rework counters (`by=rework`).
pub async fn read_series(store: &dyn Store, kind: WorkKind) -> Result<Vec<Series>, StoreError> {
    let mut out = metrics::stored(store, Some(kind.metric())).await?;
    if kind == WorkKind::Deployment {
        for name in [metrics::DEPLOYMENTS, metrics::REWORK] {
            out.extend(metrics::stored(store, Some(name)).await?);
        }
    }
    Ok(out)
}

/// The smallest bucket bound at or above `t`.
pub fn snap_to_bound(t: f64) -> f64 {
    BUCKETS
        .iter()
        .copied()
        .find(|b| *b >= t)
        .unwrap_or(BUCKETS[BUCKETS.len() - 1])
}

/// The smallest bucket bound with at least `q` of the observations at or below it.
pub fn quantile_bound(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let mut cum = 0;
    for (i, b) in buckets.iter().enumerate() {
        cum += b;
        if cum as f64 >= q * total as f64 {
            return Some(BUCKETS[i.min(BUCKETS.len() - 1)]);
        }
    }
    Some(BUCKETS[BUCKETS.len() - 1])
}

/// Observations of a series above the bucket bound `threshold`.
fn above(s: &Series, threshold: f64) -> u64 {
    let upto = BUCKETS.iter().take_while(|b| **b <= threshold).count();
    s.buckets.iter().skip(upto).sum()
}

fn failed(s: &Series) -> bool {
    s.labels
        .get(attr::RESULT)
        .is_some_and(|r| FAILED_RESULTS.contains(&r.as_str()))
}

/// A production deployment count that ran (rework's total and selected series).
fn ran_in_production(s: &Series) -> bool {
    s.labels.get(attr::PRODUCTION).is_some_and(|p| p == "true")
        && s.labels
            .get(attr::RESULT)
            .is_none_or(|r| !RAN_NOTHING.contains(&r.as_str()))
}

/// The correlations of `q` over `series` (those of other metrics are ignored).
pub fn correlate(q: &Query, series: &[Series]) -> Result<Report, QueryError> {
    if q.by == By::Rework {
        return Ok(rework(q, series));
    }
    let series: Vec<&Series> = series
        .iter()
        .filter(|s| s.name == q.kind.metric())
        .collect();
    let mut all_buckets = vec![0u64; BUCKETS.len() + 1];
    for s in &series {
        for (i, b) in s.buckets.iter().enumerate().take(all_buckets.len()) {
            all_buckets[i] += b;
        }
    }
    let threshold = match q.by {
        By::Failure | By::Rework => None,
        By::Duration => match q.threshold_s {
            Some(t) => Some(snap_to_bound(t)),
            None => quantile_bound(&all_buckets, 0.9),
        },
    };
    let selected = |s: &Series| -> u64 {
        match (q.by, threshold) {
            (By::Duration, Some(t)) => above(s, t),
            (By::Duration, None) => 0,
            (By::Failure | By::Rework, _) => {
                if failed(s) {
                    s.count
                } else {
                    0
                }
            }
        }
    };
    let counted: Vec<(&Series, u64, u64)> =
        series.iter().map(|s| (*s, s.count, selected(s))).collect();
    Ok(ranked(q, threshold, &counted))
}

/// `by=rework`: the production deployments that ran, and the rework ones among them.
fn rework(q: &Query, series: &[Series]) -> Report {
    let counted: Vec<(&Series, u64, u64)> = series
        .iter()
        .filter(|s| ran_in_production(s))
        .filter_map(|s| match s.name.as_str() {
            metrics::DEPLOYMENTS => Some((s, s.count, 0)),
            metrics::REWORK => Some((s, 0, s.count)),
            _ => None,
        })
        .collect();
    ranked(q, None, &counted)
}

/// Every attribute value's share among all and among the selected, ranked; `counted` holds
/// each series with the items it counts among all and among the selected.
fn ranked(q: &Query, threshold: Option<f64>, counted: &[(&Series, u64, u64)]) -> Report {
    let total: u64 = counted.iter().map(|c| c.1).sum();
    let chosen: u64 = counted.iter().map(|c| c.2).sum();
    // attribute → value → (all, selected)
    let mut tally: BTreeMap<&str, BTreeMap<&str, (u64, u64)>> = BTreeMap::new();
    let names: std::collections::BTreeSet<&str> = counted
        .iter()
        .flat_map(|c| c.0.labels.keys().map(LabelStr::as_str))
        .filter(|k| !NOT_ATTRIBUTES.contains(k))
        .collect();
    for (s, all, sel) in counted {
        for name in &names {
            let value = s.labels.get(*name).map_or(UNSET, LabelStr::as_str);
            let e = tally.entry(name).or_default().entry(value).or_default();
            e.0 += all;
            e.1 += sel;
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut attributes: Vec<Correlation> = tally
        .into_iter()
        .flat_map(|(name, values)| {
            values.into_iter().map(move |(value, (n, sel))| {
                let share_all = ratio(n, total);
                let share_selected = ratio(sel, chosen);
                Correlation {
                    attribute: name.to_string(),
                    value: value.to_string(),
                    count: n,
                    share_all,
                    share_selected,
                    lift: if share_all > 0.0 {
                        share_selected / share_all
                    } else {
                        0.0
                    },
                    noise_lift: noise_lift(share_all, chosen),
                    rare: n < MIN_COUNT,
                }
            })
        })
        .collect();
    attributes.sort_by(|a, b| {
        a.rare
            .cmp(&b.rare)
            .then(b.lift.total_cmp(&a.lift))
            .then(b.count.cmp(&a.count))
            .then(a.attribute.cmp(&b.attribute))
            .then(a.value.cmp(&b.value))
    });
    Report {
        kind: q.kind,
        by: q.by,
        threshold_s: threshold,
        total,
        slow_or_failed: chosen,
        min_count: MIN_COUNT,
        attributes,
    }
}

/// The report as a text table (the CLI's output).
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let what = match (r.by, r.threshold_s) {
        (By::Duration, Some(t)) => format!("slow = longer than {t} s (a bucket bound)"),
        (By::Duration, None) => "slow = (no data)".to_string(),
        (By::Failure, _) => format!("failed = result {}", FAILED_RESULTS.join("|")),
        (By::Rework, _) => "rework = unplanned production deployments".to_string(),
    };
    out.push_str(&format!(
        "kind {}, by {}: {what}; {} of {} items\n",
        r.kind.as_str(),
        r.by.as_str(),
        r.slow_or_failed,
        r.total
    ));
    let width = r
        .attributes
        .iter()
        .map(|c| c.attribute.len())
        .max()
        .unwrap_or(9)
        .max(9);
    let vwidth = r
        .attributes
        .iter()
        .map(|c| c.value.len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "{:<width$}  {:<vwidth$}  {:>6}  {:>9}  {:>14}  {:>6}  {:>5}\n",
        "attribute", "value", "count", "share_all", "share_selected", "lift", "noise"
    ));
    for c in &r.attributes {
        out.push_str(&format!(
            "{:<width$}  {:<vwidth$}  {:>6}  {:>9.3}  {:>14.3}  {:>6.2}  {:>5}{}\n",
            c.attribute,
            c.value,
            c.count,
            c.share_all,
            c.share_selected,
            c.lift,
            c.noise_lift.map_or("-".to_string(), |n| format!("{n:.2}")),
            if c.lift > c.noise_lift.unwrap_or(f64::INFINITY) && !c.rare {
                "  signal"
            } else if c.rare {
                "  (rare)"
            } else {
                ""
            }
        ));
    }
    out.push_str(&format!(
        "lift = share among the selected / share among all; noise = the lift chance alone reaches \
         ({NOISE_SIGMAS} standard deviations); (rare) = seen fewer than {} times\n",
        r.min_count
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::series::Labels;

    fn series(name: &str, labels: &[(&str, &str)], values: &[f64]) -> Series {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut s = Series::new(name, labels, 1);
        for v in values {
            s.apply((*v * 1000.0).round() as i64, 1, 2);
        }
        s
    }

    fn q(kind: &str, by: &str, t: Option<&str>) -> Result<Query, QueryError> {
        let mut pairs = vec![("kind", kind), ("by", by)];
        if let Some(t) = t {
            pairs.push(("threshold_s", t));
        }
        Query::from_pairs(pairs)
    }

    /// Python issues take 10 days, Go ones 1 hour; result and repository are not attributes.
    fn issues() -> Vec<Series> {
        let py = [(attr::LANGUAGE, "python"), (attr::TEAM, "a")];
        let go = [(attr::LANGUAGE, "go"), (attr::TEAM, "a")];
        vec![
            series(
                metrics::ISSUE_DURATION,
                &[py[0], py[1], (attr::REPOSITORY, "x/py")],
                &[864000.0; 10],
            ),
            series(
                metrics::ISSUE_DURATION,
                &[go[0], go[1], (attr::RESULT, "closed")],
                &[3600.0; 30],
            ),
            series(
                metrics::ISSUE_DURATION,
                &[(attr::LANGUAGE, "rust")],
                &[3600.0; 2],
            ),
            series(metrics::CHANGE_DURATION, &[py[0]], &[864000.0; 100]),
        ]
    }

    fn counter(name: &str, team: &str, env_prod: &str, result: &str, n: u64) -> Series {
        let labels: Labels = [
            (attr::TEAM, team),
            (attr::PRODUCTION, env_prod),
            (attr::RESULT, result),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut s = Series::new(name, labels, 1);
        s.count = n;
        s
    }

    /// Team a: 4 of its 10 production deployments are rework, team b: 1 of 10; staging and
    /// cancelled deployments count in neither the total nor the rework.
    #[test]
    fn rework_ranks_the_values_of_unplanned_production_deployments() {
        let mut reason_a = counter(metrics::REWORK, "a", "true", "success", 4);
        reason_a
            .labels
            .insert(attr::DEPLOYMENT_REWORK_REASON.into(), "failed_state".into());
        let series = vec![
            counter(metrics::DEPLOYMENTS, "a", "true", "success", 10),
            counter(metrics::DEPLOYMENTS, "b", "true", "success", 10),
            counter(metrics::DEPLOYMENTS, "a", "false", "success", 5),
            counter(metrics::DEPLOYMENTS, "b", "true", "cancellation", 3),
            reason_a,
            counter(metrics::REWORK, "b", "true", "success", 1),
            counter(metrics::REWORK, "b", "true", "cancellation", 2),
            series(metrics::DEPLOYMENT_DURATION, &[(attr::TEAM, "c")], &[60.0]),
        ];
        let r = correlate(&q("deployment", "rework", None).unwrap(), &series).unwrap();
        assert_eq!((r.total, r.slow_or_failed, r.threshold_s), (20, 5, None));
        let names: Vec<&str> = r.attributes.iter().map(|c| c.attribute.as_str()).collect();
        assert_eq!(names, [attr::TEAM, attr::TEAM], "{r:?}");
        let a = &r.attributes[0];
        assert_eq!((a.value.as_str(), a.count), ("a", 10));
        assert!((a.share_selected - 0.8).abs() < 1e-12 && (a.lift - 1.6).abs() < 1e-12);
        assert!(table(&r).contains("rework = unplanned production deployments"));
        assert_eq!(
            q("issue", "rework", None),
            Err(QueryError::ReworkOfDeploymentsOnly("issue"))
        );
        assert_eq!(
            q("deployment", "rework", Some("60")),
            Err(QueryError::ThresholdWithFailure)
        );
    }

    #[test]
    fn slow_ones_above_a_bucket_bound_and_their_lift() {
        let r = correlate(&q("issue", "duration", Some("86400")).unwrap(), &issues()).unwrap();
        assert_eq!(
            (r.total, r.slow_or_failed, r.threshold_s),
            (42, 10, Some(86400.0))
        );
        let top = &r.attributes[0];
        assert_eq!(
            (top.attribute.as_str(), top.value.as_str()),
            (attr::LANGUAGE, "python")
        );
        assert_eq!(top.count, 10);
        assert!((top.share_all - 10.0 / 42.0).abs() < 1e-12);
        assert_eq!(top.share_selected, 1.0);
        assert!((top.lift - 4.2).abs() < 1e-12);
        // 1 + 3 · sqrt((1 − 10/42) / (10/42 · 10)).
        let noise = 1.0 + 3.0 * ((32.0_f64 / 42.0) / (100.0 / 42.0)).sqrt();
        assert!((top.noise_lift.unwrap() - noise).abs() < 1e-12);
        assert_eq!(noise_lift(1.0, 5), Some(1.0));
        assert_eq!(noise_lift(0.5, 0), None);
        let find = |a: &str, v: &str| {
            r.attributes
                .iter()
                .find(|c| c.attribute == a && c.value == v)
                .unwrap()
        };
        assert_eq!(find(attr::LANGUAGE, "go").lift, 0.0);
        // Team a: 40 of 42 items, all 10 slow ones: lift 42/40.
        assert!((find(attr::TEAM, "a").lift - 42.0 / 40.0).abs() < 1e-12);
        // The rust series has no team: (unset); 2 items is rare, ranked last.
        assert!(find(attr::TEAM, UNSET).rare);
        assert!(r.attributes.last().unwrap().rare);
        assert!(r
            .attributes
            .iter()
            .all(|c| c.attribute != attr::RESULT && c.attribute != attr::REPOSITORY));
    }

    #[test]
    fn requested_thresholds_rise_to_the_next_bound_and_the_default_is_the_p90_bound() {
        let r = correlate(&q("issue", "duration", Some("50000")).unwrap(), &issues()).unwrap();
        assert_eq!(r.threshold_s, Some(86400.0));
        // 32 of 42 at 3600 (76 %), then 10 at 864000 (bucket le=1209600): p90 bound 1209600,
        // nothing above it.
        let r = correlate(&q("issue", "duration", None).unwrap(), &issues()).unwrap();
        assert_eq!((r.threshold_s, r.slow_or_failed), (Some(1209600.0), 0));
        assert!(r.attributes.iter().all(|c| c.lift == 0.0));
        assert_eq!(quantile_bound(&[0, 9, 1], 0.9), Some(BUCKETS[1]));
        assert_eq!(quantile_bound(&[0, 8, 2], 0.9), Some(BUCKETS[2]));
        assert_eq!(quantile_bound(&[0, 0, 0], 0.9), None);
        assert_eq!(snap_to_bound(0.5), 1.0);
    }

    #[test]
    fn failures_by_result() {
        let d = metrics::DEPLOYMENT_DURATION;
        let s = vec![
            series(
                d,
                &[
                    (attr::DEPLOYMENT_TYPE, "mutable"),
                    (attr::RESULT, "failure"),
                ],
                &[60.0; 6],
            ),
            series(
                d,
                &[
                    (attr::DEPLOYMENT_TYPE, "mutable"),
                    (attr::RESULT, "success"),
                ],
                &[60.0; 4],
            ),
            series(
                d,
                &[
                    (attr::DEPLOYMENT_TYPE, "container"),
                    (attr::RESULT, "timeout"),
                ],
                &[60.0; 2],
            ),
            series(
                d,
                &[
                    (attr::DEPLOYMENT_TYPE, "container"),
                    (attr::RESULT, "cancellation"),
                ],
                &[60.0; 3],
            ),
            series(
                d,
                &[
                    (attr::DEPLOYMENT_TYPE, "container"),
                    (attr::RESULT, "success"),
                ],
                &[60.0; 15],
            ),
        ];
        let r = correlate(&q("deployment", "failure", None).unwrap(), &s).unwrap();
        assert_eq!((r.total, r.slow_or_failed, r.threshold_s), (30, 8, None));
        assert_eq!(r.attributes[0].value, "mutable");
        assert!((r.attributes[0].lift - (6.0 / 8.0) / (10.0 / 30.0)).abs() < 1e-12);
        assert!(table(&r).contains(&format!("{}  mutable", attr::DEPLOYMENT_TYPE)));
    }

    #[test]
    fn no_data_is_an_empty_answer() {
        let r = correlate(&q("change", "duration", None).unwrap(), &[]).unwrap();
        assert_eq!((r.total, r.slow_or_failed, r.threshold_s), (0, 0, None));
        assert!(r.attributes.is_empty());
    }

    #[test]
    fn bad_questions_say_why() {
        assert_eq!(
            Query::from_pairs([("by", "duration")]),
            Err(QueryError::MissingKind)
        );
        assert_eq!(
            q("bug", "duration", None),
            Err(QueryError::Kind("bug".into()))
        );
        assert_eq!(
            q("issue", "speed", None),
            Err(QueryError::By("speed".into()))
        );
        assert_eq!(
            q("issue", "failure", None),
            Err(QueryError::NoFailures("issue"))
        );
        assert_eq!(
            q("run", "failure", Some("60")),
            Err(QueryError::ThresholdWithFailure)
        );
        for bad in ["-1", "0", "abc", "NaN", "inf", "99999999999"] {
            assert_eq!(
                q("run", "duration", Some(bad)),
                Err(QueryError::Threshold(bad.into()))
            );
        }
        assert_eq!(
            Query::from_pairs([("kind", "run"), ("limit", "3")]),
            Err(QueryError::Unknown("limit".into()))
        );
        assert_eq!(
            q("run", "duration", Some("60")).unwrap().to_query_string(),
            "kind=run&by=duration&threshold_s=60"
        );
    }
}
