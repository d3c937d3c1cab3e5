//! Configuration, read once from the environment. Every variable is listed in `--help` and in
//! README.md; secrets are never printed.

use crate::model::repo_traits::RepositoryAttributes;
use crate::model::Repo;
use regex::Regex;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// A webhook secret: the value in force first, then (while a rotation in Secrets Manager is under
/// way) the previous one; a delivery signed with any of them verifies. Clones share the values,
/// so [`crate::secrets`] can replace them while the service runs. Prints as `***`.
#[derive(Clone, Default)]
pub struct Secret(Arc<RwLock<Arc<[String]>>>);

impl Secret {
    pub fn new(v: Option<String>) -> Self {
        let s = Secret::default();
        s.replace(v.into_iter().collect());
        s
    }
    /// The value in force (what signs replayed deliveries).
    pub fn get(&self) -> Option<String> {
        self.candidates().first().cloned()
    }
    /// Every value a delivery may be signed with, the one in force first; empty: none set.
    pub fn candidates(&self) -> Arc<[String]> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Puts `values` in force for every clone (empty values are dropped).
    pub fn replace(&self, values: Vec<String>) {
        let values: Arc<[String]> = values.into_iter().filter(|v| !v.is_empty()).collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = values;
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.candidates().len() {
            0 => "(unset)",
            1 => "***",
            _ => "*** (and the previous value)",
        })
    }
}

/// One registered source's settings: its webhook secret (replaced in place by
/// [`crate::secrets`]) and the options its registry entry parsed (`jira`'s project map, …), whose
/// type only the source knows.
#[derive(Clone)]
pub struct SourceSettings {
    pub secret: Secret,
    options: Arc<dyn Any + Send + Sync>,
}

/// A source's parsed options, whatever their type.
pub type Options = Arc<dyn Any + Send + Sync>;

impl SourceSettings {
    pub fn new(secret: Secret, options: Options) -> Self {
        SourceSettings { secret, options }
    }

    /// The options, when they are a `T`.
    pub fn options<T: Any>(&self) -> Option<&T> {
        self.options.downcast_ref()
    }
}

impl std::fmt::Debug for SourceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSettings")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// The settings of every registered source, by registry name.
pub type SourceMap = BTreeMap<&'static str, SourceSettings>;

/// How settings are read: an environment variable's value by name (`std::env::var`, test pairs).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The reader a registry entry parses its source's settings with.
pub type Env<'a> = Settings<Lookup<'a>>;

fn unset(_: &str) -> Option<String> {
    None
}

impl Env<'static> {
    /// A reader that finds nothing set: every setting's default.
    pub fn unset() -> Self {
        Settings::new(&unset)
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Each registered source's secret and options, keyed by its registry name
    /// (`sources::registry` parses them; [`Config::secret`], [`Config::source_options`]).
    sources: SourceMap,
    /// The GitHub API token the scheduled sync reads with (`GITHUB_TOKEN`, or the `github_token`
    /// key of the Secrets Manager secret, which wins when present).
    pub github_token: Secret,
    /// The API credentials of the other sources' scheduled sync (`GITLAB_TOKEN`,
    /// `PAGERDUTY_TOKEN`, `JIRA_EMAIL` + `JIRA_TOKEN`, or the secret's `gitlab_token`,
    /// `pagerduty_token`, `jira_email`, `jira_token` keys, which win when present).
    pub gitlab_api_token: Secret,
    pub pagerduty_api_token: Secret,
    pub jira_email: Secret,
    pub jira_api_token: Secret,
    /// Accept deliveries without a signature or token (`serve` only).
    pub allow_unsigned: bool,
    /// Largest accepted body, in bytes.
    pub max_body_bytes: usize,
    /// Environments whose deployments count for DORA.
    pub production_env: Regex,
    /// Change titles (and labels) that make a deployment shipping them rework: a revert or a
    /// hotfix (docs/metrics.md "Deployment rework rate").
    pub rework_pattern: Regex,
    /// The label that makes an issue an incident.
    pub incident_label: String,
    /// How far back an incident looks for the deployment that caused it, in seconds.
    pub incident_window_secs: i64,
    /// Repository (lower-case `owner/name`, or `owner/*`) → team.
    pub teams: BTreeMap<String, String>,
    /// Repository attributes (team, language, deployment type, user keys) and their allow-lists.
    pub repository_attributes: RepositoryAttributes,
    /// Lifetimes of stored state, in seconds.
    pub ttl_open_secs: i64,
    /// DynamoDB table; when set the DynamoDB store is used.
    pub table: Option<String>,
    /// Seconds a failing collector is left alone before the next export attempt.
    pub retry_secs: u64,
    /// `serve`: seconds between two exports of valuestream's own health over OTLP (Lambda
    /// sends it after each scheduled drain).
    pub health_export_secs: u64,
    /// Seconds a finished span waits before export, so that deliveries arriving out of order
    /// within that time give identical spans; 0 exports at once.
    pub settle_secs: i64,
    /// Event-time lag after which a repository's settled records are sealed (`VALUESTREAM_SEAL_AFTER_SECS`).
    pub seal_after_secs: i64,
    /// Longest wait for one DynamoDB operation, retries included, in milliseconds.
    pub dynamodb_timeout_ms: u64,
    /// Most links one exported span carries (`OTEL_SPAN_LINK_COUNT_LIMIT`); the rest are
    /// counted in the span's dropped-links count.
    pub span_link_limit: usize,
    /// Memory the settlements of one drain may hold at once, in MiB
    /// (`VALUESTREAM_SETTLE_MEMORY_MB`; [`settle_memory_default`]).
    pub settle_memory_mb: u64,
}

/// Settings that no longer do anything, and why. Still accepted (whatever their value) for one
/// release, with a warning naming them; README's "Removed settings" lists them.
pub const REMOVED: &[(&str, &str)] = &[(
    "VALUESTREAM_TTL_DELIVERY_DAYS",
    "redeliveries are recognised for as long as the facts live (VALUESTREAM_TTL_OPEN_DAYS)",
)];

/// Names and one-line descriptions of the service's own environment variables; each source's
/// settings are listed with it in `sources::registry`, and `sources::registry::settings()` is
/// the whole list (`--help`, the README check).
pub const ENV_VARS: &[(&str, &str)] = &[
    ("VALUESTREAM_SECRET_ARN", "ARN (or name) of a Secrets Manager secret holding the webhook secrets as JSON, one key per registered source (its name, e.g. github); replaces the sources' secret variables, which must then be unset"),
    ("VALUESTREAM_SECRET_TTL_SECS", "seconds the secret's values are used before it is read again (a rotation needs no redeploy), 1..=86400 (default 300)"),
    ("VALUESTREAM_SECRET_TIMEOUT_MS", "longest wait for one Secrets Manager call, retries included, 100..=60000 ms (default 3000)"),
    ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "Secrets Manager endpoint override (moto, LocalStack): an http(s) URL"),
    ("VALUESTREAM_SYNC_GITHUB_REPOS", "scheduled sync: GitHub repositories re-read from the API to heal lost deliveries, 'owner/name,owner/name' (empty: no sync)"),
    ("VALUESTREAM_SYNC_SECS", "serve: seconds between two syncs, 60..=86400 (default 900); in Lambda the SyncSchedule rule decides"),
    ("VALUESTREAM_SYNC_LOOKBACK_SECS", "how far back a repository's first sync reads (and the furthest any sync reads), 60..=315360000 seconds (default 259200 = 3 days); later syncs read from the previous one's start minus 10 minutes"),
    ("VALUESTREAM_SYNC_BUDGET_SECS", "seconds a sync run may start new repositories for, 1..=86400 (default: 60 % of VALUESTREAM_SYNC_SECS in serve, of the invocation's time in Lambda); the rest wait for the next run"),
    ("VALUESTREAM_GITHUB_API_URL", "GitHub API the sync reads (default https://api.github.com; Enterprise Server: https://HOST/api/v3)"),
    ("GITHUB_TOKEN", "GitHub token the sync reads the API with (read access to contents, issues, pull requests, actions, deployments); or the secret's github_token key"),
    ("VALUESTREAM_SYNC_GITLAB_PROJECTS", "scheduled sync: GitLab projects re-read from the API to heal lost deliveries, 'group/name,group/sub/name' (empty: none)"),
    ("VALUESTREAM_GITLAB_API_URL", "GitLab API the sync reads (default https://gitlab.com/api/v4; self-managed: https://HOST/api/v4)"),
    ("GITLAB_TOKEN", "GitLab token (read_api scope) the sync and backfill gitlab read the API with; or the secret's gitlab_token key"),
    ("VALUESTREAM_SYNC_PAGERDUTY_SERVICES", "scheduled sync: PagerDuty service IDs whose incidents are re-read from the API, 'PIJ90N7,PXXXXXX' (empty: none)"),
    ("VALUESTREAM_PAGERDUTY_API_URL", "PagerDuty REST API the sync reads (default https://api.pagerduty.com)"),
    ("PAGERDUTY_TOKEN", "PagerDuty REST API key the sync and backfill pagerduty read incidents with; or the secret's pagerduty_token key"),
    ("VALUESTREAM_SYNC_JIRA_PROJECTS", "scheduled sync: Jira project keys whose issues are re-read from the API, 'SHOP,OPS' (empty: none)"),
    ("VALUESTREAM_JIRA_API_URL", "Jira Cloud site the sync reads, e.g. https://example.atlassian.net (required with VALUESTREAM_SYNC_JIRA_PROJECTS)"),
    ("JIRA_EMAIL", "Atlassian account email the sync and backfill jira read the API as; or the secret's jira_email key"),
    ("JIRA_TOKEN", "API token of that account; or the secret's jira_token key"),
    ("VALUESTREAM_ALLOW_UNSIGNED", "serve only: true/false/1/0/yes/no; true accepts deliveries without a signature/token (local trials; default false)"),
    ("VALUESTREAM_MAX_BODY_BYTES", "largest accepted request body in bytes, 1024..=104857600 (default 5242880 = 5 MiB)"),
    ("VALUESTREAM_PRODUCTION_ENV_PATTERN", "regex of production environment names (default ^(prod|production)$, case-insensitive)"),
    ("VALUESTREAM_REWORK_PATTERN", "regex of change titles and labels that make a production deployment shipping them rework (default \\b(revert|hotfix)\\b, case-insensitive)"),
    ("VALUESTREAM_INCIDENT_LABEL", "issue label that marks an incident (default incident)"),
    ("VALUESTREAM_INCIDENT_WINDOW_HOURS", "how far back an incident looks for its deployment, 1..=8760 hours (default 168)"),
    ("VALUESTREAM_TEAMS", "repository to team map: 'owner/repo=team,owner/*=team'"),
    ("VALUESTREAM_REPOSITORY_ATTRIBUTES", "repository attributes, JSON inline or @path: {\"owner/repo\" or \"owner/*\": {\"team\": ..., \"language\": ..., \"deployment.type\": ..., \"any.key\": ...}}"),
    ("VALUESTREAM_ATTRIBUTE_VALUES", "allow-lists of attribute values that become metric labels: 'language=python|go,deployment.type=container|mutable|image' (others become 'other')"),
    ("VALUESTREAM_TTL_OPEN_DAYS", "days an open span and its indexes live without news, 1..=3650 (default 90)"),
    ("VALUESTREAM_SETTLE_SECS", "seconds a finished span waits before export so that deliveries arriving out of order within that time give identical spans; 0 exports at once; 0..=86400 (default 120)"),
    ("VALUESTREAM_SEAL_AFTER_SECS", "seconds of a repository's event time after which its settled records are sealed: moved out of what every settlement reads, with a checkpoint of what later rules need (docs/ARCHITECTURE.md, Sealed history); 0..=315360000 (default 86400)"),
    ("VALUESTREAM_TABLE", "DynamoDB table name; when set, state lives in DynamoDB (Lambda, or shared serve)"),
    ("VALUESTREAM_SETTLE_MEMORY_MB", "memory the settlements of one drain may hold at once, 8..=1048576 MiB (default 60 % of the Lambda's memory, from AWS_LAMBDA_FUNCTION_MEMORY_SIZE; 1024 elsewhere); a repository whose settlement would need more is put aside and counted (README, Limits)"),
    ("VALUESTREAM_DYNAMODB_TIMEOUT_MS", "longest wait for one DynamoDB operation, retries included, 500..=60000 ms (default 8000); then 503"),
    ("VALUESTREAM_RETRY_SECS", "seconds a failing collector is left alone before exports are tried again, 1..=3600 (default 30)"),
    ("VALUESTREAM_HEALTH_EXPORT_SECS", "serve: seconds between two exports of valuestream's own health over OTLP (the first one this long after start), 1..=3600 (default 60); Lambda sends it after each scheduled drain"),
    ("AWS_ENDPOINT_URL_DYNAMODB", "DynamoDB endpoint override (local DynamoDB, moto): an http(s) URL"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTLP protocol: http/protobuf (default) or grpc"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "protocol for traces, overrides OTEL_EXPORTER_OTLP_PROTOCOL"),
    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "protocol for metrics, overrides OTEL_EXPORTER_OTLP_PROTOCOL"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTLP base URL: http/protobuf e.g. http://localhost:4318 (traces go to /v1/traces, metrics to /v1/metrics); grpc e.g. http://localhost:4317"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "full URL for traces, overrides the base"),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "full URL for metrics, overrides the base"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "extra headers for OTLP requests: 'key=value,key2=value2' (values percent-encoded)"),
    ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "headers for traces, replace OTEL_EXPORTER_OTLP_HEADERS"),
    ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "headers for metrics, replace OTEL_EXPORTER_OTLP_HEADERS"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTLP request timeout, 1..=60000 ms (default 3000)"),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "timeout for traces, overrides OTEL_EXPORTER_OTLP_TIMEOUT"),
    ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "timeout for metrics, overrides OTEL_EXPORTER_OTLP_TIMEOUT"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "OTLP request compression: gzip or none (default none)"),
    ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "compression for traces, overrides OTEL_EXPORTER_OTLP_COMPRESSION"),
    ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "compression for metrics, overrides OTEL_EXPORTER_OTLP_COMPRESSION"),
    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "PEM file of CA certificates trusted for the collector's TLS certificate (besides the public roots)"),
    ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "CA certificates for traces, overrides OTEL_EXPORTER_OTLP_CERTIFICATE"),
    ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "CA certificates for metrics, overrides OTEL_EXPORTER_OTLP_CERTIFICATE"),
    ("OTEL_RESOURCE_ATTRIBUTES", "resource attributes added to every export: 'key=value,key2=value2' (values percent-encoded)"),
    ("OTEL_SPAN_LINK_COUNT_LIMIT", "most links one exported span carries, 0..=10000 (default 128, OpenTelemetry's); a deployment that shipped more changes links the most recently landed ones, counts the rest as dropped links and keeps the true number in valuestream.deployment.changes"),
    ("OTEL_SERVICE_NAME", "service.name of every resource (default: the source system for traces, valuestream for metrics)"),
    ("RUST_LOG", "log filter (default info)"),
];

#[derive(Debug, thiserror::Error)]
#[error("invalid setting {var}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: String,
    /// What is wrong and what the variable accepts.
    pub problem: String,
}

impl ConfigError {
    pub fn new(var: &str, problem: impl Into<String>) -> Self {
        ConfigError {
            var: var.to_string(),
            problem: problem.into(),
        }
    }
}

/// Reads settings through a lookup function, each parsed and range-checked once; every error
/// names the variable and what it accepts. Whitespace-only values count as unset.
pub struct Settings<F: Fn(&str) -> Option<String>> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Settings<F> {
    pub fn new(lookup: F) -> Self {
        Settings { lookup }
    }

    /// The trimmed value, `None` when unset or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A whole number in `range` (`unit` is what it counts, for the message).
    pub fn int(
        &self,
        name: &str,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
        unit: &str,
    ) -> Result<i64, ConfigError> {
        let Some(v) = self.text(name) else {
            return Ok(default);
        };
        let accepts = || {
            format!(
                "accepts a whole number of {unit} from {} to {} (default {default}), got {v:?}",
                range.start(),
                range.end()
            )
        };
        let n: i64 = v.parse().map_err(|_| ConfigError::new(name, accepts()))?;
        if range.contains(&n) {
            Ok(n)
        } else {
            Err(ConfigError::new(name, accepts()))
        }
    }

    /// `true/false/1/0/yes/no` (any case); anything else is an error.
    pub fn boolean(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        let Some(v) = self.text(name) else {
            return Ok(default);
        };
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(ConfigError::new(
                name,
                format!("accepts true, false, 1, 0, yes or no, got {v:?}"),
            )),
        }
    }

    /// A regular expression, matched case-insensitively.
    pub fn regex(&self, name: &str, default: &str) -> Result<Regex, ConfigError> {
        let pattern = self.text(name).unwrap_or_else(|| default.to_string());
        Regex::new(&format!("(?i){pattern}")).map_err(|e| {
            ConfigError::new(
                name,
                format!("accepts a regular expression; {pattern:?} is not one: {e}"),
            )
        })
    }

    /// A `key=value` list separated by `,`, `;` or new lines. Blank members are skipped; a
    /// member without `=`, with an empty side, or repeating a key is an error. `check` validates
    /// each value (and may refuse it with a reason).
    pub fn map(
        &self,
        name: &str,
        form: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut out = BTreeMap::new();
        let Some(text) = self.text(name) else {
            return Ok(out);
        };
        for pair in text.split([',', ';', '\n']).map(str::trim) {
            if pair.is_empty() {
                continue;
            }
            let bad = |why: &str| {
                ConfigError::new(
                    name,
                    format!("accepts {form} pairs separated by commas; the pair {pair:?} {why}"),
                )
            };
            let (k, v) = pair.split_once('=').ok_or_else(|| bad("has no '='"))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() {
                return Err(bad("has an empty side"));
            }
            check(v).map_err(|why| bad(&why))?;
            if out.insert(k.to_string(), v.to_string()).is_some() {
                return Err(bad("repeats a key given before"));
            }
        }
        Ok(out)
    }
}

/// A repository as maps name it: `owner/name` (or `group/sub/name`).
pub fn repo_value(v: &str) -> Result<(), String> {
    let parts: Vec<&str> = v.trim_matches('/').split('/').collect();
    if parts.len() >= 2 && parts.iter().all(|p| !p.trim().is_empty()) {
        Ok(())
    } else {
        Err("does not name a repository as owner/name".into())
    }
}

/// An `http://` or `https://` URL with a host and a port in 1..=65535 (the OTLP endpoints,
/// `AWS_ENDPOINT_URL_DYNAMODB`).
pub fn endpoint_url(name: &str, text: &str) -> Result<reqwest::Url, ConfigError> {
    let accepts = |why: String| {
        ConfigError::new(
            name,
            format!(
                "accepts an http:// or https:// URL with a host (e.g. http://collector:4318); \
                 {text:?} {why}"
            ),
        )
    };
    let url = reqwest::Url::parse(text).map_err(|e| accepts(format!("is not one: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(accepts(format!(
            "has scheme {:?} (a host:port needs http:// before it)",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(accepts("has no host".into()));
    }
    if url.port() == Some(0) {
        return Err(accepts("has port 0; ports are 1 to 65535".into()));
    }
    Ok(url)
}

/// DynamoDB's rule for table names: 3 to 255 of `a-z A-Z 0-9 _ - .`.
fn table_name(name: &str, v: &str) -> Result<(), ConfigError> {
    let ok = (3..=255).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            name,
            format!("accepts a DynamoDB table name (3 to 255 of a-z A-Z 0-9 _ - .), got {v:?}"),
        ))
    }
}

/// Default of `VALUESTREAM_SETTLE_MEMORY_MB`: 60 % of the Lambda function's memory (Lambda sets
/// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, in MB), leaving the rest to the runtime, the export and
/// the requests; 1,024 MiB elsewhere (`serve`).
pub fn settle_memory_default(lambda_memory_mb: Option<&str>) -> i64 {
    lambda_memory_mb
        .and_then(|m| m.trim().parse::<i64>().ok())
        .filter(|m| *m > 0)
        .map_or(1024, |m| (m * 6 / 10).max(8))
}

/// Default of `VALUESTREAM_DYNAMODB_TIMEOUT_MS`.
pub const DYNAMODB_TIMEOUT_MS: i64 = 8_000;

impl Config {
    /// The service's settings from `lookup`, with `sources` (each registered source's, parsed by
    /// `sources::registry`, which also gives the usual constructors `Config::from_env`,
    /// `from_pairs` and `from_lookup`). Every value is checked; the first bad one is the error.
    pub(crate) fn with_sources(lookup: Lookup, sources: SourceMap) -> Result<Self, ConfigError> {
        let env = Settings::new(lookup);
        warn_removed(&env);
        let storage = Storage::read(&env)?;
        let derivation = Derivation::read(&env)?;
        Ok(Config {
            sources,
            github_token: Secret::new(env.text("GITHUB_TOKEN")),
            gitlab_api_token: Secret::new(env.text("GITLAB_TOKEN")),
            pagerduty_api_token: Secret::new(env.text("PAGERDUTY_TOKEN")),
            jira_email: Secret::new(env.text("JIRA_EMAIL")),
            jira_api_token: Secret::new(env.text("JIRA_TOKEN")),
            allow_unsigned: env.boolean("VALUESTREAM_ALLOW_UNSIGNED", false)?,
            max_body_bytes: env.int(
                "VALUESTREAM_MAX_BODY_BYTES",
                5 * 1024 * 1024,
                1024..=100 * 1024 * 1024,
                "bytes",
            )? as usize,
            production_env: derivation.production_env,
            rework_pattern: derivation.rework_pattern,
            incident_label: derivation.incident_label,
            incident_window_secs: derivation.incident_window_secs,
            span_link_limit: env.int("OTEL_SPAN_LINK_COUNT_LIMIT", 128, 0..=10_000, "links")?
                as usize,
            teams: teams(&env)?,
            repository_attributes: repository_attributes(&env)?,
            ttl_open_secs: storage.ttl_open_secs,
            table: storage.table,
            retry_secs: env.int("VALUESTREAM_RETRY_SECS", 30, 1..=3600, "seconds")? as u64,
            health_export_secs: env.int(
                "VALUESTREAM_HEALTH_EXPORT_SECS",
                60,
                1..=3600,
                "seconds",
            )? as u64,
            settle_secs: env.int("VALUESTREAM_SETTLE_SECS", 120, 0..=86_400, "seconds")?,
            seal_after_secs: env.int(
                "VALUESTREAM_SEAL_AFTER_SECS",
                86_400,
                0..=315_360_000,
                "seconds",
            )?,
            dynamodb_timeout_ms: storage.dynamodb_timeout_ms,
            settle_memory_mb: env.int(
                "VALUESTREAM_SETTLE_MEMORY_MB",
                settle_memory_default(env.text("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").as_deref()),
                8..=1_048_576,
                "MiB",
            )? as u64,
        })
    }

    /// The webhook secret of the source registered as `source` (unset when there is none).
    pub fn secret(&self, source: &str) -> Secret {
        self.sources
            .get(source)
            .map(|s| s.secret.clone())
            .unwrap_or_default()
    }

    /// The options the registry parsed for `source`, a `T`. Every `Config` holds every registered
    /// source's options (only the registry builds one, through [`Config::with_sources`]), so a
    /// miss is a bug in the source that asks (another name, another type), never a setting:
    /// it panics, naming both, on the first delivery any test sends that source.
    pub fn source_options<T: Any>(&self, source: &str) -> &T {
        let settings = self.sources.get(source).unwrap_or_else(|| {
            panic!("no source {source:?} is registered; its options were asked for")
        });
        settings.options().unwrap_or_else(|| {
            panic!(
                "the options of {source:?} are not a {}: the source asks for another type than \
                 its registry entry parses",
                std::any::type_name::<T>()
            )
        })
    }

    /// The team of a repository: an exact entry, else an `owner/*` entry.
    pub fn team_of(&self, repo: &Repo) -> Option<&str> {
        self.teams
            .get(&repo.0)
            .or_else(|| self.teams.get(&format!("{}/*", repo.owner())))
            .map(String::as_str)
    }

    pub fn is_production(&self, environment: &str) -> bool {
        self.production_env.is_match(environment)
    }
}

/// One warning per [`REMOVED`] setting that is still set.
fn warn_removed(env: &Env) {
    for (var, why) in REMOVED {
        if env.text(var).is_some() {
            tracing::warn!(
                setting = var,
                "{var} is set but has no effect any more and will be refused in a later \
                 release: {why}; unset it"
            );
        }
    }
}

/// Where state lives and for how long.
struct Storage {
    ttl_open_secs: i64,
    table: Option<String>,
    dynamodb_timeout_ms: u64,
}

impl Storage {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        let ttl_open_days = env.int("VALUESTREAM_TTL_OPEN_DAYS", 90, 1..=3650, "days")?;
        if let Some(url) = env.text("AWS_ENDPOINT_URL_DYNAMODB") {
            endpoint_url("AWS_ENDPOINT_URL_DYNAMODB", &url)?;
        }
        let table = env.text("VALUESTREAM_TABLE");
        if let Some(t) = &table {
            table_name("VALUESTREAM_TABLE", t)?;
        }
        Ok(Storage {
            ttl_open_secs: ttl_open_days * 86_400,
            table,
            dynamodb_timeout_ms: env.int(
                "VALUESTREAM_DYNAMODB_TIMEOUT_MS",
                DYNAMODB_TIMEOUT_MS,
                500..=60_000,
                "milliseconds",
            )? as u64,
        })
    }
}

/// What the DORA derivations read: production, rework, incidents.
struct Derivation {
    production_env: Regex,
    rework_pattern: Regex,
    incident_label: String,
    incident_window_secs: i64,
}

impl Derivation {
    fn read(env: &Env) -> Result<Self, ConfigError> {
        Ok(Derivation {
            production_env: env
                .regex("VALUESTREAM_PRODUCTION_ENV_PATTERN", "^(prod|production)$")?,
            rework_pattern: env.regex("VALUESTREAM_REWORK_PATTERN", r"\b(revert|hotfix)\b")?,
            incident_label: env
                .text("VALUESTREAM_INCIDENT_LABEL")
                .unwrap_or_else(|| "incident".into()),
            incident_window_secs: env.int(
                "VALUESTREAM_INCIDENT_WINDOW_HOURS",
                168,
                1..=8760,
                "hours",
            )? * 3600,
        })
    }
}

/// `VALUESTREAM_TEAMS`, keys in lower case.
fn teams(env: &Env) -> Result<BTreeMap<String, String>, ConfigError> {
    Ok(env
        .map(
            "VALUESTREAM_TEAMS",
            "owner/repo=team or owner/*=team",
            |_| Ok(()),
        )?
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect())
}

/// `VALUESTREAM_REPOSITORY_ATTRIBUTES` and `VALUESTREAM_ATTRIBUTE_VALUES`, an error naming the
/// one at fault.
fn repository_attributes(env: &Env) -> Result<RepositoryAttributes, ConfigError> {
    RepositoryAttributes::parse(
        env.text("VALUESTREAM_REPOSITORY_ATTRIBUTES").as_deref(),
        env.text("VALUESTREAM_ATTRIBUTE_VALUES").as_deref(),
    )
    .map_err(|e| {
        let var = match &e {
            crate::model::repo_traits::AttributesError::Values(_) => "VALUESTREAM_ATTRIBUTE_VALUES",
            _ => "VALUESTREAM_REPOSITORY_ATTRIBUTES",
        };
        let text = e.to_string();
        let problem = text
            .strip_prefix(&format!("{var}: "))
            .unwrap_or(&text)
            .to_string();
        ConfigError::new(var, problem)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::OtlpSettings;

    /// Both parsers of the environment, as the entry points run them at start.
    fn check(pairs: &[(&str, &str)]) -> Result<(), ConfigError> {
        Config::from_pairs(pairs)?;
        OtlpSettings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })?;
        Ok(())
    }

    #[test]
    fn defaults_parse() {
        let c = Config::from_pairs(&[]).unwrap();
        assert_eq!(c.max_body_bytes, 5 * 1024 * 1024);
        assert_eq!(c.ttl_open_secs, 90 * 86_400);
        assert_eq!(c.incident_window_secs, 168 * 3600);
        assert_eq!(c.retry_secs, 30);
        assert_eq!(c.health_export_secs, 60);
        assert_eq!(c.settle_secs, 120);
        assert_eq!(c.settle_memory_mb, 1024, "outside Lambda");
        let lambda = Config::from_pairs(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")]).unwrap();
        assert_eq!(
            lambda.settle_memory_mb, 153,
            "60 % of the function's memory"
        );
        assert_eq!(c.dynamodb_timeout_ms, 8_000);
        assert!(!c.allow_unsigned);
        assert!(c.teams.is_empty());
        let jira = c.source_options::<crate::sources::jira::Settings>("jira");
        assert!(jira.projects.is_empty());
        assert!(c.is_production("Production") && !c.is_production("staging"));
        assert!(OtlpSettings::from_lookup(|_| None).unwrap().is_none());
        // Blank values count as unset.
        let blank = Config::from_pairs(&[("VALUESTREAM_TTL_OPEN_DAYS", "  ")]).unwrap();
        assert_eq!(blank.ttl_open_secs, 90 * 86_400);
    }

    #[test]
    fn good_values_parse() {
        let c = Config::from_pairs(&[
            ("VALUESTREAM_MAX_BODY_BYTES", "1024"),
            ("VALUESTREAM_TTL_OPEN_DAYS", "3650"),
            ("VALUESTREAM_TTL_DELIVERY_DAYS", "1"),
            ("VALUESTREAM_INCIDENT_WINDOW_HOURS", "8760"),
            ("VALUESTREAM_RETRY_SECS", "3600"),
            ("VALUESTREAM_SETTLE_SECS", "0"),
            ("VALUESTREAM_SETTLE_MEMORY_MB", "64"),
            ("VALUESTREAM_DYNAMODB_TIMEOUT_MS", "500"),
            ("VALUESTREAM_ALLOW_UNSIGNED", "Yes"),
            (
                "VALUESTREAM_TEAMS",
                "Codertocat/Hello-World=payments, owner/*=platform,",
            ),
            ("VALUESTREAM_JIRA_PROJECTS", "shop=Codertocat/Hello-World"),
            (
                "VALUESTREAM_PAGERDUTY_SERVICES",
                "PIJ90N7=group/sub/repo\nCheckout=o/r",
            ),
            ("VALUESTREAM_TABLE", "valuestream-prod.v1"),
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://localhost:8000"),
        ])
        .unwrap();
        assert_eq!(c.max_body_bytes, 1024);
        assert_eq!(c.ttl_open_secs, 3650 * 86_400);
        assert_eq!(c.incident_window_secs, 8760 * 3600);
        assert_eq!((c.retry_secs, c.settle_secs), (3600, 0));
        assert_eq!(c.dynamodb_timeout_ms, 500);
        assert_eq!(c.settle_memory_mb, 64);
        assert!(c.allow_unsigned);
        assert_eq!(
            c.team_of(&Repo::new("codertocat/hello-world")),
            Some("payments")
        );
        assert_eq!(c.team_of(&Repo::new("owner/x")), Some("platform"));
        let jira = c.source_options::<crate::sources::jira::Settings>("jira");
        assert_eq!(jira.projects["SHOP"], Repo::new("codertocat/hello-world"));
        let pagerduty = c.source_options::<crate::sources::pagerduty::Settings>("pagerduty");
        assert_eq!(pagerduty.services.len(), 2);
        for (v, want) in [
            ("0", false),
            ("no", false),
            ("FALSE", false),
            ("1", true),
            ("true", true),
        ] {
            let c = Config::from_pairs(&[("VALUESTREAM_ALLOW_UNSIGNED", v)]).unwrap();
            assert_eq!(c.allow_unsigned, want, "{v}");
        }
        let o = OtlpSettings::from_lookup(|k| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("https://otlp.example.com:443/base/".into()),
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" => Some("http://[::1]:9090/m".into()),
            "OTEL_EXPORTER_OTLP_HEADERS" => {
                Some(" api-key = a%20b%3Dc , x-tenant=t1,,authorization=Basic%20dTpw".into())
            }
            "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("60000".into()),
            _ => None,
        })
        .unwrap()
        .unwrap();
        assert_eq!(o.traces.url, "https://otlp.example.com/base/v1/traces");
        assert_eq!(o.metrics.url, "http://[::1]:9090/m");
        assert_eq!(
            o.traces.headers,
            vec![
                ("api-key".to_string(), "a b=c".to_string()),
                ("x-tenant".to_string(), "t1".to_string()),
                ("authorization".to_string(), "Basic dTpw".to_string()),
            ]
        );
        assert_eq!(o.traces.timeout, std::time::Duration::from_secs(60));
    }

    /// Every bad value is refused at start with an error that names its variable.
    #[test]
    fn bad_values_are_refused_naming_the_variable() {
        let base = "OTEL_EXPORTER_OTLP_ENDPOINT";
        let ok_base = (base, "http://collector:4318");
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
            ("VALUESTREAM_MAX_BODY_BYTES", vec![("VALUESTREAM_MAX_BODY_BYTES", "-1")]),
            ("VALUESTREAM_MAX_BODY_BYTES", vec![("VALUESTREAM_MAX_BODY_BYTES", "0")]),
            ("VALUESTREAM_MAX_BODY_BYTES", vec![("VALUESTREAM_MAX_BODY_BYTES", "1023")]),
            ("VALUESTREAM_MAX_BODY_BYTES", vec![("VALUESTREAM_MAX_BODY_BYTES", "104857601")]),
            ("VALUESTREAM_MAX_BODY_BYTES", vec![("VALUESTREAM_MAX_BODY_BYTES", "5MB")]),
            ("VALUESTREAM_MAX_BODY_BYTES", vec![("VALUESTREAM_MAX_BODY_BYTES", "99999999999999999999999")]),
            ("VALUESTREAM_TTL_OPEN_DAYS", vec![("VALUESTREAM_TTL_OPEN_DAYS", "0")]),
            ("VALUESTREAM_TTL_OPEN_DAYS", vec![("VALUESTREAM_TTL_OPEN_DAYS", "106751991167300")]),
            ("VALUESTREAM_TTL_OPEN_DAYS", vec![("VALUESTREAM_TTL_OPEN_DAYS", "9223372036854775807")]),
            ("VALUESTREAM_TTL_OPEN_DAYS", vec![("VALUESTREAM_TTL_OPEN_DAYS", "ninety")]),
            ("VALUESTREAM_INCIDENT_WINDOW_HOURS", vec![("VALUESTREAM_INCIDENT_WINDOW_HOURS", "0")]),
            ("VALUESTREAM_INCIDENT_WINDOW_HOURS", vec![("VALUESTREAM_INCIDENT_WINDOW_HOURS", "8761")]),
            ("VALUESTREAM_INCIDENT_WINDOW_HOURS", vec![("VALUESTREAM_INCIDENT_WINDOW_HOURS", "-1")]),
            ("VALUESTREAM_RETRY_SECS", vec![("VALUESTREAM_RETRY_SECS", "0")]),
            ("VALUESTREAM_RETRY_SECS", vec![("VALUESTREAM_RETRY_SECS", "3601")]),
            ("VALUESTREAM_RETRY_SECS", vec![("VALUESTREAM_RETRY_SECS", "30s")]),
            ("VALUESTREAM_HEALTH_EXPORT_SECS", vec![("VALUESTREAM_HEALTH_EXPORT_SECS", "0")]),
            ("VALUESTREAM_HEALTH_EXPORT_SECS", vec![("VALUESTREAM_HEALTH_EXPORT_SECS", "3601")]),
            ("VALUESTREAM_SETTLE_SECS", vec![("VALUESTREAM_SETTLE_SECS", "-1")]),
            ("VALUESTREAM_SETTLE_SECS", vec![("VALUESTREAM_SETTLE_SECS", "86401")]),
            ("VALUESTREAM_SETTLE_MEMORY_MB", vec![("VALUESTREAM_SETTLE_MEMORY_MB", "7")]),
            ("VALUESTREAM_SETTLE_MEMORY_MB", vec![("VALUESTREAM_SETTLE_MEMORY_MB", "lots")]),
            ("VALUESTREAM_DYNAMODB_TIMEOUT_MS", vec![("VALUESTREAM_DYNAMODB_TIMEOUT_MS", "0")]),
            ("VALUESTREAM_DYNAMODB_TIMEOUT_MS", vec![("VALUESTREAM_DYNAMODB_TIMEOUT_MS", "60001")]),
            ("VALUESTREAM_ALLOW_UNSIGNED", vec![("VALUESTREAM_ALLOW_UNSIGNED", "on")]),
            ("VALUESTREAM_ALLOW_UNSIGNED", vec![("VALUESTREAM_ALLOW_UNSIGNED", "treu")]),
            ("VALUESTREAM_ALLOW_UNSIGNED", vec![("VALUESTREAM_ALLOW_UNSIGNED", "2")]),
            ("VALUESTREAM_PRODUCTION_ENV_PATTERN", vec![("VALUESTREAM_PRODUCTION_ENV_PATTERN", "^(prod")]),
            ("VALUESTREAM_REWORK_PATTERN", vec![("VALUESTREAM_REWORK_PATTERN", "(hotfix")]),
            ("VALUESTREAM_JENKINS_DEPLOY_JOB_PATTERN", vec![("VALUESTREAM_JENKINS_DEPLOY_JOB_PATTERN", "[deploy")]),
            ("VALUESTREAM_TEAMS", vec![("VALUESTREAM_TEAMS", "owner/repo")]),
            ("VALUESTREAM_TEAMS", vec![("VALUESTREAM_TEAMS", "owner/repo=")]),
            ("VALUESTREAM_TEAMS", vec![("VALUESTREAM_TEAMS", "=payments")]),
            ("VALUESTREAM_TEAMS", vec![("VALUESTREAM_TEAMS", "a/b=x,a/b=y")]),
            ("VALUESTREAM_JIRA_PROJECTS", vec![("VALUESTREAM_JIRA_PROJECTS", "SHOP")]),
            ("VALUESTREAM_JIRA_PROJECTS", vec![("VALUESTREAM_JIRA_PROJECTS", "SHOP= ")]),
            ("VALUESTREAM_JIRA_PROJECTS", vec![("VALUESTREAM_JIRA_PROJECTS", "SHOP=hello-world")]),
            ("VALUESTREAM_PAGERDUTY_SERVICES", vec![("VALUESTREAM_PAGERDUTY_SERVICES", "PIJ90N7")]),
            ("VALUESTREAM_PAGERDUTY_SERVICES", vec![("VALUESTREAM_PAGERDUTY_SERVICES", "=o/r")]),
            ("VALUESTREAM_PAGERDUTY_SERVICES", vec![("VALUESTREAM_PAGERDUTY_SERVICES", "P1=o/")]),
            ("VALUESTREAM_TABLE", vec![("VALUESTREAM_TABLE", "my table")]),
            ("VALUESTREAM_TABLE", vec![("VALUESTREAM_TABLE", "ab")]),
            ("AWS_ENDPOINT_URL_DYNAMODB", vec![("AWS_ENDPOINT_URL_DYNAMODB", "localhost:8000")]),
            (base, vec![(base, "not a url")]),
            (base, vec![(base, "http://")]),
            (base, vec![(base, "127.0.0.1:4318")]),
            (base, vec![(base, "localhost:4318")]),
            (base, vec![(base, "http://collector:99999")]),
            (base, vec![(base, "http://collector:0")]),
            (base, vec![(base, "ftp://collector:4318")]),
            (base, vec![(base, "grpc://collector:4317")]),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", vec![ok_base, ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://")]),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", vec![ok_base, ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318/v1/traces")]),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", vec![ok_base, ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c:65536/v1/metrics")]),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", vec![ok_base, ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "not a url")]),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", vec![("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://c:4318/v1/metrics")]),
            ("OTEL_EXPORTER_OTLP_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_HEADERS", "x=%aé")]),
            ("OTEL_EXPORTER_OTLP_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_HEADERS", "=")]),
            ("OTEL_EXPORTER_OTLP_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_HEADERS", "=v")]),
            ("OTEL_EXPORTER_OTLP_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_HEADERS", "x=%0a")]),
            ("OTEL_EXPORTER_OTLP_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_HEADERS", "x=a%0d%0aInjected: 1")]),
            ("OTEL_EXPORTER_OTLP_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_HEADERS", "x=%00")]),
            ("OTEL_EXPORTER_OTLP_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_HEADERS", "x=%ff")]),
            ("OTEL_EXPORTER_OTLP_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_HEADERS", "x=%e2%82%ac")]),
            ("OTEL_EXPORTER_OTLP_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]),
            ("OTEL_EXPORTER_OTLP_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_HEADERS", "bad key=v")]),
            ("OTEL_EXPORTER_OTLP_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,%")]),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", vec![ok_base, ("OTEL_EXPORTER_OTLP_TIMEOUT", "0")]),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", vec![ok_base, ("OTEL_EXPORTER_OTLP_TIMEOUT", "60001")]),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", vec![ok_base, ("OTEL_EXPORTER_OTLP_TIMEOUT", "-5")]),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", vec![ok_base, ("OTEL_EXPORTER_OTLP_TIMEOUT", "3s")]),
            // Checked even when no endpoint is set: a typo does not wait for the day it matters.
            ("OTEL_EXPORTER_OTLP_TIMEOUT", vec![("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]),
            ("OTEL_EXPORTER_OTLP_HEADERS", vec![("OTEL_EXPORTER_OTLP_HEADERS", "x=%0a")]),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", vec![ok_base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "GRPC")]),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", vec![ok_base, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp")]),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", vec![ok_base, ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf;")]),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", vec![ok_base, ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", vec![ok_base, ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "deflate")]),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", vec![ok_base, ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "yes")]),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", vec![ok_base, ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0")]),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", vec![ok_base, ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "60001")]),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "novalue")]),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", vec![ok_base, ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x=%0d")]),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", vec![ok_base, ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")]),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", vec![ok_base, ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/")]),
            ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", vec![ok_base, ("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "Cargo.toml")]),
            ("OTEL_RESOURCE_ATTRIBUTES", vec![ok_base, ("OTEL_RESOURCE_ATTRIBUTES", "novalue")]),
            ("OTEL_RESOURCE_ATTRIBUTES", vec![ok_base, ("OTEL_RESOURCE_ATTRIBUTES", "a=1,a=2")]),
            ("OTEL_RESOURCE_ATTRIBUTES", vec![ok_base, ("OTEL_RESOURCE_ATTRIBUTES", "=x")]),
            ("OTEL_RESOURCE_ATTRIBUTES", vec![ok_base, ("OTEL_RESOURCE_ATTRIBUTES", "k=%0a")]),
            ("OTEL_RESOURCE_ATTRIBUTES", vec![ok_base, ("OTEL_RESOURCE_ATTRIBUTES", "k=%ff")]),
            // gRPC takes a collector address: a path would be silently dropped.
            (base, vec![(base, "http://c:4317/v1"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
        ];
        assert!(cases.len() >= 40, "{} cases", cases.len());
        for (var, pairs) in &cases {
            let result = std::panic::catch_unwind(|| check(pairs));
            let err = match result {
                Ok(Err(e)) => e,
                Ok(Ok(())) => panic!("{pairs:?} was accepted"),
                Err(_) => panic!("{pairs:?} panicked"),
            };
            assert_eq!(err.var, *var, "{pairs:?}: {err}");
            let text = err.to_string();
            assert!(text.contains(var), "{pairs:?}: {text}");
            assert!(
                text.contains("accepts") || text.contains("set"),
                "{pairs:?} says what it accepts: {text}"
            );
        }
    }

    /// A removed setting is still accepted, whatever its value, for one release (with a warning).
    #[test]
    fn removed_settings_are_accepted() {
        for (var, _) in REMOVED {
            for v in ["1", "0", "ninety"] {
                assert!(Config::from_pairs(&[(var, v)]).is_ok(), "{var}={v}");
            }
            assert!(
                !crate::sources::registry::settings()
                    .iter()
                    .any(|(s, _)| s == var),
                "{var} is no longer listed"
            );
        }
    }

    /// Header values are often API keys: an error names the key, never the value.
    #[test]
    fn header_errors_do_not_echo_values() {
        let err = crate::export::otlp::parse_headers("api-key=s3cr3t%0a").unwrap_err();
        assert!(err.to_string().contains("api-key"), "{err}");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let err = crate::export::otlp::parse_headers("s3cr3t").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }
}
