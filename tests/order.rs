//! Order never matters: spans and every metric value are a function of the *set* of deliveries.
//!
//! A seeded generator writes scenarios (three repositories; issues, pull requests, pushes to
//! feature branches and to the default branch, workflow runs, production and staging
//! deployments with failures and recoveries, incidents; GitHub and the generic events API).
//! The reference is the in-order run through the real router, settled after every delivery
//! (what `serve` does with `VALUESTREAM_SETTLE_SECS=0`). Then proptest (seeded, shrinking) draws
//! permutations of the same deliveries with duplicates mixed in (the same delivery ID again, and
//! the same body under a new ID), applies them on a clock that does not move, settles once the
//! settle period has passed, and requires the same spans (IDs, parents, links, attributes, times)
//! and the same value of every metric series. A failing case shrinks to a minimal order.
//!
//! `VALUESTREAM_ORDER_CASES` sets the number of permutations on the embedded store (default
//! 1000); the DynamoDB run (moto) takes 50.

mod common;
#[path = "fixtures/metrics/deliveries.rs"]
mod deliveries;
#[path = "fixtures/order_scenario.rs"]
mod order_scenario;

use axum::http::HeaderMap;
use common::moto::Moto;
use common::*;
use order_scenario::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};

use std::collections::BTreeMap;
use std::sync::Arc;
use valuestream::config::Config;
use valuestream::engine::{metrics::Series, Engine};
use valuestream::export::Discard;
use valuestream::model::attr;
use valuestream::model::{FinishedSpan, Input, Time};
use valuestream::pipeline::Pipeline;
use valuestream::sources::{self, Delivery, Translation};
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::memory::MemoryStore;
use valuestream::store::{Order, Store};

/// A delivery translated once: what the pipeline is given.
#[derive(Clone, Debug)]
struct Translated {
    source: &'static str,
    id: String,
    inputs: Vec<Input>,
}

/// What a run produced: the settled spans by span ID, and every series' value.
#[derive(Debug, PartialEq)]
struct Outcome {
    spans: BTreeMap<String, FinishedSpan>,
    series: BTreeMap<String, (u64, i64, Vec<u64>)>,
}

impl Outcome {
    /// A short account of how `self` differs from `other`.
    fn diff(&self, other: &Outcome) -> String {
        let mut out = Vec::new();
        for (id, s) in &self.spans {
            match other.spans.get(id) {
                None => out.push(format!("span {} ({id}) missing", s.name)),
                Some(o) if o != s => out.push(format!(
                    "span {} differs:\n  expected {s:?}\n  got      {o:?}",
                    s.name
                )),
                _ => {}
            }
        }
        for (id, s) in &other.spans {
            if !self.spans.contains_key(id) {
                out.push(format!("extra span {} ({id})", s.name));
            }
        }
        for (k, v) in &self.series {
            if other.series.get(k) != Some(v) {
                out.push(format!(
                    "series {k}: expected {v:?}, got {:?}",
                    other.series.get(k)
                ));
            }
        }
        for k in other.series.keys() {
            if !self.series.contains_key(k) {
                out.push(format!("extra series {k}"));
            }
        }
        out.join("\n")
    }
}

fn header_map(headers: &[(String, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

fn translate(p: &Posted, config: &Config) -> Translated {
    let src = sources::by_name(p.source).unwrap();
    let headers = header_map(&p.headers);
    let d = Delivery {
        headers: &headers,
        query: None,
        body: &p.body,
    };
    src.authenticate(&d, config).unwrap();
    let t = src.translate(&d, config).unwrap();
    let Translation::Inputs(inputs) = t.translation else {
        panic!("scenario deliveries are all used: {:?}", t.translation)
    };
    Translated {
        source: src.name(),
        id: t.delivery_id,
        inputs,
    }
}

async fn series(store: &dyn Store) -> BTreeMap<String, (u64, i64, Vec<u64>)> {
    store
        .query(
            "metric",
            valuestream::store::KeyRange::all(),
            100_000,
            Order::Ascending,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let s: Series = r.data.decode().unwrap();
            (r.key.sk, (s.count, s.sum_ms, s.buckets))
        })
        .collect()
}

fn by_id(spans: Vec<FinishedSpan>) -> BTreeMap<String, FinishedSpan> {
    let mut out = BTreeMap::new();
    for s in spans {
        assert!(
            out.insert(s.span_id.clone(), s.clone()).is_none(),
            "span {} settled twice",
            s.name
        );
    }
    out
}

/// The reference: every delivery in event-time order through the real router, settled right
/// after each one.
async fn in_order(posted: &[Posted]) -> Outcome {
    in_order_with(posted, config()).await.0
}

/// [`in_order`] under `config`, with the store it ran on.
async fn in_order_with(posted: &[Posted], config: Config) -> (Outcome, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().unwrap());
    let (outcome, _) = in_order_on(posted, config, store.clone()).await;
    (outcome, store)
}

/// [`in_order`] under `config` on `store`, with the engine's reads of sealed history
/// ([`Engine::history_reads`]).
async fn in_order_on(
    posted: &[Posted],
    config: Config,
    store: Arc<dyn Store>,
) -> (Outcome, (u64, u64)) {
    let app = app_with(store.clone(), config).await;
    app.set_auto_drain(false);
    let mut spans = Vec::new();
    for p in posted {
        let headers: Vec<(&str, &str)> = p
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (s, b) = app.post(p.source, &headers, p.body.clone()).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["status"], "processed", "{b}");
        spans.extend(app.pipeline.drain_all().await.unwrap().settled);
    }
    let outcome = Outcome {
        spans: by_id(spans),
        series: series(store.as_ref()).await,
    };
    (outcome, app.pipeline.engine.history_reads())
}

/// Like [`shuffled`], but the clock moves past the settle period after every delivery, so each
/// span is exported with whatever had arrived by then: late facts. Spans may differ from the
/// in-order run's; metric values must not.
async fn settled_each_time(deliveries: &[Translated], order: &[(usize, bool)]) -> Outcome {
    settled_each_time_with(deliveries, order, config()).await
}

/// [`settled_each_time`] under `config`.
async fn settled_each_time_with(
    deliveries: &[Translated],
    order: &[(usize, bool)],
    config: Config,
) -> Outcome {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().unwrap());
    let clock = Arc::new(std::sync::Mutex::new(
        "2026-01-01T00:00:00Z".parse::<Time>().unwrap(),
    ));
    let config = Arc::new(config);
    let c = clock.clone();
    let engine =
        Engine::new(store.clone(), config.clone()).with_clock(Arc::new(move || *c.lock().unwrap()));
    let pipeline = Pipeline::new(engine, Arc::new(Discard));
    let mut spans = Vec::new();
    for (i, renamed) in order {
        let d = &deliveries[*i];
        let id = if *renamed {
            format!("{}-again", d.id)
        } else {
            d.id.clone()
        };
        pipeline.deliver(d.source, &id, &d.inputs).await.unwrap();
        let later = *clock.lock().unwrap() + chrono::TimeDelta::seconds(config.settle_secs + 1);
        *clock.lock().unwrap() = later;
        spans.extend(pipeline.drain().await.unwrap().settled);
    }
    Outcome {
        spans: by_id(spans),
        series: series(store.as_ref()).await,
    }
}

/// `order` of the translated deliveries (indexes, repeats allowed; `renamed` ones under a new
/// delivery ID) on a clock that stands still, then one settle after the settle period.
async fn shuffled(
    store: Arc<dyn Store>,
    deliveries: &[Translated],
    order: &[(usize, bool)],
) -> Outcome {
    let now: Time = "2026-01-01T00:00:00Z".parse().unwrap();
    let config = Arc::new(config());
    let engine = Engine::new(store.clone(), config.clone()).with_clock(Arc::new(move || now));
    let pipeline = Pipeline::new(engine, Arc::new(Discard));
    for (i, renamed) in order {
        let d = &deliveries[*i];
        let id = if *renamed {
            format!("{}-again", d.id)
        } else {
            d.id.clone()
        };
        pipeline.deliver(d.source, &id, &d.inputs).await.unwrap();
    }
    // Drains as serve and the Lambda do: again at once while a budget ran out (a repository
    // that takes longer than the settle budget, on a slow store, goes on in the next drain).
    let horizon = now + chrono::TimeDelta::seconds(config.settle_secs);
    let mut drained = pipeline.drain_at(horizon).await.unwrap();
    while drained.cut_short() {
        drained = drained.then(pipeline.drain_at(horizon).await.unwrap());
    }
    assert!(drained.put_aside.is_empty(), "{:?}", drained.put_aside);
    let settled = drained.settled;
    Outcome {
        spans: by_id(settled),
        series: series(store.as_ref()).await,
    }
}

struct Case {
    deliveries: Vec<Translated>,
    expected: Outcome,
}

fn cases_of(rt: &tokio::runtime::Runtime, seeds: &[u64]) -> Vec<Case> {
    let config = config();
    seeds
        .iter()
        .map(|seed| {
            let posted = scenario(*seed);
            let expected = rt.block_on(in_order(&posted));
            Case {
                deliveries: posted.iter().map(|p| translate(p, &config)).collect(),
                expected,
            }
        })
        .collect()
}

/// A scenario, an order of its deliveries, and duplicates: `(index, under a new ID)`.
fn orders(cases: &[Case]) -> impl Strategy<Value = (usize, Vec<(usize, bool)>)> {
    let sizes: Vec<usize> = cases.iter().map(|c| c.deliveries.len()).collect();
    (0..sizes.len()).prop_flat_map(move |c| {
        let n = sizes[c];
        (
            Just(c),
            proptest::collection::vec((0..n, any::<bool>()), 0..6),
        )
            .prop_flat_map(move |(c, dups)| {
                let mut all: Vec<(usize, bool)> = (0..n).map(|i| (i, false)).collect();
                all.extend(dups);
                (Just(c), Just(all).prop_shuffle())
            })
    })
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new_with_rng(
        PropConfig {
            cases,
            failure_persistence: None,
            ..PropConfig::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

fn check_scenarios_are_rich(cases: &[Case]) {
    for c in cases {
        let kinds: std::collections::BTreeSet<String> = c
            .expected
            .spans
            .values()
            .map(|s| s.kind.as_str().to_string())
            .collect();
        for k in [
            "issue",
            "change",
            "pipeline_run",
            "task",
            "deployment",
            "incident",
        ] {
            assert!(kinds.contains(k), "every scenario has a {k}: {kinds:?}");
        }
        let linked = c.expected.spans.values().any(|s| {
            s.links
                .iter()
                .any(|l| l.attributes.get("valuestream.link") == Some(&"shipped".into()))
                && s.kind.as_str() == "deployment"
        });
        assert!(linked, "deployments ship changes");
        for m in [
            "valuestream.change.lead_time",
            "valuestream.change_failures",
            "valuestream.time_to_restore",
            "valuestream.deployment.recovery_time",
        ] {
            assert!(
                c.expected.series.keys().any(|k| k.starts_with(m)),
                "the scenario exercises {m}"
            );
        }
    }
}

/// Runs `cases` permutations of the scenarios `seeds`, alternately on the embedded store (redb, in
/// memory) and on the in-memory store, so both answer every scenario the same way.
fn embedded_property(seeds: &[u64], cases: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases_ = cases_of(&rt, seeds);
    check_scenarios_are_rich(&cases_);
    let tried = std::sync::atomic::AtomicU32::new(0);
    let result = runner(cases).run(&orders(&cases_), |(c, order)| {
        let n = tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (kind, store): (&str, Arc<dyn Store>) = if n.is_multiple_of(2) {
            ("embedded", Arc::new(EmbeddedStore::in_memory().unwrap()))
        } else {
            ("memory", Arc::new(MemoryStore::new()))
        };
        let got = rt.block_on(shuffled(store, &cases_[c].deliveries, &order));
        let diff = cases_[c].expected.diff(&got);
        prop_assert!(
            diff.is_empty(),
            "scenario {c}, {kind} store, order {order:?}:\n{diff}"
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let tried = tried.into_inner();
    println!("scenarios {seeds:?}: {tried} permutations (with duplicates) on the embedded store, all {tried} gave the in-order spans and metrics");
    assert!(tried >= cases);
}

/// Permutations per test: two tests of two scenarios each, so the 1,000 run on both cores.
/// `VALUESTREAM_ORDER_CASES` sets the total.
fn half_of_the_cases() -> u32 {
    std::env::var("VALUESTREAM_ORDER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000u32)
        .div_ceil(2)
}

#[test]
fn any_order_of_the_deliveries_gives_the_in_order_result() {
    embedded_property(&[1, 2], half_of_the_cases());
}

#[test]
fn any_order_of_other_deliveries_gives_the_in_order_result() {
    embedded_property(&[3, 4], half_of_the_cases());
}

/// How `got`'s series differ from `expected`'s. A contribution taken back leaves its series at
/// zero: no value, as in order.
fn series_diff(expected: &Outcome, got: Outcome) -> String {
    Outcome {
        spans: BTreeMap::new(),
        series: expected.series.clone(),
    }
    .diff(&Outcome {
        spans: BTreeMap::new(),
        series: got
            .series
            .into_iter()
            .filter(|(_, (count, sum, _))| *count != 0 || *sum != 0)
            .collect(),
    })
}

/// Without the settle period (every span exported as soon as it closes), a fact that arrives
/// after its span was exported cannot change that span; but every metric still converges on the
/// in-order value, because the ledger takes the difference.
#[test]
fn late_facts_still_correct_every_metric() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases = cases_of(&rt, &[1, 2]);
    let spans_differed = std::sync::atomic::AtomicU32::new(0);
    let tried = std::sync::atomic::AtomicU32::new(0);
    let result = runner(100).run(&orders(&cases), |(c, order)| {
        tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let got = rt.block_on(settled_each_time(&cases[c].deliveries, &order));
        let expected = &cases[c].expected;
        if got.spans != expected.spans {
            spans_differed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // A change's stage spans are what was known when the change (or the deployment that
        // shipped it) was exported: without a settle period, a review that arrives after the
        // merge was exported leaves its pickup and review stages out (docs/metrics.md "Change
        // stages"); the stage histogram converges like every metric, checked below.
        let work_items = |o: &Outcome| -> Vec<String> {
            o.spans
                .iter()
                .filter(|(_, s)| !s.attributes.contains_key(attr::CHANGE_STAGE))
                .map(|(id, _)| id.clone())
                .collect()
        };
        prop_assert_eq!(
            work_items(expected),
            work_items(&got),
            "the same work-item spans are exported, once each"
        );
        let diff = series_diff(expected, got);
        prop_assert!(diff.is_empty(), "scenario {c}, order {order:?}:\n{diff}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (tried, differed) = (tried.into_inner(), spans_differed.into_inner());
    println!("{tried} orders settled after every delivery: metrics equal in all {tried}; spans differed in {differed} (late facts, as documented)");
    // The settle period is what makes spans order-independent: without it, shuffles show.
    assert!(
        differed > 0,
        "shuffles without a settle period change some spans"
    );
}

#[test]
fn any_order_gives_the_in_order_result_on_dynamodb() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cases = cases_of(&rt, &[5, 6]);
    let moto = rt.block_on(Moto::start());
    let tried = std::sync::atomic::AtomicU32::new(0);
    let result = runner(50).run(&orders(&cases), |(c, order)| {
        tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let got = rt.block_on(async {
            let store: Arc<dyn Store> = Arc::new(moto.store().await);
            shuffled(store, &cases[c].deliveries, &order).await
        });
        let diff = cases[c].expected.diff(&got);
        prop_assert!(diff.is_empty(), "scenario {c}, order {order:?}:\n{diff}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    println!(
        "{} permutations on DynamoDB (moto): all gave the in-order result",
        tried.into_inner()
    );
}

/// Every delivery in event-time order, settled right after each one (as [`in_order`]), on a
/// settle clock that moves ten minutes a delivery: what a checkpoint was written after is told
/// apart from what was written before it. With the engine's reads of sealed history.
async fn in_order_clocked(
    deliveries: &[Translated],
    config: Config,
    store: Arc<dyn Store>,
) -> (Outcome, (u64, u64)) {
    let clock = Arc::new(std::sync::Mutex::new(
        "2026-01-01T00:00:00Z".parse::<Time>().unwrap(),
    ));
    let c = clock.clone();
    let engine = Engine::new(store.clone(), Arc::new(config))
        .with_clock(Arc::new(move || *c.lock().unwrap()));
    let pipeline = Pipeline::new(engine, Arc::new(Discard));
    let mut spans = Vec::new();
    for d in deliveries {
        pipeline.deliver(d.source, &d.id, &d.inputs).await.unwrap();
        let later = *clock.lock().unwrap() + chrono::TimeDelta::minutes(10);
        *clock.lock().unwrap() = later;
        spans.extend(pipeline.drain_all().await.unwrap().settled);
    }
    let outcome = Outcome {
        spans: by_id(spans),
        series: series(store.as_ref()).await,
    };
    (outcome, pipeline.engine.history_reads())
}

/// Records in a store's sealed partitions (summaries and pushes) of the repositories `outcome`'s
/// spans name.
async fn sealed_records(store: &dyn Store, outcome: &Outcome) -> usize {
    let repos: std::collections::BTreeSet<String> = outcome
        .spans
        .values()
        .filter_map(|s| s.attributes.get(attr::REPOSITORY))
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert!(!repos.is_empty(), "the spans name their repositories");
    let mut n = 0;
    for repo in repos {
        let scope = valuestream::engine::keys::Scope::Repo(repo);
        for pk in valuestream::engine::keys::sealed_partitions(&scope) {
            let records = store
                .query(
                    &pk,
                    valuestream::store::KeyRange::all(),
                    usize::MAX,
                    Order::Ascending,
                )
                .await
                .unwrap();
            n += records
                .iter()
                .filter(|r| r.key.sk.starts_with("s#") || r.key.sk.starts_with("p#"))
                .count();
        }
    }
    n
}

/// Sealed history (docs/ARCHITECTURE.md "Sealed history"): settled in order with every record
/// sealed as soon as it can be (`VALUESTREAM_SEAL_AFTER_SECS` 0, and an hour), each scenario
/// gives the spans and series it gives with nothing sealed (a year); settled after every
/// delivery in random orders (late facts reaching before the cut: the whole history is read),
/// every metric is the in-order value.
#[test]
fn sealed_history_gives_the_result_of_the_whole_history() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A short incident window: a production success stays live while an incident can follow it.
    let window = ("VALUESTREAM_INCIDENT_WINDOW_HOURS", "2");
    let unsealed = config_with(&[("VALUESTREAM_SEAL_AFTER_SECS", "315360000"), window]);
    let seeds = [1u64, 2, 3, 4, 5, 6];
    let mut cases = Vec::new();
    for seed in seeds {
        let posted = scenario(seed);
        let (expected, store) = rt.block_on(in_order_with(&posted, unsealed.clone()));
        assert_eq!(rt.block_on(sealed_records(store.as_ref(), &expected)), 0);
        let deliveries: Vec<Translated> = posted.iter().map(|p| translate(p, &unsealed)).collect();
        for lag in ["0", "3600"] {
            let config = config_with(&[("VALUESTREAM_SEAL_AFTER_SECS", lag), window]);
            let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().unwrap());
            let (got, (bounded, whole)) =
                rt.block_on(in_order_clocked(&deliveries, config, store.clone()));
            let sealed = rt.block_on(sealed_records(store.as_ref(), &got));
            assert!(
                sealed > 20,
                "seed {seed}, lag {lag}: only {sealed} records sealed"
            );
            // Most settlements read from the checkpoint, not the whole history.
            assert!(
                bounded > 2 * whole,
                "seed {seed}, lag {lag}: {bounded} bounded reads, {whole} whole"
            );
            let diff = expected.diff(&got);
            assert!(
                diff.is_empty(),
                "seed {seed}, sealed after {lag} s:\n{diff}"
            );
            println!("seed {seed}, sealed after {lag} s: {sealed} records sealed, {bounded} bounded reads and {whole} whole; same spans and series");
        }
        if seed == 1 {
            // The same on DynamoDB (moto): its conditions, batches and keys.
            let moto = rt.block_on(Moto::start());
            let store: Arc<dyn Store> = Arc::new(rt.block_on(moto.store()));
            let config = config_with(&[("VALUESTREAM_SEAL_AFTER_SECS", "0"), window]);
            let (got, (bounded, _)) = rt.block_on(in_order_on(&posted, config, store.clone()));
            assert!(rt.block_on(sealed_records(store.as_ref(), &got)) > 20);
            assert!(bounded > 20, "{bounded} bounded reads on DynamoDB");
            let diff = expected.diff(&got);
            assert!(diff.is_empty(), "seed {seed}, sealed on DynamoDB:\n{diff}");
        }
        cases.push(Case {
            deliveries,
            expected,
        });
    }
    let sealing = config_with(&[("VALUESTREAM_SEAL_AFTER_SECS", "0"), window]);
    let result = runner(60).run(&orders(&cases), |(c, order)| {
        let got = rt.block_on(settled_each_time_with(
            &cases[c].deliveries,
            &order,
            sealing.clone(),
        ));
        let diff = series_diff(&cases[c].expected, got);
        prop_assert!(diff.is_empty(), "scenario {c}, order {order:?}:\n{diff}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
