//! valuestream's own health on `GET /metrics` (docs/metrics.md, "valuestream's own health"):
//! deliveries counted by source and answer, the store's requests, drains and the backlog, read
//! back as exact exposition lines through the router; and the same health over OTLP/gRPC, as
//! the real-protobuf receiver of tests/common/grpc_receiver.rs decodes it: the process's
//! cumulative counters under its own `service.instance.id`, the store's gauges and the sync's
//! healed counter under the shared resource, none of it among the DORA series.

mod common;

use common::grpc_receiver::{GrpcReceiver, Mode};
use common::*;
use std::sync::Arc;
use std::time::Duration;
use valuestream::export::otlp::{OtlpExporter, OtlpSettings, Protocol};
use valuestream::pipeline::HealthExport;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::{Cond, Data, Record, Write};

/// The value of the sample line `name{labels}` (or `name` alone) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[tokio::test]
async fn deliveries_are_counted_by_source_and_answer() {
    let app = app().await;
    let (_, before) = app.get("/metrics").await;
    for answer in [
        "processed",
        "duplicate",
        "ignored",
        "refused_401",
        "refused_4xx",
        "error_5xx",
    ] {
        let line =
            format!(r#"valuestream_health_deliveries_total{{source="jira",answer="{answer}"}} 0"#);
        assert!(
            before.lines().any(|l| l == line),
            "every registered source's answers exist from the start: {line}\n{before}"
        );
    }

    let (s, b) = app
        .github_fixture("github/issues/opened.payload.json", "health-1")
        .await;
    assert_eq!(
        (s.as_u16(), b["status"].as_str()),
        (200, Some("processed")),
        "{b}"
    );
    let (s, b) = app
        .github_fixture("github/issues/opened.payload.json", "health-1")
        .await;
    assert_eq!(
        (s.as_u16(), b["status"].as_str()),
        (200, Some("duplicate")),
        "{b}"
    );
    let (s, b) = app
        .github("star", "health-2", br#"{"action":"created"}"#.to_vec())
        .await;
    assert_eq!(
        (s.as_u16(), b["status"].as_str()),
        (202, Some("ignored")),
        "{b}"
    );
    let body = fixture("github/issues/opened.payload.json");
    let (s, _) = app
        .post(
            "github",
            &[
                ("content-type", "application/json"),
                ("x-github-event", "issues"),
                ("x-github-delivery", "health-3"),
                ("x-hub-signature-256", "sha256=00"),
            ],
            body,
        )
        .await;
    assert_eq!(s.as_u16(), 401);
    let (s, _) = app
        .post(
            "github",
            &[("content-type", "text/plain"), ("x-github-event", "issues")],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(s.as_u16(), 415);
    let (s, _) = app.post("nosuchsource", &[], b"{}".to_vec()).await;
    assert_eq!(s.as_u16(), 404);

    let (status, text) = app.get("/metrics").await;
    assert_eq!(status.as_u16(), 200);
    for line in [
        r#"valuestream_health_deliveries_total{source="github",answer="processed"} 1"#,
        r#"valuestream_health_deliveries_total{source="github",answer="duplicate"} 1"#,
        r#"valuestream_health_deliveries_total{source="github",answer="ignored"} 1"#,
        r#"valuestream_health_deliveries_total{source="github",answer="refused_401"} 1"#,
        r#"valuestream_health_deliveries_total{source="github",answer="refused_4xx"} 1"#,
        r#"valuestream_health_deliveries_total{source="github",answer="error_5xx"} 0"#,
        r#"valuestream_health_deliveries_total{source="unknown",answer="refused_4xx"} 1"#,
        r#"valuestream_health_export_failures_total{signal="traces"} 0"#,
        r#"valuestream_health_export_failures_total{signal="metrics"} 0"#,
        r#"valuestream_health_store_errors_total{operation="commit"} 0"#,
        "valuestream_health_settle_due_scopes 0",
        "valuestream_health_outbox_oldest_age_seconds 0",
        "valuestream_settle_failures_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "/metrics lacks {line}\n{text}"
        );
    }
    // No delivery ID, item key or repository among the health labels.
    let health = text
        .split_once("# HELP valuestream_health_")
        .expect("the health after the DORA series")
        .1;
    for word in ["health-1", "health-3", "Hello-World", "nosuchsource"] {
        assert!(!health.contains(word), "{word} in the health metrics");
    }
    // The store was measured: the deliveries committed, the drains after them ran.
    let commits = value(
        &text,
        r#"valuestream_health_store_request_duration_seconds_count{operation="commit"}"#,
    )
    .unwrap();
    assert!(commits >= 2.0, "{commits} commits measured\n{text}");
    let drains = value(&text, "valuestream_health_drain_duration_seconds_count").unwrap();
    assert_eq!(drains as u64, app.pipeline.health.drains());
    assert!(drains >= 1.0, "the drains after each delivery were timed");
}

#[tokio::test]
async fn the_settle_backlog_and_a_refused_export_show() {
    // A collector refusing both signals, and a settle period: the delivery waits to settle.
    let app = app_with(
        std::sync::Arc::new(valuestream::store::embedded::EmbeddedStore::in_memory().unwrap()),
        test_config(&[("VALUESTREAM_SETTLE_SECS", "1")]),
    )
    .await;
    app.set_auto_drain(false);
    app.receiver.set_down(true);
    let (s, _) = app
        .github_fixture("github/issues/closed.derived.payload.json", "health-b1")
        .await;
    assert_eq!(s.as_u16(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let backlog = app.pipeline.backlog().await.unwrap();
    assert_eq!(backlog.due_scopes, 1, "{backlog:?}");
    assert!(backlog.oldest_due_age_secs >= 1.0, "{backlog:?}");
    let (_, text) = app.get("/metrics").await;
    assert_eq!(
        value(&text, "valuestream_health_settle_due_scopes"),
        Some(1.0)
    );

    // Settled into the outbox; the collector refuses it.
    let d = app.pipeline.drain().await.unwrap();
    assert!(d.remaining && d.failed > 0, "{d:?}");
    let (_, text) = app.get("/metrics").await;
    assert_eq!(
        value(&text, "valuestream_health_settle_due_scopes"),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            r#"valuestream_health_outbox_pending_batches{signal="traces"}"#
        ),
        Some(1.0),
        "{text}"
    );
    let failures = app.pipeline.health.export_failures("metrics")
        + app.pipeline.health.export_failures("traces");
    assert!(failures >= 1);
    assert_eq!(
        value(
            &text,
            r#"valuestream_health_export_failures_total{signal="traces"}"#
        ),
        Some(app.pipeline.health.export_failures("traces") as f64)
    );
    assert!(
        value(
            &text,
            r#"valuestream_health_export_failures_total{signal="metrics"}"#
        )
        .unwrap()
            + value(
                &text,
                r#"valuestream_health_export_failures_total{signal="traces"}"#
            )
            .unwrap()
            >= 1.0
    );
    assert!(value(&text, "valuestream_health_outbox_oldest_age_seconds").is_some());
}

/// A sync cursor record as `valuestream::sync` writes it: `healed` deliveries healed in
/// `repository` since `created`.
async fn healed_record(app: &App, repository: &str, healed: u64, created: &str) {
    let cursor = valuestream::sync::Cursor {
        source: "github".into(),
        repository: repository.into(),
        healed,
        syncs: 1,
        created: Some(created.parse().unwrap()),
        ..Default::default()
    };
    let record = Record {
        key: valuestream::engine::keys::sync_cursor("github", repository),
        version: 1,
        expires_at: chrono::Utc::now().timestamp() + 86_400,
        data: Data::encode(&cursor).unwrap(),
    };
    app.store
        .commit(vec![Write::Put {
            record,
            cond: Cond::Absent,
        }])
        .await
        .unwrap();
}

/// The one point of `name` with `labels` (all of them) in `points`, the latest if several.
fn point<'a>(points: &'a [HPoint], name: &str, labels: &[(&str, &str)]) -> &'a HPoint {
    points
        .iter()
        .filter(|p| {
            p.name == name
                && labels.len() == p.labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| p.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .max_by_key(|p| p.time_ns)
        .unwrap_or_else(|| panic!("no {name} {labels:?} among {points:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_goes_over_otlp_grpc_apart_from_the_dora_series() {
    let grpc = GrpcReceiver::start(Mode::Ok).await;
    let settings = OtlpSettings::http(&grpc.url, Duration::from_secs(3))
        .with_protocol(Protocol::Grpc, &grpc.url);
    let app = app_exporting(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        test_config(&[("VALUESTREAM_SETTLE_SECS", "0")]),
        Receiver::start().await,
        Arc::new(OtlpExporter::new(settings).unwrap()),
    );
    let health = app.pipeline.health.clone();

    // Deliveries: processed, duplicate, a bad signature. Their answers and the drains after
    // them export spans and DORA points, never the health.
    let (s, _) = app
        .github_fixture("github/issues/closed.derived.payload.json", "otlp-1")
        .await;
    assert_eq!(s.as_u16(), 200);
    let (s, b) = app
        .github_fixture("github/issues/closed.derived.payload.json", "otlp-1")
        .await;
    assert_eq!((s.as_u16(), b["status"].as_str()), (200, Some("duplicate")));
    let (s, _) = app
        .post(
            "github",
            &[
                ("content-type", "application/json"),
                ("x-github-event", "issues"),
                ("x-github-delivery", "otlp-2"),
                ("x-hub-signature-256", "sha256=00"),
            ],
            fixture("github/issues/opened.payload.json"),
        )
        .await;
    assert_eq!(s.as_u16(), 401);
    app.pipeline.drain_all().await.unwrap();
    let dora = grpc.points();
    assert!(
        dora.iter().any(|p| p.name == "valuestream.issue.duration"),
        "the DORA points went out: {dora:?}"
    );
    assert!(
        grpc.health().is_empty(),
        "no health on the delivery or drain path"
    );
    healed_record(&app, "Octo/Missed", 3, "2026-01-02T03:04:05Z").await;

    // The hosts' export: Lambda after a scheduled drain, serve on its timer.
    let before = valuestream::pipeline::health::now_ns();
    assert_eq!(
        valuestream::entrypoints::export_health(&app.pipeline, Duration::from_secs(10)).await,
        HealthExport::Sent
    );
    let points = grpc.health();
    assert!(!points.is_empty());

    // Every name, and none is a DORA series (nor the other way round).
    let mut names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names,
        [
            "valuestream.health.deliveries",
            "valuestream.health.drain.duration",
            "valuestream.health.export.failures",
            "valuestream.health.outbox.oldest_age",
            "valuestream.health.outbox.pending_batches",
            "valuestream.health.settle.due_scopes",
            "valuestream.health.settle.history_reads",
            "valuestream.health.settle.oldest_due_age",
            "valuestream.health.store.conflicts",
            "valuestream.health.store.errors",
            "valuestream.health.store.request.duration",
            "valuestream.settle.failures",
            "valuestream.sync.healed",
        ]
    );
    assert!(grpc
        .points()
        .iter()
        .all(|p| !p.name.contains("health") && !p.name.contains("sync")));

    // The process's own counters: cumulative since the process started, under its instance.
    let instance = health.instance().to_string();
    for (answer, want) in [
        ("processed", 1.0),
        ("duplicate", 1.0),
        ("refused_401", 1.0),
        ("ignored", 0.0),
        ("error_5xx", 0.0),
    ] {
        let p = point(
            &points,
            "valuestream.health.deliveries",
            &[("source", "github"), ("answer", answer)],
        );
        assert_eq!(p.value, want, "{answer}: {p:?}");
        assert_eq!((p.kind, p.cumulative, p.monotonic), ("sum", true, true));
        assert_eq!(p.unit, "{delivery}");
        assert_eq!(p.start_ns, health.start_ns(), "start = process start");
        assert!(p.time_ns >= before && p.time_ns > p.start_ns);
        assert_eq!(p.resource["service.instance.id"], instance);
        assert_eq!(p.resource["service.name"], "valuestream");
        assert_eq!(p.resource["service.namespace"], "valuestream");
    }
    let drains = point(&points, "valuestream.health.drain.duration", &[]);
    assert_eq!((drains.kind, drains.cumulative), ("histogram", true));
    assert_eq!(drains.unit, "s");
    assert_eq!(drains.value as u64, health.drains());
    assert!(drains.value >= 3.0, "{drains:?}");
    assert_eq!(drains.bounds, valuestream::pipeline::health::DRAIN_BUCKETS);
    assert_eq!(drains.buckets.iter().sum::<u64>(), health.drains());
    let commits = point(
        &points,
        "valuestream.health.store.request.duration",
        &[("operation", "commit")],
    );
    assert_eq!(commits.value as u64, health.store_counts("commit").0);
    assert!(commits.value >= 2.0);
    for signal in ["traces", "metrics"] {
        let p = point(
            &points,
            "valuestream.health.export.failures",
            &[("signal", signal)],
        );
        assert_eq!(p.value, 0.0);
    }
    assert_eq!(
        point(&points, "valuestream.settle.failures", &[]).value,
        0.0
    );

    // What the store holds: one series whichever process sends it (no instance).
    for (name, labels, want) in [
        ("valuestream.health.settle.due_scopes", vec![], 0.0),
        ("valuestream.health.outbox.oldest_age", vec![], 0.0),
        (
            "valuestream.health.outbox.pending_batches",
            vec![("signal", "traces")],
            0.0,
        ),
    ] {
        let p = point(&points, name, &labels);
        assert_eq!((p.kind, p.value), ("gauge", want), "{p:?}");
        assert!(!p.resource.contains_key("service.instance.id"), "{p:?}");
        assert_eq!(p.resource["service.name"], "valuestream");
    }
    let healed = point(
        &points,
        "valuestream.sync.healed",
        &[("source", "github"), ("repository", "Octo/Missed")],
    );
    assert_eq!(
        (
            healed.kind,
            healed.cumulative,
            healed.monotonic,
            healed.value
        ),
        ("sum", true, true, 3.0)
    );
    assert_eq!(
        healed.start_ns,
        ns("2026-01-02T03:04:05Z"),
        "its record's creation"
    );
    assert!(!healed.resource.contains_key("service.instance.id"));

    // Later: the totals grew, the start stayed, the instance is the same process.
    let (s, _) = app
        .github("star", "otlp-3", br#"{"action":"created"}"#.to_vec())
        .await;
    assert_eq!(s.as_u16(), 202);
    assert_eq!(
        valuestream::entrypoints::export_health(&app.pipeline, Duration::from_secs(10)).await,
        HealthExport::Sent
    );
    let later = grpc.health();
    let ignored = point(
        &later,
        "valuestream.health.deliveries",
        &[("source", "github"), ("answer", "ignored")],
    );
    assert_eq!(ignored.value, 1.0);
    assert_eq!(ignored.start_ns, health.start_ns());
    assert_eq!(ignored.resource["service.instance.id"], instance);
    assert!(point(&later, "valuestream.health.drain.duration", &[]).value >= drains.value);
}

#[tokio::test]
async fn a_refused_health_export_is_bounded_and_leaves_the_dora_outbox_alone() {
    // The HTTP receiver refusing metrics: the health export fails within its timeout, is
    // logged, and counts as no export failure of the outbox's signals.
    let refused = app().await;
    refused.receiver.set_metrics_down(true);
    let started = std::time::Instant::now();
    assert_eq!(
        valuestream::entrypoints::export_health(&refused.pipeline, Duration::from_secs(10)).await,
        HealthExport::Failed
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the OTLP timeout"
    );
    assert_eq!(refused.pipeline.health.export_failures("metrics"), 0);
    // A drain whose points the collector refuses leaves metrics alone for the retry period:
    // the health is not tried either.
    let base = app().await;
    let pipeline = Arc::new(
        valuestream::pipeline::Pipeline::new(
            valuestream::engine::Engine::new(base.store.clone(), base.config.clone()),
            base.pipeline.exporter.clone(),
        )
        .with_retry_secs(3600),
    );
    let quiet = App {
        router: valuestream::http::router(valuestream::http::AppState {
            pipeline: pipeline.clone(),
            config: base.config.clone(),
            metrics_endpoint: true,
        }),
        pipeline,
        ..base
    };
    quiet.set_auto_drain(false);
    quiet.receiver.set_metrics_down(true);
    let (s, _) = quiet
        .github_fixture("github/issues/closed.derived.payload.json", "quiet-1")
        .await;
    assert_eq!(s.as_u16(), 200);
    let far = quiet.pipeline.engine.now() + chrono::TimeDelta::days(1);
    let d = quiet.pipeline.drain_at(far).await.unwrap();
    assert!(d.failed > 0, "{d:?}");
    assert_eq!(
        valuestream::entrypoints::export_health(&quiet.pipeline, Duration::from_secs(10)).await,
        HealthExport::Skipped
    );
}

/// How settlements read a repository's sealed history shows on `/metrics`: after the mix is
/// settled and sealed (its fixtures span more than the lag), a new delivery's settlement reads
/// from the checkpoint; a review app's first deployment makes the settlement that exports it
/// read the whole sealed history, and a deployment from before the cut makes one.
#[tokio::test]
async fn settlements_show_how_they_read_a_sealed_history() {
    let store = Arc::new(valuestream::store::memory::MemoryStore::new());
    let config = test_config(&[
        ("VALUESTREAM_SEAL_AFTER_SECS", "86400"),
        ("VALUESTREAM_INCIDENT_WINDOW_HOURS", "1"),
    ]);
    let app = app_with(store, config).await;
    app.set_auto_drain(false);
    assert_eq!(history_reads(&app).await, (0.0, 0.0));
    // The mix, and a PR merged the day before it (a landing the production deployment ships).
    let earlier = edit("github/pull_request/closed.payload.json", |v| {
        v["number"] = serde_json::json!(77);
        let pr = &mut v["pull_request"];
        pr["number"] = serde_json::json!(77);
        pr["id"] = serde_json::json!(77_077);
        pr["merged"] = serde_json::json!(true);
        pr["created_at"] = serde_json::json!("2019-05-14T09:00:00Z");
        pr["closed_at"] = serde_json::json!("2019-05-14T10:00:00Z");
        pr["merged_at"] = serde_json::json!("2019-05-14T10:00:00Z");
        pr["updated_at"] = serde_json::json!("2019-05-14T10:00:00Z");
        pr["merge_commit_sha"] = serde_json::json!("77a5aa4e6c4f4b6f8e0d7c1b2a3f4e5d6c7b8a90");
    });
    let deliveries = mix().into_iter().chain([("pull_request", earlier)]);
    for (i, (event, body)) in deliveries.enumerate() {
        let (s, b) = app.github(event, &format!("sealed-{i}"), body).await;
        assert_eq!(s.as_u16(), 200, "{b}");
    }
    app.pipeline.drain_all().await.unwrap();
    // A new issue after everything sealed: its settlement reads from the checkpoint.
    let later = opened_issue(900, "2025-01-01T00:00:00Z");
    assert_eq!(drained_reads(&app, "issues", later).await, (1.0, 0.0));
    // A review app's first deployment ships every change landed before it: the settlement
    // that exports its span reads everything; once it is out, the next reads from the
    // checkpoint again (its shipped changes go into its span only).
    let review = edit("github/deployment_status/payload.json", |v| {
        v["deployment"]["id"] = serde_json::json!(902_902);
        v["deployment"]["environment"] = serde_json::json!("review-7");
        v["deployment"]["created_at"] = serde_json::json!("2025-01-02T00:00:00Z");
        v["deployment"]["updated_at"] = serde_json::json!("2025-01-02T00:00:00Z");
        v["deployment_status"]["id"] = serde_json::json!(902_903);
        v["deployment_status"]["environment"] = serde_json::json!("review-7");
        v["deployment_status"]["created_at"] = serde_json::json!("2025-01-02T00:05:00Z");
        v["deployment_status"]["updated_at"] = serde_json::json!("2025-01-02T00:05:00Z");
    });
    assert_eq!(
        drained_reads(&app, "deployment_status", review).await,
        (0.0, 1.0)
    );
    let after_review = opened_issue(903, "2025-01-03T00:00:00Z");
    assert_eq!(
        drained_reads(&app, "issues", after_review).await,
        (1.0, 0.0)
    );
    // A deployment from before the cut: its settlement reads everything.
    let early = edit("github/deployment/payload.json", |v| {
        v["deployment"]["id"] = serde_json::json!(901_901);
        v["deployment"]["created_at"] = serde_json::json!("2015-01-01T00:00:00Z");
        v["deployment"]["updated_at"] = serde_json::json!("2015-01-01T00:00:00Z");
    });
    assert_eq!(drained_reads(&app, "deployment", early).await, (0.0, 1.0));
}

/// The `issues` opened fixture as issue `number`, opened at `at`.
fn opened_issue(number: u64, at: &str) -> Vec<u8> {
    edit("github/issues/opened.payload.json", |v| {
        v["issue"]["number"] = serde_json::json!(number);
        v["issue"]["id"] = serde_json::json!(number * 1_001);
        v["issue"]["created_at"] = serde_json::json!(at);
        v["issue"]["updated_at"] = serde_json::json!(at);
    })
}

/// The bounded and whole reads of sealed histories `/metrics` counts so far.
async fn history_reads(app: &App) -> (f64, f64) {
    let (_, text) = app.get("/metrics").await;
    let read = |kind: &str| {
        let series = format!(r#"valuestream_health_settle_history_reads_total{{read="{kind}"}}"#);
        value(&text, &series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    };
    (read("bounded"), read("whole"))
}

/// Delivers `body` as GitHub `event`, drains, and gives the bounded and whole reads that drain
/// made.
async fn drained_reads(app: &App, event: &str, body: Vec<u8>) -> (f64, f64) {
    let before = history_reads(app).await;
    let (s, b) = app
        .github(event, &format!("reads-{}", before.0 + before.1), body)
        .await;
    assert_eq!(
        (s.as_u16(), b["status"].as_str()),
        (200, Some("processed")),
        "{b}"
    );
    app.pipeline.drain_all().await.unwrap();
    let after = history_reads(app).await;
    (after.0 - before.0, after.1 - before.1)
}
