//! What the engine needs to know of the service's settings, and nothing else: no vendor secret
//! or source setting reaches it. Built from the service's `Config` (or directly, in tests).

use crate::config::Config;
use regex::Regex;
use std::sync::Arc;

/// The engine's settings: settle period, record lifetime, the DORA rules' patterns and windows.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Seconds a finished span waits before export (`VALUESTREAM_SETTLE_SECS`).
    pub settle_secs: i64,
    /// Event time after which a repository's settled records are sealed, in seconds
    /// (`VALUESTREAM_SEAL_AFTER_SECS`, [`super::seal`]).
    pub seal_after_secs: i64,
    /// Lifetime of the stored state, in seconds, after its last write
    /// (`VALUESTREAM_TTL_OPEN_DAYS`).
    pub ttl_open_secs: i64,
    /// Environments whose deployments count for DORA (`VALUESTREAM_PRODUCTION_ENV_PATTERN`).
    pub production_env: Regex,
    /// Change titles and labels that make a deployment shipping them rework
    /// (`VALUESTREAM_REWORK_PATTERN`).
    pub rework_pattern: Regex,
    /// How far back an incident looks for the deployment that caused it, in seconds
    /// (`VALUESTREAM_INCIDENT_WINDOW_SECS`).
    pub incident_window_secs: i64,
    /// Most links one exported span carries (`OTEL_SPAN_LINK_COUNT_LIMIT`).
    pub span_link_limit: usize,
    /// Longest wait for one store operation, in milliseconds: a wake-up marker is due late
    /// enough that a delivery still writing when it comes due is not missed.
    pub store_timeout_ms: u64,
    /// Memory the settlements of one drain may hold at once, in bytes
    /// (`VALUESTREAM_SETTLE_MEMORY_MB`): a scope whose settlement would need more is put aside.
    pub settle_memory_bytes: u64,
}

impl EngineSettings {
    pub fn is_production(&self, environment: &str) -> bool {
        self.production_env.is_match(environment)
    }
}

impl From<&Config> for EngineSettings {
    fn from(c: &Config) -> Self {
        EngineSettings {
            settle_secs: c.settle_secs,
            seal_after_secs: c.seal_after_secs,
            ttl_open_secs: c.ttl_open_secs,
            production_env: c.production_env.clone(),
            rework_pattern: c.rework_pattern.clone(),
            incident_window_secs: c.incident_window_secs,
            span_link_limit: c.span_link_limit,
            store_timeout_ms: c.dynamodb_timeout_ms,
            settle_memory_bytes: c.settle_memory_mb * 1024 * 1024,
        }
    }
}

impl From<Arc<Config>> for EngineSettings {
    fn from(c: Arc<Config>) -> Self {
        EngineSettings::from(c.as_ref())
    }
}

impl From<Config> for EngineSettings {
    fn from(c: Config) -> Self {
        EngineSettings::from(&c)
    }
}
