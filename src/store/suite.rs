//! The behavioural suite every [`Store`] implementation must pass. Integration tests run it
//! against the embedded store and against DynamoDB (on a real DynamoDB-compatible server), so
//! the engine can rely on exactly these semantics whatever the backend.
//!
//! Each check uses its own partition prefix, so the suite can share one table.

use super::{now_epoch, Cond, Key, KeyRange, Order, Record, Store, StoreError, Write};
use serde_json::json;

fn rec(key: Key, version: u64, ttl: i64, data: serde_json::Value) -> Record {
    Record {
        key,
        version,
        expires_at: now_epoch() + ttl,
        data: data.into(),
    }
}

fn put(record: Record, cond: Cond) -> Write {
    Write::Put { record, cond }
}

/// Every check, in order, with its name.
pub async fn run_all(store: &dyn Store, prefix: &str) {
    put_then_get(store, prefix).await;
    missing_reads_none(store, prefix).await;
    absent_condition(store, prefix).await;
    version_condition(store, prefix).await;
    transaction_is_atomic(store, prefix).await;
    expired_is_absent(store, prefix).await;
    query_range_and_order(store, prefix).await;
    delete_with_condition(store, prefix).await;
    versions_are_exact_over_64_bits(store, prefix).await;
    large_batch_get(store, prefix).await;
    steps_stop_after_a_conflict(store, prefix).await;
}

pub async fn put_then_get(store: &dyn Store, prefix: &str) {
    let k = Key::new(format!("{prefix}put"), "a");
    store
        .commit(vec![put(
            rec(k.clone(), 1, 60, json!({"x": 1, "s": "é"})),
            Cond::Any,
        )])
        .await
        .unwrap();
    let got = store.get_many(std::slice::from_ref(&k)).await.unwrap();
    let r = got[0].as_ref().expect("record written must be read back");
    assert_eq!(r.key, k);
    assert_eq!(r.version, 1);
    assert_eq!(r.data, json!({"x": 1, "s": "é"}));
}

pub async fn missing_reads_none(store: &dyn Store, prefix: &str) {
    let a = Key::new(format!("{prefix}missing"), "a");
    let b = Key::new(format!("{prefix}missing"), "b");
    store
        .commit(vec![put(rec(b.clone(), 1, 60, json!(2)), Cond::Any)])
        .await
        .unwrap();
    let got = store.get_many(&[a, b.clone()]).await.unwrap();
    assert_eq!(got.len(), 2, "one slot per key");
    assert!(got[0].is_none());
    assert_eq!(
        got[1].as_ref().unwrap().key,
        b,
        "slots keep the keys' order"
    );
}

pub async fn absent_condition(store: &dyn Store, prefix: &str) {
    let k = Key::new(format!("{prefix}absent"), "d1");
    store
        .commit(vec![put(
            rec(k.clone(), 1, 60, json!("first")),
            Cond::Absent,
        )])
        .await
        .unwrap();
    let second = store
        .commit(vec![put(
            rec(k.clone(), 1, 60, json!("second")),
            Cond::Absent,
        )])
        .await;
    assert!(matches!(second, Err(StoreError::Conflict)), "{second:?}");
    let got = store.get_many(&[k]).await.unwrap();
    assert_eq!(got[0].as_ref().unwrap().data, json!("first"));
}

pub async fn version_condition(store: &dyn Store, prefix: &str) {
    let k = Key::new(format!("{prefix}version"), "v");
    store
        .commit(vec![put(rec(k.clone(), 1, 60, json!(1)), Cond::Absent)])
        .await
        .unwrap();
    store
        .commit(vec![put(rec(k.clone(), 2, 60, json!(2)), Cond::Version(1))])
        .await
        .unwrap();
    let stale = store
        .commit(vec![put(
            rec(k.clone(), 2, 60, json!(99)),
            Cond::Version(1),
        )])
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    let on_missing = store
        .commit(vec![put(
            rec(
                Key::new(format!("{prefix}version"), "none"),
                2,
                60,
                json!(0),
            ),
            Cond::Version(1),
        )])
        .await;
    assert!(matches!(on_missing, Err(StoreError::Conflict)));
    let got = store.get_many(&[k]).await.unwrap();
    let r = got[0].as_ref().unwrap();
    assert_eq!((r.version, r.data.to_value()), (2, json!(2)));
}

pub async fn transaction_is_atomic(store: &dyn Store, prefix: &str) {
    let taken = Key::new(format!("{prefix}atomic"), "taken");
    let fresh = Key::new(format!("{prefix}atomic"), "fresh");
    let open = Key::new(format!("{prefix}atomic"), "open");
    store
        .commit(vec![
            put(rec(taken.clone(), 1, 60, json!("t")), Cond::Any),
            put(rec(open.clone(), 1, 60, json!("o")), Cond::Any),
        ])
        .await
        .unwrap();
    let r = store
        .commit(vec![
            put(rec(fresh.clone(), 1, 60, json!("f")), Cond::Absent),
            Write::Delete {
                key: open.clone(),
                cond: Cond::Version(1),
            },
            put(rec(taken.clone(), 1, 60, json!("x")), Cond::Absent),
        ])
        .await;
    assert!(matches!(r, Err(StoreError::Conflict)));
    let got = store
        .get_many(&[fresh.clone(), open.clone(), taken.clone()])
        .await
        .unwrap();
    assert!(got[0].is_none(), "a failed transaction writes nothing");
    assert!(got[1].is_some(), "a failed transaction deletes nothing");
    assert_eq!(got[2].as_ref().unwrap().data, json!("t"));
    // The same transaction without the failing part applies every write.
    store
        .commit(vec![
            put(rec(fresh.clone(), 1, 60, json!("f")), Cond::Absent),
            Write::Delete {
                key: open.clone(),
                cond: Cond::Version(1),
            },
        ])
        .await
        .unwrap();
    let got = store.get_many(&[fresh, open]).await.unwrap();
    assert!(got[0].is_some() && got[1].is_none());
}

pub async fn expired_is_absent(store: &dyn Store, prefix: &str) {
    let k = Key::new(format!("{prefix}ttl"), "old");
    store
        .commit(vec![put(rec(k.clone(), 7, -10, json!("stale")), Cond::Any)])
        .await
        .unwrap();
    let got = store.get_many(std::slice::from_ref(&k)).await.unwrap();
    assert!(got[0].is_none(), "an expired record reads as absent");
    let q = store
        .query(&k.pk, KeyRange::all(), 10, Order::Ascending)
        .await
        .unwrap();
    assert!(q.is_empty(), "queries skip expired records");
    // Absent holds over an expired record; a version condition does not.
    let v = store
        .commit(vec![put(
            rec(k.clone(), 8, 60, json!("v")),
            Cond::Version(7),
        )])
        .await;
    assert!(matches!(v, Err(StoreError::Conflict)));
    store
        .commit(vec![put(rec(k.clone(), 1, 60, json!("new")), Cond::Absent)])
        .await
        .unwrap();
    let got = store.get_many(&[k]).await.unwrap();
    assert_eq!(got[0].as_ref().unwrap().data, json!("new"));
}

pub async fn query_range_and_order(store: &dyn Store, prefix: &str) {
    let pk = format!("{prefix}query");
    let mut writes = Vec::new();
    for sk in [
        "2024-01-01#a",
        "2024-01-02#b",
        "2024-01-03#c",
        "2024-01-04#d",
    ] {
        writes.push(put(rec(Key::new(&pk, sk), 1, 60, json!(sk)), Cond::Any));
    }
    writes.push(put(
        rec(
            Key::new(format!("{pk}x"), "2024-01-02"),
            1,
            60,
            json!("other"),
        ),
        Cond::Any,
    ));
    store.commit(writes).await.unwrap();
    let asc = store
        .query(
            &pk,
            KeyRange::through_prefix("2024-01-03").starting_at("2024-01-02"),
            10,
            Order::Ascending,
        )
        .await
        .unwrap();
    let sks: Vec<_> = asc.iter().map(|r| r.key.sk.as_str()).collect();
    assert_eq!(sks, ["2024-01-02#b", "2024-01-03#c"]);
    let sks = |range: KeyRange| {
        let pk = pk.clone();
        async move {
            let found = store.query(&pk, range, 10, Order::Ascending).await;
            let found = found.unwrap().into_iter().map(|r| r.key.sk);
            found.collect::<Vec<_>>()
        }
    };
    assert_eq!(sks(KeyRange::prefix("2024-01-03")).await, ["2024-01-03#c"]);
    assert_eq!(sks(KeyRange::prefix("2024-01-0")).await.len(), 4);
    assert_eq!(sks(KeyRange::prefix("2024-02")).await, Vec::<String>::new());
    let upto = sks(KeyRange::through_prefix("2024-01-02#")).await;
    assert_eq!(upto, ["2024-01-01#a", "2024-01-02#b"]);
    let between = sks(KeyRange::between("2024-01-02#b", "2024-01-04#d")).await;
    assert_eq!(between, ["2024-01-02#b", "2024-01-03#c", "2024-01-04#d"]);
    let reversed = sks(KeyRange::between("2024-01-04", "2024-01-01")).await;
    assert!(
        reversed.is_empty(),
        "a range whose start is past its end holds nothing"
    );
    let desc = store
        .query(&pk, KeyRange::all(), 3, Order::Descending)
        .await
        .unwrap();
    let sks: Vec<_> = desc.iter().map(|r| r.key.sk.as_str()).collect();
    assert_eq!(sks, ["2024-01-04#d", "2024-01-03#c", "2024-01-02#b"]);
}

pub async fn delete_with_condition(store: &dyn Store, prefix: &str) {
    let k = Key::new(format!("{prefix}delete"), "k");
    store
        .commit(vec![put(rec(k.clone(), 3, 60, json!(1)), Cond::Any)])
        .await
        .unwrap();
    let wrong = store
        .commit(vec![Write::Delete {
            key: k.clone(),
            cond: Cond::Version(2),
        }])
        .await;
    assert!(matches!(wrong, Err(StoreError::Conflict)));
    store
        .commit(vec![Write::Delete {
            key: k.clone(),
            cond: Cond::Version(3),
        }])
        .await
        .unwrap();
    assert!(store.get_many(&[k]).await.unwrap()[0].is_none());
}

/// Wake-up markers carry a delivery's 64-bit tag as version, rewritten under `Cond::Any` by
/// each delivery of the same millisecond; a drainer removes one only under the version it read.
/// Versions must therefore survive every bit (no float rounding, no signed overflow).
pub async fn versions_are_exact_over_64_bits(store: &dyn Store, prefix: &str) {
    let k = Key::new(format!("{prefix}wide"), "2024-03-01T12:00:00.123Z#scope");
    let (first, second) = (u64::MAX - 1, u64::MAX - 2);
    store
        .commit(vec![put(rec(k.clone(), first, 60, json!({})), Cond::Any)])
        .await
        .unwrap();
    let got = store.get_many(std::slice::from_ref(&k)).await.unwrap();
    assert_eq!(got[0].as_ref().map(|r| r.version), Some(first));
    let listed = store
        .query(&k.pk, KeyRange::all(), 10, Order::Ascending)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.version).collect::<Vec<_>>(),
        [first]
    );
    // another delivery rewrites the key: the removal under the version first read must fail
    store
        .commit(vec![put(rec(k.clone(), second, 60, json!({})), Cond::Any)])
        .await
        .unwrap();
    let stale = store
        .commit(vec![Write::Delete {
            key: k.clone(),
            cond: Cond::Version(first),
        }])
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    store
        .commit(vec![Write::Delete {
            key: k.clone(),
            cond: Cond::Version(second),
        }])
        .await
        .unwrap();
    assert!(store.get_many(&[k]).await.unwrap()[0].is_none());
}

pub async fn large_batch_get(store: &dyn Store, prefix: &str) {
    // More keys than one DynamoDB BatchGetItem takes (100): the store must page internally.
    let pk = format!("{prefix}batch");
    let keys: Vec<Key> = (0..130).map(|i| Key::new(&pk, format!("{i:04}"))).collect();
    for chunk in keys.chunks(25) {
        let writes = chunk
            .iter()
            .map(|k| put(rec(k.clone(), 1, 60, json!(k.sk)), Cond::Any))
            .collect();
        store.commit(writes).await.unwrap();
    }
    let got = store.get_many(&keys).await.unwrap();
    assert_eq!(got.len(), 130);
    for (k, r) in keys.iter().zip(&got) {
        assert_eq!(r.as_ref().map(|r| &r.key), Some(k));
    }
}

/// `commit_steps`: each write on its own (a conflicting one does not hold back the others of its
/// step), steps in order, none after a step with a conflict; the answer counts the steps applied
/// whole.
pub async fn steps_stop_after_a_conflict(store: &dyn Store, prefix: &str) {
    let pk = format!("{prefix}steps");
    let k = |sk: &str| Key::new(pk.clone(), sk);
    store
        .commit(vec![put(rec(k("taken"), 1, 60, json!("old")), Cond::Any)])
        .await
        .unwrap();
    let done = store
        .commit_steps(vec![
            vec![
                put(rec(k("a"), 1, 60, json!("a")), Cond::Absent),
                put(rec(k("b"), 1, 60, json!("b")), Cond::Any),
            ],
            vec![
                put(rec(k("taken"), 2, 60, json!("new")), Cond::Absent),
                put(rec(k("c"), 1, 60, json!("c")), Cond::Absent),
            ],
            vec![put(rec(k("d"), 1, 60, json!("d")), Cond::Any)],
        ])
        .await
        .unwrap();
    assert_eq!(done, 1, "the first step whole, the second not");
    let got = store
        .get_many(&[k("a"), k("b"), k("taken"), k("c"), k("d")])
        .await
        .unwrap();
    let data = |i: usize| got[i].as_ref().map(|r| r.data.to_value());
    assert_eq!(data(0), Some(json!("a")));
    assert_eq!(data(1), Some(json!("b")));
    assert_eq!(
        data(2),
        Some(json!("old")),
        "the conflicting write is not applied"
    );
    assert_eq!(data(3), Some(json!("c")), "the rest of its step is");
    assert_eq!(data(4), None, "no step after the one with a conflict");
    let all = store
        .commit_steps(vec![
            vec![Write::Delete {
                key: k("a"),
                cond: Cond::Version(1),
            }],
            vec![],
            vec![put(rec(k("d"), 1, 60, json!("d")), Cond::Absent)],
        ])
        .await
        .unwrap();
    assert_eq!(all, 3, "every step whole");
    let got = store.get_many(&[k("a"), k("d")]).await.unwrap();
    assert!(got[0].is_none());
    assert!(got[1].is_some());
}
