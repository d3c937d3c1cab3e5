//! Throughput, latency and memory of the webhook pipeline, printed as figures (not a timed test).
//!
//! `cargo bench --bench pipeline` drives the real router in process with the embedded store
//! (on disk, in a temporary directory) and a discarding exporter: for each of N repositories the
//! GitHub sequence issue opened → PR opened → PR merged → issue closed, signed, as a sender would.

use axum::body::Body;
use axum::http::Request;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use valuestream::config::Config;
use valuestream::engine::Engine;
use valuestream::export::Discard;
use valuestream::http::{router, AppState};
use valuestream::pipeline::Pipeline;
use valuestream::sources::verify::hmac_sha256_hex;
use valuestream::store::embedded::EmbeddedStore;

const SECRET: &str = "bench-secret";

fn fixture(rel: &str) -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github")
        .join(rel);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

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

fn main() {
    let repos: usize = std::env::var("BENCH_REPOS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let config =
            Arc::new(Config::from_pairs(&[("VALUESTREAM_GITHUB_SECRET", SECRET)]).unwrap());
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let pipeline = Arc::new(Pipeline::new(
            Engine::new(store, config.clone()),
            Arc::new(Discard),
        ));
        let app = router(AppState {
            pipeline,
            config,
            metrics_endpoint: true,
        });
        let templates = [
            ("issues", fixture("issues/opened.payload.json")),
            ("pull_request", fixture("pull_request/opened.payload.json")),
            ("pull_request", fixture("pull_request/closed.payload.json")),
            ("issues", fixture("issues/closed.derived.payload.json")),
        ];
        let mut latencies: Vec<Duration> = Vec::new();
        let started = Instant::now();
        for r in 0..repos {
            for (i, (event, t)) in templates.iter().enumerate() {
                let mut v = t.clone();
                v["repository"]["full_name"] = serde_json::json!(format!("bench/repo-{r}"));
                if *event == "pull_request" {
                    v["pull_request"]["head"]["ref"] =
                        serde_json::json!(format!("feature/vstrace-github-repo-{r}-1"));
                    if i == 2 {
                        v["pull_request"]["merged"] = serde_json::json!(true);
                        v["pull_request"]["merged_at"] = serde_json::json!("2019-05-15T15:21:18Z");
                    }
                }
                let body = serde_json::to_vec(&v).unwrap();
                let sig = format!("sha256={}", hmac_sha256_hex(SECRET, &body));
                let req = Request::post("/webhooks/github")
                    .header("content-type", "application/json")
                    .header("x-github-event", *event)
                    .header("x-github-delivery", format!("{r}-{i}"))
                    .header("x-hub-signature-256", sig)
                    .body(Body::from(body))
                    .unwrap();
                let t0 = Instant::now();
                let resp = app.clone().oneshot(req).await.unwrap();
                assert!(resp.status().is_success());
                latencies.push(t0.elapsed());
            }
        }
        let total = started.elapsed();
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "deliveries: {} ({} repositories x 4), embedded store on disk, exporter discarding",
            latencies.len(),
            repos
        );
        println!(
            "throughput: {:.0} deliveries/s",
            latencies.len() as f64 / total.as_secs_f64()
        );
        println!(
            "latency: p50 {:?}  p99 {:?}  max {:?}",
            pct(0.50),
            pct(0.99),
            latencies.last().unwrap()
        );
        println!("peak RSS: {} MiB", peak_rss_kib() / 1024);
    });
}
