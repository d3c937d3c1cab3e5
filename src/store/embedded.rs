//! The embedded store: one redb file under `serve --data-dir` (or memory, for in-process
//! replays and tests). Writes go through one writer thread that groups concurrent commits into
//! one durable transaction ([`writer`]); reads run on tokio's blocking pool, so no redb work ever
//! runs on the async runtime's worker threads. Conditions hold exactly as in DynamoDB; expired
//! records read as absent and [`EmbeddedStore::sweep_now`] deletes them.

mod migrate;
mod writer;

pub use writer::WriterStats;

use super::{
    now_epoch, Data, Key, KeyRange, Limits, Order, Record, Store, StoreError, StoreResult, Write,
};
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

/// The file inside the data directory.
pub const FILE_NAME: &str = "valuestream.redb";

/// Expired keys removed per writer job, so a sweep never holds the writer for long.
const SWEEP_CHUNK: usize = 256;

pub struct EmbeddedStore {
    db: Arc<Database>,
    jobs: Option<mpsc::Sender<writer::Job>>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<WriterStats>,
    requests: AtomicU64,
    /// In memory: redb work is a few microseconds of CPU with no I/O, so it runs on the caller's
    /// thread (a hop to another thread would cost more than the work).
    inline: bool,
}

/// A value's layout: a format byte, the version and the expiry (little-endian), then the data's
/// JSON text. Conditions and the sweep read the 17-byte header only.
const FORMAT: u8 = 1;
const HEADER: usize = 17;

/// A value written before the header layout: one JSON object. Such values start with `{` (never
/// the format byte) and are still read.
#[derive(Deserialize)]
struct Legacy {
    version: u64,
    expires_at: i64,
    data: serde_json::Value,
}

impl Legacy {
    fn header(&self) -> Header {
        Header {
            version: self.version,
            expires_at: self.expires_at,
        }
    }
}

/// The version and expiry of a stored value.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Header {
    version: u64,
    expires_at: i64,
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

fn encode_value(record: &Record) -> Vec<u8> {
    let data = record.data.as_bytes();
    let mut v = Vec::with_capacity(HEADER + data.len());
    v.push(FORMAT);
    v.extend_from_slice(&record.version.to_le_bytes());
    v.extend_from_slice(&record.expires_at.to_le_bytes());
    v.extend_from_slice(data);
    v
}

fn header(bytes: &[u8]) -> StoreResult<Header> {
    match bytes {
        [FORMAT, rest @ ..] if rest.len() >= HEADER - 1 => {
            let word = |at: usize| -> [u8; 8] { rest[at..at + 8].try_into().expect("8 bytes") };
            Ok(Header {
                version: u64::from_le_bytes(word(0)),
                expires_at: i64::from_le_bytes(word(8)),
            })
        }
        [b'{', ..] => serde_json::from_slice::<Legacy>(bytes)
            .map(|l| l.header())
            .map_err(backend),
        _ => Err(StoreError::Backend(
            "a stored value is neither a valuestream record nor one of an older layout".into(),
        )),
    }
}

fn decode(key: Key, bytes: &[u8], now: i64) -> StoreResult<Option<Record>> {
    let (h, data) = if bytes.first() == Some(&b'{') {
        let l: Legacy = serde_json::from_slice(bytes).map_err(backend)?;
        (l.header(), Data::from(l.data))
    } else {
        (header(bytes)?, Data::from_stored(bytes[HEADER..].to_vec()))
    };
    if h.expires_at <= now {
        return Ok(None);
    }
    Ok(Some(Record {
        key,
        version: h.version,
        expires_at: h.expires_at,
        data,
    }))
}

/// The version of the live value `bytes`, or `None` when it has expired.
fn live_version(bytes: &[u8], now: i64) -> StoreResult<Option<u64>> {
    let h = header(bytes)?;
    Ok((h.expires_at > now).then_some(h.version))
}

fn expires_at(bytes: &[u8]) -> StoreResult<i64> {
    header(bytes).map(|h| h.expires_at)
}

/// The store's own page cache. redb's default (1 GiB) lets the process grow with the file
/// (about 3.4 KB per delivery, so ~100 MB after 30,000 deliveries); beyond this bound pages are
/// read again from the file, usually from the kernel's page cache (docs/performance.md).
pub const CACHE_BYTES: usize = 16 << 20;

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir/valuestream.redb`; a file of an older redb format
    /// is migrated first.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        let path = dir.join(FILE_NAME);
        let create = |path: &Path| Database::builder().set_cache_size(CACHE_BYTES).create(path);
        let db = match create(&path) {
            Err(redb::DatabaseError::UpgradeRequired(_)) => {
                migrate::upgrade_file(&path)?;
                create(&path).map_err(backend)?
            }
            other => other.map_err(backend)?,
        };
        Self::init(db)
    }

    /// A store that lives in memory only.
    pub fn in_memory() -> StoreResult<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(backend)?;
        let mut store = Self::init(db)?;
        store.inline = true;
        Ok(store)
    }

    fn init(db: Database) -> StoreResult<Self> {
        let w = db.begin_write().map_err(backend)?;
        w.open_table(RECORDS).map_err(backend)?;
        w.commit().map_err(backend)?;
        let db = Arc::new(db);
        let stats = Arc::new(WriterStats::default());
        let (tx, rx) = mpsc::channel();
        let writer = {
            let (db, stats) = (db.clone(), stats.clone());
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || writer::run(db, rx, stats))
                .map_err(backend)?
        };
        Ok(EmbeddedStore {
            db,
            jobs: Some(tx),
            writer: Some(writer),
            stats,
            requests: AtomicU64::new(0),
            inline: false,
        })
    }

    /// The writer's counters: write sets submitted and answered, durable commits (fsyncs).
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Holds the writer until the returned guard is dropped; write sets submitted meanwhile are
    /// committed together afterwards (tests of group commit; a store in memory has no writer
    /// thread to hold, its commits apply at once).
    pub fn pause_writer(&self) -> StoreResult<WriterPause> {
        let (hold, until) = mpsc::channel();
        self.submit(writer::Job::Pause(until))?;
        Ok(WriterPause { _hold: hold })
    }

    fn submit(&self, job: writer::Job) -> StoreResult<()> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| StoreError::Backend("the store is closed".into()))?;
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        jobs.send(job)
            .map_err(|_| StoreError::Backend("the store's writer has stopped".into()))
    }

    /// Hands a write job to the writer and waits for its answer (in memory: applies it here).
    async fn write(
        &self,
        job: impl FnOnce(oneshot::Sender<StoreResult<usize>>) -> writer::Job,
    ) -> StoreResult<usize> {
        let (reply, mut answer) = oneshot::channel();
        if self.inline {
            self.stats.submitted.fetch_add(1, Ordering::Relaxed);
            writer::apply_now(&self.db, job(reply), &self.stats);
            return answer.try_recv().map_err(backend)?;
        }
        self.submit(job(reply))?;
        answer.await.map_err(backend)?
    }

    /// Runs `f` with the database on tokio's blocking pool (in memory: here).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        if self.inline {
            return f(&self.db);
        }
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(backend)?
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

    /// Deletes every expired record; returns how many. The expired keys are found by a read
    /// transaction; the writer removes them in small jobs (each rechecking the expiry), so
    /// deliveries committing meanwhile are held up by one small job at most.
    pub async fn sweep_now(&self) -> StoreResult<usize> {
        let dead = self
            .read(|db| {
                let now = now_epoch();
                let r = db.begin_read().map_err(backend)?;
                let t = r.open_table(RECORDS).map_err(backend)?;
                let mut dead = Vec::new();
                for item in t.iter().map_err(backend)? {
                    let (k, v) = item.map_err(backend)?;
                    if expires_at(v.value())? <= now {
                        dead.push(k.value().to_vec());
                    }
                }
                Ok(dead)
            })
            .await?;
        let mut removed = 0;
        let mut dead = dead.into_iter().peekable();
        while dead.peek().is_some() {
            let chunk: Vec<Vec<u8>> = dead.by_ref().take(SWEEP_CHUNK).collect();
            removed += self
                .write(|reply| writer::Job::DeleteExpired(chunk, reply))
                .await?;
        }
        Ok(removed)
    }
}

/// While alive, the store's writer waits (see [`EmbeddedStore::pause_writer`]).
pub struct WriterPause {
    _hold: mpsc::Sender<()>,
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // The writer ends once its channel is closed; waiting for it releases the file, so the
        // directory can be opened again at once.
        self.jobs.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get_many(&self, keys: &[Key]) -> StoreResult<Vec<Option<Record>>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let keys = keys.to_vec();
        self.read(move |db| {
            let now = now_epoch();
            let r = db.begin_read().map_err(backend)?;
            let t = r.open_table(RECORDS).map_err(backend)?;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let found = t
                    .get(encode_key(&key.pk, &key.sk).as_slice())
                    .map_err(backend)?;
                out.push(match found {
                    Some(v) => decode(key, v.value(), now)?,
                    None => None,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn query(
        &self,
        pk: &str,
        range: KeyRange,
        limit: usize,
        order: Order,
    ) -> StoreResult<Vec<Record>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let (lo, hi) = (encode_key(pk, range.from()), encode_key(pk, range.to()));
        self.read(move |db| {
            let now = now_epoch();
            let r = db.begin_read().map_err(backend)?;
            let t = r.open_table(RECORDS).map_err(backend)?;
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
        })
        .await
    }

    /// A redb write transaction takes any number of writes, a value any length its `u32`
    /// lengths allow.
    fn limits(&self) -> Limits {
        Limits {
            data_bytes: u32::MAX as usize,
            ..Limits::UNBOUNDED
        }
    }

    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.write(|reply| writer::Job::Commit(writes, reply))
            .await
            .map(|_| ())
    }

    async fn sweep(&self) -> StoreResult<usize> {
        self.sweep_now().await
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn durable_commits(&self) -> u64 {
        self.stats.durable_commits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(data: serde_json::Value) -> Record {
        Record {
            key: Key::new("item#a", "_"),
            version: 7,
            expires_at: 2_000,
            data: data.into(),
        }
    }

    #[test]
    fn a_value_is_a_header_then_the_json_text() {
        let r = record(json!({"open": true, "s": "é"}));
        let bytes = encode_value(&r);
        assert_eq!(bytes[0], FORMAT);
        assert_eq!(&bytes[HEADER..], r.data.as_bytes());
        assert_eq!(
            header(&bytes).unwrap(),
            Header {
                version: 7,
                expires_at: 2_000
            }
        );
        assert_eq!(
            decode(r.key.clone(), &bytes, 1_999).unwrap(),
            Some(r.clone())
        );
        assert_eq!(decode(r.key.clone(), &bytes, 2_000).unwrap(), None);
        assert_eq!(live_version(&bytes, 1_999).unwrap(), Some(7));
        assert_eq!(live_version(&bytes, 2_000).unwrap(), None);
    }

    #[test]
    fn values_of_the_older_json_layout_are_read() {
        let old = br#"{"version":3,"expires_at":2000,"data":{"x":[1,"e"]}}"#;
        let got = decode(Key::one("old"), old, 1_000).unwrap().unwrap();
        assert_eq!((got.version, got.expires_at), (3, 2_000));
        assert_eq!(got.data, json!({"x": [1, "e"]}));
        assert_eq!(live_version(old, 1_000).unwrap(), Some(3));
        assert_eq!(expires_at(old).unwrap(), 2_000);
    }

    #[test]
    fn a_value_of_no_known_layout_is_an_error() {
        for bad in [
            &b""[..],
            &[FORMAT, 1, 2][..],
            &b"[1]"[..],
            &b"{\"v\":1}"[..],
        ] {
            assert!(header(bad).is_err(), "{bad:?}");
            assert!(decode(Key::one("bad"), bad, 0).is_err(), "{bad:?}");
        }
    }
}
