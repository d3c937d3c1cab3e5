//! A collector that accepts connections but never answers: webhook answers do not wait for it
//! (nothing is exported on the request path), a drain gives up within the OTLP timeout, the
//! next drains leave the failing collector alone for `VALUESTREAM_RETRY_SECS`, and once a
//! collector answers again every span arrives exactly once.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use valuestream::engine::Engine;
use valuestream::export::otlp::{OtlpExporter, OtlpSettings};
use valuestream::http::{router, AppState};
use valuestream::pipeline::Pipeline;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::Store;

/// A TCP listener that accepts every connection and never says a word.
async fn hanging_collector() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

fn exporter_to(url: &str, timeout: Duration) -> Arc<OtlpExporter> {
    Arc::new(OtlpExporter::new(OtlpSettings::http(url, timeout)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_collector_holds_no_answer_and_loses_nothing() {
    let (hang, _task) = hanging_collector().await;
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().unwrap());
    let config = Arc::new(test_config(&[
        ("VALUESTREAM_SETTLE_SECS", "0"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
    ]));
    let timeout = Duration::from_millis(1500);
    let pipeline = Arc::new(
        Pipeline::new(
            Engine::new(store.clone(), config.clone()),
            exporter_to(&hang, timeout),
        )
        .with_retry_secs(30),
    );
    let app = router(AppState {
        pipeline: pipeline.clone(),
        config: config.clone(),
        metrics_endpoint: true,
    });
    let deliveries = [
        ("issues", fixture("github/issues/opened.payload.json")),
        ("pull_request", opened_pr()),
        ("pull_request", merged_pr()),
        (
            "issues",
            fixture("github/issues/closed.derived.payload.json"),
        ),
    ];
    // 16 deliveries (4 new, then each redelivered three times under new IDs): none waits.
    let mut slowest = Duration::ZERO;
    for round in 0..4 {
        for (i, (event, body)) in deliveries.iter().enumerate() {
            let started = Instant::now();
            let resp = app
                .clone()
                .oneshot(
                    Request::post("/webhooks/github")
                        .header("content-type", "application/json")
                        .header("x-github-event", *event)
                        .header("x-github-delivery", format!("hang-{round}-{i}"))
                        .header("x-hub-signature-256", github_signature(body))
                        .body(Body::from(body.clone()))
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            slowest = slowest.max(started.elapsed());
        }
    }
    println!("slowest webhook answer with a hanging collector: {slowest:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "an answer never waits for the collector: {slowest:?}"
    );

    // The drain tries once, gives up within the OTLP timeout, keeps everything.
    let started = Instant::now();
    let d = pipeline.drain().await.unwrap();
    let first = started.elapsed();
    assert_eq!(d.settled.len(), 2, "{d:?}");
    assert!(d.failed >= 1 && d.remaining, "{d:?}");
    assert!(
        first < timeout + Duration::from_secs(2),
        "bounded by the OTLP timeout: {first:?}"
    );
    // While the collector is failing, drains do not try it again (VALUESTREAM_RETRY_SECS).
    let started = Instant::now();
    let d = pipeline.drain().await.unwrap();
    assert!(d.remaining && d.failed == 0, "{d:?}");
    assert!(started.elapsed() < Duration::from_millis(500));

    // A collector that answers: a new pipeline on the same store (a restart, or the next Lambda)
    // sends every pending span exactly once.
    let receiver = Receiver::start().await;
    let healthy = Pipeline::new(
        Engine::new(store.clone(), config.clone()),
        exporter_to(&receiver.url, timeout),
    );
    let d = healthy.drain().await.unwrap();
    assert!(!d.remaining, "{d:?}");
    let again = healthy.drain().await.unwrap();
    assert_eq!(again.exported, 0);
    let names: Vec<String> = receiver.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names.len(), 2, "each span once: {names:?}");
    assert!(names.iter().any(|n| n.starts_with("PR #2")));
    assert!(names.iter().any(|n| n.starts_with("ISSUE #1")));
}
