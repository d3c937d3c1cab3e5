//! Inputs the fuzzers (fuzz/, scripts/fuzz) crashed on, replayed in the normal suite: each file
//! of tests/fixtures/fuzz/ goes through the same calls as its fuzz target and must give an
//! answer, not a panic. `settings-*` files: one value per line in the order of
//! fuzz/fuzz_targets/settings.rs.

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
