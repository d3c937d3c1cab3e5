//! The model's one time rule (model::time) as every source meets it through the real router:
//! times outside 2000-01-01 ..= now + 1 day and ends before starts are refused with a 400 that
//! names the field and the item, nothing is stored and nothing is exported; `replay` goes through
//! the same router and gets the same answer.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use valuestream::sources;
use valuestream::store::embedded::EmbeddedStore;

const SECRETS: &[(&str, &str)] = &[
    ("VALUESTREAM_GITLAB_TOKEN", "t-gitlab"),
    ("VALUESTREAM_JIRA_SECRET", "t-jira"),
    ("VALUESTREAM_PAGERDUTY_SECRET", "t-pagerduty"),
];

/// Sends `body` to `source`, signed, with `extra` headers.
async fn send(
    app: &App,
    source: &str,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let signed = sources::by_name(source).unwrap().sign(&body, &app.config);
    let mut headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    headers.push(("content-type", "application/json"));
    headers.extend_from_slice(extra);
    app.post(source, &headers, body).await
}

#[tokio::test]
async fn absurd_and_backwards_times_are_refused_naming_the_field_for_every_source() {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = app_with(store.clone(), test_config(SECRETS)).await;
    let before = dump(&store);
    let issue = "github/issues/closed.derived.payload.json";
    let gh = [("x-github-event", "issues")];
    // (source, extra headers, body, what the reason must say)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "github",
            &gh,
            edit(issue, |v| v["issue"]["closed_at"] = json!("9999-12-31T23:59:59Z")),
            "github: end (closed_at/merged_at) 9999-12-31T23:59:59Z of issue github/issue/codertocat/hello-world/1 is outside the accepted window",
        ),
        (
            "github",
            &gh,
            edit(issue, |v| v["issue"]["created_at"] = json!("0001-01-01T00:00:00Z")),
            "start (created_at) 0001-01-01T00:00:00Z of issue github/issue/codertocat/hello-world/1",
        ),
        (
            "github",
            &gh,
            edit(issue, |v| v["issue"]["closed_at"] = json!("2019-05-15T15:20:17Z")),
            "end (closed_at/merged_at) 2019-05-15T15:20:17Z of issue github/issue/codertocat/hello-world/1 is before its start (created_at) 2019-05-15T15:20:18Z",
        ),
        (
            "gitlab",
            &[("x-gitlab-event", "Push Hook")],
            edit("gitlab/push.json", |v| {
                v["commits"][1]["timestamp"] = json!("1969-12-31T23:59:59Z")
            }),
            "commits[1].time 1969-12-31T23:59:59Z of push",
        ),
        (
            "pagerduty",
            &[],
            edit("pagerduty/incident_resolved.json", |v| {
                v["event"]["occurred_at"] = json!("2024-03-10T13:00:00Z")
            }),
            "end (event.occurred_at) 2024-03-10T13:00:00Z of incident pagerduty/incident/-/PGR0VU2 is before its start (incident.created_at)",
        ),
        (
            "jira",
            &[],
            edit("jira/issue_updated_done.json", |v| {
                v["issue"]["fields"]["created"] = json!("1999-12-31T23:59:59.000+0000")
            }),
            "start 1999-12-31T23:59:59Z of issue",
        ),
    ];
    for (source, headers, body, want) in cases {
        let (s, b) = send(&app, source, headers, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{want}: {b}");
        let reason = b["reason"].as_str().unwrap();
        assert!(reason.contains(want), "{want:?} not in {reason:?}");
    }
    assert_eq!(dump(&store), before, "refused deliveries change nothing");
    assert!(app.receiver.spans().is_empty(), "nothing exported");
    assert!(app.receiver.points().is_empty(), "no metric point");
}

#[tokio::test]
async fn replay_goes_through_the_router_and_gets_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let body = edit("github/issues/closed.derived.payload.json", |v| {
        v["issue"]["closed_at"] = json!("9999-12-31T23:59:59Z")
    });
    let recorded = json!({
        "source": "github",
        "headers": {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "replayed-1"},
        "body": serde_json::from_slice::<Value>(&body).unwrap(),
    });
    let file = dir.path().join("closed-in-9999.json");
    std::fs::write(&file, serde_json::to_vec(&recorded).unwrap()).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_valuestream"))
        .arg("replay")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("state"))
        .current_dir(dir.path())
        .env_clear()
        .env("VALUESTREAM_GITHUB_SECRET", GITHUB_SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("replay finishes")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a refused delivery fails the replay:\n{stderr}"
    );
    assert!(
        stderr.contains("-> 400")
            && stderr.contains("end (closed_at/merged_at) 9999-12-31T23:59:59Z"),
        "{stderr}"
    );
}
