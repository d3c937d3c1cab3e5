//! GitHub issues and pull requests through the real router, exported to a real OTLP receiver.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;
use std::sync::Arc;
use valuestream::model::ids;
use valuestream::store::embedded::EmbeddedStore;

#[tokio::test]
async fn issue_and_pull_request_share_one_trace() {
    let app = app().await;
    let (s, b) = app
        .github_fixture("github/issues/opened.payload.json", "d-1")
        .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("processed")),
        "{b}"
    );
    assert_eq!(b["opened"], 1);
    let (s, _) = app.github("pull_request", "d-2", opened_pr()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(app.receiver.spans().is_empty(), "nothing is finished yet");
    let (s, b) = app.github("pull_request", "d-3", merged_pr()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["finished"].as_array().unwrap().len(), 1);
    let (s, _) = app
        .github_fixture("github/issues/closed.derived.payload.json", "d-4")
        .await;
    assert_eq!(s, StatusCode::OK);

    let spans = app.receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let issue = app.receiver.span("ISSUE #1");
    let change = app.receiver.span("PR #2");
    assert_issue_and_pr_trace(&issue, &change);
    assert_eq!(change.attr_str("vcs.change.state"), "merged");
    assert_eq!(change.attr_str("vcs.repository.name"), "Hello-World");
    assert_eq!(change.attr_str("vcs.change.id"), "2");
    assert_eq!(change.attr_str("vcs.provider.name"), "github");
    assert_eq!(change.attr_str("valuestream.kind"), "change");
    assert_eq!(issue.attr("valuestream.labels"), Some(&json!(["bug"])));
    assert_eq!(issue.attr_str("valuestream.result"), "closed");
    assert_eq!(issue.status_code, 1, "status OK");
}

#[tokio::test]
async fn closing_event_alone_gives_a_correct_span() {
    let app = app().await;
    let (s, b) = app.github("pull_request", "only-close", merged_pr()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let change = app.receiver.span("PR #2");
    assert_eq!(change.start_ns, ns("2019-05-15T15:20:33Z"));
    assert_eq!(change.end_ns, ns("2019-05-15T15:21:18Z"));
    // The parent named by the branch was never seen: its IDs are derived from its key.
    let issue_key = "github/issue/codertocat/hello-world/1";
    assert_eq!(change.trace_id, ids::trace_id(issue_key));
    assert_eq!(change.parent_span_id, ids::span_id(issue_key, 0));
    let (s, _) = app
        .github_fixture("github/issues/closed.derived.payload.json", "issue-close")
        .await;
    assert_eq!(s, StatusCode::OK);
    let issue = app.receiver.span("ISSUE #1");
    assert_eq!(issue.start_ns, ns("2019-05-15T15:20:18Z"));
    assert_eq!(
        issue.span_id, change.parent_span_id,
        "the late issue gets the IDs its child assumed"
    );
}

#[tokio::test]
async fn closing_keywords_and_draft_state() {
    let app = app().await;
    let opened = edit("github/pull_request/opened.payload.json", |v| {
        v["pull_request"]["body"] = json!("Tidy the README.\n\nFixes #1");
        v["pull_request"]["draft"] = json!(true);
    });
    app.github("pull_request", "k1", opened).await;
    let (s, _) = app
        .github_fixture("github/pull_request/ready_for_review.payload.json", "k2")
        .await;
    assert_eq!(s, StatusCode::OK);
    let closed = edit("github/pull_request/closed.payload.json", |v| {
        v["pull_request"]["body"] = json!("Fixes #1")
    });
    app.github("pull_request", "k3", closed).await;
    let change = app.receiver.span("PR #2");
    assert_eq!(
        change.parent_span_id,
        ids::span_id("github/issue/codertocat/hello-world/1", 0)
    );
    assert_eq!(
        change.attr_str("vcs.change.state"),
        "closed",
        "closed without merge"
    );
    assert_eq!(
        change
            .events
            .iter()
            .map(|e| e.0.as_str())
            .collect::<Vec<_>>(),
        ["ready for review"]
    );
}

#[tokio::test]
async fn draft_pull_request_is_wip_while_open() {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = app_with(store.clone(), test_config(&[])).await;
    app.github_fixture("github/pull_request/converted_to_draft.payload.json", "w1")
        .await;
    let item = app
        .pipeline
        .engine
        .preview("github/change/codertocat/hello-world/2")
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
async fn reopened_issue_is_a_new_span_linked_to_the_first() {
    let app = app().await;
    app.github_fixture("github/issues/opened.payload.json", "r1")
        .await;
    app.github_fixture("github/issues/closed.derived.payload.json", "r2")
        .await;
    app.github_fixture("github/issues/reopened.payload.json", "r3")
        .await;
    let closed_again = edit("github/issues/closed.derived.payload.json", |v| {
        v["issue"]["closed_at"] = json!("2021-10-12T10:00:00Z")
    });
    app.github("issues", "r4", closed_again).await;
    let spans = app.receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let (first, second) = (&spans[0], &spans[1]);
    assert_eq!(first.trace_id, second.trace_id);
    assert_ne!(first.span_id, second.span_id);
    assert_eq!(
        second.span_id,
        ids::span_id("github/issue/codertocat/hello-world/1", 1)
    );
    assert_eq!(second.links.len(), 1);
    assert_eq!(
        second.links[0].1, first.span_id,
        "the reopened span links to the first"
    );
    assert_eq!(
        second.start_ns,
        ns("2021-10-11T16:40:56Z"),
        "starts at the reopening"
    );
    assert_eq!(second.end_ns, ns("2021-10-12T10:00:00Z"));
}

#[tokio::test]
async fn redelivery_exports_nothing_new() {
    let app = app().await;
    let (s1, b1) = app.github("pull_request", "same-id", merged_pr()).await;
    let (s2, b2) = app.github("pull_request", "same-id", merged_pr()).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(b1["status"], "processed");
    assert_eq!(b2["status"], "duplicate", "{b2}");
    assert_eq!(app.receiver.spans().len(), 1);
    // The points of the change duration were exported once, with count 1.
    let points = app.receiver.latest_points();
    let d = points
        .iter()
        .find(|p| p.name == "valuestream.change.duration")
        .unwrap();
    assert_eq!(d.value, 1.0);
    // A second close under another delivery ID (GitHub sends one per event) is late news.
    let (s3, b3) = app.github("pull_request", "other-id", merged_pr()).await;
    assert_eq!(
        (s3, b3["status"].as_str()),
        (StatusCode::OK, Some("processed"))
    );
    assert_eq!(app.receiver.spans().len(), 1, "a span is finished once");
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = app_with(
        store.clone(),
        test_config(&[("VALUESTREAM_MAX_BODY_BYTES", "40000")]),
    )
    .await;
    app.github_fixture("github/issues/opened.payload.json", "seed")
        .await;
    let before = dump(&store);
    let body = fixture("github/issues/closed.derived.payload.json");

    let bad_sig = format!("sha256={}", "0".repeat(64));
    let (s, b) = app
        .post(
            "github",
            &[
                ("x-github-event", "issues"),
                ("x-hub-signature-256", &bad_sig),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b["reason"].as_str().unwrap().contains("does not match"));

    let (s, b) = app
        .post("github", &[("x-github-event", "issues")], body.clone())
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "unsigned is refused: {b}");

    let sha1 = "sha1=0123456789abcdef0123456789abcdef01234567";
    let (s, _) = app
        .post(
            "github",
            &[("x-github-event", "issues"), ("x-hub-signature", sha1)],
            body.clone(),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "SHA-1 signatures are not accepted"
    );

    let junk = b"{\"action\": \"closed\", ".to_vec();
    let (s, b) = app.github("issues", "junk", junk).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    let (s, b) = app
        .github("star", "star", br#"{"action":"created"}"#.to_vec())
        .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::ACCEPTED, Some("ignored"))
    );
    assert!(b["reason"].as_str().unwrap().contains("star"));

    let (s, b) = app
        .github(
            "issues",
            "assigned",
            edit("github/issues/opened.payload.json", |v| {
                v["action"] = json!("assigned")
            }),
        )
        .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::ACCEPTED, Some("ignored")),
        "{b}"
    );

    let huge = vec![b' '; 50_000];
    let (s, b) = app.github("issues", "huge", huge).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert!(b["reason"].as_str().unwrap().contains("40000"));

    let sig = github_signature(&body);
    let (s, b) = app
        .post(
            "github",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("x-github-event", "issues"),
                ("x-hub-signature-256", &sig),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{b}");

    let (s, _) = app
        .github(
            "issues",
            "no-repo",
            br#"{"action":"opened","issue":{}}"#.to_vec(),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, _) = app.post("nosuch", &[], b"{}".to_vec()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    assert_eq!(dump(&store), before, "refused deliveries change nothing");
    assert!(app.receiver.spans().is_empty());
}

#[tokio::test]
async fn ping_answers_200_and_secrets_are_required() {
    let app = app().await;
    let (s, b) = app.github_fixture("github/ping/payload.json", "p").await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("processed")),
        "{b}"
    );
    // No secret configured: refused, unless unsigned traffic is explicitly allowed.
    let none = app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        valuestream::config::Config::from_pairs(&[]).unwrap(),
    )
    .await;
    let (s, b) = none
        .post(
            "github",
            &[("x-github-event", "ping")],
            fixture("github/ping/payload.json"),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["reason"]
        .as_str()
        .unwrap()
        .contains("VALUESTREAM_GITHUB_SECRET"));
    let open = app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        valuestream::config::Config::from_pairs(&[("VALUESTREAM_ALLOW_UNSIGNED", "true")]).unwrap(),
    )
    .await;
    let (s, _) = open
        .post(
            "github",
            &[("x-github-event", "issues")],
            fixture("github/issues/closed.derived.payload.json"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(open.receiver.spans().len(), 1);
}

#[tokio::test]
async fn healthz() {
    let app = app().await;
    let (s, body) = app.get("/healthz").await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("ok"));
}

#[tokio::test]
async fn team_comes_from_labels_topics_or_configuration() {
    let app = app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        test_config(&[("VALUESTREAM_TEAMS", "codertocat/*=platform")]),
    )
    .await;
    let labelled = edit("github/issues/closed.derived.payload.json", |v| {
        v["issue"]["labels"] = json!([{"name": "bug"}, {"name": "team:checkout"}]);
        v["repository"]["language"] = json!("Rust");
    });
    app.github("issues", "t1", labelled).await;
    let topic = edit("github/pull_request/closed.payload.json", |v| {
        v["repository"]["topics"] = json!(["web", "team-storefront"])
    });
    app.github("pull_request", "t2", topic).await;
    let from_config = edit("github/workflow_run/completed.payload.json", |v| {
        v["repository"] = fixture_json("github/issues/opened.payload.json")["repository"].clone();
    });
    app.github("workflow_run", "t3", from_config).await;
    let issue = app.receiver.span("ISSUE");
    assert_eq!(
        issue.attr_str("valuestream.team"),
        "checkout",
        "a team: label wins"
    );
    assert_eq!(issue.attr_str("valuestream.language"), "Rust");
    assert_eq!(
        app.receiver.span("PR").attr_str("valuestream.team"),
        "storefront",
        "then a team- topic"
    );
    assert_eq!(
        app.receiver.span("RUN").attr_str("valuestream.team"),
        "platform",
        "then the owner/* entry of VALUESTREAM_TEAMS"
    );
    let labels: Vec<String> = app
        .receiver
        .latest_points()
        .iter()
        .filter_map(|p| p.labels.get("valuestream.team").cloned())
        .collect();
    assert_eq!(labels.len(), 3, "metric points carry the team too");
}
