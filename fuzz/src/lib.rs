//! Shared harness of the fuzz targets: one delivery through a source's translation (the
//! credential check is bypassed: the fuzzer plays an authenticated sender) and the model's time
//! rule, as the router runs them.
//!
//! Input format of the source targets: for GitHub and GitLab the first line is the event
//! header's value (`X-GitHub-Event`, `X-Gitlab-Event`) and the rest is the body; for the other
//! sources the whole input is the body. `scripts/fuzz` seeds each corpus from tests/fixtures in that format.

use std::sync::OnceLock;
use valuestream::config::Config;
use valuestream::model::time;
use valuestream::sources::http::{HeaderMap, HeaderName, HeaderValue};
use valuestream::sources::{self, Delivery, Translation};

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_pairs(&[
            ("VALUESTREAM_TEAMS", "octo-org/*=platform,acme/checkout=payments"),
            ("VALUESTREAM_PAGERDUTY_SERVICES", "PIJ90N7=acme/checkout"),
            ("VALUESTREAM_JIRA_PROJECTS", "SHOP=acme/shop"),
        ])
        .expect("the fuzz configuration parses")
    })
}

/// Translates `data` as a delivery to `source` whose event header is `event_header`.
pub fn translate(source: &str, event_header: Option<&'static str>, data: &[u8]) {
    let src = sources::by_name(source).expect("a known source");
    let (first, body) = match (event_header, data.iter().position(|b| *b == b'\n')) {
        (Some(_), Some(i)) => (&data[..i], &data[i + 1..]),
        _ => (&data[..0], data),
    };
    let mut headers = HeaderMap::new();
    if let (Some(name), Ok(value)) = (event_header, HeaderValue::from_bytes(first)) {
        headers.insert(HeaderName::from_static(name), value);
    }
    let delivery = Delivery {
        headers: &headers,
        query: None,
        body,
    };
    if let Ok(t) = src.translate(&delivery, config()) {
        if let Translation::Inputs(inputs) = t.translation {
            let _ = time::check(&inputs, chrono::Utc::now());
        }
    }
}
