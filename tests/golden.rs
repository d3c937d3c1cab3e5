//! Golden-test discovery through the source registry: for every registered source, every
//! fixture under `tests/fixtures/<source>/` that has a golden file (`<case>.expected.json`) is
//! delivered alone to a fresh service, with the headers of its `<case>.headers` (or its folder's
//! `headers`) file and the source's own signature, and its answer, spans, metric points and open
//! items are compared with the golden file. A source added to the registry without fixtures, or a
//! fixture folder no registered source claims, fails.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use valuestream::sources::registry::{self, SourceEntry};
use valuestream::store::embedded::EmbeddedStore;

/// Fixture folders that hold no source's deliveries.
/// Fixture folders of other tests: correlations, fuzz regressions, metric scenarios, the OTLP
/// exporter's TLS material and the redb file of the store migration.
const NOT_SOURCES: &[&str] = &["correlations", "fuzz", "metrics", "otlp", "store"];

/// Every `<case>.json` with a golden file under `dir`, recursively, in name order.
fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let mut out = Vec::new();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            out.extend(cases(&p));
        } else if let Some(stem) = name.strip_suffix(".json") {
            if !stem.ends_with(".expected")
                && p.with_file_name(format!("{stem}.expected.json")).exists()
            {
                out.push(p);
            }
        }
    }
    out
}

/// The headers file of a case: `<case>.headers`, else its folder's `headers`, as `name: value`
/// lines.
fn headers_of(case: &Path) -> Vec<(String, String)> {
    let stem = case
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".json")
        .to_string();
    let own = case.with_file_name(format!("{stem}.headers"));
    let folder = case.with_file_name("headers");
    let text = [own, folder]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("{}: {l:?} is not name: value", case.display()));
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect()
}

/// Delivers one case alone to a fresh service configured with the source's secret.
async fn deliver_alone(entry: &SourceEntry, case: &Path) -> serde_json::Value {
    let secret = entry.secret.var;
    let config = test_config(&[(secret, "golden-secret")]);
    let body = std::fs::read(case).unwrap();
    let mut headers = headers_of(case);
    headers.push(("content-type".into(), "application/json".into()));
    headers.extend(entry.source.sign(&body, &config));
    assert!(
        headers.len() > 1,
        "{}: {} signs deliveries with {secret}",
        case.display(),
        entry.name
    );
    let store = Arc::new(EmbeddedStore::in_memory().unwrap());
    let app = app_with(store.clone(), config).await;
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, body) = app.post_path(entry.route, &h, body).await;
    assert!(status.is_success(), "{}: {status} {body}", case.display());
    golden_value(status, body, &app, &store).await
}

#[tokio::test]
async fn every_registered_source_has_fixtures_that_match_their_golden_files() {
    let root = fixtures_dir();
    let mut total = 0;
    for entry in registry::SOURCES {
        let dir = root.join(entry.name);
        let found = cases(&dir);
        assert!(
            !found.is_empty(),
            "{}: no fixture with a golden file in {}",
            entry.name,
            dir.display()
        );
        for case in &found {
            let rel = case
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let actual = deliver_alone(entry, case).await;
            golden(&rel.replace(".json", ".expected.json"), &actual);
            total += 1;
        }
    }
    // Every golden file of a source folder was compared.
    let goldens: usize = registry::SOURCES
        .iter()
        .map(|e| count_goldens(&root.join(e.name)))
        .sum();
    assert_eq!(total, goldens, "every golden file has its fixture");
    assert!(total >= 48, "the golden files of every source: {total}");
}

fn count_goldens(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            if p.is_dir() {
                count_goldens(&p)
            } else {
                usize::from(p.to_string_lossy().ends_with(".expected.json"))
            }
        })
        .sum()
}

#[test]
fn every_fixture_folder_is_a_registered_source() {
    for e in std::fs::read_dir(fixtures_dir()).unwrap() {
        let p = e.unwrap().path();
        if !p.is_dir() {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            registry::by_name(&name).is_some() || NOT_SOURCES.contains(&name.as_str()),
            "tests/fixtures/{name}/ is no registered source (src/sources/registry.rs)"
        );
    }
}
