//! GitLab: `X-Gitlab-Token` verification and the translation of Issue, Merge Request, Pipeline,
//! Job, Deployment and Push hooks into normalized events. The payload model (only the fields we
//! use) and its mapping to semantic-convention attributes live here and nowhere else.
//!
//! GitLab writes timestamps in three shapes depending on the hook and its version
//! (`2013-12-03T17:23:34Z`, `2016-08-12 15:23:28 UTC`, `2021-04-28 21:50:00 +0200`); every
//! time field goes through [`de`].

use super::{
    authenticate_with, parse_json, verify, Delivery, Source, SourceError, Translated, Translation,
};
use crate::config::Config;
use crate::model::ids::{item_key, short_hash};
use crate::model::refs::{
    closing_refs, team_from_labels, tracker_item_key, tracker_keys, vstrace_refs,
};
use crate::model::{
    set_opt, Action, AttrValue, Attrs, Commit, Input, Kind, Outcome, ParentRef, Push, Repo,
    SpanEvent, Time, WorkEvent,
};
use serde::Deserialize;

pub struct GitLab;

const SOURCE: &str = "gitlab";

/// Serde helpers for GitLab's timestamps.
pub mod de {
    use crate::model::Time;
    use chrono::{DateTime, NaiveDateTime, Utc};
    use serde::{Deserialize, Deserializer};

    /// Parses any timestamp shape GitLab sends: RFC 3339 (`2013-12-03T17:23:34Z`, with an
    /// offset or fraction), `2016-08-12 15:23:28 UTC` and `2021-04-28 21:50:00 +0200`.
    pub fn parse_time(text: &str) -> Option<Time> {
        let s = text.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(t.with_timezone(&Utc));
        }
        if let Some(naive) = s.strip_suffix(" UTC").or_else(|| s.strip_suffix('Z')) {
            for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
                if let Ok(t) = NaiveDateTime::parse_from_str(naive.trim_end(), f) {
                    return Some(t.and_utc());
                }
            }
        }
        for f in ["%Y-%m-%d %H:%M:%S%.f %z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
            if let Ok(t) = DateTime::parse_from_str(s, f) {
                return Some(t.with_timezone(&Utc));
            }
        }
        None
    }

    fn bad<E: serde::de::Error>(s: &str) -> E {
        E::custom(format!("not a GitLab timestamp: {s:?}"))
    }

    /// `#[serde(deserialize_with = "de::time")]`
    pub fn time<'de, D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        let s = String::deserialize(d)?;
        parse_time(&s).ok_or_else(|| bad(&s))
    }

    /// `#[serde(default, deserialize_with = "de::opt_time")]`: `null`, `""` and absence are `None`.
    pub fn opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Time>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => parse_time(&s).map(Some).ok_or_else(|| bad(&s)),
        }
    }
}

// ---------------------------------------------------------------- payload model

#[derive(Deserialize)]
struct Project {
    id: Option<u64>,
    path_with_namespace: String,
    web_url: Option<String>,
    default_branch: Option<String>,
}

#[derive(Deserialize)]
struct Label {
    title: String,
}

/// What names the event in the body: `object_kind` (project hooks, and system-hook merge
/// requests), else `event_name` (system hooks: `push`, `tag_push`, `user_add_to_group`…).
#[derive(Deserialize)]
struct ObjectKind {
    object_kind: Option<String>,
    event_name: Option<String>,
}

#[derive(Deserialize)]
struct IssueHook {
    project: Project,
    object_attributes: IssueAttrs,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct IssueAttrs {
    iid: u64,
    title: String,
    url: Option<String>,
    #[serde(deserialize_with = "de::time")]
    created_at: Time,
    #[serde(default, deserialize_with = "de::opt_time")]
    updated_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    closed_at: Option<Time>,
    action: Option<String>,
    issue_type: Option<String>,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct MergeRequestHook {
    project: Project,
    object_attributes: MergeRequestAttrs,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct LastCommit {
    id: String,
}

#[derive(Deserialize)]
struct MergeRequestAttrs {
    iid: u64,
    title: String,
    description: Option<String>,
    url: Option<String>,
    #[serde(deserialize_with = "de::time")]
    created_at: Time,
    #[serde(default, deserialize_with = "de::opt_time")]
    updated_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    merged_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    closed_at: Option<Time>,
    source_branch: String,
    target_branch: String,
    last_commit: Option<LastCommit>,
    merge_commit_sha: Option<String>,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    work_in_progress: bool,
    state: Option<String>,
    action: Option<String>,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct PipelineHook {
    project: Project,
    object_attributes: PipelineAttrs,
    merge_request: Option<PipelineMergeRequest>,
    #[serde(default)]
    builds: Vec<PipelineBuild>,
}

#[derive(Deserialize)]
struct PipelineAttrs {
    id: u64,
    name: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    tag: bool,
    sha: String,
    source: Option<String>,
    status: String,
    url: Option<String>,
    #[serde(deserialize_with = "de::time")]
    created_at: Time,
    #[serde(default, deserialize_with = "de::opt_time")]
    finished_at: Option<Time>,
    duration: Option<f64>,
    queued_duration: Option<f64>,
}

#[derive(Deserialize)]
struct PipelineMergeRequest {
    iid: u64,
    target_project_id: Option<u64>,
}

#[derive(Deserialize)]
struct PipelineBuild {
    id: u64,
    stage: Option<String>,
    name: String,
    status: String,
    #[serde(default, deserialize_with = "de::opt_time")]
    created_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    started_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    finished_at: Option<Time>,
    duration: Option<f64>,
    queued_duration: Option<f64>,
    #[serde(default)]
    allow_failure: bool,
    failure_reason: Option<String>,
}

#[derive(Deserialize)]
struct JobHook {
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    #[serde(default)]
    tag: bool,
    sha: Option<String>,
    build_id: u64,
    build_name: String,
    build_stage: Option<String>,
    build_status: String,
    #[serde(default, deserialize_with = "de::opt_time")]
    build_created_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    build_started_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    build_finished_at: Option<Time>,
    build_duration: Option<f64>,
    build_queued_duration: Option<f64>,
    #[serde(default)]
    build_allow_failure: bool,
    build_failure_reason: Option<String>,
    pipeline_id: u64,
    /// Sent by recent GitLab versions only; older ones name the project by `repository`.
    project: Option<Project>,
    repository: Option<JobRepository>,
    /// In a Job Hook, `commit` describes the pipeline (`name` is the pipeline's name).
    commit: Option<JobPipeline>,
}

#[derive(Deserialize)]
struct JobRepository {
    homepage: Option<String>,
    git_http_url: Option<String>,
}

#[derive(Deserialize)]
struct JobPipeline {
    name: Option<String>,
}

#[derive(Deserialize)]
struct DeploymentHook {
    project: Project,
    status: String,
    #[serde(deserialize_with = "de::time")]
    status_changed_at: Time,
    deployment_id: u64,
    deployable_id: Option<u64>,
    deployable_url: Option<String>,
    environment: String,
    environment_tier: Option<String>,
    environment_external_url: Option<String>,
    sha: Option<String>,
    short_sha: Option<String>,
    commit_url: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

#[derive(Deserialize)]
struct PushHook {
    project: Project,
    #[serde(rename = "ref")]
    git_ref: String,
    before: Option<String>,
    after: Option<String>,
    #[serde(default)]
    commits: Vec<PushCommit>,
}

#[derive(Deserialize)]
struct PushCommit {
    id: String,
    #[serde(deserialize_with = "de::time")]
    timestamp: Time,
    #[serde(default)]
    message: String,
}

// ---------------------------------------------------------------- the source

impl Source for GitLab {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn authenticate(&self, d: &Delivery, config: &Config) -> Result<(), SourceError> {
        authenticate_with(
            SOURCE,
            "VALUESTREAM_GITLAB_TOKEN",
            &config.gitlab_token,
            d.header("x-gitlab-token"),
            config,
            verify::tokens_match,
        )
    }

    fn translate(&self, d: &Delivery, config: &Config) -> Result<Translated, SourceError> {
        let delivery_id = d
            .header("x-gitlab-event-uuid")
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| short_hash(d.body));
        let event = match d.header("x-gitlab-event") {
            Some(h) if h != "System Hook" => Event::from_header(h),
            // A system hook names its event in the body: merge requests by `object_kind` (the
            // project hook's body), pushes and the instance's own events (users, groups,
            // projects) by `event_name`.
            _ => {
                let k: ObjectKind = parse_json(SOURCE, d.body)?;
                match (k.object_kind, k.event_name) {
                    (Some(kind), _) => Event::from_object_kind(&kind),
                    (None, Some(name)) => Event::from_event_name(&name),
                    (None, None) => {
                        return Err(SourceError::Malformed(
                            "gitlab: neither the X-Gitlab-Event header nor the body's object_kind or event_name names the event".into(),
                        ))
                    }
                }
            }
        };
        let translation = match event {
            Ok(event) => translate(event, d.body, config)?,
            Err(why) => Translation::Ignored(why),
        };
        Ok(Translated {
            delivery_id,
            translation,
        })
    }

    fn sign(&self, _body: &[u8], config: &Config) -> Vec<(String, String)> {
        config
            .gitlab_token
            .get()
            .map(|t| vec![("x-gitlab-token".into(), t.to_string())])
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug)]
enum Event {
    Issue,
    MergeRequest,
    Pipeline,
    Job,
    Deployment,
    Push,
}

impl Event {
    fn from_header(h: &str) -> Result<Event, String> {
        Ok(match h {
            "Issue Hook" | "Confidential Issue Hook" => Event::Issue,
            "Merge Request Hook" => Event::MergeRequest,
            "Pipeline Hook" => Event::Pipeline,
            "Job Hook" => Event::Job,
            "Deployment Hook" => Event::Deployment,
            "Push Hook" => Event::Push,
            other => return Err(format!("gitlab event {other:?} is not used")),
        })
    }

    fn from_object_kind(k: &str) -> Result<Event, String> {
        Ok(match k {
            "issue" => Event::Issue,
            "merge_request" => Event::MergeRequest,
            "pipeline" => Event::Pipeline,
            "build" => Event::Job,
            "deployment" => Event::Deployment,
            "push" => Event::Push,
            other => return Err(format!("gitlab object_kind {other:?} is not used")),
        })
    }

    /// A system hook's `event_name`: pushes are handled like Push Hooks (a `tag_push` is then
    /// ignored as a tag); everything else (`user_add_to_group`, `project_create`,
    /// `repository_update`, …) is about the instance, not delivery.
    fn from_event_name(name: &str) -> Result<Event, String> {
        match name {
            "push" | "tag_push" => Ok(Event::Push),
            "repository_update" => Err(
                "gitlab system hook event \"repository_update\" is not used (the same push arrives as event_name \"push\")".into(),
            ),
            other => Err(format!(
                "gitlab system hook event {other:?} is not used (only merge requests and pushes are)"
            )),
        }
    }
}

fn translate(event: Event, body: &[u8], config: &Config) -> Result<Translation, SourceError> {
    let one = |r: Result<WorkEvent, String>| match r {
        Ok(w) => Translation::Inputs(vec![Input::Work(w)]),
        Err(why) => Translation::Ignored(why),
    };
    Ok(match event {
        Event::Issue => {
            let h: IssueHook = parse_json(SOURCE, body)?;
            one(Ctx::of(&h.project, config).issue(&h))
        }
        Event::MergeRequest => {
            let h: MergeRequestHook = parse_json(SOURCE, body)?;
            one(Ctx::of(&h.project, config).merge_request(&h))
        }
        Event::Pipeline => {
            let h: PipelineHook = parse_json(SOURCE, body)?;
            Ctx::of(&h.project, config).pipeline(&h)
        }
        Event::Job => {
            let h: JobHook = parse_json(SOURCE, body)?;
            let ctx = match (&h.project, &h.repository) {
                (Some(p), _) => Ctx::of(p, config),
                (None, Some(r)) => r
                    .homepage
                    .as_deref()
                    .or(r.git_http_url.as_deref())
                    .and_then(|u| Ctx::of_url(u, config))
                    .ok_or_else(|| {
                        SourceError::Malformed(
                            "gitlab: Job Hook repository has no usable homepage".into(),
                        )
                    })?,
                (None, None) => {
                    return Err(SourceError::Malformed(
                        "gitlab: Job Hook names neither project nor repository".into(),
                    ))
                }
            };
            one(ctx.job(&h))
        }
        Event::Deployment => {
            let h: DeploymentHook = parse_json(SOURCE, body)?;
            one(Ctx::of(&h.project, config).deployment(&h))
        }
        Event::Push => {
            let h: PushHook = parse_json(SOURCE, body)?;
            Ctx::of(&h.project, config).push(&h)
        }
    })
}

/// Maps a GitLab pipeline or job status onto `cicd.pipeline.result`; `None` while it runs.
pub fn pipeline_result(status: &str) -> Option<Outcome> {
    Some(match status {
        "success" => Outcome::ok("success"),
        "failed" => Outcome::failed("failure"),
        "canceled" => Outcome::ok("cancellation"),
        "skipped" => Outcome::ok("skip"),
        _ => return None,
    })
}

/// Pipeline statuses before the end (GitLab's `created`, `waiting_for_resource`, `preparing`,
/// `pending`, `running`, `manual`, `scheduled`, `canceling`).
const PIPELINE_OPEN: &[&str] = &[
    "created",
    "waiting_for_resource",
    "preparing",
    "pending",
    "running",
    "manual",
    "scheduled",
    "canceling",
];

/// The repository a delivery is about, with its names as GitLab spells them.
struct Ctx<'a> {
    /// `group/sub/name`, original case.
    path: String,
    repo: Repo,
    web_url: Option<String>,
    default_branch: Option<String>,
    project_id: Option<u64>,
    config: &'a Config,
}

impl<'a> Ctx<'a> {
    fn of(p: &Project, config: &'a Config) -> Self {
        let path = p.path_with_namespace.trim_matches('/').to_string();
        Ctx {
            repo: Repo::new(&path),
            path,
            web_url: p.web_url.clone(),
            default_branch: p.default_branch.clone(),
            project_id: p.id,
            config,
        }
    }

    /// From a project URL (`https://gitlab.com/group/name(.git)`), for hooks without `project`.
    fn of_url(url: &str, config: &'a Config) -> Option<Self> {
        let s = url.trim().trim_end_matches('/').trim_end_matches(".git");
        let (_, rest) = s.split_once("://")?;
        let (_, path) = rest.split_once('/')?;
        path.contains('/').then(|| Ctx {
            repo: Repo::new(path),
            path: path.to_string(),
            web_url: Some(s.to_string()),
            default_branch: None,
            project_id: None,
            config,
        })
    }

    /// Attributes every GitLab span carries: repository identity and team.
    fn base_attrs(&self, labels: &[String]) -> Attrs {
        let mut a = Attrs::new();
        let (owner, name) = self.path.rsplit_once('/').unwrap_or(("", &self.path));
        a.insert("vcs.provider.name".into(), SOURCE.into());
        a.insert("vcs.repository.name".into(), name.into());
        a.insert("vcs.owner.name".into(), owner.into());
        a.insert("valuestream.repository".into(), self.repo.0.clone().into());
        set_opt(&mut a, "vcs.repository.url.full", self.web_url.clone());
        let team = team_from_labels(labels.iter().map(String::as_str))
            .or_else(|| self.config.team_of(&self.repo).map(str::to_string));
        set_opt(&mut a, "valuestream.team", team);
        a
    }

    fn key(&self, segment: &str, id: &str) -> String {
        item_key(SOURCE, segment, &self.repo.0, id)
    }

    fn work(
        &self,
        kind: Kind,
        segment: &str,
        id: &str,
        name: String,
        action: Action,
        labels: &[String],
    ) -> WorkEvent {
        let mut w = WorkEvent::new(kind, self.key(segment, id), name, action);
        w.attributes = self.base_attrs(labels);
        w.repo = Some(self.repo.clone());
        w
    }

    /// A project page under the project's web URL (`/-/pipelines/31`, `/-/jobs/380`).
    fn page(&self, tail: &str) -> Option<String> {
        self.web_url
            .as_deref()
            .map(|u| format!("{}/-/{tail}", u.trim_end_matches('/')))
    }

    fn issue(&self, h: &IssueHook) -> Result<WorkEvent, String> {
        let issue = &h.object_attributes;
        let labels = label_titles(&h.labels, &issue.labels);
        let incident = issue
            .issue_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("incident"))
            || labels
                .iter()
                .any(|l| l.eq_ignore_ascii_case(&self.config.incident_label));
        let (act, reopened) = match issue.action.as_deref() {
            Some("open") => (Action::Open, false),
            Some("reopen") => (Action::Open, true),
            Some("close") => (Action::Close, false),
            Some("update") => (Action::Update, false),
            other => return Err(format!("gitlab issue action {other:?} is not used")),
        };
        let prefix = if incident { "INCIDENT" } else { "ISSUE" };
        // Incidents keep the issue key: a label added later must not make a second item.
        let mut w = self.work(
            if incident {
                Kind::Incident
            } else {
                Kind::Issue
            },
            "issue",
            &issue.iid.to_string(),
            format!("{prefix} #{} {}", issue.iid, issue.title),
            act,
            &labels,
        );
        w.reopened = reopened;
        w.set_times(issue.created_at, issue.updated_at, issue.closed_at);
        if act == Action::Close {
            w.outcome = Some(Outcome::ok(if incident { "resolved" } else { "closed" }));
        }
        let a = &mut w.attributes;
        a.insert("valuestream.issue.number".into(), (issue.iid as i64).into());
        a.insert("valuestream.issue.title".into(), issue.title.clone().into());
        a.insert("valuestream.labels".into(), AttrValue::StrList(labels));
        set_opt(a, "url.full", issue.url.clone());
        Ok(w)
    }

    fn merge_request(&self, h: &MergeRequestHook) -> Result<WorkEvent, String> {
        let mr = &h.object_attributes;
        let labels = label_titles(&h.labels, &mr.labels);
        let action = mr.action.as_deref().unwrap_or_default();
        let (act, reopened) = match action {
            "open" | "opened" => (Action::Open, false),
            "reopen" => (Action::Open, true),
            "merge" | "close" => (Action::Close, false),
            "update" | "approved" | "unapproved" | "approval" | "unapproval" => {
                (Action::Update, false)
            }
            other => return Err(format!("gitlab merge request action {other:?} is not used")),
        };
        let mut w = self.work(
            Kind::Change,
            "change",
            &mr.iid.to_string(),
            format!("MR !{} {}", mr.iid, mr.title),
            act,
            &labels,
        );
        w.reopened = reopened;
        let merged =
            act == Action::Close && (action == "merge" || mr.state.as_deref() == Some("merged"));
        let ended = if merged { mr.merged_at } else { mr.closed_at };
        w.set_times(mr.created_at, mr.updated_at, ended);
        w.head_branch = Some(mr.source_branch.clone());
        w.head_sha = mr.last_commit.as_ref().map(|c| c.id.clone());
        let state = if act == Action::Close {
            w.outcome = Some(Outcome::ok(if merged { "merged" } else { "closed" }));
            if merged {
                w.merge_sha = mr.merge_commit_sha.clone().filter(|s| !s.is_empty());
                "merged"
            } else {
                "closed"
            }
        } else if mr.draft || mr.work_in_progress {
            "wip"
        } else {
            "open"
        };
        if action == "approved" {
            w.span_events.push(SpanEvent {
                name: "approved".into(),
                time: mr.updated_at.unwrap_or(mr.created_at),
                attributes: Attrs::new(),
            });
        }
        // Parents: a vstrace reference in the branch, closing keywords, tracker keys.
        for r in vstrace_refs(&mr.source_branch, Some(&self.repo)) {
            w.parents.push(ParentRef::Item(item_key(
                &r.source,
                "issue",
                &r.repo.0,
                &r.number.to_string(),
            )));
        }
        for r in closing_refs(
            mr.description.as_deref().unwrap_or_default(),
            SOURCE,
            &self.repo,
        ) {
            let k = ParentRef::Item(item_key(SOURCE, "issue", &r.repo.0, &r.number.to_string()));
            if !w.parents.contains(&k) {
                w.parents.push(k);
            }
        }
        for k in tracker_keys(&format!("{} {}", mr.source_branch, mr.title)) {
            w.parents.push(ParentRef::Item(tracker_item_key(&k)));
        }
        let a = &mut w.attributes;
        a.insert("vcs.change.id".into(), mr.iid.to_string().into());
        a.insert("vcs.change.title".into(), mr.title.clone().into());
        a.insert("vcs.change.state".into(), state.into());
        a.insert("vcs.ref.head.name".into(), mr.source_branch.clone().into());
        set_opt(a, "vcs.ref.head.revision", w.head_sha.clone());
        a.insert("vcs.ref.base.name".into(), mr.target_branch.clone().into());
        a.insert("valuestream.labels".into(), AttrValue::StrList(labels));
        set_opt(a, "url.full", mr.url.clone());
        set_opt(a, "valuestream.change.merge_revision", w.merge_sha.clone());
        Ok(w)
    }

    /// The pipeline's name for `cicd.pipeline.name`: its own name (GitLab ≥ 16), else the
    /// project's (a project has one pipeline definition), so metrics do not split per branch.
    fn pipeline_name(&self, name: Option<&str>) -> String {
        name.filter(|n| !n.trim().is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| self.path.rsplit('/').next().unwrap_or(&self.path).into())
    }

    fn pipeline(&self, h: &PipelineHook) -> Translation {
        let p = &h.object_attributes;
        let outcome = pipeline_result(&p.status);
        let act = match (&outcome, PIPELINE_OPEN.contains(&p.status.as_str())) {
            (Some(_), _) => Action::Close,
            (None, true) => Action::Open,
            (None, false) => {
                return Translation::Ignored(format!(
                    "gitlab pipeline status {:?} is not used",
                    p.status
                ))
            }
        };
        let git_ref = p.git_ref.clone().filter(|r| !r.is_empty());
        let pipeline_name = self.pipeline_name(p.name.as_deref());
        let title = p
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .or_else(|| git_ref.clone())
            .unwrap_or_else(|| p.id.to_string());
        let mut w = self.work(
            Kind::PipelineRun,
            "run",
            &p.id.to_string(),
            format!("RUN {title}"),
            act,
            &[],
        );
        // The span covers the pipeline from its creation: GitLab sends no start time in the
        // Pipeline Hook, and the queue time is kept as an attribute.
        w.start = Some(p.created_at);
        if act == Action::Close {
            w.end = Some(p.finished_at.unwrap_or_else(|| {
                p.created_at
                    + secs_delta(p.queued_duration.unwrap_or(0.0) + p.duration.unwrap_or(0.0))
            }));
            w.outcome = outcome;
        }
        w.head_sha = Some(p.sha.clone());
        w.head_branch = git_ref.clone().filter(|_| !p.tag);
        // Parents: the merge request a merge-request pipeline names, else the open change of
        // the commit or branch.
        if let Some(mr) = &h.merge_request {
            if mr.target_project_id.is_none() || mr.target_project_id == self.project_id {
                w.parents
                    .push(ParentRef::Item(self.key("change", &mr.iid.to_string())));
            }
        }
        let branch = w.head_branch.clone();
        w.parent_by_commit(&self.repo, Some(&p.sha), branch.as_deref());
        let a = &mut w.attributes;
        a.insert("cicd.pipeline.name".into(), pipeline_name.clone().into());
        a.insert("cicd.pipeline.run.id".into(), p.id.to_string().into());
        set_opt(
            a,
            "cicd.pipeline.run.url.full",
            p.url
                .clone()
                .or_else(|| self.page(&format!("pipelines/{}", p.id))),
        );
        set_opt(a, "vcs.ref.head.name", git_ref.clone());
        a.insert("vcs.ref.head.revision".into(), p.sha.clone().into());
        set_opt(a, "valuestream.trigger", p.source.clone());
        if let Some(q) = p.queued_duration {
            a.insert("valuestream.queue.duration_s".into(), AttrValue::Float(q));
        }
        let run_key = w.key.clone();
        let mut inputs = vec![Input::Work(w)];
        // One task per job that ran to its end; running and never-run jobs have no span yet.
        for b in &h.builds {
            let task = TaskFacts {
                id: b.id,
                name: &b.name,
                stage: b.stage.as_deref(),
                status: &b.status,
                created_at: b.created_at,
                started_at: b.started_at,
                finished_at: b.finished_at,
                duration: b.duration,
                queued_duration: b.queued_duration,
                allow_failure: b.allow_failure,
                failure_reason: b.failure_reason.as_deref(),
                pipeline_id: p.id,
                run_key: &run_key,
                pipeline_name: &pipeline_name,
                git_ref: git_ref.as_deref(),
                tag: p.tag,
                sha: Some(&p.sha),
            };
            if let Ok(t) = self.task(&task) {
                if t.action == Action::Close {
                    inputs.push(Input::Work(t));
                }
            }
        }
        Translation::Inputs(inputs)
    }

    fn job(&self, h: &JobHook) -> Result<WorkEvent, String> {
        let run_key = self.key("run", &h.pipeline_id.to_string());
        let pipeline_name = self.pipeline_name(h.commit.as_ref().and_then(|c| c.name.as_deref()));
        self.task(&TaskFacts {
            id: h.build_id,
            name: &h.build_name,
            stage: h.build_stage.as_deref(),
            status: &h.build_status,
            created_at: h.build_created_at,
            started_at: h.build_started_at,
            finished_at: h.build_finished_at,
            duration: h.build_duration,
            queued_duration: h.build_queued_duration,
            allow_failure: h.build_allow_failure,
            failure_reason: h.build_failure_reason.as_deref(),
            pipeline_id: h.pipeline_id,
            run_key: &run_key,
            pipeline_name: &pipeline_name,
            git_ref: h.git_ref.as_deref(),
            tag: h.tag,
            sha: h.sha.as_deref(),
        })
    }

    /// A job of a pipeline (from a Job Hook or a Pipeline Hook's `builds`). Its span runs from
    /// `started_at`; a job that never started (created, pending, manual, skipped before
    /// running) has none.
    fn task(&self, t: &TaskFacts) -> Result<WorkEvent, String> {
        let outcome = pipeline_result(t.status);
        let act = match (t.status, &outcome) {
            ("running", _) => Action::Open,
            (_, Some(_)) => Action::Close,
            (other, None) => {
                return Err(format!(
                    "gitlab job status {other:?}: the job has not started"
                ))
            }
        };
        let Some(started) = t.started_at else {
            return Err(format!("gitlab job {} ({}) never started", t.id, t.status));
        };
        let mut w = self.work(
            Kind::Task,
            "task",
            &t.id.to_string(),
            format!("JOB {}", t.name),
            act,
            &[],
        );
        w.start = Some(started);
        if act == Action::Close {
            w.end = Some(
                t.finished_at
                    .unwrap_or_else(|| started + secs_delta(t.duration.unwrap_or(0.0))),
            );
            w.outcome = outcome.map(|o| Outcome {
                // A job allowed to fail fails without failing its pipeline.
                error: o.error && !t.allow_failure,
                ..o
            });
        }
        w.parents.push(ParentRef::Item(t.run_key.to_string()));
        w.head_sha = t.sha.map(str::to_string);
        w.head_branch = t.git_ref.filter(|_| !t.tag).map(str::to_string);
        let failed = w.outcome.as_ref().is_some_and(|o| o.result == "failure");
        let a = &mut w.attributes;
        a.insert("cicd.pipeline.task.name".into(), t.name.into());
        a.insert("cicd.pipeline.task.run.id".into(), t.id.to_string().into());
        a.insert(
            "cicd.pipeline.run.id".into(),
            t.pipeline_id.to_string().into(),
        );
        a.insert("cicd.pipeline.name".into(), t.pipeline_name.into());
        set_opt(
            a,
            "cicd.pipeline.task.run.url.full",
            self.page(&format!("jobs/{}", t.id)),
        );
        set_opt(a, "valuestream.task.stage", t.stage);
        set_opt(a, "vcs.ref.head.name", t.git_ref);
        set_opt(a, "vcs.ref.head.revision", t.sha);
        if t.allow_failure {
            a.insert("valuestream.task.allow_failure".into(), true.into());
        }
        if failed {
            set_opt(a, "error.type", t.failure_reason);
        }
        let queued = t
            .queued_duration
            .or_else(|| t.created_at.map(|c| secs(started - c)));
        if let Some(q) = queued {
            a.insert(
                "valuestream.queue.duration_s".into(),
                AttrValue::Float(q.max(0.0)),
            );
        }
        Ok(w)
    }

    fn deployment(&self, h: &DeploymentHook) -> Result<WorkEvent, String> {
        let (act, outcome) = match h.status.as_str() {
            "running" => (Action::Open, None),
            "success" => (Action::Close, Some(Outcome::ok("success"))),
            "failed" => (Action::Close, Some(Outcome::failed("failure"))),
            "canceled" => (Action::Close, Some(Outcome::ok("cancellation"))),
            other => return Err(format!("gitlab deployment status {other:?} is not used")),
        };
        let mut w = self.work(
            Kind::Deployment,
            "deployment",
            &h.deployment_id.to_string(),
            format!("DEPLOY {}", h.environment),
            act,
            &[],
        );
        // The hook carries only the time of its status change: `running` starts the span,
        // the final status ends it.
        w.start = Some(h.status_changed_at);
        if act == Action::Close {
            w.end = Some(h.status_changed_at);
            w.outcome = outcome;
        }
        w.environment = Some(h.environment.clone());
        // The full commit SHA: `sha` where sent, else the last segment of `commit_url`.
        let sha = h
            .sha
            .clone()
            .or_else(|| {
                h.commit_url
                    .as_deref()
                    .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
                    .filter(|s| s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit()))
                    .map(str::to_string)
            })
            .or_else(|| h.short_sha.clone());
        w.head_sha = sha.clone();
        w.head_branch = h.git_ref.clone();
        w.parent_by_commit(&self.repo, sha.as_deref(), None);
        let a = &mut w.attributes;
        a.insert(
            "deployment.environment.name".into(),
            h.environment.clone().into(),
        );
        a.insert("deployment.id".into(), h.deployment_id.to_string().into());
        set_opt(a, "vcs.ref.head.revision", sha);
        set_opt(a, "vcs.ref.head.name", h.git_ref.clone());
        set_opt(
            a,
            "cicd.pipeline.task.run.id",
            h.deployable_id.map(|i| i.to_string()),
        );
        set_opt(
            a,
            "cicd.pipeline.task.run.url.full",
            h.deployable_url.clone(),
        );
        set_opt(
            a,
            "valuestream.environment.tier",
            h.environment_tier.clone(),
        );
        set_opt(
            a,
            "valuestream.environment.url",
            h.environment_external_url.clone(),
        );
        Ok(w)
    }

    fn push(&self, h: &PushHook) -> Translation {
        let Some(branch) = h.git_ref.strip_prefix("refs/heads/") else {
            return Translation::Ignored("gitlab push: not a branch (tags are not used)".into());
        };
        let after = h.after.clone().unwrap_or_default();
        if after.is_empty() || after.chars().all(|c| c == '0') {
            return Translation::Ignored("gitlab push: branch deletion".into());
        }
        let commits: Vec<Commit> = h
            .commits
            .iter()
            .map(|c| Commit {
                sha: c.id.clone(),
                time: c.timestamp,
                message: c.message.clone(),
            })
            .collect();
        let Some(time) = commits.iter().map(|c| c.time).max() else {
            return Translation::Ignored("gitlab push: no commits".into());
        };
        let default = self.default_branch.as_deref().unwrap_or("main");
        Translation::Inputs(vec![Input::Push(Push {
            repo: self.repo.clone(),
            branch: branch.to_string(),
            to_default_branch: branch == default,
            before: h.before.clone(),
            after,
            time,
            commits,
            attributes: self.base_attrs(&[]),
        })])
    }
}

/// What a task span needs of a job, from either hook that describes one.
struct TaskFacts<'t> {
    id: u64,
    name: &'t str,
    stage: Option<&'t str>,
    status: &'t str,
    created_at: Option<Time>,
    started_at: Option<Time>,
    finished_at: Option<Time>,
    duration: Option<f64>,
    queued_duration: Option<f64>,
    allow_failure: bool,
    failure_reason: Option<&'t str>,
    pipeline_id: u64,
    run_key: &'t str,
    pipeline_name: &'t str,
    git_ref: Option<&'t str>,
    tag: bool,
    sha: Option<&'t str>,
}

/// Label titles: the hook's top-level `labels`, else those of `object_attributes`.
fn label_titles(top: &[Label], inner: &[Label]) -> Vec<String> {
    let src = if top.is_empty() { inner } else { top };
    src.iter().map(|l| l.title.clone()).collect()
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

fn secs_delta(s: f64) -> chrono::TimeDelta {
    chrono::TimeDelta::milliseconds((s * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::de::parse_time;
    use super::*;

    fn utc(s: &str) -> Time {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    #[test]
    fn parses_the_three_gitlab_timestamp_shapes() {
        assert_eq!(
            parse_time("2013-12-03T17:23:34Z"),
            Some(utc("2013-12-03T17:23:34Z"))
        );
        assert_eq!(
            parse_time("2016-08-12 15:23:28 UTC"),
            Some(utc("2016-08-12T15:23:28Z"))
        );
        assert_eq!(
            parse_time("2021-04-28 21:50:00 +0200"),
            Some(utc("2021-04-28T19:50:00Z"))
        );
        // RFC 3339 with offsets and fractions, and the other mixes GitLab versions write.
        assert_eq!(
            parse_time("2012-01-03T23:36:29+02:00"),
            Some(utc("2012-01-03T21:36:29Z"))
        );
        assert_eq!(
            parse_time("2023-01-10T13:50:05.123Z"),
            Some(utc("2023-01-10T13:50:05.123Z"))
        );
        assert_eq!(
            parse_time("2023-01-10 13:50:05.5 UTC"),
            Some(utc("2023-01-10T13:50:05.5Z"))
        );
        assert_eq!(
            parse_time("2021-04-28 21:50:00 -05:30"),
            Some(utc("2021-04-29T03:20:00Z"))
        );
        assert_eq!(
            parse_time("2021-04-28T21:50:00.250+0200"),
            Some(utc("2021-04-28T19:50:00.25Z"))
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(
            parse_time("2021-04-28 21:50:00"),
            None,
            "a zone is required"
        );
    }

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "de::time")]
        at: Time,
        #[serde(default, deserialize_with = "de::opt_time")]
        maybe: Option<Time>,
        #[serde(default, deserialize_with = "de::opt_time")]
        absent: Option<Time>,
    }

    #[test]
    fn serde_helpers_take_every_shape_and_null() {
        for (text, want) in [
            ("2013-12-03T17:23:34Z", "2013-12-03T17:23:34Z"),
            ("2016-08-12 15:23:28 UTC", "2016-08-12T15:23:28Z"),
            ("2021-04-28 21:50:00 +0200", "2021-04-28T19:50:00Z"),
        ] {
            let t: T =
                serde_json::from_value(serde_json::json!({"at": text, "maybe": text})).unwrap();
            assert_eq!(
                (t.at, t.maybe, t.absent),
                (utc(want), Some(utc(want)), None)
            );
        }
        let t: T = serde_json::from_value(
            serde_json::json!({"at": "2013-12-03T17:23:34Z", "maybe": null}),
        )
        .unwrap();
        assert_eq!(t.maybe, None);
        let err = serde_json::from_value::<T>(serde_json::json!({"at": "soon"}))
            .err()
            .unwrap();
        assert!(err.to_string().contains("not a GitLab timestamp"), "{err}");
    }

    #[test]
    fn status_mapping() {
        assert_eq!(pipeline_result("success"), Some(Outcome::ok("success")));
        assert_eq!(pipeline_result("failed"), Some(Outcome::failed("failure")));
        assert_eq!(
            pipeline_result("canceled"),
            Some(Outcome::ok("cancellation"))
        );
        assert_eq!(pipeline_result("skipped"), Some(Outcome::ok("skip")));
        assert_eq!(pipeline_result("running"), None);
        assert_eq!(pipeline_result("pending"), None);
    }

    #[test]
    fn events_by_header_and_object_kind() {
        assert!(matches!(
            Event::from_header("Merge Request Hook"),
            Ok(Event::MergeRequest)
        ));
        assert!(matches!(Event::from_header("Job Hook"), Ok(Event::Job)));
        assert!(Event::from_header("Note Hook")
            .unwrap_err()
            .contains("Note Hook"));
        assert!(matches!(Event::from_object_kind("build"), Ok(Event::Job)));
        assert!(Event::from_object_kind("tag_push").is_err());
    }
}
