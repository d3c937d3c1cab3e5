//! The embedded store (serve's default): the behavioural suite, persistence across a reopen of
//! the same directory, the sweep of expired records, and nothing lost when the collector is down.

mod common;

use common::outbox::{
    a_settled_batch_is_leased_to_its_drainer, collector_down_loses_nothing,
    partial_outage_sends_each_span_once, traces_outage_sends_each_span_once, Recovery,
};
use serde_json::json;
use std::sync::Arc;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::{now_epoch, suite, Cond, Key, Record, Store, Write};

#[tokio::test]
async fn suite_passes_in_memory() {
    let store = EmbeddedStore::in_memory().unwrap();
    suite::run_all(&store, "p/").await;
    assert!(store.requests() > 0, "requests are counted");
}

#[tokio::test]
async fn suite_passes_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    suite::run_all(&store, "p/").await;
}

fn record(pk: &str, version: u64, ttl: i64, data: serde_json::Value) -> Record {
    Record {
        key: Key::one(pk),
        version,
        expires_at: now_epoch() + ttl,
        data: data.into(),
    }
}

#[tokio::test]
async fn state_survives_reopening_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store
            .commit(vec![
                Write::Put {
                    record: record("kept", 4, 600, json!({"open": true})),
                    cond: Cond::Absent,
                },
                Write::Put {
                    record: record("gone", 1, 600, json!(1)),
                    cond: Cond::Absent,
                },
            ])
            .await
            .unwrap();
        store
            .commit(vec![Write::Delete {
                key: Key::one("gone"),
                cond: Cond::Version(1),
            }])
            .await
            .unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let got = store
        .get_many(&[Key::one("kept"), Key::one("gone")])
        .await
        .unwrap();
    let kept = got[0].as_ref().expect("a record written before the reopen");
    assert_eq!(
        (kept.version, kept.data.to_value()),
        (4, json!({"open": true}))
    );
    assert!(got[1].is_none(), "a delete before the reopen stays deleted");
    // Conditions see the reopened state.
    let stale = store
        .commit(vec![Write::Put {
            record: record("kept", 5, 600, json!(0)),
            cond: Cond::Version(3),
        }])
        .await;
    assert!(matches!(
        stale,
        Err(valuestream::store::StoreError::Conflict)
    ));
}

#[tokio::test]
async fn sweep_deletes_expired_records_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut writes = Vec::new();
    for i in 0..3 {
        writes.push(Write::Put {
            record: record(&format!("old{i}"), 1, -5, json!(i)),
            cond: Cond::Any,
        });
    }
    writes.push(Write::Put {
        record: record("live", 1, 600, json!("live")),
        cond: Cond::Any,
    });
    store.commit(writes).await.unwrap();
    assert_eq!(store.sweep().await.unwrap(), 3, "the three expired records");
    assert_eq!(store.sweep().await.unwrap(), 0, "nothing left to sweep");
    let live = store.dump().unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].key, Key::one("live"));
    // Swept, not merely hidden: the file no longer holds them after a reopen either.
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.sweep().await.unwrap(), 0);
    assert_eq!(store.dump().unwrap().len(), 1);
}

#[tokio::test]
async fn collector_down_next_delivery_exports_the_outbox() {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    collector_down_loses_nothing(store, Recovery::NextDelivery).await;
}

#[tokio::test]
async fn collector_down_drain_exports_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    collector_down_loses_nothing(store, Recovery::Drain).await;
}

#[tokio::test]
async fn partial_collector_outage_sends_each_span_once() {
    partial_outage_sends_each_span_once(Arc::new(EmbeddedStore::in_memory().unwrap())).await;
}

#[tokio::test]
async fn a_traces_outage_sends_each_span_once() {
    traces_outage_sends_each_span_once(Arc::new(EmbeddedStore::in_memory().unwrap())).await;
}

#[tokio::test]
async fn a_settled_batch_is_leased_to_the_drainer_that_settled_it() {
    a_settled_batch_is_leased_to_its_drainer(Arc::new(EmbeddedStore::in_memory().unwrap())).await;
}

#[tokio::test]
async fn a_store_file_of_redb_2_is_migrated_and_read() {
    // tests/fixtures/store/v2 was written by this store on redb 2 (file format v2), which the
    // current redb no longer opens by itself.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/store/v2/valuestream.redb");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&fixture, dir.path().join("valuestream.redb")).unwrap();
    assert!(
        matches!(
            redb::Database::open(dir.path().join("valuestream.redb")),
            Err(redb::DatabaseError::UpgradeRequired(_))
        ),
        "the fixture is of the old format"
    );
    let far_keys: Vec<Key> = (0..5)
        .map(|i| Key::new("fixture#scope", format!("{i:03}")))
        .collect();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let got = store.get_many(&far_keys).await.unwrap();
        for (i, r) in got.iter().enumerate() {
            let r = r.as_ref().expect("a migrated record");
            assert_eq!(r.version, i as u64 + 1);
            assert_eq!(
                r.data,
                json!({"n": i, "name": format!("record {i}"), "s": "é"})
            );
        }
        let single = store.get_many(&[Key::one("fixture#single")]).await.unwrap();
        assert_eq!(
            single[0].as_ref().unwrap().data,
            json!({"kind": "singleton"})
        );
        assert_eq!(
            store.dump().unwrap().len(),
            6,
            "the expired record stays absent"
        );
        let q = store
            .query(
                "fixture#scope",
                valuestream::store::KeyRange::between("001", "003"),
                10,
                valuestream::store::Order::Descending,
            )
            .await
            .unwrap();
        let sks: Vec<_> = q.iter().map(|r| r.key.sk.as_str()).collect();
        assert_eq!(sks, ["003", "002", "001"]);
        // The migrated file takes writes under the records' conditions.
        store
            .commit(vec![Write::Put {
                record: Record {
                    key: Key::one("fixture#single"),
                    version: 8,
                    expires_at: now_epoch() + 600,
                    data: json!("after").into(),
                },
                cond: Cond::Version(7),
            }])
            .await
            .unwrap();
        assert_eq!(
            store.sweep().await.unwrap(),
            1,
            "the expired record is swept"
        );
    }
    // Now in the current format: redb opens it directly, and the store keeps its records.
    drop(redb::Database::open(dir.path().join("valuestream.redb")).unwrap());
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let single = store.get_many(&[Key::one("fixture#single")]).await.unwrap();
    assert_eq!(single[0].as_ref().unwrap().data, json!("after"));
}
