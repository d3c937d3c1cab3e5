//! A small fake of PagerDuty's REST API v2 and the scenario it serves, for
//! `tests/backfill_pagerduty.rs`. Shapes from PagerDuty's OpenAPI description
//! (`PagerDuty/api-schema`, `reference/REST/openapiv3.json`): `GET /incidents` and
//! `GET /incidents/{id}/log_entries` answer `{"incidents"|"log_entries": […], "limit", "offset",
//! "more", "total": null}` (classic pagination; offset + limit over the cap is refused, as
//! PagerDuty refuses past 10,000); an incident has `incident_number` where the v3 webhook's
//! `data` has `number`; times to the second. `Authorization: Token token=…` is checked (401
//! otherwise); faults on demand (a 429 with `Retry-After`, a 502); every request is logged.
//! Also the same scenario as the v3 webhooks PagerDuty sent (built like
//! `tests/fixtures/pagerduty/`, with millisecond `occurred_at`s).
//! Included with `#[path = "common/fake_pagerduty.rs"] mod fake_pagerduty;`.
#![allow(dead_code)]

use crate::common::*;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const TOKEN: &str = "pd_test_token";
pub const SECRET: &str = "test-pagerduty-secret";
pub const SERVICE: &str = "PIJ90N7";
pub const OTHER_SERVICE: &str = "PXXXXXX";
pub const SINCE: &str = "2024-03-01T00:00:00Z";

/// One log entry: (type, time to the second, the webhook's `occurred_at` to the millisecond).
pub type Entry = (&'static str, String, String);

/// An incident: the REST object (final state) and its log, oldest first.
#[derive(Clone)]
pub struct Incident {
    pub rest: Value,
    pub log: Vec<Entry>,
}

pub struct Scenario {
    pub incidents: Vec<Incident>,
}

pub fn t(day: u32, hms: &str) -> String {
    format!("2024-03-{day:02}T{hms}Z")
}

/// The REST incident object from the webhook fixture's `data`.
fn rest_incident(id: &str, number: u64, title: &str, service: &str, created: &str) -> Value {
    let data = fixture_json("pagerduty/incident_resolved.json")["event"]["data"].clone();
    let mut v = data.clone();
    let o = v.as_object_mut().unwrap();
    o.remove("number");
    o.remove("assignees");
    o.insert("incident_number".into(), json!(number));
    o.insert("id".into(), json!(id));
    o.insert("title".into(), json!(title));
    o.insert("summary".into(), json!(format!("[#{number}] {title}")));
    o.insert(
        "self".into(),
        json!(format!("https://api.pagerduty.com/incidents/{id}")),
    );
    o.insert(
        "html_url".into(),
        json!(format!("https://example.pagerduty.com/incidents/{id}")),
    );
    o.insert("created_at".into(), json!(created));
    o.insert("updated_at".into(), json!(created));
    o.insert("assignments".into(), json!([]));
    o.insert("assigned_via".into(), json!("escalation_policy"));
    o.insert(
        "alert_counts".into(),
        json!({"all": 1, "triggered": 0, "resolved": 1}),
    );
    o.insert("is_mergeable".into(), json!(true));
    o.insert("pending_actions".into(), json!([]));
    o.insert("acknowledgements".into(), json!([]));
    let mut svc = data["service"].clone();
    svc["id"] = json!(service);
    svc["self"] = json!(format!("https://api.pagerduty.com/services/{service}"));
    o.insert("service".into(), svc);
    v
}

/// Incident #2 triggered, acknowledged and resolved; #3 resolved too early, reopened,
/// acknowledged and resolved for good; #4 still acknowledged; #5 on another service; #1 before
/// the window. Notifications, escalations and notes in between (not used by the mapping).
pub fn scenario() -> Scenario {
    let e = |kind: &'static str, day: u32, hms: &str, ms: &str| -> Entry {
        (kind, t(day, hms), format!("2024-03-{day:02}T{hms}.{ms}Z"))
    };
    let mut two = rest_incident(
        "PGR0VU2",
        2,
        "Checkout error rate above 5%",
        SERVICE,
        &t(10, "14:02:11"),
    );
    two["status"] = json!("resolved");
    let mut three = rest_incident(
        "PT4KHLK",
        3,
        "Payments API latency",
        SERVICE,
        &t(11, "09:00:00"),
    );
    three["status"] = json!("resolved");
    three["urgency"] = json!("low");
    three["priority"] = Value::Null;
    three["teams"] = json!([]);
    let mut four = rest_incident(
        "PQ1AAAA",
        4,
        "Disk almost full",
        SERVICE,
        &t(12, "08:00:00"),
    );
    four["status"] = json!("acknowledged");
    let mut five = rest_incident(
        "PZ5ZZZZ",
        5,
        "Other service down",
        OTHER_SERVICE,
        &t(12, "09:00:00"),
    );
    five["status"] = json!("resolved");
    let mut one = rest_incident(
        "PB1BBBB",
        1,
        "Old incident",
        SERVICE,
        "2024-02-20T10:00:00Z",
    );
    one["status"] = json!("resolved");
    Scenario {
        incidents: vec![
            Incident {
                rest: one,
                log: vec![
                    (
                        "trigger_log_entry",
                        "2024-02-20T10:00:00Z".into(),
                        "2024-02-20T10:00:00.120Z".into(),
                    ),
                    (
                        "resolve_log_entry",
                        "2024-02-20T11:00:00Z".into(),
                        "2024-02-20T11:00:00.340Z".into(),
                    ),
                ],
            },
            Incident {
                rest: two,
                log: vec![
                    e("trigger_log_entry", 10, "14:02:11", "000"),
                    e("notify_log_entry", 10, "14:02:12", "500"),
                    e("acknowledge_log_entry", 10, "14:05:30", "169"),
                    e("annotate_log_entry", 10, "14:20:00", "001"),
                    e("resolve_log_entry", 10, "15:47:40", "730"),
                ],
            },
            Incident {
                rest: three,
                log: vec![
                    e("trigger_log_entry", 11, "09:00:00", "000"),
                    e("resolve_log_entry", 11, "09:10:00", "402"),
                    e("trigger_log_entry", 11, "09:30:00", "555"),
                    e("escalate_log_entry", 11, "09:35:00", "000"),
                    e("acknowledge_log_entry", 11, "09:40:00", "999"),
                    e("resolve_log_entry", 11, "10:15:00", "003"),
                ],
            },
            Incident {
                rest: four,
                log: vec![
                    e("trigger_log_entry", 12, "08:00:00", "000"),
                    e("acknowledge_log_entry", 12, "08:03:00", "250"),
                ],
            },
            Incident {
                rest: five,
                log: vec![
                    e("trigger_log_entry", 12, "09:00:00", "000"),
                    e("resolve_log_entry", 12, "09:30:00", "000"),
                ],
            },
        ],
    }
}

/// A v3 webhook delivery: (event ID, body).
pub type Hook = (String, Value);

/// The v3 webhooks PagerDuty sent about the scenario's incidents of `SERVICE` in the window:
/// the fixture envelope, `event.data` the incident (with `number`) in the status it had then.
pub fn webhooks(s: &Scenario) -> Vec<Hook> {
    let mut out = Vec::new();
    for inc in &s.incidents {
        if inc.rest["service"]["id"] != SERVICE || inc.rest["created_at"].as_str().unwrap() < SINCE
        {
            continue;
        }
        let mut data = fixture_json("pagerduty/incident_resolved.json")["event"]["data"].clone();
        for k in [
            "id",
            "self",
            "html_url",
            "incident_key",
            "created_at",
            "title",
            "service",
            "teams",
            "priority",
            "urgency",
            "escalation_policy",
        ] {
            data[k] = inc.rest[k].clone();
        }
        data["number"] = inc.rest["incident_number"].clone();
        let mut resolved = false;
        for (n, (kind, _, occurred)) in inc.log.iter().enumerate() {
            let (event_type, status, base) = match *kind {
                "trigger_log_entry" if resolved => {
                    ("incident.reopened", "triggered", "incident_reopened")
                }
                "trigger_log_entry" => ("incident.triggered", "triggered", "incident_triggered"),
                "acknowledge_log_entry" => (
                    "incident.acknowledged",
                    "acknowledged",
                    "incident_acknowledged",
                ),
                "resolve_log_entry" => ("incident.resolved", "resolved", "incident_resolved"),
                "annotate_log_entry" => {
                    ("incident.annotated", "acknowledged", "incident_annotated")
                }
                _ => continue,
            };
            match event_type {
                "incident.resolved" => resolved = true,
                "incident.triggered" | "incident.reopened" => resolved = false,
                _ => {}
            }
            let mut v = fixture_json(&format!("pagerduty/{base}.json"));
            let id = format!("01HOOK{}{n}", inc.rest["id"].as_str().unwrap());
            v["event"]["id"] = json!(id);
            v["event"]["event_type"] = json!(event_type);
            v["event"]["occurred_at"] = json!(occurred);
            if event_type == "incident.annotated" {
                v["event"]["data"]["incident"]["id"] = inc.rest["id"].clone();
            } else {
                let mut d = data.clone();
                d["status"] = json!(status);
                v["event"]["data"] = d;
            }
            out.push((id, v));
        }
    }
    out
}

// ---------------------------------------------------------------- the fake API

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// 429 with `Retry-After: 1`.
    Limited,
    /// 429 as PagerDuty's "REST API Rate Limits" page documents it: no `Retry-After`, the
    /// `ratelimit-limit`, `ratelimit-remaining: 0` and `ratelimit-reset` (seconds to wait: 1)
    /// headers.
    LimitedReset,
    /// A bare 429 (the API reference says only "429"): neither `Retry-After` nor reset.
    LimitedBare,
    BadGateway,
    /// 200 with a body that is not the documented shape (`incidents` not a list).
    Garbled,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub status: u16,
    pub at: Instant,
    pub accept: String,
    /// The `If-None-Match` header sent (the real API documents no conditional requests and
    /// sends no `ETag`: neither does this fake, and a backfill sends none).
    pub if_none_match: Option<String>,
}

pub struct Fake {
    pub s: Scenario,
    addr: Mutex<String>,
    pub faults: Mutex<Vec<(String, usize, Fault)>>,
    pub seen: Mutex<Vec<Seen>>,
    /// offset + limit past this is refused (PagerDuty: 10,000); the log entries' cap stays
    /// 10,000 when a test lowers the incident list's.
    pub offset_cap: Mutex<usize>,
}

impl Fake {
    pub async fn start(s: Scenario, faults: Vec<(&str, usize, Fault)>) -> Arc<Fake> {
        let fake = Arc::new(Fake {
            s,
            addr: Mutex::new(String::new()),
            faults: Mutex::new(
                faults
                    .into_iter()
                    .map(|(p, n, f)| (p.to_string(), n, f))
                    .collect(),
            ),
            seen: Mutex::new(Vec::new()),
            offset_cap: Mutex::new(10_000),
        });
        let app = Router::new().fallback(serve).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *fake.addr.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn url(&self) -> String {
        self.addr.lock().unwrap().clone()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self, suffix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.ends_with(suffix))
            .count()
    }

    fn log_entries(&self, id: &str) -> Option<Vec<Value>> {
        let inc = self.s.incidents.iter().find(|i| i.rest["id"] == id)?;
        Some(
            inc.log
                .iter()
                .enumerate()
                .map(|(n, (kind, at, _))| {
                    let eid = format!("R{id}{n:02}");
                    json!({
                        "id": eid,
                        "type": kind,
                        "summary": kind.replace('_', " "),
                        "self": format!("https://api.pagerduty.com/log_entries/{eid}?incident_id={id}"),
                        "html_url": format!("https://example.pagerduty.com/incidents/{id}/log_entries/{eid}"),
                        "created_at": at,
                        "agent": {"id": "PLH1HKV", "type": "user_reference", "summary": "Tenex Engineer",
                                  "self": "https://api.pagerduty.com/users/PLH1HKV",
                                  "html_url": "https://example.pagerduty.com/users/PLH1HKV"},
                        "channel": {"type": "api"},
                        "service": inc.rest["service"],
                        "incident": {"id": id, "type": "incident_reference", "summary": inc.rest["summary"]},
                        "teams": inc.rest["teams"],
                        "contexts": [],
                        "event_details": {},
                    })
                })
                .collect(),
        )
    }
}

/// The query as (decoded key, decoded value) pairs, keys repeated (`service_ids[]`).
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (dec(k), dec(v)))
        .collect()
}

async fn serve(State(fake): State<Arc<Fake>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let mut seen = Seen {
        path: path.clone(),
        query: query.clone(),
        status: 200,
        at: Instant::now(),
        if_none_match: headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        accept: headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    };
    let fault = {
        let before = fake.seen.lock().unwrap();
        let faults = fake.faults.lock().unwrap();
        faults.iter().find_map(|(suffix, nth, f)| {
            let hits = before
                .iter()
                .filter(|s| s.path.ends_with(suffix.as_str()))
                .count();
            (path.ends_with(suffix.as_str()) && hits + 1 == *nth).then_some(*f)
        })
    };
    let respond =
        |seen: Seen, status: StatusCode, extra: Vec<(&'static str, String)>, body: Value| {
            fake.seen.lock().unwrap().push(seen);
            let mut resp = (status, axum::Json(body)).into_response();
            for (k, v) in extra {
                resp.headers_mut().insert(k, v.parse().unwrap());
            }
            resp
        };
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Token token={TOKEN}"))
    {
        seen.status = 401;
        return respond(
            seen,
            StatusCode::UNAUTHORIZED,
            vec![],
            json!({"error": {"message": "Authentication required", "code": 2006}}),
        );
    }
    match fault {
        Some(Fault::Limited) => {
            seen.status = 429;
            return respond(
                seen,
                StatusCode::TOO_MANY_REQUESTS,
                vec![("retry-after", "1".into())],
                json!({"error": {"message": "Rate Limit Exceeded", "code": 2020}}),
            );
        }
        Some(Fault::LimitedReset) => {
            seen.status = 429;
            return respond(
                seen,
                StatusCode::TOO_MANY_REQUESTS,
                vec![
                    ("ratelimit-limit", "960".into()),
                    ("ratelimit-remaining", "0".into()),
                    ("ratelimit-reset", "1".into()),
                ],
                json!({"error": {"message": "Rate Limit Exceeded", "code": 2020}}),
            );
        }
        Some(Fault::LimitedBare) => {
            seen.status = 429;
            return respond(
                seen,
                StatusCode::TOO_MANY_REQUESTS,
                vec![],
                json!({"error": {"message": "Rate Limit Exceeded", "code": 2020}}),
            );
        }
        Some(Fault::BadGateway) => {
            seen.status = 502;
            return respond(seen, StatusCode::BAD_GATEWAY, vec![], json!("bad gateway"));
        }
        _ => {}
    }
    if let Some(id) = path.strip_prefix("/services/") {
        // "Get a service": the backfill command tries its key on the first service.
        return match fake
            .s
            .incidents
            .iter()
            .find(|i| i.rest["service"]["id"] == id)
        {
            Some(i) => respond(
                seen,
                StatusCode::OK,
                vec![],
                json!({"service": i.rest["service"]}),
            ),
            None => {
                seen.status = 404;
                respond(
                    seen,
                    StatusCode::NOT_FOUND,
                    vec![],
                    json!({"error": {"message": "Not Found", "code": 2100}}),
                )
            }
        };
    }
    let q = query_pairs(&query);
    let one = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let limit: usize = one("limit").and_then(|v| v.parse().ok()).unwrap_or(25);
    let offset: usize = one("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let cap = if path == "/incidents" {
        *fake.offset_cap.lock().unwrap()
    } else {
        10_000
    };
    if offset + limit > cap {
        seen.status = 400;
        return respond(
            seen,
            StatusCode::BAD_REQUEST,
            vec![],
            json!({"error": {"message": "Invalid Input Provided", "code": 2001,
                              "errors": ["Offset must be less than the pagination limit."]}}),
        );
    }
    let (key, all) = if path == "/incidents" {
        assert_eq!(one("time_zone").as_deref(), Some("UTC"));
        let services: Vec<String> = q
            .iter()
            .filter(|(k, _)| k == "service_ids[]")
            .map(|(_, v)| v.clone())
            .collect();
        let (since, until) = (one("since").unwrap(), one("until").unwrap());
        let mut all: Vec<Value> = fake
            .s
            .incidents
            .iter()
            .map(|i| i.rest.clone())
            .filter(|i| services.iter().any(|s| i["service"]["id"] == s.as_str()))
            .filter(|i| {
                let c = i["created_at"].as_str().unwrap();
                c >= since.as_str() && c <= until.as_str()
            })
            .collect();
        all.sort_by_key(|i| i["created_at"].as_str().unwrap().to_string());
        ("incidents", all)
    } else if let Some(id) = path
        .strip_prefix("/incidents/")
        .and_then(|r| r.strip_suffix("/log_entries"))
    {
        match fake.log_entries(id) {
            Some(l) => ("log_entries", l),
            None => {
                seen.status = 404;
                return respond(
                    seen,
                    StatusCode::NOT_FOUND,
                    vec![],
                    json!({"error": {"message": "Not Found", "code": 2100}}),
                );
            }
        }
    } else {
        seen.status = 404;
        return respond(
            seen,
            StatusCode::NOT_FOUND,
            vec![],
            json!({"error": {"message": "Not Found", "code": 2100}}),
        );
    };
    let page: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
    let body = if fault == Some(Fault::Garbled) {
        json!({key: {"oops": true}, "limit": limit, "offset": offset, "more": false})
    } else {
        json!({key: page, "limit": limit, "offset": offset, "more": offset + limit < all.len(), "total": null})
    };
    respond(seen, StatusCode::OK, vec![], body)
}
