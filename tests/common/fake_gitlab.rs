//! The fake GitLab REST API (v4) the GitLab backfill tests share, and the scenario it serves:
//! documented response shapes (GitLab docs `doc/api/projects.md`, `issues.md`, `events.md`,
//! `merge_requests.md`, `commits.md`, `pipelines.md`, `jobs.md`, `deployments.md`,
//! `environments.md`), offset pagination with `Link` and `X-Next-Page` headers, keyset
//! pagination (`pagination=keyset`, a `cursor` in the next link) for project jobs and group
//! projects, `RateLimit-*` headers on every answer, a weak `ETag` on every answer and a 304 to
//! an `If-None-Match` that matches it (Rails' `Rack::ETag` and `Rack::ConditionalGet`), faults
//! on demand (the limit running out, a 429 with `Retry-After`, a 502), a 401 without the right `PRIVATE-TOKEN`, and a log of every request.
//! Also the scenario's webhooks, written from the fixtures in `tests/fixtures/gitlab/` as GitLab
//! sends them (times in the hooks' `2024-03-01 10:00:00 UTC` shape, the API's in ISO 8601).
//!
//! Included after `fake_github` (whose `settle`, `diff` and `facts` compare runs):
//! `#[path = "common/fake_gitlab.rs"] mod fake_gitlab;`.
#![allow(dead_code)]

use crate::common::*;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use valuestream::store::embedded::EmbeddedStore;

pub const PROJECT: &str = "gitlabhq/gitlab-test";
pub const PROJECT_ID: u64 = 1;
pub const WEB: &str = "http://example.com/gitlabhq/gitlab-test";
pub const BRANCH: &str = "master";
pub const FEATURE: &str = "fix-checkout";
/// The API token (`GITLAB_TOKEN`).
pub const TOKEN: &str = "glpat-test-token";
/// The webhook secret (`VALUESTREAM_GITLAB_TOKEN`, sent as `X-Gitlab-Token`).
pub const HOOK_SECRET: &str = "test-gitlab-hook-token";
pub const SINCE: &str = "2024-03-01T00:00:00Z";

/// An API time (ISO 8601 with milliseconds, as the REST API writes them).
pub fn t(hm: &str) -> String {
    format!("2024-03-01T{hm}:00.000Z")
}

/// A hook time (`2024-03-01 10:00:00 UTC`, as Pipeline, Job and Deployment Hooks write them).
pub fn h(hm: &str) -> String {
    format!("2024-03-01 {hm}:00 UTC")
}

pub fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

// ---------------------------------------------------------------- the scenario

/// A commit on the default branch: (sha, parents, committed date, message).
#[derive(Clone)]
pub struct C {
    pub sha: String,
    pub parents: Vec<String>,
    pub at: String,
    pub message: String,
}

/// One project's history, as the API's final objects plus the commits and issue events.
pub struct Scenario {
    pub project: Value,
    pub issues: Vec<Value>,
    pub mrs: Vec<Value>,
    /// Newest first, as `GET /repository/commits` lists them.
    pub commits: Vec<C>,
    /// As `GET /pipelines/:id` answers (the list shows fewer fields).
    pub pipelines: Vec<Value>,
    /// Every job of every pipeline.
    pub jobs: Vec<Value>,
    pub deployments: Vec<Value>,
    pub environments: Vec<Value>,
    /// Issues' closes and reopenings, oldest first: iid → (`closed`/`reopened`, API time).
    pub history: BTreeMap<u64, Vec<(String, String)>>,
}

fn user() -> Value {
    json!({"id": 1, "username": "root", "name": "Administrator", "state": "active",
           "avatar_url": null, "web_url": "http://example.com/root"})
}

/// The API's `GET /projects/:id`.
pub fn api_project() -> Value {
    json!({
        "id": PROJECT_ID,
        "description": "Aut reprehenderit ut est.",
        "name": "Gitlab Test",
        "name_with_namespace": "GitlabHQ / Gitlab Test",
        "path": "gitlab-test",
        "path_with_namespace": PROJECT,
        "created_at": "2013-09-30T13:46:02Z",
        "default_branch": BRANCH,
        "tag_list": [],
        "topics": [],
        "ssh_url_to_repo": "git@example.com:gitlabhq/gitlab-test.git",
        "http_url_to_repo": "http://example.com/gitlabhq/gitlab-test.git",
        "web_url": WEB,
        "avatar_url": null,
        "namespace": {"id": 41, "name": "GitlabHQ", "path": "gitlabhq", "kind": "group", "full_path": "gitlabhq"},
        "visibility": "public",
        "archived": false,
        "ci_config_path": null,
        "last_activity_at": "2024-03-01T14:30:00.000Z",
    })
}

fn label(id: u64, name: &str) -> Value {
    json!({"id": id, "name": name, "color": "#d9534f", "description": null,
           "description_html": "", "text_color": "#FFFFFF", "subscribed": false, "priority": null,
           "is_project_label": true})
}

/// An issue opened at 09:00 and closed by the merge at 11:05; an incident closed too early,
/// reopened and closed for good; a merge request on a branch that closes the issue, opened
/// 10:00 and merged 11:00 as a merge commit of one branch commit; two direct commits; a
/// merge-request pipeline (a job passing, one failing that may, a manual one never run) and a
/// default-branch pipeline still running; a production deployment of the merge that succeeds,
/// one of a later commit that fails, a staging one still running.
pub fn scenario() -> Scenario {
    let issue =
        |iid: u64, title: &str, created: &str, closed: &str, updated: &str, labels: Value| {
            json!({
                "id": 1000 + iid,
                "iid": iid,
                "project_id": PROJECT_ID,
                "title": title,
                "description": "",
                "state": "closed",
                "created_at": t(created),
                "updated_at": t(updated),
                "closed_at": t(closed),
                "closed_by": user(),
                "labels": labels,
                "milestone": null,
                "assignees": [],
                "author": user(),
                "type": "ISSUE",
                "issue_type": "issue",
                "assignee": null,
                "user_notes_count": 1,
                "merge_requests_count": 1,
                "upvotes": 0,
                "downvotes": 0,
                "due_date": null,
                "confidential": false,
                "discussion_locked": null,
                "web_url": format!("{WEB}/-/issues/{iid}"),
                "severity": "UNKNOWN",
            })
        };
    let issues = vec![
        issue(
            1,
            "Checkout fails",
            "09:00",
            "11:05",
            "11:30",
            json!([label(206, "bug")]),
        ),
        issue(
            5,
            "Checkout is down",
            "13:45",
            "14:30",
            "14:30",
            json!([label(207, "incident")]),
        ),
    ];
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
    let mr = |iid: u64, branch: &str, created: &str, merged: &str, head: &str, merge: &str| {
        json!({
            "id": 2000 + iid,
            "iid": iid,
            "project_id": PROJECT_ID,
            "title": "Fix checkout",
            "description": "Closes #1",
            "state": "merged",
            "created_at": created,
            "updated_at": merged,
            "merged_by": user(),
            "merge_user": user(),
            "merged_at": merged,
            "closed_by": null,
            "closed_at": null,
            "target_branch": BRANCH,
            "source_branch": branch,
            "user_notes_count": 0,
            "upvotes": 0,
            "downvotes": 0,
            "author": user(),
            "assignees": [],
            "reviewers": [],
            "source_project_id": PROJECT_ID,
            "target_project_id": PROJECT_ID,
            "labels": [],
            "draft": false,
            "work_in_progress": false,
            "milestone": null,
            "merge_when_pipeline_succeeds": false,
            "merge_status": "can_be_merged",
            "detailed_merge_status": "not_open",
            "sha": head,
            "merge_commit_sha": merge,
            "squash_commit_sha": null,
            "squash": false,
            "should_remove_source_branch": true,
            "reference": format!("!{iid}"),
            "web_url": format!("{WEB}/-/merge_requests/{iid}"),
        })
    };
    let mrs = vec![
        mr(2, FEATURE, &t("10:00"), &t("11:00"), &head, &merge),
        // An old merge request the window does not reach.
        mr(
            7,
            "old",
            "2024-01-01T10:00:00.000Z",
            "2024-01-02T10:00:00.000Z",
            &sha('6'),
            &sha('7'),
        ),
    ];

    let commits = vec![
        C {
            sha: d2.clone(),
            parents: vec![d1.clone()],
            at: t("13:00"),
            message: "Tune the cache\n".into(),
        },
        C {
            sha: d1.clone(),
            parents: vec![merge.clone()],
            at: t("11:30"),
            message: "Bump the version\n".into(),
        },
        C {
            sha: merge.clone(),
            parents: vec![base0.clone(), head.clone()],
            at: t("11:00"),
            message: format!("Merge branch '{FEATURE}' into '{BRANCH}'\n\nFix checkout\n\nCloses #1\n\nSee merge request {PROJECT}!2"),
        },
        C {
            sha: head.clone(),
            parents: vec![base0.clone()],
            at: t("09:40"),
            message: "Fix checkout\n".into(),
        },
    ];

    let pipeline = |id: u64,
                    name: Value,
                    git_ref: &str,
                    sha: &str,
                    source: &str,
                    status: &str,
                    times: (&str, &str, Option<&str>),
                    durations: (Option<u64>, Option<u64>)| {
        json!({
            "id": id,
            "iid": id - 90,
            "project_id": PROJECT_ID,
            "name": name,
            "sha": sha,
            "ref": git_ref,
            "status": status,
            "source": source,
            "created_at": t(times.0),
            "updated_at": t(times.2.unwrap_or(times.1)),
            "web_url": format!("{WEB}/-/pipelines/{id}"),
            "before_sha": "0000000000000000000000000000000000000000",
            "tag": false,
            "yaml_errors": null,
            "user": user(),
            "started_at": t(times.1),
            "finished_at": times.2.map(t),
            "committed_at": null,
            "duration": durations.0,
            "queued_duration": durations.1,
            "coverage": null,
            "detailed_status": {"icon": format!("status_{status}"), "text": status, "label": status, "group": status},
        })
    };
    let pipelines = vec![
        pipeline(
            100,
            Value::Null,
            "refs/merge-requests/2/head",
            &head,
            "merge_request_event",
            "success",
            ("10:05", "10:06", Some("10:15")),
            (Some(480), Some(60)),
        ),
        pipeline(
            101,
            json!("Build pipeline"),
            BRANCH,
            &d2,
            "push",
            "running",
            ("13:01", "13:02", None),
            (None, Some(60)),
        ),
    ];
    let job = |id: u64,
               pipeline: &Value,
               name: &str,
               stage: &str,
               status: &str,
               times: (&str, Option<&str>, Option<&str>),
               allow_failure: bool| {
        let started = times.1.map(t);
        let finished = times.2.map(t);
        let duration = match (times.1, times.2) {
            (Some(_), Some(_)) => json!(60.5),
            _ => Value::Null,
        };
        let mut j = json!({
            "id": id,
            "status": status,
            "stage": stage,
            "name": name,
            "ref": pipeline["ref"],
            "tag": false,
            "coverage": null,
            "allow_failure": allow_failure,
            "created_at": t(times.0),
            "started_at": started,
            "finished_at": finished,
            "erased_at": null,
            "duration": duration,
            "queued_duration": if times.1.is_some() { json!(1.5) } else { Value::Null },
            "user": user(),
            "commit": {"id": pipeline["sha"], "short_id": &pipeline["sha"].as_str().unwrap()[..8], "title": "Fix checkout"},
            "pipeline": {"id": pipeline["id"], "project_id": PROJECT_ID, "ref": pipeline["ref"],
                         "sha": pipeline["sha"], "status": pipeline["status"]},
            "web_url": format!("{WEB}/-/jobs/{id}"),
            "artifacts": [],
            "runner": null,
            "artifacts_expire_at": null,
            "tag_list": [],
        });
        if status == "failed" {
            j["failure_reason"] = json!("script_failure");
        }
        j
    };
    let (p100, p101) = (&pipelines[0], &pipelines[1]);
    let jobs = vec![
        job(
            200,
            p100,
            "build",
            "build",
            "success",
            ("10:05", Some("10:06"), Some("10:09")),
            false,
        ),
        job(
            201,
            p100,
            "test",
            "test",
            "success",
            ("10:05", Some("10:09"), Some("10:14")),
            false,
        ),
        job(
            202,
            p100,
            "lint",
            "test",
            "failed",
            ("10:05", Some("10:09"), Some("10:10")),
            true,
        ),
        job(
            203,
            p100,
            "deploy-review",
            "deploy",
            "manual",
            ("10:05", None, None),
            false,
        ),
        job(
            204,
            p101,
            "build",
            "build",
            "running",
            ("13:01", Some("13:02"), None),
            false,
        ),
    ];

    let deployment = |id: u64,
                      sha: &str,
                      env: &str,
                      status: &str,
                      times: (&str, &str, Option<&str>)| {
        let finished = times.2.map(t);
        json!({
            "id": id,
            "iid": id - 300,
            "ref": BRANCH,
            "sha": sha,
            "created_at": t(times.0),
            "updated_at": t(times.2.unwrap_or(times.1)),
            "finished_at": finished,
            "status": status,
            "user": user(),
            "environment": {"id": if env == "production" { 1 } else { 2 }, "name": env, "slug": env,
                            "external_url": format!("https://{env}.example.com"),
                            "created_at": "2023-01-01T00:00:00.000Z", "updated_at": t(times.0)},
            "deployable": {
                "id": id + 4000,
                "status": status,
                "stage": "deploy",
                "name": format!("deploy-{env}"),
                "ref": BRANCH,
                "tag": false,
                "coverage": null,
                "created_at": t(times.0),
                "started_at": t(times.1),
                "finished_at": finished,
                "duration": 240.0,
                "user": user(),
                "commit": {"id": sha, "short_id": &sha[..8], "title": "Deploy", "message": "Deploy\n"},
                "pipeline": {"id": id + 90, "sha": sha, "ref": BRANCH, "status": status},
                "web_url": format!("{WEB}/-/jobs/{}", id + 4000),
                "artifacts": [],
                "runner": null,
            },
        })
    };
    let deployments = vec![
        deployment(
            301,
            &merge,
            "production",
            "success",
            ("12:00", "12:01", Some("12:05")),
        ),
        deployment(303, &d2, "staging", "running", ("13:20", "13:21", None)),
        deployment(
            302,
            &d2,
            "production",
            "failed",
            ("13:30", "13:31", Some("13:40")),
        ),
    ];
    let environments = vec![
        json!({"id": 1, "name": "production", "slug": "production", "external_url": "https://production.example.com", "state": "available", "tier": "production"}),
        json!({"id": 2, "name": "staging", "slug": "staging", "external_url": "https://staging.example.com", "state": "available", "tier": "staging"}),
    ];
    Scenario {
        project: api_project(),
        issues,
        mrs,
        commits,
        pipelines,
        jobs,
        deployments,
        environments,
        history,
    }
}

/// One webhook delivery: (`X-Gitlab-Event`, `X-Gitlab-Event-UUID`, body).
pub type Hook = (String, String, Value);

/// The API time `2024-03-01T10:00:00.000Z` as a hook writes it (`2024-03-01 10:00:00 UTC`).
fn hook_time(v: &Value) -> Value {
    match v.as_str() {
        Some(s) => json!(s.replace('T', " ").replace(".000Z", " UTC")),
        None => Value::Null,
    }
}

/// The hooks' `project` object (the fixtures', naming the scenario's project).
pub fn hook_project() -> Value {
    let mut p = fixture_json("gitlab/issue.json")["project"].clone();
    p["id"] = json!(PROJECT_ID);
    p["path_with_namespace"] = json!(PROJECT);
    p["web_url"] = json!(WEB);
    p["homepage"] = json!(WEB);
    p["default_branch"] = json!(BRANCH);
    p
}

fn hook_labels(api: &Value) -> Value {
    Value::Array(
        api["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                json!({"id": l["id"], "title": l["name"], "color": l["color"], "project_id": PROJECT_ID,
                       "created_at": "2013-12-03T17:15:43Z", "updated_at": "2013-12-03T17:15:43Z",
                       "template": false, "description": null, "type": "ProjectLabel", "group_id": null})
            })
            .collect(),
    )
}

/// The webhooks GitLab sent for the scenario, written from the fixtures: each carries the object
/// as it was at that moment. Pipelines and jobs send every status they went through (`pending`
/// and `created` ones too, which the service ignores).
pub fn webhooks(s: &Scenario) -> Vec<Hook> {
    let mut out: Vec<Hook> = Vec::new();
    let mut n = 0;
    let mut hook = |event: &str, body: Value| {
        n += 1;
        out.push((event.to_string(), format!("hook-{n}"), body));
    };
    let project = hook_project();

    for i in &s.issues {
        let mut v = fixture_json("gitlab/issue.json");
        v.as_object_mut().unwrap().remove("changes");
        v["project"] = project.clone();
        let labels = hook_labels(i);
        v["labels"] = labels.clone();
        let oa = &mut v["object_attributes"];
        oa["id"] = i["id"].clone();
        oa["iid"] = i["iid"].clone();
        oa["title"] = i["title"].clone();
        oa["description"] = i["description"].clone();
        oa["url"] = i["web_url"].clone();
        oa["project_id"] = json!(PROJECT_ID);
        oa["created_at"] = i["created_at"].clone();
        oa["labels"] = labels;
        oa["type"] = json!("Issue");
        let mut at = |v: &mut Value, action: &str, state: &str, updated: &Value, closed: &Value| {
            let oa = &mut v["object_attributes"];
            oa["action"] = json!(action);
            oa["state"] = json!(state);
            oa["updated_at"] = updated.clone();
            oa["closed_at"] = closed.clone();
            hook("Issue Hook", v.clone());
        };
        at(&mut v, "open", "opened", &i["created_at"], &Value::Null);
        for (action, when) in &s.history[&i["iid"].as_u64().unwrap()] {
            if action == "closed" {
                at(&mut v, "close", "closed", &json!(when), &json!(when));
            } else {
                at(&mut v, "reopen", "opened", &json!(when), &Value::Null);
            }
        }
    }

    for m in s.mrs.iter().filter(|m| m["iid"] == 2) {
        let mut v = fixture_json("gitlab/merge_request.json");
        v.as_object_mut().unwrap().remove("changes");
        v["project"] = project.clone();
        v["labels"] = json!([]);
        let oa = &mut v["object_attributes"];
        for k in [
            "id",
            "iid",
            "title",
            "description",
            "source_branch",
            "target_branch",
            "created_at",
            "source_project_id",
            "target_project_id",
        ] {
            oa[k] = m[k].clone();
        }
        oa["url"] = m["web_url"].clone();
        oa["labels"] = json!([]);
        oa["last_commit"]["id"] = m["sha"].clone();
        oa["action"] = json!("open");
        oa["state"] = json!("opened");
        oa["updated_at"] = m["created_at"].clone();
        hook("Merge Request Hook", v.clone());
        let oa = &mut v["object_attributes"];
        oa["action"] = json!("merge");
        oa["state"] = json!("merged");
        oa["updated_at"] = m["merged_at"].clone();
        oa["merge_commit_sha"] = m["merge_commit_sha"].clone();
        hook("Merge Request Hook", v);
    }

    // Pushes to the default branch: the merge (with the branch's commit), then each direct one.
    let by_sha: HashMap<&str, &C> = s.commits.iter().map(|c| (c.sha.as_str(), c)).collect();
    let push = |after: &C, with: &[&C]| {
        let mut v = fixture_json("gitlab/push.json");
        v["project"] = project.clone();
        v["project_id"] = json!(PROJECT_ID);
        v["ref"] = json!(format!("refs/heads/{BRANCH}"));
        v["before"] = json!(after.parents[0]);
        v["after"] = json!(after.sha);
        v["checkout_sha"] = json!(after.sha);
        v["commits"] = json!(with
            .iter()
            .map(|c| json!({
                "id": c.sha,
                "message": c.message,
                "title": c.message.lines().next().unwrap(),
                "timestamp": c.at.replace(".000Z", "+00:00"),
                "url": format!("{WEB}/-/commit/{}", c.sha),
                "author": {"name": "Administrator", "email": "admin@example.com"},
                "added": [], "modified": [], "removed": [],
            }))
            .collect::<Vec<_>>());
        v["total_commits_count"] = json!(with.len());
        v
    };
    let c = |x: char| by_sha[sha(x).as_str()];
    hook("Push Hook", push(c('b'), &[c('a'), c('b')]));
    hook("Push Hook", push(c('d'), &[c('d')]));
    hook("Push Hook", push(c('e'), &[c('e')]));

    for p in &s.pipelines {
        let jobs: Vec<&Value> = s
            .jobs
            .iter()
            .filter(|j| j["pipeline"]["id"] == p["id"])
            .collect();
        let mr = p["ref"]
            .as_str()
            .unwrap()
            .strip_prefix("refs/merge-requests/")
            .map(|r| r.split('/').next().unwrap().parse::<u64>().unwrap())
            .and_then(|iid| s.mrs.iter().find(|m| m["iid"] == iid));
        let mut v = fixture_json("gitlab/pipeline.json");
        v.as_object_mut().unwrap().remove("source_pipeline");
        v["project"] = project.clone();
        v["commit"]["id"] = p["sha"].clone();
        v["merge_request"] = match mr {
            Some(m) => {
                let mut x = v["merge_request"].clone();
                x["id"] = m["id"].clone();
                x["iid"] = m["iid"].clone();
                x["title"] = m["title"].clone();
                x["source_branch"] = m["source_branch"].clone();
                x["target_branch"] = m["target_branch"].clone();
                x["source_project_id"] = json!(PROJECT_ID);
                x["target_project_id"] = json!(PROJECT_ID);
                x["url"] = m["web_url"].clone();
                x
            }
            None => Value::Null,
        };
        let oa = &mut v["object_attributes"];
        oa["id"] = p["id"].clone();
        oa["iid"] = p["iid"].clone();
        oa["name"] = p["name"].clone();
        oa["ref"] = mr.map_or(p["ref"].clone(), |m| m["source_branch"].clone());
        oa["sha"] = p["sha"].clone();
        oa["before_sha"] = p["before_sha"].clone();
        oa["source"] = p["source"].clone();
        oa["created_at"] = hook_time(&p["created_at"]);
        oa["url"] = p["web_url"].clone();
        let build = |j: &Value, status: &str, started: bool, ended: bool| {
            json!({
                "id": j["id"], "stage": j["stage"], "name": j["name"], "status": status,
                "created_at": hook_time(&j["created_at"]),
                "started_at": if started { hook_time(&j["started_at"]) } else { Value::Null },
                "finished_at": if ended { hook_time(&j["finished_at"]) } else { Value::Null },
                "duration": if ended { j["duration"].clone() } else { Value::Null },
                "queued_duration": if started { j["queued_duration"].clone() } else { Value::Null },
                "when": "on_success", "manual": status == "manual",
                "allow_failure": j["allow_failure"],
                "failure_reason": if ended { j["failure_reason"].clone() } else { Value::Null },
                "user": j["user"], "runner": null,
                "artifacts_file": {"filename": null, "size": null},
            })
        };
        // pending at its creation, running once its first job started, then its end
        let mut stage =
            |v: &mut Value, status: &str, builds: Vec<Value>, ended: bool, queued: bool| {
                let oa = &mut v["object_attributes"];
                oa["status"] = json!(status);
                oa["detailed_status"] = json!(status);
                oa["finished_at"] = if ended {
                    hook_time(&p["finished_at"])
                } else {
                    Value::Null
                };
                oa["duration"] = if ended {
                    p["duration"].clone()
                } else {
                    Value::Null
                };
                oa["queued_duration"] = if queued {
                    p["queued_duration"].clone()
                } else {
                    Value::Null
                };
                v["builds"] = json!(builds);
                hook("Pipeline Hook", v.clone());
            };
        let created = |j: &&Value| {
            build(
                j,
                if j["status"] == "manual" {
                    "manual"
                } else {
                    "created"
                },
                false,
                false,
            )
        };
        stage(
            &mut v,
            "pending",
            jobs.iter().map(created).collect(),
            false,
            false,
        );
        stage(
            &mut v,
            "running",
            jobs.iter()
                .map(|j| {
                    if j["stage"] == "build" {
                        build(j, "running", true, false)
                    } else {
                        created(j)
                    }
                })
                .collect(),
            false,
            true,
        );
        let status = p["status"].as_str().unwrap();
        if status != "running" {
            stage(
                &mut v,
                status,
                jobs.iter()
                    .map(|j| {
                        let st = j["status"].as_str().unwrap();
                        build(
                            j,
                            st,
                            !j["started_at"].is_null(),
                            !j["finished_at"].is_null(),
                        )
                    })
                    .collect(),
                true,
                true,
            );
        }
        for j in &jobs {
            let mut v = fixture_json("gitlab/job.json");
            v.as_object_mut().unwrap().remove("environment");
            v["ref"] = j["ref"].clone();
            v["tag"] = json!(false);
            v["sha"] = p["sha"].clone();
            v["before_sha"] = p["before_sha"].clone();
            v["build_id"] = j["id"].clone();
            v["build_name"] = j["name"].clone();
            v["build_stage"] = j["stage"].clone();
            v["build_created_at"] = hook_time(&j["created_at"]);
            v["build_allow_failure"] = j["allow_failure"].clone();
            v["pipeline_id"] = p["id"].clone();
            v["project_id"] = json!(PROJECT_ID);
            v["project_name"] = json!("GitlabHQ / Gitlab Test");
            v["project"] = project.clone();
            v["repository"]["homepage"] = json!(WEB);
            v["commit"]["id"] = p["id"].clone();
            v["commit"]["name"] = p["name"].clone();
            v["commit"]["sha"] = p["sha"].clone();
            let mut send = |v: &mut Value, status: &str, started: bool, ended: bool| {
                v["build_status"] = json!(status);
                v["build_started_at"] = if started {
                    hook_time(&j["started_at"])
                } else {
                    Value::Null
                };
                v["build_finished_at"] = if ended {
                    hook_time(&j["finished_at"])
                } else {
                    Value::Null
                };
                v["build_duration"] = if ended {
                    j["duration"].clone()
                } else {
                    Value::Null
                };
                v["build_queued_duration"] = if started {
                    j["queued_duration"].clone()
                } else {
                    Value::Null
                };
                v["build_failure_reason"] = if ended {
                    j["failure_reason"].clone()
                } else {
                    Value::Null
                };
                hook("Job Hook", v.clone());
            };
            if j["started_at"].is_null() {
                send(&mut v, j["status"].as_str().unwrap(), false, false);
                continue;
            }
            send(&mut v, "pending", false, false);
            send(&mut v, "running", true, false);
            if !j["finished_at"].is_null() {
                send(&mut v, j["status"].as_str().unwrap(), true, true);
            }
        }
    }

    let mut deps = s.deployments.clone();
    deps.sort_by_key(|d| d["id"].as_u64());
    for d in &deps {
        let mut v = fixture_json("gitlab/deployment.json");
        v["project"] = project.clone();
        v["deployment_id"] = d["id"].clone();
        v["deployable_id"] = d["deployable"]["id"].clone();
        v["deployable_url"] = d["deployable"]["web_url"].clone();
        let env = d["environment"]["name"].as_str().unwrap();
        v["environment"] = json!(env);
        v["environment_slug"] = json!(env);
        v["environment_tier"] = json!(env);
        v["environment_external_url"] = d["environment"]["external_url"].clone();
        let sha = d["sha"].as_str().unwrap();
        v["short_sha"] = json!(&sha[..8]);
        v["commit_url"] = json!(format!("{WEB}/-/commit/{sha}"));
        v["commit_title"] = json!("Deploy");
        v["ref"] = d["ref"].clone();
        v["status"] = json!("running");
        v["status_changed_at"] = hook_time(&d["deployable"]["started_at"]);
        hook("Deployment Hook", v.clone());
        let status = d["status"].as_str().unwrap();
        if status != "running" {
            v["status"] = json!(status);
            v["status_changed_at"] = hook_time(&d["finished_at"]);
            hook("Deployment Hook", v);
        }
    }
    out
}

// ---------------------------------------------------------------- the fake GitLab API

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// 200 with `RateLimit-Remaining: 0` and the reset two seconds ahead.
    Exhausted,
    /// 429 with `Retry-After: 1` (and `RateLimit-Remaining: 0`).
    TooMany,
    BadGateway,
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
    /// The `PRIVATE-TOKEN` header sent.
    pub token: Option<String>,
    /// The `If-None-Match` header sent.
    pub if_none_match: Option<String>,
}

pub struct Fake {
    pub s: Scenario,
    pub token: String,
    pub addr: Mutex<String>,
    /// (path suffix, nth matching request (1-based), fault).
    pub faults: Mutex<Vec<(String, usize, Fault)>>,
    pub seen: Mutex<Vec<Seen>>,
    /// Merge requests added to the scenario's after the start (a change between two runs).
    pub more_mrs: Mutex<Vec<Value>>,
}

impl Fake {
    pub async fn start(s: Scenario, faults: Vec<(&str, usize, Fault)>) -> Arc<Fake> {
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
            more_mrs: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(serve).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *fake.addr.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    /// The API URL, as a self-managed instance's: `http://HOST/api/v4`.
    pub fn url(&self) -> String {
        format!("{}/api/v4", self.addr.lock().unwrap())
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

    fn commit(&self, c: &C) -> Value {
        json!({
            "id": c.sha,
            "short_id": &c.sha[..8],
            "created_at": c.at,
            "parent_ids": c.parents,
            "title": c.message.lines().next().unwrap(),
            "message": c.message,
            "author_name": "Administrator",
            "author_email": "admin@example.com",
            "authored_date": c.at,
            "committer_name": "Administrator",
            "committer_email": "admin@example.com",
            "committed_date": c.at,
            "trailers": {},
            "web_url": format!("{WEB}/-/commit/{}", c.sha),
        })
    }

    /// The full list a path names and whether it pages by keyset, or None (404).
    fn list(&self, rest: &str, q: &HashMap<String, String>) -> Option<(Vec<Value>, bool)> {
        let after = |v: &Value, k: &str, param: &str| {
            q.get(param)
                .is_none_or(|s| v[k].as_str().unwrap_or_default() >= s.as_str())
        };
        let sort_by = |all: &mut Vec<Value>, k: &str| {
            all.sort_by_key(|v| {
                (
                    v[k].as_str().unwrap_or_default().to_string(),
                    v["id"].as_u64(),
                )
            })
        };
        let base = format!("/projects/{PROJECT_ID}");
        if rest == "/groups/gitlabhq/projects" {
            assert_eq!(q.get("pagination").map(String::as_str), Some("keyset"));
            let mut archived = self.s.project.clone();
            archived["id"] = json!(9);
            archived["path_with_namespace"] = json!("gitlabhq/old");
            archived["archived"] = json!(true);
            let all = if q.get("archived").map(String::as_str) == Some("false") {
                vec![self.s.project.clone()]
            } else {
                vec![self.s.project.clone(), archived]
            };
            return Some((all, true));
        }
        let rest = rest.strip_prefix(&base)?;
        Some(match rest {
            "/issues" => {
                let details = q.get("with_labels_details").map(String::as_str) == Some("true");
                let mut all: Vec<Value> = self
                    .s
                    .issues
                    .iter()
                    .filter(|v| after(v, "updated_at", "updated_after"))
                    .map(|i| {
                        let mut i = i.clone();
                        if !details {
                            i["labels"] = json!(i["labels"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|l| l["name"].clone())
                                .collect::<Vec<_>>());
                        }
                        i
                    })
                    .collect();
                sort_by(&mut all, "updated_at");
                (all, false)
            }
            "/events" => {
                assert_eq!(q.get("target_type").map(String::as_str), Some("issue"));
                let mut all = Vec::new();
                let mut id = 0;
                for i in &self.s.issues {
                    let iid = i["iid"].as_u64().unwrap();
                    let mut turns = vec![(
                        "opened".to_string(),
                        i["created_at"].as_str().unwrap().to_string(),
                    )];
                    turns.extend(self.s.history[&iid].iter().cloned());
                    for (action, at) in turns {
                        id += 1;
                        all.push(json!({
                            "id": id,
                            "project_id": PROJECT_ID,
                            "action_name": action,
                            "target_id": i["id"],
                            "target_iid": iid,
                            "target_type": "Issue",
                            "author_id": 1,
                            "target_title": i["title"],
                            "created_at": at,
                            "author": user(),
                            "imported": false,
                            "imported_from": "none",
                            "author_username": "root",
                        }));
                    }
                }
                // `after`/`before` are dates, both excluded.
                all.retain(|e| {
                    let day = &e["created_at"].as_str().unwrap()[..10];
                    q.get("after").is_none_or(|a| day > a.as_str())
                        && q.get("before").is_none_or(|b| day < b.as_str())
                });
                sort_by(&mut all, "created_at");
                (all, false)
            }
            "/merge_requests" => {
                let more = self.more_mrs.lock().unwrap().clone();
                let mut all: Vec<Value> = self
                    .s
                    .mrs
                    .iter()
                    .chain(&more)
                    .filter(|v| after(v, "updated_at", "updated_after"))
                    .cloned()
                    .collect();
                sort_by(&mut all, "updated_at");
                (all, false)
            }
            "/repository/commits" => {
                assert_eq!(q.get("ref_name").map(String::as_str), Some(BRANCH));
                let since = q.get("since").map(|s| s.replace('Z', ".000Z"));
                let all = self
                    .s
                    .commits
                    .iter()
                    .filter(|c| since.as_deref().is_none_or(|s| c.at.as_str() >= s))
                    .map(|c| self.commit(c))
                    .collect();
                (all, false)
            }
            "/pipelines" => {
                // The list shows fewer fields than one pipeline's answer.
                let keep = [
                    "id",
                    "iid",
                    "project_id",
                    "sha",
                    "ref",
                    "status",
                    "source",
                    "created_at",
                    "updated_at",
                    "web_url",
                    "name",
                ];
                let all = self
                    .s
                    .pipelines
                    .iter()
                    .filter(|v| after(v, "updated_at", "updated_after"))
                    .map(|p| {
                        let mut p = p.clone();
                        p.as_object_mut()
                            .unwrap()
                            .retain(|k, _| keep.contains(&k.as_str()));
                        p
                    })
                    .collect();
                (all, false)
            }
            "/jobs" => {
                assert_eq!(q.get("pagination").map(String::as_str), Some("keyset"));
                assert_eq!(q.get("sort").map(String::as_str), Some("desc"));
                let mut all = self.s.jobs.clone();
                // a job of an old pipeline, before the window
                if let Some(first) = all.first() {
                    let mut old = first.clone();
                    old["id"] = json!(150);
                    old["pipeline"]["id"] = json!(50);
                    old["created_at"] = json!("2024-01-02T10:00:00.000Z");
                    all.push(old);
                }
                all.sort_by_key(|j| std::cmp::Reverse(j["id"].as_u64()));
                (all, true)
            }
            "/deployments" => {
                let mut all: Vec<Value> = self
                    .s
                    .deployments
                    .iter()
                    .filter(|v| after(v, "updated_at", "updated_after"))
                    .cloned()
                    .collect();
                sort_by(&mut all, "updated_at");
                (all, false)
            }
            "/environments" => (self.s.environments.clone(), false),
            _ => return None,
        })
    }

    /// One object a path names, or None (404).
    fn one(&self, rest: &str) -> Option<Value> {
        if rest == format!("/projects/{}", PROJECT.replace('/', "%2F")) {
            return Some(self.s.project.clone());
        }
        if rest == "/groups/gitlabhq" {
            return Some(
                json!({"id": 41, "name": "GitlabHQ", "path": "gitlabhq", "full_path": "gitlabhq"}),
            );
        }
        let rest = rest.strip_prefix(&format!("/projects/{PROJECT_ID}"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts[..] {
            ["", "pipelines", id] => self
                .s
                .pipelines
                .iter()
                .find(|p| p["id"].as_u64() == id.parse().ok())
                .cloned(),
            ["", "merge_requests", iid] => self
                .s
                .mrs
                .iter()
                .find(|m| m["iid"].as_u64() == iid.parse().ok())
                .cloned(),
            _ => None,
        }
    }
}

/// A weak `ETag` of an answer's content, as Rails' `Rack::ETag` sends (`W/"<digest>"`).
pub fn weak_etag(body: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.to_string().hash(&mut h);
    format!("W/\"{:016x}\"", h.finish())
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

pub async fn serve(State(fake): State<Arc<Fake>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let now = Instant::now();
    let epoch = chrono::Utc::now().timestamp();
    let token = headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let if_none_match = headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut seen = Seen {
        path: path.clone(),
        query: query.clone(),
        status: 200,
        at: now,
        reset_at: None,
        token: token.clone(),
        if_none_match: if_none_match.clone(),
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
    let json_answer = |status: StatusCode, body: &str| {
        (
            status,
            [("content-type", "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    if token.as_deref() != Some(fake.token.as_str()) {
        seen.status = 401;
        return respond(
            &fake,
            seen,
            json_answer(
                StatusCode::UNAUTHORIZED,
                r#"{"message":"401 Unauthorized"}"#,
            ),
        );
    }
    match fault {
        Some(Fault::TooMany) => {
            seen.status = 429;
            let mut resp = json_answer(StatusCode::TOO_MANY_REQUESTS, "Retry later\n");
            let h = resp.headers_mut();
            h.insert("retry-after", HeaderValue::from_static("1"));
            h.insert("ratelimit-limit", HeaderValue::from_static("2000"));
            h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
            h.insert("ratelimit-reset", (epoch + 1).to_string().parse().unwrap());
            return respond(&fake, seen, resp);
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
    let Some(rest) = path.strip_prefix("/api/v4") else {
        seen.status = 404;
        return respond(
            &fake,
            seen,
            json_answer(StatusCode::NOT_FOUND, r#"{"message":"404 Not Found"}"#),
        );
    };
    let q = query_map(&query);
    let mut next_page: Option<usize> = None;
    let (body, link) = if let Some(one) = fake.one(rest) {
        (one, None)
    } else if let Some((all, keyset)) = fake.list(rest, &q) {
        let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(20);
        let next_url = |param: &str, value: String| {
            let mut kept: Vec<String> = query
                .split('&')
                .filter(|kv| !kv.starts_with(&format!("{param}=")) && !kv.is_empty())
                .map(str::to_string)
                .collect();
            kept.push(format!("{param}={value}"));
            format!(
                "<{}{path}?{}>; rel=\"next\"",
                fake.addr.lock().unwrap(),
                kept.join("&")
            )
        };
        if keyset {
            // The cursor is the ID the next page starts after (in the list's order).
            let start = match q.get("cursor") {
                Some(c) => {
                    let id: u64 = c.strip_prefix("id:").unwrap().parse().unwrap();
                    all.iter()
                        .position(|v| v["id"].as_u64() == Some(id))
                        .unwrap()
                        + 1
                }
                None => 0,
            };
            let items: Vec<Value> = all.iter().skip(start).take(per_page).cloned().collect();
            let link = (start + per_page < all.len())
                .then(|| next_url("cursor", format!("id:{}", items.last().unwrap()["id"])));
            (Value::Array(items), link)
        } else {
            let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let items: Vec<Value> = all
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .cloned()
                .collect();
            let more = page * per_page < all.len();
            next_page = more.then_some(page + 1);
            (
                Value::Array(items),
                more.then(|| next_url("page", (page + 1).to_string())),
            )
        }
    } else {
        seen.status = 404;
        return respond(
            &fake,
            seen,
            json_answer(StatusCode::NOT_FOUND, r#"{"message":"404 Not Found"}"#),
        );
    };
    // Rails' Rack::ETag: a weak ETag of the body; Rack::ConditionalGet: 304 when it matches.
    let etag = weak_etag(&body);
    let mut resp = if if_none_match.as_deref() == Some(etag.as_str()) {
        seen.status = 304;
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, axum::Json(body)).into_response()
    };
    let h = resp.headers_mut();
    h.insert("etag", etag.parse().unwrap());
    h.insert(
        "cache-control",
        HeaderValue::from_static("max-age=0, private, must-revalidate"),
    );
    h.insert("ratelimit-limit", HeaderValue::from_static("2000"));
    h.insert(
        "ratelimit-name",
        HeaderValue::from_static("throttle_authenticated_api"),
    );
    if fault == Some(Fault::Exhausted) {
        let reset = epoch + 2;
        h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("ratelimit-reset", reset.to_string().parse().unwrap());
        let until_ms = reset * 1000 - chrono::Utc::now().timestamp_millis();
        seen.reset_at = Some(now + Duration::from_millis(until_ms.max(0) as u64));
    } else {
        h.insert("ratelimit-remaining", HeaderValue::from_static("1990"));
        h.insert("ratelimit-reset", (epoch + 60).to_string().parse().unwrap());
    }
    if let Some(l) = link {
        h.insert("link", l.parse().unwrap());
    }
    if let Some(n) = next_page {
        h.insert("x-next-page", n.to_string().parse().unwrap());
    }
    respond(&fake, seen, resp)
}

// ---------------------------------------------------------------- driving the pipeline

pub fn gitlab_config() -> valuestream::config::Config {
    test_config(&[("VALUESTREAM_GITLAB_TOKEN", HOOK_SECRET)])
}

pub async fn new_app() -> App {
    new_app_on(Arc::new(EmbeddedStore::in_memory().unwrap())).await
}

pub async fn new_app_on(store: Arc<EmbeddedStore>) -> App {
    let app = app_with(store, gitlab_config()).await;
    // Everything is settled once, at the end: the order of arrival decides nothing.
    app.set_auto_drain(false);
    app
}

/// Posts webhooks with the hook secret; `pending` and `created` statuses are ignored, the rest
/// must be used.
pub async fn post_hooks(app: &App, hooks: &[Hook]) {
    for (event, id, body) in hooks {
        let (status, v) = app
            .post(
                "gitlab",
                &[
                    ("content-type", "application/json"),
                    ("x-gitlab-token", HOOK_SECRET),
                    ("x-gitlab-event", event),
                    ("x-gitlab-event-uuid", id),
                ],
                serde_json::to_vec(body).unwrap(),
            )
            .await;
        let waiting = ["pending", "created", "manual"]
            .iter()
            .any(|s| body["object_attributes"]["status"] == *s || body["build_status"] == *s);
        if waiting && v["status"] == "ignored" {
            assert_eq!(status, StatusCode::ACCEPTED, "{event} {id}: {v}");
        } else {
            assert_eq!(status, StatusCode::OK, "{event} {id}: {v}");
            assert_ne!(v["status"], "ignored", "{event} {id}: {v}");
        }
    }
}
