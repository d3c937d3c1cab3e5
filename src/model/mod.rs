//! The normalized model: the vendor-free vocabulary that sources translate into and the engine
//! consumes. Nothing here knows a vendor; vendor facts arrive only as attribute values.

pub mod attr;
pub mod ids;
pub mod refs;
pub mod repo_traits;
pub mod series;
pub mod time;
pub mod timestamp;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type Time = DateTime<Utc>;

/// An attribute value, as OpenTelemetry knows them. Written as the plain JSON value; read back
/// by the JSON type it has (see the `Deserialize` below).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AttrValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    StrList(Vec<String>),
}

/// By the value's own JSON type, in one pass. (`#[serde(untagged)]` would buffer the value and
/// try each variant in turn, formatting an error message for every miss: three for each string
/// attribute of each stored fact, read on every delivery.) A whole number beyond `i64` is a
/// float, a list must hold strings only, as before.
impl<'de> Deserialize<'de> for AttrValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AttrValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a boolean, a number, a string or a list of strings")
            }
            fn visit_bool<E>(self, v: bool) -> Result<AttrValue, E> {
                Ok(AttrValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<AttrValue, E> {
                Ok(AttrValue::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<AttrValue, E> {
                Ok(i64::try_from(v).map_or(AttrValue::Float(v as f64), AttrValue::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<AttrValue, E> {
                Ok(AttrValue::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<AttrValue, E> {
                Ok(AttrValue::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<AttrValue, E> {
                Ok(AttrValue::Str(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<AttrValue, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(AttrValue::StrList(out))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl AttrValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for AttrValue {
    fn from(s: &str) -> Self {
        AttrValue::Str(s.to_string())
    }
}
impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(s)
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}
impl From<Vec<String>> for AttrValue {
    fn from(v: Vec<String>) -> Self {
        AttrValue::StrList(v)
    }
}

pub type Attrs = BTreeMap<String, AttrValue>;

/// Sets `key` when `value` is `Some` and not an empty string.
pub fn set_opt<V: Into<AttrValue>>(attrs: &mut Attrs, key: &str, value: Option<V>) {
    match value.map(Into::into) {
        Some(AttrValue::Str(s)) if s.is_empty() => {}
        Some(v) => {
            attrs.insert(key.to_string(), v);
        }
        None => {}
    }
}

/// The five kinds of work item, plus the tasks (jobs) inside a pipeline run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Issue,
    Change,
    PipelineRun,
    Task,
    Deployment,
    Incident,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Issue => "issue",
            Kind::Change => "change",
            Kind::PipelineRun => "pipeline_run",
            Kind::Task => "task",
            Kind::Deployment => "deployment",
            Kind::Incident => "incident",
        }
    }
    pub const ALL: [Kind; 6] = [
        Kind::Issue,
        Kind::Change,
        Kind::PipelineRun,
        Kind::Task,
        Kind::Deployment,
        Kind::Incident,
    ];
}

/// What a delivery says happened to a work item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The item started (or was seen for the first time).
    Open,
    /// The item changed but goes on (labels, draft state, acknowledgement…).
    Update,
    /// The item ended: its span is finished and exported.
    Close,
}

/// How a work item ended, in one vocabulary for every source: `merged`/`closed` for changes and
/// issues (`not_planned`, `deleted` when the tracker says so), the `cicd.pipeline.result` values for runs,
/// tasks and deployments, `resolved` for incidents. Serialized (and exported) as its snake-case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkResult {
    Success,
    Failure,
    Error,
    Timeout,
    Cancellation,
    Skip,
    Merged,
    Closed,
    /// An issue closed as not planned (GitHub `state_reason`).
    NotPlanned,
    /// An issue deleted in its tracker (Jira).
    Deleted,
    Resolved,
}

impl WorkResult {
    pub const ALL: [WorkResult; 11] = [
        WorkResult::Success,
        WorkResult::Failure,
        WorkResult::Error,
        WorkResult::Timeout,
        WorkResult::Cancellation,
        WorkResult::Skip,
        WorkResult::Merged,
        WorkResult::Closed,
        WorkResult::NotPlanned,
        WorkResult::Deleted,
        WorkResult::Resolved,
    ];

    /// The exported value (`cicd.pipeline.result`, `valuestream.result`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkResult::Success => "success",
            WorkResult::Failure => "failure",
            WorkResult::Error => "error",
            WorkResult::Timeout => "timeout",
            WorkResult::Cancellation => "cancellation",
            WorkResult::Skip => "skip",
            WorkResult::Merged => "merged",
            WorkResult::Closed => "closed",
            WorkResult::NotPlanned => "not_planned",
            WorkResult::Deleted => "deleted",
            WorkResult::Resolved => "resolved",
        }
    }
}

impl std::fmt::Display for WorkResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<WorkResult> for AttrValue {
    fn from(r: WorkResult) -> Self {
        AttrValue::Str(r.as_str().to_string())
    }
}

/// How a work item ended (a closing [`WorkEvent`]'s `outcome`): its result, and whether its
/// span's status is an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ending {
    pub result: WorkResult,
    /// Whether the span's status is an error (failed run, failed deployment…).
    pub error: bool,
}

impl Ending {
    pub fn ok(result: WorkResult) -> Self {
        Ending {
            result,
            error: false,
        }
    }
    pub fn failed(result: WorkResult) -> Self {
        Ending {
            result,
            error: true,
        }
    }
}

/// A vendor-neutral repository identity: `owner/name` (GitLab: `group/sub/name`), compared in
/// lower case so that every source that names the repository finds the same indexes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Repo(pub String);

impl Repo {
    pub fn new(full_name: &str) -> Self {
        Repo(full_name.trim_matches('/').to_ascii_lowercase())
    }
    /// The last path segment (the name a `vstrace-` reference carries).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
    /// Everything before the name (`owner`, or `group/sub`).
    pub fn owner(&self) -> &str {
        self.0.rsplit_once('/').map(|(o, _)| o).unwrap_or_default()
    }
    /// Parses `https://host/owner/repo(.git)` or `git@host:owner/repo.git`.
    pub fn from_url(url: &str) -> Option<Self> {
        let s = url.trim().trim_end_matches('/').trim_end_matches(".git");
        let path = if let Some(rest) = s.split_once("://").map(|(_, r)| r) {
            rest.split_once('/').map(|(_, p)| p)?
        } else if let Some((_, p)) = s.split_once(':') {
            p
        } else {
            return None;
        };
        if path.contains('/') {
            Some(Repo::new(path))
        } else {
            None
        }
    }
}

/// How a child names its parent; the engine resolves the first that it can.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParentRef {
    /// The parent's item key (an issue named by a branch reference, the run of a task…).
    Item(String),
    /// The open change whose head commit is `sha`.
    Sha { repo: Repo, sha: String },
    /// The open change whose head branch is `branch`.
    Branch { repo: Repo, branch: String },
}

/// What the engine knows of the repository a work item belongs to, besides its name: the owning
/// team, the repository's main language, how it is deployed, and the user-defined repository
/// attributes (`VALUESTREAM_REPOSITORY_ATTRIBUTES`). Each becomes a span attribute
/// (`valuestream.team`, `valuestream.language`, `valuestream.deployment.type`,
/// `valuestream.attr.<key>`) and a metric label ([`repo_traits`] bounds their values).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoTraits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_type: Option<String>,
    /// User-defined attributes: full key (`valuestream.attr.<key>`) → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, String>,
}

impl RepoTraits {
    pub fn is_empty(&self) -> bool {
        self.team.is_none()
            && self.language.is_none()
            && self.deployment_type.is_none()
            && self.custom.is_empty()
    }

    /// Whether `key` is the attribute key of a trait.
    pub fn is_key(key: &str) -> bool {
        matches!(key, attr::TEAM | attr::LANGUAGE | attr::DEPLOYMENT_TYPE)
            || key.starts_with(attr::ATTR_PREFIX)
    }

    fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        match key {
            attr::TEAM => Some(&mut self.team),
            attr::LANGUAGE => Some(&mut self.language),
            attr::DEPLOYMENT_TYPE => Some(&mut self.deployment_type),
            _ => None,
        }
    }

    /// Sets the trait of attribute key `key` unless it is already set or `value` is empty;
    /// false when `key` names no trait.
    pub fn set_if_absent(&mut self, key: &str, value: &str) -> bool {
        if value.is_empty() {
            return Self::is_key(key);
        }
        if let Some(slot) = self.slot(key) {
            slot.get_or_insert_with(|| value.to_string());
            true
        } else if key.starts_with(attr::ATTR_PREFIX) {
            self.custom
                .entry(key.to_string())
                .or_insert_with(|| value.to_string());
            true
        } else {
            false
        }
    }

    /// Moves the trait keys out of an attribute map (the events API's sender attributes, and
    /// facts stored before the traits were typed); a value already set wins.
    pub fn take_from(&mut self, attrs: &mut Attrs) {
        attrs.retain(|k, v| match v {
            AttrValue::Str(s) if Self::is_key(k) => {
                self.set_if_absent(k, s);
                false
            }
            _ => true,
        });
    }

    /// Every trait as (attribute key, value), in key order.
    pub fn entries(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = [
            (attr::TEAM, &self.team),
            (attr::LANGUAGE, &self.language),
            (attr::DEPLOYMENT_TYPE, &self.deployment_type),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .chain(self.custom.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
        out.sort();
        out
    }

    /// Every trait's value, mutably (to bound it to its allow-list), with its attribute key.
    pub fn values_mut(&mut self) -> Vec<(&str, &mut String)> {
        let mut out: Vec<(&str, &mut String)> = Vec::new();
        for (k, v) in [
            (attr::TEAM, &mut self.team),
            (attr::LANGUAGE, &mut self.language),
            (attr::DEPLOYMENT_TYPE, &mut self.deployment_type),
        ] {
            if let Some(v) = v.as_mut() {
                out.push((k, v));
            }
        }
        out.extend(self.custom.iter_mut().map(|(k, v)| (k.as_str(), v)));
        out
    }

    /// Folds a later fact's traits over these: a trait the later fact sets wins.
    pub fn fold(&mut self, later: &RepoTraits) {
        for (mine, theirs) in [
            (&mut self.team, &later.team),
            (&mut self.language, &later.language),
            (&mut self.deployment_type, &later.deployment_type),
        ] {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
        self.custom
            .extend(later.custom.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

/// A point-in-time event on a span (a status transition, an acknowledgement…).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    pub name: String,
    pub time: Time,
    #[serde(default)]
    pub attributes: Attrs,
}

/// A change's step on its way to merge, with the payload's time: what the stage rule reads
/// (docs/metrics.md "Change stages"). Kinds of reviewer, never names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChangeStep {
    pub time: Time,
    pub kind: StepKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<ReviewerKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Opened as, or converted to, a draft.
    Draft,
    /// Marked ready for review.
    Ready,
    ReviewRequested,
    Review,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    Approved,
    ChangesRequested,
    Commented,
}

/// Who reviewed: a person other than the author, a bot, or the change's author.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewerKind {
    Human,
    Bot,
    Author,
}

impl ReviewState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Approved => "approved",
            ReviewState::ChangesRequested => "changes_requested",
            ReviewState::Commented => "commented",
        }
    }
}

impl ReviewerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewerKind::Human => "human",
            ReviewerKind::Bot => "bot",
            ReviewerKind::Author => "author",
        }
    }
}

impl ChangeStep {
    pub fn new(kind: StepKind, time: Time) -> Self {
        ChangeStep {
            time,
            kind,
            review: None,
            reviewer: None,
        }
    }

    pub fn review(time: Time, state: ReviewState, reviewer: ReviewerKind) -> Self {
        ChangeStep {
            time,
            kind: StepKind::Review,
            review: Some(state),
            reviewer: Some(reviewer),
        }
    }

    /// The span event that shows the step on the change's span.
    pub fn span_event(&self) -> SpanEvent {
        let name = match self.kind {
            StepKind::Draft => "converted to draft",
            StepKind::Ready => "ready for review",
            StepKind::ReviewRequested => "review requested",
            StepKind::Review => "review submitted",
        };
        let mut attributes = Attrs::new();
        if let Some(state) = self.review {
            attributes.insert(attr::REVIEW_STATE.into(), state.as_str().into());
        }
        if let Some(who) = self.reviewer {
            attributes.insert(attr::REVIEWER_KIND.into(), who.as_str().into());
        }
        SpanEvent {
            name: name.into(),
            time: self.time,
            attributes,
        }
    }
}

/// One thing a delivery says about one work item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkEvent {
    pub kind: Kind,
    /// Stable key, e.g. `github/issue/codertocat/hello-world/1` (see [`ids::item_key`]).
    pub key: String,
    /// Span name, e.g. `ISSUE #1 Spelling error in the README file`.
    pub name: String,
    pub action: Action,
    /// For `Open`: this is a reopening; a closed item starts a new span linked to the last.
    #[serde(default)]
    pub reopened: bool,
    /// When the item started (payload time). For a reopening, when it was reopened.
    pub start: Option<Time>,
    /// When the item ended (payload time); required for `Close`.
    pub end: Option<Time>,
    pub outcome: Option<Ending>,
    pub attributes: Attrs,
    /// Parent candidates, best first.
    #[serde(default)]
    pub parents: Vec<ParentRef>,
    /// Items this one follows without being their child (a re-run's previous attempt).
    #[serde(default)]
    pub follows: Vec<String>,
    pub repo: Option<Repo>,
    pub head_branch: Option<String>,
    pub head_sha: Option<String>,
    /// The commit a merged change landed as.
    pub merge_sha: Option<String>,
    /// Deployments: the target environment.
    pub environment: Option<String>,
    /// The repository's team, language, deployment type and user-defined attributes.
    #[serde(default, skip_serializing_if = "RepoTraits::is_empty")]
    pub traits: RepoTraits,
    /// Runs and tasks: the pipeline's name (`cicd.pipeline.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Changes: the title, which the rework rule reads (docs/metrics.md "Deployment rework
    /// rate"); the span shows it as `vcs.change.title`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_title: Option<String>,
    /// Changes: the labels, which the rework rule reads (`valuestream.labels` on the span).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub change_labels: Vec<String>,
    /// Changes: drafts, ready for review, review requests and reviews, which the stage rule
    /// reads (docs/metrics.md "Change stages").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<ChangeStep>,
    /// Point-in-time events to add to the span.
    #[serde(default)]
    pub span_events: Vec<SpanEvent>,
    /// When the payload says this event happened (its `updated_at`), where it says so: orders
    /// the facts about one item by event time, never by arrival.
    #[serde(default)]
    pub at: Option<Time>,
    /// How long the item ran, in milliseconds, when the payload says so: the span ends no
    /// earlier than its start (the one the item's facts give, e.g. an opening event's) + this.
    /// Jenkins Notification plugin before 1.12 stamps every phase with the build's start, so
    /// its COMPLETED stamp alone would make a 0-second span.
    #[serde(default)]
    pub duration_ms: Option<i64>,
    /// The payload fields `start` and `end` were read from (`created_at`, `closed_at`…), for
    /// the time rule's refusals ([`time`]); empty when the source does not say. Not stored.
    #[serde(skip)]
    pub time_fields: [&'static str; 2],
}

impl WorkEvent {
    /// Adds as parent candidates the change whose head (or merge) commit is `sha`, then the open
    /// change of `branch`: how runs, builds and deployments find the change they belong to.
    pub fn parent_by_commit(&mut self, repo: &Repo, sha: Option<&str>, branch: Option<&str>) {
        if let Some(sha) = sha {
            self.parents.push(ParentRef::Sha {
                repo: repo.clone(),
                sha: sha.to_string(),
            });
        }
        if let Some(branch) = branch {
            self.parents.push(ParentRef::Branch {
                repo: repo.clone(),
                branch: branch.to_string(),
            });
        }
    }

    /// Span times of an issue-like item (issue, pull/merge request) from its payload: it starts
    /// when it was created, or, when reopened, at the reopening (its last update); when it closes
    /// it ends at `ended` (closed, merged), else at its last update.
    /// (GitHub and GitLab name the fields alike: `created_at`, `updated_at`, `closed_at`,
    /// `merged_at`.)
    pub fn set_times(&mut self, created: Time, updated: Option<Time>, ended: Option<Time>) {
        let (start, start_field) = match updated {
            Some(u) if self.reopened => (u, "updated_at"),
            _ => (created, "created_at"),
        };
        self.start = Some(start);
        self.time_fields[0] = start_field;
        if self.action == Action::Close {
            let (end, end_field) = match (ended, updated) {
                (Some(e), _) => (e, "closed_at/merged_at"),
                (None, Some(u)) => (u, "updated_at"),
                (None, None) => (created, "created_at"),
            };
            self.end = Some(end);
            self.time_fields[1] = end_field;
        }
        self.at = updated;
    }

    /// Records a change's step, and shows it as a span event.
    pub fn add_step(&mut self, step: ChangeStep) {
        self.span_events.push(step.span_event());
        self.steps.push(step);
    }

    /// Sets the pipeline name, unless `name` is empty.
    pub fn set_pipeline(&mut self, name: Option<String>) {
        self.pipeline = name.filter(|n| !n.is_empty());
    }

    /// Moves typed values that facts stored before they were typed kept as attributes
    /// (`valuestream.team`…, `cicd.pipeline.name`) into their fields.
    pub fn upgrade_stored(&mut self) {
        self.traits.take_from(&mut self.attributes);
        if self.pipeline.is_none() {
            if let Some(AttrValue::Str(p)) = self.attributes.remove(attr::CICD_PIPELINE_NAME) {
                self.pipeline = Some(p);
            }
        }
        if self.repo.is_some() {
            self.attributes.remove(attr::REPOSITORY);
        }
    }

    pub fn new(kind: Kind, key: String, name: String, action: Action) -> Self {
        WorkEvent {
            kind,
            key,
            name,
            action,
            reopened: false,
            start: None,
            end: None,
            outcome: None,
            attributes: Attrs::new(),
            parents: Vec::new(),
            follows: Vec::new(),
            repo: None,
            head_branch: None,
            head_sha: None,
            merge_sha: None,
            environment: None,
            traits: RepoTraits::default(),
            pipeline: None,
            change_title: None,
            change_labels: Vec::new(),
            steps: Vec::new(),
            span_events: Vec::new(),
            at: None,
            duration_ms: None,
            time_fields: ["", ""],
        }
    }
}

/// A commit that reached a branch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub sha: String,
    pub time: Time,
    #[serde(default)]
    pub message: String,
    /// The commit merges a change (a pull/merge request): the source knows the messages its
    /// vendor writes for merge and squash commits.
    #[serde(default)]
    pub merges: bool,
}

/// A push: commits that reached a branch, recorded for lead time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Push {
    pub repo: Repo,
    pub branch: String,
    /// Whether `branch` is the repository's default branch (where changes land).
    pub to_default_branch: bool,
    pub before: Option<String>,
    pub after: String,
    /// When the push happened (the head commit's time when the payload has no other).
    pub time: Time,
    pub commits: Vec<Commit>,
    pub attributes: Attrs,
}

/// What a source translates a delivery into.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// A delivery yields a handful of inputs, moved rarely: boxing the work event would only churn
// every match on it.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    Work(WorkEvent),
    Push(Push),
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// A finished span, ready to export.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinishedSpan {
    /// The source system: the span's `service.name`.
    pub source: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: Kind,
    pub start: Time,
    pub end: Time,
    pub attributes: Attrs,
    pub events: Vec<SpanEvent>,
    pub links: Vec<SpanLink>,
    /// Links left out past the link limit (OTLP's `dropped_links_count`).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub dropped_links: u32,
    pub error: bool,
    pub status_message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpanLink {
    pub trace_id: String,
    pub span_id: String,
    #[serde(default)]
    pub attributes: Attrs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values_read_back_as_the_variant_they_were_written_as() {
        let values = [
            AttrValue::Bool(true),
            AttrValue::Int(-3),
            AttrValue::Int(i64::MAX),
            AttrValue::Float(2.5),
            AttrValue::Float(1.0),
            AttrValue::Str("é \"quoted\"".into()),
            AttrValue::Str("42".into()),
            AttrValue::StrList(vec!["a".into(), "b".into()]),
            AttrValue::StrList(vec![]),
        ];
        for v in values {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(
                serde_json::from_str::<AttrValue>(&json).unwrap(),
                v,
                "{json}"
            );
        }
        assert_eq!(
            serde_json::from_str::<AttrValue>("18446744073709551615").unwrap(),
            AttrValue::Float(u64::MAX as f64),
            "beyond i64 a whole number is a float"
        );
        for bad in ["null", "{\"a\": 1}", "[1, 2]", "[\"a\", true]"] {
            assert!(serde_json::from_str::<AttrValue>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn results_serialize_as_their_exported_names() {
        for r in WorkResult::ALL {
            let json = serde_json::to_value(r).unwrap();
            assert_eq!(json, serde_json::Value::String(r.as_str().into()));
            assert_eq!(serde_json::from_value::<WorkResult>(json).unwrap(), r);
            assert_eq!(AttrValue::from(r), AttrValue::Str(r.to_string()));
        }
        assert!(serde_json::from_str::<WorkResult>("\"succeeded\"").is_err());
    }

    #[test]
    fn traits_come_out_of_attributes_and_fold_later_wins() {
        let mut a = Attrs::new();
        a.insert(attr::LANGUAGE.into(), "Python".into());
        a.insert(attr::TEAM.into(), "Payments".into());
        a.insert("valuestream.attr.tier".into(), "Gold".into());
        a.insert("valuestream.attr.n".into(), AttrValue::Int(3));
        a.insert(attr::VCS_REPOSITORY_NAME.into(), "api".into());
        let mut t = RepoTraits {
            team: Some("platform".into()),
            ..Default::default()
        };
        t.take_from(&mut a);
        assert_eq!(
            t.entries(),
            [
                ("valuestream.attr.tier", "Gold"),
                (attr::LANGUAGE, "Python"),
                (attr::TEAM, "platform"),
            ],
            "a value already set wins; entries in key order"
        );
        assert_eq!(
            a.keys().map(String::as_str).collect::<Vec<_>>(),
            ["valuestream.attr.n", attr::VCS_REPOSITORY_NAME],
            "non-trait keys and non-string values stay attributes"
        );
        let mut later = RepoTraits::default();
        later.set_if_absent(attr::TEAM, "ops");
        later.set_if_absent(attr::DEPLOYMENT_TYPE, "");
        assert!(!later.set_if_absent(attr::URL_FULL, "x"));
        t.fold(&later);
        assert_eq!(t.team.as_deref(), Some("ops"));
        assert_eq!(
            t.language.as_deref(),
            Some("Python"),
            "absent in the later fact: kept"
        );
        assert_eq!(t.deployment_type, None);
    }

    #[test]
    fn stored_events_with_traits_as_attributes_are_upgraded() {
        let mut w = WorkEvent::new(Kind::PipelineRun, "k".into(), "n".into(), Action::Close);
        w.repo = Some(Repo::new("acme/api"));
        w.attributes
            .insert(attr::REPOSITORY.into(), "acme/api".into());
        w.attributes.insert(attr::TEAM.into(), "payments".into());
        w.attributes
            .insert(attr::CICD_PIPELINE_NAME.into(), "ci".into());
        w.upgrade_stored();
        assert!(w.attributes.is_empty());
        assert_eq!(w.traits.team.as_deref(), Some("payments"));
        assert_eq!(w.pipeline.as_deref(), Some("ci"));
        let fresh = WorkEvent::new(Kind::Issue, "k".into(), "n".into(), Action::Open);
        let json = serde_json::to_value(&fresh).unwrap();
        assert!(
            json.get("traits").is_none() && json.get("pipeline").is_none(),
            "events without them serialize as before (fact hashes unchanged)"
        );
    }
}
