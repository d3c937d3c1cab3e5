//! The store: a small transactional key-value interface that both the embedded store (`serve`)
//! and DynamoDB (Lambda) implement. The engine keeps all of its state through it: open spans,
//! link indexes, delivery records, pending exports and cumulative metric series.
//!
//! Semantics every implementation must honour (checked by [`suite`]):
//! - a record whose `expires_at` (epoch seconds) has passed is absent, even before it is deleted;
//! - `commit` applies all of its writes or none, and fails with [`StoreError::Conflict`] when any
//!   condition does not hold;
//! - `query` returns the live records of one partition whose sort keys lie in a range, in order.

pub mod dynamodb;
pub mod embedded;
pub mod suite;

use async_trait::async_trait;
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: Key,
    /// Incremented by the writer on every put; conditions compare it.
    pub version: u64,
    /// Epoch seconds after which the record no longer exists.
    pub expires_at: i64,
    pub data: serde_json::Value,
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

#[async_trait]
pub trait Store: Send + Sync {
    /// Reads several records in one request; the answer has one slot per key, in order.
    async fn get_many(&self, keys: &[Key]) -> StoreResult<Vec<Option<Record>>>;
    /// Live records of partition `pk` with `from <= sk <= to`, at most `limit`, in `order`.
    async fn query(
        &self,
        pk: &str,
        from: &str,
        to: &str,
        limit: usize,
        order: Order,
    ) -> StoreResult<Vec<Record>>;
    /// Applies all writes atomically, or none.
    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()>;
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
