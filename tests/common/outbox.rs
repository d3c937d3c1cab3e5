//! "Nothing is lost when the collector is down", as one scenario every store runs
//! (tests/store_embedded.rs and tests/store_dynamodb.rs).

use super::{app_with, merged_pr, test_config};
use axum::http::StatusCode;
use std::sync::Arc;
use valuestream::store::Store;

/// How the pending batch gets out once the collector is back.
#[derive(Clone, Copy, Debug)]
pub enum Recovery {
    /// The drain after the next delivery (serve with settle 0) sends it.
    NextDelivery,
    /// An explicit drain (serve's background loop, the Lambda's scheduled drain).
    Drain,
}

/// The collector answers 503 while a closing event is delivered: the delivery is still accepted
/// (2xx, `export_pending`), the batch waits in the outbox, and once the collector is back it is
/// exported exactly once.
pub async fn collector_down_loses_nothing(store: Arc<dyn Store>, recovery: Recovery) {
    let app = app_with(store, test_config(&[])).await;
    app.receiver.set_down(true);
    let (s, b) = app.github("pull_request", "down-close", merged_pr()).await;
    assert!(
        s.is_success(),
        "accepted although the collector is down: {s} {b}"
    );
    assert_eq!(b["status"], "processed", "{b}");
    assert_eq!(b["finished"].as_array().map(Vec::len), Some(1), "{b}");
    assert_eq!(
        b["export_pending"], true,
        "the answer says the export is pending: {b}"
    );
    assert_eq!(
        app.pipeline.pending().await.unwrap(),
        1,
        "the batch waits in the outbox"
    );
    assert!(app.receiver.spans().is_empty());

    app.receiver.set_down(false);
    match recovery {
        Recovery::NextDelivery => {
            let (s, b) = app
                .github_fixture("github/issues/opened.payload.json", "after-recovery")
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            assert_eq!(
                b["export_pending"], false,
                "the drain after it sent the batch: {b}"
            );
        }
        Recovery::Drain => {
            let d = app.pipeline.drain().await.unwrap();
            assert_eq!((d.exported, d.failed, d.remaining), (1, 0, false), "{d:?}");
        }
    }
    let spans = app.receiver.spans();
    assert_eq!(spans.len(), 1, "exactly one copy arrives: {spans:#?}");
    assert!(spans[0].name.starts_with("PR #2"), "{:?}", spans[0].name);
    assert!(
        app.receiver
            .points()
            .iter()
            .any(|p| p.name == "valuestream.change.duration"),
        "the metric points of the batch arrive too"
    );
    assert_eq!(
        app.pipeline.pending().await.unwrap(),
        0,
        "the outbox is empty"
    );

    let again = app.pipeline.drain().await.unwrap();
    assert_eq!(again.exported, 0, "{again:?}");
    assert_eq!(
        app.receiver.spans().len(),
        1,
        "another drain sends nothing more"
    );
    // A later delivery does not drain anything either: the flag is down.
    let (_, b) = app
        .github_fixture("github/issues/labeled.payload.json", "later")
        .await;
    assert_eq!(b["export_pending"], false, "{b}");
    assert_eq!(app.receiver.spans().len(), 1);
}

/// Issue 1 opened, PR 2 opened and merged, issue 1 closed (delivery IDs `<prefix>-1`…); the
/// answer to the last.
async fn issue_and_pr(app: &super::App, prefix: &str) -> serde_json::Value {
    let id = |n: u32| format!("{prefix}-{n}");
    app.github_fixture("github/issues/opened.payload.json", &id(1))
        .await;
    app.github("pull_request", &id(2), super::opened_pr()).await;
    app.github("pull_request", &id(3), merged_pr()).await;
    let closed = "github/issues/closed.derived.payload.json";
    app.github_fixture(closed, &id(4)).await.1
}

/// The collector accepts traces but answers 500 to metrics: every span is sent exactly once,
/// the points wait in the outbox and go out once metrics are accepted again.
pub async fn partial_outage_sends_each_span_once(store: Arc<dyn Store>) {
    let app = app_with(store, test_config(&[])).await;
    app.receiver.set_metrics_down(true);
    let b = issue_and_pr(&app, "p").await;
    assert_eq!(b["export_pending"], true, "the points are pending: {b}");
    for _ in 0..5 {
        let d = app.pipeline.drain().await.unwrap();
        assert!(d.remaining, "{d:?}");
    }
    let spans = app.receiver.spans();
    assert_eq!(
        spans.len(),
        2,
        "each span once, however often the metrics failed: {spans:#?}"
    );
    let (traces, metric_posts) = app.receiver.posts();
    assert_eq!(traces, 2, "two batches of spans, each sent once");
    assert!(metric_posts >= 5, "the points were retried: {metric_posts}");
    assert!(app.receiver.points().is_empty());

    app.receiver.set_metrics_down(false);
    let d = app.pipeline.drain().await.unwrap();
    assert!(!d.remaining, "{d:?}");
    assert_eq!(app.receiver.spans().len(), 2, "no span sent again");
    assert_eq!(app.receiver.posts().0, 2);
    assert!(app
        .receiver
        .points()
        .iter()
        .any(|p| p.name == "valuestream.issue.duration"));
    assert_eq!(app.pipeline.pending().await.unwrap(), 0);
}

/// The collector accepts metrics but answers 500 to traces: the points go out once (recorded as
/// sent), the spans wait in the outbox and go out exactly once when traces are accepted again.
pub async fn traces_outage_sends_each_span_once(store: Arc<dyn Store>) {
    let app = app_with(store, test_config(&[])).await;
    app.receiver.set_traces_down(true);
    let b = issue_and_pr(&app, "t").await;
    assert_eq!(b["export_pending"], true, "the spans are pending: {b}");
    let (_, metric_posts) = app.receiver.posts();
    for _ in 0..3 {
        let d = app.pipeline.drain().await.unwrap();
        assert!(d.remaining && d.failed >= 1, "{d:?}");
    }
    assert!(app.receiver.spans().is_empty());
    let (trace_posts, _) = app.receiver.posts();
    assert!(trace_posts >= 3, "the spans were retried: {trace_posts}");
    assert_eq!(
        app.receiver.posts().1,
        metric_posts,
        "points are not sent again"
    );
    let issues = |points: Vec<super::RPoint>| {
        points
            .into_iter()
            .filter(|p| p.name == "valuestream.issue.duration")
            .collect::<Vec<_>>()
    };
    assert!(
        !issues(app.receiver.points()).is_empty(),
        "the points went out"
    );

    app.receiver.set_traces_down(false);
    let d = app.pipeline.drain().await.unwrap();
    assert!(!d.remaining, "{d:?}");
    let spans = app.receiver.spans();
    assert_eq!(spans.len(), 2, "each span once: {spans:#?}");
    assert_eq!(app.pipeline.pending().await.unwrap(), 0);
    let again = app.pipeline.drain().await.unwrap();
    assert_eq!((again.exported, app.receiver.spans().len()), (0, 2));
    // Sent more than once, the points still say one issue.
    let latest = issues(app.receiver.latest_points());
    assert_eq!(latest.len(), 1, "{latest:?}");
    assert_eq!(latest[0].value, 1.0, "{latest:?}");
}

/// A batch is put in the outbox leased to the drainer that settled it, which exports it with no
/// lease write of its own; another drainer sharing the store (a second `serve`, an overlapping
/// scheduled drain) leaves it alone meanwhile, so it goes out once.
pub async fn a_settled_batch_is_leased_to_its_drainer(store: Arc<dyn Store>) {
    let settler = app_with(store.clone(), test_config(&[])).await;
    let other = app_with(store, test_config(&[])).await;
    settler.set_auto_drain(false);
    other.set_auto_drain(false);
    settler.github("pull_request", "l-1", merged_pr()).await;
    let far = settler.pipeline.engine.now() + chrono::TimeDelta::days(1);
    let settled = settler.pipeline.engine.settle(far).await.unwrap();
    assert_eq!(settled.spans.len(), 1);
    assert_ne!(
        settler.pipeline.engine.holder(),
        other.pipeline.engine.holder()
    );

    let d = other.pipeline.export_outbox().await.unwrap();
    assert_eq!((d.exported, d.remaining), (0, true), "{d:?}");
    assert!(other.receiver.spans().is_empty() && other.receiver.points().is_empty());

    let requests = settler.store.requests();
    let d = settler.pipeline.export_outbox().await.unwrap();
    assert_eq!((d.exported, d.remaining), (1, false), "{d:?}");
    assert_eq!(settler.receiver.spans().len(), 1);
    // Two pages of the outbox (the batch, then nothing after it) and the removal: no lease.
    assert_eq!(settler.store.requests() - requests, 3);
    let d = other.pipeline.export_outbox().await.unwrap();
    assert_eq!((d.exported, d.remaining), (0, false), "{d:?}");
    assert!(other.receiver.spans().is_empty());
}
