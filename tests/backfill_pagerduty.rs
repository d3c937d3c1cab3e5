//! `valuestream backfill pagerduty` against a small fake of PagerDuty's REST API
//! (`tests/common/fake_pagerduty.rs`: documented shapes, classic `limit`/`offset`/`more`
//! pagination, the 10,000 offset cap, a 429 with `Retry-After`, a 502, a 401).
//!
//! The core property: the scenario's incidents delivered (a) as the v3 webhooks PagerDuty sent,
//! (b) as a backfill, (c) half as webhooks and the rest healed by a backfill, (d) a backfill and
//! then every webhook late give the same spans and `/metrics` series; a second backfill adds
//! nothing.

mod common;
#[path = "common/fake_github.rs"]
#[allow(unused_imports)]
mod fake_github;
#[path = "common/fake_pagerduty.rs"]
mod fake_pagerduty;

use axum::http::StatusCode;
use common::stuck::Stuck;
use common::*;
use fake_github::{diff, facts, settle};
use fake_pagerduty::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use valuestream::backfill::{pagerduty, Client, Sink, State, Summary};
use valuestream::replay::Recorded;
use valuestream::sources::verify::hmac_sha256_hex;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::Store;
use valuestream::sync::StoreRecords;

fn v1(body: &[u8]) -> String {
    format!("v1={}", hmac_sha256_hex(SECRET, body))
}

/// The router as the backfill's sink, every delivery signed as `replay` signs unsigned ones.
struct RouterSink<'a>(&'a App);

#[async_trait::async_trait]
impl Sink for RouterSink<'_> {
    async fn deliver(&self, d: &Recorded) -> anyhow::Result<(u16, String)> {
        assert_eq!(d.source, "pagerduty");
        let sig = v1(&d.body);
        let headers = [
            ("content-type", "application/json"),
            ("x-pagerduty-signature", sig.as_str()),
        ];
        let (status, v) = self.0.post("pagerduty", &headers, d.body.clone()).await;
        Ok((status.as_u16(), v.to_string()))
    }
}

async fn new_app_on(store: Arc<dyn Store>) -> App {
    let app = app_with(
        store,
        test_config(&[("VALUESTREAM_PAGERDUTY_SECRET", SECRET)]),
    )
    .await;
    app.set_auto_drain(false);
    app
}

async fn new_app() -> App {
    new_app_on(Arc::new(EmbeddedStore::in_memory().unwrap())).await
}

async fn post_hooks(app: &App, hooks: &[Hook]) {
    for (id, body) in hooks {
        let body = serde_json::to_vec(body).unwrap();
        let sig = v1(&body);
        let (status, v) = app
            .post(
                "pagerduty",
                &[
                    ("content-type", "application/json"),
                    ("x-pagerduty-signature", &sig),
                ],
                body,
            )
            .await;
        assert!(
            status == StatusCode::OK || status == StatusCode::ACCEPTED,
            "{id}: {v}"
        );
    }
}

fn client(url: &str, token: &str, page_size: u32) -> Arc<Client> {
    let mut settings = pagerduty::settings(url, token.into());
    settings.page_size = page_size;
    settings.concurrency = 2;
    settings.backoff = Duration::from_millis(50);
    Client::new(settings).unwrap()
}

/// Until the end of March: one list window (the default, now, would be several of 180 days).
fn options() -> pagerduty::Options {
    pagerduty::Options::new(
        vec![SERVICE.into()],
        SINCE.parse().unwrap(),
        Some("2024-04-01T00:00:00Z".parse().unwrap()),
    )
}

async fn backfill(app: &App, client: &Arc<Client>) -> anyhow::Result<Summary> {
    pagerduty::run(client, &options(), &RouterSink(app)).await
}

async fn webhooks_only() -> fake_github::Result {
    let app = new_app().await;
    post_hooks(&app, &webhooks(&scenario())).await;
    settle(&app, &mut BTreeMap::new()).await
}

#[tokio::test]
async fn webhooks_backfill_and_webhooks_healed_by_backfill_give_the_same_spans_and_series() {
    let hooks_store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(hooks_store.clone()).await;
    let hooks = webhooks(&scenario());
    post_hooks(&app, &hooks).await;
    let reference = settle(&app, &mut BTreeMap::new()).await;
    let names: Vec<&str> = reference.spans.values().map(|s| s.name.as_str()).collect();
    // #2 once, #3 twice (resolved too early, then reopened); #4 is still open; #5 is another
    // service's, #1 before the window.
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("INCIDENT #2 "))
            .count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("INCIDENT #3 "))
            .count(),
        2,
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("INCIDENT #5") || n.starts_with("INCIDENT #1 ")),
        "{names:?}"
    );
    assert!(
        reference
            .metrics
            .iter()
            .any(|l| l.contains("time_to_restore")),
        "{:#?}",
        reference.metrics
    );
    let two = reference
        .spans
        .values()
        .find(|s| s.name.starts_with("INCIDENT #2 "))
        .unwrap();
    assert_eq!(
        two.end.to_rfc3339(),
        "2024-03-10T15:47:40+00:00",
        "to the second"
    );
    assert_eq!(two.events.len(), 1, "{two:?}");

    // (b) backfill only, pages of 2.
    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 2))
        .await
        .unwrap();
    let only = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(
        reference,
        only,
        "backfill only:\n{}",
        diff(&reference, &only)
    );
    // Not only the same spans: the very same facts.
    assert_eq!(facts(&hooks_store), facts(&store));
    assert_eq!(summary.items["incidents"], 3, "{summary:?}");
    assert_eq!(summary.items["log_entries"], 13, "{summary:?}");
    // 2 + 4 (triggered, resolved, reopened, acknowledged, resolved: 5) + 2.
    assert_eq!(summary.processed, 3 + 5 + 2, "{summary:?}");
    assert_eq!(
        summary.duplicate + summary.refused + summary.ignored,
        0,
        "{summary:?}"
    );
    eprintln!("{}", summary.lines());

    // (c) every other webhook, then the backfill heals the rest.
    let half: Vec<Hook> = hooks.iter().step_by(2).cloned().collect();
    let app = new_app().await;
    post_hooks(&app, &half).await;
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    let mixed = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(
        reference,
        mixed,
        "half webhooks, then backfill:\n{}",
        diff(&reference, &mixed)
    );
    assert!(
        summary.new_facts > 0 && summary.new_facts < summary.processed,
        "{summary:?}"
    );

    // (d) the backfill, then every webhook late (their occurred_at to the millisecond).
    let app = new_app().await;
    backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    post_hooks(&app, &hooks).await;
    let late = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(
        reference,
        late,
        "backfill, then webhooks:\n{}",
        diff(&reference, &late)
    );
}

#[tokio::test]
async fn any_split_of_webhooks_around_a_backfill_gives_the_same_result() {
    let reference = webhooks_only().await;
    let fake = Fake::start(scenario(), vec![]).await;
    let hooks = webhooks(&scenario());
    for seed in 1..=4u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for h in &hooks {
            match rng.u8(0..4) {
                0 => before.push(h.clone()),
                1 => after.push(h.clone()),
                2 => {
                    before.push(h.clone());
                    after.push(h.clone());
                }
                _ => {}
            }
        }
        rng.shuffle(&mut before);
        rng.shuffle(&mut after);
        let app = new_app().await;
        post_hooks(&app, &before).await;
        backfill(&app, &client(&fake.url(), TOKEN, 3))
            .await
            .unwrap();
        post_hooks(&app, &after).await;
        let got = settle(&app, &mut BTreeMap::new()).await;
        assert_eq!(reference, got, "seed {seed}:\n{}", diff(&reference, &got));
    }
}

#[tokio::test]
async fn a_second_backfill_adds_nothing() {
    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    let mut spans = BTreeMap::new();
    let first = backfill(&app, &client(&fake.url(), TOKEN, 3))
        .await
        .unwrap();
    let once = settle(&app, &mut spans).await;
    assert_eq!(first.processed, 10, "{first:?}");
    let second = backfill(&app, &client(&fake.url(), TOKEN, 3))
        .await
        .unwrap();
    assert_eq!(
        (second.duplicate, second.processed),
        (first.deliveries(), 0),
        "every delivery is answered duplicate: {second:?}"
    );
    let twice = settle(&app, &mut spans).await;
    assert_eq!(once, twice, "{}", diff(&once, &twice));
}

#[tokio::test]
async fn pages_a_429_with_retry_after_and_a_502_are_followed() {
    let faults = vec![
        ("/incidents", 2, Fault::Limited),
        ("/log_entries", 1, Fault::BadGateway),
    ];
    let fake = Fake::start(scenario(), faults).await;
    let app = new_app().await;
    let started = Instant::now();
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 1))
        .await
        .unwrap();
    let got = settle(&app, &mut BTreeMap::new()).await;
    let reference = webhooks_only().await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
    let seen = fake.seen();
    for s in &seen {
        assert_eq!(
            s.accept, "application/vnd.pagerduty+json;version=2",
            "{s:?}"
        );
        assert!(s.query.contains("limit=1&offset="), "{s:?}");
    }
    // 3 incidents of the service in the window, one a page (the 4th page is empty: `more`
    // was true on the 3rd), plus the 429 answered once and asked again a second later.
    let incidents: Vec<_> = seen.iter().filter(|s| s.path == "/incidents").collect();
    assert_eq!(incidents.len(), 4, "{incidents:#?}");
    assert_eq!(incidents[1].status, 429);
    assert_eq!(incidents[1].query, incidents[2].query);
    assert!(incidents[2].at - incidents[1].at >= Duration::from_millis(950));
    assert!(
        incidents[0].query.contains("service_ids%5B%5D=PIJ90N7"),
        "{:?}",
        incidents[0]
    );
    assert!(
        incidents[0].query.contains("since=2024-03-01T00:00:00Z"),
        "{:?}",
        incidents[0]
    );
    assert_eq!(seen.iter().filter(|s| s.status == 502).count(), 1);
    assert_eq!(summary.retries, 1, "the 502, retried once");
    assert!(summary.waited_secs >= 1.0, "{summary:?}");
    assert_eq!(summary.requests as usize, seen.len());
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// PagerDuty's classic pagination stops at offset + limit = 10,000: a window holding more is
/// read in halves (here with a cap of 2).
#[tokio::test]
async fn a_window_over_the_offset_cap_is_read_in_halves() {
    let fake = Fake::start(scenario(), vec![]).await;
    *fake.offset_cap.lock().unwrap() = 2;
    let app = new_app().await;
    let mut opts = options();
    opts.offset_cap = 2;
    let summary = pagerduty::run(&client(&fake.url(), TOKEN, 1), &opts, &RouterSink(&app))
        .await
        .unwrap();
    assert_eq!(summary.items["incidents"], 3, "{summary:?}");
    assert!(
        fake.seen().iter().all(|s| s.status != 400),
        "never asked past the cap: {:#?}",
        fake.seen()
    );
    let windows: std::collections::HashSet<String> = fake
        .seen()
        .iter()
        .filter(|s| s.path == "/incidents")
        .map(|s| s.query.split("&limit").next().unwrap().to_string())
        .collect();
    assert!(windows.len() >= 3, "split into windows: {windows:#?}");
    let got = settle(&app, &mut BTreeMap::new()).await;
    let reference = webhooks_only().await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
}

/// Windows longer than the 6 months the incident list takes are read in pieces of 180 days.
#[tokio::test]
async fn a_long_window_is_read_in_pieces_of_180_days() {
    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    let mut opts = options();
    opts.since = "2023-01-01T00:00:00Z".parse().unwrap();
    opts.until = Some("2024-03-31T00:00:00Z".parse().unwrap());
    let summary = pagerduty::run(&client(&fake.url(), TOKEN, 100), &opts, &RouterSink(&app))
        .await
        .unwrap();
    let lists: Vec<String> = fake
        .seen()
        .iter()
        .filter(|s| s.path == "/incidents")
        .map(|s| s.query.clone())
        .collect();
    assert_eq!(lists.len(), 3, "455 days: 180 + 180 + 95: {lists:#?}");
    // #1 (February) is in this longer window too.
    assert_eq!(summary.items["incidents"], 4, "{summary:?}");
}

#[tokio::test]
async fn a_refused_token_names_pagerduty_token_and_writes_nothing() {
    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let err = format!(
        "{:#}",
        backfill(&app, &client(&fake.url(), "wrong", 100))
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("PAGERDUTY_TOKEN") && err.contains("401"),
        "{err}"
    );
    assert_eq!(fake.seen().len(), 1, "the first 401 stops the backfill");
    assert!(dump(&store).is_empty(), "nothing written");
}

#[tokio::test]
async fn an_answer_that_does_not_parse_names_the_endpoint_and_the_field() {
    // A field missing from an incident.
    let mut s = scenario();
    s.incidents[2]
        .rest
        .as_object_mut()
        .unwrap()
        .remove("incident_number");
    let fake = Fake::start(s, vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let err = format!(
        "{:#}",
        backfill(&app, &client(&fake.url(), TOKEN, 100))
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("GET /incidents") && err.contains("incident_number"),
        "{err}"
    );
    assert!(
        dump(&store).is_empty(),
        "nothing written: everything is read first"
    );

    // A list that is not a list.
    let fake = Fake::start(scenario(), vec![("/log_entries", 2, Fault::Garbled)]).await;
    let err = format!(
        "{:#}",
        backfill(&app, &client(&fake.url(), TOKEN, 100))
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("/log_entries") && err.contains("\"log_entries\""),
        "{err}"
    );
    assert!(dump(&store).is_empty(), "nothing written");
}

#[tokio::test]
async fn the_same_result_on_dynamodb() {
    let reference = webhooks_only().await;
    let moto = common::moto::Moto::start().await;
    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app_on(Arc::new(moto.store().await)).await;
    backfill(&app, &client(&fake.url(), TOKEN, 2))
        .await
        .unwrap();
    let only = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(
        reference,
        only,
        "backfill on DynamoDB:\n{}",
        diff(&reference, &only)
    );

    let hooks = webhooks(&scenario());
    let half: Vec<Hook> = hooks.iter().skip(1).step_by(2).cloned().collect();
    let app = new_app_on(Arc::new(moto.store().await)).await;
    post_hooks(&app, &half).await;
    backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    let mut spans = BTreeMap::new();
    let mixed = settle(&app, &mut spans).await;
    assert_eq!(
        reference,
        mixed,
        "mixed on DynamoDB:\n{}",
        diff(&reference, &mixed)
    );
    let second = backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    assert_eq!(second.duplicate, second.deliveries(), "{second:?}");
    assert_eq!(mixed, settle(&app, &mut spans).await);
}

// ---------------------------------------------------------------- the command line

fn cli(args: Vec<String>, token: Option<&'static str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_valuestream"));
    cmd.args(&args);
    for (k, _) in std::env::vars() {
        if k.starts_with("VALUESTREAM_") || k.starts_with("OTEL_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("PAGERDUTY_TOKEN");
    if let Some(t) = token {
        cmd.env("PAGERDUTY_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn args(url: &str, data: &str) -> Vec<String> {
    [
        "backfill",
        "pagerduty",
        "--service",
        SERVICE,
        "--since",
        SINCE,
        "--api-url",
        url,
        "--data-dir",
        data,
        "--page-size",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test]
async fn the_command_needs_pagerduty_token_before_anything_is_written() {
    let fake = Fake::start(scenario(), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store").to_str().unwrap().to_string();
    let a = args(&fake.url(), &data);
    let out = tokio::task::spawn_blocking(move || cli(a, None))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("PAGERDUTY_TOKEN is not set"), "{stderr}");
    assert!(fake.seen().is_empty(), "no request without a token");
    assert!(!std::path::Path::new(&data).exists(), "no store opened");

    let a = args(&fake.url(), &data);
    let out = tokio::task::spawn_blocking(move || cli(a, Some("wrong")))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("PAGERDUTY_TOKEN") && stderr.contains("401"),
        "{stderr}"
    );
    assert!(!std::path::Path::new(&data).exists(), "no store opened");
}

#[tokio::test]
async fn the_command_writes_the_store_once() {
    let fake = Fake::start(scenario(), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store").to_str().unwrap().to_string();
    let a = args(&fake.url(), &data);
    let first = tokio::task::spawn_blocking(move || cli(a, Some(TOKEN)))
        .await
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&first.stdout).into_owned(),
        String::from_utf8_lossy(&first.stderr).into_owned(),
    );
    assert!(first.status.success(), "{out}\n{err}");
    assert!(out.contains("deliveries 10: 10 new"), "{out}");
    assert!(out.contains("incidents 3, log_entries 13"), "{out}");
    assert!(
        err.contains("incidents 2024-03-01T00:00:00Z.."),
        "progress lines: {err}"
    );
    let a = args(&fake.url(), &data);
    let second = tokio::task::spawn_blocking(move || cli(a, Some(TOKEN)))
        .await
        .unwrap();
    let out2 = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{out2}");
    assert!(out2.contains("deliveries 10: 0 new"), "{out2}");
    assert!(out2.contains("10 duplicate"), "{out2}");
}

/// PagerDuty's 429: with its documented `ratelimit-reset` (seconds to wait) the client waits
/// that long; a bare 429 backs off on the documented schedule; either way the backfill goes on
/// and gives the webhooks' result.
#[tokio::test]
async fn a_429_without_retry_after_waits_for_the_reset_or_backs_off() {
    let faults = vec![
        ("/incidents", 2, Fault::LimitedReset),
        ("/log_entries", 1, Fault::LimitedBare),
        ("/log_entries", 2, Fault::LimitedBare),
    ];
    let fake = Fake::start(scenario(), faults).await;
    let app = new_app().await;
    let mut settings = pagerduty::settings(&fake.url(), TOKEN.into());
    settings.page_size = 1;
    settings.concurrency = 1;
    settings.limit_backoff = Duration::from_millis(200);
    let client = Client::new(settings).unwrap();
    let summary = backfill(&app, &client).await.unwrap();
    let got = settle(&app, &mut BTreeMap::new()).await;
    let reference = webhooks_only().await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
    let seen = fake.seen();
    let incidents: Vec<_> = seen.iter().filter(|s| s.path == "/incidents").collect();
    assert_eq!(incidents[1].status, 429);
    assert_eq!(incidents[1].query, incidents[2].query);
    assert!(
        incidents[2].at - incidents[1].at >= Duration::from_millis(950),
        "ratelimit-reset: 1 is a second from now"
    );
    let logs: Vec<_> = seen
        .iter()
        .filter(|s| s.path.ends_with("/log_entries"))
        .collect();
    assert_eq!(
        (logs[0].status, logs[1].status, logs[2].status),
        (429, 429, 200)
    );
    assert_eq!(logs[0].path, logs[2].path, "the same log asked again");
    assert!(logs[1].at - logs[0].at >= Duration::from_millis(190));
    assert!(logs[2].at - logs[1].at >= Duration::from_millis(390));
    assert!(summary.waited_secs >= 1.5, "{summary:?}");
}

// ---------------------------------------------------------------- kept between runs

/// A backfill of `fake` keeping its cursors in `store` (as the command does), pages of 1.
async fn backfill_kept(app: &App, store: &EmbeddedStore, fake: &Fake) -> anyhow::Result<Summary> {
    let records = StoreRecords(store);
    let state = State::new(&records, pagerduty::SOURCE);
    let api = client(&fake.url(), TOKEN, 1);
    pagerduty::run_with(&api, &options(), &RouterSink(app), &state).await
}

/// A backfill stuck (and dropped: Ctrl-C) after `k` deliveries, then the same backfill again:
/// it resumes the interrupted run of the service where its cursor stands, reads the log of no
/// incident the first one delivered (but the one it was delivering), and the result is the
/// uninterrupted one. PagerDuty documents no conditional requests: the fake sends no `ETag`,
/// no request is conditional, no validator is kept.
#[tokio::test]
async fn a_backfill_killed_half_way_resumes_where_it_stopped() {
    let reference = webhooks_only().await;
    let fake = Fake::start(scenario(), vec![]).await;
    // The incidents whose log was read (a log takes several pages of 1).
    let logs = |from: usize, to: usize| {
        fake.seen()[from..to]
            .iter()
            .filter(|s| s.path.ends_with("/log_entries"))
            .map(|s| s.path.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let (full, full_facts) = {
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let app = new_app_on(store.clone()).await;
        let s = backfill_kept(&app, &store, &fake).await.unwrap();
        (s, facts(&store))
    };
    let total = full.deliveries() as usize;
    let incidents = full.items["incidents"] as usize;
    assert!(total >= 6 && incidents >= 3, "{full:?}");
    for k in [1, total / 3, total / 2, 2 * total / 3, total - 1] {
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let app = new_app_on(store.clone()).await;
        let stuck = Stuck::after(k, RouterSink(&app));
        let records = StoreRecords(store.as_ref());
        let state = State::new(&records, pagerduty::SOURCE);
        let api = client(&fake.url(), TOKEN, 1);
        let opts = options();
        let s0 = fake.seen().len();
        tokio::select! {
            r = pagerduty::run_with(&api, &opts, &stuck, &state) => panic!("k={k}: finished: {r:?}"),
            _ = stuck.stuck.notified() => {} // dropped here, mid-delivery
        }
        let s1 = fake.seen().len();
        let resumed = backfill_kept(&app, &store, &fake).await.unwrap();
        let s2 = fake.seen().len();
        assert_eq!(resumed.resumed, [SERVICE], "k={k}: {resumed:?}");
        assert_eq!(resumed.processed as usize, total - k, "k={k}: {resumed:?}");
        assert!(
            resumed.duplicate <= 4 && resumed.duplicate as usize <= k,
            "k={k}: {resumed:?}"
        );
        let got = settle(&app, &mut BTreeMap::new()).await; // panics on a span exported twice
        assert_eq!(reference, got, "k={k}:\n{}", diff(&reference, &got));
        assert_eq!(full_facts, facts(&store), "k={k}: the same facts");
        assert!(
            logs(s0, s1) + logs(s1, s2) <= incidents + 1,
            "k={k}: logs read twice: {} then {}",
            logs(s0, s1),
            logs(s1, s2)
        );
        if k == total - 1 {
            assert_eq!(logs(s1, s2), 1, "k={k}: only the last incident's log again");
        }
        // The next run is a new one, and nothing is conditional.
        let next = backfill_kept(&app, &store, &fake).await.unwrap();
        assert!(next.resumed.is_empty(), "k={k}: {next:?}");
        assert_eq!(
            (next.processed, next.not_modified),
            (0, 0),
            "k={k}: {next:?}"
        );
        assert_eq!(next.duplicate as usize, total, "k={k}: {next:?}");
        assert!(fake.seen().iter().all(|s| s.if_none_match.is_none()));
        assert!(
            !dump(&store).iter().any(|r| r.key.pk.starts_with("etag#")),
            "no validator kept"
        );
    }
}
