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
    app_on_moto_with(&[]).await
}

async fn app_on_moto_with(pairs: &[(&str, &str)]) -> (Moto, Arc<DynamoStore>, App) {
    let moto = Moto::start().await;
    let store = Arc::new(moto.store().await);
    let app = app_with(store.clone(), test_config(pairs)).await;
    app.set_auto_drain(false);
    (moto, store, app)
}

#[tokio::test]
async fn calls_and_capacity_per_delivery_type() {
    let (_moto, store, app) = app_on_moto().await;
    // Measured against moto (see docs/cost.md): a delivery is one read of 3 items (facts,
    // summary, and the wake-up marker it would write) and one transaction of 3 (item, summary,
    // wake-up marker: each delivery here finds its marker gone, removed by the drain before).
    // A drain queries the 16 marker shards and the legacy partition (17 requests) before it
    // settles and exports; a settlement reads the repository's 4 shards and its legacy
    // partition (5 queries side by side). A regression makes a figure grow.
    let steps: Vec<Step> = vec![
        (
            "issue opened",
            "issues",
            fixture("github/issues/opened.payload.json"),
            [2, 4, 6],
            [24, 1],
        ),
        ("PR opened", "pull_request", opened_pr(), [2, 4, 6], [24, 1]),
        ("PR merged", "pull_request", merged_pr(), [2, 4, 6], [29, 8]),
        // A fact after the settlement: the summary it rewrites carries the PR's ledger.
        (
            "PR labeled after merge",
            "pull_request",
            labeled_after_merge(),
            [2, 4, 6],
            [24, 1],
        ),
        (
            "issue closed",
            "issues",
            fixture("github/issues/closed.derived.payload.json"),
            [2, 4, 6],
            [29, 8],
        ),
        (
            "deployment created",
            "deployment",
            fixture("github/deployment/payload.json"),
            [2, 4, 6],
            [24, 1],
        ),
        (
            "deployment succeeded",
            "deployment_status",
            fixture("github/deployment_status/payload.json"),
            [2, 4, 6],
            [29, 10],
        ),
        (
            "workflow run requested",
            "workflow_run",
            fixture("github/workflow_run/requested.payload.json"),
            [2, 4, 6],
            [24, 1],
        ),
        (
            "workflow run completed",
            "workflow_run",
            fixture("github/workflow_run/completed.payload.json"),
            [2, 4, 6],
            [29, 8],
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
        &valuestream::engine::keys::Scope::Repo("codertocat/hello-world".into()),
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

/// DynamoDB write units per delivery of the mix, one repository settled together: the target
/// of issue 30 part 5(a). Not reached yet (docs/cost.md, "Write units per delivery"): the test
/// holds the figure measured, so that it fails when it grows.
const TARGET_WCU_PER_DELIVERY: f64 = 6.0;
/// What the mix measures now: 59 WCU for 8 deliveries (7.38), and 62 (7.75) when the eight
/// deliveries straddle a whole second (a second wake-up marker: 2 WCU to write it, 1 to remove
/// it).
const MEASURED_WCU_PER_DELIVERY: f64 = 7.75;
/// The same, with the mix's records sealed by the drain that settles them (the fixtures span
/// more than `VALUESTREAM_SEAL_AFTER_SECS`' default day): each record is sealed once, a copy,
/// its lookups, the live copy's removal and the checkpoint (docs/cost.md).
const MEASURED_WCU_PER_DELIVERY_SEALED: f64 = 9.25;

/// One repository's eight deliveries of `scripts/bench-load`'s mix within one settle period,
/// then one drain: the drain settles the four closed items in one settlement of the repository,
/// not four. docs/cost.md's "settled together" column comes from this table; the test fails
/// when it needs more requests or write units than measured.
#[tokio::test]
async fn a_repository_whose_closings_settle_together() {
    // Nothing sealed (a year): what settling costs.
    let (_moto, store, app) =
        app_on_moto_with(&[("VALUESTREAM_SEAL_AFTER_SECS", "315360000")]).await;
    let the_mix = mix();
    let deliveries = the_mix.len() as u64;
    let before = (store.requests(), store.capacity());
    for (i, (event, body)) in the_mix.into_iter().enumerate() {
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
    let per_delivery = (w + dw) as f64 / deliveries as f64;
    println!(
        "\n| {deliveries} deliveries | calls | RCU | WCU | drain calls | drain RCU | drain WCU | WCU per delivery |\n\
         |---|---|---|---|---|---|---|---|\n\
         | one repository, settled together | {c} | {r} | {w} | {dc} | {dr} | {dw} | {per_delivery:.2} |\n\
         | then a drain with nothing due | – | – | – | {ic} | {ir} | {iw} | – |\n\
         target: {TARGET_WCU_PER_DELIVERY:.2} WCU per delivery\n"
    );
    // Measured against moto: 8 × 2 calls. The deliveries share one wake-up marker (the first
    // writes it: 6 WCU; the other seven find it: 4 WCU each, facts and summary), 34 WCU. The
    // drain: 17 queries of the marker partitions, one settlement of the repository (its reads:
    // 5 queries of its shards and legacy partition, and the items' facts
    // and one transaction: 5 series, 4 summaries, the outbox batch), the batch's export and
    // removal, and the one marker removed: 25 WCU. Each closing settled alone costs 29 calls
    // and 8-10 WCU instead, each opening 24 and 1 (the test above).
    assert_eq!(c, 2 * deliveries, "delivery calls");
    assert!(w <= 4 * deliveries + 2 * 2, "delivery WCU {w}");
    assert!(dc <= 30, "drain calls {dc} (at most 30)");
    assert!(
        per_delivery <= MEASURED_WCU_PER_DELIVERY,
        "{per_delivery:.2} WCU per delivery, more than the {MEASURED_WCU_PER_DELIVERY} measured"
    );
    assert_eq!(
        (ic, iw),
        (18, 0),
        "an idle drain: the 17 marker queries and the outbox query, no write"
    );
    // The same with the default lag: the drain also seals what it settled.
    let (_moto, store, app) = app_on_moto().await;
    let before = (store.requests(), store.capacity());
    for (i, (event, body)) in mix().into_iter().enumerate() {
        let (s, b) = app.github(event, &format!("sealed-{i}"), body).await;
        assert_eq!(s, StatusCode::OK, "{event}: {b}");
    }
    app.pipeline.drain_all().await.unwrap();
    let (sc, _, sw) = delta(&store, before);
    let sealed = sw as f64 / deliveries as f64;
    println!(
        "settled and sealed in the same drain: {} calls, {sw} WCU, {sealed:.2} WCU per delivery\n",
        sc - c
    );
    assert!(
        sealed <= MEASURED_WCU_PER_DELIVERY_SEALED,
        "{sealed:.2} WCU per delivery sealed, more than the {MEASURED_WCU_PER_DELIVERY_SEALED} measured"
    );
    assert!(sealed > per_delivery, "the drain sealed something");
}

/// The mix again, its items renumbered by `copy` (issue, pull request, run and deployment
/// numbers and IDs), so that copies are other items of the same repository.
fn renumbered(event: &str, body: &[u8], copy: u64) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
    let bump = |x: &mut serde_json::Value| {
        if let Some(n) = x.as_u64() {
            *x = serde_json::json!(n + copy * 100_000);
        }
    };
    let objects: &[&str] = match event {
        "issues" => &["issue"],
        "pull_request" => &["pull_request"],
        "workflow_run" => &["workflow_run"],
        "deployment" => &["deployment"],
        "deployment_status" => &["deployment", "deployment_status"],
        other => panic!("no renumbering for {other}"),
    };
    for o in objects {
        bump(&mut v[*o]["id"]);
        bump(&mut v[*o]["number"]);
    }
    serde_json::to_vec(&v).unwrap()
}

/// A burst of 500 deliveries/s into one repository (a 256-job matrix, a merge train), against
/// DynamoDB's per-partition limits (1,000 WCU/s and 3,000 RCU/s per partition): the mix's
/// write and read units per partition key, measured on moto, per delivery, times 500. Every
/// delivery of the burst writes its item's summary into one of its repository's
/// [`SCOPE_SHARDS`](valuestream::engine::keys::SCOPE_SHARDS) partitions
/// (`scope#repo#<repository>#<n>`, by a hash of the item key), and the settlement rewrites
/// some there; the wake-up markers are spread over 16 shards and shared within a bucket. The
/// burst is the mix eight times over, as other items (32 items, 64 deliveries), so that the
/// hash spreads them as a real burst's many items. docs/cost.md and README "Throttling" quote
/// this table.
#[tokio::test]
async fn write_units_per_partition_key_in_a_burst_into_one_repository() {
    const BURST: f64 = 500.0;
    const WCU_LIMIT: f64 = 1000.0;
    const RCU_LIMIT: f64 = 3000.0;
    const COPIES: u64 = 8;
    let (_moto, store, app) = app_on_moto().await;
    store.count_partitions();
    let mut deliveries = 0.0;
    for copy in 0..COPIES {
        for (i, (event, body)) in mix().into_iter().enumerate() {
            let body = renumbered(event, &body, copy);
            let (s, b) = app.github(event, &format!("burst-{copy}-{i}"), body).await;
            assert_eq!(s, StatusCode::OK, "{event}: {b}");
            assert_eq!(b["status"], "processed", "{event}: {b}");
            deliveries += 1.0;
        }
    }
    let drained = app.pipeline.drain_all().await.unwrap();
    assert_eq!(
        drained.settled.len() as u64,
        4 * COPIES,
        "every copy's four closed items settled"
    );
    // Partition keys by kind: every item's facts are a key of their own.
    let shard_of_scope = "scope#repo#codertocat/hello-world#";
    let mut by_kind: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    let mut scope_total = 0;
    for (pk, c) in store.capacity_by_partition() {
        let kind = if pk.starts_with("item#") {
            "item#<item> (most of one item)".to_string()
        } else if pk.starts_with("pending#") {
            "pending#<shard> (most of one shard)".to_string()
        } else if pk.starts_with(shard_of_scope) {
            scope_total += c.write_units;
            "scope#repo#<repository>#<n> (most of one shard)".to_string()
        } else {
            pk.clone()
        };
        let e = by_kind.entry(kind.clone()).or_default();
        if kind.contains("most of one") {
            e.0 = e.0.max(c.write_units);
            e.1 = e.1.max(c.read_units);
        } else {
            e.0 += c.write_units;
            e.1 += c.read_units;
        }
        e.2 += 1;
    }
    let mut table = String::from(
        "\n| partition key | keys | WCU per delivery | RCU per delivery | WCU/s at 500/s | RCU/s at 500/s |\n|---|---|---|---|---|---|\n",
    );
    let mut rates = std::collections::BTreeMap::new();
    for (kind, (wcu, rcu, keys)) in &by_kind {
        let (w, r) = (*wcu as f64 / deliveries, *rcu as f64 / deliveries);
        table.push_str(&format!(
            "| `{kind}` | {keys} | {w:.2} | {r:.2} | {:.0} | {:.0} |\n",
            w * BURST,
            r * BURST
        ));
        rates.insert(kind.clone(), (w * BURST, r * BURST));
    }
    let scope_per_delivery = scope_total as f64 / deliveries;
    table.push_str(&format!(
        "all of the repository's shards together: {scope_per_delivery:.2} WCU per delivery, {:.0} WCU/s at 500/s\n",
        scope_per_delivery * BURST
    ));
    println!("{table}");
    let scope = rates["scope#repo#<repository>#<n> (most of one shard)"];
    let shard = rates["pending#<shard> (most of one shard)"];
    // The markers: the burst's one marker a second (2 WCU to write, 1 to remove) on one shard,
    // whatever the rate: the figure per delivery times 500 is a loose bound here. Its
    // reads (each delivery reads the marker it would write, 1 RCU) are per delivery: 500 RCU/s
    // on the shard of the current bucket, under the 3,000.
    assert!(shard.1 < RCU_LIMIT, "{table}");
    assert!(shard.0 < WCU_LIMIT / 4.0, "{table}");
    // The repository: the deliveries' summary writes and the settlement's rewrites, 2 WCU each
    // in a transaction, about 3.0 WCU per delivery in all, as under one key before the shards
    // (1,500 WCU/s at 500/s: over one partition's 1,000). Spread over 4 keys by the item's
    // hash, the busiest carries well under the limit: a burst into one repository is no
    // longer throttled on its own key (README "Throttling").
    assert!(scope_per_delivery * BURST > WCU_LIMIT, "{table}");
    assert!(scope.0 < WCU_LIMIT * 0.6, "the busiest shard: {table}");
    assert!(scope.1 < RCU_LIMIT, "{table}");
    // The legacy partition is only read (its settlement query).
    let legacy = rates["scope#repo#codertocat/hello-world"];
    assert_eq!(legacy.0, 0.0, "{table}");
    for key in ["metric", "outbox"] {
        assert!(rates[key].0 < WCU_LIMIT, "{table}");
    }
}
