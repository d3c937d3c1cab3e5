//! `valuestream backfill github` against a zero-latency fake API (issue 26, part 5): API requests
//! per pull request and items per second, printed side by side with baselines from the same run
//! (figures, not a timed test).
//!
//! `cargo bench --bench backfill` (BENCH_BACKFILL_PRS sets the size, default 10,000) serves one
//! repository of N merged pull requests, each opened as a draft, made ready with a review
//! requested, approved in one review and merged as one commit on the default branch, each with
//! one workflow run of one job, and a production deployment with one status every 10
//! (`benches/support/github_api.rs`), and backfills it with the reader `backfill github` runs
//! (100 items a page, 4 requests at once):
//! - **reading only**: the deliveries go to a sink that keeps them and answers at once (the
//!   reader and the API client alone);
//! - **backfill, no state**: into the router and the engine over the embedded store (in memory),
//!   no validators or cursors kept, as `--to` without `--state-dir`;
//! - **backfill**: the same with its validators (ETags) and cursors in that store, as the
//!   command runs by default;
//! - **re-run**: the same command again: 304s, nothing new;
//! - **backfill --no-steps**: the command without reading the pull requests' steps (no GraphQL
//!   request; one per 50 pull requests otherwise), validators and cursors kept;
//! - **baseline, no API**: the deliveries the reading-only run kept, posted straight to a fresh
//!   router and engine: what the pipeline itself costs, the ceiling of any backfill.
//!
//! The targets: at most 1.2 API requests per pull request, and at least 1,000 items per second.

#[path = "support/github_api.rs"]
mod github_api;

use github_api::{Api, REPO, SINCE, TOKEN, UNTIL};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use valuestream::backfill::{github, Client, ClientSettings, Sink, State, Summary};
use valuestream::config::Config;
use valuestream::engine::Engine;
use valuestream::entrypoints::sync::RouterSink;
use valuestream::export::Discard;
use valuestream::pipeline::Pipeline;
use valuestream::replay::Recorded;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::sync::StoreRecords;

/// Keeps every delivery and answers `processed` at once.
#[derive(Default)]
struct Keep(Mutex<Vec<Recorded>>);

#[async_trait::async_trait]
impl Sink for Keep {
    async fn deliver(&self, d: &Recorded) -> anyhow::Result<(u16, String)> {
        self.0.lock().unwrap().push(d.clone());
        Ok((200, r#"{"status":"processed","facts":1}"#.into()))
    }
}

fn client(api: &Api) -> Arc<Client> {
    let mut settings = ClientSettings::new(&api.url(), TOKEN.into(), github::TOKEN_VAR);
    settings.quiet = true;
    Client::new(settings).unwrap()
}

fn options() -> github::Options {
    github::Options::new(
        vec![REPO.into()],
        SINCE.parse().unwrap(),
        Some(UNTIL.parse().unwrap()),
    )
}

fn pipeline() -> (Arc<EmbeddedStore>, Arc<Pipeline>, Arc<Config>) {
    let config = Arc::new(Config::from_pairs(&[]).unwrap());
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let pipeline = Arc::new(Pipeline::new(
        Engine::new(store.clone(), config.clone()),
        Arc::new(Discard),
    ));
    (store, pipeline, config)
}

struct Row {
    what: &'static str,
    requests: Option<u64>,
    not_modified: u64,
    items: u64,
    deliveries: u64,
    secs: f64,
}

fn row(what: &'static str, s: &Summary, secs: f64) -> Row {
    Row {
        what,
        requests: Some(s.requests),
        not_modified: s.not_modified,
        items: s.items.values().sum(),
        deliveries: s.deliveries(),
        secs,
    }
}

fn main() {
    let n: u64 = std::env::var("BENCH_BACKFILL_PRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let built = Instant::now();
        let api = Api::new(n).start().await;
        eprintln!(
            "backfill bench: {n} merged pull requests, {} API items, made in {:.1} s",
            api.items(),
            built.elapsed().as_secs_f64()
        );
        let mut rows = Vec::new();

        // Reading only.
        let keep = Keep::default();
        let t = Instant::now();
        let s = github::run(&client(&api), &options(), &keep).await.unwrap();
        rows.push(row("reading only (sink keeps them)", &s, t.elapsed().as_secs_f64()));
        assert_eq!(s.items["pull_requests"], n, "{s:?}");
        let kept = std::mem::take(&mut *keep.0.lock().unwrap());

        // The backfill into the pipeline, without state.
        let (_store, p, config) = pipeline();
        let sink = RouterSink::new(p, &config);
        let t = Instant::now();
        let s = github::run(&client(&api), &options(), &sink).await.unwrap();
        rows.push(row("backfill, no state kept", &s, t.elapsed().as_secs_f64()));
        assert_eq!(s.refused, 0, "{s:?}");

        // The backfill as the command runs it: validators and cursors in the store.
        let (store, p, config) = pipeline();
        let sink = RouterSink::new(p, &config);
        let records = StoreRecords(store.as_ref());
        let state = State::new(&records, github::SOURCE);
        let t = Instant::now();
        let first = github::run_with(&client(&api), &options(), &sink, &state)
            .await
            .unwrap();
        rows.push(row("backfill (validators and cursors kept)", &first, t.elapsed().as_secs_f64()));
        assert_eq!((first.refused, first.duplicate), (0, 0), "{first:?}");

        // The same command again.
        let t = Instant::now();
        let again = github::run_with(&client(&api), &options(), &sink, &state)
            .await
            .unwrap();
        rows.push(row("re-run of the same command", &again, t.elapsed().as_secs_f64()));
        assert_eq!(again.new_facts, 0, "{again:?}");

        // The command with --no-steps.
        let (store, p, config) = pipeline();
        let sink = RouterSink::new(p, &config);
        let records = StoreRecords(store.as_ref());
        let state = State::new(&records, github::SOURCE);
        let mut no_reviews = options();
        no_reviews.reviews = false;
        let t = Instant::now();
        let s = github::run_with(&client(&api), &no_reviews, &sink, &state)
            .await
            .unwrap();
        rows.push(row("backfill --no-steps (validators and cursors kept)", &s, t.elapsed().as_secs_f64()));
        assert_eq!(s.refused, 0, "{s:?}");

        // Baseline: the same deliveries straight to the router, no API.
        let (_store, p, config) = pipeline();
        let sink = RouterSink::new(p, &config);
        let t = Instant::now();
        let mut s = Summary::default();
        valuestream::backfill::deliver_all(&sink, &kept, &mut s).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        rows.push(Row {
            what: "baseline: its deliveries posted to the router, no API",
            requests: None,
            not_modified: 0,
            items: first.items.values().sum(),
            deliveries: s.deliveries(),
            secs,
        });
        assert_eq!(s.refused, 0);

        println!(
            "\nbackfill github, {n} merged pull requests (each with its merge commit, ready for review, a review requested, one review, one run of one job; a deployment with one status every 10), zero-latency fake, 100 a page, 4 requests at once:\n"
        );
        println!("| run | API requests | per PR | 304s | items | deliveries | s | items/s | deliveries/s |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for r in &rows {
            let (req, per) = match r.requests {
                Some(q) => (q.to_string(), format!("{:.3}", q as f64 / n as f64)),
                None => ("–".into(), "–".into()),
            };
            println!(
                "| {} | {req} | {per} | {} | {} | {} | {:.2} | {:.0} | {:.0} |",
                r.what,
                r.not_modified,
                r.items,
                r.deliveries,
                r.secs,
                r.items as f64 / r.secs,
                r.deliveries as f64 / r.secs
            );
        }
        let per_pr = first.requests as f64 / n as f64;
        let items_s = rows[2].items as f64 / rows[2].secs;
        println!(
            "\ntargets: requests per pull request {per_pr:.3} (≤ 1.2: {}), items per second {items_s:.0} (≥ 1,000: {})",
            if per_pr <= 1.2 { "met" } else { "missed" },
            if items_s >= 1000.0 { "met" } else { "missed" }
        );
    });
}
