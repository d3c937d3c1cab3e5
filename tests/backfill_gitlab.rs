//! `valuestream backfill gitlab` against a fake GitLab REST API started here (documented
//! response shapes, offset and keyset pagination, `RateLimit-*` headers, the limit running out,
//! a 429 with `Retry-After`, a 502 and a 401).
//!
//! The core property: a scenario delivered (a) as webhooks (written from the fixtures in
//! `tests/fixtures/gitlab/`), (b) as a backfill from the API and (c) half as webhooks, the rest
//! healed by a backfill gives the same spans (IDs, parents, links, times, attributes) and the
//! same `/metrics` series; a second backfill adds nothing.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;
#[path = "common/fake_gitlab.rs"]
mod fake_gitlab;

use common::stuck::Stuck;
use common::*;
use fake_github::{diff, facts, settle, Result};
use fake_gitlab::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use valuestream::backfill::{gitlab, Client, Sink, State, Summary};
use valuestream::replay::Recorded;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::sync::StoreRecords;

/// The router as a backfill's sink: every synthesized delivery carries the configured hook
/// secret, as `replay` signs unsigned ones, and is posted through the real router.
struct RouterSink<'a>(&'a App);

#[async_trait::async_trait]
impl Sink for RouterSink<'_> {
    async fn deliver(&self, d: &Recorded) -> anyhow::Result<(u16, String)> {
        let mut headers: Vec<(&str, &str)> = d
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers.push(("x-gitlab-token", HOOK_SECRET));
        headers.push(("content-type", "application/json"));
        let (status, v) = self.0.post(&d.source, &headers, d.body.clone()).await;
        Ok((status.as_u16(), v.to_string()))
    }
}

fn client(url: &str, token: &str, page_size: u32) -> Arc<Client> {
    let mut settings = gitlab::settings(url, token.into());
    settings.page_size = page_size;
    settings.concurrency = 2;
    settings.backoff = Duration::from_millis(50);
    Client::new(settings).unwrap()
}

fn options() -> gitlab::Options {
    gitlab::Options::new(vec![PROJECT.into()], SINCE.parse().unwrap(), None)
}

async fn backfill(app: &App, client: &Arc<Client>) -> anyhow::Result<Summary> {
    gitlab::run(client, &options(), &RouterSink(app)).await
}

async fn webhooks_only() -> Result {
    let app = new_app().await;
    post_hooks(&app, &webhooks(&scenario())).await;
    settle(&app, &mut BTreeMap::new()).await
}

fn span<'a>(r: &'a Result, prefix: &str) -> &'a valuestream::model::FinishedSpan {
    r.spans
        .values()
        .find(|s| s.name.starts_with(prefix))
        .unwrap_or_else(|| {
            panic!(
                "{prefix}: {:?}",
                r.spans.values().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
}

fn attr(s: &valuestream::model::FinishedSpan, k: &str) -> String {
    s.attributes
        .get(k)
        .map(|v| format!("{v:?}"))
        .unwrap_or_default()
}

// ---------------------------------------------------------------- the tests

#[tokio::test]
async fn webhooks_backfill_and_webhooks_healed_by_backfill_give_the_same_spans_and_series() {
    let hooks_store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(hooks_store.clone()).await;
    post_hooks(&app, &webhooks(&scenario())).await;
    let reference = settle(&app, &mut BTreeMap::new()).await;
    for want in [
        "ISSUE #1",
        "INCIDENT #5",
        "MR !2",
        // A merge-request pipeline without a name is named by its branch.
        "RUN fix-checkout",
        "JOB build",
        "JOB test",
        "JOB lint",
        "DEPLOY production",
    ] {
        span(&reference, want);
    }
    assert!(
        reference.metrics.iter().any(|l| l.contains("lead_time"))
            && reference.metrics.iter().any(|l| l.contains("deployments")),
        "{:#?}",
        reference.metrics
    );
    // The merge request is the issue's child; its pipeline its child.
    let (issue, mr) = (span(&reference, "ISSUE #1"), span(&reference, "MR !2"));
    assert_eq!(mr.parent_span_id.as_deref(), Some(issue.span_id.as_str()));
    let run = span(&reference, "RUN fix-checkout");
    assert_eq!(run.parent_span_id.as_deref(), Some(mr.span_id.as_str()));
    assert!(
        attr(run, "valuestream.queue.duration_s").contains("60"),
        "{run:?}"
    );

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
    // Not only the same spans and series: the same facts, and the same pushes, but for the
    // facts of the pipelines' `pending` hooks (sent before a job started, without the queue
    // time the `running` hook then brings): the API cannot tell them, and they change no span.
    let running_store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(running_store.clone()).await;
    let not_pending: Vec<Hook> = webhooks(&scenario())
        .into_iter()
        .filter(|(e, _, b)| {
            !(e == "Pipeline Hook" && b["object_attributes"]["status"] == "pending")
        })
        .collect();
    post_hooks(&app, &not_pending).await;
    assert_eq!(reference, settle(&app, &mut BTreeMap::new()).await);
    assert_eq!(facts(&running_store), facts(&backfill_store));
    assert_ne!(facts(&hooks_store), facts(&backfill_store));
    assert_eq!(summary.duplicate, 0, "{summary:?}");
    assert_eq!(summary.refused + summary.ignored, 0, "{summary:?}");
    assert_eq!(
        summary.items["merge_requests"], 1,
        "the old one is outside the window"
    );
    assert_eq!(summary.items["issues"], 2);
    assert_eq!(summary.items["commits"], 4);
    assert_eq!(summary.items["pipelines"], 2);
    assert_eq!(summary.items["jobs"], 4, "the manual job never ran");
    assert_eq!(summary.items["deployments"], 3);
    eprintln!("{}", summary.lines());

    // (c) every other webhook, then the backfill heals the rest.
    let hooks = webhooks(&scenario());
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
    assert_eq!(summary.duplicate, 0, "{summary:?}");
    assert!(
        summary.unchanged > 0 && summary.unchanged < summary.processed,
        "{summary:?}"
    );

    // (d) the backfill first, then every webhook arrives late: nothing new.
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
    assert!(first.processed > 20, "{first:?}");
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
async fn pages_rate_limits_429s_and_5xx_are_followed() {
    let faults = vec![
        ("/merge_requests", 1, Fault::BadGateway),
        ("/issues", 2, Fault::Exhausted),
        ("/repository/commits", 2, Fault::TooMany),
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

    // Every request carries the token as PRIVATE-TOKEN.
    assert!(seen.iter().all(|s| s.token.as_deref() == Some(TOKEN)));
    // Pagination: per_page on every list, one request per page (page size 1).
    let lists = [
        "/issues",
        "/events",
        "/merge_requests",
        "/repository/commits",
        "/pipelines",
        "/jobs",
        "/deployments",
        "/environments",
    ];
    for s in seen
        .iter()
        .filter(|s| lists.iter().any(|l| s.path.ends_with(l)))
    {
        assert!(s.query.contains("per_page=1"), "{s:?}");
    }
    let pages = |suffix: &str| {
        seen.iter()
            .filter(|s| s.path.ends_with(suffix) && s.status == 200)
            .count()
    };
    assert_eq!(pages("/issues"), 2, "{seen:#?}");
    assert_eq!(pages("/repository/commits"), 4);
    assert_eq!(pages("/deployments"), 3);
    assert_eq!(
        pages("/merge_requests"),
        1,
        "updated_after leaves the old one out"
    );
    // Keyset pagination, newest first: the jobs list stops at the first page before --since
    // (5 jobs of the window, then the old one).
    assert_eq!(pages("/jobs"), 6);
    let jobs: Vec<&Seen> = seen.iter().filter(|s| s.path.ends_with("/jobs")).collect();
    assert!(jobs.iter().all(|s| s.query.contains("pagination=keyset")));
    assert!(
        jobs[1..].iter().all(|s| s.query.contains("cursor=")),
        "{jobs:#?}"
    );
    // One request per pipeline of the window for its end and queue time.
    assert_eq!(
        fake.count("/pipelines/100") + fake.count("/pipelines/101"),
        2
    );

    // The 502 was retried once.
    assert_eq!(fake.count("/merge_requests"), 2);
    assert_eq!(seen.iter().filter(|s| s.status == 502).count(), 1);
    // The 429: the same page again, its Retry-After (a second) later.
    let commits: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.ends_with("/repository/commits"))
        .collect();
    assert_eq!(commits[1].status, 429);
    assert_eq!(commits[1].query, commits[2].query);
    assert!(commits[2].at - commits[1].at >= Duration::from_millis(950));
    // RateLimit-Remaining 0: no new request until RateLimit-Reset (the one other request the
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
async fn a_refused_token_is_an_error_naming_gitlab_token_and_writes_nothing() {
    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let err = backfill(&app, &client(&fake.url(), "wrong", 100))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("GITLAB_TOKEN") && err.contains("401"), "{err}");
    assert_eq!(fake.seen().len(), 1, "the first 401 stops the backfill");
    assert_eq!(fake.seen()[0].token.as_deref(), Some("wrong"));
    assert!(dump(&store).is_empty(), "nothing written");
    assert!(settle(&app, &mut BTreeMap::new()).await.spans.is_empty());
}

#[tokio::test]
async fn an_answer_that_does_not_parse_names_the_endpoint_and_the_field() {
    let mut s = scenario();
    s.mrs[0].as_object_mut().unwrap().remove("source_branch");
    let fake = Fake::start(s, vec![]).await;
    let app = new_app().await;
    let err = format!(
        "{:#}",
        backfill(&app, &client(&fake.url(), TOKEN, 100))
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("/merge_requests") && err.contains("source_branch"),
        "{err}"
    );
    // Resources are delivered one after the other, a page's worth at a time once all of it
    // reads: the issues before were delivered, nothing of the merge requests or after.
    let names = span_names(&settle(&app, &mut BTreeMap::new()).await);
    assert!(names.iter().any(|n| n.starts_with("ISSUE ")), "{names:?}");
    assert!(
        !names.iter().any(|n| ["MR ", "RUN ", "JOB ", "DEPLOY "]
            .iter()
            .any(|p| n.starts_with(p))),
        "{names:?}"
    );

    let mut s = scenario();
    s.pipelines[1]["created_at"] = json!("yesterday");
    let fake = Fake::start(s, vec![]).await;
    let app = new_app().await;
    let err = format!(
        "{:#}",
        backfill(&app, &client(&fake.url(), TOKEN, 100))
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("/pipelines") && err.contains("created_at"),
        "{err}"
    );
    let names = span_names(&settle(&app, &mut BTreeMap::new()).await);
    assert!(names.iter().any(|n| n.starts_with("MR ")), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| ["RUN ", "JOB ", "DEPLOY "].iter().any(|p| n.starts_with(p))),
        "{names:?}"
    );
}

fn span_names(r: &Result) -> Vec<String> {
    r.spans.values().map(|s| s.name.clone()).collect()
}

/// The window starts counting at --since: the merge request merged before it (and shipped by a
/// deployment before it) is not read, so the first deployment of the window ships only what
/// landed after --since.
#[tokio::test]
async fn the_first_deployment_of_the_window_ships_only_what_landed_in_it() {
    let mut s = scenario();
    // The old !7 was merged on the default branch in January and deployed then.
    let old_merge = sha('7');
    s.commits.last_mut().unwrap().parents = vec![old_merge.clone()];
    s.commits.push(C {
        sha: old_merge.clone(),
        parents: vec![],
        at: "2024-01-02T10:00:00.000Z".into(),
        message: format!("Merge branch 'old' into 'master'\n\nSee merge request {PROJECT}!7"),
    });
    let mut old_dep = s.deployments[0].clone();
    old_dep["id"] = json!(300);
    old_dep["sha"] = json!(old_merge);
    old_dep["created_at"] = json!("2024-01-03T10:00:00.000Z");
    old_dep["updated_at"] = json!("2024-01-03T10:05:00.000Z");
    old_dep["finished_at"] = json!("2024-01-03T10:05:00.000Z");
    s.deployments.push(old_dep);
    let fake = Fake::start(s, vec![]).await;
    let app = new_app().await;
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    assert_eq!(summary.items["merge_requests"], 1, "{summary:?}");
    assert_eq!(summary.items["deployments"], 3, "{summary:?}");
    let got = settle(&app, &mut BTreeMap::new()).await;
    let first = got
        .spans
        .values()
        .find(|s| attr(s, "deployment.id").contains("\"301\""))
        .expect("deployment 301");
    assert_eq!(
        attr(first, "valuestream.deployment.changes"),
        format!("{:?}", valuestream::model::AttrValue::from(1i64)),
        "{first:?}"
    );
    // The same as the webhooks of the window alone.
    let reference = webhooks_only().await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
}

/// Random parts of the webhooks, in random order, before and after a backfill (a delivery lost
/// while a hook was disabled, a late retry): always the webhooks' spans and series.
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

/// `--group`: every project of the group (keyset pagination) but the archived ones.
#[tokio::test]
async fn a_group_is_read_project_by_project() {
    let reference = webhooks_only().await;
    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    let mut opts = gitlab::Options::new(vec![], SINCE.parse().unwrap(), None);
    opts.groups = vec!["gitlabhq".into()];
    let c = client(&fake.url(), TOKEN, 100);
    gitlab::check_token(&c, &opts).await.unwrap();
    gitlab::run(&c, &opts, &RouterSink(&app)).await.unwrap();
    let listed: Vec<Seen> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("/groups/gitlabhq/projects"))
        .collect();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].query.contains("archived=false") && listed[0].query.contains("pagination=keyset"),
        "{listed:?}"
    );
    assert_eq!(fake.count("%2Fold"), 0, "archived: not read");
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
}

/// A Push Hook carries the newest 20 commits of a push: a merge that brought 25 is delivered
/// so, and the lead time starts at the oldest of those 20, as with the webhook.
#[tokio::test]
async fn a_push_carries_the_newest_twenty_commits_as_gitlab_sends() {
    let mut s = scenario();
    // The branch had 25 commits: a…, then 24 more on top.
    let mut branch: Vec<C> = Vec::new();
    let mut parent = sha('0');
    for i in 0..25u32 {
        let c = C {
            sha: format!("{:040x}", 0xf000 + i),
            parents: vec![parent.clone()],
            at: format!("2024-03-01T08:{:02}:00.000Z", 10 + i),
            message: format!("step {i}\n"),
        };
        parent = c.sha.clone();
        branch.push(c);
    }
    let merge = s.commits.iter_mut().find(|c| c.sha == sha('b')).unwrap();
    merge.parents = vec![sha('0'), parent.clone()];
    s.commits.retain(|c| c.sha != sha('a'));
    branch.reverse();
    s.commits.extend(branch);
    let fake = Fake::start(s, vec![]).await;
    let app = new_app().await;
    let sink = Capture::default();
    gitlab::run(&client(&fake.url(), TOKEN, 100), &options(), &sink)
        .await
        .unwrap();
    let pushes = sink.0.lock().unwrap().clone();
    let merge_push = pushes
        .iter()
        .find(|b| b["object_kind"] == "push" && b["after"] == json!(sha('b')))
        .unwrap();
    assert_eq!(merge_push["total_commits_count"], 26);
    let ids: Vec<&str> = merge_push["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 20);
    assert_eq!(
        *ids.last().unwrap(),
        sha('b'),
        "oldest first, the merge last"
    );
    assert_eq!(ids[0], format!("{:040x}", 0xf000 + 6));
    drop(app);
}

/// Keeps the bodies of the deliveries a backfill makes.
#[derive(Default)]
struct Capture(std::sync::Mutex<Vec<serde_json::Value>>);

#[async_trait::async_trait]
impl Sink for Capture {
    async fn deliver(&self, d: &Recorded) -> anyhow::Result<(u16, String)> {
        self.0
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&d.body).unwrap());
        Ok((200, r#"{"status":"processed","facts":1}"#.into()))
    }
}

/// API requests per merge request on a project of many: lists cost one request per page of
/// 100; pipelines one more each (their end and queue time).
#[tokio::test]
async fn requests_per_merge_request() {
    const N: u64 = 200;
    let mut s = scenario();
    let template = s.mrs[0].clone();
    s.mrs.clear();
    s.issues.clear();
    s.history.clear();
    s.pipelines.clear();
    s.jobs.clear();
    s.deployments.clear();
    for n in 0..N {
        let mut mr = template.clone();
        mr["iid"] = json!(100 + n);
        mr["id"] = json!(10_000 + n);
        mr["source_branch"] = json!(format!("feature-{n}"));
        mr["sha"] = json!(format!("{:040x}", n + 1));
        mr["merge_commit_sha"] = json!(format!("{:040x}", 1_000_000 + n));
        mr["description"] = json!("");
        s.mrs.push(mr);
    }
    let fake = Fake::start(s, vec![]).await;
    let app = new_app().await;
    let started = Instant::now();
    let summary = backfill(&app, &client(&fake.url(), TOKEN, 100))
        .await
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    let per_mr = summary.requests as f64 / N as f64;
    eprintln!(
        "{N} merge requests: {} requests ({per_mr:.3} per merge request), {} deliveries in {took:.2} s ({:.0} items/s, debug build, through the router)",
        summary.requests,
        summary.deliveries(),
        N as f64 / took
    );
    assert_eq!(summary.items["merge_requests"], N);
    // opened and merged per merge request, and the scenario's three default-branch pushes
    assert_eq!(summary.processed, 2 * N + 3);
    // 1 project + 2 pages of /merge_requests + 1 each of /issues, /commits, /pipelines,
    // /deployments (no issue events, jobs or environments: nothing delivered needs them).
    assert_eq!(summary.requests, 7);
    assert!(per_mr <= 1.2);
}

// ---------------------------------------------------------------- kept between runs

/// A backfill keeping its validators and cursors in `store` (as the command does).
async fn backfill_kept(
    app: &App,
    store: &EmbeddedStore,
    client: &Arc<Client>,
    fresh: bool,
) -> anyhow::Result<Summary> {
    let records = StoreRecords(store);
    let mut state = State::new(&records, gitlab::SOURCE);
    state.fresh = fresh;
    gitlab::run_with(client, &options(), &RouterSink(app), &state).await
}

/// GitLab answers with weak `ETag`s (Rails' `Rack::ETag`) and a matching `If-None-Match` with
/// 304 (`Rack::ConditionalGet`): a second run sends the validators kept for the lists read
/// whole (and the project object), gets 304s, leaves those resources alone and adds nothing;
/// `--fresh` sends none.
#[tokio::test]
async fn a_second_run_makes_conditional_requests_answered_304_and_adds_nothing() {
    let reference = webhooks_only().await;
    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let api = || client(&fake.url(), TOKEN, 100);
    let mut spans = BTreeMap::new();
    let first = backfill_kept(&app, &store, &api(), false).await.unwrap();
    assert_eq!(first.not_modified, 0, "nothing to validate yet: {first:?}");
    assert!(fake.seen().iter().all(|s| s.if_none_match.is_none()));
    let once = settle(&app, &mut spans).await;
    assert_eq!(reference, once, "{}", diff(&reference, &once));
    let validators: Vec<String> = dump(&store)
        .into_iter()
        .filter(|r| r.key.pk == format!("etag#gitlab#{PROJECT}"))
        .map(|r| r.key.sk)
        .collect();
    assert_eq!(
        validators,
        [
            "commits",
            "deployments",
            "issues",
            "merge_requests",
            "project"
        ]
    );

    let seen = fake.seen().len();
    let second = backfill_kept(&app, &store, &api(), false).await.unwrap();
    assert_eq!(second.not_modified, 5, "{second:?}");
    assert_eq!((second.processed, second.new_facts), (0, 0), "{second:?}");
    assert!(second.resumed.is_empty(), "the first run finished");
    let unchanged: Vec<String> = ["issues", "merge_requests", "commits", "deployments"]
        .iter()
        .map(|r| format!("{PROJECT} {r}"))
        .collect();
    assert_eq!(second.skipped_resources, unchanged);
    // The pipelines are read again (a job's change need not show in their list): duplicates.
    assert_eq!(second.duplicate, second.deliveries(), "{second:?}");
    assert!(second.deliveries() > 0);
    let asked = &fake.seen()[seen..];
    let conditional: Vec<u16> = asked
        .iter()
        .filter(|s| s.if_none_match.is_some())
        .map(|s| s.status)
        .collect();
    assert_eq!(conditional, [304; 5], "{asked:#?}");
    for unread in ["/events", "/environments"] {
        assert!(!asked.iter().any(|s| s.path.ends_with(unread)), "{unread}");
    }
    let twice = settle(&app, &mut spans).await; // panics on a span exported twice
    assert_eq!(once, twice, "{}", diff(&once, &twice));

    // A merge request opened and closed since: its list answers 200 and is read again (the
    // new one delivered, the others answered duplicate); the other lists stay 304.
    let mut mr = scenario().mrs[0].clone();
    mr["iid"] = json!(77);
    mr["id"] = json!(7777);
    mr["title"] = json!("Try another cache");
    mr["source_branch"] = json!("try-cache");
    mr["state"] = json!("closed");
    mr["merged_at"] = serde_json::Value::Null;
    mr["closed_at"] = json!("2024-03-02T15:00:00.000Z");
    mr["updated_at"] = json!("2024-03-02T15:00:00.000Z");
    fake.more_mrs.lock().unwrap().push(mr);
    let seen = fake.seen().len();
    let third = backfill_kept(&app, &store, &api(), false).await.unwrap();
    let asked = &fake.seen()[seen..];
    let status_of = |suffix: &str| {
        asked
            .iter()
            .filter(|s| s.path.ends_with(suffix))
            .map(|s| (s.status, s.if_none_match.is_some()))
            .collect::<Vec<_>>()
    };
    assert_eq!(status_of("/merge_requests"), [(200, true)], "{asked:#?}");
    assert_eq!(status_of("/issues"), [(304, true)]);
    assert_eq!(third.not_modified, 4, "{third:?}");
    assert_eq!(third.new_facts, 2, "opened and closed: {third:?}");
    let changed = settle(&app, &mut spans).await;
    assert!(changed.spans.values().any(|s| s.name.starts_with("MR !77")));
    // And the list's new validator answers 304 next time.
    let fourth = backfill_kept(&app, &store, &api(), false).await.unwrap();
    assert_eq!(
        (fourth.not_modified, fourth.processed),
        (5, 0),
        "{fourth:?}"
    );

    let seen = fake.seen().len();
    let fresh = backfill_kept(&app, &store, &api(), true).await.unwrap();
    assert_eq!(fresh.not_modified, 0, "{fresh:?}");
    assert_eq!(fresh.duplicate, first.deliveries() + 2, "{fresh:?}");
    assert!(fake.seen()[seen..]
        .iter()
        .all(|s| s.if_none_match.is_none()));
}

/// A backfill stuck (and dropped: Ctrl-C) after `k` deliveries, then the same backfill again:
/// it resumes the interrupted run where its cursors stand, reads no resource the first one
/// finished and no pipeline it delivered, and the result is the uninterrupted one, with no
/// delivery repeated beyond the item being delivered when it stopped.
#[tokio::test]
async fn a_backfill_killed_half_way_resumes_where_it_stopped() {
    let reference = webhooks_only().await;
    let fake = Fake::start(scenario(), vec![]).await;
    let details = |from: usize, to: usize| {
        fake.seen()[from..to]
            .iter()
            .filter(|s| s.path.contains("/pipelines/"))
            .count()
    };
    let (full, full_facts) = {
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let app = new_app_on(store.clone()).await;
        let api = client(&fake.url(), TOKEN, 1);
        let s = backfill_kept(&app, &store, &api, false).await.unwrap();
        (s, facts(&store))
    };
    let total = full.deliveries() as usize;
    let pipelines = full.items["pipelines"] as usize;
    assert!(total > 10 && pipelines > 1, "{full:?}");
    for k in [1, total / 3, total / 2, 2 * total / 3, total - 1] {
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let app = new_app_on(store.clone()).await;
        let stuck = Stuck::after(k, RouterSink(&app));
        let records = StoreRecords(store.as_ref());
        let state = State::new(&records, gitlab::SOURCE);
        let api = client(&fake.url(), TOKEN, 1);
        let opts = options();
        let s0 = fake.seen().len();
        tokio::select! {
            r = gitlab::run_with(&api, &opts, &stuck, &state) => panic!("k={k}: finished: {r:?}"),
            _ = stuck.stuck.notified() => {} // dropped here, mid-delivery
        }
        let s1 = fake.seen().len();
        let resumed = backfill_kept(&app, &store, &client(&fake.url(), TOKEN, 1), false)
            .await
            .unwrap();
        let s2 = fake.seen().len();
        assert_eq!(resumed.resumed, [PROJECT], "k={k}: {resumed:?}");
        assert_eq!(resumed.refused, 0);
        assert_eq!(resumed.processed as usize, total - k, "k={k}: {resumed:?}");
        assert!(
            resumed.duplicate <= 8 && resumed.duplicate as usize <= k,
            "k={k}: {resumed:?}"
        );
        let got = settle(&app, &mut BTreeMap::new()).await; // panics on a span exported twice
        assert_eq!(reference, got, "k={k}:\n{}", diff(&reference, &got));
        assert_eq!(full_facts, facts(&store), "k={k}: the same facts");
        let asked = &fake.seen()[s1..s2];
        for (resource, suffix) in [
            ("issues", "/issues"),
            ("merge_requests", "/merge_requests"),
            ("commits", "/repository/commits"),
        ] {
            let done = format!("{PROJECT} {resource} (done before the interruption)");
            if resumed.skipped_resources.contains(&done) {
                assert!(
                    !asked.iter().any(|s| s.path.ends_with(suffix)),
                    "k={k}: {resource} read again: {asked:#?}"
                );
            }
        }
        assert!(
            details(s0, s2) <= pipelines + 1,
            "k={k}: pipelines read twice: {} then {}",
            details(s0, s1),
            details(s1, s2)
        );
        assert!((s1 - s0) + (s2 - s1) < 2 * full.requests as usize, "k={k}");
        // The next run is a new one: not a resumption, nothing new.
        let next = backfill_kept(&app, &store, &client(&fake.url(), TOKEN, 1), false)
            .await
            .unwrap();
        assert!(next.resumed.is_empty(), "k={k}: {next:?}");
        assert_eq!(next.processed, 0, "k={k}: {next:?}");
    }
}

/// A refused delivery stops the cursors: the run is not marked finished, and the next one
/// resumes from before the refusal and delivers what was refused.
#[tokio::test]
async fn a_refused_delivery_stops_the_cursors_and_the_next_run_delivers_it() {
    struct Refuse<'a>(RouterSink<'a>, AtomicUsize);
    #[async_trait::async_trait]
    impl Sink for Refuse<'_> {
        async fn deliver(&self, d: &Recorded) -> anyhow::Result<(u16, String)> {
            if self.1.fetch_add(1, Ordering::SeqCst) == 4 {
                return Ok((500, r#"{"status":"error"}"#.into()));
            }
            self.0.deliver(d).await
        }
    }
    let reference = webhooks_only().await;
    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let records = StoreRecords(store.as_ref());
    let state = State::new(&records, gitlab::SOURCE);
    let api = client(&fake.url(), TOKEN, 1);
    let refuse = Refuse(RouterSink(&app), AtomicUsize::new(0));
    let first = gitlab::run_with(&api, &options(), &refuse, &state)
        .await
        .unwrap();
    assert_eq!(first.refused, 1, "{first:?}");
    let run = dump(&store)
        .into_iter()
        .find(|r| r.key.pk == format!("backfill#gitlab#{PROJECT}") && r.key.sk == "run")
        .unwrap();
    let run: serde_json::Value = serde_json::from_slice(run.data.as_bytes()).unwrap();
    assert_eq!(run["finished"], false, "{run}");
    assert!(
        !dump(&store)
            .iter()
            .any(|r| r.key.pk.starts_with("etag#") && r.key.sk != "project"),
        "no validator past the refusal"
    );
    let second = backfill_kept(&app, &store, &client(&fake.url(), TOKEN, 1), false)
        .await
        .unwrap();
    assert_eq!(second.resumed, [PROJECT], "{second:?}");
    assert_eq!(second.processed, 1, "the refused delivery: {second:?}");
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
}

// ---------------------------------------------------------------- the command line

fn cli(args: &[String], token: Option<&str>, extra: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_valuestream"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("VALUESTREAM_") || k.starts_with("OTEL_") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("GITLAB_TOKEN");
    if let Some(t) = token {
        cmd.env("GITLAB_TOKEN", t);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

async fn cli_async(
    args: Vec<String>,
    token: Option<&'static str>,
    extra: Vec<(&'static str, String)>,
) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        cli(&args, token, &extra)
    })
    .await
    .unwrap()
}

fn args(url: &str, rest: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "backfill",
        "gitlab",
        "--project",
        PROJECT,
        "--since",
        SINCE,
        "--api-url",
        url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(rest.iter().map(|s| s.to_string()));
    a
}

#[tokio::test]
async fn the_command_needs_gitlab_token_before_anything_is_written() {
    let fake = Fake::start(scenario(), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap().to_string();
    let a = args(&fake.url(), &["--data-dir", &data]);
    let out = cli_async(a.clone(), None, vec![]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("GITLAB_TOKEN is not set"), "{stderr}");
    assert!(fake.seen().is_empty(), "no request without a token");
    assert!(!std::path::Path::new(&data).exists(), "no store opened");

    let out = cli_async(a, Some("wrong"), vec![]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("GITLAB_TOKEN") && stderr.contains("401"),
        "{stderr}"
    );
    assert_eq!(fake.seen().len(), 1);
    assert!(!std::path::Path::new(&data).exists(), "no store opened");
}

#[tokio::test]
async fn the_command_writes_the_store_once() {
    let fake = Fake::start(scenario(), vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data = data.to_str().unwrap().to_string();
    let a = args(&fake.url(), &["--data-dir", &data, "--page-size", "2"]);
    let first = cli_async(a.clone(), Some(TOKEN), vec![]).await;
    let (out, err) = (
        String::from_utf8_lossy(&first.stdout).into_owned(),
        String::from_utf8_lossy(&first.stderr).into_owned(),
    );
    assert!(first.status.success(), "{out}\n{err}");
    assert!(out.contains("0 duplicate, 0 ignored, 0 refused"), "{out}");
    assert!(
        err.contains("merge requests: page 1"),
        "progress lines: {err}"
    );
    assert!(out.contains("API requests"), "{out}");
    let n: u64 = out
        .split("deliveries ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(n > 20, "{out}");
    // Again: the lists read whole in one page answer 304 (their validators are in the store),
    // the rest is answered duplicate.
    let second = cli_async(a.clone(), Some(TOKEN), vec![]).await;
    let out2 = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{out2}");
    assert!(
        out2.contains(
            ": 0 new (0 of them changed no span, 0 brought facts the store did not hold), "
        ),
        "{out2}"
    );
    assert!(out2.contains("0 ignored, 0 refused"), "{out2}");
    assert!(!out2.contains(", 0 answered 304 Not Modified)"), "{out2}");
    assert!(
        out2.contains("backfill: unchanged since the last run: "),
        "{out2}"
    );
    // --fresh: everything read and answered duplicate.
    let mut fresh = a;
    fresh.push("--fresh".into());
    let third = cli_async(fresh, Some(TOKEN), vec![]).await;
    let out3 = String::from_utf8_lossy(&third.stdout).into_owned();
    assert!(third.status.success(), "{out3}");
    assert!(
        out3.contains(&format!(": 0 new (0 of them changed no span, 0 brought facts the store did not hold), {n} duplicate,")),
        "{out3}"
    );
    assert!(out3.contains(", 0 answered 304 Not Modified)"), "{out3}");
}

/// `--to URL`: the deliveries go to a running instance, with the configured hook secret.
#[tokio::test]
async fn the_command_posts_to_a_running_instance() {
    let reference = webhooks_only().await;
    let app = new_app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app.router.clone()).into_future());
    let fake = Fake::start(scenario(), vec![]).await;
    let out = cli_async(
        args(&fake.url(), &["--to", &to]),
        Some(TOKEN),
        vec![("VALUESTREAM_GITLAB_TOKEN", HOOK_SECRET.to_string())],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("0 duplicate, 0 ignored, 0 refused"),
        "{stdout}"
    );
    // The token tried on the project, then 9 lists of one page and the 2 pipelines on their own.
    assert!(stdout.contains("API requests 12 (0 retried"), "{stdout}");
    let got = settle(&app, &mut BTreeMap::new()).await;
    assert_eq!(reference, got, "{}", diff(&reference, &got));
}

#[tokio::test]
async fn the_same_result_on_dynamodb() {
    let reference = webhooks_only().await;
    let moto = common::moto::Moto::start().await;

    let fake = Fake::start(scenario(), vec![]).await;
    let app = app_with(Arc::new(moto.store().await), gitlab_config()).await;
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
    let app = app_with(Arc::new(moto.store().await), gitlab_config()).await;
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
