//! The generic events API through the real router, exported to a real OTLP receiver.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use valuestream::config::Config;
use valuestream::model::ids::{self, item_key};
use valuestream::sources::events::{
    CHANGE_STATUSES, FIELDS, INCIDENT_STATUSES, KINDS, MAX_LABELS, MAX_STEPS, REVIEWER_KINDS,
    REVIEW_STATES, RUN_STATUSES, STEP_FIELDS, STEP_TYPES,
};
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
        .chain(strs(CHANGE_STATUSES))
        .collect();
    assert_eq!(set(&schema["properties"]["status"]["enum"]), all);
    // Each kind's statuses, in the `if kind … then status …` rule that names the kind.
    let per_kind = |kind: &str| -> BTreeSet<String> {
        let rules: Vec<&Value> = schema["allOf"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["then"]["properties"]["status"].is_object())
            .filter(|r| {
                let k = &r["if"]["properties"]["kind"];
                k["const"] == kind
                    || k["enum"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|x| x == kind))
            })
            .collect();
        assert_eq!(rules.len(), 1, "one rule for kind {kind}");
        set(&rules[0]["then"]["properties"]["status"]["enum"])
    };
    assert_eq!(per_kind("incident"), strs(INCIDENT_STATUSES));
    assert_eq!(per_kind("change"), strs(CHANGE_STATUSES));
    assert_eq!(per_kind("deployment"), strs(RUN_STATUSES));
    assert_eq!(per_kind("pipeline_run"), strs(RUN_STATUSES));
    // A change's steps and labels.
    let steps = &schema["properties"]["steps"];
    assert_eq!(steps["maxItems"], json!(MAX_STEPS));
    assert_eq!(
        schema["properties"]["labels"]["maxItems"],
        json!(MAX_LABELS)
    );
    let step = &steps["items"];
    assert_eq!(step["additionalProperties"], json!(false));
    let step_props: BTreeSet<&str> = step["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(step_props, STEP_FIELDS.iter().copied().collect());
    assert_eq!(set(&step["properties"]["type"]["enum"]), strs(STEP_TYPES));
    assert_eq!(
        set(&step["properties"]["state"]["enum"]),
        strs(REVIEW_STATES)
    );
    assert_eq!(
        set(&step["properties"]["reviewer"]["enum"]),
        strs(REVIEWER_KINDS)
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

// ---------------------------------------------------------------- changes (issue 27 part 3)

const CHANGE_ITEM: &str = "1234";

fn change_key() -> String {
    item_key("events", "change", "Codertocat/Hello-World", CHANGE_ITEM)
}

/// A review reported after the merge event, made after the merge: late news.
fn late_review() -> Vec<u8> {
    edit("events/change_reviewed.json", |v| {
        v["id"] = json!("gerrit-hello-world-1234-late-review");
        v["steps"] = json!([{"type": "review", "at": "2024-03-10T12:30:00Z",
            "state": "commented", "reviewer": "human"}]);
    })
}

/// Change 1234 (tests/fixtures/events/change_*.json): opened as a draft 09:00, ready 09:40,
/// review requested 09:45, a bot's review 09:50, the first review by a person 10:30, merged
/// 12:00 as f95f852, a review after the merge 12:30; then Argo CD's production deployment of
/// f95f852, 13:30 → 13:41:07 (tests/fixtures/events/deployment_*.json).
fn change_deliveries() -> Vec<Vec<u8>> {
    vec![
        fixture("events/change_opened.json"),
        fixture("events/change_reviewed.json"),
        fixture("events/change_merged.json"),
        late_review(),
        fixture("events/deployment_started.json"),
        fixture("events/deployment_succeeded.json"),
    ]
}

/// Delivers `order` of [`change_deliveries`] (each twice when `redeliver`: the second time is a
/// duplicate) into a fresh app, settling at the end.
async fn run_change(order: &[usize], redeliver: bool) -> App {
    let (app, _) = events_app(&[]).await;
    app.set_auto_drain(false);
    let all = change_deliveries();
    for &i in order {
        let (s, b) = bearer(&app, all[i].clone()).await;
        assert_eq!(
            (s, b["status"].as_str()),
            (StatusCode::OK, Some("processed")),
            "{i}: {b}"
        );
        if redeliver {
            let (s, b) = signed(&app, all[i].clone()).await;
            assert_eq!(
                (s, b["status"].as_str()),
                (StatusCode::OK, Some("duplicate")),
                "{i}: the same id again is a redelivery: {b}"
            );
        }
    }
    app.pipeline.drain_all().await.unwrap();
    app
}

/// The stage spans by name: (start, end, trace, parent, span, links).
fn stage_spans(app: &App) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for s in app
        .receiver
        .spans()
        .iter()
        .filter(|s| s.attr("valuestream.change.stage").is_some())
    {
        let prev = out.insert(
            s.name.clone(),
            json!({
                "start": rfc3339(s.start_ns), "end": rfc3339(s.end_ns),
                "trace": s.trace_id, "parent": s.parent_span_id, "span": s.span_id,
                "links": s.links.iter().map(|l| l.2.get("valuestream.link").cloned()).collect::<Vec<_>>(),
            }),
        );
        assert!(prev.is_none(), "stage {} exported twice", s.name);
    }
    out
}

/// `valuestream_change_stage_duration_seconds` by stage: (count, sum).
fn stage_histogram(metrics: &str) -> BTreeMap<String, (f64, f64)> {
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in metrics.lines() {
        for (suffix, slot) in [("_count{", 0), ("_sum{", 1)] {
            let family = format!("valuestream_change_stage_duration_seconds{suffix}");
            let Some(rest) = line.strip_prefix(&family) else {
                continue;
            };
            let stage = rest
                .split("valuestream_change_stage=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap()
                .to_string();
            assert!(
                rest.contains("valuestream_source=\"events\""),
                "labelled with the events source: {line}"
            );
            let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            let e = out.entry(stage).or_default();
            if slot == 0 {
                e.0 += value;
            } else {
                e.1 += value;
            }
        }
    }
    out
}

#[tokio::test]
async fn a_change_s_stages_through_the_events_api_are_child_spans_and_a_histogram() {
    let n = change_deliveries().len();
    let app = run_change(&(0..n).collect::<Vec<_>>(), true).await;
    let change = app.receiver.span("CHANGE");
    assert_eq!(change.name, "CHANGE Cache the checkout totals");
    assert_eq!(change.service, "events");
    assert_eq!(change.span_id, ids::span_id(&change_key(), 0));
    assert_eq!(change.trace_id, ids::trace_id(&change_key()));
    assert_eq!(
        (rfc3339(change.start_ns), rfc3339(change.end_ns)),
        (
            "2024-03-10T09:00:00.000Z".to_string(),
            "2024-03-10T12:00:00.000Z".to_string()
        )
    );
    assert_eq!(change.attr_str("valuestream.kind"), "change");
    assert_eq!(change.attr_str("valuestream.result"), "merged");
    assert_eq!(change.attr_str("vcs.change.id"), CHANGE_ITEM);
    assert_eq!(change.attr_str("vcs.change.state"), "merged");
    assert_eq!(
        change.attr_str("vcs.change.title"),
        "Cache the checkout totals"
    );
    assert_eq!(
        change.attr_str("vcs.ref.head.name"),
        "feature/checkout-cache"
    );
    assert_eq!(
        change.attr_str("vcs.ref.head.revision"),
        "c0ffee52bd8fca8fcc58a9a2d6c842781e32a215",
        "the head commit of the open change"
    );
    assert_eq!(
        change.attr_str("valuestream.change.merge_revision"),
        "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
    );
    assert_eq!(
        change.attr("valuestream.labels"),
        Some(&json!(["performance"]))
    );
    assert_eq!(change.attr_str("valuestream.source_system"), "gerrit");

    // The stages as the rule (src/engine/stages.rs) gives them: opened as a draft, so coding
    // lasts until ready; the bot's review starts no stage; deploy ends with the deployment.
    let got = stage_spans(&app);
    let want = [
        (
            "coding",
            "2024-03-10T09:00:00.000Z",
            "2024-03-10T09:40:00.000Z",
        ),
        (
            "pickup",
            "2024-03-10T09:40:00.000Z",
            "2024-03-10T10:30:00.000Z",
        ),
        (
            "review",
            "2024-03-10T10:30:00.000Z",
            "2024-03-10T12:00:00.000Z",
        ),
        (
            "deploy",
            "2024-03-10T12:00:00.000Z",
            "2024-03-10T13:41:07.000Z",
        ),
    ];
    assert_eq!(got.len(), 4, "{got:#?}");
    for (name, start, end) in want {
        let s = &got[name];
        assert_eq!(
            (s["start"].as_str(), s["end"].as_str()),
            (Some(start), Some(end)),
            "{name}"
        );
        assert_eq!(s["trace"], json!(change.trace_id), "{name}");
        assert_eq!(s["parent"], json!(change.span_id), "{name}");
        let key = format!("{}#stage#{name}", change_key());
        assert_eq!(s["span"], json!(ids::span_id(&key, 0)), "{name}");
    }
    let dep = app.receiver.span("DEPLOY");
    assert_eq!(got["deploy"]["links"], json!(["deployed_by"]));
    let deploy = app.receiver.span("deploy");
    assert_eq!(
        deploy.links[0].1, dep.span_id,
        "deploy links its deployment"
    );
    assert_eq!(
        dep.attr("valuestream.deployment.changes"),
        Some(&json!(1)),
        "the deployment shipped the change's merge commit"
    );
    assert!(
        dep.links.iter().any(
            |l| l.1 == change.span_id && l.2.get("valuestream.link") == Some(&json!("shipped"))
        ),
        "{:?}",
        dep.links
    );

    // Steps are the change span's events; the draft it was opened as and the review after the
    // merge are not.
    let events: Vec<(String, String)> = change
        .events
        .iter()
        .map(|(n, t)| (n.clone(), rfc3339(*t)))
        .collect();
    assert_eq!(
        events,
        [
            ("ready for review", "2024-03-10T09:40:00.000Z"),
            ("review requested", "2024-03-10T09:45:00.000Z"),
            ("review submitted", "2024-03-10T09:50:00.000Z"),
            ("review submitted", "2024-03-10T10:30:00.000Z"),
        ]
        .map(|(n, t)| (n.to_string(), t.to_string()))
    );

    // One observation per stage, exact seconds; lead time from the opening to the deployment.
    let (_, metrics) = app.get("/metrics").await;
    let want: BTreeMap<String, (f64, f64)> = [
        ("coding", 2400.0),
        ("pickup", 3000.0),
        ("review", 5400.0),
        ("deploy", 6067.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), (1.0, v)))
    .collect();
    assert_eq!(stage_histogram(&metrics), want, "{metrics}");
    let lead = point(&app, "valuestream.change.lead_time").expect("lead time");
    assert_eq!((lead.value, lead.sum), (1.0, 16867.0));
}

#[tokio::test]
async fn a_change_s_stages_are_the_same_whatever_the_delivery_order() {
    let n = change_deliveries().len();
    let in_order = run_change(&(0..n).collect::<Vec<_>>(), false).await;
    let want_spans = stage_spans(&in_order);
    let want_hist = stage_histogram(&in_order.get("/metrics").await.1);
    assert_eq!(want_spans.len(), 4);
    let mut orders: Vec<Vec<usize>> = vec![(0..n).rev().collect()];
    let mut seed = 1234u64;
    for _ in 0..4 {
        let mut o: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            o.swap(i, (seed >> 33) as usize % (i + 1));
        }
        orders.push(o);
    }
    // The merged event alone carries every step: the other change events add nothing.
    orders.push(vec![2, 4, 5]);
    for o in orders {
        let app = run_change(&o, false).await;
        assert_eq!(stage_spans(&app), want_spans, "order {o:?}");
        assert_eq!(
            stage_histogram(&app.get("/metrics").await.1),
            want_hist,
            "order {o:?}"
        );
    }
}

/// The first commit comes from the pushes valuestream receives for the change's repository and
/// branch (here GitHub's), as for a pull request: coding starts there.
#[tokio::test]
async fn a_change_s_coding_starts_at_the_first_commit_pushed_to_its_branch() {
    let (app, _) = events_app(&[]).await;
    let mut push = fixture_json("github/push/payload.json");
    push["ref"] = json!("refs/heads/feature/checkout-cache");
    push["created"] = json!(false);
    push["deleted"] = json!(false);
    let commit = json!({
        "id": "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1", "tree_id": "7ee", "distinct": true,
        "message": "Start the cache", "timestamp": "2024-03-10T08:00:00Z",
        "author": {"name": "Codertocat", "email": "c@example.com"},
        "committer": {"name": "Codertocat", "email": "c@example.com"},
        "added": [], "removed": [], "modified": ["README.md"],
    });
    push["after"] = commit["id"].clone();
    push["head_commit"] = commit.clone();
    push["commits"] = json!([commit]);
    let (s, b) = app
        .github("push", "push-feature", serde_json::to_vec(&push).unwrap())
        .await;
    assert!(s.is_success(), "{b}");
    let (s, b) = ev_fixture(&app, "change_merged").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let got = stage_spans(&app);
    assert_eq!(
        (
            got["coding"]["start"].as_str(),
            got["coding"]["end"].as_str()
        ),
        (
            Some("2024-03-10T08:00:00.000Z"),
            Some("2024-03-10T09:40:00.000Z")
        )
    );
    assert_eq!(
        app.receiver
            .span("CHANGE")
            .attr_str("valuestream.change.first_commit_time"),
        "2024-03-10T08:00:00+00:00"
    );
}

/// A change reopened after it was closed is a new span from the reopening, with its own stages.
#[tokio::test]
async fn a_reopened_change_is_a_new_span_with_its_own_stages() {
    let (app, _) = events_app(&[]).await;
    let closed = edit("events/change_merged.json", |v| {
        v["id"] = json!("c-closed");
        v["status"] = json!("closed");
        v["finished_at"] = json!("2024-03-10T11:00:00Z");
        v["commit_sha"] = json!(null);
    });
    let reopened = edit("events/change_opened.json", |v| {
        v["id"] = json!("c-reopened");
        v["status"] = json!("reopened");
        v["started_at"] = json!("2024-03-11T09:00:00Z");
        v["steps"] = json!(null);
    });
    let merged = edit("events/change_merged.json", |v| {
        v["id"] = json!("c-merged");
        v["started_at"] = json!("2024-03-11T09:00:00Z");
        v["finished_at"] = json!("2024-03-11T12:00:00Z");
        v["steps"] = json!([{"type": "review", "at": "2024-03-11T10:00:00Z",
            "state": "approved", "reviewer": "human"}]);
    });
    for body in [closed, reopened, merged] {
        let (s, b) = bearer(&app, body).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let spans: Vec<RSpan> = app
        .receiver
        .spans()
        .into_iter()
        .filter(|s| s.name.starts_with("CHANGE"))
        .collect();
    assert_eq!(spans.len(), 2);
    let second = spans
        .iter()
        .find(|s| s.span_id == ids::span_id(&change_key(), 1))
        .expect("the second generation");
    assert_eq!(rfc3339(second.start_ns), "2024-03-11T09:00:00.000Z");
    assert_eq!(second.attr_str("valuestream.result"), "merged");
    let got = stage_spans(&app);
    assert_eq!(
        got.len(),
        2,
        "pickup and review of the merged generation: {got:#?}"
    );
    assert_eq!(got["pickup"]["start"], "2024-03-11T09:00:00.000Z");
    assert_eq!(got["review"]["end"], "2024-03-11T12:00:00.000Z");
    assert_eq!(got["review"]["parent"], json!(second.span_id));
}

#[tokio::test]
async fn bad_changes_and_steps_are_400_naming_the_field() {
    let (app, store) = events_app(&[]).await;
    let before = dump(&store);
    let merged = "events/change_merged.json";
    let with_step = |step: Value| {
        edit(merged, |v| {
            v["steps"].as_array_mut().unwrap().push(step);
        })
    };
    let too_many: Vec<Value> = (0..101)
        .map(|_| json!({"type": "review_requested", "at": "2024-03-10T09:45:00Z"}))
        .collect();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            with_step(json!({"type": "approval", "at": "2024-03-10T10:00:00Z"})),
            "field `steps[5].type` must be one of draft, ready, review_requested, review",
        ),
        (
            with_step(json!({"type": "ready", "at": "2024-03-10 10:00"})),
            "field `steps[5].at` must be an RFC 3339 time",
        ),
        (
            with_step(json!({"type": "ready", "at": "2024-03-10T10:00:00Z", "state": "approved"})),
            "field `steps[5].state` is only for steps of type \"review\"",
        ),
        (
            with_step(json!({"type": "review", "at": "2024-03-10T10:00:00Z", "state": "approved"})),
            "field `steps[5].reviewer` is required for a review",
        ),
        (
            with_step(json!({"type": "review", "at": "2024-03-10T10:00:00Z", "state": "approved", "reviewer": "octocat"})),
            "field `steps[5].reviewer` must be one of human, bot, author",
        ),
        (
            with_step(json!({"type": "ready", "at": "2024-03-10T10:00:00Z", "by": "octocat"})),
            "unknown field `steps[5].by`",
        ),
        (
            with_step(json!({"type": "ready", "at": "1999-01-01T00:00:00Z"})),
            "field `steps[5].at` 1999-01-01T00:00:00+00:00 is outside",
        ),
        (
            edit(merged, |v| v["steps"] = json!(too_many)),
            "field `steps` has 101 steps, more than 100",
        ),
        (
            edit(merged, |v| v["steps"] = json!({"type": "ready"})),
            "field `steps` must be an array",
        ),
        (
            edit(merged, |v| v["labels"] = json!(["ok", 3])),
            "field `labels[1]` must be a string",
        ),
        (
            edit(merged, |v| v["status"] = json!("succeeded")),
            "field `status` must be one of opened, reopened, updated, merged, closed for kind \"change\"",
        ),
        (
            edit(merged, |v| {
                v.as_object_mut().unwrap().remove("repository");
            }),
            "field `repository` is required for changes",
        ),
        (
            edit(merged, |v| v["environment"] = json!("production")),
            "field `environment` is not used for kind \"change\"",
        ),
        (
            edit("events/deployment_succeeded.json", |v| {
                v["steps"] = json!([])
            }),
            "field `steps` is not used for kind \"deployment\"",
        ),
        (
            edit("events/incident_triggered.json", |v| {
                v["labels"] = json!(["sev1"])
            }),
            "field `labels` is not used for kind \"incident\"",
        ),
        (
            edit("events/change_reviewed.json", |v| {
                v.as_object_mut().unwrap().remove("started_at");
            }),
            "field `started_at` is required when status is \"updated\"",
        ),
    ];
    for (body, want) in cases {
        let (s, b) = bearer(&app, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{want}: {b}");
        let reason = b["reason"].as_str().unwrap();
        assert!(reason.contains(want), "{want:?} not in {reason:?}");
    }
    assert_eq!(dump(&store), before, "refused events change nothing");
}
