//! How one settlement's cost grows with a repository's history (issue 30): figures, printed side
//! by side for each history size, not a timed test.
//!
//! `cargo bench --bench growth` builds, for each size in BENCH_GROWTH (default
//! `0,1000,5000,10000`; the table goes to 50,000), one repository's settled history:
//! that many merged PRs, each with its merge pushed to the default branch, and a successful
//! production deployment every 10 PRs. The history is applied through the engine
//! (`Engine::apply`, as deliveries are), then brought to the state a long-running drain leaves
//! it in (every span exported, every ledger written) with one derivation, so that building it
//! does not take the quadratic time the issue is about. It then times one new PR merge's
//! settlement (the drain that follows it), 11 times (the median time is printed), on two
//! stores:
//! - the in-memory store, counting requests and the DynamoDB capacity units the same reads and
//!   writes would cost (record data size: 1 RCU per started 4 KB of a query's items or per item
//!   read, 2 WCU per started KB written inside a transaction, 1 alone: an upper bound, since the
//!   DynamoDB store keeps records of 600 bytes or more compressed), timed twice: on the store
//!   as building the history left this process's heap, then on the same records reloaded into
//!   a fresh store (`reloaded`: a heap holding the records and none of the build's garbage, as
//!   a process reading DynamoDB has; the backlogs run on this one);
//! - the embedded store on disk (as `serve` opens it).
//!
//! Memory is the peak of live heap bytes during the settlement (a counting allocator over the
//! system allocator, or over mimalloc with `--features mimalloc`), over what was live before it;
//! with it, the number of allocations the settlement made (the same whichever allocator serves
//! them, and whatever else runs on the machine). With `BENCH_KEEP_DIR` set, the embedded store of the last size is kept there, for `serve
//! --data-dir` to run against; with `BENCH_DISK_ONLY` set, only the embedded store is measured
//! (the in-memory store's history, once freed, leaves the system allocator's heap fragmented
//! for what runs after it in the process).

use async_trait::async_trait;
use chrono::TimeDelta;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;
use valuestream::config::Config;
use valuestream::engine::{keys, scope, Engine};
use valuestream::model::{
    Action, Commit, Ending, Input, Kind, Push, Repo, Time, WorkEvent, WorkResult,
};
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::memory::MemoryStore;
use valuestream::store::{Cond, Key, KeyRange, Order, Record, Store, StoreResult, Write};

/// The global allocator, counting live bytes and their peak.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Allocations made (`alloc` calls): the work a settlement asks of the allocator, whichever
/// allocator serves it.
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

/// Where the counting allocator takes memory from: the system allocator (glibc's malloc), or
/// mimalloc with `--features mimalloc` (the binary's optional allocator). The in-memory store
/// keeps the whole history in this process's heap (430 MB at 50,000 PRs), which no deployed
/// process does (the Lambda reads DynamoDB, `serve` an embedded store on disk); glibc's malloc
/// slows down in such a heap (docs/performance.md), mimalloc much less.
#[cfg(feature = "mimalloc")]
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(not(feature = "mimalloc"))]
static INNER: std::alloc::System = std::alloc::System;
const INNER_NAME: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "the system allocator"
};

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { INNER.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
            ALLOCS.fetch_add(1, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { INNER.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A store that counts requests and the capacity units DynamoDB would bill for them.
struct Metered<S> {
    inner: S,
    requests: AtomicU64,
    rcu: AtomicU64,
    wcu: AtomicU64,
}

impl<S> Metered<S> {
    fn new(inner: S) -> Self {
        Metered {
            inner,
            requests: AtomicU64::new(0),
            rcu: AtomicU64::new(0),
            wcu: AtomicU64::new(0),
        }
    }
    fn counts(&self) -> (u64, u64, u64) {
        (
            self.requests.load(Relaxed),
            self.rcu.load(Relaxed),
            self.wcu.load(Relaxed),
        )
    }
}

fn units(bytes: usize, per: usize) -> u64 {
    bytes.div_ceil(per).max(1) as u64
}

#[async_trait]
impl<S: Store> Store for Metered<S> {
    async fn get_many(&self, keys: &[Key]) -> StoreResult<Vec<Option<Record>>> {
        self.requests.fetch_add(1, Relaxed);
        let got = self.inner.get_many(keys).await?;
        let rcu: u64 = got
            .iter()
            .map(|r| units(r.as_ref().map_or(0, |r| r.data.len()), 4096))
            .sum();
        self.rcu.fetch_add(rcu, Relaxed);
        Ok(got)
    }
    async fn query(
        &self,
        pk: &str,
        range: KeyRange,
        limit: usize,
        order: Order,
    ) -> StoreResult<Vec<Record>> {
        let got = self.inner.query(pk, range, limit, order).await?;
        let bytes: usize = got.iter().map(|r| r.data.len() + r.key.sk.len()).sum();
        // DynamoDB answers a query in pages of at most 1 MB: one request each.
        self.requests
            .fetch_add(bytes.div_ceil(1 << 20).max(1) as u64, Relaxed);
        self.rcu.fetch_add(units(bytes, 4096), Relaxed);
        Ok(got)
    }
    fn limits(&self) -> valuestream::store::Limits {
        self.inner.limits()
    }
    fn durable_commits(&self) -> u64 {
        self.inner.durable_commits()
    }
    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()> {
        self.requests.fetch_add(1, Relaxed);
        let per = if writes.len() > 1 { 2 } else { 1 };
        let wcu: u64 = writes
            .iter()
            .map(|w| match w {
                Write::Put { record, .. } => per * units(record.data.len(), 1024),
                Write::Delete { .. } => per,
            })
            .sum();
        self.wcu.fetch_add(wcu, Relaxed);
        self.inner.commit(writes).await
    }
}

const REPO: &str = "acme/monorepo";

/// The settle clock every engine here reads: it moves a minute per PR of the history, as the
/// deliveries would arrive, so that what was written before a checkpoint is told apart.
static CLOCK: std::sync::Mutex<Option<Time>> = std::sync::Mutex::new(None);

fn clock_now() -> Time {
    let mut c = CLOCK.lock().unwrap();
    *c.get_or_insert_with(chrono::Utc::now)
}

fn advance(by: TimeDelta) {
    let now = clock_now();
    *CLOCK.lock().unwrap() = Some(now + by);
}

/// An engine on `store` reading [`CLOCK`].
fn engine_on(store: Arc<dyn Store>) -> Engine {
    Engine::new(store, engine_config()).with_clock(Arc::new(clock_now))
}

fn t0() -> Time {
    "2025-01-01T00:00:00Z".parse().unwrap()
}

fn sha(n: usize) -> String {
    format!("{n:040x}")
}

/// PR `n`, merged at `t0 + n minutes`, and the push of its merge commit to main.
fn merged(n: usize) -> Vec<Input> {
    let at = t0() + TimeDelta::minutes(n as i64);
    let mut ev = WorkEvent::new(
        Kind::Change,
        format!("gh/pr/{REPO}/{n}"),
        format!("PR #{n}"),
        Action::Close,
    );
    ev.repo = Some(Repo::new(REPO));
    ev.start = Some(at - TimeDelta::hours(3));
    ev.end = Some(at);
    ev.at = Some(at);
    ev.outcome = Some(Ending::ok(WorkResult::Merged));
    ev.merge_sha = Some(sha(n));
    let push = Push {
        repo: Repo::new(REPO),
        branch: "main".into(),
        to_default_branch: true,
        before: None,
        after: sha(n),
        time: at,
        commits: vec![Commit {
            sha: sha(n),
            time: at,
            message: format!("Merge pull request #{n}"),
            merges: true,
        }],
        attributes: Default::default(),
    };
    vec![Input::Work(ev), Input::Push(push)]
}

/// The production deployment after PR `n`.
fn deployment(n: usize) -> Input {
    let start = t0() + TimeDelta::minutes(n as i64) + TimeDelta::seconds(30);
    let mut ev = WorkEvent::new(
        Kind::Deployment,
        format!("gh/deployment/{REPO}/{n}"),
        "deploy production".to_string(),
        Action::Close,
    );
    ev.repo = Some(Repo::new(REPO));
    ev.environment = Some("production".into());
    ev.start = Some(start);
    ev.end = Some(start + TimeDelta::seconds(20));
    ev.at = ev.end;
    ev.head_sha = Some(sha(n));
    ev.outcome = Some(Ending::ok(WorkResult::Success));
    Input::Work(ev)
}

/// `prs` merged PRs with a deployment every 10, settled as a long-running drain leaves them.
async fn history(engine: &Engine, prs: usize) {
    for n in 0..prs {
        let mut inputs = merged(n);
        if n % 10 == 9 {
            inputs.push(deployment(n));
        }
        engine
            .apply("github", &format!("h-{n}"), &inputs)
            .await
            .unwrap();
        advance(TimeDelta::minutes(1));
    }
    let store = engine.store.as_ref();
    let mut records = Vec::new();
    for pk in keys::scope_partitions(&keys::Scope::Repo(REPO.to_string())) {
        records.extend(
            store
                .query(&pk, KeyRange::all(), usize::MAX, Order::Ascending)
                .await
                .unwrap(),
        );
    }
    let mut summaries: Vec<scope::Summary> = Vec::new();
    let mut pushes = Vec::new();
    for r in &records {
        if r.key.sk.starts_with("s#") {
            summaries.push(r.data.decode().unwrap());
        } else if r.key.sk.starts_with("p#") {
            pushes.push(r.data.decode().unwrap());
        }
    }
    summaries.sort_by(|a, b| a.key.cmp(&b.key));
    let derived = valuestream::engine::dora::derive(&summaries, &pushes, &engine.settings);
    let mut writes = Vec::new();
    for mut s in summaries {
        s.exported = (0..s.gens.len() as u32)
            .filter(|i| s.gens[*i as usize].end.is_some())
            .collect();
        s.tally = Some(
            derived
                .contributions
                .get(&s.key)
                .cloned()
                .unwrap_or_default(),
        );
        let key = keys::summary(&keys::Scope::Repo(REPO.to_string()), &s.key);
        let data = valuestream::store::Data::encode(&s).unwrap();
        writes.push(Write::Put {
            record: Record {
                key,
                version: 1_000_000,
                expires_at: valuestream::store::now_epoch() + 86_400,
                data,
            },
            cond: Cond::Any,
        });
    }
    for m in valuestream::engine::drain::pending_markers(store, KeyRange::all(), usize::MAX)
        .await
        .unwrap()
    {
        writes.push(Write::Delete {
            key: m.key,
            cond: Cond::Any,
        });
    }
    for chunk in writes.chunks(100) {
        store.commit(chunk.to_vec()).await.unwrap();
    }
    // One more merge, settled by a drain that seals everything it can at once, as drains that
    // ran all along would have sealed it bit by bit (docs/ARCHITECTURE.md "Sealed history").
    engine
        .apply("github", "warm-up", &merged(prs))
        .await
        .unwrap();
    let sealer = engine_on(engine.store.clone()).sealing_at_most(usize::MAX);
    sealer
        .settle(sealer.now() + TimeDelta::days(1))
        .await
        .unwrap();
}

struct Figures {
    ms: f64,
    requests: u64,
    rcu: u64,
    wcu: u64,
    peak_kib: usize,
    allocs: usize,
    /// Durable commits (fsyncs) of the embedded store.
    fsyncs: u64,
}

/// How many single settlements are measured per size: the figures are their median time and
/// their largest counts and heap.
const SAMPLES: usize = 11;

/// One new PR merge, then the settlement that follows it, [`SAMPLES`] times (PRs `from` on),
/// on `engine`'s settled history.
async fn samples<S: Store + 'static>(store: &Metered<S>, engine: &Engine, from: usize) -> Figures {
    let mut samples = Vec::new();
    for n in from..from + SAMPLES {
        engine
            .apply("github", &format!("new-{n}"), &merged(n))
            .await
            .unwrap();
        advance(TimeDelta::minutes(1));
        let settle = engine.settle(engine.now() + TimeDelta::days(1));
        let (figures, settled) = measured(store, settle).await;
        assert_eq!(settled.unwrap().spans.len(), 1, "the new PR's span");
        samples.push(figures);
    }
    let mut times: Vec<f64> = samples.iter().map(|f| f.ms).collect();
    times.sort_by(f64::total_cmp);
    Figures {
        ms: times[SAMPLES / 2],
        requests: samples.iter().map(|f| f.requests).max().unwrap(),
        rcu: samples.iter().map(|f| f.rcu).max().unwrap(),
        wcu: samples.iter().map(|f| f.wcu).max().unwrap(),
        peak_kib: samples.iter().map(|f| f.peak_kib).max().unwrap(),
        allocs: samples.iter().map(|f| f.allocs).max().unwrap(),
        fsyncs: samples.iter().map(|f| f.fsyncs).max().unwrap(),
    }
}

/// `prs` merged PRs of history on `store`, then [`samples`]: the embedded store's figures.
async fn one_settlement<S: Store + 'static>(store: Arc<Metered<S>>, prs: usize) -> Figures {
    advance(TimeDelta::minutes(5));
    let engine = engine_on(store.clone());
    history(&engine, prs).await;
    samples(&store, &engine, prs + 1).await
}

/// The in-memory store (the DynamoDB model): `prs` merged PRs of history, [`samples`] on the
/// store as the history left it, then on the same records reloaded into a fresh store
/// ([`reloaded`]), then the backlogs on that one.
async fn in_memory(prs: usize) -> (Figures, Figures, (Figures, Figures)) {
    advance(TimeDelta::minutes(5));
    let store = Arc::new(Metered::new(MemoryStore::new()));
    let engine = engine_on(store.clone());
    history(&engine, prs).await;
    let built = samples(&store, &engine, prs + 1).await;
    drop(engine);
    let store = Arc::new(Metered::new(reloaded(store).await));
    let engine = engine_on(store.clone());
    let fresh = samples(&store, &engine, prs + 1 + SAMPLES).await;
    let from = prs + 2 * SAMPLES + 1;
    let pass = backlog(&store, &engine, from, false).await;
    let rounds = backlog(&store, &engine, from + BACKLOG, true).await;
    (built, fresh, (pass, rounds))
}

/// The same live records in a fresh in-memory store, the old one freed first: a heap that holds
/// the records and nothing of what building them left behind. The history was built in this
/// process through the engine (millions of short-lived allocations between the records' own);
/// a Lambda whose records live in DynamoDB, or a process that loaded them, never has that heap.
/// The records go through one contiguous buffer (its own mapping, outside the heap), so that
/// nothing of the old store is live while the new one is filled.
async fn reloaded(store: Arc<Metered<MemoryStore>>) -> MemoryStore {
    let mut buf: Vec<u8> = Vec::new();
    let mut count = 0usize;
    {
        let records = store.inner.dump();
        buf.reserve(
            records
                .iter()
                .map(|r| 28 + r.key.pk.len() + r.key.sk.len() + r.data.len())
                .sum(),
        );
        for r in &records {
            for part in [r.key.pk.as_bytes(), r.key.sk.as_bytes(), r.data.as_bytes()] {
                buf.extend_from_slice(&(part.len() as u32).to_le_bytes());
                buf.extend_from_slice(part);
            }
            buf.extend_from_slice(&r.version.to_le_bytes());
            buf.extend_from_slice(&r.expires_at.to_le_bytes());
            count += 1;
        }
    }
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "nothing else holds the old store"
    );
    drop(store);
    let fresh = MemoryStore::new();
    let mut at = 0usize;
    let mut take = |n: usize| {
        let part = &buf[at..at + n];
        at += n;
        part
    };
    let mut writes = Vec::new();
    for _ in 0..count {
        let mut parts = Vec::with_capacity(3);
        for _ in 0..3 {
            let len = u32::from_le_bytes(take(4).try_into().unwrap()) as usize;
            parts.push(take(len).to_vec());
        }
        let version = u64::from_le_bytes(take(8).try_into().unwrap());
        let expires_at = i64::from_le_bytes(take(8).try_into().unwrap());
        let data = valuestream::store::Data::from_stored(parts.pop().unwrap());
        let sk = String::from_utf8(parts.pop().unwrap()).unwrap();
        let pk = String::from_utf8(parts.pop().unwrap()).unwrap();
        writes.push(Write::Put {
            record: Record {
                key: Key::new(pk, sk),
                version,
                expires_at,
                data,
            },
            cond: Cond::Any,
        });
        if writes.len() == 1_000 {
            fresh.commit(std::mem::take(&mut writes)).await.unwrap();
        }
    }
    fresh.commit(writes).await.unwrap();
    fresh
}

/// How many new merged PRs a backlog settles (10 rounds of 16).
const BACKLOG: usize = 160;

/// A backlog: `BACKLOG` new PR merges, then drains until they are all settled; `per_round`
/// makes every round of the pass read and derive the repository anew
/// (`Engine::rereading_every_round`), as every round did before 2026-12-07.
async fn backlog<S: Store + 'static>(
    store: &Arc<Metered<S>>,
    engine: &Engine,
    from: usize,
    per_round: bool,
) -> Figures {
    for n in from..from + BACKLOG {
        engine
            .apply("github", &format!("b-{n}"), &merged(n))
            .await
            .unwrap();
        advance(TimeDelta::minutes(1));
    }
    let drainer = engine_on(store.clone());
    let drainer = if per_round {
        drainer.rereading_every_round()
    } else {
        drainer
    };
    let drain = async {
        let mut spans = 0;
        loop {
            let settled = drainer
                .settle(drainer.now() + TimeDelta::days(1))
                .await
                .unwrap();
            spans += settled.spans.len();
            if !settled.more {
                return spans;
            }
        }
    };
    let (figures, spans) = measured(store, drain).await;
    assert_eq!(spans, BACKLOG, "every new PR's span");
    figures
}

/// Runs `work`, and what it cost: its time, the requests and capacity units it made of
/// `store`, and its peak heap over what was live before it.
async fn measured<S: Store, T>(
    store: &Metered<S>,
    work: impl std::future::Future<Output = T>,
) -> (Figures, T) {
    let (r0, rcu0, wcu0) = store.counts();
    let live = LIVE.load(Relaxed);
    PEAK.store(live, Relaxed);
    let allocs = ALLOCS.load(Relaxed);
    let fsyncs = store.durable_commits();
    let started = Instant::now();
    let out = work.await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let (r1, rcu1, wcu1) = store.counts();
    let figures = Figures {
        ms,
        requests: r1 - r0,
        rcu: rcu1 - rcu0,
        wcu: wcu1 - wcu0,
        peak_kib: (PEAK.load(Relaxed) - live) / 1024,
        allocs: ALLOCS.load(Relaxed) - allocs,
        fsyncs: store.durable_commits() - fsyncs,
    };
    (figures, out)
}

fn engine_config() -> Arc<Config> {
    Arc::new(Config::from_pairs(&[("VALUESTREAM_SETTLE_SECS", "0")]).unwrap())
}

fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_GROWTH")
        .unwrap_or_else(|_| "0,1000,5000,10000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("BENCH_GROWTH: sizes, comma-separated")
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!(
            "one merged PR's settlement, by merged PRs already in the repository (a deployment every 10): \
             median time of {SAMPLES}, largest counts and heap; memory from {INNER_NAME}"
        );
        println!(
            "| merged PRs | in-memory (DynamoDB model), as built: ms | reloaded: ms | requests | RCU | WCU | peak heap KiB | allocations | embedded on disk: ms | fsyncs | peak heap KiB | allocations |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        let mut backlogs = Vec::new();
        // BENCH_DISK_ONLY: the embedded store alone, so that no in-memory history was ever in
        // this process's heap (what `serve` runs; docs/performance.md).
        let disk_only = std::env::var_os("BENCH_DISK_ONLY").is_some();
        for &prs in &sizes {
            let mem = if disk_only {
                None
            } else {
                let (built, fresh, settled) = in_memory(prs).await;
                backlogs.push((prs, settled));
                Some((built, fresh))
            };
            // BENCH_KEEP_DIR: the embedded store is written there and kept (`serve --data-dir`
            // on it measures serve's memory against that history, docs/performance.md).
            let dir = tempfile::tempdir().unwrap();
            let path = std::env::var("BENCH_KEEP_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|_| dir.path().to_path_buf());
            let disk = EmbeddedStore::open(&path).unwrap();
            let emb = one_settlement(Arc::new(Metered::new(disk)), prs).await;
            let mem = mem.map_or_else(
                || "– | – | – | – | – | – | –".to_string(),
                |(b, m)| {
                    format!(
                        "{:.1} | {:.1} | {} | {} | {} | {} | {}",
                        b.ms, m.ms, m.requests, m.rcu, m.wcu, m.peak_kib, m.allocs
                    )
                },
            );
            println!(
                "| {prs} | {mem} | {:.1} | {} | {} | {} |",
                emb.ms, emb.fsyncs, emb.peak_kib, emb.allocs
            );
        }
        println!(
            "\na backlog of {BACKLOG} new merged PRs (10 rounds of 16), in-memory store (DynamoDB model, reloaded): \
             settled in one pass reading and deriving the repository once, against the same pass reading and deriving it at every round (as before 2026-12-07)"
        );
        println!(
            "| merged PRs | read once: ms | requests | RCU | ms per PR | read every round: ms | requests | RCU | ms per PR | time ratio |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for (prs, (pass, rounds)) in backlogs {
            let per = |f: &Figures| f.ms / BACKLOG as f64;
            println!(
                "| {prs} | {:.1} | {} | {} | {:.2} | {:.1} | {} | {} | {:.2} | {:.1}x |",
                pass.ms,
                pass.requests,
                pass.rcu,
                per(&pass),
                rounds.ms,
                rounds.requests,
                rounds.rcu,
                per(&rounds),
                rounds.ms / pass.ms
            );
        }
    });
}
