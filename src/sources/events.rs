//! The generic events API (`POST /webhooks/events`) for any tool without a source of its own:
//! Argo CD, Spinnaker, a deploy script, another incident tool, a code-review tool (Gerrit,
//! Bitbucket, Azure Repos) reporting its changes and their steps. One small JSON event per request,
//! published as `schemas/events.schema.json`; authenticated by `Authorization: Bearer <token>` or
//! `X-Valuestream-Signature: sha256=<HMAC-SHA256 of the body under the token>`.
//!
//! Every field is checked here by hand (not by serde) so that a 400 always names the field that
//! is wrong. Unknown fields are refused: a typo such as `finshed_at` would otherwise silently
//! leave a deployment open.

use super::vcs;
use super::{
    authenticate_with, no_options, signing_secret, verify, Delivery, Setting, Source, SourceEntry,
    SourceError, Translated, Translation, UniqueJson,
};
use crate::config::Config;
use crate::model::attr;
use crate::model::ids::item_key;
use crate::model::refs::{tracker_item_key, tracker_keys, vstrace_parents};
use crate::model::time::{earliest, MAX_AHEAD};
use crate::model::{
    set_opt, Action, AttrValue, Attrs, ChangeStep, Ending, Input, Kind, ParentRef, Repo,
    ReviewState, ReviewerKind, SpanEvent, StepKind, Time, WorkEvent, WorkResult,
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub struct Events;

const SOURCE: &str = "events";

/// The registry's entry for Events (`src/sources/registry.rs` lists it).
pub const ENTRY: SourceEntry = SourceEntry {
    name: SOURCE,
    route: "/webhooks/events",
    secret: Setting {
        var: "VALUESTREAM_EVENTS_TOKEN",
        doc: "token for the generic events API (Bearer, or HMAC key for X-Valuestream-Signature)",
    },
    settings: &[],
    options: no_options,
    source: &Events,
};

/// Every field of an event, in the order of the schema.
pub const FIELDS: &[&str] = &[
    "id",
    "kind",
    "item",
    "status",
    "name",
    "started_at",
    "finished_at",
    "acknowledged_at",
    "environment",
    "repository",
    "commit_sha",
    "branch",
    "parent",
    "labels",
    "steps",
    "source_system",
    "url",
    "attributes",
];

/// The kinds of work item the API reports.
pub const KINDS: &[&str] = &["deployment", "pipeline_run", "incident", "change"];

/// Statuses of pipeline runs and deployments. The first three keep the item open; the others
/// finish it (the `cicd.pipeline.result` values are accepted as they are, too).
pub const RUN_STATUSES: &[&str] = &[
    "queued",
    "started",
    "running",
    "succeeded",
    "success",
    "failed",
    "failure",
    "error",
    "timed_out",
    "timeout",
    "cancelled",
    "cancellation",
    "skipped",
    "skip",
];

/// Statuses of incidents; `resolved` finishes it.
pub const INCIDENT_STATUSES: &[&str] = &["triggered", "acknowledged", "resolved"];

/// Statuses of changes (pull/merge requests, Gerrit changes): `opened` and `reopened` start a
/// span, `updated` adds to it (steps, title, labels, head commit), `merged` and `closed` finish it.
pub const CHANGE_STATUSES: &[&str] = &["opened", "reopened", "updated", "merged", "closed"];

/// The fields of one of a change's `steps`.
pub const STEP_FIELDS: &[&str] = &["type", "at", "state", "reviewer"];

/// A step's `type`: the change became a draft, was marked ready for review, a review was
/// requested, a review was submitted.
pub const STEP_TYPES: &[&str] = &["draft", "ready", "review_requested", "review"];

/// A review's `state`.
pub const REVIEW_STATES: &[&str] = &["approved", "changes_requested", "commented"];

/// A review's `reviewer`: a kind of reviewer, never a name.
pub const REVIEWER_KINDS: &[&str] = &["human", "bot", "author"];

/// Most `steps` one event carries (send more in further `updated` events).
pub const MAX_STEPS: usize = 100;

/// Most `labels` one event carries.
pub const MAX_LABELS: usize = 100;

/// Longest accepted `id`, `item` and free-text value, in characters.
const MAX_TEXT: usize = 1024;

impl Source for Events {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn authenticate(&self, d: &Delivery, config: &Config) -> Result<(), SourceError> {
        let signature = d.header("x-valuestream-signature");
        let bearer = d.header("authorization").and_then(verify::bearer);
        authenticate_with(&ENTRY, signature.or(bearer), config, |token, _| {
            let signed = signature.is_some_and(|s| {
                s.trim()
                    .strip_prefix("sha256=")
                    .is_some_and(|hex| verify::hmac_sha256_matches(token, d.body, hex))
            });
            let bearer_ok = bearer.is_some_and(|b| verify::tokens_match(token, b));
            signed | bearer_ok
        })
    }

    fn translate(&self, d: &Delivery, config: &Config) -> Result<Translated, SourceError> {
        // Duplicate keys are refused: which of two `status` values did the sender mean?
        let UniqueJson(value) = serde_json::from_slice(d.body)
            .map_err(|e| malformed(format!("the body is not JSON: {e}")))?;
        let obj = match value {
            Value::Object(obj) => obj,
            Value::Array(_) => {
                return Err(malformed(
                    "the body is a JSON array: send one event (an object) per request".into(),
                ))
            }
            _ => {
                return Err(malformed(
                    "the body must be a JSON object (one event)".into(),
                ))
            }
        };
        let (delivery_id, work) = event(&obj, config)?;
        Ok(Translated {
            delivery_id,
            translation: Translation::Inputs(vec![Input::Work(work)]),
        })
    }

    fn sign(&self, body: &[u8], config: &Config) -> Vec<(String, String)> {
        signing_secret(&ENTRY, config)
            .map(|t| {
                vec![(
                    "x-valuestream-signature".into(),
                    format!("sha256={}", verify::hmac_sha256_hex(t, body)),
                )]
            })
            .unwrap_or_default()
    }
}

fn malformed(why: String) -> SourceError {
    SourceError::Malformed(format!("events: {why}"))
}

/// Reads the fields of one event (or of one of its steps: `prefix` is then `steps[2].`),
/// naming the field in every complaint.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    fn new(obj: &'a Map<String, Value>) -> Self {
        Fields {
            obj,
            prefix: String::new(),
        }
    }

    fn is_set(&self, field: &str) -> bool {
        self.obj.get(field).is_some_and(|v| !v.is_null())
    }

    fn text(&self, field: &str) -> Result<Option<String>, SourceError> {
        let name = format!("{}{field}", self.prefix);
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(malformed(format!("field `{name}` must not be empty")))
            }
            Some(Value::String(s)) if s.chars().count() > MAX_TEXT => Err(malformed(format!(
                "field `{name}` is longer than {MAX_TEXT} characters"
            ))),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(malformed(format!("field `{name}` must be a string"))),
        }
    }

    fn required(&self, field: &str, why: &str) -> Result<String, SourceError> {
        self.text(field)?
            .ok_or_else(|| malformed(format!("field `{}{field}` is required{why}", self.prefix)))
    }

    fn time(&self, field: &str) -> Result<Option<Time>, SourceError> {
        self.text(field)?
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        malformed(format!(
                            "field `{}{field}` must be an RFC 3339 time such as \
                             2024-03-10T14:02:11Z, got {s:?}",
                            self.prefix
                        ))
                    })
            })
            .transpose()
    }

    /// Refuses `field` for kinds that do not use it.
    fn only_for(&self, field: &str, kind: &str, allowed: &[&str]) -> Result<(), SourceError> {
        if self.is_set(field) && !allowed.contains(&kind) {
            return Err(malformed(format!(
                "field `{field}` is not used for kind {kind:?} (only for {})",
                allowed.join(", ")
            )));
        }
        Ok(())
    }
}

/// What a status does to the item.
enum Phase {
    Open,
    /// A change reopened after it was closed: a new span, from `started_at`.
    Reopen,
    Update,
    Close(Ending),
}

fn phase(kind: &str, status: &str) -> Option<Phase> {
    Some(match (kind, status) {
        ("incident", "triggered") => Phase::Open,
        ("incident", "acknowledged") => Phase::Update,
        ("incident", "resolved") => Phase::Close(Ending::ok(WorkResult::Resolved)),
        ("incident", _) => return None,
        ("change", "opened") => Phase::Open,
        ("change", "reopened") => Phase::Reopen,
        ("change", "updated") => Phase::Update,
        ("change", "merged") => Phase::Close(Ending::ok(WorkResult::Merged)),
        ("change", "closed") => Phase::Close(Ending::ok(WorkResult::Closed)),
        ("change", _) => return None,
        (_, "queued" | "started" | "running") => Phase::Open,
        (_, "succeeded" | "success") => Phase::Close(Ending::ok(WorkResult::Success)),
        (_, "failed" | "failure") => Phase::Close(Ending::failed(WorkResult::Failure)),
        (_, "error") => Phase::Close(Ending::failed(WorkResult::Error)),
        (_, "timed_out" | "timeout") => Phase::Close(Ending::failed(WorkResult::Timeout)),
        // Not errors. A cancelled or skipped deployment neither shipped nor failed: the engine
        // counts it under its result but not as a success or a change failure.
        (_, "cancelled" | "cancellation") => Phase::Close(Ending::ok(WorkResult::Cancellation)),
        (_, "skipped" | "skip") => Phase::Close(Ending::ok(WorkResult::Skip)),
        _ => return None,
    })
}

fn kind_of(name: &str) -> Result<Kind, SourceError> {
    match name {
        "deployment" => Ok(Kind::Deployment),
        "pipeline_run" => Ok(Kind::PipelineRun),
        "incident" => Ok(Kind::Incident),
        "change" => Ok(Kind::Change),
        other => Err(malformed(format!(
            "field `kind` must be one of {}, got {other:?}",
            KINDS.join(", ")
        ))),
    }
}

/// The statuses of a kind.
fn statuses_of(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Incident => INCIDENT_STATUSES,
        Kind::Change => CHANGE_STATUSES,
        _ => RUN_STATUSES,
    }
}

/// The times a status needs: a final status its `finished_at`, any other its `started_at` (and
/// no `finished_at`), `acknowledged` its `acknowledged_at`.
fn times_for_status(
    phase: &Phase,
    status: &str,
    started_at: Option<Time>,
    finished_at: Option<Time>,
    acknowledged_at: Option<Time>,
) -> Result<(), SourceError> {
    let closes = matches!(phase, Phase::Close(_));
    if closes && finished_at.is_none() {
        return Err(malformed(format!(
            "field `finished_at` is required when status is {status:?}"
        )));
    }
    if !closes && finished_at.is_some() {
        return Err(malformed(format!(
            "field `finished_at` is set but status {status:?} does not finish the item \
             (use a final status)"
        )));
    }
    if !closes && started_at.is_none() {
        return Err(malformed(format!(
            "field `started_at` is required when status is {status:?}"
        )));
    }
    if status == "acknowledged" && acknowledged_at.is_none() {
        return Err(malformed(
            "field `acknowledged_at` is required when status is \"acknowledged\"".into(),
        ));
    }
    Ok(())
}

/// The `repository` field: `owner/name` (GitLab: `group/sub/name`).
fn repo_of(r: &str) -> Result<Repo, SourceError> {
    if r.trim_matches('/').contains('/') && !r.contains(char::is_whitespace) {
        Ok(Repo::new(r))
    } else {
        Err(malformed(format!(
            "field `repository` must be owner/name (GitLab: group/sub/name), got {r:?}"
        )))
    }
}

/// One event of the body: its fields checked, as a work event.
fn event(obj: &Map<String, Value>, config: &Config) -> Result<(String, WorkEvent), SourceError> {
    let e = EventFields::read(obj, Utc::now())?;
    let mut w = e.work_event();
    e.add_parents(&mut w);
    e.add_attributes(&mut w, config);
    Ok((e.id, w))
}

/// The fields of one event, checked.
struct EventFields {
    id: String,
    kind: Kind,
    item: String,
    phase: Phase,
    started_at: Option<Time>,
    finished_at: Option<Time>,
    acknowledged_at: Option<Time>,
    environment: Option<String>,
    /// The repository as the sender spelled it, and as the model names it.
    repository: Option<String>,
    repo: Option<Repo>,
    commit_sha: Option<String>,
    branch: Option<String>,
    parent: Option<String>,
    source_system: Option<String>,
    url: Option<String>,
    name: Option<String>,
    /// Changes: the labels, when the event names them.
    labels: Option<Vec<String>>,
    /// Changes: the steps the event reports.
    steps: Vec<ChangeStep>,
    attributes: Attrs,
}

impl EventFields {
    /// Reads and checks every field: known names, required ones, statuses per kind, fields
    /// only some kinds use, and times that fit the status. The model's one time rule
    /// (`model::time`, applied to every source after translation) refuses a `finished_at` (end)
    /// before `started_at` (start) and times outside the window; a step's time outside that
    /// window (`now` + one day) is refused here, under the step's own name.
    fn read(obj: &Map<String, Value>, now: Time) -> Result<Self, SourceError> {
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(malformed(format!(
                "unknown field `{unknown}` (the fields are: {})",
                FIELDS.join(", ")
            )));
        }
        let f = Fields::new(obj);
        let id = f.required("id", " (a unique ID per event, for redelivery detection)")?;
        let kind_name = f.required("kind", &format!(" (one of {})", KINDS.join(", ")))?;
        let kind = kind_of(&kind_name)?;
        let kind_name = kind_name.as_str();
        let item = f.required("item", " (the stable ID of the work item)")?;
        let statuses = statuses_of(kind);
        let status = f.required("status", &format!(" (one of {})", statuses.join(", ")))?;
        let phase = phase(kind_name, &status).ok_or_else(|| {
            malformed(format!(
                "field `status` must be one of {} for kind {kind_name:?}, got {status:?}",
                statuses.join(", ")
            ))
        })?;
        f.only_for("environment", kind_name, &["deployment"])?;
        f.only_for("acknowledged_at", kind_name, &["incident"])?;
        f.only_for(
            "commit_sha",
            kind_name,
            &["deployment", "pipeline_run", "change"],
        )?;
        f.only_for(
            "branch",
            kind_name,
            &["deployment", "pipeline_run", "change"],
        )?;
        f.only_for("labels", kind_name, &["change"])?;
        f.only_for("steps", kind_name, &["change"])?;
        let started_at = f.time("started_at")?;
        let finished_at = f.time("finished_at")?;
        let acknowledged_at = f.time("acknowledged_at")?;
        times_for_status(&phase, &status, started_at, finished_at, acknowledged_at)?;
        let environment = if kind == Kind::Deployment {
            Some(f.required("environment", " for deployments (e.g. production)")?)
        } else {
            None
        };
        let repository = if kind == Kind::Change {
            Some(f.required(
                "repository",
                " for changes (owner/name: the repository the change is in)",
            )?)
        } else {
            f.text("repository")?
        };
        let repo = repository.as_deref().map(repo_of).transpose()?;
        Ok(EventFields {
            id,
            kind,
            item,
            phase,
            started_at,
            finished_at,
            acknowledged_at,
            environment,
            repository,
            repo,
            commit_sha: f.text("commit_sha")?,
            branch: f.text("branch")?,
            parent: f.text("parent")?,
            source_system: f.text("source_system")?,
            url: f.text("url")?,
            name: f.text("name")?,
            labels: labels(obj.get("labels"))?,
            steps: steps(obj.get("steps"), now)?,
            attributes: attributes(obj.get("attributes"))?,
        })
    }

    /// The change's steps as the work event records them: each a span event too, except the
    /// draft mark of a change opened as a draft (GitHub's shape); steps after a `merged` or
    /// `closed` event's `finished_at` are late news of a closed span and left out, as a review
    /// delivered after the merge is.
    fn add_steps(&self, w: &mut WorkEvent) {
        for step in &self.steps {
            if self.finished_at.is_some_and(|end| step.time > end) {
                continue;
            }
            let opened_as_draft =
                step.kind == StepKind::Draft && self.started_at.is_some_and(|s| step.time <= s);
            if opened_as_draft {
                w.steps.push(step.clone());
            } else {
                w.add_step(step.clone());
            }
        }
        // An update happens when its latest step did: it orders among the change's facts by
        // that time (a review sent after the merge event, but made before it, still counts).
        if matches!(self.phase, Phase::Update) {
            w.at = w.steps.iter().map(|s| s.time).max();
        }
    }

    /// `vcs.change.state` as far as the event says: `merged`, `closed`; `wip` or `open` from
    /// its latest draft or ready step (an opening without one: `open`).
    fn change_state(&self) -> Option<&'static str> {
        match &self.phase {
            Phase::Close(o) if o.result == WorkResult::Merged => return Some("merged"),
            Phase::Close(_) => return Some("closed"),
            _ => {}
        }
        let latest = self
            .steps
            .iter()
            .filter(|s| matches!(s.kind, StepKind::Draft | StepKind::Ready))
            .max_by_key(|s| (s.time, s.kind));
        match (latest.map(|s| s.kind), &self.phase) {
            (Some(StepKind::Draft), _) => Some("wip"),
            (Some(_), _) | (None, Phase::Open | Phase::Reopen) => Some("open"),
            _ => None,
        }
    }

    /// The work event: key, name, action, times, outcome, repository and head.
    fn work_event(&self) -> WorkEvent {
        let (prefix, default_name) = match self.kind {
            Kind::Deployment => ("DEPLOY", self.environment.clone().unwrap_or_default()),
            Kind::PipelineRun => ("RUN", self.item.clone()),
            Kind::Change => ("CHANGE", self.item.clone()),
            _ => ("INCIDENT", self.item.clone()),
        };
        let span_name = format!("{prefix} {}", self.name.clone().unwrap_or(default_name));
        let action = match self.phase {
            Phase::Open | Phase::Reopen => Action::Open,
            Phase::Update => Action::Update,
            Phase::Close(_) => Action::Close,
        };
        let scope = self.repo.as_ref().map_or("-", |r| r.0.as_str());
        let mut w = WorkEvent::new(
            self.kind,
            item_key(SOURCE, self.kind.as_str(), scope, &self.item),
            span_name,
            action,
        );
        w.reopened = matches!(self.phase, Phase::Reopen);
        w.start = self.started_at;
        w.time_fields = ["started_at", "finished_at"];
        if let Phase::Close(outcome) = &self.phase {
            w.end = self.finished_at;
            w.outcome = Some(outcome.clone());
        }
        w.repo = self.repo.clone();
        w.environment = self.environment.clone();
        w.head_branch = self.branch.clone();
        if self.kind == Kind::Change
            && matches!(&self.phase, Phase::Close(o) if o.result == WorkResult::Merged)
        {
            // A merged change's commit is the one that landed (merge, squash or rebased):
            // what deployments ship.
            w.merge_sha = self.commit_sha.clone();
        } else {
            w.head_sha = self.commit_sha.clone();
        }
        if self.kind == Kind::Change {
            if self.name.is_some() || self.labels.is_some() {
                // The title and labels the rework rule reads, named together.
                w.change_title = Some(self.name.clone().unwrap_or_default());
                w.change_labels = self.labels.clone().unwrap_or_default();
            }
            self.add_steps(&mut w);
        }
        if let Some(ack) = self.acknowledged_at {
            w.span_events.push(SpanEvent {
                name: "acknowledged".into(),
                time: ack,
                attributes: Attrs::new(),
            });
        }
        w
    }

    /// Parents, best first: what the event names, then the change its commit or branch
    /// belongs to.
    fn add_parents(&self, w: &mut WorkEvent) {
        if let Some(p) = &self.parent {
            let refs = vstrace_parents(p, self.repo.as_ref());
            if !refs.is_empty() {
                w.parents.extend(refs);
            } else if tracker_keys(p).first().is_some_and(|k| k == p) {
                w.parents.push(ParentRef::Item(tracker_item_key(p)));
            } else {
                w.parents.push(ParentRef::Item(p.clone()));
            }
        }
        if let (Kind::Change, Some(repo)) = (self.kind, &self.repo) {
            // As a pull request's: a vstrace reference in its branch, tracker keys in its
            // branch and title.
            vcs::change_parents(
                w,
                SOURCE,
                repo,
                self.branch.as_deref().unwrap_or_default(),
                self.name.as_deref().unwrap_or_default(),
                "",
            );
            return;
        }
        if let Some(repo) = &self.repo {
            // A deployment names its change by commit only: a branch says nothing of what
            // shipped.
            let branch = self
                .branch
                .as_deref()
                .filter(|_| self.kind == Kind::PipelineRun);
            w.parent_by_commit(repo, self.commit_sha.as_deref(), branch);
        }
    }

    /// The sender's own attributes first: what the API sets itself wins. Repository traits
    /// (`valuestream.team`, `valuestream.language`, …) the sender names are typed values.
    fn add_attributes(&self, w: &mut WorkEvent, config: &Config) {
        let mut a = self.attributes.clone();
        w.traits.take_from(&mut a);
        if w.traits.team.is_none() {
            w.traits.team = self
                .repo
                .as_ref()
                .and_then(|r| config.team_of(r))
                .map(str::to_string);
        }
        set_opt(&mut a, attr::SOURCE_SYSTEM, self.source_system.clone());
        set_opt(&mut a, attr::URL_FULL, self.url.clone());
        if let Some(r) = &self.repo {
            // The name as the sender spelled it (the key and indexes use it lower-cased).
            let spelled = self
                .repository
                .as_deref()
                .unwrap_or_default()
                .trim_matches('/');
            let name = spelled.rsplit('/').next().unwrap_or(r.name());
            a.insert(attr::VCS_REPOSITORY_NAME.into(), name.to_string().into());
        }
        set_opt(&mut a, attr::VCS_REF_HEAD_REVISION, w.head_sha.clone());
        set_opt(&mut a, attr::VCS_REF_HEAD_NAME, self.branch.clone());
        let item = &self.item;
        match self.kind {
            Kind::Deployment => {
                set_opt(
                    &mut a,
                    attr::DEPLOYMENT_ENVIRONMENT_NAME,
                    self.environment.clone(),
                );
                a.insert(attr::DEPLOYMENT_ID.into(), item.clone().into());
            }
            Kind::PipelineRun => {
                w.pipeline = Some(self.name.clone().unwrap_or_else(|| item.clone()));
                a.insert(attr::CICD_PIPELINE_RUN_ID.into(), item.clone().into());
            }
            Kind::Change => {
                a.insert(attr::VCS_CHANGE_ID.into(), item.clone().into());
                set_opt(&mut a, attr::VCS_CHANGE_TITLE, self.name.clone());
                set_opt(&mut a, attr::VCS_CHANGE_STATE, self.change_state());
                if w.change_title.is_some() {
                    a.insert(
                        attr::LABELS.into(),
                        AttrValue::StrList(w.change_labels.clone()),
                    );
                }
                set_opt(&mut a, attr::CHANGE_MERGE_REVISION, w.merge_sha.clone());
            }
            _ => {
                a.insert(attr::INCIDENT_ID.into(), item.clone().into());
                set_opt(&mut a, attr::INCIDENT_TITLE, self.name.clone());
                set_opt(
                    &mut a,
                    attr::INCIDENT_ACKNOWLEDGED_AT,
                    self.acknowledged_at.map(|t| t.to_rfc3339()),
                );
            }
        }
        w.attributes = a;
    }
}

/// The `labels` of a change: a list of non-empty strings.
fn labels(v: Option<&Value>) -> Result<Option<Vec<String>>, SourceError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(malformed(
                "field `labels` must be an array of strings".into(),
            ))
        }
    };
    if list.len() > MAX_LABELS {
        return Err(malformed(format!(
            "field `labels` has {} labels, more than {MAX_LABELS}",
            list.len()
        )));
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) if s.trim().is_empty() => {
                Err(malformed(format!("field `labels[{i}]` must not be empty")))
            }
            Value::String(s) if s.chars().count() > MAX_TEXT => Err(malformed(format!(
                "field `labels[{i}]` is longer than {MAX_TEXT} characters"
            ))),
            Value::String(s) => Ok(s.trim().to_string()),
            _ => Err(malformed(format!("field `labels[{i}]` must be a string"))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The `steps` of a change, each checked by hand: its known fields, its type, its time (RFC
/// 3339, within the model's window), and a review's state and kind of reviewer (only a review
/// has them, and it needs both).
fn steps(v: Option<&Value>, now: Time) -> Result<Vec<ChangeStep>, SourceError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(malformed(
                "field `steps` must be an array of step objects".into(),
            ))
        }
    };
    if list.len() > MAX_STEPS {
        return Err(malformed(format!(
            "field `steps` has {} steps, more than {MAX_STEPS} (send the rest in further \
             `updated` events)",
            list.len()
        )));
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| step(i, v, now))
        .collect()
}

fn step(i: usize, v: &Value, now: Time) -> Result<ChangeStep, SourceError> {
    let Value::Object(obj) = v else {
        return Err(malformed(format!(
            "field `steps[{i}]` must be an object such as \
             {{\"type\": \"review\", \"at\": \"2024-03-10T14:02:11Z\", \"state\": \"approved\", \
             \"reviewer\": \"human\"}}"
        )));
    };
    if let Some(unknown) = obj.keys().find(|k| !STEP_FIELDS.contains(&k.as_str())) {
        return Err(malformed(format!(
            "unknown field `steps[{i}].{unknown}` (a step's fields are: {})",
            STEP_FIELDS.join(", ")
        )));
    }
    let f = Fields {
        obj,
        prefix: format!("steps[{i}]."),
    };
    let one_of = |field: &str, allowed: &[&str], got: &str| {
        malformed(format!(
            "field `steps[{i}].{field}` must be one of {}, got {got:?}",
            allowed.join(", ")
        ))
    };
    let ty = f.required("type", &format!(" (one of {})", STEP_TYPES.join(", ")))?;
    let kind = match ty.as_str() {
        "draft" => StepKind::Draft,
        "ready" => StepKind::Ready,
        "review_requested" => StepKind::ReviewRequested,
        "review" => StepKind::Review,
        other => return Err(one_of("type", STEP_TYPES, other)),
    };
    let at = f
        .time("at")?
        .ok_or_else(|| malformed(format!("field `steps[{i}].at` is required (RFC 3339)")))?;
    let latest = now + MAX_AHEAD;
    if at < earliest() || at > latest {
        return Err(malformed(format!(
            "field `steps[{i}].at` {} is outside the accepted window 2000-01-01 to one day \
             from now",
            at.to_rfc3339()
        )));
    }
    if kind != StepKind::Review {
        for field in ["state", "reviewer"] {
            if f.is_set(field) {
                return Err(malformed(format!(
                    "field `steps[{i}].{field}` is only for steps of type \"review\", not {ty:?}"
                )));
            }
        }
        return Ok(ChangeStep::new(kind, at));
    }
    let state = f.required(
        "state",
        &format!(" for a review (one of {})", REVIEW_STATES.join(", ")),
    )?;
    let state = match state.as_str() {
        "approved" => ReviewState::Approved,
        "changes_requested" => ReviewState::ChangesRequested,
        "commented" => ReviewState::Commented,
        other => return Err(one_of("state", REVIEW_STATES, other)),
    };
    let reviewer = f.required(
        "reviewer",
        &format!(
            " for a review (one of {}: a kind of reviewer, never a name)",
            REVIEWER_KINDS.join(", ")
        ),
    )?;
    let reviewer = match reviewer.as_str() {
        "human" => ReviewerKind::Human,
        "bot" => ReviewerKind::Bot,
        "author" => ReviewerKind::Author,
        other => return Err(one_of("reviewer", REVIEWER_KINDS, other)),
    };
    Ok(ChangeStep::review(at, state, reviewer))
}

/// The free `attributes` map: string, number or boolean values.
fn attributes(v: Option<&Value>) -> Result<Attrs, SourceError> {
    let mut out = Attrs::new();
    let obj = match v {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(malformed(
                "field `attributes` must be an object of string, number or boolean values".into(),
            ))
        }
    };
    for (k, v) in obj {
        if k.trim().is_empty() {
            return Err(malformed(
                "field `attributes` has an empty attribute name".into(),
            ));
        }
        let value = match v {
            Value::String(s) => AttrValue::Str(s.clone()),
            Value::Bool(b) => AttrValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => AttrValue::Int(i),
                None => AttrValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            _ => {
                return Err(malformed(format!(
                    "field `attributes.{k}` must be a string, number or boolean"
                )))
            }
        };
        out.insert(k.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_onto_results() {
        let result = |kind: &str, status: &str| match phase(kind, status) {
            Some(Phase::Close(o)) => format!("{}{}", o.result, if o.error { "!" } else { "" }),
            Some(Phase::Open) => "open".into(),
            Some(Phase::Reopen) => "reopen".into(),
            Some(Phase::Update) => "update".into(),
            None => "-".into(),
        };
        assert_eq!(result("pipeline_run", "succeeded"), "success");
        assert_eq!(result("pipeline_run", "timed_out"), "timeout!");
        assert_eq!(result("pipeline_run", "cancelled"), "cancellation");
        assert_eq!(result("deployment", "cancelled"), "cancellation");
        assert_eq!(result("deployment", "skipped"), "skip");
        assert_eq!(result("deployment", "failed"), "failure!");
        assert_eq!(result("deployment", "running"), "open");
        assert_eq!(result("incident", "resolved"), "resolved");
        assert_eq!(result("incident", "acknowledged"), "update");
        assert_eq!(result("incident", "succeeded"), "-");
        assert_eq!(result("deployment", "resolved"), "-");
        for s in RUN_STATUSES {
            assert!(phase("deployment", s).is_some(), "{s}");
        }
        for s in INCIDENT_STATUSES {
            assert!(phase("incident", s).is_some(), "{s}");
        }
        assert_eq!(result("change", "opened"), "open");
        assert_eq!(result("change", "reopened"), "reopen");
        assert_eq!(result("change", "updated"), "update");
        assert_eq!(result("change", "merged"), "merged");
        assert_eq!(result("change", "closed"), "closed");
        assert_eq!(result("change", "succeeded"), "-");
        assert_eq!(result("deployment", "merged"), "-");
        for s in CHANGE_STATUSES {
            assert!(phase("change", s).is_some(), "{s}");
        }
    }

    fn at(s: &str) -> Time {
        s.parse().unwrap()
    }

    fn steps_of(v: serde_json::Value) -> Result<Vec<ChangeStep>, String> {
        steps(Some(&v), at("2024-06-01T00:00:00Z")).map_err(|e| e.to_string())
    }

    #[test]
    fn steps_are_read_and_refused_by_name_and_index() {
        let ok = steps_of(serde_json::json!([
            {"type": "draft", "at": "2024-03-10T09:00:00Z"},
            {"type": "ready", "at": "2024-03-10T09:40:00+01:00"},
            {"type": "review_requested", "at": "2024-03-10T09:45:00Z"},
            {"type": "review", "at": "2024-03-10T10:30:00Z", "state": "approved", "reviewer": "human"},
        ]))
        .unwrap();
        assert_eq!(
            ok,
            [
                ChangeStep::new(StepKind::Draft, at("2024-03-10T09:00:00Z")),
                ChangeStep::new(StepKind::Ready, at("2024-03-10T08:40:00Z")),
                ChangeStep::new(StepKind::ReviewRequested, at("2024-03-10T09:45:00Z")),
                ChangeStep::review(
                    at("2024-03-10T10:30:00Z"),
                    ReviewState::Approved,
                    ReviewerKind::Human
                ),
            ]
        );
        let review = |extra: serde_json::Value| {
            let mut s = serde_json::json!({"type": "review", "at": "2024-03-10T10:30:00Z",
                "state": "commented", "reviewer": "bot"});
            for (k, v) in extra.as_object().unwrap() {
                if v.is_null() {
                    s.as_object_mut().unwrap().remove(k);
                } else {
                    s[k] = v.clone();
                }
            }
            serde_json::json!([{"type": "ready", "at": "2024-03-10T09:00:00Z"}, s])
        };
        let too_many: Vec<serde_json::Value> = (0..=MAX_STEPS)
            .map(|_| serde_json::json!({"type": "ready", "at": "2024-03-10T09:00:00Z"}))
            .collect();
        for (v, want) in [
            (serde_json::json!({}), "field `steps` must be an array"),
            (serde_json::json!([1]), "field `steps[0]` must be an object"),
            (review(serde_json::json!({"type": "merge"})), "field `steps[1].type` must be one of draft, ready, review_requested, review, got \"merge\""),
            (review(serde_json::json!({"type": null})), "field `steps[1].type` is required"),
            (review(serde_json::json!({"at": "yesterday"})), "field `steps[1].at` must be an RFC 3339 time"),
            (review(serde_json::json!({"at": null})), "field `steps[1].at` is required"),
            (review(serde_json::json!({"at": 17})), "field `steps[1].at` must be a string"),
            (review(serde_json::json!({"at": "1999-12-31T23:59:59Z"})), "field `steps[1].at` 1999-12-31T23:59:59+00:00 is outside"),
            (review(serde_json::json!({"at": "2024-06-03T00:00:00Z"})), "field `steps[1].at` 2024-06-03T00:00:00+00:00 is outside"),
            (review(serde_json::json!({"state": "lgtm"})), "field `steps[1].state` must be one of approved, changes_requested, commented"),
            (review(serde_json::json!({"state": null})), "field `steps[1].state` is required for a review"),
            (review(serde_json::json!({"reviewer": "octocat"})), "field `steps[1].reviewer` must be one of human, bot, author"),
            (review(serde_json::json!({"reviewer": null})), "field `steps[1].reviewer` is required for a review"),
            (review(serde_json::json!({"who": "x"})), "unknown field `steps[1].who`"),
            (review(serde_json::json!({"type": "ready"})), "field `steps[1].state` is only for steps of type \"review\", not \"ready\""),
            (review(serde_json::json!({"type": "draft", "state": null})), "field `steps[1].reviewer` is only for steps of type \"review\""),
            (serde_json::json!(too_many), "more than 100"),
        ] {
            let got = steps_of(v).unwrap_err();
            assert!(got.contains(want), "{want:?} not in {got:?}");
        }
    }
}
