//! GitLab's REST API (v4) as webhook deliveries. Each item read becomes the hooks GitLab sent
//! about it, with the fields `src/sources/gitlab/` reads, so an API fact is the webhook's fact:
//!
//! | Endpoint (GitLab docs `doc/api/…`) | Deliveries |
//! |---|---|
//! | `GET /projects/:path` (`projects.md`) | the `project` (and `repository`) object of every hook |
//! | `GET /groups/:path/projects` (`groups.md`, keyset pagination by `id`) | `--group`: its projects, archived ones left out |
//! | `GET /projects/:id/issues?updated_after=` (`issues.md`) | Issue Hook `open`, `close` when closed |
//! | `GET /projects/:id/events?target_type=issue` (`events.md`) | a reopened issue's history: `close` and `reopen` per turn |
//! | `GET /projects/:id/merge_requests?updated_after=` (`merge_requests.md`) | Merge Request Hook `open`, then `merge` or `close` |
//! | `GET /projects/:id/repository/commits?ref_name=<default>&since=` (`commits.md`) | one Push Hook to the default branch per first-parent commit, carrying the commits its merge brought (the newest 20, as GitLab sends) |
//! | `GET /projects/:id/pipelines?updated_after=` + `GET /projects/:id/pipelines/:pid` (`pipelines.md`) | Pipeline Hook `running` at its creation, and its final status with its jobs as `builds` |
//! | `GET /projects/:id/jobs` (`jobs.md`, keyset pagination, newest first) | Job Hook `running` at its start, and its final status |
//! | `GET /projects/:id/deployments?updated_after=` (`deployments.md`) | Deployment Hook `running` and its final status |
//! | `GET /projects/:id/environments` (`environments.md`) | the hooks' `environment_tier` (the deployments list names no tier) |
//!
//! The pipelines list lacks `finished_at`, `duration` and `queued_duration` (the run's end and
//! queue time): each pipeline of the window is read once more on its own. A merge-request
//! pipeline's hook names the merge request and its source branch (`ref` there is the branch, the
//! API's is `refs/merge-requests/:iid/head`): the merge request comes from the list, or is read.
//!
//! Lists are read `per_page=100`, following the `Link: rel="next"` header GitLab sends for both
//! offset and keyset pagination (`doc/api/rest/_index.md`, "Pagination"); keyset pagination is
//! asked for where GitLab offers it (group projects, project jobs), the other lists are bounded
//! by the window's `updated_after` (offset pagination stops at 50,000 items on GitLab.com).
//!
//! Delivery IDs (`X-Gitlab-Event-UUID`) are a hash of (event, action, object, time): a second
//! backfill is answered `duplicate`.
//!
//! A project's run goes resource by resource ([`RESOURCES`], [`super::resume`]): a cursor per
//! resource in the store, moved after each page's worth of deliveries, so that a run stopped
//! half-way is resumed by the same command. Conditional requests: GitLab's answers carry weak
//! `ETag`s (Rails' `Rack::ETag`), and Rails' `Rack::ConditionalGet` answers a matching
//! `If-None-Match` with 304; GitLab's REST docs do not promise that for the API (issue
//! gitlab-org/gitlab#14357 reports API calls ignoring it), so a 200 is read as without one.
//! The validators kept are the project object's (kept whole) and those of the issue, merge
//! request, commit and deployment lists read whole in one page; the pipelines list is read on
//! every run (a job's change need not show in it).

use super::resume::{one_page, Collect, Scoped};
use super::{
    delivery_id, field_str, field_time, field_u64, item_key, opt_time, recorded, time_key, Api,
    Bar, Client, ClientSettings, Fetched, List, Sink, State, Summary, Validator, Window,
    VALIDATOR_BODY_MAX,
};
use crate::model::Time;
use crate::replay::Recorded;
use anyhow::bail;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The environment variable the token is read from.
pub const TOKEN_VAR: &str = "GITLAB_TOKEN";
/// The public API; a self-managed instance's is `https://HOST/api/v4`.
pub const DEFAULT_API_URL: &str = "https://gitlab.com/api/v4";
/// A Push Hook carries the newest 20 commits of a push (`total_commits_count` says how many).
pub const PUSH_COMMITS_LIMIT: usize = 20;
pub const SOURCE: &str = "gitlab";

/// A path segment: a project's `group/sub/name` as GitLab's URL-encoded ID (`group%2Fsub%2Fname`).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// What to read.
#[derive(Clone, Debug)]
pub struct Options {
    /// `group/name` (or `group/sub/name`).
    pub projects: Vec<String>,
    /// Groups whose projects (subgroups included, archived ones left out) are all read.
    pub groups: Vec<String>,
    pub since: Time,
    pub until: Option<Time>,
}

impl Options {
    pub fn new(projects: Vec<String>, since: Time, until: Option<Time>) -> Self {
        Options {
            projects,
            groups: Vec::new(),
            since,
            until,
        }
    }
}

/// The token from `GITLAB_TOKEN`, or an error naming it.
pub fn token_from_env() -> anyhow::Result<String> {
    match std::env::var(TOKEN_VAR) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => bail!(
            "{TOKEN_VAR} is not set: backfill reads the GitLab API with a token (a personal, group or project access token with the read_api scope, Reporter role or more)"
        ),
    }
}

/// Client settings for GitLab: the token goes out as `PRIVATE-TOKEN`.
pub fn settings(api_url: &str, token: String) -> ClientSettings {
    let mut s = ClientSettings::new(api_url, token, TOKEN_VAR);
    s.api = Api::GitLab;
    s
}

/// Tries the token on the first project (or group) named, before anything is written: a
/// missing project or a refused token is an error here.
pub async fn check_token(client: &Client, opts: &Options) -> anyhow::Result<()> {
    let path = match (opts.projects.first(), opts.groups.first()) {
        (Some(p), _) => format!("/projects/{}", encode(p)),
        (None, Some(g)) => format!("/groups/{}?with_projects=false", encode(g)),
        (None, None) => bail!("no projects to read (--project or --group)"),
    };
    client.get(&client.url(&path)).await.map(|_| ())
}

/// Reads every project and delivers what was read to `sink`, without keeping anything in a
/// store (no validators, no cursors): [`run_with`] with [`State::none`].
pub async fn run(client: &Arc<Client>, opts: &Options, sink: &dyn Sink) -> anyhow::Result<Summary> {
    run_with(client, opts, sink, &State::none(SOURCE)).await
}

/// Reads every project (those of `--group` after the ones named), one at a time, resource by
/// resource ([`project`]), with the validators and cursors `state` keeps.
pub async fn run_with(
    client: &Arc<Client>,
    opts: &Options,
    sink: &dyn Sink,
    state: &State<'_>,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let projects = projects(client, opts).await?;
    let result = async {
        for p in &projects {
            project(client, opts, p, sink, state, &mut summary).await?;
        }
        anyhow::Ok(())
    }
    .await;
    summary.add_client(client);
    result.map(|()| summary)
}

/// The projects named, then those of the groups (archived ones left out).
async fn projects(client: &Arc<Client>, opts: &Options) -> anyhow::Result<Vec<String>> {
    let mut projects = opts.projects.clone();
    for group in &opts.groups {
        let path = format!(
            "/groups/{}/projects?include_subgroups=true&archived=false&pagination=keyset&order_by=id&sort=asc",
            encode(group)
        );
        let ep = format!("GET {path}");
        for p in client
            .get_list(&format!("{group} projects"), &path, |_| true)
            .await?
        {
            let name = field_str(&p, "path_with_namespace", &ep)?.to_string();
            if p["archived"] != Value::Bool(true) && !projects.contains(&name) {
                projects.push(name);
            }
        }
    }
    anyhow::ensure!(
        !projects.is_empty(),
        "no projects to read (--project or --group)"
    );
    Ok(projects)
}

fn iso(t: Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Whether a page (sorted by `key`, newest first) may still reach into the window.
fn reaches(page: &[Value], key: &str, since: Time) -> bool {
    page.last()
        .and_then(|p| p[key].as_str())
        .and_then(crate::model::timestamp::parse)
        .is_none_or(|t| t >= since)
}

/// The deliveries one project's history makes, and the items read counted into `items`: the
/// scheduled sync's reader ([`project`] into a [`Collect`], nothing kept in a store).
pub async fn read_project(
    client: &Arc<Client>,
    opts: &Options,
    path: &str,
    items: &mut BTreeMap<String, u64>,
) -> anyhow::Result<Vec<Recorded>> {
    let collect = Collect::default();
    let mut summary = Summary::default();
    project(
        client,
        opts,
        path,
        &collect,
        &State::none(SOURCE),
        &mut summary,
    )
    .await?;
    for (k, n) in summary.items {
        *items.entry(k).or_default() += n;
    }
    Ok(collect.take())
}

/// The resources of a project, in the order a run goes through them: the names of their
/// cursors (`backfill#gitlab#group/name` / `r#<resource>`).
pub const RESOURCES: [&str; 5] = [
    "issues",
    "merge_requests",
    "commits",
    "pipelines",
    "deployments",
];

/// One project's run: what it reads and delivers, resource by resource.
struct Gl<'a> {
    run: Scoped<'a>,
    ctx: Project,
    paths: Paths,
    base: String,
}

/// One project, resource by resource (issues, merge requests, commits, pipelines with their
/// jobs, deployments). Each resource's list is read whole (conditional where a validator
/// applies: a 304 leaves the resource alone), then its items are delivered in key order, a
/// page's worth at a time, the resource's cursor moving after each. A run interrupted half-way
/// is resumed by the next one over the same window.
pub async fn project(
    client: &Arc<Client>,
    opts: &Options,
    path: &str,
    sink: &dyn Sink,
    state: &State<'_>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let path = path.trim_matches('/');
    anyhow::ensure!(path.contains('/'), "--project {path:?} is not GROUP/NAME");
    let window = Window {
        since: opts.since,
        until: opts.until,
    };
    let run = Scoped::begin(client, state, sink, path, window, summary).await?;
    let project_path = format!("/projects/{}", encode(path));
    let p = project_object(&run, &project_path).await?;
    let ctx = Project::of(&p, &get_ep(&project_path))?;
    let base = format!("/projects/{}", ctx.id);
    let paths = Paths::new(&base, &run.window(), ctx.default_branch.as_deref());
    for kind in [
        "issues",
        "issue_events",
        "merge_requests",
        "commits",
        "pipelines",
        "jobs",
        "deployments",
    ] {
        summary.items.entry(kind.into()).or_default();
    }
    let mut g = Gl {
        run,
        ctx,
        paths,
        base,
    };
    issues(&mut g, summary).await?;
    let mrs = merge_requests(&mut g, summary).await?;
    commits(&mut g, summary).await?;
    pipelines(&mut g, mrs, summary).await?;
    deployments(&mut g, summary).await?;
    g.run.finish(summary).await
}

/// The project object (`GET /projects/:path`), kept whole in its validator (when small) so
/// that an unchanged one (304) needs no body.
async fn project_object(run: &Scoped<'_>, path: &str) -> anyhow::Result<Value> {
    let client = run.client;
    let url = client.url(path);
    let kept = run
        .state
        .validator(&run.scope, "project", &url, &run.window())
        .await?
        .filter(|v| v.body.is_some());
    match client
        .get_if(&url, kept.as_ref().map(|v| v.etag.as_str()))
        .await?
    {
        Fetched::NotModified => Ok(kept.and_then(|v| v.body).expect("kept whole")),
        Fetched::Modified(page, etag) => {
            if let Some(etag) = etag.filter(|_| page.body.to_string().len() <= VALIDATOR_BODY_MAX) {
                let mut v = Validator::new(&url, etag, &run.window());
                v.body = Some(page.body.clone());
                run.state
                    .save_validators(&run.scope, vec![("project".into(), v)])
                    .await?;
            }
            Ok(page.body)
        }
    }
}

/// A list's endpoint as errors name it.
fn get_ep(p: &str) -> String {
    format!("GET {p}")
}

/// The paths of the lists one project's backfill reads.
struct Paths {
    issues: String,
    events: String,
    mrs: String,
    /// None in an empty repository (no default branch).
    commits: Option<String>,
    pipelines: String,
    jobs: String,
    deps: String,
    envs: String,
}

impl Paths {
    fn new(base: &str, w: &Window, default_branch: Option<&str>) -> Paths {
        let since = iso(w.since);
        // The Events API filters by date (`after` excludes its day): a day before --since.
        let after_day = (w.since - chrono::TimeDelta::days(1)).format("%Y-%m-%d");
        let before_day = w
            .until
            .map(|u| {
                format!(
                    "&before={}",
                    (u + chrono::TimeDelta::days(1)).format("%Y-%m-%d")
                )
            })
            .unwrap_or_default();
        let until_q = w
            .until
            .map(|u| format!("&until={}", iso(u)))
            .unwrap_or_default();
        Paths {
            issues: format!("{base}/issues?scope=all&state=all&updated_after={since}&order_by=updated_at&sort=asc&with_labels_details=true"),
            events: format!("{base}/events?target_type=issue&after={after_day}{before_day}&sort=asc"),
            mrs: format!("{base}/merge_requests?scope=all&state=all&updated_after={since}&order_by=updated_at&sort=asc&with_labels_details=true"),
            commits: default_branch.map(|b| {
                format!(
                    "{base}/repository/commits?ref_name={}&since={since}{until_q}",
                    encode(b)
                )
            }),
            pipelines: format!("{base}/pipelines?updated_after={since}&order_by=id&sort=asc"),
            jobs: format!("{base}/jobs?pagination=keyset&order_by=id&sort=desc"),
            deps: format!("{base}/deployments?updated_after={since}&order_by=updated_at&sort=asc"),
            envs: format!("{base}/environments"),
        }
    }
}

/// The list at `path` of `resource`, conditional when a validator applies: `None` when it
/// answered 304 (the resource is then done, unchanged).
async fn conditional_list(
    g: &mut Gl<'_>,
    resource: &str,
    path: &str,
    bar: &Bar,
    summary: &mut Summary,
) -> anyhow::Result<Option<List>> {
    let client = g.run.client;
    let etag = g.run.etag(resource, path).await?;
    let list = client
        .get_list_if(bar, path, |_| true, etag.as_deref())
        .await?;
    if list.is_none() {
        g.run.unchanged(resource, summary);
        g.run
            .done(resource, bar, None, " (not modified)", summary)
            .await?;
    }
    Ok(list)
}

/// Issues (a conditional list: unchanged, a 304), then the close/reopen history of the window
/// (read only when there are issues to deliver), a page's worth at a time.
async fn issues(g: &mut Gl<'_>, summary: &mut Summary) -> anyhow::Result<()> {
    const R: &str = "issues";
    if g.run.skip_done(R, summary) {
        return Ok(());
    }
    let client = g.run.client;
    let bar = client.progress.resource(&g.run.label("issues"), client);
    let path = g.paths.issues.clone();
    let Some(list) = conditional_list(g, R, &path, &bar, summary).await? else {
        return Ok(());
    };
    let ep = get_ep(&path);
    let mut items = Vec::new();
    for issue in &list.items {
        let iid = field_u64(issue, "iid", &ep)?;
        let created = field_time(issue, "created_at", &ep)?;
        items.push((
            item_key(created, iid),
            opt_time(issue, "updated_at", &ep)?,
            issue,
        ));
    }
    let pending = g.run.pending(R, items, summary);
    let history = if pending.is_empty() {
        HashMap::new()
    } else {
        let events = client
            .get_list(&g.run.label("issue events"), &g.paths.events, |_| true)
            .await?;
        *summary.items.entry("issue_events".into()).or_default() += events.len() as u64;
        history(&events, &get_ep(&g.paths.events))?
    };
    bar.set_total(pending.len() as u64);
    let w = g.run.window();
    for part in pending.chunks(g.run.chunk()) {
        let mut out = Vec::new();
        let mut n = 0;
        for (_, issue) in part {
            let iid = field_u64(issue, "iid", &ep)?;
            let turns = history.get(&iid).map(Vec::as_slice).unwrap_or_default();
            n += issue_deliveries(issue, turns, &g.ctx, &w, &ep, &mut out)?;
        }
        *summary.items.entry("issues".into()).or_default() += n;
        let last = part.last().map(|(k, _)| k.clone());
        g.run
            .deliver(R, &bar, &out, last, part.len() as u64, summary)
            .await?;
    }
    g.run.done(R, &bar, one_page(&list), "", summary).await
}

/// Merge requests (a conditional list), a page's worth at a time; the list's merge requests by
/// IID (none when it answered 304 or was done before: pipelines then read the ones they name).
async fn merge_requests(
    g: &mut Gl<'_>,
    summary: &mut Summary,
) -> anyhow::Result<HashMap<u64, Value>> {
    const R: &str = "merge_requests";
    if g.run.skip_done(R, summary) {
        return Ok(HashMap::new());
    }
    let client = g.run.client;
    let bar = client
        .progress
        .resource(&g.run.label("merge requests"), client);
    let path = g.paths.mrs.clone();
    let Some(list) = conditional_list(g, R, &path, &bar, summary).await? else {
        return Ok(HashMap::new());
    };
    let ep = get_ep(&path);
    let mut items = Vec::new();
    let mut mr_by_iid: HashMap<u64, Value> = HashMap::new();
    for mr in &list.items {
        let iid = field_u64(mr, "iid", &ep)?;
        let created = field_time(mr, "created_at", &ep)?;
        items.push((item_key(created, iid), opt_time(mr, "updated_at", &ep)?, mr));
        mr_by_iid.insert(iid, mr.clone());
    }
    let pending = g.run.pending(R, items, summary);
    bar.set_total(pending.len() as u64);
    let w = g.run.window();
    for part in pending.chunks(g.run.chunk()) {
        let mut out = Vec::new();
        let mut n = 0;
        for (_, mr) in part {
            n += mr_deliveries(mr, &g.ctx, &w, &ep, &mut out)?;
        }
        *summary.items.entry("merge_requests".into()).or_default() += n;
        let last = part.last().map(|(k, _)| k.clone());
        g.run
            .deliver(R, &bar, &out, last, part.len() as u64, summary)
            .await?;
    }
    g.run.done(R, &bar, one_page(&list), "", summary).await?;
    Ok(mr_by_iid)
}

/// The default branch's commits (a conditional list) as pushes, a page's worth at a time.
async fn commits(g: &mut Gl<'_>, summary: &mut Summary) -> anyhow::Result<()> {
    const R: &str = "commits";
    if g.run.skip_done(R, summary) {
        return Ok(());
    }
    let client = g.run.client;
    let bar = client.progress.resource(&g.run.label("commits"), client);
    // An empty repository has no default branch, and nothing was pushed.
    let (Some(branch), Some(path)) = (g.ctx.default_branch.clone(), g.paths.commits.clone()) else {
        return g.run.done(R, &bar, None, "", summary).await;
    };
    let Some(list) = conditional_list(g, R, &path, &bar, summary).await? else {
        return Ok(());
    };
    let ep = get_ep(&path);
    *summary.items.entry("commits".into()).or_default() += list.items.len() as u64;
    let mut items = Vec::new();
    for push in pushes(&list.items, &ep)? {
        let at = list
            .items
            .iter()
            .find(|c| c["id"].as_str() == Some(push.after.as_str()))
            .map(|c| field_time(c, "committed_date", &ep))
            .transpose()?
            .unwrap_or(g.run.window().since);
        items.push((format!("{}#{}", time_key(at), push.after), None, push));
    }
    let pending = g.run.pending(R, items, summary);
    bar.set_total(pending.len() as u64);
    let chunk = g.run.chunk();
    let mut pending = pending.into_iter().peekable();
    while pending.peek().is_some() {
        let part: Vec<(String, Push)> = pending.by_ref().take(chunk).collect();
        let last = part.last().map(|(k, _)| k.clone());
        let n = part.len() as u64;
        let out: Vec<Recorded> = part
            .into_iter()
            .map(|(_, p)| push_delivery(&g.ctx, &branch, p))
            .collect();
        g.run.deliver(R, &bar, &out, last, n, summary).await?;
    }
    g.run.done(R, &bar, one_page(&list), "", summary).await
}

/// Pipelines created in the window (their list is read every time: a job's change need not
/// show in it), a page's worth at a time, each read on its own (its end and queue time) with
/// its jobs from the project's jobs list and the merge request it ran for.
async fn pipelines(
    g: &mut Gl<'_>,
    mut mr_by_iid: HashMap<u64, Value>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    const R: &str = "pipelines";
    if g.run.skip_done(R, summary) {
        return Ok(());
    }
    let client = g.run.client;
    let bar = client.progress.resource(&g.run.label("pipelines"), client);
    let w = g.run.window();
    let ep = get_ep(&g.paths.pipelines);
    let mut items = Vec::new();
    for pl in client
        .get_list_if(&bar, &g.paths.pipelines, |_| true, None)
        .await?
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let created = field_time(&pl, "created_at", &ep)?;
        if w.contains(created) {
            let id = field_u64(&pl, "id", &ep)?;
            items.push((item_key(created, id), opt_time(&pl, "updated_at", &ep)?, id));
        }
    }
    let pending = g.run.pending(R, items, summary);
    bar.set_total(pending.len() as u64);
    let jobs = if pending.is_empty() {
        Vec::new()
    } else {
        // Newest first: stop after the first page that reaches before --since.
        client
            .get_list(&g.run.label("jobs"), &g.paths.jobs, |page| {
                reaches(page, "created_at", w.since)
            })
            .await?
    };
    for part in pending.chunks(g.run.chunk()) {
        let ids: Vec<u64> = part.iter().map(|(_, id)| *id).collect();
        let details = pipeline_details(client, &g.base, &ids, &mut mr_by_iid).await?;
        let ci = Ci {
            details: &details,
            jobs: &jobs,
            mr_by_iid: &mr_by_iid,
            jobs_ep: get_ep(&g.paths.jobs),
        };
        let mut out = Vec::new();
        ci_deliveries(&ci, &g.ctx, &w, &mut summary.items, &mut out)?;
        let last = part.last().map(|(k, _)| k.clone());
        g.run
            .deliver(R, &bar, &out, last, part.len() as u64, summary)
            .await?;
    }
    g.run.done(R, &bar, None, "", summary).await
}

/// Deployments created in the window (a conditional list; as far back as the changes: see the
/// README), with their environments' tiers, a page's worth at a time.
async fn deployments(g: &mut Gl<'_>, summary: &mut Summary) -> anyhow::Result<()> {
    const R: &str = "deployments";
    if g.run.skip_done(R, summary) {
        return Ok(());
    }
    let client = g.run.client;
    let bar = client
        .progress
        .resource(&g.run.label("deployments"), client);
    let path = g.paths.deps.clone();
    let Some(list) = conditional_list(g, R, &path, &bar, summary).await? else {
        return Ok(());
    };
    let ep = get_ep(&path);
    let w = g.run.window();
    let mut items = Vec::new();
    for d in &list.items {
        let created = field_time(d, "created_at", &ep)?;
        if w.contains(created) {
            let id = field_u64(d, "id", &ep)?;
            items.push((item_key(created, id), opt_time(d, "updated_at", &ep)?, d));
        }
    }
    let pending = g.run.pending(R, items, summary);
    bar.set_total(pending.len() as u64);
    let mut tiers: HashMap<String, Value> = HashMap::new();
    if !pending.is_empty() {
        let envs = client
            .get_list(&g.run.label("environments"), &g.paths.envs, |_| true)
            .await?;
        for e in &envs {
            let name = field_str(e, "name", &get_ep(&g.paths.envs))?;
            tiers.insert(name.to_string(), e["tier"].clone());
        }
    }
    for part in pending.chunks(g.run.chunk()) {
        let mut out = Vec::new();
        let mut n = 0;
        for (_, d) in part {
            n += deployment_deliveries(d, &tiers, &g.ctx, &w, &ep, &mut out)?;
        }
        *summary.items.entry("deployments".into()).or_default() += n;
        let last = part.last().map(|(k, _)| k.clone());
        g.run
            .deliver(R, &bar, &out, last, part.len() as u64, summary)
            .await?;
    }
    g.run.done(R, &bar, one_page(&list), "", summary).await
}

/// The pipelines of `ids`, each read on its own (its end and queue time): (path, body); the
/// merge requests of merge-request pipelines not in `mr_by_iid` are read into it.
async fn pipeline_details(
    client: &Arc<Client>,
    base: &str,
    ids: &[u64],
    mr_by_iid: &mut HashMap<u64, Value>,
) -> anyhow::Result<Vec<(String, Value)>> {
    let details = gets(
        client,
        ids.iter().map(|id| format!("{base}/pipelines/{id}")),
    )
    .await?;
    let mut missing: BTreeSet<u64> = BTreeSet::new();
    for (_, d) in &details {
        if let Some(iid) = mr_of_ref(d["ref"].as_str().unwrap_or_default()) {
            if !mr_by_iid.contains_key(&iid) {
                missing.insert(iid);
            }
        }
    }
    for (p, mr) in gets(
        client,
        missing
            .iter()
            .map(|iid| format!("{base}/merge_requests/{iid}")),
    )
    .await?
    {
        mr_by_iid.insert(field_u64(&mr, "iid", &get_ep(&p))?, mr);
    }
    Ok(details)
}

/// What the pipeline and job hooks are made from.
struct Ci<'a> {
    /// Each pipeline of the window as read on its own: (path, body).
    details: &'a [(String, Value)],
    jobs: &'a [Value],
    mr_by_iid: &'a HashMap<u64, Value>,
    jobs_ep: String,
}

/// Each pipeline's hooks, then its jobs' (oldest first).
fn ci_deliveries(
    ci: &Ci<'_>,
    ctx: &Project,
    w: &Window,
    items: &mut BTreeMap<String, u64>,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<()> {
    // Jobs by pipeline, oldest first.
    let mut jobs_of: HashMap<u64, Vec<&Value>> = HashMap::new();
    for j in ci.jobs {
        let pid = field_u64(j, "pipeline.id", &ci.jobs_ep)?;
        jobs_of.entry(pid).or_default().push(j);
    }
    for js in jobs_of.values_mut() {
        js.sort_by_key(|j| j["id"].as_u64());
    }
    let mut n_jobs = 0;
    for (dp, d) in ci.details {
        let pid = field_u64(d, "id", &get_ep(dp))?;
        let js = jobs_of.get(&pid).map(Vec::as_slice).unwrap_or_default();
        pipeline_deliveries(d, js, ci.mr_by_iid, ctx, w, &get_ep(dp), &ci.jobs_ep, out)?;
        for j in js {
            n_jobs += job_deliveries(j, d, ctx, w, &ci.jobs_ep, out)?;
        }
    }
    *items.entry("pipelines".into()).or_default() += ci.details.len() as u64;
    *items.entry("jobs".into()).or_default() += n_jobs;
    Ok(())
}

/// Each path read with one GET, at most `concurrency` at once, in order: (path, body).
async fn gets(
    client: &Arc<Client>,
    paths: impl Iterator<Item = String>,
) -> anyhow::Result<Vec<(String, Value)>> {
    let concurrency = client.settings.concurrency.max(1);
    let paths: Vec<String> = paths.collect();
    futures_util::stream::iter(paths.into_iter().map(|path| {
        let client = client.clone();
        async move {
            let body = client.get(&client.url(&path)).await?.body;
            anyhow::Ok((path, body))
        }
    }))
    .buffered(concurrency)
    .try_collect()
    .await
}

/// The merge request a merge-request pipeline's ref names (`refs/merge-requests/3/head`).
fn mr_of_ref(r: &str) -> Option<u64> {
    r.strip_prefix("refs/merge-requests/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// The project as hooks name it.
struct Project {
    id: u64,
    default_branch: Option<String>,
    web_url: String,
    /// The hooks' `project` object.
    project: Value,
    /// The hooks' `repository` object.
    repository: Value,
}

impl Project {
    fn of(p: &Value, ep: &str) -> anyhow::Result<Project> {
        let id = field_u64(p, "id", ep)?;
        let path = field_str(p, "path_with_namespace", ep)?;
        let web_url = field_str(p, "web_url", ep)?.to_string();
        let default_branch = p["default_branch"].as_str().map(str::to_string);
        let visibility_level = match p["visibility"].as_str() {
            Some("public") => 20,
            Some("internal") => 10,
            _ => 0,
        };
        let project = json!({
            "id": id,
            "name": p["name"],
            "description": p["description"],
            "web_url": web_url,
            "avatar_url": p["avatar_url"],
            "git_ssh_url": p["ssh_url_to_repo"],
            "git_http_url": p["http_url_to_repo"],
            "namespace": p["namespace"]["name"],
            "visibility_level": visibility_level,
            "path_with_namespace": path,
            "default_branch": default_branch,
            "ci_config_path": p["ci_config_path"],
            "homepage": web_url,
            "url": p["ssh_url_to_repo"],
            "ssh_url": p["ssh_url_to_repo"],
            "http_url": p["http_url_to_repo"],
        });
        let repository = json!({
            "name": p["name"],
            "url": p["ssh_url_to_repo"],
            "description": p["description"],
            "homepage": web_url,
            "git_http_url": p["http_url_to_repo"],
            "git_ssh_url": p["ssh_url_to_repo"],
            "visibility_level": visibility_level,
        });
        Ok(Project {
            id,
            default_branch,
            web_url,
            project,
            repository,
        })
    }

    fn commit_url(&self, sha: &str) -> String {
        format!("{}/-/commit/{sha}", self.web_url.trim_end_matches('/'))
    }
}

fn delivery(event: &str, action: &str, object: &str, at: &str, body: Value) -> Recorded {
    let id = delivery_id(SOURCE, event, action, object, at);
    let label = format!("{event}/{action}/{object}");
    recorded(
        SOURCE,
        &[
            ("x-gitlab-event", event.to_string()),
            ("x-gitlab-event-uuid", id),
        ],
        &body,
        label,
    )
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

/// Labels as hooks carry them (`title`): the API's label objects (`with_labels_details`) name
/// it `name`; plain lists are titles.
fn labels(v: &Value) -> Value {
    let out: Vec<Value> = v["labels"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter_map(|l| match l {
                    Value::String(s) => Some(json!({"title": s})),
                    Value::Object(o) => {
                        let title = o.get("name").or(o.get("title"))?.clone();
                        Some(json!({
                            "id": o.get("id"),
                            "title": title,
                            "color": o.get("color"),
                            "description": o.get("description"),
                            "type": "ProjectLabel",
                        }))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Value::Array(out)
}

/// One close or reopening of an issue: (when, `close` or `reopen`, the time as written).
type Turn = (Time, &'static str, String);

/// The `closed` and `reopened` events of issues, by issue IID, oldest first.
fn history(events: &[Value], ep: &str) -> anyhow::Result<HashMap<u64, Vec<Turn>>> {
    let mut out: HashMap<u64, Vec<Turn>> = HashMap::new();
    for e in events {
        let action = match field_str(e, "action_name", ep)? {
            "closed" => "close",
            "reopened" => "reopen",
            _ => continue,
        };
        if !e["target_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("issue"))
        {
            continue;
        }
        let iid = field_u64(e, "target_iid", ep)?;
        let at = field_time(e, "created_at", ep)?;
        out.entry(iid)
            .or_default()
            .push((at, action, text(e, "created_at")));
    }
    for turns in out.values_mut() {
        turns.sort();
    }
    Ok(out)
}

/// An issue as its hooks describe it.
struct IssueHook<'a> {
    issue: &'a Value,
    ctx: &'a Project,
    iid: u64,
    kind: &'static str,
    confidential: bool,
    type_name: Option<String>,
    labels: Value,
}

impl IssueHook<'_> {
    /// The hook's body for `action`, the issue then in `state`.
    fn body(&self, action: &str, state: &str, updated: &Value, closed_at: &Value) -> Value {
        let (issue, ctx, kind, labels) = (self.issue, self.ctx, self.kind, &self.labels);
        json!({
            "object_kind": kind,
            "event_type": kind,
            "user": issue["author"],
            "project": ctx.project,
            "repository": ctx.repository,
            "object_attributes": {
                "id": issue["id"],
                "iid": self.iid,
                "title": issue["title"],
                "description": issue["description"],
                "url": issue["web_url"],
                "project_id": ctx.id,
                "author_id": issue["author"]["id"],
                "confidential": self.confidential,
                "created_at": issue["created_at"],
                "updated_at": updated,
                "closed_at": closed_at,
                "due_date": issue["due_date"],
                "severity": issue["severity"],
                "state": state,
                "action": action,
                "type": self.type_name,
                "labels": labels,
            },
            "labels": labels,
        })
    }
}

/// The work item type as hooks name it (`Issue`, `Incident`); the API's `type` is `ISSUE`.
fn issue_type_name(issue: &Value) -> Option<String> {
    issue["type"]
        .as_str()
        .or(issue["issue_type"].as_str())
        .map(|t| {
            let t = t.to_ascii_lowercase().replace('_', " ");
            let mut c = t.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
}

/// An issue's `open` and (when closed) `close` hooks; 1 when the issue is in the window. A
/// reopened issue gets its history: a `close` and a `reopen` hook per turn.
fn issue_deliveries(
    issue: &Value,
    turns: &[Turn],
    ctx: &Project,
    w: &Window,
    ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<u64> {
    let iid = field_u64(issue, "iid", ep)?;
    field_str(issue, "title", ep)?;
    let created = field_time(issue, "created_at", ep)?;
    let closed = opt_time(issue, "closed_at", ep)?;
    let in_window = w.contains(created)
        || closed.is_some_and(|c| w.contains(c))
        || turns.iter().any(|t| w.contains(t.0));
    if !in_window || !w.not_after(created) {
        return Ok(0);
    }
    let confidential = issue["confidential"] == Value::Bool(true);
    let (event, kind) = if confidential {
        ("Confidential Issue Hook", "confidential_issue")
    } else {
        ("Issue Hook", "issue")
    };
    let hook = IssueHook {
        issue,
        ctx,
        iid,
        kind,
        confidential,
        type_name: issue_type_name(issue),
        labels: labels(issue),
    };
    let object = iid.to_string();
    out.push(delivery(
        event,
        "open",
        &object,
        &text(issue, "created_at"),
        hook.body("open", "opened", &issue["created_at"], &Value::Null),
    ));
    if turns.iter().any(|t| t.1 == "reopen") {
        issue_turns(&hook, event, turns, w, out);
        return Ok(1);
    }
    if closed.is_some_and(|c| w.not_after(c)) {
        out.push(delivery(
            event,
            "close",
            &object,
            &text(issue, "closed_at"),
            hook.body("close", "closed", &issue["closed_at"], &issue["closed_at"]),
        ));
    }
    Ok(1)
}

/// A reopened issue's history: a `close` or `reopen` hook per turn, up to the window's end.
fn issue_turns(
    hook: &IssueHook<'_>,
    event: &str,
    turns: &[Turn],
    w: &Window,
    out: &mut Vec<Recorded>,
) {
    let object = hook.iid.to_string();
    for (at, action, written) in turns {
        if !w.not_after(*at) {
            break;
        }
        let (state, closed_at) = if *action == "close" {
            ("closed", json!(written))
        } else {
            ("opened", Value::Null)
        };
        out.push(delivery(
            event,
            action,
            &object,
            written,
            hook.body(action, state, &json!(written), &closed_at),
        ));
    }
}

/// A merge request as its hooks describe it.
struct MrHook<'a> {
    mr: &'a Value,
    ctx: &'a Project,
    iid: u64,
    labels: Value,
}

impl MrHook<'_> {
    /// The hook's body for `action`, the merge request then in `state`; `end` is its
    /// `merged_at` or `closed_at`.
    fn body(
        &self,
        action: &str,
        state: &str,
        updated: &Value,
        end: Option<(&str, &Value)>,
    ) -> Value {
        let (mr, ctx, labels) = (self.mr, self.ctx, &self.labels);
        let sha = mr["sha"].as_str();
        let mut attrs = json!({
            "id": mr["id"],
            "iid": self.iid,
            "title": mr["title"],
            "description": mr["description"],
            "url": mr["web_url"],
            "author_id": mr["author"]["id"],
            "source_branch": mr["source_branch"],
            "target_branch": mr["target_branch"],
            "source_project_id": mr["source_project_id"],
            "target_project_id": mr["target_project_id"],
            "created_at": mr["created_at"],
            "updated_at": updated,
            "state": state,
            "action": action,
            "draft": mr["draft"].as_bool().unwrap_or(false),
            "work_in_progress": mr["work_in_progress"].as_bool().unwrap_or(false),
            "merge_status": mr["merge_status"],
            "detailed_merge_status": mr["detailed_merge_status"],
            "merge_commit_sha": Value::Null,
            "labels": labels,
            "last_commit": sha.map(|s| json!({"id": s, "url": ctx.commit_url(s)})),
        });
        if let Some((k, at)) = end {
            attrs[k] = at.clone();
            if k == "merged_at" {
                attrs["merge_commit_sha"] = mr["merge_commit_sha"].clone();
                attrs["squash_commit_sha"] = mr["squash_commit_sha"].clone();
            }
        }
        json!({
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": mr["author"],
            "project": ctx.project,
            "repository": ctx.repository,
            "object_attributes": attrs,
            "labels": labels,
        })
    }
}

/// A merge request's `open` and (when merged or closed) `merge` or `close` hooks.
fn mr_deliveries(
    mr: &Value,
    ctx: &Project,
    w: &Window,
    ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<u64> {
    let iid = field_u64(mr, "iid", ep)?;
    field_str(mr, "title", ep)?;
    field_str(mr, "source_branch", ep)?;
    field_str(mr, "target_branch", ep)?;
    let state = field_str(mr, "state", ep)?;
    let created = field_time(mr, "created_at", ep)?;
    let merged_at = opt_time(mr, "merged_at", ep)?;
    let closed_at = opt_time(mr, "closed_at", ep)?;
    let ended = match state {
        "merged" => Some((
            "merge",
            merged_at.or(closed_at).or(opt_time(mr, "updated_at", ep)?),
        )),
        "closed" => Some(("close", closed_at.or(opt_time(mr, "updated_at", ep)?))),
        _ => None,
    };
    let ended_at = ended.and_then(|e| e.1);
    let in_window = w.contains(created) || ended_at.is_some_and(|c| w.contains(c));
    if !in_window || !w.not_after(created) {
        return Ok(0);
    }
    let object = iid.to_string();
    let hook = MrHook {
        mr,
        ctx,
        iid,
        labels: labels(mr),
    };
    out.push(delivery(
        "Merge Request Hook",
        "open",
        &object,
        &text(mr, "created_at"),
        hook.body("open", "opened", &mr["created_at"], None),
    ));
    if let Some((action, Some(at))) = ended {
        if w.not_after(at) {
            let written = json!(iso_ms(at));
            let (key, state) = if action == "merge" {
                ("merged_at", "merged")
            } else {
                ("closed_at", "closed")
            };
            out.push(delivery(
                "Merge Request Hook",
                action,
                &object,
                &iso_ms(at),
                hook.body(action, state, &written, Some((key, &written))),
            ));
        }
    }
    Ok(1)
}

fn iso_ms(t: Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A pipeline hook's `ref` and `merge_request`: those of the merge request whose ref
/// (`refs/merge-requests/:iid/head`) it ran for, else its own ref and null.
fn hook_merge_request(git_ref: &str, mrs: &HashMap<u64, Value>) -> (Value, Value) {
    match mr_of_ref(git_ref).and_then(|iid| mrs.get(&iid)) {
        Some(mr) => (
            mr["source_branch"].clone(),
            json!({
                "id": mr["id"],
                "iid": mr["iid"],
                "title": mr["title"],
                "source_branch": mr["source_branch"],
                "source_project_id": mr["source_project_id"],
                "target_branch": mr["target_branch"],
                "target_project_id": mr["target_project_id"],
                "state": mr["state"],
                "url": mr["web_url"],
            }),
        ),
        None => (json!(git_ref), Value::Null),
    }
}

/// The stages of a pipeline's jobs, in the order they first appear.
fn stages_of<'a>(jobs: &[&'a Value]) -> Vec<&'a str> {
    let mut stages: Vec<&str> = Vec::new();
    for j in jobs {
        let s = j["stage"].as_str().unwrap_or_default();
        if !stages.contains(&s) {
            stages.push(s);
        }
    }
    stages
}

/// A pipeline hook's `builds`: each job as it is (`started`) or as it was created.
fn pipeline_builds(jobs: &[&Value], jobs_ep: &str, started: bool) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for j in jobs {
        field_u64(j, "id", jobs_ep)?;
        field_str(j, "name", jobs_ep)?;
        field_str(j, "status", jobs_ep)?;
        out.push(if started {
            json!({
                "id": j["id"],
                "stage": j["stage"],
                "name": j["name"],
                "status": j["status"],
                "created_at": j["created_at"],
                "started_at": j["started_at"],
                "finished_at": j["finished_at"],
                "duration": j["duration"],
                "queued_duration": j["queued_duration"],
                "allow_failure": j["allow_failure"],
                "failure_reason": j["failure_reason"],
                "when": j["when"],
                "manual": j["status"] == "manual",
                "user": j["user"],
                "runner": j["runner"],
            })
        } else {
            json!({
                "id": j["id"],
                "stage": j["stage"],
                "name": j["name"],
                "status": "created",
                "created_at": j["created_at"],
                "started_at": Value::Null,
                "finished_at": Value::Null,
                "duration": Value::Null,
                "queued_duration": Value::Null,
                "allow_failure": j["allow_failure"],
                "failure_reason": Value::Null,
            })
        });
    }
    Ok(out)
}

/// A pipeline's `running` hook at its creation and (once it ended) its final one, with its jobs
/// as `builds`.
#[allow(clippy::too_many_arguments)]
fn pipeline_deliveries(
    p: &Value,
    jobs: &[&Value],
    mrs: &HashMap<u64, Value>,
    ctx: &Project,
    w: &Window,
    ep: &str,
    jobs_ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<()> {
    let id = field_u64(p, "id", ep)?;
    let sha = field_str(p, "sha", ep)?;
    let git_ref = field_str(p, "ref", ep)?;
    let status = field_str(p, "status", ep)?;
    field_time(p, "created_at", ep)?;
    let finished = opt_time(p, "finished_at", ep)?;
    // A merge-request pipeline: the hook's `ref` is the merge request's source branch.
    let (hook_ref, merge_request) = hook_merge_request(git_ref, mrs);
    let stages = stages_of(jobs);
    let builds = |started: bool| pipeline_builds(jobs, jobs_ep, started);
    let hook = |status: &str, ended: bool| -> anyhow::Result<Value> {
        Ok(json!({
            "object_kind": "pipeline",
            "object_attributes": {
                "id": id,
                "iid": p["iid"],
                "name": p["name"],
                "ref": hook_ref,
                "tag": p["tag"].as_bool().unwrap_or(false),
                "sha": sha,
                "before_sha": p["before_sha"],
                "source": p["source"],
                "status": status,
                "detailed_status": if ended { p["detailed_status"]["text"].clone() } else { json!(status) },
                "stages": stages,
                "created_at": p["created_at"],
                "finished_at": if ended { p["finished_at"].clone() } else { Value::Null },
                "duration": if ended { p["duration"].clone() } else { Value::Null },
                // known once it runs: the `running` hook carries it too
                "queued_duration": p["queued_duration"],
                "variables": [],
                "url": p["web_url"],
            },
            "merge_request": merge_request,
            "user": p["user"],
            "project": ctx.project,
            "commit": {"id": sha, "url": ctx.commit_url(sha)},
            "builds": builds(ended)?,
        }))
    };
    let object = id.to_string();
    out.push(delivery(
        "Pipeline Hook",
        "running",
        &object,
        &text(p, "created_at"),
        hook("running", false)?,
    ));
    let final_status = matches!(status, "success" | "failed" | "canceled" | "skipped");
    if final_status && finished.is_none_or(|f| w.not_after(f)) {
        let at = p["finished_at"]
            .as_str()
            .or(p["updated_at"].as_str())
            .unwrap_or_default()
            .to_string();
        out.push(delivery(
            "Pipeline Hook",
            status,
            &object,
            &at,
            hook(status, true)?,
        ));
    }
    Ok(())
}

/// A job's `running` hook (once started) and its final one; 1 when it started.
fn job_deliveries(
    j: &Value,
    pipeline: &Value,
    ctx: &Project,
    w: &Window,
    ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<u64> {
    let id = field_u64(j, "id", ep)?;
    field_str(j, "name", ep)?;
    let status = field_str(j, "status", ep)?;
    let Some(started) = opt_time(j, "started_at", ep)? else {
        return Ok(0);
    };
    if !w.not_after(started) {
        return Ok(0);
    }
    let finished = opt_time(j, "finished_at", ep)?;
    let hook = |status: &str, ended: bool| {
        json!({
            "object_kind": "build",
            "ref": j["ref"],
            "tag": j["tag"].as_bool().unwrap_or(false),
            "before_sha": pipeline["before_sha"],
            "sha": j["pipeline"]["sha"].as_str().or(pipeline["sha"].as_str()),
            "build_id": id,
            "build_name": j["name"],
            "build_stage": j["stage"],
            "build_status": status,
            "build_created_at": j["created_at"],
            "build_started_at": j["started_at"],
            "build_finished_at": if ended { j["finished_at"].clone() } else { Value::Null },
            "build_duration": if ended { j["duration"].clone() } else { Value::Null },
            "build_queued_duration": j["queued_duration"],
            "build_allow_failure": j["allow_failure"].as_bool().unwrap_or(false),
            "build_failure_reason": if ended { j["failure_reason"].clone() } else { Value::Null },
            "pipeline_id": pipeline["id"],
            "project_id": ctx.id,
            "project_name": ctx.project["name"],
            "user": j["user"],
            "runner": j["runner"],
            "commit": {
                "id": pipeline["id"],
                "name": pipeline["name"],
                "sha": pipeline["sha"],
                "status": pipeline["status"],
            },
            "project": ctx.project,
            "repository": ctx.repository,
        })
    };
    let object = id.to_string();
    out.push(delivery(
        "Job Hook",
        "running",
        &object,
        &text(j, "started_at"),
        hook("running", false),
    ));
    let final_status = matches!(status, "success" | "failed" | "canceled" | "skipped");
    if final_status && finished.is_none_or(|f| w.not_after(f)) {
        out.push(delivery(
            "Job Hook",
            status,
            &object,
            &text(j, "finished_at"),
            hook(status, true),
        ));
    }
    Ok(1)
}

/// A deployment's `running` hook (when its job started, else when it was created) and its final
/// one (when it finished, else its last update); 1 when it ran.
fn deployment_deliveries(
    d: &Value,
    tiers: &HashMap<String, Value>,
    ctx: &Project,
    w: &Window,
    ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<u64> {
    let id = field_u64(d, "id", ep)?;
    let sha = field_str(d, "sha", ep)?;
    let env = field_str(d, "environment.name", ep)?;
    let status = field_str(d, "status", ep)?;
    field_time(d, "created_at", ep)?;
    if !matches!(status, "running" | "success" | "failed" | "canceled") {
        // created, blocked (waiting for approval), skipped: no hook the mapping uses
        return Ok(0);
    }
    let deployable = &d["deployable"];
    let started = deployable["started_at"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or(d["created_at"].as_str().unwrap_or_default())
        .to_string();
    let hook = |status: &str, at: &str| {
        json!({
            "object_kind": "deployment",
            "status": status,
            "status_changed_at": at,
            "deployment_id": id,
            "deployable_id": deployable["id"],
            "deployable_url": deployable["web_url"],
            "environment": env,
            "environment_tier": tiers.get(env).unwrap_or(&d["environment"]["tier"]),
            "environment_slug": d["environment"]["slug"],
            "environment_external_url": d["environment"]["external_url"],
            "project": ctx.project,
            "short_sha": sha.get(..8).unwrap_or(sha),
            "user": d["user"],
            "commit_url": ctx.commit_url(sha),
            "commit_title": deployable["commit"]["title"],
            "ref": d["ref"],
        })
    };
    let object = id.to_string();
    out.push(delivery(
        "Deployment Hook",
        "running",
        &object,
        &started,
        hook("running", &started),
    ));
    if status != "running" {
        let at = d["finished_at"]
            .as_str()
            .filter(|s| !s.is_empty())
            .or(d["updated_at"].as_str())
            .unwrap_or_default()
            .to_string();
        if crate::model::timestamp::parse(&at).is_none_or(|t| w.not_after(t)) {
            out.push(delivery(
                "Deployment Hook",
                status,
                &object,
                &at,
                hook(status, &at),
            ));
        }
    }
    Ok(1)
}

/// One push to the default branch: `before`, `after`, its commits (oldest first) as hooks carry
/// them, and how many it held.
struct Push {
    before: String,
    after: String,
    commits: Vec<Value>,
    total: usize,
}

/// The default branch's commits (newest first, as `GET /repository/commits` lists them) as
/// pushes: one per first-parent commit, carrying the commits its other parents brought (a
/// merge's branch commits), each at its committed date (a Push Hook's `timestamp`).
fn pushes(commits: &[Value], ep: &str) -> anyhow::Result<Vec<Push>> {
    let mut by_sha: HashMap<&str, &Value> = HashMap::new();
    for c in commits {
        let sha = field_str(c, "id", ep)?;
        field_str(c, "message", ep)?;
        field_time(c, "committed_date", ep)?;
        by_sha.insert(sha, c);
    }
    let mut out = Vec::new();
    for (after, group) in push_groups(commits, &by_sha) {
        out.push(push_of(after, group, &by_sha, ep)?);
    }
    Ok(out)
}

/// A commit's parents' SHAs, first parent first.
fn parent_ids(c: &Value) -> Vec<String> {
    c["parent_ids"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The commits grouped by push, oldest push first: (the push's head, its commits). Each
/// first-parent commit from the newest heads a push with the commits its other parents
/// brought; a commit left out of every group is a push of its own.
fn push_groups<'a>(
    commits: &'a [Value],
    by_sha: &HashMap<&'a str, &'a Value>,
) -> Vec<(&'a str, Vec<&'a Value>)> {
    let mut chain: Vec<&str> = Vec::new();
    let mut on_chain: HashSet<&str> = HashSet::new();
    let mut at = commits.first().and_then(|c| c["id"].as_str());
    while let Some(sha) = at {
        let Some(c) = by_sha.get(sha) else { break };
        if !on_chain.insert(sha) {
            break;
        }
        chain.push(sha);
        at = c["parent_ids"][0].as_str();
    }
    let mut assigned: HashSet<&str> = on_chain.clone();
    let mut groups: Vec<(&str, Vec<&Value>)> = Vec::new();
    for sha in chain.iter().rev() {
        let c = by_sha[sha];
        let mut group = vec![c];
        let mut todo: Vec<String> = parent_ids(c).into_iter().skip(1).collect();
        while let Some(p) = todo.pop() {
            let Some((&psha, pc)) = by_sha.get_key_value(p.as_str()) else {
                continue;
            };
            if !assigned.insert(psha) {
                continue;
            }
            group.push(pc);
            todo.extend(parent_ids(pc));
        }
        groups.push((sha, group));
    }
    for c in commits {
        let sha = c["id"].as_str().unwrap_or_default();
        if assigned.insert(sha) {
            groups.push((sha, vec![c]));
        }
    }
    groups
}

/// One push to `after`: its commits oldest first, the newest [`PUSH_COMMITS_LIMIT`] kept.
fn push_of(
    after: &str,
    group: Vec<&Value>,
    by_sha: &HashMap<&str, &Value>,
    ep: &str,
) -> anyhow::Result<Push> {
    let mut cs: Vec<(Time, String, Value)> = Vec::new();
    for c in group {
        let sha = text(c, "id");
        let t = field_time(c, "committed_date", ep)?;
        cs.push((
            t,
            sha.clone(),
            json!({
                "id": sha,
                "message": c["message"],
                "title": c["title"],
                "timestamp": c["committed_date"],
                "url": c["web_url"],
                "author": {"name": c["author_name"], "email": c["author_email"]},
                "added": [],
                "modified": [],
                "removed": [],
            }),
        ));
    }
    cs.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let total = cs.len();
    let commits: Vec<Value> = cs
        .into_iter()
        .skip(total.saturating_sub(PUSH_COMMITS_LIMIT))
        .map(|c| c.2)
        .collect();
    let before = by_sha[after]["parent_ids"][0]
        .as_str()
        .unwrap_or("0000000000000000000000000000000000000000")
        .to_string();
    Ok(Push {
        before,
        after: after.to_string(),
        commits,
        total,
    })
}

fn push_delivery(ctx: &Project, branch: &str, p: Push) -> Recorded {
    let body = json!({
        "object_kind": "push",
        "event_name": "push",
        "before": p.before,
        "after": p.after,
        "ref": format!("refs/heads/{branch}"),
        "checkout_sha": p.after,
        "project_id": ctx.id,
        "project": ctx.project,
        "repository": ctx.repository,
        "commits": p.commits,
        "total_commits_count": p.total,
    });
    delivery("Push Hook", "", &p.after, "", body)
}
