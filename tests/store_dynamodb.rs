//! The DynamoDB store against a real DynamoDB-compatible server (moto_server from .venv): the
//! behavioural suite, DynamoDB's own limits, concurrent deliveries, request counts per delivery,
//! and nothing lost when the collector is down.

mod common;

use aws_sdk_dynamodb::types::{KeyType, TimeToLiveStatus};
use axum::http::StatusCode;
use common::moto::Moto;
use common::outbox::{
    a_settled_batch_is_leased_to_its_drainer, collector_down_loses_nothing,
    partial_outage_sends_each_span_once, traces_outage_sends_each_span_once, Recovery,
};
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use valuestream::model::ids;
use valuestream::store::dynamodb::{create_table_with, MAX_DATA_BYTES};
use valuestream::store::{now_epoch, suite, Cond, Key, Record, Store, StoreError, Write};

fn put(pk: &str, sk: &str, data: Value) -> Write {
    Write::Put {
        record: Record {
            key: Key::new(pk, sk),
            version: 1,
            expires_at: now_epoch() + 600,
            data: data.into(),
        },
        cond: Cond::Any,
    }
}

#[tokio::test]
async fn suite_passes_on_dynamodb() {
    let moto = Moto::start().await;
    let store = moto.store().await;
    suite::run_all(&store, "p/").await;
    assert!(store.requests() > 0, "requests are counted");
}

#[tokio::test]
async fn create_table_is_idempotent_and_enables_ttl() {
    let moto = Moto::start().await;
    let client = moto.client();
    create_table_with(&client, "vs-create").await.unwrap();
    create_table_with(&client, "vs-create")
        .await
        .expect("an existing table is fine");
    let table = client
        .describe_table()
        .table_name("vs-create")
        .send()
        .await
        .unwrap();
    let schema: Vec<(String, KeyType)> = table
        .table()
        .unwrap()
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
        .collect();
    assert_eq!(
        schema,
        [("pk".into(), KeyType::Hash), ("sk".into(), KeyType::Range)]
    );
    let ttl = client
        .describe_time_to_live()
        .table_name("vs-create")
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("ttl"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
}

#[tokio::test]
async fn create_table_command_uses_the_standard_aws_environment() {
    let moto = Moto::start().await;
    for _ in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_valuestream"))
            .args(["create-table", "--table", "vs-cli"])
            .env_clear()
            .envs(common::moto::AWS_ENV)
            .env("AWS_ENDPOINT_URL_DYNAMODB", &moto.url)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("vs-cli is ready"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ttl = moto
        .client()
        .describe_time_to_live()
        .table_name("vs-cli")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description().unwrap().attribute_name(),
        Some("ttl")
    );
}

#[tokio::test]
async fn items_have_the_documented_shape() {
    let moto = Moto::start().await;
    let store = moto.store().await;
    store
        .commit(vec![put("item#x", "_", json!({"a": "é"}))])
        .await
        .unwrap();
    let item = moto
        .client()
        .get_item()
        .table_name(store.table())
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("item#x".into()),
        )
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("_".into()))
        .send()
        .await
        .unwrap();
    let item = item.item().expect("the item is in the table");
    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["d", "pk", "sk", "ttl", "v"]);
    assert_eq!(item["v"].as_n().unwrap(), "1");
    let ttl: i64 = item["ttl"].as_n().unwrap().parse().unwrap();
    assert!((ttl - now_epoch() - 600).abs() <= 5, "ttl is epoch seconds");
    let d: Value = serde_json::from_str(item["d"].as_s().unwrap()).unwrap();
    assert_eq!(d, json!({"a": "é"}));
}

#[tokio::test]
async fn dynamodb_limits_give_clear_errors_and_write_nothing() {
    let moto = Moto::start().await;
    let store = moto.store().await;
    // A record too large for one item.
    let big = json!("x".repeat(MAX_DATA_BYTES + 10));
    match store.commit(vec![put("big", "_", big)]).await {
        Err(StoreError::Backend(m)) => assert!(m.contains("400 KB"), "{m}"),
        other => panic!("expected a clear backend error, got {other:?}"),
    }
    assert!(store.get_many(&[Key::new("big", "_")]).await.unwrap()[0].is_none());
    // More writes than one transaction takes.
    let writes: Vec<Write> = (0..101)
        .map(|i| put("many", &format!("{i:03}"), json!(i)))
        .collect();
    let before = store.requests();
    match store.commit(writes).await {
        Err(StoreError::Backend(m)) => {
            assert!(m.contains("101 writes") && m.contains("100"), "{m}")
        }
        other => panic!("expected a clear backend error, got {other:?}"),
    }
    assert_eq!(store.requests(), before, "refused before any request");
    let q = store
        .query(
            "many",
            valuestream::store::KeyRange::all(),
            200,
            valuestream::store::Order::Ascending,
        )
        .await
        .unwrap();
    assert!(q.is_empty());
    // Exactly 100 is one transaction.
    let writes: Vec<Write> = (0..100)
        .map(|i| put("many", &format!("{i:03}"), json!(i)))
        .collect();
    let before = store.requests();
    store.commit(writes).await.unwrap();
    assert_eq!(store.requests() - before, 1, "one TransactWriteItems");
    // A query pages through more than one response when the limit asks for it.
    let before = store.requests();
    let all = store
        .query(
            "many",
            valuestream::store::KeyRange::all(),
            100,
            valuestream::store::Order::Descending,
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(all[0].key.sk, "099");
    assert_eq!(store.requests() - before, 1);
}

#[tokio::test]
async fn unprocessed_keys_are_retried() {
    // BatchGetItem answers at most 16 MB and returns the rest as UnprocessedKeys: 80 records of
    // ~260 KB stored make the server do that, and the store must ask again for them. The data is
    // random letters and digits, so the store's DEFLATE cannot shrink it below ~75 %.
    let moto = Moto::start().await;
    let store = moto.store().await;
    let mut rng = fastrand::Rng::with_seed(7);
    let blob: String = (0..340 * 1024).map(|_| rng.alphanumeric()).collect();
    let keys: Vec<Key> = (0..80)
        .map(|i| Key::new("blob", format!("{i:02}")))
        .collect();
    for k in &keys {
        store
            .commit(vec![put(&k.pk, &k.sk, json!(blob))])
            .await
            .unwrap();
    }
    let before = store.requests();
    let got = store.get_many(&keys).await.unwrap();
    let requests = store.requests() - before;
    assert!(got
        .iter()
        .zip(&keys)
        .all(|(r, k)| r.as_ref().map(|r| &r.key) == Some(k)));
    assert!(
        requests >= 2,
        "the unprocessed keys took another request ({requests})"
    );
}

#[tokio::test]
async fn get_many_takes_duplicate_keys() {
    let moto = Moto::start().await;
    let store = moto.store().await;
    store.commit(vec![put("dup", "_", json!(1))]).await.unwrap();
    let k = Key::new("dup", "_");
    let got = store
        .get_many(&[k.clone(), Key::new("none", "_"), k.clone()])
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert!(got[0].is_some() && got[1].is_none() && got[2].is_some());
}

/// Two apps (two sandboxes) on one table and one collector.
async fn two_apps(moto: &Moto) -> (App, App) {
    let store: Arc<dyn Store> = Arc::new(moto.store().await);
    let receiver = Receiver::start().await;
    let a = app_on(store.clone(), test_config(&[]), receiver.clone());
    let b = app_on(store, test_config(&[]), receiver);
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redeliveries_apply_once() {
    let moto = Moto::start().await;
    let (a, b) = two_apps(&moto).await;
    let ((s1, b1), (s2, b2)) = tokio::join!(
        a.github("pull_request", "same-delivery", merged_pr()),
        b.github("pull_request", "same-delivery", merged_pr()),
    );
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{b1} {b2}");
    let mut statuses = [
        b1["status"].as_str().unwrap(),
        b2["status"].as_str().unwrap(),
    ];
    statuses.sort();
    assert_eq!(statuses, ["duplicate", "processed"], "{b1} {b2}");
    // Either the duplicate found the delivery applied at once (one read), or the two really
    // raced: it read "not applied yet", lost the conditional commit, and read again.
    let dup = if b1["status"] == "duplicate" {
        &b1
    } else {
        &b2
    };
    let requests = dup["store_requests"].as_u64().unwrap();
    assert!(requests == 1 || requests >= 3, "{dup}");
    let spans = a.receiver.spans();
    assert_eq!(spans.len(), 1, "one span: {spans:#?}");
    assert!(spans[0].name.starts_with("PR #2"));
    let duration_points: Vec<_> = a
        .receiver
        .points()
        .into_iter()
        .filter(|p| p.name == "valuestream.change.duration")
        .collect();
    assert_eq!(duration_points.len(), 1, "one metric export");
    assert_eq!(duration_points[0].value, 1.0, "counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_closes_of_one_change_export_one_span() {
    let moto = Moto::start().await;
    let (a, b) = two_apps(&moto).await;
    let ((s1, b1), (s2, b2)) = tokio::join!(
        a.github("pull_request", "close-1", merged_pr()),
        b.github("pull_request", "close-2", merged_pr()),
    );
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{b1} {b2}");
    assert_eq!(
        (b1["status"].as_str(), b2["status"].as_str()),
        (Some("processed"), Some("processed"))
    );
    let finished =
        b1["finished"].as_array().unwrap().len() + b2["finished"].as_array().unwrap().len();
    assert_eq!(
        finished, 1,
        "one of the two drains exports the span: {b1} {b2}"
    );
    // The same close under two delivery IDs is one fact: exactly one of them records it. The
    // other either lost a conditional commit and retried (when they really raced), or read the
    // fact already there.
    let closed = b1["closed"].as_u64().unwrap() + b2["closed"].as_u64().unwrap();
    assert_eq!(
        closed, 1,
        "one of the two records the closing fact: {b1} {b2}"
    );
    let late = if b1["closed"].as_u64() == Some(0) {
        &b1
    } else {
        &b2
    };
    let requests = late["store_requests"].as_u64().unwrap();
    assert!(
        requests == 2 || requests >= 4,
        "a read and a commit, or a retry: {late}"
    );
    let spans = a.receiver.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(
        spans[0].span_id,
        ids::span_id("github/change/codertocat/hello-world/2", 0)
    );
}

#[tokio::test]
async fn request_counts_per_delivery() {
    let moto = Moto::start().await;
    let store: Arc<dyn Store> = Arc::new(moto.store().await);
    let app = app_with(store.clone(), test_config(&[])).await;
    let steps: Vec<(&str, &str, Vec<u8>, bool)> = vec![
        (
            "issues opened",
            "issues",
            fixture("github/issues/opened.payload.json"),
            false,
        ),
        (
            "pull_request opened (vstrace branch)",
            "pull_request",
            opened_pr(),
            false,
        ),
        (
            "pull_request closed (merged)",
            "pull_request",
            merged_pr(),
            true,
        ),
        (
            "issues closed",
            "issues",
            fixture("github/issues/closed.derived.payload.json"),
            true,
        ),
    ];
    let mut table = String::from(
        "\nDynamoDB requests per delivery (moto_server)\n\
         | delivery | closing | store_requests (answer) | Store::requests() delta | drain requests |\n\
         |---|---|---|---|---|\n",
    );
    app.set_auto_drain(false);
    for (i, (label, event, body, closing)) in steps.into_iter().enumerate() {
        let before = store.requests();
        let (s, b) = app.github(event, &format!("count-{i}"), body).await;
        let delta = store.requests() - before;
        assert_eq!(s, StatusCode::OK, "{label}: {b}");
        assert_eq!(b["status"], "processed", "{label}: {b}");
        let answered = b["store_requests"].as_u64().unwrap();
        assert_eq!(answered, delta, "{label}: the answer and the store agree");
        // A delivery only records facts: one batched read, one transaction.
        assert_eq!(delta, 2, "{label}: {delta} requests");
        assert_eq!(
            b["closed"].as_u64(),
            Some(u64::from(closing)),
            "{label}: {b}"
        );
        // The drain (serve's timer, the Lambda's schedule) settles and exports.
        let before = store.requests();
        let d = app.pipeline.drain_all().await.unwrap();
        let drain = store.requests() - before;
        assert_eq!(d.settled.len(), usize::from(closing), "{label}: {d:?}");
        table.push_str(&format!(
            "| {label} | {closing} | {answered} | {delta} | {drain} |\n"
        ));
    }
    println!("{table}");
    let issue = app.receiver.span("ISSUE #1");
    let change = app.receiver.span("PR #2");
    assert_eq!(change.trace_id, issue.trace_id);
    assert_eq!(change.parent_span_id, issue.span_id);
}

#[tokio::test]
async fn collector_down_next_delivery_exports_the_outbox() {
    let moto = Moto::start().await;
    collector_down_loses_nothing(Arc::new(moto.store().await), Recovery::NextDelivery).await;
}

#[tokio::test]
async fn collector_down_drain_exports_the_outbox() {
    let moto = Moto::start().await;
    collector_down_loses_nothing(Arc::new(moto.store().await), Recovery::Drain).await;
}

#[test]
fn nothing_in_src_scans_the_table() {
    // The function's IAM policy grants no Scan (see template.yaml); nor does the code use one.
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out)
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p)
            }
        }
    }
    let mut files = Vec::new();
    walk(&common::moto::repo().join("src"), &mut files);
    assert!(files.len() > 10);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for needle in [".scan()", "operation::scan", "ScanInput", "parallel_scan"] {
            assert!(
                !text.contains(needle),
                "{} uses a Scan ({needle})",
                f.display()
            );
        }
    }
}

/// A GitLab pipeline with 150 finished jobs: 151 spans from one delivery, far more writes than
/// one DynamoDB transaction takes. The delivery is applied in parts, each exactly once.
#[tokio::test]
async fn a_pipeline_with_150_jobs_is_applied_in_parts_exactly_once() {
    let moto = Moto::start().await;
    let store: Arc<dyn Store> = Arc::new(moto.store().await);
    let receiver = Receiver::start().await;
    let app = app_on(
        store,
        test_config(&[("VALUESTREAM_GITLAB_TOKEN", "t")]),
        receiver,
    );
    let body = edit("gitlab/pipeline.json", |v| {
        let template = v["builds"][0].clone();
        let builds: Vec<Value> = (0..150)
            .map(|i| {
                let mut b = template.clone();
                b["id"] = json!(10_000 + i);
                b["name"] = json!(format!("job-{i}"));
                b["status"] = json!("success");
                b["started_at"] = json!("2016-08-12 15:24:00 UTC");
                b["finished_at"] = json!("2016-08-12 15:25:00 UTC");
                b
            })
            .collect();
        v["builds"] = json!(builds);
    });
    let headers = [
        ("content-type", "application/json"),
        ("x-gitlab-token", "t"),
        ("x-gitlab-event", "Pipeline Hook"),
        ("x-gitlab-event-uuid", "big-pipeline"),
    ];
    let (s, b) = app.post("gitlab", &headers, body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "processed");
    assert_eq!(
        b["finished"].as_array().unwrap().len(),
        151,
        "the run and its 150 jobs"
    );
    let spans = app.receiver.spans();
    assert_eq!(spans.len(), 151);
    let run = spans.iter().find(|s| s.name.starts_with("RUN")).unwrap();
    assert_eq!(
        spans
            .iter()
            .filter(|s| s.parent_span_id == run.span_id)
            .count(),
        150,
        "every job is a child of the run"
    );
    let tasks = app
        .receiver
        .latest_points()
        .into_iter()
        .find(|p| p.name == "valuestream.task.duration")
        .unwrap();
    assert_eq!((tasks.value, tasks.sum), (150.0, 150.0 * 60.0));
    // The same delivery again: every part is a duplicate, nothing more is exported.
    let (s, b) = app.post("gitlab", &headers, body).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("duplicate")),
        "{b}"
    );
    assert_eq!(app.receiver.spans().len(), 151);
}

#[tokio::test]
async fn partial_collector_outage_sends_each_span_once() {
    let moto = Moto::start().await;
    partial_outage_sends_each_span_once(Arc::new(moto.store().await)).await;
}

#[tokio::test]
async fn a_traces_outage_sends_each_span_once() {
    let moto = Moto::start().await;
    traces_outage_sends_each_span_once(Arc::new(moto.store().await)).await;
}

#[tokio::test]
async fn a_settled_batch_is_leased_to_the_drainer_that_settled_it() {
    let moto = Moto::start().await;
    a_settled_batch_is_leased_to_its_drainer(Arc::new(moto.store().await)).await;
}
