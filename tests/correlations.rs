//! Root-cause correlations proven on a known answer: the seeded scenario of
//! tests/fixtures/correlations/scenario.rs (27 repositories = 3 teams × 3 languages × 3
//! deployment types, 189 issues, 108 deployments) is delivered through the real router; slowness
//! and failures are planted on Python and on mutable hosts. `GET /correlations` and the
//! `valuestream correlations` CLI (against `--url` and a local `--data-dir`) must rank the planted
//! values first, with the exact counts the scenario generated; the same scenario without the
//! planted signal must rank nothing above its documented noise lift. The dashboard's queries are
//! proven on the same scenario in tests/dashboards.rs.

mod common;
#[path = "fixtures/correlations/scenario.rs"]
mod scenario;

use axum::http::StatusCode;
use common::{app_with, App, GITHUB_SECRET};
use scenario::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use valuestream::analysis::correlations::{Correlation, Report, MIN_COUNT};
use valuestream::config::Config;
use valuestream::store::embedded::EmbeddedStore;
use valuestream::store::Store;

fn config() -> Config {
    let env = scenario::env();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Config::from_pairs(&pairs).unwrap()
}

async fn deliver(app: &App, deliveries: &[Delivery]) {
    for d in deliveries {
        let headers: Vec<(&str, &str)> = d
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, body) = app.post(d.source, &headers, d.body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "processed", "{body}");
    }
    // After the order-independent engine, spans and metric updates are computed when the
    // pipeline drains (settle period 0 in the scenario's configuration).
    app.pipeline.drain().await.unwrap();
}

async fn report(app: &App, query: &str) -> Report {
    let (status, text) = app.get(&format!("/correlations?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The (attribute, value) pairs ranked first.
fn top(r: &Report, n: usize) -> Vec<(String, String)> {
    r.attributes
        .iter()
        .take(n)
        .map(|c| (c.attribute.clone(), c.value.clone()))
        .collect()
}

fn find<'a>(r: &'a Report, attribute: &str, value: &str) -> &'a Correlation {
    r.attributes
        .iter()
        .find(|c| c.attribute == attribute && c.value == value)
        .unwrap_or_else(|| panic!("no {attribute}={value} in {r:#?}"))
}

/// Above the lift chance alone reaches.
fn signal(c: &Correlation) -> bool {
    !c.rare && c.lift > c.noise_lift.unwrap()
}

const LANGUAGE: &str = "valuestream.language";
const DEPLOYMENT_TYPE: &str = "valuestream.deployment.type";
const TEAM: &str = "valuestream.team";

/// What the scenario says the answer is, counted from what it generated: per (attribute,
/// value), (items, selected items).
fn expected(items: &[(usize, bool)]) -> BTreeMap<(&'static str, &'static str), (u64, u64)> {
    let repos = repos();
    let mut m = BTreeMap::new();
    for (ri, selected) in items {
        let r = &repos[*ri];
        for key in [
            (LANGUAGE, r.language),
            (DEPLOYMENT_TYPE, r.deployment_type),
            (TEAM, r.team),
            ("valuestream.attr.tier", "1"),
        ] {
            let e: &mut (u64, u64) = m.entry(key).or_default();
            e.0 += 1;
            e.1 += u64::from(*selected);
        }
    }
    m
}

/// Checks every correlation of `r` against the counts the scenario generated.
fn assert_exact(r: &Report, items: &[(usize, bool)]) {
    let want = expected(items);
    let total = items.len() as u64;
    let chosen = items.iter().filter(|i| i.1).count() as u64;
    assert_eq!((r.total, r.slow_or_failed), (total, chosen));
    for ((a, v), (n, sel)) in &want {
        let c = r
            .attributes
            .iter()
            .find(|c| c.attribute == *a && c.value == *v)
            .unwrap_or_else(|| panic!("no {a}={v}"));
        assert_eq!(c.count, *n, "{a}={v}");
        let share_all = *n as f64 / total as f64;
        let share_sel = *sel as f64 / chosen as f64;
        assert!((c.share_all - share_all).abs() < 1e-12, "{a}={v}");
        assert!((c.share_selected - share_sel).abs() < 1e-12, "{a}={v}");
        assert!((c.lift - share_sel / share_all).abs() < 1e-9, "{a}={v}");
    }
}

fn valuestream_cli() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_valuestream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k.starts_with("VALUESTREAM_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

fn cli(args: &[&str]) -> String {
    let out = valuestream_cli().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "valuestream {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The (attribute, value) of the first `n` rows of the CLI's table.
fn table_top(text: &str, n: usize) -> Vec<(String, String)> {
    text.lines()
        .skip(2)
        .take(n)
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().to_string(), w.next().unwrap().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_slowness_and_failures_rank_first_on_the_endpoint_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let app = app_with(store, config()).await;
    let (deliveries, truth) = scenario(PLANTED_SEED, true);
    assert_eq!(deliveries.len(), ISSUES + DEPLOYMENTS);
    deliver(&app, &deliveries).await;

    // Every span carries its repository's attributes: the language from the GitHub payload
    // (as GitHub spells it), the rest from VALUESTREAM_REPOSITORY_ATTRIBUTES.
    let spans = app.receiver.spans();
    assert_eq!(spans.len(), ISSUES + DEPLOYMENTS);
    let issue = spans
        .iter()
        .find(|s| s.name == "ISSUE #1 Issue 1 of seed/checkout-python-mutable")
        .unwrap();
    assert_eq!(issue.attr_str(LANGUAGE), "Python");
    assert_eq!(issue.attr_str(DEPLOYMENT_TYPE), "mutable");
    assert_eq!(issue.attr_str(TEAM), "checkout");
    assert_eq!(issue.attr_str("valuestream.attr.tier"), "1");
    let deploy = spans
        .iter()
        .find(|s| {
            s.service == "events" && s.attr_str("valuestream.repository") == "seed/search-go-image"
        })
        .unwrap();
    assert_eq!(deploy.attr_str(LANGUAGE), "go");
    assert_eq!(deploy.attr_str(DEPLOYMENT_TYPE), "image");
    assert_eq!(deploy.attr_str(TEAM), "search");
    // …and so do the duration and DORA metric series (values in lower case).
    let points = app.receiver.latest_points();
    for name in [
        "valuestream.issue.duration",
        "valuestream.deployment.duration",
        "valuestream.deployments",
        "valuestream.change_failures",
    ] {
        let p = points
            .iter()
            .find(|p| {
                p.name == name
                    && p.labels["valuestream.repository"] == "seed/identity-python-mutable"
            })
            .unwrap_or_else(|| panic!("a {name} series of seed/identity-python-mutable"));
        assert_eq!(p.labels[LANGUAGE], "python", "{name}");
        assert_eq!(p.labels[DEPLOYMENT_TYPE], "mutable", "{name}");
        assert_eq!(p.labels[TEAM], "identity", "{name}");
        assert_eq!(p.labels["valuestream.attr.tier"], "1", "{name}");
    }

    // Slow issues, default threshold: the 90th-percentile bucket bound.
    let issues = report(&app, "kind=issue&by=duration").await;
    let threshold = issues.threshold_s.unwrap();
    assert!(valuestream::engine::metrics::BUCKETS.contains(&threshold));
    let slow: Vec<(usize, bool)> = truth
        .issue_durations
        .iter()
        .map(|(r, d)| (*r, *d > threshold))
        .collect();
    assert_exact(&issues, &slow);
    let mut first_two = top(&issues, 2);
    first_two.sort();
    assert_eq!(
        first_two,
        [
            (
                DEPLOYMENT_TYPE.to_string(),
                SLOW_DEPLOYMENT_TYPE.to_string()
            ),
            (LANGUAGE.to_string(), SLOW_LANGUAGE.to_string()),
        ],
        "{issues:#?}"
    );
    assert!(issues.attributes[..2].iter().all(signal), "{issues:#?}");
    assert!(
        issues.attributes[2..].iter().all(|c| !signal(c)),
        "{issues:#?}"
    );
    for team in TEAMS {
        assert!(!signal(find(&issues, TEAM, team)), "{issues:#?}");
    }
    assert!(issues
        .attributes
        .iter()
        .all(|c| c.count >= MIN_COUNT && !c.rare));

    // Slow issues above a week (the dashboard's default threshold for issues).
    let week = report(&app, "kind=issue&by=duration&threshold_s=604800").await;
    assert_eq!(week.threshold_s, Some(604800.0));
    let slow_week: Vec<(usize, bool)> = truth
        .issue_durations
        .iter()
        .map(|(r, d)| (*r, *d > 604800.0))
        .collect();
    assert_exact(&week, &slow_week);
    let mut first_two = top(&week, 2);
    first_two.sort();
    assert_eq!(
        first_two,
        [
            (
                DEPLOYMENT_TYPE.to_string(),
                SLOW_DEPLOYMENT_TYPE.to_string()
            ),
            (LANGUAGE.to_string(), SLOW_LANGUAGE.to_string()),
        ]
    );

    // Failed deployments: mutable hosts first (the stronger plant), then Python.
    let failures = report(&app, "kind=deployment&by=failure").await;
    assert_eq!(failures.threshold_s, None);
    assert_exact(&failures, &truth.deployment_failed);
    assert_eq!(
        top(&failures, 2),
        [
            (
                DEPLOYMENT_TYPE.to_string(),
                SLOW_DEPLOYMENT_TYPE.to_string()
            ),
            (LANGUAGE.to_string(), SLOW_LANGUAGE.to_string()),
        ],
        "{failures:#?}"
    );
    assert!(signal(&failures.attributes[0]), "{failures:#?}");
    for team in TEAMS {
        assert!(!signal(find(&failures, TEAM, team)), "{failures:#?}");
    }

    // Bad questions: a 400 that says why.
    for (query, reason) in [
        ("", "parameter `kind` is required"),
        ("kind=bug", "parameter `kind` must be one of"),
        (
            "kind=issue&by=speed",
            "parameter `by` must be duration, failure or rework",
        ),
        ("kind=issue&by=failure", "issues have no failed result"),
        (
            "kind=run&threshold_s=-5",
            "parameter `threshold_s` must be a positive number",
        ),
        (
            "kind=deployment&by=failure&threshold_s=60",
            "applies to by=duration only",
        ),
        ("kind=issue&sort=lift", "unknown parameter `sort`"),
    ] {
        let (status, text) = app.get(&format!("/correlations?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"], "error");
        assert!(
            v["reason"].as_str().unwrap().contains(reason),
            "{query}: {text}"
        );
    }

    // The CLI against a running instance (the same router on a real socket) …
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = app.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let by_url = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            (
                cli(&["correlations", "--kind", "issue", "--url", &url]),
                cli(&[
                    "correlations",
                    "--kind",
                    "deployment",
                    "--by",
                    "failure",
                    "--url",
                    &url,
                    "--json",
                ]),
            )
        })
        .await
        .unwrap()
    };
    server.abort();
    let _ = server.await;
    let mut first_two = table_top(&by_url.0, 2);
    first_two.sort();
    assert_eq!(
        first_two,
        [
            (
                DEPLOYMENT_TYPE.to_string(),
                SLOW_DEPLOYMENT_TYPE.to_string()
            ),
            (LANGUAGE.to_string(), SLOW_LANGUAGE.to_string()),
        ],
        "{}",
        by_url.0
    );
    assert!(by_url.0.starts_with(&format!(
        "kind issue, by duration: slow = longer than {threshold} s (a bucket bound); {} of {ISSUES} items\n",
        issues.slow_or_failed
    )), "{}", by_url.0);
    let json: Report = serde_json::from_str(&by_url.1).unwrap();
    assert_eq!(json, failures, "--json is the endpoint's answer");

    // … and against the local store, once the service has let go of it.
    drop(app);
    let data_dir = dir.path().to_str().unwrap().to_string();
    let local = tokio::task::spawn_blocking(move || {
        cli(&["correlations", "--kind", "issue", "--data-dir", &data_dir])
    })
    .await
    .unwrap();
    assert_eq!(
        local, by_url.0,
        "the same table from the store as from the endpoint"
    );
    println!("{local}");
    println!("{}", valuestream::analysis::correlations::table(&failures));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_planted_signal_nothing_ranks_above_the_noise_lift() {
    let app = app_with(Arc::new(EmbeddedStore::in_memory().unwrap()), config()).await;
    let (deliveries, truth) = scenario(NO_SIGNAL_SEED, false);
    deliver(&app, &deliveries).await;
    let mut highest = Vec::new();
    for query in [
        "kind=issue&by=duration",
        "kind=issue&by=duration&threshold_s=604800",
        "kind=deployment&by=duration",
        "kind=deployment&by=failure",
    ] {
        let r = report(&app, query).await;
        assert!(r.slow_or_failed > 0, "{query}: something is selected");
        for c in &r.attributes {
            assert!(
                !signal(c),
                "{query}: {}={} has lift {} above its noise lift {:?} without a signal",
                c.attribute,
                c.value,
                c.lift,
                c.noise_lift
            );
        }
        let first = &r.attributes[0];
        highest.push(format!(
            "{query}: {} of {}, highest lift {:.2} ({}={}, noise lift {:.2})",
            r.slow_or_failed,
            r.total,
            first.lift,
            first.attribute,
            first.value,
            first.noise_lift.unwrap()
        ));
    }
    assert_eq!(truth.issue_durations.len(), ISSUES);
    println!("{}", highest.join("\n"));
}

/// The payload's own values win over the configuration: GitHub's language, a `deploy-x` topic, a
/// `team:x` label; the configuration fills in the rest, and values outside an allow-list become
/// `other`.
#[tokio::test]
async fn payload_values_win_and_unlisted_values_become_other() {
    let attrs = r#"{"acme/*": {"team": "platform", "language": "go", "deployment.type": "image", "tier": "2"}}"#;
    let config = Config::from_pairs(&[
        ("VALUESTREAM_GITHUB_SECRET", GITHUB_SECRET),
        ("VALUESTREAM_REPOSITORY_ATTRIBUTES", attrs),
        ("VALUESTREAM_ATTRIBUTE_VALUES", "language=python|go"),
        ("VALUESTREAM_SETTLE_SECS", "0"),
    ])
    .unwrap();
    let app = app_with(Arc::new(EmbeddedStore::in_memory().unwrap()), config).await;
    let issue = |n: u64, repo: &str, language: &str, topics: &[&str], labels: &[&str]| {
        serde_json::to_vec(&serde_json::json!({
            "action": "closed",
            "issue": {"number": n, "title": "t", "created_at": "2026-01-01T00:00:00Z",
                      "updated_at": "2026-01-02T00:00:00Z", "closed_at": "2026-01-02T00:00:00Z",
                      "labels": labels.iter().map(|l| serde_json::json!({"name": l})).collect::<Vec<_>>()},
            "repository": {"full_name": repo, "language": language, "topics": topics},
        }))
        .unwrap()
    };
    let (s, b) = app
        .github(
            "issues",
            "attrs-1",
            issue(
                1,
                "acme/api",
                "Python",
                &["deploy-mutable"],
                &["team:payments"],
            ),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app
        .github("issues", "attrs-2", issue(2, "acme/web", "COBOL", &[], &[]))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    app.pipeline.drain().await.unwrap();
    let spans = app.receiver.spans();
    let api = spans
        .iter()
        .find(|s| s.name.starts_with("ISSUE #1"))
        .unwrap();
    assert_eq!(api.attr_str(LANGUAGE), "Python");
    assert_eq!(api.attr_str(DEPLOYMENT_TYPE), "mutable");
    assert_eq!(api.attr_str(TEAM), "payments");
    assert_eq!(api.attr_str("valuestream.attr.tier"), "2");
    let web = spans
        .iter()
        .find(|s| s.name.starts_with("ISSUE #2"))
        .unwrap();
    assert_eq!(
        web.attr_str(LANGUAGE),
        "other",
        "COBOL is not in language=python|go"
    );
    assert_eq!(web.attr_str(DEPLOYMENT_TYPE), "image");
    assert_eq!(web.attr_str(TEAM), "platform");
    let languages: Vec<String> = app
        .receiver
        .latest_points()
        .iter()
        .filter(|p| p.name == "valuestream.issue.duration")
        .map(|p| p.labels[LANGUAGE].clone())
        .collect();
    assert_eq!(languages.len(), 2);
    assert!(languages.contains(&"python".into()) && languages.contains(&"other".into()));

    // A configuration that contradicts its own allow-list is refused at start, naming it.
    let err = Config::from_pairs(&[
        ("VALUESTREAM_REPOSITORY_ATTRIBUTES", attrs),
        (
            "VALUESTREAM_ATTRIBUTE_VALUES",
            "deployment.type=container|mutable",
        ),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("invalid setting VALUESTREAM_ATTRIBUTE_VALUES: "),
        "{err}"
    );
    assert!(err.contains("\"image\""), "{err}");
}
