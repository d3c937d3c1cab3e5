//! Configuration, read once from the environment. Every variable is listed in `--help` and in
//! README.md; secrets are never printed.

use crate::model::attributes::RepositoryAttributes;
use crate::model::Repo;
use regex::Regex;
use std::collections::BTreeMap;

/// A secret that prints as `***`.
#[derive(Clone, Default)]
pub struct Secret(Option<String>);

impl Secret {
    pub fn new(v: Option<String>) -> Self {
        Secret(v.filter(|s| !s.is_empty()))
    }
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "***" } else { "(unset)" })
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub github_secret: Secret,
    pub gitlab_token: Secret,
    pub jenkins_token: Secret,
    pub jira_secret: Secret,
    pub pagerduty_secret: Secret,
    pub events_token: Secret,
    /// Accept deliveries without a signature or token (`serve` only).
    pub allow_unsigned: bool,
    /// Largest accepted body, in bytes.
    pub max_body_bytes: usize,
    /// Environments whose deployments count for DORA.
    pub production_env: Regex,
    /// The label that makes an issue an incident.
    pub incident_label: String,
    /// How far back an incident looks for the deployment that caused it, in seconds.
    pub incident_window_secs: i64,
    /// Jenkins jobs whose name matches this are deployments.
    pub jenkins_deploy_job: Regex,
    /// Repository (lower-case `owner/name`, or `owner/*`) → team.
    pub teams: BTreeMap<String, String>,
    /// Repository attributes (team, language, deployment type, user keys) and their allow-lists.
    pub repository_attributes: RepositoryAttributes,
    /// PagerDuty service (ID or name) → repository.
    pub pagerduty_services: BTreeMap<String, Repo>,
    /// Jira project key (upper case) → repository.
    pub jira_projects: BTreeMap<String, Repo>,
    /// Lifetimes of stored state, in seconds.
    pub ttl_open_secs: i64,
    pub ttl_delivery_secs: i64,
    pub ttl_index_secs: i64,
    /// DynamoDB table; when set the DynamoDB store is used.
    pub table: Option<String>,
}

/// Names and one-line descriptions of every environment variable, for `--help` and the README.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("VALUESTREAM_GITHUB_SECRET", "GitHub webhook secret (X-Hub-Signature-256, HMAC-SHA256)"),
    ("VALUESTREAM_GITLAB_TOKEN", "GitLab webhook secret token (X-Gitlab-Token)"),
    ("VALUESTREAM_JENKINS_TOKEN", "Jenkins bearer token (Authorization: Bearer, or ?token= in the URL)"),
    ("VALUESTREAM_JIRA_SECRET", "Jira Cloud webhook secret (X-Hub-Signature: sha256=...)"),
    ("VALUESTREAM_PAGERDUTY_SECRET", "PagerDuty v3 webhook signing secret (X-PagerDuty-Signature)"),
    ("VALUESTREAM_EVENTS_TOKEN", "token for the generic events API (Bearer, or HMAC key for X-Valuestream-Signature)"),
    ("VALUESTREAM_ALLOW_UNSIGNED", "serve only: 'true' accepts deliveries without a signature/token (local trials)"),
    ("VALUESTREAM_MAX_BODY_BYTES", "largest accepted request body in bytes (default 5242880 = 5 MiB)"),
    ("VALUESTREAM_PRODUCTION_ENV_PATTERN", "regex of production environment names (default ^(prod|production)$, case-insensitive)"),
    ("VALUESTREAM_INCIDENT_LABEL", "issue label that marks an incident (default incident)"),
    ("VALUESTREAM_INCIDENT_WINDOW_HOURS", "how far back an incident looks for its deployment (default 168)"),
    ("VALUESTREAM_JENKINS_DEPLOY_JOB_PATTERN", "regex of Jenkins job names that are deployments (default ^deploy)"),
    ("VALUESTREAM_TEAMS", "repository to team map: 'owner/repo=team,owner/*=team'"),
    ("VALUESTREAM_REPOSITORY_ATTRIBUTES", "repository attributes, JSON inline or @path: {\"owner/repo\" or \"owner/*\": {\"team\": ..., \"language\": ..., \"deployment.type\": ..., \"any.key\": ...}}"),
    ("VALUESTREAM_ATTRIBUTE_VALUES", "allow-lists of attribute values that become metric labels: 'language=python|go,deployment.type=container|mutable|image' (others become 'other')"),
    ("VALUESTREAM_JIRA_PROJECTS", "Jira project key to repository map: 'SHOP=owner/repo' (links Jira incidents to deployments)"),
    ("VALUESTREAM_PAGERDUTY_SERVICES", "PagerDuty service (ID or name) to repository map: 'PIJ90N7=owner/repo'"),
    ("VALUESTREAM_TTL_OPEN_DAYS", "days an open span and its indexes live without news (default 90)"),
    ("VALUESTREAM_TTL_DELIVERY_DAYS", "days a delivery ID is remembered for redelivery detection (default 7)"),
    ("VALUESTREAM_TABLE", "DynamoDB table name; when set, state lives in DynamoDB (Lambda, or shared serve)"),
    ("VALUESTREAM_RETRY_SECS", "serve: seconds between retries of pending exports (default 30)"),
    ("AWS_ENDPOINT_URL_DYNAMODB", "DynamoDB endpoint override (local DynamoDB, moto)"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTLP/HTTP base URL, e.g. http://localhost:4318 (traces go to /v1/traces, metrics to /v1/metrics)"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "full URL for traces, overrides the base"),
    ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "full URL for metrics, overrides the base"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "extra headers for OTLP requests: 'key=value,key2=value2'"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTLP request timeout in milliseconds (default 3000)"),
    ("RUST_LOG", "log filter (default info)"),
];

fn parse_map(text: &str) -> BTreeMap<String, String> {
    text.split([',', ';', '\n'])
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

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

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let num = |name: &str, default: i64| -> Result<i64, ConfigError> {
            match env(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError(format!("{name} must be a whole number, got {v:?}"))),
            }
        };
        let regex = |name: &str, default: &str| -> Result<Regex, ConfigError> {
            let pattern = env(name).unwrap_or_else(|| default.to_string());
            Regex::new(&format!("(?i){pattern}")).map_err(|e| ConfigError(format!("{name}: {e}")))
        };
        let day = 86_400;
        Ok(Config {
            github_secret: Secret::new(env("VALUESTREAM_GITHUB_SECRET")),
            gitlab_token: Secret::new(env("VALUESTREAM_GITLAB_TOKEN")),
            jenkins_token: Secret::new(env("VALUESTREAM_JENKINS_TOKEN")),
            jira_secret: Secret::new(env("VALUESTREAM_JIRA_SECRET")),
            pagerduty_secret: Secret::new(env("VALUESTREAM_PAGERDUTY_SECRET")),
            events_token: Secret::new(env("VALUESTREAM_EVENTS_TOKEN")),
            allow_unsigned: env("VALUESTREAM_ALLOW_UNSIGNED")
                .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
                .unwrap_or(false),
            max_body_bytes: num("VALUESTREAM_MAX_BODY_BYTES", 5 * 1024 * 1024)? as usize,
            production_env: regex("VALUESTREAM_PRODUCTION_ENV_PATTERN", "^(prod|production)$")?,
            incident_label: env("VALUESTREAM_INCIDENT_LABEL").unwrap_or_else(|| "incident".into()),
            incident_window_secs: num("VALUESTREAM_INCIDENT_WINDOW_HOURS", 168)? * 3600,
            jenkins_deploy_job: regex("VALUESTREAM_JENKINS_DEPLOY_JOB_PATTERN", "^deploy")?,
            teams: parse_map(&env("VALUESTREAM_TEAMS").unwrap_or_default())
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            repository_attributes: RepositoryAttributes::parse(
                env("VALUESTREAM_REPOSITORY_ATTRIBUTES").as_deref(),
                env("VALUESTREAM_ATTRIBUTE_VALUES").as_deref(),
            )
            .map_err(|e| ConfigError(e.to_string()))?,
            pagerduty_services: parse_map(
                &env("VALUESTREAM_PAGERDUTY_SERVICES").unwrap_or_default(),
            )
            .into_iter()
            .map(|(k, v)| (k, Repo::new(&v)))
            .collect(),
            jira_projects: parse_map(&env("VALUESTREAM_JIRA_PROJECTS").unwrap_or_default())
                .into_iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), Repo::new(&v)))
                .collect(),
            ttl_open_secs: num("VALUESTREAM_TTL_OPEN_DAYS", 90)? * day,
            ttl_delivery_secs: num("VALUESTREAM_TTL_DELIVERY_DAYS", 7)? * day,
            ttl_index_secs: num("VALUESTREAM_TTL_OPEN_DAYS", 90)? * day,
            table: env("VALUESTREAM_TABLE"),
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
