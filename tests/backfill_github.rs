//! `valuestream backfill github` against a fake GitHub REST API started here (documented
//! response shapes: the REST objects are the objects of the webhook fixtures in
//! `tests/fixtures/github/`), with `Link` pagination, `x-ratelimit-*` headers, a primary limit
//! running out, a secondary-limit 429, a 502 and a 401.
//!
//! The core property: a scenario delivered (a) as webhooks, (b) as a backfill from the API and
//! (c) half as webhooks, the rest healed by a backfill gives the same spans (IDs, parents, links,
//! times, attributes) and the same `/metrics` series; a second backfill adds nothing.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;

use common::*;
use fake_github::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use valuestream::backfill::{github, Client, ClientSettings, Sink, Summary};
use valuestream::replay::Recorded;
use valuestream::store::embedded::EmbeddedStore;

// ---------------------------------------------------------------- driving the pipeline

/// The router as a backfill's sink: every synthesized delivery signed with the configured
/// secret, as `replay` signs unsigned ones, and posted through the real router.
struct RouterSink<'a>(&'a App);

#[async_trait::async_trait]
impl Sink for RouterSink<'_> {
    async fn deliver(&self, d: &Recorded) -> anyhow::Result<(u16, String)> {
        let sig = github_signature(&d.body);
        let mut headers: Vec<(&str, &str)> = d
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers.push(("x-hub-signature-256", &sig));
        headers.push(("content-type", "application/json"));
        let (status, v) = self.0.post(&d.source, &headers, d.body.clone()).await;
        Ok((status.as_u16(), v.to_string()))
    }
}

fn client(url: &str, token: &str, page_size: u32) -> Arc<Client> {
    let mut settings = ClientSettings::new(url, token.into(), github::TOKEN_VAR);
    settings.page_size = page_size;
    settings.concurrency = 2;
    settings.backoff = Duration::from_millis(50);
    Client::new(settings).unwrap()
}

fn options() -> github::Options {
    github::Options::new(vec![REPO.into()], SINCE.parse().unwrap(), None)
}

async fn backfill(app: &App, client: &Arc<Client>) -> anyhow::Result<Summary> {
    github::run(client, &options(), &RouterSink(app)).await
}

// ---------------------------------------------------------------- the tests

#[tokio::test]
async fn webhooks_backfill_and_webhooks_healed_by_backfill_give_the_same_spans_and_series() {
    let hooks_store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(hooks_store.clone()).await;
    post_hooks(&app, &webhooks(&scenario())).await;
    let reference = settle(&app, &mut BTreeMap::new()).await;
    let names: Vec<&str> = reference.spans.values().map(|s| s.name.as_str()).collect();
    for want in [
        "ISSUE #1",
        "PR #2",
        "RUN CI",
        "JOB test",
        "DEPLOY production",
        "pickup",
        "review",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} in {names:?}"
        );
    }
    assert!(
        reference.metrics.iter().any(|l| l.contains("lead_time"))
            && reference.metrics.iter().any(|l| l.contains("deployments")),
        "{:#?}",
        reference.metrics
    );
    // The PR is the issue's child; the production deployment of its merge continues it.
    let span = |r: &Result, p: &str| {
        r.spans
            .values()
            .find(|s| s.name.starts_with(p))
            .unwrap_or_else(|| panic!("{p}"))
            .clone()
    };
    let (issue, pr) = (span(&reference, "ISSUE #1"), span(&reference, "PR #2"));
    assert_eq!(pr.parent_span_id.as_deref(), Some(issue.span_id.as_str()));
    assert_eq!(pr.trace_id, issue.trace_id);

    // (b) backfill only, small pages.
    let fake = Fake::start(scenario(), vec![]).await;
    let backfill_store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(backfill_store.clone()).await;
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
    // Not only the same spans and series: the very same facts (an "opened" delivery carries
    // the object as it was opened), and the same pushes.
    assert_eq!(facts(&hooks_store), facts(&backfill_store));
    assert_eq!(summary.duplicate, 0, "{summary:?}");
    assert_eq!(summary.processed, summary.deliveries());
    assert_eq!(summary.refused + summary.ignored, 0, "{summary:?}");
    assert_eq!(
        summary.items["pull_requests"], 1,
        "the old PR is outside the window"
    );
    assert_eq!(summary.items["issues"], 2);
    assert_eq!(summary.items["commits"], 4);
    assert_eq!(
        summary.items["pull_request_reviews"], 2,
        "the submitted reviews, not the pending one"
    );
    eprintln!("{}", summary.lines());

    // (c) every other webhook, then the backfill heals the rest.
    let hooks = webhooks(&scenario());
    let half: Vec<Hook> = hooks.iter().step_by(2).cloned().collect();
    let fake = Fake::start(scenario(), vec![]).await;
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
    // The webhooks' facts come again under the backfill's delivery IDs: processed, no new span.
    assert_eq!(summary.duplicate, 0, "{summary:?}");
    assert!(summary.unchanged >= half.len() as u64, "{summary:?}");
    assert!(summary.unchanged < summary.processed, "{summary:?}");

    // (d) the backfill first, then every webhook arrives late: nothing new.
    let fake = Fake::start(scenario(), vec![]).await;
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
async fn a_second_backfill_adds_nothing() {
    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    let mut spans = BTreeMap::new();
    let first = backfill(&app, &client(&fake.url(), TOKEN, 3))
        .await
        .unwrap();
    let once = settle(&app, &mut spans).await;
    assert!(first.processed > 10, "{first:?}");
    let second = backfill(&app, &client(&fake.url(), TOKEN, 3))
        .await
        .unwrap();
    assert_eq!(second.deliveries(), first.deliveries());
    assert_eq!(
        (second.duplicate, second.processed),
        (first.deliveries(), 0),
        "every delivery is answered duplicate: {second:?}"
    );
    // settle panics on a span exported twice; the series are unchanged.
    let twice = settle(&app, &mut spans).await;
    assert_eq!(once, twice, "{}", diff(&once, &twice));
}

#[tokio::test]
async fn pages_rate_limits_secondary_limits_and_5xx_are_followed() {
    let faults = vec![
        ("/pulls", 1, Fault::BadGateway),
        ("/issues", 2, Fault::Exhausted),
        ("/commits", 2, Fault::Secondary),
    ];
    let fake = Fake::start(scenario(), faults).await;
    let app = new_app().await;
    let started = Instant::now();
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 1))
        .await
        .unwrap();
    let seen = fake.seen();
    let reference = webhooks_only().await;
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));

    // Pagination: per_page on every list, one request per page (page size 1); the steps are
    // one GraphQL request.
    assert_eq!(seen.iter().filter(|s| s.path == "/graphql").count(), 1);
    for s in seen
        .iter()
        .filter(|s| s.path != format!("/repos/{REPO}") && s.path != "/graphql")
    {
        assert!(s.query.contains("per_page=1"), "{s:?}");
    }
    let pages = |suffix: &str| {
        seen.iter()
            .filter(|s| s.path.ends_with(suffix) && s.status == 200)
            .count()
    };
    // 3 issues and pull requests updated since --since (2 issues + PR #2), one page each, and the
    // last page has no next link.
    assert_eq!(pages("/issues"), 3, "{seen:#?}");
    assert_eq!(pages("/commits"), 4);
    assert_eq!(pages("/deployments"), 3);
    // Newest updates first: the PR list stops at the first page before --since (PR #7).
    assert_eq!(pages("/pulls"), 2);

    // The 502 was retried once.
    assert_eq!(fake.count("/pulls"), 3);
    assert_eq!(seen.iter().filter(|s| s.status == 502).count(), 1);
    // The secondary limit: the same page again, a second or more later.
    let commits: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.ends_with("/commits"))
        .collect();
    assert_eq!(commits[1].status, 429);
    assert_eq!(commits[1].query, commits[2].query);
    assert!(commits[2].at - commits[1].at >= Duration::from_millis(950));
    // The primary limit ran out: no new request until its reset (the one other request the
    // concurrency of 2 allows may have been under way already).
    let (i, exhausted) = seen
        .iter()
        .enumerate()
        .find(|(_, s)| s.reset_at.is_some())
        .unwrap();
    let reset = exhausted.reset_at.unwrap();
    let early: Vec<&Seen> = seen[i + 1..]
        .iter()
        .filter(|later| later.at + Duration::from_millis(20) < reset)
        .collect();
    assert!(early.len() <= 1, "requests before the reset: {early:#?}");
    assert!(seen[i + 1..].iter().any(|later| later.at >= reset));
    assert!(summary.waited_secs >= 1.0, "{summary:?}");
    assert_eq!(summary.requests as usize, seen.len());
    assert_eq!(summary.retries, 1);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_refused_token_is_an_error_naming_github_token_and_writes_nothing() {
    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let err = backfill(&app, &client(&fake.url(), "wrong", 100))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("GITHUB_TOKEN") && err.contains("401"), "{err}");
    assert_eq!(fake.seen().len(), 1, "the first 401 stops the backfill");
    assert!(dump(&store).is_empty(), "nothing written");
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert!(got.spans.is_empty());
}

#[tokio::test]
async fn an_answer_that_does_not_parse_names_the_endpoint_and_the_field() {
    let mut s = scenario();
    s.pulls[0].as_object_mut().unwrap().remove("head");
    let fake = Fake::start(s, vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let err = format!(
        "{:#}",
        backfill(&app, &client(&fake.url(), TOKEN, 100))
            .await
            .unwrap_err()
    );
    assert!(err.contains("/pulls") && err.contains("head.ref"), "{err}");
    // Nothing derived from that page was delivered: a page's worth of items is checked whole
    // before any of it is sent. (The issues before it were: resources go one after the other,
    // and a rerun resumes after them.)
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert!(
        got.spans.values().all(|s| !s.name.starts_with("PR ")),
        "{:?}",
        got.spans.values().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert!(
        got.spans.values().any(|s| s.name.starts_with("ISSUE #1")),
        "the issues came first"
    );
    assert!(
        dump(&store).iter().all(|r| !r.key.pk.contains("/change/")),
        "no fact of any pull request"
    );
}

/// What the API cannot say: a push to a feature branch (where the branch's first commit, and so
/// the lead time's start, can come from). A backfill alone starts the change's lead time when
/// the pull request was opened; the feature-branch push webhook, when it comes, moves it to the
/// first commit, exactly as in a webhooks-only run.
#[tokio::test]
async fn feature_branch_pushes_are_webhook_only() {
    let branch_push = {
        let mut v = fixture_json("github/push/payload.json");
        v["ref"] = json!(format!("refs/heads/{FEATURE}"));
        v["before"] = json!(sha('0'));
        v["after"] = json!(sha('a'));
        v["deleted"] = json!(false);
        v["commits"] = json!([{"id": sha('a'), "message": "Fix checkout", "timestamp": t("09:40"), "distinct": true}]);
        v["repository"] = scenario().repository;
        ("push".to_string(), "hook-branch".to_string(), v)
    };
    let mut hooks = webhooks(&scenario());
    hooks.push(branch_push.clone());
    let app = new_app().await;
    post_hooks(&app, &hooks).await;
    let with_branch = settle(&app, &mut BTreeMap::new()).await;

    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    let only = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(only, webhooks_only().await);
    assert!(!only.metrics.is_empty());
    assert_ne!(
        only.metrics, with_branch.metrics,
        "the branch's first commit (09:40, before the PR opened at 10:00) moves the lead time"
    );

    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    post_hooks(&app, std::slice::from_ref(&branch_push)).await;
    let healed = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(with_branch, healed, "{}", diff(&with_branch, &healed));
}

// ---------------------------------------------------------------- the command line

fn cli(args: &[&str], token: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_valuestream"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("VALUESTREAM_") || k.starts_with("OTEL_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("GITHUB_TOKEN");
    if let Some(t) = token {
        cmd.env("GITHUB_TOKEN", t);
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn the_command_needs_github_token_before_anything_is_written() {
    let fake = Fake::start(scenario(), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap();
    let url = fake.url();
    let args = [
        "backfill",
        "github",
        "--repo",
        REPO,
        "--since",
        SINCE,
        "--api-url",
        &url,
        "--data-dir",
        data,
    ];
    let out = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), None)
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("GITHUB_TOKEN is not set"), "{stderr}");
    assert!(fake.seen().is_empty(), "no request without a token");
    assert!(!std::path::Path::new(data).exists(), "no store opened");

    let out = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || {
            cli(
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
                Some("wrong"),
            )
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("GITHUB_TOKEN") && stderr.contains("401"),
        "{stderr}"
    );
    assert!(!std::path::Path::new(data).exists(), "no store opened");
}

#[tokio::test]
async fn the_command_writes_the_store_once() {
    let fake = Fake::start(scenario(), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap().to_string();
    let url = fake.url();
    let run = || {
        let args: Vec<String> = [
            "backfill",
            "github",
            "--repo",
            REPO,
            "--since",
            SINCE,
            "--api-url",
            &url,
            "--data-dir",
            &data,
            "--page-size",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        tokio::task::spawn_blocking(move || {
            cli(
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
                Some(TOKEN),
            )
        })
    };
    let first = run().await.unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&first.stdout).into_owned(),
        String::from_utf8_lossy(&first.stderr).into_owned(),
    );
    assert!(first.status.success(), "{out}\n{err}");
    assert!(out.contains("0 duplicate"), "{out}");
    assert!(
        err.contains("pull requests: page 1"),
        "progress lines: {err}"
    );
    assert!(out.contains("API requests"), "{out}");
    // The summary, stderr not being a terminal: plain lines, one per page and per resource.
    for want in [
        "backfill: items read: commits 4, deployment_statuses 4, deployments 3, issue_events 8, issues 2, pull_request_events 0, pull_request_reviews 2, pull_requests 1, workflow_jobs 1, workflow_runs 1\n",
        "backfill: deliveries 24: 24 new (",
        "backfill: facts: 24 deliveries brought new facts, 0 only facts already known\n",
        "answered 304 Not Modified",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    assert!(
        err.contains(&format!(
            "backfill: {REPO} pull requests: 2/2 items, 1 pages, 2 requests (0 not modified), 0 s waiting for rate limits\n"
        )),
        "a line per resource: {err}"
    );
    // Again: every list and object unchanged answers 304 (not charged to the rate limit),
    // nothing new is delivered; the lists without a validator (runs, deployments) are read
    // again and their deliveries are duplicates.
    let charged = *fake.charged.lock().unwrap();
    let second = run().await.unwrap();
    let out2 = String::from_utf8_lossy(&second.stdout).into_owned();
    let err2 = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(second.status.success(), "{out2}\n{err2}");
    for want in [
        "backfill: deliveries 5: 0 new (0 of them changed no span, 0 brought facts the store did not hold), 5 duplicate,",
        "backfill: facts: 0 deliveries brought new facts, 5 only facts already known\n",
        "8 answered 304 Not Modified",
        &format!("backfill: unchanged since the last run: {REPO} issues, {REPO} pull_requests, {REPO} commits"),
    ] {
        assert!(out2.contains(want), "{want:?} in:\n{out2}");
    }
    assert!(
        err2.contains(&format!(
            "backfill: {REPO} pull requests: 0 items, 0 pages, 1 requests (1 not modified)"
        )),
        "{err2}"
    );
    let requests: u64 = out2
        .split("API requests ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        *fake.charged.lock().unwrap() - charged,
        requests - 8,
        "the 304s are not charged"
    );
}

#[tokio::test]
async fn the_same_result_on_dynamodb() {
    let reference = webhooks_only().await;
    let moto = common::moto::Moto::start().await;

    let fake = Fake::start(scenario(), vec![]).await;
    let app = app_with(Arc::new(moto.store().await), test_config(&[])).await;
    app.set_auto_drain(false);
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
    let app = app_with(Arc::new(moto.store().await), test_config(&[])).await;
    app.set_auto_drain(false);
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

/// `--to URL`: the deliveries go to a running instance, signed with the configured secret.
#[tokio::test]
async fn the_command_posts_to_a_running_instance() {
    let reference = webhooks_only().await;
    let app = new_app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app.router.clone()).into_future());
    let fake = Fake::start(scenario(), vec![]).await;
    let url = fake.url();
    let args: Vec<String> = [
        "backfill",
        "github",
        "--repo",
        REPO,
        "--since",
        SINCE,
        "--api-url",
        &url,
        "--to",
        &to,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_valuestream"));
        cmd.args(&args);
        for (k, _) in std::env::vars() {
            if k.starts_with("VALUESTREAM_") || k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("GITHUB_TOKEN", TOKEN)
            .env("VALUESTREAM_GITHUB_SECRET", GITHUB_SECRET)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("deliveries 24: 24 new"), "{stdout}");
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
}

/// API requests per pull request on a repository of many, each with a review requested and a
/// review: lists cost one request per page of 100 (pull requests are listed by `/pulls` and, as
/// issues, by `/issues`), and the steps one GraphQL request per 50 pull requests (none without
/// them): issue 26's target is 1.2 at most.
#[tokio::test]
async fn requests_per_pull_request() {
    const N: u64 = 200;
    let mut s = scenario();
    let template = s.pulls[0].clone();
    s.pulls.clear();
    s.issues.clear();
    s.runs.clear();
    s.jobs.clear();
    s.deployments.clear();
    s.statuses.clear();
    let review = s.reviews[&2][1].clone();
    s.reviews.clear();
    for n in 0..N {
        let mut pr = template.clone();
        pr["number"] = json!(100 + n);
        pr["id"] = json!(100 + n);
        pr["head"]["ref"] = json!(format!("feature-{n}"));
        pr["head"]["sha"] = json!(format!("{:040x}", n + 1));
        pr["merge_commit_sha"] = json!(format!("{:040x}", 1_000_000 + n));
        pr["body"] = json!("");
        s.pulls.push(pr);
        let mut r = review.clone();
        r["id"] = json!(10_000 + n);
        s.reviews.insert(100 + n, vec![r]);
        s.timeline.insert(
            100 + n,
            vec![
                json!({"__typename": "ReviewRequestedEvent", "createdAt": t("10:10"),
                "requestedReviewer": {"__typename": "User", "login": "Octocat"}}),
            ],
        );
    }
    let fake = Fake::start(s, vec![]).await;
    let read = |steps: bool| {
        let url = fake.url();
        async move {
            let app = new_app().await;
            let mut opts = options();
            opts.reviews = steps;
            let started = Instant::now();
            let summary = github::run(&client(&url, TOKEN, 100), &opts, &RouterSink(&app))
                .await
                .unwrap();
            let took = started.elapsed().as_secs_f64();
            let per_pr = summary.requests as f64 / N as f64;
            eprintln!(
                "{N} pull requests (steps {steps}): {} requests ({per_pr:.3} per pull request), {} deliveries in {took:.2} s ({:.0} items/s, debug build, through the router)",
                summary.requests,
                summary.deliveries(),
                N as f64 / took
            );
            assert_eq!(summary.items["pull_requests"], N);
            // opened and closed per pull request (with steps: a review requested and a review),
            // and the scenario's three default-branch pushes
            let per = if steps { 4 } else { 2 };
            assert_eq!(summary.processed, per * N + 3, "{summary:?}");
            (summary.requests, per_pr)
        }
    };
    // 1 repository + 2 pages of /issues (the PRs, as issues) + 2 of /pulls + 1 each of
    // /commits, /actions/runs and /deployments (no issue: no /issues/events), and with the
    // steps one GraphQL request per 50 pull requests.
    let (requests, per_pr) = read(true).await;
    assert_eq!(requests, 8 + N / 50);
    assert!(per_pr <= 1.2, "{per_pr}");
    assert_eq!(fake.count("/graphql") as u64, N / 50);
    let (requests, per_pr) = read(false).await;
    assert_eq!(requests, 8);
    assert!(per_pr <= 0.05);
}

/// A pull request with more reviews and events than a page of a connection (100, GitHub's
/// limit on `first`): its further pages are asked by queries of its own, one per page, each
/// with only the connections still going.
#[tokio::test]
async fn a_pull_request_with_more_than_a_page_of_steps_is_followed_to_its_end() {
    let mut s = scenario_with_steps();
    let template = s.reviews[&2][0].clone();
    let mut reviews = Vec::new();
    for i in 0..230u64 {
        let mut r = template.clone();
        r["id"] = json!(5_000 + i);
        r["submitted_at"] = json!(format!("2024-03-01T10:{:02}:{:02}Z", 20 + i / 60, i % 60));
        reviews.push(r);
    }
    s.reviews.insert(2, reviews);
    let mut events = s.timeline[&2].clone();
    for i in 0..119u64 {
        events.push(json!({"__typename": "ReviewRequestedEvent",
            "createdAt": format!("2024-03-01T10:{:02}:{:02}Z", 10 + i / 60, i % 60),
            "requestedReviewer": {"__typename": "User", "login": format!("reviewer-{i}")}}));
    }
    s.timeline.insert(2, events);
    let fake = Fake::start(s, vec![]).await;
    let app = new_app().await;
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    assert_eq!(summary.items["pull_request_reviews"], 230, "{summary:?}");
    assert_eq!(summary.items["pull_request_events"], 121, "{summary:?}");
    // The batch, then reviews 101-200 with events 101-121, then reviews 201-230.
    assert_eq!(fake.count("/graphql"), 3);
    assert_eq!(summary.refused + summary.ignored, 0, "{summary:?}");
}

/// The fake refuses what GitHub refuses: more than 100 nodes of a connection.
#[test]
fn the_fake_refuses_more_than_100_nodes_of_a_connection() {
    let fake = Fake::idle(scenario());
    let q = json!({"query": "query { repository(owner: \"o\", name: \"n\") { pr2: pullRequest(number: 2) { reviews(first: 101) { nodes { state } } } } }"});
    let answer = fake.graphql(&serde_json::to_vec(&q).unwrap(), false);
    let message = answer["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("exceeds the `first` limit of 100"),
        "{answer}"
    );
}

/// `--no-steps` (or `--no-reviews`): no GraphQL request, so the pull request has no pickup or
/// review stage; a later run with steps adds them (the pull request list read without steps
/// keeps no validator, so it is read again), in one GraphQL request. A third run, nothing
/// having changed, asks for nothing.
#[tokio::test]
async fn no_steps_makes_no_graphql_request() {
    let fake = Fake::start(scenario_with_steps(), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let url = fake.url();
    let data = data.to_str().unwrap().to_string();
    let run = |extra: &'static [&'static str]| {
        let mut args: Vec<String> = [
            "backfill",
            "github",
            "--repo",
            REPO,
            "--since",
            SINCE,
            "--api-url",
            &url,
            "--data-dir",
            &data,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            cli(
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
                Some(TOKEN),
            )
        })
    };
    for flag in ["--no-reviews", "--no-steps"] {
        let out = run(if flag == "--no-steps" {
            &["--no-steps"]
        } else {
            &["--no-reviews"]
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{flag}: {stdout}");
        assert_eq!(fake.count("/graphql"), 0, "{flag} reads no step");
        assert!(stdout.contains("pull_request_reviews 0"), "{stdout}");
    }
    let out = run(&[]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        fake.count("/graphql"),
        1,
        "one request for the pull request"
    );
    assert!(
        stdout.contains("pull_request_events 2, pull_request_reviews 4"),
        "{stdout}"
    );
    // The four reviews and the two events (the opened delivery, a draft now, had come under
    // the same ID without the draft: answered duplicate).
    assert!(stdout.contains(": 6 new ("), "{stdout}");
    let out = run(&[]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        fake.count("/graphql"),
        1,
        "nothing changed: no step read again"
    );
}

/// GitHub answers a failed GraphQL query 200 with `errors`: the run fails with a message
/// naming the query and the field, and nothing of that batch is delivered.
#[tokio::test]
async fn a_graphql_error_fails_the_run_and_delivers_nothing_of_its_batch() {
    let fake = Fake::start(
        scenario_with_steps(),
        vec![("/graphql", 1, Fault::GraphqlErrors)],
    )
    .await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let err = format!(
        "{:#}",
        backfill(&app, &client(&fake.url(), TOKEN, 100))
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("/graphql")
            && err.contains("GraphQL query of Codertocat/Hello-World pull requests #2")
            && err.contains("repository.pr2.reviews: Something went wrong"),
        "{err}"
    );
    assert!(
        dump(&store).iter().all(|r| !r.key.pk.contains("/change/")),
        "no fact of any pull request"
    );
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert!(
        got.spans.values().any(|s| s.name.starts_with("ISSUE #1")),
        "the issues came first"
    );
}

/// The GraphQL API's rate limits are waited for as the REST API's: a secondary limit (429 with
/// `retry-after`) asks the same query again after it, a spent limit
/// (`x-ratelimit-resource: graphql`, `remaining` 0) holds the GraphQL requests until its reset.
#[tokio::test]
async fn graphql_rate_limits_are_waited_for() {
    let reference = {
        let app = new_app().await;
        post_hooks(&app, &webhooks(&scenario_with_steps())).await;
        settle(&app, &mut BTreeMap::new()).await
    };
    for fault in [Fault::Secondary, Fault::Exhausted] {
        let fake = Fake::start(scenario_with_steps(), vec![("/graphql", 1, fault)]).await;
        let app = new_app().await;
        let summary = backfill(&app, &client(&fake.url(), TOKEN, 100))
            .await
            .unwrap();
        assert!(summary.waited_secs >= 0.9, "{fault:?}: {summary:?}");
        let graphql: Vec<Seen> = fake
            .seen()
            .into_iter()
            .filter(|s| s.path == "/graphql")
            .collect();
        match fault {
            Fault::Secondary => {
                assert_eq!(graphql.len(), 2, "asked again");
                assert!(graphql[1].at - graphql[0].at >= Duration::from_millis(950));
            }
            _ => assert_eq!(graphql.len(), 1, "answered, then waited"),
        }
        let got = settle(&app, &mut BTreeMap::new()).await;
        assert_eq!(reference, got, "{fault:?}: {}", diff(&reference, &got));
    }
}

/// GitHub keeps a primary rate limit per resource (`x-ratelimit-resource`: `core` for REST,
/// `graphql`): once the GraphQL limit is spent, the GraphQL requests wait for its reset and the
/// REST requests go on.
#[tokio::test]
async fn a_spent_graphql_limit_holds_graphql_requests_only() {
    let fake = Fake::start(scenario(), vec![("/graphql", 1, Fault::Exhausted)]).await;
    let c = client(&fake.url(), TOKEN, 100);
    let graphql = c.url("/graphql");
    let query = json!({"query": "query { viewer { login } }"});
    // The first GraphQL answer spends the limit; that call returns once it has reset.
    let first = tokio::spawn({
        let (c, url, query) = (c.clone(), graphql.clone(), query.clone());
        async move { c.post_json(&url, &query).await }
    });
    while fake.count("/graphql") == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.get(&c.url(&format!("/repos/{REPO}"))).await.unwrap();
    let rest_done = Instant::now();
    c.post_json(&graphql, &query).await.unwrap();
    first.await.unwrap().unwrap();
    let seen = fake.seen();
    let reset = seen
        .iter()
        .find_map(|s| s.reset_at)
        .expect("an exhausted answer");
    assert!(
        rest_done < reset,
        "the REST request waited for the GraphQL limit: {seen:#?}"
    );
    let asked: Vec<&Seen> = seen.iter().filter(|s| s.path == "/graphql").collect();
    assert_eq!(asked.len(), 2);
    assert!(
        asked[1].at + Duration::from_millis(20) >= reset,
        "the second GraphQL request waited for the reset: {seen:#?}"
    );
}

/// The steps of a pull request opened as a draft, made ready, with a review requested, reviewed
/// by a person, a bot and its author: the same spans (the pickup and review stages, their
/// events) and series through webhooks, through a backfill, and through any split of the two.
#[tokio::test]
async fn a_pull_request_s_steps_are_the_same_through_webhooks_and_backfill() {
    let hooks = webhooks(&scenario_with_steps());
    let hooks_store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(hooks_store.clone()).await;
    post_hooks(&app, &hooks).await;
    let reference = settle(&app, &mut BTreeMap::new()).await;
    assert_ne!(
        reference,
        webhooks_only().await,
        "the steps make a difference"
    );
    for want in ["pickup", "review"] {
        assert!(
            reference.spans.values().any(|s| s.name.starts_with(want)),
            "{want}"
        );
    }
    let fake = Fake::start(scenario_with_steps(), vec![]).await;
    let backfill_store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(backfill_store.clone()).await;
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
    assert_eq!(facts(&hooks_store), facts(&backfill_store));
    assert_eq!(summary.processed, hooks.len() as u64, "{summary:?}");
    assert_eq!(summary.items["pull_request_reviews"], 4, "{summary:?}");
    assert_eq!(summary.items["pull_request_events"], 2, "{summary:?}");
    for seed in 1..=4u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for h in &hooks {
            match rng.u8(0..3) {
                0 => before.push(h.clone()),
                1 => after.push(h.clone()),
                _ => {}
            }
        }
        rng.shuffle(&mut before);
        let app = new_app().await;
        post_hooks(&app, &before).await;
        backfill(&app, &client(&fake.url(), TOKEN, 100))
            .await
            .unwrap();
        post_hooks(&app, &after).await;
        let got = settle(&app, &mut BTreeMap::new()).await;
        assert_eq!(reference, got, "seed {seed}:\n{}", diff(&reference, &got));
    }
}

/// `--org`: every repository of the organization but the archived ones.
#[tokio::test]
async fn an_organization_is_read_repository_by_repository() {
    let reference = webhooks_only().await;
    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    let mut opts = github::Options::new(vec![], SINCE.parse().unwrap(), None);
    opts.orgs = vec!["Codertocat".into()];
    let summary = github::run(&client(&fake.url(), TOKEN, 100), &opts, &RouterSink(&app))
        .await
        .unwrap();
    assert_eq!(summary.processed, 24, "{summary:?}");
    assert_eq!(fake.count("/repos/Codertocat/Old"), 0, "archived: not read");
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
}

/// The window starts counting at --since: the pull request merged before it (and shipped by a
/// deployment before it) is not read, so the first deployment of the window ships only what
/// landed after --since.
#[tokio::test]
async fn the_first_deployment_of_the_window_ships_only_what_landed_in_it() {
    let mut s = scenario();
    // The old PR #7 was merged on the default branch in January and deployed then.
    let old_merge = sha('7');
    s.commits.last_mut().unwrap().parents = vec![old_merge.clone()];
    s.commits.push(C {
        sha: old_merge.clone(),
        parents: vec![],
        at: "2024-01-02T10:00:00Z".into(),
        message: "Merge pull request #7 from Codertocat/old".into(),
    });
    let mut old_dep = s.deployments[2].clone();
    old_dep["id"] = json!(300);
    old_dep["sha"] = json!(old_merge);
    old_dep["created_at"] = json!("2024-01-03T10:00:00Z");
    s.deployments.push(old_dep);
    s.statuses.insert(
        300,
        vec![{
            let mut st = s.statuses[&301][0].clone();
            st["id"] = json!(3001);
            st["created_at"] = json!("2024-01-03T10:05:00Z");
            st
        }],
    );
    let fake = Fake::start(s, vec![]).await;
    let app = new_app().await;
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    assert_eq!(summary.items["pull_requests"], 1, "{summary:?}");
    assert_eq!(summary.items["deployments"], 3, "{summary:?}");
    let got = settle(&app, &mut BTreeMap::new()).await;
    let first = got
        .spans
        .values()
        .find(|s| {
            s.attributes.get("deployment.id").map(|v| format!("{v:?}"))
                == Some(format!(
                    "{:?}",
                    valuestream::model::AttrValue::from("301".to_string())
                ))
        })
        .expect("deployment 301");
    let changes = first.attributes.get("valuestream.deployment.changes");
    assert_eq!(
        changes.map(|v| format!("{v:?}")),
        Some(format!("{:?}", valuestream::model::AttrValue::from(1i64))),
        "{first:?}"
    );
    // The same as the webhooks of the window alone.
    let reference = webhooks_only().await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
}

/// GitHub lists at most 1,000 workflow runs for one filter (`total_count` says how many there
/// are): a window holding more is read in halves until each half fits.
#[tokio::test]
async fn a_run_list_over_the_cap_is_read_in_halves() {
    let mut s = scenario();
    for i in 0..6u64 {
        let mut r = s.runs[0].clone();
        r["id"] = json!(1000 + i);
        r["head_sha"] = json!(sha('c'));
        r["head_branch"] = json!("other");
        r["created_at"] = json!(t(&format!("{:02}:30", 14 + i)));
        r["run_started_at"] = json!(t(&format!("{:02}:31", 14 + i)));
        r["updated_at"] = json!(t(&format!("{:02}:40", 14 + i)));
        s.runs.push(r);
    }
    let fake = Fake::start(s, vec![]).await;
    *fake.run_cap.lock().unwrap() = 2;
    let app = new_app().await;
    let mut opts = options();
    opts.until = Some(t("23:00").parse().unwrap());
    opts.run_list_cap = 2;
    let summary = github::run(&client(&fake.url(), TOKEN, 100), &opts, &RouterSink(&app))
        .await
        .unwrap();
    assert_eq!(summary.items["workflow_runs"], 7, "{summary:?}");
    assert!(
        fake.count("/actions/runs") > 3,
        "split into several windows"
    );
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(
        got.spans
            .values()
            .filter(|s| s.name.starts_with("RUN "))
            .count(),
        7
    );
}

/// Random parts of the webhooks, in random order, before and after a backfill (a delivery lost
/// in an outage, a late redelivery): always the webhooks' spans and series.
#[tokio::test]
async fn any_split_of_webhooks_around_a_backfill_gives_the_same_result() {
    let reference = webhooks_only().await;
    let fake = Fake::start(scenario(), vec![]).await;
    let hooks = webhooks(&scenario());
    for seed in 1..=6u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut before: Vec<Hook> = Vec::new();
        let mut after: Vec<Hook> = Vec::new();
        for h in &hooks {
            match rng.u8(0..4) {
                0 => before.push(h.clone()),
                1 => after.push(h.clone()),
                2 => {
                    before.push(h.clone());
                    after.push(h.clone()); // redelivered after the backfill
                }
                _ => {} // lost: only the backfill brings it
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
        assert_eq!(
            reference,
            got,
            "seed {seed}: {} before, {} after:\n{}",
            before.len(),
            after.len(),
            diff(&reference, &got)
        );
    }
}
