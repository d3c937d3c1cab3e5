//! Group commit on the embedded store: concurrent commits share one durable transaction (fewer
//! fsyncs than commits, every result right), a caller whose condition fails in a batch fails
//! alone, a caller sees the writes of the callers before it in its batch, a lone commit takes one
//! fsync, and reads never wait for the writer.

use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::{now_epoch, Cond, Key, Record, Store, StoreError, Write};

fn put(pk: &str, version: u64, data: serde_json::Value, cond: Cond) -> Write {
    Write::Put {
        record: Record {
            key: Key::one(pk),
            version,
            expires_at: now_epoch() + 600,
            data: data.into(),
        },
        cond,
    }
}

/// Waits (bounded) until the writer has been handed `n` write sets in all.
async fn until_submitted(store: &EmbeddedStore, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.stats().submitted.load(Ordering::SeqCst) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "write sets never reached the writer"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_durable_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    const N: usize = 64;
    // Free-running: every commit answered right, never more fsyncs than commits.
    let before = store.durable_commits();
    let mut tasks = Vec::new();
    for i in 0..N {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .commit(vec![put(&format!("k{i}"), 1, json!(i), Cond::Absent)])
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("every commit succeeds");
    }
    let free = store.durable_commits() - before;
    assert!((1..=N as u64).contains(&free), "{free} durable commits");
    // Arriving while the writer is busy (held here, as by a long fsync): one durable commit.
    let pause = store.pause_writer().unwrap();
    let submitted = store.stats().submitted.load(Ordering::SeqCst);
    let before = store.durable_commits();
    let mut tasks = Vec::new();
    for i in 0..N {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .commit(vec![put(
                    &format!("k{i}"),
                    2,
                    json!(i * 10),
                    Cond::Version(1),
                )])
                .await
        }));
    }
    until_submitted(&store, submitted + N as u64).await;
    drop(pause);
    for t in tasks {
        t.await.unwrap().expect("every commit succeeds");
    }
    assert_eq!(
        store.durable_commits() - before,
        1,
        "{N} concurrent commits, one durable commit"
    );
    let keys: Vec<Key> = (0..N).map(|i| Key::one(format!("k{i}"))).collect();
    let got = store.get_many(&keys).await.unwrap();
    for (i, r) in got.iter().enumerate() {
        let r = r.as_ref().expect("written");
        assert_eq!((r.version, r.data.to_value()), (2, json!(i * 10)));
    }
    // And they are on disk: the reopened file holds all of them.
    drop(store);
    let again = EmbeddedStore::open(dir.path()).unwrap();
    let got = again.get_many(&keys).await.unwrap();
    assert!(got
        .iter()
        .all(|r| r.as_ref().is_some_and(|r| r.version == 2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_durable_commit_and_a_conflict_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    store
        .commit(vec![put("existing", 3, json!("v3"), Cond::Absent)])
        .await
        .unwrap();
    let fsyncs_before = store.durable_commits();
    let pause = store.pause_writer().unwrap();
    let mut submitted = store.stats().submitted.load(Ordering::SeqCst);
    // In this order into one batch (each handed over before the next is started):
    let sets: Vec<Vec<Write>> = vec![
        // a: creates "fresh".
        vec![put("fresh", 1, json!("a"), Cond::Absent)],
        // b: also wants "fresh" absent, and "b-only": fails as a whole, after a.
        vec![
            put("b-only", 1, json!("b"), Cond::Absent),
            put("fresh", 1, json!("b"), Cond::Absent),
        ],
        // c: builds on a's write in the same batch.
        vec![put("fresh", 2, json!("c"), Cond::Version(1))],
        // d: unrelated, with a version condition on a record of an earlier transaction.
        vec![put("existing", 4, json!("v4"), Cond::Version(3))],
        // e: a stale version: fails alone.
        vec![Write::Delete {
            key: Key::one("existing"),
            cond: Cond::Version(3),
        }],
    ];
    let mut tasks = Vec::new();
    for set in sets {
        let s = store.clone();
        tasks.push(tokio::spawn(async move { s.commit(set).await }));
        submitted += 1;
        until_submitted(&store, submitted).await;
    }
    drop(pause);
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(StoreError::Conflict)),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok(), "{:?}", results[2]);
    assert!(results[3].is_ok(), "{:?}", results[3]);
    assert!(
        matches!(results[4], Err(StoreError::Conflict)),
        "{:?}",
        results[4]
    );
    assert_eq!(
        store.durable_commits() - fsyncs_before,
        1,
        "five callers, one durable commit"
    );
    let got = store
        .get_many(&[Key::one("fresh"), Key::one("b-only"), Key::one("existing")])
        .await
        .unwrap();
    let fresh = got[0].as_ref().unwrap();
    assert_eq!((fresh.version, fresh.data.to_value()), (2, json!("c")));
    assert!(got[1].is_none(), "a failed caller writes nothing");
    assert_eq!(got[2].as_ref().unwrap().data, json!("v4"));
}

#[tokio::test]
async fn a_lone_commit_takes_exactly_one_durable_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    for i in 0..3u64 {
        let before = store.durable_commits();
        store
            .commit(vec![
                put(
                    "lone",
                    i + 1,
                    json!(i),
                    if i == 0 {
                        Cond::Absent
                    } else {
                        Cond::Version(i)
                    },
                ),
                put(&format!("other{i}"), 1, json!(i), Cond::Any),
            ])
            .await
            .unwrap();
        assert_eq!(store.durable_commits() - before, 1);
    }
    // A commit that fails its condition changes nothing and syncs nothing.
    let before = store.durable_commits();
    let stale = store
        .commit(vec![put("lone", 9, json!(9), Cond::Version(1))])
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict)));
    assert_eq!(store.durable_commits(), before);
}

#[tokio::test]
async fn reads_do_not_wait_for_the_writer() {
    // On a single-threaded runtime: while the writer is held, reads still answer and the
    // runtime keeps running other tasks (nothing blocks its one thread).
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    store
        .commit(vec![put("r", 1, json!("before"), Cond::Absent)])
        .await
        .unwrap();
    let pause = store.pause_writer().unwrap();
    let ticker = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        "ticked"
    });
    let read = tokio::time::timeout(Duration::from_secs(5), store.get_many(&[Key::one("r")]))
        .await
        .expect("a read does not wait for the held writer")
        .unwrap();
    assert_eq!(read[0].as_ref().unwrap().data, json!("before"));
    let write = store.commit(vec![put("r", 2, json!("after"), Cond::Version(1))]);
    tokio::pin!(write);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut write)
            .await
            .is_err(),
        "a commit waits for the writer"
    );
    assert_eq!(ticker.await.unwrap(), "ticked");
    drop(pause);
    tokio::time::timeout(Duration::from_secs(5), write)
        .await
        .expect("the commit is answered once the writer runs")
        .unwrap();
}
