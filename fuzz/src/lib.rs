//! Shared harness of the fuzz targets: one delivery through a registered source, as the router
//! runs it: its credential check (with headers the source signs the body with itself), its
//! translation whatever the check said (the fuzzer also plays an authenticated sender), and the
//! model's time rule.
//!
//! Input format of the `source` target, for every registered source alike: the first byte picks
//! the source (its index in `sources::registry::SOURCES`, modulo their number); then the
//! delivery's headers as `name: value` lines (those of a fixture's `.headers` file), an empty
//! line, and the body. Without an empty line the rest is the body and there are no headers.
//! `scripts/fuzz` seeds the corpus from `tests/fixtures/<source>/` of every registered source in
//! that format ([`input`] builds one); `tests/fuzz_regressions.rs` replays saved crashes and the
//! fixtures through [`deliver`].

use std::sync::OnceLock;
use valuestream::config::Config;
use valuestream::model::time;
use valuestream::sources::http::{HeaderMap, HeaderName, HeaderValue};
use valuestream::sources::registry::{SourceEntry, SOURCES};
use valuestream::sources::{Delivery, Translation};

/// The secret every source is configured with.
const SECRET: &str = "fuzz-secret";

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut pairs = vec![
            (
                "VALUESTREAM_TEAMS",
                "octo-org/*=platform,acme/checkout=payments",
            ),
            ("VALUESTREAM_PAGERDUTY_SERVICES", "PIJ90N7=acme/checkout"),
            ("VALUESTREAM_JIRA_PROJECTS", "SHOP=acme/shop"),
        ];
        pairs.extend(SOURCES.iter().map(|e| (e.secret.var, SECRET)));
        Config::from_pairs(&pairs).expect("the fuzz configuration parses")
    })
}

/// The source an input's first byte picks.
pub fn entry(selector: u8) -> &'static SourceEntry {
    &SOURCES[usize::from(selector) % SOURCES.len()]
}

/// An input of the `source` target: `source`'s index, `headers` and `body`.
pub fn input(source: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let index = SOURCES
        .iter()
        .position(|e| e.name == source)
        .unwrap_or_else(|| panic!("{source} is not registered"));
    let mut out = vec![u8::try_from(index).expect("fewer than 256 sources")];
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// The headers block and the body of an input (without its selector byte).
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    if data.first() == Some(&b'\n') {
        return (&data[..0], &data[1..]);
    }
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (&data[..0], data),
    }
}

/// The `name: value` lines of a headers block (lines that are not a valid header are left out).
fn headers(block: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in block.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// One input of the `source` target through the source its first byte picks: whether it was
/// authenticated and translated (what the regression test asserts of the fixtures).
pub fn deliver(data: &[u8]) -> bool {
    let Some((&selector, rest)) = data.split_first() else {
        return false;
    };
    let entry = entry(selector);
    let (block, body) = split(rest);
    let mut headers = headers(block);
    for (name, value) in entry.source.sign(body, config()) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    let delivery = Delivery {
        headers: &headers,
        query: None,
        body,
    };
    let authenticated = entry.source.authenticate(&delivery, config()).is_ok();
    match entry.source.translate(&delivery, config()) {
        Ok(t) => {
            if let Translation::Inputs(inputs) = t.translation {
                let _ = time::check(&inputs, chrono::Utc::now());
            }
            authenticated
        }
        Err(_) => false,
    }
}
