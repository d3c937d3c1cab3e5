//! The Jenkins source (Notification Plugin JSON) through the real router, exported to a real
//! OTLP receiver.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use valuestream::config::Config;
use valuestream::model::ids;
use valuestream::sources::{jenkins::Jenkins, Source};
use valuestream::store::embedded::EmbeddedStore;

const TOKEN: &str = "test-jenkins-token";
const ISSUE_KEY: &str = "github/issue/codertocat/hello-world/1";
const RUN_KEY: &str = "jenkins/run/hello-world-ci/57";
const DEPLOY_KEY: &str = "jenkins/deployment/deploy-hello-world/12";
/// 1700000000000 ms, the fixtures' build.timestamp, in nanoseconds.
const START_NS: u64 = 1_700_000_000_000 * 1_000_000;

fn config() -> Config {
    test_config(&[("VALUESTREAM_JENKINS_TOKEN", TOKEN)])
}

async fn jenkins_app() -> (App, Arc<EmbeddedStore>) {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    (app_with(store.clone(), config()).await, store)
}

/// Posts a Notification Plugin body with the bearer token.
async fn jk(app: &App, body: Vec<u8>) -> (StatusCode, Value) {
    let auth = format!("Bearer {TOKEN}");
    app.post(
        "jenkins",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body,
    )
    .await
}

async fn jk_fixture(app: &App, file: &str) -> (StatusCode, Value) {
    jk(app, fixture(&format!("jenkins/{file}"))).await
}

/// Delivers one fixture alone to a fresh service and compares the answer and the spans the
/// receiver decoded (and the open item, if any) with `jenkins/<stem>.expected.json`.
async fn golden_fixture(file: &str) {
    let (app, store) = jenkins_app().await;
    let (s, b) = jk_fixture(&app, file).await;
    assert!(s.is_success(), "{file}: {s} {b}");
    let stem = file.trim_end_matches(".json");
    golden(
        &format!("jenkins/{stem}.expected.json"),
        &golden_value(s, b, &app, &store).await,
    );
}

#[tokio::test]
async fn golden_build_started() {
    golden_fixture("build-started.json").await;
}

#[tokio::test]
async fn golden_build_completed() {
    golden_fixture("build-completed.json").await;
}

#[tokio::test]
async fn golden_build_finalized() {
    golden_fixture("build-finalized.json").await;
}

#[tokio::test]
async fn golden_deploy_started() {
    golden_fixture("deploy-started.json").await;
}

#[tokio::test]
async fn golden_deploy_finalized_failure() {
    golden_fixture("deploy-finalized-failure.json").await;
}

#[tokio::test]
async fn started_then_completed_is_one_span_under_the_issue() {
    let (app, _) = jenkins_app().await;
    let (s, b) = jk_fixture(&app, "build-started.json").await;
    assert_eq!((s, b["opened"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    assert!(app.receiver.spans().is_empty(), "nothing is finished yet");
    let (s, b) = jk_fixture(&app, "build-completed.json").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["finished"].as_array().unwrap().len(), 1, "{b}");

    let run = app.receiver.span("RUN hello-world-ci #57");
    assert_eq!(run.start_ns, START_NS);
    assert_eq!(run.end_ns, START_NS + 312_000 * 1_000_000);
    assert_eq!(run.span_id, ids::span_id(RUN_KEY, 0));
    // The branch names the GitHub issue (`feature/vstrace-github-Hello-World-1`).
    assert_eq!(run.trace_id, ids::trace_id(ISSUE_KEY));
    assert_eq!(run.parent_span_id, ids::span_id(ISSUE_KEY, 0));
    assert_eq!(
        (run.service.as_str(), run.namespace.as_str()),
        ("jenkins", "valuestream")
    );
    assert_eq!(run.attr_str("valuestream.kind"), "pipeline_run");
    assert_eq!(run.attr_str("cicd.pipeline.name"), "hello-world-ci");
    assert_eq!(run.attr_str("cicd.pipeline.run.id"), "57");
    assert_eq!(run.attr_str("cicd.pipeline.result"), "success");
    assert_eq!(
        run.attr_str("cicd.pipeline.run.url.full"),
        "https://ci.example.com/job/hello-world-ci/57/"
    );
    assert_eq!(
        run.attr_str("vcs.ref.head.name"),
        "feature/vstrace-github-Hello-World-1",
        "origin/ stripped"
    );
    assert_eq!(
        run.attr_str("vcs.ref.head.revision"),
        "a10867b14bb761a232cd80139fbd4c0d33264240"
    );
    assert_eq!(
        run.attr_str("valuestream.repository"),
        "codertocat/hello-world"
    );
    assert_eq!(
        run.attr_str("vcs.repository.url.full"),
        "https://github.com/Codertocat/Hello-World"
    );
    assert_eq!(run.status_code, 1);
}

#[tokio::test]
async fn completed_alone_gives_a_correct_span() {
    // The plugin stamps COMPLETED with the build's end: the start is end − duration.
    let (app, _) = jenkins_app().await;
    let (s, b) = jk_fixture(&app, "build-completed.json").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let run = app.receiver.span("RUN hello-world-ci #57");
    assert_eq!(run.start_ns, START_NS);
    assert_eq!(run.end_ns, START_NS + 312_000 * 1_000_000);
    assert_eq!(run.parent_span_id, ids::span_id(ISSUE_KEY, 0));
    // STARTED arriving after the close is late news.
    let (_, late) = jk_fixture(&app, "build-started.json").await;
    assert_eq!(late["opened"], 0, "{late}");
    assert_eq!(app.receiver.spans().len(), 1);
}

#[tokio::test]
async fn completed_and_finalized_close_once() {
    let (app, _) = jenkins_app().await;
    jk_fixture(&app, "build-started.json").await;
    let (_, completed) = jk_fixture(&app, "build-completed.json").await;
    assert_eq!(completed["status"], "processed");
    let (s, finalized) = jk_fixture(&app, "build-finalized.json").await;
    assert_eq!(
        (s, finalized["status"].as_str()),
        (StatusCode::OK, Some("processed")),
        "FINALIZED is a delivery of its own: {finalized}"
    );
    assert_eq!(
        finalized["finished"].as_array().unwrap().len(),
        0,
        "late news about a closed build"
    );
    assert_ne!(completed["delivery"], finalized["delivery"]);
    // The same phase again is a redelivery.
    let (_, again) = jk_fixture(&app, "build-completed.json").await;
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["delivery"], completed["delivery"]);

    assert_eq!(app.receiver.spans().len(), 1, "one span per build");
    let runs: Vec<RPoint> = app
        .receiver
        .latest_points()
        .into_iter()
        .filter(|p| p.name == "cicd.pipeline.run.duration")
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((runs[0].value, runs[0].sum), (1.0, 312.0), "counted once");
    assert_eq!(runs[0].labels["cicd.pipeline.name"], "hello-world-ci");
}

#[tokio::test]
async fn deploy_job_is_a_failed_production_deployment() {
    let (app, _) = jenkins_app().await;
    let (s, b) = jk_fixture(&app, "deploy-started.json").await;
    assert_eq!((s, b["opened"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    let (s, b) = jk_fixture(&app, "deploy-finalized-failure.json").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let d = app
        .receiver
        .span("DEPLOY production deploy-hello-world #12");
    assert_eq!(d.span_id, ids::span_id(DEPLOY_KEY, 0));
    assert_eq!(d.attr_str("valuestream.kind"), "deployment");
    assert_eq!(d.attr_str("valuestream.result"), "failure");
    assert_eq!(d.attr_str("deployment.environment.name"), "production");
    assert_eq!(d.attr_str("deployment.status"), "failed");
    assert_eq!(d.attr("valuestream.production"), Some(&json!(true)));
    assert_eq!((d.status_code, d.status_message.as_str()), (2, "failure"));
    assert_eq!(d.start_ns, 1_700_003_600_000 * 1_000_000);
    assert_eq!(d.end_ns, (1_700_003_600_000 + 95_000) * 1_000_000);
    // The vstrace-trace-id parameter names the issue.
    assert_eq!(d.parent_span_id, ids::span_id(ISSUE_KEY, 0));
    assert_eq!(d.trace_id, ids::trace_id(ISSUE_KEY));
    let points = app.receiver.latest_points();
    let deployments = points
        .iter()
        .find(|p| p.name == "valuestream.deployments")
        .expect("deployment counted");
    assert_eq!(deployments.value, 1.0);
    assert_eq!(deployments.labels["valuestream.result"], "failure");
    assert_eq!(deployments.labels["valuestream.source"], "jenkins");
    let failures = points
        .iter()
        .find(|p| p.name == "valuestream.change_failures")
        .expect("a failed production deployment is a change failure");
    assert_eq!(failures.value, 1.0);
}

fn build(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    edit("jenkins/build-completed.json", f)
}

#[tokio::test]
async fn environment_parameter_or_job_name_makes_a_deployment() {
    let (app, _) = jenkins_app().await;
    let by_param = build(|v| {
        v["name"] = json!("release-app");
        v["url"] = json!("job/release-app/");
        v["build"]["parameters"] = json!({"Deploy_Env": "staging"});
    });
    let (s, b) = jk(&app, by_param).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let d = app.receiver.span("DEPLOY staging release-app #57");
    assert_eq!(d.attr_str("deployment.environment.name"), "staging");
    assert_eq!(d.attr_str("valuestream.kind"), "deployment");
    assert_eq!(
        d.span_id,
        ids::span_id("jenkins/deployment/release-app/57", 0)
    );

    let by_name = build(|v| {
        v["name"] = json!("deploy-api");
        v["url"] = json!("job/deploy-api/");
    });
    jk(&app, by_name).await;
    let d = app.receiver.span("DEPLOY unknown deploy-api #57");
    assert_eq!(
        d.attr_str("deployment.environment.name"),
        "unknown",
        "no environment parameter"
    );
    assert_eq!(d.attr("valuestream.production"), Some(&json!(false)));

    // A job in a folder: the key and the name carry the folder.
    let nested = build(|v| {
        v["name"] = json!("main");
        v["url"] = json!("job/shop/job/api/job/main/");
    });
    jk(&app, nested).await;
    let r = app.receiver.span("RUN shop/api/main #57");
    assert_eq!(r.span_id, ids::span_id("jenkins/run/shop/api/main/57", 0));
}

#[tokio::test]
async fn status_maps_onto_the_pipeline_result() {
    for (status, result, error) in [
        ("FAILURE", "failure", true),
        ("UNSTABLE", "failure", true),
        ("ABORTED", "cancellation", false),
        ("NOT_BUILT", "skip", false),
    ] {
        let (app, _) = jenkins_app().await;
        jk(&app, build(|v| v["build"]["status"] = json!(status))).await;
        let run = app.receiver.span("RUN hello-world-ci #57");
        assert_eq!(run.attr_str("cicd.pipeline.result"), result, "{status}");
        assert_eq!(run.status_code == 2, error, "{status}");
        assert_eq!(run.attr_str("valuestream.jenkins.status"), status);
    }
}

#[tokio::test]
async fn build_on_an_open_pull_request_branch_is_its_child() {
    let (app, _) = jenkins_app().await;
    let pr = edit("github/pull_request/opened.payload.json", |v| {
        v["pull_request"]["head"]["ref"] = json!("feature/vstrace-github-Hello-World-1");
    });
    let (s, _) = app.github("pull_request", "pr", pr).await;
    assert_eq!(s, StatusCode::OK);
    jk_fixture(&app, "build-completed.json").await;
    let run = app.receiver.span("RUN hello-world-ci #57");
    assert_eq!(
        run.parent_span_id,
        ids::span_id("github/change/codertocat/hello-world/2", 0),
        "the open change of the branch comes before the issue the branch names"
    );
}

#[tokio::test]
async fn queued_and_unknown_phases_are_ignored() {
    let (app, store) = jenkins_app().await;
    let before = dump(&store);
    let queued = edit("jenkins/build-started.json", |v| {
        v["build"]["phase"] = json!("QUEUED")
    });
    let (s, b) = jk(&app, queued).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::ACCEPTED, Some("ignored")),
        "{b}"
    );
    assert!(b["reason"].as_str().unwrap().contains("QUEUED"));
    let deleted = edit("jenkins/build-started.json", |v| {
        v["build"]["phase"] = json!("DELETED")
    });
    let (s, b) = jk(&app, deleted).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::ACCEPTED, Some("ignored"))
    );
    assert_eq!(dump(&store), before);
    let (s, _) = jk(&app, br#"{"name":"x"}"#.to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "no build");
}

#[tokio::test]
async fn query_string_token_is_accepted_and_a_wrong_one_refused() {
    let (app, store) = jenkins_app().await;
    let body = fixture("jenkins/build-completed.json");
    let json_ct = [("content-type", "application/json")];
    for (path, why) in [
        (
            "/webhooks/jenkins?token=wrong".to_string(),
            "wrong query token",
        ),
        (format!("/webhooks/jenkins?token={TOKEN}x"), "longer token"),
        ("/webhooks/jenkins?other=1".to_string(), "no token"),
        ("/webhooks/jenkins".to_string(), "nothing"),
    ] {
        let (s, b) = app.post_path(&path, &json_ct, body.clone()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{why}: {b}");
        assert!(
            !b.to_string().contains(TOKEN),
            "the answer never echoes a token"
        );
    }
    let (s, b) = app
        .post(
            "jenkins",
            &[("authorization", "Bearer wrong")],
            body.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b["reason"]
        .as_str()
        .unwrap()
        .contains("VALUESTREAM_JENKINS_TOKEN"));
    assert!(dump(&store).is_empty(), "refused deliveries store nothing");
    assert!(app.receiver.spans().is_empty());

    let (s, b) = app
        .post_path(
            &format!("/webhooks/jenkins?token={TOKEN}"),
            &json_ct,
            body.clone(),
        )
        .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("processed")),
        "{b}"
    );
    assert_eq!(app.receiver.spans().len(), 1);

    // No token configured: refused.
    let none = app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        test_config(&[]),
    )
    .await;
    let (s, b) = none
        .post_path(&format!("/webhooks/jenkins?token={TOKEN}"), &json_ct, body)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["reason"]
        .as_str()
        .unwrap()
        .contains("VALUESTREAM_JENKINS_TOKEN is not set"));
}

#[tokio::test]
async fn sign_gives_the_bearer_header() {
    let body = fixture("jenkins/build-completed.json");
    let headers = Jenkins.sign(&body, &config());
    assert_eq!(
        headers,
        [("authorization".to_string(), format!("Bearer {TOKEN}"))]
    );
    assert!(Jenkins.sign(&body, &test_config(&[])).is_empty());
    let (app, _) = jenkins_app().await;
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (s, b) = app.post("jenkins", &h, body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn plugin_before_1_12_stamps_completed_with_the_start_and_the_span_lasts_duration() {
    // Notification plugin < 1.12: COMPLETED carries the build's start (the STARTED stamp) and
    // the duration; the span must not collapse to 0 s.
    let (app, _) = jenkins_app().await;
    let (s, b) = jk_fixture(&app, "build-started.json").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = jk_fixture(&app, "build-completed-pre-1.12.json").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let run = app.receiver.span("RUN hello-world-ci #57");
    assert_eq!(run.start_ns, START_NS);
    assert_eq!(
        run.end_ns,
        START_NS + 312_000 * 1_000_000,
        "lasts `duration`"
    );
    let d = point(&app, "cicd.pipeline.run.duration").map(|p| p.sum);
    assert_eq!(d, Some(312.0), "the duration histogram counts 312 s");

    // And 1.12+ (COMPLETED stamped with the end) after STARTED still ends at the stamp.
    let (app, _) = jenkins_app().await;
    jk_fixture(&app, "build-started.json").await;
    jk_fixture(&app, "build-completed.json").await;
    let run = app.receiver.span("RUN hello-world-ci #57");
    assert_eq!(
        (run.start_ns, run.end_ns),
        (START_NS, START_NS + 312_000 * 1_000_000)
    );
}

#[tokio::test]
async fn absurd_epochs_and_durations_are_refused_naming_the_field() {
    let (app, store) = jenkins_app().await;
    let before = dump(&store);
    let started = |ts: Value| {
        edit("jenkins/build-started.json", |v| {
            v["build"]["timestamp"] = ts
        })
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // 9999-12-31T23:59:59Z: beyond what OTLP nanoseconds can hold (2262).
        (
            started(json!(253_402_300_799_000_i64)),
            "start (build.timestamp) 9999-12-31T23:59:59Z",
        ),
        (
            started(json!(-1000)),
            "start (build.timestamp) 1969-12-31T23:59:59Z",
        ),
        (
            started(json!(0)),
            "start (build.timestamp) 1970-01-01T00:00:00Z",
        ),
        (
            build(|v| v["build"]["duration"] = json!(i64::MAX)),
            "build.duration 9223372036854775807 ms is not a run time",
        ),
        (
            build(|v| v["build"]["duration"] = json!(-5)),
            "build.duration -5 ms is not a run time",
        ),
        (
            build(|v| v["build"]["duration"] = json!(1_000_000_000_000_i64)),
            "start (build.timestamp - build.duration) 1992-",
        ),
    ];
    for (body, want) in cases {
        let (s, b) = jk(&app, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{want}: {b}");
        let reason = b["reason"].as_str().unwrap();
        assert!(reason.contains(want), "{want:?} not in {reason:?}");
        assert!(
            reason.contains("jenkins/run/hello-world-ci/57") || want.contains("ms is not"),
            "{reason}"
        );
    }
    assert_eq!(dump(&store), before, "refused deliveries change nothing");
    assert!(app.receiver.spans().is_empty(), "nothing exported as 0");
}

/// Deployment rework (docs/metrics.md "Deployment rework rate"): failed deploy, then the fixing
/// deploy. The fixing one started while production was failed: rework (`failed_state`).
#[tokio::test]
async fn rework_the_deploy_that_fixes_a_failed_one_is_rework() {
    let (app, _) = jenkins_app().await;
    let (s, b) = jk_fixture(&app, "deploy-finalized-failure.json").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let fixing = edit("jenkins/deploy-finalized-failure.json", |v| {
        let b = &mut v["build"];
        b["number"] = json!(13);
        b["full_url"] = json!("https://ci.example.com/job/deploy-hello-world/13/");
        b["url"] = json!("job/deploy-hello-world/13/");
        // Ends 1700003900000 after 95 s: started after #12 failed (1700003695000).
        b["timestamp"] = json!(1_700_003_900_000u64);
        b["status"] = json!("SUCCESS");
    });
    let (s, b) = jk(&app, fixing).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let failed = app
        .receiver
        .span("DEPLOY production deploy-hello-world #12");
    assert_eq!(
        failed.attr("valuestream.deployment.rework"),
        Some(&json!(false))
    );
    let fixed = app
        .receiver
        .span("DEPLOY production deploy-hello-world #13");
    assert_eq!(
        fixed.attr("valuestream.deployment.rework"),
        Some(&json!(true))
    );
    assert_eq!(
        fixed.attr_str("valuestream.deployment.rework.reason"),
        "failed_state"
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
        "failed_state"
    );
    assert_eq!(rework[0].labels["valuestream.source"], "jenkins");
    assert_eq!(rework[0].labels["valuestream.result"], "success");
}

/// Link kinds (issue 27 part 5): a successful Jenkins deployment links the change it shipped
/// `shipped`; a failed or aborted one only attempted it (`attempted`), and still counts it in
/// `valuestream.deployment.changes`.
#[tokio::test]
async fn a_failed_or_aborted_deployment_only_attempted_its_changes() {
    const MERGE_SHA: &str = "c4295bd74fb0f4fda03689c3df3f2803b658fd85";
    for (status, kind) in [
        ("SUCCESS", "shipped"),
        ("FAILURE", "attempted"),
        ("ABORTED", "attempted"),
    ] {
        let (app, _) = jenkins_app().await;
        // PR #2 of Codertocat/Hello-World, merged as MERGE_SHA.
        let (s, b) = app.github("pull_request", "pr-merged", merged_pr()).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let deploy = edit("jenkins/deploy-finalized-failure.json", |v| {
            v["build"]["status"] = json!(status);
            v["build"]["scm"]["commit"] = json!(MERGE_SHA);
        });
        let (s, b) = jk(&app, deploy).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let d = app
            .receiver
            .span("DEPLOY production deploy-hello-world #12");
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
