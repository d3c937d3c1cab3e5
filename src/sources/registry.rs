//! The source registry: what the one list of sources (the `sources!` line of
//! `src/sources/mod.rs`, which declares each source's module) gives everything else. Everything
//! that depends on which sources exist derives from [`SOURCES`]: the webhook routes
//! ([`crate::http`]), the settings list (`--help` and the README check, [`settings`]), each
//! source's settings in [`Config`] (parsed here, by each entry), the keys of the Secrets Manager
//! secret (`secrets::KEYS`), the fuzz target's choice of source (`fuzz/fuzz_targets/source.rs`),
//! the hostile-input test, the local secrets and events (`scripts/make-events.py`, which asks
//! `valuestream sources`) and the golden-test discovery (tests/golden.rs walks
//! `tests/fixtures/<name>/` for every entry).
//!
//! Adding a source: its module (`src/sources/<name>/`, declaring its `ENTRY`), its name in the
//! `sources!` line, its fixtures with their golden files under `tests/fixtures/<name>/`, and its
//! README section (docs/ARCHITECTURE.md lists the steps).
//!
//! `Config`'s constructors live here, not in `config.rs`: the configuration sits below the
//! sources, so it cannot list them; the registry parses each source's settings and hands them to
//! [`Config::with_sources`].

use crate::config::{
    Config, ConfigError, Env, Lookup, Secret, Settings, SourceMap, SourceSettings, ENV_VARS,
};

pub use super::{Setting, SourceEntry};

/// Every source, in the order of the `sources!` line of `src/sources/mod.rs` (the order `--help`
/// lists their settings).
const ENTRIES: &[SourceEntry] = super::ENTRIES;

/// Every registered source.
pub static SOURCES: &[SourceEntry] = ENTRIES;

/// How many sources are registered (a constant, for arrays derived from the registry).
pub const COUNT: usize = ENTRIES.len();

/// Each source's name and the variable of its secret, in registry order (what `secrets::KEYS`
/// is).
pub const SECRETS: [(&str, &str); COUNT] = {
    let mut out = [("", ""); COUNT];
    let mut i = 0;
    while i < COUNT {
        out[i] = (ENTRIES[i].name, ENTRIES[i].secret.var);
        i += 1;
    }
    out
};

/// The registered source named `name`.
pub fn by_name(name: &str) -> Option<&'static SourceEntry> {
    SOURCES.iter().find(|e| e.name == name)
}

/// The names of every registered source, for messages: `github, gitlab, …`.
pub fn names() -> String {
    SOURCES
        .iter()
        .map(|e| e.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every environment variable the binary reads, with its documentation: each source's settings
/// (its secret first), then the service's own ([`ENV_VARS`]). `--help` prints this list, and
/// tests/docs.rs checks that README's Configuration table names every entry.
pub fn settings() -> Vec<(&'static str, &'static str)> {
    SOURCES
        .iter()
        .flat_map(|e| std::iter::once(&e.secret).chain(e.settings))
        .map(|s| (s.var, s.doc))
        .chain(ENV_VARS.iter().copied())
        .collect()
}

/// What the hidden `valuestream sources` prints for scripts (`scripts/make-events.py`): each
/// registered source's name, route and secret variable, in registry order.
pub fn describe() -> serde_json::Value {
    SOURCES
        .iter()
        .map(|e| serde_json::json!({"name": e.name, "route": e.route, "secret_var": e.secret.var}))
        .collect()
}

/// What `valuestream sources --sign` prints: for each `{"source", "secret", "body"}` of
/// `requests`, the headers (`[[name, value], …]`) the source signs `body` with under `secret`.
pub fn sign_requests(requests: &serde_json::Value) -> Result<serde_json::Value, String> {
    let requests = requests
        .as_array()
        .ok_or("expected a JSON array of {\"source\", \"secret\", \"body\"}")?;
    let field = |r: &serde_json::Value, k: &str| {
        r[k].as_str()
            .map(str::to_string)
            .ok_or(format!("{r}: no string {k:?}"))
    };
    let mut out = Vec::new();
    for r in requests {
        let name = field(r, "source")?;
        let entry = by_name(&name).ok_or(format!("{name} is not registered: {}", names()))?;
        let secret = field(r, "secret")?;
        let config =
            Config::from_pairs(&[(entry.secret.var, &secret)]).map_err(|e| e.to_string())?;
        let headers = entry.source.sign(field(r, "body")?.as_bytes(), &config);
        out.push(serde_json::json!(headers));
    }
    Ok(out.into())
}

/// Each registered source's secret and options, read through `env`.
fn source_settings(env: &Env) -> Result<SourceMap, ConfigError> {
    SOURCES
        .iter()
        .map(|e| {
            let secret = Secret::new(env.text(e.secret.var));
            Ok((e.name, SourceSettings::new(secret, (e.options)(env)?)))
        })
        .collect()
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_env`] but from explicit pairs (tests, replays).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    /// Every registered source's settings, then the service's own.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let lookup: Lookup = &lookup;
        let sources = source_settings(&Settings::new(lookup))?;
        Config::with_sources(lookup, sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_consistent() {
        for e in SOURCES {
            assert_eq!(e.source.name(), e.name, "the entry names its source");
            assert_eq!(e.route, format!("/webhooks/{}", e.name));
            assert!(
                !e.secret.var.is_empty(),
                "{}: every source has a secret",
                e.name
            );
            assert_eq!(SECRETS.iter().filter(|(n, _)| *n == e.name).count(), 1);
            assert!(by_name(e.name).is_some_and(|f| std::ptr::eq(f, e)));
        }
        let mut names: Vec<_> = SOURCES.iter().map(|e| e.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), SOURCES.len(), "names are unique");
    }

    #[test]
    fn settings_list_sources_then_the_service_and_repeat_none() {
        let all = settings();
        assert_eq!(all[0].0, "VALUESTREAM_GITHUB_SECRET");
        let mut vars: Vec<_> = all.iter().map(|(v, _)| *v).collect();
        vars.sort();
        vars.dedup();
        assert_eq!(vars.len(), all.len(), "no setting is listed twice");
        for (var, _) in ENV_VARS {
            assert!(all.iter().any(|(v, _)| v == var));
        }
    }

    #[test]
    fn scripts_read_the_registry_and_sign_through_it() {
        let described = describe();
        let names: Vec<&str> = described
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, SOURCES.iter().map(|e| e.name).collect::<Vec<_>>());
        let requests: serde_json::Value = SOURCES
            .iter()
            .map(|e| serde_json::json!({"source": e.name, "secret": "s", "body": "{}"}))
            .collect();
        let signed = sign_requests(&requests).unwrap();
        for (e, headers) in SOURCES.iter().zip(signed.as_array().unwrap()) {
            let config = Config::from_pairs(&[(e.secret.var, "s")]).unwrap();
            assert_eq!(headers, &serde_json::json!(e.source.sign(b"{}", &config)));
            assert!(!headers.as_array().unwrap().is_empty(), "{}", e.name);
        }
        let unknown = serde_json::json!([{"source": "nope", "secret": "s", "body": ""}]);
        assert!(sign_requests(&unknown)
            .unwrap_err()
            .contains("not registered"));
    }

    #[test]
    #[should_panic(expected = "are not a")]
    fn options_of_another_type_are_a_bug_not_a_default() {
        let config = Config::from_pairs(&[]).unwrap();
        let _: &u8 = config.source_options("jira");
    }

    #[test]
    fn config_reads_every_registered_setting() {
        let asked = std::sync::Mutex::new(Vec::new());
        crate::config::Config::from_lookup(|var| {
            asked.lock().unwrap().push(var.to_string());
            None
        })
        .unwrap();
        let asked = asked.into_inner().unwrap();
        for e in SOURCES {
            for s in std::iter::once(&e.secret).chain(e.settings) {
                assert!(asked.iter().any(|a| a == s.var), "{} is never read", s.var);
            }
        }
    }
}
