//! A small fake of the Jira Cloud REST API v3 and the scenario it serves, for
//! `tests/backfill_jira.rs`. Shapes from Atlassian's reference: `GET /rest/api/3/search/jql`
//! ("enhanced search": `{"issues": […], "nextPageToken": "…", "isLast": false}`, issues with the
//! asked `fields` and, with `expand=changelog`, a changelog `{"startAt", "maxResults", "total",
//! "histories"}` of at most 20 histories, newest first), `GET /rest/api/3/issue/{key}/changelog`
//! (`PageBeanChangelog`: `values` oldest first, `startAt`, `maxResults`, `total`, `isLast`),
//! `GET /rest/api/3/status` (statuses with their `statusCategory`), `GET /rest/api/3/myself`.
//! The deprecated `GET /rest/api/3/search` answers 410, as it does since its removal. Basic
//! auth is checked (401 otherwise); faults on demand (a 429 with `Retry-After`, a 502, a body
//! of the wrong shape); every request is logged.
//!
//! The scenario is written as each issue's fields at creation and its changes in order; the
//! fake applies them forward for today's fields and the changelog, and [`webhooks`] renders
//! each step as the delivery Jira sent (like `tests/fixtures/jira/`). Included with
//! `#[path = "common/fake_jira.rs"] mod fake_jira;`.
#![allow(dead_code)]

use crate::common::*;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const EMAIL: &str = "mia@example.com";
pub const TOKEN: &str = "jira_test_token";
pub const SECRET: &str = "test-jira-secret";
pub const SINCE: &str = "2024-03-01T00:00:00Z";
pub const SITE: &str = "https://example.atlassian.net";

/// One change: (history ID, time as Jira writes it, items `(field, from, fromString, to,
/// toString)`).
pub struct Change {
    pub id: u64,
    pub at: String,
    pub items: Vec<Value>,
}

pub struct Issue {
    pub id: u64,
    pub key: String,
    /// The fields as created.
    pub created_fields: Value,
    pub changes: Vec<Change>,
}

pub struct Scenario {
    pub issues: Vec<Issue>,
}

pub fn statuses() -> Vec<Value> {
    let s = |id: &str, name: &str, cat: (u64, &str, &str)| {
        json!({
            "self": format!("{SITE}/rest/api/3/status/{id}"),
            "description": "",
            "iconUrl": format!("{SITE}/images/icons/statuses/generic.png"),
            "name": name,
            "untranslatedName": name,
            "id": id,
            "statusCategory": {"self": format!("{SITE}/rest/api/3/statuscategory/{}", cat.0),
                               "id": cat.0, "key": cat.1, "colorName": "blue-gray", "name": cat.2},
            "scope": {"type": "PROJECT", "project": {"id": "10000"}},
        })
    };
    vec![
        s("10000", "To Do", (2, "new", "To Do")),
        s("3", "In Progress", (4, "indeterminate", "In Progress")),
        s("10002", "Done", (3, "done", "Done")),
    ]
}

fn status(name: &str) -> Value {
    statuses().into_iter().find(|s| s["name"] == name).unwrap()
}

/// A changelog item: `(field, from, fromString, to, toString)`.
pub fn item(
    field: &str,
    from: Option<&str>,
    from_s: Option<&str>,
    to: Option<&str>,
    to_s: Option<&str>,
) -> Value {
    json!({"field": field, "fieldtype": "jira", "fieldId": field,
           "from": from, "fromString": from_s, "to": to, "toString": to_s})
}

fn moved(from: &str, to: &str) -> Value {
    let (f, t) = (status(from), status(to));
    item(
        "status",
        f["id"].as_str(),
        Some(from),
        t["id"].as_str(),
        Some(to),
    )
}

fn jira_time(day: u32, month: u32, hm: &str) -> String {
    format!("2024-{month:02}-{day:02}T{hm}:00.000+0100")
}

fn fields(project: &str, issue_type: &str, summary: &str, created: &str, labels: &[&str]) -> Value {
    let mut f = fixture_json("jira/issue_updated_done.json")["issue"]["fields"].clone();
    f["project"]["key"] = json!(project);
    f["project"]["name"] = json!(if project == "SHOP" {
        "Webshop"
    } else {
        "Operations"
    });
    f["issuetype"]["name"] = json!(issue_type);
    f["summary"] = json!(summary);
    f["created"] = json!(created);
    f["updated"] = json!(created);
    f["statuscategorychangedate"] = json!(created);
    f["labels"] = json!(labels);
    f["status"] = status("To Do");
    f["resolution"] = Value::Null;
    f["resolutiondate"] = Value::Null;
    f["priority"] = json!({"id": "3", "name": "Medium"});
    f
}

/// SHOP-42: in progress, renamed and raised, done, reopened, labelled, done again (six
/// changes, more than the embedded changelog holds in the tests); SHOP-43 opened and in
/// progress; SHOP-7 created in February, in progress then, done in the window; SHOP-1 not
/// updated since January; OPS-9 another project's.
pub fn scenario() -> Scenario {
    let done = || item("resolution", None, None, Some("10000"), Some("Done"));
    let undone = || item("resolution", Some("10000"), Some("Done"), None, None);
    Scenario {
        issues: vec![
            Issue {
                id: 10023,
                key: "SHOP-42".into(),
                created_fields: fields(
                    "SHOP",
                    "Story",
                    "Checkout fails",
                    "2024-03-04T09:15:02.113+0100",
                    &["team-payments", "python"],
                ),
                changes: vec![
                    Change {
                        id: 10100,
                        at: jira_time(5, 3, "10:00"),
                        items: vec![moved("To Do", "In Progress")],
                    },
                    Change {
                        id: 10120,
                        at: jira_time(6, 3, "11:00"),
                        items: vec![
                            item(
                                "summary",
                                None,
                                Some("Checkout fails"),
                                None,
                                Some("Checkout fails for saved cards"),
                            ),
                            item(
                                "priority",
                                Some("3"),
                                Some("Medium"),
                                Some("2"),
                                Some("High"),
                            ),
                        ],
                    },
                    Change {
                        id: 10150,
                        at: jira_time(9, 3, "10:00"),
                        items: vec![moved("In Progress", "Done"), done()],
                    },
                    Change {
                        id: 10180,
                        at: jira_time(10, 3, "09:00"),
                        items: vec![moved("Done", "To Do"), undone()],
                    },
                    Change {
                        id: 10190,
                        at: jira_time(11, 3, "12:30"),
                        items: vec![item(
                            "labels",
                            None,
                            Some("team-payments python"),
                            None,
                            Some("team-payments python urgent"),
                        )],
                    },
                    Change {
                        id: 10210,
                        at: jira_time(12, 3, "16:00"),
                        items: vec![moved("To Do", "Done"), done()],
                    },
                ],
            },
            Issue {
                id: 10031,
                key: "SHOP-43".into(),
                created_fields: fields(
                    "SHOP",
                    "Bug",
                    "Saved cards vanish",
                    &jira_time(7, 3, "08:00"),
                    &["team-payments"],
                ),
                changes: vec![Change {
                    id: 10160,
                    at: jira_time(8, 3, "09:30"),
                    items: vec![moved("To Do", "In Progress")],
                }],
            },
            Issue {
                id: 10007,
                key: "SHOP-7".into(),
                created_fields: fields(
                    "SHOP",
                    "Story",
                    "Faster search",
                    &jira_time(10, 2, "10:00"),
                    &[],
                ),
                changes: vec![
                    Change {
                        id: 10010,
                        at: jira_time(12, 2, "10:00"),
                        items: vec![moved("To Do", "In Progress")],
                    },
                    Change {
                        id: 10110,
                        at: jira_time(5, 3, "15:00"),
                        items: vec![moved("In Progress", "Done"), done()],
                    },
                ],
            },
            Issue {
                id: 10001,
                key: "SHOP-1".into(),
                created_fields: fields("SHOP", "Story", "Old work", &jira_time(5, 1, "10:00"), &[]),
                changes: vec![Change {
                    id: 10002,
                    at: jira_time(6, 1, "10:00"),
                    items: vec![moved("To Do", "Done"), done()],
                }],
            },
            Issue {
                id: 20009,
                key: "OPS-9".into(),
                created_fields: fields(
                    "OPS",
                    "Task",
                    "Rotate keys",
                    &jira_time(6, 3, "10:00"),
                    &[],
                ),
                changes: vec![Change {
                    id: 20010,
                    at: jira_time(7, 3, "10:00"),
                    items: vec![moved("To Do", "Done"), done()],
                }],
            },
        ],
    }
}

/// Applies one change's items to `fields` (forward), as Jira does: the resolution date is the
/// time the resolution was set.
pub fn apply(fields: &mut Value, c: &Change) {
    for i in &c.items {
        let to = i["to"].as_str();
        let to_s = i["toString"].as_str();
        match i["field"].as_str().unwrap() {
            "status" => fields["status"] = status(to_s.unwrap()),
            "resolution" => {
                if let Some(id) = to {
                    fields["resolution"] = json!({"id": id, "name": to_s,
                        "self": format!("{SITE}/rest/api/3/resolution/{id}"), "description": ""});
                    fields["resolutiondate"] = json!(c.at);
                } else {
                    fields["resolution"] = Value::Null;
                    fields["resolutiondate"] = Value::Null;
                }
            }
            "summary" => fields["summary"] = json!(to_s),
            "priority" => {
                fields["priority"] = json!({"id": to, "name": to_s,
                "self": format!("{SITE}/rest/api/3/priority/{}", to.unwrap()),
                "iconUrl": format!("{SITE}/images/icons/priorities/high.svg")})
            }
            "labels" => {
                fields["labels"] = json!(to_s
                    .unwrap_or_default()
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>())
            }
            other => panic!("the scenario changes {other}"),
        }
    }
    fields["updated"] = json!(c.at);
}

fn ms(jira: &str) -> i64 {
    valuestream::model::timestamp::parse(jira)
        .unwrap()
        .timestamp_millis()
}

fn issue_object(i: &Issue, fields: &Value) -> Value {
    json!({"id": i.id.to_string(), "self": format!("{SITE}/rest/api/3/issue/{}", i.id), "key": i.key, "fields": fields})
}

/// Today's fields: every change applied.
pub fn current(i: &Issue) -> Value {
    let mut f = i.created_fields.clone();
    for c in &i.changes {
        apply(&mut f, c);
    }
    f
}

/// A Jira webhook delivery: (X-Atlassian-Webhook-Identifier, body).
pub type Hook = (String, Value);

/// The deliveries Jira sent about the SHOP issues from `SINCE` on: `jira:issue_created` with the
/// fields as created, a `jira:issue_updated` per change with the fields right after it and the
/// change as its `changelog`.
pub fn webhooks(s: &Scenario) -> Vec<Hook> {
    let since = ms("2024-03-01T00:00:00.000+0000");
    let mut out = Vec::new();
    for i in s.issues.iter().filter(|i| i.key.starts_with("SHOP-")) {
        let mut f = i.created_fields.clone();
        let created = f["created"].as_str().unwrap().to_string();
        if ms(&created) >= since {
            let mut v = fixture_json("jira/issue_created.json");
            v["timestamp"] = json!(ms(&created));
            v["issue"] = issue_object(i, &f);
            out.push((format!("hook-{}-created", i.key), v));
        }
        for c in &i.changes {
            apply(&mut f, c);
            if ms(&c.at) < since {
                continue;
            }
            let mut v = fixture_json("jira/issue_updated_done.json");
            v["timestamp"] = json!(ms(&c.at));
            v["issue"] = issue_object(i, &f);
            v["changelog"] = json!({"id": c.id.to_string(), "items": c.items});
            out.push((format!("hook-{}-{}", i.key, c.id), v));
        }
    }
    out
}

// ---------------------------------------------------------------- the fake API

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// 429 with `Retry-After: 1`.
    Limited,
    /// 429 without `Retry-After`: Atlassian's "Rate limiting" page for Jira Cloud says 429s
    /// "may be accompanied by Retry-After and X-RateLimit-Reset headers", so sometimes neither
    /// comes (here `RateLimit-Reason` only).
    LimitedBare,
    BadGateway,
    /// 200 with `issues` (or `values`) not a list.
    Garbled,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub status: u16,
    pub at: Instant,
    /// The `If-None-Match` header sent (the real API documents no conditional requests and
    /// sends no `ETag`: neither does this fake, and a backfill sends none).
    pub if_none_match: Option<String>,
}

pub struct Fake {
    pub s: Scenario,
    addr: Mutex<String>,
    pub faults: Mutex<Vec<(String, usize, Fault)>>,
    pub seen: Mutex<Vec<Seen>>,
    /// Histories an expanded changelog holds at most (Jira: 20).
    pub embedded_histories: Mutex<usize>,
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
            embedded_histories: Mutex::new(20),
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

    fn histories(&self, i: &Issue) -> Vec<Value> {
        i.changes
            .iter()
            .map(|c| {
                json!({
                    "id": c.id.to_string(),
                    "author": {"accountId": "5b10a2844c20165700ede21g", "displayName": "Mia Krystof", "active": true},
                    "created": c.at,
                    "items": c.items,
                })
            })
            .collect()
    }
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
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

/// `"2024-02-29 00:00"` compared with a Jira time, both read as UTC (the fake's user zone).
fn jql_le(date: &str, jira: &str) -> bool {
    let d = chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M")
        .unwrap()
        .and_utc();
    d <= valuestream::model::timestamp::parse(jira).unwrap()
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
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{EMAIL}:{TOKEN}"));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Basic {basic}"))
    {
        seen.status = 401;
        fake.seen.lock().unwrap().push(seen);
        return (
            StatusCode::UNAUTHORIZED,
            "Client must be authenticated to access this resource.",
        )
            .into_response();
    }
    match fault {
        Some(Fault::Limited) => {
            seen.status = 429;
            return respond(
                seen,
                StatusCode::TOO_MANY_REQUESTS,
                vec![("retry-after", "1".into())],
                json!({"errorMessages": ["Rate limit exceeded."]}),
            );
        }
        Some(Fault::LimitedBare) => {
            seen.status = 429;
            return respond(
                seen,
                StatusCode::TOO_MANY_REQUESTS,
                vec![("ratelimit-reason", "jira-quota-based".into())],
                json!({"errorMessages": ["Rate limit exceeded."]}),
            );
        }
        Some(Fault::BadGateway) => {
            seen.status = 502;
            return respond(seen, StatusCode::BAD_GATEWAY, vec![], json!("bad gateway"));
        }
        _ => {}
    }
    let q = query_pairs(&query);
    let one = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let garbled = fault == Some(Fault::Garbled);
    if path == "/rest/api/3/myself" {
        return respond(
            seen,
            StatusCode::OK,
            vec![],
            json!({"accountId": "5b10a2844c20165700ede21g",
            "emailAddress": EMAIL, "displayName": "Mia Krystof", "active": true}),
        );
    }
    if path == "/rest/api/3/status" {
        return respond(seen, StatusCode::OK, vec![], json!(statuses()));
    }
    if path == "/rest/api/3/search" {
        seen.status = 410;
        return respond(
            seen,
            StatusCode::GONE,
            vec![],
            json!({"errorMessages": [
            "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API."]}),
        );
    }
    if path == "/rest/api/3/search/jql" {
        let jql = one("jql").unwrap();
        let projects: Vec<String> = jql
            .split_once("project in (")
            .and_then(|(_, r)| r.split_once(')'))
            .map(|(l, _)| {
                l.split(',')
                    .map(|p| p.trim().trim_matches('"').to_string())
                    .collect()
            })
            .unwrap();
        let updated = jql
            .split_once("updated >= \"")
            .and_then(|(_, r)| r.split_once('"'))
            .unwrap()
            .0
            .to_string();
        assert_eq!(one("expand").as_deref(), Some("changelog"));
        let max: usize = one("maxResults").and_then(|v| v.parse().ok()).unwrap_or(50);
        let start: usize = one("nextPageToken")
            .map(|t| t.strip_prefix("tok-").unwrap().parse().unwrap())
            .unwrap_or(0);
        let cap = *fake.embedded_histories.lock().unwrap();
        let mut all: Vec<&Issue> = fake
            .s
            .issues
            .iter()
            .filter(|i| projects.iter().any(|p| i.key.starts_with(&format!("{p}-"))))
            .filter(|i| jql_le(&updated, current(i)["updated"].as_str().unwrap()))
            .collect();
        all.sort_by_key(|i| i.created_fields["created"].as_str().map(ms).unwrap_or(0));
        let issues: Vec<Value> = all
            .iter()
            .skip(start)
            .take(max)
            .map(|i| {
                let mut h = fake.histories(i);
                h.reverse(); // newest first
                let total = h.len();
                h.truncate(cap);
                let mut v = issue_object(i, &current(i));
                v["expand"] =
                    json!("operations,versionedRepresentations,editmeta,changelog,renderedFields");
                v["changelog"] =
                    json!({"startAt": 0, "maxResults": cap, "total": total, "histories": h});
                v
            })
            .collect();
        let more = start + max < all.len();
        let mut body = json!({"issues": if garbled { json!({"oops": 1}) } else { json!(issues) }, "isLast": !more});
        if more {
            body["nextPageToken"] = json!(format!("tok-{}", start + max));
        }
        return respond(seen, StatusCode::OK, vec![], body);
    }
    if let Some(key) = path
        .strip_prefix("/rest/api/3/issue/")
        .and_then(|r| r.strip_suffix("/changelog"))
    {
        let Some(i) = fake.s.issues.iter().find(|i| i.key == key) else {
            seen.status = 404;
            return respond(
                seen,
                StatusCode::NOT_FOUND,
                vec![],
                json!({"errorMessages": ["Issue does not exist or you do not have permission to see it."]}),
            );
        };
        let start: usize = one("startAt").and_then(|v| v.parse().ok()).unwrap_or(0);
        let max: usize = one("maxResults")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        let all = fake.histories(i);
        let values: Vec<Value> = all.iter().skip(start).take(max).cloned().collect();
        let body = json!({
            "self": format!("{SITE}/rest/api/3/issue/{key}/changelog?maxResults={max}&startAt={start}"),
            "maxResults": max,
            "startAt": start,
            "total": all.len(),
            "isLast": start + max >= all.len(),
            "values": if garbled { json!("oops") } else { json!(values) },
        });
        return respond(seen, StatusCode::OK, vec![], body);
    }
    seen.status = 404;
    respond(
        seen,
        StatusCode::NOT_FOUND,
        vec![],
        json!({"errorMessages": ["not found"]}),
    )
}
