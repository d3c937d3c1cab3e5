//! Webhook secrets kept in AWS Secrets Manager instead of the environment.
//!
//! One secret (`VALUESTREAM_SECRET_ARN`) holds a JSON object with one key per registered source,
//! its registry name: `{"github": "…", "gitlab": "…", …}` ([`KEYS`], derived from the registry;
//! a missing or empty key refuses that source, like an unset variable). It is read at start and
//! again on the first request after `VALUESTREAM_SECRET_TTL_SECS`, so a rotation needs no
//! redeploy. Both the `AWSCURRENT` and the `AWSPREVIOUS` version are read: while the senders are
//! switched to a new value, a delivery signed with either verifies. Every Secrets Manager call is
//! bounded by `VALUESTREAM_SECRET_TIMEOUT_MS`. The same secret may hold the API token of the
//! scheduled sync (`github_token`, `gitlab_token`, `pagerduty_token`, `jira_email`, `jira_token`:
//! [`TOKEN_KEYS`]), read with the same TTL and rotation rules.
//!
//! This module owns those settings, the reads ([`SecretStore`], [`SecretsManager`]) and the
//! refresh ([`WebhookSecrets`]); the sources only see the candidate values of each
//! [`crate::config::Secret`], which [`WebhookSecrets`] replaces in place.

use crate::config::{endpoint_url, Config, ConfigError, Secret, Settings};
use crate::sources::registry;
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_sdk_secretsmanager::Client;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The keys of the secret's JSON object and the environment variable each replaces: each
/// registered source's name and secret variable.
pub const KEYS: [(&str, &str); registry::COUNT] = registry::SECRETS;

/// Further keys of the same secret: API tokens the scheduled sync reads senders' APIs with
/// ([`crate::sync`]), and the environment variable each stands for. Read with the same TTL and
/// at the same time as the webhook secrets; unlike those, a token set in the environment may
/// stay set: the secret's key, when present, wins, and without it the environment's value stays
/// in force.
pub const TOKEN_KEYS: [(&str, &str); 5] = [
    ("github_token", "GITHUB_TOKEN"),
    ("gitlab_token", "GITLAB_TOKEN"),
    ("pagerduty_token", "PAGERDUTY_TOKEN"),
    ("jira_email", "JIRA_EMAIL"),
    ("jira_token", "JIRA_TOKEN"),
];

/// Default of `VALUESTREAM_SECRET_TTL_SECS`.
pub const TTL_SECS: i64 = 300;
/// Default of `VALUESTREAM_SECRET_TIMEOUT_MS`.
pub const TIMEOUT_MS: i64 = 3_000;
/// After a failed re-read, the values in hand are kept and the next attempt waits this long (or
/// the TTL, if shorter), so an unreachable Secrets Manager does not slow every request.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The version stages read: the value in force and, during a rotation, the one before it.
pub const CURRENT: &str = "AWSCURRENT";
pub const PREVIOUS: &str = "AWSPREVIOUS";

/// Where the webhook secrets come from, when not from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretSettings {
    /// ARN (or name) of the secret.
    pub secret_id: String,
    /// How long values are used before the secret is read again.
    pub ttl: Duration,
    /// Longest wait for one Secrets Manager call, retries included.
    pub timeout: Duration,
}

impl SecretSettings {
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// `None` when `VALUESTREAM_SECRET_ARN` is unset (secrets come from the environment). Every
    /// setting is checked either way; with an ARN, the per-source variables must be unset, so
    /// there is one place a secret comes from.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let env = Settings::new(lookup);
        let ttl = env.int(
            "VALUESTREAM_SECRET_TTL_SECS",
            TTL_SECS,
            1..=86_400,
            "seconds",
        )?;
        let timeout = env.int(
            "VALUESTREAM_SECRET_TIMEOUT_MS",
            TIMEOUT_MS,
            100..=60_000,
            "milliseconds",
        )?;
        if let Some(url) = env.text("AWS_ENDPOINT_URL_SECRETS_MANAGER") {
            endpoint_url("AWS_ENDPOINT_URL_SECRETS_MANAGER", &url)?;
        }
        let Some(secret_id) = env.text("VALUESTREAM_SECRET_ARN") else {
            return Ok(None);
        };
        check_secret_id(&secret_id)?;
        for (key, var) in KEYS {
            if env.text(var).is_some() {
                return Err(ConfigError::new(
                    var,
                    format!(
                        "must be unset when VALUESTREAM_SECRET_ARN is set (the secret's \
                         {key:?} key holds this value)"
                    ),
                ));
            }
        }
        Ok(Some(SecretSettings {
            secret_id,
            ttl: Duration::from_secs(ttl as u64),
            timeout: Duration::from_millis(timeout as u64),
        }))
    }
}

/// A secret ARN (`arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`) or a secret
/// name (1 to 512 of `A-Z a-z 0-9 / _ + = . @ -`), as `GetSecretValue` takes.
fn check_secret_id(v: &str) -> Result<(), ConfigError> {
    let name_ok = |n: &str| {
        (1..=512).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
    };
    let ok = if v.starts_with("arn:") {
        let parts: Vec<&str> = v.splitn(7, ':').collect();
        parts.len() == 7
            && !parts[1].is_empty()
            && parts[2] == "secretsmanager"
            && !parts[3].is_empty()
            && parts[4].len() == 12
            && parts[4].chars().all(|c| c.is_ascii_digit())
            && parts[5] == "secret"
            && name_ok(parts[6])
    } else {
        name_ok(v)
    };
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "VALUESTREAM_SECRET_ARN",
            format!(
                "accepts a Secrets Manager secret ARN \
                 (arn:aws:secretsmanager:<region>:<account>:secret:<name>) or a secret name, got {v:?}"
            ),
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// No answer within the timeout (connecting included).
    #[error("Secrets Manager did not answer reading {secret_id} ({stage}) within {timeout_ms} ms")]
    Timeout {
        secret_id: String,
        stage: &'static str,
        timeout_ms: u128,
    },
    /// The call failed: unreachable endpoint, access denied, no such secret.
    #[error("Secrets Manager: reading {secret_id} ({stage}) failed: {message}")]
    Call {
        secret_id: String,
        stage: &'static str,
        message: String,
    },
    /// The secret is not the JSON object this module reads.
    #[error("secret {secret_id} ({stage}): {problem}")]
    Content {
        secret_id: String,
        stage: &'static str,
        problem: String,
    },
}

/// Reads one version of the secret. A small trait so that the refresh logic does not depend on
/// the SDK.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    /// The secret's ARN or name, for messages.
    fn secret_id(&self) -> &str;
    /// The secret string of the version labelled `stage`; `None` when no version has that label
    /// (`AWSPREVIOUS` before the first rotation).
    async fn read(&self, stage: &'static str) -> Result<Option<String>, SecretsError>;
}

/// [`SecretStore`] on AWS Secrets Manager (`GetSecretValue`), each call bounded.
pub struct SecretsManager {
    client: Client,
    secret_id: String,
    timeout: Duration,
}

impl SecretsManager {
    /// A client from the usual AWS environment (region, credentials, and
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER` for a local endpoint), with bounded waits.
    pub async fn connect(settings: &SecretSettings) -> Self {
        let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let conf = bounded(
            aws_sdk_secretsmanager::config::Builder::from(&shared),
            settings.timeout,
        );
        Self::with_client(
            Client::from_conf(conf.build()),
            &settings.secret_id,
            settings.timeout,
        )
    }

    pub fn with_client(client: Client, secret_id: &str, timeout: Duration) -> Self {
        SecretsManager {
            client,
            secret_id: secret_id.to_string(),
            timeout,
        }
    }
}

/// Connect, each attempt and the whole call (retries included) within `timeout`; two attempts.
pub fn bounded(
    builder: aws_sdk_secretsmanager::config::Builder,
    timeout: Duration,
) -> aws_sdk_secretsmanager::config::Builder {
    builder
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeout)
                .operation_attempt_timeout(timeout)
                .operation_timeout(timeout)
                .build(),
        )
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(2)
                .with_initial_backoff(Duration::from_millis(100)),
        )
}

#[async_trait::async_trait]
impl SecretStore for SecretsManager {
    fn secret_id(&self) -> &str {
        &self.secret_id
    }

    async fn read(&self, stage: &'static str) -> Result<Option<String>, SecretsError> {
        let call = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .version_stage(stage)
            .send();
        let timed_out = || SecretsError::Timeout {
            secret_id: self.secret_id.clone(),
            stage,
            timeout_ms: self.timeout.as_millis(),
        };
        // The SDK's own timeouts bound the call; this bounds credential and region lookups too.
        let answer = tokio::time::timeout(self.timeout + Duration::from_millis(200), call)
            .await
            .map_err(|_| timed_out())?;
        match answer {
            Ok(out) => match out.secret_string() {
                Some(text) => Ok(Some(text.to_string())),
                None => Err(SecretsError::Content {
                    secret_id: self.secret_id.clone(),
                    stage,
                    problem: "has no SecretString (a binary secret); store the JSON as text".into(),
                }),
            },
            // AWSPREVIOUS exists only after a rotation.
            Err(SdkError::ServiceError(e))
                if stage != CURRENT
                    && matches!(e.err(), GetSecretValueError::ResourceNotFoundException(_)) =>
            {
                Ok(None)
            }
            Err(SdkError::TimeoutError(_)) => Err(timed_out()),
            Err(SdkError::DispatchFailure(d)) if d.is_timeout() => Err(timed_out()),
            Err(e) => Err(SecretsError::Call {
                secret_id: self.secret_id.clone(),
                stage,
                message: DisplayErrorContext(&e).to_string(),
            }),
        }
    }
}

/// One version of the secret, by key (`github`, …); empty values are left out.
pub fn parse(
    secret_id: &str,
    stage: &'static str,
    text: &str,
) -> Result<BTreeMap<String, String>, SecretsError> {
    let problem = |p: String| SecretsError::Content {
        secret_id: secret_id.to_string(),
        stage,
        problem: p,
    };
    let keys = || {
        KEYS.iter()
            .chain(TOKEN_KEYS.iter())
            .map(|(k, _)| *k)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        problem(format!(
            "is not JSON ({e}); it must be an object with the keys {}",
            keys()
        ))
    })?;
    let serde_json::Value::Object(obj) = value else {
        return Err(problem(format!(
            "must be a JSON object with the keys {}",
            keys()
        )));
    };
    let mut out = BTreeMap::new();
    for (key, v) in obj {
        if !KEYS.iter().chain(TOKEN_KEYS.iter()).any(|(k, _)| *k == key) {
            return Err(problem(format!(
                "has the key {key:?}; the keys are {}",
                keys()
            )));
        }
        let serde_json::Value::String(s) = v else {
            return Err(problem(format!("the value of {key:?} must be a string")));
        };
        if !s.trim().is_empty() {
            out.insert(key, s.trim().to_string());
        }
    }
    Ok(out)
}

/// What one read found, for the log (never the values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Sources whose current value is set.
    pub sources: Vec<String>,
    /// Sources that also accept a different previous value.
    pub with_previous: Vec<String>,
}

/// The webhook secrets of a running service: reads the secret, puts its values into the
/// configuration's [`Secret`]s, and reads again once the TTL has passed.
pub struct WebhookSecrets {
    store: Box<dyn SecretStore>,
    ttl: Duration,
    targets: Vec<(&'static str, Secret)>,
    /// API tokens ([`TOKEN_KEYS`]): replaced only when the secret holds their key.
    tokens: Vec<(&'static str, Secret)>,
    /// When the next read is due.
    due: tokio::sync::Mutex<Instant>,
}

impl WebhookSecrets {
    /// Secrets for `config`'s sources (its [`Secret`]s are shared, so the service sees each
    /// update). Nothing is read yet: call [`WebhookSecrets::load`].
    pub fn new(store: Box<dyn SecretStore>, ttl: Duration, config: &Config) -> Self {
        let targets = KEYS
            .iter()
            .map(|(key, _)| (*key, config.secret(key)))
            .collect();
        let tokens = TOKEN_KEYS
            .iter()
            .map(|(key, _)| {
                let secret = match *key {
                    "gitlab_token" => &config.gitlab_api_token,
                    "pagerduty_token" => &config.pagerduty_api_token,
                    "jira_email" => &config.jira_email,
                    "jira_token" => &config.jira_api_token,
                    _ => &config.github_token,
                };
                (*key, secret.clone())
            })
            .collect();
        WebhookSecrets {
            store,
            ttl,
            targets,
            tokens,
            due: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Reads the current and the previous version (at once) and puts them in force. A source is
    /// on when the current version has its key; it then also accepts the previous version's
    /// value. An unreadable previous version is logged and left out; an unreadable current
    /// version is an error and changes nothing.
    pub async fn load(&self) -> Result<Loaded, SecretsError> {
        let mut due = self.due.lock().await;
        let loaded = self.read_and_apply().await?;
        *due = Instant::now() + self.ttl;
        Ok(loaded)
    }

    async fn read_and_apply(&self) -> Result<Loaded, SecretsError> {
        let id = self.store.secret_id();
        let (current, previous) = tokio::join!(self.store.read(CURRENT), self.store.read(PREVIOUS));
        let current = match current? {
            Some(text) => parse(id, CURRENT, &text)?,
            None => {
                return Err(SecretsError::Content {
                    secret_id: id.to_string(),
                    stage: CURRENT,
                    problem: "has no AWSCURRENT version".into(),
                })
            }
        };
        let previous = match previous.and_then(|p| p.map(|t| parse(id, PREVIOUS, &t)).transpose()) {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "the previous version of the webhook secret is not used");
                BTreeMap::new()
            }
        };
        let mut loaded = Loaded::default();
        for (key, secret) in &self.targets {
            let mut values = Vec::new();
            if let Some(now) = current.get(*key) {
                values.push(now.clone());
                loaded.sources.push(key.to_string());
                if let Some(before) = previous.get(*key).filter(|b| *b != now) {
                    values.push(before.clone());
                    loaded.with_previous.push(key.to_string());
                }
            }
            secret.replace(values);
        }
        for (key, token) in &self.tokens {
            if let Some(now) = current.get(*key) {
                let mut values = vec![now.clone()];
                values.extend(previous.get(*key).filter(|b| *b != now).cloned());
                token.replace(values);
                loaded.sources.push(key.to_string());
            }
        }
        Ok(loaded)
    }

    /// Reads the secret again if the TTL has passed (one reader at a time; the others go on with
    /// the values in hand). A failed read keeps the values in hand and is retried after
    /// [`RETRY_AFTER`] (or the TTL, if shorter).
    pub async fn refresh_if_due(&self) {
        let Ok(mut due) = self.due.try_lock() else {
            return;
        };
        if Instant::now() < *due {
            return;
        }
        let started = Instant::now();
        match self.read_and_apply().await {
            Ok(l) => {
                *due = Instant::now() + self.ttl;
                tracing::info!(
                    secret = self.store.secret_id(),
                    sources = ?l.sources,
                    with_previous = ?l.with_previous,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "webhook secrets re-read"
                )
            }
            Err(e) => {
                *due = Instant::now() + RETRY_AFTER.min(self.ttl);
                tracing::warn!(error = %e, "re-reading the webhook secrets failed; the values in hand stay in force");
            }
        }
    }

    /// For `serve`: re-reads in the background every TTL.
    pub fn spawn_refresh(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = me
                    .due
                    .lock()
                    .await
                    .saturating_duration_since(Instant::now());
                tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
                me.refresh_if_due().await;
            }
        });
    }
}

/// When `VALUESTREAM_SECRET_ARN` is set: the webhook secrets of `config`, read once (a failure
/// is a start-up error). `None` otherwise (secrets come from the environment).
pub async fn start_from_env(config: &Config) -> anyhow::Result<Option<Arc<WebhookSecrets>>> {
    let Some(settings) = SecretSettings::from_env()? else {
        return Ok(None);
    };
    let store = SecretsManager::connect(&settings).await;
    let secrets = Arc::new(WebhookSecrets::new(Box::new(store), settings.ttl, config));
    let started = Instant::now();
    let loaded = secrets.load().await?;
    tracing::info!(
        secret = %settings.secret_id,
        sources = ?loaded.sources,
        with_previous = ?loaded.with_previous,
        ttl_secs = settings.ttl.as_secs(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "webhook secrets read from Secrets Manager"
    );
    Ok(Some(secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<SecretSettings>, ConfigError> {
        SecretSettings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    const ARN: &str =
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:valuestream/webhooks-AbCdEf";

    #[test]
    fn settings_parse_and_refuse_with_the_variable_named() {
        assert_eq!(settings(&[]).unwrap(), None);
        let s = settings(&[("VALUESTREAM_SECRET_ARN", ARN)])
            .unwrap()
            .unwrap();
        assert_eq!(s.ttl, Duration::from_secs(300));
        assert_eq!(s.timeout, Duration::from_millis(3000));
        assert!(
            settings(&[("VALUESTREAM_SECRET_ARN", "valuestream/webhooks")])
                .unwrap()
                .is_some()
        );
        let bad = [
            (
                vec![("VALUESTREAM_SECRET_ARN", "arn:aws:s3:::bucket")],
                "VALUESTREAM_SECRET_ARN",
            ),
            (
                vec![("VALUESTREAM_SECRET_ARN", "has space")],
                "VALUESTREAM_SECRET_ARN",
            ),
            (
                vec![("VALUESTREAM_SECRET_TTL_SECS", "0")],
                "VALUESTREAM_SECRET_TTL_SECS",
            ),
            (
                vec![("VALUESTREAM_SECRET_TTL_SECS", "5m")],
                "VALUESTREAM_SECRET_TTL_SECS",
            ),
            (
                vec![("VALUESTREAM_SECRET_TIMEOUT_MS", "99")],
                "VALUESTREAM_SECRET_TIMEOUT_MS",
            ),
            (
                vec![("AWS_ENDPOINT_URL_SECRETS_MANAGER", "localhost:5000")],
                "AWS_ENDPOINT_URL_SECRETS_MANAGER",
            ),
            (
                vec![
                    ("VALUESTREAM_SECRET_ARN", ARN),
                    ("VALUESTREAM_JIRA_SECRET", "x"),
                ],
                "VALUESTREAM_JIRA_SECRET",
            ),
        ];
        for (pairs, var) in bad {
            let e = settings(&pairs).expect_err(&format!("{pairs:?}"));
            assert_eq!(e.var, var, "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid setting {var}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn parse_reads_the_source_keys_and_refuses_anything_else() {
        let v = parse("s", CURRENT, r#"{"github":"g","jira":" ","events":"e"}"#).unwrap();
        assert_eq!(v.len(), 2);
        let v = parse("s", CURRENT, r#"{"github":"g","github_token":"t"}"#).unwrap();
        assert_eq!(v["github_token"], "t");
        assert_eq!(v["github"], "g");
        for (text, want) in [
            ("nope", "is not JSON"),
            ("[1]", "must be a JSON object"),
            (r#"{"github_secret":"x"}"#, "has the key \"github_secret\""),
            (r#"{"github":1}"#, "must be a string"),
        ] {
            let e = parse("s", CURRENT, text).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("AWSCURRENT"), "{text}: {e}");
            assert!(
                !e.contains('x') || !text.contains("\"x\""),
                "no value in {e}"
            );
        }
    }
}
