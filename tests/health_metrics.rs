//! valuestream's own health on `GET /metrics` (docs/metrics.md, "valuestream's own health"):
//! deliveries counted by source and answer, the store's requests, drains and the backlog, read
//! back as exact exposition lines through the router.

mod common;

use common::*;

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
