//! Sources: one module per sending system. A source does exactly two things: it verifies a
//! delivery (signature or token, per its vendor's scheme) and translates the body into the
//! normalized [`Input`]s. Nothing downstream knows which vendor an event came from except
//! through attribute values.

pub mod events;
pub mod github;
pub mod gitlab;
pub mod jenkins;
pub mod jira;
pub mod pagerduty;
pub mod verify;

use crate::config::Config;
use crate::model::Input;
use http::HeaderMap;

pub use axum::http;

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
    Ignored(String),
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

/// Every source, by route name.
pub fn all() -> [&'static dyn Source; 6] {
    [
        &github::GitHub,
        &gitlab::GitLab,
        &jenkins::Jenkins,
        &jira::Jira,
        &pagerduty::PagerDuty,
        &events::Events,
    ]
}

pub fn by_name(name: &str) -> Option<&'static dyn Source> {
    all().into_iter().find(|s| s.name() == name)
}

/// The shared authentication policy: a source with a secret verifies every delivery; a source
/// without one refuses everything unless unsigned traffic is explicitly allowed (local `serve`).
/// `credential` is what the sender presented (`None`: nothing), `verify` checks it against the
/// secret in constant time.
pub fn authenticate_with(
    source: &str,
    secret_var: &str,
    secret: Option<&str>,
    credential: Option<&str>,
    config: &Config,
    verify: impl FnOnce(&str, &str) -> bool,
) -> Result<(), SourceError> {
    match (secret, credential) {
        (Some(secret), Some(presented)) => {
            if verify(secret, presented) {
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
