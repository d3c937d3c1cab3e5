//! How long a drain takes to settle a backlog and export it, one repository and one batch at a
//! time against several at once (`Engine::with_scopes_at_once`,
//! `Pipeline::with_exports_at_once`), printed side by side (figures, not a timed test).
//!
//! `cargo bench --bench settle` applies every delivery of BENCH_REPOS repositories (default 500;
//! 8 distinct signed GitHub deliveries each, through the real router) and then times one
//! `settle` of all of them, on a fresh store per run:
//! - the embedded store on disk, as `serve` opens it (every commit durable);
//! - the in-memory store behind a fixed 5 ms wait per store request: a model of DynamoDB's round
//!   trips from a Lambda (a real table answers in single-digit ms; moto serialises requests, so
//!   it cannot show what concurrent requests do on AWS).

#[path = "support/deliveries.rs"]
mod deliveries;

use async_trait::async_trait;
use deliveries::{Deliveries, SECRET};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use valuestream::config::Config;
use valuestream::engine::Engine;
use valuestream::export::Discard;
use valuestream::http::{router, AppState};
use valuestream::pipeline::Pipeline;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::memory::MemoryStore;
use valuestream::store::{Key, KeyRange, Order, Record, Store, StoreResult, Write};

/// Every request waits `ROUND_TRIP` before the in-memory store answers.
struct RoundTrip(MemoryStore);
const ROUND_TRIP: Duration = Duration::from_millis(5);

#[async_trait]
impl Store for RoundTrip {
    async fn get_many(&self, keys: &[Key]) -> StoreResult<Vec<Option<Record>>> {
        tokio::time::sleep(ROUND_TRIP).await;
        self.0.get_many(keys).await
    }
    async fn query(
        &self,
        pk: &str,
        range: KeyRange,
        limit: usize,
        order: Order,
    ) -> StoreResult<Vec<Record>> {
        tokio::time::sleep(ROUND_TRIP).await;
        self.0.query(pk, range, limit, order).await
    }
    fn limits(&self) -> valuestream::store::Limits {
        self.0.limits()
    }
    async fn commit(&self, writes: Vec<Write>) -> StoreResult<()> {
        tokio::time::sleep(ROUND_TRIP).await;
        self.0.commit(writes).await
    }
    fn requests(&self) -> u64 {
        self.0.requests()
    }
}

/// Applies the backlog (64 deliveries in flight), then times one settle of all of it.
async fn run(store: Arc<dyn Store>, deliveries: &Deliveries, repos: usize, at_once: usize) {
    let config = Arc::new(Config::from_pairs(&[("VALUESTREAM_GITHUB_SECRET", SECRET)]).unwrap());
    let engine = Engine::new(store.clone(), config.clone())
        .with_settle_budget(Duration::from_secs(3600))
        .with_scopes_at_once(at_once);
    let pipeline = Arc::new(
        Pipeline::new(engine, Arc::new(Discard))
            .with_export_budget(Duration::from_secs(3600))
            .with_exports_at_once(at_once),
    );
    let engine = &pipeline.engine;
    let app = router(AppState {
        pipeline: pipeline.clone(),
        config,
        metrics_endpoint: false,
    });
    let total = repos * deliveries.per_repository();
    let requests: Arc<Vec<_>> = Arc::new((0..total).map(|i| deliveries.get(i)).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..64 {
        let (app, requests, next) = (app.clone(), requests.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(d) = requests.get(i) else { break };
                let resp = app.clone().oneshot(d.request()).await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let (requests, fsyncs) = (store.requests(), store.durable_commits());
    let started = Instant::now();
    let settled = engine
        .settle(engine.now() + chrono::TimeDelta::days(1))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(!settled.more, "one settle, everything due");
    let (requests, fsyncs) = (
        store.requests() - requests,
        store.durable_commits() - fsyncs,
    );
    // The export that follows (the exporter discards: only the store's share of it, a removal
    // per batch).
    let exporting = Instant::now();
    let exported = pipeline.export_outbox().await.unwrap();
    let export_took = exporting.elapsed();
    println!(
        "  {at_once} at once: {:>4} scopes, {:>5} spans in {:>8.2?} = {:>6.0} scopes/s, {} store requests, {} fsyncs; then {} batches exported in {:.2?}",
        settled.scopes,
        settled.spans.len(),
        took,
        settled.scopes as f64 / took.as_secs_f64(),
        requests,
        fsyncs,
        exported.exported,
        export_took,
    );
}

fn main() {
    let repos: usize = std::env::var("BENCH_REPOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let deliveries = Deliveries::new();
    let wide = valuestream::engine::drain::SCOPES_AT_ONCE;
    assert_eq!(wide, valuestream::pipeline::EXPORTS_AT_ONCE);
    rt.block_on(async {
        println!("embedded store on disk (as serve), a backlog of {repos} repositories due:");
        for at_once in [1, wide] {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
            run(store, &deliveries, repos, at_once).await;
        }
        println!(
            "in-memory store, every request {ROUND_TRIP:?} (a model of DynamoDB round trips):"
        );
        for at_once in [1, wide] {
            let store = Arc::new(RoundTrip(MemoryStore::new()));
            run(store, &deliveries, repos, at_once).await;
        }
    });
}
