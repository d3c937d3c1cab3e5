//! Jira Cloud webhooks through the real router, exported to a real OTLP receiver.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use valuestream::config::Config;
use valuestream::model::ids;
use valuestream::model::refs::tracker_item_key;
use valuestream::sources::verify::hmac_sha256_hex;
use valuestream::store::embedded::EmbeddedStore;

const SECRET: &str = "test-jira-secret";

fn config(extra: &[(&str, &str)]) -> Config {
    let mut pairs = vec![("VALUESTREAM_JIRA_SECRET", SECRET)];
    pairs.extend_from_slice(extra);
    test_config(&pairs)
}

async fn jira_app() -> App {
    app_with(Arc::new(EmbeddedStore::in_memory().unwrap()), config(&[])).await
}

fn signature(body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(SECRET, body))
}

/// Posts a Jira delivery signed with the test secret; `id` is the webhook identifier header.
async fn jira(app: &App, id: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
    let sig = signature(&body);
    let mut headers = vec![
        ("content-type", "application/json"),
        ("x-hub-signature", sig.as_str()),
    ];
    if let Some(id) = id {
        headers.push(("x-atlassian-webhook-identifier", id));
    }
    app.post("jira", &headers, body).await
}

async fn jira_fixture(app: &App, name: &str) -> (StatusCode, Value) {
    jira(app, Some(name), fixture(&format!("jira/{name}.json"))).await
}

fn key() -> String {
    tracker_item_key("SHOP-42")
}

fn event_names(s: &RSpan) -> Vec<(&str, String)> {
    s.events
        .iter()
        .map(|(n, t)| (n.as_str(), rfc3339(*t)))
        .collect()
}

#[tokio::test]
async fn every_fixture_matches_its_golden_file() {
    let stems = fixture_stems("jira");
    for must in ["issue_created", "issue_updated_done", "comment_created"] {
        assert!(stems.iter().any(|s| s == must), "{must} in {stems:?}");
    }
    for stem in stems {
        // Each fixture alone, to a fresh service.
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let app = app_with(store.clone(), config(&[])).await;
        let (status, body) = jira_fixture(&app, &stem).await;
        golden(
            &format!("jira/{stem}.expected.json"),
            &golden_value(status, body, &app, &store).await,
        );
    }
}

#[tokio::test]
async fn created_then_done_gives_one_span_with_payload_times() {
    let app = jira_app().await;
    let (s, b) = jira_fixture(&app, "issue_created").await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("processed"))
    );
    assert_eq!(b["opened"], 1, "{b}");
    let (s, b) = jira_fixture(&app, "issue_updated_in_progress").await;
    assert_eq!((s, b["updated"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    assert!(app.receiver.spans().is_empty(), "nothing is finished yet");
    let (s, b) = jira_fixture(&app, "issue_updated_done").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["finished"].as_array().unwrap().len(), 1, "{b}");

    let issue = app.receiver.span("ISSUE SHOP-42");
    assert_eq!(issue.name, "ISSUE SHOP-42 Checkout fails for saved cards");
    assert_eq!(issue.trace_id, ids::trace_id(&key()));
    assert_eq!(issue.span_id, ids::span_id(&key(), 0));
    assert_eq!(issue.parent_span_id, "", "the issue is a root");
    assert_eq!(
        (issue.service.as_str(), issue.namespace.as_str()),
        ("jira", "valuestream")
    );
    // fields.created and fields.resolutiondate, +0100 offsets without a colon.
    assert_eq!(issue.start_ns, ns("2024-03-04T08:15:02.113Z"));
    assert_eq!(issue.end_ns, ns("2024-03-09T09:00:00Z"));
    assert_eq!(
        event_names(&issue),
        [
            (
                "status To Do → In Progress",
                "2024-03-05T09:30:00.000Z".into()
            ),
            ("status To Do → Done", "2024-03-09T09:00:00.000Z".into()),
        ]
    );
    assert_eq!(issue.attr_str("valuestream.issue.key"), "SHOP-42");
    assert_eq!(issue.attr_str("valuestream.issue.type"), "Story");
    assert_eq!(issue.attr_str("valuestream.issue.priority"), "Medium");
    assert_eq!(issue.attr_str("valuestream.issue.status"), "Done");
    assert_eq!(issue.attr_str("valuestream.issue.resolution"), "Done");
    assert_eq!(
        issue.attr_str("valuestream.issue.title"),
        "Checkout fails for saved cards"
    );
    assert_eq!(issue.attr_str("valuestream.project.key"), "SHOP");
    assert_eq!(issue.attr_str("valuestream.project.name"), "Webshop");
    assert_eq!(issue.attr_str("valuestream.team"), "payments");
    assert_eq!(
        issue.attr("valuestream.labels"),
        Some(&json!(["team-payments", "python"]))
    );
    assert_eq!(
        issue.attr_str("url.full"),
        "https://example.atlassian.net/browse/SHOP-42"
    );
    assert_eq!(issue.attr_str("valuestream.kind"), "issue");
    assert_eq!(issue.attr_str("valuestream.source"), "jira");
    assert_eq!(issue.attr_str("valuestream.result"), "closed");
    assert_eq!(issue.attr_str("valuestream.key"), key());
    let d = app
        .receiver
        .latest_points()
        .into_iter()
        .find(|p| p.name == "valuestream.issue.duration")
        .expect("issue duration point");
    assert_eq!(
        (d.value, d.labels["valuestream.team"].as_str()),
        (1.0, "payments")
    );
}

#[tokio::test]
async fn pull_request_naming_the_jira_key_is_a_child_of_the_issue() {
    let app = jira_app().await;
    jira_fixture(&app, "issue_created").await;
    let branch = "feature/SHOP-42-saved-cards";
    let opened = edit("github/pull_request/opened.payload.json", |v| {
        v["pull_request"]["head"]["ref"] = json!(branch);
        v["pull_request"]["created_at"] = json!("2024-03-05T10:00:00Z");
    });
    let (s, b) = app.github("pull_request", "pr-1", opened).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let merged = edit("github/pull_request/closed.payload.json", |v| {
        v["pull_request"]["head"]["ref"] = json!(branch);
        v["pull_request"]["created_at"] = json!("2024-03-05T10:00:00Z");
        v["pull_request"]["merged"] = json!(true);
        v["pull_request"]["merged_at"] = json!("2024-03-08T16:00:00Z");
        v["pull_request"]["closed_at"] = json!("2024-03-08T16:00:00Z");
    });
    let (s, b) = app.github("pull_request", "pr-2", merged).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    jira_fixture(&app, "issue_updated_done").await;

    let issue = app.receiver.span("ISSUE SHOP-42");
    let change = app.receiver.span("PR #2");
    assert_eq!(
        change.parent_span_id, issue.span_id,
        "the PR's parent is the Jira issue"
    );
    assert_eq!(
        change.trace_id, issue.trace_id,
        "one trace across GitHub and Jira"
    );
    assert_eq!(change.service, "github");
    assert_eq!(issue.service, "jira");
    assert_eq!(change.start_ns, ns("2024-03-05T10:00:00Z"));
    assert_eq!(change.end_ns, ns("2024-03-08T16:00:00Z"));
}

#[tokio::test]
async fn reopened_issue_is_a_second_span_linked_to_the_first() {
    let app = jira_app().await;
    jira_fixture(&app, "issue_created").await;
    jira_fixture(&app, "issue_updated_done").await;
    let (s, b) = jira_fixture(&app, "issue_updated_reopened").await;
    assert_eq!((s, b["opened"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    let done_again = edit("jira/issue_updated_done.json", |v| {
        v["timestamp"] = json!(1_710_234_000_000_i64); // 2024-03-12T09:00:00Z
        v["issue"]["fields"]["resolutiondate"] = json!("2024-03-12T10:00:00.000+0100");
        v["changelog"]["items"][0]["fromString"] = json!("In Progress");
    });
    let (s, b) = jira(&app, Some("done-again"), done_again).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let spans = app.receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let (first, second) = (&spans[0], &spans[1]);
    assert_eq!(first.span_id, ids::span_id(&key(), 0));
    assert_eq!(second.span_id, ids::span_id(&key(), 1));
    assert_eq!(second.trace_id, first.trace_id);
    assert_eq!(
        first.end_ns,
        ns("2024-03-09T09:00:00Z"),
        "the first stays as exported"
    );
    assert_eq!(
        second.start_ns,
        ns("2024-03-11T08:30:00Z"),
        "starts when it left Done"
    );
    assert_eq!(second.end_ns, ns("2024-03-12T09:00:00Z"));
    assert_eq!(second.links.len(), 1, "{second:#?}");
    assert_eq!(
        second.links[0].1, first.span_id,
        "linked to the span it continues"
    );
    assert_eq!(second.links[0].2["valuestream.link"], json!("reopens"));
    assert_eq!(second.attr("valuestream.generation"), Some(&json!(1)));
    assert_eq!(
        event_names(second),
        [
            (
                "status Done → In Progress",
                "2024-03-11T08:30:00.000Z".into()
            ),
            (
                "status In Progress → Done",
                "2024-03-12T09:00:00.000Z".into()
            ),
        ]
    );
}

#[tokio::test]
async fn leaving_a_done_status_by_name_is_a_reopening_too() {
    // A workflow that does not clear the resolution: the previous status name tells.
    let app = jira_app().await;
    jira_fixture(&app, "issue_updated_done").await;
    // A transition between open statuses of a finished issue is late news: no new span.
    let moved = edit("jira/issue_updated_in_progress.json", |v| {
        v["timestamp"] = json!(1_710_100_000_000_i64)
    });
    let (s, b) = jira(&app, Some("moved"), moved).await;
    assert_eq!(
        (s, b["opened"].as_i64(), b["updated"].as_i64()),
        (StatusCode::OK, Some(0), Some(0)),
        "{b}"
    );
    let reopened = edit("jira/issue_updated_reopened.json", |v| {
        v["changelog"]["items"].as_array_mut().unwrap().remove(0);
        v["changelog"]["items"][0]["fromString"] = json!("Closed");
    });
    let (s, b) = jira(&app, Some("reopen-by-name"), reopened).await;
    assert_eq!((s, b["opened"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
}

#[tokio::test]
async fn incident_type_or_label_makes_an_incident() {
    let app = jira_app().await;
    let by_type = edit("jira/issue_updated_done.json", |v| {
        v["issue"]["fields"]["issuetype"]["name"] = json!("Incident")
    });
    let (s, b) = jira(&app, Some("inc-1"), by_type).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let incident = app.receiver.span("INCIDENT SHOP-42");
    assert_eq!(incident.attr_str("valuestream.kind"), "incident");
    assert_eq!(incident.attr_str("valuestream.result"), "resolved");
    assert_eq!(incident.span_id, ids::span_id(&key(), 0));
    let ttr = app
        .receiver
        .latest_points()
        .into_iter()
        .find(|p| p.name == "valuestream.time_to_restore")
        .expect("time to restore");
    assert_eq!(ttr.value, 1.0);
    assert_eq!(
        ttr.sum,
        (ns("2024-03-09T09:00:00Z") - ns("2024-03-04T08:15:02.113Z")) as f64 / 1e9
    );

    let app = app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        config(&[("VALUESTREAM_INCIDENT_LABEL", "outage")]),
    )
    .await;
    let by_label = edit("jira/issue_updated_done.json", |v| {
        v["issue"]["fields"]["labels"] = json!(["Outage", "team:checkout"])
    });
    jira(&app, Some("inc-2"), by_label).await;
    let incident = app.receiver.span("INCIDENT SHOP-42");
    assert_eq!(incident.attr_str("valuestream.kind"), "incident");
    assert_eq!(incident.attr_str("valuestream.issue.type"), "Story");
    assert_eq!(incident.attr_str("valuestream.team"), "checkout");
}

#[tokio::test]
async fn deleted_issue_closes_with_result_deleted() {
    let app = jira_app().await;
    jira_fixture(&app, "issue_created").await;
    let (s, b) = jira_fixture(&app, "issue_deleted").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let issue = app.receiver.span("ISSUE SHOP-42");
    assert_eq!(issue.attr_str("valuestream.result"), "deleted");
    assert_eq!(issue.start_ns, ns("2024-03-04T08:15:02.113Z"));
    assert_eq!(
        issue.end_ns,
        ns("2024-03-12T15:00:00Z"),
        "the event timestamp"
    );
}

#[tokio::test]
async fn rfc3339_times_are_accepted_too() {
    let app = jira_app().await;
    let body = edit("jira/issue_updated_done.json", |v| {
        v["issue"]["fields"]["created"] = json!("2024-03-04T09:15:02.113+01:00");
        v["issue"]["fields"]["resolutiondate"] = json!("2024-03-09T09:00:00Z");
    });
    let (s, b) = jira(&app, None, body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let issue = app.receiver.span("ISSUE SHOP-42");
    assert_eq!(issue.start_ns, ns("2024-03-04T08:15:02.113Z"));
    assert_eq!(issue.end_ns, ns("2024-03-09T09:00:00Z"));

    let bad = edit("jira/issue_created.json", |v| {
        v["issue"]["fields"]["created"] = json!("last Tuesday")
    });
    let (s, b) = jira(&app, None, bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["reason"].as_str().unwrap().contains("last Tuesday"),
        "{b}"
    );
}

#[tokio::test]
async fn delivery_id_is_the_webhook_identifier_else_a_body_hash() {
    let app = jira_app().await;
    let body = fixture("jira/issue_created.json");
    let (_, b) = jira(&app, Some("wh-7f1c"), body.clone()).await;
    assert_eq!(b["delivery"], "wh-7f1c");
    let (_, b) = jira(&app, Some("wh-7f1c"), body.clone()).await;
    assert_eq!(b["status"], "duplicate", "{b}");
    let (_, b) = jira(&app, None, body.clone()).await;
    assert_eq!(b["delivery"], json!(ids::short_hash(&body)));
    let (_, b) = jira(&app, None, body).await;
    assert_eq!(b["status"], "duplicate", "{b}");
}

#[tokio::test]
async fn bad_signatures_are_refused_and_change_nothing() {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = app_with(store.clone(), config(&[])).await;
    jira_fixture(&app, "issue_created").await;
    let before = dump(&store);
    let body = fixture("jira/issue_updated_done.json");

    let other = format!("sha256={}", hmac_sha256_hex("not-the-secret", &body));
    let zeros = format!("sha256={}", "0".repeat(64));
    let bare = hmac_sha256_hex(SECRET, &body); // without the sha256= prefix
    let sha1 = "sha1=0123456789abcdef0123456789abcdef01234567".to_string();
    for sig in [other, zeros, bare, sha1] {
        let (s, b) = app
            .post("jira", &[("x-hub-signature", sig.as_str())], body.clone())
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{sig}: {b}");
    }
    // A valid signature of another body.
    let (s, _) = app
        .post(
            "jira",
            &[("x-hub-signature", &signature(b"{}"))],
            body.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = app.post("jira", &[], body.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "unsigned: {b}");
    assert_eq!(dump(&store), before, "refused deliveries change nothing");
    assert!(app.receiver.spans().is_empty());

    // No secret configured: refused, naming the variable.
    let none = app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        test_config(&[]),
    )
    .await;
    let (s, b) = jira(&none, None, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["reason"]
        .as_str()
        .unwrap()
        .contains("VALUESTREAM_JIRA_SECRET"));
}

#[tokio::test]
async fn unknown_events_are_ignored_and_junk_is_refused() {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = app_with(store.clone(), config(&[])).await;
    let before = dump(&store);
    let (s, b) = jira_fixture(&app, "comment_created").await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::ACCEPTED, Some("ignored"))
    );
    assert!(
        b["reason"].as_str().unwrap().contains("comment_created"),
        "{b}"
    );
    let sprint = json!({"timestamp": 1_709_719_200_000_i64, "webhookEvent": "sprint_started",
        "sprint": {"id": 5, "state": "active", "name": "SHOP Sprint 5"}});
    let (s, b) = jira(&app, None, serde_json::to_vec(&sprint).unwrap()).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::ACCEPTED, Some("ignored")),
        "{b}"
    );
    assert_eq!(dump(&store), before, "ignored deliveries store nothing");

    let (s, _) = jira(&app, None, b"{\"webhookEvent\": ".to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = jira(
        &app,
        None,
        br#"{"webhookEvent":"jira:issue_updated"}"#.to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["reason"].as_str().unwrap().contains("no issue"), "{b}");
    let (s, b) = jira(&app, None, br#"{"timestamp": 1}"#.to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["reason"].as_str().unwrap().contains("webhookEvent"),
        "{b}"
    );
    assert_eq!(dump(&store), before);
}

#[tokio::test]
async fn mapped_project_links_an_incident_to_the_deployment_it_followed() {
    let app = app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        config(&[
            ("VALUESTREAM_JIRA_PROJECTS", "shop=Codertocat/Hello-World"),
            ("VALUESTREAM_TEAMS", "codertocat/hello-world=payments"),
        ]),
    )
    .await;
    // A successful production deployment on 2024-03-04, 07:00–07:10 UTC, before the incident
    // was created (08:15:02 UTC).
    let created = "2024-03-04T07:00:00Z";
    let started = edit("github/deployment/payload.json", |v| {
        v["deployment"]["created_at"] = json!(created)
    });
    app.github("deployment", "dep-1", started).await;
    let finished = edit("github/deployment_status/payload.json", |v| {
        v["deployment"]["created_at"] = json!(created);
        v["deployment_status"]["created_at"] = json!("2024-03-04T07:10:00Z");
    });
    let (s, b) = app.github("deployment_status", "dep-2", finished).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let incident = edit("jira/issue_updated_done.json", |v| {
        v["issue"]["fields"]["issuetype"]["name"] = json!("Incident")
    });
    let (s, b) = jira(&app, Some("inc-1"), incident).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let dep = app.receiver.span("DEPLOY production");
    let inc = app.receiver.span("INCIDENT SHOP-42");
    assert_eq!(
        inc.parent_span_id, dep.span_id,
        "the incident's parent is the deployment"
    );
    assert_eq!(inc.trace_id, dep.trace_id);
    assert_eq!(
        inc.attr_str("valuestream.repository"),
        "codertocat/hello-world"
    );
    assert_eq!(
        inc.attr_str("valuestream.team"),
        "payments",
        "the mapped repository's team"
    );
    let failures: Vec<RPoint> = app
        .receiver
        .latest_points()
        .into_iter()
        .filter(|p| p.name == "valuestream.change_failures")
        .collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].value, 1.0,
        "the deployment counts once as a change failure"
    );

    // An unmapped project: no repository, no link.
    let app = jira_app().await;
    let incident = edit("jira/issue_updated_done.json", |v| {
        v["issue"]["fields"]["issuetype"]["name"] = json!("Incident")
    });
    jira(&app, Some("inc-2"), incident).await;
    let inc = app.receiver.span("INCIDENT SHOP-42");
    assert_eq!(inc.parent_span_id, "");
    assert!(inc.attr("valuestream.repository").is_none());
}
