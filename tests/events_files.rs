//! The API Gateway events under events/ (written by scripts/make-events.py): each is an HTTP API
//! payload-2.0 event whose signature or token is valid for its source's local secret, they are
//! what the script generates today, and the GitHub ones go through the router with 2xx answers.
//! events/scheduled/ holds the EventBridge scheduled events (the `Drain` schedule of
//! template.yaml), which the Lambda handler takes as drains, not as webhooks.

mod common;

use axum::http::StatusCode;
use common::*;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use valuestream::config::Config;
use valuestream::entrypoints::lambda;
use valuestream::replay;
use valuestream::sources::http::{HeaderMap, HeaderName, HeaderValue};
use valuestream::sources::{registry, Delivery};
use valuestream::store::embedded::EmbeddedStore;

/// The service configured with the local secrets of the README's local example
/// (sam-local/local-secrets.json, written by scripts/make-events.py with events/).
fn local_config() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sam-local/local-secrets.json");
    let secrets: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let pairs: Vec<(&str, &str)> = registry::SOURCES
        .iter()
        .map(|e| (e.secret.var, secrets[e.name].as_str().unwrap()))
        .collect();
    Config::from_pairs(&pairs).unwrap()
}

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("events")
}

/// The folder of scheduled (not webhook) events.
fn scheduled_dir() -> PathBuf {
    events_dir().join("scheduled")
}

/// The webhook event files under `dir` (every `.json` file, recursively, except those under
/// events/scheduled/).
fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p == scheduled_dir() {
            continue;
        }
        if p.is_dir() {
            out.extend(event_files(&p));
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Checks one event's shape and credentials; returns its source.
fn check_event(file: &Path) -> String {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    // The type lambda_http deserializes HTTP API events into.
    let parsed: ApiGatewayV2httpRequest = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{name}: not an API Gateway v2 event: {e}"));
    assert_eq!(parsed.version.as_deref(), Some("2.0"), "{name}");
    let raw_path = v["rawPath"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: rawPath"));
    let source = raw_path
        .strip_prefix("/webhooks/")
        .unwrap_or_else(|| panic!("{name}: rawPath {raw_path} is not /webhooks/<source>"))
        .to_string();
    // template.yaml's one webhook route.
    assert_eq!(v["routeKey"], "POST /webhooks/{source}", "{name}");
    assert_eq!(v["requestContext"]["routeKey"], v["routeKey"], "{name}");
    assert_eq!(v["pathParameters"]["source"], source, "{name}");
    assert!(v["rawQueryString"].is_string(), "{name}: rawQueryString");
    assert_eq!(v["requestContext"]["http"]["method"], "POST", "{name}");
    assert_eq!(v["requestContext"]["http"]["path"], raw_path, "{name}");
    assert!(
        v["requestContext"]["http"]["sourceIp"].is_string(),
        "{name}: sourceIp"
    );
    assert_eq!(v["isBase64Encoded"], false, "{name}");
    let body = v["body"]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: body must be a string"));
    serde_json::from_str::<Value>(body).unwrap_or_else(|e| panic!("{name}: body is not JSON: {e}"));
    let headers = v["headers"].as_object().unwrap();
    for k in headers.keys() {
        assert_eq!(
            *k,
            k.to_ascii_lowercase(),
            "{name}: header names are lower-case"
        );
    }
    assert_eq!(headers["content-type"], "application/json", "{name}");
    // Signed as its source verifies, with the local secret.
    let entry = registry::by_name(&source)
        .unwrap_or_else(|| panic!("{name}: {source} is no registered source"));
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v.as_str().unwrap()).unwrap(),
        );
    }
    let query = v["rawQueryString"].as_str().filter(|q| !q.is_empty());
    let delivery = Delivery {
        headers: &map,
        query,
        body: body.as_bytes(),
    };
    entry
        .source
        .authenticate(&delivery, &local_config())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    source
}

#[test]
fn every_event_file_is_a_signed_http_api_event() {
    let files = event_files(&events_dir());
    let mut sources: Vec<String> = files.iter().map(|f| check_event(f)).collect();
    sources.sort();
    sources.dedup();
    for e in registry::SOURCES {
        assert!(
            sources.iter().any(|x| x == e.name),
            "no event file for {}",
            e.name
        );
    }
    // One GitHub event per GitHub fixture payload.
    let payloads = std::fs::read_dir(fixtures_dir().join("github"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .filter(|f| {
            let n = f.as_ref().unwrap().file_name();
            let n = n.to_string_lossy();
            n.ends_with(".json") && !n.ends_with(".expected.json")
        })
        .count();
    let github = event_files(&events_dir().join("github")).len();
    assert_eq!(
        github, payloads,
        "one events/github file per GitHub fixture"
    );
}

#[test]
fn scheduled_event_files_are_drains() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scheduled_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [scheduled_dir().join("drain.json")],
        "events/scheduled/ holds the drain event (README, template.yaml)"
    );
    for file in files {
        let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        // The shape EventBridge sends for a scheduled rule.
        assert_eq!(v["source"], "aws.events", "{}", file.display());
        assert_eq!(v["detail-type"], "Scheduled Event", "{}", file.display());
        assert_eq!(v["detail"], serde_json::json!({}), "{}", file.display());
        assert!(
            v["resources"][0]
                .as_str()
                .is_some_and(|r| r.starts_with("arn:aws:events:") && r.contains(":rule/")),
            "{}: resources names the rule",
            file.display()
        );
        // And what the Lambda handler makes of it.
        assert!(
            matches!(lambda::classify(v), Ok(lambda::Invocation::Scheduled(_))),
            "{}: the handler takes it as a drain",
            file.display()
        );
    }
}

#[test]
fn webhook_event_files_are_http_requests_to_the_handler() {
    for file in event_files(&events_dir()) {
        let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert!(
            matches!(lambda::classify(v), Ok(lambda::Invocation::Http(_))),
            "{}: the handler takes it as an API Gateway request",
            file.display()
        );
    }
}

/// An event for a source that is not registered reaches the router through the one webhook
/// route, which answers 404.
#[tokio::test]
async fn an_unknown_source_on_the_webhook_route_is_404() {
    let file = events_dir().join("github/ping.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    v["rawPath"] = "/webhooks/nosuch".into();
    v["requestContext"]["http"]["path"] = "/webhooks/nosuch".into();
    v["pathParameters"]["source"] = "nosuch".into();
    let lambda::Invocation::Http(r) = lambda::classify(v.clone()).unwrap() else {
        panic!("an API Gateway request")
    };
    let path = lambda_http::Request::from(*r).uri().path().to_string();
    assert_eq!(path, "/webhooks/nosuch");
    let app = app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        local_config(),
    )
    .await;
    let body = v["body"].as_str().unwrap().as_bytes().to_vec();
    let (status, answer) = app
        .post_path(&path, &[("content-type", "application/json")], body)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

#[test]
fn a_tampered_event_fails_the_check() {
    // The check above would notice a body that no longer matches its signature.
    let file = events_dir().join("github/issues-opened.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    v["body"] = Value::String(v["body"].as_str().unwrap().replace("opened", "closed"));
    let dir = tempfile::tempdir().unwrap();
    let tampered = dir.path().join("tampered.json");
    std::fs::write(&tampered, serde_json::to_vec(&v).unwrap()).unwrap();
    let r = std::panic::catch_unwind(|| check_event(&tampered));
    assert!(
        r.is_err(),
        "a body that does not match its signature is caught"
    );
}

#[test]
fn event_files_are_what_the_script_generates() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-events.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg("--check")
        .env("VALUESTREAM_BIN", env!("CARGO_BIN_EXE_valuestream"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "events/ is stale: run python3 scripts/make-events.py\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn github_events_replay_through_the_router() {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let config =
        Config::from_pairs(&[("VALUESTREAM_GITHUB_SECRET", "local-github-secret")]).unwrap();
    let app = app_with(store, config).await;
    let files = event_files(&events_dir().join("github"));
    assert!(!files.is_empty());
    let mut statuses = Vec::new();
    for file in &files {
        let rec = replay::load(file).unwrap();
        assert_eq!(rec.source, "github");
        let headers: Vec<(&str, &str)> = rec
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let path = match &rec.query {
            Some(q) => format!("/webhooks/github?{q}"),
            None => "/webhooks/github".to_string(),
        };
        let (s, b) = app.post_path(&path, &headers, rec.body.clone()).await;
        assert!(s.is_success(), "{} answered {s}: {b}", file.display());
        statuses.push((file.file_name().unwrap().to_string_lossy().into_owned(), b));
    }
    let answer = |name: &str| {
        &statuses
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .1
    };
    assert_eq!(answer("issues-opened.json")["status"], "processed");
    assert_eq!(
        answer("issues-closed.derived.json")["finished"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        app.receiver
            .spans()
            .iter()
            .any(|s| s.name.starts_with("ISSUE #1")),
        "the replay exported the issue's span"
    );
    // The delivery IDs are stable: the same file again is a redelivery.
    let rec = replay::load(&events_dir().join("github/issues-opened.json")).unwrap();
    let headers: Vec<(&str, &str)> = rec
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (s, b) = app.post("github", &headers, rec.body).await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("duplicate")),
        "{b}"
    );
}

/// Replays every file of `dir` in order into a fresh app with the local secrets.
async fn replay_dir(dir: &str) -> (App, Vec<Value>) {
    let app = app_with(
        Arc::new(EmbeddedStore::in_memory().unwrap()),
        local_config(),
    )
    .await;
    let files = event_files(&events_dir().join(dir));
    assert!(!files.is_empty(), "events/{dir} is empty");
    let mut answers = Vec::new();
    for file in &files {
        let rec = replay::load(file).unwrap();
        let headers: Vec<(&str, &str)> = rec
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let path = match &rec.query {
            Some(q) => format!("/webhooks/{}?{q}", rec.source),
            None => format!("/webhooks/{}", rec.source),
        };
        let (s, b) = app.post_path(&path, &headers, rec.body.clone()).await;
        assert!(s.is_success(), "{} answered {s}: {b}", file.display());
        answers.push(b);
    }
    (app, answers)
}

#[tokio::test]
async fn every_source_event_replays_through_the_router() {
    for dir in registry::SOURCES.iter().map(|e| e.name) {
        let (_app, answers) = replay_dir(dir).await;
        assert!(
            answers.iter().any(|a| a["status"] == "processed"),
            "{dir}: {answers:?}"
        );
    }
}

#[tokio::test]
async fn the_demo_events_tell_the_readme_story() {
    let (app, answers) = replay_dir("demo").await;
    assert!(
        answers.iter().all(|a| a["status"] == "processed"),
        "{answers:?}"
    );
    let spans = app.receiver.spans();
    let stages: Vec<String> = spans
        .iter()
        .filter(|s| s.attr("valuestream.change.stage").is_some())
        .map(|s| format!("{} {}", s.attr_str("valuestream.key"), s.name))
        .collect();
    // Both PRs' first commits were pushed before they opened; no review: coding and deploy.
    assert_eq!(
        stages,
        [
            "github/change/codertocat/hello-world/2 coding",
            "github/change/codertocat/hello-world/2 deploy",
            "github/change/codertocat/hello-world/3 coding",
            "github/change/codertocat/hello-world/3 deploy",
        ]
    );
    assert_eq!(spans.len(), 14, "10 work items and 4 stages");
    let mut traces: Vec<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 2, "the issue's trace and PR #3's trace");
    let lead = app
        .receiver
        .latest_points()
        .into_iter()
        .find(|p| p.name == "valuestream.change.lead_time")
        .unwrap();
    assert_eq!(
        (lead.value, lead.sum),
        (3.0, 19200.0),
        "the lead times scripts/demo_story.py documents"
    );
    let restore = app
        .receiver
        .latest_points()
        .into_iter()
        .find(|p| p.name == "valuestream.time_to_restore")
        .unwrap();
    assert_eq!(restore.sum, 5400.0);
}
