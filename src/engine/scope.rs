//! What a scope's partition keeps: one compact [`Summary`] per work item (with the ledger of
//! the metric contributions already applied for it) and one [`PushFact`] per push.
//!
//! A scope is a repository (or, for a work item that names none, the item alone). What follows
//! from a scope's records (the DORA definitions) is derived by [`super::dora`].

use super::facts::{self, Gen, ItemRecord};
pub use super::metrics::{tally_diff, Tally};
use super::metrics::{LabelStr, Labels};
use crate::model::attr;
use crate::model::{ChangeStep, Kind, ParentRef, Push, Repo, RepoTraits, Time, WorkResult};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Where an item's summary, and its metric ledger, live.
pub fn scope_of(repo: Option<&Repo>, item_key: &str) -> super::keys::Scope {
    super::keys::Scope::of(repo, item_key)
}

/// What the drain needs of one generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenSummary {
    pub start: Option<Time>,
    pub end: Option<Time>,
    #[serde(default)]
    pub result: Option<WorkResult>,
    #[serde(default)]
    pub error: bool,
    #[serde(default)]
    pub merge_sha: Option<String>,
    #[serde(default)]
    pub head_sha: Option<String>,
    #[serde(default)]
    pub environment: Option<LabelStr>,
    /// The labels every metric point about this span carries.
    pub labels: Labels,
    #[serde(default)]
    pub pipeline: Option<String>,
    /// A change's title and labels: what the rework rule reads (`VALUESTREAM_REWORK_PATTERN`).
    /// Kept as text, not as a verdict, so that a new pattern applies to stored summaries too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub change_labels: Vec<String>,
    /// A change's steps (drafts, ready, reviews) up to its close: what the stage rule reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<ChangeStep>,
}

/// A compact view of a work item, in its scope's partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub key: String,
    pub source: LabelStr,
    pub kind: Kind,
    pub gens: Vec<GenSummary>,
    /// Parent candidates of the first generation, best first.
    #[serde(default)]
    pub parents: Vec<ParentRef>,
    #[serde(default)]
    pub follows: Vec<String>,
    #[serde(default)]
    pub head_shas: Vec<String>,
    #[serde(default)]
    pub head_branch: Option<String>,
    /// When the last fact arrived (the settle clock; never part of an output).
    pub touched: Time,
    /// Generations already exported.
    #[serde(default)]
    pub exported: Vec<u32>,
    /// The change generations (key, generation) whose deploy stage span went out with this
    /// item's export: a change's own, or the changes a deployment first shipped. A deploy stage
    /// goes out with whichever of the two is exported last, once: the drain reads these marks
    /// from every summary of the scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deploy_staged: Vec<(String, u32)>,
    /// The metric contributions applied for this item (its ledger), sorted; `None` until the
    /// drain first writes it (a store written before the ledger moved here keeps it in an
    /// `l#` record, still read). Kept in the summary so that it lives exactly as long as the
    /// summary: a record of its own expired while a later fact kept the summary alive, and the
    /// item was counted again. Deliveries carry it over unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Vec<Contribution>>,
    /// The ledger as the drain writes it now: the contributions applied for this item summed
    /// per series ([`Tally`]), so its size depends on how many series the item counts in, never
    /// on how many observations (a deployment that ships 5,000 changes keeps one lead-time
    /// tally, not 5,000 entries). `None` until the drain first writes it; a summary that still
    /// holds the older `ledger` is read through [`Summary::applied`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<Vec<Tally>>,
    /// The trace this item's spans are in, fixed when it was sealed ([`super::seal`]): later
    /// settlements do not read what its parents were resolved from. `None` while it is live (a
    /// delivery that rewrites a sealed item drops it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_trace: Option<String>,
}

/// The labels every metric point about a span carries. The team is lower-cased: one team named
/// `Payments` by PagerDuty and `payments` by a GitHub label is one series.
pub fn base_labels(source: &str, repo: Option<&Repo>, traits: &RepoTraits) -> Labels {
    let mut l = Labels::new();
    l.insert(attr::SOURCE.into(), source.into());
    if let Some(repo) = repo {
        l.insert(attr::REPOSITORY.into(), repo.0.as_str().into());
    }
    for (k, v) in traits.entries() {
        l.insert(k.into(), v.to_lowercase().into());
    }
    l
}

impl Summary {
    /// The summary of an item's facts. What the drain recorded in the item's previous summary
    /// (`prev`: generations exported, the ledger) is carried over.
    pub fn of(
        key: &str,
        record: &ItemRecord,
        touched: Time,
        prev: Option<Summary>,
    ) -> Option<Self> {
        Self::of_generations(
            key,
            record,
            &facts::generations(&record.facts),
            touched,
            prev,
        )
    }

    /// As [`Summary::of`], with the record's generations already read.
    pub fn of_generations(
        key: &str,
        record: &ItemRecord,
        gens: &[Gen],
        touched: Time,
        prev: Option<Summary>,
    ) -> Option<Self> {
        let (exported, deploy_staged, ledger, tally) = prev
            .map(|p| (p.exported, p.deploy_staged, p.ledger, p.tally))
            .unwrap_or_default();
        let first = gens.first()?;
        Some(Summary {
            key: key.to_string(),
            source: first.source.as_str().into(),
            kind: gens.last().map(|g| g.kind).unwrap_or(first.kind),
            parents: first.parents.clone(),
            follows: first.follows.clone(),
            head_shas: facts::head_shas(&record.facts),
            head_branch: gens.iter().rev().find_map(|g| g.head_branch.clone()),
            gens: gens.iter().map(gen_summary).collect(),
            touched,
            exported,
            deploy_staged,
            ledger,
            tally,
            sealed_trace: None,
        })
    }

    /// What the drain applied for this item, summed per series: the tally, or the tally of a
    /// ledger written before tallies; `None` when nothing was applied yet.
    pub fn applied(&self) -> Option<Cow<'_, [Tally]>> {
        match (&self.tally, &self.ledger) {
            (Some(t), _) => Some(Cow::Borrowed(t)),
            (None, Some(ledger)) => Some(Cow::Owned(tally(ledger))),
            (None, None) => None,
        }
    }

    /// The generation that was current at `t`: the last that started at or before it.
    pub fn gen_at(&self, t: Option<Time>) -> u32 {
        let Some(t) = t else { return 0 };
        self.gens
            .iter()
            .enumerate()
            .filter(|(_, g)| g.start.is_none_or(|s| s <= t))
            .map(|(i, _)| i as u32)
            .next_back()
            .unwrap_or(0)
    }
}

fn gen_summary(g: &Gen) -> GenSummary {
    GenSummary {
        start: g.start,
        end: g.end,
        result: g.result(),
        error: g.error(),
        merge_sha: g.merge_sha.as_ref().map(|s| s.to_ascii_lowercase()),
        head_sha: g.head_sha.as_ref().map(|s| s.to_ascii_lowercase()),
        environment: g.environment.as_deref().map(Into::into),
        labels: base_labels(&g.source, g.repo.as_ref(), &g.traits),
        pipeline: g.pipeline.clone(),
        title: g.change_title.clone(),
        change_labels: g.change_labels.clone(),
        steps: g.steps.clone(),
    }
}

/// A push, as its scope keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushFact {
    pub branch: String,
    pub to_default_branch: bool,
    pub after: String,
    pub time: Time,
    pub commits: Vec<PushCommit>,
    /// Tags of the deliveries that brought this push (see [`super::facts::Fact::deliveries`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<String>,
    /// When a delivery last wrote it (the settle clock; never part of an output): a settlement
    /// looks up the sealed records that name its commits only while it is newer than the
    /// checkpoint ([`super::seal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touched: Option<Time>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushCommit {
    pub sha: String,
    pub time: Time,
    /// The commit message says it merges a change.
    pub merges: bool,
}

impl PushFact {
    pub fn of(p: &Push) -> Self {
        PushFact {
            branch: p.branch.clone(),
            to_default_branch: p.to_default_branch,
            after: p.after.to_ascii_lowercase(),
            time: p.time,
            commits: p
                .commits
                .iter()
                .map(|c| PushCommit {
                    sha: c.sha.to_ascii_lowercase(),
                    time: c.time,
                    merges: c.merges,
                })
                .collect(),
            deliveries: Vec::new(),
            touched: None,
        }
    }

    /// One push redelivered with other commits listed: the union, in a fixed order; and the
    /// union of the deliveries' tags.
    pub fn merge(&mut self, other: &PushFact) {
        super::facts::merge_tags(&mut self.deliveries, &other.deliveries);
        for c in &other.commits {
            if !self.commits.iter().any(|x| x.sha == c.sha) {
                self.commits.push(c.clone());
            }
        }
        self.commits
            .sort_by(|a, b| (a.time, &a.sha).cmp(&(b.time, &b.sha)));
        self.time = self.time.min(other.time);
    }
}

/// One metric contribution: a counter increment (whole units) or a histogram observation
/// (milliseconds), owned by the work item it is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Contribution {
    pub name: String,
    pub labels: Labels,
    pub value: i64,
}

/// Contributions summed per series, in series order.
pub fn tally(contributions: &[Contribution]) -> Vec<Tally> {
    let mut by_series: BTreeMap<(&str, &Labels), Tally> = BTreeMap::new();
    for c in contributions {
        by_series
            .entry((c.name.as_str(), &c.labels))
            .or_insert_with(|| Tally::empty(&c.name, &c.labels))
            .add(c.value);
    }
    by_series.into_values().collect()
}

/// A span's identity in its scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GenRef {
    pub key: String,
    pub gen: u32,
}

#[cfg(test)]
mod tally_tests {
    use super::*;
    use crate::engine::metrics;
    use proptest::prelude::*;

    fn c(name: &str, team: &str, v: i64) -> Contribution {
        let mut labels = Labels::new();
        labels.insert("team".into(), team.into());
        Contribution {
            name: name.into(),
            labels,
            value: v,
        }
    }

    #[test]
    fn a_tally_sums_a_series_whatever_the_number_of_observations() {
        let many: Vec<_> = (0..5_000)
            .map(|i| c(metrics::LEAD_TIME, "a", i * 1000))
            .collect();
        let t = tally(&many);
        assert_eq!(t.len(), 1, "one series");
        assert_eq!(t[0].count, 5_000);
        assert_eq!(t[0].sum_ms, (0..5_000).map(|i| i * 1000).sum::<i64>());
        assert_eq!(t[0].buckets.values().sum::<i64>(), 5_000);
        let size = serde_json::to_vec(&t).unwrap().len();
        assert!(size < 1_000, "{size} bytes for 5,000 observations");
    }

    #[test]
    fn a_counter_tally_is_its_total() {
        let t = tally(&[
            c(metrics::DEPLOYMENTS, "a", 1),
            c(metrics::DEPLOYMENTS, "a", 1),
        ]);
        assert_eq!((t[0].count, t[0].sum_ms, t[0].buckets.len()), (2, 0, 0));
    }

    #[test]
    fn the_diff_leaves_out_what_did_not_change() {
        let old = tally(&[
            c(metrics::LEAD_TIME, "a", 1000),
            c(metrics::LEAD_TIME, "b", 5000),
        ]);
        let new = tally(&[
            c(metrics::LEAD_TIME, "a", 1000),
            c(metrics::LEAD_TIME, "b", 7000),
        ]);
        let d = tally_diff(&old, &new);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (d[0].labels["team"].as_str(), d[0].count, d[0].sum_ms),
            ("b", 0, 2000)
        );
        assert!(tally_diff(&new, &new).is_empty());
        // a series that is gone is taken back whole
        let gone = tally_diff(&new, &[]);
        assert_eq!(gone.iter().map(|t| t.count).sum::<i64>(), -2);
    }

    fn series_of(contributions: &[Contribution]) -> BTreeMap<String, (u64, i64, Vec<u64>)> {
        let mut out: BTreeMap<String, metrics::Series> = BTreeMap::new();
        for x in contributions {
            out.entry(metrics::series_id(&x.name, &x.labels))
                .or_insert_with(|| metrics::Series::new(&x.name, x.labels.clone(), 0))
                .apply(x.value, 1, 1);
        }
        out.into_iter()
            .map(|(k, s)| (k, (s.count, s.sum_ms, s.buckets)))
            .collect()
    }

    fn contribution() -> impl Strategy<Value = Contribution> {
        let names = prop_oneof![
            Just(metrics::LEAD_TIME),
            Just(metrics::DEPLOYMENTS),
            Just(metrics::RECOVERY_TIME),
        ];
        (
            names,
            prop_oneof![Just("a"), Just("b")],
            0i64..40_000_000_000,
        )
            .prop_map(|(n, t, v)| c(n, t, if n == metrics::DEPLOYMENTS { 1 } else { v }))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, rng_seed: proptest::test_runner::RngSeed::Fixed(30), ..ProptestConfig::default() })]
        /// Applying the difference of two tallies to the series of `old` gives exactly the
        /// series of `new`, as taking back and adding each observation did.
        #[test]
        fn applying_a_tally_diff_gives_the_series_of_the_new_set(
            old in proptest::collection::vec(contribution(), 0..40),
            new in proptest::collection::vec(contribution(), 0..40),
        ) {
            let mut series: BTreeMap<String, metrics::Series> = BTreeMap::new();
            for x in &old {
                series.entry(metrics::series_id(&x.name, &x.labels))
                    .or_insert_with(|| metrics::Series::new(&x.name, x.labels.clone(), 0))
                    .apply(x.value, 1, 1);
            }
            for d in tally_diff(&tally(&old), &tally(&new)) {
                series.entry(metrics::series_id(&d.name, &d.labels))
                    .or_insert_with(|| metrics::Series::new(&d.name, d.labels.clone(), 0))
                    .apply_tally(&d, 2);
            }
            let got: BTreeMap<_, _> = series
                .into_iter()
                .filter(|(_, s)| s.count != 0 || s.sum_ms != 0)
                .map(|(k, s)| (k, (s.count, s.sum_ms, s.buckets)))
                .collect();
            prop_assert_eq!(got, series_of(&new));
        }
    }
}
