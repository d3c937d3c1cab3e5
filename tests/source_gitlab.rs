//! The GitLab source through the real router, exported to a real OTLP receiver.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use valuestream::config::Config;
use valuestream::model::ids;
use valuestream::sources::{gitlab::GitLab, Source};
use valuestream::store::embedded::EmbeddedStore;

const TOKEN: &str = "test-gitlab-token";

fn config() -> Config {
    test_config(&[("VALUESTREAM_GITLAB_TOKEN", TOKEN)])
}

async fn gitlab_app() -> (App, Arc<EmbeddedStore>) {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    (app_with(store.clone(), config()).await, store)
}

/// Posts a GitLab delivery with the test token; `uuid` becomes `X-Gitlab-Event-UUID`.
async fn gl(app: &App, event: &str, uuid: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
    let mut h = vec![
        ("content-type", "application/json"),
        ("x-gitlab-token", TOKEN),
        ("x-gitlab-event", event),
    ];
    if let Some(u) = uuid {
        h.push(("x-gitlab-event-uuid", u));
    }
    app.post("gitlab", &h, body).await
}

/// The `X-Gitlab-Event` GitLab sends with each fixture.
fn hook(file: &str) -> &'static str {
    match file {
        "issue.json" => "Issue Hook",
        "merge_request.json" => "Merge Request Hook",
        "pipeline.json" => "Pipeline Hook",
        "job.json" => "Job Hook",
        "deployment.json" => "Deployment Hook",
        "push.json" => "Push Hook",
        other => panic!("no hook for {other}"),
    }
}

/// Delivers one fixture alone to a fresh service and compares the answer, the spans the
/// receiver decoded and the stored state with `gitlab/<stem>.expected.json`.
async fn golden_fixture(file: &str) {
    let (app, store) = gitlab_app().await;
    let (s, b) = gl(
        &app,
        hook(file),
        Some("golden-uuid"),
        fixture(&format!("gitlab/{file}")),
    )
    .await;
    assert!(s.is_success(), "{file}: {s} {b}");
    let stem = file.trim_end_matches(".json");
    golden(
        &format!("gitlab/{stem}.expected.json"),
        &golden_value(s, b, &app, &store).await,
    );
}

#[tokio::test]
async fn golden_issue() {
    golden_fixture("issue.json").await;
}

#[tokio::test]
async fn golden_merge_request() {
    golden_fixture("merge_request.json").await;
}

#[tokio::test]
async fn golden_pipeline() {
    golden_fixture("pipeline.json").await;
}

#[tokio::test]
async fn golden_job() {
    golden_fixture("job.json").await;
}

#[tokio::test]
async fn golden_deployment() {
    golden_fixture("deployment.json").await;
}

#[tokio::test]
async fn golden_push() {
    golden_fixture("push.json").await;
}

const ISSUE_KEY: &str = "gitlab/issue/gitlabhq/gitlab-test/23";
const BRANCH: &str = "feature/vstrace-gitlab-gitlab-test-23/api-files";
const MERGE_SHA: &str = "8d3f1d6bd4f3d1a6e0c4a5e1b0f29c7c1a2b3c4d";

fn mr(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    edit("gitlab/merge_request.json", |v| {
        v["object_attributes"]["source_branch"] = json!(BRANCH);
        f(v)
    })
}

fn merged_mr() -> Vec<u8> {
    mr(|v| {
        let a = &mut v["object_attributes"];
        a["action"] = json!("merge");
        a["state"] = json!("merged");
        a["merge_commit_sha"] = json!(MERGE_SHA);
        // The second of GitLab's timestamp shapes.
        a["updated_at"] = json!("2013-12-04 09:00:00 UTC");
    })
}

fn closed_issue() -> Vec<u8> {
    edit("gitlab/issue.json", |v| {
        v["object_attributes"]["action"] = json!("close");
        v["object_attributes"]["state"] = json!("closed");
        v["object_attributes"]["closed_at"] = json!("2013-12-05 10:00:00 UTC");
    })
}

#[tokio::test]
async fn issue_and_merge_request_start_to_end_share_one_trace() {
    let (app, _) = gitlab_app().await;
    let (s, b) = gl(&app, "Issue Hook", Some("u1"), fixture("gitlab/issue.json")).await;
    assert_eq!((s, b["opened"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    let (s, b) = gl(&app, "Merge Request Hook", Some("u2"), mr(|_| {})).await;
    assert_eq!((s, b["opened"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    assert!(app.receiver.spans().is_empty(), "nothing is finished yet");
    let (s, b) = gl(&app, "Merge Request Hook", Some("u3"), merged_mr()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["finished"].as_array().unwrap().len(), 1, "{b}");
    let (s, _) = gl(&app, "Issue Hook", Some("u4"), closed_issue()).await;
    assert_eq!(s, StatusCode::OK);

    assert_eq!(app.receiver.spans().len(), 2);
    let issue = app.receiver.span("ISSUE #23");
    let change = app.receiver.span("MR !1");
    assert_eq!(issue.trace_id, ids::trace_id(ISSUE_KEY));
    assert_eq!(issue.span_id, ids::span_id(ISSUE_KEY, 0));
    assert_eq!(issue.parent_span_id, "", "the issue is the root");
    assert_eq!(issue.start_ns, ns("2013-12-03T17:15:43Z"));
    assert_eq!(issue.end_ns, ns("2013-12-05T10:00:00Z"));
    assert_eq!(issue.attr_str("valuestream.result"), "closed");
    assert_eq!(issue.attr("valuestream.labels"), Some(&json!(["API"])));

    assert_eq!(change.trace_id, issue.trace_id, "one trace");
    assert_eq!(
        change.parent_span_id, issue.span_id,
        "the MR's parent is the issue its branch names"
    );
    assert_eq!(
        change.span_id,
        ids::span_id("gitlab/change/gitlabhq/gitlab-test/1", 0)
    );
    assert_eq!(change.start_ns, ns("2013-12-03T17:23:34Z"));
    assert_eq!(change.end_ns, ns("2013-12-04T09:00:00Z"));
    assert_eq!(
        (change.service.as_str(), change.namespace.as_str()),
        ("gitlab", "valuestream")
    );
    assert_eq!(change.attr_str("vcs.change.state"), "merged");
    assert_eq!(change.attr_str("vcs.change.id"), "1");
    assert_eq!(change.attr_str("vcs.ref.head.name"), BRANCH);
    assert_eq!(
        change.attr_str("vcs.ref.head.revision"),
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    );
    assert_eq!(change.attr_str("vcs.ref.base.name"), "master");
    assert_eq!(
        change.attr_str("valuestream.change.merge_revision"),
        MERGE_SHA
    );
    assert_eq!(change.attr_str("vcs.provider.name"), "gitlab");
    assert_eq!(change.attr_str("vcs.repository.name"), "gitlab-test");
    assert_eq!(change.attr_str("vcs.owner.name"), "gitlabhq");
    assert_eq!(
        change.attr_str("valuestream.repository"),
        "gitlabhq/gitlab-test"
    );
    assert_eq!(
        change.attr_str("vcs.repository.url.full"),
        "http://example.com/gitlabhq/gitlab-test"
    );
}

#[tokio::test]
async fn closing_keywords_and_tracker_keys_name_parents() {
    let (app, _) = gitlab_app().await;
    // A closing keyword in the description: the project's own issue.
    let closed = edit("gitlab/merge_request.json", |v| {
        let a = &mut v["object_attributes"];
        a["action"] = json!("close");
        a["state"] = json!("closed");
        a["description"] = json!("Tidy up.\n\nCloses #23");
    });
    let (s, _) = gl(&app, "Merge Request Hook", Some("c1"), closed).await;
    assert_eq!(s, StatusCode::OK);
    let change = app.receiver.span("MR !1");
    assert_eq!(change.parent_span_id, ids::span_id(ISSUE_KEY, 0));
    assert_eq!(change.attr_str("vcs.change.state"), "closed");
    assert_eq!(change.attr_str("valuestream.result"), "closed");
    // A tracker key in the title.
    app.receiver.clear();
    let jira = edit("gitlab/merge_request.json", |v| {
        let a = &mut v["object_attributes"];
        a["iid"] = json!(2);
        a["action"] = json!("close");
        a["title"] = json!("SHOP-42 checkout");
    });
    gl(&app, "Merge Request Hook", Some("c2"), jira).await;
    let change = app.receiver.span("MR !2");
    assert_eq!(
        change.parent_span_id,
        ids::span_id("tracker/issue/SHOP-42", 0)
    );
}

#[tokio::test]
async fn draft_merge_request_is_wip_while_open() {
    let (app, store) = gitlab_app().await;
    let body = edit("gitlab/merge_request.json", |v| {
        v["object_attributes"]["draft"] = json!(true)
    });
    gl(&app, "Merge Request Hook", Some("w1"), body).await;
    assert!(!dump(&store).is_empty());
    let item = app
        .pipeline
        .engine
        .preview("gitlab/change/gitlabhq/gitlab-test/1")
        .await
        .unwrap()
        .expect("open change stored");
    assert_eq!(
        item.attributes.get("vcs.change.state"),
        Some(&valuestream::model::AttrValue::Str("wip".into()))
    );
    assert!(item.open);
}

#[tokio::test]
async fn push_to_the_branch_gives_the_merge_request_its_first_commit_time() {
    let (app, _) = gitlab_app().await;
    let push = edit("gitlab/push.json", |v| {
        v["ref"] = json!(format!("refs/heads/{BRANCH}"));
        v["project"]["path_with_namespace"] = json!("gitlabhq/gitlab-test");
    });
    let (s, b) = gl(&app, "Push Hook", Some("p1"), push).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    gl(&app, "Merge Request Hook", Some("p2"), merged_mr()).await;
    let change = app.receiver.span("MR !1");
    // The earliest pushed commit (2011-12-12T14:27:31+02:00), before the MR was opened.
    assert_eq!(
        change.attr_str("valuestream.change.first_commit_time"),
        "2011-12-12T12:27:31+00:00"
    );
}

#[tokio::test]
async fn pipeline_run_with_its_jobs() {
    let (app, _) = gitlab_app().await;
    let (s, b) = gl(
        &app,
        "Pipeline Hook",
        Some("pl"),
        fixture("gitlab/pipeline.json"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let names: Vec<String> = app.receiver.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "RUN master",
            "JOB build-image",
            "JOB test-build",
            "JOB test-image"
        ],
        "the skipped and the created job never ran: no span"
    );
    let run = app.receiver.span("RUN master");
    // The pipeline of merge request !1: its parent, by the MR's derived IDs.
    let mr_key = "gitlab/change/gitlab-org/gitlab-test/1";
    assert_eq!(run.trace_id, ids::trace_id(mr_key));
    assert_eq!(run.parent_span_id, ids::span_id(mr_key, 0));
    assert_eq!(
        run.span_id,
        ids::span_id("gitlab/run/gitlab-org/gitlab-test/31", 0)
    );
    // "2016-08-12 15:23:28 UTC": the second timestamp shape.
    assert_eq!(run.start_ns, ns("2016-08-12T15:23:28Z"));
    assert_eq!(run.end_ns, ns("2016-08-12T15:26:29Z"));
    assert_eq!(run.attr_str("cicd.pipeline.result"), "success");
    assert_eq!(run.attr_str("cicd.pipeline.run.id"), "31");
    assert_eq!(run.attr_str("cicd.pipeline.name"), "gitlab-test");
    assert_eq!(run.attr_str("vcs.ref.head.name"), "master");
    assert_eq!(
        run.attr_str("vcs.ref.head.revision"),
        "bcbb5ec396a2c0f828686f14fac9b80b780504f2"
    );
    assert_eq!(
        run.attr_str("cicd.pipeline.run.url.full"),
        "http://192.168.64.1:3005/gitlab-org/gitlab-test/-/pipelines/31"
    );
    assert_eq!(run.attr("valuestream.queue.duration_s"), Some(&json!(12.0)));
    assert_eq!(run.status_code, 1);
    for job in app
        .receiver
        .spans()
        .iter()
        .filter(|s| s.name.starts_with("JOB"))
    {
        assert_eq!(job.parent_span_id, run.span_id, "{}", job.name);
        assert_eq!(job.trace_id, run.trace_id);
        assert_eq!(job.attr_str("cicd.pipeline.task.run.result"), "success");
        assert_eq!(job.attr_str("cicd.pipeline.run.id"), "31");
    }
    let build = app.receiver.span("JOB build-image");
    assert_eq!(build.start_ns, ns("2016-08-12T15:24:56Z"));
    assert_eq!(build.end_ns, ns("2016-08-12T15:25:26Z"));
    assert_eq!(
        build.attr("valuestream.queue.duration_s"),
        Some(&json!(196.0))
    );
    assert_eq!(build.attr_str("valuestream.task.stage"), "build");
    // No finished_at: started_at + duration.
    let image = app.receiver.span("JOB test-image");
    assert_eq!(image.end_ns, ns("2016-08-12T15:26:29Z"));
}

fn pipeline(status: &str, finished: Option<&str>) -> Vec<u8> {
    edit("gitlab/pipeline.json", |v| {
        v["object_attributes"]["status"] = json!(status);
        v["object_attributes"]["finished_at"] = json!(finished);
        v["builds"] = json!([]);
        v.as_object_mut().unwrap().remove("merge_request");
    })
}

#[tokio::test]
async fn pipeline_opens_while_running_and_ends_at_finished_at() {
    let (app, _) = gitlab_app().await;
    let (s, b) = gl(&app, "Pipeline Hook", Some("r1"), pipeline("pending", None)).await;
    assert_eq!((s, b["opened"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    // Running says nothing the pending delivery did not: no new fact.
    let (s, b) = gl(&app, "Pipeline Hook", Some("r2"), pipeline("running", None)).await;
    assert_eq!((s, b["updated"].as_i64()), (StatusCode::OK, Some(0)), "{b}");
    assert!(app.receiver.spans().is_empty());
    let (s, _) = gl(
        &app,
        "Pipeline Hook",
        Some("r3"),
        pipeline("failed", Some("2016-08-12 15:30:00 UTC")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let run = app.receiver.span("RUN master");
    assert_eq!(run.start_ns, ns("2016-08-12T15:23:28Z"));
    assert_eq!(run.end_ns, ns("2016-08-12T15:30:00Z"));
    assert_eq!(run.attr_str("cicd.pipeline.result"), "failure");
    assert_eq!(
        (run.status_code, run.status_message.as_str()),
        (2, "failure")
    );
    // No merge request: the parent is the open change of the commit or branch; none here.
    assert_eq!(run.parent_span_id, "");

    for (status, result) in [("canceled", "cancellation"), ("skipped", "skip")] {
        let (app, _) = gitlab_app().await;
        gl(
            &app,
            "Pipeline Hook",
            Some(status),
            pipeline(status, Some("2016-08-12 15:24:00 UTC")),
        )
        .await;
        let run = app.receiver.span("RUN master");
        assert_eq!(run.attr_str("cicd.pipeline.result"), result);
        assert_ne!(run.status_code, 2, "{status} is not an error");
    }
}

#[tokio::test]
async fn pipeline_run_finds_the_open_merge_request_by_commit() {
    let (app, _) = gitlab_app().await;
    let opened = edit("gitlab/merge_request.json", |v| {
        v["object_attributes"]["last_commit"]["id"] =
            json!("bcbb5ec396a2c0f828686f14fac9b80b780504f2");
        v["object_attributes"]["iid"] = json!(7);
        v["project"]["path_with_namespace"] = json!("gitlab-org/gitlab-test");
    });
    gl(&app, "Merge Request Hook", Some("m"), opened).await;
    gl(
        &app,
        "Pipeline Hook",
        Some("p"),
        pipeline("success", Some("2016-08-12 15:26:29 UTC")),
    )
    .await;
    let run = app.receiver.span("RUN master");
    assert_eq!(
        run.parent_span_id,
        ids::span_id("gitlab/change/gitlab-org/gitlab-test/7", 0)
    );
}

#[tokio::test]
async fn job_hook_is_a_task_of_its_pipeline_run() {
    let (app, _) = gitlab_app().await;
    let pending = edit("gitlab/job.json", |v| {
        v["build_status"] = json!("pending");
        v["build_started_at"] = json!(null);
    });
    let (s, b) = gl(&app, "Job Hook", Some("j0"), pending).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::ACCEPTED, Some("ignored")),
        "a job that has not started has no span yet: {b}"
    );
    let running = edit("gitlab/job.json", |v| {
        v["build_status"] = json!("running");
        v["build_finished_at"] = json!(null);
    });
    let (s, b) = gl(&app, "Job Hook", Some("j1"), running).await;
    assert_eq!((s, b["opened"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    let failed = edit("gitlab/job.json", |v| v["build_status"] = json!("failed"));
    let (s, _) = gl(&app, "Job Hook", Some("j2"), failed).await;
    assert_eq!(s, StatusCode::OK);
    let job = app.receiver.span("JOB auto_deploy:start");
    let run_key = "gitlab/run/jsmithy2/release-tools-fake/743121198";
    assert_eq!(job.parent_span_id, ids::span_id(run_key, 0));
    assert_eq!(job.trace_id, ids::trace_id(run_key));
    assert_eq!(job.start_ns, ns("2023-01-10T13:50:05Z"));
    assert_eq!(job.end_ns, ns("2023-01-10T13:50:54Z"));
    assert_eq!(job.attr_str("cicd.pipeline.task.run.result"), "failure");
    assert_eq!(job.attr_str("error.type"), "unknown_failure");
    assert_eq!(job.attr_str("cicd.pipeline.name"), "Build pipeline");
    assert_eq!(job.attr_str("cicd.pipeline.task.run.id"), "3580121225");
    assert_eq!(
        job.attr_str("valuestream.repository"),
        "jsmithy2/release-tools-fake"
    );
    assert_eq!(
        job.attr_str("cicd.pipeline.task.run.url.full"),
        "https://gitlab.com/jsmithy2/release-tools-fake/-/jobs/3580121225"
    );
    assert_eq!(job.status_code, 2);
}

fn deployment(status: &str, at: &str, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    edit("gitlab/deployment.json", |v| {
        v["status"] = json!(status);
        v["status_changed_at"] = json!(at);
        f(v)
    })
}

#[tokio::test]
async fn deployment_running_to_success() {
    let (app, _) = gitlab_app().await;
    let (s, b) = gl(
        &app,
        "Deployment Hook",
        Some("d1"),
        deployment("running", "2021-04-28 21:45:00 +0200", |_| {}),
    )
    .await;
    assert_eq!((s, b["opened"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    // The fixture: success at "2021-04-28 21:50:00 +0200", the third timestamp shape.
    let (s, _) = gl(
        &app,
        "Deployment Hook",
        Some("d2"),
        fixture("gitlab/deployment.json"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let d = app.receiver.span("DEPLOY staging");
    let key = "gitlab/deployment/root/test-deployment-webhooks/15";
    assert_eq!(d.span_id, ids::span_id(key, 0));
    assert_eq!(d.start_ns, ns("2021-04-28T19:45:00Z"));
    assert_eq!(d.end_ns, ns("2021-04-28T19:50:00Z"));
    assert_eq!(d.attr_str("deployment.environment.name"), "staging");
    assert_eq!(d.attr_str("deployment.id"), "15");
    assert_eq!(d.attr_str("valuestream.result"), "success");
    assert_eq!(
        d.attr_str("vcs.ref.head.revision"),
        "279484c09fbe69ededfced8c1bb6e6d24616b468",
        "the full SHA, from commit_url"
    );
    assert_eq!(d.attr_str("cicd.pipeline.task.run.id"), "796");
    assert_eq!(d.attr("valuestream.production"), Some(&json!(false)));
    assert_eq!(d.status_code, 1);
}

#[tokio::test]
async fn deployment_failed_and_canceled() {
    let (app, _) = gitlab_app().await;
    gl(
        &app,
        "Deployment Hook",
        Some("f"),
        deployment("failed", "2021-04-28 21:50:00 +0200", |_| {}),
    )
    .await;
    let d = app.receiver.span("DEPLOY staging");
    assert_eq!(d.attr_str("valuestream.result"), "failure");
    assert_eq!((d.status_code, d.status_message.as_str()), (2, "failure"));
    assert_eq!(d.attr_str("deployment.status"), "failed");

    let (app, _) = gitlab_app().await;
    gl(
        &app,
        "Deployment Hook",
        Some("c"),
        deployment("canceled", "2021-04-28 21:50:00 +0200", |_| {}),
    )
    .await;
    let d = app.receiver.span("DEPLOY staging");
    assert_eq!(d.attr_str("valuestream.result"), "cancellation");
    assert_ne!(d.status_code, 2, "a cancelled deployment is not an error");
}

#[tokio::test]
async fn production_deployment_ships_the_merged_merge_request() {
    let (app, _) = gitlab_app().await;
    gl(&app, "Merge Request Hook", Some("m"), merged_mr()).await;
    let deploy = deployment("success", "2013-12-04 12:00:00 +0100", |v| {
        v["project"]["path_with_namespace"] = json!("gitlabhq/gitlab-test");
        v["environment"] = json!("production");
        v["commit_url"] = json!(format!(
            "http://example.com/gitlabhq/gitlab-test/-/commit/{MERGE_SHA}"
        ));
    });
    let (s, b) = gl(&app, "Deployment Hook", Some("d"), deploy).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let d = app.receiver.span("DEPLOY production");
    let change = app.receiver.span("MR !1");
    assert_eq!(d.attr("valuestream.production"), Some(&json!(true)));
    assert_eq!(d.attr("valuestream.deployment.changes"), Some(&json!(1)));
    assert_eq!(d.links.len(), 1, "{:?}", d.links);
    assert_eq!(d.links[0].1, change.span_id, "the deployment links the MR");
    let lead = app
        .receiver
        .latest_points()
        .into_iter()
        .find(|p| p.name == "valuestream.change.lead_time")
        .expect("lead time recorded");
    assert_eq!(lead.value, 1.0);
    // Deployment finished 2013-12-04T11:00:00Z; the MR was opened 2013-12-03T17:23:34Z.
    assert_eq!(lead.sum, 63386.0);
}

#[tokio::test]
async fn incident_label_makes_an_incident() {
    let (app, _) = gitlab_app().await;
    let body = edit("gitlab/issue.json", |v| {
        v["labels"] = json!([{"title": "incident"}, {"title": "team:payments"}]);
        v["object_attributes"]["action"] = json!("close");
        v["object_attributes"]["closed_at"] = json!("2013-12-03T18:15:43Z");
    });
    let (s, b) = gl(&app, "Issue Hook", Some("i"), body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let i = app.receiver.span("INCIDENT #23");
    assert_eq!(i.span_id, ids::span_id(ISSUE_KEY, 0), "keeps the issue key");
    assert_eq!(i.attr_str("valuestream.kind"), "incident");
    assert_eq!(i.attr_str("valuestream.result"), "resolved");
    assert_eq!(i.attr_str("valuestream.team"), "payments");
    assert_eq!(i.end_ns - i.start_ns, 3600 * 1_000_000_000);
    let ttr = app
        .receiver
        .latest_points()
        .into_iter()
        .find(|p| p.name == "valuestream.time_to_restore")
        .expect("time to restore recorded");
    assert_eq!((ttr.value, ttr.sum), (1.0, 3600.0));
}

#[tokio::test]
async fn reopened_issue_is_a_second_span() {
    let (app, _) = gitlab_app().await;
    gl(&app, "Issue Hook", Some("a"), closed_issue()).await;
    let reopened = edit("gitlab/issue.json", |v| {
        v["object_attributes"]["action"] = json!("reopen");
        v["object_attributes"]["updated_at"] = json!("2013-12-06 08:00:00 UTC");
    });
    gl(&app, "Issue Hook", Some("b"), reopened).await;
    let again = edit("gitlab/issue.json", |v| {
        v["object_attributes"]["action"] = json!("close");
        v["object_attributes"]["closed_at"] = json!("2013-12-07 08:00:00 UTC");
    });
    gl(&app, "Issue Hook", Some("c"), again).await;
    let spans = app.receiver.spans();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[1].span_id, ids::span_id(ISSUE_KEY, 1));
    assert_eq!(spans[1].start_ns, ns("2013-12-06T08:00:00Z"));
    assert_eq!(spans[1].end_ns, ns("2013-12-07T08:00:00Z"));
    assert_eq!(spans[1].links[0].1, spans[0].span_id);
}

#[tokio::test]
async fn redelivery_is_a_duplicate_by_uuid_or_body() {
    let (app, _) = gitlab_app().await;
    let (_, b1) = gl(&app, "Issue Hook", Some("same"), closed_issue()).await;
    let (_, b2) = gl(&app, "Issue Hook", Some("same"), closed_issue()).await;
    assert_eq!(
        (b1["status"].as_str(), b2["status"].as_str()),
        (Some("processed"), Some("duplicate"))
    );
    assert_eq!(b1["delivery"], "same");
    let (app, _) = gitlab_app().await;
    let (_, b1) = gl(&app, "Issue Hook", None, closed_issue()).await;
    let (_, b2) = gl(&app, "Issue Hook", None, closed_issue()).await;
    assert_eq!(
        b2["status"], "duplicate",
        "no UUID: the body hash is the ID"
    );
    assert_eq!(b1["delivery"], b2["delivery"]);
    assert_eq!(app.receiver.spans().len(), 1);
    let points = app.receiver.latest_points();
    let d = points
        .iter()
        .find(|p| p.name == "valuestream.issue.duration")
        .unwrap();
    assert_eq!(d.value, 1.0, "counted once");
}

#[tokio::test]
async fn bad_token_is_refused_and_changes_nothing() {
    let (app, store) = gitlab_app().await;
    gl(
        &app,
        "Issue Hook",
        Some("seed"),
        fixture("gitlab/issue.json"),
    )
    .await;
    let before = dump(&store);
    let body = closed_issue();
    let (s, b) = app
        .post(
            "gitlab",
            &[
                ("x-gitlab-event", "Issue Hook"),
                ("x-gitlab-token", "wrong"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b["reason"]
        .as_str()
        .unwrap()
        .contains("VALUESTREAM_GITLAB_TOKEN"));
    let (s, _) = app
        .post("gitlab", &[("x-gitlab-event", "Issue Hook")], body.clone())
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "no token");
    let (s, _) = app
        .post(
            "gitlab",
            &[
                ("x-gitlab-event", "Issue Hook"),
                ("x-gitlab-token", &format!("{TOKEN}x")),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a longer token");
    let (s, _) = gl(
        &app,
        "Issue Hook",
        Some("junk"),
        b"{\"object_kind\":".to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = gl(&app, "Issue Hook", Some("empty"), b"{}".to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(dump(&store), before, "refused deliveries change nothing");
    assert!(app.receiver.spans().is_empty());

    // No token configured: refused, and the answer names the variable.
    let none = app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        test_config(&[]),
    )
    .await;
    let (s, b) = none
        .post(
            "gitlab",
            &[("x-gitlab-event", "Issue Hook"), ("x-gitlab-token", TOKEN)],
            body,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["reason"]
        .as_str()
        .unwrap()
        .contains("VALUESTREAM_GITLAB_TOKEN is not set"));
}

#[tokio::test]
async fn unknown_events_and_actions_are_ignored() {
    let (app, store) = gitlab_app().await;
    let before = dump(&store);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "Note Hook",
            br#"{"object_kind":"note"}"#.to_vec(),
            "Note Hook",
        ),
        (
            "Tag Push Hook",
            fixture("gitlab/push.json"),
            "Tag Push Hook",
        ),
        (
            "Push Hook",
            edit("gitlab/push.json", |v| v["ref"] = json!("refs/tags/v1.0")),
            "tags",
        ),
        (
            "Push Hook",
            edit("gitlab/push.json", |v| {
                v["after"] = json!("0000000000000000000000000000000000000000")
            }),
            "deletion",
        ),
        (
            "Issue Hook",
            edit("gitlab/issue.json", |v| {
                v["object_attributes"]
                    .as_object_mut()
                    .unwrap()
                    .remove("action");
            }),
            "action",
        ),
        (
            "Merge Request Hook",
            edit("gitlab/merge_request.json", |v| {
                v["object_attributes"]["action"] = json!("locked")
            }),
            "locked",
        ),
        (
            "Deployment Hook",
            deployment("created", "2021-04-28 21:50:00 +0200", |_| {}),
            "created",
        ),
    ];
    for (event, body, why) in cases {
        let (s, b) = gl(&app, event, None, body).await;
        assert_eq!(
            (s, b["status"].as_str()),
            (StatusCode::ACCEPTED, Some("ignored")),
            "{event}: {b}"
        );
        assert!(b["reason"].as_str().unwrap().contains(why), "{event}: {b}");
    }
    // Without X-Gitlab-Event the body's object_kind names the event.
    let (s, b) = app
        .post(
            "gitlab",
            &[("x-gitlab-token", TOKEN)],
            br#"{"object_kind":"wiki_page"}"#.to_vec(),
        )
        .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::ACCEPTED, Some("ignored"))
    );
    assert_eq!(dump(&store), before, "ignored deliveries change nothing");
    let (s, b) = app
        .post("gitlab", &[("x-gitlab-token", TOKEN)], closed_issue())
        .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("processed")),
        "{b}"
    );
    assert_eq!(
        app.receiver.span("ISSUE #23").end_ns,
        ns("2013-12-05T10:00:00Z")
    );
}

#[tokio::test]
async fn sign_gives_the_token_header() {
    let cfg = config();
    let body = closed_issue();
    let headers = GitLab.sign(&body, &cfg);
    assert_eq!(headers, [("x-gitlab-token".to_string(), TOKEN.to_string())]);
    assert!(GitLab.sign(&body, &test_config(&[])).is_empty());
    let (app, _) = gitlab_app().await;
    let mut h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    h.push(("x-gitlab-event", "Issue Hook"));
    let (s, b) = app.post("gitlab", &h, body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn cancelled_production_deployment_ships_nothing_and_fails_nothing() {
    let (app, _) = gitlab_app().await;
    gl(&app, "Merge Request Hook", Some("m"), merged_mr()).await;
    let production = |status: &'static str, id: u64| {
        deployment(status, "2013-12-04 12:00:00 +0100", move |v| {
            v["project"]["path_with_namespace"] = json!("gitlabhq/gitlab-test");
            v["environment"] = json!("production");
            v["deployment_id"] = json!(id);
            v["commit_url"] = json!(format!(
                "http://example.com/gitlabhq/gitlab-test/-/commit/{MERGE_SHA}"
            ));
        })
    };
    gl(
        &app,
        "Deployment Hook",
        Some("c"),
        production("canceled", 15),
    )
    .await;
    let cancelled = app.receiver.span("DEPLOY production");
    assert_eq!(cancelled.attr_str("valuestream.result"), "cancellation");
    assert_eq!(cancelled.attr("deployment.status"), None);
    let names: Vec<String> = app
        .receiver
        .latest_points()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(
        !names.iter().any(|n| n == "valuestream.change.lead_time"),
        "a cancelled deployment delivered no change: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "valuestream.change_failures"),
        "nor is it a change failure: {names:?}"
    );
    // The next successful deployment ships the change.
    app.receiver.clear();
    gl(
        &app,
        "Deployment Hook",
        Some("s"),
        production("success", 16),
    )
    .await;
    let shipped = app.receiver.span("DEPLOY production");
    assert_eq!(shipped.attr_str("deployment.status"), "succeeded");
    assert_eq!(
        shipped.links.len(),
        1,
        "the MR ships with the successful deployment"
    );
    assert!(app
        .receiver
        .latest_points()
        .iter()
        .any(|p| p.name == "valuestream.change.lead_time" && p.value == 1.0));
}

/// What a delivery recorded about work items and commits: store records without their write
/// bookkeeping (version, expiry, `touched`) and without the wall-clock records (delivery log,
/// metric state).
fn recorded(store: &EmbeddedStore) -> Vec<(String, Value)> {
    dump(store)
        .into_iter()
        .map(|r| {
            let mut data = r.data.to_value();
            if let Some(o) = data.as_object_mut() {
                o.remove("touched"); // when the item was last written (wall clock)
            }
            (format!("{:?}", r.key), data)
        })
        .filter(|(k, _)| !k.contains("pk: \"delivery#") && !k.contains("pk: \"metric\""))
        .collect()
}

#[tokio::test]
async fn system_hook_instance_events_are_ignored_with_a_reason() {
    let (app, store) = gitlab_app().await;
    let before = dump(&store);
    for (file, why) in [
        ("user_add_to_group", "\"user_add_to_group\" is not used"),
        ("subgroup_create", "\"subgroup_create\" is not used"),
        ("project_create", "\"project_create\" is not used"),
        ("repository_update", "\"repository_update\" is not used"),
        // A tag push is a push: ignored as its project-hook twin is.
        ("tag_push", "not a branch"),
    ] {
        let (s, b) = gl(
            &app,
            "System Hook",
            None,
            fixture(&format!("gitlab/system_hook/{file}.json")),
        )
        .await;
        assert_eq!(
            (s, b["status"].as_str()),
            (StatusCode::ACCEPTED, Some("ignored")),
            "{file}: {b}"
        );
        let reason = b["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{file}: {reason}");
    }
    // A system hook body that names no event at all is not GitLab's.
    let (s, b) = gl(&app, "System Hook", None, br#"{"created_at":"x"}"#.to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["reason"].as_str().unwrap().contains("event_name"), "{b}");
    assert_eq!(dump(&store), before, "ignored system hooks change nothing");
    assert!(app.receiver.spans().is_empty());
}

#[tokio::test]
async fn system_hook_merge_request_is_handled_like_the_merge_request_hook() {
    let merged_system_hook = {
        let mut v: Value = serde_json::from_slice(&merged_mr()).unwrap();
        v["event_type"] = json!("merge_request");
        serde_json::to_vec(&v).unwrap()
    };
    let (project, project_store) = gitlab_app().await;
    let (s, b) = gl(&project, "Merge Request Hook", Some("u1"), merged_mr()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (system, system_store) = gitlab_app().await;
    let (s2, b2) = gl(&system, "System Hook", Some("u1"), merged_system_hook).await;
    assert_eq!(s2, StatusCode::OK, "{b2}");
    assert_eq!(b2, b, "same answer");
    let span = system.receiver.span("MR !1");
    assert_eq!(span.golden(), project.receiver.span("MR !1").golden());
    assert_eq!(span.attr_str("vcs.change.state"), "merged");
    assert_eq!(recorded(&system_store), recorded(&project_store));

    // The opened system-hook fixture opens the merge request (a span is open, none exported).
    let (opened, opened_store) = gitlab_app().await;
    let (s, b) = gl(
        &opened,
        "System Hook",
        Some("u2"),
        fixture("gitlab/system_hook/merge_request.json"),
    )
    .await;
    assert_eq!((s, b["opened"].as_u64()), (StatusCode::OK, Some(1)), "{b}");
    assert!(!dump(&opened_store).is_empty());
}

#[tokio::test]
async fn system_hook_push_is_handled_like_the_push_hook() {
    let system_push = fixture("gitlab/system_hook/push.json");
    let project_push = {
        let mut v: Value = serde_json::from_slice(&system_push).unwrap();
        v["object_kind"] = json!("push");
        serde_json::to_vec(&v).unwrap()
    };
    let (project, project_store) = gitlab_app().await;
    let (s, b) = gl(&project, "Push Hook", Some("p1"), project_push).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (system, system_store) = gitlab_app().await;
    let (s2, b2) = gl(&system, "System Hook", Some("p1"), system_push).await;
    assert_eq!(
        (s2, b2["status"].as_str()),
        (StatusCode::OK, Some("processed")),
        "{b2}"
    );
    assert_eq!(b2, b, "same answer");
    let stored = recorded(&system_store);
    assert_eq!(stored, recorded(&project_store));
    // The push recorded its commits (for lead time): more than the delivery ID alone.
    let text = serde_json::to_string(&stored).unwrap();
    assert!(
        text.contains("c5feabde2d8cd023215af4d2ceeb7a64839fc428"),
        "{text}"
    );
}

/// Deployment rework (docs/metrics.md "Deployment rework rate"): a production deployment that
/// ships a merge request titled `Revert "…"` is rework (`fix_change`).
#[tokio::test]
async fn rework_a_deployment_that_ships_a_revert_is_rework() {
    let (app, _) = gitlab_app().await;
    let revert = mr(|v| {
        let a = &mut v["object_attributes"];
        a["action"] = json!("merge");
        a["state"] = json!("merged");
        a["merge_commit_sha"] = json!(MERGE_SHA);
        a["updated_at"] = json!("2013-12-04 09:00:00 UTC");
        a["title"] = json!("Revert \"Add the API files\"");
    });
    let (s, b) = gl(&app, "Merge Request Hook", Some("m"), revert).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let deploy = deployment("success", "2013-12-04 12:00:00 +0100", |v| {
        v["project"]["path_with_namespace"] = json!("gitlabhq/gitlab-test");
        v["environment"] = json!("production");
        v["commit_url"] = json!(format!(
            "http://example.com/gitlabhq/gitlab-test/-/commit/{MERGE_SHA}"
        ));
    });
    let (s, b) = gl(&app, "Deployment Hook", Some("d"), deploy).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let d = app.receiver.span("DEPLOY production");
    assert_eq!(d.attr("valuestream.deployment.changes"), Some(&json!(1)));
    assert_eq!(d.attr("valuestream.deployment.rework"), Some(&json!(true)));
    assert_eq!(
        d.attr_str("valuestream.deployment.rework.reason"),
        "fix_change"
    );
    let points = app.receiver.latest_points();
    let rework: Vec<_> = points
        .iter()
        .filter(|p| p.name == "valuestream.deployment.rework")
        .collect();
    assert_eq!(rework.len(), 1, "{rework:?}");
    assert_eq!(rework[0].value, 1.0);
    assert_eq!(
        rework[0].labels["valuestream.deployment.rework.reason"],
        "fix_change"
    );
    assert_eq!(rework[0].labels["valuestream.source"], "gitlab");
}

/// Link kinds (issue 27 part 5): a successful deployment links the merge request it shipped
/// `shipped`; a failed or canceled one only attempted it (`attempted`), and still counts it in
/// `valuestream.deployment.changes`.
#[tokio::test]
async fn a_failed_or_canceled_deployment_only_attempted_its_changes() {
    for (status, kind) in [
        ("success", "shipped"),
        ("failed", "attempted"),
        ("canceled", "attempted"),
    ] {
        let (app, _) = gitlab_app().await;
        let merged = mr(|v| {
            let a = &mut v["object_attributes"];
            a["action"] = json!("merge");
            a["state"] = json!("merged");
            a["merge_commit_sha"] = json!(MERGE_SHA);
            a["updated_at"] = json!("2013-12-04 09:00:00 UTC");
        });
        let (s, b) = gl(&app, "Merge Request Hook", Some("m"), merged).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let deploy = deployment(status, "2013-12-04 12:00:00 +0100", |v| {
            v["project"]["path_with_namespace"] = json!("gitlabhq/gitlab-test");
            v["environment"] = json!("production");
            v["commit_url"] = json!(format!(
                "http://example.com/gitlabhq/gitlab-test/-/commit/{MERGE_SHA}"
            ));
        });
        let (s, b) = gl(&app, "Deployment Hook", Some("d"), deploy).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let d = app.receiver.span("DEPLOY production");
        assert_eq!(
            d.attr("valuestream.deployment.changes"),
            Some(&json!(1)),
            "{status}"
        );
        let kinds: Vec<_> = d
            .links
            .iter()
            .filter_map(|l| l.2.get("valuestream.link").cloned())
            .collect();
        assert_eq!(kinds, [json!(kind)], "{status}");
    }
}

/// The review-request steps one `update` gives: `changes.reviewers` from `previous` to
/// `current` (reviewer IDs).
fn review_requests(previous: &[u64], current: &[u64]) -> usize {
    let user = |id: &u64| json!({"id": id, "username": format!("user{id}"), "name": "U"});
    let body = mr(|v| {
        v["object_attributes"]["action"] = json!("update");
        v["changes"] = json!({"reviewers": {
            "previous": previous.iter().map(user).collect::<Vec<_>>(),
            "current": current.iter().map(user).collect::<Vec<_>>(),
        }});
    });
    let headers = axum::http::HeaderMap::from_iter([
        ("x-gitlab-token".parse().unwrap(), TOKEN.parse().unwrap()),
        (
            "x-gitlab-event".parse().unwrap(),
            "Merge Request Hook".parse().unwrap(),
        ),
    ]);
    let delivery = valuestream::sources::Delivery {
        headers: &headers,
        query: None,
        body: &body,
    };
    let translated = GitLab.translate(&delivery, &config()).unwrap();
    let valuestream::sources::Translation::Inputs(inputs) = translated.translation else {
        panic!("ignored");
    };
    inputs
        .iter()
        .filter_map(|i| match i {
            valuestream::model::Input::Work(w) => Some(&w.steps),
            _ => None,
        })
        .flatten()
        .filter(|s| s.kind == valuestream::model::StepKind::ReviewRequested)
        .count()
}

#[test]
fn a_review_is_requested_only_when_a_reviewer_is_added() {
    assert_eq!(review_requests(&[], &[1]), 1, "a first reviewer");
    assert_eq!(review_requests(&[1], &[1, 2]), 1, "a second reviewer");
    assert_eq!(
        review_requests(&[1], &[2]),
        1,
        "one reviewer swapped for another"
    );
    // GitLab repeats `changes.reviewers` unchanged beside other changes: no request.
    assert_eq!(review_requests(&[1, 2], &[1, 2]), 0, "the same list");
    assert_eq!(
        review_requests(&[1, 2], &[2, 1]),
        0,
        "the same reviewers reordered"
    );
    assert_eq!(review_requests(&[1, 2], &[1]), 0, "a reviewer removed");
}
