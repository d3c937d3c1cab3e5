//! The source registry: the one list of sources. Everything that depends on which sources exist
//! derives from [`SOURCES`]: the webhook routes ([`crate::http`]), the settings list (`--help` and
//! the README check, [`settings`]) and the golden-test discovery (tests/golden.rs walks
//! `tests/fixtures/<name>/` for every entry).
//!
//! Adding a source: its module (`src/sources/<name>/`), one entry here, and its fixtures with
//! their golden files under `tests/fixtures/<name>/` (docs/ARCHITECTURE.md lists the steps).

use super::{events, github, gitlab, jenkins, jira, pagerduty, Source};
use crate::config::ENV_VARS;

/// An environment variable a source reads, with its one-line documentation.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub var: &'static str,
    pub doc: &'static str,
}

/// One registered source.
pub struct SourceEntry {
    /// The route segment and `service.name`: `github`, `gitlab`, …
    pub name: &'static str,
    /// The webhook route (`/webhooks/<name>`).
    pub route: &'static str,
    /// Its settings (its secret first).
    pub settings: &'static [Setting],
    /// Verification and translation of its deliveries.
    pub source: &'static dyn Source,
}

const fn s(var: &'static str, doc: &'static str) -> Setting {
    Setting { var, doc }
}

/// Every source, in the order `--help` lists their settings.
pub static SOURCES: &[SourceEntry] = &[
    SourceEntry {
        name: "github",
        route: "/webhooks/github",
        settings: &[s("VALUESTREAM_GITHUB_SECRET", "GitHub webhook secret (X-Hub-Signature-256, HMAC-SHA256)")],
        source: &github::GitHub,
    },
    SourceEntry {
        name: "gitlab",
        route: "/webhooks/gitlab",
        settings: &[s("VALUESTREAM_GITLAB_TOKEN", "GitLab webhook secret token (X-Gitlab-Token)")],
        source: &gitlab::GitLab,
    },
    SourceEntry {
        name: "jenkins",
        route: "/webhooks/jenkins",
        settings: &[
            s("VALUESTREAM_JENKINS_TOKEN", "Jenkins bearer token (Authorization: Bearer, or ?token= in the URL)"),
            s("VALUESTREAM_JENKINS_DEPLOY_JOB_PATTERN", "regex of Jenkins job names that are deployments (default ^deploy)"),
        ],
        source: &jenkins::Jenkins,
    },
    SourceEntry {
        name: "jira",
        route: "/webhooks/jira",
        settings: &[
            s("VALUESTREAM_JIRA_SECRET", "Jira Cloud webhook secret (X-Hub-Signature: sha256=...)"),
            s("VALUESTREAM_JIRA_PROJECTS", "Jira project key to repository map: 'SHOP=owner/repo' (links Jira incidents to deployments)"),
        ],
        source: &jira::Jira,
    },
    SourceEntry {
        name: "pagerduty",
        route: "/webhooks/pagerduty",
        settings: &[
            s("VALUESTREAM_PAGERDUTY_SECRET", "PagerDuty v3 webhook signing secret (X-PagerDuty-Signature)"),
            s("VALUESTREAM_PAGERDUTY_SERVICES", "PagerDuty service (ID or name) to repository map: 'PIJ90N7=owner/repo'"),
        ],
        source: &pagerduty::PagerDuty,
    },
    SourceEntry {
        name: "events",
        route: "/webhooks/events",
        settings: &[s("VALUESTREAM_EVENTS_TOKEN", "token for the generic events API (Bearer, or HMAC key for X-Valuestream-Signature)")],
        source: &events::Events,
    },
];

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

/// Every environment variable the binary reads, with its documentation: each source's settings,
/// then the service's own ([`ENV_VARS`]). `--help` prints this list, and tests/docs.rs checks
/// that README's Configuration table names every entry.
pub fn settings() -> Vec<(&'static str, &'static str)> {
    SOURCES
        .iter()
        .flat_map(|e| e.settings.iter().map(|s| (s.var, s.doc)))
        .chain(ENV_VARS.iter().copied())
        .collect()
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
                !e.settings.is_empty(),
                "{}: every source has a secret",
                e.name
            );
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
    fn config_reads_every_registered_setting() {
        let asked = std::sync::Mutex::new(Vec::new());
        crate::config::Config::from_lookup(|var| {
            asked.lock().unwrap().push(var.to_string());
            None
        })
        .unwrap();
        let asked = asked.into_inner().unwrap();
        for e in SOURCES {
            for s in e.settings {
                assert!(asked.iter().any(|a| a == s.var), "{} is never read", s.var);
            }
        }
    }
}
