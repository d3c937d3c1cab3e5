//! GitHub: `X-Hub-Signature-256` verification and the translation of `issues`, `pull_request`,
//! `workflow_run`, `workflow_job`, `deployment`, `deployment_status` and `push` deliveries into
//! normalized events. The payload model (only the fields we use) and its mapping to
//! semantic-convention attributes live here and nowhere else.

use super::{
    authenticate_with, parse_json, verify, Delivery, Source, SourceError, Translated, Translation,
};
use crate::config::Config;
use crate::model::attr;
use crate::model::ids::item_key;
use crate::model::refs::{
    closing_refs, deployment_type_from_labels, language_from_labels, team_from_labels,
    tracker_item_key, tracker_keys, vstrace_refs,
};
use crate::model::{
    set_opt, Action, AttrValue, Attrs, Commit, Input, Kind, Outcome, ParentRef, Push, Repo,
    SpanEvent, Time, WorkEvent,
};
use serde::Deserialize;

pub struct GitHub;

const SOURCE: &str = "github";

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    html_url: Option<String>,
    default_branch: Option<String>,
    language: Option<String>,
    #[serde(default)]
    topics: Vec<String>,
}

#[derive(Deserialize)]
struct Label {
    name: String,
}

#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct IssuePayload {
    number: u64,
    title: String,
    html_url: Option<String>,
    created_at: Time,
    closed_at: Option<Time>,
    updated_at: Option<Time>,
    #[serde(default)]
    labels: Vec<Label>,
    user: Option<User>,
    state_reason: Option<String>,
}

#[derive(Deserialize)]
struct GitRef {
    #[serde(rename = "ref")]
    name: String,
    sha: String,
}

#[derive(Deserialize)]
struct PullRequest {
    number: u64,
    title: String,
    body: Option<String>,
    html_url: Option<String>,
    created_at: Time,
    updated_at: Option<Time>,
    closed_at: Option<Time>,
    merged_at: Option<Time>,
    #[serde(default)]
    merged: bool,
    #[serde(default)]
    draft: bool,
    merge_commit_sha: Option<String>,
    head: GitRef,
    base: GitRef,
    #[serde(default)]
    labels: Vec<Label>,
    user: Option<User>,
}

#[derive(Deserialize)]
struct WorkflowRun {
    id: u64,
    name: Option<String>,
    path: Option<String>,
    html_url: Option<String>,
    head_branch: Option<String>,
    head_sha: String,
    run_attempt: Option<u64>,
    created_at: Time,
    run_started_at: Option<Time>,
    updated_at: Time,
    conclusion: Option<String>,
    event: Option<String>,
}

#[derive(Deserialize)]
struct WorkflowJob {
    id: u64,
    run_id: u64,
    run_attempt: Option<u64>,
    name: String,
    html_url: Option<String>,
    head_branch: Option<String>,
    head_sha: Option<String>,
    workflow_name: Option<String>,
    created_at: Option<Time>,
    started_at: Time,
    completed_at: Option<Time>,
    conclusion: Option<String>,
}

#[derive(Deserialize)]
struct Deployment {
    id: u64,
    sha: String,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    environment: String,
    created_at: Time,
    description: Option<String>,
    #[serde(default)]
    payload: serde_json::Value,
}

#[derive(Deserialize)]
struct DeploymentStatus {
    state: String,
    created_at: Time,
    description: Option<String>,
}

#[derive(Deserialize)]
struct PushCommit {
    id: String,
    timestamp: Time,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Workflow {
    name: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    action: Option<String>,
    workflow: Option<Workflow>,
    repository: Option<Repository>,
    issue: Option<IssuePayload>,
    pull_request: Option<PullRequest>,
    workflow_run: Option<WorkflowRun>,
    workflow_job: Option<WorkflowJob>,
    deployment: Option<Deployment>,
    deployment_status: Option<DeploymentStatus>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    before: Option<String>,
    after: Option<String>,
    #[serde(default)]
    commits: Vec<PushCommit>,
    #[serde(default)]
    deleted: bool,
}

impl Source for GitHub {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn authenticate(&self, d: &Delivery, config: &Config) -> Result<(), SourceError> {
        authenticate_with(
            SOURCE,
            "VALUESTREAM_GITHUB_SECRET",
            &config.github_secret,
            d.header("x-hub-signature-256"),
            config,
            |secret, presented| {
                presented
                    .strip_prefix("sha256=")
                    .is_some_and(|hex| verify::hmac_sha256_matches(secret, d.body, hex))
            },
        )
    }

    fn translate(&self, d: &Delivery, config: &Config) -> Result<Translated, SourceError> {
        let delivery_id = d
            .header("x-github-delivery")
            .map(str::to_string)
            .unwrap_or_else(|| crate::model::ids::short_hash(d.body));
        let event = d
            .header("x-github-event")
            .ok_or_else(|| {
                SourceError::Malformed("github: X-GitHub-Event header is missing".into())
            })?
            .to_string();
        let translation = translate(&event, d.body, config)?;
        Ok(Translated {
            delivery_id,
            translation,
        })
    }

    fn sign(&self, body: &[u8], config: &Config) -> Vec<(String, String)> {
        config
            .github_secret
            .get()
            .map(|s| {
                vec![(
                    "x-hub-signature-256".into(),
                    format!("sha256={}", verify::hmac_sha256_hex(s, body)),
                )]
            })
            .unwrap_or_default()
    }
}

fn ignored(why: String) -> Result<Translation, SourceError> {
    Ok(Translation::Ignored(why))
}

fn translate(event: &str, body: &[u8], config: &Config) -> Result<Translation, SourceError> {
    const USED: &[&str] = &[
        "ping",
        "issues",
        "pull_request",
        "workflow_run",
        "workflow_job",
        "deployment",
        "deployment_status",
        "push",
    ];
    if !USED.contains(&event) {
        // Checked before parsing: every other event GitHub can send is answered "ignored".
        return ignored(format!("github event {event:?} is not used"));
    }
    let env: Envelope = parse_json(SOURCE, body)?;
    if event == "ping" {
        return Ok(Translation::Inputs(Vec::new()));
    }
    let action = env.action.clone().unwrap_or_default();
    let Some(repository) = env.repository.as_ref() else {
        return Err(SourceError::Malformed(format!(
            "github: {event} delivery has no repository"
        )));
    };
    let repo = Repo::new(&repository.full_name);
    let ctx = Ctx {
        repository,
        repo: &repo,
        config,
    };
    let missing =
        |field: &str| SourceError::Malformed(format!("github: {event} delivery has no {field}"));
    let input = match event {
        "issues" => ctx.issue(&action, env.issue.as_ref().ok_or_else(|| missing("issue"))?),
        "pull_request" => ctx.pull_request(
            &action,
            env.pull_request
                .as_ref()
                .ok_or_else(|| missing("pull_request"))?,
        ),
        "workflow_run" => ctx.workflow_run(
            &action,
            env.workflow_run
                .as_ref()
                .ok_or_else(|| missing("workflow_run"))?,
            env.workflow.as_ref().and_then(|w| w.name.as_deref()),
        ),
        "workflow_job" => ctx.workflow_job(
            &action,
            env.workflow_job
                .as_ref()
                .ok_or_else(|| missing("workflow_job"))?,
        ),
        "deployment" => ctx.deployment(
            env.deployment
                .as_ref()
                .ok_or_else(|| missing("deployment"))?,
            None,
        ),
        "deployment_status" => ctx.deployment(
            env.deployment
                .as_ref()
                .ok_or_else(|| missing("deployment"))?,
            Some(
                env.deployment_status
                    .as_ref()
                    .ok_or_else(|| missing("deployment_status"))?,
            ),
        ),
        "push" => return ctx.push(&env),
        _ => unreachable!("checked against USED"),
    };
    Ok(match input {
        Ok(work) => Translation::Inputs(vec![Input::Work(work)]),
        Err(why) => Translation::Ignored(why),
    })
}

/// Maps a GitHub Actions `conclusion` onto `cicd.pipeline.result`.
pub fn pipeline_result(conclusion: &str) -> Outcome {
    match conclusion {
        "success" | "neutral" => Outcome::ok("success"),
        "skipped" => Outcome::ok("skip"),
        "cancelled" => Outcome::ok("cancellation"),
        "timed_out" => Outcome::failed("timeout"),
        "startup_failure" => Outcome::failed("error"),
        // failure, action_required, stale, and anything new GitHub adds.
        _ => Outcome::failed("failure"),
    }
}

struct Ctx<'a> {
    repository: &'a Repository,
    repo: &'a Repo,
    config: &'a Config,
}

impl Ctx<'_> {
    /// Attributes every GitHub span carries: repository identity, team, language.
    fn base_attrs(&self, labels: &[String]) -> Attrs {
        let mut a = Attrs::new();
        let (owner, name) = self
            .repository
            .full_name
            .split_once('/')
            .unwrap_or(("", self.repository.full_name.as_str()));
        a.insert("vcs.provider.name".into(), SOURCE.into());
        a.insert("vcs.repository.name".into(), name.into());
        a.insert("vcs.owner.name".into(), owner.into());
        a.insert("valuestream.repository".into(), self.repo.0.clone().into());
        set_opt(
            &mut a,
            "vcs.repository.url.full",
            self.repository.html_url.clone(),
        );
        let topics = || self.repository.topics.iter().map(String::as_str);
        set_opt(
            &mut a,
            attr::LANGUAGE,
            self.repository
                .language
                .clone()
                .or_else(|| language_from_labels(topics())),
        );
        set_opt(
            &mut a,
            attr::DEPLOYMENT_TYPE,
            deployment_type_from_labels(labels.iter().map(String::as_str))
                .or_else(|| deployment_type_from_labels(topics())),
        );
        let team = team_from_labels(labels.iter().map(String::as_str))
            .or_else(|| team_from_labels(topics()))
            .or_else(|| self.config.team_of(self.repo).map(str::to_string));
        set_opt(&mut a, "valuestream.team", team);
        a
    }

    fn work(
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
        w.attributes = self.base_attrs(labels);
        w.repo = Some(self.repo.clone());
        w
    }

    fn issue(&self, action: &str, issue: &IssuePayload) -> Result<WorkEvent, String> {
        let labels: Vec<String> = issue.labels.iter().map(|l| l.name.clone()).collect();
        let incident = labels
            .iter()
            .any(|l| l.eq_ignore_ascii_case(&self.config.incident_label));
        let (act, reopened) = match action {
            "opened" => (Action::Open, false),
            "reopened" => (Action::Open, true),
            "closed" => (Action::Close, false),
            "edited" | "labeled" | "unlabeled" => (Action::Update, false),
            other => return Err(format!("github issues action {other:?} is not used")),
        };
        let kind = if incident {
            Kind::Incident
        } else {
            Kind::Issue
        };
        let prefix = if incident { "INCIDENT" } else { "ISSUE" };
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
            w.outcome = Some(if incident {
                Outcome::ok("resolved")
            } else {
                Outcome::ok(if reason == "not_planned" {
                    "not_planned"
                } else {
                    "closed"
                })
            });
        }
        let a = &mut w.attributes;
        a.insert(
            "valuestream.issue.number".into(),
            (issue.number as i64).into(),
        );
        a.insert("valuestream.issue.title".into(), issue.title.clone().into());
        a.insert(
            "valuestream.labels".into(),
            AttrValue::StrList(labels.clone()),
        );
        set_opt(a, "url.full", issue.html_url.clone());
        set_opt(
            a,
            "valuestream.author",
            issue.user.as_ref().map(|u| u.login.clone()),
        );
        set_opt(
            a,
            "valuestream.issue.state_reason",
            issue.state_reason.clone(),
        );
        Ok(w)
    }

    fn pull_request(&self, action: &str, pr: &PullRequest) -> Result<WorkEvent, String> {
        let labels: Vec<String> = pr.labels.iter().map(|l| l.name.clone()).collect();
        let (act, reopened) = match action {
            "opened" => (Action::Open, false),
            "reopened" => (Action::Open, true),
            "closed" => (Action::Close, false),
            "edited" | "labeled" | "unlabeled" | "synchronize" | "converted_to_draft"
            | "ready_for_review" => (Action::Update, false),
            other => return Err(format!("github pull_request action {other:?} is not used")),
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
            w.outcome = Some(Outcome::ok(if merged { "merged" } else { "closed" }));
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
        if matches!(action, "converted_to_draft" | "ready_for_review") {
            w.span_events.push(SpanEvent {
                name: if action == "converted_to_draft" {
                    "converted to draft".into()
                } else {
                    "ready for review".into()
                },
                time: pr.updated_at.unwrap_or(pr.created_at),
                attributes: Attrs::new(),
            });
        }
        // Parents: a vstrace reference in the branch, closing keywords, tracker keys.
        for r in vstrace_refs(&pr.head.name, Some(self.repo)) {
            w.parents.push(ParentRef::Item(item_key(
                &r.source,
                "issue",
                &r.repo.0,
                &r.number.to_string(),
            )));
        }
        for r in closing_refs(pr.body.as_deref().unwrap_or_default(), SOURCE, self.repo) {
            let k = ParentRef::Item(item_key(SOURCE, "issue", &r.repo.0, &r.number.to_string()));
            if !w.parents.contains(&k) {
                w.parents.push(k);
            }
        }
        for k in tracker_keys(&format!("{} {}", pr.head.name, pr.title)) {
            w.parents.push(ParentRef::Item(tracker_item_key(&k)));
        }
        let a = &mut w.attributes;
        a.insert("vcs.change.id".into(), pr.number.to_string().into());
        a.insert("vcs.change.title".into(), pr.title.clone().into());
        a.insert("vcs.change.state".into(), state.into());
        a.insert("vcs.ref.head.name".into(), pr.head.name.clone().into());
        a.insert("vcs.ref.head.revision".into(), pr.head.sha.clone().into());
        a.insert("vcs.ref.base.name".into(), pr.base.name.clone().into());
        a.insert("vcs.ref.base.revision".into(), pr.base.sha.clone().into());
        a.insert("valuestream.labels".into(), AttrValue::StrList(labels));
        set_opt(a, "url.full", pr.html_url.clone());
        set_opt(
            a,
            "valuestream.author",
            pr.user.as_ref().map(|u| u.login.clone()),
        );
        set_opt(a, "valuestream.change.merge_revision", w.merge_sha.clone());
        Ok(w)
    }

    fn workflow_run(
        &self,
        action: &str,
        run: &WorkflowRun,
        workflow: Option<&str>,
    ) -> Result<WorkEvent, String> {
        let act = match action {
            "requested" | "in_progress" => Action::Open,
            "completed" => Action::Close,
            other => return Err(format!("github workflow_run action {other:?} is not used")),
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
        let a = &mut w.attributes;
        a.insert("cicd.pipeline.name".into(), name.clone().into());
        a.insert("cicd.pipeline.run.id".into(), run.id.to_string().into());
        a.insert("valuestream.run.attempt".into(), (attempt as i64).into());
        set_opt(a, "cicd.pipeline.run.url.full", run.html_url.clone());
        set_opt(a, "vcs.ref.head.name", run.head_branch.clone());
        a.insert("vcs.ref.head.revision".into(), run.head_sha.clone().into());
        set_opt(a, "valuestream.trigger", run.event.clone());
        if let Some(started) = run.run_started_at {
            a.insert(
                "valuestream.queue.duration_s".into(),
                AttrValue::Float(secs(started - run.created_at)),
            );
        }
        Ok(w)
    }

    fn workflow_job(&self, action: &str, job: &WorkflowJob) -> Result<WorkEvent, String> {
        let act = match action {
            "queued" | "in_progress" | "waiting" => Action::Open,
            "completed" => Action::Close,
            other => return Err(format!("github workflow_job action {other:?} is not used")),
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
        let a = &mut w.attributes;
        a.insert("cicd.pipeline.task.name".into(), job.name.clone().into());
        a.insert(
            "cicd.pipeline.task.run.id".into(),
            job.id.to_string().into(),
        );
        a.insert("cicd.pipeline.run.id".into(), job.run_id.to_string().into());
        set_opt(a, "cicd.pipeline.name", job.workflow_name.clone());
        set_opt(a, "cicd.pipeline.task.run.url.full", job.html_url.clone());
        if let Some(o) = &w.outcome {
            a.insert(
                "cicd.pipeline.task.run.result".into(),
                o.result.clone().into(),
            );
        }
        if let Some(created) = job.created_at {
            a.insert(
                "valuestream.queue.duration_s".into(),
                AttrValue::Float(secs(job.started_at - created).max(0.0)),
            );
        }
        Ok(w)
    }

    fn deployment(
        &self,
        dep: &Deployment,
        status: Option<&DeploymentStatus>,
    ) -> Result<WorkEvent, String> {
        let (act, outcome, end) = match status.map(|s| s.state.as_str()) {
            None => (Action::Open, None, None),
            Some("success") => (
                Action::Close,
                Some(Outcome::ok("success")),
                status.map(|s| s.created_at),
            ),
            Some("failure") => (
                Action::Close,
                Some(Outcome::failed("failure")),
                status.map(|s| s.created_at),
            ),
            Some("error") => (
                Action::Close,
                Some(Outcome::failed("error")),
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
        for r in vstrace_refs(&text, Some(self.repo)) {
            w.parents.push(ParentRef::Item(item_key(
                &r.source,
                "issue",
                &r.repo.0,
                &r.number.to_string(),
            )));
        }
        w.parent_by_commit(self.repo, Some(&dep.sha), None);
        let a = &mut w.attributes;
        a.insert(
            "deployment.environment.name".into(),
            dep.environment.clone().into(),
        );
        a.insert("deployment.id".into(), dep.id.to_string().into());
        a.insert("vcs.ref.head.revision".into(), dep.sha.clone().into());
        set_opt(a, "vcs.ref.head.name", dep.git_ref.clone());
        set_opt(
            a,
            "valuestream.deployment.status_description",
            status.and_then(|s| s.description.clone()),
        );
        Ok(w)
    }

    fn push(&self, env: &Envelope) -> Result<Translation, SourceError> {
        let Some(branch) = env
            .git_ref
            .as_deref()
            .and_then(|r| r.strip_prefix("refs/heads/"))
        else {
            return ignored("github push: not a branch (tags are not used)".into());
        };
        let after = env.after.clone().unwrap_or_default();
        if env.deleted || after.chars().all(|c| c == '0') {
            return ignored("github push: branch deletion".into());
        }
        let commits: Vec<Commit> = env
            .commits
            .iter()
            .map(|c| Commit {
                sha: c.id.clone(),
                time: c.timestamp,
                message: c.message.clone(),
            })
            .collect();
        let Some(time) = commits.iter().map(|c| c.time).max() else {
            return ignored("github push: no commits".into());
        };
        let default = self.repository.default_branch.as_deref().unwrap_or("main");
        Ok(Translation::Inputs(vec![Input::Push(Push {
            repo: self.repo.clone(),
            branch: branch.to_string(),
            to_default_branch: branch == default,
            before: env.before.clone(),
            after,
            time,
            commits,
            attributes: self.base_attrs(&[]),
        })]))
    }
}

fn kind_segment(kind: Kind) -> &'static str {
    match kind {
        Kind::Issue | Kind::Incident => "issue",
        Kind::Change => "change",
        Kind::PipelineRun => "run",
        Kind::Task => "task",
        Kind::Deployment => "deployment",
    }
}

fn workflow_name(name: Option<&str>, path: Option<&str>) -> String {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => path
            .and_then(|p| p.rsplit('/').next())
            .filter(|p| !p.is_empty())
            .unwrap_or("workflow")
            .to_string(),
    }
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}
