//! The generic events API (`POST /webhooks/events`) for any tool without a source of its own:
//! Argo CD, Spinnaker, a deploy script, another incident tool. One small JSON event per request,
//! published as `schemas/events.schema.json`; authenticated by `Authorization: Bearer <token>` or
//! `X-Valuestream-Signature: sha256=<HMAC-SHA256 of the body under the token>`.
//!
//! Every field is checked here by hand (not by serde) so that a 400 always names the field that
//! is wrong. Unknown fields are refused: a typo such as `finshed_at` would otherwise silently
//! leave a deployment open.

use super::{
    authenticate_with, verify, Delivery, Source, SourceError, Translated, Translation, UniqueJson,
};
use crate::config::Config;
use crate::model::attr;
use crate::model::ids::item_key;
use crate::model::refs::{tracker_item_key, tracker_keys, vstrace_parents};
use crate::model::{
    set_opt, Action, AttrValue, Attrs, Input, Kind, Outcome, ParentRef, Repo, SpanEvent, Time,
    WorkEvent, WorkResult,
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub struct Events;

const SOURCE: &str = "events";

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
    "source_system",
    "url",
    "attributes",
];

/// The kinds of work item the API reports.
pub const KINDS: &[&str] = &["deployment", "pipeline_run", "incident"];

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

/// Longest accepted `id`, `item` and free-text value, in characters.
const MAX_TEXT: usize = 1024;

impl Source for Events {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn authenticate(&self, d: &Delivery, config: &Config) -> Result<(), SourceError> {
        let signature = d.header("x-valuestream-signature");
        let bearer = d.header("authorization").and_then(verify::bearer);
        authenticate_with(
            SOURCE,
            "VALUESTREAM_EVENTS_TOKEN",
            &config.events_token,
            signature.or(bearer),
            config,
            |token, _| {
                let signed = signature.is_some_and(|s| {
                    s.trim()
                        .strip_prefix("sha256=")
                        .is_some_and(|hex| verify::hmac_sha256_matches(token, d.body, hex))
                });
                let bearer_ok = bearer.is_some_and(|b| verify::tokens_match(token, b));
                signed | bearer_ok
            },
        )
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
        config
            .events_token
            .get()
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

/// Reads the fields of one event, naming the field in every complaint.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn text(&self, field: &str) -> Result<Option<String>, SourceError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(malformed(format!("field `{field}` must not be empty")))
            }
            Some(Value::String(s)) if s.chars().count() > MAX_TEXT => Err(malformed(format!(
                "field `{field}` is longer than {MAX_TEXT} characters"
            ))),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(malformed(format!("field `{field}` must be a string"))),
        }
    }

    fn required(&self, field: &str, why: &str) -> Result<String, SourceError> {
        self.text(field)?
            .ok_or_else(|| malformed(format!("field `{field}` is required{why}")))
    }

    fn time(&self, field: &str) -> Result<Option<Time>, SourceError> {
        self.text(field)?
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        malformed(format!(
                            "field `{field}` must be an RFC 3339 time such as \
                             2024-03-10T14:02:11Z, got {s:?}"
                        ))
                    })
            })
            .transpose()
    }

    /// Refuses `field` for kinds that do not use it.
    fn only_for(&self, field: &str, kind: &str, allowed: &[&str]) -> Result<(), SourceError> {
        if self.0.get(field).is_some_and(|v| !v.is_null()) && !allowed.contains(&kind) {
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
    Update,
    Close(Outcome),
}

fn phase(kind: &str, status: &str) -> Option<Phase> {
    Some(match (kind, status) {
        ("incident", "triggered") => Phase::Open,
        ("incident", "acknowledged") => Phase::Update,
        ("incident", "resolved") => Phase::Close(Outcome::ok(WorkResult::Resolved)),
        ("incident", _) => return None,
        (_, "queued" | "started" | "running") => Phase::Open,
        (_, "succeeded" | "success") => Phase::Close(Outcome::ok(WorkResult::Success)),
        (_, "failed" | "failure") => Phase::Close(Outcome::failed(WorkResult::Failure)),
        (_, "error") => Phase::Close(Outcome::failed(WorkResult::Error)),
        (_, "timed_out" | "timeout") => Phase::Close(Outcome::failed(WorkResult::Timeout)),
        // Not errors. A cancelled or skipped deployment neither shipped nor failed: the engine
        // counts it under its result but not as a success or a change failure.
        (_, "cancelled" | "cancellation") => Phase::Close(Outcome::ok(WorkResult::Cancellation)),
        (_, "skipped" | "skip") => Phase::Close(Outcome::ok(WorkResult::Skip)),
        _ => return None,
    })
}

fn kind_of(name: &str) -> Result<Kind, SourceError> {
    match name {
        "deployment" => Ok(Kind::Deployment),
        "pipeline_run" => Ok(Kind::PipelineRun),
        "incident" => Ok(Kind::Incident),
        other => Err(malformed(format!(
            "field `kind` must be one of {}, got {other:?}",
            KINDS.join(", ")
        ))),
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
    if matches!(phase, Phase::Update) && acknowledged_at.is_none() {
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
    let e = EventFields::read(obj)?;
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
    attributes: Attrs,
}

impl EventFields {
    /// Reads and checks every field: known names, required ones, statuses per kind, fields
    /// only some kinds use, and times that fit the status. The model's one time rule
    /// (`model::time`, applied to every source after translation) refuses a `finished_at` (end)
    /// before `started_at` (start) and times outside the window.
    fn read(obj: &Map<String, Value>) -> Result<Self, SourceError> {
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(malformed(format!(
                "unknown field `{unknown}` (the fields are: {})",
                FIELDS.join(", ")
            )));
        }
        let f = Fields(obj);
        let id = f.required("id", " (a unique ID per event, for redelivery detection)")?;
        let kind_name = f.required("kind", &format!(" (one of {})", KINDS.join(", ")))?;
        let kind = kind_of(&kind_name)?;
        let kind_name = kind_name.as_str();
        let item = f.required("item", " (the stable ID of the work item)")?;
        let statuses = if kind == Kind::Incident {
            INCIDENT_STATUSES
        } else {
            RUN_STATUSES
        };
        let status = f.required("status", &format!(" (one of {})", statuses.join(", ")))?;
        let phase = phase(kind_name, &status).ok_or_else(|| {
            malformed(format!(
                "field `status` must be one of {} for kind {kind_name:?}, got {status:?}",
                statuses.join(", ")
            ))
        })?;
        f.only_for("environment", kind_name, &["deployment"])?;
        f.only_for("acknowledged_at", kind_name, &["incident"])?;
        f.only_for("commit_sha", kind_name, &["deployment", "pipeline_run"])?;
        f.only_for("branch", kind_name, &["deployment", "pipeline_run"])?;
        let started_at = f.time("started_at")?;
        let finished_at = f.time("finished_at")?;
        let acknowledged_at = f.time("acknowledged_at")?;
        times_for_status(&phase, &status, started_at, finished_at, acknowledged_at)?;
        let environment = if kind == Kind::Deployment {
            Some(f.required("environment", " for deployments (e.g. production)")?)
        } else {
            None
        };
        let repository = f.text("repository")?;
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
            attributes: attributes(obj.get("attributes"))?,
        })
    }

    /// The work event: key, name, action, times, outcome, repository and head.
    fn work_event(&self) -> WorkEvent {
        let (prefix, default_name) = match self.kind {
            Kind::Deployment => ("DEPLOY", self.environment.clone().unwrap_or_default()),
            Kind::PipelineRun => ("RUN", self.item.clone()),
            _ => ("INCIDENT", self.item.clone()),
        };
        let span_name = format!("{prefix} {}", self.name.clone().unwrap_or(default_name));
        let action = match self.phase {
            Phase::Open => Action::Open,
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
        w.start = self.started_at;
        w.time_fields = ["started_at", "finished_at"];
        if let Phase::Close(outcome) = &self.phase {
            w.end = self.finished_at;
            w.outcome = Some(outcome.clone());
        }
        w.repo = self.repo.clone();
        w.environment = self.environment.clone();
        w.head_sha = self.commit_sha.clone();
        w.head_branch = self.branch.clone();
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
        set_opt(&mut a, attr::VCS_REF_HEAD_REVISION, self.commit_sha.clone());
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
    }
}
