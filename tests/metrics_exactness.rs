//! Exact metrics across separate, concurrent processes: each GitHub delivery of
//! tests/fixtures/metrics/exactness/ is handled by its own `valuestream replay <file>` process
//! (a Lambda sandbox that handles one webhook and vanishes), all started at once against one
//! DynamoDB table on a real `moto_server`, each exporting OTLP to a real receiver. One delivery
//! is handled by two processes at the same time (a GitHub redelivery racing the original).
//! The latest exported point of every series must be the exact total, every series' points
//! must form one monotonic series, and the redelivery must count once.
//!
//! The deliveries (their effects on the metrics do not depend on the order they are applied in):
//!
//! ```text
//! codertocat/hello-world (team checkout)
//!   PR #41 merged (3600 s), PR #42 merged (7200 s), PR #43 closed unmerged (600 s)
//!   deployments 2001, 2002 to staging, success (120 s, 180 s)
//!   runs 601, 602, 603 of CI, success (60 s, 90 s, 300 s)
//!   issues #50 (86400 s), #51 (3600 s) closed
//! octo-org/octo-repo (team platform; nothing landed, so no lead time)
//!   deployments 3001, 3002 to production, success (600 s, 900 s)
//!   deployment 3003 to prod, failure (240 s): a change failure, never recovered in "prod"
//!   deployment 3001 again, same X-GitHub-Delivery, in a second process at the same time
//! ```

mod common;
#[path = "fixtures/metrics/deliveries.rs"]
mod deliveries;

use common::moto::{Moto, AWS_ENV};
use common::{RPoint, Receiver, GITHUB_SECRET};
use deliveries::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use valuestream::engine::metrics::BUCKETS;

const HELLO: &str = "codertocat/hello-world";
const OCTO: &str = "octo-org/octo-repo";
const TEAMS: &str = "codertocat/hello-world=checkout,octo-org/*=platform";

/// The deliveries, one file each.
#[rustfmt::skip]
fn scenario() -> Vec<(String, Value)> {
    let f = |name: &str, event: &str, body: Value| {
        let id = format!("metrics-exact-{}", name.split('-').next().unwrap());
        (format!("{name}.json"), delivery(event, &id, body))
    };
    let deployment_3001 = || in_repo(deployment_status(3001, "production", "c3001", "2024-04-02T10:00:00Z", "2024-04-02T10:10:00Z", "success"), octo_repo());
    vec![
        f("e01-pr-41-merged", "pull_request", pull_request(41, "feature/x", "2024-04-01T09:00:00Z", "2024-04-01T10:00:00Z", Some("e41"))),
        f("e02-pr-42-merged", "pull_request", pull_request(42, "feature/y", "2024-04-01T09:00:00Z", "2024-04-01T11:00:00Z", Some("e42"))),
        f("e03-pr-43-closed", "pull_request", pull_request(43, "feature/z", "2024-04-01T09:00:00Z", "2024-04-01T09:10:00Z", None)),
        f("e04-deployment-2001-staging", "deployment_status", deployment_status(2001, "staging", "e41", "2024-04-01T12:00:00Z", "2024-04-01T12:02:00Z", "success")),
        f("e05-deployment-2002-staging", "deployment_status", deployment_status(2002, "staging", "e42", "2024-04-01T13:00:00Z", "2024-04-01T13:03:00Z", "success")),
        f("e06-deployment-3001-production", "deployment_status", deployment_3001()),
        f("e07-deployment-3002-production", "deployment_status", in_repo(deployment_status(3002, "production", "c3002", "2024-04-02T11:00:00Z", "2024-04-02T11:15:00Z", "success"), octo_repo())),
        f("e08-deployment-3003-prod-failure", "deployment_status", in_repo(deployment_status(3003, "prod", "c3003", "2024-04-02T12:00:00Z", "2024-04-02T12:04:00Z", "failure"), octo_repo())),
        f("e09-run-601", "workflow_run", workflow_run(601, "master", "e41", "2024-04-01T10:01:00Z", "2024-04-01T10:02:00Z", "success")),
        f("e10-run-602", "workflow_run", workflow_run(602, "master", "e42", "2024-04-01T11:01:00Z", "2024-04-01T11:02:30Z", "success")),
        f("e11-run-603", "workflow_run", workflow_run(603, "feature/x", "41ead", "2024-04-01T09:10:00Z", "2024-04-01T09:15:00Z", "success")),
        f("e12-issue-50-closed", "issues", issue("closed", 50, "2024-03-31T09:00:00Z", Some("2024-04-01T09:00:00Z"), &[])),
        f("e13-issue-51-closed", "issues", issue("closed", 51, "2024-04-01T09:00:00Z", Some("2024-04-01T10:00:00Z"), &[])),
        // The redelivery of e06: GitHub keeps the X-GitHub-Delivery of the original.
        ("e14-deployment-3001-redelivered.json".into(), delivery("deployment_status", "metrics-exact-e06", deployment_3001())),
    ]
}

/// A series as the expected totals name it.
type SeriesKey = (String, BTreeMap<String, String>);

fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    (
        name.to_string(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The exact totals: counters by value; histograms by their observations (count, sum and every
/// bucket follow from them).
#[derive(Debug)]
enum Total {
    Counter(u64),
    Histogram(Vec<f64>),
}

#[rustfmt::skip]
fn expected() -> BTreeMap<SeriesKey, Total> {
    let hello = |extra: &[(&'static str, &'static str)]| {
        // The recorded payloads name the repository's language (Ruby), except the issues'.
        let mut l = vec![("valuestream.source", "github"), ("valuestream.repository", HELLO), ("valuestream.team", "checkout"), ("valuestream.language", "ruby")];
        l.extend_from_slice(extra);
        l
    };
    let octo = |extra: &[(&'static str, &'static str)]| {
        let mut l = vec![("valuestream.source", "github"), ("valuestream.repository", OCTO), ("valuestream.team", "platform"), ("valuestream.language", "typescript")];
        l.extend_from_slice(extra);
        l
    };
    use Total::*;
    BTreeMap::from([
        // PR #41 09:00 → 10:00 = 3600 s; PR #42 09:00 → 11:00 = 7200 s; PR #43 09:00 → 09:10 = 600 s.
        (key("valuestream.change.duration", &hello(&[("valuestream.result", "merged")])), Histogram(vec![3600.0, 7200.0])),
        (key("valuestream.change.duration", &hello(&[("valuestream.result", "closed")])), Histogram(vec![600.0])),
        // Staging 2001 12:00 → 12:02 = 120 s, 2002 13:00 → 13:03 = 180 s.
        (key("valuestream.deployments", &hello(&[("deployment.environment.name", "staging"), ("valuestream.production", "false"), ("valuestream.result", "success")])), Counter(2)),
        (key("valuestream.deployment.duration", &hello(&[("deployment.environment.name", "staging"), ("valuestream.result", "success")])), Histogram(vec![120.0, 180.0])),
        // Production 3001 10:00 → 10:10 = 600 s (delivered twice, counted once), 3002 11:00 → 11:15 = 900 s.
        (key("valuestream.deployments", &octo(&[("deployment.environment.name", "production"), ("valuestream.production", "true"), ("valuestream.result", "success")])), Counter(2)),
        (key("valuestream.deployment.duration", &octo(&[("deployment.environment.name", "production"), ("valuestream.result", "success")])), Histogram(vec![600.0, 900.0])),
        // 3003 to prod 12:00 → 12:04 = 240 s, failed: one change failure.
        (key("valuestream.deployments", &octo(&[("deployment.environment.name", "prod"), ("valuestream.production", "true"), ("valuestream.result", "failure")])), Counter(1)),
        (key("valuestream.deployment.duration", &octo(&[("deployment.environment.name", "prod"), ("valuestream.result", "failure")])), Histogram(vec![240.0])),
        (key("valuestream.change_failures", &octo(&[("deployment.environment.name", "prod")])), Counter(1)),
        // Runs 601 10:01 → 10:02 = 60 s, 602 11:01 → 11:02:30 = 90 s, 603 09:10 → 09:15 = 300 s.
        (key("cicd.pipeline.run.duration", &hello(&[("cicd.pipeline.name", "CI"), ("cicd.pipeline.result", "success"), ("valuestream.result", "success")])), Histogram(vec![60.0, 90.0, 300.0])),
        // Issue #50 03-31 09:00 → 04-01 09:00 = 86400 s, #51 09:00 → 10:00 = 3600 s.
        (key("valuestream.issue.duration", &[("valuestream.source", "github"), ("valuestream.repository", HELLO), ("valuestream.team", "checkout"), ("valuestream.result", "closed")]), Histogram(vec![86400.0, 3600.0])),
    ])
}

fn bucket_counts(observations: &[f64]) -> Vec<u64> {
    let mut b = vec![0u64; BUCKETS.len() + 1];
    for o in observations {
        let i = BUCKETS
            .iter()
            .position(|bound| o <= bound)
            .unwrap_or(BUCKETS.len());
        b[i] += 1;
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_processes_export_exact_totals() {
    let files = scenario();
    check_files("exactness", &files);
    let moto = Moto::start().await;
    let table = moto.store().await.table().to_string();
    let receiver = Receiver::start().await;

    // Every delivery in its own process, all at once; the redelivered one twice more (in total
    // three processes for e06's delivery ID: e06, e14, and e14 again).
    let mut paths: Vec<_> = files
        .iter()
        .map(|(rel, _)| scenario_dir("exactness").join(rel))
        .collect();
    paths.push(scenario_dir("exactness").join("e14-deployment-3001-redelivered.json"));
    let env: Vec<(String, String)> = AWS_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([
            ("AWS_ENDPOINT_URL_DYNAMODB".into(), moto.url.clone()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("VALUESTREAM_TABLE".into(), table.clone()),
            ("VALUESTREAM_GITHUB_SECRET".into(), GITHUB_SECRET.into()),
            ("VALUESTREAM_TEAMS".into(), TEAMS.into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.url.clone()),
            ("RUST_LOG".into(), "warn".into()),
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
        ])
        .collect();
    let mut children = Vec::new();
    for path in &paths {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_valuestream"))
            .arg("replay")
            .arg(path)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        children.push((path.clone(), child));
    }
    let mut answers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, child) in children {
        let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{} did not finish", path.display()))
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "{} failed:\n{stderr}\n{}",
            path.display(),
            moto.process.log_tail(20)
        );
        let answer = stderr
            .lines()
            .find(|l| l.starts_with("github "))
            .and_then(|l| l.split(" -> ").nth(1))
            .unwrap_or_else(|| panic!("no answer line:\n{stderr}"))
            .split(' ')
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        answers.entry(name).or_default().push(answer);
    }
    // The original and the two redeliveries: exactly one of the three was processed.
    let mut race: Vec<String> = answers["e06-deployment-3001-production"].clone();
    race.extend(answers["e14-deployment-3001-redelivered"].clone());
    race.sort();
    assert_eq!(
        race,
        ["200 duplicate", "200 duplicate", "200 processed"],
        "{answers:#?}"
    );
    for (name, a) in &answers {
        if !name.contains("3001") {
            assert_eq!(a, &["200 processed"], "{name}");
        }
    }

    // Every series: one monotonic series of cumulative points from one start time.
    let points = receiver.points();
    let mut by_series: BTreeMap<SeriesKey, Vec<RPoint>> = BTreeMap::new();
    for p in points {
        by_series
            .entry((p.name.clone(), p.labels.clone()))
            .or_default()
            .push(p);
    }
    for (k, ps) in by_series.iter_mut() {
        ps.sort_by_key(|p| p.time_ns);
        for w in ps.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            assert_eq!(a.start_ns, b.start_ns, "{k:?}: one start time");
            if a.time_ns == b.time_ns {
                // The same update exported twice (an outbox drain): the same point.
                assert_eq!(
                    (a.value, a.sum),
                    (b.value, b.sum),
                    "{k:?}: two values at one time"
                );
            } else {
                assert!(
                    b.value >= a.value && b.sum >= a.sum,
                    "{k:?}: a later point has a smaller total: {a:?} then {b:?}"
                );
                assert!(
                    a.buckets.iter().zip(&b.buckets).all(|(x, y)| y >= x),
                    "{k:?}: a bucket shrank: {a:?} then {b:?}"
                );
            }
        }
        assert!(
            ps.iter().all(|p| p.cumulative),
            "{k:?}: cumulative temporality"
        );
        assert!(
            ps.iter().all(|p| p.start_ns < p.time_ns),
            "{k:?}: start before sample"
        );
    }

    // The latest point of every series is the exact total; no other series exists.
    let latest: BTreeMap<SeriesKey, RPoint> = receiver
        .latest_points()
        .into_iter()
        .map(|p| ((p.name.clone(), p.labels.clone()), p))
        .collect();
    let want = expected();
    assert_eq!(
        latest.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the exported series"
    );
    println!("\nseries → latest exported point (points exported)");
    for (k, total) in &want {
        let p = &latest[k];
        match total {
            Total::Counter(n) => {
                assert_eq!(p.value, *n as f64, "{k:?}");
                assert_eq!(p.unit, "{deployment}", "{k:?}");
            }
            Total::Histogram(obs) => {
                assert_eq!(p.value, obs.len() as f64, "{k:?}: count");
                assert_eq!(p.sum, obs.iter().sum::<f64>(), "{k:?}: sum");
                assert_eq!(p.buckets, bucket_counts(obs), "{k:?}: buckets");
                assert_eq!(p.unit, "s", "{k:?}");
            }
        }
        println!(
            "{} {:?} → count {} sum {} ({} points)",
            k.0,
            k.1,
            p.value,
            p.sum,
            by_series[k].len()
        );
    }

    // The store holds the same totals: GET /metrics rendered from the DynamoDB table.
    let store: Arc<dyn valuestream::store::Store> = Arc::new(
        valuestream::store::dynamodb::DynamoStore::with_client(moto.client(), table.clone()),
    );
    let series = valuestream::engine::metrics::stored(store.as_ref(), None)
        .await
        .unwrap();
    let text = valuestream::export::prometheus::render_series(&series);
    for line in [
        r#"valuestream_deployments_total{deployment_environment_name="production",valuestream_language="typescript",valuestream_production="true",valuestream_repository="octo-org/octo-repo",valuestream_result="success",valuestream_source="github",valuestream_team="platform"} 2"#,
        r#"valuestream_change_failures_total{deployment_environment_name="prod",valuestream_language="typescript",valuestream_repository="octo-org/octo-repo",valuestream_source="github",valuestream_team="platform"} 1"#,
        r#"cicd_pipeline_run_duration_seconds_count{cicd_pipeline_name="CI",cicd_pipeline_result="success",valuestream_language="ruby",valuestream_repository="codertocat/hello-world",valuestream_result="success",valuestream_source="github",valuestream_team="checkout"} 3"#,
        r#"cicd_pipeline_run_duration_seconds_sum{cicd_pipeline_name="CI",cicd_pipeline_result="success",valuestream_language="ruby",valuestream_repository="codertocat/hello-world",valuestream_result="success",valuestream_source="github",valuestream_team="checkout"} 450"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "/metrics lacks {line}\n{text}"
        );
    }
    assert_eq!(
        text.lines()
            .filter(|l| l.ends_with("_count") || l.contains("_count{"))
            .count()
            + text.lines().filter(|l| l.contains("_total{")).count(),
        want.len(),
        "one series in /metrics per exported series:\n{text}"
    );
}
