//! Where a change's time goes (issue 27 part 3): a pull request's stages as child spans of its
//! span and as the stage-duration histogram, through the real router, from GitHub deliveries
//! built on the octokit example bodies (tests/fixtures/github), in any delivery order.

mod common;
#[path = "fixtures/metrics/deliveries.rs"]
mod deliveries;

use common::*;
use deliveries::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use valuestream::model::{attr, ids};

const PR_KEY: &str = "github/change/codertocat/hello-world/11";

fn open_pr(action: &str, updated: &str, draft: bool) -> Value {
    let mut v = pull_request(11, "feature/a", "2024-03-04T09:00:00Z", updated, None);
    v["action"] = json!(action);
    let p = &mut v["pull_request"];
    p["state"] = json!("open");
    p["closed_at"] = json!(null);
    p["merged_at"] = json!(null);
    p["merged"] = json!(false);
    p["draft"] = json!(draft);
    v
}

fn rv(at: &str, state: &str, who: &str) -> Value {
    review(11, "feature/a", "2024-03-04T09:00:00Z", at, state, who)
}

/// PR #11 on feature/a: first commit 08:00, opened as a draft at 09:00, reviewed while a draft
/// (09:20), ready at 09:40, review requested 09:45, a bot review 09:50, the first review by a
/// person 10:30, merged 12:00 (e11), a review after the merge 12:30; production deployment 1001
/// of e11 15:00 → 15:10.
fn deliveries() -> Vec<(&'static str, String, Value)> {
    vec![
        (
            "push",
            "d-push-a".into(),
            push("feature/a", &[("a1", "2024-03-04T08:00:00Z", "Start")]),
        ),
        (
            "pull_request",
            "d-opened".into(),
            open_pr("opened", "2024-03-04T09:00:00Z", true),
        ),
        (
            "pull_request_review",
            "d-rv-draft".into(),
            rv("2024-03-04T09:20:00Z", "commented", "octocat"),
        ),
        (
            "pull_request",
            "d-ready".into(),
            open_pr("ready_for_review", "2024-03-04T09:40:00Z", false),
        ),
        (
            "pull_request",
            "d-requested".into(),
            open_pr("review_requested", "2024-03-04T09:45:00Z", false),
        ),
        (
            "pull_request_review",
            "d-rv-bot".into(),
            rv("2024-03-04T09:50:00Z", "commented", "dependabot[bot]"),
        ),
        (
            "pull_request_review",
            "d-rv-first".into(),
            rv("2024-03-04T10:30:00Z", "approved", "octocat"),
        ),
        (
            "pull_request",
            "d-merged".into(),
            pull_request(
                11,
                "feature/a",
                "2024-03-04T09:00:00Z",
                "2024-03-04T12:00:00Z",
                Some("e11"),
            ),
        ),
        (
            "push",
            "d-push-master".into(),
            push(
                "master",
                &[(
                    "e11",
                    "2024-03-04T12:00:00Z",
                    "Merge pull request #11 from Codertocat/feature/a",
                )],
            ),
        ),
        (
            "pull_request_review",
            "d-rv-late".into(),
            rv("2024-03-04T12:30:00Z", "commented", "octocat"),
        ),
        (
            "deployment_status",
            "d-deploy".into(),
            deployment_status(
                1001,
                "production",
                "e11",
                "2024-03-04T15:00:00Z",
                "2024-03-04T15:10:00Z",
                "success",
            ),
        ),
    ]
}

/// Delivers `order`, settling (and exporting) after the positions in `drain_after` and at the end.
async fn run_draining(order: &[usize], drain_after: &[usize]) -> App {
    let app = app().await;
    app.set_auto_drain(false);
    let all = deliveries();
    for (pos, &i) in order.iter().enumerate() {
        let (event, id, body) = &all[i];
        let (status, answer) = app
            .github(event, id, serde_json::to_vec(body).unwrap())
            .await;
        assert!(status.is_success(), "{id}: {status} {answer}");
        if drain_after.contains(&pos) {
            app.pipeline.drain_all().await.unwrap();
        }
    }
    app.pipeline.drain_all().await.unwrap();
    app
}

async fn run(order: &[usize]) -> App {
    run_draining(order, &[]).await
}

/// The stage spans, by name: (start, end, trace, parent, links).
fn stages(app: &App) -> BTreeMap<String, Value> {
    let spans = app.receiver.spans();
    let mut out = BTreeMap::new();
    for s in spans
        .iter()
        .filter(|s| s.attr(attr::CHANGE_STAGE).is_some())
    {
        let prev = out.insert(
            s.name.clone(),
            json!({
                "start": rfc3339(s.start_ns), "end": rfc3339(s.end_ns),
                "trace": s.trace_id, "parent": s.parent_span_id, "span": s.span_id,
                "links": s.links.iter().map(|l| l.2.get(attr::LINK).cloned()).collect::<Vec<_>>(),
            }),
        );
        assert!(prev.is_none(), "stage {} exported twice", s.name);
    }
    out
}

fn stage_histogram(metrics: &str) -> BTreeMap<String, (f64, f64)> {
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in metrics.lines() {
        for (suffix, slot) in [("_count{", 0), ("_sum{", 1)] {
            let family = format!("valuestream_change_stage_duration_seconds{suffix}");
            let Some(rest) = line.strip_prefix(&family) else {
                continue;
            };
            let stage = rest
                .split("valuestream_change_stage=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap()
                .to_string();
            let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            let e = out.entry(stage).or_default();
            if slot == 0 {
                e.0 += value;
            } else {
                e.1 += value;
            }
        }
    }
    out
}

#[tokio::test]
async fn a_pull_request_s_stages_are_child_spans_and_a_histogram() {
    let n = deliveries().len();
    let app = run(&(0..n).collect::<Vec<_>>()).await;
    let pr = app.receiver.span("PR #11");
    assert_eq!(pr.span_id, ids::span_id(PR_KEY, 0));
    let got = stages(&app);
    let want = [
        (
            "coding",
            "2024-03-04T08:00:00.000Z",
            "2024-03-04T09:40:00.000Z",
        ),
        (
            "pickup",
            "2024-03-04T09:40:00.000Z",
            "2024-03-04T10:30:00.000Z",
        ),
        (
            "review",
            "2024-03-04T10:30:00.000Z",
            "2024-03-04T12:00:00.000Z",
        ),
        (
            "deploy",
            "2024-03-04T12:00:00.000Z",
            "2024-03-04T15:10:00.000Z",
        ),
    ];
    assert_eq!(got.len(), 4, "{got:#?}");
    for (name, start, end) in want {
        let s = &got[name];
        assert_eq!(
            (s["start"].as_str(), s["end"].as_str()),
            (Some(start), Some(end)),
            "{name}"
        );
        assert_eq!(
            s["trace"],
            json!(pr.trace_id),
            "{name}: in the change's trace"
        );
        assert_eq!(
            s["parent"],
            json!(pr.span_id),
            "{name}: a child of the change's span"
        );
        let key = format!("{PR_KEY}#stage#{name}");
        assert_eq!(
            s["span"],
            json!(ids::span_id(&key, 0)),
            "{name}: a deterministic ID"
        );
    }
    let deploy = app.receiver.span("deploy");
    let dep_span = app
        .receiver
        .spans()
        .into_iter()
        .find(|s| s.attr(attr::KIND).and_then(Value::as_str) == Some("deployment"))
        .expect("the deployment span");
    assert_eq!(deploy.links.len(), 1);
    assert_eq!(
        deploy.links[0].1, dep_span.span_id,
        "deploy links its deployment"
    );
    assert_eq!(got["deploy"]["links"], json!([json!("deployed_by")]));
    // Reviews and review requests are the change span's events; the review after the merge is not.
    let events: Vec<(String, String)> = pr
        .events
        .iter()
        .map(|(n, t)| (n.clone(), rfc3339(*t)))
        .collect();
    for (name, at) in [
        ("review submitted", "2024-03-04T09:20:00.000Z"),
        ("ready for review", "2024-03-04T09:40:00.000Z"),
        ("review requested", "2024-03-04T09:45:00.000Z"),
        ("review submitted", "2024-03-04T09:50:00.000Z"),
        ("review submitted", "2024-03-04T10:30:00.000Z"),
    ] {
        assert!(
            events.contains(&(name.to_string(), at.to_string())),
            "{name} at {at}: {events:?}"
        );
    }
    assert!(
        !events.iter().any(|(_, t)| t == "2024-03-04T12:30:00.000Z"),
        "a review after the merge is late news: {events:?}"
    );
    // The histogram: one observation per stage, exact seconds.
    let (_, metrics) = app.get("/metrics").await;
    let h = stage_histogram(&metrics);
    let want: BTreeMap<String, (f64, f64)> = [
        ("coding", 6000.0),
        ("pickup", 3000.0),
        ("review", 5400.0),
        ("deploy", 11400.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), (1.0, v)))
    .collect();
    assert_eq!(h, want, "{metrics}");
}

/// Every delivery order gives the same stage spans and histogram (the permutation property
/// of tests/order.rs covers reviews and drafts too).
#[tokio::test]
async fn the_stages_are_the_same_whatever_the_delivery_order() {
    let n = deliveries().len();
    let in_order = run(&(0..n).collect::<Vec<_>>()).await;
    let want_spans = stages(&in_order);
    let want_hist = stage_histogram(&in_order.get("/metrics").await.1);
    let mut orders: Vec<Vec<usize>> = vec![(0..n).rev().collect()];
    // Seeded shuffles.
    let mut seed = 27u64;
    for _ in 0..6 {
        let mut o: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            o.swap(i, (seed >> 33) as usize % (i + 1));
        }
        orders.push(o);
    }
    for o in orders {
        let app = run(&o).await;
        assert_eq!(stages(&app), want_spans, "order {o:?}");
        assert_eq!(
            stage_histogram(&app.get("/metrics").await.1),
            want_hist,
            "order {o:?}"
        );
    }
}

/// The deploy stage goes out exactly once, with whichever of the change and the deployment that
/// first shipped it is exported last: here the deployment is settled and exported first (it
/// ships nothing yet), and the change's export brings the deploy stage; in order, the
/// deployment's export brings it.
#[tokio::test]
async fn the_deploy_stage_goes_out_with_whichever_is_exported_last() {
    let n = deliveries().len();
    // In order, settling before the deployment arrives: the change is exported first.
    let change_first = run_draining(&(0..n).collect::<Vec<_>>(), &[n - 2]).await;
    let deploy_first = run_draining(
        &std::iter::once(n - 1).chain(0..n - 1).collect::<Vec<_>>(),
        &[0],
    )
    .await;
    let a = stages(&change_first);
    assert_eq!(a.len(), 4, "{a:#?}");
    assert_eq!(a, stages(&deploy_first));
}

/// A pushed commit: (tag, time, message).
type Commit<'a> = (&'a str, &'a str, &'a str);

/// Squash and rebase merges: the merge commit GitHub reports is the squash commit, or the last
/// of the rebased commits, pushed without a merge message; the deployment that ships it ends
/// the change's deploy stage, and the rebased commits are not counted as direct commits.
#[tokio::test]
async fn squash_and_rebase_merges_have_a_deploy_stage() {
    let cases: [(&str, &[Commit]); 2] = [
        (
            "sq11",
            &[("sq11", "2024-03-04T12:00:00Z", "Add feature a (#11)")],
        ),
        (
            "rb11",
            &[
                ("rb1", "2024-03-04T12:00:00Z", "Start feature a"),
                ("rb2", "2024-03-04T12:00:00Z", "Test feature a"),
                ("rb11", "2024-03-04T12:00:00Z", "Finish feature a"),
            ],
        ),
    ];
    for (merge, commits) in cases {
        let app = app().await;
        app.set_auto_drain(false);
        let bodies = [
            (
                "pull_request",
                "m",
                pull_request(
                    11,
                    "feature/a",
                    "2024-03-04T09:00:00Z",
                    "2024-03-04T12:00:00Z",
                    Some(merge),
                ),
            ),
            ("push", "p", push("master", commits)),
            (
                "deployment_status",
                "d",
                deployment_status(
                    1001,
                    "production",
                    merge,
                    "2024-03-04T15:00:00Z",
                    "2024-03-04T15:10:00Z",
                    "success",
                ),
            ),
        ];
        for (event, id, body) in bodies {
            let (s, b) = app
                .github(event, id, serde_json::to_vec(&body).unwrap())
                .await;
            assert!(s.is_success(), "{merge} {id}: {b}");
        }
        app.pipeline.drain_all().await.unwrap();
        let got = stages(&app);
        let deploy = got
            .get("deploy")
            .unwrap_or_else(|| panic!("{merge}: {got:#?}"));
        assert_eq!(
            (deploy["start"].as_str(), deploy["end"].as_str()),
            (
                Some("2024-03-04T12:00:00.000Z"),
                Some("2024-03-04T15:10:00.000Z")
            ),
            "{merge}"
        );
        let lead = point(&app, "valuestream.change.lead_time").expect("lead time");
        assert_eq!(
            lead.value, 1.0,
            "{merge}: one change shipped, no direct commits"
        );
    }
}
