//! What a backfill keeps in the store between runs (issue 26, part 3): validators for
//! conditional requests (`ETag` / `If-None-Match` → 304, which GitHub does not charge to the rate
//! limit) and a cursor per repository and resource, so that a run killed half-way is continued
//! by the same command. Against the fake GitHub API of `tests/common/fake_github.rs`, which
//! serves weak `ETag`s of its answers' content and answers a matching `If-None-Match` with 304.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;

use common::stuck::Stuck;
use common::*;
use fake_github::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use valuestream::backfill::{github, Client, ClientSettings, Sink, State, Summary};
use valuestream::replay::Recorded;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::sync::StoreRecords;

/// The router as a backfill's sink (as in tests/backfill_github.rs).
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

fn client(url: &str, page_size: u32) -> Arc<Client> {
    let mut settings = ClientSettings::new(url, TOKEN.into(), github::TOKEN_VAR);
    settings.page_size = page_size;
    settings.concurrency = 2;
    settings.backoff = Duration::from_millis(50);
    settings.quiet = true;
    Client::new(settings).unwrap()
}

fn options() -> github::Options {
    github::Options::new(vec![REPO.into()], SINCE.parse().unwrap(), None)
}

async fn backfill(
    app: &App,
    store: &EmbeddedStore,
    fake: &Fake,
    page_size: u32,
) -> anyhow::Result<Summary> {
    let records = StoreRecords(store);
    let state = State::new(&records, github::SOURCE);
    github::run_with(
        &client(&fake.url(), page_size),
        &options(),
        &RouterSink(app),
        &state,
    )
    .await
}

/// The result of a plain backfill (no state) of what `fake` serves now, on a store of its own.
async fn plain_backfill(fake: &Fake) -> fake_github::Result {
    let app = new_app().await;
    github::run(&client(&fake.url(), 100), &options(), &RouterSink(&app))
        .await
        .unwrap();
    settle(&app, &mut BTreeMap::new()).await
}

#[tokio::test]
async fn a_second_run_makes_304s_and_adds_nothing_and_a_changed_resource_is_read_again() {
    let reference = webhooks_only().await;
    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let mut spans = BTreeMap::new();

    let first = backfill(&app, &store, &fake, 100).await.unwrap();
    assert_eq!(first.not_modified, 0, "nothing to validate yet: {first:?}");
    let once = settle(&app, &mut spans).await;
    assert_eq!(reference, once, "{}", diff(&reference, &once));
    // The validators are in the store: a record per resource URL, each small.
    let validators: Vec<_> = dump(&store)
        .into_iter()
        .filter(|r| r.key.pk.starts_with("etag#github#"))
        .collect();
    let names: Vec<&str> = validators.iter().map(|r| r.key.sk.as_str()).collect();
    assert_eq!(
        names,
        [
            "commits",
            "issues",
            "jobs/100",
            "pull_requests",
            "repository",
            "statuses/301",
            "statuses/302",
            "statuses/303",
            "steps/2"
        ]
    );
    assert!(
        validators.iter().all(|r| r.data.len() < 2_000),
        "{validators:?}"
    );
    let ttl = chrono::Utc::now().timestamp() + valuestream::backfill::STATE_TTL_SECS;
    assert!(validators.iter().all(|r| (ttl - r.expires_at).abs() < 60));

    // (a) Again, nothing changed: every validated resource answers 304 (not charged), nothing
    // new is delivered, nothing is exported again.
    let charged = *fake.charged.lock().unwrap();
    let seen = fake.seen().len();
    let second = backfill(&app, &store, &fake, 100).await.unwrap();
    assert_eq!(second.not_modified, 8, "{second:?}");
    assert_eq!((second.processed, second.new_facts), (0, 0), "{second:?}");
    assert!(
        second.resumed.is_empty(),
        "the first run finished: {second:?}"
    );
    assert_eq!(
        second.skipped_resources,
        [
            format!("{REPO} issues"),
            format!("{REPO} pull_requests"),
            format!("{REPO} commits")
        ]
    );
    // What is read again: the workflow runs and deployments lists (their items' deliveries
    // are duplicates); their jobs and statuses answered 304.
    assert_eq!(second.duplicate, second.deliveries(), "{second:?}");
    assert!(second.deliveries() < first.deliveries() / 3, "{second:?}");
    let asked = &fake.seen()[seen..];
    assert_eq!(
        asked.iter().filter(|s| s.status == 304).count(),
        8,
        "{asked:#?}"
    );
    assert_eq!(
        *fake.charged.lock().unwrap() - charged,
        second.requests - second.not_modified,
        "304s are not charged to the rate limit"
    );
    let twice = settle(&app, &mut spans).await; // panics on a span exported twice
    assert_eq!(once, twice, "{}", diff(&once, &twice));

    // (b) Something changed: a new pull request, merged, and a status on the staging
    // deployment. Their lists answer 200 and are read again; the rest stays 304.
    {
        let mut s = fake.s.lock().unwrap();
        let mut pr = s.pulls[0].clone();
        pr["number"] = json!(3);
        pr["id"] = json!(3333);
        pr["title"] = json!("Tune the cache");
        pr["body"] = json!("");
        pr["head"]["ref"] = json!("tune");
        pr["head"]["sha"] = json!(sha('c'));
        pr["created_at"] = json!(t("15:00"));
        pr["closed_at"] = json!(t("15:30"));
        pr["merged_at"] = json!(t("15:30"));
        pr["updated_at"] = json!(t("15:31"));
        pr["merge_commit_sha"] = json!(sha('9'));
        s.pulls.insert(0, pr);
        let mut done = s.statuses[&303][0].clone();
        done["id"] = json!(3032);
        done["state"] = json!("success");
        done["created_at"] = json!(t("13:25"));
        done["updated_at"] = json!(t("13:25"));
        s.statuses.get_mut(&303).unwrap().insert(0, done);
    }
    let seen = fake.seen().len();
    let third = backfill(&app, &store, &fake, 100).await.unwrap();
    let asked = &fake.seen()[seen..];
    let status_of = |suffix: &str| {
        asked
            .iter()
            .filter(|s| s.path.ends_with(suffix))
            .map(|s| s.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(status_of("/pulls"), [200], "re-read: {asked:#?}");
    // The steps of PR #3 only: PR #2's `updated_at` is the one its validator kept.
    assert_eq!(status_of("/graphql"), [200]);
    assert_eq!(status_of("/deployments/303/statuses"), [200]);
    assert_eq!(status_of("/deployments/301/statuses"), [304]);
    assert_eq!(status_of("/commits"), [304]);
    // The list is read whole again (PR #2's deliveries answered duplicate), and so is the
    // issues list, which lists pull requests too.
    assert_eq!(third.items["pull_requests"], 2, "{third:?}");
    assert_eq!(status_of("/issues"), [200]);
    // PR #3 opened and closed, the staging deployment's success.
    assert_eq!(third.new_facts, 3, "{third:?}");
    let changed = settle(&app, &mut spans).await;
    assert!(changed.spans.values().any(|s| s.name.starts_with("PR #3")));
    // The same as a plain backfill of what the API says now.
    let want = plain_backfill(&fake).await;
    assert_eq!(want, changed, "{}", diff(&want, &changed));
}

/// A backfill stuck (and dropped: an aborted task, Ctrl-C) after `k` deliveries, for several
/// `k`, then the same backfill again: it resumes the interrupted run where its cursors stand,
/// re-reads nothing the first one finished, and the result is the uninterrupted one, with no
/// span exported twice and no delivery repeated beyond the page being delivered when it
/// stopped.
#[tokio::test]
async fn a_backfill_killed_half_way_resumes_where_it_stopped() {
    let reference = webhooks_only().await;
    let fake = Fake::start(scenario(), vec![]).await;
    let full = {
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let app = new_app_on(store.clone()).await;
        let s = backfill(&app, &store, &fake, 1).await.unwrap();
        (s, facts(&store))
    };
    let total = full.0.deliveries() as usize;
    assert_eq!(total, 24);
    for k in [1, 4, 9, 13, 17, 21] {
        let store = Arc::new(EmbeddedStore::in_memory().unwrap());
        let app = new_app_on(store.clone()).await;
        let stuck = Stuck::after(k, RouterSink(&app));
        let records = StoreRecords(store.as_ref());
        let state = State::new(&records, github::SOURCE);
        let api = client(&fake.url(), 1);
        let opts = options();
        let run = github::run_with(&api, &opts, &stuck, &state);
        tokio::select! {
            r = run => panic!("k={k}: finished before it was stopped: {r:?}"),
            _ = stuck.stuck.notified() => {} // the run is dropped here, mid-delivery
        }
        let requests_before = api.requests();

        let seen = fake.seen().len();
        let resumed = backfill(&app, &store, &fake, 1).await.unwrap();
        assert_eq!(resumed.resumed, [REPO], "k={k}: {resumed:?}");
        assert_eq!(resumed.refused, 0);
        // Every delivery the stopped run did not make, once; of the ones it made, only those
        // of the page it was on come again (answered duplicate, counted nowhere).
        assert_eq!(resumed.processed as usize, total - k, "k={k}: {resumed:?}");
        assert!(
            resumed.duplicate <= 3 && resumed.duplicate as usize <= k,
            "k={k}: {resumed:?}"
        );
        let got = settle(&app, &mut BTreeMap::new()).await; // panics on a span exported twice
        assert_eq!(reference, got, "k={k}:\n{}", diff(&reference, &got));
        assert_eq!(full.1, facts(&store), "k={k}: the same facts");
        // The resources the stopped run finished are not read again.
        let asked = &fake.seen()[seen..];
        if resumed
            .skipped_resources
            .iter()
            .any(|r| r.contains("issues"))
        {
            assert!(
                !asked.iter().any(|s| s.path.ends_with("/issues")),
                "k={k}: {asked:#?}"
            );
        }
        assert!(
            (requests_before + resumed.requests) < 2 * full.0.requests,
            "k={k}: {requests_before} + {} requests",
            resumed.requests
        );
        // The next run is a new one: not a resumption.
        let next = backfill(&app, &store, &fake, 1).await.unwrap();
        assert!(next.resumed.is_empty(), "k={k}: {next:?}");
        assert_eq!(next.processed, 0, "k={k}: {next:?}");
    }
}

/// The command killed (SIGKILL) while it waits for an answer, then run again: it says it
/// resumes, and the spans it settles are exactly those of an uninterrupted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_killed_and_run_again_continues_where_it_stopped() {
    let fake = Fake::start(
        scenario(),
        vec![("/deployments/302/statuses", 1, Fault::Hang)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let command = |data: &std::path::Path| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_valuestream"));
        cmd.args([
            "backfill",
            "github",
            "--repo",
            REPO,
            "--since",
            SINCE,
            "--api-url",
            &fake.url(),
            "--data-dir",
            data.to_str().unwrap(),
            "--page-size",
            "1",
        ]);
        for (k, _) in std::env::vars() {
            if k.starts_with("VALUESTREAM_") || k.starts_with("OTEL_") || k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("GITHUB_TOKEN", TOKEN);
        cmd
    };
    let data = dir.path().join("store");
    let mut child = command(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while *fake.hung.lock().unwrap() == 0 {
        assert!(Instant::now() < deadline, "never reached the deployments");
        assert!(child.try_wait().unwrap().is_none(), "ended on its own");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    fake.faults.lock().unwrap().clear();

    let spans = |out: &std::process::Output| {
        let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("span "))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    let mut again = command(&data);
    let resumed = tokio::task::spawn_blocking(move || again.output().unwrap())
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&resumed.stdout).into_owned();
    let err = String::from_utf8_lossy(&resumed.stderr).into_owned();
    assert!(resumed.status.success(), "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "backfill: resumed the interrupted run of {REPO} ("
        )),
        "{out}"
    );
    assert!(
        err.contains(&format!("backfill: {REPO}: resuming the run started at ")),
        "{err}"
    );
    // The killed run had delivered everything before the deployments: none of it again.
    for done in ["issues", "pull_requests", "commits", "workflow_runs"] {
        assert!(
            out.contains(&format!("{REPO} {done} (done before the interruption)")),
            "{done}: {out}"
        );
    }
    // The chunk on its way to the router when the process was killed (deliveries go while the
    // next chunk is read) may come again: at most that one deployment's two deliveries,
    // answered duplicate and counted once.
    let duplicates: u64 = out
        .split(" duplicate,")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the summary's duplicate count");
    assert!(duplicates <= 2, "{duplicates} duplicates: {out}");

    let clean_dir = dir.path().join("clean");
    let mut clean = command(&clean_dir);
    let clean = tokio::task::spawn_blocking(move || clean.output().unwrap())
        .await
        .unwrap();
    assert!(clean.status.success());
    assert!(!spans(&clean).is_empty());
    assert_eq!(spans(&clean), spans(&resumed));
}

/// The validators and cursors on DynamoDB (moto): a second run answers 304 and adds nothing.
#[tokio::test]
async fn validators_and_cursors_on_dynamodb() {
    let reference = webhooks_only().await;
    let moto = common::moto::Moto::start().await;
    let store = Arc::new(moto.store().await);
    let app = app_with(store.clone(), test_config(&[])).await;
    app.set_auto_drain(false);
    let fake = Fake::start(scenario(), vec![]).await;
    let records = StoreRecords(store.as_ref());
    let state = State::new(&records, github::SOURCE);
    let run = || async {
        github::run_with(
            &client(&fake.url(), 100),
            &options(),
            &RouterSink(&app),
            &state,
        )
        .await
        .unwrap()
    };
    let first = run().await;
    assert_eq!(first.processed, 24, "{first:?}");
    let mut spans = BTreeMap::new();
    let once = settle(&app, &mut spans).await;
    assert_eq!(reference, once, "{}", diff(&reference, &once));
    let second = run().await;
    assert_eq!(second.not_modified, 8, "{second:?}");
    assert_eq!(second.processed, 0, "{second:?}");
    assert_eq!(once, settle(&app, &mut spans).await);
}
