//! PagerDuty's REST API (v2) as Generic Webhooks v3 deliveries: each incident of the services
//! in the window becomes the `incident.*` events PagerDuty sent about it, built from its log
//! entries, so the facts are the facts the webhooks record ([`crate::sources::pagerduty`]).
//!
//! | Endpoint | Deliveries |
//! |---|---|
//! | `GET /incidents?service_ids[]=…&since=&until=&time_zone=UTC&sort_by=created_at:asc&limit=&offset=` | one incident object per delivery's `event.data` |
//! | `GET /incidents/{id}/log_entries?time_zone=UTC&limit=&offset=` | `trigger_log_entry` → `incident.triggered` (a trigger after a resolve → `incident.reopened`), `acknowledge_log_entry` → `incident.acknowledged`, `resolve_log_entry` → `incident.resolved` |
//!
//! Shapes, from PagerDuty's OpenAPI description (`PagerDuty/api-schema`,
//! `reference/REST/openapiv3.json`): both lists are wrapped in an object with the classic
//! pagination fields `limit`, `offset`, `more` (`{"incidents": […], "limit": 100, "offset": 0,
//! "more": true}`, `{"log_entries": […], …}`); an incident has `id`, `incident_number`, `title`,
//! `status`, `created_at`, `html_url`, `urgency`, `service`, `teams`, `priority` (references with
//! `id` and `summary`); a log entry has `id`, `type`, `created_at`, `agent`. The incident list's
//! `since`/`until` span at most 6 months (the window is read in pieces of 180 days) and filter by
//! creation; classic pagination stops at offset + limit = 10,000 (a window holding more is read
//! in halves). Times are asked in UTC (`time_zone=UTC`; log entries default to the account's
//! zone).
//!
//! The webhook's `event.data` is the incident with `number` for the REST `incident_number`, and
//! the status it had then; `event.occurred_at` is the log entry's `created_at`. Delivery IDs are
//! a hash of (event type, incident, log entry, time): a second backfill is answered `duplicate`.
//!
//! Each service is a run of its own ([`service`], [`super::resume`]): a cursor over its
//! incidents (creation time, ID) in the store, moved after each page's worth of deliveries, so
//! that a run stopped half-way is resumed by the same command without reading the logs of the
//! incidents it delivered. PagerDuty's REST API documents no conditional requests (no `ETag`,
//! no `If-None-Match`): none are made, no validator is kept.

use super::resume::{Collect, Scoped};
use super::{
    delivery_id, field, field_str, field_time, field_u64, opt_time, recorded, time_key, Api,
    Client, ClientSettings, Sink, State, Summary, Window,
};
use crate::model::Time;
use crate::replay::Recorded;
use anyhow::{bail, Context};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The environment variable the token is read from.
/// The source name of the deliveries read.
pub const SOURCE: &str = "pagerduty";
pub const TOKEN_VAR: &str = "PAGERDUTY_TOKEN";
/// The public API.
pub const DEFAULT_API_URL: &str = "https://api.pagerduty.com";
/// Classic pagination answers while offset + limit stays within this.
pub const OFFSET_CAP: u64 = 10_000;
/// The incident list's `since`..`until` may span at most 6 months.
pub const MAX_WINDOW_DAYS: i64 = 180;

/// What to read.
#[derive(Clone, Debug)]
pub struct Options {
    /// Service IDs (`PIJ90N7`).
    pub services: Vec<String>,
    pub since: Time,
    /// Default: now.
    pub until: Option<Time>,
    /// PagerDuty lists at most this many items for one query (offset + limit): a window
    /// holding more incidents is read in halves.
    pub offset_cap: u64,
}

impl Options {
    pub fn new(services: Vec<String>, since: Time, until: Option<Time>) -> Self {
        Options {
            services,
            since,
            until,
            offset_cap: OFFSET_CAP,
        }
    }
}

/// The token from `PAGERDUTY_TOKEN`, or an error naming it.
pub fn token_from_env() -> anyhow::Result<String> {
    match std::env::var(TOKEN_VAR) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => bail!(
            "{TOKEN_VAR} is not set: backfill reads the PagerDuty REST API with an API key (a read-only account key, or a user key of someone who sees the services' incidents)"
        ),
    }
}

/// Client settings for PagerDuty: `Authorization: Token token=…` and the v2 `Accept` header.
pub fn settings(api_url: &str, token: String) -> ClientSettings {
    let mut s = ClientSettings::new(api_url, token, TOKEN_VAR);
    s.api = Api::PagerDuty;
    s.request_headers = Some(vec![
        ("authorization".into(), format!("Token token={}", s.token)),
        (
            "accept".into(),
            "application/vnd.pagerduty+json;version=2".into(),
        ),
    ]);
    s
}

/// Tries the key on the first service (`GET /services/{id}`, "Get a service"), before
/// anything is written: a refused key or an unknown service is an error here.
pub async fn check_token(client: &Client, opts: &Options) -> anyhow::Result<()> {
    let Some(first) = opts.services.first() else {
        bail!("no services to read (--service)");
    };
    let id = percent_encoding::utf8_percent_encode(first, percent_encoding::NON_ALPHANUMERIC);
    client
        .get(&client.url(&format!("/services/{id}")))
        .await
        .map(|_| ())
}

/// Reads every incident of the services in the window and delivers what was read, without
/// keeping anything in a store (no cursors): [`run_with`] with [`State::none`].
pub async fn run(client: &Arc<Client>, opts: &Options, sink: &dyn Sink) -> anyhow::Result<Summary> {
    run_with(client, opts, sink, &State::none(SOURCE)).await
}

/// Reads the services one at a time ([`service`]), with the cursors `state` keeps. PagerDuty
/// documents no conditional requests (no `ETag`, no `If-None-Match`): none are made; a later
/// run reads its window again and its deliveries are answered `duplicate`.
pub async fn run_with(
    client: &Arc<Client>,
    opts: &Options,
    sink: &dyn Sink,
    state: &State<'_>,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(!opts.services.is_empty(), "no services to read (--service)");
    anyhow::ensure!(
        opts.until.unwrap_or_else(chrono::Utc::now) > opts.since,
        "--until must be after --since"
    );
    let mut summary = Summary::default();
    let result = async {
        for s in &opts.services {
            service(client, opts, s, sink, state, &mut summary).await?;
        }
        anyhow::Ok(())
    }
    .await;
    summary.add_client(client);
    result.map(|()| summary)
}

/// The deliveries the incidents of the window make, and the items read counted into `items`:
/// the scheduled sync's reader ([`run_with`] into a [`Collect`], nothing kept in a store).
pub async fn read(
    client: &Arc<Client>,
    opts: &Options,
    items: &mut BTreeMap<String, u64>,
) -> anyhow::Result<Vec<Recorded>> {
    let collect = Collect::default();
    let summary = run_with(client, opts, &collect, &State::none(SOURCE)).await?;
    for (k, n) in summary.items {
        *items.entry(k).or_default() += n;
    }
    Ok(collect.take())
}

fn secs(t: Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The resource of a service's run (its cursor: `backfill#pagerduty#<service>` /
/// `r#incidents`): its incidents, each with its log entries.
pub const RESOURCE: &str = "incidents";

/// One service's run: its incidents created in the window (oldest first), then a page's worth
/// at a time with their log entries (one list per incident) delivered, the cursor moving after
/// each. A run interrupted half-way is resumed by the next one over the same window: the
/// incidents it delivered (unless changed since it started) are neither read nor sent again.
pub async fn service(
    client: &Arc<Client>,
    opts: &Options,
    service: &str,
    sink: &dyn Sink,
    state: &State<'_>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let window = Window {
        since: opts.since,
        until: opts.until,
    };
    let mut run = Scoped::begin(client, state, sink, service, window, summary).await?;
    for kind in ["incidents", "log_entries"] {
        summary.items.entry(kind.into()).or_default();
    }
    if run.skip_done(RESOURCE, summary) {
        return run.finish(summary).await;
    }
    let w = run.window();
    let until = w.until.unwrap_or_else(chrono::Utc::now);
    let bar = client.progress.resource(&run.label("incidents"), client);
    let list_ep = "GET /incidents";
    let mut items = Vec::new();
    for i in incidents(client, opts, service, w.since, until).await? {
        let id = field_str(&i, "id", list_ep)?.to_string();
        let created = field_time(&i, "created_at", list_ep)?;
        // The list's own filter is on creation; the window is checked here too, to the second.
        if created >= w.since && created <= until {
            let changed = opt_time(&i, "last_status_change_at", list_ep)?.or(opt_time(
                &i,
                "updated_at",
                list_ep,
            )?);
            items.push((format!("{}#{id}", time_key(created)), changed, i));
        }
    }
    let pending = run.pending(RESOURCE, items, summary);
    bar.set_total(pending.len() as u64);
    for part in pending.chunks(run.chunk()) {
        let out = part_deliveries(client, part, until, summary).await?;
        let last = part.last().map(|(k, _)| k.clone());
        run.deliver(RESOURCE, &bar, &out, last, part.len() as u64, summary)
            .await?;
    }
    run.done(RESOURCE, &bar, None, "", summary).await?;
    run.finish(summary).await
}

/// The incidents of `service` created from `since` to `until`, in pieces of at most 180 days,
/// oldest first.
async fn incidents(
    client: &Client,
    opts: &Options,
    service: &str,
    since: Time,
    until: Time,
) -> anyhow::Result<Vec<Value>> {
    let mut incidents: Vec<Value> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut from = since;
    while from < until {
        let to = (from + chrono::TimeDelta::days(MAX_WINDOW_DAYS)).min(until);
        for i in incidents_in(client, service, opts.offset_cap, from, to).await? {
            let id = i["id"].as_str().unwrap_or_default().to_string();
            if seen.insert(id) {
                incidents.push(i);
            }
        }
        from = to;
    }
    Ok(incidents)
}

/// The deliveries of a chunk of incidents, their log entries read (at most `concurrency`
/// lists at once).
async fn part_deliveries(
    client: &Arc<Client>,
    part: &[(String, Value)],
    until: Time,
    summary: &mut Summary,
) -> anyhow::Result<Vec<Recorded>> {
    let concurrency = client.settings.concurrency.max(1);
    let ids: Vec<String> = part
        .iter()
        .map(|(_, i)| i["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let logs: Vec<(String, Vec<Value>)> = futures_util::stream::iter(ids.into_iter().map(|id| {
        let client = client.clone();
        async move {
            let path = format!("/incidents/{id}/log_entries?time_zone=UTC");
            let entries = paged(
                &client,
                &format!("log entries of {id}"),
                &path,
                "log_entries",
            )
            .await?
            .ok_or_else(|| anyhow::anyhow!("GET {path}: more than {OFFSET_CAP} log entries"))?;
            anyhow::Ok((path, entries))
        }
    }))
    .buffered(concurrency)
    .try_collect()
    .await?;
    let mut out = Vec::new();
    for ((_, incident), (path, entries)) in part.iter().zip(&logs) {
        *summary.items.entry("log_entries".into()).or_default() += entries.len() as u64;
        let ep = format!("GET {path}");
        incident_deliveries(incident, entries, until, "GET /incidents", &ep, &mut out)?;
    }
    *summary.items.entry("incidents".into()).or_default() += part.len() as u64;
    Ok(out)
}

/// Every page of a classic-paginated list (`limit`/`offset`/`more`), the items under `key`;
/// `None` when the list goes on past [`OFFSET_CAP`] (the caller narrows the query).
async fn paged(
    client: &Client,
    what: &str,
    path: &str,
    key: &str,
) -> anyhow::Result<Option<Vec<Value>>> {
    paged_capped(client, what, path, key, OFFSET_CAP).await
}

async fn paged_capped(
    client: &Client,
    what: &str,
    path: &str,
    key: &str,
    cap: u64,
) -> anyhow::Result<Option<Vec<Value>>> {
    let limit = u64::from(client.settings.page_size.clamp(1, 100));
    let mut offset = 0u64;
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = client.url(&format!("{path}{sep}limit={limit}&offset={offset}"));
        let page = client.get(&url).await?;
        let ep = format!("GET {path}");
        let list = field(&page.body, key, &ep)?
            .as_array()
            .with_context(|| format!("{ep}: field {key:?} is not a list"))?;
        let more = match page.body.get("more") {
            Some(Value::Bool(b)) => *b,
            None | Some(Value::Null) => false,
            Some(other) => bail!("{ep}: field \"more\" is not a boolean: {other}"),
        };
        pages += 1;
        if !client.settings.quiet {
            eprintln!("backfill: {what}: page {pages}, {} item(s)", list.len());
        }
        out.extend(list.iter().cloned());
        if !more || list.is_empty() {
            return Ok(Some(out));
        }
        offset += list.len() as u64;
        if offset + limit > cap {
            return Ok(None);
        }
    }
}

/// The incidents of `service` created from `from` to `to`; a window holding more than the API
/// lists for one query (`cap`) is read in two halves.
fn incidents_in<'a>(
    client: &'a Client,
    service: &'a str,
    cap: u64,
    from: Time,
    to: Time,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Vec<Value>>> + Send + 'a>> {
    Box::pin(async move {
        let service_q =
            percent_encoding::utf8_percent_encode(service, percent_encoding::NON_ALPHANUMERIC);
        let path = format!(
            "/incidents?service_ids%5B%5D={service_q}&since={}&until={}&time_zone=UTC&sort_by=created_at:asc",
            secs(from),
            secs(to)
        );
        let what = format!("incidents {}..{}", secs(from), secs(to));
        match paged_capped(client, &what, &path, "incidents", cap).await? {
            Some(list) => Ok(list),
            None if to - from > chrono::TimeDelta::seconds(1) => {
                eprintln!("backfill: {what}: over the {cap} incidents one query lists: splitting");
                let mid = from + (to - from) / 2;
                let mut list = incidents_in(client, service, cap, from, mid).await?;
                for i in incidents_in(client, service, cap, mid, to).await? {
                    if !list.iter().any(|x| x["id"] == i["id"]) {
                        list.push(i);
                    }
                }
                Ok(list)
            }
            None => bail!("GET {path}: more than {cap} incidents created within one second"),
        }
    })
}

/// The incident as a v3 webhook's `event.data`, with the status it had at that event.
fn incident_data(incident: &Value, status: &str, ep: &str) -> anyhow::Result<Value> {
    let number = field_u64(incident, "incident_number", ep)?;
    field_str(incident, "service.id", ep)?;
    let assignees: Vec<Value> = incident["assignments"]
        .as_array()
        .map(|a| a.iter().map(|x| x["assignee"].clone()).collect())
        .unwrap_or_default();
    Ok(json!({
        "id": incident["id"],
        "type": "incident",
        "self": incident["self"],
        "html_url": incident["html_url"],
        "number": number,
        "status": status,
        "incident_key": incident["incident_key"],
        "created_at": incident["created_at"],
        "title": incident["title"],
        "service": incident["service"],
        "assignees": assignees,
        "escalation_policy": incident["escalation_policy"],
        "teams": incident.get("teams").cloned().unwrap_or_else(|| json!([])),
        "priority": incident["priority"],
        "urgency": incident["urgency"],
        "conference_bridge": incident["conference_bridge"],
        "resolve_reason": incident["resolve_reason"],
    }))
}

/// Where an incident stands while its log is walked.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    New,
    Triggered,
    Acknowledged,
    Resolved,
}

/// The `incident.*` deliveries of one incident, from its log entries oldest first: the events
/// PagerDuty's webhooks send for the status changes the mapping reads.
/// What a log entry of `kind` makes in `state`: the webhooks PagerDuty sent for it, each
/// `(event type, status, at the entry)` (not at the entry: at the incident's creation, the
/// trigger a log without one implies), and the state after.
fn transition(kind: &str, state: Phase) -> (Vec<(&'static str, &'static str, bool)>, Phase) {
    let implied = |s: Phase| match s {
        Phase::New => vec![("incident.triggered", "triggered", false)],
        _ => vec![],
    };
    match (kind, state) {
        ("trigger_log_entry", Phase::New) => (
            vec![("incident.triggered", "triggered", true)],
            Phase::Triggered,
        ),
        // No log entry type is documented for a reopening: a trigger after a resolve is one.
        ("trigger_log_entry", Phase::Resolved) => (
            vec![("incident.reopened", "triggered", true)],
            Phase::Triggered,
        ),
        // The reference names the type both ways (`acknowledgement_log_entry` in the schema's
        // enum, `acknowledge_log_entry` in the list's).
        ("acknowledge_log_entry" | "acknowledgement_log_entry", s) if s != Phase::Resolved => {
            let mut events = implied(s);
            events.push(("incident.acknowledged", "acknowledged", true));
            (events, Phase::Acknowledged)
        }
        ("unacknowledge_log_entry", Phase::Acknowledged) => (vec![], Phase::Triggered),
        ("resolve_log_entry", s) if s != Phase::Resolved => {
            let mut events = implied(s);
            events.push(("incident.resolved", "resolved", true));
            (events, Phase::Resolved)
        }
        // Notifications, escalations, assignments, notes, urgency and priority changes: their
        // webhooks are not used.
        (_, s) => (vec![], s),
    }
}

fn incident_deliveries(
    incident: &Value,
    entries: &[Value],
    until: Time,
    ep: &str,
    log_ep: &str,
    out: &mut Vec<Recorded>,
) -> anyhow::Result<()> {
    let id = field_str(incident, "id", ep)?.to_string();
    let mut log: Vec<(Time, &Value)> = Vec::new();
    for e in entries {
        field_str(e, "id", log_ep)?;
        field_str(e, "type", log_ep)?;
        log.push((field_time(e, "created_at", log_ep)?, e));
    }
    // Oldest first; entries of one second keep the API's order.
    log.sort_by_key(|(t, _)| *t);
    let mut state = Phase::New;
    let mut push =
        |event_type: &str, status: &str, at: &str, entry: &Value| -> anyhow::Result<()> {
            let entry_id = entry["id"].as_str().unwrap_or("created");
            let delivery = delivery_id(SOURCE, event_type, &id, entry_id, at);
            let body = json!({
                "event": {
                    "id": delivery,
                    "event_type": event_type,
                    "resource_type": "incident",
                    "occurred_at": at,
                    "agent": entry.get("agent").cloned().unwrap_or(Value::Null),
                    "client": null,
                    "data": incident_data(incident, status, ep)?,
                }
            });
            out.push(recorded(
                SOURCE,
                &[],
                &body,
                format!("pagerduty/{event_type}/{id}"),
            ));
            Ok(())
        };
    let created = incident["created_at"].as_str().unwrap_or_default();
    for (t, e) in &log {
        if *t > until {
            break;
        }
        let at = e["created_at"].as_str().unwrap_or_default();
        let (events, next) = transition(e["type"].as_str().unwrap_or_default(), state);
        for (event_type, status, own) in events {
            match own {
                true => push(event_type, status, at, e)?,
                false => push(event_type, status, created, &Value::Null)?,
            }
        }
        state = next;
    }
    if state == Phase::New {
        // A log that does not reach back to the trigger (or not read yet): the incident exists.
        push(
            "incident.triggered",
            "triggered",
            incident["created_at"].as_str().unwrap_or_default(),
            &Value::Null,
        )?;
    }
    Ok(())
}
