//! Jira Cloud's REST API (v3) as issue webhook deliveries: each issue of the projects updated in
//! the window becomes the `jira:issue_created` and `jira:issue_updated` deliveries Jira sent
//! about it, one `jira:issue_updated` per changelog entry (a status transition, a resolution,
//! an edit), each carrying the issue's fields as they were right after that change, so the facts
//! are the facts the webhooks record ([`crate::sources::jira`]).
//!
//! | Endpoint | What it gives |
//! |---|---|
//! | `GET /rest/api/3/myself` | the credentials tried before anything else (a refused pair is a 401) |
//! | `GET /rest/api/3/status` | every status's `statusCategory`: a changelog names statuses by ID and name only |
//! | `GET /rest/api/3/search/jql?jql=project in (…) AND updated >= "…"&fields=…&expand=changelog&maxResults=&nextPageToken=` | the issues, their current fields and (up to 20 of) their changelog histories |
//! | `GET /rest/api/3/issue/{key}/changelog?startAt=&maxResults=` | the whole changelog of an issue whose embedded one is cut short (`total` over the histories given) |
//!
//! Which search endpoint: `/rest/api/3/search/jql` ("Search for issues using JQL enhanced
//! search"). Atlassian announced the deprecation of `GET/POST /rest/api/3/search` (with
//! `startAt` and `total`) on 2024-10-31, to stop working on 2025-08-01 (first 2025-05-01), and
//! names `/search/jql` as its replacement (Atlassian developer community, "Avoiding Pitfalls: A
//! Guide to Smooth Migration to Enhanced JQL APIs"; RFC-61). Its pages are chained by `nextPageToken` (no random
//! access, no `total`; the last page has no token and `isLast: true`), it returns only issue IDs
//! unless `fields` are asked for, and an expanded changelog holds at most 20 histories, newest
//! first, with `total` saying how many there are: the rest is read from the issue's changelog
//! endpoint (a `PageBeanChangelog`: `values`, `startAt`, `maxResults`, `total`, `isLast`).
//!
//! A history (`id`, `author`, `created`, `items` of `field`, `fieldtype`, `fieldId`, `from`,
//! `fromString`, `to`, `toString`) is what a webhook's `changelog` carries (`id`, `items`), and
//! its `created` the webhook's `timestamp`. The fields before the first history are the current
//! ones with every history undone, newest first (status, resolution, summary, priority, labels,
//! issue type); `resolutiondate` is the time the resolution was set. Delivery IDs (the
//! `X-Atlassian-Webhook-Identifier` header) are a hash of (event, issue, history, time): a
//! second backfill is answered `duplicate`.
//!
//! Each project is a run of its own ([`project`], [`super::resume`]): a cursor over its issues
//! (creation time, ID) in the store, moved after each page's worth of deliveries, so that a run
//! stopped half-way is resumed by the same command without reading the changelogs of the issues
//! it delivered. Jira Cloud's REST API documents no conditional requests (no `ETag`, no
//! `If-None-Match`): none are made, no validator is kept.

use super::resume::{Collect, Scoped};
use super::{
    delivery_id, field, field_str, item_key, recorded, Api, Client, ClientSettings, Sink, State,
    Summary, Window,
};
use crate::model::timestamp;
use crate::model::Time;
use crate::replay::Recorded;
use anyhow::{bail, Context};
use base64::Engine as _;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The environment variables the credentials are read from.
/// The source name of the deliveries read.
pub const SOURCE: &str = "jira";
pub const EMAIL_VAR: &str = "JIRA_EMAIL";
pub const TOKEN_VAR: &str = "JIRA_TOKEN";
/// How errors name the pair.
pub const CREDENTIALS: &str = "JIRA_EMAIL + JIRA_TOKEN";
/// The fields the webhook mapping reads (and `updated`, `resolutiondate`).
pub const FIELDS: &str =
    "summary,status,issuetype,project,priority,labels,created,updated,resolution,resolutiondate";

/// What to read.
#[derive(Clone, Debug)]
pub struct Options {
    /// Project keys (`SHOP`).
    pub projects: Vec<String>,
    pub since: Time,
    pub until: Option<Time>,
}

/// `JIRA_EMAIL` and `JIRA_TOKEN`, or an error naming the ones missing.
pub fn credentials_from_env() -> anyhow::Result<(String, String)> {
    let get = |k: &str| {
        std::env::var(k)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    match (get(EMAIL_VAR), get(TOKEN_VAR)) {
        (Some(e), Some(t)) => Ok((e, t)),
        (e, t) => {
            let missing: Vec<&str> = [(EMAIL_VAR, e.is_none()), (TOKEN_VAR, t.is_none())]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(k, _)| *k)
                .collect();
            bail!(
                "{} not set: backfill reads the Jira Cloud REST API as a user, {EMAIL_VAR} (the account's email) and {TOKEN_VAR} (an API token of that account, https://id.atlassian.com/manage-profile/security/api-tokens) with Browse projects on the projects",
                if missing.len() == 1 {
                    format!("{} is", missing[0])
                } else {
                    format!("{} are", missing.join(" and "))
                }
            )
        }
    }
}

/// Client settings for Jira Cloud: Basic auth of the email and the API token.
pub fn settings(api_url: &str, email: &str, token: &str) -> ClientSettings {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{email}:{token}"));
    let mut s = ClientSettings::new(api_url, token.to_string(), CREDENTIALS);
    s.api = Api::Jira;
    s.request_headers = Some(vec![
        ("authorization".into(), format!("Basic {basic}")),
        ("accept".into(), "application/json".into()),
    ]);
    s
}

/// Tries the credentials (`GET /rest/api/3/myself`) before anything is written: a refused pair
/// is a 401 here.
pub async fn check_token(client: &Client) -> anyhow::Result<()> {
    client
        .get(&client.url("/rest/api/3/myself"))
        .await
        .map(|_| ())
}

/// Reads every issue of the projects updated in the window and delivers what was read, without
/// keeping anything in a store (no cursors): the credentials tried ([`check_token`]), then
/// [`run_with`] with [`State::none`].
pub async fn run(client: &Arc<Client>, opts: &Options, sink: &dyn Sink) -> anyhow::Result<Summary> {
    check_token(client).await?;
    run_with(client, opts, sink, &State::none(SOURCE)).await
}

/// The statuses read, then the projects one at a time ([`project`]), with the cursors `state`
/// keeps. The caller has tried the credentials ([`check_token`]: some sites answer a search
/// without them, as anonymous access), once per run. Jira Cloud's REST API documents no
/// conditional requests (no `ETag`, no `If-None-Match`): none are made; a later run reads the
/// issues updated in its window again and their deliveries are answered `duplicate`.
pub async fn run_with(
    client: &Arc<Client>,
    opts: &Options,
    sink: &dyn Sink,
    state: &State<'_>,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(!opts.projects.is_empty(), "no projects to read (--project)");
    for p in &opts.projects {
        anyhow::ensure!(
            !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "--project {p:?} is not a project key"
        );
    }
    let mut summary = Summary::default();
    let result = async {
        let statuses = statuses(client).await?;
        for p in &opts.projects {
            project(client, opts, p, &statuses, sink, state, &mut summary).await?;
        }
        anyhow::Ok(())
    }
    .await;
    summary.add_client(client);
    result.map(|()| summary)
}

/// The deliveries the window makes, and the items read counted into `items`: the scheduled
/// sync's reader (the credentials tried, then [`run_with`] into a [`Collect`], nothing kept in
/// a store).
pub async fn read(
    client: &Arc<Client>,
    opts: &Options,
    items: &mut BTreeMap<String, u64>,
) -> anyhow::Result<Vec<Recorded>> {
    let collect = Collect::default();
    check_token(client).await?;
    let summary = run_with(client, opts, &collect, &State::none(SOURCE)).await?;
    for (k, n) in summary.items {
        *items.entry(k).or_default() += n;
    }
    Ok(collect.take())
}

/// The resource of a project's run (its cursor: `backfill#jira#<key>` / `r#issues`): its
/// issues, each with its changelog.
pub const RESOURCE: &str = "issues";

/// One project's run: its issues updated in the window (oldest first), then a page's worth at
/// a time with their changelogs (read whole where the search's is cut short) delivered, the
/// cursor moving after each. A run interrupted half-way is resumed by the next one over the
/// same window: the issues it delivered (unless updated since it started) are not sent again,
/// nor their changelogs read.
pub async fn project(
    client: &Arc<Client>,
    opts: &Options,
    key: &str,
    statuses: &HashMap<String, Value>,
    sink: &dyn Sink,
    state: &State<'_>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let window = Window {
        since: opts.since,
        until: opts.until,
    };
    let mut run = Scoped::begin(client, state, sink, key, window, summary).await?;
    for kind in ["issues", "changelog_histories"] {
        summary.items.entry(kind.into()).or_default();
    }
    if run.skip_done(RESOURCE, summary) {
        return run.finish(summary).await;
    }
    let w = run.window();
    let bar = client.progress.resource(&run.label("issues"), client);
    let mut items = Vec::new();
    for issue in search(client, key, &w).await? {
        let created = parse_time(&issue, "fields.created", SEARCH_EP)?;
        let updated = timestamp::parse(issue["fields"]["updated"].as_str().unwrap_or_default());
        let id = issue["id"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .or(issue["id"].as_u64())
            .unwrap_or_default();
        items.push((item_key(created, id), updated, issue));
    }
    let pending = run.pending(RESOURCE, items, summary);
    bar.set_total(pending.len() as u64);
    for part in pending.chunks(run.chunk()) {
        let issues: Vec<Value> = part.iter().map(|(_, i)| i.clone()).collect();
        let out = part_deliveries(client, &issues, statuses, &w, summary).await?;
        let last = part.last().map(|(k, _)| k.clone());
        run.deliver(RESOURCE, &bar, &out, last, part.len() as u64, summary)
            .await?;
    }
    run.done(RESOURCE, &bar, None, "", summary).await?;
    run.finish(summary).await
}

/// The deliveries of a chunk of issues, their changelogs read whole where cut short.
async fn part_deliveries(
    client: &Arc<Client>,
    issues: &[Value],
    statuses: &HashMap<String, Value>,
    w: &Window,
    summary: &mut Summary,
) -> anyhow::Result<Vec<Recorded>> {
    let full = full_changelogs(client, issues).await?;
    let mut out = Vec::new();
    let mut n_histories = 0;
    for issue in issues {
        let key = issue["key"].as_str().unwrap_or_default();
        let (histories, ep) = match full.get(key) {
            Some(h) => (h.clone(), format!("GET /rest/api/3/issue/{key}/changelog")),
            None => (
                issue["changelog"]["histories"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                SEARCH_EP.to_string(),
            ),
        };
        n_histories += histories.len() as u64;
        issue_deliveries(issue, histories, statuses, w, SEARCH_EP, &ep, &mut out)?;
    }
    *summary.items.entry("issues".into()).or_default() += issues.len() as u64;
    *summary
        .items
        .entry("changelog_histories".into())
        .or_default() += n_histories;
    Ok(out)
}

/// A JQL date: `"2024-03-01 00:00"`. JQL reads it in the user's time zone, so the query is
/// widened by a day each way and the window applied here, to the millisecond.
fn jql_date(t: Time) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// Percent-encoded for a query value or a path segment (RFC 3986's unreserved characters kept:
/// an issue key `SHOP-42` stays as it is).
fn enc(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

const SEARCH_EP: &str = "GET /rest/api/3/search/jql";

/// The search's URL: the project's issues updated in the window (a day wider each way: JQL
/// reads dates in the user's time zone), oldest first, with their changelogs.
fn search_path(client: &Client, project: &str, w: &Window) -> String {
    let day = chrono::TimeDelta::days(1);
    let mut jql = format!(
        "project in (\"{project}\") AND updated >= \"{}\"",
        jql_date(w.since - day)
    );
    if let Some(u) = w.until {
        jql.push_str(&format!(" AND created <= \"{}\"", jql_date(u + day)));
    }
    jql.push_str(" ORDER BY created ASC");
    format!(
        "/rest/api/3/search/jql?jql={}&fields={}&expand=changelog&maxResults={}",
        enc(&jql),
        enc(FIELDS),
        client.settings.page_size.clamp(1, 100)
    )
}

/// Every page of the search, chained by `nextPageToken`; each issue's key and fields checked.
async fn search(client: &Client, project: &str, w: &Window) -> anyhow::Result<Vec<Value>> {
    let search = search_path(client, project, w);
    let search_ep = SEARCH_EP;
    let mut issues: Vec<Value> = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &token {
            Some(t) => client.url(&format!("{search}&nextPageToken={}", enc(t))),
            None => client.url(&search),
        };
        let page = client.get(&url).await?.body;
        let list = field(&page, "issues", search_ep)?
            .as_array()
            .with_context(|| format!("{search_ep}: field \"issues\" is not a list"))?;
        pages += 1;
        if !client.settings.quiet {
            eprintln!(
                "backfill: jira issues: page {pages}, {} item(s)",
                list.len()
            );
        }
        issues.extend(list.iter().cloned());
        token = match page.get("nextPageToken") {
            Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
            None | Some(Value::Null) => None,
            Some(Value::String(_)) => None,
            Some(other) => bail!("{search_ep}: field \"nextPageToken\" is not a string: {other}"),
        };
        if token.is_none() || page["isLast"] == Value::Bool(true) || list.is_empty() {
            break;
        }
    }
    for i in &issues {
        field_str(i, "key", search_ep)?;
        field(i, "fields", search_ep)?;
        field_str(i, "fields.created", search_ep)?;
    }
    Ok(issues)
}

/// The whole changelog of every issue whose embedded one is cut short, by key.
async fn full_changelogs(
    client: &Arc<Client>,
    issues: &[Value],
) -> anyhow::Result<HashMap<String, Vec<Value>>> {
    let cut: Vec<String> = issues
        .iter()
        .filter(|i| {
            let c = &i["changelog"];
            let given = c["histories"].as_array().map_or(0, Vec::len) as u64;
            c.is_null() || c["total"].as_u64().is_some_and(|t| t > given)
        })
        .map(|i| i["key"].as_str().unwrap_or_default().to_string())
        .collect();
    let concurrency = client.settings.concurrency.max(1);
    futures_util::stream::iter(cut.into_iter().map(|key| {
        let client = client.clone();
        async move {
            let histories = changelog(&client, &key).await?;
            anyhow::Ok((key, histories))
        }
    }))
    .buffered(concurrency)
    .try_collect()
    .await
}

/// Every status by ID: its name and `statusCategory`.
async fn statuses(client: &Client) -> anyhow::Result<HashMap<String, Value>> {
    let ep = "GET /rest/api/3/status";
    let body = client.get(&client.url("/rest/api/3/status")).await?.body;
    let list = body
        .as_array()
        .with_context(|| format!("{ep}: the answer is not a list"))?;
    let mut out = HashMap::new();
    for s in list {
        let id = field(s, "id", ep)?;
        let id = id
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| id.to_string());
        field_str(s, "name", ep)?;
        field_str(s, "statusCategory.key", ep)?;
        out.insert(id, s.clone());
    }
    Ok(out)
}

/// An issue's whole changelog, from its own endpoint.
async fn changelog(client: &Client, key: &str) -> anyhow::Result<Vec<Value>> {
    let path = format!("/rest/api/3/issue/{}/changelog", enc(key));
    let ep = format!("GET {path}");
    let max = client.settings.page_size.clamp(1, 100);
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let url = client.url(&format!("{path}?startAt={}&maxResults={max}", out.len()));
        let page = client.get(&url).await?.body;
        let values = field(&page, "values", &ep)?
            .as_array()
            .with_context(|| format!("{ep}: field \"values\" is not a list"))?;
        pages += 1;
        if !client.settings.quiet {
            eprintln!(
                "backfill: changelog of {key}: page {pages}, {} item(s)",
                values.len()
            );
        }
        out.extend(values.iter().cloned());
        let total = page["total"].as_u64();
        if values.is_empty()
            || page["isLast"] == Value::Bool(true)
            || total.is_some_and(|t| out.len() as u64 >= t)
            || (page["isLast"].is_null() && total.is_none())
        {
            return Ok(out);
        }
    }
}

fn parse_time(v: &Value, name: &str, ep: &str) -> anyhow::Result<Time> {
    let s = field_str(v, name, ep)?;
    timestamp::parse(s).with_context(|| format!("{ep}: field {name:?} is not a time: {s:?}"))
}

/// A status as a webhook's `fields.status`: by ID from the status list (the category decides
/// whether the issue is done), else by name, else the name alone.
fn status_object(id: Option<&str>, name: Option<&str>, statuses: &HashMap<String, Value>) -> Value {
    if let Some(s) = id.and_then(|id| statuses.get(id)) {
        return s.clone();
    }
    if let Some(s) = name.and_then(|n| statuses.values().find(|s| s["name"] == n)) {
        return s.clone();
    }
    match (id, name) {
        (None, None) => Value::Null,
        _ => json!({"id": id, "name": name}),
    }
}

/// Sets `fields` to one side of a changelog item: `to` (the change applied) or `from` (undone).
fn set_side(
    fields: &mut Map<String, Value>,
    item: &Value,
    to: bool,
    statuses: &HashMap<String, Value>,
) {
    let (id_k, s_k) = if to {
        ("to", "toString")
    } else {
        ("from", "fromString")
    };
    let id = item[id_k].as_str();
    let s = item[s_k].as_str();
    let named = |id: Option<&str>, s: Option<&str>| match (id, s) {
        (None, None) => Value::Null,
        _ => json!({"id": id, "name": s}),
    };
    let name = item["fieldId"]
        .as_str()
        .or(item["field"].as_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match name.as_str() {
        "status" => {
            fields.insert("status".into(), status_object(id, s, statuses));
        }
        "resolution" => {
            fields.insert("resolution".into(), named(id, s));
        }
        "priority" => {
            fields.insert("priority".into(), named(id, s));
        }
        "issuetype" => {
            fields.insert("issuetype".into(), named(id, s));
        }
        "summary" => {
            fields.insert("summary".into(), json!(s));
        }
        "labels" => {
            let labels: Vec<&str> = s.unwrap_or_default().split_whitespace().collect();
            fields.insert("labels".into(), json!(labels));
        }
        // Other fields (description, assignee, sprint, …) are not read by the mapping.
        _ => {}
    }
}

fn changes_resolution(h: &Value) -> bool {
    h["items"].as_array().is_some_and(|items| {
        items.iter().any(|i| {
            i["fieldId"]
                .as_str()
                .or(i["field"].as_str())
                .is_some_and(|f| f.eq_ignore_ascii_case("resolution"))
        })
    })
}

/// One issue's deliveries: `jira:issue_created` with the fields it was created with (when it
/// was created in the window), then a `jira:issue_updated` per history in the window.
fn issue_deliveries(
    issue: &Value,
    histories: Vec<Value>,
    statuses: &HashMap<String, Value>,
    w: &Window,
    ep: &str,
    log_ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<()> {
    let key = field_str(issue, "key", ep)?.to_string();
    let created = parse_time(issue, "fields.created", ep)?;
    let in_window = |t: Time| w.contains(t);
    let (histories, times) = oldest_first(histories, log_ep)?;
    let current = issue["fields"]
        .as_object()
        .cloned()
        .context("fields is an object")?;
    let last_resolution = histories.iter().rposition(changes_resolution);
    let mut fields = created_fields(issue, &current, &histories, last_resolution, statuses);
    let hooks = IssueHooks { issue, key: &key };
    if in_window(created) {
        let written = issue["fields"]["created"].as_str().unwrap_or_default();
        hooks.push(
            out,
            "jira:issue_created",
            "created",
            written,
            json!({
                "timestamp": created.timestamp_millis(),
                "webhookEvent": "jira:issue_created",
                "issue_event_type_name": "issue_created",
                "user": issue["fields"]["creator"],
                "issue": hooks.issue_obj(&fields),
            }),
        );
    }
    for (n, (h, at)) in histories.iter().zip(&times).enumerate() {
        let last = Some(n) == last_resolution;
        apply_history(&mut fields, h, last, &current, statuses);
        if !in_window(*at) {
            continue;
        }
        let hid = match &h["id"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        hooks.push(
            out,
            "jira:issue_updated",
            &hid,
            h["created"].as_str().unwrap_or_default(),
            json!({
                "timestamp": at.timestamp_millis(),
                "webhookEvent": "jira:issue_updated",
                "issue_event_type_name": "issue_generic",
                "user": h["author"],
                "issue": hooks.issue_obj(&fields),
                "changelog": {"id": hid, "items": h["items"]},
            }),
        );
    }
    Ok(())
}

/// An issue's changelog histories checked, oldest first (the embedded changelog is newest
/// first; ties by ID), with their times.
fn oldest_first(histories: Vec<Value>, log_ep: &str) -> anyhow::Result<(Vec<Value>, Vec<Time>)> {
    let mut times = Vec::new();
    for h in &histories {
        field(h, "id", log_ep)?;
        field(h, "items", log_ep)?
            .as_array()
            .with_context(|| format!("{log_ep}: field \"items\" is not a list"))?;
        times.push(parse_time(h, "created", log_ep)?);
    }
    let mut order: Vec<usize> = (0..histories.len()).collect();
    let id_num = |h: &Value| {
        h["id"]
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_default()
    };
    order.sort_by_key(|&i| (times[i], id_num(&histories[i])));
    let histories = order.iter().map(|&i| histories[i].clone()).collect();
    let times = order.iter().map(|&i| times[i]).collect();
    Ok((histories, times))
}

/// The fields as created: every history undone, newest first; `updated` and `resolutiondate`
/// as of the creation.
fn created_fields(
    issue: &Value,
    current: &Map<String, Value>,
    histories: &[Value],
    last_resolution: Option<usize>,
    statuses: &HashMap<String, Value>,
) -> Map<String, Value> {
    let mut fields = current.clone();
    for h in histories.iter().rev() {
        for item in h["items"].as_array().into_iter().flatten().rev() {
            set_side(&mut fields, item, false, statuses);
        }
    }
    let created_str = issue["fields"]["created"].clone();
    fields.insert(
        "resolutiondate".into(),
        if fields.get("resolution").is_some_and(|r| !r.is_null()) {
            match last_resolution {
                None => current
                    .get("resolutiondate")
                    .cloned()
                    .unwrap_or(Value::Null),
                Some(_) => created_str.clone(),
            }
        } else {
            Value::Null
        },
    );
    fields.insert("updated".into(), created_str);
    fields
}

/// Applies one history to `fields`: its items, its time as `updated`, and (when it changes the
/// resolution) `resolutiondate`, the issue's own for the `last` such history.
fn apply_history(
    fields: &mut Map<String, Value>,
    h: &Value,
    last: bool,
    current: &Map<String, Value>,
    statuses: &HashMap<String, Value>,
) {
    for item in h["items"].as_array().into_iter().flatten() {
        set_side(fields, item, true, statuses);
    }
    let written = h["created"].clone();
    if changes_resolution(h) {
        let resolved = fields.get("resolution").is_some_and(|r| !r.is_null());
        let date = match (resolved, last) {
            (false, _) => Value::Null,
            (true, true) => current
                .get("resolutiondate")
                .filter(|d| !d.is_null())
                .cloned()
                .unwrap_or_else(|| written.clone()),
            (true, false) => written.clone(),
        };
        fields.insert("resolutiondate".into(), date);
    }
    fields.insert("updated".into(), written);
}

/// One issue's webhook deliveries.
struct IssueHooks<'a> {
    issue: &'a Value,
    key: &'a str,
}

impl IssueHooks<'_> {
    /// The webhook's `issue` object with these fields.
    fn issue_obj(&self, fields: &Map<String, Value>) -> Value {
        json!({
            "id": self.issue["id"],
            "self": self.issue["self"],
            "key": self.key,
            "fields": fields,
        })
    }

    /// Records one delivery, identified by (event, issue, object, time written).
    fn push(&self, out: &mut Vec<Recorded>, event: &str, object: &str, written: &str, body: Value) {
        let key = self.key;
        let id = delivery_id(SOURCE, event, key, object, written);
        out.push(recorded(
            SOURCE,
            &[("x-atlassian-webhook-identifier", id)],
            &body,
            format!("jira/{event}/{key}/{object}"),
        ));
    }
}
