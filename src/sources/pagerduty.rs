//! PagerDuty (Generic Webhooks v3): `X-PagerDuty-Signature` verification (a list of `v1=<hex>`
//! signatures, any of which may match, so secrets can be rotated) and the translation of
//! `incident.triggered`, `incident.acknowledged`, `incident.resolved` and `incident.reopened`
//! into normalized incident events. The payload model (only the fields we use) and its mapping to
//! attributes live here and nowhere else.
//!
//! An incident finds the deployment it followed through its repository:
//! `VALUESTREAM_PAGERDUTY_SERVICES` maps a PagerDuty service (by ID, else by name) to a
//! repository, and the engine looks for that repository's latest successful production
//! deployment before the incident was triggered.

use super::{
    authenticate_with, parse_json, signing_secret, verify, Delivery, Ignored, Setting, Source,
    SourceEntry, SourceError, SourceOptions, Translated, Translation,
};
use crate::config::{repo_value, Config, ConfigError, Env};
use crate::model::attr;
use crate::model::ids::item_key;
use crate::model::{
    set_opt, Action, AttrValue, Ending, Input, Kind, Repo, SpanEvent, Time, WorkEvent, WorkResult,
};
use chrono::Timelike;
use serde::Deserialize;
use std::collections::BTreeMap;

pub struct PagerDuty;

const SOURCE: &str = "pagerduty";

/// The registry's entry for PagerDuty (`src/sources/registry.rs` lists it).
pub const ENTRY: SourceEntry = SourceEntry {
    name: SOURCE,
    route: "/webhooks/pagerduty",
    secret: Setting {
        var: "VALUESTREAM_PAGERDUTY_SECRET",
        doc: "PagerDuty v3 webhook signing secret (X-PagerDuty-Signature)",
    },
    settings: &[SERVICES],
    options: Settings::parse,
    source: &PagerDuty,
};

/// `VALUESTREAM_PAGERDUTY_SERVICES`.
const SERVICES: Setting = Setting {
    var: "VALUESTREAM_PAGERDUTY_SERVICES",
    doc: "PagerDuty service (ID or name) to repository map: 'PIJ90N7=owner/repo'",
};

/// PagerDuty's settings of their own, beside the secret.
#[derive(Debug)]
pub struct Settings {
    /// PagerDuty service (ID or name) → repository.
    pub services: BTreeMap<String, Repo>,
}

impl SourceOptions for Settings {
    const SOURCE: &'static str = SOURCE;

    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Settings {
            services: env
                .map(SERVICES.var, "service=owner/repo", repo_value)?
                .into_iter()
                .map(|(k, v)| (k, Repo::new(&v)))
                .collect(),
        })
    }
}

#[derive(Deserialize)]
struct Reference {
    id: String,
    summary: Option<String>,
}

#[derive(Deserialize)]
struct Incident {
    id: String,
    number: Option<i64>,
    title: Option<String>,
    html_url: Option<String>,
    status: Option<String>,
    created_at: Time,
    urgency: Option<String>,
    service: Option<Reference>,
    #[serde(default)]
    teams: Vec<Reference>,
    priority: Option<Reference>,
}

#[derive(Deserialize)]
struct Event {
    id: String,
    event_type: String,
    occurred_at: Time,
    /// Parsed as an incident only for the event types that are used.
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct Envelope {
    event: Event,
}

impl Source for PagerDuty {
    fn name(&self) -> &'static str {
        SOURCE
    }

    fn authenticate(&self, d: &Delivery, config: &Config) -> Result<(), SourceError> {
        authenticate_with(
            &ENTRY,
            d.header("x-pagerduty-signature"),
            config,
            |secret, presented| signature_matches(secret, d.body, presented),
        )
    }

    fn translate(&self, d: &Delivery, config: &Config) -> Result<Translated, SourceError> {
        let mut env: Envelope = parse_json(SOURCE, d.body)?;
        // To the second: the REST API's log entries (what `backfill pagerduty` reads) give their
        // times to the second, the webhooks to the millisecond; both then record one fact.
        env.event.occurred_at = env
            .event
            .occurred_at
            .with_nanosecond(0)
            .unwrap_or(env.event.occurred_at);
        let translation = translate(&env.event, config)?;
        Ok(Translated {
            delivery_id: env.event.id,
            translation,
        })
    }

    fn sign(&self, body: &[u8], config: &Config) -> Vec<(String, String)> {
        signing_secret(&ENTRY, config)
            .map(|s| {
                vec![(
                    "x-pagerduty-signature".into(),
                    format!("v1={}", verify::hmac_sha256_hex(s, body)),
                )]
            })
            .unwrap_or_default()
    }
}

/// Whether any `v1=<hex>` signature in the comma-separated list is the body's HMAC-SHA256.
/// Every candidate is checked (no early exit on the first match), each in constant time.
pub fn signature_matches(secret: &str, body: &[u8], header: &str) -> bool {
    header
        .split(',')
        .filter_map(|s| s.trim().strip_prefix("v1="))
        .fold(false, |ok, hex| {
            verify::hmac_sha256_matches(secret, body, hex) | ok
        })
}

fn translate(event: &Event, config: &Config) -> Result<Translation, SourceError> {
    let Some((action, reopened)) = action_of(&event.event_type) else {
        // Annotations, priority changes, reassignments, services, pings…: not used.
        return Ok(Translation::Ignored(Ignored::unused(
            "pagerduty event",
            &event.event_type,
        )));
    };
    let incident: Incident = serde_json::from_value(event.data.clone()).map_err(|e| {
        SourceError::Malformed(format!(
            "pagerduty: {} event.data is not an incident: {e}",
            event.event_type
        ))
    })?;
    let mut w = incident_event(event, &incident, action, reopened);
    w.repo = incident
        .service
        .as_ref()
        .and_then(|s| repository_of(config, s));
    add_incident_fields(&mut w, &incident, config);
    Ok(Translation::Inputs(vec![Input::Work(w)]))
}

/// The action of an incident event type, and whether it reopens the incident; `None` for the
/// event types not used.
fn action_of(event_type: &str) -> Option<(Action, bool)> {
    Some(match event_type {
        "incident.triggered" => (Action::Open, false),
        "incident.acknowledged" => (Action::Update, false),
        "incident.resolved" => (Action::Close, false),
        "incident.reopened" => (Action::Open, true),
        _ => return None,
    })
}

/// The incident's work event: its name, and its times. A reopened incident starts again when
/// it is reopened; a resolve ends it; an acknowledgement is a span event.
fn incident_event(event: &Event, incident: &Incident, action: Action, reopened: bool) -> WorkEvent {
    let title = incident.title.as_deref().unwrap_or_default();
    let number = incident
        .number
        .map(|n| format!("#{n}"))
        .unwrap_or_else(|| incident.id.clone());
    let name = format!("INCIDENT {number} {title}").trim_end().to_string();
    let mut w = WorkEvent::new(
        Kind::Incident,
        item_key(SOURCE, "incident", "-", &incident.id),
        name,
        action,
    );
    w.reopened = reopened;
    let (start, start_field) = if reopened {
        (event.occurred_at, "event.occurred_at")
    } else {
        (incident.created_at, "incident.created_at")
    };
    w.start = Some(start);
    w.time_fields = [start_field, "event.occurred_at"];
    if action == Action::Close {
        w.end = Some(event.occurred_at);
        w.outcome = Some(Ending::ok(WorkResult::Resolved));
    }
    if event.event_type == "incident.acknowledged" {
        w.span_events.push(SpanEvent {
            name: "acknowledged".into(),
            time: event.occurred_at,
            attributes: Default::default(),
        });
        w.attributes.insert(
            attr::INCIDENT_ACKNOWLEDGED_AT.into(),
            event.occurred_at.to_rfc3339().into(),
        );
    }
    w
}

/// The incident's attributes, and its team: the first PagerDuty team, else the team of the
/// repository its service is mapped to.
fn add_incident_fields(w: &mut WorkEvent, incident: &Incident, config: &Config) {
    let a = &mut w.attributes;
    a.insert(attr::INCIDENT_ID.into(), incident.id.clone().into());
    set_opt(a, attr::INCIDENT_NUMBER, incident.number);
    if let Some(title) = incident.title.as_deref().filter(|t| !t.is_empty()) {
        a.insert(attr::INCIDENT_TITLE.into(), title.into());
    }
    set_opt(a, attr::INCIDENT_STATUS, incident.status.clone());
    set_opt(a, attr::INCIDENT_URGENCY, incident.urgency.clone());
    set_opt(
        a,
        attr::INCIDENT_PRIORITY,
        incident.priority.as_ref().and_then(|p| p.summary.clone()),
    );
    if let Some(s) = &incident.service {
        a.insert(attr::INCIDENT_SERVICE_ID.into(), s.id.clone().into());
        set_opt(a, attr::INCIDENT_SERVICE_NAME, s.summary.clone());
    }
    let teams: Vec<String> = incident
        .teams
        .iter()
        .filter_map(|t| t.summary.clone())
        .collect();
    let team = teams.first().cloned().or_else(|| {
        w.repo
            .as_ref()
            .and_then(|r| config.team_of(r))
            .map(str::to_string)
    });
    w.traits.team = team.filter(|t| !t.is_empty());
    if !teams.is_empty() {
        a.insert(attr::TEAMS.into(), AttrValue::StrList(teams));
    }
    set_opt(a, attr::URL_FULL, incident.html_url.clone());
}

/// The repository a PagerDuty service is mapped to: by service ID, else by its name (the name
/// compared without regard to case).
fn repository_of(config: &Config, service: &Reference) -> Option<Repo> {
    let map = &Settings::of(config).services;
    map.get(&service.id).cloned().or_else(|| {
        let name = service.summary.as_deref()?.trim();
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, r)| r.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_listed_signature_may_match() {
        let body = b"{}";
        let good = verify::hmac_sha256_hex("s", body);
        let bad = "0".repeat(64);
        assert!(signature_matches("s", body, &format!("v1={good}")));
        assert!(signature_matches("s", body, &format!("v1={bad},v1={good}")));
        assert!(signature_matches(
            "s",
            body,
            &format!("v1={good}, v1={bad}")
        ));
        assert!(!signature_matches("s", body, &format!("v1={bad},v1={bad}")));
        assert!(!signature_matches("s", body, &format!("v0={good}")));
        assert!(!signature_matches("s", body, ""));
    }
}
