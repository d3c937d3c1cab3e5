//! Scale and isolation (issue 30, part 0): one big deployment settles and exports on both
//! stores with every lead time counted and a bounded span; a repository whose settlement fails
//! is put aside while every other repository settles and exports, whether it fails on a record
//! or on the settle memory budget (`VALUESTREAM_SETTLE_MEMORY_MB`).

mod common;

use chrono::TimeDelta;
use common::moto::Moto;
use common::*;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use valuestream::engine::metrics;
use valuestream::engine::{keys, Engine};
use valuestream::export::otlp::{OtlpExporter, OtlpSettings};
use valuestream::model::attr;
use valuestream::model::{
    Action, AttrValue, Commit, Ending, Input, Kind, Push, Repo, Time, WorkEvent, WorkResult,
};
use valuestream::pipeline::Pipeline;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::{Cond, Data, Key, Record, Store, Write};

fn t0() -> Time {
    "2024-03-01T00:00:00Z".parse().unwrap()
}

fn change(repo: &str, n: usize, merged: Time) -> Input {
    let mut ev = WorkEvent::new(
        Kind::Change,
        format!("gh/pr/{repo}/{n}"),
        format!("PR #{n}"),
        Action::Close,
    );
    ev.repo = Some(Repo::new(repo));
    ev.start = Some(merged - TimeDelta::hours(2));
    ev.end = Some(merged);
    ev.at = Some(merged);
    ev.outcome = Some(Ending::ok(WorkResult::Merged));
    ev.merge_sha = Some(format!("{n:040x}"));
    Input::Work(ev)
}

/// A push of direct commits `from..to` to the default branch (no change brought them).
fn direct_commits(repo: &str, from: usize, to: usize) -> Input {
    let time = t0() + TimeDelta::minutes(to as i64);
    Input::Push(Push {
        repo: Repo::new(repo),
        branch: "main".into(),
        to_default_branch: true,
        before: None,
        after: format!("{:040x}", 1_000_000 + to - 1),
        time,
        commits: (from..to)
            .map(|i| Commit {
                sha: format!("{:040x}", 1_000_000 + i),
                time: t0() + TimeDelta::minutes(i as i64),
                message: "direct".into(),
                merges: false,
            })
            .collect(),
        attributes: Default::default(),
    })
}

fn deployment(repo: &str, id: &str, start: Time, ok: bool) -> Input {
    let mut ev = WorkEvent::new(
        Kind::Deployment,
        format!("gh/deployment/{repo}/{id}"),
        format!("deploy {id}"),
        Action::Close,
    );
    ev.repo = Some(Repo::new(repo));
    ev.environment = Some("production".into());
    ev.start = Some(start);
    ev.end = Some(start + TimeDelta::minutes(10));
    ev.at = ev.end;
    ev.outcome = Some(if ok {
        Ending::ok(WorkResult::Success)
    } else {
        Ending::failed(WorkResult::Failure)
    });
    Input::Work(ev)
}

/// A pipeline on `store` whose clock a test moves (`advance`), exporting to a real receiver.
struct Rig {
    pipeline: Pipeline,
    receiver: Receiver,
    offset: Arc<AtomicI64>,
}

impl Rig {
    async fn new(store: Arc<dyn Store>, extra: &[(&str, &str)]) -> Rig {
        let receiver = Receiver::start().await;
        let settings = OtlpSettings::http(&receiver.url, std::time::Duration::from_secs(5));
        let exporter = Arc::new(OtlpExporter::new(settings).unwrap());
        let offset = Arc::new(AtomicI64::new(0));
        let o = offset.clone();
        let clock =
            Arc::new(move || chrono::Utc::now() + TimeDelta::seconds(o.load(Ordering::SeqCst)));
        let mut pairs = vec![("VALUESTREAM_SETTLE_SECS", "0")];
        pairs.extend_from_slice(extra);
        let config = Arc::new(test_config(&pairs));
        let engine = Engine::new(store, config).with_clock(clock);
        let pipeline = Pipeline::new(engine, exporter).with_retry_secs(0);
        Rig {
            pipeline,
            receiver,
            offset,
        }
    }

    fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::SeqCst);
    }

    /// Delivers `inputs` in deliveries of `per` inputs each.
    async fn deliver(&self, name: &str, inputs: Vec<Input>, per: usize) {
        for (i, chunk) in inputs.chunks(per).enumerate() {
            let id = format!("{name}-{i}");
            self.pipeline
                .engine
                .apply("github", &id, chunk)
                .await
                .unwrap();
        }
    }

    async fn lead_times(&self) -> u64 {
        let series = self.pipeline.series().await.unwrap();
        series
            .iter()
            .filter(|s| s.name == metrics::LEAD_TIME)
            .map(|s| s.count)
            .sum()
    }
}

/// 150 merged pull requests and 4,850 direct commits land, then one production deployment
/// ships all 5,000: before tallies its ledger held 5,000 entries (~1.4 MB, over DynamoDB's
/// 400 KB item limit: the settlement failed on every drain and stopped every export), and its
/// span carried 150 links.
async fn a_deployment_that_ships_5000_changes(store: Arc<dyn Store>) {
    const PRS: usize = 150;
    const DIRECT: usize = 4_850;
    let rig = Rig::new(store.clone(), &[]).await;
    let repo = "big/monorepo";
    let changes: Vec<Input> = (0..PRS)
        .map(|n| change(repo, n, t0() + TimeDelta::minutes(n as i64 * 30)))
        .collect();
    rig.deliver("pr", changes, 20).await;
    let pushes: Vec<Input> = (0..DIRECT)
        .step_by(20)
        .map(|i| direct_commits(repo, i, (i + 20).min(DIRECT)))
        .collect();
    rig.deliver("push", pushes, 10).await;
    let drained = rig.pipeline.drain_all().await.unwrap();
    assert_eq!(drained.settled.len(), PRS, "every change span");
    assert_eq!(rig.lead_times().await, 0, "nothing deployed yet");

    let start = t0() + TimeDelta::days(200);
    rig.deliver("deploy", vec![deployment(repo, "1", start, true)], 1)
        .await;
    let mut drained = rig.pipeline.drain_all().await.unwrap();
    // An export the collector did not take in time (a loaded machine) is tried again by the
    // next drain, as on a schedule.
    for _ in 0..5 {
        if rig.pipeline.pending().await.unwrap() == 0 {
            break;
        }
        drained = drained.then(rig.pipeline.drain_all().await.unwrap());
    }
    assert!(drained.put_aside.is_empty(), "{:?}", drained.put_aside);
    let (deployments, stages): (Vec<_>, Vec<_>) = drained
        .settled
        .iter()
        .partition(|s| s.kind == Kind::Deployment);
    assert_eq!(deployments.len(), 1, "one deployment span");
    // The deploy stages of the changes it shipped first, bounded like its links.
    assert_eq!(stages.len(), 128, "deploy stages up to the link limit");
    assert!(stages
        .iter()
        .all(|s| s.attributes.get(attr::CHANGE_STAGE) == Some(&AttrValue::Str("deploy".into()))));
    let span = deployments[0];
    assert_eq!(
        span.attributes.get(attr::DEPLOYMENT_CHANGES),
        Some(&AttrValue::Int((PRS + DIRECT) as i64)),
        "the true number of changes shipped"
    );
    assert_eq!(span.links.len(), 128, "OpenTelemetry's default link limit");
    assert_eq!(span.dropped_links as usize, PRS - 128);
    // the most recently landed changes are the ones linked
    let linked: Vec<String> = span
        .links
        .iter()
        .map(|l| match l.attributes.get(attr::KEY) {
            Some(AttrValue::Str(k)) => k.clone(),
            other => panic!("a shipped link names its change: {other:?}"),
        })
        .collect();
    assert!(linked.contains(&format!("gh/pr/{repo}/{}", PRS - 1)));
    assert!(!linked.contains(&format!("gh/pr/{repo}/0")));
    assert_eq!(
        rig.lead_times().await,
        (PRS + DIRECT) as u64,
        "every lead time counted"
    );
    assert_eq!(
        rig.pipeline.pending().await.unwrap(),
        0,
        "nothing left in the outbox"
    );

    // The collector received the span with its links bounded and the rest counted.
    let got = rig.receiver.span("deploy 1");
    assert_eq!((got.links.len(), got.dropped_links), (128, 22));

    // The deployment's summary (its ledger) stays small whatever it shipped.
    let summary = store
        .get_many(&[keys::summary(
            &keys::Scope::Repo(repo.to_string()),
            &format!("gh/deployment/{repo}/1"),
        )])
        .await
        .unwrap()
        .remove(0)
        .expect("the deployment's summary");
    assert!(summary.data.len() < 8_000, "{} bytes", summary.data.len());
}

#[tokio::test]
async fn a_deployment_that_ships_5000_changes_on_the_embedded_store() {
    a_deployment_that_ships_5000_changes(Arc::new(EmbeddedStore::in_memory().unwrap())).await;
}

#[tokio::test]
async fn a_deployment_that_ships_5000_changes_on_dynamodb() {
    let moto = Moto::start().await;
    a_deployment_that_ships_5000_changes(Arc::new(moto.store().await)).await;
}

#[tokio::test]
async fn the_link_limit_follows_otel_span_link_count_limit() {
    let rig = Rig::new(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        &[("OTEL_SPAN_LINK_COUNT_LIMIT", "3")],
    )
    .await;
    let changes = (0..5)
        .map(|n| change("a/b", n, t0() + TimeDelta::hours(n as i64)))
        .collect();
    rig.deliver("pr", changes, 5).await;
    rig.deliver(
        "d",
        vec![deployment("a/b", "1", t0() + TimeDelta::days(1), true)],
        1,
    )
    .await;
    rig.pipeline.drain_all().await.unwrap();
    let span = rig.receiver.span("deploy 1");
    assert_eq!((span.links.len(), span.dropped_links), (3, 2));
    assert_eq!(span.attrs[attr::DEPLOYMENT_CHANGES], serde_json::json!(5));
    assert!(
        valuestream::config::Config::from_pairs(&[("OTEL_SPAN_LINK_COUNT_LIMIT", "x")])
            .unwrap_err()
            .to_string()
            .contains("OTEL_SPAN_LINK_COUNT_LIMIT")
    );
}

#[tokio::test]
async fn only_a_successful_deployment_claims_its_changes_as_shipped() {
    // A failed deployment attempted the changes; the fixing deployment after it shipped them.
    let rig = Rig::new(Arc::new(EmbeddedStore::in_memory().unwrap()), &[]).await;
    rig.deliver("pr", vec![change("a/b", 1, t0())], 1).await;
    let day = TimeDelta::days(1);
    let deploys = vec![
        deployment("a/b", "1", t0() + day, false),
        deployment("a/b", "2", t0() + day * 2, true),
    ];
    rig.deliver("d", deploys, 1).await;
    rig.pipeline.drain_all().await.unwrap();
    let kinds = |name: &str| -> Vec<String> {
        let span = rig.receiver.span(name);
        span.links
            .iter()
            .map(|(_, _, a)| a[attr::LINK].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds("deploy 1"), ["attempted"]);
    assert_eq!(kinds("deploy 2"), ["shipped"]);
    assert_eq!(
        rig.lead_times().await,
        1,
        "counted once, by the successful deployment"
    );
}

/// A review app's first deployment ships every change landed before it, so while it is live
/// the repository's checkpoint lists every sealed landing, and every settlement reads them (the
/// history, by key). What it shipped goes into its span only (links and
/// `valuestream.deployment.changes`; lead times, deploy stages and rework are production's):
/// once that span is out, the next sealing keeps only the landings deployments can still ship.
#[tokio::test]
async fn a_review_apps_exported_deployment_no_longer_holds_the_landings() {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let lag = [
        ("VALUESTREAM_SEAL_AFTER_SECS", "3600"),
        ("VALUESTREAM_INCIDENT_WINDOW_HOURS", "1"),
    ];
    let rig = Rig::new(store.clone(), &lag).await;
    let at = |minutes: i64| t0() + TimeDelta::minutes(minutes);
    let changes: Vec<Input> = (1..=40).map(|n| change("a/b", n, at(n as i64))).collect();
    rig.deliver("pr", changes, 1).await;
    rig.deliver("prod", vec![deployment("a/b", "p1", at(60), true)], 1)
        .await;
    rig.pipeline.drain_all().await.unwrap();
    // The review app at 3 h, with a change merged at 2 h 15.
    let Input::Work(mut review) = deployment("a/b", "r1", at(180), true) else {
        unreachable!()
    };
    review.environment = Some("review-1".into());
    let late = change("a/b", 41, at(135));
    rig.deliver("review", vec![Input::Work(review), late], 1)
        .await;
    rig.pipeline.drain_all().await.unwrap();
    let span = rig.receiver.span("deploy r1");
    assert_eq!(
        span.attrs[attr::DEPLOYMENT_CHANGES],
        serde_json::json!(41),
        "exported with everything it shipped"
    );
    // A change at 3 h 30: the cut passes change 41, and the sealing that follows writes the
    // checkpoint again.
    rig.deliver("pr", vec![change("a/b", 42, at(210))], 1).await;
    rig.pipeline.drain_all().await.unwrap();
    let cp = store
        .get_many(&[keys::checkpoint(&keys::Scope::Repo("a/b".into()))])
        .await
        .unwrap()
        .remove(0)
        .expect("a checkpoint")
        .data
        .to_value();
    let listed: Vec<&str> = cp["summaries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k.as_str())
        .filter(|k| k.starts_with("gh/pr/"))
        .collect();
    assert!(
        listed.is_empty(),
        "the checkpoint lists no sealed landing: {cp}"
    );
    assert_eq!(cp["landed_before"], serde_json::json!(true), "{cp}");
}

/// A summary record no version of valuestream can read, planted in a repository's partition:
/// every settlement of that repository fails.
async fn plant_unreadable(store: &dyn Store, repo: &str) {
    let record = Record {
        key: Key::new(
            keys::scope_pk(&keys::Scope::Repo(repo.to_string())),
            "s#gh/pr/x/unreadable",
        ),
        version: 1,
        expires_at: valuestream::store::now_epoch() + 3600,
        data: Data::from_json(b"{\"not\": \"a summary\"}".to_vec()).unwrap(),
    };
    let write = Write::Put {
        record,
        cond: Cond::Any,
    };
    store.commit(vec![write]).await.unwrap();
}

async fn markers(store: &dyn Store) -> Vec<String> {
    let found = valuestream::engine::drain::pending_markers(
        store,
        valuestream::store::KeyRange::all(),
        1000,
    )
    .await
    .unwrap();
    found.into_iter().map(|r| r.key.sk).collect()
}

#[tokio::test]
async fn a_failing_repository_is_put_aside_and_the_others_export_on_dynamodb() {
    let moto = Moto::start().await;
    let store: Arc<dyn Store> = Arc::new(moto.store().await);
    let rig = Rig::new(store.clone(), &[]).await;
    plant_unreadable(store.as_ref(), "bad/one").await;
    rig.deliver("bad", vec![change("bad/one", 1, t0())], 1)
        .await;
    rig.deliver("good", vec![change("good/two", 2, t0())], 1)
        .await;

    let drained = rig.pipeline.drain().await.unwrap();
    assert_eq!(drained.put_aside, ["repo#bad/one"]);
    assert_eq!(drained.exported, 1, "the other repository's batch");
    assert_eq!(rig.receiver.span("PR #2").name, "PR #2");
    assert_eq!(rig.pipeline.settle_failures(), 1);
    // The failing repository's wake-up marker moved a minute ahead, counting the failure.
    let left = markers(store.as_ref()).await;
    assert_eq!(left.len(), 1, "{left:?}");
    let wall = keys::time_sk(rig.pipeline.engine.now() + TimeDelta::seconds(50));
    assert!(left[0].as_str() > wall.as_str(), "{left:?} after {wall}");

    // The next drains leave it alone until then: no new failure, nothing exported.
    let again = rig.pipeline.drain().await.unwrap();
    assert!(again.put_aside.is_empty());
    assert_eq!(rig.pipeline.settle_failures(), 1);

    // Still failing a minute later: put aside again, for twice as long.
    rig.advance(61);
    let third = rig.pipeline.drain().await.unwrap();
    assert_eq!(third.put_aside, ["repo#bad/one"]);
    let left = markers(store.as_ref()).await;
    let wall = keys::time_sk(rig.pipeline.engine.now() + TimeDelta::seconds(110));
    assert!(left[0].as_str() > wall.as_str(), "{left:?} after {wall}");

    // Once the cause is gone, the repository settles and exports at its next try.
    let bad = Key::new(
        keys::scope_pk(&keys::Scope::Repo("bad/one".into())),
        "s#gh/pr/x/unreadable",
    );
    let delete = Write::Delete {
        key: bad,
        cond: Cond::Any,
    };
    store.commit(vec![delete]).await.unwrap();
    rig.advance(121);
    let healed = rig.pipeline.drain().await.unwrap();
    assert!(healed.put_aside.is_empty());
    assert_eq!(rig.receiver.span("PR #1").name, "PR #1");
    assert!(markers(store.as_ref()).await.is_empty());
    assert_eq!(rig.lead_times().await, 0);
}

/// A repository whose settlement would hold more than `VALUESTREAM_SETTLE_MEMORY_MB` (here
/// 8 MiB: about 1.3 MiB of stored records) is put aside with the budget named in the cause,
/// rather than taking the drain's process down (on a 256 MB Lambda it was killed, and every
/// drain after it died at the same repository); the other repository settles and exports. With
/// the budget raised, the same repository settles whole: nothing was lost meanwhile.
#[tokio::test]
async fn a_repository_over_the_settle_memory_budget_is_put_aside_on_dynamodb() {
    let moto = Moto::start().await;
    let store: Arc<dyn Store> = Arc::new(moto.store().await);
    let rig = Rig::new(store.clone(), &[("VALUESTREAM_SETTLE_MEMORY_MB", "8")]).await;
    // 400 changes with 5 KB titles: about 2 MB of summaries, over the 1.3 MiB that fits.
    let big: Vec<Input> = (1..=400)
        .map(|n| {
            let mut c = change("big/one", n, t0() + TimeDelta::minutes(n as i64));
            if let Input::Work(ev) = &mut c {
                ev.change_title = Some(format!("change {n} {}", "x".repeat(5_000)));
            }
            c
        })
        .collect();
    rig.deliver("big", big, 16).await;
    rig.deliver("small", vec![change("small/two", 1, t0())], 1)
        .await;

    let drained = rig.pipeline.drain().await.unwrap();
    assert_eq!(drained.put_aside, ["repo#big/one"]);
    assert_eq!(rig.receiver.span("PR #1").name, "PR #1");
    assert_eq!(
        rig.receiver.spans().len(),
        1,
        "only the small repository's span"
    );
    assert_eq!(rig.pipeline.settle_failures(), 1);
    // Tried again once its minute is up: the same cause, naming the budget.
    rig.advance(61);
    let again = rig
        .pipeline
        .engine
        .settle(rig.pipeline.engine.now())
        .await
        .unwrap();
    assert_eq!(again.failed.len(), 1, "{:?}", again.failed);
    let cause = again.failed[0].error.to_string();
    assert!(
        cause.contains("more than VALUESTREAM_SETTLE_MEMORY_MB (8 MiB)"),
        "{cause}"
    );

    // The same store drained with a budget that fits: every change of it settles.
    let roomy = Rig::new(store.clone(), &[("VALUESTREAM_SETTLE_MEMORY_MB", "256")]).await;
    roomy.advance(4 * 3600);
    let mut spans = 0;
    for _ in 0..30 {
        let d = roomy.pipeline.drain().await.unwrap();
        assert!(d.put_aside.is_empty(), "{:?}", d.put_aside);
        spans = roomy.receiver.spans().len();
        if spans == 400 {
            break;
        }
    }
    assert_eq!(spans, 400, "every change of the big repository");
}
