//! Golden tests: every GitHub fixture, delivered alone to a fresh service, against the answer
//! and the spans and metric points it should give (`<fixture>.expected.json`).

mod common;

use common::*;
use serde_json::Value;
use std::sync::Arc;
use valuestream::store::embedded::EmbeddedStore;

/// The golden value of one fixture delivered alone to a fresh service.
async fn deliver_alone(rel: &str) -> Value {
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = app_with(store.clone(), test_config(&[])).await;
    let (status, body) = app.github_fixture(rel, "golden-delivery").await;
    golden_value(status, body, &app, &store).await
}

#[tokio::test]
async fn every_github_fixture_matches_its_golden_file() {
    let dir = fixtures_dir().join("github");
    let mut checked = 0;
    let mut events: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    events.sort();
    for event_dir in events {
        let mut files: Vec<_> = std::fs::read_dir(&event_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".json") || name.ends_with(".expected.json") {
                continue;
            }
            let rel = format!(
                "github/{}/{}",
                event_dir.file_name().unwrap().to_string_lossy(),
                name
            );
            let actual = deliver_alone(&rel).await;
            let status = actual["status"].as_u64().unwrap();
            assert!(
                (200..300).contains(&status),
                "{rel} must be answered 2xx: {actual}"
            );
            golden(&rel.replace(".json", ".expected.json"), &actual);
            checked += 1;
        }
    }
    assert_eq!(checked, 22, "every GitHub fixture has a golden file");
}
