//! Hostile input through the real router and the embedded store: for every source, at least 500
//! seeded, generated deliveries — missing and wrong credentials; malformed, truncated, deeply
//! nested and huge bodies; and the real fixtures of tests/fixtures, signed correctly, with fields
//! mutated (type swaps, missing objects, overflowing numbers, absurd times, huge strings).
//!
//! Asserted for every single delivery: no 5xx, no panic (the router call returns), a JSON answer
//! with a `status`, and a `reason` whenever it is refused (4xx) or ignored (202); a refused or
//! ignored delivery leaves the store byte-for-byte as it was. At the end, no exported span
//! carries a time outside the model's window (model::time) or ends before it starts.

mod common;

use axum::http::StatusCode;
use common::*;
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use valuestream::sources;
use valuestream::store::embedded::EmbeddedStore;

/// Generated deliveries per source.
const CASES: usize = 600;
/// Deliveries per fresh service.
const CHUNK: usize = 100;
/// The body limit of the app under test: huge bodies are cheap to refuse.
const LIMIT: usize = 256 * 1024;

/// Every registered source's name, in registry order.
fn registered() -> Vec<&'static str> {
    sources::registry::SOURCES.iter().map(|e| e.name).collect()
}

/// A fixture body and the headers it is sent with (its headers file's).
struct Seed {
    name: String,
    headers: Vec<(String, String)>,
    body: Value,
}

fn json_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json")
            && !p.to_string_lossy().ends_with(".expected.json")
        {
            out.push(p);
        }
    }
}

/// The headers of a fixture: its `<case>.headers` file, else its folder's `headers` (as
/// tests/golden.rs reads them), as `name: value` lines.
fn fixture_headers(case: &Path) -> Vec<(String, String)> {
    let stem = case
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".json")
        .to_string();
    [
        case.with_file_name(format!("{stem}.headers")),
        case.with_file_name("headers"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .unwrap_or_default()
    .lines()
    .filter_map(|l| l.split_once(':'))
    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
    .collect()
}

fn seeds(source: &str) -> Vec<Seed> {
    let dir = fixtures_dir().join(source);
    let mut files = Vec::new();
    json_files(&dir, &mut files);
    let seeds: Vec<Seed> = files
        .into_iter()
        .map(|p| {
            let body: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let rel = p.strip_prefix(&dir).unwrap();
            Seed {
                name: rel.to_string_lossy().into_owned(),
                headers: fixture_headers(&p),
                body,
            }
        })
        .collect();
    assert!(!seeds.is_empty(), "fixtures for {source}");
    seeds
}

// ---------------------------------------------------------------- mutations

#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn paths(v: &Value, here: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                here.push(Seg::Key(k.clone()));
                paths(c, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                here.push(Seg::Index(i));
                paths(c, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn get<'v>(v: &'v Value, path: &[Seg]) -> &'v Value {
    path.iter().fold(v, |v, s| match s {
        Seg::Key(k) => &v[k.as_str()],
        Seg::Index(i) => &v[*i],
    })
}

fn at<'v>(v: &'v mut Value, path: &[Seg]) -> &'v mut Value {
    path.iter().fold(v, |v, s| match s {
        Seg::Key(k) => &mut v[k.as_str()],
        Seg::Index(i) => &mut v[*i],
    })
}

/// Whether a value at `path` looks like a time (by its field name or its text).
fn time_like(path: &[Seg], v: &Value) -> bool {
    let name = match path.last() {
        Some(Seg::Key(k)) => k.to_ascii_lowercase(),
        _ => String::new(),
    };
    let named = name.ends_with("_at")
        || name.contains("time")
        || name.contains("date")
        || name == "created"
        || name == "updated";
    let text = v
        .as_str()
        .is_some_and(|s| s.len() >= 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-');
    named || text
}

/// Raw JSON literals a `Value` cannot hold; spliced in for their placeholder strings.
const RAW: &[&str] = &[
    "18446744073709551616",
    "-9223372036854775809",
    "1e400",
    "-1e400",
    "1.7976931348623157e309",
    "123456789012345678901234567890",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "NaN",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
];

const ABSURD_TIMES: &[&str] = &[
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "1999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999999Z",
    "2262-04-11T23:47:16.854775808Z",
    "2200-01-01T00:00:00Z",
    "+275760-09-13T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-13-01T00:00:00Z",
    "2024-01-01T25:61:61Z",
    "2024-01-01",
    "0000-00-00 00:00:00 UTC",
    "9999-12-31 23:59:59 +2359",
    "1999-12-31 23:59:59 UTC",
    "yesterday",
    "",
];

const ABSURD_EPOCHS: &[i64] = &[
    253_402_300_799_000,
    253_402_300_799_999,
    -1,
    -62_135_596_800_000,
    0,
    1,
    i64::MAX,
    i64::MIN,
    946_684_799_999,
    4_102_444_800_000,
];

fn mutate(rng: &mut TestRng, body: &mut Value) {
    let mut all = Vec::new();
    paths(body, &mut Vec::new(), &mut all);
    let times: Vec<&Vec<Seg>> = all
        .iter()
        .filter(|p| !p.is_empty() && time_like(p, get(body, p)))
        .collect();
    // A third of the mutations go to times.
    let path = if !times.is_empty() && rng.random_bool(0.33) {
        times[rng.random_range(0..times.len())].clone()
    } else {
        all[rng.random_range(0..all.len())].clone()
    };
    if path.is_empty() {
        *body = match rng.random_range(0..4) {
            0 => json!([]),
            1 => json!("body"),
            2 => json!(null),
            _ => json!(17),
        };
        return;
    }
    let target = at(body, &path);
    *target = match rng.random_range(0..13) {
        // Type swaps.
        0 => match target {
            Value::String(_) => json!(12345),
            Value::Number(_) => json!("12345"),
            Value::Bool(b) => json!(b.to_string()),
            Value::Array(_) => json!({}),
            Value::Object(_) => json!([]),
            Value::Null => json!({}),
        },
        1 => Value::Null,
        2 => json!(true),
        3 => json!([target.clone()]),
        // A missing field or object.
        4 => {
            let (last, parent) = path.split_last().unwrap();
            let parent = at(body, parent);
            match (parent, last) {
                (Value::Object(m), Seg::Key(k)) => {
                    m.remove(k);
                }
                (Value::Array(a), Seg::Index(i)) if *i < a.len() => {
                    a.remove(*i);
                }
                _ => {}
            }
            return;
        }
        // Overflowing and out-of-range numbers (spliced in raw).
        5 | 6 => json!(format!("@@RAW{}@@", rng.random_range(0..RAW.len()))),
        7 => json!(ABSURD_EPOCHS[rng.random_range(0..ABSURD_EPOCHS.len())]),
        8 | 9 => json!(ABSURD_TIMES[rng.random_range(0..ABSURD_TIMES.len())]),
        10 => json!("x".repeat(rng.random_range(1000..60_000))),
        11 => json!(f64::MAX),
        _ => json!({"nested": {"deeper": [target.clone(), "ß☃\u{1F600}"]}}),
    };
}

fn splice_raw(text: String) -> String {
    let mut out = text;
    for (i, raw) in RAW.iter().enumerate() {
        out = out.replace(&format!("\"@@RAW{i}@@\""), raw);
    }
    out
}

// ---------------------------------------------------------------- deliveries

struct Case {
    what: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn random_bytes(rng: &mut TestRng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.random_range(0..=255u8)).collect()
}

/// Whether a header carries the delivery's ID (`x-github-delivery`, `x-gitlab-event-uuid`,
/// `x-atlassian-webhook-identifier`, …): each hostile delivery gets its own.
fn is_delivery_id(name: &str) -> bool {
    ["delivery", "uuid", "identifier", "-id"]
        .iter()
        .any(|w| name.contains(w))
}

fn signed(source: &str, app: &App, seed: &Seed, body: Vec<u8>, i: usize) -> Vec<(String, String)> {
    let src = sources::by_name(source).unwrap();
    let mut h: Vec<(String, String)> = src.sign(&body, &app.config);
    h.push(("content-type".into(), "application/json".into()));
    for (name, value) in &seed.headers {
        if is_delivery_id(name) {
            h.push((name.clone(), format!("hostile-{i}")));
        } else {
            h.push((name.clone(), value.clone()));
        }
    }
    h
}

fn case(source: &str, app: &App, seeds: &[Seed], rng: &mut TestRng, i: usize) -> Case {
    let seed = &seeds[rng.random_range(0..seeds.len())];
    let fixture_bytes = serde_json::to_vec(&seed.body).unwrap();
    let kind = rng.random_range(0..100);
    let (what, body, good_credentials) = match kind {
        // Credentials: missing, wrong, malformed (the body is a real fixture).
        0..=9 => ("credentials".to_string(), fixture_bytes, false),
        // Malformed bodies.
        10..=13 => {
            let cut = rng.random_range(0..fixture_bytes.len());
            (
                format!("truncated at {cut}"),
                fixture_bytes[..cut].to_vec(),
                true,
            )
        }
        14 => ("deep [".into(), vec![b'['; 10_000], true),
        15 => ("deep {\"a\":".into(), b"{\"a\":".repeat(5_000), true),
        16 => (
            "huge".into(),
            format!("{{\"x\":\"{}\"}}", "y".repeat(LIMIT + 10)).into_bytes(),
            true,
        ),
        17 => {
            let n = rng.random_range(0..2000);
            ("random bytes".into(), random_bytes(rng, n), true)
        }
        18 => {
            let mut b = vec![0xEF, 0xBB, 0xBF];
            b.extend_from_slice(&fixture_bytes);
            ("BOM".into(), b, true)
        }
        19 => ("empty".into(), Vec::new(), true),
        20 => (
            "not an object".into(),
            ["null", "[]", "\"x\"", "1", "true", "[{}]"][rng.random_range(0..6)]
                .as_bytes()
                .to_vec(),
            true,
        ),
        21 => {
            // A duplicate top-level key.
            let text = String::from_utf8(fixture_bytes).unwrap();
            let dup = text.replacen('{', "{\"id\":\"dup\",\"id\":\"dup2\",", 1);
            ("duplicate key".into(), dup.into_bytes(), true)
        }
        22 => {
            let big = format!("[{}1]", "[".repeat(120)) + &"]".repeat(120);
            ("nested 121 deep".into(), big.into_bytes(), true)
        }
        // Real fixtures, signed, with one to three fields mutated.
        _ => {
            let mut body = seed.body.clone();
            let n = rng.random_range(1..=3);
            for _ in 0..n {
                mutate(rng, &mut body);
            }
            let text = splice_raw(serde_json::to_string(&body).unwrap());
            (format!("{n} mutation(s)"), text.into_bytes(), true)
        }
    };
    let headers = if good_credentials {
        signed(source, app, seed, body.clone(), i)
    } else {
        let mut h = signed(source, app, seed, body.clone(), i);
        let names: Vec<String> = app_credential_headers(source, app);
        match rng.random_range(0..4) {
            // None at all.
            0 => h.retain(|(k, _)| !names.contains(k)),
            // Wrong value.
            1 => {
                for (k, v) in h.iter_mut() {
                    if names.contains(k) {
                        *v = format!("{v}0");
                    }
                }
            }
            // Truncated.
            2 => {
                for (k, v) in h.iter_mut() {
                    if names.contains(k) {
                        v.truncate(v.len() / 2);
                    }
                }
            }
            // Another scheme, or SHA-1.
            _ => {
                h.retain(|(k, _)| !names.contains(k));
                for k in &names {
                    h.push((
                        k.clone(),
                        "sha1=0123456789abcdef0123456789abcdef01234567".into(),
                    ));
                }
            }
        }
        h
    };
    Case {
        what: format!("{source} {} {what}", seed.name),
        headers,
        body,
    }
}

/// The headers that carry a source's credential: those it signs a delivery with.
fn app_credential_headers(source: &str, app: &App) -> Vec<String> {
    let names: Vec<String> = sources::by_name(source)
        .unwrap()
        .sign(b"{}", &app.config)
        .into_iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    assert!(!names.is_empty(), "{source} signs its deliveries");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_deliveries_never_5xx_panic_or_change_the_store_when_refused() {
    let started = std::time::Instant::now();
    let limit = LIMIT.to_string();
    let mut tally: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    let mut exported = 0;
    let mut time_rule: BTreeMap<&str, usize> = BTreeMap::new();
    let secrets: Vec<(&str, String)> = sources::registry::SOURCES
        .iter()
        .map(|e| (e.secret.var, format!("hostile-{}-secret", e.name)))
        .collect();
    for (n, source) in registered().into_iter().enumerate() {
        let seeds = seeds(source);
        let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[n as u8 + 11; 32]);
        // A fresh service every CHUNK deliveries: a small store keeps the per-delivery dumps
        // cheap.
        for chunk in 0..CASES / CHUNK {
            let store = Arc::new(EmbeddedStore::in_memory().unwrap());
            let mut pairs: Vec<(&str, &str)> =
                secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
            pairs.push(("VALUESTREAM_MAX_BODY_BYTES", &limit));
            let config = test_config(&pairs);
            let app = app_with(store.clone(), config).await;
            // The store as it is before each delivery (refreshed after every one).
            let mut current = dump(&store);
            for i in chunk * CHUNK..(chunk + 1) * CHUNK {
                let c = case(source, &app, &seeds, &mut rng, i);
                let headers: Vec<(&str, &str)> = c
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let (status, answer) = app.post(source, &headers, c.body.clone()).await;
                *tally.entry((source, status.as_u16())).or_default() += 1;
                assert!(!status.is_server_error(), "{}: {status} {answer}", c.what);
                assert!(
                    answer["status"].is_string(),
                    "{}: the answer is JSON with a status: {answer}",
                    c.what
                );
                let after = dump(&store);
                if status.is_client_error() || status == StatusCode::ACCEPTED {
                    let reason = answer["reason"].as_str().unwrap_or_default();
                    assert!(!reason.trim().is_empty(), "{}: no reason: {answer}", c.what);
                    if reason.contains("outside the accepted window")
                        || reason.contains("before its")
                    {
                        *time_rule.entry(source).or_default() += 1;
                    }
                    assert!(
                        after == current,
                        "{}: a refused/ignored delivery ({status}: {reason}) changed the store",
                        c.what
                    );
                }
                current = after;
                if c.what.contains("credentials") {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{}: {answer}", c.what);
                }
            }
            // Every exported span lies in the window and does not end before it starts.
            let earliest = ns("2000-01-01T00:00:00Z");
            let latest = ns(&(chrono::Utc::now() + chrono::TimeDelta::days(1)).to_rfc3339());
            let spans = app.receiver.spans();
            for s in &spans {
                assert!(
                    earliest <= s.start_ns && s.start_ns <= s.end_ns && s.end_ns <= latest,
                    "{source}: {} exported with times {} .. {}",
                    s.name,
                    s.start_ns,
                    s.end_ns
                );
            }
            exported += spans.len();
        }
    }
    eprintln!(
        "{} deliveries in {:?}, {exported} spans exported; answers per source and status: \
         {tally:?}; refused by the time rule: {time_rule:?}",
        registered().len() * CASES,
        started.elapsed()
    );
    // Each source was exercised beyond its credential check and beyond its JSON parser.
    for source in registered() {
        let refused_400 = tally.get(&(source, 400)).copied().unwrap_or(0);
        let accepted = tally.get(&(source, 200)).copied().unwrap_or(0)
            + tally.get(&(source, 202)).copied().unwrap_or(0);
        assert!(refused_400 > 50, "{source}: {refused_400} × 400");
        assert!(accepted > 20, "{source}: {accepted} × 2xx");
        let times = time_rule.get(source).copied().unwrap_or(0);
        assert!(
            times > 0,
            "{source}: absurd times reached the time rule {times} times"
        );
    }
}
