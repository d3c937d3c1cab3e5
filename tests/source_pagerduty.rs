//! PagerDuty v3 webhooks through the real router, exported to a real OTLP receiver; incidents
//! linked to the GitHub deployment they followed.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use valuestream::config::Config;
use valuestream::model::ids::{self, item_key};
use valuestream::sources::verify::hmac_sha256_hex;
use valuestream::store::embedded::EmbeddedStore;

const SECRET: &str = "test-pagerduty-secret";

fn config(extra: &[(&str, &str)]) -> Config {
    let mut pairs = vec![("VALUESTREAM_PAGERDUTY_SECRET", SECRET)];
    pairs.extend_from_slice(extra);
    test_config(&pairs)
}

async fn pd_app(extra: &[(&str, &str)]) -> (App, Arc<EmbeddedStore>) {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    (app_with(store.clone(), config(extra)).await, store)
}

fn v1(secret: &str, body: &[u8]) -> String {
    format!("v1={}", hmac_sha256_hex(secret, body))
}

async fn pagerduty(app: &App, body: Vec<u8>) -> (StatusCode, Value) {
    let sig = v1(SECRET, &body);
    app.post(
        "pagerduty",
        &[
            ("content-type", "application/json"),
            ("x-pagerduty-signature", &sig),
        ],
        body,
    )
    .await
}

async fn pd_fixture(app: &App, name: &str) -> (StatusCode, Value) {
    pagerduty(app, fixture(&format!("pagerduty/{name}.json"))).await
}

fn incident_key(id: &str) -> String {
    item_key("pagerduty", "incident", "-", id)
}

const DEPLOYMENT_KEY: &str = "github/deployment/codertocat/hello-world/145988746";

/// A successful production deployment of Codertocat/Hello-World, 13:30–13:40 on the day of
/// the incident (the GitHub fixtures, with their times moved).
async fn deploy(app: &App) {
    let created = "2024-03-10T13:30:00Z";
    let started = edit("github/deployment/payload.json", |v| {
        v["deployment"]["created_at"] = json!(created)
    });
    let (s, b) = app.github("deployment", "dep-1", started).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let finished = edit("github/deployment_status/payload.json", |v| {
        v["deployment"]["created_at"] = json!(created);
        v["deployment_status"]["created_at"] = json!("2024-03-10T13:40:00Z");
    });
    let (s, b) = app.github("deployment_status", "dep-2", finished).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["finished"][0]["name"], "DEPLOY production", "{b}");
}

/// A second incident of the same service: another ID, number and event IDs.
fn second_incident(rel: &str, created: &str, occurred: &str) -> Vec<u8> {
    edit(rel, |v| {
        let e = &mut v["event"];
        e["id"] = json!(format!("{}-second", e["id"].as_str().unwrap()));
        e["occurred_at"] = json!(occurred);
        e["data"]["id"] = json!("PT4KHLK");
        e["data"]["number"] = json!(3);
        e["data"]["created_at"] = json!(created);
    })
}

#[tokio::test]
async fn every_fixture_matches_its_golden_file() {
    let stems = fixture_stems("pagerduty");
    for must in [
        "incident_triggered",
        "incident_resolved",
        "incident_annotated",
    ] {
        assert!(stems.iter().any(|s| s == must), "{must} in {stems:?}");
    }
    for stem in stems {
        let (app, store) = pd_app(&[]).await;
        let (status, body) = pd_fixture(&app, &stem).await;
        golden(
            &format!("pagerduty/{stem}.expected.json"),
            &golden_value(status, body, &app, &store).await,
        );
    }
}

#[tokio::test]
async fn triggered_acknowledged_resolved_gives_one_span_with_payload_times() {
    let (app, _) = pd_app(&[]).await;
    let (s, b) = pd_fixture(&app, "incident_triggered").await;
    assert_eq!((s, b["opened"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    assert_eq!(
        b["delivery"], "01DEN5FXGQ5ZKQ3Q5N1Z8H7V4Y",
        "the delivery ID is event.id"
    );
    let (s, b) = pd_fixture(&app, "incident_acknowledged").await;
    assert_eq!((s, b["updated"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    assert!(app.receiver.spans().is_empty());
    let (s, b) = pd_fixture(&app, "incident_resolved").await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let inc = app.receiver.span("INCIDENT #2");
    assert_eq!(inc.name, "INCIDENT #2 Checkout error rate above 5%");
    assert_eq!(inc.service, "pagerduty");
    assert_eq!(inc.trace_id, ids::trace_id(&incident_key("PGR0VU2")));
    assert_eq!(inc.span_id, ids::span_id(&incident_key("PGR0VU2"), 0));
    assert_eq!(
        inc.parent_span_id, "",
        "no service mapping: no deployment to follow"
    );
    assert_eq!(inc.start_ns, ns("2024-03-10T14:02:11Z"), "data.created_at");
    assert_eq!(
        inc.end_ns,
        ns("2024-03-10T15:47:40Z"),
        "the resolve's occurred_at"
    );
    assert_eq!(
        inc.events,
        [("acknowledged".to_string(), ns("2024-03-10T14:05:30Z"))]
    );
    assert_eq!(
        inc.attr_str("valuestream.incident.acknowledged_at"),
        "2024-03-10T14:05:30+00:00"
    );
    assert_eq!(inc.attr_str("valuestream.kind"), "incident");
    assert_eq!(inc.attr_str("valuestream.result"), "resolved");
    assert_eq!(inc.attr_str("valuestream.incident.id"), "PGR0VU2");
    assert_eq!(inc.attr("valuestream.incident.number"), Some(&json!(2)));
    assert_eq!(inc.attr_str("valuestream.incident.status"), "resolved");
    assert_eq!(inc.attr_str("valuestream.incident.urgency"), "high");
    assert_eq!(inc.attr_str("valuestream.incident.priority"), "P1");
    assert_eq!(inc.attr_str("valuestream.incident.service.id"), "PIJ90N7");
    assert_eq!(
        inc.attr_str("valuestream.incident.service.name"),
        "Webshop Checkout"
    );
    assert_eq!(inc.attr_str("valuestream.team"), "Payments");
    assert_eq!(inc.attr("valuestream.teams"), Some(&json!(["Payments"])));
    assert_eq!(
        inc.attr_str("url.full"),
        "https://example.pagerduty.com/incidents/PGR0VU2"
    );
    assert_eq!(inc.attr("valuestream.repository"), None);
    assert_eq!(inc.status_code, 1, "status OK");
    let ttr = point(&app, "valuestream.time_to_restore").expect("time to restore");
    assert_eq!((ttr.value, ttr.sum), (1.0, 6329.0));
    assert!(point(&app, "valuestream.change_failures").is_none());
}

#[tokio::test]
async fn incident_is_a_child_of_the_deployment_it_followed() {
    let (app, _) = pd_app(&[(
        "VALUESTREAM_PAGERDUTY_SERVICES",
        "PIJ90N7=Codertocat/Hello-World",
    )])
    .await;
    deploy(&app).await;
    let (s, b) = pd_fixture(&app, "incident_triggered").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = pd_fixture(&app, "incident_resolved").await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let dep = app.receiver.span("DEPLOY production");
    let inc = app.receiver.span("INCIDENT #2");
    assert_eq!(dep.span_id, ids::span_id(DEPLOYMENT_KEY, 0));
    assert_eq!(
        inc.parent_span_id, dep.span_id,
        "the incident's parent is the deployment"
    );
    assert_eq!(inc.trace_id, dep.trace_id, "one trace");
    assert_eq!(
        inc.attr_str("valuestream.repository"),
        "codertocat/hello-world"
    );
    assert_eq!(
        inc.attr_str("valuestream.incident.deployment"),
        DEPLOYMENT_KEY
    );
    assert_eq!(inc.start_ns, ns("2024-03-10T14:02:11Z"));
    assert_eq!(inc.end_ns, ns("2024-03-10T15:47:40Z"));

    let ttr = point(&app, "valuestream.time_to_restore").expect("time to restore");
    assert_eq!(ttr.value, 1.0);
    assert_eq!(ttr.sum, 6329.0, "15:47:40 − 14:02:11");
    assert_eq!(ttr.labels["deployment.environment.name"], "production");
    let cf = point(&app, "valuestream.change_failures").expect("change failures");
    assert_eq!(cf.value, 1.0);
    assert_eq!(
        cf.labels["valuestream.repository"],
        "codertocat/hello-world"
    );

    // A second incident after the same deployment: linked too, but the deployment is one
    // change failure however many incidents follow it.
    let (s, b) = pagerduty(
        &app,
        second_incident(
            "pagerduty/incident_triggered.json",
            "2024-03-10T16:00:00Z",
            "2024-03-10T16:00:00.000Z",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = pagerduty(
        &app,
        second_incident(
            "pagerduty/incident_resolved.json",
            "2024-03-10T16:00:00Z",
            "2024-03-10T16:30:00.000Z",
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let second = app.receiver.span("INCIDENT #3");
    assert_eq!(second.parent_span_id, dep.span_id);
    let cf = point(&app, "valuestream.change_failures").unwrap();
    assert_eq!(cf.value, 1.0, "not counted again");
    assert!(app
        .receiver
        .points()
        .iter()
        .filter(|p| p.name == "valuestream.change_failures")
        .all(|p| p.value == 1.0));
    let ttr = point(&app, "valuestream.time_to_restore").unwrap();
    assert_eq!((ttr.value, ttr.sum), (2.0, 6329.0 + 1800.0));
}

#[tokio::test]
async fn service_maps_to_its_repository_by_name_too() {
    let (app, _) = pd_app(&[(
        "VALUESTREAM_PAGERDUTY_SERVICES",
        "PNOTHIS=other/repo,webshop checkout=Codertocat/Hello-World",
    )])
    .await;
    deploy(&app).await;
    // The resolve alone is enough: data.created_at is the start that finds the deployment.
    let (s, b) = pd_fixture(&app, "incident_resolved").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let dep = app.receiver.span("DEPLOY production");
    let inc = app.receiver.span("INCIDENT #2");
    assert_eq!(inc.parent_span_id, dep.span_id);
    assert_eq!(
        inc.attr_str("valuestream.repository"),
        "codertocat/hello-world"
    );
    assert_eq!(
        point(&app, "valuestream.change_failures").unwrap().value,
        1.0
    );
}

#[tokio::test]
async fn incident_before_the_deployment_is_not_its_failure() {
    let (app, _) = pd_app(&[(
        "VALUESTREAM_PAGERDUTY_SERVICES",
        "PIJ90N7=Codertocat/Hello-World",
    )])
    .await;
    deploy(&app).await;
    let early = edit("pagerduty/incident_resolved.json", |v| {
        v["event"]["data"]["created_at"] = json!("2024-03-10T13:35:00Z")
    });
    let (s, b) = pagerduty(&app, early).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let inc = app.receiver.span("INCIDENT #2");
    assert_eq!(
        inc.parent_span_id, "",
        "the deployment finished after the incident began"
    );
    assert!(point(&app, "valuestream.change_failures").is_none());
}

#[tokio::test]
async fn reopened_incident_is_a_second_span_linked_to_the_first() {
    let (app, _) = pd_app(&[]).await;
    pd_fixture(&app, "incident_triggered").await;
    pd_fixture(&app, "incident_resolved").await;
    let (s, b) = pd_fixture(&app, "incident_reopened").await;
    assert_eq!((s, b["opened"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    let resolved_again = edit("pagerduty/incident_resolved.json", |v| {
        v["event"]["id"] = json!("01DEN6B4Y1resolvedagain");
        v["event"]["occurred_at"] = json!("2024-03-10T16:40:00.000Z");
    });
    let (s, b) = pagerduty(&app, resolved_again).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let spans = app.receiver.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let (first, second) = (&spans[0], &spans[1]);
    let key = incident_key("PGR0VU2");
    assert_eq!(second.span_id, ids::span_id(&key, 1));
    assert_eq!(second.trace_id, first.trace_id);
    assert_eq!(second.links.len(), 1);
    assert_eq!(second.links[0].1, first.span_id);
    assert_eq!(second.start_ns, ns("2024-03-10T16:10:00Z"), "the reopening");
    assert_eq!(second.end_ns, ns("2024-03-10T16:40:00Z"));
    assert_eq!(first.end_ns, ns("2024-03-10T15:47:40Z"));
}

#[tokio::test]
async fn any_one_valid_signature_accepts() {
    let (app, store) = pd_app(&[]).await;
    let body = fixture("pagerduty/incident_resolved.json");
    let old = v1("the-rotated-out-secret", &body);
    let new = v1(SECRET, &body);

    let none_valid = format!("{old},{}", v1("another-wrong-secret", &body));
    for sig in [none_valid.as_str(), old.as_str(), "", "v1=zz", "v0=00"] {
        let (s, b) = app
            .post("pagerduty", &[("x-pagerduty-signature", sig)], body.clone())
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{sig:?}: {b}");
    }
    // Without the v1= prefix the hex alone is not accepted either.
    let bare = new.trim_start_matches("v1=").to_string();
    let (s, _) = app
        .post(
            "pagerduty",
            &[("x-pagerduty-signature", &bare)],
            body.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = app.post("pagerduty", &[], body.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(dump(&store).is_empty(), "refused deliveries change nothing");
    assert!(app.receiver.spans().is_empty());

    // Only the second is valid (PagerDuty sends old and new while a secret is rotated).
    let (s, b) = app
        .post(
            "pagerduty",
            &[("x-pagerduty-signature", &format!("{old}, {new}"))],
            body.clone(),
        )
        .await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("processed")),
        "{b}"
    );
    assert_eq!(app.receiver.spans().len(), 1);
    // The same event again: a redelivery, nothing new.
    let (s, b) = pagerduty(&app, body).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("duplicate")),
        "{b}"
    );
    assert_eq!(app.receiver.spans().len(), 1);

    let unset = app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        test_config(&[]),
    )
    .await;
    let (s, b) = pd_fixture(&unset, "incident_resolved").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["reason"]
        .as_str()
        .unwrap()
        .contains("VALUESTREAM_PAGERDUTY_SECRET"));
}

#[tokio::test]
async fn unused_events_are_ignored_and_junk_is_refused() {
    let (app, store) = pd_app(&[]).await;
    let (s, b) = pd_fixture(&app, "incident_annotated").await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::ACCEPTED, Some("ignored")),
        "{b}"
    );
    assert!(b["reason"].as_str().unwrap().contains("incident.annotated"));
    assert_eq!(b["delivery"], "01DEN5M2W8F7ZK1T4C0N9B6H5P");
    for event_type in ["incident.priority_updated", "service.updated", "pagey.ping"] {
        let body = edit("pagerduty/incident_triggered.json", |v| {
            v["event"]["event_type"] = json!(event_type)
        });
        let (s, b) = pagerduty(&app, body).await;
        assert_eq!(
            (s, b["status"].as_str()),
            (StatusCode::ACCEPTED, Some("ignored")),
            "{b}"
        );
    }
    assert!(dump(&store).is_empty(), "ignored deliveries store nothing");

    let (s, _) = pagerduty(&app, b"{\"event\": ".to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let no_created = edit("pagerduty/incident_triggered.json", |v| {
        v["event"]["data"]
            .as_object_mut()
            .unwrap()
            .remove("created_at");
    });
    let (s, b) = pagerduty(&app, no_created).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["reason"].as_str().unwrap().contains("created_at"), "{b}");
    assert!(dump(&store).is_empty());
}
