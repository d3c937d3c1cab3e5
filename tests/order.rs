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

use axum::http::HeaderMap;
use common::moto::Moto;
use common::*;
use deliveries::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use valuestream::config::Config;
use valuestream::engine::outbox::Pipeline;
use valuestream::engine::{metrics::Series, Engine};
use valuestream::export::Discard;
use valuestream::model::{FinishedSpan, Input, Time};
use valuestream::sources::{self, Delivery, Translation};
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::{Order, Store};

const EVENTS_TOKEN: &str = "order-events-token";

/// One signed delivery, as a sender would post it.
#[derive(Clone, Debug)]
struct Posted {
    source: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

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

/// splitmix64: a small seeded generator for the scenarios.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn at(t: Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn minutes(m: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::minutes(m)
}

fn config() -> Config {
    Config::from_pairs(&[
        ("VALUESTREAM_GITHUB_SECRET", GITHUB_SECRET),
        ("VALUESTREAM_EVENTS_TOKEN", EVENTS_TOKEN),
        (
            "VALUESTREAM_TEAMS",
            "codertocat/*=checkout,octo-org/*=platform",
        ),
    ])
    .unwrap()
}

fn github(event: &str, id: &str, body: Value) -> Posted {
    let body = serde_json::to_vec(&body).unwrap();
    Posted {
        source: "github",
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-github-event".into(), event.into()),
            ("x-github-delivery".into(), id.into()),
            ("x-hub-signature-256".into(), github_signature(&body)),
        ],
        body,
    }
}

fn event(body: Value) -> Posted {
    Posted {
        source: "events",
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("authorization".into(), format!("Bearer {EVENTS_TOKEN}")),
        ],
        body: serde_json::to_vec(&body).unwrap(),
    }
}

/// The deliveries of scenario `seed`, in event-time order.
fn scenario(seed: u64) -> Vec<Posted> {
    let mut rng = Rng(seed.wrapping_mul(7919).wrapping_add(17));
    let base: Time = "2024-03-01T00:00:00Z".parse().unwrap();
    let mut timed: Vec<(Time, Posted)> = Vec::new();
    let repos = [("Hello-World", hello_world()), ("octo-repo", octo_repo())];
    for (r, (name, repository)) in repos.iter().enumerate() {
        let place = |body: Value| -> Value {
            let mut body = in_repo(body, repository.clone());
            if body.get("workflow_run").is_some() {
                body["workflow_run"]["repository"] = repository.clone();
                body["workflow_run"]["head_repository"] = repository.clone();
            }
            body
        };
        let mut t = base + chrono::TimeDelta::hours(r as i64);
        let changes = rng.range(3, 5);
        let mut failing = false;
        for k in 0..changes {
            let tag = |p: &str| format!("{p}{r}{k}");
            let issue_no = 100 + k as u64;
            let pr_no = 200 + k as u64;
            let t_issue = t + minutes(rng.range(0, 360));
            let t_first = t_issue + minutes(rng.range(10, 60));
            let t_pr = t_first + minutes(rng.range(5, 60));
            let t_run = t_pr + minutes(2);
            let t_run_end = t_run + minutes(rng.range(3, 20));
            let t_merge = t_run_end + minutes(rng.range(10, 120));
            let t_close = t_merge + minutes(rng.range(1, 30));
            let branch = format!("feature/vstrace-github-{name}-{issue_no}/c{k}");
            let merge = tag("m");
            let mut add = |time: Time, p: Posted| timed.push((time, p));
            add(
                t_issue,
                github(
                    "issues",
                    &tag("io"),
                    place(issue("opened", issue_no, &at(t_issue), None, &[])),
                ),
            );
            add(
                t_first,
                github(
                    "push",
                    &tag("pf"),
                    place(push(&branch, &[(&tag("c"), &at(t_first), "work")])),
                ),
            );
            let mut opened = pull_request(pr_no, &branch, &at(t_pr), &at(t_pr), None);
            opened["action"] = json!("opened");
            opened["pull_request"]["state"] = json!("open");
            opened["pull_request"]["closed_at"] = json!(null);
            opened["pull_request"]["merged_at"] = json!(null);
            add(t_pr, github("pull_request", &tag("po"), place(opened)));
            let conclusion = if rng.chance(20) { "failure" } else { "success" };
            let run_id = 5000 + (r * 100) as u64 + k as u64;
            let head = format!("{pr_no}ead");
            let mut requested =
                workflow_run(run_id, &branch, &head, &at(t_run), &at(t_run), conclusion);
            requested["action"] = json!("requested");
            requested["workflow_run"]["status"] = json!("queued");
            requested["workflow_run"]["conclusion"] = json!(null);
            add(t_run, github("workflow_run", &tag("wr"), place(requested)));
            let completed = workflow_run(
                run_id,
                &branch,
                &head,
                &at(t_run),
                &at(t_run_end),
                conclusion,
            );
            add(
                t_run_end,
                github("workflow_run", &tag("wc"), place(completed)),
            );
            let merged = pull_request(pr_no, &branch, &at(t_pr), &at(t_merge), Some(&merge));
            add(t_merge, github("pull_request", &tag("pm"), place(merged)));
            let t_land = t_merge + chrono::TimeDelta::seconds(30);
            add(
                t_land,
                github(
                    "push",
                    &tag("pd"),
                    place(push(
                        "master",
                        &[(
                            &merge,
                            &at(t_land),
                            &format!("Merge pull request #{pr_no} from {branch}"),
                        )],
                    )),
                ),
            );
            add(
                t_close,
                github(
                    "issues",
                    &tag("ic"),
                    place(issue(
                        "closed",
                        issue_no,
                        &at(t_issue),
                        Some(&at(t_close)),
                        &[],
                    )),
                ),
            );
            t = t_merge;
            // Deploy now and then, always after the last change.
            if rng.chance(60) || k == changes - 1 {
                let dep_id = 90_000 + (r * 100) as u64 + k as u64;
                let created = t_land + minutes(rng.range(5, 30));
                let finished = created + minutes(rng.range(2, 15));
                let fails = rng.chance(30) || (r == 0 && k == changes - 1);
                let state = if fails { "failure" } else { "success" };
                let sha = merge.clone();
                add(
                    finished,
                    github(
                        "deployment_status",
                        &tag("ds"),
                        place(deployment_status(
                            dep_id,
                            "production",
                            &sha,
                            &at(created),
                            &at(finished),
                            state,
                        )),
                    ),
                );
                failing = fails;
                let mut after = finished;
                if fails {
                    // The fix: a later deployment of the same commit succeeds.
                    let again = finished + minutes(rng.range(20, 90));
                    add(
                        again + minutes(5),
                        github(
                            "deployment_status",
                            &tag("dr"),
                            place(deployment_status(
                                dep_id + 50,
                                "production",
                                &sha,
                                &at(again),
                                &at(again + minutes(5)),
                                "success",
                            )),
                        ),
                    );
                    after = again + minutes(5);
                    failing = false;
                }
                if rng.chance(40) {
                    let s = after + minutes(3);
                    add(
                        s + minutes(4),
                        github(
                            "deployment_status",
                            &tag("st"),
                            place(deployment_status(
                                dep_id + 70,
                                "staging",
                                &sha,
                                &at(s),
                                &at(s + minutes(4)),
                                "success",
                            )),
                        ),
                    );
                }
                if rng.chance(50) || (r == 1 && k == changes - 1) {
                    let opened = after + minutes(rng.range(10, 120));
                    let resolved = opened + minutes(rng.range(15, 120));
                    let no = 300 + k as u64;
                    add(
                        opened,
                        github(
                            "issues",
                            &tag("xo"),
                            place(issue("opened", no, &at(opened), None, &["incident"])),
                        ),
                    );
                    add(
                        resolved,
                        github(
                            "issues",
                            &tag("xc"),
                            place(issue(
                                "closed",
                                no,
                                &at(opened),
                                Some(&at(resolved)),
                                &["incident"],
                            )),
                        ),
                    );
                }
                t = after;
            }
        }
        assert!(!failing);
    }
    // A third repository that reports through the events API: deployments and incidents.
    let mut t = base + chrono::TimeDelta::hours(3);
    for k in 0..rng.range(2, 4) {
        let started = t + minutes(rng.range(30, 300));
        let finished = started + minutes(rng.range(2, 20));
        let fails = rng.chance(30);
        let item = format!("argocd/api/production/{k}");
        let dep = |id: &str, status: &str, fin: Option<Time>| {
            let mut v = json!({
                "id": id, "kind": "deployment", "item": item, "status": status,
                "name": "api to production", "started_at": at(started),
                "environment": "production", "repository": "acme/api",
                "commit_sha": format!("{:0<40}", format!("a{k}")), "branch": "main",
                "source_system": "argocd",
            });
            if let Some(f) = fin {
                v["finished_at"] = json!(at(f));
            }
            event(v)
        };
        timed.push((started, dep(&format!("api-{k}-started"), "started", None)));
        timed.push((
            finished,
            dep(
                &format!("api-{k}-done"),
                if fails { "failed" } else { "succeeded" },
                Some(finished),
            ),
        ));
        if !fails && rng.chance(50) {
            let opened = finished + minutes(rng.range(5, 60));
            let resolved = opened + minutes(rng.range(10, 90));
            let inc = |id: &str, status: &str, fin: Option<Time>| {
                let mut v = json!({
                    "id": id, "kind": "incident", "item": format!("pager/api/{k}"),
                    "status": status, "name": "api errors", "started_at": at(opened),
                    "repository": "acme/api", "source_system": "pager",
                });
                if let Some(f) = fin {
                    v["finished_at"] = json!(at(f));
                }
                event(v)
            };
            timed.push((opened, inc(&format!("inc-{k}-t"), "triggered", None)));
            timed.push((
                resolved,
                inc(&format!("inc-{k}-r"), "resolved", Some(resolved)),
            ));
        }
        t = finished;
    }
    timed.sort_by_key(|(t, _)| *t);
    timed.into_iter().map(|(_, p)| p).collect()
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
        .query("metric", "", "\u{10ffff}", 100_000, Order::Ascending)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let s: Series = serde_json::from_value(r.data).unwrap();
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
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = app_with(store.clone(), config()).await;
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
    Outcome {
        spans: by_id(spans),
        series: series(store.as_ref()).await,
    }
}

/// Like [`shuffled`], but the clock moves past the settle period after every delivery, so each
/// span is exported with whatever had arrived by then: late facts. Spans may differ from the
/// in-order run's; metric values must not.
async fn settled_each_time(deliveries: &[Translated], order: &[(usize, bool)]) -> Outcome {
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().unwrap());
    let clock = Arc::new(std::sync::Mutex::new(
        "2026-01-01T00:00:00Z".parse::<Time>().unwrap(),
    ));
    let config = Arc::new(config());
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
    let settled = pipeline
        .drain_at(now + chrono::TimeDelta::seconds(config.settle_secs))
        .await
        .unwrap()
        .settled;
    Outcome {
        spans: by_id(settled),
        series: series(store.as_ref()).await,
    }
}

struct Case {
    deliveries: Vec<Translated>,
    expected: Outcome,
}

fn cases(rt: &tokio::runtime::Runtime, seeds: &[u64]) -> Vec<Case> {
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
        for k in ["issue", "change", "pipeline_run", "deployment", "incident"] {
            assert!(kinds.contains(k), "every scenario has a {k}: {kinds:?}");
        }
        let linked = c.expected.spans.values().any(|s| {
            s.links
                .iter()
                .any(|l| l.attributes.get("valuestream.link").is_some())
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

#[test]
fn any_order_of_the_deliveries_gives_the_in_order_result() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases = cases(&rt, &[1, 2, 3, 4]);
    check_scenarios_are_rich(&cases);
    let n: u32 = std::env::var("VALUESTREAM_ORDER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tried = std::sync::atomic::AtomicU32::new(0);
    let result = runner(n).run(&orders(&cases), |(c, order)| {
        tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory().unwrap());
        let got = rt.block_on(shuffled(store, &cases[c].deliveries, &order));
        let diff = cases[c].expected.diff(&got);
        prop_assert!(diff.is_empty(), "scenario {c}, order {order:?}:\n{diff}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let tried = tried.into_inner();
    println!("{tried} permutations (with duplicates) on the embedded store: all {tried} gave the in-order spans and metrics");
    assert!(tried >= n);
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
    let cases = cases(&rt, &[1, 2]);
    let spans_differed = std::sync::atomic::AtomicU32::new(0);
    let tried = std::sync::atomic::AtomicU32::new(0);
    let result = runner(100).run(&orders(&cases), |(c, order)| {
        tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let got = rt.block_on(settled_each_time(&cases[c].deliveries, &order));
        let expected = &cases[c].expected;
        if got.spans != expected.spans {
            spans_differed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        prop_assert_eq!(
            expected.spans.keys().collect::<Vec<_>>(),
            got.spans.keys().collect::<Vec<_>>(),
            "the same spans are exported, once each"
        );
        let diff = Outcome {
            spans: BTreeMap::new(),
            series: expected.series.clone(),
        }
        .diff(&Outcome {
            spans: BTreeMap::new(),
            // A contribution taken back leaves its series at zero: no value, as in order.
            series: got
                .series
                .into_iter()
                .filter(|(_, (count, sum, _))| *count != 0 || *sum != 0)
                .collect(),
        });
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
    let cases = cases(&rt, &[5, 6]);
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
