//! What every issue tracker (GitHub and GitLab issues, Jira) shares, written once: the rule that
//! makes an issue an incident, the prefix of its span name and the result of its close. Each tracker source passes its
//! own payload's type name and labels.

use crate::config::Config;
use crate::model::{Kind, WorkResult};

/// An issue's kind: an incident when its tracker types it so (a type named `incident`, any case)
/// or one of its labels is `VALUESTREAM_INCIDENT_LABEL` (any case), else an issue.
pub fn issue_kind<'a>(
    type_name: Option<&str>,
    labels: impl IntoIterator<Item = &'a str>,
    config: &Config,
) -> Kind {
    let typed = type_name.is_some_and(|t| t.trim().eq_ignore_ascii_case("incident"));
    if typed
        || labels
            .into_iter()
            .any(|l| l.eq_ignore_ascii_case(&config.incident_label))
    {
        Kind::Incident
    } else {
        Kind::Issue
    }
}

/// The first word of an issue-like span's name: `INCIDENT` or `ISSUE`.
pub fn name_prefix(kind: Kind) -> &'static str {
    if kind == Kind::Incident {
        "INCIDENT"
    } else {
        "ISSUE"
    }
}

/// How a closed issue-like item ended: an incident is `resolved`, an issue `closed`.
pub fn closed_result(kind: Kind) -> WorkResult {
    if kind == Kind::Incident {
        WorkResult::Resolved
    } else {
        WorkResult::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_by_type_or_label() {
        let config = Config::from_pairs(&[("VALUESTREAM_INCIDENT_LABEL", "sev")]).unwrap();
        assert_eq!(issue_kind(Some("Incident"), [], &config), Kind::Incident);
        assert_eq!(issue_kind(None, ["bug", "SEV"], &config), Kind::Incident);
        assert_eq!(issue_kind(Some("Bug"), ["bug"], &config), Kind::Issue);
        assert_eq!(name_prefix(Kind::Incident), "INCIDENT");
        assert_eq!(name_prefix(Kind::Issue), "ISSUE");
        assert_eq!(closed_result(Kind::Incident), WorkResult::Resolved);
        assert_eq!(closed_result(Kind::Issue), WorkResult::Closed);
    }
}
