//! Inputs the fuzzers (fuzz/, scripts/fuzz) crashed on, replayed in the normal suite: each file
//! of tests/fixtures/fuzz/ goes through the same calls as its fuzz target and must give an
//! answer, not a panic. `settings-*` files: one value per line in the order of
//! fuzz/fuzz_targets/settings.rs. `source-<name>-*` files: an input of the `source` target
//! (fuzz/src/lib.rs, compiled here as it is), replayed through the source `<name>` whatever its
//! index in the registry is now. And every fixture of every registered source goes through that
//! target's harness in the corpus format `scripts/fuzz` seeds it with.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use valuestream::config::Config;
use valuestream::export::otlp::{parse_headers, OtlpSettings};

/// The variables of the settings target, in its order.
const VARS: &[&str] = &[
    "VALUESTREAM_TEAMS",
    "VALUESTREAM_JIRA_PROJECTS",
    "VALUESTREAM_PAGERDUTY_SERVICES",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "VALUESTREAM_MAX_BODY_BYTES",
    "VALUESTREAM_TTL_OPEN_DAYS",
    "VALUESTREAM_TTL_DELIVERY_DAYS",
    "VALUESTREAM_INCIDENT_WINDOW_HOURS",
    "VALUESTREAM_PRODUCTION_ENV_PATTERN",
    "VALUESTREAM_ALLOW_UNSIGNED",
];

#[test]
fn settings_crashes_found_by_fuzzing_are_errors_naming_the_variable() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("settings-")
        {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let values: Vec<&str> = text.split('\n').collect();
        let pairs: Vec<(&str, &str)> = VARS.iter().copied().zip(values.iter().copied()).collect();
        let lookup = |k: &str| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        // Every call answers; a bad value is an error that names its variable.
        let config = Config::from_pairs(&pairs);
        let otlp = OtlpSettings::from_lookup(lookup);
        let headers = parse_headers(values[3]);
        let why = |r: String| assert!(r.contains("VALUESTREAM_") || r.contains("OTEL_"), "{r}");
        if let Err(e) = config {
            why(e.to_string());
        }
        if let Err(e) = otlp {
            why(e.to_string());
        }
        let e = headers.expect_err("`%aé` is not a percent-encoded header value");
        assert!(e.to_string().contains("OTEL_EXPORTER_OTLP_HEADERS"), "{e}");
    }
    assert!(seen > 0, "no settings-* file in {}", dir.display());
}

fn fuzz_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz")
}

#[test]
fn source_crashes_found_by_fuzzing_answer() {
    for entry in std::fs::read_dir(fuzz_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("source-") else {
            continue;
        };
        let source = valuestream::sources::registry::SOURCES
            .iter()
            .find(|e| rest.starts_with(&format!("{}-", e.name)))
            .unwrap_or_else(|| panic!("{name}: source-<registered name>-<id>"));
        let data = std::fs::read(&path).unwrap();
        let mut input = harness::input(source.name, &[], b"");
        input.truncate(1);
        input.extend_from_slice(data.get(1..).unwrap_or_default());
        let _ = harness::deliver(&input);
    }
}

/// The `name: value` lines of a fixture's headers file (`<case>.headers`, else its folder's
/// `headers`), as `scripts/fuzz` seeds them.
fn fixture_headers(case: &std::path::Path) -> Vec<(String, String)> {
    let stem = case
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(".json", "");
    [
        case.with_file_name(format!("{stem}.headers")),
        case.with_file_name("headers"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .unwrap_or_default()
    .lines()
    .filter_map(|l| l.split_once(':'))
    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
    .collect()
}

fn payloads(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.to_string_lossy().into_owned();
        if p.is_dir() {
            payloads(&p, out);
        } else if name.ends_with(".json") && !name.ends_with(".expected.json") {
            out.push(p);
        }
    }
}

#[test]
fn every_registered_source_takes_its_fixtures_through_the_fuzz_harness() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (index, e) in valuestream::sources::registry::SOURCES.iter().enumerate() {
        let mut cases = Vec::new();
        payloads(&root.join(e.name), &mut cases);
        assert!(!cases.is_empty(), "{}: no fixtures", e.name);
        for case in cases {
            let input = harness::input(
                e.name,
                &fixture_headers(&case),
                &std::fs::read(&case).unwrap(),
            );
            assert_eq!(usize::from(input[0]), index);
            assert!(std::ptr::eq(harness::entry(input[0]), e));
            let golden = case.to_string_lossy().replace(".json", ".expected.json");
            let translated = harness::deliver(&input);
            assert!(
                translated || !std::path::Path::new(&golden).exists(),
                "{}: a golden fixture is authenticated and translated",
                case.display()
            );
        }
    }
}
