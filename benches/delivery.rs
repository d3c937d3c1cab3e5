//! Processing per delivery, in memory, against its floor (criterion).
//!
//! - `floor/hmac+parse`: HMAC-SHA256 of the body and a `serde_json` parse of it — what any
//!   receiver that verifies and reads a delivery must do.
//! - `router/in-memory`: the whole request through the real router (authenticate, translate, the
//!   engine's transaction on the in-memory store, the answer), each iteration a new distinct
//!   delivery of the same mix (issues, PRs, workflow runs, deployments).
//! - `router/redb-in-memory`: the same on the embedded store's engine (redb) kept in memory: what
//!   redb's transactions add, without a disk (`benches/pipeline.rs` measures `serve`'s disk).
//!
//! Both run over the same bodies (scripts/bench/deliveries.py makes the same for the load test).

#[path = "support/deliveries.rs"]
mod deliveries;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use deliveries::{Deliveries, SECRET};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use tower::ServiceExt;
use valuestream::config::Config;
use valuestream::engine::Engine;
use valuestream::export::Discard;
use valuestream::http::{router, AppState};
use valuestream::pipeline::Pipeline;
use valuestream::sources::verify::hmac_sha256_hex;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::memory::MemoryStore;
use valuestream::store::Store;

fn per_delivery(c: &mut Criterion) {
    let deliveries = Deliveries::new();
    let mut group = c.benchmark_group("per_delivery");
    group.throughput(Throughput::Elements(1));

    // The floor, over one full sequence of bodies of many repositories.
    let bodies: Vec<Vec<u8>> = (0..deliveries.per_repository() * 16)
        .map(|i| deliveries.get(i).body)
        .collect();
    let next = Cell::new(0usize);
    group.bench_function("floor/hmac+parse", |b| {
        b.iter(|| {
            let i = next.get();
            next.set((i + 1) % bodies.len());
            let body = &bodies[i];
            let sig = hmac_sha256_hex(SECRET, body);
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            black_box((sig, v))
        })
    });

    // The router, in memory, a new distinct delivery every iteration.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stores: [(&str, Arc<dyn Store>); 2] = [
        ("router/in-memory", Arc::new(MemoryStore::new())),
        (
            "router/redb-in-memory",
            Arc::new(EmbeddedStore::in_memory().unwrap()),
        ),
    ];
    for (name, store) in stores {
        router_bench(&mut group, &rt, &deliveries, name, store);
    }
    group.finish();
}

fn router_bench(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    deliveries: &Deliveries,
    name: &str,
    store: Arc<dyn Store>,
) {
    let config = Arc::new(Config::from_pairs(&[("VALUESTREAM_GITHUB_SECRET", SECRET)]).unwrap());
    let pipeline = Arc::new(Pipeline::new(
        Engine::new(store, config.clone()),
        Arc::new(Discard),
    ));
    let app = router(AppState {
        pipeline,
        config,
        metrics_endpoint: false,
    });
    let n = Cell::new(0usize);
    group.bench_function(name, |b| {
        b.to_async(rt).iter_batched(
            || {
                let i = n.get();
                n.set(i + 1);
                deliveries.get(i).request()
            },
            |req| {
                let app = app.clone();
                async move {
                    let resp = app.oneshot(req).await.unwrap();
                    assert!(resp.status().is_success(), "{}", resp.status());
                    resp
                }
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, per_delivery);
criterion_main!(benches);
