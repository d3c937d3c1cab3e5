//! A zero-latency fake of the GitHub REST and GraphQL APIs for the backfill benchmark: one
//! repository with `n` merged pull requests, each opened as a draft, made ready for review with
//! a review requested, approved in one review and merged as one commit on the default branch,
//! each with one workflow run of one job, and a production deployment (with one `success`
//! status) every 10 pull requests. Objects are made from the webhook fixtures
//! (`tests/fixtures/github/`), whose objects have the REST shapes. It serves what
//! `valuestream backfill github` asks: `Link` pagination (`per_page`, `page`), `since`,
//! `created=A..B` on runs (cut at 1,000 like GitHub, with `total_count`), weak `ETag`s of the
//! content and 304 for a matching `If-None-Match`; `POST /graphql` answers the
//! `prN: pullRequest(number: N)` aliases with each pull request's steps (`nodes` + `pageInfo`),
//! refusing more than 100 a connection as GitHub does. A bearer token is required (401
//! otherwise). Lists are serialized ahead, one JSON text per item, so a page costs a
//! concatenation.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const REPO: &str = "Codertocat/Hello-World";
pub const BRANCH: &str = "master";
pub const TOKEN: &str = "bench-token";
/// The history starts here; a pull request every 10 minutes.
pub const SINCE: &str = "2024-01-01T00:00:00Z";
pub const UNTIL: &str = "2024-12-01T00:00:00Z";

fn fixture(rel: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github")
        .join(rel);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// An item as served: its JSON text and the times lists filter and sort on.
struct Item {
    json: String,
    /// `updated_at` (pull requests), `created_at` (runs, deployments), author date (commits).
    at: String,
}

pub struct Api {
    repository: String,
    /// Newest update first, as `GET /pulls?sort=updated&direction=desc` and `GET /issues`
    /// (pull requests as issues) list them.
    pulls: Vec<Item>,
    issues: Vec<Item>,
    /// Newest first.
    commits: Vec<Item>,
    /// Newest first.
    runs: Vec<Item>,
    jobs: HashMap<u64, String>,
    /// By pull request number, its GraphQL node: `number`, `isDraft`, `reviews` and
    /// `timelineItems` (one page each).
    steps: HashMap<u64, String>,
    deployments: Vec<Item>,
    statuses: HashMap<u64, String>,
    pub requests: AtomicU64,
    pub not_modified: AtomicU64,
    addr: std::sync::Mutex<String>,
}

fn at(minutes: i64) -> String {
    let t0: chrono::DateTime<chrono::Utc> = SINCE.parse().unwrap();
    (t0 + chrono::TimeDelta::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn sha(n: u64, kind: u8) -> String {
    format!("{kind:02x}{n:038x}")
}

impl Api {
    pub fn new(n: u64) -> Self {
        let repository = fixture("issues/opened.payload.json")["repository"].clone();
        let pr_t = fixture("pull_request/closed.payload.json")["pull_request"].clone();
        let run_t = fixture("workflow_run/completed.payload.json")["workflow_run"].clone();
        let job_t = fixture("workflow_job/completed.success.with-organization.payload.json")
            ["workflow_job"]
            .clone();
        let dep_t = fixture("deployment/payload.json")["deployment"].clone();
        let status_t = fixture("deployment_status/payload.json")["deployment_status"].clone();
        let mut steps = HashMap::new();
        let (mut pulls, mut issues, mut commits, mut runs, mut deployments) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut jobs, mut statuses) = (HashMap::new(), HashMap::new());
        for i in 0..n {
            let m = i as i64 * 10;
            let number = i + 1;
            let (head, merge) = (sha(number, 0xaa), sha(number, 0xbb));
            let previous = if i == 0 {
                sha(0, 0xbb)
            } else {
                sha(number - 1, 0xbb)
            };
            let mut pr = pr_t.clone();
            pr["id"] = json!(1_000_000 + number);
            pr["number"] = json!(number);
            pr["title"] = json!(format!("Change {number}"));
            pr["body"] = json!("");
            pr["head"]["ref"] = json!(format!("feature-{number}"));
            pr["head"]["sha"] = json!(head);
            pr["base"]["ref"] = json!(BRANCH);
            pr["base"]["sha"] = json!(previous);
            pr["created_at"] = json!(at(m));
            pr["merged_at"] = json!(at(m + 5));
            pr["closed_at"] = json!(at(m + 5));
            pr["updated_at"] = json!(at(m + 5));
            pr["merged"] = json!(true);
            pr["state"] = json!("closed");
            pr["merge_commit_sha"] = json!(merge);
            pr["labels"] = json!([]);
            let page = |nodes: Value| json!({"nodes": nodes, "pageInfo": {"hasNextPage": false, "endCursor": null}});
            let node = json!({
                "number": number,
                "isDraft": false,
                "reviews": page(json!([{
                    "databaseId": 3_000_000 + number,
                    "state": "APPROVED",
                    "submittedAt": at(m + 3),
                    "author": {"login": "Octocat", "__typename": "User"},
                    "commit": {"oid": head},
                }])),
                "timelineItems": page(json!([
                    {"__typename": "ReadyForReviewEvent", "createdAt": at(m + 1)},
                    {"__typename": "ReviewRequestedEvent", "createdAt": at(m + 1),
                     "requestedReviewer": {"__typename": "User", "login": "Octocat"}},
                ])),
            });
            steps.insert(number, node.to_string());
            let mut as_issue = pr.clone();
            as_issue["pull_request"] = json!({"url": pr["url"]});
            pulls.push(Item {
                json: pr.to_string(),
                at: at(m + 5),
            });
            issues.push(Item {
                json: as_issue.to_string(),
                at: at(m + 5),
            });
            commits.push(Item {
                json: json!({
                    "sha": merge,
                    "commit": {
                        "author": {"name": "Codertocat", "email": "c@example.com", "date": at(m + 5)},
                        "committer": {"name": "GitHub", "email": "noreply@github.com", "date": at(m + 5)},
                        "message": format!("Merge pull request #{number} from Codertocat/feature-{number}"),
                    },
                    "html_url": format!("https://github.com/{REPO}/commit/{merge}"),
                    "parents": [{"sha": previous}],
                })
                .to_string(),
                at: at(m + 5),
            });
            let run_id = 5_000_000 + number;
            let mut run = run_t.clone();
            run["id"] = json!(run_id);
            run["name"] = json!("CI");
            run["head_branch"] = json!(format!("feature-{number}"));
            run["head_sha"] = json!(head);
            run["event"] = json!("pull_request");
            run["run_attempt"] = json!(1);
            run["created_at"] = json!(at(m + 1));
            run["run_started_at"] = json!(at(m + 1));
            run["updated_at"] = json!(at(m + 4));
            run["status"] = json!("completed");
            run["conclusion"] = json!("success");
            run["repository"] = repository.clone();
            run["head_repository"] = repository.clone();
            runs.push(Item {
                json: run.to_string(),
                at: at(m + 1),
            });
            let mut job = job_t.clone();
            job["id"] = json!(9_000_000 + number);
            job["run_id"] = json!(run_id);
            job["run_attempt"] = json!(1);
            job["name"] = json!("test");
            job["workflow_name"] = json!("CI");
            job["head_branch"] = json!(format!("feature-{number}"));
            job["head_sha"] = json!(head);
            job["created_at"] = json!(at(m + 1));
            job["started_at"] = json!(at(m + 2));
            job["completed_at"] = json!(at(m + 3));
            job["status"] = json!("completed");
            job["conclusion"] = json!("success");
            jobs.insert(run_id, json!({"total_count": 1, "jobs": [job]}).to_string());
            if number % 10 == 0 {
                let id = 7_000_000 + number;
                let mut d = dep_t.clone();
                d["id"] = json!(id);
                d["sha"] = json!(merge);
                d["ref"] = json!(BRANCH);
                d["environment"] = json!("production");
                d["original_environment"] = json!("production");
                d["created_at"] = json!(at(m + 6));
                d["updated_at"] = json!(at(m + 8));
                deployments.push(Item {
                    json: d.to_string(),
                    at: at(m + 6),
                });
                let mut s = status_t.clone();
                s["id"] = json!(8_000_000 + number);
                s["state"] = json!("success");
                s["created_at"] = json!(at(m + 8));
                s["updated_at"] = json!(at(m + 8));
                statuses.insert(id, format!("[{s}]"));
            }
        }
        for list in [
            &mut pulls,
            &mut issues,
            &mut commits,
            &mut runs,
            &mut deployments,
        ] {
            list.reverse(); // newest first
        }
        Api {
            repository: repository.to_string(),
            pulls,
            issues,
            commits,
            runs,
            jobs,
            steps,
            deployments,
            statuses,
            requests: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
            addr: std::sync::Mutex::new(String::new()),
        }
    }

    pub async fn start(self) -> Arc<Api> {
        let api = Arc::new(self);
        let app = Router::new().fallback(serve).with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *api.addr.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        api
    }

    pub fn url(&self) -> String {
        self.addr.lock().unwrap().clone()
    }

    /// API items served in all: what a backfill of the whole history reads.
    pub fn items(&self) -> u64 {
        // Each pull request's review and two events.
        (self.pulls.len() * 4
            + self.commits.len()
            + self.runs.len() * 2
            + self.deployments.len() * 2) as u64
    }
}

fn query(q: &str) -> HashMap<String, String> {
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

fn json_response(body: String, link: Option<String>, headers: &HeaderMap, api: &Api) -> Response {
    let etag = {
        use sha2::Digest;
        let h = sha2::Sha256::digest(body.as_bytes());
        format!("W/\"{}\"", hex::encode(&h[..16]))
    };
    let matched = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut resp = if matched {
        api.not_modified.fetch_add(1, Ordering::Relaxed);
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            StatusCode::OK,
            [("content-type", "application/json; charset=utf-8")],
            body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert("etag", etag.parse().unwrap());
    h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
    h.insert("x-ratelimit-remaining", HeaderValue::from_static("4999"));
    h.insert("x-ratelimit-reset", HeaderValue::from_static("4102444800"));
    if let Some(l) = link.filter(|_| !matched) {
        h.insert("link", l.parse().unwrap());
    }
    resp
}

async fn serve(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: Bytes,
) -> Response {
    api.requests.fetch_add(1, Ordering::Relaxed);
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return (StatusCode::UNAUTHORIZED, r#"{"message":"Bad credentials"}"#).into_response();
    }
    let path = uri.path();
    if method == Method::POST && path == "/graphql" {
        return graphql(&api, &request);
    }
    let raw = uri.query().unwrap_or_default();
    let q = query(raw);
    let base = format!("/repos/{REPO}");
    let Some(rest) = path.strip_prefix(&base) else {
        return (StatusCode::NOT_FOUND, "{}").into_response();
    };
    if rest.is_empty() {
        return json_response(api.repository.clone(), None, &headers, &api);
    }
    let since = q.get("since").cloned().unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').collect();
    let (items, wrap): (Vec<&Item>, Option<&str>) = match parts[..] {
        ["", "issues"] => (api.issues.iter().filter(|i| i.at >= since).collect(), None),
        ["", "pulls"] => (api.pulls.iter().collect(), None),
        ["", "commits"] => (api.commits.iter().filter(|i| i.at >= since).collect(), None),
        ["", "deployments"] => (api.deployments.iter().collect(), None),
        ["", "issues", "events"] => (Vec::new(), None),
        ["", "actions", "runs"] => {
            let created = q.get("created").cloned().unwrap_or_default();
            let (from, to) = created.split_once("..").unwrap_or((&created, ""));
            (
                api.runs
                    .iter()
                    .filter(|r| r.at.as_str() >= from && (to.is_empty() || r.at.as_str() <= to))
                    .collect(),
                Some("workflow_runs"),
            )
        }
        ["", "actions", "runs", id, "jobs"] => {
            let body = id
                .parse::<u64>()
                .ok()
                .and_then(|id| api.jobs.get(&id).cloned())
                .unwrap_or_else(|| r#"{"total_count":0,"jobs":[]}"#.into());
            return json_response(body, None, &headers, &api);
        }
        ["", "deployments", id, "statuses"] => {
            let body = id
                .parse::<u64>()
                .ok()
                .and_then(|id| api.statuses.get(&id).cloned())
                .unwrap_or_else(|| "[]".into());
            return json_response(body, None, &headers, &api);
        }
        _ => return (StatusCode::NOT_FOUND, "{}").into_response(),
    };
    let total = items.len();
    // GitHub lists at most 1,000 runs for one filter.
    let listed = if wrap.is_some() {
        total.min(1000)
    } else {
        total
    };
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30);
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let from = ((page - 1) * per_page).min(listed);
    let to = (page * per_page).min(listed);
    let mut body = String::from("[");
    for (i, item) in items[from..to].iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&item.json);
    }
    body.push(']');
    if let Some(k) = wrap {
        body = format!("{{\"total_count\":{total},\"{k}\":{body}}}");
    }
    let link = (to < listed).then(|| {
        let kept: Vec<&str> = raw
            .split('&')
            .filter(|kv| !kv.starts_with("page=") && !kv.is_empty())
            .collect();
        format!(
            "<{}{path}?{}&page={}>; rel=\"next\"",
            api.url(),
            kept.join("&"),
            page + 1
        )
    });
    json_response(body, link, &headers, &api)
}

/// `POST /graphql`: every `prN: pullRequest(number: N)` alias of the query answered with its
/// node, under `data.repository`; more than 100 nodes of a connection refused with an error.
fn graphql(api: &Api, request: &[u8]) -> Response {
    let request: Value = serde_json::from_slice(request).unwrap_or(Value::Null);
    let q = request["query"].as_str().unwrap_or_default();
    let first = regex::Regex::new(r"first: (\d+)").unwrap();
    let body = if first
        .captures_iter(q)
        .any(|c| c[1].parse::<u64>().unwrap_or(0) > 100)
    {
        r#"{"errors":[{"type":"EXCESSIVE_PAGINATION","message":"Requesting more than 100 records on a connection exceeds the `first` limit of 100 records."}]}"#.to_string()
    } else {
        let alias = regex::Regex::new(r"(pr\d+): pullRequest\(number: (\d+)\)").unwrap();
        let prs: Vec<String> = alias
            .captures_iter(q)
            .map(|c| {
                let node = c[2]
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| api.steps.get(&n))
                    .map_or("null", String::as_str);
                format!("\"{}\":{node}", &c[1])
            })
            .collect();
        format!("{{\"data\":{{\"repository\":{{{}}}}}}}", prs.join(","))
    };
    let mut resp = (
        StatusCode::OK,
        [("content-type", "application/json; charset=utf-8")],
        body,
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
    h.insert("x-ratelimit-remaining", HeaderValue::from_static("4999"));
    h.insert("x-ratelimit-reset", HeaderValue::from_static("4102444800"));
    h.insert("x-ratelimit-resource", HeaderValue::from_static("graphql"));
    resp
}
