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
//! | `POST /graphql`, 50 pull requests a request (unless `--no-steps`; [`super::github_graphql`]) | `pull_request_review` `submitted` per submitted review; `pull_request` `converted_to_draft`, `ready_for_review`, `review_requested`; whether `opened` was a draft |
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

use super::github_graphql::{self, Drafts};
use super::{
    deliver_all, delivery_id, field, field_str, field_time, field_u64, item_key, opt_time,
    recorded, Bar, Capped, Client, Fetched, List, Run, Sink, State, Summary, Validator, Window,
    VALIDATOR_BODY_MAX,
};
use crate::model::Time;
use crate::replay::Recorded;
use anyhow::{bail, Context};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
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
    /// Read each delivered pull request's steps (reviews, draft, ready for review, review
    /// requests) through the GraphQL API, 50 pull requests a request.
    pub reviews: bool,
    /// The GraphQL endpoint; `None`: the one of the client's API URL
    /// ([`super::github_graphql::graphql_url`]).
    pub graphql_url: Option<String>,
}

impl Options {
    pub fn new(repos: Vec<String>, since: Time, until: Option<Time>) -> Self {
        Options {
            repos,
            orgs: Vec::new(),
            since,
            until,
            run_list_cap: 1000,
            reviews: true,
            graphql_url: None,
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

/// Reads every repository and delivers what was read to `sink`, without keeping anything in a
/// store (no validators, no cursors): [`run_with`] with [`State::none`].
pub async fn run(client: &Arc<Client>, opts: &Options, sink: &dyn Sink) -> anyhow::Result<Summary> {
    run_with(client, opts, sink, &State::none(SOURCE)).await
}

/// Reads every repository, one at a time, resource by resource ([`repo`]), with the validators
/// and cursors `state` keeps.
pub async fn run_with(
    client: &Arc<Client>,
    opts: &Options,
    sink: &dyn Sink,
    state: &State<'_>,
) -> anyhow::Result<Summary> {
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
    let result = async {
        for name in &repos {
            repo(client, opts, name, sink, state, &mut summary).await?;
        }
        anyhow::Ok(())
    }
    .await;
    summary.add_client(client);
    result.map(|()| summary)
}

/// The source name of validators and cursors.
pub const SOURCE: &str = "github";

/// The resources of a repository, in the order a run goes through them: the names of their
/// cursors (`backfill#github#owner/name` / `r#<resource>`).
pub const RESOURCES: [&str; 5] = [
    "issues",
    "pull_requests",
    "commits",
    "workflow_runs",
    "deployments",
];

/// A page's worth of a resource: its deliveries, the validators of the lists it read, the key
/// of its last item and how many items it holds.
struct Chunk {
    deliveries: Vec<Recorded>,
    validators: Vec<(String, Validator)>,
    last: Option<String>,
    n: u64,
}

/// A chunk on its way to the sink.
type InFlight<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Landed> + Send + 'a>>;

/// What delivering a chunk did: the sink's answers counted, or its error; the run with the
/// cursor it moved.
struct Landed {
    answers: Summary,
    sent: anyhow::Result<()>,
    n: u64,
    run: Run,
}

/// Reads the next chunk (`read`) while the previous one (`inflight`) is delivered: the reader
/// and the pipeline behind the sink work at the same time instead of taking turns. Returns
/// what was delivered, for [`Ctx::land`], and what was read.
async fn overlap<T>(
    inflight: Option<InFlight<'_>>,
    read: impl std::future::Future<Output = anyhow::Result<T>>,
) -> (Option<Landed>, anyhow::Result<T>) {
    match inflight {
        Some(sending) => {
            let (landed, read) = futures_util::join!(sending, read);
            (Some(landed), read)
        }
        None => (None, read.await),
    }
}

/// The last chunk's delivery, awaited.
async fn finish(inflight: Option<InFlight<'_>>) -> Option<Landed> {
    match inflight {
        Some(sending) => Some(sending.await),
        None => None,
    }
}

/// One repository's run: what it reads and delivers, resource by resource.
struct Ctx<'a> {
    client: &'a Arc<Client>,
    state: &'a State<'a>,
    sink: &'a dyn Sink,
    full_name: &'a str,
    base: String,
    repository: Value,
    run: Run,
    w: Window,
    /// A delivery of this run was refused: no cursor or validator moves past it.
    refused_before: u64,
}

impl<'a> Ctx<'a> {
    fn label(&self, what: &str) -> String {
        format!("{} {what}", self.full_name)
    }

    /// The validator of `resource` to send for the list at `path`, if one applies.
    async fn etag(&self, resource: &str, path: &str) -> anyhow::Result<Option<String>> {
        let url = self.client.list_url(path);
        Ok(self
            .state
            .validator(self.full_name, resource, &url, &self.w)
            .await?
            .map(|v| v.etag))
    }

    /// The items of `resource` still to deliver, in key order: the ones the run this one
    /// resumes delivered (at or before its cursor, unchanged since) are left out and counted.
    fn pending<T>(
        &self,
        resource: &str,
        mut items: Vec<(String, Option<Time>, T)>,
        summary: &mut Summary,
    ) -> Vec<(String, T)> {
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let before = items.len();
        let out: Vec<(String, T)> = items
            .into_iter()
            .filter(|(k, changed, _)| !self.run.delivered(resource, k, *changed))
            .map(|(k, _, t)| (k, t))
            .collect();
        summary.resumed_items += (before - out.len()) as u64;
        out
    }

    /// Starts delivering `chunk` of `resource` to the sink; it goes while the next chunk is
    /// read ([`overlap`]). Once its deliveries are accepted it keeps the validators of what it
    /// read and moves the resource's cursor to its last item at once, not when the next read
    /// ends: a run killed while reading resumes after every chunk delivered. Nothing moves once
    /// a delivery was refused (`refused`: one was, before this chunk). [`Ctx::land`] takes
    /// what it did.
    fn send(&self, resource: &'static str, chunk: Chunk, refused: bool) -> InFlight<'a> {
        let (sink, state, scope) = (self.sink, self.state, self.full_name);
        let mut run = self.run.clone();
        Box::pin(async move {
            let Chunk {
                deliveries,
                validators,
                last,
                n,
            } = chunk;
            let mut answers = Summary::default();
            let sent = async {
                deliver_all(sink, &deliveries, &mut answers).await?;
                if refused || answers.refused > 0 {
                    return Ok(());
                }
                state.save_validators(scope, validators).await?;
                if last.is_some() {
                    state.save_cursor(&mut run, resource, false, last).await?;
                }
                anyhow::Ok(())
            }
            .await;
            Landed {
                answers,
                sent,
                n,
                run,
            }
        })
    }

    /// Whether a delivery of this run was refused: no cursor or validator moves any more.
    fn refused(&self, summary: &Summary) -> bool {
        summary.refused > self.refused_before
    }

    /// Takes what a delivered chunk did: its answers counted, its items on the progress bar,
    /// the run as its cursor left it.
    fn land(
        &mut self,
        bar: &Bar,
        landed: Option<Landed>,
        summary: &mut Summary,
    ) -> anyhow::Result<()> {
        let Some(landed) = landed else {
            return Ok(());
        };
        summary.add_answers(&landed.answers);
        self.run = landed.run;
        landed.sent?;
        bar.items(self.client, landed.n);
        Ok(())
    }

    /// `resource` is done: its cursor says so, and the validator of its list (`url`, `etag`)
    /// is kept.
    async fn done(
        &mut self,
        resource: &str,
        bar: &Bar,
        list: Option<(String, Option<String>)>,
        note: &str,
        summary: &Summary,
    ) -> anyhow::Result<()> {
        bar.finish(self.client, note);
        if summary.refused > self.refused_before {
            return Ok(());
        }
        if let Some((url, Some(etag))) = list {
            let v = Validator::new(&url, etag, &self.w);
            self.state
                .save_validators(self.full_name, vec![(resource.to_string(), v)])
                .await?;
        }
        self.state
            .save_cursor(&mut self.run, resource, true, None)
            .await
    }

    /// Skips `resource` when the run this one resumes had done it.
    fn skip_done(&self, resource: &str, summary: &mut Summary) -> bool {
        let done = self.run.done(resource);
        if done {
            summary.skipped_resources.push(format!(
                "{} {resource} (done before the interruption)",
                self.full_name
            ));
        }
        done
    }

    fn unchanged(&self, resource: &str, summary: &mut Summary) {
        summary
            .skipped_resources
            .push(format!("{} {resource}", self.full_name));
    }
}

/// One repository, resource by resource (issues, pull requests, commits, workflow runs and
/// their jobs, deployments and their statuses). Each resource's list is read whole (the first
/// page conditional where a validator applies: a 304 leaves the resource alone), then its items
/// are delivered in key order, a page's worth at a time (with their jobs or statuses, each list
/// conditional too), and after each chunk the validators of what it read are kept and the
/// resource's cursor moves. A run interrupted half-way is resumed by the next one over the same
/// window ([`State::begin`]).
pub async fn repo(
    client: &Arc<Client>,
    opts: &Options,
    full_name: &str,
    sink: &dyn Sink,
    state: &State<'_>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let Some((owner, name)) = full_name.split_once('/') else {
        bail!("--repo {full_name:?} is not OWNER/NAME");
    };
    let base = format!("/repos/{owner}/{name}");
    let window = Window {
        since: opts.since,
        until: opts.until,
    };
    let run = state.begin(full_name, window, chrono::Utc::now()).await?;
    if run.resumed {
        client.progress.println(&format!(
            "backfill: {full_name}: resuming the run started at {} (since {})",
            run.started
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            run.window
                .since
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
        summary.resumed.push(full_name.to_string());
    }
    let w = run.window;

    let repository = repository_object(client, state, full_name, &base, &w).await?;
    let default_branch =
        field_str(&repository, "default_branch", &format!("GET {base}"))?.to_string();
    let mut ctx = Ctx {
        client,
        state,
        sink,
        full_name,
        base,
        repository,
        run,
        w,
        refused_before: summary.refused,
    };
    for kind in [
        "issues",
        "issue_events",
        "pull_requests",
        "pull_request_reviews",
        "pull_request_events",
        "commits",
        "workflow_runs",
        "workflow_jobs",
        "deployments",
        "deployment_statuses",
    ] {
        summary.items.entry(kind.into()).or_default();
    }
    issues(&mut ctx, summary).await?;
    let graphql = opts.reviews.then(|| {
        opts.graphql_url
            .clone()
            .unwrap_or_else(|| super::github_graphql::graphql_url(&client.settings.api_url))
    });
    pulls(&mut ctx, graphql.as_deref(), summary).await?;
    commits(&mut ctx, &default_branch, summary).await?;
    runs(&mut ctx, opts.run_list_cap, summary).await?;
    deployments(&mut ctx, summary).await?;
    if summary.refused == ctx.refused_before {
        state.finish(&ctx.run).await?;
    }
    Ok(())
}

/// The repository object every delivery carries (`GET /repos/{owner}/{name}`), kept whole in
/// its validator so that an unchanged one (304) costs no rate limit.
async fn repository_object(
    client: &Arc<Client>,
    state: &State<'_>,
    full_name: &str,
    base: &str,
    w: &Window,
) -> anyhow::Result<Value> {
    let repo_ep = format!("GET {base}");
    let repo_url = client.url(base);
    let kept = state
        .validator(full_name, "repository", &repo_url, w)
        .await?
        .filter(|v| v.body.is_some());
    Ok(
        match client
            .get_if(&repo_url, kept.as_ref().map(|v| v.etag.as_str()))
            .await?
        {
            Fetched::NotModified => kept.and_then(|v| v.body).expect("kept whole"),
            Fetched::Modified(page, etag) => {
                let repository = repository(&page.body, &repo_ep)?;
                if let Some(etag) = etag {
                    let mut v = Validator::new(&repo_url, etag, w);
                    if repository.to_string().len() <= VALIDATOR_BODY_MAX {
                        v.body = Some(repository.clone());
                        state
                            .save_validators(full_name, vec![("repository".into(), v)])
                            .await?;
                    }
                }
                repository
            }
        },
    )
}

fn secs(t: Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn after_since(w: &Window, page: &[Value], field: &str) -> bool {
    page.last()
        .and_then(|p| p[field].as_str())
        .and_then(|t| t.parse::<Time>().ok())
        .is_none_or(|t| t >= w.since)
}

/// The close/reopen history of the window's issues, by number (`GET .../issues/events`, newest
/// first, read back to the window's start).
async fn issue_history(
    ctx: &Ctx<'_>,
    summary: &mut Summary,
) -> anyhow::Result<HashMap<u64, Vec<Turn>>> {
    let client = ctx.client;
    let events_path = format!("{}/issues/events", ctx.base);
    let w = ctx.w;
    let events_bar = client.progress.resource(&ctx.label("issue events"), client);
    let events = client
        .get_list_if(
            &events_bar,
            &events_path,
            |p| after_since(&w, p, "created_at"),
            None,
        )
        .await?
        .map(|l| l.items)
        .unwrap_or_default();
    *summary.items.entry("issue_events".into()).or_default() += events.len() as u64;
    events_bar.items(client, events.len() as u64);
    events_bar.finish(client, "");
    history(&events, &format!("GET {events_path}"))
}

/// Issues (newest updates first, so that any change shows on the first page: one conditional
/// request tells whether anything changed), with their close/reopen history from the issue
/// events, read only when there are issues to deliver.
async fn issues(ctx: &mut Ctx<'_>, summary: &mut Summary) -> anyhow::Result<()> {
    const R: &str = "issues";
    if ctx.skip_done(R, summary) {
        return Ok(());
    }
    let client = ctx.client;
    let bar = client.progress.resource(&ctx.label("issues"), client);
    let path = format!(
        "{}/issues?state=all&sort=updated&direction=desc&since={}",
        ctx.base,
        secs(ctx.w.since)
    );
    let ep = format!("GET {path}");
    let etag = ctx.etag(R, &path).await?;
    let Some(list) = client
        .get_list_if(&bar, &path, |_| true, etag.as_deref())
        .await?
    else {
        ctx.unchanged(R, summary);
        return ctx.done(R, &bar, None, " (not modified)", summary).await;
    };
    // The list holds pull requests too: they are read from /pulls.
    let mut items = Vec::new();
    for issue in list
        .items
        .iter()
        .filter(|i| i.get("pull_request").is_none())
    {
        let number = field_u64(issue, "number", &ep)?;
        let created = field_time(issue, "created_at", &ep)?;
        let updated = opt_time(issue, "updated_at", &ep)?;
        items.push((item_key(created, number), updated, issue));
    }
    let history = if items.is_empty() {
        HashMap::new()
    } else {
        issue_history(ctx, summary).await?
    };
    let pending = ctx.pending(R, items, summary);
    bar.set_total(pending.len() as u64);
    let chunk = client.settings.page_size.max(1) as usize;
    let mut inflight = None;
    for part in pending.chunks(chunk) {
        let read = async {
            let mut out = Vec::new();
            let mut n = 0;
            for (_, issue) in part {
                let number = field_u64(issue, "number", &ep)?;
                n += issue_deliveries(
                    issue,
                    history.get(&number).map(Vec::as_slice).unwrap_or_default(),
                    &ctx.repository,
                    &ctx.w,
                    &ep,
                    &mut out,
                )?;
            }
            *summary.items.entry("issues".into()).or_default() += n;
            let last = part.last().map(|(k, _)| k.clone());
            anyhow::Ok(Chunk {
                deliveries: out,
                validators: vec![],
                last,
                n: part.len() as u64,
            })
        };
        let (landed, read) = overlap(inflight.take(), read).await;
        ctx.land(&bar, landed, summary)?;
        inflight = Some(ctx.send(R, read?, ctx.refused(summary)));
    }
    ctx.land(&bar, finish(inflight).await, summary)?;
    ctx.done(R, &bar, Some((list.url, list.etag)), "", summary)
        .await
}

/// Pull requests, newest updates first (a conditional first page tells whether any changed),
/// until a page reaches before `--since`, then a page's worth at a time with their steps (when
/// `graphql` names the GraphQL endpoint: [`pull_steps`]).
async fn pulls(
    ctx: &mut Ctx<'_>,
    graphql: Option<&str>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    const R: &str = "pull_requests";
    if ctx.skip_done(R, summary) {
        return Ok(());
    }
    let client = ctx.client;
    let bar = client
        .progress
        .resource(&ctx.label("pull requests"), client);
    let path = format!("{}/pulls?state=all&sort=updated&direction=desc", ctx.base);
    let ep = format!("GET {path}");
    let etag = ctx.etag(R, &path).await?;
    let w = ctx.w;
    let Some(list) = client
        .get_list_if(
            &bar,
            &path,
            |p| after_since(&w, p, "updated_at"),
            etag.as_deref(),
        )
        .await?
    else {
        ctx.unchanged(R, summary);
        return ctx.done(R, &bar, None, " (not modified)", summary).await;
    };
    let mut items = Vec::new();
    for pr in &list.items {
        let number = field_u64(pr, "number", &ep)?;
        let created = field_time(pr, "created_at", &ep)?;
        let updated = opt_time(pr, "updated_at", &ep)?;
        items.push((item_key(created, number), updated, pr));
    }
    let pending = ctx.pending(R, items, summary);
    bar.set_total(pending.len() as u64);
    let chunk = client.settings.page_size.max(1) as usize;
    let mut inflight = None;
    for part in pending.chunks(chunk) {
        let read = pull_chunk(ctx, graphql, part, &ep, summary);
        let (landed, read) = overlap(inflight.take(), read).await;
        ctx.land(&bar, landed, summary)?;
        inflight = Some(ctx.send(R, read?, ctx.refused(summary)));
    }
    ctx.land(&bar, finish(inflight).await, summary)?;
    // Read without steps, the list keeps no validator: a later run with steps reads it.
    let list = graphql.map(|_| (list.url, list.etag));
    ctx.done(R, &bar, list, "", summary).await
}

/// One page's worth of pull requests: the deliveries of those in the window, with their steps
/// when `graphql` is given, counted into `summary`.
async fn pull_chunk(
    ctx: &Ctx<'_>,
    graphql: Option<&str>,
    part: &[(String, &Value)],
    ep: &str,
    summary: &mut Summary,
) -> anyhow::Result<Chunk> {
    let mut delivered = Vec::new();
    for (_, pr) in part {
        if pull_in_window(pr, &ctx.w, ep)? {
            delivered.push(*pr);
        }
    }
    let (mut steps, validators) = match graphql {
        Some(url) => pull_steps(ctx, url, &delivered, ep).await?,
        None => Default::default(),
    };
    let mut out = Vec::new();
    let mut n = (0, 0);
    for pr in &delivered {
        let number = field_u64(pr, "number", ep)?;
        let (drafts, read) = steps
            .remove(&number)
            .unwrap_or_else(|| (Drafts::constant(pr["draft"] == true), None));
        pull_deliveries(pr, &drafts, &ctx.repository, &ctx.w, ep, &mut out)?;
        if let Some(read) = read {
            let (r, e) =
                step_deliveries(pr, &read, &drafts, &ctx.repository, &ctx.w, ep, &mut out)?;
            n = (n.0 + r, n.1 + e);
        }
    }
    let items = &mut summary.items;
    *items.entry("pull_requests".into()).or_default() += delivered.len() as u64;
    *items.entry("pull_request_reviews".into()).or_default() += n.0;
    *items.entry("pull_request_events".into()).or_default() += n.1;
    Ok(Chunk {
        deliveries: out,
        validators,
        last: part.last().map(|(k, _)| k.clone()),
        n: part.len() as u64,
    })
}

/// A pull request's draft history and (when read) its steps, by number.
type PullSteps = HashMap<u64, (Drafts, Option<github_graphql::Steps>)>;

/// The steps of `prs`, read through the GraphQL API in batches ([`github_graphql::read`]),
/// except for a pull request whose `updated_at` is the one a run that delivered its steps kept
/// in its validator (`steps/<n>`; a review or a ready-for-review moves `updated_at`): nothing of
/// it changed, only its draft history (kept in the validator) is needed. The validators to keep
/// once delivered.
async fn pull_steps(
    ctx: &Ctx<'_>,
    url: &str,
    prs: &[&Value],
    ep: &str,
) -> anyhow::Result<(PullSteps, Vec<(String, Validator)>)> {
    let mut wanted = Vec::new();
    for pr in prs {
        let n = field_u64(pr, "number", ep)?;
        let key = format!("{url}#{}/pull/{n}", ctx.full_name);
        wanted.push((n, time_str(pr, "updated_at"), (format!("steps/{n}"), key)));
    }
    let keys: Vec<(String, String)> = wanted.iter().map(|w| w.2.clone()).collect();
    let kept = ctx.state.validators(ctx.full_name, &keys, &ctx.w).await?;
    let mut out = PullSteps::new();
    let mut to_read = Vec::new();
    for ((n, updated, _), v) in wanted.iter().zip(kept) {
        let drafts = v
            .filter(|v| !updated.is_empty() && &v.etag == updated)
            .and_then(|v| v.body)
            .and_then(|b| serde_json::from_value::<Drafts>(b).ok());
        match drafts {
            Some(d) => drop(out.insert(*n, (d, None))),
            None => to_read.push(*n),
        }
    }
    let mut read = github_graphql::read(ctx.client, url, ctx.full_name, &to_read).await?;
    let mut validators = Vec::new();
    for (n, updated, (resource, key)) in wanted {
        let Some(steps) = read.remove(&n) else {
            continue;
        };
        let drafts = Drafts::of(&steps, &format!("POST {url}"))?;
        let body = serde_json::to_value(&drafts)?;
        if !updated.is_empty() && body.to_string().len() <= VALIDATOR_BODY_MAX {
            let mut v = Validator::new(&key, updated, &ctx.w);
            v.body = Some(body);
            validators.push((resource, v));
        }
        out.insert(n, (drafts, Some(steps)));
    }
    Ok((out, validators))
}

/// The default branch's commits (newest first: a conditional first page tells whether any
/// landed), as pushes.
async fn commits(ctx: &mut Ctx<'_>, branch: &str, summary: &mut Summary) -> anyhow::Result<()> {
    const R: &str = "commits";
    if ctx.skip_done(R, summary) {
        return Ok(());
    }
    let client = ctx.client;
    let bar = client.progress.resource(&ctx.label("commits"), client);
    let until_q = ctx
        .w
        .until
        .map(|u| format!("&until={}", secs(u)))
        .unwrap_or_default();
    let path = format!(
        "{}/commits?sha={branch}&since={}{until_q}",
        ctx.base,
        secs(ctx.w.since)
    );
    let ep = format!("GET {path}");
    let etag = ctx.etag(R, &path).await?;
    let Some(list) = client
        .get_list_if(&bar, &path, |_| true, etag.as_deref())
        .await?
    else {
        ctx.unchanged(R, summary);
        return ctx.done(R, &bar, None, " (not modified)", summary).await;
    };
    *summary.items.entry("commits".into()).or_default() += list.items.len() as u64;
    let dates: HashMap<&str, Time> = list
        .items
        .iter()
        .filter_map(|c| {
            let t = field_time(c, "commit.author.date", &ep)
                .or_else(|_| field_time(c, "commit.committer.date", &ep))
                .ok()?;
            Some((c["sha"].as_str()?, t))
        })
        .collect();
    let mut items = Vec::new();
    for p in pushes(&list.items, branch, &ep)? {
        let after = p["after"].as_str().unwrap_or_default().to_string();
        let at = dates.get(after.as_str()).copied().unwrap_or(ctx.w.since);
        items.push((format!("{}#{after}", super::time_key(at)), None, p));
    }
    let pending = ctx.pending(R, items, summary);
    bar.set_total(pending.len() as u64);
    let chunk = client.settings.page_size.max(1) as usize;
    let mut inflight = None;
    for part in pending.chunks(chunk) {
        let read = async {
            let mut out = Vec::new();
            for (_, p) in part {
                let mut body = p.clone();
                body["repository"] = ctx.repository.clone();
                let after = body["after"].as_str().unwrap_or_default().to_string();
                out.push(delivery("push", "", &after, "", body));
            }
            let last = part.last().map(|(k, _)| k.clone());
            anyhow::Ok(Chunk {
                deliveries: out,
                validators: vec![],
                last,
                n: part.len() as u64,
            })
        };
        let (landed, read) = overlap(inflight.take(), read).await;
        ctx.land(&bar, landed, summary)?;
        inflight = Some(ctx.send(R, read?, ctx.refused(summary)));
    }
    ctx.land(&bar, finish(inflight).await, summary)?;
    ctx.done(R, &bar, Some((list.url, list.etag)), "", summary)
        .await
}

/// Workflow runs created in the window (halved while over the list's cap), then a page's worth
/// at a time with their jobs (one list per run, conditional: a run whose jobs did not change
/// costs a 304 and delivers no job again).
async fn runs(ctx: &mut Ctx<'_>, cap: u64, summary: &mut Summary) -> anyhow::Result<()> {
    const R: &str = "workflow_runs";
    if ctx.skip_done(R, summary) {
        return Ok(());
    }
    let client = ctx.client;
    let bar = Arc::new(
        client
            .progress
            .resource(&ctx.label("workflow runs"), client),
    );
    let runs_path = format!("{}/actions/runs", ctx.base);
    let ep = format!("GET {runs_path}");
    let until = ctx.w.until.unwrap_or_else(chrono::Utc::now);
    let all = runs_in(client, &bar, &runs_path, ctx.w.since, until, cap).await?;
    let mut items = Vec::new();
    for r in &all {
        let created = field_time(r, "created_at", &ep)?;
        if ctx.w.contains(created) {
            let id = field_u64(r, "id", &ep)?;
            let updated = opt_time(r, "updated_at", &ep)?;
            items.push((item_key(created, id), updated, r));
        }
    }
    let pending = ctx.pending(R, items, summary);
    bar.set_total(pending.len() as u64);
    let chunk = client.settings.page_size.max(1) as usize;
    let mut inflight = None;
    for part in pending.chunks(chunk) {
        let read = async {
            let mut out = Vec::new();
            for (_, run) in part {
                run_deliveries(run, &ctx.repository, &ep, &mut out)?;
            }
            *summary.items.entry("workflow_runs".into()).or_default() += part.len() as u64;
            let ids: Vec<u64> = part
                .iter()
                .map(|(_, r)| r["id"].as_u64().unwrap_or_default())
                .collect();
            let base = ctx.base.clone();
            let (lists, validators) = lists_by_id(ctx, &bar, ids, "jobs", |id| {
                format!("{base}/actions/runs/{id}/jobs")
            })
            .await?;
            let mut n = 0;
            for (path, jobs) in &lists {
                for job in jobs {
                    n += job_deliveries(job, &ctx.repository, &format!("GET {path}"), &mut out)?;
                }
            }
            *summary.items.entry("workflow_jobs".into()).or_default() += n;
            let last = part.last().map(|(k, _)| k.clone());
            anyhow::Ok(Chunk {
                deliveries: out,
                validators,
                last,
                n: part.len() as u64,
            })
        };
        let (landed, read) = overlap(inflight.take(), read).await;
        ctx.land(&bar, landed, summary)?;
        inflight = Some(ctx.send(R, read?, ctx.refused(summary)));
    }
    ctx.land(&bar, finish(inflight).await, summary)?;
    ctx.done(R, &bar, None, "", summary).await
}

/// Deployments created in the window (newest first, until a page reaches before `--since`),
/// then a page's worth at a time with their statuses (one conditional list per deployment).
async fn deployments(ctx: &mut Ctx<'_>, summary: &mut Summary) -> anyhow::Result<()> {
    const R: &str = "deployments";
    if ctx.skip_done(R, summary) {
        return Ok(());
    }
    let client = ctx.client;
    let bar = Arc::new(client.progress.resource(&ctx.label("deployments"), client));
    let deps_path = format!("{}/deployments", ctx.base);
    let ep = format!("GET {deps_path}");
    let w = ctx.w;
    let all = client
        .get_list_if(&bar, &deps_path, |p| after_since(&w, p, "created_at"), None)
        .await?
        .map(|l| l.items)
        .unwrap_or_default();
    let mut items = Vec::new();
    for d in &all {
        let created = field_time(d, "created_at", &ep)?;
        if ctx.w.contains(created) {
            let id = field_u64(d, "id", &ep)?;
            let updated = opt_time(d, "updated_at", &ep)?;
            items.push((item_key(created, id), updated, d));
        }
    }
    let pending = ctx.pending(R, items, summary);
    bar.set_total(pending.len() as u64);
    let chunk = client.settings.page_size.max(1) as usize;
    let mut inflight = None;
    for part in pending.chunks(chunk) {
        let read = async {
            let ids: Vec<u64> = part
                .iter()
                .map(|(_, d)| d["id"].as_u64().unwrap_or_default())
                .collect();
            let base = ctx.base.clone();
            let (lists, validators) = lists_by_id(ctx, &bar, ids, "statuses", |id| {
                format!("{base}/deployments/{id}/statuses")
            })
            .await?;
            let mut out = Vec::new();
            let mut n_status = 0;
            for ((_, d), (path, statuses)) in part.iter().zip(&lists) {
                n_status += deployment_deliveries(
                    d,
                    statuses,
                    &ctx.repository,
                    &ctx.w,
                    &ep,
                    &format!("GET {path}"),
                    &mut out,
                )?;
            }
            *summary.items.entry("deployments".into()).or_default() += part.len() as u64;
            *summary
                .items
                .entry("deployment_statuses".into())
                .or_default() += n_status;
            let last = part.last().map(|(k, _)| k.clone());
            anyhow::Ok(Chunk {
                deliveries: out,
                validators,
                last,
                n: part.len() as u64,
            })
        };
        let (landed, read) = overlap(inflight.take(), read).await;
        ctx.land(&bar, landed, summary)?;
        inflight = Some(ctx.send(R, read?, ctx.refused(summary)));
    }
    ctx.land(&bar, finish(inflight).await, summary)?;
    ctx.done(R, &bar, None, "", summary).await
}

/// The workflow runs created from `from` to `to` (both included, to the second); a window
/// holding more runs than the API lists for one filter is read in two halves.
fn runs_in<'a>(
    client: &'a Client,
    bar: &'a Bar,
    path: &'a str,
    from: Time,
    to: Time,
    cap: u64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Vec<Value>>> + Send + 'a>> {
    Box::pin(async move {
        let range = format!("{}..{}", secs(from), secs(to));
        let q = percent_encoding::utf8_percent_encode(&range, percent_encoding::NON_ALPHANUMERIC);
        let filtered = format!("{path}?created={q}");
        let one_second = chrono::TimeDelta::seconds(1);
        match client
            .get_list_capped_on(bar, &filtered, |_| true, cap)
            .await?
        {
            Capped::All(runs) => Ok(runs),
            Capped::Over(_) if to - from > one_second => {
                let mid = from + (to - from) / 2;
                let mut runs = runs_in(client, bar, path, from, mid, cap).await?;
                let later = runs_in(client, bar, path, mid + one_second, to, cap).await?;
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

/// Whether a pull request is delivered: opened, merged or closed in the window (and not
/// opened after its end); its fields checked.
fn pull_in_window(pr: &Value, w: &Window, ep: &str) -> anyhow::Result<bool> {
    field_u64(pr, "number", ep)?;
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
    Ok(in_window && w.not_after(created))
}

/// A pull request's `opened` (a draft or not, as `drafts` says it was opened) and (when closed
/// or merged) `closed` deliveries.
fn pull_deliveries(
    pr: &Value,
    drafts: &Drafts,
    repository: &Value,
    w: &Window,
    ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<()> {
    let number = field_u64(pr, "number", ep)?;
    let merged_at = opt_time(pr, "merged_at", ep)?;
    let closed = opt_time(pr, "closed_at", ep)?;
    let id = number.to_string();
    let mut opened = pr.clone();
    opened["state"] = json!("open");
    opened["merged"] = json!(false);
    opened["merged_at"] = Value::Null;
    opened["closed_at"] = Value::Null;
    opened["merge_commit_sha"] = Value::Null;
    opened["updated_at"] = pr["created_at"].clone();
    opened["draft"] = json!(drafts.opened);
    out.push(delivery(
        "pull_request",
        "opened",
        &id,
        &time_str(pr, "created_at"),
        json!({"action": "opened", "number": number, "pull_request": opened, "repository": repository}),
    ));
    if let Some(c) = closed.filter(|c| w.not_after(*c)) {
        let mut closed = pr.clone();
        closed["state"] = json!("closed");
        closed["merged"] = json!(merged_at.is_some());
        closed["updated_at"] = pr["closed_at"].clone();
        closed["draft"] = json!(drafts.at(c));
        out.push(delivery(
            "pull_request",
            "closed",
            &id,
            &time_str(pr, "closed_at"),
            json!({"action": "closed", "number": number, "pull_request": closed, "repository": repository}),
        ));
    }
    Ok(())
}

/// The pull request as a delivery at `at` shows it: still open when `at` came before its end,
/// a draft or not as it was then, `updated_at` = `at` (as written).
fn pull_then(
    pr: &Value,
    at: Time,
    written: &str,
    drafts: &Drafts,
    ep: &str,
) -> anyhow::Result<Value> {
    let mut then = pr.clone();
    let closed = opt_time(pr, "closed_at", ep)?;
    if closed.is_none_or(|c| at < c) {
        then["state"] = json!("open");
        then["merged"] = json!(false);
        then["merged_at"] = Value::Null;
        then["closed_at"] = Value::Null;
        then["merge_commit_sha"] = Value::Null;
    }
    then["draft"] = json!(drafts.at(at));
    then["updated_at"] = json!(written);
    Ok(then)
}

/// The deliveries of a pull request's steps into `out`: (reviews, events) delivered. They
/// are `pull_request_review` `submitted`, `pull_request` `converted_to_draft`,
/// `ready_for_review` and `review_requested`, each with the pull request as it was then
/// (open, a draft or not).
fn step_deliveries(
    pr: &Value,
    steps: &github_graphql::Steps,
    drafts: &Drafts,
    repository: &Value,
    w: &Window,
    ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<(u64, u64)> {
    let mut reviews = 0;
    for r in &steps.reviews {
        reviews += review_delivery(pr, r, drafts, repository, w, ep, out)?;
    }
    let mut events = 0;
    for e in &steps.events {
        events += event_delivery(pr, e, drafts, repository, w, ep, out)?;
    }
    Ok((reviews, events))
}

/// A submitted review's `pull_request_review` `submitted` delivery, its state in lower case as
/// webhooks write it, its author as a webhook's `user` (a bot's login with `[bot]`, as REST and
/// webhooks spell it); 1 when delivered. A pending review is left out, and so is a dismissed
/// one: the API keeps no trace of the state it was submitted with.
fn review_delivery(
    pr: &Value,
    r: &Value,
    drafts: &Drafts,
    repository: &Value,
    w: &Window,
    ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<u64> {
    let ep = &format!("{ep} reviews");
    let id = field_u64(r, "databaseId", ep)?;
    let state = field_str(r, "state", ep)?.to_ascii_lowercase();
    if matches!(state.as_str(), "pending" | "dismissed") || r["submittedAt"].is_null() {
        return Ok(0);
    }
    let at = field_time(r, "submittedAt", ep)?;
    if !w.not_after(at) {
        return Ok(0);
    }
    let written = field_str(r, "submittedAt", ep)?;
    let number = field_u64(pr, "number", ep)?;
    let review = json!({
        "id": id,
        "user": user(&r["author"]),
        "state": state,
        "submitted_at": written,
        "commit_id": r["commit"]["oid"],
    });
    out.push(delivery(
        "pull_request_review",
        "submitted",
        &format!("{number}/{id}"),
        written,
        json!({
            "action": "submitted",
            "review": review,
            "pull_request": pull_then(pr, at, written, drafts, ep)?,
            "repository": repository,
        }),
    ));
    Ok(1)
}

/// An actor as a webhook's user: `login` and `type`.
fn user(actor: &Value) -> Value {
    let Some(login) = actor["login"].as_str() else {
        return Value::Null;
    };
    match actor["__typename"].as_str() {
        Some("Bot") if !login.ends_with("[bot]") => {
            json!({"login": format!("{login}[bot]"), "type": "Bot"})
        }
        Some("Bot") => json!({"login": login, "type": "Bot"}),
        Some("Organization") => json!({"login": login, "type": "Organization"}),
        _ => json!({"login": login, "type": "User"}),
    }
}

/// A draft / ready-for-review / review-requested event's `pull_request` delivery; 1 when
/// delivered.
fn event_delivery(
    pr: &Value,
    e: &Value,
    drafts: &Drafts,
    repository: &Value,
    w: &Window,
    ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<u64> {
    let ep = &format!("{ep} timelineItems");
    let action = match e["__typename"].as_str() {
        Some("ReadyForReviewEvent") => "ready_for_review",
        Some("ConvertToDraftEvent") => "converted_to_draft",
        Some("ReviewRequestedEvent") => "review_requested",
        _ => return Ok(0),
    };
    let at = field_time(e, "createdAt", ep)?;
    if !w.not_after(at) {
        return Ok(0);
    }
    let written = field_str(e, "createdAt", ep)?;
    let number = field_u64(pr, "number", ep)?;
    let mut body = json!({
        "action": action,
        "number": number,
        "pull_request": pull_then(pr, at, written, drafts, ep)?,
        "repository": repository,
    });
    let mut object = number.to_string();
    if action == "review_requested" {
        let who = &e["requestedReviewer"];
        match (who["__typename"].as_str(), who["slug"].as_str()) {
            (Some("Team"), Some(slug)) => {
                object = format!("{number}/team/{slug}");
                body["requested_team"] = json!({"slug": slug, "name": who["name"]});
            }
            _ => {
                let u = user(who);
                object = format!("{number}/{}", u["login"].as_str().unwrap_or_default());
                body["requested_reviewer"] = u;
            }
        }
    }
    out.push(delivery("pull_request", action, &object, written, body));
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

/// A commit as a push hook lists it, with its time and SHA (the order within the push).
fn push_commit(c: &Value, ep: &str) -> anyhow::Result<(Time, String, Value)> {
    let sha = c["sha"].as_str().unwrap_or_default().to_string();
    let t = field_time(c, "commit.author.date", ep)
        .or_else(|_| field_time(c, "commit.committer.date", ep))?;
    let date = c["commit"]["author"]["date"]
        .as_str()
        .or(c["commit"]["committer"]["date"].as_str())
        .unwrap_or_default();
    let hook = json!({
        "id": sha,
        "distinct": true,
        "message": c["commit"]["message"],
        "timestamp": date,
        "url": c["html_url"],
    });
    Ok((t, sha, hook))
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
            commits.push(push_commit(c, ep)?);
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

/// The whole list at `path(id)` for each of `ids`, in `ids`' order, at most `concurrency`
/// requests at once, each conditional when a validator of `<kind>/<id>` applies: (path, items)
/// per ID (none for a 304: nothing of it changed since it was delivered), and the validators to
/// keep once delivered (lists of one page only: a later page could change alone). Paths are
/// made before the requests start, so the future holds only owned values and stays `Send`
/// (rust-lang/rust#102211).
async fn lists_by_id(
    ctx: &Ctx<'_>,
    bar: &Arc<Bar>,
    ids: Vec<u64>,
    kind: &str,
    path: impl Fn(u64) -> String,
) -> anyhow::Result<(Vec<(String, Vec<Value>)>, Vec<(String, Validator)>)> {
    let client = ctx.client;
    // The validators of the whole page in one store request.
    let wanted: Vec<(String, String, String)> = ids
        .into_iter()
        .map(|id| {
            let p = path(id);
            let url = client.list_url(&p);
            (format!("{kind}/{id}"), url, p)
        })
        .collect();
    let keys: Vec<(String, String)> = wanted
        .iter()
        .map(|(r, url, _)| (r.clone(), url.clone()))
        .collect();
    let found = ctx.state.validators(ctx.full_name, &keys, &ctx.w).await?;
    let requests: Vec<(String, String, Option<String>)> = wanted
        .into_iter()
        .zip(found)
        .map(|((resource, _, p), v)| (p, resource, v.map(|v| v.etag)))
        .collect();
    let concurrency = client.settings.concurrency.max(1);
    let read: Vec<(String, String, Option<List>)> =
        futures_util::stream::iter(requests.into_iter().map(|(path, resource, etag)| {
            let client = client.clone();
            let bar = bar.clone();
            async move {
                let list = client.get_sublist_if(&bar, &path, etag.as_deref()).await?;
                anyhow::Ok((path, resource, list))
            }
        }))
        .buffered(concurrency)
        .try_collect()
        .await?;
    let mut lists = Vec::new();
    let mut validators = Vec::new();
    for (path, resource, list) in read {
        match list {
            None => lists.push((path, Vec::new())),
            Some(l) => {
                if let (1, Some(etag)) = (l.pages, l.etag) {
                    validators.push((resource, Validator::new(&l.url, etag, &ctx.w)));
                }
                lists.push((path, l.items));
            }
        }
    }
    Ok((lists, validators))
}

/// Reads `field` to check an item, for callers outside (tests): the endpoint and field named.
pub fn check_field(v: &Value, name: &str, ep: &str) -> anyhow::Result<()> {
    field(v, name, ep)
        .map(|_| ())
        .context("checking an API item")
}
