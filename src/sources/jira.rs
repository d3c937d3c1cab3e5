//! Jira Cloud: `X-Hub-Signature: sha256=…` verification and the translation of
//! `jira:issue_created`, `jira:issue_updated` and `jira:issue_deleted` deliveries into normalized
//! issue (or incident) events. The payload model (only the fields we use) and its mapping to
//! attributes live here and nowhere else.
//!
//! A Jira issue is published under [`tracker_item_key`] (`tracker/issue/SHOP-42`): that is the key
//! changes compute when a branch name or title carries `SHOP-42`, so they become its children
//! without a lookup.

use super::{
    authenticate_with, parse_json, signing_secret, verify, Delivery, Ignored, Setting, Source,
    SourceEntry, SourceError, SourceOptions, Translated, Translation,
};
use crate::config::{repo_value, Config, ConfigError, Env};
use crate::model::attr;
use crate::model::refs::{team_from_labels, tracker_item_key};
use crate::model::timestamp;
use crate::model::{
    set_opt, Action, AttrValue, Attrs, Ending, Input, Repo, SpanEvent, Time, WorkEvent, WorkResult,
};
use crate::sources::tracker;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;

pub struct Jira;

const SOURCE: &str = "jira";

/// The registry's entry for Jira (`src/sources/registry.rs` lists it).
pub const ENTRY: SourceEntry = SourceEntry {
    name: SOURCE,
    route: "/webhooks/jira",
    secret: Setting {
        var: "VALUESTREAM_JIRA_SECRET",
        doc: "Jira Cloud webhook secret (X-Hub-Signature: sha256=...)",
    },
    settings: &[PROJECTS],
    options: Settings::parse,
    source: &Jira,
};

/// `VALUESTREAM_JIRA_PROJECTS`.
const PROJECTS: Setting = Setting {
    var: "VALUESTREAM_JIRA_PROJECTS",
    doc: "Jira project key to repository map: 'SHOP=owner/repo' (links Jira incidents to deployments)",
};

/// Jira's settings of their own, beside the secret.
#[derive(Debug)]
pub struct Settings {
    /// Jira project key (upper case) → repository.
    pub projects: BTreeMap<String, Repo>,
}

impl SourceOptions for Settings {
    const SOURCE: &'static str = SOURCE;

    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Settings {
            projects: env
                .map(PROJECTS.var, "PROJECT=owner/repo", repo_value)?
                .into_iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), Repo::new(&v)))
                .collect(),
        })
    }
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct Project {
    key: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct StatusCategory {
    key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    name: String,
    status_category: Option<StatusCategory>,
}

#[derive(Deserialize)]
struct Fields {
    #[serde(deserialize_with = "timestamp::de::time")]
    created: Time,
    #[serde(default, deserialize_with = "timestamp::de::opt_time")]
    updated: Option<Time>,
    #[serde(default, deserialize_with = "timestamp::de::opt_time")]
    resolutiondate: Option<Time>,
    resolution: Option<Named>,
    issuetype: Option<Named>,
    project: Option<Project>,
    priority: Option<Named>,
    #[serde(default)]
    labels: Vec<String>,
    status: Option<Status>,
    summary: Option<String>,
}

#[derive(Deserialize)]
struct Issue {
    key: String,
    #[serde(rename = "self")]
    self_url: Option<String>,
    fields: Fields,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangeItem {
    field: String,
    from_string: Option<String>,
    to_string: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

#[derive(Deserialize)]
struct Changelog {
    #[serde(default)]
    items: Vec<ChangeItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    webhook_event: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    /// Epoch milliseconds of the event.
    timestamp: Option<i64>,
    issue: Option<Issue>,
    changelog: Option<Changelog>,
}

impl Source for Jira {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn authenticate(&self, d: &Delivery, config: &Config) -> Result<(), SourceError> {
        authenticate_with(
            &ENTRY,
            d.header("x-hub-signature"),
            config,
            |secret, presented| {
                presented
                    .trim()
                    .strip_prefix("sha256=")
                    .is_some_and(|hex| verify::hmac_sha256_matches(secret, d.body, hex))
            },
        )
    }

    fn translate(&self, d: &Delivery, config: &Config) -> Result<Translated, SourceError> {
        let delivery_id = d
            .header("x-atlassian-webhook-identifier")
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| crate::model::ids::short_hash(d.body));
        let translation = translate(d.body, config)?;
        Ok(Translated {
            delivery_id,
            translation,
        })
    }

    fn sign(&self, body: &[u8], config: &Config) -> Vec<(String, String)> {
        signing_secret(&ENTRY, config)
            .map(|s| {
                vec![(
                    "x-hub-signature".into(),
                    format!("sha256={}", verify::hmac_sha256_hex(s, body)),
                )]
            })
            .unwrap_or_default()
    }
}

fn translate(body: &[u8], config: &Config) -> Result<Translation, SourceError> {
    let head: Head = parse_json(SOURCE, body)?;
    let event = head.webhook_event.ok_or_else(|| {
        SourceError::Malformed("jira: the body has no webhookEvent (not a Jira webhook?)".into())
    })?;
    if !matches!(
        event.as_str(),
        "jira:issue_created" | "jira:issue_updated" | "jira:issue_deleted"
    ) {
        // Comments, worklogs, sprints, versions, projects…: well-formed, not used.
        return Ok(Translation::Ignored(Ignored::unused("jira event", event)));
    }
    let env: Envelope = parse_json(SOURCE, body)?;
    let issue = env
        .issue
        .as_ref()
        .ok_or_else(|| SourceError::Malformed(format!("jira: {event} delivery has no issue")))?;
    let work = issue_event(&event, &env, issue, config)?;
    Ok(Translation::Inputs(vec![Input::Work(work)]))
}

/// Status names that belong to the Done category in Jira's default workflows. A changelog item
/// carries status names but not their categories, so leaving Done is recognized by the
/// resolution being cleared, or by the previous status having one of these names.
const DONE_NAMES: &[&str] = &[
    "done",
    "closed",
    "resolved",
    "complete",
    "completed",
    "released",
    "cancelled",
    "canceled",
    "won't do",
];

fn is_done(status: Option<&Status>) -> bool {
    status
        .and_then(|s| s.status_category.as_ref())
        .is_some_and(|c| c.key.eq_ignore_ascii_case("done"))
}

fn issue_event(
    event: &str,
    env: &Envelope,
    issue: &Issue,
    config: &Config,
) -> Result<WorkEvent, SourceError> {
    let f = &issue.fields;
    let event_time = env
        .timestamp
        .and_then(DateTime::<Utc>::from_timestamp_millis);
    let status_items: Vec<&ChangeItem> = env
        .changelog
        .iter()
        .flat_map(|c| &c.items)
        .filter(|i| i.field.eq_ignore_ascii_case("status"))
        .collect();
    let done = is_done(f.status.as_ref());
    let resolution_cleared =
        env.changelog.iter().flat_map(|c| &c.items).any(|i| {
            i.field.eq_ignore_ascii_case("resolution") && i.from.is_some() && i.to.is_none()
        });
    let left_done = !done
        && status_items.iter().any(|i| {
            resolution_cleared
                || i.from_string
                    .as_deref()
                    .is_some_and(|s| DONE_NAMES.contains(&s.trim().to_ascii_lowercase().as_str()))
        });
    let transition_time = event_time.or(f.updated).unwrap_or(f.created);

    let labels = f.labels.clone();
    let issue_type = f.issuetype.as_ref().map(|t| t.name.clone());
    let kind = tracker::issue_kind(
        issue_type.as_deref(),
        labels.iter().map(String::as_str),
        config,
    );
    let summary = f.summary.clone().unwrap_or_default();
    let prefix = tracker::name_prefix(kind);
    let name = format!("{prefix} {} {summary}", issue.key)
        .trim_end()
        .to_string();

    let (action, reopened) = match event {
        "jira:issue_created" if done => (Action::Close, false),
        "jira:issue_created" => (Action::Open, false),
        "jira:issue_deleted" => (Action::Close, false),
        _ if done => (Action::Close, false),
        _ if left_done => (Action::Open, true),
        _ => (Action::Update, false),
    };
    let mut w = WorkEvent::new(kind, tracker_item_key(&issue.key), name, action);
    w.reopened = reopened;
    w.start = Some(if reopened { transition_time } else { f.created });
    if action == Action::Close {
        let (end, result) = if event == "jira:issue_deleted" {
            (
                event_time.or(f.updated).unwrap_or(f.created),
                WorkResult::Deleted,
            )
        } else {
            (
                f.resolutiondate
                    .or(event_time)
                    .or(f.updated)
                    .unwrap_or(f.created),
                tracker::closed_result(kind),
            )
        };
        w.end = Some(end);
        w.outcome = Some(Ending::ok(result));
    }
    w.span_events.extend(
        status_items
            .iter()
            .map(|i| status_event(i, transition_time)),
    );
    issue_attributes(&mut w, issue, summary, issue_type, labels, config);
    Ok(w)
}

/// A status transition as a span event: `status To Do → In Progress`.
fn status_event(i: &ChangeItem, time: Time) -> SpanEvent {
    let from = i.from_string.clone().unwrap_or_default();
    let to = i.to_string.clone().unwrap_or_default();
    let mut a = Attrs::new();
    a.insert(attr::ISSUE_STATUS_FROM.into(), from.clone().into());
    a.insert(attr::ISSUE_STATUS_TO.into(), to.clone().into());
    SpanEvent {
        name: format!("status {from} → {to}"),
        time,
        attributes: a,
    }
}

/// The issue's attributes, and its repository (and team) when its project is mapped.
fn issue_attributes(
    w: &mut WorkEvent,
    issue: &Issue,
    summary: String,
    issue_type: Option<String>,
    labels: Vec<String>,
    config: &Config,
) {
    let f = &issue.fields;
    let a = &mut w.attributes;
    a.insert(attr::ISSUE_KEY.into(), issue.key.clone().into());
    if !summary.is_empty() {
        a.insert(attr::ISSUE_TITLE.into(), summary.into());
    }
    set_opt(a, attr::ISSUE_TYPE, issue_type);
    set_opt(
        a,
        attr::ISSUE_PRIORITY,
        f.priority.as_ref().map(|p| p.name.clone()),
    );
    set_opt(
        a,
        attr::ISSUE_STATUS,
        f.status.as_ref().map(|s| s.name.clone()),
    );
    set_opt(
        a,
        attr::ISSUE_STATUS_CATEGORY,
        f.status
            .as_ref()
            .and_then(|s| s.status_category.as_ref())
            .map(|c| c.key.clone()),
    );
    set_opt(
        a,
        attr::ISSUE_RESOLUTION,
        f.resolution.as_ref().map(|r| r.name.clone()),
    );
    set_opt(
        a,
        attr::PROJECT_KEY,
        f.project.as_ref().map(|p| p.key.clone()),
    );
    set_opt(
        a,
        attr::PROJECT_NAME,
        f.project.as_ref().and_then(|p| p.name.clone()),
    );
    // A mapped project gives the issue a repository: incidents then find the deployment they
    // followed, and metrics carry the repository.
    let project = f.project.as_ref().map(|p| p.key.to_ascii_uppercase());
    w.repo = project.and_then(|k| Settings::of(config).projects.get(&k).cloned());
    w.traits.team = team_from_labels(labels.iter().map(String::as_str))
        .or_else(|| {
            w.repo
                .as_ref()
                .and_then(|r| config.team_of(r))
                .map(str::to_string)
        })
        .filter(|t| !t.is_empty());
    set_opt(
        a,
        attr::URL_FULL,
        issue
            .self_url
            .as_deref()
            .and_then(|s| browse_url(s, &issue.key)),
    );
    a.insert(attr::LABELS.into(), AttrValue::StrList(labels));
}

/// `https://example.atlassian.net/rest/api/2/10023` → `https://example.atlassian.net/browse/KEY`.
fn browse_url(self_url: &str, key: &str) -> Option<String> {
    let (scheme, rest) = self_url.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}/browse/{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jira_times_without_the_offset_colon_parse() {
        let want = "2024-03-09T09:00:00Z".parse::<Time>().unwrap();
        assert_eq!(timestamp::parse("2024-03-09T10:00:00.000+0100"), Some(want));
    }

    #[test]
    fn browse_url_from_self() {
        assert_eq!(
            browse_url("https://example.atlassian.net/rest/api/2/10023", "SHOP-42").as_deref(),
            Some("https://example.atlassian.net/browse/SHOP-42")
        );
        assert_eq!(browse_url("not a url", "SHOP-42"), None);
    }
}
