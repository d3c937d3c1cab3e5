//! References in free text that link work items: the ValueStream `vstrace-<source>-<repo>-<n>`
//! reference, closing keywords (`Fixes #7`, `Closes group/repo#3`), issue-tracker keys
//! (`SHOP-42`) and `team:<name>` labels. Pure text rules, shared by every source.

use super::Repo;
use regex::Regex;
use std::sync::LazyLock;

/// An issue named by a reference: the source system, its repository, its number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueRef {
    pub source: String,
    pub repo: Repo,
    pub number: u64,
}

impl IssueRef {
    /// The issue as a parent candidate: its item key.
    pub fn parent(&self) -> super::ParentRef {
        super::ParentRef::Item(super::ids::item_key(
            &self.source,
            "issue",
            &self.repo.0,
            &self.number.to_string(),
        ))
    }
}

/// The issues named by `vstrace-` references in `text`, as parent candidates ([`vstrace_refs`]).
pub fn vstrace_parents(text: &str, own: Option<&Repo>) -> Vec<super::ParentRef> {
    vstrace_refs(text, own)
        .iter()
        .map(IssueRef::parent)
        .collect()
}

static VSTRACE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)vstrace-([a-z]+)-([A-Za-z0-9._-]+)").unwrap());

/// Parses every `vstrace-<source>-<repo>-<number>` reference in `text`.
///
/// The repository name may itself contain `-`, `.`, `_` and digits, so a reference can be read
/// several ways (`vstrace-github-api-2-service-7`). The reading whose repository is the
/// delivery's own (`own`) wins; otherwise the one that ends on the number. The owner, which the
/// reference does not carry, is the delivery's own owner.
pub fn vstrace_refs(text: &str, own: Option<&Repo>) -> Vec<IssueRef> {
    let mut out = Vec::new();
    for cap in VSTRACE.captures_iter(text) {
        let source = cap[1].to_ascii_lowercase();
        let rest = &cap[2];
        let tokens: Vec<&str> = rest.split('-').collect();
        // Every reading: repository = tokens[..i], number = tokens[i] (all digits).
        let mut readings: Vec<(String, u64, bool)> = Vec::new();
        for i in 1..tokens.len() {
            if let Ok(n) = tokens[i].parse::<u64>() {
                if tokens[i].chars().all(|c| c.is_ascii_digit()) {
                    readings.push((tokens[..i].join("-"), n, i == tokens.len() - 1));
                }
            }
        }
        let pick = own
            .and_then(|own| {
                readings
                    .iter()
                    .find(|(name, _, _)| name.eq_ignore_ascii_case(own.name()))
            })
            .or_else(|| readings.iter().find(|(_, _, last)| *last))
            .or_else(|| readings.first());
        if let Some((name, number, _)) = pick {
            let owner = own.map(|o| o.owner()).unwrap_or_default();
            let full = if owner.is_empty() {
                name.clone()
            } else {
                format!("{owner}/{name}")
            };
            let r = IssueRef {
                source,
                repo: Repo::new(&full),
                number: *number,
            };
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

static CLOSING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?|implement(?:s|ed)?)\b:?\s+((?:[A-Za-z0-9._/-]+)?#\d+(?:\s*(?:,|and)\s*(?:[A-Za-z0-9._/-]+)?#\d+)*)",
    )
    .unwrap()
});
static ISSUE_NUM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([A-Za-z0-9._/-]+)?#(\d+)").unwrap());

/// Issues closed by keywords in a change's description (`Fixes #7`, `Closes group/repo#3`).
/// A bare `#7` is an issue of the delivery's own repository.
pub fn closing_refs(text: &str, source: &str, own: &Repo) -> Vec<IssueRef> {
    let mut out = Vec::new();
    for cap in CLOSING.captures_iter(text) {
        for m in ISSUE_NUM.captures_iter(&cap[1]) {
            let repo = match m.get(1) {
                Some(r) if r.as_str().contains('/') => Repo::new(r.as_str()),
                Some(r) if !r.as_str().is_empty() => {
                    Repo::new(&format!("{}/{}", own.owner(), r.as_str()))
                }
                _ => own.clone(),
            };
            if let Ok(number) = m[2].parse() {
                let r = IssueRef {
                    source: source.to_string(),
                    repo,
                    number,
                };
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
    }
    out
}

static TRACKER_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([A-Z][A-Z0-9]{1,9}-[1-9][0-9]*)\b").unwrap());

/// Issue-tracker keys (`SHOP-42`) in a branch name or title, in order of appearance.
pub fn tracker_keys(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in TRACKER_KEY.find_iter(text) {
        let k = m.as_str().to_string();
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// The item key of an issue-tracker issue named by its key (`SHOP-42`): trackers that use such
/// keys (Jira and its kin) publish their issues under this key, and changes find them by it.
pub fn tracker_item_key(key: &str) -> String {
    format!("tracker/issue/{}", key.to_ascii_uppercase())
}

/// The team named by a `team:<name>` (or `team/<name>`, `team-<name>`) label or topic.
pub fn team_from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Option<String> {
    prefixed(labels, &["team:", "team/", "team-"])
}

/// The deployment type named by a `deploy-<type>` (or `deploy:<type>`, `deploy/<type>`) label or
/// topic: `deploy-mutable`, `deploy-container`.
pub fn deployment_type_from_labels<'a>(
    labels: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    prefixed(labels, &["deploy:", "deploy/", "deploy-"])
}

/// The language named by a `lang-<language>` (or `language-<language>`, `lang:`…) label or topic.
pub fn language_from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Option<String> {
    prefixed(
        labels,
        &[
            "language:",
            "language/",
            "language-",
            "lang:",
            "lang/",
            "lang-",
        ],
    )
}

/// The rest of the first label that starts with one of `prefixes` (case-insensitive).
fn prefixed<'a>(labels: impl IntoIterator<Item = &'a str>, prefixes: &[&str]) -> Option<String> {
    labels.into_iter().find_map(|l| {
        let l = l.trim();
        prefixes.iter().find_map(|p| {
            l.get(..p.len())
                .filter(|head| head.eq_ignore_ascii_case(p))
                .map(|_| l[p.len()..].trim().to_string())
                .filter(|t| !t.is_empty())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Repo {
        Repo::new("Codertocat/Hello-World")
    }

    #[test]
    fn vstrace_with_hyphenated_repo() {
        let r = vstrace_refs("feature/vstrace-github-Hello-World-1/fix", Some(&own()));
        assert_eq!(
            r,
            vec![IssueRef {
                source: "github".into(),
                repo: own(),
                number: 1
            }]
        );
    }

    #[test]
    fn vstrace_prefers_own_repository_reading() {
        let mine = Repo::new("acme/api-2-service");
        let r = vstrace_refs("vstrace-github-api-2-service-7", Some(&mine));
        assert_eq!(
            (r[0].repo.0.as_str(), r[0].number),
            ("acme/api-2-service", 7)
        );
        let other = Repo::new("acme/api");
        let r = vstrace_refs("vstrace-github-api-2-service-7", Some(&other));
        assert_eq!((r[0].repo.0.as_str(), r[0].number), ("acme/api", 2));
        let r = vstrace_refs("vstrace-gitlab-my.repo_x-12", None);
        assert_eq!(
            (r[0].source.as_str(), r[0].repo.0.as_str(), r[0].number),
            ("gitlab", "my.repo_x", 12)
        );
    }

    #[test]
    fn closing_keywords() {
        let r = closing_refs(
            "This Fixes #7 and closes other/thing#3.\nRef #9",
            "github",
            &own(),
        );
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].repo.clone(), r[0].number), (own(), 7));
        assert_eq!((r[1].repo.0.as_str(), r[1].number), ("other/thing", 3));
        assert!(closing_refs("prefix #4", "github", &own()).is_empty());
    }

    #[test]
    fn tracker_keys_and_teams() {
        assert_eq!(
            tracker_keys("feature/SHOP-42-checkout and OPS-7"),
            ["SHOP-42", "OPS-7"]
        );
        assert!(tracker_keys("no key here, lower-1").is_empty());
        assert_eq!(
            team_from_labels(["bug", "team:payments"]),
            Some("payments".into())
        );
        assert_eq!(team_from_labels(["bug"]), None);
        assert_eq!(
            deployment_type_from_labels(["team-a", "Deploy-Mutable"]),
            Some("Mutable".into())
        );
        assert_eq!(deployment_type_from_labels(["deployment"]), None);
        assert_eq!(language_from_labels(["lang-python"]), Some("python".into()));
    }
}
