//! Link kinds (issue 27 part 5) on the GitHub deployment and the generic events API: a
//! successful deployment links the change it shipped `valuestream.link=shipped`; a failed or
//! cancelled one only attempted it (`attempted`) and still counts it in
//! `valuestream.deployment.changes`. (GitLab and Jenkins: tests/source_gitlab.rs and
//! tests/source_jenkins.rs, `…_only_attempted_its_changes`.)

mod common;

use common::*;
use serde_json::{json, Value};

const EVENTS_TOKEN: &str = "link-kinds-events-token";
/// The merge commit of `merged_pr()` (PR #2 of Codertocat/Hello-World).
const MERGE_SHA: &str = "c4295bd74fb0f4fda03689c3df3f2803b658fd85";

async fn app_with_merged_pr() -> App {
    let config = test_config(&[("VALUESTREAM_EVENTS_TOKEN", EVENTS_TOKEN)]);
    let app = app_with(
        std::sync::Arc::new(valuestream::store::embedded::EmbeddedStore::in_memory().unwrap()),
        config,
    )
    .await;
    let (s, b) = app.github("pull_request", "pr-merged", merged_pr()).await;
    assert!(s.is_success(), "{b}");
    app
}

fn kinds(span: &RSpan) -> (Option<Value>, Vec<Value>) {
    (
        span.attr("valuestream.deployment.changes").cloned(),
        span.links
            .iter()
            .filter_map(|l| l.2.get("valuestream.link").cloned())
            .collect(),
    )
}

#[tokio::test]
async fn github_a_failed_deployment_only_attempted_its_change() {
    for (state, kind) in [
        ("success", "shipped"),
        ("failure", "attempted"),
        ("error", "attempted"),
    ] {
        let app = app_with_merged_pr().await;
        let body = edit("github/deployment_status/payload.json", |v| {
            v["deployment"]["sha"] = json!(MERGE_SHA);
            v["deployment"]["environment"] = json!("production");
            v["deployment"]["created_at"] = json!("2019-05-15T16:00:00Z");
            v["deployment_status"]["state"] = json!(state);
            v["deployment_status"]["environment"] = json!("production");
            v["deployment_status"]["created_at"] = json!("2019-05-15T16:05:00Z");
            v["deployment_status"]["updated_at"] = json!("2019-05-15T16:05:00Z");
        });
        let (s, b) = app.github("deployment_status", "ds", body).await;
        assert!(s.is_success(), "{b}");
        let d = app.receiver.span("DEPLOY");
        assert_eq!(kinds(&d), (Some(json!(1)), vec![json!(kind)]), "{state}");
    }
}

#[tokio::test]
async fn events_a_failed_or_cancelled_deployment_only_attempted_its_change() {
    for (status, kind) in [
        ("succeeded", "shipped"),
        ("failed", "attempted"),
        ("cancelled", "attempted"),
    ] {
        let app = app_with_merged_pr().await;
        let body = edit("events/deployment_succeeded.json", |v| {
            v["status"] = json!(status);
            v["commit_sha"] = json!(MERGE_SHA);
            v["started_at"] = json!("2019-05-15T16:00:00Z");
            v["finished_at"] = json!("2019-05-15T16:05:00Z");
        });
        let auth = format!("Bearer {EVENTS_TOKEN}");
        let (s, b) = app
            .post(
                "events",
                &[
                    ("content-type", "application/json"),
                    ("authorization", &auth),
                ],
                body,
            )
            .await;
        assert!(s.is_success(), "{b}");
        let d = app.receiver.span("DEPLOY checkout to production");
        assert_eq!(kinds(&d), (Some(json!(1)), vec![json!(kind)]), "{status}");
    }
}
