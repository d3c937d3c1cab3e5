//! The sync's settings: what to read (`VALUESTREAM_SYNC_GITHUB_REPOS`,
//! `VALUESTREAM_SYNC_GITLAB_PROJECTS`, `VALUESTREAM_SYNC_PAGERDUTY_SERVICES`,
//! `VALUESTREAM_SYNC_JIRA_PROJECTS`), from which API, how often and for how long; each checked at
//! start with an error naming its variable. The API credentials come from the [`Config`] (the
//! environment or the Secrets Manager secret, read at every run so a rotation is picked up).

use crate::backfill::{github, gitlab, jira, pagerduty, ClientSettings};
use crate::config::{endpoint_url, Config, ConfigError, Secret, Settings};
use std::time::Duration;

/// Default of `VALUESTREAM_SYNC_SECS`.
pub const SYNC_SECS: i64 = 900;
/// Default of `VALUESTREAM_SYNC_LOOKBACK_SECS`: three days.
pub const LOOKBACK_SECS: i64 = 86_400 * 3;
/// Share of the interval (serve) or of the invocation's time (Lambda) a run may start new
/// repositories in, when `VALUESTREAM_SYNC_BUDGET_SECS` is unset.
pub const BUDGET_SHARE: f64 = 0.6;

/// The sources a sync reads, in the order a run takes them when none was synced yet.
pub const SOURCES: [&str; 4] = ["github", "gitlab", "pagerduty", "jira"];

/// One thing a sync reads: a GitHub repository, a GitLab project, a PagerDuty service or a Jira
/// project. Each has its own cursor and healed count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub source: &'static str,
    /// As configured (the `repository` label of the healed counter).
    pub scope: String,
}

/// What to sync and how often.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncSettings {
    /// `owner/name` of each GitHub repository, as configured.
    pub repos: Vec<String>,
    /// `group/name` (subgroups allowed) of each GitLab project.
    pub gitlab_projects: Vec<String>,
    /// PagerDuty service IDs.
    pub pagerduty_services: Vec<String>,
    /// Jira project keys.
    pub jira_projects: Vec<String>,
    /// serve: time between two runs.
    pub every: Duration,
    /// How far back a target's first sync reads (and the furthest any sync reads).
    pub lookback: Duration,
    /// Time a run may start new targets in; `None`: [`BUDGET_SHARE`] of the run's time.
    pub budget: Option<Duration>,
    /// The GitHub API.
    pub api_url: String,
    pub gitlab_api_url: String,
    pub pagerduty_api_url: String,
    /// The Jira Cloud site: no default, required with Jira projects.
    pub jira_api_url: Option<String>,
}

/// A list setting: members separated by commas (or blanks), each `valid`, none twice.
fn list(
    env: &Settings<impl Fn(&str) -> Option<String>>,
    var: &str,
    what: &str,
    valid: impl Fn(&str) -> bool,
) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for member in env
        .text(var)
        .unwrap_or_default()
        .split([',', ';', '\n', ' '])
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        if !valid(member) {
            return Err(ConfigError::new(
                var,
                format!("accepts {what} separated by commas; {member:?} is not one"),
            ));
        }
        if out.iter().any(|r| r.eq_ignore_ascii_case(member)) {
            return Err(ConfigError::new(
                var,
                format!("accepts each member once; {member:?} is named twice"),
            ));
        }
        out.push(member.to_string());
    }
    Ok(out)
}

fn name_part(p: &str) -> bool {
    !p.is_empty()
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// An API URL setting without its trailing `/`, or `default`.
fn api_url(
    env: &Settings<impl Fn(&str) -> Option<String>>,
    var: &str,
) -> Result<Option<String>, ConfigError> {
    env.text(var)
        .map(|u| {
            Ok(endpoint_url(var, &u)?
                .as_str()
                .trim_end_matches('/')
                .to_string())
        })
        .transpose()
}

impl SyncSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Every setting checked, each error naming its variable (whether or not a sync is on).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Settings::new(lookup);
        let repos = list(
            &env,
            "VALUESTREAM_SYNC_GITHUB_REPOS",
            "GitHub repositories as owner/name",
            |m| {
                let parts: Vec<&str> = m.split('/').collect();
                parts.len() == 2 && parts.iter().all(|p| name_part(p))
            },
        )?;
        let gitlab_projects = list(
            &env,
            "VALUESTREAM_SYNC_GITLAB_PROJECTS",
            "GitLab projects as group/name (subgroups allowed)",
            |m| {
                let parts: Vec<&str> = m.split('/').collect();
                parts.len() >= 2 && parts.iter().all(|p| name_part(p))
            },
        )?;
        let pagerduty_services = list(
            &env,
            "VALUESTREAM_SYNC_PAGERDUTY_SERVICES",
            "PagerDuty service IDs (PIJ90N7)",
            |m| m.chars().all(|c| c.is_ascii_alphanumeric()),
        )?;
        let jira_projects = list(
            &env,
            "VALUESTREAM_SYNC_JIRA_PROJECTS",
            "Jira project keys (SHOP)",
            |m| m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        )?;
        let every = env.int("VALUESTREAM_SYNC_SECS", SYNC_SECS, 60..=86_400, "seconds")?;
        let lookback = env.int(
            "VALUESTREAM_SYNC_LOOKBACK_SECS",
            LOOKBACK_SECS,
            60..=315_360_000,
            "seconds",
        )?;
        let budget = match env.text("VALUESTREAM_SYNC_BUDGET_SECS") {
            None => None,
            Some(_) => Some(env.int("VALUESTREAM_SYNC_BUDGET_SECS", 0, 1..=86_400, "seconds")?),
        };
        let jira_api_url = api_url(&env, "VALUESTREAM_JIRA_API_URL")?;
        if !jira_projects.is_empty() && jira_api_url.is_none() {
            return Err(ConfigError::new(
                "VALUESTREAM_JIRA_API_URL",
                "must be set (e.g. https://example.atlassian.net) when \
                 VALUESTREAM_SYNC_JIRA_PROJECTS names projects: Jira Cloud has no common API host"
                    .to_string(),
            ));
        }
        Ok(SyncSettings {
            repos,
            gitlab_projects,
            pagerduty_services,
            jira_projects,
            every: Duration::from_secs(every as u64),
            lookback: Duration::from_secs(lookback as u64),
            budget: budget.map(|b| Duration::from_secs(b as u64)),
            api_url: api_url(&env, "VALUESTREAM_GITHUB_API_URL")?
                .unwrap_or_else(|| github::DEFAULT_API_URL.to_string()),
            gitlab_api_url: api_url(&env, "VALUESTREAM_GITLAB_API_URL")?
                .unwrap_or_else(|| gitlab::DEFAULT_API_URL.to_string()),
            pagerduty_api_url: api_url(&env, "VALUESTREAM_PAGERDUTY_API_URL")?
                .unwrap_or_else(|| pagerduty::DEFAULT_API_URL.to_string()),
            jira_api_url,
        })
    }

    pub fn enabled(&self) -> bool {
        !self.targets().is_empty()
    }

    /// Everything configured, source by source ([`SOURCES`]).
    pub fn targets(&self) -> Vec<Target> {
        let lists = [
            &self.repos,
            &self.gitlab_projects,
            &self.pagerduty_services,
            &self.jira_projects,
        ];
        SOURCES
            .iter()
            .zip(lists)
            .flat_map(|(source, scopes)| {
                scopes.iter().map(|s| Target {
                    source,
                    scope: s.clone(),
                })
            })
            .collect()
    }

    /// The GitHub token in force (`GITHUB_TOKEN`, or the secret's `github_token`), or an error
    /// naming both places.
    pub fn token(&self, config: &Config) -> Result<String, ConfigError> {
        required(
            &config.github_token,
            github::TOKEN_VAR,
            "github_token",
            "VALUESTREAM_SYNC_GITHUB_REPOS",
            self.repos.len(),
        )
    }

    /// Every credential a configured source needs, or the first missing one's error.
    pub fn check_tokens(&self, config: &Config) -> Result<(), ConfigError> {
        for source in SOURCES {
            if self.targets().iter().any(|t| t.source == source) {
                self.client(source, config)?;
            }
        }
        Ok(())
    }

    /// The API client settings of `source` with the credentials in force now (quiet: a sync
    /// logs one summary per run).
    pub fn client(&self, source: &str, config: &Config) -> Result<ClientSettings, ConfigError> {
        let mut client = match source {
            "gitlab" => gitlab::settings(
                &self.gitlab_api_url,
                required(
                    &config.gitlab_api_token,
                    gitlab::TOKEN_VAR,
                    "gitlab_token",
                    "VALUESTREAM_SYNC_GITLAB_PROJECTS",
                    self.gitlab_projects.len(),
                )?,
            ),
            "pagerduty" => pagerduty::settings(
                &self.pagerduty_api_url,
                required(
                    &config.pagerduty_api_token,
                    pagerduty::TOKEN_VAR,
                    "pagerduty_token",
                    "VALUESTREAM_SYNC_PAGERDUTY_SERVICES",
                    self.pagerduty_services.len(),
                )?,
            ),
            "jira" => {
                let n = self.jira_projects.len();
                let var = "VALUESTREAM_SYNC_JIRA_PROJECTS";
                let email = required(&config.jira_email, jira::EMAIL_VAR, "jira_email", var, n)?;
                let token = required(
                    &config.jira_api_token,
                    jira::TOKEN_VAR,
                    "jira_token",
                    var,
                    n,
                )?;
                let url = self.jira_api_url.as_deref().unwrap_or_default();
                jira::settings(url, &email, &token)
            }
            _ => ClientSettings::new(&self.api_url, self.token(config)?, github::TOKEN_VAR),
        };
        client.quiet = true;
        Ok(client)
    }

    /// The limits of a run starting now that may take `time` in all (serve: the interval;
    /// Lambda: what is left of the invocation, less a margin).
    pub fn limits(&self, time: Duration) -> Limits {
        let share = time.mul_f64(BUDGET_SHARE);
        let budget = self.budget.map_or(share, |b| b.min(time));
        Limits::new(budget, time)
    }
}

/// The value of a credential, or an error naming its variable and secret key.
fn required(
    secret: &Secret,
    var: &str,
    key: &str,
    setting: &str,
    n: usize,
) -> Result<String, ConfigError> {
    secret.get().ok_or_else(|| {
        ConfigError::new(
            var,
            format!(
                "must be set (or the {key} key of the VALUESTREAM_SECRET_ARN secret) when \
                 {setting} names what to sync: the sync reads the API with it ({n} set)"
            ),
        )
    })
}

/// When a run stops starting targets, and when it stops reading altogether.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub start_until: tokio::time::Instant,
    pub stop_at: tokio::time::Instant,
}

impl Limits {
    pub fn new(budget: Duration, hard: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Limits {
            start_until: now + budget.min(hard),
            stop_at: now + hard,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<SyncSettings, ConfigError> {
        SyncSettings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_and_good_values() {
        let s = settings(&[]).unwrap();
        assert!(!s.enabled());
        assert_eq!(s.every, Duration::from_secs(900));
        assert_eq!(s.lookback, Duration::from_secs(3 * 86_400));
        assert_eq!(s.budget, None);
        assert_eq!(s.api_url, "https://api.github.com");
        assert_eq!(s.gitlab_api_url, "https://gitlab.com/api/v4");
        assert_eq!(s.pagerduty_api_url, "https://api.pagerduty.com");
        assert_eq!(s.jira_api_url, None);
        let s = settings(&[
            (
                "VALUESTREAM_SYNC_GITHUB_REPOS",
                " a/b, Codertocat/Hello-World ,",
            ),
            ("VALUESTREAM_SYNC_GITLAB_PROJECTS", "g/sub/p,g/q"),
            ("VALUESTREAM_SYNC_PAGERDUTY_SERVICES", "PIJ90N7"),
            ("VALUESTREAM_SYNC_JIRA_PROJECTS", "SHOP,OPS_2"),
            ("VALUESTREAM_JIRA_API_URL", "https://example.atlassian.net/"),
            ("VALUESTREAM_SYNC_SECS", "60"),
            ("VALUESTREAM_SYNC_LOOKBACK_SECS", "3600"),
            ("VALUESTREAM_SYNC_BUDGET_SECS", "30"),
            (
                "VALUESTREAM_GITHUB_API_URL",
                "https://ghe.example.com/api/v3/",
            ),
        ])
        .unwrap();
        assert_eq!(s.repos, ["a/b", "Codertocat/Hello-World"]);
        assert_eq!(s.gitlab_projects, ["g/sub/p", "g/q"]);
        assert_eq!(s.pagerduty_services, ["PIJ90N7"]);
        assert_eq!(s.jira_projects, ["SHOP", "OPS_2"]);
        assert_eq!(
            s.jira_api_url.as_deref(),
            Some("https://example.atlassian.net")
        );
        assert_eq!(s.targets().len(), 7);
        assert_eq!(s.targets()[2].source, "gitlab");
        assert_eq!(s.every, Duration::from_secs(60));
        assert_eq!(s.budget, Some(Duration::from_secs(30)));
        assert_eq!(s.api_url, "https://ghe.example.com/api/v3");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("VALUESTREAM_SYNC_GITHUB_REPOS", "just-a-name"),
            ("VALUESTREAM_SYNC_GITHUB_REPOS", "a/b/c"),
            ("VALUESTREAM_SYNC_GITHUB_REPOS", "a/b,A/B"),
            ("VALUESTREAM_SYNC_GITHUB_REPOS", "o/n?x"),
            ("VALUESTREAM_SYNC_GITLAB_PROJECTS", "just-a-name"),
            ("VALUESTREAM_SYNC_GITLAB_PROJECTS", "g//p"),
            ("VALUESTREAM_SYNC_PAGERDUTY_SERVICES", "P-1"),
            ("VALUESTREAM_SYNC_JIRA_PROJECTS", "SHOP-1"),
            ("VALUESTREAM_SYNC_SECS", "59"),
            ("VALUESTREAM_SYNC_SECS", "15m"),
            ("VALUESTREAM_SYNC_LOOKBACK_SECS", "0"),
            ("VALUESTREAM_SYNC_BUDGET_SECS", "0"),
            ("VALUESTREAM_GITHUB_API_URL", "api.github.com"),
            ("VALUESTREAM_GITLAB_API_URL", "gitlab.com"),
            ("VALUESTREAM_PAGERDUTY_API_URL", "api.pagerduty.com"),
        ] {
            let e = settings(&[(var, value)]).expect_err(value);
            assert_eq!(e.var, var, "{e}");
            assert!(e.to_string().contains(var) && e.to_string().contains("accepts"));
        }
        let e = settings(&[("VALUESTREAM_SYNC_JIRA_PROJECTS", "SHOP")]).unwrap_err();
        assert_eq!(e.var, "VALUESTREAM_JIRA_API_URL", "{e}");
    }

    #[test]
    fn the_tokens_are_required_and_named() {
        let s = settings(&[("VALUESTREAM_SYNC_GITHUB_REPOS", "a/b")]).unwrap();
        let config = Config::from_pairs(&[]).unwrap();
        let e = s.token(&config).unwrap_err();
        assert_eq!(e.var, "GITHUB_TOKEN");
        assert!(e.to_string().contains("github_token"), "{e}");
        let config = Config::from_pairs(&[("GITHUB_TOKEN", "t")]).unwrap();
        assert_eq!(s.token(&config).unwrap(), "t");
        s.check_tokens(&config).unwrap();
        let s = settings(&[
            ("VALUESTREAM_SYNC_GITLAB_PROJECTS", "g/p"),
            ("VALUESTREAM_SYNC_PAGERDUTY_SERVICES", "P1"),
            ("VALUESTREAM_SYNC_JIRA_PROJECTS", "SHOP"),
            ("VALUESTREAM_JIRA_API_URL", "https://x.atlassian.net"),
        ])
        .unwrap();
        let mut pairs = vec![];
        for (var, key) in [
            ("GITLAB_TOKEN", "gitlab_token"),
            ("PAGERDUTY_TOKEN", "pagerduty_token"),
            ("JIRA_EMAIL", "jira_email"),
            ("JIRA_TOKEN", "jira_token"),
        ] {
            let config = Config::from_pairs(&pairs).unwrap();
            let e = s.check_tokens(&config).unwrap_err();
            assert_eq!(e.var, var, "{e}");
            assert!(e.to_string().contains(key), "{e}");
            pairs.push((var, "x"));
        }
        s.check_tokens(&Config::from_pairs(&pairs).unwrap())
            .unwrap();
    }

    #[test]
    fn the_budget_is_a_share_of_the_time_unless_set() {
        let s = settings(&[]).unwrap();
        let l = s.limits(Duration::from_secs(100));
        let budget = l.start_until - tokio::time::Instant::now();
        assert!(budget <= Duration::from_secs(60) && budget > Duration::from_secs(59));
        let s = settings(&[("VALUESTREAM_SYNC_BUDGET_SECS", "500")]).unwrap();
        let l = s.limits(Duration::from_secs(100));
        assert_eq!(l.start_until, l.stop_at, "never past the hard limit");
    }
}
