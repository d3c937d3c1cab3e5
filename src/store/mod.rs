//! The store: a small transactional key-value interface with three implementations: DynamoDB
//! (Lambda), the embedded store (redb: `serve` with a data directory) and the in-memory store (a
//! sorted map: `serve` and `replay` without one). The engine keeps all of its state through it
//! (each item's facts with the tags of their deliveries, each scope's summaries and metric
//! ledgers, the wake-up markers, the outbox and the cumulative metric series), and the sync its
//! cursors and the backfill's validators. A record's data is JSON text the store only moves
//! ([`Data`]).
//!
//! Semantics every implementation must honour (checked by [`suite`]):
//! - a record whose `expires_at` (epoch seconds) has passed is absent, even before it is deleted;
//! - `commit` applies all of its writes or none, and fails with [`StoreError::Conflict`] when any
//!   condition does not hold;
//! - `query` returns the live records of one partition whose sort keys lie in a range, in order.

pub mod dynamodb;
pub mod embedded;
pub mod memory;
pub mod suite;

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A record's address: a partition key and a sort key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Key {
            pk: pk.into(),
            sk: sk.into(),
        }
    }
    /// A singleton record (one per partition).
    pub fn one(pk: impl Into<String>) -> Self {
        Key::new(pk, "_")
    }
}

/// One stored item.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub key: Key,
    /// Incremented by the writer on every put; conditions compare it.
    pub version: u64,
    /// Epoch seconds after which the record no longer exists.
    pub expires_at: i64,
    pub data: Data,
}

/// A record's data: the JSON text of the engine's value, kept as bytes. The engine serializes
/// its state straight to these bytes and reads it straight back into its types; a store only
/// moves them (no `serde_json::Value` tree in between, and a clone is a reference count).
#[derive(Clone, PartialEq, Eq)]
pub struct Data(Bytes);

impl Data {
    /// The JSON text of `value`.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(value).map(|v| Data(v.into()))
    }

    /// The value this JSON text holds.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }

    /// Bytes a store wrote itself and reads back; they are parsed (and so checked) only when
    /// decoded.
    pub fn from_stored(bytes: impl Into<Bytes>) -> Self {
        Data(bytes.into())
    }

    /// Bytes from outside (another program may have written the item): checked to be JSON.
    pub fn from_json(bytes: impl Into<Bytes>) -> Result<Self, serde_json::Error> {
        let bytes = bytes.into();
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)?;
        Ok(Data(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The data as a JSON tree (tests and diagnostics; `null` when it is not JSON).
    pub fn to_value(&self) -> serde_json::Value {
        self.decode().unwrap_or(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for Data {
    fn from(value: serde_json::Value) -> Self {
        Data(value.to_string().into_bytes().into())
    }
}

impl PartialEq<serde_json::Value> for Data {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.decode::<serde_json::Value>()
            .is_ok_and(|v| &v == other)
    }
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.0))
    }
}

/// A write's precondition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cond {
    /// No precondition.
    Any,
    /// The key holds no live record.
    Absent,
    /// The key holds a live record with this version.
    Version(u64),
}

impl Cond {
    /// Whether the condition holds when the key's live record has version `current` (`None`:
    /// no live record).
    pub fn holds(self, current: Option<u64>) -> bool {
        match (self, current) {
            (Cond::Any, _) | (Cond::Absent, None) => true,
            (Cond::Version(want), Some(found)) => want == found,
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    Put { record: Record, cond: Cond },
    Delete { key: Key, cond: Cond },
}

impl Write {
    pub fn key(&self) -> &Key {
        match self {
            Write::Put { record, .. } => &record.key,
            Write::Delete { key, .. } => key,
        }
    }
}

/// The sort keys a query reads: `from <= sk <= to`, in string order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    from: String,
    to: String,
}

impl KeyRange {
    /// Above every sort key written (the greatest `char`): the open end of a range.
    const END: char = '\u{10ffff}';

    /// Every sort key of the partition.
    pub fn all() -> Self {
        KeyRange::between("", KeyRange::END.to_string())
    }
    /// The sort keys that start with `p`.
    pub fn prefix(p: &str) -> Self {
        KeyRange::between(p, format!("{p}{}", KeyRange::END))
    }
    /// The sort keys up to the last one that starts with `p` (everything before it too).
    pub fn through_prefix(p: &str) -> Self {
        KeyRange::between("", format!("{p}{}", KeyRange::END))
    }
    /// The sort keys from `from` to `to`, both included.
    pub fn between(from: impl Into<String>, to: impl Into<String>) -> Self {
        KeyRange {
            from: from.into(),
            to: to.into(),
        }
    }
    /// The same range, starting at `from` instead (a cursor reading on).
    pub fn starting_at(self, from: impl Into<String>) -> Self {
        KeyRange {
            from: from.into(),
            ..self
        }
    }
    /// The lowest sort key in the range (`""`: no lower bound).
    pub fn from(&self) -> &str {
        &self.from
    }
    /// The highest sort key in the range.
    pub fn to(&self) -> &str {
        &self.to
    }
    /// Whether no sort key lies in the range.
    pub fn is_empty(&self) -> bool {
        self.from > self.to
    }
}

/// What one request of a backend takes at most; the engine sizes its transactions and reads by
/// these (`usize::MAX`: the backend sets no bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Writes in one [`Store::commit`].
    pub writes_per_commit: usize,
    /// Keys in one backend read of [`Store::get_many`] (more are split into several).
    pub keys_per_get: usize,
    /// Bytes of one record's data.
    pub data_bytes: usize,
    /// Bytes of all the items of one commit.
    pub commit_bytes: usize,
}

impl Limits {
    /// A backend that sets no bound (a map under a lock, a redb write transaction).
    pub const UNBOUNDED: Limits = Limits {
        writes_per_commit: usize::MAX,
        keys_per_get: usize::MAX,
        data_bytes: usize::MAX,
        commit_bytes: usize::MAX,
    };
}

/// Sort order of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a condition failed: another writer changed the same records")]
    Conflict,
    #[error("store backend error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Lone writes of [`Store::commit_steps`] in flight at once (its default, one request each).
pub const WRITES_AT_ONCE: usize = 16;

#[async_trait]
pub trait Store: Send + Sync {
    /// Reads several records in one request; the answer has one slot per key, in order.
    async fn get_many(&self, keys: &[Key]) -> StoreResult<Vec<Option<Record>>>;
    /// Live records of partition `pk` whose sort key lies in `range`, at most `limit`, in
    /// `order`.
    async fn query(
        &self,
        pk: &str,
        range: KeyRange,
        limit: usize,
        order: Order,
    ) -> StoreResult<Vec<Record>>;
    /// What one request of this backend takes at most.
    fn limits(&self) -> Limits;
    /// Applies all writes atomically, or none.
    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()>;
    /// Applies `steps` in order, each write on its own (all or nothing alone, as a lone
    /// [`Store::commit`] of it would be); once a step had a write whose condition failed, the
    /// steps after it are not applied. Returns how many steps had every write applied; an `Err`
    /// is a backend failure (what was applied before it stays). Each write is its own request,
    /// [`WRITES_AT_ONCE`] at once: on DynamoDB a lone write costs half what it costs inside a
    /// transaction, and the embedded store's writer groups those in flight into one fsync.
    async fn commit_steps(&self, steps: Vec<Vec<Write>>) -> StoreResult<usize> {
        use futures_util::StreamExt;
        let mut done = 0;
        for step in steps {
            let mut each = futures_util::stream::iter(step)
                .map(|w| self.commit(vec![w]))
                .buffer_unordered(WRITES_AT_ONCE);
            let mut all = true;
            while let Some(r) = each.next().await {
                match r {
                    Ok(()) => {}
                    Err(StoreError::Conflict) => all = false,
                    Err(e) => return Err(e),
                }
            }
            if !all {
                return Ok(done);
            }
            done += 1;
        }
        Ok(done)
    }
    /// Deletes expired records where the backend does not do it by itself (DynamoDB's TTL does).
    async fn sweep(&self) -> StoreResult<usize> {
        Ok(0)
    }
    /// Number of requests sent to the backend so far (for the figures in tests and benches).
    fn requests(&self) -> u64 {
        0
    }
    /// Number of durable commits (fsyncs) so far, where the backend has them (embedded store).
    fn durable_commits(&self) -> u64 {
        0
    }
}

/// Seconds since the epoch, now.
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
