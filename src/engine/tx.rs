//! One attempt at applying a delivery: a read cache and a write set over the [`Store`], with
//! optimistic concurrency. Every put or delete of a key that was read is conditioned on the
//! version read (or on absence), so a concurrent writer makes the commit fail with a conflict
//! and the engine starts the attempt again.

use crate::store::{
    now_epoch, Cond, Data, Key, KeyRange, Order, Record, Store, StoreResult, Write,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// How much work one transaction takes, from the store's [`Limits`](crate::store::Limits): a
/// share of its writes per commit, for headroom (the series a change touches come on top), and
/// never more than the figures measured on DynamoDB (100 writes a commit: 16, 12, 16), which
/// also bound a backend without limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Inputs applied in one transaction: three writes each (facts, summary, wake-up marker),
    /// on half of the commit.
    pub inputs: usize,
    /// Writes for owners whose metric contributions change (a summary, and the removal of a
    /// ledger still kept on its own): an eighth of the commit.
    pub owners: usize,
    /// Items whose spans are settled: a sixth of the commit.
    pub items: usize,
}

impl Budget {
    pub fn of(limits: crate::store::Limits) -> Self {
        let writes = limits.writes_per_commit;
        Budget {
            inputs: (writes / 6).clamp(1, 16),
            owners: (writes / 8).clamp(1, 12),
            items: (writes / 6).clamp(1, 16),
        }
    }
}

pub struct Tx<'s> {
    store: &'s dyn Store,
    read: HashMap<Key, Option<Record>>,
    /// The versions of records read by [`Tx::query_partitions`]: their writes are conditioned
    /// on them, but the records themselves are the caller's (a repository's partitions are not
    /// held twice).
    versions: HashMap<Key, u64>,
    writes: BTreeMap<Key, Write>,
    pub requests: u32,
}

impl<'s> Tx<'s> {
    pub fn new(store: &'s dyn Store) -> Self {
        Tx {
            store,
            read: HashMap::new(),
            versions: HashMap::new(),
            writes: BTreeMap::new(),
            requests: 0,
        }
    }

    /// Reads every key not read yet, in one request.
    pub async fn load(&mut self, keys: impl IntoIterator<Item = Key>) -> StoreResult<()> {
        let mut missing: Vec<Key> = Vec::new();
        for k in keys {
            if !self.read.contains_key(&k) && !missing.contains(&k) {
                missing.push(k);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        self.requests += 1;
        let got = self.store.get_many(&missing).await?;
        for (k, r) in missing.into_iter().zip(got) {
            self.read.insert(k, r);
        }
        Ok(())
    }

    /// A record as this attempt sees it: its own pending writes first, then what it read.
    pub fn get(&self, key: &Key) -> Option<&Record> {
        match self.writes.get(key) {
            Some(Write::Put { record, .. }) => Some(record),
            Some(Write::Delete { .. }) => None,
            None => self.read.get(key).and_then(Option::as_ref),
        }
    }

    fn cond(&self, key: &Key) -> (Cond, u64) {
        if let Some(w) = self.writes.get(key) {
            let cond = match w {
                Write::Put { cond, .. } | Write::Delete { cond, .. } => *cond,
            };
            let v = match w {
                Write::Put { record, .. } => record.version,
                Write::Delete { .. } => 0,
            };
            return (cond, v);
        }
        match (self.read.get(key), self.versions.get(key)) {
            (Some(Some(r)), _) => (Cond::Version(r.version), r.version),
            (Some(None), _) => (Cond::Absent, 0),
            (None, Some(v)) => (Cond::Version(*v), *v),
            (None, None) => (Cond::Any, 0),
        }
    }

    /// Writes `value` at `key`, living `ttl_secs` from now.
    pub fn put<T: Serialize>(&mut self, key: Key, value: &T, ttl_secs: i64) {
        let (cond, version) = self.cond(&key);
        self.put_as(key, value, ttl_secs, version + 1, cond);
    }

    /// Writes `value` at a key this attempt has not read, whatever is stored there, under
    /// `version` rather than a successor of what is stored: the version then tells writers of
    /// the same key apart (wake-up markers, see `Engine::attempt`).
    pub fn put_unread<T: Serialize>(&mut self, key: Key, value: &T, ttl_secs: i64, version: u64) {
        debug_assert!(
            !self.read.contains_key(&key) && !self.versions.contains_key(&key),
            "{key:?} was read"
        );
        self.put_over(key, value, ttl_secs, version);
    }

    /// Writes `value` at `key` under `version`, whatever is stored there, read or not: no
    /// condition, so writers of the same key never conflict over it (wake-up markers).
    pub fn put_over<T: Serialize>(&mut self, key: Key, value: &T, ttl_secs: i64, version: u64) {
        self.put_as(key, value, ttl_secs, version, Cond::Any);
    }

    fn put_as<T: Serialize>(
        &mut self,
        key: Key,
        value: &T,
        ttl_secs: i64,
        version: u64,
        cond: Cond,
    ) {
        let record = Record {
            key: key.clone(),
            version,
            expires_at: now_epoch() + ttl_secs,
            data: Data::encode(value).expect("engine state serializes"),
        };
        self.writes.insert(key, Write::Put { record, cond });
    }

    pub fn delete(&mut self, key: Key) {
        let (cond, _) = self.cond(&key);
        self.writes.insert(key.clone(), Write::Delete { key, cond });
    }

    /// The live records of one partition in a range; each is remembered as read, so writes to
    /// it are conditioned on the version seen. Keys of the range that were not returned can be
    /// declared absent with [`Tx::absent`].
    pub async fn query(
        &mut self,
        pk: &str,
        range: KeyRange,
        limit: usize,
        order: Order,
    ) -> StoreResult<Vec<Record>> {
        self.requests += 1;
        let records = self.store.query(pk, range, limit, order).await?;
        for r in &records {
            self.read
                .entry(r.key.clone())
                .or_insert_with(|| Some(r.clone()));
        }
        Ok(records)
    }

    /// The live records of several whole partitions, read side by side (a request each). Writes
    /// to them are conditioned on the versions read, as after [`Tx::query`]; the records are
    /// handed over, not kept ([`Tx::get`] does not see them).
    pub async fn query_partitions(&mut self, pks: &[String]) -> StoreResult<Vec<Vec<Record>>> {
        self.requests += pks.len() as u32;
        let store = self.store;
        let reads = pks
            .iter()
            .map(|pk| store.query(pk, KeyRange::all(), usize::MAX, Order::Ascending));
        let got = futures_util::future::try_join_all(reads).await?;
        for r in got.iter().flatten() {
            self.versions.entry(r.key.clone()).or_insert(r.version);
        }
        Ok(got)
    }

    /// Records by key, in one request per store batch, handed over as `query_partitions` hands
    /// them (versions kept for the writes' conditions, records not).
    pub async fn fetch(&mut self, keys: &[Key]) -> StoreResult<Vec<Option<Record>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.requests += 1;
        let got = self.store.get_many(keys).await?;
        for r in got.iter().flatten() {
            self.versions.entry(r.key.clone()).or_insert(r.version);
        }
        Ok(got)
    }

    /// Conditions this attempt's writes on versions an earlier attempt read (or wrote) and
    /// handed over by [`Tx::versions_after`]: one read of a repository serves the rounds of
    /// a settlement pass.
    pub fn set_versions(&mut self, versions: HashMap<Key, u64>) {
        self.versions = versions;
    }

    /// The versions this attempt knows as they will be once its writes are committed (what
    /// [`Tx::query_partitions`] read, then each put's new version; a deleted key gone), for the
    /// next round of the same pass. The writes keep their conditions.
    pub fn versions_after(&mut self) -> HashMap<Key, u64> {
        let mut versions = std::mem::take(&mut self.versions);
        for (key, w) in &self.writes {
            match w {
                Write::Put { record, .. } => {
                    versions.insert(key.clone(), record.version);
                }
                Write::Delete { .. } => {
                    versions.remove(key);
                }
            }
        }
        versions
    }

    /// Remembers a record read outside this transaction, so writes to it are conditioned on it.
    pub fn seen(&mut self, record: &Record) {
        self.read
            .entry(record.key.clone())
            .or_insert_with(|| Some(record.clone()));
    }

    /// Records that `key` was seen absent (by a query of its range), so that a put of it is
    /// conditioned on its absence.
    pub fn absent(&mut self, key: &Key) {
        if self.versions.contains_key(key) {
            return;
        }
        self.read.entry(key.clone()).or_insert(None);
    }

    /// The version this attempt knows of `key` (read or queried), if any.
    pub fn version_of(&self, key: &Key) -> Option<u64> {
        match self.read.get(key) {
            Some(Some(r)) => Some(r.version),
            _ => self.versions.get(key).copied(),
        }
    }

    /// Applies the write set atomically.
    pub async fn commit(mut self) -> StoreResult<u32> {
        if self.writes.is_empty() {
            return Ok(self.requests);
        }
        self.requests += 1;
        let writes: Vec<Write> = std::mem::take(&mut self.writes).into_values().collect();
        self.store.commit(writes).await?;
        Ok(self.requests)
    }
}

#[cfg(test)]
mod budget {
    use super::Budget;
    use crate::store::Limits;

    #[test]
    fn dynamodb_limits_give_the_measured_figures_and_no_limit_the_same() {
        let dynamodb = Budget::of(crate::store::dynamodb::LIMITS);
        let want = Budget {
            inputs: 16,
            owners: 12,
            items: 16,
        };
        assert_eq!(dynamodb, want);
        assert_eq!(Budget::of(Limits::UNBOUNDED), want);
        let small = Limits {
            writes_per_commit: 25,
            ..Limits::UNBOUNDED
        };
        assert_eq!(
            Budget::of(small),
            Budget {
                inputs: 4,
                owners: 3,
                items: 4
            }
        );
    }
}
