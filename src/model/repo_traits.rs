//! Repository attributes: team, language, deployment type and any user-defined key, set on every
//! work item of a repository, and the bound on the values that become metric labels.
//!
//! Where a value comes from, first found wins:
//! 1. the payload (GitHub `repository.language`, topics `team-x` / `deploy-x`, labels `team:x`;
//!    any source's own attributes);
//! 2. `VALUESTREAM_TEAMS` (the team only);
//! 3. `VALUESTREAM_REPOSITORY_ATTRIBUTES`: a JSON object (inline, or `@path` to a file) mapping
//!    `owner/repo` or `owner/*` to attributes, e.g.
//!    `{"acme/api": {"team": "payments", "language": "python", "deployment.type": "mutable"}}`
//!    (an exact entry wins over the `owner/*` one, key by key).
//!
//! The keys `team`, `language` and `deployment.type` become `valuestream.team`,
//! `valuestream.language` and `valuestream.deployment.type`; any other key `k` becomes
//! `valuestream.attr.k`. [`enrich`] sets them on the work events of a delivery, after translation
//! and before the engine, so every source gets them alike.
//!
//! Cardinality: each attribute that becomes a metric label has an allow-list
//! (`VALUESTREAM_ATTRIBUTE_VALUES`, e.g. `language=python|go|javascript,deployment.type=container|mutable|image`).
//! Without one, `language` and `deployment.type` allow [`DEFAULT_LANGUAGES`] /
//! [`DEFAULT_DEPLOYMENT_TYPES`] plus the values the repository attributes use, and a user-defined
//! key allows the values the repository attributes use (a `valuestream.attr.<key>` nobody
//! configured allows none); `team` is not bounded unless listed.
//! A value outside its allow-list becomes `other` (on the span and in the labels), so an attribute
//! has at most (allowed values + 1) label values.

use super::attr;
use super::{Input, Repo};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The value an attribute takes when its value is outside the allow-list.
pub const OTHER: &str = "other";

/// Languages allowed as label values when `VALUESTREAM_ATTRIBUTE_VALUES` names none (compared in
/// lower case): the most used languages of GitHub's yearly reports.
pub const DEFAULT_LANGUAGES: &[&str] = &[
    "c",
    "c#",
    "c++",
    "clojure",
    "dart",
    "elixir",
    "go",
    "groovy",
    "haskell",
    "hcl",
    "java",
    "javascript",
    "kotlin",
    "lua",
    "objective-c",
    "perl",
    "php",
    "powershell",
    "python",
    "r",
    "ruby",
    "rust",
    "scala",
    "shell",
    "swift",
    "typescript",
];

/// Deployment types allowed as label values when `VALUESTREAM_ATTRIBUTE_VALUES` names none:
/// containers, mutable hosts (deployed in place), baked machine images, serverless functions,
/// static sites.
pub const DEFAULT_DEPLOYMENT_TYPES: &[&str] =
    &["container", "mutable", "image", "serverless", "static"];

/// Longest accepted attribute key and value, in characters.
const MAX_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum AttributesError {
    #[error("VALUESTREAM_REPOSITORY_ATTRIBUTES: cannot read {path}: {error}")]
    Read { path: String, error: String },
    #[error("VALUESTREAM_REPOSITORY_ATTRIBUTES: {0}")]
    Repositories(String),
    #[error("VALUESTREAM_ATTRIBUTE_VALUES: {0}")]
    Values(String),
}

/// The attribute key of a short name: `team` → `valuestream.team`, `k` → `valuestream.attr.k`.
pub fn full_key(short: &str) -> String {
    match short {
        "team" => attr::TEAM.to_string(),
        "language" => attr::LANGUAGE.to_string(),
        "deployment.type" => attr::DEPLOYMENT_TYPE.to_string(),
        k => format!("{}{k}", attr::ATTR_PREFIX),
    }
}

/// The parsed `VALUESTREAM_REPOSITORY_ATTRIBUTES` and `VALUESTREAM_ATTRIBUTE_VALUES`.
#[derive(Clone, Debug, Default)]
pub struct RepositoryAttributes {
    /// Lower-case `owner/repo` or `owner/*` → full attribute key → value.
    repos: BTreeMap<String, BTreeMap<String, String>>,
    /// Full attribute key → allowed values (lower case). A key not here is not bounded.
    allowed: BTreeMap<String, BTreeSet<String>>,
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_LEN
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !k.starts_with('.')
        && !k.ends_with('.')
}

impl RepositoryAttributes {
    /// Parses both variables (either may be absent). `repositories` is inline JSON or `@path`.
    pub fn parse(
        repositories: Option<&str>,
        values: Option<&str>,
    ) -> Result<Self, AttributesError> {
        let mut out = RepositoryAttributes::default();
        if let Some(text) = repositories.map(str::trim).filter(|t| !t.is_empty()) {
            let json = match text.strip_prefix('@') {
                Some(path) => {
                    std::fs::read_to_string(path.trim()).map_err(|e| AttributesError::Read {
                        path: path.trim().to_string(),
                        error: e.to_string(),
                    })?
                }
                None => text.to_string(),
            };
            out.repos = parse_repositories(&json).map_err(AttributesError::Repositories)?;
        }
        let explicit = parse_values(values.unwrap_or_default()).map_err(AttributesError::Values)?;
        // Implicit allow-lists: the defaults, plus every value the repository attributes use.
        let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for attrs in out.repos.values() {
            for (k, v) in attrs {
                used.entry(k.clone()).or_default().insert(v.to_lowercase());
            }
        }
        for (k, list) in &explicit {
            if let Some(outside) = used.get(k).and_then(|u| u.difference(list).next()) {
                return Err(AttributesError::Values(format!(
                    "VALUESTREAM_REPOSITORY_ATTRIBUTES sets {k} = {outside:?}, which the \
                     allow-list of {k} does not contain"
                )));
            }
        }
        let defaults = [
            (attr::LANGUAGE, DEFAULT_LANGUAGES),
            (attr::DEPLOYMENT_TYPE, DEFAULT_DEPLOYMENT_TYPES),
        ];
        for (k, list) in defaults {
            let mut set: BTreeSet<String> = list.iter().map(|s| s.to_string()).collect();
            set.extend(used.get(k).cloned().unwrap_or_default());
            out.allowed.insert(k.to_string(), set);
        }
        for (k, set) in used {
            if k.starts_with(attr::ATTR_PREFIX) {
                out.allowed.insert(k, set);
            }
        }
        out.allowed.extend(explicit);
        Ok(out)
    }

    /// The configured attributes of a repository (full keys): its `owner/*` entry overridden by
    /// its exact entry.
    pub fn of(&self, repo: &Repo) -> BTreeMap<String, String> {
        let mut out = self
            .repos
            .get(&format!("{}/*", repo.owner()))
            .cloned()
            .unwrap_or_default();
        out.extend(self.repos.get(&repo.0).cloned().unwrap_or_default());
        out
    }

    /// `value`, or `other` when the allow-list of `key` does not contain it.
    /// A `valuestream.attr.<key>` that no configuration names has an empty allow-list: a sender
    /// cannot add label values the operator did not list.
    pub fn bound<'a>(&self, key: &str, value: &'a str) -> &'a str {
        match self.allowed.get(key) {
            Some(list) if !list.contains(&value.trim().to_lowercase()) => OTHER,
            None if key.starts_with(attr::ATTR_PREFIX) => OTHER,
            _ => value,
        }
    }

    /// The allow-list of a full attribute key, when it has one.
    pub fn allowed(&self, key: &str) -> Option<&BTreeSet<String>> {
        self.allowed.get(key)
    }

    /// Sets the repository attributes on every work event of a delivery (payload values first),
    /// then bounds every label attribute to its allow-list.
    pub fn enrich(&self, inputs: &mut [Input]) {
        for input in inputs {
            let Input::Work(ev) = input else { continue };
            if let Some(repo) = &ev.repo {
                for (k, v) in self.of(repo) {
                    ev.traits.set_if_absent(&k, &v);
                }
            }
            for (k, v) in ev.traits.values_mut() {
                let bounded = self.bound(k, v);
                if bounded != v.as_str() {
                    *v = bounded.to_string();
                }
            }
        }
    }
}

fn parse_repositories(json: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err(
            "must be a JSON object mapping \"owner/repo\" or \"owner/*\" to attributes".into(),
        );
    };
    let mut out = BTreeMap::new();
    for (pattern, attrs) in obj {
        let p = pattern.trim().trim_matches('/').to_ascii_lowercase();
        let Some((owner, name)) = p.rsplit_once('/') else {
            return Err(format!("{pattern:?} is not \"owner/repo\" or \"owner/*\""));
        };
        if owner.is_empty()
            || name.is_empty()
            || (name.contains('*') && name != "*")
            || owner.contains('*')
        {
            return Err(format!("{pattern:?} is not \"owner/repo\" or \"owner/*\""));
        }
        let Value::Object(attrs) = attrs else {
            return Err(format!(
                "the attributes of {pattern:?} must be an object such as {{\"team\": \"payments\"}}"
            ));
        };
        let mut set = BTreeMap::new();
        for (k, v) in attrs {
            if !valid_key(&k) {
                return Err(format!(
                    "{pattern:?}: attribute name {k:?} must be letters, digits, '_', '-' or '.' \
                     (at most {MAX_LEN})"
                ));
            }
            let value = match v {
                Value::String(s) if !s.trim().is_empty() && s.len() <= MAX_LEN => {
                    s.trim().to_string()
                }
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "{pattern:?}: the value of {k:?} must be a non-empty string of at most \
                         {MAX_LEN} characters, a number or a boolean"
                    ))
                }
            };
            set.insert(full_key(&k), value);
        }
        out.insert(p, set);
    }
    Ok(out)
}

/// `key=v1|v2,key2=v3` (pairs separated by `,`, `;` or newlines).
fn parse_values(text: &str) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let mut out = BTreeMap::new();
    for pair in text
        .split([',', ';', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let Some((k, vs)) = pair.split_once('=') else {
            return Err(format!(
                "{pair:?} is not key=value1|value2 (e.g. language=python|go)"
            ));
        };
        let k = k.trim();
        if !valid_key(k) {
            return Err(format!("{k:?} is not an attribute name"));
        }
        let set: BTreeSet<String> = vs
            .split('|')
            .map(|v| v.trim().to_lowercase())
            .filter(|v| !v.is_empty())
            .collect();
        if set.is_empty() {
            return Err(format!("{k} lists no values"));
        }
        out.insert(full_key(k), set);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Attrs, Kind, WorkEvent};

    fn event(repo: &str, attrs: &[(&str, &str)]) -> Input {
        let mut w = WorkEvent::new(Kind::Issue, "k".into(), "n".into(), Action::Close);
        w.repo = Some(Repo::new(repo));
        for (k, v) in attrs {
            w.attributes.insert(k.to_string(), (*v).into());
        }
        w.traits.take_from(&mut w.attributes);
        Input::Work(w)
    }

    /// A work event's attributes with its traits, as its span exports them.
    fn attrs_of(i: &Input) -> Attrs {
        let Input::Work(w) = i else { unreachable!() };
        let mut a = w.attributes.clone();
        for (k, v) in w.traits.entries() {
            a.insert(k.into(), v.into());
        }
        a
    }

    const CONFIG: &str = r#"{"acme/*": {"team": "platform", "deployment.type": "container", "tier": "1"},
        "Acme/API": {"team": "payments", "language": "python", "deployment.type": "mutable"}}"#;

    #[test]
    fn exact_entries_win_over_owner_entries_and_payload_wins_over_both() {
        let ra = RepositoryAttributes::parse(Some(CONFIG), None).unwrap();
        let mut inputs = vec![
            event("acme/api", &[]),
            event("acme/web", &[(attr::LANGUAGE, "TypeScript")]),
            event("other/x", &[]),
        ];
        ra.enrich(&mut inputs);
        let a = attrs_of(&inputs[0]);
        assert_eq!(a[attr::TEAM], "payments".into());
        assert_eq!(a[attr::LANGUAGE], "python".into());
        assert_eq!(a[attr::DEPLOYMENT_TYPE], "mutable".into());
        assert_eq!(a["valuestream.attr.tier"], "1".into());
        let w = attrs_of(&inputs[1]);
        assert_eq!(w[attr::TEAM], "platform".into());
        assert_eq!(
            w[attr::LANGUAGE],
            "TypeScript".into(),
            "the payload's value, as spelled"
        );
        assert_eq!(w[attr::DEPLOYMENT_TYPE], "container".into());
        assert!(attrs_of(&inputs[2]).is_empty());
    }

    #[test]
    fn values_outside_the_allow_list_become_other() {
        let ra = RepositoryAttributes::parse(
            Some(CONFIG),
            Some("language=python|go|javascript; team=payments|platform"),
        )
        .unwrap();
        let mut inputs = vec![
            event(
                "x/a",
                &[(attr::LANGUAGE, "COBOL"), (attr::TEAM, "Payments")],
            ),
            event("x/b", &[(attr::LANGUAGE, "Go"), (attr::TEAM, "ghosts")]),
            event(
                "x/c",
                &[
                    (attr::DEPLOYMENT_TYPE, "pets"),
                    ("valuestream.attr.tier", "9"),
                ],
            ),
            event(
                "x/d",
                &[
                    ("valuestream.attr.unknown", "v"),
                    ("vcs.repository.name", "d"),
                ],
            ),
        ];
        ra.enrich(&mut inputs);
        assert_eq!(attrs_of(&inputs[0])[attr::LANGUAGE], OTHER.into());
        assert_eq!(attrs_of(&inputs[0])[attr::TEAM], "Payments".into());
        assert_eq!(attrs_of(&inputs[1])[attr::LANGUAGE], "Go".into());
        assert_eq!(attrs_of(&inputs[1])[attr::TEAM], OTHER.into());
        // Defaults: deployment types; a user key allows what the configuration uses.
        assert_eq!(attrs_of(&inputs[2])[attr::DEPLOYMENT_TYPE], OTHER.into());
        assert_eq!(attrs_of(&inputs[2])["valuestream.attr.tier"], OTHER.into());
        // A user key nobody configured allows nothing; other attributes are untouched.
        assert_eq!(
            attrs_of(&inputs[3])["valuestream.attr.unknown"],
            OTHER.into()
        );
        assert_eq!(attrs_of(&inputs[3])["vcs.repository.name"], "d".into());
    }

    #[test]
    fn bad_configuration_names_the_variable_and_the_fault() {
        let err = |r: Option<&str>, v: Option<&str>| {
            RepositoryAttributes::parse(r, v).unwrap_err().to_string()
        };
        assert!(err(Some("{"), None).starts_with("VALUESTREAM_REPOSITORY_ATTRIBUTES: not JSON"));
        assert!(err(Some("[]"), None).contains("must be a JSON object"));
        assert!(err(Some(r#"{"api": {}}"#), None).contains(r#""api" is not "owner/repo""#));
        assert!(err(Some(r#"{"a/b*": {}}"#), None).contains("is not"));
        assert!(err(Some(r#"{"a/b": "x"}"#), None).contains("must be an object"));
        assert!(err(Some(r#"{"a/b": {"team": ""}}"#), None).contains("non-empty string"));
        assert!(err(Some(r#"{"a/b": {"bad key": "x"}}"#), None).contains("attribute name"));
        assert!(err(Some("@/nonexistent/attrs.json"), None)
            .starts_with("VALUESTREAM_REPOSITORY_ATTRIBUTES: cannot read /nonexistent/attrs.json"));
        assert!(
            err(None, Some("language")).starts_with("VALUESTREAM_ATTRIBUTE_VALUES: \"language\"")
        );
        assert!(err(None, Some("language=")).contains("lists no values"));
        assert!(err(Some(CONFIG), Some("language=go"))
            .contains("sets valuestream.language = \"python\""));
    }

    #[test]
    fn a_file_is_read_with_at() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attrs.json");
        std::fs::write(&path, CONFIG).unwrap();
        let ra = RepositoryAttributes::parse(Some(&format!("@{}", path.display())), None).unwrap();
        assert_eq!(ra.of(&Repo::new("acme/api"))[attr::TEAM], "payments");
    }
}
