//! Throughput, latency, fsyncs and memory of the webhook pipeline, printed as figures (not a
//! timed test).
//!
//! `cargo bench --bench pipeline` drives the real router in process with the embedded store as
//! `serve` opens it (on disk, in a temporary directory, every commit durable) and a discarding
//! exporter, at 1, 8 and 64 deliveries in flight: distinct signed GitHub deliveries (issues, PRs,
//! workflow runs, deployments over many repositories), as a sender would make them.
//! BENCH_DELIVERIES sets how many per concurrency level (default 4000).

#[path = "support/deliveries.rs"]
mod deliveries;

use deliveries::{Deliveries, SECRET};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use valuestream::config::Config;
use valuestream::engine::Engine;
use valuestream::export::Discard;
use valuestream::http::{router, AppState};
use valuestream::pipeline::Pipeline;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::Store;

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn level(deliveries: Arc<Deliveries>, total: usize, concurrency: usize) {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(Config::from_pairs(&[("VALUESTREAM_GITHUB_SECRET", SECRET)]).unwrap());
    // Exactly as `serve` opens its store: a file, every commit durable.
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let pipeline = Arc::new(Pipeline::new(
        Engine::new(store.clone(), config.clone()),
        Arc::new(Discard),
    ));
    let app = router(AppState {
        pipeline,
        config,
        metrics_endpoint: true,
    });
    // Signed before the clock starts (a sender's work, not ours).
    let requests: Vec<_> = (0..total).map(|i| deliveries.get(i)).collect();
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let fsyncs_before = store.durable_commits();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (app, requests, next) = (app.clone(), requests.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(d) = requests.get(i) else { break };
                let req = d.request();
                let t0 = Instant::now();
                let resp = app.clone().oneshot(req).await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                latencies.push(t0.elapsed());
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    let fsyncs = store.durable_commits() - fsyncs_before;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "c={concurrency:<3} {:>6.0} deliveries/s  p50 {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}  fsyncs/delivery {:.3}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        latencies.last().unwrap(),
        fsyncs as f64 / latencies.len() as f64,
    );
}

fn main() {
    let total: usize = std::env::var("BENCH_DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let deliveries = Arc::new(Deliveries::new());
    println!(
        "{total} distinct deliveries per level (issues, PRs, workflow runs, deployments), embedded store on disk (durable, as serve), exporter discarding"
    );
    rt.block_on(async move {
        for c in [1, 8, 64] {
            level(deliveries.clone(), total, c).await;
        }
    });
    println!("peak RSS: {} MiB", peak_rss_kib() / 1024);
}
