//! The in-memory store: a sorted map behind a mutex. It backs the in-process pipeline when there
//! is neither a table nor a data directory (`replay` without `--data-dir`, the in-memory bench,
//! tests), where a database engine only adds work: no file, no pages, no transaction log. It
//! honours the same semantics as the other stores ([`super::suite`]): all-or-nothing commits
//! under conditions, expired records absent, ranges in order.

use super::{
    now_epoch, Data, Key, KeyRange, Limits, Order, Record, Store, StoreError, StoreResult, Write,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// A record without its key (the map's key).
struct Value {
    version: u64,
    expires_at: i64,
    data: Data,
}

#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<Key, Value>>,
    requests: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The map; a panic while it was held cannot leave it half-written (a commit checks every
    /// condition before its first change), so a poisoned lock is taken over.
    fn records(&self) -> MutexGuard<'_, BTreeMap<Key, Value>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every live record, in key order (tests and diagnostics).
    pub fn dump(&self) -> Vec<Record> {
        let now = now_epoch();
        let records = self.records();
        records
            .iter()
            .filter_map(|(k, v)| live(k, v, now))
            .collect()
    }

    /// Makes a record expire now, as its TTL would (tests of what outlives what).
    #[cfg(test)]
    pub fn expire(&self, key: &Key) {
        if let Some(v) = self.records().get_mut(key) {
            v.expires_at = now_epoch() - 1;
        }
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

fn live(key: &Key, v: &Value, now: i64) -> Option<Record> {
    (v.expires_at > now).then(|| Record {
        key: key.clone(),
        version: v.version,
        expires_at: v.expires_at,
        data: v.data.clone(),
    })
}

#[async_trait]
impl Store for MemoryStore {
    async fn get_many(&self, keys: &[Key]) -> StoreResult<Vec<Option<Record>>> {
        self.count();
        let now = now_epoch();
        let records = self.records();
        Ok(keys
            .iter()
            .map(|k| records.get(k).and_then(|v| live(k, v, now)))
            .collect())
    }

    async fn query(
        &self,
        pk: &str,
        range: KeyRange,
        limit: usize,
        order: Order,
    ) -> StoreResult<Vec<Record>> {
        self.count();
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_epoch();
        let records = self.records();
        let range = records.range(Key::new(pk, range.from())..=Key::new(pk, range.to()));
        let found = |(k, v): (&Key, &Value)| live(k, v, now);
        Ok(match order {
            Order::Ascending => range.filter_map(found).take(limit).collect(),
            Order::Descending => range.rev().filter_map(found).take(limit).collect(),
        })
    }

    /// A map under a lock: no bound.
    fn limits(&self) -> Limits {
        Limits::UNBOUNDED
    }

    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()> {
        self.count();
        let now = now_epoch();
        let mut records = self.records();
        // Every condition first, against the map and this commit's own earlier writes.
        let mut own: HashMap<&Key, Option<u64>> = HashMap::new();
        for write in &writes {
            let (key, cond, after) = match write {
                Write::Put { record, cond } => (&record.key, *cond, Some(record.version)),
                Write::Delete { key, cond } => (key, *cond, None),
            };
            let current = match own.get(key) {
                Some(v) => *v,
                None => records
                    .get(key)
                    .filter(|v| v.expires_at > now)
                    .map(|v| v.version),
            };
            if !cond.holds(current) {
                return Err(StoreError::Conflict);
            }
            own.insert(key, after);
        }
        drop(own);
        for write in writes {
            match write {
                Write::Put { record, .. } => {
                    records.insert(
                        record.key,
                        Value {
                            version: record.version,
                            expires_at: record.expires_at,
                            data: record.data,
                        },
                    );
                }
                Write::Delete { key, .. } => {
                    records.remove(&key);
                }
            }
        }
        Ok(())
    }

    async fn sweep(&self) -> StoreResult<usize> {
        let now = now_epoch();
        let mut records = self.records();
        let before = records.len();
        records.retain(|_, v| v.expires_at > now);
        Ok(before - records.len())
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Cond;
    use serde_json::json;

    #[tokio::test]
    async fn suite_passes() {
        let store = MemoryStore::new();
        super::super::suite::run_all(&store, "p/").await;
        assert!(store.requests() > 0, "requests are counted");
    }

    #[tokio::test]
    async fn sweep_removes_only_expired_records() {
        let store = MemoryStore::new();
        let put = |pk: &str, ttl: i64| Write::Put {
            record: Record {
                key: Key::one(pk),
                version: 1,
                expires_at: now_epoch() + ttl,
                data: json!(pk).into(),
            },
            cond: Cond::Any,
        };
        store
            .commit(vec![put("gone", -1), put("kept", 60)])
            .await
            .unwrap();
        assert_eq!(store.sweep().await.unwrap(), 1);
        assert_eq!(store.sweep().await.unwrap(), 0);
        let got = store
            .get_many(&[Key::one("gone"), Key::one("kept")])
            .await
            .unwrap();
        assert!(got[0].is_none());
        assert_eq!(got[1].as_ref().unwrap().data, json!("kept"));
    }
}

/// Test stores: the in-memory store with hooks on its calls, so that a test that needs to watch
/// reads or act around a commit writes its hooks and not a whole `Store`.
#[cfg(test)]
pub mod spy {
    use super::MemoryStore;
    use crate::store::{Key, KeyRange, Limits, Order, Record, Store, StoreResult, Write};
    use async_trait::async_trait;
    use std::sync::Arc;

    /// What a test does around the store's calls; each does nothing unless written.
    #[async_trait]
    pub trait Hooks: Send + Sync {
        fn on_get(&self, _keys: &[Key]) {}
        fn on_query(&self, _pk: &str) {}
        async fn before_commit(&self, _writes: &[Write]) {}
        /// After the inner commit, whether it succeeded or not.
        async fn after_commit(&self, _writes: &[Write], _committed: bool) {}
    }

    /// A future a hook runs once.
    pub type Once =
        tokio::sync::Mutex<Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>>;

    /// Runs `once`'s future, the first time only.
    pub async fn run_once(once: &Once) {
        if let Some(f) = once.lock().await.take() {
            f.await;
        }
    }

    pub struct Spy<H> {
        pub inner: Arc<MemoryStore>,
        pub hooks: H,
    }

    impl<H> Spy<H> {
        pub fn new(inner: Arc<MemoryStore>, hooks: H) -> Self {
            Spy { inner, hooks }
        }
    }

    #[async_trait]
    impl<H: Hooks> Store for Spy<H> {
        async fn get_many(&self, keys: &[Key]) -> StoreResult<Vec<Option<Record>>> {
            self.hooks.on_get(keys);
            self.inner.get_many(keys).await
        }
        async fn query(
            &self,
            pk: &str,
            range: KeyRange,
            limit: usize,
            order: Order,
        ) -> StoreResult<Vec<Record>> {
            self.hooks.on_query(pk);
            self.inner.query(pk, range, limit, order).await
        }
        fn limits(&self) -> Limits {
            self.inner.limits()
        }
        async fn commit(&self, writes: Vec<Write>) -> StoreResult<()> {
            self.hooks.before_commit(&writes).await;
            let copy = writes.clone();
            let result = self.inner.commit(writes).await;
            self.hooks.after_commit(&copy, result.is_ok()).await;
            result
        }
    }
}
