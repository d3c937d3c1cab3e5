//! What GitHub and GitLab have in common as version-control systems, written once: how a change
//! (pull/merge request) names the issues it belongs to, and what a push to a branch is. Each VCS source maps its own payload fields onto these.

use crate::model::refs::{closing_refs, tracker_item_key, tracker_keys, vstrace_parents};
use crate::model::{Attrs, Commit, Input, ParentRef, Push, Repo, WorkEvent};
use crate::sources::{Ignored, PushSkip, Translation};

/// Adds a change's parent candidates, best first: a `vstrace-` reference in its head branch,
/// the issues its description closes (`Fixes #7`) in `source`, and the tracker keys (`SHOP-42`)
/// in its branch and title.
pub fn change_parents(
    w: &mut WorkEvent,
    source: &str,
    repo: &Repo,
    branch: &str,
    title: &str,
    description: &str,
) {
    w.parents.extend(vstrace_parents(branch, Some(repo)));
    for r in closing_refs(description, source, repo) {
        let k = r.parent();
        if !w.parents.contains(&k) {
            w.parents.push(k);
        }
    }
    for k in tracker_keys(&format!("{branch} {title}")) {
        w.parents.push(ParentRef::Item(tracker_item_key(&k)));
    }
}

/// What a push delivery says, in the shape both VCS payloads share (the payload side; the
/// engine's facts about a push are `engine::scope::PushFact`).
pub struct PushPayload<'a> {
    /// `refs/heads/<branch>` (anything else, a tag, is not used).
    pub git_ref: &'a str,
    pub before: Option<String>,
    pub after: Option<String>,
    /// The payload says the branch was deleted.
    pub deleted: bool,
    /// The repository's default branch (`main` when the payload does not say).
    pub default_branch: Option<&'a str>,
    pub commits: Vec<Commit>,
}

/// A push of commits to a branch as the engine's [`Push`], or why it is not used: a tag, a
/// branch deletion (an all-zero `after`), a push without commits.
pub fn push(
    source: &'static str,
    repo: &Repo,
    p: PushPayload<'_>,
    attributes: Attrs,
) -> Translation {
    let Some(branch) = p.git_ref.strip_prefix("refs/heads/") else {
        return Translation::Ignored(Ignored::push(source, PushSkip::NotABranch));
    };
    let after = p.after.unwrap_or_default();
    if p.deleted || after.chars().all(|c| c == '0') {
        return Translation::Ignored(Ignored::push(source, PushSkip::BranchDeletion));
    }
    let Some(time) = p.commits.iter().map(|c| c.time).max() else {
        return Translation::Ignored(Ignored::push(source, PushSkip::NoCommits));
    };
    Translation::Inputs(vec![Input::Push(Push {
        repo: repo.clone(),
        branch: branch.to_string(),
        to_default_branch: branch == p.default_branch.unwrap_or("main"),
        before: p.before,
        after,
        time,
        commits: p.commits,
        attributes,
    })])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Kind};

    #[test]
    fn a_change_names_its_issues_best_first_without_repeats() {
        let repo = Repo::new("acme/api");
        let mut w = WorkEvent::new(Kind::Change, "k".into(), "n".into(), Action::Open);
        change_parents(
            &mut w,
            "github",
            &repo,
            "feature/vstrace-github-api-7/x",
            "SHOP-1 fix",
            "Fixes #7, closes #8",
        );
        let keys: Vec<String> = w
            .parents
            .iter()
            .map(|p| match p {
                ParentRef::Item(k) => k.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(keys[0].ends_with("/acme/api/7"), "{keys:?}");
        assert!(keys[1].ends_with("/acme/api/8"), "{keys:?}");
        assert_eq!(keys[2], tracker_item_key("SHOP-1"));
    }

    #[test]
    fn a_push_is_a_branch_with_commits() {
        let repo = Repo::new("acme/api");
        let commit = |sha: &str, t: &str| Commit {
            sha: sha.into(),
            time: t.parse().unwrap(),
            message: String::new(),
            merges: false,
        };
        let facts = |git_ref, after: &str, commits| PushPayload {
            git_ref,
            before: Some("b".into()),
            after: Some(after.into()),
            deleted: false,
            default_branch: Some("trunk"),
            commits,
        };
        let two = vec![
            commit("a", "2024-01-01T10:00:00Z"),
            commit("b", "2024-01-01T11:00:00Z"),
        ];
        match push(
            "src",
            &repo,
            facts("refs/heads/trunk", "c", two.clone()),
            Attrs::new(),
        ) {
            Translation::Inputs(i) => match &i[..] {
                [Input::Push(p)] => {
                    assert!(p.to_default_branch);
                    assert_eq!(p.branch, "trunk");
                    assert_eq!(
                        p.time,
                        "2024-01-01T11:00:00Z"
                            .parse::<crate::model::Time>()
                            .unwrap()
                    );
                    assert_eq!(p.commits.len(), 2);
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        let ignored = |t: Translation| match t {
            Translation::Ignored(why) => why.to_string(),
            other => panic!("{other:?}"),
        };
        assert!(ignored(push(
            "src",
            &repo,
            facts("refs/tags/v1", "c", two.clone()),
            Attrs::new()
        ))
        .contains("src push: not a branch"));
        assert!(ignored(push(
            "src",
            &repo,
            facts("refs/heads/x", "0000", two.clone()),
            Attrs::new()
        ))
        .contains("deletion"));
        assert!(ignored(push(
            "src",
            &repo,
            facts("refs/heads/x", "c", vec![]),
            Attrs::new()
        ))
        .contains("no commits"));
        let mut deleted = facts("refs/heads/x", "c", two);
        deleted.deleted = true;
        assert!(ignored(push("src", &repo, deleted, Attrs::new())).contains("deletion"));
    }
}
