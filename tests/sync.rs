//! The scheduled sync (issue 26, part 4) against the fake GitHub API of
//! `tests/common/fake_github.rs`: webhooks are lost, a sync run heals them (the same spans and
//! series as if they had come), `valuestream_sync_healed_total` counts exactly the healed
//! deliveries, a second run heals nothing and writes nothing, the cursor is stored and the second
//! run asks the API only for what changed since it; bad settings stop the service naming the
//! variable, and `serve`'s timer runs a sync.

mod common;
#[path = "common/fake_github.rs"]
mod fake_github;

use axum::http::StatusCode;
use common::*;
use fake_github::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};
use valuestream::config::Secret;
use valuestream::entrypoints::sync::Syncer;
use valuestream::model::Time;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::sync::{cursors, Limits, SyncSettings};

const HEALED: &str = "valuestream_sync_healed_total";

fn at(hm: &str) -> Time {
    t(hm).parse().unwrap()
}

fn settings(repos: &str, api: &str) -> SyncSettings {
    SyncSettings::from_lookup(|k| match k {
        "VALUESTREAM_SYNC_GITHUB_REPOS" => Some(repos.to_string()),
        "VALUESTREAM_GITHUB_API_URL" => Some(api.to_string()),
        "VALUESTREAM_SYNC_LOOKBACK_SECS" => Some("86400".into()),
        _ => None,
    })
    .unwrap()
}

/// The sync of the app's own pipeline, with the fake's token (the app's secrets shared).
fn syncer(app: &App, repos: &str, fake: &Fake) -> Syncer {
    let mut config = (*app.config).clone();
    config.github_token = Secret::new(Some(TOKEN.into()));
    Syncer::new(
        settings(repos, &fake.url()),
        app.pipeline.clone(),
        Arc::new(config),
    )
}

fn minute() -> Limits {
    Limits::new(Duration::from_secs(60), Duration::from_secs(60))
}

/// The webhooks lost in an outage: the merge of the pull request, a direct push to the default
/// branch and the failed production deployment's status.
fn is_lost(h: &Hook) -> bool {
    let (event, _, body) = h;
    (event == "pull_request" && body["action"] == "closed")
        || (event == "push" && body["after"] == sha('d').as_str())
        || (event == "deployment_status" && body["deployment_status"]["state"] == "failure")
}

/// The `/metrics` lines without the healed counter, and the healed counter's lines.
fn split_healed(r: &fake_github::Result) -> (Vec<String>, Vec<String>) {
    r.metrics
        .iter()
        .cloned()
        .partition(|l| !l.starts_with(HEALED))
}

fn healed_line(n: u64) -> String {
    format!("{HEALED}{{source=\"github\",repository=\"{REPO}\"}} {n}")
}

/// Every record but the sync's own (its cursor and count) and the validators (ETags) of what
/// it read.
fn state(store: &EmbeddedStore) -> Vec<(String, String, u64, String)> {
    dump(store)
        .into_iter()
        .filter(|r| r.key.pk != "sync" && !r.key.pk.starts_with("etag#"))
        .map(|r| (r.key.pk, r.key.sk, r.version, format!("{:?}", r.data)))
        .collect()
}

#[tokio::test]
async fn a_sync_heals_lost_webhooks_once_and_a_second_run_reads_from_the_cursor() {
    let hooks = webhooks(&scenario());
    let lost: Vec<&Hook> = hooks.iter().filter(|h| is_lost(h)).collect();
    assert_eq!(lost.len(), 3, "the three lost webhooks are in the scenario");
    let delivered: Vec<Hook> = hooks.iter().filter(|h| !is_lost(h)).cloned().collect();

    let reference = webhooks_only().await;
    assert!(
        reference.metrics.iter().all(|l| !l.starts_with(HEALED)),
        "no sync, no healed counter"
    );
    // The loss matters: without the three, the spans and series differ.
    let app = new_app().await;
    post_hooks(&app, &delivered).await;
    let broken = settle(&app, &mut BTreeMap::new()).await;
    assert_ne!(reference, broken, "the lost webhooks change the result");

    // (a) The same deliveries, then a sync run: healed.
    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    post_hooks(&app, &delivered).await;
    let sync = syncer(&app, REPO, &fake);
    let first = sync.run_at(at("13:35"), minute()).await.unwrap();
    assert_eq!((first.synced(), first.failed()), (1, 0), "{first:?}");
    assert!(first.deliveries() > 20, "{first:?}");
    assert_eq!(first.refused(), 0, "{first:?}");
    assert_eq!(
        first.healed(),
        lost.len() as u64,
        "exactly the lost deliveries are healed: {first:?}"
    );
    // The webhooks' facts came again under the sync's delivery IDs: processed, not healed.
    assert!(first.processed() > first.healed(), "{first:?}");
    let mut spans = BTreeMap::new();
    let healed = settle(&app, &mut spans).await;
    let (series, counter) = split_healed(&healed);
    let (want, _) = split_healed(&reference);
    assert_eq!(series, want, "the same series as if the webhooks had come");
    assert_eq!(
        healed.spans,
        reference.spans,
        "the same spans:\n{}",
        diff(&reference, &healed)
    );
    assert_eq!(
        counter,
        [healed_line(3)],
        "/metrics counts the healed deliveries"
    );
    let (_, text) = app.get("/metrics").await;
    assert!(
        text.contains(&format!("# TYPE {HEALED} counter\n")),
        "{text}"
    );

    // (c) The cursor: where this run started, and what it read from.
    let c = cursors(store.as_ref()).await.unwrap();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].repository, REPO);
    assert_eq!(c[0].started, Some(at("13:35")));
    assert_eq!(
        c[0].since,
        Some("2024-02-29T13:35:00Z".parse().unwrap()),
        "the first run reads VALUESTREAM_SYNC_LOOKBACK_SECS back"
    );
    assert_eq!((c[0].healed, c[0].syncs), (3, 1));

    // (b) A second run 15 minutes later: nothing new, nothing healed, nothing written.
    let before = state(&store);
    let seen_before = fake.seen().len();
    let second = sync.run_at(at("13:50"), minute()).await.unwrap();
    assert_eq!((second.synced(), second.failed()), (1, 0), "{second:?}");
    assert_eq!(second.healed(), 0, "{second:?}");
    assert_eq!(second.processed(), 0, "{second:?}");
    assert!(
        second.duplicate() > 0 && second.duplicate() == second.deliveries(),
        "what the overlap reads again is answered duplicate: {second:?}"
    );
    assert!(
        second.deliveries() < first.deliveries(),
        "the second run reads less: {second:?}"
    );
    assert_eq!(
        before,
        state(&store),
        "the second run wrote nothing but its cursor (and validators)"
    );
    let again = settle(&app, &mut spans).await; // panics on a span exported twice
    assert_eq!(again, healed, "{}", diff(&healed, &again));
    let c = cursors(store.as_ref()).await.unwrap();
    assert_eq!(c[0].started, Some(at("13:50")));
    assert_eq!((c[0].healed, c[0].syncs), (3, 2));

    // (c) What the second run asked the API: only what changed since the first run's start,
    // less the 10 minutes' overlap.
    let asked: Vec<Seen> = fake.seen()[seen_before..].to_vec();
    let since_of = |suffix: &str| -> Vec<String> {
        asked
            .iter()
            .filter(|s| s.path.ends_with(suffix))
            .map(|s| {
                query_map(&s.query)
                    .get("since")
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    };
    let cursor = "2024-03-01T13:25:00Z";
    for list in ["/issues", "/commits"] {
        let since = since_of(list);
        assert!(!since.is_empty(), "{list} was read");
        assert!(since.iter().all(|s| s == cursor), "{list}: {since:?}");
    }
    // Conditional requests: the repository, the pull request list (no `since`: the same URL
    // every run) and the statuses of the deployment in the window did not change since the
    // first run delivered them: 304, nothing read from them again.
    let not_modified: Vec<&str> = asked
        .iter()
        .filter(|s| s.status == 304)
        .map(|s| s.path.rsplit_once("Hello-World").map_or("", |p| p.1))
        .collect();
    assert_eq!(not_modified, ["", "/pulls", "/deployments/302/statuses"]);
    assert_eq!(second.repos[0].summary.not_modified, 3, "{second:?}");
    let runs: Vec<String> = asked
        .iter()
        .filter(|s| s.path.ends_with("/actions/runs"))
        .map(|s| query_map(&s.query)["created"].clone())
        .collect();
    assert!(
        !runs.is_empty() && runs.iter().all(|c| c.starts_with(&format!("{cursor}.."))),
        "{runs:?}"
    );
    // The first run's lists started at the lookback.
    let first_issues: Vec<String> = fake.seen()[..seen_before]
        .iter()
        .filter(|s| s.path.ends_with("/issues"))
        .map(|s| query_map(&s.query)["since"].clone())
        .collect();
    assert_eq!(first_issues, ["2024-02-29T13:35:00Z"]);
}

/// Healing is by fact, not by delivery ID: a sync after every webhook came heals nothing, and
/// its first run over a store with nothing at all heals every delivery that brought facts.
#[tokio::test]
async fn nothing_lost_nothing_healed() {
    let fake = Fake::start(scenario(), vec![]).await;
    let app = new_app().await;
    post_hooks(&app, &webhooks(&scenario())).await;
    let report = syncer(&app, REPO, &fake)
        .run_at(at("13:35"), minute())
        .await
        .unwrap();
    assert_eq!(report.healed(), 0, "{report:?}");
    assert!(report.processed() > 0, "{report:?}");
    let (_, text) = app.get("/metrics").await;
    assert!(text.contains(&healed_line(0)), "{text}");

    let empty = new_app().await;
    let report = syncer(&empty, REPO, &fake)
        .run_at(at("13:35"), minute())
        .await
        .unwrap();
    assert_eq!(report.refused(), 0, "{report:?}");
    assert!(report.healed() > 20, "{report:?}");
    let (_, text) = empty.get("/metrics").await;
    assert!(text.contains(&healed_line(report.healed())), "{text}");
}

/// A repository that fails keeps its cursor (and the others go on); one not started within the
/// budget is left for the next run, which starts with the repositories synced longest ago.
#[tokio::test]
async fn a_failed_or_unstarted_repository_waits_for_the_next_run() {
    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    let missing = "Codertocat/Missing";
    let sync = syncer(&app, &format!("{missing},{REPO}"), &fake);
    let report = sync.run_at(at("13:35"), minute()).await.unwrap();
    assert_eq!((report.synced(), report.failed()), (1, 1), "{report:?}");
    let failed = report.repos.iter().find(|r| r.error.is_some()).unwrap();
    assert_eq!(failed.repository, missing);
    assert!(
        failed.error.as_deref().unwrap().contains("404"),
        "{failed:?}"
    );
    let c = cursors(store.as_ref()).await.unwrap();
    assert_eq!(c.len(), 1, "only the synced repository has a cursor: {c:?}");
    assert_eq!(c[0].repository, REPO);

    // No budget at all: nothing is started, no cursor moves.
    let report = sync
        .run_at(
            at("13:50"),
            Limits::new(Duration::ZERO, Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(report.skipped(), 2, "{report:?}");
    assert_eq!(cursors(store.as_ref()).await.unwrap(), c);

    // The repository never synced goes first.
    let report = sync.run_at(at("14:05"), minute()).await.unwrap();
    assert_eq!(report.repos[0].repository, missing, "{report:?}");
}

// ---------------------------------------------------------------- the binary

const BIN: &str = env!("CARGO_BIN_EXE_valuestream");

/// Runs `valuestream serve` with only `env`; its exit code and stderr (bounded: 20 s).
fn serve_refused(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir", "state"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve still running with {env:?}: a bad sync setting must stop it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        !dir.path().join("state").exists(),
        "{env:?}: nothing opened before the settings were checked"
    );
    (status.code(), stderr)
}

#[test]
fn bad_sync_settings_stop_serve_naming_the_variable() {
    let repos = ("VALUESTREAM_SYNC_GITHUB_REPOS", REPO);
    let token = ("GITHUB_TOKEN", TOKEN);
    for (env, var) in [
        (
            vec![("VALUESTREAM_SYNC_GITHUB_REPOS", "not-a-repo")],
            "VALUESTREAM_SYNC_GITHUB_REPOS",
        ),
        (
            vec![repos, token, ("VALUESTREAM_SYNC_SECS", "30")],
            "VALUESTREAM_SYNC_SECS",
        ),
        (
            vec![("VALUESTREAM_SYNC_SECS", "15m")],
            "VALUESTREAM_SYNC_SECS",
        ),
        (
            vec![repos, token, ("VALUESTREAM_SYNC_LOOKBACK_SECS", "0")],
            "VALUESTREAM_SYNC_LOOKBACK_SECS",
        ),
        (
            vec![repos, token, ("VALUESTREAM_SYNC_BUDGET_SECS", "-1")],
            "VALUESTREAM_SYNC_BUDGET_SECS",
        ),
        (
            vec![
                repos,
                token,
                ("VALUESTREAM_GITHUB_API_URL", "api.github.com"),
            ],
            "VALUESTREAM_GITHUB_API_URL",
        ),
        // Repositories to sync and no token anywhere.
        (vec![repos], "GITHUB_TOKEN"),
    ] {
        let (code, stderr) = serve_refused(&env);
        assert_eq!(code, Some(1), "{env:?}: exit 1, not a panic:\n{stderr}");
        assert!(stderr.contains(var), "{env:?}: names {var}:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// `serve` with repositories to sync runs a sync at start (then every VALUESTREAM_SYNC_SECS):
/// with nothing delivered, the sync heals the history and `/metrics` counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_a_sync_on_its_timer() {
    let fake = Fake::start(scenario(), vec![]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    // Far enough back to reach the scenario's day.
    let lookback = (chrono::Utc::now() - at("00:00")).num_seconds() + 86_400;
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            "state",
        ])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GITHUB_TOKEN", TOKEN)
        .env("VALUESTREAM_SYNC_GITHUB_REPOS", REPO)
        .env("VALUESTREAM_GITHUB_API_URL", fake.url())
        .env("VALUESTREAM_SYNC_LOOKBACK_SECS", lookback.to_string())
        .env("VALUESTREAM_SETTLE_SECS", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let found = loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            if r.status() == StatusCode::OK {
                last = r.text().await.unwrap_or_default();
                // Healed, then settled and counted like webhooks' (the DORA series).
                if let Some(l) = last.lines().find(|l| l.starts_with(HEALED)) {
                    if last.contains("deployments") {
                        break Some(l.to_string());
                    }
                }
            }
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = found.unwrap_or_else(|| panic!("no {HEALED} on /metrics within 60 s:\n{last}"));
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n > 20, "{line}");
    assert!(
        line.starts_with(&format!(
            "{HEALED}{{source=\"github\",repository=\"{REPO}\"}}"
        )),
        "{line}"
    );
}
