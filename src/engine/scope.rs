//! A scope's facts and what follows from them: the DORA definitions (README "How spans are
//! linked", docs/metrics.md), in code.
//!
//! A scope is a repository (or, for a work item that names none, the item alone). Its
//! partition holds one compact [`Summary`] per work item (with the ledger of the metric
//! contributions already applied for it) and one [`PushFact`] per push. [`derive`] is a pure
//! function of the summaries and pushes: it orders them by event time and decides which changes
//! each deployment shipped, lead times, recoveries, the deployment each incident followed and
//! change failures. Because it is recomputed from the whole set at every drain, whichever side of
//! a relation arrives second makes the link, and a late fact corrects what it changes.

use super::facts::{self, Gen, ItemRecord};
use super::metrics::{self, Labels};
pub use super::metrics::{tally_diff, Tally};
use super::stages::{self, ChangeTimes, Stage, StageName};
use crate::config::Config;
use crate::model::attr;
use crate::model::{ChangeStep, Kind, ParentRef, Push, Repo, RepoTraits, Time, WorkResult};

/// The result label of a finished item whose delivery named no result.
const UNKNOWN: &str = "unknown";
use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Where an item's summary, and its metric ledger, live.
pub fn scope_of(repo: Option<&Repo>, item_key: &str) -> String {
    super::keys::Scope::of(repo, item_key).to_string()
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
    pub environment: Option<String>,
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
    pub source: String,
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
}

/// The labels every metric point about a span carries. The team is lower-cased: one team named
/// `Payments` by PagerDuty and `payments` by a GitHub label is one series.
pub fn base_labels(source: &str, repo: Option<&Repo>, traits: &RepoTraits) -> Labels {
    let mut l = Labels::new();
    l.insert(attr::SOURCE.into(), source.to_string());
    if let Some(repo) = repo {
        l.insert(attr::REPOSITORY.into(), repo.0.clone());
    }
    for (k, v) in traits.entries() {
        l.insert(k.into(), v.to_lowercase());
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
            source: first.source.clone(),
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
        })
    }

    /// What the drain applied for this item, summed per series: the tally, or the tally of a
    /// ledger written before tallies; `None` when nothing was applied yet.
    pub fn applied(&self) -> Option<Vec<Tally>> {
        self.tally
            .clone()
            .or_else(|| self.ledger.as_deref().map(tally))
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
        environment: g.environment.clone(),
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

/// What follows for one finished deployment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeployInfo {
    pub production: bool,
    pub success: bool,
    /// The changes it shipped (merged changes; direct commits count but have no span).
    pub shipped: Vec<GenRef>,
    pub changes: i64,
    pub recovery_s: Option<f64>,
    /// Why a production deployment is rework; `None`: planned (or not in production).
    pub rework: Option<ReworkReason>,
}

/// Why a production deployment is *rework* (unplanned), the first that holds, in this order
/// (docs/metrics.md "Deployment rework rate"):
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReworkReason {
    /// It started while its repository and environment were failed: after a failed deployment,
    /// before the next successful one finished.
    FailedState,
    /// It started while an incident that followed a production deployment of its repository
    /// and environment was open.
    Incident,
    /// It shipped a change whose title or a label matches `VALUESTREAM_REWORK_PATTERN` (a
    /// revert, a hotfix).
    FixChange,
}

impl ReworkReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReworkReason::FailedState => "failed_state",
            ReworkReason::Incident => "incident",
            ReworkReason::FixChange => "fix_change",
        }
    }
}

/// What follows for one incident.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    pub deployment: GenRef,
    pub environment: String,
}

/// Everything [`derive`] concludes about a scope.
#[derive(Debug, Default)]
pub struct Derived {
    pub deploys: HashMap<GenRef, DeployInfo>,
    /// Incident key → the deployment it followed.
    pub causes: HashMap<String, Cause>,
    /// Merged change → the first commit time, when before its creation.
    pub first_commit: HashMap<GenRef, Time>,
    /// Each merged change generation's stages ([`stages::stages`]), in order.
    pub stages: HashMap<GenRef, Vec<Stage>>,
    /// The first successful production deployment that shipped each change generation.
    pub first_deploy: HashMap<GenRef, GenRef>,
    /// Owner item key → its metric contributions, summed per series ([`tally`]).
    pub contributions: BTreeMap<String, Vec<Tally>>,
}

/// The commit and branch indexes of a scope.
pub struct Index<'a> {
    pub items: HashMap<&'a str, &'a Summary>,
    /// Commit SHA → changes whose head or merge commit it is.
    by_sha: HashMap<String, Vec<&'a Summary>>,
    by_branch: HashMap<&'a str, Vec<&'a Summary>>,
}

impl<'a> Index<'a> {
    pub fn new(summaries: &'a [Summary]) -> Self {
        let mut idx = Index {
            items: HashMap::new(),
            by_sha: HashMap::new(),
            by_branch: HashMap::new(),
        };
        for s in summaries {
            idx.items.insert(s.key.as_str(), s);
            if s.kind != Kind::Change {
                continue;
            }
            let mut shas: Vec<&String> = s.head_shas.iter().collect();
            shas.extend(s.gens.iter().filter_map(|g| g.merge_sha.as_ref()));
            for sha in shas {
                let v = idx.by_sha.entry(sha.clone()).or_default();
                if !v.iter().any(|x| x.key == s.key) {
                    v.push(s);
                }
            }
            if let Some(b) = &s.head_branch {
                idx.by_branch.entry(b.as_str()).or_default().push(s);
            }
        }
        for v in idx.by_sha.values_mut().chain(idx.by_branch.values_mut()) {
            v.sort_by(|a, b| a.key.cmp(&b.key));
        }
        idx
    }

    /// The change a commit or branch names, as it was at `t`: among candidates, the latest to
    /// start at or before `t`, else the earliest.
    fn pick(cands: &[&'a Summary], t: Option<Time>) -> Option<GenRef> {
        let start = |s: &Summary| s.gens.first().and_then(|g| g.start);
        let before = cands
            .iter()
            .filter(|s| t.is_none_or(|t| start(s).is_none_or(|st| st <= t)))
            .max_by(|a, b| (start(a), &a.key).cmp(&(start(b), &b.key)));
        let s = before.or_else(|| {
            cands
                .iter()
                .min_by(|a, b| (start(a), &a.key).cmp(&(start(b), &b.key)))
        })?;
        Some(GenRef {
            key: s.key.clone(),
            gen: s.gen_at(t),
        })
    }

    /// A `Sha` or `Branch` candidate, resolved in this scope.
    pub fn resolve(&self, p: &ParentRef, t: Option<Time>) -> Option<GenRef> {
        match p {
            ParentRef::Sha { sha, .. } => {
                Self::pick(self.by_sha.get(&sha.to_ascii_lowercase())?, t)
            }
            ParentRef::Branch { branch, .. } => Self::pick(self.by_branch.get(branch.as_str())?, t),
            ParentRef::Item(k) => {
                let s = self.items.get(k.as_str())?;
                Some(GenRef {
                    key: k.clone(),
                    gen: s.gen_at(t),
                })
            }
        }
    }
}

/// A change that landed on the default branch, waiting to be deployed.
struct Landed {
    /// Landing time, then an identity: the order changes are shipped in.
    at: (Time, String),
    change: Option<GenRef>,
    start: Time,
}

fn ms(d: TimeDelta) -> i64 {
    d.num_milliseconds()
}

fn seconds(d: TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// Everything that follows from a scope's facts. A pure function of the set, derived in stages:
/// span durations, when each change or direct commit landed, what each deployment shipped and
/// recovered, which deployment each incident followed, and the change failures.
pub fn derive(summaries: &[Summary], pushes: &[PushFact], config: &Config) -> Derived {
    let idx = Index::new(summaries);
    let mut sorted: Vec<&Summary> = summaries.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut d = Deriver {
        out: Derived::default(),
        contributions: BTreeMap::new(),
        failure_labels: BTreeMap::new(),
        prod_successes: Vec::new(),
        failed_states: BTreeMap::new(),
        incident_windows: BTreeMap::new(),
        prod_deploys: Vec::new(),
        shipped_first: HashMap::new(),
        config,
    };
    d.durations(&sorted);
    let landings = Landings::of(&sorted, pushes, &idx, &mut d.out.first_commit);
    d.deployments(&sorted, &landings);
    d.stages(&sorted);
    d.incidents(&sorted, &idx);
    d.rework(&idx);
    d.finish()
}

/// When changes and direct commits reached the default branch.
struct Landings<'a> {
    /// Commit SHA → the first default-branch push that carried it.
    landed_at: HashMap<&'a str, Time>,
    /// Merge commit SHA → when its change landed (and which).
    merged_gen_of_sha: HashMap<&'a str, (Time, String)>,
    /// Landed changes and direct commits, in landing order.
    landed: Vec<Landed>,
}

impl<'a> Landings<'a> {
    fn of(
        sorted: &[&'a Summary],
        pushes: &'a [PushFact],
        idx: &Index<'_>,
        first_commit: &mut HashMap<GenRef, Time>,
    ) -> Self {
        let mut pushes_sorted: Vec<&PushFact> = pushes.iter().collect();
        pushes_sorted.sort_by(|a, b| (a.time, &a.after).cmp(&(b.time, &b.after)));
        let mut l = Landings {
            landed_at: HashMap::new(),
            merged_gen_of_sha: HashMap::new(),
            landed: Vec::new(),
        };
        // Each commit's first landing on the default branch.
        for p in pushes_sorted.iter().filter(|p| p.to_default_branch) {
            for c in &p.commits {
                l.landed_at.entry(c.sha.as_str()).or_insert(p.time);
            }
            l.landed_at.entry(p.after.as_str()).or_insert(p.time);
        }
        l.merged_changes(sorted, &branch_first_commits(pushes), first_commit);
        l.direct_commits(&pushes_sorted, idx);
        l.landed.sort_by(|a, b| a.at.cmp(&b.at));
        l
    }

    /// Merged changes land when their merge commit does (else when they merged); their lead
    /// time starts at the first commit of their branch when that is before they were opened.
    fn merged_changes(
        &mut self,
        sorted: &[&'a Summary],
        branch_first: &HashMap<&str, Time>,
        first_commit: &mut HashMap<GenRef, Time>,
    ) {
        for s in sorted.iter().filter(|s| s.kind == Kind::Change) {
            for (i, g) in s.gens.iter().enumerate() {
                if g.result != Some(WorkResult::Merged) {
                    continue;
                }
                let (Some(start), Some(end)) = (g.start, g.end) else {
                    continue;
                };
                let gr = GenRef {
                    key: s.key.clone(),
                    gen: i as u32,
                };
                let first = s
                    .head_branch
                    .as_deref()
                    .and_then(|b| branch_first.get(b))
                    .copied();
                let start_lt = first.map_or(start, |f| f.min(start));
                if start_lt < start {
                    first_commit.insert(gr.clone(), start_lt);
                }
                let at_time = g
                    .merge_sha
                    .as_deref()
                    .and_then(|m| self.landed_at.get(m))
                    .copied()
                    .unwrap_or(end);
                let at = (at_time, s.key.clone());
                if let Some(m) = &g.merge_sha {
                    self.merged_gen_of_sha.insert(m.as_str(), at.clone());
                }
                self.landed.push(Landed {
                    at,
                    change: Some(gr),
                    start: start_lt,
                });
            }
        }
    }

    /// Direct commits: default-branch pushes that no change brought.
    fn direct_commits(&mut self, pushes_sorted: &[&'a PushFact], idx: &Index<'_>) {
        for p in pushes_sorted.iter().filter(|p| p.to_default_branch) {
            let from_change = idx.by_sha.contains_key(&p.after)
                || p.commits
                    .iter()
                    .any(|c| c.merges || idx.by_sha.contains_key(&c.sha));
            if from_change {
                continue;
            }
            for c in &p.commits {
                if self.landed_at.get(c.sha.as_str()) != Some(&p.time) {
                    continue; // landed by an earlier push
                }
                self.landed.push(Landed {
                    at: (p.time, format!("commit-{}", c.sha)),
                    change: None,
                    start: c.time,
                });
            }
        }
    }

    /// When the deployed commit landed: its change's landing, else its own, else `fallback`
    /// (a commit never seen landing ships what landed before the deployment started).
    fn upper_bound(&self, head_sha: Option<&str>, fallback: Time) -> (Time, String) {
        let t = head_sha
            .and_then(|sha| {
                self.merged_gen_of_sha
                    .get(sha)
                    .map(|a| a.0)
                    .or_else(|| self.landed_at.get(sha).copied())
            })
            .unwrap_or(fallback);
        (t, char::MAX.to_string())
    }
}

/// The first commit pushed to each feature branch.
fn branch_first_commits(pushes: &[PushFact]) -> HashMap<&str, Time> {
    let mut branch_first: HashMap<&str, Time> = HashMap::new();
    for p in pushes.iter().filter(|p| !p.to_default_branch) {
        if let Some(first) = p.commits.iter().map(|c| c.time).min() {
            let e = branch_first.entry(p.branch.as_str()).or_insert(first);
            *e = (*e).min(first);
        }
    }
    branch_first
}

/// A finished deployment generation, in its environment's timeline.
struct Dep<'a> {
    s: &'a Summary,
    gen: u32,
    g: &'a GenSummary,
    end: Time,
}

/// An environment's timeline as its deployments are walked in finishing order.
#[derive(Default)]
struct EnvTimeline {
    /// What the last successful deployment shipped up to.
    shipped_bound: Option<(Time, String)>,
    /// When the environment started failing (the first failed deployment since a success).
    failing_since: Option<Time>,
    /// The failed states so far: from the first failed deployment to the end of the successful
    /// one that recovered (`None`: not recovered).
    failed: Vec<Window>,
}

/// A time window, `[from, to)`; `to` is `None` while it lasts.
type Window = (Time, Option<Time>);

fn within(t: Time, (from, to): Window) -> bool {
    t >= from && to.is_none_or(|to| t < to)
}

/// A finished production deployment, waiting for the rework rule.
struct ProdDeploy {
    me: GenRef,
    environment: String,
    start: Time,
    /// The labels its count carries in `valuestream.deployments`.
    counted: Labels,
}

/// The state [`derive`] builds up across its stages.
struct Deriver<'c> {
    out: Derived,
    /// Owner item key → its contributions, one by one, until [`Deriver::finish`] sums them.
    contributions: BTreeMap<String, Vec<Contribution>>,
    /// Production deployments that led to a failure → the labels their failure counts under.
    failure_labels: BTreeMap<String, Labels>,
    /// Successful production deployments (end, deployment, environment), for incidents to find
    /// their cause.
    prod_successes: Vec<(Time, GenRef, String)>,
    /// Environment (lower case) → its failed states.
    failed_states: BTreeMap<String, Vec<Window>>,
    /// Environment (lower case) → the windows its incidents were open.
    incident_windows: BTreeMap<String, Vec<Window>>,
    prod_deploys: Vec<ProdDeploy>,
    /// Change generation → (end, deployment) of the first successful production deployment
    /// that shipped it.
    shipped_first: HashMap<GenRef, (Time, GenRef)>,
    config: &'c Config,
}

impl Deriver<'_> {
    fn contribute(&mut self, owner: &str, name: &str, labels: Labels, value: i64) {
        self.contributions
            .entry(owner.to_string())
            .or_default()
            .push(Contribution {
                name: name.into(),
                labels,
                value,
            });
    }

    /// One duration observation per finished span.
    fn durations(&mut self, sorted: &[&Summary]) {
        for s in sorted {
            for g in s.gens.iter() {
                let Some(end) = g.end else { continue };
                let (name, labels) = duration_series(s, g);
                self.contribute(&s.key, name, labels, ms(end - g.start.unwrap_or(end)));
            }
        }
    }

    /// Deployments, per environment, in finishing order.
    fn deployments(&mut self, sorted: &[&Summary], landings: &Landings<'_>) {
        let mut by_env: BTreeMap<String, Vec<Dep>> = BTreeMap::new();
        for s in sorted.iter().filter(|s| s.kind == Kind::Deployment) {
            for (i, g) in s.gens.iter().enumerate() {
                if let Some(end) = g.end {
                    let env = g.environment.clone().unwrap_or_else(|| "unknown".into());
                    by_env
                        .entry(env.to_ascii_lowercase())
                        .or_default()
                        .push(Dep {
                            s,
                            gen: i as u32,
                            g,
                            end,
                        });
                }
            }
        }
        for (env, deps) in by_env.iter_mut() {
            deps.sort_by(|a, b| (a.end, &a.s.key, a.gen).cmp(&(b.end, &b.s.key, b.gen)));
            let mut timeline = EnvTimeline::default();
            for d in deps.iter() {
                self.deployment(d, &mut timeline, landings);
            }
            if let Some(since) = timeline.failing_since {
                timeline.failed.push((since, None));
            }
            self.failed_states.insert(env.clone(), timeline.failed);
        }
        self.prod_successes.sort();
    }

    /// One finished deployment: its count, the lead times of what it shipped (changes landed
    /// after the last successful deployment, up to the deployed commit), its recovery time
    /// when it ends a failing streak, and whether it failed in production.
    fn deployment(&mut self, d: &Dep<'_>, timeline: &mut EnvTimeline, landings: &Landings<'_>) {
        let g = d.g;
        let environment = g.environment.clone().unwrap_or_else(|| "unknown".into());
        let production = self.config.is_production(&environment);
        let success = !g.error && g.result.is_none_or(|r| r == WorkResult::Success);
        let upper = landings.upper_bound(g.head_sha.as_deref(), g.start.unwrap_or(d.end));
        // Landed changes are in landing order: what this deployment shipped is one range,
        // found by two binary searches (not a scan of every change per deployment).
        let landed = &landings.landed;
        let from = timeline
            .shipped_bound
            .as_ref()
            .map_or(0, |b| landed.partition_point(|l| l.at <= *b));
        let to = landed.partition_point(|l| l.at <= upper).max(from);
        let shipped: Vec<&Landed> = landed[from..to].iter().collect();
        let mut labels = g.labels.clone();
        labels.insert(
            attr::DEPLOYMENT_ENVIRONMENT_NAME.into(),
            environment.clone(),
        );
        labels.insert(attr::PRODUCTION.into(), production.to_string());
        let mut counted = labels.clone();
        counted.insert(
            attr::RESULT.into(),
            g.result
                .map_or_else(|| UNKNOWN.into(), |r| r.as_str().into()),
        );
        let owner = d.s.key.as_str();
        let me = GenRef {
            key: d.s.key.clone(),
            gen: d.gen,
        };
        if production {
            self.prod_deploys.push(ProdDeploy {
                me: me.clone(),
                environment: environment.to_ascii_lowercase(),
                start: g.start.unwrap_or(d.end),
                counted: counted.clone(),
            });
        }
        self.contribute(owner, metrics::DEPLOYMENTS, counted, 1);
        if success && production {
            for l in &shipped {
                let lead = ms(d.end - l.start).max(0);
                self.contribute(owner, metrics::LEAD_TIME, labels.clone(), lead);
                if let Some(c) = &l.change {
                    let first = self
                        .shipped_first
                        .entry(c.clone())
                        .or_insert_with(|| (d.end, me.clone()));
                    if (d.end, &me) < (first.0, &first.1) {
                        *first = (d.end, me.clone());
                    }
                }
            }
        }
        let mut info = DeployInfo {
            production,
            success,
            shipped: shipped.iter().filter_map(|l| l.change.clone()).collect(),
            changes: shipped.len() as i64,
            recovery_s: None,
            rework: None,
        };
        if success {
            if let Some(failed) = timeline.failing_since.take() {
                timeline.failed.push((failed, Some(d.end)));
                info.recovery_s = Some(seconds(d.end - failed));
                let recovery = ms(d.end - failed).max(0);
                self.contribute(owner, metrics::RECOVERY_TIME, labels, recovery);
            }
            timeline.shipped_bound = Some(upper);
            if production {
                self.prod_successes
                    .push((d.end, me.clone(), environment.clone()));
            }
        } else if g.error {
            timeline.failing_since = timeline.failing_since.or(Some(d.end));
            if production {
                self.failure_labels.insert(
                    owner.to_string(),
                    change_failure_labels(d.s, g, &environment),
                );
            }
        }
        self.out.deploys.insert(me, info);
    }

    /// Each merged change generation's stages ([`stages`]): coding, pickup and review counted
    /// for the change, deploy for the deployment that first shipped it (so that it moves with
    /// the shipped set), all with the change's labels.
    fn stages(&mut self, sorted: &[&Summary]) {
        for s in sorted.iter().filter(|s| s.kind == Kind::Change) {
            for (i, g) in s.gens.iter().enumerate() {
                if g.result != Some(WorkResult::Merged) {
                    continue;
                }
                let (Some(opened), Some(merged)) = (g.start, g.end) else {
                    continue;
                };
                let me = GenRef {
                    key: s.key.clone(),
                    gen: i as u32,
                };
                let deploy = self.shipped_first.get(&me).cloned();
                let times = ChangeTimes {
                    opened,
                    merged,
                    first_commit: self.out.first_commit.get(&me).copied(),
                    steps: &g.steps,
                    deployed: deploy.as_ref().map(|(end, _)| *end),
                };
                let found = stages::stages(&times);
                for stage in &found {
                    let mut labels = g.labels.clone();
                    labels.insert(attr::CHANGE_STAGE.into(), stage.name.as_str().into());
                    let owner = match (&deploy, stage.name) {
                        (Some((_, d)), StageName::Deploy) => d.key.clone(),
                        _ => s.key.clone(),
                    };
                    self.contribute(&owner, metrics::STAGE_DURATION, labels, stage.millis());
                }
                if let Some((_, d)) = deploy {
                    self.out.first_deploy.insert(me.clone(), d);
                }
                if !found.is_empty() {
                    self.out.stages.insert(me, found);
                }
            }
        }
    }

    /// Incidents: each follows the latest successful production deployment before it began
    /// (within `VALUESTREAM_INCIDENT_WINDOW_SECS`) unless it names its parent; its time to
    /// restore is labelled with that deployment's environment.
    fn incidents(&mut self, sorted: &[&Summary], idx: &Index<'_>) {
        let window = TimeDelta::seconds(self.config.incident_window_secs);
        for s in sorted.iter().filter(|s| s.kind == Kind::Incident) {
            let Some(g0) = s.gens.first() else { continue };
            let Some(start) = g0.start else { continue };
            let named = s.parents.iter().any(|p| match p {
                ParentRef::Item(_) => true,
                p => idx.resolve(p, Some(start)).is_some(),
            });
            let cause = if named {
                None
            } else {
                self.prod_successes
                    .iter()
                    .rev()
                    .find(|(end, _, _)| *end <= start && *end >= start - window)
                    .cloned()
            };
            if let Some((_, dep, env)) = cause {
                if let Some(ds) = idx.items.get(dep.key.as_str()) {
                    if let Some(dg) = ds.gens.get(dep.gen as usize) {
                        self.failure_labels
                            .entry(dep.key.clone())
                            .or_insert_with(|| change_failure_labels(ds, dg, &env));
                    }
                }
                let last_end = s.gens.last().and_then(|g| g.end);
                self.incident_windows
                    .entry(env.to_ascii_lowercase())
                    .or_default()
                    .push((start, last_end));
                self.out.causes.insert(
                    s.key.clone(),
                    Cause {
                        deployment: dep,
                        environment: env,
                    },
                );
            }
            for g in s.gens.iter() {
                let Some(end) = g.end else { continue };
                let mut labels = g.labels.clone();
                if let Some(c) = self.out.causes.get(&s.key) {
                    labels.insert(
                        attr::DEPLOYMENT_ENVIRONMENT_NAME.into(),
                        c.environment.clone(),
                    );
                }
                let restore = ms(end - g.start.unwrap_or(end));
                self.contribute(&s.key, metrics::TIME_TO_RESTORE, labels, restore);
            }
        }
    }

    /// The rework rule, once failed states and incidents are known: each finished production
    /// deployment is rework for the first [`ReworkReason`] that holds, counted in
    /// `valuestream.deployment.rework` with the labels of its `valuestream.deployments` count
    /// and the reason.
    fn rework(&mut self, idx: &Index<'_>) {
        let config = self.config;
        let pattern = &config.rework_pattern;
        let fixes = |c: &GenRef| {
            idx.items
                .get(c.key.as_str())
                .and_then(|s| s.gens.get(c.gen as usize))
                .is_some_and(|g| {
                    g.title.as_deref().is_some_and(|t| pattern.is_match(t))
                        || g.change_labels.iter().any(|l| pattern.is_match(l))
                })
        };
        for p in std::mem::take(&mut self.prod_deploys) {
            let open_in = |windows: &BTreeMap<String, Vec<Window>>| {
                windows
                    .get(&p.environment)
                    .is_some_and(|ws| ws.iter().any(|w| within(p.start, *w)))
            };
            let reason = if open_in(&self.failed_states) {
                Some(ReworkReason::FailedState)
            } else if open_in(&self.incident_windows) {
                Some(ReworkReason::Incident)
            } else if self
                .out
                .deploys
                .get(&p.me)
                .is_some_and(|i| i.shipped.iter().any(fixes))
            {
                Some(ReworkReason::FixChange)
            } else {
                None
            };
            let Some(reason) = reason else { continue };
            if let Some(info) = self.out.deploys.get_mut(&p.me) {
                info.rework = Some(reason);
            }
            let mut labels = p.counted;
            labels.insert(
                attr::DEPLOYMENT_REWORK_REASON.into(),
                reason.as_str().into(),
            );
            self.contribute(&p.me.key, metrics::REWORK, labels, 1);
        }
    }

    /// A production deployment that led to a failure counts once, however many followed it;
    /// every item's contributions are summed per series.
    fn finish(mut self) -> Derived {
        for (owner, labels) in std::mem::take(&mut self.failure_labels) {
            self.contribute(&owner, metrics::CHANGE_FAILURES, labels, 1);
        }
        for (owner, contributions) in std::mem::take(&mut self.contributions) {
            self.out.contributions.insert(owner, tally(&contributions));
        }
        self.out
    }
}

fn change_failure_labels(s: &Summary, g: &GenSummary, environment: &str) -> Labels {
    let mut labels = g.labels.clone();
    labels.insert(attr::SOURCE.into(), s.source.clone());
    labels.insert(
        attr::DEPLOYMENT_ENVIRONMENT_NAME.into(),
        environment.to_string(),
    );
    labels
}

/// The duration series of a finished span and its labels.
fn duration_series(s: &Summary, g: &GenSummary) -> (&'static str, Labels) {
    let mut labels = g.labels.clone();
    let result = g
        .result
        .map_or_else(|| UNKNOWN.to_string(), |r| r.as_str().to_string());
    let name = match s.kind {
        Kind::Issue => metrics::ISSUE_DURATION,
        Kind::Change => metrics::CHANGE_DURATION,
        Kind::PipelineRun => {
            if let Some(p) = &g.pipeline {
                labels.insert(attr::CICD_PIPELINE_NAME.into(), p.clone());
            }
            labels.insert(attr::CICD_PIPELINE_RESULT.into(), result.clone());
            metrics::RUN_DURATION
        }
        Kind::Task => {
            if let Some(p) = &g.pipeline {
                labels.insert(attr::CICD_PIPELINE_NAME.into(), p.clone());
            }
            metrics::TASK_DURATION
        }
        Kind::Deployment => {
            let env = g.environment.clone().unwrap_or_else(|| "unknown".into());
            labels.insert(attr::DEPLOYMENT_ENVIRONMENT_NAME.into(), env);
            metrics::DEPLOYMENT_DURATION
        }
        Kind::Incident => metrics::INCIDENT_DURATION,
    };
    labels.insert(attr::RESULT.into(), result);
    (name, labels)
}

#[cfg(test)]
mod tally_tests {
    use super::*;
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

/// The rework rule's known answers (docs/metrics.md "Deployment rework rate"): one scope, one
/// repository, deployments to `production` (and `staging`), times in minutes.
#[cfg(test)]
mod rework_tests {
    use super::*;

    fn at(min: i64) -> Time {
        "2024-06-03T10:00:00Z".parse::<Time>().unwrap() + TimeDelta::minutes(min)
    }

    fn gen(start: i64, end: Option<i64>) -> GenSummary {
        GenSummary {
            start: Some(at(start)),
            end: end.map(at),
            result: None,
            error: false,
            merge_sha: None,
            head_sha: None,
            environment: None,
            labels: base_labels("github", Some(&Repo::new("o/r")), &RepoTraits::default()),
            pipeline: None,
            title: None,
            change_labels: Vec::new(),
            steps: Vec::new(),
        }
    }

    fn summary(key: &str, kind: Kind, g: GenSummary) -> Summary {
        Summary {
            key: key.into(),
            source: "github".into(),
            kind,
            gens: vec![g],
            parents: Vec::new(),
            follows: Vec::new(),
            head_shas: Vec::new(),
            head_branch: None,
            touched: at(0),
            exported: Vec::new(),
            deploy_staged: Vec::new(),
            ledger: None,
            tally: None,
        }
    }

    /// A deployment from `start` to `end`; `ok` false: it failed.
    fn deploy(key: &str, env: &str, start: i64, end: i64, ok: bool) -> Summary {
        let mut g = gen(start, Some(end));
        g.environment = Some(env.into());
        g.result = Some(if ok {
            WorkResult::Success
        } else {
            WorkResult::Failure
        });
        g.error = !ok;
        summary(key, Kind::Deployment, g)
    }

    /// A change merged at `merged`, with its title and labels.
    fn change(key: &str, merged: i64, title: &str, labels: &[&str]) -> Summary {
        let mut g = gen(merged - 60, Some(merged));
        g.result = Some(WorkResult::Merged);
        g.title = Some(title.into());
        g.change_labels = labels.iter().map(|l| l.to_string()).collect();
        summary(key, Kind::Change, g)
    }

    fn incident(key: &str, start: i64, end: Option<i64>) -> Summary {
        let mut g = gen(start, end);
        if end.is_some() {
            g.result = Some(WorkResult::Resolved);
        }
        summary(key, Kind::Incident, g)
    }

    fn reasons(
        summaries: &[Summary],
        pairs: &[(&str, &str)],
    ) -> BTreeMap<String, Option<&'static str>> {
        let config = Config::from_pairs(pairs).unwrap();
        let d = derive(summaries, &[], &config);
        let mut out = BTreeMap::new();
        for (gr, info) in &d.deploys {
            let reason = info.rework.map(ReworkReason::as_str);
            // The counter holds exactly the rework deployments, once, under their reason.
            let counted: Vec<&Tally> = d
                .contributions
                .get(&gr.key)
                .into_iter()
                .flatten()
                .filter(|t| t.name == metrics::REWORK)
                .collect();
            match reason {
                Some(r) => {
                    assert_eq!(counted.len(), 1, "{gr:?}");
                    assert_eq!(counted[0].count, 1);
                    assert_eq!(counted[0].labels[attr::DEPLOYMENT_REWORK_REASON], r);
                    assert_eq!(counted[0].labels[attr::PRODUCTION], "true");
                }
                None => assert!(counted.is_empty(), "{gr:?}: {counted:?}"),
            }
            out.insert(gr.key.clone(), reason);
        }
        out
    }

    struct Case {
        name: &'static str,
        items: Vec<Summary>,
        config: Vec<(&'static str, &'static str)>,
        /// Deployment key → its rework reason.
        want: Vec<(&'static str, Option<&'static str>)>,
    }

    fn cases() -> Vec<Case> {
        let fs = Some("failed_state");
        let inc = Some("incident");
        let fix = Some("fix_change");
        vec![
            Case {
                name: "a planned deployment is not rework",
                items: vec![deploy("d1", "production", 0, 5, true)],
                config: vec![],
                want: vec![("d1", None)],
            },
            Case {
                name: "failed deploy, then the fixing deploy: the fixing one is rework",
                items: vec![
                    deploy("d1", "production", 0, 5, false),
                    deploy("d2", "production", 10, 20, true),
                    deploy("d3", "production", 30, 35, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", fs), ("d3", None)],
            },
            Case {
                name: "every deployment until the recovery is rework, failed ones too",
                items: vec![
                    deploy("d1", "production", 0, 5, false),
                    deploy("d2", "production", 6, 8, false),
                    deploy("d3", "production", 10, 20, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", fs), ("d3", fs)],
            },
            Case {
                name: "a deployment started before the failure is not rework",
                items: vec![
                    deploy("d1", "production", 0, 5, false),
                    deploy("d2", "production", 2, 20, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", None)],
            },
            Case {
                name: "a deployment started during a failed state that another recovered is rework",
                items: vec![
                    deploy("d1", "production", 0, 5, false),
                    deploy("d2", "production", 8, 30, true),
                    deploy("d3", "production", 6, 10, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", fs), ("d3", fs)],
            },
            Case {
                name: "staging failures and deployments are not production rework",
                items: vec![
                    deploy("s1", "staging", 0, 5, false),
                    deploy("s2", "staging", 10, 20, true),
                    deploy("d1", "production", 10, 20, true),
                ],
                config: vec![],
                want: vec![("s1", None), ("s2", None), ("d1", None)],
            },
            Case {
                name: "an incident, then a hotfix deploy while it is open",
                items: vec![
                    deploy("d1", "production", 0, 5, true),
                    incident("i1", 10, Some(60)),
                    deploy("d2", "production", 30, 40, true),
                    deploy("d3", "production", 70, 80, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", inc), ("d3", None)],
            },
            Case {
                name: "an incident still open makes every later deployment rework",
                items: vec![
                    deploy("d1", "production", 0, 5, true),
                    incident("i1", 10, None),
                    deploy("d2", "production", 300, 310, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", inc)],
            },
            Case {
                name: "an incident that followed no deployment makes nothing rework",
                items: vec![
                    incident("i1", 0, Some(60)),
                    deploy("d1", "production", 30, 40, true),
                ],
                config: vec![],
                want: vec![("d1", None)],
            },
            Case {
                name: "a revert, a hotfix title and a hotfix label are fix changes",
                items: vec![
                    change("c1", -30, "Revert \"Add the cache\"", &[]),
                    deploy("d1", "production", 0, 5, true),
                    change("c2", 10, "HOTFIX: null check", &[]),
                    deploy("d2", "production", 20, 25, true),
                    change("c3", 30, "Null check", &["bug", "hotfix"]),
                    deploy("d3", "production", 40, 45, true),
                    change("c4", 50, "Prevent reversed lists; hotfixes later", &[]),
                    deploy("d4", "production", 60, 65, true),
                ],
                config: vec![],
                want: vec![("d1", fix), ("d2", fix), ("d3", fix), ("d4", None)],
            },
            Case {
                name: "a failed state wins over a fix change",
                items: vec![
                    deploy("d1", "production", 0, 5, false),
                    change("c1", 6, "Revert \"Add the cache\"", &[]),
                    deploy("d2", "production", 10, 20, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", fs)],
            },
            Case {
                name: "the pattern is configurable",
                items: vec![
                    change("c1", -30, "Rollback the cache", &[]),
                    deploy("d1", "production", 0, 5, true),
                    change("c2", 10, "Hotfix the cache", &[]),
                    deploy("d2", "production", 20, 25, true),
                ],
                config: vec![("VALUESTREAM_REWORK_PATTERN", "^rollback")],
                want: vec![("d1", fix), ("d2", None)],
            },
        ]
    }

    #[test]
    fn stages_are_counted_for_the_change_and_the_deployment_that_first_shipped_it() {
        use crate::model::{ChangeStep, ReviewState, ReviewerKind};
        let mut c = change("c1", 60, "Add the cache", &[]);
        c.gens[0].steps = vec![ChangeStep::review(
            at(20),
            ReviewState::Approved,
            ReviewerKind::Human,
        )];
        let items = vec![
            c,
            deploy("s1", "staging", 65, 68, true),
            deploy("d1", "production", 70, 90, true),
            deploy("d2", "production", 100, 120, true),
        ];
        let config = Config::from_pairs(&[]).unwrap();
        let d = derive(&items, &[], &config);
        let me = GenRef {
            key: "c1".into(),
            gen: 0,
        };
        let got: Vec<(&str, Time, Time)> = d.stages[&me]
            .iter()
            .map(|s| (s.name.as_str(), s.start, s.end))
            .collect();
        assert_eq!(
            got,
            [
                ("pickup", at(0), at(20)),
                ("review", at(20), at(60)),
                ("deploy", at(60), at(90)),
            ]
        );
        assert_eq!(d.first_deploy[&me].key, "d1", "staging does not count");
        let stage_tallies = |owner: &str| -> Vec<(String, i64, i64)> {
            d.contributions
                .get(owner)
                .into_iter()
                .flatten()
                .filter(|t| t.name == metrics::STAGE_DURATION)
                .map(|t| (t.labels[attr::CHANGE_STAGE].clone(), t.count, t.sum_ms))
                .collect()
        };
        assert_eq!(
            stage_tallies("c1"),
            [
                ("pickup".to_string(), 1, 20 * 60_000),
                ("review".to_string(), 1, 40 * 60_000)
            ]
        );
        assert_eq!(
            stage_tallies("d1"),
            [("deploy".to_string(), 1, 30 * 60_000)]
        );
        assert!(stage_tallies("d2").is_empty() && stage_tallies("s1").is_empty());
    }

    #[test]
    fn a_reopened_change_has_the_stages_of_its_merged_generation() {
        use crate::model::{ChangeStep, ReviewState, ReviewerKind};
        let review = |m| ChangeStep::review(at(m), ReviewState::Commented, ReviewerKind::Human);
        // Opened at 0, closed unmerged at 30 (reviewed at 20), reopened at 60, reviewed at 70,
        // merged at 100.
        let mut first = gen(0, Some(30));
        first.result = Some(WorkResult::Closed);
        first.steps = vec![review(20)];
        let mut second = gen(60, Some(100));
        second.result = Some(WorkResult::Merged);
        second.steps = vec![review(70)];
        let mut c = summary("c1", Kind::Change, first);
        c.gens.push(second);
        let config = Config::from_pairs(&[]).unwrap();
        let d = derive(&[c], &[], &config);
        let of = |gen| {
            d.stages
                .get(&GenRef {
                    key: "c1".into(),
                    gen,
                })
                .map(|v| {
                    v.iter()
                        .map(|s| (s.name.as_str(), s.start, s.end))
                        .collect::<Vec<_>>()
                })
        };
        assert_eq!(of(0), None, "a generation closed unmerged has no stages");
        assert_eq!(
            of(1),
            Some(vec![
                ("pickup", at(60), at(70)),
                ("review", at(70), at(100))
            ])
        );
    }

    #[test]
    fn rework_known_answers() {
        for c in cases() {
            let got = reasons(&c.items, &c.config);
            let want: BTreeMap<String, Option<&str>> =
                c.want.iter().map(|(k, r)| (k.to_string(), *r)).collect();
            assert_eq!(got, want, "{}", c.name);
        }
    }

    #[test]
    fn rework_is_the_same_whatever_the_order_of_the_summaries() {
        for c in cases() {
            let mut items = c.items.clone();
            let want = reasons(&items, &c.config);
            items.reverse();
            assert_eq!(reasons(&items, &c.config), want, "{}", c.name);
        }
    }
}
