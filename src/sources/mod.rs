//! Sources: one module per sending system, each listed once in the [`registry`]. A source does exactly two things: it verifies a
//! delivery (signature or token, per its vendor's scheme) and translates the body into the
//! normalized [`Input`]s. Nothing downstream knows which vendor an event came from except
//! through attribute values.

pub mod ignored;
pub mod registry;
pub mod tracker;
pub mod vcs;
pub mod verify;

use crate::config::{Config, ConfigError, Env, Options};
use crate::model::Input;
use http::HeaderMap;

pub use axum::http;
pub use ignored::{Ignored, PushSkip};

/// Declares each source's module (`src/sources/<name>.rs` or `src/sources/<name>/mod.rs`) and
/// lists its `ENTRY`, in this order, as [`registry::SOURCES`]. Adding a source is its folder and
/// its name here; the module must be named as its entry (checked at compile time), since the
/// route, the secret's key and the fixture folder all take that name.
macro_rules! sources {
    ($($name:ident),+ $(,)?) => {
        $(pub mod $name;)+

        /// Every source's entry, in the order of the `sources!` line.
        const ENTRIES: &[SourceEntry] = &[$($name::ENTRY),+];

        $(const _: () = assert!(
            same_name($name::ENTRY.name, stringify!($name)),
            concat!("sources::", stringify!($name), "::ENTRY is not named ", stringify!($name)),
        );)+
    };
}

// The one list of sources, in the order `--help` lists their settings.
sources! { github, gitlab, jenkins, jira, pagerduty, events }

/// `a == b`, at compile time.
const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// One received delivery, as the HTTP layer saw it.
#[derive(Clone, Copy)]
pub struct Delivery<'a> {
    pub headers: &'a HeaderMap,
    /// The raw query string, if any (Jenkins may carry its token there).
    pub query: Option<&'a str>,
    /// The raw body: signatures are computed over exactly these bytes.
    pub body: &'a [u8],
}

impl<'a> Delivery<'a> {
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a delivery means to the service.
#[derive(Debug)]
pub enum Translation {
    /// Normalized inputs (possibly none, e.g. a `ping`).
    Inputs(Vec<Input>),
    /// A well-formed delivery of an event the service does not use, and why.
    Ignored(Ignored),
}

#[derive(Debug)]
pub struct Translated {
    /// The delivery's ID for idempotency: the vendor's delivery/event ID, else a body hash.
    pub delivery_id: String,
    pub translation: Translation,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Missing or wrong signature/token, or no secret configured.
    #[error("{0}")]
    Unauthorized(String),
    /// The body is not what the vendor sends (malformed JSON, missing required fields).
    #[error("{0}")]
    Malformed(String),
}

pub trait Source: Send + Sync {
    /// The route segment and `service.name`: `github`, `gitlab`, …
    fn name(&self) -> &'static str;
    /// Verifies the delivery. Called before the body is parsed.
    fn authenticate(&self, delivery: &Delivery, config: &Config) -> Result<(), SourceError>;
    /// Translates an authenticated delivery.
    fn translate(&self, delivery: &Delivery, config: &Config) -> Result<Translated, SourceError>;
    /// Headers that authenticate `body` with the configured secret, for replaying recordings
    /// that carry none. Empty when no secret is configured.
    fn sign(&self, body: &[u8], config: &Config) -> Vec<(String, String)>;
}

/// An environment variable a source reads, with its one-line documentation.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub var: &'static str,
    pub doc: &'static str,
}

/// What a source module declares about itself (its `ENTRY`), and what the [`registry`] lists.
pub struct SourceEntry {
    /// The route segment, `service.name` and the key of its secret in Secrets Manager:
    /// `github`, `gitlab`, …
    pub name: &'static str,
    /// The webhook route (`/webhooks/<name>`).
    pub route: &'static str,
    /// Its webhook secret (or token).
    pub secret: Setting,
    /// Its further settings, parsed by `options`.
    pub settings: &'static [Setting],
    /// Parses and checks its further settings into the options its functions read back with
    /// [`Config::source_options`] (a [`SourceOptions`] type's `parse`); errors name the variable.
    pub options: fn(&Env) -> Result<Options, ConfigError>,
    /// Verification and translation of its deliveries.
    pub source: &'static dyn Source,
}

/// A source's settings of its own, beside its secret (Jira's project map, …): its registry
/// entry parses them (`options: Settings::parse`) and its functions read them back
/// (`Settings::of(config)`).
pub trait SourceOptions: Sized + Send + Sync + 'static {
    /// The registry name of the source these options belong to.
    const SOURCE: &'static str;

    /// Reads and checks the settings; an error names the variable.
    fn read(env: &Env) -> Result<Self, ConfigError>;

    /// [`SourceOptions::read`], as a [`SourceEntry::options`].
    fn parse(env: &Env) -> Result<Options, ConfigError> {
        Ok(std::sync::Arc::new(Self::read(env)?))
    }

    /// The source's options in `config` ([`Config::source_options`]).
    fn of(config: &Config) -> &Self {
        config.source_options(Self::SOURCE)
    }
}

/// The `options` of a source without further settings.
pub fn no_options(_: &Env) -> Result<Options, ConfigError> {
    Ok(std::sync::Arc::new(()))
}

/// The source registered under `name` ([`registry::SOURCES`]).
pub fn by_name(name: &str) -> Option<&'static dyn Source> {
    registry::by_name(name).map(|e| e.source)
}

/// The value in force of `entry`'s secret (what signs replayed deliveries).
pub fn signing_secret(entry: &SourceEntry, config: &Config) -> Option<String> {
    config.secret(entry.name).get()
}

/// The shared authentication policy: a source with a secret verifies every delivery; a source
/// without one refuses everything unless unsigned traffic is explicitly allowed (local `serve`).
/// `credential` is what the sender presented (`None`: nothing), `verify` checks it against one
/// value of the secret in constant time; any of the secret's values (the current one, and the
/// previous one during a rotation) verifies.
pub fn authenticate_with(
    entry: &SourceEntry,
    credential: Option<&str>,
    config: &Config,
    verify: impl Fn(&str, &str) -> bool,
) -> Result<(), SourceError> {
    let (source, secret_var) = (entry.name, entry.secret.var);
    let values = config.secret(source).candidates();
    let secret = (!values.is_empty()).then_some(&values);
    match (secret, credential) {
        (Some(values), Some(presented)) => {
            if values.iter().any(|secret| verify(secret, presented)) {
                Ok(())
            } else {
                Err(SourceError::Unauthorized(format!(
                    "{source}: signature or token does not match {secret_var}"
                )))
            }
        }
        (_, None) if config.allow_unsigned => Ok(()),
        (None, Some(_)) if config.allow_unsigned => Ok(()),
        (Some(_), None) => Err(SourceError::Unauthorized(format!(
            "{source}: the delivery carries no signature or token"
        ))),
        (None, _) => Err(SourceError::Unauthorized(format!(
            "{source}: {secret_var} is not set, so {source} deliveries are refused"
        ))),
    }
}

/// Parses a JSON body, or says why not.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    source: &str,
    body: &[u8],
) -> Result<T, SourceError> {
    serde_json::from_slice(body).map_err(|e| {
        SourceError::Malformed(format!("{source}: body is not the expected JSON: {e}"))
    })
}

/// A JSON value whose objects have no duplicate keys. `serde_json::Value` keeps the last of
/// two equal keys; a sender that writes `"status"` twice has a bug we should not guess around
/// (the typed sources refuse it through serde's derived `duplicate field` check).
pub struct UniqueJson(pub serde_json::Value);

impl<'de> serde::Deserialize<'de> for UniqueJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(UniqueJson)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        serde::Deserialize::deserialize(d).map(|UniqueJson(v)| v)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(UniqueJson(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(serde_json::Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key `{key}`")));
            }
            let UniqueJson(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(serde_json::Value::Object(out))
    }
}
