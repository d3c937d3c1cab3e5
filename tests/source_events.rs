//! The generic events API through the real router, exported to a real OTLP receiver.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use valuestream::config::Config;
use valuestream::model::ids::{self, item_key};
use valuestream::sources::events::{FIELDS, INCIDENT_STATUSES, KINDS, RUN_STATUSES};
use valuestream::sources::verify::hmac_sha256_hex;
use valuestream::store::embedded::EmbeddedStore;

const TOKEN: &str = "test-events-token";

fn config(extra: &[(&str, &str)]) -> Config {
    let mut pairs = vec![("VALUESTREAM_EVENTS_TOKEN", TOKEN)];
    pairs.extend_from_slice(extra);
    test_config(&pairs)
}

async fn events_app(extra: &[(&str, &str)]) -> (App, Arc<EmbeddedStore>) {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    (app_with(store.clone(), config(extra)).await, store)
}

/// Posts an event with `Authorization: Bearer <token>`.
async fn bearer(app: &App, body: Vec<u8>) -> (StatusCode, Value) {
    let auth = format!("Bearer {TOKEN}");
    app.post(
        "events",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body,
    )
    .await
}

/// Posts an event signed with `X-Valuestream-Signature`.
async fn signed(app: &App, body: Vec<u8>) -> (StatusCode, Value) {
    let sig = format!("sha256={}", hmac_sha256_hex(TOKEN, &body));
    app.post(
        "events",
        &[
            ("content-type", "application/json"),
            ("x-valuestream-signature", &sig),
        ],
        body,
    )
    .await
}

async fn ev_fixture(app: &App, name: &str) -> (StatusCode, Value) {
    bearer(app, fixture(&format!("events/{name}.json"))).await
}

fn deployment_key() -> String {
    item_key(
        "events",
        "deployment",
        "Codertocat/Hello-World",
        "argocd/checkout/production/42",
    )
}

#[tokio::test]
async fn every_example_matches_its_golden_file() {
    let stems = fixture_stems("events");
    assert!(stems.len() >= 5, "{stems:?}");
    for stem in stems {
        let (app, store) = events_app(&[]).await;
        let (status, body) = ev_fixture(&app, &stem).await;
        assert!(status.is_success(), "{stem}: {body}");
        golden(
            &format!("events/{stem}.expected.json"),
            &golden_value(status, body, &app, &store).await,
        );
    }
}

#[tokio::test]
async fn deployment_started_then_succeeded_gives_one_span_with_payload_times() {
    let (app, _) = events_app(&[("VALUESTREAM_TEAMS", "codertocat/*=storefront")]).await;
    let (s, b) = ev_fixture(&app, "deployment_started").await;
    assert_eq!((s, b["opened"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    assert_eq!(b["delivery"], "argocd-checkout-production-42-started");
    assert!(app.receiver.spans().is_empty());
    // The finishing event signed by HMAC rather than a bearer token.
    let (s, b) = signed(&app, fixture("events/deployment_succeeded.json")).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("processed")),
        "{b}"
    );

    let dep = app.receiver.span("DEPLOY");
    assert_eq!(dep.name, "DEPLOY checkout to production");
    assert_eq!(
        (dep.service.as_str(), dep.namespace.as_str()),
        ("events", "valuestream")
    );
    assert_eq!(dep.trace_id, ids::trace_id(&deployment_key()));
    assert_eq!(dep.span_id, ids::span_id(&deployment_key(), 0));
    assert_eq!(dep.parent_span_id, "");
    assert_eq!(dep.start_ns, ns("2024-03-10T13:30:00Z"));
    assert_eq!(dep.end_ns, ns("2024-03-10T13:41:07Z"));
    assert_eq!(dep.status_code, 1, "status OK");
    assert_eq!(dep.attr_str("valuestream.source_system"), "argocd");
    assert_eq!(dep.attr_str("valuestream.source"), "events");
    assert_eq!(dep.attr_str("valuestream.kind"), "deployment");
    assert_eq!(dep.attr_str("valuestream.result"), "success");
    assert_eq!(dep.attr_str("deployment.status"), "succeeded");
    assert_eq!(dep.attr_str("deployment.environment.name"), "production");
    assert_eq!(
        dep.attr_str("deployment.id"),
        "argocd/checkout/production/42"
    );
    assert_eq!(
        dep.attr_str("valuestream.repository"),
        "codertocat/hello-world"
    );
    assert_eq!(dep.attr_str("valuestream.team"), "storefront");
    assert_eq!(
        dep.attr_str("vcs.ref.head.revision"),
        "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
    );
    assert_eq!(dep.attr_str("vcs.ref.head.name"), "main");
    assert_eq!(
        dep.attr_str("url.full"),
        "https://argocd.example.com/applications/checkout"
    );
    assert_eq!(dep.attr_str("argocd.app.name"), "checkout");
    assert_eq!(dep.attr("argocd.sync.revision"), Some(&json!(42)));
    assert_eq!(dep.attr("valuestream.production"), Some(&json!(true)));

    let d = point(&app, "valuestream.deployments").expect("deployments counted");
    assert_eq!(d.value, 1.0);
    assert_eq!(d.labels["valuestream.result"], "success");
    assert_eq!(d.labels["valuestream.source"], "events");
    assert_eq!(d.labels["deployment.environment.name"], "production");
}

#[tokio::test]
async fn cancelled_deployment_neither_ships_nor_fails() {
    let (app, _) = events_app(&[]).await;
    let cancelled = edit("events/deployment_succeeded.json", |v| {
        v["status"] = json!("cancelled")
    });
    let (s, b) = bearer(&app, cancelled).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let dep = app.receiver.span("DEPLOY");
    assert_eq!(dep.attr_str("valuestream.result"), "cancellation");
    assert_eq!(dep.status_code, 1, "not an error");
    assert_eq!(
        dep.attr("deployment.status"),
        None,
        "neither succeeded nor failed"
    );
    let d = point(&app, "valuestream.deployments").unwrap();
    assert_eq!(d.labels["valuestream.result"], "cancellation");
    assert!(point(&app, "valuestream.change_failures").is_none());
    // An incident afterwards finds no successful deployment to blame.
    ev_fixture(&app, "incident_resolved").await;
    assert_eq!(app.receiver.span("INCIDENT").parent_span_id, "");
    assert!(point(&app, "valuestream.change_failures").is_none());
}

#[tokio::test]
async fn failed_pipeline_run_alone_is_a_finished_span_with_its_result() {
    let (app, _) = events_app(&[]).await;
    let (s, b) = ev_fixture(&app, "pipeline_run_failed").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let run = app.receiver.span("RUN checkout-bake");
    assert_eq!(run.start_ns, ns("2024-03-10T12:00:00Z"));
    assert_eq!(run.end_ns, ns("2024-03-10T12:07:30.500Z"));
    assert_eq!(run.attr_str("cicd.pipeline.result"), "failure");
    assert_eq!(run.attr_str("cicd.pipeline.name"), "checkout-bake");
    assert_eq!(
        run.attr_str("cicd.pipeline.run.id"),
        "spinnaker/checkout-bake/01HRX5QZ7E"
    );
    assert_eq!(run.attr("retried"), Some(&json!(false)));
    assert_eq!(
        (run.status_code, run.status_message.as_str()),
        (2, "failure")
    );
    // Cancelled runs are not errors; every other vendor word maps onto the enum.
    for (status, result, code) in [
        ("cancelled", "cancellation", 1),
        ("timed_out", "timeout", 2),
        ("skip", "skip", 1),
        ("error", "error", 2),
        ("success", "success", 1),
    ] {
        let body = edit("events/pipeline_run_failed.json", |v| {
            v["id"] = json!(format!("run-{status}"));
            v["item"] = json!(format!("run-{status}"));
            v["name"] = json!(format!("run-{status}"));
            v["status"] = json!(status);
        });
        let (s, b) = bearer(&app, body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let span = app.receiver.span(&format!("RUN run-{status}"));
        assert_eq!(
            (span.attr_str("cicd.pipeline.result"), span.status_code),
            (result, code),
            "{status}"
        );
    }
}

#[tokio::test]
async fn pipeline_run_is_a_child_of_the_change_of_its_commit() {
    let (app, _) = events_app(&[]).await;
    let (s, b) = app
        .github_fixture("github/pull_request/opened.payload.json", "pr-open")
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let body = edit("events/pipeline_run_failed.json", |v| {
        v["commit_sha"] = json!("ec26c3e57ca3a959ca5aad62de7213c562f8c821");
        v["branch"] = json!("changes");
    });
    let (s, b) = bearer(&app, body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let run = app.receiver.span("RUN checkout-bake");
    let pr_key = "github/change/codertocat/hello-world/2";
    assert_eq!(
        run.parent_span_id,
        ids::span_id(pr_key, 0),
        "the PR of the commit"
    );
    assert_eq!(run.trace_id, ids::trace_id(pr_key));
}

#[tokio::test]
async fn parent_names_an_issue_by_reference_key_or_item_key() {
    let (app, _) = events_app(&[]).await;
    for (parent, key) in [
        (
            "vstrace-github-Hello-World-1",
            "github/issue/codertocat/hello-world/1",
        ),
        ("SHOP-42", "tracker/issue/SHOP-42"),
        ("gitlab/issue/acme/web/7", "gitlab/issue/acme/web/7"),
    ] {
        let body = edit("events/deployment_succeeded.json", |v| {
            v["id"] = json!(format!("dep-{parent}"));
            v["item"] = json!(format!("dep-{parent}"));
            v["name"] = json!(format!("dep-{parent}"));
            v["parent"] = json!(parent);
        });
        let (s, b) = bearer(&app, body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let span = app.receiver.span(&format!("DEPLOY dep-{parent}"));
        assert_eq!(span.parent_span_id, ids::span_id(key, 0), "{parent}");
        assert_eq!(span.trace_id, ids::trace_id(key), "{parent}");
    }
}

#[tokio::test]
async fn incident_follows_the_deployment_and_counts_one_change_failure() {
    let (app, _) = events_app(&[]).await;
    ev_fixture(&app, "deployment_started").await;
    ev_fixture(&app, "deployment_succeeded").await;
    ev_fixture(&app, "incident_triggered").await;
    let (s, b) = ev_fixture(&app, "incident_acknowledged").await;
    assert_eq!((s, b["updated"].as_i64()), (StatusCode::OK, Some(1)), "{b}");
    let (s, b) = signed(&app, fixture("events/incident_resolved.json")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let dep = app.receiver.span("DEPLOY");
    let inc = app.receiver.span("INCIDENT");
    assert_eq!(inc.name, "INCIDENT Checkout latency above SLO");
    assert_eq!(inc.parent_span_id, dep.span_id);
    assert_eq!(inc.trace_id, dep.trace_id);
    assert_eq!(inc.start_ns, ns("2024-03-10T14:02:11Z"));
    assert_eq!(inc.end_ns, ns("2024-03-10T15:47:40Z"));
    assert_eq!(
        inc.events,
        [("acknowledged".to_string(), ns("2024-03-10T14:05:00Z"))]
    );
    assert_eq!(inc.attr_str("valuestream.result"), "resolved");
    assert_eq!(inc.attr_str("valuestream.source_system"), "opsgenie");
    let ttr = point(&app, "valuestream.time_to_restore").unwrap();
    assert_eq!((ttr.value, ttr.sum), (1.0, 6329.0));
    assert_eq!(
        point(&app, "valuestream.change_failures").unwrap().value,
        1.0
    );
}

#[tokio::test]
async fn missing_or_wrong_fields_are_400_naming_the_field() {
    let (app, store) = events_app(&[]).await;
    let before = dump(&store);
    let started = "events/deployment_started.json";
    let done = "events/deployment_succeeded.json";
    let without = |rel: &str, field: &str| {
        edit(rel, |v| {
            v.as_object_mut().unwrap().remove(field);
        })
    };
    let with = |rel: &str, field: &str, value: Value| {
        edit(rel, |v| {
            v[field] = value;
        })
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (without(started, "id"), "`id` is required"),
        (without(started, "kind"), "`kind` is required"),
        (without(started, "item"), "`item` is required"),
        (without(started, "status"), "`status` is required"),
        (without(started, "environment"), "`environment` is required"),
        (without(started, "started_at"), "`started_at` is required"),
        (without(done, "finished_at"), "`finished_at` is required"),
        (with(started, "id", json!("")), "`id` must not be empty"),
        (with(started, "id", json!(17)), "`id` must be a string"),
        (
            with(started, "kind", json!("release")),
            "`kind` must be one of",
        ),
        (
            with(started, "status", json!("resolved")),
            "`status` must be one of",
        ),
        (
            with(started, "started_at", json!("2024-03-10 13:30")),
            "`started_at` must be an RFC 3339 time",
        ),
        (
            with(started, "finished_at", json!("2024-03-10T13:41:07Z")),
            "`finished_at` is set but status",
        ),
        (
            with(done, "finished_at", json!("2024-03-10T13:00:00Z")),
            "end (finished_at) 2024-03-10T13:00:00Z of deployment events/deployment/",
        ),
        (
            with(started, "started_at", json!("1999-12-31T23:59:59Z")),
            "start (started_at) 1999-12-31T23:59:59Z of deployment events/deployment/",
        ),
        (
            with(done, "finished_at", json!("9999-12-31T23:59:59.999999999Z")),
            "end (finished_at) 9999-12-31T23:59:59.999999999Z",
        ),
        (
            with(
                "events/incident_acknowledged.json",
                "acknowledged_at",
                json!("1970-01-01T00:00:00Z"),
            ),
            "span_events[0].time (acknowledged) 1970-01-01T00:00:00Z",
        ),
        (
            br#"{"id": "a", "kind": "deployment", "kind": "incident"}"#.to_vec(),
            "duplicate key `kind`",
        ),
        (
            br#"{"id": "a", "attributes": {"x": 1, "x": 2}}"#.to_vec(),
            "duplicate key `x`",
        ),
        (
            with(started, "repository", json!("hello-world")),
            "`repository` must be owner/name",
        ),
        (
            with(started, "finshed_at", json!("x")),
            "unknown field `finshed_at`",
        ),
        (
            with(started, "attributes", json!({"nested": {"a": 1}})),
            "`attributes.nested` must be",
        ),
        (
            with(
                "events/incident_triggered.json",
                "environment",
                json!("production"),
            ),
            "`environment` is not used for kind \"incident\"",
        ),
        (
            with(
                "events/incident_triggered.json",
                "status",
                json!("acknowledged"),
            ),
            "`acknowledged_at` is required",
        ),
        (
            b"[{\"id\": \"a\"}]".to_vec(),
            "one event (an object) per request",
        ),
        (b"{\"id\": ".to_vec(), "not JSON"),
    ];
    for (body, want) in cases {
        let (s, b) = bearer(&app, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{want}: {b}");
        let reason = b["reason"].as_str().unwrap();
        assert!(reason.contains(want), "{want:?} not in {reason:?}");
    }
    assert_eq!(dump(&store), before, "refused events change nothing");
    assert!(app.receiver.spans().is_empty());
}

#[tokio::test]
async fn bearer_and_hmac_are_accepted_and_nothing_else() {
    let (app, store) = events_app(&[]).await;
    let body = fixture("events/deployment_succeeded.json");
    let wrong_hmac = format!("sha256={}", hmac_sha256_hex("not-the-token", &body));
    let raw_hmac = hmac_sha256_hex(TOKEN, &body); // no sha256= prefix
    let token_as_sig = format!("sha256={TOKEN}");
    let refused: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("authorization", "Bearer not-the-token")],
        vec![("authorization", "Bearer test-events-toke")],
        vec![("authorization", "Basic dGVzdC1ldmVudHMtdG9rZW4=")],
        vec![("authorization", TOKEN)],
        vec![("x-valuestream-signature", &wrong_hmac)],
        vec![("x-valuestream-signature", &raw_hmac)],
        vec![("x-valuestream-signature", &token_as_sig)],
    ];
    for headers in refused {
        let (s, b) = app.post("events", &headers, body.clone()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{headers:?}: {b}");
    }
    assert_eq!(dump(&store), vec![], "refused events change nothing");

    let (s, b) = bearer(&app, body.clone()).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("processed")),
        "{b}"
    );
    let (s, b) = signed(&app, body.clone()).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("duplicate")),
        "the same id again is a redelivery: {b}"
    );
    assert_eq!(app.receiver.spans().len(), 1);
    let (s, b) = signed(&app, fixture("events/incident_triggered.json")).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("processed")),
        "{b}"
    );
    // Either credential suffices: a right bearer token next to a stale signature is accepted.
    let auth = format!("Bearer {TOKEN}");
    let (s, b) = app
        .post(
            "events",
            &[
                ("authorization", &auth),
                ("x-valuestream-signature", &wrong_hmac),
            ],
            fixture("events/pipeline_run_failed.json"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "either credential suffices: {b}");

    let unset = app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        test_config(&[]),
    )
    .await;
    let (s, b) = bearer(&unset, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["reason"]
        .as_str()
        .unwrap()
        .contains("VALUESTREAM_EVENTS_TOKEN"));
}

#[test]
fn published_schema_matches_what_the_api_accepts() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/events.schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let props: BTreeSet<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(props, FIELDS.iter().copied().collect(), "schema properties");
    assert_eq!(schema["additionalProperties"], json!(false));
    let set = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let strs = |l: &[&str]| -> BTreeSet<String> { l.iter().map(|s| s.to_string()).collect() };
    assert_eq!(set(&schema["properties"]["kind"]["enum"]), strs(KINDS));
    let all: BTreeSet<String> = strs(RUN_STATUSES)
        .union(&strs(INCIDENT_STATUSES))
        .cloned()
        .collect();
    assert_eq!(set(&schema["properties"]["status"]["enum"]), all);
    let per_kind = &schema["allOf"][0];
    assert_eq!(
        set(&per_kind["then"]["properties"]["status"]["enum"]),
        strs(INCIDENT_STATUSES)
    );
    assert_eq!(
        set(&per_kind["else"]["properties"]["status"]["enum"]),
        strs(RUN_STATUSES)
    );
    let required: BTreeSet<String> = set(&schema["required"]);
    assert_eq!(required, strs(&["id", "kind", "item", "status"]));
}

#[tokio::test]
async fn content_type_must_be_json_when_present() {
    let (app, store) = events_app(&[]).await;
    let auth = format!("Bearer {TOKEN}");
    let before = dump(&store);
    let body = fixture("events/deployment_started.json");
    for ct in [
        ";;;",
        "",
        " ",
        "text/plain",
        "application/x-www-form-urlencoded",
        "json",
        "application/",
    ] {
        let (s, b) = app
            .post(
                "events",
                &[("content-type", ct), ("authorization", &auth)],
                body.clone(),
            )
            .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}: {b}");
        let reason = b["reason"].as_str().unwrap();
        assert!(reason.contains("application/json"), "{ct:?}: {reason}");
    }
    assert_eq!(dump(&store), before, "refused deliveries change nothing");
    // JSON media types, with parameters, and a missing header (some script clients send none).
    for (i, ct) in [
        Some("application/json"),
        Some("Application/JSON; charset=utf-8"),
        Some("application/vnd.argocd+json"),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let body = edit("events/deployment_started.json", |v| {
            v["id"] = json!(format!("ct-{i}"))
        });
        let mut headers = vec![("authorization", auth.as_str())];
        if let Some(ct) = ct {
            headers.push(("content-type", ct));
        }
        let (s, b) = app.post("events", &headers, body).await;
        assert_eq!(s, StatusCode::OK, "{ct:?}: {b}");
    }
}

/// Deployment rework (docs/metrics.md "Deployment rework rate"): failed deploy, then the fixing
/// deploy. The second deployment started while production was failed: rework
/// (`failed_state`); the first one started in a good state.
#[tokio::test]
async fn rework_the_deploy_that_fixes_a_failed_one_is_rework() {
    let (app, _) = events_app(&[]).await;
    let failed = edit("events/deployment_succeeded.json", |v| {
        v["id"] = json!("argocd-checkout-production-41-failed");
        v["item"] = json!("argocd/checkout/production/41");
        v["status"] = json!("failed");
        v["started_at"] = json!("2024-03-10T13:00:00Z");
        v["finished_at"] = json!("2024-03-10T13:10:00Z");
    });
    let (s, b) = bearer(&app, failed).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = ev_fixture(&app, "deployment_succeeded").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let rework = |item: &str| {
        let key = item_key("events", "deployment", "Codertocat/Hello-World", item);
        let s = app
            .receiver
            .spans()
            .into_iter()
            .find(|s| s.span_id == ids::span_id(&key, 0))
            .unwrap_or_else(|| panic!("{item}"));
        (
            s.attr("valuestream.deployment.rework").cloned(),
            s.attr("valuestream.deployment.rework.reason").cloned(),
        )
    };
    assert_eq!(
        rework("argocd/checkout/production/41"),
        (Some(json!(false)), None)
    );
    assert_eq!(
        rework("argocd/checkout/production/42"),
        (Some(json!(true)), Some(json!("failed_state")))
    );
    let p = point(&app, "valuestream.deployment.rework").expect("rework counted");
    assert_eq!(p.value, 1.0);
    assert_eq!(
        p.labels["valuestream.deployment.rework.reason"],
        "failed_state"
    );
    assert_eq!(p.labels["valuestream.source"], "events");
}
