//! `valuestream backfill jira` against a small fake of the Jira Cloud REST API v3
//! (`tests/common/fake_jira.rs`: the enhanced search `/rest/api/3/search/jql` chained by
//! `nextPageToken`, changelogs cut at a few histories and read whole from the issue's changelog
//! endpoint, a 429 with `Retry-After`, a 502, a 401).
//!
//! The core property: the scenario's issues delivered (a) as the webhooks Jira sent, (b) as a
//! backfill (the fields of every step rebuilt from today's fields and the changelog), (c) half
//! as webhooks and the rest healed by a backfill, (d) a backfill and then every webhook late give
//! the same spans and `/metrics` series; a second backfill adds nothing.

mod common;
#[path = "common/fake_github.rs"]
#[allow(unused_imports)]
mod fake_github;
#[path = "common/fake_jira.rs"]
mod fake_jira;

use axum::http::StatusCode;
use common::stuck::Stuck;
use common::*;
use fake_github::{diff, facts, settle};
use fake_jira::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use valuestream::backfill::{jira, Client, Sink, State, Summary};
use valuestream::replay::Recorded;
use valuestream::sources::verify::hmac_sha256_hex;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::Store;
use valuestream::sync::StoreRecords;

fn signature(body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(SECRET, body))
}

/// The router as the backfill's sink, every delivery signed as `replay` signs unsigned ones.
struct RouterSink<'a>(&'a App);

#[async_trait::async_trait]
impl Sink for RouterSink<'_> {
    async fn deliver(&self, d: &Recorded) -> anyhow::Result<(u16, String)> {
        assert_eq!(d.source, "jira");
        let sig = signature(&d.body);
        let mut headers: Vec<(&str, &str)> = d
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers.push(("x-hub-signature", &sig));
        headers.push(("content-type", "application/json"));
        let (status, v) = self.0.post("jira", &headers, d.body.clone()).await;
        Ok((status.as_u16(), v.to_string()))
    }
}

async fn new_app_on(store: Arc<dyn Store>) -> App {
    let app = app_with(store, test_config(&[("VALUESTREAM_JIRA_SECRET", SECRET)])).await;
    app.set_auto_drain(false);
    app
}

async fn new_app() -> App {
    new_app_on(Arc::new(EmbeddedStore::in_memory().unwrap())).await
}

async fn post_hooks(app: &App, hooks: &[Hook]) {
    for (id, body) in hooks {
        let body = serde_json::to_vec(body).unwrap();
        let sig = signature(&body);
        let (status, v) = app
            .post(
                "jira",
                &[
                    ("content-type", "application/json"),
                    ("x-hub-signature", &sig),
                    ("x-atlassian-webhook-identifier", id),
                ],
                body,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{id}: {v}");
    }
}

fn client(url: &str, email: &str, page_size: u32) -> Arc<Client> {
    let mut settings = jira::settings(url, email, TOKEN);
    settings.page_size = page_size;
    settings.concurrency = 2;
    settings.backoff = Duration::from_millis(50);
    Client::new(settings).unwrap()
}

fn options() -> jira::Options {
    jira::Options {
        projects: vec!["SHOP".into()],
        since: SINCE.parse().unwrap(),
        until: None,
    }
}

async fn backfill(app: &App, client: &Arc<Client>) -> anyhow::Result<Summary> {
    jira::run(client, &options(), &RouterSink(app)).await
}

/// A fake whose expanded changelogs hold 3 histories at most (SHOP-42 has 6).
async fn fake(faults: Vec<(&str, usize, Fault)>) -> Arc<Fake> {
    let fake = Fake::start(scenario(), faults).await;
    *fake.embedded_histories.lock().unwrap() = 3;
    fake
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
    assert_eq!(
        hooks.len(),
        2 + 6 + 1 + 1,
        "SHOP-42, SHOP-43, SHOP-7's change in March"
    );
    post_hooks(&app, &hooks).await;
    let reference = settle(&app, &mut BTreeMap::new()).await;
    let names: Vec<&str> = reference.spans.values().map(|s| s.name.as_str()).collect();
    // SHOP-42 done, reopened, done again: two spans; SHOP-7 done; SHOP-43 still open.
    let count = |p: &str| names.iter().filter(|n| n.starts_with(p)).count();
    assert_eq!(count("ISSUE SHOP-42 "), 2, "{names:?}");
    assert_eq!(count("ISSUE SHOP-7 "), 1, "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.contains("SHOP-1 ") || n.contains("OPS-")),
        "{names:?}"
    );
    assert!(
        reference
            .metrics
            .iter()
            .any(|l| l.contains("issue_duration")),
        "{:#?}",
        reference.metrics
    );
    let first = reference
        .spans
        .values()
        .filter(|s| s.name.starts_with("ISSUE SHOP-42 "))
        .min_by_key(|s| s.start)
        .unwrap();
    assert_eq!(first.name, "ISSUE SHOP-42 Checkout fails for saved cards");
    assert_eq!(
        first.events.len(),
        2,
        "To Do → In Progress → Done: {first:?}"
    );

    // (b) backfill only, pages of 2.
    let fake = fake(vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let summary = backfill(&app, &client(&fake.url(), EMAIL, 2))
        .await
        .unwrap();
    let only = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(
        reference,
        only,
        "backfill only:\n{}",
        diff(&reference, &only)
    );
    // Not only the same spans: the very same facts, every step's fields rebuilt.
    assert_eq!(facts(&hooks_store), facts(&store));
    assert_eq!(summary.items["issues"], 3, "{summary:?}");
    assert_eq!(summary.processed, 10, "{summary:?}");
    assert_eq!(
        summary.duplicate + summary.refused + summary.ignored,
        0,
        "{summary:?}"
    );
    // SHOP-42's changelog was cut at 3 histories: read whole from its endpoint (6 histories,
    // pages of 2); the others came whole with the search.
    assert_eq!(fake.count("/rest/api/3/issue/SHOP-42/changelog"), 3);
    assert_eq!(fake.count("/changelog"), 3);
    assert_eq!(
        fake.count("/rest/api/3/search"),
        0,
        "the removed endpoint is not used"
    );
    eprintln!("{}", summary.lines());

    // (c) every other webhook, then the backfill heals the rest.
    let half: Vec<Hook> = hooks.iter().step_by(2).cloned().collect();
    let app = new_app().await;
    post_hooks(&app, &half).await;
    let summary = backfill(&app, &client(&fake.url(), EMAIL, 100))
        .await
        .unwrap();
    let mixed = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(
        reference,
        mixed,
        "half webhooks, then backfill:\n{}",
        diff(&reference, &mixed)
    );
    assert_eq!(
        summary.new_facts, 5,
        "the 5 the webhooks missed: {summary:?}"
    );

    // (d) the backfill, then every webhook late.
    let app = new_app().await;
    backfill(&app, &client(&fake.url(), EMAIL, 100))
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
    let fake = fake(vec![]).await;
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
        backfill(&app, &client(&fake.url(), EMAIL, 3))
            .await
            .unwrap();
        post_hooks(&app, &after).await;
        let got = settle(&app, &mut BTreeMap::new()).await;
        assert_eq!(reference, got, "seed {seed}:\n{}", diff(&reference, &got));
    }
}

#[tokio::test]
async fn a_second_backfill_adds_nothing() {
    let fake = fake(vec![]).await;
    let app = new_app().await;
    let mut spans = BTreeMap::new();
    let first = backfill(&app, &client(&fake.url(), EMAIL, 2))
        .await
        .unwrap();
    let once = settle(&app, &mut spans).await;
    assert_eq!(first.processed, 10, "{first:?}");
    let second = backfill(&app, &client(&fake.url(), EMAIL, 2))
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
        ("/rest/api/3/search/jql", 2, Fault::Limited),
        ("/changelog", 1, Fault::BadGateway),
    ];
    let fake = fake(faults).await;
    let app = new_app().await;
    let started = Instant::now();
    let summary = backfill(&app, &client(&fake.url(), EMAIL, 1))
        .await
        .unwrap();
    let got = settle(&app, &mut BTreeMap::new()).await;
    let reference = webhooks_only().await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
    let seen = fake.seen();
    let search: Vec<_> = seen
        .iter()
        .filter(|s| s.path == "/rest/api/3/search/jql")
        .collect();
    // 3 issues, one a page, chained by nextPageToken, plus the 429 asked again a second later.
    assert_eq!(search.len(), 4, "{search:#?}");
    assert!(!search[0].query.contains("nextPageToken"));
    assert_eq!(search[1].status, 429);
    assert_eq!(search[1].query, search[2].query);
    assert!(
        search[2].query.contains("nextPageToken=tok-1"),
        "{:?}",
        search[2]
    );
    assert!(
        search[3].query.contains("nextPageToken=tok-2"),
        "{:?}",
        search[3]
    );
    assert!(search[2].at - search[1].at >= Duration::from_millis(950));
    let jql = fake_query(&search[0].query, "jql");
    assert_eq!(
        jql,
        "project in (\"SHOP\") AND updated >= \"2024-02-29 00:00\" ORDER BY created ASC"
    );
    assert!(search[0].query.contains("maxResults=1"), "{:?}", search[0]);
    // The cut changelog: one 502, then its 6 histories a page at a time.
    let changelog: Vec<_> = seen
        .iter()
        .filter(|s| s.path.ends_with("/changelog"))
        .collect();
    assert_eq!(changelog[0].status, 502);
    assert_eq!(changelog.len(), 1 + 6, "{changelog:#?}");
    assert_eq!(summary.retries, 1, "the 502, retried once");
    assert!(summary.waited_secs >= 1.0, "{summary:?}");
    assert_eq!(summary.requests as usize, seen.len());
    assert!(started.elapsed() < Duration::from_secs(20));
}

fn fake_query(q: &str, key: &str) -> String {
    q.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .map(|v| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap()
}

#[tokio::test]
async fn refused_credentials_name_jira_email_and_jira_token_and_write_nothing() {
    let fake = fake(vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let err = format!(
        "{:#}",
        backfill(&app, &client(&fake.url(), "someone@example.com", 100))
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("JIRA_EMAIL") && err.contains("JIRA_TOKEN") && err.contains("401"),
        "{err}"
    );
    assert_eq!(fake.seen().len(), 1, "the first 401 stops the backfill");
    assert_eq!(fake.seen()[0].path, "/rest/api/3/myself");
    assert!(dump(&store).is_empty(), "nothing written");
}

#[tokio::test]
async fn an_answer_that_does_not_parse_names_the_endpoint_and_the_field() {
    let mut s = scenario();
    s.issues[1]
        .created_fields
        .as_object_mut()
        .unwrap()
        .remove("created");
    let fake = Fake::start(s, vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let err = format!(
        "{:#}",
        backfill(&app, &client(&fake.url(), EMAIL, 100))
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("/rest/api/3/search/jql") && err.contains("fields.created"),
        "{err}"
    );
    assert!(
        dump(&store).is_empty(),
        "nothing written: everything is read first"
    );

    let fake = fake_with_garbled_changelog().await;
    let err = format!(
        "{:#}",
        backfill(&app, &client(&fake.url(), EMAIL, 100))
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("/rest/api/3/issue/SHOP-42/changelog") && err.contains("\"values\""),
        "{err}"
    );
    assert!(dump(&store).is_empty(), "nothing written");
}

async fn fake_with_garbled_changelog() -> Arc<Fake> {
    fake(vec![("/changelog", 1, Fault::Garbled)]).await
}

#[tokio::test]
async fn the_same_result_on_dynamodb() {
    let reference = webhooks_only().await;
    let moto = common::moto::Moto::start().await;
    let fake = fake(vec![]).await;
    let app = new_app_on(Arc::new(moto.store().await)).await;
    backfill(&app, &client(&fake.url(), EMAIL, 2))
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
    backfill(&app, &client(&fake.url(), EMAIL, 100))
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
    let second = backfill(&app, &client(&fake.url(), EMAIL, 100))
        .await
        .unwrap();
    assert_eq!(second.duplicate, second.deliveries(), "{second:?}");
    assert_eq!(mixed, settle(&app, &mut spans).await);
}

// ---------------------------------------------------------------- the command line

fn cli(
    args: Vec<String>,
    email: Option<&'static str>,
    token: Option<&'static str>,
) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_valuestream"));
    cmd.args(&args);
    for (k, _) in std::env::vars() {
        if k.starts_with("VALUESTREAM_") || k.starts_with("OTEL_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("JIRA_EMAIL").env_remove("JIRA_TOKEN");
    if let Some(e) = email {
        cmd.env("JIRA_EMAIL", e);
    }
    if let Some(t) = token {
        cmd.env("JIRA_TOKEN", t);
    }
    cmd.output().unwrap()
}

fn args(url: &str, data: &str) -> Vec<String> {
    [
        "backfill",
        "jira",
        "--project",
        "SHOP",
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
async fn the_command_needs_jira_email_and_jira_token_before_anything_is_written() {
    let fake = fake(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store").to_str().unwrap().to_string();
    for (email, token, want) in [
        (None, None, "JIRA_EMAIL and JIRA_TOKEN are not set"),
        (Some(EMAIL), None, "JIRA_TOKEN is not set"),
        (None, Some(TOKEN), "JIRA_EMAIL is not set"),
    ] {
        let a = args(&fake.url(), &data);
        let out = tokio::task::spawn_blocking(move || cli(a, email, token))
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
    assert!(fake.seen().is_empty(), "no request without credentials");
    assert!(!std::path::Path::new(&data).exists(), "no store opened");

    let a = args(&fake.url(), &data);
    let out = tokio::task::spawn_blocking(move || cli(a, Some(EMAIL), Some("wrong")))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("JIRA_EMAIL") && stderr.contains("JIRA_TOKEN") && stderr.contains("401"),
        "{stderr}"
    );
    assert!(!std::path::Path::new(&data).exists(), "no store opened");

    // --api-url has no default: the site is the user's own.
    let out = tokio::task::spawn_blocking(|| {
        cli(
            ["backfill", "jira", "--project", "SHOP", "--since", "30d"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            Some(EMAIL),
            Some(TOKEN),
        )
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-url"));
}

#[tokio::test]
async fn the_command_writes_the_store_once() {
    let fake = fake(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store").to_str().unwrap().to_string();
    let a = args(&fake.url(), &data);
    let first = tokio::task::spawn_blocking(move || cli(a, Some(EMAIL), Some(TOKEN)))
        .await
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&first.stdout).into_owned(),
        String::from_utf8_lossy(&first.stderr).into_owned(),
    );
    assert!(first.status.success(), "{out}\n{err}");
    let myself = |fake: &Fake| {
        let seen = fake.seen();
        seen.iter()
            .filter(|r| r.path == "/rest/api/3/myself")
            .count()
    };
    assert_eq!(myself(&fake), 1, "the credentials are tried once a run");
    assert!(out.contains("deliveries 10: 10 new"), "{out}");
    assert!(out.contains("changelog_histories 9, issues 3"), "{out}");
    assert!(err.contains("jira issues: page 1"), "progress lines: {err}");
    let a = args(&fake.url(), &data);
    let second = tokio::task::spawn_blocking(move || cli(a, Some(EMAIL), Some(TOKEN)))
        .await
        .unwrap();
    let out2 = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{out2}");
    assert!(out2.contains("deliveries 10: 0 new"), "{out2}");
    assert!(out2.contains("10 duplicate"), "{out2}");
}

/// Jira Cloud's 429 comes without `Retry-After` at times (Atlassian's "Rate limiting": it "may
/// be accompanied by" one): the client backs off on its documented schedule (the first wait,
/// then twice that) and goes on; the result is the webhooks'.
#[tokio::test]
async fn a_429_without_retry_after_backs_off_and_continues() {
    let faults = vec![
        ("/rest/api/3/search/jql", 2, Fault::LimitedBare),
        ("/rest/api/3/search/jql", 3, Fault::LimitedBare),
    ];
    let fake = fake(faults).await;
    let app = new_app().await;
    let mut settings = jira::settings(&fake.url(), EMAIL, TOKEN);
    settings.page_size = 1;
    settings.limit_backoff = Duration::from_millis(200);
    let client = Client::new(settings).unwrap();
    assert_eq!(client.limit_backoff(3), Duration::from_millis(800));
    let summary = backfill(&app, &client).await.unwrap();
    let got = settle(&app, &mut BTreeMap::new()).await;
    let reference = webhooks_only().await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
    let seen = fake.seen();
    let search: Vec<_> = seen
        .iter()
        .filter(|s| s.path == "/rest/api/3/search/jql")
        .collect();
    assert_eq!(
        search.iter().map(|s| s.status).collect::<Vec<_>>(),
        [200, 429, 429, 200, 200],
        "{search:#?}"
    );
    assert_eq!(
        search[1].query, search[3].query,
        "the same page asked again"
    );
    assert!(search[2].at - search[1].at >= Duration::from_millis(190));
    assert!(search[3].at - search[2].at >= Duration::from_millis(390));
    assert!(summary.waited_secs >= 0.59, "{summary:?}");
    // With the defaults: 5 s, 10 s, 20 s, then 30 s at most.
    let defaults = Client::new(jira::settings(&fake.url(), EMAIL, TOKEN)).unwrap();
    let schedule: Vec<u64> = (1..=5)
        .map(|n| defaults.limit_backoff(n).as_secs())
        .collect();
    assert_eq!(schedule, [5, 10, 20, 30, 30]);
}

// ---------------------------------------------------------------- kept between runs

/// A backfill of `fake` keeping its cursors in `store` (as the command does), pages of 1.
async fn backfill_kept(app: &App, store: &EmbeddedStore, fake: &Fake) -> anyhow::Result<Summary> {
    let records = StoreRecords(store);
    let state = State::new(&records, jira::SOURCE);
    let api = client(&fake.url(), EMAIL, 1);
    jira::run_with(&api, &options(), &RouterSink(app), &state).await
}

/// A backfill stuck (and dropped: Ctrl-C) after `k` deliveries, then the same backfill again:
/// it resumes the interrupted run of the project where its cursor stands, reads the changelog
/// of no issue the first one delivered, and the result is the uninterrupted one. Jira Cloud
/// documents no conditional requests: the fake sends no `ETag`, no request is conditional, no
/// validator is kept.
#[tokio::test]
async fn a_backfill_killed_half_way_resumes_where_it_stopped() {
    let reference = webhooks_only().await;
    let fake = fake(vec![]).await;
    let changelogs = |from: usize, to: usize| {
        fake.seen()[from..to]
            .iter()
            .filter(|s| s.path.ends_with("/changelog"))
            .count()
    };
    let (full, full_facts, full_changelogs) = {
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let app = new_app_on(store.clone()).await;
        let s0 = fake.seen().len();
        let s = backfill_kept(&app, &store, &fake).await.unwrap();
        (s, facts(&store), changelogs(s0, fake.seen().len()))
    };
    let total = full.deliveries() as usize;
    assert!(total >= 6 && full_changelogs > 0, "{full:?}");
    for k in [1, total / 3, total / 2, 2 * total / 3, total - 1] {
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let app = new_app_on(store.clone()).await;
        let stuck = Stuck::after(k, RouterSink(&app));
        let records = StoreRecords(store.as_ref());
        let state = State::new(&records, jira::SOURCE);
        let api = client(&fake.url(), EMAIL, 1);
        let opts = options();
        let s0 = fake.seen().len();
        tokio::select! {
            r = jira::run_with(&api, &opts, &stuck, &state) => panic!("k={k}: finished: {r:?}"),
            _ = stuck.stuck.notified() => {} // dropped here, mid-delivery
        }
        let s1 = fake.seen().len();
        let resumed = backfill_kept(&app, &store, &fake).await.unwrap();
        let s2 = fake.seen().len();
        assert_eq!(resumed.resumed, ["SHOP"], "k={k}: {resumed:?}");
        assert_eq!(resumed.processed as usize, total - k, "k={k}: {resumed:?}");
        assert!(resumed.duplicate as usize <= k, "k={k}: {resumed:?}");
        let got = settle(&app, &mut BTreeMap::new()).await; // panics on a span exported twice
        assert_eq!(reference, got, "k={k}:\n{}", diff(&reference, &got));
        assert_eq!(full_facts, facts(&store), "k={k}: the same facts");
        // SHOP-42's changelog (read whole, from its own endpoint) is read again only when the
        // stopped run had not delivered all of it: it had at k = total - 1 (stopped at SHOP-43,
        // the last issue), not at k = 1 (stopped at SHOP-42's first delivery, after SHOP-7).
        assert!(
            changelogs(s0, s1) + changelogs(s1, s2) <= 2 * full_changelogs,
            "k={k}"
        );
        if k == total - 1 {
            assert_eq!(changelogs(s1, s2), 0, "k={k}: read again");
        }
        if k == 1 {
            assert_eq!(changelogs(s1, s2), full_changelogs, "k={k}");
        }
        assert!(resumed.resumed_items > 0, "k={k}: {resumed:?}");
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
