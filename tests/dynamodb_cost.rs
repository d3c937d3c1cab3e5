//! What a delivery costs on DynamoDB, counted against moto_server: requests, read and write
//! capacity units per delivery type, and of the drain that settles and exports after it. The
//! figures in docs/cost.md come from this test's table (`cargo nextest run --test dynamodb_cost
//! --no-capture`); a change that adds requests or grows the items fails here.

mod common;

use axum::http::StatusCode;
use common::moto::Moto;
use common::*;
use std::sync::Arc;
use valuestream::store::dynamodb::{Capacity, DynamoStore};
use valuestream::store::Store;

/// A delivery type and what it may cost: (label, event, body, [requests, most WCU] of the
/// delivery, [requests, most WCU] of the drain after it).
type Step = (&'static str, &'static str, Vec<u8>, [u64; 3], [u64; 2]);

fn delta(store: &DynamoStore, before: (u64, Capacity)) -> (u64, u64, u64) {
    let now = store.capacity();
    (
        store.requests() - before.0,
        now.read_units - before.1.read_units,
        now.write_units - before.1.write_units,
    )
}

#[tokio::test]
async fn calls_and_capacity_per_delivery_type() {
    let moto = Moto::start().await;
    let store = Arc::new(moto.store().await);
    let app = app_with(store.clone(), test_config(&[])).await;
    app.set_auto_drain(false);
    // Measured against moto (see docs/cost.md): a delivery is one read of 2 items and one
    // transaction of 3 (item, summary, wake-up marker). A regression makes a figure grow.
    let steps: Vec<Step> = vec![
        (
            "issue opened",
            "issues",
            fixture("github/issues/opened.payload.json"),
            [2, 2, 6],
            [4, 1],
        ),
        ("PR opened", "pull_request", opened_pr(), [2, 2, 6], [4, 1]),
        (
            "PR merged",
            "pull_request",
            merged_pr(),
            [2, 2, 6],
            [11, 12],
        ),
        (
            "issue closed",
            "issues",
            fixture("github/issues/closed.derived.payload.json"),
            [2, 2, 6],
            [11, 12],
        ),
        (
            "deployment created",
            "deployment",
            fixture("github/deployment/payload.json"),
            [2, 2, 6],
            [4, 1],
        ),
        (
            "deployment succeeded",
            "deployment_status",
            fixture("github/deployment_status/payload.json"),
            [2, 2, 6],
            [11, 14],
        ),
        (
            "workflow run requested",
            "workflow_run",
            fixture("github/workflow_run/requested.payload.json"),
            [2, 2, 6],
            [4, 1],
        ),
        (
            "workflow run completed",
            "workflow_run",
            fixture("github/workflow_run/completed.payload.json"),
            [2, 2, 6],
            [11, 12],
        ),
    ];
    let mut table = String::from(
        "\n| delivery | calls | RCU | WCU | drain calls | drain RCU | drain WCU |\n|---|---|---|---|---|---|---|\n",
    );
    let mut over = Vec::new();
    for (i, (label, event, body, [calls, max_rcu, max_wcu], [drain_calls, max_drain_wcu])) in
        steps.into_iter().enumerate()
    {
        let before = (store.requests(), store.capacity());
        let (s, b) = app.github(event, &format!("cost-{i}"), body).await;
        assert_eq!(s, StatusCode::OK, "{label}: {b}");
        assert_eq!(b["status"], "processed", "{label}: {b}");
        let (c, r, w) = delta(&store, before);
        let before = (store.requests(), store.capacity());
        app.pipeline.drain_all().await.unwrap();
        let (dc, dr, dw) = delta(&store, before);
        table.push_str(&format!(
            "| {label} | {c} | {r} | {w} | {dc} | {dr} | {dw} |\n"
        ));
        if c != calls || r > max_rcu || w > max_wcu || dc != drain_calls || dw > max_drain_wcu {
            over.push(format!(
                "{label}: {c} calls (expected {calls}), {r} RCU (at most {max_rcu}), {w} WCU (at most {max_wcu}); \
                 drain {dc} calls (expected {drain_calls}), {dw} WCU (at most {max_drain_wcu})"
            ));
        }
    }
    println!("{table}");
    assert!(over.is_empty(), "costs grew:\n{}\n{table}", over.join("\n"));
}
