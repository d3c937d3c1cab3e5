//! The scheduled sync of GitLab projects, PagerDuty services and Jira projects (issue 26, part
//! 4), as `tests/sync.rs` proves it for GitHub: against the fakes of `tests/common/`, webhooks
//! are lost, one sync run heals them (the same spans and series as if they had come),
//! `valuestream_sync_healed_total{source,repository}` counts exactly the healed deliveries, and a
//! second run an interval later heals nothing, counts nothing twice and exports nothing twice.

mod common;
#[path = "common/fake_github.rs"]
#[allow(unused_imports)]
mod fake_github;
#[path = "common/fake_gitlab.rs"]
mod fake_gitlab;
#[path = "common/fake_jira.rs"]
mod fake_jira;
#[path = "common/fake_pagerduty.rs"]
mod fake_pagerduty;

use axum::http::StatusCode;
use common::*;
use fake_github::{diff, settle};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use valuestream::config::{Config, Secret};
use valuestream::entrypoints::sync::Syncer;
use valuestream::model::Time;
use valuestream::sources::verify::hmac_sha256_hex;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::Store;
use valuestream::sync::{cursors, Limits, SyncSettings};

const HEALED: &str = "valuestream_sync_healed_total";
/// Every scenario lies in March 2024, from the fakes' `SINCE` on: a run at the end of March
/// whose first read goes 30 days back reads exactly the backfill tests' window.
const NOW: &str = "2024-03-31T00:00:00Z";
const LOOKBACK: &str = "2592000";

fn minute() -> Limits {
    Limits::new(Duration::from_secs(60), Duration::from_secs(60))
}

/// The app's own pipeline synced with `pairs` as the settings (and the lookback above), with
/// `creds` put into the app's configuration.
fn syncer(app: &App, pairs: &[(&str, String)], creds: impl FnOnce(&mut Config)) -> Syncer {
    let settings = SyncSettings::from_lookup(|k| {
        if k == "VALUESTREAM_SYNC_LOOKBACK_SECS" {
            return Some(LOOKBACK.into());
        }
        pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    let mut config = (*app.config).clone();
    creds(&mut config);
    Syncer::new(settings, app.pipeline.clone(), Arc::new(config))
}

/// The `/metrics` lines without the healed counter, and the healed counter's lines.
fn split_healed(r: &fake_github::Result) -> (Vec<String>, Vec<String>) {
    r.metrics
        .iter()
        .cloned()
        .partition(|l| !l.starts_with(HEALED))
}

/// A first run heals exactly `lost` deliveries (the app then holds what `reference` holds, and
/// the counter says `lost`); a second run 15 minutes later heals and exports nothing more.
async fn heals_once(
    app: &App,
    store: &EmbeddedStore,
    sync: &Syncer,
    reference: &fake_github::Result,
    (source, scope): (&str, &str),
    lost: u64,
) {
    let now: Time = NOW.parse().unwrap();
    let first = sync.run_at(now, minute()).await.unwrap();
    assert_eq!((first.synced(), first.failed()), (1, 0), "{first:?}");
    assert_eq!(first.refused(), 0, "{first:?}");
    assert_eq!(
        first.healed(),
        lost,
        "exactly the lost deliveries: {first:?}"
    );
    let mut spans = BTreeMap::new();
    let healed = settle(app, &mut spans).await;
    let (series, counter) = split_healed(&healed);
    let (want, _) = split_healed(reference);
    assert_eq!(series, want, "the same series as if the webhooks had come");
    assert_eq!(
        healed.spans,
        reference.spans,
        "the same spans:\n{}",
        diff(reference, &healed)
    );
    let line = format!("{HEALED}{{source=\"{source}\",repository=\"{scope}\"}} {lost}");
    assert_eq!(counter, [line], "/metrics counts the healed deliveries");
    let c = cursors(store).await.unwrap();
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        (c[0].source.as_str(), c[0].repository.as_str()),
        (source, scope)
    );
    assert_eq!(
        (c[0].healed, c[0].syncs, c[0].started),
        (lost, 1, Some(now))
    );

    let second = sync
        .run_at(now + chrono::TimeDelta::minutes(15), minute())
        .await
        .unwrap();
    assert_eq!((second.synced(), second.failed()), (1, 0), "{second:?}");
    assert_eq!((second.healed(), second.processed()), (0, 0), "{second:?}");
    let again = settle(app, &mut spans).await; // panics on a span exported twice
    assert_eq!(again, healed, "{}", diff(&healed, &again));
    let c = cursors(store).await.unwrap();
    assert_eq!((c[0].healed, c[0].syncs), (lost, 2), "no double counting");
}

#[tokio::test]
async fn a_gitlab_project_sync_heals_lost_webhooks_once() {
    use fake_gitlab::*;
    let hooks = webhooks(&scenario());
    // The merge of the merge request and the production deployment's success: lost.
    let is_lost = |(event, _, body): &Hook| {
        (event == "Merge Request Hook" && body["object_attributes"]["action"] == "merge")
            || (event == "Deployment Hook" && body["status"] == "success")
    };
    let lost = hooks.iter().filter(|h| is_lost(h)).count();
    assert!(lost >= 2, "the lost webhooks are in the scenario");
    let delivered: Vec<Hook> = hooks.iter().filter(|h| !is_lost(h)).cloned().collect();
    let app = new_app().await;
    post_hooks(&app, &hooks).await;
    let reference = settle(&app, &mut BTreeMap::new()).await;

    let broken_app = new_app().await;
    post_hooks(&broken_app, &delivered).await;
    let broken = settle(&broken_app, &mut BTreeMap::new()).await;
    assert_ne!(reference, broken, "the lost webhooks change the result");

    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = new_app_on(store.clone()).await;
    post_hooks(&app, &delivered).await;
    let sync = syncer(
        &app,
        &[
            ("VALUESTREAM_SYNC_GITLAB_PROJECTS", PROJECT.into()),
            ("VALUESTREAM_GITLAB_API_URL", fake.url()),
        ],
        |c| c.gitlab_api_token = Secret::new(Some(TOKEN.into())),
    );
    heals_once(
        &app,
        &store,
        &sync,
        &reference,
        ("gitlab", PROJECT),
        lost as u64,
    )
    .await;
}

fn pd_v1(body: &[u8]) -> String {
    format!("v1={}", hmac_sha256_hex(fake_pagerduty::SECRET, body))
}

async fn pd_app(store: Arc<dyn Store>) -> App {
    let config = test_config(&[("VALUESTREAM_PAGERDUTY_SECRET", fake_pagerduty::SECRET)]);
    let app = app_with(store, config).await;
    app.set_auto_drain(false);
    app
}

async fn pd_post(app: &App, hooks: &[fake_pagerduty::Hook]) {
    for (id, body) in hooks {
        let body = serde_json::to_vec(body).unwrap();
        let sig = pd_v1(&body);
        let headers = [
            ("content-type", "application/json"),
            ("x-pagerduty-signature", sig.as_str()),
        ];
        let (status, v) = app.post("pagerduty", &headers, body).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::ACCEPTED,
            "{id}: {v}"
        );
    }
}

#[tokio::test]
async fn a_pagerduty_service_sync_heals_lost_webhooks_once() {
    use fake_pagerduty::*;
    let hooks = webhooks(&scenario());
    // The resolutions (the outage that cost them also cost the incidents' recovery times).
    let is_lost = |(_, body): &Hook| body["event"]["event_type"] == "incident.resolved";
    let lost = hooks.iter().filter(|h| is_lost(h)).count();
    assert!(lost >= 2, "the lost webhooks are in the scenario");
    let delivered: Vec<Hook> = hooks.iter().filter(|h| !is_lost(h)).cloned().collect();
    let app = pd_app(Arc::new(EmbeddedStore::in_memory().unwrap())).await;
    pd_post(&app, &hooks).await;
    let reference = settle(&app, &mut BTreeMap::new()).await;

    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = pd_app(store.clone()).await;
    pd_post(&app, &delivered).await;
    let sync = syncer(
        &app,
        &[
            ("VALUESTREAM_SYNC_PAGERDUTY_SERVICES", SERVICE.into()),
            ("VALUESTREAM_PAGERDUTY_API_URL", fake.url()),
        ],
        |c| c.pagerduty_api_token = Secret::new(Some(TOKEN.into())),
    );
    heals_once(
        &app,
        &store,
        &sync,
        &reference,
        ("pagerduty", SERVICE),
        lost as u64,
    )
    .await;
}

fn jira_signature(body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(fake_jira::SECRET, body))
}

async fn jira_app(store: Arc<dyn Store>) -> App {
    let config = test_config(&[("VALUESTREAM_JIRA_SECRET", fake_jira::SECRET)]);
    let app = app_with(store, config).await;
    app.set_auto_drain(false);
    app
}

async fn jira_post(app: &App, hooks: &[fake_jira::Hook]) {
    for (id, body) in hooks {
        let body = serde_json::to_vec(body).unwrap();
        let sig = jira_signature(&body);
        let headers = [
            ("content-type", "application/json"),
            ("x-hub-signature", sig.as_str()),
            ("x-atlassian-webhook-identifier", id.as_str()),
        ];
        let (status, v) = app.post("jira", &headers, body).await;
        assert_eq!(status, StatusCode::OK, "{id}: {v}");
    }
}

#[tokio::test]
async fn a_jira_project_sync_heals_lost_webhooks_once() {
    use fake_jira::*;
    let hooks = webhooks(&scenario());
    // Every other delivery: creations and transitions.
    let lost_ids: Vec<String> = hooks
        .iter()
        .skip(1)
        .step_by(2)
        .map(|h| h.0.clone())
        .collect();
    let is_lost = |(id, _): &Hook| lost_ids.contains(id);
    let delivered: Vec<Hook> = hooks.iter().filter(|h| !is_lost(h)).cloned().collect();
    let app = jira_app(Arc::new(EmbeddedStore::in_memory().unwrap())).await;
    jira_post(&app, &hooks).await;
    let reference = settle(&app, &mut BTreeMap::new()).await;

    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = jira_app(store.clone()).await;
    jira_post(&app, &delivered).await;
    let sync = syncer(
        &app,
        &[
            ("VALUESTREAM_SYNC_JIRA_PROJECTS", "SHOP".into()),
            ("VALUESTREAM_JIRA_API_URL", fake.url()),
        ],
        |c| {
            c.jira_email = Secret::new(Some(EMAIL.into()));
            c.jira_api_token = Secret::new(Some(TOKEN.into()));
        },
    );
    heals_once(
        &app,
        &store,
        &sync,
        &reference,
        ("jira", "SHOP"),
        lost_ids.len() as u64,
    )
    .await;
}

/// A configured source without its credentials: that source's targets fail (cursor unmoved,
/// error naming the variable), the others sync.
#[tokio::test]
async fn a_source_without_its_token_fails_alone() {
    use fake_pagerduty::*;
    let fake = Fake::start(scenario(), vec![]).await;
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = pd_app(store.clone()).await;
    let sync = syncer(
        &app,
        &[
            ("VALUESTREAM_SYNC_PAGERDUTY_SERVICES", SERVICE.into()),
            ("VALUESTREAM_PAGERDUTY_API_URL", fake.url()),
            ("VALUESTREAM_SYNC_JIRA_PROJECTS", "SHOP".into()),
            ("VALUESTREAM_JIRA_API_URL", fake.url()),
        ],
        |c| c.pagerduty_api_token = Secret::new(Some(TOKEN.into())),
    );
    let report = sync.run_at(NOW.parse().unwrap(), minute()).await.unwrap();
    assert_eq!((report.synced(), report.failed()), (1, 1), "{report:?}");
    let failed = report.repos.iter().find(|r| r.error.is_some()).unwrap();
    assert_eq!(failed.source, "jira");
    assert!(
        failed.error.as_deref().unwrap().contains("JIRA_EMAIL"),
        "{failed:?}"
    );
    let c = cursors(store.as_ref()).await.unwrap();
    assert_eq!(c.len(), 1, "only the synced service has a cursor: {c:?}");
    assert_eq!(c[0].source, "pagerduty");
}
