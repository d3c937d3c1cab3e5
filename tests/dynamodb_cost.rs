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

/// The router on a fresh table of moto_server, draining only when a test says so.
async fn app_on_moto() -> (Moto, Arc<DynamoStore>, App) {
    let moto = Moto::start().await;
    let store = Arc::new(moto.store().await);
    let app = app_with(store.clone(), test_config(&[])).await;
    app.set_auto_drain(false);
    (moto, store, app)
}

#[tokio::test]
async fn calls_and_capacity_per_delivery_type() {
    let (_moto, store, app) = app_on_moto().await;
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
        ("PR merged", "pull_request", merged_pr(), [2, 2, 6], [9, 8]),
        // A fact after the settlement: the summary it rewrites carries the PR's ledger.
        (
            "PR labeled after merge",
            "pull_request",
            labeled_after_merge(),
            [2, 2, 6],
            [4, 1],
        ),
        (
            "issue closed",
            "issues",
            fixture("github/issues/closed.derived.payload.json"),
            [2, 2, 6],
            [9, 8],
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
            [9, 10],
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
            [9, 8],
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
    // The summary the late label rewrote carries the PR's ledger (what the step measures).
    let key = valuestream::engine::keys::summary(
        "repo#codertocat/hello-world",
        "github/change/codertocat/hello-world/2",
    );
    let summary = store.get_many(&[key]).await.unwrap().remove(0).unwrap();
    let summary: serde_json::Value = summary.data.decode().unwrap();
    let ledger = summary["tally"]
        .as_array()
        .expect("a ledger (its tally) in the summary");
    assert!(!ledger.is_empty(), "{summary}");
    println!("{table}");
    assert!(over.is_empty(), "costs grew:\n{}\n{table}", over.join("\n"));
}

/// The merged PR, labeled an hour after its merge.
fn labeled_after_merge() -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(&merged_pr()).unwrap();
    v["action"] = serde_json::json!("labeled");
    v["label"] = serde_json::json!({"name": "released", "color": "00ff00"});
    v["pull_request"]["updated_at"] = serde_json::json!("2019-05-15T16:21:18Z");
    serde_json::to_vec(&v).unwrap()
}

/// One repository's eight deliveries of `scripts/bench-load`'s mix (issue opened, PR opened,
/// workflow run requested and completed, PR merged, deployment created and succeeded, issue
/// closed) within one settle period, then one drain: the drain settles the four closed items in
/// one settlement of the repository, not four. docs/cost.md's "settled together" column comes
/// from this table; the test fails when it needs more requests or write units than measured.
#[tokio::test]
async fn a_repository_whose_closings_settle_together() {
    let (_moto, store, app) = app_on_moto().await;
    // The run fixtures come from another repository: moved into the and PR's.
    let repository = fixture_json("github/issues/opened.payload.json")["repository"].clone();
    let run = |rel: &str| edit(rel, |v| v["repository"] = repository.clone());
    let mix: Vec<(&str, Vec<u8>)> = vec![
        ("issues", fixture("github/issues/opened.payload.json")),
        ("pull_request", opened_pr()),
        (
            "workflow_run",
            run("github/workflow_run/requested.payload.json"),
        ),
        (
            "workflow_run",
            run("github/workflow_run/completed.payload.json"),
        ),
        ("pull_request", merged_pr()),
        ("deployment", fixture("github/deployment/payload.json")),
        (
            "deployment_status",
            fixture("github/deployment_status/payload.json"),
        ),
        (
            "issues",
            fixture("github/issues/closed.derived.payload.json"),
        ),
    ];
    let deliveries = mix.len() as u64;
    let before = (store.requests(), store.capacity());
    for (i, (event, body)) in mix.into_iter().enumerate() {
        let (s, b) = app.github(event, &format!("together-{i}"), body).await;
        assert_eq!(s, StatusCode::OK, "{event}: {b}");
        assert_eq!(b["status"], "processed", "{event}: {b}");
    }
    let (c, r, w) = delta(&store, before);
    let before = (store.requests(), store.capacity());
    let drained = app.pipeline.drain_all().await.unwrap();
    let (dc, dr, dw) = delta(&store, before);
    // A scheduled drain with nothing due (docs/cost.md's "scheduled drain" row).
    let before = (store.requests(), store.capacity());
    app.pipeline.drain_all().await.unwrap();
    let (ic, ir, iw) = delta(&store, before);
    let names: Vec<&str> = drained.settled.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names.len(),
        4,
        "the four closed items, in one drain: {names:?}"
    );
    assert!(!drained.unsettled && !drained.remaining, "{drained:?}");
    println!(
        "\n| {deliveries} deliveries | calls | RCU | WCU | drain calls | drain RCU | drain WCU | WCU per delivery |\n\
         |---|---|---|---|---|---|---|---|\n\
         | one repository, settled together | {c} | {r} | {w} | {dc} | {dr} | {dw} | {:.2} |\n\
         | then a drain with nothing due | – | – | – | {ic} | {ir} | {iw} | – |\n",
        (w + dw) as f64 / deliveries as f64
    );
    // Measured against moto: the deliveries as in the table of the test above (8 × 2 calls,
    // 6 WCU each). The drain: one query of the markers, one settlement of the repository (its
    // reads and one transaction), the batch's export and removal, and the eight markers removed
    // one by one (1 WCU each; 16 in one transaction before). Each closing settled alone costs
    // 9 calls and 8-10 WCU instead, each opening 4 and 1 (the test above).
    assert_eq!(c, 2 * deliveries, "delivery calls");
    assert!(w <= 6 * deliveries, "delivery WCU {w}");
    assert!(dc <= 16, "drain calls {dc} (at most 16)");
    assert!(dw <= 32, "drain WCU {dw} (at most 32)");
    assert_eq!(
        (ic, iw),
        (2, 0),
        "an idle drain: the marker and outbox queries, no write"
    );
}
