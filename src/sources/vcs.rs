//! What GitHub and GitLab have in common as version-control systems, written once: how a change
//! (pull/merge request) names the issues it belongs to. Each VCS source maps its own payload fields onto these.

use crate::model::refs::{closing_refs, tracker_item_key, tracker_keys, vstrace_parents};
use crate::model::{ParentRef, Repo, WorkEvent};

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
}
