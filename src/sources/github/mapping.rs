//! The github mapping: payload types onto the model's work events and pushes, with the
//! attributes of the semantic conventions.

use super::payload::{
    Deployment, DeploymentStatus, Envelope, IssuePayload, PullRequest, Repository, Review,
    WorkflowJob, WorkflowRun,
};
use super::SOURCE;
use crate::config::Config;
use crate::model::attr;
use crate::model::ids::item_key;
use crate::model::refs::{
    deployment_type_from_labels, language_from_labels, team_from_labels, vstrace_parents,
};
use crate::model::{
    set_opt, Action, AttrValue, Attrs, ChangeStep, Commit, Ending, Kind, ParentRef, Repo,
    RepoTraits, ReviewState, ReviewerKind, SpanEvent, StepKind, WorkEvent, WorkResult,
};
use crate::sources::{tracker, vcs, Ignored, Translation};

/// Maps a GitHub Actions `conclusion` onto `cicd.pipeline.result`.
pub fn pipeline_result(conclusion: &str) -> Ending {
    match conclusion {
        "success" | "neutral" => Ending::ok(WorkResult::Success),
        "skipped" => Ending::ok(WorkResult::Skip),
        "cancelled" => Ending::ok(WorkResult::Cancellation),
        "timed_out" => Ending::failed(WorkResult::Timeout),
        "startup_failure" => Ending::failed(WorkResult::Error),
        // failure, action_required, stale, and anything new GitHub adds.
        _ => Ending::failed(WorkResult::Failure),
    }
}

pub(super) struct Ctx<'a> {
    pub(super) repository: &'a Repository,
    pub(super) repo: &'a Repo,
    pub(super) config: &'a Config,
}

impl Ctx<'_> {
    /// Attributes every GitHub span carries: repository identity.
    pub(super) fn base_attrs(&self) -> Attrs {
        let mut a = Attrs::new();
        let (owner, name) = self
            .repository
            .full_name
            .split_once('/')
            .unwrap_or(("", self.repository.full_name.as_str()));
        a.insert(attr::VCS_PROVIDER_NAME.into(), SOURCE.into());
        a.insert(attr::VCS_REPOSITORY_NAME.into(), name.into());
        a.insert(attr::VCS_OWNER_NAME.into(), owner.into());
        set_opt(
            &mut a,
            attr::VCS_REPOSITORY_URL_FULL,
            self.repository.html_url.clone(),
        );
        a
    }

    /// The repository's team, language and deployment type, as the item's labels and the
    /// repository's language and topics say (the team also from `VALUESTREAM_TEAMS`).
    pub(super) fn traits(&self, labels: &[String]) -> RepoTraits {
        let topics = || self.repository.topics.iter().map(String::as_str);
        let labels = || labels.iter().map(String::as_str);
        let non_empty = |v: Option<String>| v.filter(|v| !v.is_empty());
        RepoTraits {
            team: non_empty(
                team_from_labels(labels())
                    .or_else(|| team_from_labels(topics()))
                    .or_else(|| self.config.team_of(self.repo).map(str::to_string)),
            ),
            language: non_empty(
                self.repository
                    .language
                    .clone()
                    .or_else(|| language_from_labels(topics())),
            ),
            deployment_type: non_empty(
                deployment_type_from_labels(labels())
                    .or_else(|| deployment_type_from_labels(topics())),
            ),
            custom: Default::default(),
        }
    }

    pub(super) fn work(
        &self,
        kind: Kind,
        id: &str,
        name: String,
        action: Action,
        labels: &[String],
    ) -> WorkEvent {
        let mut w = WorkEvent::new(
            kind,
            item_key(SOURCE, kind_segment(kind), &self.repo.0, id),
            name,
            action,
        );
        w.attributes = self.base_attrs();
        w.traits = self.traits(labels);
        w.repo = Some(self.repo.clone());
        w
    }

    pub(super) fn issue(&self, action: &str, issue: &IssuePayload) -> Result<WorkEvent, Ignored> {
        let labels: Vec<String> = issue.labels.iter().map(|l| l.name.clone()).collect();
        let kind = tracker::issue_kind(None, labels.iter().map(String::as_str), self.config);
        let (act, reopened) = match action {
            "opened" => (Action::Open, false),
            "reopened" => (Action::Open, true),
            "closed" => (Action::Close, false),
            "edited" | "labeled" | "unlabeled" => (Action::Update, false),
            other => return Err(Ignored::unused("github issues action", other)),
        };
        let prefix = tracker::name_prefix(kind);
        let mut w = self.work(
            Kind::Issue,
            &issue.number.to_string(),
            format!("{prefix} #{} {}", issue.number, issue.title),
            act,
            &labels,
        );
        w.kind = kind;
        w.reopened = reopened;
        w.set_times(issue.created_at, issue.updated_at, issue.closed_at);
        if act == Action::Close {
            let reason = issue
                .state_reason
                .clone()
                .unwrap_or_else(|| "completed".into());
            w.outcome = Some(Ending::ok(
                if kind == Kind::Issue && reason == "not_planned" {
                    WorkResult::NotPlanned
                } else {
                    tracker::closed_result(kind)
                },
            ));
        }
        let a = &mut w.attributes;
        a.insert(attr::ISSUE_NUMBER.into(), (issue.number as i64).into());
        a.insert(attr::ISSUE_TITLE.into(), issue.title.clone().into());
        a.insert(attr::LABELS.into(), AttrValue::StrList(labels.clone()));
        set_opt(a, attr::URL_FULL, issue.html_url.clone());
        set_opt(
            a,
            attr::AUTHOR,
            issue.user.as_ref().map(|u| u.login.clone()),
        );
        set_opt(a, attr::ISSUE_STATE_REASON, issue.state_reason.clone());
        Ok(w)
    }

    pub(super) fn pull_request(
        &self,
        action: &str,
        pr: &PullRequest,
    ) -> Result<WorkEvent, Ignored> {
        let labels: Vec<String> = pr.labels.iter().map(|l| l.name.clone()).collect();
        let (act, reopened) = match action {
            "opened" => (Action::Open, false),
            "reopened" => (Action::Open, true),
            "closed" => (Action::Close, false),
            "edited" | "labeled" | "unlabeled" | "synchronize" | "converted_to_draft"
            | "ready_for_review" | "review_requested" => (Action::Update, false),
            other => return Err(Ignored::unused("github pull_request action", other)),
        };
        let mut w = self.work(
            Kind::Change,
            &pr.number.to_string(),
            format!("PR #{} {}", pr.number, pr.title),
            act,
            &labels,
        );
        w.reopened = reopened;
        w.set_times(pr.created_at, pr.updated_at, pr.merged_at.or(pr.closed_at));
        w.head_branch = Some(pr.head.name.clone());
        w.head_sha = Some(pr.head.sha.clone());
        let state = if act == Action::Close {
            let merged = pr.merged || pr.merged_at.is_some();
            w.outcome = Some(Ending::ok(if merged {
                WorkResult::Merged
            } else {
                WorkResult::Closed
            }));
            if merged {
                w.merge_sha = pr.merge_commit_sha.clone();
            }
            if merged {
                "merged"
            } else {
                "closed"
            }
        } else if pr.draft {
            "wip"
        } else {
            "open"
        };
        change_steps(&mut w, action, pr);
        // Parents: a vstrace reference in the branch, closing keywords, tracker keys.
        vcs::change_parents(
            &mut w,
            SOURCE,
            self.repo,
            &pr.head.name,
            &pr.title,
            pr.body.as_deref().unwrap_or_default(),
        );
        let a = &mut w.attributes;
        a.insert(attr::VCS_CHANGE_ID.into(), pr.number.to_string().into());
        a.insert(attr::VCS_CHANGE_TITLE.into(), pr.title.clone().into());
        a.insert(attr::VCS_CHANGE_STATE.into(), state.into());
        a.insert(attr::VCS_REF_HEAD_NAME.into(), pr.head.name.clone().into());
        a.insert(
            attr::VCS_REF_HEAD_REVISION.into(),
            pr.head.sha.clone().into(),
        );
        a.insert(attr::VCS_REF_BASE_NAME.into(), pr.base.name.clone().into());
        a.insert(
            attr::VCS_REF_BASE_REVISION.into(),
            pr.base.sha.clone().into(),
        );
        w.change_title = Some(pr.title.clone());
        w.change_labels = labels.clone();
        let a = &mut w.attributes;
        a.insert(attr::LABELS.into(), AttrValue::StrList(labels));
        set_opt(a, attr::URL_FULL, pr.html_url.clone());
        set_opt(a, attr::AUTHOR, pr.user.as_ref().map(|u| u.login.clone()));
        set_opt(a, attr::CHANGE_MERGE_REVISION, w.merge_sha.clone());
        Ok(w)
    }

    /// A `pull_request_review` delivery: a step of the change, at the review's own time (a
    /// dismissal or an edit changes no stage and is not used).
    pub(super) fn review(
        &self,
        action: &str,
        pr: &PullRequest,
        review: &Review,
    ) -> Result<WorkEvent, Ignored> {
        if action != "submitted" {
            return Err(Ignored::unused("github pull_request_review action", action));
        }
        let state = match review.state.to_ascii_lowercase().as_str() {
            "approved" => ReviewState::Approved,
            "changes_requested" => ReviewState::ChangesRequested,
            "commented" => ReviewState::Commented,
            other => return Err(Ignored::unused("github review state", other)),
        };
        let author = pr.user.as_ref().map(|u| u.login.as_str());
        let reviewer = match &review.user {
            Some(u) if u.kind.as_deref() == Some("Bot") || u.login.ends_with("[bot]") => {
                ReviewerKind::Bot
            }
            Some(u) if Some(u.login.as_str()) == author => ReviewerKind::Author,
            _ => ReviewerKind::Human,
        };
        let mut w = self.pull_request("edited", pr)?;
        let at = review
            .submitted_at
            .or(pr.updated_at)
            .unwrap_or(pr.created_at);
        w.at = Some(at);
        w.add_step(ChangeStep::review(at, state, reviewer));
        Ok(w)
    }

    pub(super) fn workflow_run(
        &self,
        action: &str,
        run: &WorkflowRun,
        workflow: Option<&str>,
    ) -> Result<WorkEvent, Ignored> {
        let act = match action {
            "requested" | "in_progress" => Action::Open,
            "completed" => Action::Close,
            other => return Err(Ignored::unused("github workflow_run action", other)),
        };
        let attempt = run.run_attempt.unwrap_or(1);
        let name = workflow_name(
            run.name.as_deref().filter(|n| !n.is_empty()).or(workflow),
            run.path.as_deref(),
        );
        let mut w = self.work(
            Kind::PipelineRun,
            &format!("{}/{attempt}", run.id),
            format!("RUN {name}"),
            act,
            &[],
        );
        w.start = Some(run.run_started_at.unwrap_or(run.created_at));
        if act == Action::Close {
            w.end = Some(run.updated_at);
            w.outcome = Some(pipeline_result(
                run.conclusion.as_deref().unwrap_or("failure"),
            ));
        }
        if attempt > 1 {
            w.follows.push(item_key(
                SOURCE,
                "run",
                &self.repo.0,
                &format!("{}/{}", run.id, attempt - 1),
            ));
        }
        w.head_sha = Some(run.head_sha.clone());
        w.head_branch = run.head_branch.clone();
        w.parent_by_commit(self.repo, Some(&run.head_sha), run.head_branch.as_deref());
        w.pipeline = Some(name.clone());
        let a = &mut w.attributes;
        a.insert(attr::CICD_PIPELINE_RUN_ID.into(), run.id.to_string().into());
        a.insert(attr::RUN_ATTEMPT.into(), (attempt as i64).into());
        set_opt(a, attr::CICD_PIPELINE_RUN_URL_FULL, run.html_url.clone());
        set_opt(a, attr::VCS_REF_HEAD_NAME, run.head_branch.clone());
        a.insert(
            attr::VCS_REF_HEAD_REVISION.into(),
            run.head_sha.clone().into(),
        );
        set_opt(a, attr::TRIGGER, run.event.clone());
        if let Some(started) = run.run_started_at {
            a.insert(
                attr::QUEUE_DURATION_S.into(),
                AttrValue::Float(secs(started - run.created_at)),
            );
        }
        Ok(w)
    }

    pub(super) fn workflow_job(
        &self,
        action: &str,
        job: &WorkflowJob,
    ) -> Result<WorkEvent, Ignored> {
        let act = match action {
            "queued" | "in_progress" | "waiting" => Action::Open,
            "completed" => Action::Close,
            other => return Err(Ignored::unused("github workflow_job action", other)),
        };
        let attempt = job.run_attempt.unwrap_or(1);
        let mut w = self.work(
            Kind::Task,
            &job.id.to_string(),
            format!("JOB {}", job.name),
            act,
            &[],
        );
        w.start = Some(job.started_at);
        if act == Action::Close {
            w.end = Some(job.completed_at.unwrap_or(job.started_at));
            w.outcome = Some(pipeline_result(
                job.conclusion.as_deref().unwrap_or("failure"),
            ));
        }
        w.parents.push(ParentRef::Item(item_key(
            SOURCE,
            "run",
            &self.repo.0,
            &format!("{}/{attempt}", job.run_id),
        )));
        w.head_sha = job.head_sha.clone();
        w.head_branch = job.head_branch.clone();
        w.set_pipeline(job.workflow_name.clone());
        let a = &mut w.attributes;
        a.insert(
            attr::CICD_PIPELINE_TASK_NAME.into(),
            job.name.clone().into(),
        );
        a.insert(
            attr::CICD_PIPELINE_TASK_RUN_ID.into(),
            job.id.to_string().into(),
        );
        a.insert(
            attr::CICD_PIPELINE_RUN_ID.into(),
            job.run_id.to_string().into(),
        );
        set_opt(
            a,
            attr::CICD_PIPELINE_TASK_RUN_URL_FULL,
            job.html_url.clone(),
        );
        if let Some(o) = &w.outcome {
            a.insert(attr::CICD_PIPELINE_TASK_RUN_RESULT.into(), o.result.into());
        }
        if let Some(created) = job.created_at {
            a.insert(
                attr::QUEUE_DURATION_S.into(),
                AttrValue::Float(secs(job.started_at - created).max(0.0)),
            );
        }
        Ok(w)
    }

    pub(super) fn deployment(
        &self,
        dep: &Deployment,
        status: Option<&DeploymentStatus>,
    ) -> Result<WorkEvent, Ignored> {
        let (act, outcome, end) = match status.map(|s| s.state.as_str()) {
            None => (Action::Open, None, None),
            Some("success") => (
                Action::Close,
                Some(Ending::ok(WorkResult::Success)),
                status.map(|s| s.created_at),
            ),
            Some("failure") => (
                Action::Close,
                Some(Ending::failed(WorkResult::Failure)),
                status.map(|s| s.created_at),
            ),
            Some("error") => (
                Action::Close,
                Some(Ending::failed(WorkResult::Error)),
                status.map(|s| s.created_at),
            ),
            Some(_) => (Action::Update, None, None),
        };
        let mut w = self.work(
            Kind::Deployment,
            &dep.id.to_string(),
            format!("DEPLOY {}", dep.environment),
            act,
            &[],
        );
        w.start = Some(dep.created_at);
        w.end = end;
        w.outcome = outcome;
        w.environment = Some(dep.environment.clone());
        w.head_sha = Some(dep.sha.clone());
        w.head_branch = dep.git_ref.clone();
        if let Some(s) = status.filter(|_| act == Action::Update) {
            w.span_events.push(SpanEvent {
                name: format!("status {}", s.state),
                time: s.created_at,
                attributes: Attrs::new(),
            });
        }
        // A deployment that names an issue (vstrace reference in its payload or description);
        // otherwise it continues the change whose head or merge commit it deployed.
        let text = format!(
            "{} {}",
            dep.payload,
            dep.description.as_deref().unwrap_or_default()
        );
        w.parents.extend(vstrace_parents(&text, Some(self.repo)));
        w.parent_by_commit(self.repo, Some(&dep.sha), None);
        let a = &mut w.attributes;
        a.insert(
            attr::DEPLOYMENT_ENVIRONMENT_NAME.into(),
            dep.environment.clone().into(),
        );
        a.insert(attr::DEPLOYMENT_ID.into(), dep.id.to_string().into());
        a.insert(attr::VCS_REF_HEAD_REVISION.into(), dep.sha.clone().into());
        set_opt(a, attr::VCS_REF_HEAD_NAME, dep.git_ref.clone());
        set_opt(
            a,
            attr::DEPLOYMENT_STATUS_DESCRIPTION,
            status.and_then(|s| s.description.clone()),
        );
        Ok(w)
    }

    pub(super) fn push(&self, env: &Envelope) -> Translation {
        let commits = env
            .commits
            .iter()
            .map(|c| Commit {
                sha: c.id.clone(),
                time: c.timestamp,
                message: c.message.clone(),
                merges: merges_a_pull_request(&c.message),
            })
            .collect();
        let facts = vcs::PushPayload {
            git_ref: env.git_ref.as_deref().unwrap_or_default(),
            before: env.before.clone(),
            after: env.after.clone(),
            deleted: env.deleted,
            default_branch: self.repository.default_branch.as_deref(),
            commits,
        };
        vcs::push(SOURCE, self.repo, facts, self.base_attrs())
    }
}

/// The change's steps a pull request delivery records, which the stage rule reads
/// (docs/metrics.md "Change stages").
fn change_steps(w: &mut WorkEvent, action: &str, pr: &PullRequest) {
    let updated = pr.updated_at.unwrap_or(pr.created_at);
    match action {
        "opened" if pr.draft => w
            .steps
            .push(ChangeStep::new(StepKind::Draft, pr.created_at)),
        "converted_to_draft" => w.add_step(ChangeStep::new(StepKind::Draft, updated)),
        "ready_for_review" => w.add_step(ChangeStep::new(StepKind::Ready, updated)),
        "review_requested" => w.add_step(ChangeStep::new(StepKind::ReviewRequested, updated)),
        _ => {}
    }
}

pub(super) static MERGE_MESSAGE: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| {
        regex::Regex::new(r"(?m)\A(?:Merge pull request #\d+|.*\(#\d+\)\s*$)").unwrap()
    });

/// Whether a commit message is the one GitHub writes for a merged pull request: the merge
/// commit's `Merge pull request #12 …`, or a squash commit's `Title (#12)` first line.
pub(super) fn merges_a_pull_request(message: &str) -> bool {
    MERGE_MESSAGE.is_match(message)
}

pub(super) fn kind_segment(kind: Kind) -> &'static str {
    match kind {
        Kind::Issue | Kind::Incident => "issue",
        Kind::Change => "change",
        Kind::PipelineRun => "run",
        Kind::Task => "task",
        Kind::Deployment => "deployment",
    }
}

pub(super) fn workflow_name(name: Option<&str>, path: Option<&str>) -> String {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => path
            .and_then(|p| p.rsplit('/').next())
            .filter(|p| !p.is_empty())
            .unwrap_or("workflow")
            .to_string(),
    }
}

pub(super) fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}
