//! Why a well-formed delivery is ignored: an event, action or status the service does not use,
//! a push that moves no branch, or a reason said in words. Sources return it from their
//! mapping functions (`Result<WorkEvent, Ignored>`); the HTTP layer answers `ignored` with its
//! text.

use std::fmt;

/// Why a well-formed delivery carries nothing the service records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// An event, action or status the service does not use:
    /// `github issues action "transferred" is not used`, with an optional note in parentheses.
    Unused {
        /// What was looked at: `github issues action`.
        what: &'static str,
        /// The value found, as the payload spelled it (quoted).
        value: String,
        /// Why, when it is not obvious.
        note: Option<&'static str>,
    },
    /// A push that moves no branch forward.
    Push {
        /// The sending source: `github`, `gitlab`.
        source: &'static str,
        skip: PushSkip,
    },
    /// Any other reason, in words: `gitlab job 7 (created) never started`.
    Other(String),
}

/// Why a push is not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushSkip {
    /// The ref is not a branch (a tag).
    NotABranch,
    /// The branch was deleted.
    BranchDeletion,
    /// The push carries no commits.
    NoCommits,
}

impl Ignored {
    /// `what` with a value the service does not use; `value` is written as `{value:?}`.
    pub fn unused(what: &'static str, value: impl fmt::Debug) -> Self {
        Ignored::Unused {
            what,
            value: format!("{value:?}"),
            note: None,
        }
    }

    /// The same, with a note saying why (an [`Ignored::Unused`]; other reasons are unchanged).
    pub fn note(self, why: &'static str) -> Self {
        match self {
            Ignored::Unused { what, value, .. } => Ignored::Unused {
                what,
                value,
                note: Some(why),
            },
            other => other,
        }
    }

    /// A push of `source` that moves no branch forward.
    pub fn push(source: &'static str, skip: PushSkip) -> Self {
        Ignored::Push { source, skip }
    }

    /// Any other reason, in words.
    pub fn because(reason: impl Into<String>) -> Self {
        Ignored::Other(reason.into())
    }
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::Unused { what, value, note } => {
                write!(f, "{what} {value} is not used")?;
                match note {
                    Some(note) => write!(f, " ({note})"),
                    None => Ok(()),
                }
            }
            Ignored::Push { source, skip } => write!(f, "{source} push: {skip}"),
            Ignored::Other(reason) => f.write_str(reason),
        }
    }
}

impl fmt::Display for PushSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PushSkip::NotABranch => "not a branch (tags are not used)",
            PushSkip::BranchDeletion => "branch deletion",
            PushSkip::NoCommits => "no commits",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_what_the_answer_carries() {
        assert_eq!(
            Ignored::unused("github issues action", "transferred").to_string(),
            r#"github issues action "transferred" is not used"#
        );
        assert_eq!(
            Ignored::unused("gitlab issue action", Some("reopen")).to_string(),
            r#"gitlab issue action Some("reopen") is not used"#
        );
        assert_eq!(
            Ignored::unused("gitlab system hook event", "x")
                .note("only merge requests and pushes are")
                .to_string(),
            r#"gitlab system hook event "x" is not used (only merge requests and pushes are)"#
        );
        assert_eq!(
            Ignored::push("gitlab", PushSkip::NotABranch).to_string(),
            "gitlab push: not a branch (tags are not used)"
        );
        assert_eq!(
            Ignored::because("gitlab job 7 (created) never started").to_string(),
            "gitlab job 7 (created) never started"
        );
    }
}
