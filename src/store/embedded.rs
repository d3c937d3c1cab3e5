//! The embedded store: one redb file under `serve --data-dir` (or memory, for in-process
//! replays and tests). Commits are serializable write transactions, so conditions hold exactly as
//! in DynamoDB; expired records read as absent and [`EmbeddedStore::sweep`] deletes them.

use super::{now_epoch, Cond, Key, Order, Record, Store, StoreError, StoreResult, Write};
use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

pub struct EmbeddedStore {
    db: Database,
    requests: AtomicU64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u64,
    expires_at: i64,
    data: serde_json::Value,
}

fn encode_key(pk: &str, sk: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(pk.len() + sk.len() + 1);
    k.extend_from_slice(pk.as_bytes());
    k.push(0);
    k.extend_from_slice(sk.as_bytes());
    k
}

fn decode_key(bytes: &[u8]) -> Key {
    let split = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let pk = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let sk = String::from_utf8_lossy(bytes.get(split + 1..).unwrap_or_default()).into_owned();
    Key { pk, sk }
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode(key: Key, bytes: &[u8], now: i64) -> StoreResult<Option<Record>> {
    let s: Stored = serde_json::from_slice(bytes).map_err(backend)?;
    if s.expires_at <= now {
        return Ok(None);
    }
    Ok(Some(Record {
        key,
        version: s.version,
        expires_at: s.expires_at,
        data: s.data,
    }))
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir/valuestream.redb`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        let db = Database::create(dir.join("valuestream.redb")).map_err(backend)?;
        Self::init(db)
    }

    /// A store that lives in memory only.
    pub fn in_memory() -> StoreResult<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(backend)?;
        Self::init(db)
    }

    fn init(db: Database) -> StoreResult<Self> {
        let w = db.begin_write().map_err(backend)?;
        w.open_table(RECORDS).map_err(backend)?;
        w.commit().map_err(backend)?;
        Ok(EmbeddedStore {
            db,
            requests: AtomicU64::new(0),
        })
    }

    /// Every live record (diagnostics and tests; never on the request path).
    pub fn dump(&self) -> StoreResult<Vec<Record>> {
        let now = now_epoch();
        let r = self.db.begin_read().map_err(backend)?;
        let t = r.open_table(RECORDS).map_err(backend)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            if let Some(rec) = decode(decode_key(k.value()), v.value(), now)? {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Deletes every expired record; returns how many.
    pub fn sweep_now(&self) -> StoreResult<usize> {
        let now = now_epoch();
        let w = self.db.begin_write().map_err(backend)?;
        let mut removed = 0;
        {
            let mut t = w.open_table(RECORDS).map_err(backend)?;
            let mut dead = Vec::new();
            for item in t.iter().map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let s: Stored = serde_json::from_slice(v.value()).map_err(backend)?;
                if s.expires_at <= now {
                    dead.push(k.value().to_vec());
                }
            }
            for k in dead {
                t.remove(k.as_slice()).map_err(backend)?;
                removed += 1;
            }
        }
        w.commit().map_err(backend)?;
        Ok(removed)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get_many(&self, keys: &[Key]) -> StoreResult<Vec<Option<Record>>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = now_epoch();
        let r = self.db.begin_read().map_err(backend)?;
        let t = r.open_table(RECORDS).map_err(backend)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let found = t
                .get(encode_key(&key.pk, &key.sk).as_slice())
                .map_err(backend)?;
            out.push(match found {
                Some(v) => decode(key.clone(), v.value(), now)?,
                None => None,
            });
        }
        Ok(out)
    }

    async fn query(
        &self,
        pk: &str,
        from: &str,
        to: &str,
        limit: usize,
        order: Order,
    ) -> StoreResult<Vec<Record>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = now_epoch();
        let r = self.db.begin_read().map_err(backend)?;
        let t = r.open_table(RECORDS).map_err(backend)?;
        let (lo, hi) = (encode_key(pk, from), encode_key(pk, to));
        let range = t.range(lo.as_slice()..=hi.as_slice()).map_err(backend)?;
        let mut out = Vec::new();
        let mut push = |item: Result<
            (redb::AccessGuard<&[u8]>, redb::AccessGuard<&[u8]>),
            redb::StorageError,
        >|
         -> StoreResult<bool> {
            let (k, v) = item.map_err(backend)?;
            if let Some(rec) = decode(decode_key(k.value()), v.value(), now)? {
                out.push(rec);
            }
            Ok(out.len() >= limit)
        };
        match order {
            Order::Ascending => {
                for item in range {
                    if push(item)? {
                        break;
                    }
                }
            }
            Order::Descending => {
                for item in range.rev() {
                    if push(item)? {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = now_epoch();
        let w = self.db.begin_write().map_err(backend)?;
        {
            let mut t = w.open_table(RECORDS).map_err(backend)?;
            for write in &writes {
                let key = write.key();
                let raw = encode_key(&key.pk, &key.sk);
                let cond = match write {
                    Write::Put { cond, .. } | Write::Delete { cond, .. } => *cond,
                };
                if cond != Cond::Any {
                    let current = match t.get(raw.as_slice()).map_err(backend)? {
                        Some(v) => decode(key.clone(), v.value(), now)?,
                        None => None,
                    };
                    let holds = match (cond, &current) {
                        (Cond::Absent, None) => true,
                        (Cond::Version(v), Some(rec)) => rec.version == v,
                        _ => false,
                    };
                    if !holds {
                        // Dropping the write transaction without commit aborts it.
                        return Err(StoreError::Conflict);
                    }
                }
                match write {
                    Write::Put { record, .. } => {
                        let value = serde_json::to_vec(&Stored {
                            version: record.version,
                            expires_at: record.expires_at,
                            data: record.data.clone(),
                        })
                        .map_err(backend)?;
                        t.insert(raw.as_slice(), value.as_slice())
                            .map_err(backend)?;
                    }
                    Write::Delete { .. } => {
                        t.remove(raw.as_slice()).map_err(backend)?;
                    }
                }
            }
        }
        w.commit().map_err(backend)?;
        Ok(())
    }

    async fn sweep(&self) -> StoreResult<usize> {
        self.sweep_now()
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}
