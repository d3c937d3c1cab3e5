//! The fake GitHub REST API the backfill and sync tests share, and the scenario it serves:
//! documented response shapes (the REST objects are the objects of the webhook fixtures in
//! `tests/fixtures/github/`), with `Link` pagination, `x-ratelimit-*` headers, faults on demand
//! (a primary limit running out, a secondary-limit 429, a 502), a 401 for a wrong token, and a
//! log of every request. Also the scenario's webhooks and the helpers that compare what two
//! runs exported. Included with `#[path = "common/fake_github.rs"] mod fake_github;`.
#![allow(dead_code)]

use crate::common::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use valuestream::engine::facts::ItemRecord;
use valuestream::engine::scope::PushFact;
use valuestream::model::FinishedSpan;
use valuestream::store::embedded::EmbeddedStore;

pub const REPO: &str = "Codertocat/Hello-World";
pub const BRANCH: &str = "master";
pub const FEATURE: &str = "feature/vstrace-github-Hello-World-1";
pub const TOKEN: &str = "ghp_test_token";
pub const SINCE: &str = "2024-03-01T00:00:00Z";

pub fn t(hm: &str) -> String {
    format!("2024-03-01T{hm}:00Z")
}

pub fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

// ---------------------------------------------------------------- the scenario

/// A commit on the default branch: (sha, parents, author date, message).
pub struct C {
    pub sha: String,
    pub parents: Vec<String>,
    pub at: String,
    pub message: String,
}

/// One repository's history, as final API objects (the REST shapes) plus the commits.
pub struct Scenario {
    pub repository: Value,
    pub issues: Vec<Value>,
    pub pulls: Vec<Value>,
    /// Newest first, as `GET /commits` lists them.
    pub commits: Vec<C>,
    pub runs: Vec<Value>,
    pub jobs: BTreeMap<u64, Vec<Value>>,
    pub deployments: Vec<Value>,
    /// Newest first, as `GET /deployments/{id}/statuses` lists them.
    pub statuses: BTreeMap<u64, Vec<Value>>,
    /// Issues' closes and reopenings, oldest first: number → (`closed`/`reopened`, time).
    pub history: BTreeMap<u64, Vec<(String, String)>>,
    /// Pull requests' reviews as the REST API and webhooks write them (oldest first, states in
    /// upper case, a pending one without `submitted_at`): number → reviews. The GraphQL API
    /// serves them as `PullRequestReview` nodes ([`review_node`]).
    pub reviews: BTreeMap<u64, Vec<Value>>,
    /// Pull requests' draft / ready-for-review / review-requested events as GraphQL timeline
    /// nodes (`__typename`, `createdAt`, `requestedReviewer`), oldest first: number → events.
    pub timeline: BTreeMap<u64, Vec<Value>>,
}

pub fn object(rel: &str, key: &str) -> Value {
    fixture_json(rel)[key].clone()
}

/// An issue opened at 09:00 and closed by the merge at 11:05; a pull request on a branch that
/// names it, opened 10:00 and merged 11:00 as a merge commit of one branch commit; two direct
/// commits; a workflow run (with one job) on the branch head; a production deployment of the
/// merge that succeeds and one of a later direct commit that fails; a staging one still going.
/// The pull request is reviewed: a comment at 10:20, an approval at 10:40 (its pickup and
/// review stages), and a review still pending.
pub fn scenario() -> Scenario {
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

    let review = |id: u64, state: &str, at: Option<&str>| {
        let mut r = object(
            "github/pull_request_review/submitted.payload.json",
            "review",
        );
        r["id"] = json!(id);
        r["user"]["login"] = json!("Octocat");
        r["user"]["id"] = json!(583231);
        r["state"] = json!(state);
        r["submitted_at"] = json!(at);
        r["commit_id"] = json!(sha('a'));
        r
    };
    let reviews = BTreeMap::from([(
        2,
        vec![
            review(401, "COMMENTED", Some(t("10:20").as_str())),
            review(402, "APPROVED", Some(t("10:40").as_str())),
            review(403, "PENDING", None),
        ],
    )]);

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
        reviews,
        timeline: BTreeMap::new(),
    }
}

/// The scenario with pull request #2's steps: opened as a draft (10:00), made ready for review
/// at 10:08, Octocat's review requested at 10:10, then reviewed by Octocat (a comment at 10:20),
/// a bot (10:25) and its author (10:30), and approved by Octocat at 10:40.
pub fn scenario_with_steps() -> Scenario {
    let mut s = scenario();
    s.timeline.insert(
        2,
        vec![
            json!({"__typename": "ReadyForReviewEvent", "createdAt": t("10:08")}),
            json!({
                "__typename": "ReviewRequestedEvent",
                "createdAt": t("10:10"),
                "requestedReviewer": {"__typename": "User", "login": "Octocat"},
            }),
        ],
    );
    let reviews = s.reviews.get_mut(&2).unwrap();
    let mut bot = reviews[0].clone();
    bot["id"] = json!(404);
    bot["user"]["login"] = json!("review-bot[bot]");
    bot["user"]["type"] = json!("Bot");
    bot["submitted_at"] = json!(t("10:25"));
    let mut author = reviews[0].clone();
    author["id"] = json!(405);
    author["user"]["login"] = json!("Codertocat");
    author["submitted_at"] = json!(t("10:30"));
    reviews.insert(1, bot);
    reviews.insert(2, author);
    s
}

/// Whether pull request `p` was a draft at `at` (`None`: when opened), as its timeline says:
/// one whose first draft event is a ready-for-review was opened as a draft.
pub fn draft_at(s: &Scenario, p: &Value, at: Option<&str>) -> bool {
    let mut turns: Vec<(String, bool)> = s
        .timeline
        .get(&p["number"].as_u64().unwrap())
        .into_iter()
        .flatten()
        .filter_map(|e| match e["__typename"].as_str()? {
            "ReadyForReviewEvent" => Some((e["createdAt"].as_str()?.to_string(), false)),
            "ConvertToDraftEvent" => Some((e["createdAt"].as_str()?.to_string(), true)),
            _ => None,
        })
        .collect();
    turns.sort();
    let opened = turns.first().map_or(p["draft"] == true, |t| !t.1);
    match at {
        None => opened,
        Some(at) => turns
            .iter()
            .rfind(|t| t.0.as_str() <= at)
            .map_or(opened, |t| t.1),
    }
}

/// A review as the GraphQL API gives it.
pub fn review_node(r: &Value) -> Value {
    let login = r["user"]["login"].as_str().unwrap_or_default();
    let typename = r["user"]["type"].as_str().unwrap_or("User");
    json!({
        "databaseId": r["id"],
        "state": r["state"],
        "submittedAt": r["submitted_at"],
        // GraphQL spells a bot's login without the `[bot]` REST and webhooks add.
        "author": {"login": login.trim_end_matches("[bot]"), "__typename": typename},
        "commit": {"oid": r["commit_id"]},
    })
}

/// One webhook delivery: (event, delivery ID, body).
pub type Hook = (String, String, Value);

/// The webhooks GitHub sent for the scenario, written from the webhook fixtures: each carries
/// the object as it was at that moment, and the whole webhook `repository` and `sender`.
pub fn webhooks(s: &Scenario) -> Vec<Hook> {
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
        opened["draft"] = json!(draft_at(s, p, None));
        v["action"] = json!("opened");
        v["pull_request"] = opened;
        hook("pull_request", v);
        let mut v = base("github/pull_request/closed.payload.json");
        let mut closed = p.clone();
        closed["updated_at"] = p["closed_at"].clone();
        closed["draft"] = json!(draft_at(s, p, p["closed_at"].as_str()));
        v["pull_request"] = closed;
        hook("pull_request", v);
        // Draft, ready for review, review requested: the pull request as it was then.
        for e in s
            .timeline
            .get(&p["number"].as_u64().unwrap())
            .into_iter()
            .flatten()
        {
            let at = e["createdAt"].as_str().unwrap();
            let (action, rel) = match e["__typename"].as_str().unwrap() {
                "ReadyForReviewEvent" => ("ready_for_review", "ready_for_review"),
                "ConvertToDraftEvent" => ("converted_to_draft", "converted_to_draft"),
                _ => ("review_requested", "review_requested"),
            };
            let mut v = base(&format!("github/pull_request/{rel}.payload.json"));
            let mut then = p.clone();
            then["state"] = json!("open");
            then["merged"] = json!(false);
            then["merged_at"] = Value::Null;
            then["closed_at"] = Value::Null;
            then["merge_commit_sha"] = Value::Null;
            then["updated_at"] = json!(at);
            then["draft"] = json!(draft_at(s, p, Some(at)));
            v["action"] = json!(action);
            v["number"] = p["number"].clone();
            v["pull_request"] = then;
            if action == "review_requested" {
                v["requested_reviewer"]["login"] = e["requestedReviewer"]["login"].clone();
            }
            hook("pull_request", v);
        }
        // Each submitted review, with the pull request as it was then (open).
        let reviews = s.reviews.get(&p["number"].as_u64().unwrap());
        for r in reviews.into_iter().flatten() {
            if r["submitted_at"].is_null() {
                continue;
            }
            let mut v = base("github/pull_request_review/submitted.payload.json");
            let mut review = r.clone();
            review["state"] = json!(r["state"].as_str().unwrap().to_ascii_lowercase());
            let mut then = p.clone();
            then["state"] = json!("open");
            then["merged"] = json!(false);
            then["merged_at"] = Value::Null;
            then["closed_at"] = Value::Null;
            then["merge_commit_sha"] = Value::Null;
            then["updated_at"] = r["submitted_at"].clone();
            then["draft"] = json!(draft_at(s, p, r["submitted_at"].as_str()));
            v["review"] = review;
            v["pull_request"] = then;
            hook("pull_request_review", v);
        }
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
pub enum Fault {
    /// 200 with `x-ratelimit-remaining: 0` and the reset two seconds ahead.
    Exhausted,
    /// 429 with `retry-after: 1`.
    Secondary,
    BadGateway,
    /// No answer for a minute (the test kills the client meanwhile); counted in `hung`.
    Hang,
    /// A GraphQL answer 200 with `errors` (a field that failed) and partial `data`.
    GraphqlErrors,
}

/// One request the fake saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub status: u16,
    pub at: Instant,
    /// For an exhausted answer: when its reset is due.
    pub reset_at: Option<Instant>,
}

pub struct Fake {
    /// What the API serves; tests change it between runs (a changed resource).
    pub s: Mutex<Scenario>,
    pub token: String,
    pub addr: Mutex<String>,
    /// (path suffix, nth matching request (1-based), fault).
    pub faults: Mutex<Vec<(String, usize, Fault)>>,
    pub seen: Mutex<Vec<Seen>>,
    /// At most this many runs in one filtered list (GitHub: 1,000), and the last list's total.
    pub run_cap: Mutex<usize>,
    pub run_total: Mutex<usize>,
    /// Requests charged to the rate limit: every one but the 304s (GitHub: "Making a
    /// conditional request and receiving a 304 response does not count against your primary
    /// rate limit").
    pub charged: Mutex<u64>,
    /// Requests being held by a `Hang` fault.
    pub hung: Mutex<u64>,
}

impl Fake {
    /// The fake, not listening yet (its answers can be asked directly).
    pub fn idle(s: Scenario) -> Fake {
        Fake {
            s: Mutex::new(s),
            token: TOKEN.into(),
            addr: Mutex::new(String::new()),
            faults: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            run_cap: Mutex::new(1000),
            run_total: Mutex::new(0),
            charged: Mutex::new(0),
            hung: Mutex::new(0),
        }
    }

    pub async fn start(s: Scenario, faults: Vec<(&str, usize, Fault)>) -> Arc<Fake> {
        let fake = Arc::new(Fake::idle(s));
        *fake.faults.lock().unwrap() = faults
            .into_iter()
            .map(|(p, n, f)| (p.to_string(), n, f))
            .collect();
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

    pub fn count(&self, path_suffix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.ends_with(path_suffix))
            .count()
    }

    pub fn commit(&self, c: &C) -> Value {
        commit(c)
    }
}

pub fn commit(c: &C) -> Value {
    {
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
}

impl Fake {
    /// The full list a path names, or None (404).
    pub fn list(
        &self,
        path: &str,
        q: &HashMap<String, String>,
    ) -> Option<(Vec<Value>, Option<&'static str>)> {
        let base = format!("/repos/{REPO}");
        let rest = path.strip_prefix(&base)?;
        let s = self.s.lock().unwrap();
        let since = q.get("since").cloned();
        let after_since = |v: &Value, k: &str| {
            since
                .as_deref()
                .is_none_or(|s| v[k].as_str().unwrap_or_default() >= s)
        };
        Some(match rest {
            "/issues" => {
                // The issues list holds pull requests too (with a `pull_request` key).
                let mut all: Vec<Value> = s.issues.clone();
                for p in &s.pulls {
                    let mut as_issue = p.clone();
                    as_issue["pull_request"] = json!({"url": p["url"]});
                    all.push(as_issue);
                }
                all.retain(|v| after_since(v, "updated_at"));
                all.sort_by_key(|v| v["updated_at"].as_str().unwrap().to_string());
                // GitHub's default direction is desc.
                if q.get("direction").map(String::as_str) != Some("asc") {
                    all.reverse();
                }
                (all, None)
            }
            "/pulls" => {
                let mut all = s.pulls.clone();
                all.sort_by_key(|v| {
                    std::cmp::Reverse(v["updated_at"].as_str().unwrap().to_string())
                });
                (all, None)
            }
            "/commits" => {
                assert_eq!(q.get("sha").map(String::as_str), Some(BRANCH));
                let all = s
                    .commits
                    .iter()
                    .filter(|c| since.as_deref().is_none_or(|s| c.at.as_str() >= s))
                    .map(commit)
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
                for i in &s.issues {
                    all.push(event("labeled", i["created_at"].as_str().unwrap(), i));
                    for (kind, at) in &s.history[&i["number"].as_u64().unwrap()] {
                        all.push(event(kind, at, i));
                    }
                }
                for p in &s.pulls {
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
                let mut runs: Vec<Value> = s
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
            "/deployments" => (s.deployments.clone(), None),
            _ => {
                let parts: Vec<&str> = rest.split('/').collect();
                match parts[..] {
                    ["", "actions", "runs", id, "jobs"] => (
                        s.jobs
                            .get(&id.parse::<u64>().ok()?)
                            .cloned()
                            .unwrap_or_default(),
                        Some("jobs"),
                    ),
                    ["", "pulls", n, "reviews"] => {
                        let n = n.parse::<u64>().ok()?;
                        s.pulls.iter().find(|p| p["number"] == n)?;
                        (s.reviews.get(&n).cloned().unwrap_or_default(), None)
                    }
                    ["", "deployments", id, "statuses"] => {
                        (s.statuses.get(&id.parse::<u64>().ok()?).cloned()?, None)
                    }
                    _ => return None,
                }
            }
        })
    }
}

pub fn query_map(q: &str) -> HashMap<String, String> {
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

pub async fn serve(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: Bytes,
) -> Response {
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
        Some(Fault::Hang) => {
            *fake.hung.lock().unwrap() += 1;
            tokio::time::sleep(Duration::from_secs(60)).await;
            seen.status = 504;
            return respond(
                &fake,
                seen,
                (StatusCode::GATEWAY_TIMEOUT, "held").into_response(),
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
    if method == Method::POST && path == "/graphql" {
        let body = fake.graphql(&request, fault == Some(Fault::GraphqlErrors));
        *fake.charged.lock().unwrap() += 1;
        let mut resp = (
            StatusCode::OK,
            [("content-type", "application/json; charset=utf-8")],
            serde_json::to_vec(&body).unwrap(),
        )
            .into_response();
        rate_limit_headers(resp.headers_mut(), fault, epoch, now, &mut seen, "graphql");
        return respond(&fake, seen, resp);
    }
    let q = query_map(&query);
    let repository = fake.s.lock().unwrap().repository.clone();
    let (body, link) = if path == format!("/repos/{REPO}") {
        let mut r = repository.clone();
        r["topics"] = json!([]);
        (r, None)
    } else if path == "/orgs/Codertocat/repos" {
        let mut archived = repository.clone();
        archived["full_name"] = json!("Codertocat/Old");
        archived["archived"] = json!(true);
        (json!([repository, archived]), None)
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
    // A weak validator of the answer's content, as GitHub's (`W/"<hash>"`); a request whose
    // If-None-Match names it is answered 304 with no body, and not charged.
    let bytes = serde_json::to_vec(&body).unwrap();
    let etag = {
        use sha2::Digest;
        let h = sha2::Sha256::digest(&bytes);
        format!("W/\"{}\"", hex::encode(&h[..16]))
    };
    let not_modified = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if not_modified {
        seen.status = 304;
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        *fake.charged.lock().unwrap() += 1;
        (
            StatusCode::OK,
            [("content-type", "application/json; charset=utf-8")],
            bytes,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert("etag", etag.parse().unwrap());
    h.insert(
        "vary",
        HeaderValue::from_static("Accept, Authorization, Cookie, X-GitHub-OTP"),
    );
    rate_limit_headers(h, fault, epoch, now, &mut seen, "core");
    if let Some(l) = link.filter(|_| !not_modified) {
        h.insert("link", l.parse().unwrap());
    }
    respond(&fake, seen, resp)
}

/// GitHub's `x-ratelimit-*` headers of `resource` (`core`, `graphql`): the limit running out
/// (reset two seconds ahead) under an `Exhausted` fault.
fn rate_limit_headers(
    h: &mut HeaderMap,
    fault: Option<Fault>,
    epoch: i64,
    now: Instant,
    seen: &mut Seen,
    resource: &'static str,
) {
    h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
    h.insert("x-ratelimit-resource", HeaderValue::from_static(resource));
    if fault == Some(Fault::Exhausted) {
        let reset = epoch + 2;
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-used", HeaderValue::from_static("5000"));
        h.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
        let until_ms = reset * 1000 - chrono::Utc::now().timestamp_millis();
        seen.reset_at = Some(now + Duration::from_millis(until_ms.max(0) as u64));
    } else {
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("4000"));
        h.insert("x-ratelimit-used", HeaderValue::from_static("1000"));
        h.insert(
            "x-ratelimit-reset",
            (epoch + 3600).to_string().parse().unwrap(),
        );
    }
}

/// GitHub's "first" limit on a connection.
pub const GRAPHQL_FIRST_MAX: u64 = 100;

impl Fake {
    /// The answer to a GraphQL request: the `prN: pullRequest(number: N)` aliases under
    /// `data.repository`, each with `number`, `isDraft` and the connections the query asks
    /// (`reviews`, `timelineItems`, with `first:`/`after:`) as `nodes` + `pageInfo`. A query
    /// asking more than 100 nodes of a connection is refused with a GraphQL error, as GitHub
    /// refuses it; an unknown pull request is `null` with a `NOT_FOUND` error.
    pub fn graphql(&self, request: &[u8], fail: bool) -> Value {
        let request: Value = serde_json::from_slice(request).unwrap_or(Value::Null);
        let q = request["query"].as_str().unwrap_or_default();
        let conn = |name: &str| {
            let re =
                regex::Regex::new(&format!(r#"\b{name}\(first: (\d+)(?:, after: "([^"]*)")?"#))
                    .unwrap();
            re.captures(q).map(|c| {
                let first: u64 = c[1].parse().unwrap();
                let from: usize = c
                    .get(2)
                    .and_then(|a| a.as_str().strip_prefix("cursor:"))
                    .map_or(0, |n| n.parse().unwrap());
                (first, from)
            })
        };
        let (reviews, events) = (conn("reviews"), conn("timelineItems"));
        for (name, c) in [("reviews", reviews), ("timelineItems", events)] {
            if let Some((first, _)) = c.filter(|c| c.0 > GRAPHQL_FIRST_MAX) {
                return json!({"errors": [{"type": "EXCESSIVE_PAGINATION", "message": format!(
                    "Requesting {first} records on the `{name}` connection exceeds the `first` limit of {GRAPHQL_FIRST_MAX} records."
                )}]});
            }
        }
        let page = |all: Vec<Value>, (first, from): (u64, usize)| {
            let end = (from + first as usize).min(all.len());
            json!({
                "nodes": all[from.min(end)..end],
                "pageInfo": {"hasNextPage": end < all.len(), "endCursor": format!("cursor:{end}")},
            })
        };
        let s = self.s.lock().unwrap();
        let alias = regex::Regex::new(r"(pr\d+): pullRequest\(number: (\d+)\)").unwrap();
        let mut repo = serde_json::Map::new();
        let mut errors = Vec::new();
        for c in alias.captures_iter(q) {
            let n: u64 = c[2].parse().unwrap();
            let Some(p) = s.pulls.iter().find(|p| p["number"] == n) else {
                repo.insert(c[1].to_string(), Value::Null);
                errors.push(json!({"type": "NOT_FOUND", "path": ["repository", &c[1]],
                    "message": format!("Could not resolve to a PullRequest with the number of {n}.")}));
                continue;
            };
            let mut node = json!({"number": n, "isDraft": p["draft"] == true});
            if let Some(r) = reviews {
                let all = s
                    .reviews
                    .get(&n)
                    .into_iter()
                    .flatten()
                    .map(review_node)
                    .collect();
                node["reviews"] = page(all, r);
            }
            if let Some(e) = events {
                node["timelineItems"] = page(s.timeline.get(&n).cloned().unwrap_or_default(), e);
            }
            if fail && errors.is_empty() {
                node["reviews"] = Value::Null;
                errors.push(json!({"path": ["repository", &c[1], "reviews"],
                    "message": "Something went wrong while executing your query. Please include `0400:3F2A:1B2C` when reporting this issue."}));
            }
            repo.insert(c[1].to_string(), node);
        }
        let mut out = json!({"data": {"repository": repo}});
        if !errors.is_empty() {
            out["errors"] = json!(errors);
        }
        out
    }
}

// ---------------------------------------------------------------- driving the pipeline

pub async fn new_app() -> App {
    new_app_on(Arc::new(EmbeddedStore::in_memory().unwrap())).await
}

pub async fn new_app_on(store: Arc<EmbeddedStore>) -> App {
    let app = app_with(store, test_config(&[])).await;
    // Everything is settled once, at the end: the order of arrival decides nothing.
    app.set_auto_drain(false);
    app
}

/// Every item's facts (their content hashes, without the delivery tags) and every push.
pub fn facts(store: &EmbeddedStore) -> BTreeMap<String, Vec<String>> {
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
            p.touched = None;
            out.insert(format!("{} {}", r.key.pk, r.key.sk), vec![format!("{p:?}")]);
        }
    }
    out
}

pub async fn post_hooks(app: &App, hooks: &[Hook]) {
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
pub struct Result {
    pub spans: BTreeMap<String, FinishedSpan>,
    pub metrics: Vec<String>,
}

pub async fn settle(app: &App, spans: &mut BTreeMap<String, FinishedSpan>) -> Result {
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
    // The delivery series (and the sync's healed counter, which tests/sync.rs splits off):
    // valuestream's own health (deliveries by answer, store requests, …) differs between a
    // webhook and an API path by design.
    let own = ["valuestream_health_", "valuestream_settle_failures_total"];
    let mut metrics: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter(|l| !own.iter().any(|o| l.starts_with(o)))
        .map(str::to_string)
        .collect();
    metrics.sort();
    Result {
        spans: spans.clone(),
        metrics,
    }
}

pub fn diff(a: &Result, b: &Result) -> String {
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

pub async fn webhooks_only() -> Result {
    let app = new_app().await;
    post_hooks(&app, &webhooks(&scenario())).await;
    settle(&app, &mut BTreeMap::new()).await
}
