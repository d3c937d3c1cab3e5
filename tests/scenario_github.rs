//! The GitHub delivery flow end to end: issue → PR with commits → workflow run on the PR head →
//! merge → push → deployment success → second PR and a direct commit → deployment failure →
//! deployment success → staging deployment → incident issue. Checks the whole trace tree, every
//! span link, and the lead-time, deployment, change-failure and restore figures.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use valuestream::model::ids;

const REPO: &str = "codertocat/hello-world";
const FEATURE: &str = "feature/vstrace-github-Hello-World-1";

fn t(hm: &str) -> String {
    format!("2024-03-01T{hm}:00Z")
}

fn key(kind: &str, id: &str) -> String {
    format!("github/{kind}/{REPO}/{id}")
}

fn issue(
    action: &str,
    number: u64,
    title: &str,
    created: &str,
    closed: Option<&str>,
    labels: &[&str],
) -> Vec<u8> {
    edit("github/issues/opened.payload.json", |v| {
        v["action"] = json!(action);
        let i = &mut v["issue"];
        i["number"] = json!(number);
        i["title"] = json!(title);
        i["created_at"] = json!(created);
        i["updated_at"] = json!(closed.unwrap_or(created));
        i["closed_at"] = json!(closed);
        i["state"] = json!(if closed.is_some() { "closed" } else { "open" });
        i["labels"] = json!(labels
            .iter()
            .map(|l| json!({"name": l}))
            .collect::<Vec<_>>());
    })
}

struct Pr<'a> {
    number: u64,
    branch: &'a str,
    head: &'a str,
    created: String,
    merged: Option<(String, &'a str)>,
}

fn pull_request(action: &str, p: &Pr) -> Vec<u8> {
    edit("github/pull_request/opened.payload.json", |v| {
        v["action"] = json!(action);
        let pr = &mut v["pull_request"];
        pr["number"] = json!(p.number);
        pr["title"] = json!(format!("Change {}", p.number));
        pr["body"] = json!("");
        pr["head"]["ref"] = json!(p.branch);
        pr["head"]["sha"] = json!(p.head);
        pr["created_at"] = json!(p.created);
        pr["updated_at"] = json!(p.created);
        if let Some((at, sha)) = &p.merged {
            pr["state"] = json!("closed");
            pr["merged"] = json!(true);
            pr["merged_at"] = json!(at);
            pr["closed_at"] = json!(at);
            pr["merge_commit_sha"] = json!(sha);
        }
    })
}

fn push(branch: &str, commits: &[(&str, &str, &str)]) -> Vec<u8> {
    edit("github/push/payload.json", |v| {
        v["ref"] = json!(format!("refs/heads/{branch}"));
        v["deleted"] = json!(false);
        v["created"] = json!(false);
        v["before"] = json!("0000000000000000000000000000000000000001");
        v["after"] = json!(commits.last().unwrap().0);
        let list: Vec<Value> = commits
            .iter()
            .map(|(sha, at, msg)| json!({"id": sha, "timestamp": at, "message": msg}))
            .collect();
        v["head_commit"] = list.last().unwrap().clone();
        v["commits"] = json!(list);
    })
}

fn workflow_run(
    action: &str,
    head: &str,
    branch: &str,
    created: &str,
    started: &str,
    updated: &str,
) -> Vec<u8> {
    edit("github/workflow_run/completed.payload.json", |v| {
        v["action"] = json!(action);
        v["repository"] = fixture_json("github/issues/opened.payload.json")["repository"].clone();
        let r = &mut v["workflow_run"];
        r["id"] = json!(100);
        r["name"] = json!("CI");
        r["head_sha"] = json!(head);
        r["head_branch"] = json!(branch);
        r["created_at"] = json!(created);
        r["run_started_at"] = json!(started);
        r["updated_at"] = json!(updated);
        r["status"] = json!(if action == "completed" {
            "completed"
        } else {
            "queued"
        });
        r["conclusion"] = json!(if action == "completed" {
            Some("success")
        } else {
            None
        });
    })
}

fn workflow_job(head: &str, created: &str, started: &str, completed: &str) -> Vec<u8> {
    edit(
        "github/workflow_job/completed.success.with-organization.payload.json",
        |v| {
            v["repository"] =
                fixture_json("github/issues/opened.payload.json")["repository"].clone();
            let j = &mut v["workflow_job"];
            j["id"] = json!(500);
            j["run_id"] = json!(100);
            j["run_attempt"] = json!(1);
            j["name"] = json!("test");
            j["head_sha"] = json!(head);
            j["created_at"] = json!(created);
            j["started_at"] = json!(started);
            j["completed_at"] = json!(completed);
        },
    )
}

fn deployment(id: u64, sha: &str, env: &str, created: &str) -> Vec<u8> {
    edit("github/deployment/payload.json", |v| {
        let d = &mut v["deployment"];
        d["id"] = json!(id);
        d["sha"] = json!(sha);
        d["environment"] = json!(env);
        d["created_at"] = json!(created);
        d["updated_at"] = json!(created);
    })
}

fn deployment_status(
    id: u64,
    sha: &str,
    env: &str,
    created: &str,
    state: &str,
    at: &str,
) -> Vec<u8> {
    edit("github/deployment_status/payload.json", |v| {
        let d = &mut v["deployment"];
        d["id"] = json!(id);
        d["sha"] = json!(sha);
        d["environment"] = json!(env);
        d["created_at"] = json!(created);
        let s = &mut v["deployment_status"];
        s["state"] = json!(state);
        s["environment"] = json!(env);
        s["created_at"] = json!(at);
        s["updated_at"] = json!(at);
    })
}

#[tokio::test]
async fn the_whole_delivery_flow() {
    let store =
        std::sync::Arc::new(valuestream::store::embedded::EmbeddedStore::in_memory().unwrap());
    let app = app_with(
        store,
        test_config(&[("VALUESTREAM_TEAMS", "codertocat/hello-world=payments")]),
    )
    .await;
    let pr2 = Pr {
        number: 2,
        branch: FEATURE,
        head: "c2",
        created: t("09:20"),
        merged: None,
    };
    let pr2m = Pr {
        merged: Some((t("10:00"), "m1")),
        ..Pr {
            number: 2,
            branch: FEATURE,
            head: "c2",
            created: t("09:20"),
            merged: None,
        }
    };
    let pr3 = Pr {
        number: 3,
        branch: "fix-typo",
        head: "c3",
        created: t("11:10"),
        merged: None,
    };
    let pr3m = Pr {
        merged: Some((t("11:40"), "m2")),
        ..Pr {
            number: 3,
            branch: "fix-typo",
            head: "c3",
            created: t("11:10"),
            merged: None,
        }
    };
    let steps: Vec<(&str, Vec<u8>)> = vec![
        (
            "issues",
            issue("opened", 1, "Checkout fails", &t("09:00"), None, &["bug"]),
        ),
        (
            "push",
            push(
                FEATURE,
                &[("c1", &t("08:30"), "Start"), ("c2", &t("09:10"), "Finish")],
            ),
        ),
        ("pull_request", pull_request("opened", &pr2)),
        (
            "workflow_run",
            workflow_run(
                "requested",
                "c2",
                FEATURE,
                &t("09:21"),
                "2024-03-01T09:21:30Z",
                &t("09:21"),
            ),
        ),
        (
            "workflow_job",
            workflow_job("c2", "2024-03-01T09:21:30Z", &t("09:22"), &t("09:25")),
        ),
        (
            "workflow_run",
            workflow_run(
                "completed",
                "c2",
                FEATURE,
                &t("09:21"),
                "2024-03-01T09:21:30Z",
                "2024-03-01T09:26:30Z",
            ),
        ),
        ("pull_request", pull_request("closed", &pr2m)),
        (
            "push",
            push(
                "master",
                &[
                    ("c1", &t("08:30"), "Start"),
                    ("c2", &t("09:10"), "Finish"),
                    (
                        "m1",
                        &t("10:00"),
                        "Merge pull request #2 from Codertocat/feature",
                    ),
                ],
            ),
        ),
        (
            "issues",
            issue(
                "closed",
                1,
                "Checkout fails",
                &t("09:00"),
                Some("2024-03-01T10:00:05Z"),
                &["bug"],
            ),
        ),
        (
            "deployment",
            deployment(1001, "m1", "production", &t("10:30")),
        ),
        (
            "deployment_status",
            deployment_status(
                1001,
                "m1",
                "production",
                &t("10:30"),
                "success",
                &t("10:35"),
            ),
        ),
        (
            "push",
            push("master", &[("d1", &t("11:00"), "Bump version")]),
        ),
        ("push", push("fix-typo", &[("c3", &t("11:05"), "Fix typo")])),
        ("pull_request", pull_request("opened", &pr3)),
        ("pull_request", pull_request("closed", &pr3m)),
        (
            "push",
            push(
                "master",
                &[
                    ("c3", &t("11:05"), "Fix typo"),
                    (
                        "m2",
                        &t("11:40"),
                        "Merge pull request #3 from Codertocat/fix-typo",
                    ),
                ],
            ),
        ),
        (
            "deployment",
            deployment(1002, "m2", "production", &t("12:00")),
        ),
        (
            "deployment_status",
            deployment_status(
                1002,
                "m2",
                "production",
                &t("12:00"),
                "failure",
                &t("12:05"),
            ),
        ),
        (
            "deployment_status",
            deployment_status(
                1003,
                "m2",
                "production",
                &t("12:30"),
                "success",
                &t("12:40"),
            ),
        ),
        (
            "deployment_status",
            deployment_status(1004, "m2", "staging", &t("12:45"), "success", &t("12:50")),
        ),
        (
            "issues",
            issue(
                "opened",
                4,
                "Checkout is down",
                &t("13:00"),
                None,
                &["incident"],
            ),
        ),
        (
            "issues",
            issue(
                "closed",
                4,
                "Checkout is down",
                &t("13:00"),
                Some(&t("14:30")),
                &["incident"],
            ),
        ),
    ];
    for (i, (event, body)) in steps.into_iter().enumerate() {
        let (s, b) = app.github(event, &format!("delivery-{i}"), body).await;
        assert_eq!(s, StatusCode::OK, "step {i} ({event}): {b}");
        assert_eq!(b["status"], "processed", "step {i} ({event}): {b}");
    }

    let spans = app.receiver.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let get = |prefix: &str| -> &RSpan {
        let found: Vec<&RSpan> = spans
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .collect();
        assert_eq!(found.len(), 1, "{prefix}: {names:?}");
        found[0]
    };
    let issue1 = get("ISSUE #1");
    let pr2 = get("PR #2");
    let run = get("RUN CI");
    let job = get("JOB test");
    let pr3 = get("PR #3");
    let incident = get("INCIDENT #4");
    let deploys: Vec<&RSpan> = {
        let mut d: Vec<&RSpan> = spans
            .iter()
            .filter(|s| s.name.starts_with("DEPLOY"))
            .collect();
        d.sort_by_key(|s| s.attr_str("deployment.id").to_string());
        d
    };
    assert_eq!(deploys.len(), 4);
    let (d1, d2, d3, d4) = (deploys[0], deploys[1], deploys[2], deploys[3]);
    let stages: Vec<String> = spans
        .iter()
        .filter(|s| s.attr("valuestream.change.stage").is_some())
        .map(|s| format!("{} {}", s.attr_str("valuestream.key"), s.name))
        .collect();
    assert_eq!(
        stages,
        [
            "github/change/codertocat/hello-world/2 coding",
            "github/change/codertocat/hello-world/2 deploy",
            "github/change/codertocat/hello-world/3 coding",
            "github/change/codertocat/hello-world/3 deploy",
        ],
        "no review in this story: coding (first commits pushed before the PRs) and deploy"
    );
    assert_eq!(
        spans.len(),
        14,
        "4 deployments + issue, 2 PRs, run, job, incident, and 4 stages"
    );

    // The trace tree.
    let issue_key = key("issue", "1");
    assert_eq!(issue1.trace_id, ids::trace_id(&issue_key));
    eprintln!(
        "d1={:?} parent={} pr2={}",
        d1.name, d1.parent_span_id, pr2.span_id
    );
    for s in [pr2, run, job, d1] {
        assert_eq!(
            s.trace_id, issue1.trace_id,
            "{} is in the issue's trace",
            s.name
        );
    }
    assert_eq!(pr2.parent_span_id, issue1.span_id);
    assert_eq!(
        run.parent_span_id, pr2.span_id,
        "the run ran on the PR head"
    );
    assert_eq!(job.parent_span_id, run.span_id);
    assert_eq!(
        d1.parent_span_id, pr2.span_id,
        "deployment 1 deployed PR #2's merge commit"
    );
    let t2 = ids::trace_id(&key("change", "3"));
    for s in [pr3, d2, d3, d4, incident] {
        assert_eq!(s.trace_id, t2, "{} is in PR #3's trace", s.name);
    }
    assert_eq!(pr3.parent_span_id, "");
    for d in [d2, d3, d4] {
        assert_eq!(d.parent_span_id, pr3.span_id);
    }
    assert_eq!(
        incident.parent_span_id, d3.span_id,
        "the incident followed the last successful production deployment"
    );

    // Span links: what each deployment shipped.
    let links = |s: &RSpan| -> Vec<String> { s.links.iter().map(|l| l.1.clone()).collect() };
    assert_eq!(links(d1), [pr2.span_id.as_str()]);
    assert_eq!(
        links(d2),
        [pr3.span_id.as_str()],
        "the failed deployment carried PR #3 (and the direct commit)"
    );
    assert_eq!(
        links(d3),
        [pr3.span_id.as_str()],
        "the retry ships the same changes"
    );
    assert_eq!(
        links(d4),
        [pr2.span_id.as_str(), pr3.span_id.as_str()],
        "staging was never deployed before"
    );
    assert_eq!(
        d2.attr("valuestream.deployment.changes"),
        Some(&json!(2)),
        "PR #3 and the direct commit d1"
    );
    assert_eq!(d4.attr("valuestream.deployment.changes"), Some(&json!(3)));
    for l in d1.links.iter().chain(&d4.links) {
        assert_eq!(l.2.get("valuestream.link"), Some(&json!("shipped")));
    }

    // Times and results.
    assert_eq!(
        (run.start_ns, run.end_ns),
        (ns("2024-03-01T09:21:30Z"), ns("2024-03-01T09:26:30Z"))
    );
    assert_eq!(run.attr("valuestream.queue.duration_s"), Some(&json!(30.0)));
    assert_eq!(run.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(run.attr_str("cicd.pipeline.result"), "success");
    assert_eq!(job.attr("valuestream.queue.duration_s"), Some(&json!(30.0)));
    assert_eq!(
        (d2.status_code, d2.attr_str("valuestream.result")),
        (2, "failure")
    );
    assert_eq!(
        d3.attr("valuestream.deployment.recovery_time_s"),
        Some(&json!(2100.0))
    );
    assert_eq!(
        pr3.attr_str("valuestream.change.first_commit_time"),
        "2024-03-01T11:05:00+00:00"
    );
    assert_eq!(
        (incident.start_ns, incident.end_ns),
        (ns(&t("13:00")), ns(&t("14:30")))
    );
    assert_eq!(incident.attr_str("valuestream.kind"), "incident");
    assert_eq!(d4.attr("valuestream.production"), Some(&json!(false)));
    for s in &spans {
        assert_eq!(s.attr_str("valuestream.team"), "payments", "{}", s.name);
    }

    // The figures the metrics export.
    let points = app.receiver.latest_points();
    let sum_of = |name: &str, filter: &[(&str, &str)]| -> (f64, f64) {
        points
            .iter()
            .filter(|p| {
                p.name == name
                    && filter
                        .iter()
                        .all(|(k, v)| p.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .fold((0.0, 0.0), |(c, s), p| (c + p.value, s + p.sum))
    };
    let prod = [("valuestream.production", "true")];
    assert_eq!(
        sum_of(
            "valuestream.deployments",
            &[
                ("valuestream.production", "true"),
                ("valuestream.result", "success")
            ]
        )
        .0,
        2.0
    );
    assert_eq!(
        sum_of(
            "valuestream.deployments",
            &[
                ("valuestream.production", "true"),
                ("valuestream.result", "failure")
            ]
        )
        .0,
        1.0
    );
    assert_eq!(
        sum_of(
            "valuestream.deployments",
            &[("deployment.environment.name", "staging")]
        )
        .0,
        1.0
    );
    assert_eq!(
        sum_of("valuestream.change_failures", &[]).0,
        2.0,
        "deployment 1002 failed; 1003 led to the incident"
    );
    // Lead times: PR #2 10:35 - 08:30 (first commit) = 7500 s; d1 12:40 - 11:00 = 6000 s;
    // PR #3 12:40 - 11:05 (first commit, before the PR) = 5700 s.
    assert_eq!(
        sum_of("valuestream.change.lead_time", &prod),
        (3.0, 19200.0)
    );
    assert_eq!(
        sum_of("valuestream.change.lead_time", &[]).0,
        3.0,
        "staging adds no lead time"
    );
    assert_eq!(
        sum_of("valuestream.deployment.recovery_time", &[]),
        (1.0, 2100.0)
    );
    assert_eq!(sum_of("valuestream.time_to_restore", &[]), (1.0, 5400.0));
    assert_eq!(sum_of("valuestream.incident.duration", &[]), (1.0, 5400.0));
    assert_eq!(sum_of("valuestream.issue.duration", &[]), (1.0, 3605.0));
    assert_eq!(
        sum_of("valuestream.change.duration", &[]),
        (2.0, 2400.0 + 1800.0)
    );
    assert_eq!(
        sum_of(
            "cicd.pipeline.run.duration",
            &[
                ("cicd.pipeline.name", "CI"),
                ("cicd.pipeline.result", "success")
            ]
        ),
        (1.0, 300.0)
    );
    assert_eq!(sum_of("valuestream.task.duration", &[]), (1.0, 180.0));
    for p in &points {
        assert_eq!(
            p.labels.get("valuestream.team").map(String::as_str),
            Some("payments"),
            "{p:?}"
        );
        assert!(p.cumulative);
    }
}

#[tokio::test]
async fn a_rerun_links_to_its_previous_attempt() {
    let app = app().await;
    for attempt in [1, 2] {
        let body = edit("github/workflow_run/completed.payload.json", |v| {
            v["workflow_run"]["run_attempt"] = json!(attempt);
            v["workflow_run"]["conclusion"] =
                json!(if attempt == 1 { "failure" } else { "success" });
        });
        let (s, _) = app
            .github("workflow_run", &format!("a{attempt}"), body)
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let spans = app.receiver.spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].attr_str("cicd.pipeline.result"), "failure");
    assert_eq!(
        spans[0].name, "RUN test",
        "the workflow's name when the run has none"
    );
    assert_eq!(spans[1].links.len(), 1);
    assert_eq!(spans[1].links[0].1, spans[0].span_id);
    assert_eq!(
        spans[1].links[0].2.get("valuestream.link"),
        Some(&json!("retries"))
    );
}

#[tokio::test]
async fn workflow_conclusions_map_onto_the_result_enum() {
    let cases = [
        ("success", "success", 1),
        ("neutral", "success", 1),
        ("failure", "failure", 2),
        ("action_required", "failure", 2),
        ("stale", "failure", 2),
        ("cancelled", "cancellation", 1),
        ("skipped", "skip", 1),
        ("timed_out", "timeout", 2),
        ("startup_failure", "error", 2),
    ];
    for (conclusion, result, status) in cases {
        let app = app().await;
        let body = edit("github/workflow_run/completed.payload.json", |v| {
            v["workflow_run"]["conclusion"] = json!(conclusion)
        });
        app.github("workflow_run", "x", body).await;
        let s = &app.receiver.spans()[0];
        assert_eq!(
            (s.attr_str("cicd.pipeline.result"), s.status_code),
            (result, status),
            "{conclusion}"
        );
    }
}

#[tokio::test]
async fn every_other_github_event_is_ignored_with_202() {
    let app = app().await;
    // Every webhook event GitHub documents for repositories and organizations that we do not use.
    let events = [
        "branch_protection_configuration",
        "branch_protection_rule",
        "check_run",
        "check_suite",
        "code_scanning_alert",
        "commit_comment",
        "create",
        "custom_property",
        "custom_property_values",
        "delete",
        "dependabot_alert",
        "deploy_key",
        "deployment_protection_rule",
        "deployment_review",
        "discussion",
        "discussion_comment",
        "fork",
        "github_app_authorization",
        "gollum",
        "installation",
        "installation_repositories",
        "installation_target",
        "issue_comment",
        "label",
        "marketplace_purchase",
        "member",
        "membership",
        "merge_group",
        "meta",
        "milestone",
        "org_block",
        "organization",
        "package",
        "page_build",
        "personal_access_token_request",
        "project",
        "project_card",
        "project_column",
        "projects_v2",
        "projects_v2_item",
        "public",
        "pull_request_review_comment",
        "pull_request_review_thread",
        "registry_package",
        "release",
        "repository",
        "repository_advisory",
        "repository_dispatch",
        "repository_import",
        "repository_ruleset",
        "repository_vulnerability_alert",
        "secret_scanning_alert",
        "secret_scanning_alert_location",
        "security_advisory",
        "security_and_analysis",
        "sponsorship",
        "star",
        "status",
        "sub_issues",
        "team",
        "team_add",
        "watch",
        "workflow_dispatch",
    ];
    for e in events {
        let (s, b) = app
            .github(
                e,
                e,
                br#"{"action":"created","repository":{"full_name":"o/r"}}"#.to_vec(),
            )
            .await;
        assert_eq!(
            (s, b["status"].as_str()),
            (StatusCode::ACCEPTED, Some("ignored")),
            "{e}: {b}"
        );
    }
    // Unused actions of used events, too.
    for (e, action) in [
        ("issues", "assigned"),
        ("pull_request", "review_request_removed"),
        ("workflow_run", "something_new"),
        ("workflow_job", "future"),
    ] {
        let body = edit(
            &format!(
                "github/{}",
                match e {
                    "issues" => "issues/opened.payload.json",
                    "pull_request" => "pull_request/opened.payload.json",
                    "workflow_run" => "workflow_run/requested.payload.json",
                    _ => "workflow_job/queued.payload.json",
                }
            ),
            |v| v["action"] = json!(action),
        );
        let (s, b) = app.github(e, &format!("{e}-{action}"), body).await;
        assert_eq!(
            (s, b["status"].as_str()),
            (StatusCode::ACCEPTED, Some("ignored")),
            "{e}/{action}: {b}"
        );
    }
}

/// Deployment rework (docs/metrics.md "Deployment rework rate"): an incident follows a
/// production deployment, and the hotfix deployment that starts while it is open is rework
/// (`incident`); the one after its resolution is not. Exported as the span attributes and the
/// `valuestream.deployment.rework` counter.
#[tokio::test]
async fn rework_an_incident_then_a_hotfix_deploy_while_it_is_open() {
    let app = app().await;
    let status = |id: u64, created: &str, at: &str| {
        (
            "deployment_status",
            deployment_status(id, "m1", "production", &t(created), "success", &t(at)),
        )
    };
    let steps: Vec<(&str, Vec<u8>)> = vec![
        status(2001, "10:00", "10:05"),
        (
            "issues",
            issue(
                "opened",
                5,
                "Checkout is down",
                &t("10:30"),
                None,
                &["incident"],
            ),
        ),
        status(2002, "11:00", "11:05"),
        (
            "issues",
            issue(
                "closed",
                5,
                "Checkout is down",
                &t("10:30"),
                Some(&t("12:00")),
                &["incident"],
            ),
        ),
        status(2003, "12:30", "12:35"),
    ];
    for (i, (event, body)) in steps.into_iter().enumerate() {
        let (s, b) = app.github(event, &format!("rework-{i}"), body).await;
        assert_eq!(s, StatusCode::OK, "step {i} ({event}): {b}");
    }
    let spans = app.receiver.spans();
    let deploy = |id: &str| -> RSpan {
        let found: Vec<&RSpan> = spans
            .iter()
            .filter(|s| s.name.starts_with("DEPLOY") && s.attr_str("deployment.id") == id)
            .collect();
        assert_eq!(found.len(), 1, "deployment {id}");
        found[0].clone()
    };
    let rework = |s: &RSpan| {
        (
            s.attr("valuestream.deployment.rework").cloned(),
            s.attr("valuestream.deployment.rework.reason").cloned(),
        )
    };
    assert_eq!(rework(&deploy("2001")), (Some(json!(false)), None));
    assert_eq!(
        rework(&deploy("2002")),
        (Some(json!(true)), Some(json!("incident"))),
        "the hotfix deployment started while the incident was open"
    );
    assert_eq!(rework(&deploy("2003")), (Some(json!(false)), None));
    let points = app.receiver.latest_points();
    let counted: Vec<&RPoint> = points
        .iter()
        .filter(|p| p.name == "valuestream.deployment.rework")
        .collect();
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert_eq!(counted[0].value, 1.0);
    assert_eq!(
        counted[0].labels["valuestream.deployment.rework.reason"],
        "incident"
    );
    assert_eq!(counted[0].labels["valuestream.production"], "true");
    assert_eq!(counted[0].labels["valuestream.result"], "success");
}
