//! The gitlab mapping: payload types onto the model's work events and pushes, with the
//! attributes of the semantic conventions.

use super::payload::{
    DeploymentHook, IssueHook, JobHook, Label, MergeRequestHook, PipelineHook, Project, PushHook,
};
use super::SOURCE;
use crate::config::Config;
use crate::model::attr;
use crate::model::ids::item_key;
use crate::model::refs::team_from_labels;
use crate::model::{
    set_opt, Action, AttrValue, Attrs, ChangeStep, Commit, Ending, Input, Kind, ParentRef, Repo,
    RepoTraits, ReviewState, ReviewerKind, StepKind, Time, WorkEvent, WorkResult,
};
use crate::sources::{tracker, vcs, Ignored, Translation};

/// Maps a GitLab pipeline or job status onto `cicd.pipeline.result`; `None` while it runs.
pub fn pipeline_result(status: &str) -> Option<Ending> {
    Some(match status {
        "success" => Ending::ok(WorkResult::Success),
        "failed" => Ending::failed(WorkResult::Failure),
        "canceled" => Ending::ok(WorkResult::Cancellation),
        "skipped" => Ending::ok(WorkResult::Skip),
        _ => return None,
    })
}

/// Pipeline statuses before the end (GitLab's `created`, `waiting_for_resource`, `preparing`,
/// `pending`, `running`, `manual`, `scheduled`, `canceling`).
pub(super) const PIPELINE_OPEN: &[&str] = &[
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
pub(super) struct Ctx<'a> {
    /// `group/sub/name`, original case.
    pub(super) path: String,
    pub(super) repo: Repo,
    pub(super) web_url: Option<String>,
    pub(super) default_branch: Option<String>,
    pub(super) project_id: Option<u64>,
    pub(super) config: &'a Config,
}

impl<'a> Ctx<'a> {
    pub(super) fn of(p: &Project, config: &'a Config) -> Self {
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
    pub(super) fn of_url(url: &str, config: &'a Config) -> Option<Self> {
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

    /// Attributes every GitLab span carries: repository identity.
    pub(super) fn base_attrs(&self) -> Attrs {
        let mut a = Attrs::new();
        let (owner, name) = self.path.rsplit_once('/').unwrap_or(("", &self.path));
        a.insert(attr::VCS_PROVIDER_NAME.into(), SOURCE.into());
        a.insert(attr::VCS_REPOSITORY_NAME.into(), name.into());
        a.insert(attr::VCS_OWNER_NAME.into(), owner.into());
        set_opt(&mut a, attr::VCS_REPOSITORY_URL_FULL, self.web_url.clone());
        a
    }

    /// The repository's team, as the item's labels or `VALUESTREAM_TEAMS` say.
    pub(super) fn traits(&self, labels: &[String]) -> RepoTraits {
        RepoTraits {
            team: team_from_labels(labels.iter().map(String::as_str))
                .or_else(|| self.config.team_of(&self.repo).map(str::to_string))
                .filter(|t| !t.is_empty()),
            ..Default::default()
        }
    }

    pub(super) fn key(&self, segment: &str, id: &str) -> String {
        item_key(SOURCE, segment, &self.repo.0, id)
    }

    pub(super) fn work(
        &self,
        kind: Kind,
        segment: &str,
        id: &str,
        name: String,
        action: Action,
        labels: &[String],
    ) -> WorkEvent {
        let mut w = WorkEvent::new(kind, self.key(segment, id), name, action);
        w.attributes = self.base_attrs();
        w.traits = self.traits(labels);
        w.repo = Some(self.repo.clone());
        w
    }

    /// A project page under the project's web URL (`/-/pipelines/31`, `/-/jobs/380`).
    pub(super) fn page(&self, tail: &str) -> Option<String> {
        self.web_url
            .as_deref()
            .map(|u| format!("{}/-/{tail}", u.trim_end_matches('/')))
    }

    pub(super) fn issue(&self, h: &IssueHook) -> Result<WorkEvent, Ignored> {
        let issue = &h.object_attributes;
        let labels = label_titles(&h.labels, &issue.labels);
        let kind = tracker::issue_kind(
            issue.issue_type.as_deref(),
            labels.iter().map(String::as_str),
            self.config,
        );
        let (act, reopened) = match issue.action.as_deref() {
            Some("open") => (Action::Open, false),
            Some("reopen") => (Action::Open, true),
            Some("close") => (Action::Close, false),
            Some("update") => (Action::Update, false),
            other => return Err(Ignored::unused("gitlab issue action", other)),
        };
        let prefix = tracker::name_prefix(kind);
        // Incidents keep the issue key: a label added later must not make a second item.
        let mut w = self.work(
            kind,
            "issue",
            &issue.iid.to_string(),
            format!("{prefix} #{} {}", issue.iid, issue.title),
            act,
            &labels,
        );
        w.reopened = reopened;
        w.set_times(issue.created_at, issue.updated_at, issue.closed_at);
        if act == Action::Close {
            w.outcome = Some(Ending::ok(tracker::closed_result(kind)));
        }
        let a = &mut w.attributes;
        a.insert(attr::ISSUE_NUMBER.into(), (issue.iid as i64).into());
        a.insert(attr::ISSUE_TITLE.into(), issue.title.clone().into());
        a.insert(attr::LABELS.into(), AttrValue::StrList(labels));
        set_opt(a, attr::URL_FULL, issue.url.clone());
        Ok(w)
    }

    pub(super) fn merge_request(&self, h: &MergeRequestHook) -> Result<WorkEvent, Ignored> {
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
            other => return Err(Ignored::unused("gitlab merge request action", other)),
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
            w.outcome = Some(Ending::ok(if merged {
                WorkResult::Merged
            } else {
                WorkResult::Closed
            }));
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
        self.change_steps(&mut w, h, action);
        // Parents: a vstrace reference in the branch, closing keywords, tracker keys.
        vcs::change_parents(
            &mut w,
            SOURCE,
            &self.repo,
            &mr.source_branch,
            &mr.title,
            mr.description.as_deref().unwrap_or_default(),
        );
        let a = &mut w.attributes;
        a.insert(attr::VCS_CHANGE_ID.into(), mr.iid.to_string().into());
        a.insert(attr::VCS_CHANGE_TITLE.into(), mr.title.clone().into());
        a.insert(attr::VCS_CHANGE_STATE.into(), state.into());
        a.insert(
            attr::VCS_REF_HEAD_NAME.into(),
            mr.source_branch.clone().into(),
        );
        set_opt(a, attr::VCS_REF_HEAD_REVISION, w.head_sha.clone());
        a.insert(
            attr::VCS_REF_BASE_NAME.into(),
            mr.target_branch.clone().into(),
        );
        w.change_title = Some(mr.title.clone());
        w.change_labels = labels.clone();
        let a = &mut w.attributes;
        a.insert(attr::LABELS.into(), AttrValue::StrList(labels));
        set_opt(a, attr::URL_FULL, mr.url.clone());
        set_opt(a, attr::CHANGE_MERGE_REVISION, w.merge_sha.clone());
        Ok(w)
    }

    /// The merge request's steps, which the stage rule reads (docs/metrics.md "Change stages"):
    /// opened as a draft, draft → ready and back (`changes.draft`), reviewers added
    /// (`changes.reviewers`), and approvals (`approval`/`approved`, by the hook's `user`).
    fn change_steps(&self, w: &mut WorkEvent, h: &MergeRequestHook, action: &str) {
        let mr = &h.object_attributes;
        let updated = mr.updated_at.unwrap_or(mr.created_at);
        if matches!(action, "open" | "opened") && (mr.draft || mr.work_in_progress) {
            w.steps
                .push(ChangeStep::new(StepKind::Draft, mr.created_at));
        }
        let changes = h.changes.as_ref();
        if let Some(d) = changes.and_then(|c| c.draft.as_ref()) {
            match (d.previous, d.current) {
                (Some(true), Some(false)) => w.add_step(ChangeStep::new(StepKind::Ready, updated)),
                (Some(false), Some(true)) => w.add_step(ChangeStep::new(StepKind::Draft, updated)),
                _ => {}
            }
        }
        if let Some(r) = changes.and_then(|c| c.reviewers.as_ref()) {
            // A reviewer named now and not before: a review was requested. The same list
            // repeated (GitLab sends `changes.reviewers` with other changes) requests nothing;
            // one reviewer swapped for another does.
            let who = |v: &serde_json::Value| v.get("id").or_else(|| v.get("username")).cloned();
            let before: Vec<_> = r.previous.iter().flatten().filter_map(who).collect();
            let added = r
                .current
                .iter()
                .flatten()
                .filter_map(who)
                .any(|x| !before.contains(&x));
            if added {
                w.add_step(ChangeStep::new(StepKind::ReviewRequested, updated));
            }
        }
        if matches!(action, "approved" | "approval") {
            let by = h.user.as_ref();
            let username = by.map(|u| u.username.as_str()).unwrap_or_default();
            // GitLab's project and group access tokens act as `project_<id>_bot_…` users.
            let bot = username.ends_with("-bot")
                || username.ends_with("[bot]")
                || username.contains("_bot");
            let reviewer = if bot {
                ReviewerKind::Bot
            } else if by.and_then(|u| u.id).is_some() && by.and_then(|u| u.id) == mr.author_id {
                ReviewerKind::Author
            } else {
                ReviewerKind::Human
            };
            w.add_step(ChangeStep::review(updated, ReviewState::Approved, reviewer));
        }
    }

    /// The pipeline's name for `cicd.pipeline.name`: its own name (GitLab ≥ 16), else the
    /// project's (a project has one pipeline definition), so metrics do not split per branch.
    pub(super) fn pipeline_name(&self, name: Option<&str>) -> String {
        name.filter(|n| !n.trim().is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| self.path.rsplit('/').next().unwrap_or(&self.path).into())
    }

    /// A Pipeline Hook: the run, and a task for each job that ran to its end.
    pub(super) fn pipeline(&self, h: &PipelineHook) -> Translation {
        let p = &h.object_attributes;
        let outcome = pipeline_result(&p.status);
        let act = match (&outcome, PIPELINE_OPEN.contains(&p.status.as_str())) {
            (Some(_), _) => Action::Close,
            (None, true) => Action::Open,
            (None, false) => {
                return Translation::Ignored(Ignored::unused("gitlab pipeline status", &p.status))
            }
        };
        let pipeline_name = self.pipeline_name(p.name.as_deref());
        let run = self.pipeline_run(h, act, outcome, &pipeline_name);
        let tasks = self.pipeline_tasks(h, &run.key, &pipeline_name);
        Translation::Inputs(std::iter::once(run).chain(tasks).map(Input::Work).collect())
    }

    /// The run of a Pipeline Hook: it covers the pipeline from its creation (GitLab sends no
    /// start time; the queue time is kept as an attribute), and its parent is the merge request
    /// a merge-request pipeline names, else the open change of its commit or branch.
    fn pipeline_run(
        &self,
        h: &PipelineHook,
        act: Action,
        outcome: Option<Ending>,
        pipeline_name: &str,
    ) -> WorkEvent {
        let p = &h.object_attributes;
        let git_ref = p.git_ref.clone().filter(|r| !r.is_empty());
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
        if let Some(mr) = &h.merge_request {
            if mr.target_project_id.is_none() || mr.target_project_id == self.project_id {
                w.parents
                    .push(ParentRef::Item(self.key("change", &mr.iid.to_string())));
            }
        }
        let branch = w.head_branch.clone();
        w.parent_by_commit(&self.repo, Some(&p.sha), branch.as_deref());
        w.pipeline = Some(pipeline_name.to_string());
        let a = &mut w.attributes;
        a.insert(attr::CICD_PIPELINE_RUN_ID.into(), p.id.to_string().into());
        set_opt(
            a,
            attr::CICD_PIPELINE_RUN_URL_FULL,
            p.url
                .clone()
                .or_else(|| self.page(&format!("pipelines/{}", p.id))),
        );
        set_opt(a, attr::VCS_REF_HEAD_NAME, git_ref);
        a.insert(attr::VCS_REF_HEAD_REVISION.into(), p.sha.clone().into());
        set_opt(a, attr::TRIGGER, p.source.clone());
        if let Some(q) = p.queued_duration {
            a.insert(attr::QUEUE_DURATION_S.into(), AttrValue::Float(q));
        }
        w
    }

    /// One task per job of a Pipeline Hook that ran to its end; running and never-run jobs have
    /// no span yet.
    fn pipeline_tasks(
        &self,
        h: &PipelineHook,
        run_key: &str,
        pipeline_name: &str,
    ) -> Vec<WorkEvent> {
        let p = &h.object_attributes;
        let git_ref = p.git_ref.as_deref().filter(|r| !r.is_empty());
        h.builds
            .iter()
            .filter_map(|b| {
                self.task(&TaskFacts {
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
                    run_key,
                    pipeline_name,
                    git_ref,
                    tag: p.tag,
                    sha: Some(&p.sha),
                })
                .ok()
            })
            .filter(|t| t.action == Action::Close)
            .collect()
    }

    pub(super) fn job(&self, h: &JobHook) -> Result<WorkEvent, Ignored> {
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
    pub(super) fn task(&self, t: &TaskFacts) -> Result<WorkEvent, Ignored> {
        let outcome = pipeline_result(t.status);
        let act = match (t.status, &outcome) {
            ("running", _) => Action::Open,
            (_, Some(_)) => Action::Close,
            (other, None) => {
                return Err(Ignored::because(format!(
                    "gitlab job status {other:?}: the job has not started"
                )))
            }
        };
        let Some(started) = t.started_at else {
            return Err(Ignored::because(format!(
                "gitlab job {} ({}) never started",
                t.id, t.status
            )));
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
            w.outcome = outcome.map(|o| Ending {
                // A job allowed to fail fails without failing its pipeline.
                error: o.error && !t.allow_failure,
                ..o
            });
        }
        w.parents.push(ParentRef::Item(t.run_key.to_string()));
        w.head_sha = t.sha.map(str::to_string);
        w.head_branch = t.git_ref.filter(|_| !t.tag).map(str::to_string);
        let failed = w
            .outcome
            .as_ref()
            .is_some_and(|o| o.result == WorkResult::Failure);
        w.pipeline = Some(t.pipeline_name.to_string());
        let a = &mut w.attributes;
        a.insert(attr::CICD_PIPELINE_TASK_NAME.into(), t.name.into());
        a.insert(
            attr::CICD_PIPELINE_TASK_RUN_ID.into(),
            t.id.to_string().into(),
        );
        a.insert(
            attr::CICD_PIPELINE_RUN_ID.into(),
            t.pipeline_id.to_string().into(),
        );
        set_opt(
            a,
            attr::CICD_PIPELINE_TASK_RUN_URL_FULL,
            self.page(&format!("jobs/{}", t.id)),
        );
        set_opt(a, attr::TASK_STAGE, t.stage);
        if let Some(kind) = t.stage.and_then(task_type) {
            a.insert(attr::CICD_PIPELINE_TASK_TYPE.into(), kind.into());
        }
        set_opt(a, attr::VCS_REF_HEAD_NAME, t.git_ref);
        set_opt(a, attr::VCS_REF_HEAD_REVISION, t.sha);
        if t.allow_failure {
            a.insert(attr::TASK_ALLOW_FAILURE.into(), true.into());
        }
        if failed {
            set_opt(a, attr::ERROR_TYPE, t.failure_reason);
        }
        let queued = t
            .queued_duration
            .or_else(|| t.created_at.map(|c| secs(started - c)));
        if let Some(q) = queued {
            a.insert(attr::QUEUE_DURATION_S.into(), AttrValue::Float(q.max(0.0)));
        }
        Ok(w)
    }

    pub(super) fn deployment(&self, h: &DeploymentHook) -> Result<WorkEvent, Ignored> {
        let (act, outcome) = match h.status.as_str() {
            "running" => (Action::Open, None),
            "success" => (Action::Close, Some(Ending::ok(WorkResult::Success))),
            "failed" => (Action::Close, Some(Ending::failed(WorkResult::Failure))),
            "canceled" => (Action::Close, Some(Ending::ok(WorkResult::Cancellation))),
            other => return Err(Ignored::unused("gitlab deployment status", other)),
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
            attr::DEPLOYMENT_ENVIRONMENT_NAME.into(),
            h.environment.clone().into(),
        );
        a.insert(
            attr::DEPLOYMENT_ID.into(),
            h.deployment_id.to_string().into(),
        );
        set_opt(a, attr::VCS_REF_HEAD_REVISION, sha);
        set_opt(a, attr::VCS_REF_HEAD_NAME, h.git_ref.clone());
        set_opt(
            a,
            attr::CICD_PIPELINE_TASK_RUN_ID,
            h.deployable_id.map(|i| i.to_string()),
        );
        set_opt(
            a,
            attr::CICD_PIPELINE_TASK_RUN_URL_FULL,
            h.deployable_url.clone(),
        );
        set_opt(a, attr::ENVIRONMENT_TIER, h.environment_tier.clone());
        set_opt(a, attr::ENVIRONMENT_URL, h.environment_external_url.clone());
        Ok(w)
    }

    pub(super) fn push(&self, h: &PushHook) -> Translation {
        let commits = h
            .commits
            .iter()
            .map(|c| Commit {
                sha: c.id.clone(),
                time: c.timestamp,
                message: c.message.clone(),
                merges: merges_a_merge_request(&c.message),
            })
            .collect();
        let facts = vcs::PushPayload {
            git_ref: &h.git_ref,
            before: h.before.clone(),
            after: h.after.clone(),
            deleted: false,
            default_branch: self.default_branch.as_deref(),
            commits,
        };
        vcs::push(SOURCE, &self.repo, facts, self.base_attrs())
    }
}

/// OpenTelemetry's task type of a GitLab stage: its default stage names are those types.
fn task_type(stage: &str) -> Option<&'static str> {
    ["build", "test", "deploy"]
        .into_iter()
        .find(|k| stage.eq_ignore_ascii_case(k))
}

/// What a task span needs of a job, from either hook that describes one.
pub(super) struct TaskFacts<'t> {
    pub(super) id: u64,
    pub(super) name: &'t str,
    pub(super) stage: Option<&'t str>,
    pub(super) status: &'t str,
    pub(super) created_at: Option<Time>,
    pub(super) started_at: Option<Time>,
    pub(super) finished_at: Option<Time>,
    pub(super) duration: Option<f64>,
    pub(super) queued_duration: Option<f64>,
    pub(super) allow_failure: bool,
    pub(super) failure_reason: Option<&'t str>,
    pub(super) pipeline_id: u64,
    pub(super) run_key: &'t str,
    pub(super) pipeline_name: &'t str,
    pub(super) git_ref: Option<&'t str>,
    pub(super) tag: bool,
    pub(super) sha: Option<&'t str>,
}

/// Label titles: the hook's top-level `labels`, else those of `object_attributes`.
/// Whether a commit message is the one GitLab writes for a merged merge request: its merge (or
/// squash) commit ends with `See merge request group/repo!3`.
pub(super) fn merges_a_merge_request(message: &str) -> bool {
    message.contains("See merge request ")
}

pub(super) fn label_titles(top: &[Label], inner: &[Label]) -> Vec<String> {
    let src = if top.is_empty() { inner } else { top };
    src.iter().map(|l| l.title.clone()).collect()
}

pub(super) fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

pub(super) fn secs_delta(s: f64) -> chrono::TimeDelta {
    chrono::TimeDelta::milliseconds((s * 1000.0).round() as i64)
}
