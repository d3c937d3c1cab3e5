//! `valuestream backfill github` against a fake GitHub REST API started here (documented
//! response shapes: the REST objects are the objects of the webhook fixtures in
//! `tests/fixtures/github/`), with `Link` pagination, `x-ratelimit-*` headers, a primary limit
//! running out, a secondary-limit 429, a 502 and a 401.
//!
//! The core property: a scenario delivered (a) as webhooks, (b) as a backfill from the API and
//! (c) half as webhooks, the rest healed by a backfill gives the same spans (IDs, parents, links,
//! times, attributes) and the same `/metrics` series; a second backfill adds nothing.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use valuestream::backfill::{github, Client, ClientSettings, Sink, Summary};
use valuestream::engine::facts::ItemRecord;
use valuestream::engine::scope::PushFact;
use valuestream::model::FinishedSpan;
use valuestream::replay::Recorded;
use valuestream::store::embedded::EmbeddedStore;

const REPO: &str = "Codertocat/Hello-World";
const BRANCH: &str = "master";
const FEATURE: &str = "feature/vstrace-github-Hello-World-1";
const TOKEN: &str = "ghp_test_token";
const SINCE: &str = "2024-03-01T00:00:00Z";

fn t(hm: &str) -> String {
    format!("2024-03-01T{hm}:00Z")
}

fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

// ---------------------------------------------------------------- the scenario

/// A commit on the default branch: (sha, parents, author date, message).
struct C {
    sha: String,
    parents: Vec<String>,
    at: String,
    message: String,
}

/// One repository's history, as final API objects (the REST shapes) plus the commits.
struct Scenario {
    repository: Value,
    issues: Vec<Value>,
    pulls: Vec<Value>,
    /// Newest first, as `GET /commits` lists them.
    commits: Vec<C>,
    runs: Vec<Value>,
    jobs: BTreeMap<u64, Vec<Value>>,
    deployments: Vec<Value>,
    /// Newest first, as `GET /deployments/{id}/statuses` lists them.
    statuses: BTreeMap<u64, Vec<Value>>,
    /// Issues' closes and reopenings, oldest first: number → (`closed`/`reopened`, time).
    history: BTreeMap<u64, Vec<(String, String)>>,
}

fn object(rel: &str, key: &str) -> Value {
    fixture_json(rel)[key].clone()
}

/// An issue opened at 09:00 and closed by the merge at 11:05; a pull request on a branch that
/// names it, opened 10:00 and merged 11:00 as a merge commit of one branch commit; two direct
/// commits; a workflow run (with one job) on the branch head; a production deployment of the
/// merge that succeeds and one of a later direct commit that fails; a staging one still going.
fn scenario() -> Scenario {
    let repository = object("github/issues/opened.payload.json", "repository");
    let mut issue = object("github/issues/opened.payload.json", "issue");
    issue["number"] = json!(1);
    issue["title"] = json!("Checkout fails");
    issue["created_at"] = json!(t("09:00"));
    issue["updated_at"] = json!(t("11:30")); // a comment after closing
    issue["closed_at"] = json!(t("11:05"));
    issue["state"] = json!("closed");
    issue["state_reason"] = json!("completed");
    issue["labels"] = json!([{"name": "bug"}]);
    let mut incident = issue.clone();
    incident["number"] = json!(5);
    incident["id"] = json!(5555);
    incident["title"] = json!("Checkout is down");
    incident["created_at"] = json!(t("13:45"));
    incident["updated_at"] = json!(t("14:30"));
    incident["closed_at"] = json!(t("14:30"));
    incident["state"] = json!("closed");
    incident["state_reason"] = json!("completed");
    incident["labels"] = json!([{"name": "incident"}]);
    // Closed too early, reopened, closed for good.
    let history = BTreeMap::from([
        (1, vec![("closed".to_string(), t("11:05"))]),
        (
            5,
            vec![
                ("closed".to_string(), t("14:00")),
                ("reopened".to_string(), t("14:10")),
                ("closed".to_string(), t("14:30")),
            ],
        ),
    ]);

    let (head, merge, base0, d1, d2) = (sha('a'), sha('b'), sha('0'), sha('d'), sha('e'));
    let mut pr = object("github/pull_request/closed.payload.json", "pull_request");
    pr["number"] = json!(2);
    pr["title"] = json!("Fix checkout");
    pr["body"] = json!("Fixes #1");
    pr["head"]["ref"] = json!(FEATURE);
    pr["head"]["sha"] = json!(head);
    pr["base"]["ref"] = json!(BRANCH);
    pr["base"]["sha"] = json!(base0);
    pr["created_at"] = json!(t("10:00"));
    pr["updated_at"] = json!(t("11:02"));
    pr["closed_at"] = json!(t("11:00"));
    pr["merged_at"] = json!(t("11:00"));
    pr["merged"] = json!(true);
    pr["merge_commit_sha"] = json!(merge);
    pr["labels"] = json!([]);
    pr["draft"] = json!(false);
    // An old pull request the window does not reach.
    let mut old = pr.clone();
    old["number"] = json!(7);
    old["head"]["ref"] = json!("old");
    old["created_at"] = json!("2024-01-01T10:00:00Z");
    old["updated_at"] = json!("2024-01-02T10:00:00Z");
    old["closed_at"] = json!("2024-01-02T10:00:00Z");
    old["merged_at"] = json!("2024-01-02T10:00:00Z");
    old["merge_commit_sha"] = json!(sha('7'));

    let commits = vec![
        C {
            sha: d2.clone(),
            parents: vec![d1.clone()],
            at: t("13:00"),
            message: "Tune the cache".into(),
        },
        C {
            sha: d1.clone(),
            parents: vec![merge.clone()],
            at: t("11:30"),
            message: "Bump the version".into(),
        },
        C {
            sha: merge.clone(),
            parents: vec![base0.clone(), head.clone()],
            at: t("11:00"),
            message: format!("Merge pull request #2 from Codertocat/{FEATURE}\n\nFix checkout"),
        },
        C {
            sha: head.clone(),
            parents: vec![base0.clone()],
            at: t("09:40"),
            message: "Fix checkout".into(),
        },
    ];

    let mut run = object("github/workflow_run/completed.payload.json", "workflow_run");
    run["id"] = json!(100);
    run["name"] = json!("CI");
    run["head_branch"] = json!(FEATURE);
    run["head_sha"] = json!(head);
    run["event"] = json!("pull_request");
    run["run_attempt"] = json!(1);
    run["created_at"] = json!(t("10:05"));
    run["run_started_at"] = json!(t("10:06"));
    run["updated_at"] = json!(t("10:15"));
    run["status"] = json!("completed");
    run["conclusion"] = json!("success");
    run["repository"] = repository.clone();
    run["head_repository"] = repository.clone();
    let mut job = object(
        "github/workflow_job/completed.success.with-organization.payload.json",
        "workflow_job",
    );
    job["id"] = json!(200);
    job["run_id"] = json!(100);
    job["run_attempt"] = json!(1);
    job["name"] = json!("test");
    job["workflow_name"] = json!("CI");
    job["head_branch"] = json!(FEATURE);
    job["head_sha"] = json!(head);
    job["created_at"] = json!(t("10:05"));
    job["started_at"] = json!(t("10:06"));
    job["completed_at"] = json!(t("10:14"));
    job["status"] = json!("completed");
    job["conclusion"] = json!("success");

    let dep = |id: u64, sha: &str, env: &str, at: &str| {
        let mut d = object("github/deployment/payload.json", "deployment");
        d["id"] = json!(id);
        d["sha"] = json!(sha);
        d["ref"] = json!(BRANCH);
        d["environment"] = json!(env);
        d["original_environment"] = json!(env);
        d["created_at"] = json!(at);
        d["updated_at"] = json!(at);
        d
    };
    let status = |id: u64, state: &str, at: &str| {
        let mut s = object("github/deployment_status/payload.json", "deployment_status");
        s["id"] = json!(id);
        s["state"] = json!(state);
        s["created_at"] = json!(at);
        s["updated_at"] = json!(at);
        s["description"] = json!(format!("{state} at {at}"));
        s
    };
    let deployments = vec![
        dep(303, &d2, "staging", &t("13:20")),
        dep(302, &d2, "production", &t("13:30")),
        dep(301, &merge, "production", &t("12:00")),
    ];
    let mut statuses = BTreeMap::new();
    statuses.insert(
        301,
        vec![
            status(3012, "success", &t("12:05")),
            status(3011, "in_progress", &t("12:01")),
        ],
    );
    statuses.insert(302, vec![status(3021, "failure", &t("13:40"))]);
    statuses.insert(303, vec![status(3031, "in_progress", &t("13:21"))]);

    Scenario {
        repository,
        issues: vec![issue, incident],
        pulls: vec![pr, old],
        commits,
        runs: vec![run],
        jobs: BTreeMap::from([(100, vec![job])]),
        deployments,
        statuses,
        history,
    }
}

/// One webhook delivery: (event, delivery ID, body).
type Hook = (String, String, Value);

/// The webhooks GitHub sent for the scenario, written from the webhook fixtures: each carries
/// the object as it was at that moment, and the whole webhook `repository` and `sender`.
fn webhooks(s: &Scenario) -> Vec<Hook> {
    let mut out: Vec<Hook> = Vec::new();
    let mut n = 0;
    let mut hook = |event: &str, body: Value| {
        n += 1;
        out.push((event.to_string(), format!("hook-{n}"), body));
    };
    let base = |rel: &str| fixture_json(rel);
    for i in &s.issues {
        let mut v = base("github/issues/opened.payload.json");
        let mut opened = i.clone();
        opened["state"] = json!("open");
        opened["closed_at"] = Value::Null;
        opened["state_reason"] = Value::Null;
        opened["updated_at"] = i["created_at"].clone();
        v["issue"] = opened;
        hook("issues", v.clone());
        let turns = &s.history[&i["number"].as_u64().unwrap()];
        if turns.iter().any(|(a, _)| a == "reopened") {
            for (action, at) in turns {
                let mut then = i.clone();
                then["updated_at"] = json!(at);
                if action == "closed" {
                    then["state"] = json!("closed");
                    then["closed_at"] = json!(at);
                    then["state_reason"] = json!("completed");
                } else {
                    then["state"] = json!("open");
                    then["closed_at"] = Value::Null;
                    then["state_reason"] = json!("reopened");
                }
                v["action"] = json!(action);
                v["issue"] = then;
                hook("issues", v.clone());
            }
        } else if !i["closed_at"].is_null() {
            let mut closed = i.clone();
            closed["updated_at"] = i["closed_at"].clone();
            v["action"] = json!("closed");
            v["issue"] = closed;
            hook("issues", v);
        }
    }
    for p in s.pulls.iter().filter(|p| p["number"] == 2) {
        let mut v = base("github/pull_request/opened.payload.json");
        let mut opened = p.clone();
        opened["state"] = json!("open");
        opened["merged"] = json!(false);
        opened["merged_at"] = Value::Null;
        opened["closed_at"] = Value::Null;
        opened["merge_commit_sha"] = Value::Null;
        opened["updated_at"] = p["created_at"].clone();
        v["action"] = json!("opened");
        v["pull_request"] = opened;
        hook("pull_request", v);
        let mut v = base("github/pull_request/closed.payload.json");
        let mut closed = p.clone();
        closed["updated_at"] = p["closed_at"].clone();
        v["pull_request"] = closed;
        hook("pull_request", v);
    }
    // Pushes to the default branch: the merge (with the branch's commit), then each direct one.
    let by_sha: HashMap<&str, &C> = s.commits.iter().map(|c| (c.sha.as_str(), c)).collect();
    let push = |after: &C, with: &[&C]| {
        let mut v = base("github/push/payload.json");
        v["ref"] = json!(format!("refs/heads/{BRANCH}"));
        v["before"] = json!(after.parents[0]);
        v["after"] = json!(after.sha);
        v["deleted"] = json!(false);
        v["commits"] = json!(with
            .iter()
            .map(
                |c| json!({"id": c.sha, "message": c.message, "timestamp": c.at, "distinct": true})
            )
            .collect::<Vec<_>>());
        v["head_commit"] = v["commits"].as_array().unwrap().last().cloned().unwrap();
        v
    };
    let merge = by_sha[sha('b').as_str()];
    let head = by_sha[sha('a').as_str()];
    hook("push", push(merge, &[head, merge]));
    hook(
        "push",
        push(by_sha[sha('d').as_str()], &[by_sha[sha('d').as_str()]]),
    );
    hook(
        "push",
        push(by_sha[sha('e').as_str()], &[by_sha[sha('e').as_str()]]),
    );
    for r in &s.runs {
        let mut v = base("github/workflow_run/requested.payload.json");
        let mut requested = r.clone();
        requested["status"] = json!("queued");
        requested["conclusion"] = Value::Null;
        requested["updated_at"] = r["created_at"].clone();
        v["workflow_run"] = requested;
        hook("workflow_run", v);
        let mut v = base("github/workflow_run/completed.payload.json");
        v["workflow_run"] = r.clone();
        hook("workflow_run", v);
        for j in &s.jobs[&r["id"].as_u64().unwrap()] {
            let mut v = base("github/workflow_job/in_progress.payload.json");
            let mut started = j.clone();
            started["status"] = json!("in_progress");
            started["conclusion"] = Value::Null;
            started["completed_at"] = Value::Null;
            v["workflow_job"] = started;
            hook("workflow_job", v);
            let mut v =
                base("github/workflow_job/completed.success.with-organization.payload.json");
            v["workflow_job"] = j.clone();
            hook("workflow_job", v);
        }
    }
    for d in &s.deployments {
        let mut v = base("github/deployment/payload.json");
        v["deployment"] = d.clone();
        hook("deployment", v);
        let mut statuses = s.statuses[&d["id"].as_u64().unwrap()].clone();
        statuses.reverse();
        for st in statuses {
            let mut v = base("github/deployment_status/payload.json");
            v["deployment"] = d.clone();
            v["deployment_status"] = st;
            hook("deployment_status", v);
        }
    }
    // Every webhook names the scenario's repository (the fixtures name several).
    for (_, _, body) in out.iter_mut() {
        body["repository"] = s.repository.clone();
    }
    out
}

// ---------------------------------------------------------------- the fake GitHub API

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// 200 with `x-ratelimit-remaining: 0` and the reset two seconds ahead.
    Exhausted,
    /// 429 with `retry-after: 1`.
    Secondary,
    BadGateway,
}

/// One request the fake saw.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    query: String,
    status: u16,
    at: Instant,
    /// For an exhausted answer: when its reset is due.
    reset_at: Option<Instant>,
}

struct Fake {
    s: Scenario,
    token: String,
    addr: Mutex<String>,
    /// (path suffix, nth matching request (1-based), fault).
    faults: Mutex<Vec<(String, usize, Fault)>>,
    seen: Mutex<Vec<Seen>>,
    /// At most this many runs in one filtered list (GitHub: 1,000), and the last list's total.
    run_cap: Mutex<usize>,
    run_total: Mutex<usize>,
}

impl Fake {
    async fn start(s: Scenario, faults: Vec<(&str, usize, Fault)>) -> Arc<Fake> {
        let fake = Arc::new(Fake {
            s,
            token: TOKEN.into(),
            addr: Mutex::new(String::new()),
            faults: Mutex::new(
                faults
                    .into_iter()
                    .map(|(p, n, f)| (p.to_string(), n, f))
                    .collect(),
            ),
            seen: Mutex::new(Vec::new()),
            run_cap: Mutex::new(1000),
            run_total: Mutex::new(0),
        });
        let app = Router::new().fallback(serve).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *fake.addr.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    fn url(&self) -> String {
        self.addr.lock().unwrap().clone()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, path_suffix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.ends_with(path_suffix))
            .count()
    }

    fn commit(&self, c: &C) -> Value {
        json!({
            "sha": c.sha,
            "node_id": "C_x",
            "commit": {
                "author": {"name": "Codertocat", "email": "c@example.com", "date": c.at},
                "committer": {"name": "GitHub", "email": "noreply@github.com", "date": c.at},
                "message": c.message,
                "tree": {"sha": sha('f'), "url": "https://api.github.com/t"},
                "comment_count": 0,
            },
            "url": format!("https://api.github.com/repos/{REPO}/commits/{}", c.sha),
            "html_url": format!("https://github.com/{REPO}/commit/{}", c.sha),
            "parents": c.parents.iter().map(|p| json!({"sha": p, "url": "u"})).collect::<Vec<_>>(),
        })
    }

    /// The full list a path names, or None (404).
    fn list(
        &self,
        path: &str,
        q: &HashMap<String, String>,
    ) -> Option<(Vec<Value>, Option<&'static str>)> {
        let base = format!("/repos/{REPO}");
        let rest = path.strip_prefix(&base)?;
        let since = q.get("since").cloned();
        let after_since = |v: &Value, k: &str| {
            since
                .as_deref()
                .is_none_or(|s| v[k].as_str().unwrap_or_default() >= s)
        };
        Some(match rest {
            "/issues" => {
                // The issues list holds pull requests too (with a `pull_request` key).
                let mut all: Vec<Value> = self.s.issues.clone();
                for p in &self.s.pulls {
                    let mut as_issue = p.clone();
                    as_issue["pull_request"] = json!({"url": p["url"]});
                    all.push(as_issue);
                }
                all.retain(|v| after_since(v, "updated_at"));
                all.sort_by_key(|v| v["updated_at"].as_str().unwrap().to_string());
                (all, None)
            }
            "/pulls" => {
                let mut all = self.s.pulls.clone();
                all.sort_by_key(|v| {
                    std::cmp::Reverse(v["updated_at"].as_str().unwrap().to_string())
                });
                (all, None)
            }
            "/commits" => {
                assert_eq!(q.get("sha").map(String::as_str), Some(BRANCH));
                let all = self
                    .s
                    .commits
                    .iter()
                    .filter(|c| since.as_deref().is_none_or(|s| c.at.as_str() >= s))
                    .map(|c| self.commit(c))
                    .collect();
                (all, None)
            }
            "/issues/events" => {
                // Newest first; a pull request's events carry `issue.pull_request`.
                let mut all = Vec::new();
                let mut id = 0;
                let mut event = |kind: &str, at: &str, issue: &Value| {
                    id += 1;
                    json!({
                        "id": id,
                        "node_id": format!("IE_{id}"),
                        "url": format!("https://api.github.com/repos/{REPO}/issues/events/{id}"),
                        "actor": {"login": "Codertocat", "id": 21031067, "type": "User"},
                        "event": kind,
                        "commit_id": null,
                        "commit_url": null,
                        "created_at": at,
                        "state_reason": if kind == "closed" { json!("completed") } else { Value::Null },
                        "issue": issue,
                    })
                };
                for i in &self.s.issues {
                    all.push(event("labeled", i["created_at"].as_str().unwrap(), i));
                    for (kind, at) in &self.s.history[&i["number"].as_u64().unwrap()] {
                        all.push(event(kind, at, i));
                    }
                }
                for p in &self.s.pulls {
                    let mut as_issue = p.clone();
                    as_issue["pull_request"] = json!({"url": p["url"]});
                    all.push(event("closed", p["closed_at"].as_str().unwrap(), &as_issue));
                }
                all.sort_by_key(|e| {
                    std::cmp::Reverse(e["created_at"].as_str().unwrap().to_string())
                });
                (all, None)
            }
            "/actions/runs" => {
                // created=A..B (both included), cut at the API's cap like GitHub's 1,000.
                let created = q.get("created").cloned().unwrap_or_default();
                let (from, to) = created.split_once("..").unwrap_or((created.as_str(), ""));
                let mut runs: Vec<Value> = self
                    .s
                    .runs
                    .iter()
                    .filter(|r| {
                        let c = r["created_at"].as_str().unwrap();
                        c >= from && (to.is_empty() || c <= to)
                    })
                    .cloned()
                    .collect();
                let total = runs.len();
                runs.truncate(*self.run_cap.lock().unwrap());
                *self.run_total.lock().unwrap() = total;
                (runs, Some("workflow_runs"))
            }
            "/deployments" => (self.s.deployments.clone(), None),
            _ => {
                let parts: Vec<&str> = rest.split('/').collect();
                match parts[..] {
                    ["", "actions", "runs", id, "jobs"] => (
                        self.s
                            .jobs
                            .get(&id.parse::<u64>().ok()?)
                            .cloned()
                            .unwrap_or_default(),
                        Some("jobs"),
                    ),
                    ["", "deployments", id, "statuses"] => (
                        self.s.statuses.get(&id.parse::<u64>().ok()?).cloned()?,
                        None,
                    ),
                    _ => return None,
                }
            }
        })
    }
}

fn query_map(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned(),
            )
        })
        .collect()
}

async fn serve(State(fake): State<Arc<Fake>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let now = Instant::now();
    let epoch = chrono::Utc::now().timestamp();
    let mut seen = Seen {
        path: path.clone(),
        query: query.clone(),
        status: 200,
        at: now,
        reset_at: None,
    };
    let fault = {
        let seen_before = fake.seen.lock().unwrap();
        let faults = fake.faults.lock().unwrap();
        faults.iter().find_map(|(suffix, nth, f)| {
            let hits = seen_before
                .iter()
                .filter(|s| s.path.ends_with(suffix.as_str()))
                .count();
            (path.ends_with(suffix.as_str()) && hits + 1 == *nth).then_some(*f)
        })
    };
    let respond = |fake: &Fake, seen: Seen, resp: Response| {
        fake.seen.lock().unwrap().push(seen);
        resp
    };
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {}", fake.token))
    {
        seen.status = 401;
        return respond(
            &fake,
            seen,
            (
                StatusCode::UNAUTHORIZED,
                [("content-type", "application/json")],
                r#"{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}"#,
            )
                .into_response(),
        );
    }
    match fault {
        Some(Fault::Secondary) => {
            seen.status = 429;
            return respond(
                &fake,
                seen,
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1"), ("content-type", "application/json")],
                    r#"{"message":"You have exceeded a secondary rate limit."}"#,
                )
                    .into_response(),
            );
        }
        Some(Fault::BadGateway) => {
            seen.status = 502;
            return respond(
                &fake,
                seen,
                (StatusCode::BAD_GATEWAY, "bad gateway").into_response(),
            );
        }
        _ => {}
    }
    let q = query_map(&query);
    let (body, link) = if path == format!("/repos/{REPO}") {
        let mut r = fake.s.repository.clone();
        r["topics"] = json!([]);
        (r, None)
    } else if path == "/orgs/Codertocat/repos" {
        let mut archived = fake.s.repository.clone();
        archived["full_name"] = json!("Codertocat/Old");
        archived["archived"] = json!(true);
        (json!([fake.s.repository, archived]), None)
    } else if path == "/rate_limit" {
        (
            json!({"resources": {"core": {"limit": 5000, "remaining": 4999}}}),
            None,
        )
    } else {
        let Some((all, wrap)) = fake.list(&path, &q) else {
            seen.status = 404;
            return respond(
                &fake,
                seen,
                (StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#).into_response(),
            );
        };
        let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30);
        let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let items: Vec<Value> = all
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .cloned()
            .collect();
        let link = (page * per_page < all.len()).then(|| {
            let mut kept: Vec<String> = query
                .split('&')
                .filter(|kv| !kv.starts_with("page=") && !kv.is_empty())
                .map(str::to_string)
                .collect();
            kept.push(format!("page={}", page + 1));
            let last = all.len().div_ceil(per_page);
            let mut last_q = kept.clone();
            *last_q.last_mut().unwrap() = format!("page={last}");
            format!(
                "<{}{path}?{}>; rel=\"next\", <{}{path}?{}>; rel=\"last\"",
                fake.url(),
                kept.join("&"),
                fake.url(),
                last_q.join("&")
            )
        });
        let total = if wrap == Some("workflow_runs") {
            *fake.run_total.lock().unwrap()
        } else {
            all.len()
        };
        let body = match wrap {
            Some(k) => json!({"total_count": total, k: items}),
            None => Value::Array(items),
        };
        (body, link)
    };
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
    if fault == Some(Fault::Exhausted) {
        let reset = epoch + 2;
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
        let until_ms = reset * 1000 - chrono::Utc::now().timestamp_millis();
        seen.reset_at = Some(now + Duration::from_millis(until_ms.max(0) as u64));
    } else {
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("4000"));
        h.insert(
            "x-ratelimit-reset",
            (epoch + 3600).to_string().parse().unwrap(),
        );
    }
    if let Some(l) = link {
        h.insert("link", l.parse().unwrap());
    }
    respond(&fake, seen, resp)
}

// ---------------------------------------------------------------- driving the pipeline

/// The router as a backfill's sink: every synthesized delivery signed with the configured
/// secret, as `replay` signs unsigned ones, and posted through the real router.
struct RouterSink<'a>(&'a App);

#[async_trait::async_trait]
impl Sink for RouterSink<'_> {
    async fn deliver(&self, d: &Recorded) -> anyhow::Result<(u16, String)> {
        let sig = github_signature(&d.body);
        let mut headers: Vec<(&str, &str)> = d
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers.push(("x-hub-signature-256", &sig));
        headers.push(("content-type", "application/json"));
        let (status, v) = self.0.post(&d.source, &headers, d.body.clone()).await;
        Ok((status.as_u16(), v.to_string()))
    }
}

fn client(url: &str, token: &str, page_size: u32) -> Arc<Client> {
    let mut settings = ClientSettings::new(url, token.into(), github::TOKEN_VAR);
    settings.page_size = page_size;
    settings.concurrency = 2;
    settings.backoff = Duration::from_millis(50);
    Client::new(settings).unwrap()
}

fn options() -> github::Options {
    github::Options::new(vec![REPO.into()], SINCE.parse().unwrap(), None)
}

async fn backfill(app: &App, client: &Arc<Client>) -> anyhow::Result<Summary> {
    github::run(client, &options(), &RouterSink(app)).await
}

async fn new_app() -> App {
    new_app_on(Arc::new(EmbeddedStore::in_memory().unwrap())).await
}

async fn new_app_on(store: Arc<EmbeddedStore>) -> App {
    let app = app_with(store, test_config(&[])).await;
    // Everything is settled once, at the end: the order of arrival decides nothing.
    app.set_auto_drain(false);
    app
}

/// Every item's facts (their content hashes, without the delivery tags) and every push.
fn facts(store: &EmbeddedStore) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for r in dump(store) {
        if r.key.pk.starts_with("item#") {
            let rec: ItemRecord = r.data.decode().unwrap();
            let mut hashes: Vec<String> = rec.facts.iter().map(|f| f.hash.clone()).collect();
            hashes.sort();
            out.insert(r.key.pk, hashes);
        } else if r.key.sk.starts_with("p#") {
            let mut p: PushFact = r.data.decode().unwrap();
            p.deliveries.clear();
            out.insert(format!("{} {}", r.key.pk, r.key.sk), vec![format!("{p:?}")]);
        }
    }
    out
}

async fn post_hooks(app: &App, hooks: &[Hook]) {
    for (event, id, body) in hooks {
        let (status, v) = app
            .github(event, id, serde_json::to_vec(body).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK, "{event} {id}: {v}");
        assert_ne!(v["status"], "ignored", "{event} {id}: {v}");
    }
}

/// What a run exported: its spans by ID, and the `/metrics` lines.
#[derive(Debug, PartialEq)]
struct Result {
    spans: BTreeMap<String, FinishedSpan>,
    metrics: Vec<String>,
}

async fn settle(app: &App, spans: &mut BTreeMap<String, FinishedSpan>) -> Result {
    let d = app.pipeline.drain_all().await.unwrap();
    for s in d.settled {
        assert!(
            spans.insert(s.span_id.clone(), s.clone()).is_none(),
            "span {} exported twice",
            s.name
        );
    }
    let (status, text) = app.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let mut metrics: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    metrics.sort();
    Result {
        spans: spans.clone(),
        metrics,
    }
}

fn diff(a: &Result, b: &Result) -> String {
    let mut out = Vec::new();
    for (id, s) in &a.spans {
        match b.spans.get(id) {
            None => out.push(format!("span {} ({id}) missing", s.name)),
            Some(o) if o != s => out.push(format!("span {} differs:\n  {s:?}\n  {o:?}", s.name)),
            _ => {}
        }
    }
    for (id, s) in &b.spans {
        if !a.spans.contains_key(id) {
            out.push(format!("extra span {} ({id}): {s:?}", s.name));
        }
    }
    for l in &a.metrics {
        if !b.metrics.contains(l) {
            out.push(format!("metric line missing: {l}"));
        }
    }
    for l in &b.metrics {
        if !a.metrics.contains(l) {
            out.push(format!("extra metric line: {l}"));
        }
    }
    out.join("\n")
}

async fn webhooks_only() -> Result {
    let app = new_app().await;
    post_hooks(&app, &webhooks(&scenario())).await;
    settle(&app, &mut BTreeMap::new()).await
}

// ---------------------------------------------------------------- the tests

#[tokio::test]
async fn webhooks_backfill_and_webhooks_healed_by_backfill_give_the_same_spans_and_series() {
    let hooks_store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(hooks_store.clone()).await;
    post_hooks(&app, &webhooks(&scenario())).await;
    let reference = settle(&app, &mut BTreeMap::new()).await;
    let names: Vec<&str> = reference.spans.values().map(|s| s.name.as_str()).collect();
    for want in [
        "ISSUE #1",
        "PR #2",
        "RUN CI",
        "JOB test",
        "DEPLOY production",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} in {names:?}"
        );
    }
    assert!(
        reference.metrics.iter().any(|l| l.contains("lead_time"))
            && reference.metrics.iter().any(|l| l.contains("deployments")),
        "{:#?}",
        reference.metrics
    );
    // The PR is the issue's child; the production deployment of its merge continues it.
    let span = |r: &Result, p: &str| {
        r.spans
            .values()
            .find(|s| s.name.starts_with(p))
            .unwrap_or_else(|| panic!("{p}"))
            .clone()
    };
    let (issue, pr) = (span(&reference, "ISSUE #1"), span(&reference, "PR #2"));
    assert_eq!(pr.parent_span_id.as_deref(), Some(issue.span_id.as_str()));
    assert_eq!(pr.trace_id, issue.trace_id);

    // (b) backfill only, small pages.
    let fake = Fake::start(scenario(), vec![]).await;
    let backfill_store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(backfill_store.clone()).await;
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 2))
        .await
        .unwrap();
    let only = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(
        reference,
        only,
        "backfill only:\n{}",
        diff(&reference, &only)
    );
    // Not only the same spans and series: the very same facts (an "opened" delivery carries
    // the object as it was opened), and the same pushes.
    assert_eq!(facts(&hooks_store), facts(&backfill_store));
    assert_eq!(summary.duplicate, 0, "{summary:?}");
    assert_eq!(summary.processed, summary.deliveries());
    assert_eq!(summary.refused + summary.ignored, 0, "{summary:?}");
    assert_eq!(
        summary.items["pull_requests"], 1,
        "the old PR is outside the window"
    );
    assert_eq!(summary.items["issues"], 2);
    assert_eq!(summary.items["commits"], 4);
    eprintln!("{}", summary.lines());

    // (c) every other webhook, then the backfill heals the rest.
    let hooks = webhooks(&scenario());
    let half: Vec<Hook> = hooks.iter().step_by(2).cloned().collect();
    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    post_hooks(&app, &half).await;
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    let mixed = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(
        reference,
        mixed,
        "half webhooks, then backfill:\n{}",
        diff(&reference, &mixed)
    );
    // The webhooks' facts come again under the backfill's delivery IDs: processed, no new span.
    assert_eq!(summary.duplicate, 0, "{summary:?}");
    assert!(summary.unchanged >= half.len() as u64, "{summary:?}");
    assert!(summary.unchanged < summary.processed, "{summary:?}");

    // (d) the backfill first, then every webhook arrives late: nothing new.
    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    post_hooks(&app, &hooks).await;
    let late = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(
        reference,
        late,
        "backfill, then webhooks:\n{}",
        diff(&reference, &late)
    );
}

#[tokio::test]
async fn a_second_backfill_adds_nothing() {
    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    let mut spans = BTreeMap::new();
    let first = backfill(&app, &client(&fake.url(), TOKEN, 3))
        .await
        .unwrap();
    let once = settle(&app, &mut spans).await;
    assert!(first.processed > 10, "{first:?}");
    let second = backfill(&app, &client(&fake.url(), TOKEN, 3))
        .await
        .unwrap();
    assert_eq!(second.deliveries(), first.deliveries());
    assert_eq!(
        (second.duplicate, second.processed),
        (first.deliveries(), 0),
        "every delivery is answered duplicate: {second:?}"
    );
    // settle panics on a span exported twice; the series are unchanged.
    let twice = settle(&app, &mut spans).await;
    assert_eq!(once, twice, "{}", diff(&once, &twice));
}

#[tokio::test]
async fn pages_rate_limits_secondary_limits_and_5xx_are_followed() {
    let faults = vec![
        ("/pulls", 1, Fault::BadGateway),
        ("/issues", 2, Fault::Exhausted),
        ("/commits", 2, Fault::Secondary),
    ];
    let fake = Fake::start(scenario(), faults).await;
    let app = new_app().await;
    let started = Instant::now();
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 1))
        .await
        .unwrap();
    let seen = fake.seen();
    let reference = webhooks_only().await;
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));

    // Pagination: per_page on every list, one request per page (page size 1).
    for s in seen.iter().filter(|s| s.path != format!("/repos/{REPO}")) {
        assert!(s.query.contains("per_page=1"), "{s:?}");
    }
    let pages = |suffix: &str| {
        seen.iter()
            .filter(|s| s.path.ends_with(suffix) && s.status == 200)
            .count()
    };
    // 3 issues and pull requests updated since --since (2 issues + PR #2), one page each, and the
    // last page has no next link.
    assert_eq!(pages("/issues"), 3, "{seen:#?}");
    assert_eq!(pages("/commits"), 4);
    assert_eq!(pages("/deployments"), 3);
    // Newest updates first: the PR list stops at the first page before --since (PR #7).
    assert_eq!(pages("/pulls"), 2);

    // The 502 was retried once.
    assert_eq!(fake.count("/pulls"), 3);
    assert_eq!(seen.iter().filter(|s| s.status == 502).count(), 1);
    // The secondary limit: the same page again, a second or more later.
    let commits: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.ends_with("/commits"))
        .collect();
    assert_eq!(commits[1].status, 429);
    assert_eq!(commits[1].query, commits[2].query);
    assert!(commits[2].at - commits[1].at >= Duration::from_millis(950));
    // The primary limit ran out: no new request until its reset (the one other request the
    // concurrency of 2 allows may have been under way already).
    let (i, exhausted) = seen
        .iter()
        .enumerate()
        .find(|(_, s)| s.reset_at.is_some())
        .unwrap();
    let reset = exhausted.reset_at.unwrap();
    let early: Vec<&Seen> = seen[i + 1..]
        .iter()
        .filter(|later| later.at + Duration::from_millis(20) < reset)
        .collect();
    assert!(early.len() <= 1, "requests before the reset: {early:#?}");
    assert!(seen[i + 1..].iter().any(|later| later.at >= reset));
    assert!(summary.waited_secs >= 1.0, "{summary:?}");
    assert_eq!(summary.requests as usize, seen.len());
    assert_eq!(summary.retries, 1);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_refused_token_is_an_error_naming_github_token_and_writes_nothing() {
    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let err = backfill(&app, &client(&fake.url(), "wrong", 100))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("GITHUB_TOKEN") && err.contains("401"), "{err}");
    assert_eq!(fake.seen().len(), 1, "the first 401 stops the backfill");
    assert!(dump(&store).is_empty(), "nothing written");
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert!(got.spans.is_empty());
}

#[tokio::test]
async fn an_answer_that_does_not_parse_names_the_endpoint_and_the_field() {
    let mut s = scenario();
    s.pulls[0].as_object_mut().unwrap().remove("head");
    let fake = Fake::start(s, vec![]).await;
    let app = new_app().await;
    let err = format!(
        "{:#}",
        backfill(&app, &client(&fake.url(), TOKEN, 100))
            .await
            .unwrap_err()
    );
    assert!(err.contains("/pulls") && err.contains("head.ref"), "{err}");
    // Nothing of the repository was delivered: it is read whole before anything is sent.
    assert!(settle(&app, &mut BTreeMap::new()).await.spans.is_empty());
}

/// What the API cannot say: a push to a feature branch (where the branch's first commit, and so
/// the lead time's start, can come from). A backfill alone starts the change's lead time when
/// the pull request was opened; the feature-branch push webhook, when it comes, moves it to the
/// first commit, exactly as in a webhooks-only run.
#[tokio::test]
async fn feature_branch_pushes_are_webhook_only() {
    let branch_push = {
        let mut v = fixture_json("github/push/payload.json");
        v["ref"] = json!(format!("refs/heads/{FEATURE}"));
        v["before"] = json!(sha('0'));
        v["after"] = json!(sha('a'));
        v["deleted"] = json!(false);
        v["commits"] = json!([{"id": sha('a'), "message": "Fix checkout", "timestamp": t("09:40"), "distinct": true}]);
        v["repository"] = scenario().repository;
        ("push".to_string(), "hook-branch".to_string(), v)
    };
    let mut hooks = webhooks(&scenario());
    hooks.push(branch_push.clone());
    let app = new_app().await;
    post_hooks(&app, &hooks).await;
    let with_branch = settle(&app, &mut BTreeMap::new()).await;

    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    let only = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(only, webhooks_only().await);
    assert!(!only.metrics.is_empty());
    assert_ne!(
        only.metrics, with_branch.metrics,
        "the branch's first commit (09:40, before the PR opened at 10:00) moves the lead time"
    );

    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    post_hooks(&app, std::slice::from_ref(&branch_push)).await;
    let healed = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(with_branch, healed, "{}", diff(&with_branch, &healed));
}

// ---------------------------------------------------------------- the command line

fn cli(args: &[&str], token: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_valuestream"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("VALUESTREAM_") || k.starts_with("OTEL_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("GITHUB_TOKEN");
    if let Some(t) = token {
        cmd.env("GITHUB_TOKEN", t);
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn the_command_needs_github_token_before_anything_is_written() {
    let fake = Fake::start(scenario(), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    let url = fake.url();
    let args = [
        "backfill",
        "github",
        "--repo",
        REPO,
        "--since",
        SINCE,
        "--api-url",
        &url,
        "--data-dir",
        data,
    ];
    let out = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), None)
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("GITHUB_TOKEN is not set"), "{stderr}");
    assert!(fake.seen().is_empty(), "no request without a token");
    assert!(!std::path::Path::new(data).exists(), "no store opened");

    let out = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || {
            cli(
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
                Some("wrong"),
            )
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("GITHUB_TOKEN") && stderr.contains("401"),
        "{stderr}"
    );
    assert!(!std::path::Path::new(data).exists(), "no store opened");
}

#[tokio::test]
async fn the_command_writes_the_store_once() {
    let fake = Fake::start(scenario(), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap().to_string();
    let url = fake.url();
    let run = || {
        let args: Vec<String> = [
            "backfill",
            "github",
            "--repo",
            REPO,
            "--since",
            SINCE,
            "--api-url",
            &url,
            "--data-dir",
            &data,
            "--page-size",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        tokio::task::spawn_blocking(move || {
            cli(
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
                Some(TOKEN),
            )
        })
    };
    let first = run().await.unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&first.stdout).into_owned(),
        String::from_utf8_lossy(&first.stderr).into_owned(),
    );
    assert!(first.status.success(), "{out}\n{err}");
    assert!(out.contains("0 duplicate"), "{out}");
    assert!(
        err.contains("pull requests: page 1"),
        "progress lines: {err}"
    );
    assert!(out.contains("API requests"), "{out}");
    let second = run().await.unwrap();
    let out2 = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{out2}");
    assert!(
        out2.contains(": 0 new (0 of them changed no span), 22 duplicate,"),
        "{out2}"
    );
}

#[tokio::test]
async fn the_same_result_on_dynamodb() {
    let reference = webhooks_only().await;
    let moto = common::moto::Moto::start().await;

    let fake = Fake::start(scenario(), vec![]).await;
    let app = app_with(Arc::new(moto.store().await), test_config(&[])).await;
    app.set_auto_drain(false);
    backfill(&app, &client(&fake.url(), TOKEN, 2))
        .await
        .unwrap();
    let only = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(
        reference,
        only,
        "backfill on DynamoDB:\n{}",
        diff(&reference, &only)
    );

    let hooks = webhooks(&scenario());
    let half: Vec<Hook> = hooks.iter().skip(1).step_by(2).cloned().collect();
    let app = app_with(Arc::new(moto.store().await), test_config(&[])).await;
    app.set_auto_drain(false);
    post_hooks(&app, &half).await;
    backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    let mut spans = BTreeMap::new();
    let mixed = settle(&app, &mut spans).await;
    assert_eq!(
        reference,
        mixed,
        "mixed on DynamoDB:\n{}",
        diff(&reference, &mixed)
    );
    let second = backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    assert_eq!(second.duplicate, second.deliveries(), "{second:?}");
    assert_eq!(mixed, settle(&app, &mut spans).await);
}

/// `--to URL`: the deliveries go to a running instance, signed with the configured secret.
#[tokio::test]
async fn the_command_posts_to_a_running_instance() {
    let reference = webhooks_only().await;
    let app = new_app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app.router.clone()).into_future());
    let fake = Fake::start(scenario(), vec![]).await;
    let url = fake.url();
    let args: Vec<String> = [
        "backfill",
        "github",
        "--repo",
        REPO,
        "--since",
        SINCE,
        "--api-url",
        &url,
        "--to",
        &to,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_valuestream"));
        cmd.args(&args);
        for (k, _) in std::env::vars() {
            if k.starts_with("VALUESTREAM_") || k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("GITHUB_TOKEN", TOKEN)
            .env("VALUESTREAM_GITHUB_SECRET", GITHUB_SECRET)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("deliveries 22: 22 new"), "{stdout}");
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
}

/// API requests per pull request on a repository of many: lists cost one request per page of
/// 100 (pull requests are listed by `/pulls` and, as issues, by `/issues`).
#[tokio::test]
async fn requests_per_pull_request() {
    const N: u64 = 200;
    let mut s = scenario();
    let template = s.pulls[0].clone();
    s.pulls.clear();
    s.issues.clear();
    s.runs.clear();
    s.jobs.clear();
    s.deployments.clear();
    s.statuses.clear();
    for n in 0..N {
        let mut pr = template.clone();
        pr["number"] = json!(100 + n);
        pr["id"] = json!(100 + n);
        pr["head"]["ref"] = json!(format!("feature-{n}"));
        pr["head"]["sha"] = json!(format!("{:040x}", n + 1));
        pr["merge_commit_sha"] = json!(format!("{:040x}", 1_000_000 + n));
        pr["body"] = json!("");
        s.pulls.push(pr);
    }
    let fake = Fake::start(s, vec![]).await;
    let app = new_app().await;
    let started = Instant::now();
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    let per_pr = summary.requests as f64 / N as f64;
    eprintln!(
        "{N} pull requests: {} requests ({per_pr:.3} per pull request), {} deliveries in {took:.2} s ({:.0} items/s, debug build, through the router)",
        summary.requests,
        summary.deliveries(),
        N as f64 / took
    );
    assert_eq!(summary.items["pull_requests"], N);
    // opened and closed per pull request, and the scenario's three default-branch pushes
    assert_eq!(summary.processed, 2 * N + 3);
    // 1 repository + 2 pages of /issues (the PRs, as issues) + 2 of /pulls + 2 of
    // /issues/events (a close each) + 1 each of /commits, /actions/runs and /deployments.
    assert_eq!(summary.requests, 10);
    assert!(per_pr <= 1.2);
}

/// `--org`: every repository of the organization but the archived ones.
#[tokio::test]
async fn an_organization_is_read_repository_by_repository() {
    let reference = webhooks_only().await;
    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    let mut opts = github::Options::new(vec![], SINCE.parse().unwrap(), None);
    opts.orgs = vec!["Codertocat".into()];
    let summary = github::run(&client(&fake.url(), TOKEN, 100), &opts, &RouterSink(&app))
        .await
        .unwrap();
    assert_eq!(summary.processed, 22, "{summary:?}");
    assert_eq!(fake.count("/repos/Codertocat/Old"), 0, "archived: not read");
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
}

/// The window starts counting at --since: the pull request merged before it (and shipped by a
/// deployment before it) is not read, so the first deployment of the window ships only what
/// landed after --since.
#[tokio::test]
async fn the_first_deployment_of_the_window_ships_only_what_landed_in_it() {
    let mut s = scenario();
    // The old PR #7 was merged on the default branch in January and deployed then.
    let old_merge = sha('7');
    s.commits.last_mut().unwrap().parents = vec![old_merge.clone()];
    s.commits.push(C {
        sha: old_merge.clone(),
        parents: vec![],
        at: "2024-01-02T10:00:00Z".into(),
        message: "Merge pull request #7 from Codertocat/old".into(),
    });
    let mut old_dep = s.deployments[2].clone();
    old_dep["id"] = json!(300);
    old_dep["sha"] = json!(old_merge);
    old_dep["created_at"] = json!("2024-01-03T10:00:00Z");
    s.deployments.push(old_dep);
    s.statuses.insert(
        300,
        vec![{
            let mut st = s.statuses[&301][0].clone();
            st["id"] = json!(3001);
            st["created_at"] = json!("2024-01-03T10:05:00Z");
            st
        }],
    );
    let fake = Fake::start(s, vec![]).await;
    let app = new_app().await;
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    assert_eq!(summary.items["pull_requests"], 1, "{summary:?}");
    assert_eq!(summary.items["deployments"], 3, "{summary:?}");
    let got = settle(&app, &mut BTreeMap::new()).await;
    let first = got
        .spans
        .values()
        .find(|s| {
            s.attributes.get("deployment.id").map(|v| format!("{v:?}"))
                == Some(format!(
                    "{:?}",
                    valuestream::model::AttrValue::from("301".to_string())
                ))
        })
        .expect("deployment 301");
    let changes = first.attributes.get("valuestream.deployment.changes");
    assert_eq!(
        changes.map(|v| format!("{v:?}")),
        Some(format!("{:?}", valuestream::model::AttrValue::from(1i64))),
        "{first:?}"
    );
    // The same as the webhooks of the window alone.
    let reference = webhooks_only().await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
}

/// GitHub lists at most 1,000 workflow runs for one filter (`total_count` says how many there
/// are): a window holding more is read in halves until each half fits.
#[tokio::test]
async fn a_run_list_over_the_cap_is_read_in_halves() {
    let mut s = scenario();
    for i in 0..6u64 {
        let mut r = s.runs[0].clone();
        r["id"] = json!(1000 + i);
        r["head_sha"] = json!(sha('c'));
        r["head_branch"] = json!("other");
        r["created_at"] = json!(t(&format!("{:02}:30", 14 + i)));
        r["run_started_at"] = json!(t(&format!("{:02}:31", 14 + i)));
        r["updated_at"] = json!(t(&format!("{:02}:40", 14 + i)));
        s.runs.push(r);
    }
    let fake = Fake::start(s, vec![]).await;
    *fake.run_cap.lock().unwrap() = 2;
    let app = new_app().await;
    let mut opts = options();
    opts.until = Some(t("23:00").parse().unwrap());
    opts.run_list_cap = 2;
    let summary = github::run(&client(&fake.url(), TOKEN, 100), &opts, &RouterSink(&app))
        .await
        .unwrap();
    assert_eq!(summary.items["workflow_runs"], 7, "{summary:?}");
    assert!(
        fake.count("/actions/runs") > 3,
        "split into several windows"
    );
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(
        got.spans
            .values()
            .filter(|s| s.name.starts_with("RUN "))
            .count(),
        7
    );
}

/// Random parts of the webhooks, in random order, before and after a backfill (a delivery lost
/// in an outage, a late redelivery): always the webhooks' spans and series.
#[tokio::test]
async fn any_split_of_webhooks_around_a_backfill_gives_the_same_result() {
    let reference = webhooks_only().await;
    let fake = Fake::start(scenario(), vec![]).await;
    let hooks = webhooks(&scenario());
    for seed in 1..=6u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut before: Vec<Hook> = Vec::new();
        let mut after: Vec<Hook> = Vec::new();
        for h in &hooks {
            match rng.u8(0..4) {
                0 => before.push(h.clone()),
                1 => after.push(h.clone()),
                2 => {
                    before.push(h.clone());
                    after.push(h.clone()); // redelivered after the backfill
                }
                _ => {} // lost: only the backfill brings it
            }
        }
        rng.shuffle(&mut before);
        rng.shuffle(&mut after);
        let app = new_app().await;
        post_hooks(&app, &before).await;
        backfill(&app, &client(&fake.url(), TOKEN, 3))
            .await
            .unwrap();
        post_hooks(&app, &after).await;
        let got = settle(&app, &mut BTreeMap::new()).await;
        assert_eq!(
            reference,
            got,
            "seed {seed}: {} before, {} after:\n{}",
            before.len(),
            after.len(),
            diff(&reference, &got)
        );
    }
}
