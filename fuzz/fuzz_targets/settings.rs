//! Fuzzes settings parsing: the map variables (`VALUESTREAM_TEAMS`, `..._JIRA_PROJECTS`,
//! `..._PAGERDUTY_SERVICES`), the regexes and numbers, and the OTLP settings (endpoints,
//! `OTEL_EXPORTER_OTLP_HEADERS`, timeout). Input: one value per line, in the order of `VARS`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use valuestream::config::Config;
use valuestream::export::otlp::{parse_headers, OtlpSettings};

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

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Regexes are compiled with a size limit, but keep the fuzzer on parsing, not on huge ones.
    if text.len() > 4096 {
        return;
    }
    let values: Vec<&str> = text.split('\n').collect();
    let pairs: Vec<(&str, &str)> = VARS.iter().copied().zip(values.iter().copied()).collect();
    if let Ok(config) = Config::from_pairs(&pairs) {
        for repo in ["octo-org/hello-world", "acme/checkout"] {
            let _ = config.team_of(&valuestream::model::Repo::new(repo));
        }
    }
    let lookup = |k: &str| {
        pairs
            .iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    };
    let _ = OtlpSettings::from_lookup(lookup);
    if let Some(h) = values.get(3) {
        let _ = parse_headers(h);
    }
});
