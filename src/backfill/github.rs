//! GitHub's REST API as webhook deliveries. The REST objects of issues, pull requests, workflow
//! runs and jobs, deployments and deployment statuses have the schema of the objects inside the
//! webhook payloads, so each item becomes the deliveries GitHub sent about it:
//!
//! | Endpoint | Deliveries |
//! |---|---|
//! | `GET /repos/{o}/{r}` | the `repository` object of every delivery |
//! | `GET /repos/{o}/{r}/issues?state=all&since=` | `issues` `opened` (the issue as it was opened), `closed` when closed |
//! | `GET /repos/{o}/{r}/issues/events` | a reopened issue's history: `closed` and `reopened` per turn |
//! | `GET /repos/{o}/{r}/pulls?state=all&sort=updated` | `pull_request` `opened`, `closed` (merged or not) |
//! | `GET /repos/{o}/{r}/commits?sha=<default>&since=` | one `push` to the default branch per first-parent commit, carrying the commits its merge brought |
//! | `GET /repos/{o}/{r}/actions/runs?created=SINCE..UNTIL` (halved while over 1,000) | `workflow_run` `requested`, `completed` |
//! | `GET /repos/{o}/{r}/actions/runs/{id}/jobs` | `workflow_job` `in_progress`, `completed` |
//! | `GET /repos/{o}/{r}/deployments` | `deployment` `created` |
//! | `GET /repos/{o}/{r}/deployments/{id}/statuses` | `deployment_status` `created`, one per status |
//!
//! An "opened" delivery carries the object as it was when it was opened (state open, not
//! merged, no `closed_at`, `updated_at` = `created_at`); a closing one has `updated_at` =
//! `closed_at`. Delivery IDs are a hash of (event, action, object, time): a second backfill is
//! answered `duplicate`.

use super::{
    deliver_all, delivery_id, field, field_str, field_time, field_u64, opt_time, recorded, Capped,
    Client, Sink, Summary,
};
use crate::model::Time;
use crate::replay::Recorded;
use anyhow::{bail, Context};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// The environment variable the token is read from.
pub const TOKEN_VAR: &str = "GITHUB_TOKEN";
/// The public API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// What to read.
#[derive(Clone, Debug)]
pub struct Options {
    /// `owner/name`.
    pub repos: Vec<String>,
    /// Organizations (or users) whose repositories are all read (archived ones left out).
    pub orgs: Vec<String>,
    pub since: Time,
    pub until: Option<Time>,
    /// GitHub lists at most this many workflow runs for one filter (1,000): a window holding
    /// more is read in halves.
    pub run_list_cap: u64,
}

impl Options {
    pub fn new(repos: Vec<String>, since: Time, until: Option<Time>) -> Self {
        Options {
            repos,
            orgs: Vec::new(),
            since,
            until,
            run_list_cap: 1000,
        }
    }
}

/// The token from `GITHUB_TOKEN`, or an error naming it.
pub fn token_from_env() -> anyhow::Result<String> {
    match std::env::var(TOKEN_VAR) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => bail!(
            "{TOKEN_VAR} is not set: backfill reads the GitHub API with a token (fine-grained with read access to contents, issues, pull requests, actions and deployments, or a classic token with repo)"
        ),
    }
}

/// Reads every repository, then delivers what was read to `sink`, one repository at a time: a
/// repository whose reading failed delivers nothing.
pub async fn run(client: &Arc<Client>, opts: &Options, sink: &dyn Sink) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut repos = opts.repos.clone();
    for org in &opts.orgs {
        let path = format!("/orgs/{org}/repos?type=all&sort=full_name");
        let ep = format!("GET {path}");
        for r in client
            .get_list(&format!("{org} repositories"), &path, |_| true)
            .await?
        {
            let name = field_str(&r, "full_name", &ep)?.to_string();
            if r["archived"] != Value::Bool(true) && !repos.contains(&name) {
                repos.push(name);
            }
        }
    }
    anyhow::ensure!(
        !repos.is_empty(),
        "no repositories to read (--repo or --org)"
    );
    for repo in &repos {
        let deliveries = read_repo(client, opts, repo, &mut summary.items).await?;
        eprintln!("backfill: {repo}: {} deliveries to send", deliveries.len());
        deliver_all(sink, &deliveries, &mut summary).await?;
    }
    summary.requests = client.requests();
    summary.retries = client
        .stats
        .retries
        .load(std::sync::atomic::Ordering::Relaxed);
    summary.waited_secs = client.waited_secs();
    Ok(summary)
}

/// The deliveries one repository's history makes, and the items read counted into `items`.
pub async fn read_repo(
    client: &Arc<Client>,
    opts: &Options,
    full_name: &str,
    items: &mut BTreeMap<String, u64>,
) -> anyhow::Result<Vec<Recorded>> {
    let Some((owner, name)) = full_name.split_once('/') else {
        bail!("--repo {full_name:?} is not OWNER/NAME");
    };
    let base = format!("/repos/{owner}/{name}");
    let repo_ep = format!("GET {base}");
    let repo_obj = client.get(&client.url(&base)).await?.body;
    let repository = repository(&repo_obj, &repo_ep)?;
    let default_branch = field_str(&repository, "default_branch", &repo_ep)?.to_string();
    let w = Window {
        since: opts.since,
        until: opts.until,
    };
    let since = opts
        .since
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until_q = opts
        .until
        .map(|u| {
            format!(
                "&until={}",
                u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
        .unwrap_or_default();
    let label = |what: &str| format!("{full_name} {what}");

    let issues_path = format!("{base}/issues?state=all&sort=updated&direction=asc&since={since}");
    let pulls_path = format!("{base}/pulls?state=all&sort=updated&direction=desc");
    let commits_path = format!("{base}/commits?sha={default_branch}&since={since}{until_q}");
    let runs_path = format!("{base}/actions/runs");
    let runs_until = opts.until.unwrap_or_else(chrono::Utc::now);
    let deps_path = format!("{base}/deployments");
    let events_path = format!("{base}/issues/events");
    let (l_issues, l_pulls, l_commits, l_runs, l_deps) = (
        label("issues"),
        label("pull requests"),
        label("commits"),
        label("workflow runs"),
        label("deployments"),
    );
    let l_events = label("issue events");
    let (issues, pulls, commits, runs, deps, events) = futures_util::try_join!(
        client.get_list(&l_issues, &issues_path, |_| true),
        client.get_list(&l_pulls, &pulls_path, |page| {
            // newest updates first: stop after the first page that reaches before --since
            page.last()
                .and_then(|p| p["updated_at"].as_str())
                .and_then(|t| t.parse::<Time>().ok())
                .is_none_or(|t| t >= opts.since)
        }),
        client.get_list(&l_commits, &commits_path, |_| true),
        runs_in(
            client,
            &l_runs,
            &runs_path,
            opts.since,
            runs_until,
            opts.run_list_cap
        ),
        client.get_list(&l_deps, &deps_path, |page| {
            page.last()
                .and_then(|p| p["created_at"].as_str())
                .and_then(|t| t.parse::<Time>().ok())
                .is_none_or(|t| t >= opts.since)
        }),
        // Newest first: the close/reopen history of the window's issues.
        client.get_list(&l_events, &events_path, |page| {
            page.last()
                .and_then(|p| p["created_at"].as_str())
                .and_then(|t| t.parse::<Time>().ok())
                .is_none_or(|t| t >= opts.since)
        }),
    )?;
    let history = history(&events, &format!("GET {events_path}"))?;
    *items.entry("issue_events".into()).or_default() += events.len() as u64;

    let mut out = Vec::new();
    let ep = |p: &str| format!("GET {p}");

    // Issues (the list holds pull requests too: they are read from /pulls).
    let mut n = 0;
    for issue in issues.iter().filter(|i| i.get("pull_request").is_none()) {
        let number = field_u64(issue, "number", &ep(&issues_path))?;
        n += issue_deliveries(
            issue,
            history.get(&number).map(Vec::as_slice).unwrap_or_default(),
            &repository,
            &w,
            &ep(&issues_path),
            &mut out,
        )?;
    }
    *items.entry("issues".into()).or_default() += n;

    let mut n = 0;
    for pr in &pulls {
        n += pull_deliveries(pr, &repository, &w, &ep(&pulls_path), &mut out)?;
    }
    *items.entry("pull_requests".into()).or_default() += n;

    let pushes = pushes(&commits, &default_branch, &ep(&commits_path))?;
    *items.entry("commits".into()).or_default() += commits.len() as u64;
    for p in pushes {
        let mut body = p;
        body["repository"] = repository.clone();
        let after = body["after"].as_str().unwrap_or_default().to_string();
        out.push(delivery("push", "", &after, "", body));
    }

    // Workflow runs, then the jobs of each (one request per run).
    let runs: Vec<&Value> = {
        let mut kept = Vec::new();
        for r in &runs {
            if w.contains(field_time(r, "created_at", &ep(&runs_path))?) {
                kept.push(r);
            }
        }
        kept
    };
    for run in &runs {
        run_deliveries(run, &repository, &ep(&runs_path), &mut out)?;
    }
    *items.entry("workflow_runs".into()).or_default() += runs.len() as u64;
    let concurrency = client.settings.concurrency.max(1);
    // Owned IDs, not references, in the streams: the future stays `Send` for any caller (a
    // spawned task, the scheduled sync), which borrowed items defeat (rust-lang/rust#102211).
    let run_ids: Vec<u64> = runs
        .iter()
        .map(|run| run["id"].as_u64().unwrap_or_default())
        .collect();
    let jobs = lists_by_id(
        client,
        run_ids,
        concurrency,
        |id| format!("{base}/actions/runs/{id}/jobs"),
        |id| label(&format!("jobs of run {id}")),
    )
    .await?;
    let mut n = 0;
    for (path, jobs) in &jobs {
        for job in jobs {
            n += job_deliveries(job, &repository, &ep(path), &mut out)?;
        }
    }
    *items.entry("workflow_jobs".into()).or_default() += n;

    // Deployments as far back as --since, like the changes; then the statuses of each.
    let mut kept = Vec::new();
    for d in &deps {
        if w.contains(field_time(d, "created_at", &ep(&deps_path))?) {
            kept.push(d);
        }
    }
    let dep_ids: Vec<u64> = kept
        .iter()
        .map(|d| d["id"].as_u64().unwrap_or_default())
        .collect();
    let statuses = lists_by_id(
        client,
        dep_ids,
        concurrency,
        |id| format!("{base}/deployments/{id}/statuses"),
        |id| label(&format!("statuses of deployment {id}")),
    )
    .await?;
    let mut n_status = 0;
    for (d, (path, statuses)) in kept.iter().zip(&statuses) {
        n_status += deployment_deliveries(
            d,
            statuses,
            &repository,
            &w,
            &ep(&deps_path),
            &ep(path),
            &mut out,
        )?;
    }
    *items.entry("deployments".into()).or_default() += kept.len() as u64;
    *items.entry("deployment_statuses".into()).or_default() += n_status;
    Ok(out)
}

/// The workflow runs created from `from` to `to` (both included, to the second); a window
/// holding more runs than the API lists for one filter is read in two halves.
fn runs_in<'a>(
    client: &'a Client,
    what: &'a str,
    path: &'a str,
    from: Time,
    to: Time,
    cap: u64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Vec<Value>>> + Send + 'a>> {
    Box::pin(async move {
        let secs = |t: Time| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let range = format!("{}..{}", secs(from), secs(to));
        let q = percent_encoding::utf8_percent_encode(&range, percent_encoding::NON_ALPHANUMERIC);
        let filtered = format!("{path}?created={q}");
        let one_second = chrono::TimeDelta::seconds(1);
        match client
            .get_list_capped(what, &filtered, |_| true, cap)
            .await?
        {
            Capped::All(runs) => Ok(runs),
            Capped::Over(_) if to - from > one_second => {
                let mid = from + (to - from) / 2;
                let mut runs = runs_in(client, what, path, from, mid, cap).await?;
                let later = runs_in(client, what, path, mid + one_second, to, cap).await?;
                for r in later {
                    if !runs.iter().any(|x| x["id"] == r["id"]) {
                        runs.push(r);
                    }
                }
                Ok(runs)
            }
            Capped::Over(total) => bail!(
                "GET {filtered}: {total} workflow runs created within one second, over the {cap} the API lists"
            ),
        }
    })
}

/// The window an item's events must fall in.
struct Window {
    since: Time,
    until: Option<Time>,
}

impl Window {
    fn contains(&self, t: Time) -> bool {
        t >= self.since && self.until.is_none_or(|u| t <= u)
    }
    fn not_after(&self, t: Time) -> bool {
        self.until.is_none_or(|u| t <= u)
    }
}

/// The repository object deliveries carry: the fields a webhook's `repository` has that the
/// translation reads (identity, URL, default branch, language, topics).
fn repository(v: &Value, ep: &str) -> anyhow::Result<Value> {
    field_str(v, "full_name", ep)?;
    field_str(v, "default_branch", ep)?;
    let mut out = serde_json::Map::new();
    for k in [
        "id",
        "node_id",
        "name",
        "full_name",
        "private",
        "owner",
        "html_url",
        "default_branch",
        "language",
        "topics",
        "visibility",
    ] {
        if let Some(x) = v.get(k) {
            out.insert(k.into(), x.clone());
        }
    }
    if let Some(owner) = out.get_mut("owner").and_then(Value::as_object_mut) {
        owner.retain(|k, _| matches!(k.as_str(), "login" | "id" | "type" | "html_url"));
    }
    Ok(Value::Object(out))
}

fn delivery(event: &str, action: &str, object: &str, at: &str, body: Value) -> Recorded {
    let id = delivery_id("github", event, action, object, at);
    let label = format!("{event}/{action}/{object}");
    recorded(
        "github",
        &[
            ("x-github-event", event.to_string()),
            ("x-github-delivery", id),
        ],
        &body,
        label,
    )
}

fn time_str(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

/// One close or reopening of an issue: (when, `closed` or `reopened`, the event's time as
/// written, its `state_reason`).
type Turn = (Time, String, String, Option<String>);

/// The `closed` and `reopened` events of issues (not pull requests), by issue number, oldest
/// first.
fn history(events: &[Value], ep: &str) -> anyhow::Result<HashMap<u64, Vec<Turn>>> {
    let mut out: HashMap<u64, Vec<Turn>> = HashMap::new();
    for e in events {
        let kind = field_str(e, "event", ep)?;
        if !matches!(kind, "closed" | "reopened") {
            continue;
        }
        let issue = field(e, "issue", ep)?;
        if issue.get("pull_request").is_some_and(|p| !p.is_null()) {
            continue;
        }
        let number = field_u64(issue, "number", ep)?;
        let at = field_time(e, "created_at", ep)?;
        out.entry(number).or_default().push((
            at,
            kind.to_string(),
            time_str(e, "created_at"),
            e["state_reason"].as_str().map(str::to_string),
        ));
    }
    for turns in out.values_mut() {
        turns.sort();
    }
    Ok(out)
}

/// An issue's `opened` and (when closed) `closed` deliveries; 1 when the issue is in the window.
/// An issue that was reopened gets its whole history: a `closed` and a `reopened` delivery per
/// turn, as its webhooks came.
fn issue_deliveries(
    issue: &Value,
    turns: &[Turn],
    repository: &Value,
    w: &Window,
    ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<u64> {
    let number = field_u64(issue, "number", ep)?;
    field_str(issue, "title", ep)?;
    let created = field_time(issue, "created_at", ep)?;
    let closed = opt_time(issue, "closed_at", ep)?;
    let in_window = w.contains(created)
        || closed.is_some_and(|c| w.contains(c))
        || turns.iter().any(|t| w.contains(t.0));
    if !in_window || !w.not_after(created) {
        return Ok(0);
    }
    let id = number.to_string();
    let mut opened = issue.clone();
    opened["state"] = json!("open");
    opened["closed_at"] = Value::Null;
    opened["closed_by"] = Value::Null;
    opened["state_reason"] = Value::Null;
    opened["updated_at"] = issue["created_at"].clone();
    out.push(delivery(
        "issues",
        "opened",
        &id,
        &time_str(issue, "created_at"),
        json!({"action": "opened", "issue": opened, "repository": repository}),
    ));
    if turns.iter().any(|t| t.1 == "reopened") {
        let last = turns.len() - 1;
        for (i, (at, action, written, reason)) in turns.iter().enumerate() {
            if !w.not_after(*at) {
                break;
            }
            let mut then = issue.clone();
            then["updated_at"] = json!(written);
            if action == "closed" {
                then["state"] = json!("closed");
                then["closed_at"] = json!(written);
                let reason = reason.clone().or_else(|| {
                    (i == last)
                        .then(|| issue["state_reason"].as_str().map(str::to_string))
                        .flatten()
                });
                then["state_reason"] = json!(reason.unwrap_or_else(|| "completed".into()));
            } else {
                then["state"] = json!("open");
                then["closed_at"] = Value::Null;
                then["closed_by"] = Value::Null;
                then["state_reason"] = json!("reopened");
            }
            out.push(delivery(
                "issues",
                action,
                &id,
                written,
                json!({"action": action, "issue": then, "repository": repository}),
            ));
        }
        return Ok(1);
    }
    if closed.is_some_and(|c| w.not_after(c)) {
        let mut closed = issue.clone();
        closed["state"] = json!("closed");
        closed["updated_at"] = issue["closed_at"].clone();
        out.push(delivery(
            "issues",
            "closed",
            &id,
            &time_str(issue, "closed_at"),
            json!({"action": "closed", "issue": closed, "repository": repository}),
        ));
    }
    Ok(1)
}

/// A pull request's `opened` and (when closed or merged) `closed` deliveries.
fn pull_deliveries(
    pr: &Value,
    repository: &Value,
    w: &Window,
    ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<u64> {
    let number = field_u64(pr, "number", ep)?;
    field_str(pr, "title", ep)?;
    field_str(pr, "head.ref", ep)?;
    field_str(pr, "head.sha", ep)?;
    field_str(pr, "base.ref", ep)?;
    field_str(pr, "base.sha", ep)?;
    let created = field_time(pr, "created_at", ep)?;
    let merged_at = opt_time(pr, "merged_at", ep)?;
    let closed = opt_time(pr, "closed_at", ep)?;
    let ended = merged_at.or(closed);
    let in_window = w.contains(created) || ended.is_some_and(|c| w.contains(c));
    if !in_window || !w.not_after(created) {
        return Ok(0);
    }
    let id = number.to_string();
    let mut opened = pr.clone();
    opened["state"] = json!("open");
    opened["merged"] = json!(false);
    opened["merged_at"] = Value::Null;
    opened["closed_at"] = Value::Null;
    opened["merge_commit_sha"] = Value::Null;
    opened["updated_at"] = pr["created_at"].clone();
    out.push(delivery(
        "pull_request",
        "opened",
        &id,
        &time_str(pr, "created_at"),
        json!({"action": "opened", "number": number, "pull_request": opened, "repository": repository}),
    ));
    if closed.is_some_and(|c| w.not_after(c)) {
        let mut closed = pr.clone();
        closed["state"] = json!("closed");
        closed["merged"] = json!(merged_at.is_some());
        closed["updated_at"] = pr["closed_at"].clone();
        out.push(delivery(
            "pull_request",
            "closed",
            &id,
            &time_str(pr, "closed_at"),
            json!({"action": "closed", "number": number, "pull_request": closed, "repository": repository}),
        ));
    }
    Ok(1)
}

/// A workflow run's `requested` and (when completed) `completed` deliveries.
fn run_deliveries(
    run: &Value,
    repository: &Value,
    ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<()> {
    let id = field_u64(run, "id", ep)?;
    field_str(run, "head_sha", ep)?;
    field_time(run, "created_at", ep)?;
    field_time(run, "updated_at", ep)?;
    let attempt = run["run_attempt"].as_u64().unwrap_or(1);
    let object = format!("{id}/{attempt}");
    let mut requested = run.clone();
    requested["status"] = json!("queued");
    requested["conclusion"] = Value::Null;
    requested["updated_at"] = run["created_at"].clone();
    out.push(delivery(
        "workflow_run",
        "requested",
        &object,
        &time_str(run, "created_at"),
        json!({"action": "requested", "workflow_run": requested, "repository": repository}),
    ));
    if run["status"] == "completed" {
        out.push(delivery(
            "workflow_run",
            "completed",
            &object,
            &time_str(run, "updated_at"),
            json!({"action": "completed", "workflow_run": run, "repository": repository}),
        ));
    }
    Ok(())
}

/// A job's `in_progress` (once started) and `completed` deliveries; 1 when it started.
fn job_deliveries(
    job: &Value,
    repository: &Value,
    ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<u64> {
    let id = field_u64(job, "id", ep)?;
    field_u64(job, "run_id", ep)?;
    field_str(job, "name", ep)?;
    if job["started_at"].is_null() || job["status"] == "queued" {
        return Ok(0);
    }
    field_time(job, "started_at", ep)?;
    let object = id.to_string();
    let mut started = job.clone();
    started["status"] = json!("in_progress");
    started["conclusion"] = Value::Null;
    started["completed_at"] = Value::Null;
    out.push(delivery(
        "workflow_job",
        "in_progress",
        &object,
        &time_str(job, "started_at"),
        json!({"action": "in_progress", "workflow_job": started, "repository": repository}),
    ));
    if job["status"] == "completed" {
        out.push(delivery(
            "workflow_job",
            "completed",
            &object,
            &time_str(job, "completed_at"),
            json!({"action": "completed", "workflow_job": job, "repository": repository}),
        ));
    }
    Ok(1)
}

/// A deployment's `created` delivery and one `deployment_status` per status; the statuses in
/// the window.
fn deployment_deliveries(
    dep: &Value,
    statuses: &[Value],
    repository: &Value,
    w: &Window,
    ep: &str,
    status_ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<u64> {
    let id = field_u64(dep, "id", ep)?;
    field_str(dep, "sha", ep)?;
    field_str(dep, "environment", ep)?;
    field_time(dep, "created_at", ep)?;
    let object = id.to_string();
    out.push(delivery(
        "deployment",
        "created",
        &object,
        &time_str(dep, "created_at"),
        json!({"action": "created", "deployment": dep, "repository": repository}),
    ));
    let mut n = 0;
    for s in statuses {
        let sid = field_u64(s, "id", status_ep)?;
        field_str(s, "state", status_ep)?;
        if !w.not_after(field_time(s, "created_at", status_ep)?) {
            continue;
        }
        n += 1;
        out.push(delivery(
            "deployment_status",
            "created",
            &format!("{object}/{sid}"),
            &time_str(s, "created_at"),
            json!({"action": "created", "deployment": dep, "deployment_status": s, "repository": repository}),
        ));
    }
    Ok(n)
}

/// The default branch's commits as pushes: one per first-parent commit (what reached the branch
/// in one step), carrying the commits its other parents brought (a merge's branch commits),
/// each commit at its author date, oldest first. Without the `repository` (added by the caller).
fn pushes(commits: &[Value], branch: &str, ep: &str) -> anyhow::Result<Vec<Value>> {
    let mut by_sha: HashMap<&str, &Value> = HashMap::new();
    for c in commits {
        let sha = field_str(c, "sha", ep)?;
        field_str(c, "commit.message", ep)?;
        field_time(c, "commit.author.date", ep)
            .or_else(|_| field_time(c, "commit.committer.date", ep))?;
        by_sha.insert(sha, c);
    }
    let parents = |c: &Value| -> Vec<String> {
        c["parents"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["sha"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    // The first-parent chain from the newest commit; commits off it (in a merge) ride along.
    let mut chain: Vec<&str> = Vec::new();
    let mut on_chain: HashSet<&str> = HashSet::new();
    let mut at = commits.first().and_then(|c| c["sha"].as_str());
    while let Some(sha) = at {
        let Some(c) = by_sha.get(sha) else { break };
        if !on_chain.insert(sha) {
            break;
        }
        chain.push(sha);
        at = c["parents"][0]["sha"].as_str();
    }
    let mut assigned: HashSet<&str> = on_chain.clone();
    let mut groups: Vec<(&str, Vec<&Value>)> = Vec::new();
    for sha in chain.iter().rev() {
        let c = by_sha[sha];
        let mut group = vec![c];
        let mut todo: Vec<String> = parents(c).into_iter().skip(1).collect();
        while let Some(p) = todo.pop() {
            let Some((&psha, pc)) = by_sha.get_key_value(p.as_str()) else {
                continue;
            };
            if !assigned.insert(psha) {
                continue;
            }
            group.push(pc);
            todo.extend(parents(pc));
        }
        groups.push((sha, group));
    }
    // Anything the chain did not reach (a list cut by --until) is a push of its own.
    for c in commits {
        let sha = c["sha"].as_str().unwrap_or_default();
        if assigned.insert(sha) {
            groups.push((sha, vec![c]));
        }
    }
    let mut out = Vec::new();
    for (after, group) in groups {
        let mut commits: Vec<(Time, String, Value)> = Vec::new();
        for c in group {
            let sha = c["sha"].as_str().unwrap_or_default().to_string();
            let t = field_time(c, "commit.author.date", ep)
                .or_else(|_| field_time(c, "commit.committer.date", ep))?;
            let date = c["commit"]["author"]["date"]
                .as_str()
                .or(c["commit"]["committer"]["date"].as_str())
                .unwrap_or_default();
            commits.push((
                t,
                sha.clone(),
                json!({
                    "id": sha,
                    "distinct": true,
                    "message": c["commit"]["message"],
                    "timestamp": date,
                    "url": c["html_url"],
                }),
            ));
        }
        commits.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let before = by_sha[after]["parents"][0]["sha"]
            .as_str()
            .unwrap_or("0000000000000000000000000000000000000000");
        out.push(json!({
            "ref": format!("refs/heads/{branch}"),
            "before": before,
            "after": after,
            "created": false,
            "deleted": false,
            "forced": false,
            "commits": commits.into_iter().map(|c| c.2).collect::<Vec<_>>(),
        }));
    }
    Ok(out)
}

/// Reads `field` to check an item, for callers outside (tests): the endpoint and field named.
/// The whole list at `path(id)` for each of `ids`, in `ids`' order, at most `concurrency`
/// requests at once: (path, items) per ID. Paths and labels are made before the requests start,
/// so the future holds only owned values and stays `Send` (rust-lang/rust#102211).
async fn lists_by_id(
    client: &Arc<Client>,
    ids: Vec<u64>,
    concurrency: usize,
    path: impl Fn(u64) -> String,
    what: impl Fn(u64) -> String,
) -> anyhow::Result<Vec<(String, Vec<Value>)>> {
    let requests: Vec<(String, String)> = ids.into_iter().map(|id| (path(id), what(id))).collect();
    futures_util::stream::iter(requests.into_iter().map(|(path, what)| {
        let client = client.clone();
        async move {
            let items = client.get_list(&what, &path, |_| true).await?;
            anyhow::Ok((path, items))
        }
    }))
    .buffered(concurrency)
    .try_collect()
    .await
}

pub fn check_field(v: &Value, name: &str, ep: &str) -> anyhow::Result<()> {
    field(v, name, ep)
        .map(|_| ())
        .context("checking an API item")
}
