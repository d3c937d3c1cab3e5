//! The commit and branch indexes of a scope: which change a commit SHA or a branch names, as it
//! was at a given time (span parents, what a push carried).

use crate::engine::scope::{GenRef, Summary};
use crate::model::{Kind, ParentRef, Time};
use std::collections::HashMap;

/// The commit and branch indexes of a scope.
pub struct Index<'a> {
    pub items: HashMap<&'a str, &'a Summary>,
    /// Commit SHA → changes whose head or merge commit it is.
    pub(super) by_sha: HashMap<&'a str, Vec<&'a Summary>>,
    by_branch: HashMap<&'a str, Vec<&'a Summary>>,
}

impl<'a> Index<'a> {
    pub fn new(summaries: &'a [Summary]) -> Self {
        let mut idx = Index {
            items: HashMap::new(),
            by_sha: HashMap::new(),
            by_branch: HashMap::new(),
        };
        for s in summaries {
            idx.items.insert(s.key.as_str(), s);
            if s.kind != Kind::Change {
                continue;
            }
            let merges = s.gens.iter().filter_map(|g| g.merge_sha.as_deref());
            for sha in s.head_shas.iter().map(String::as_str).chain(merges) {
                let v = idx.by_sha.entry(sha).or_default();
                if !v.iter().any(|x| x.key == s.key) {
                    v.push(s);
                }
            }
            if let Some(b) = &s.head_branch {
                idx.by_branch.entry(b.as_str()).or_default().push(s);
            }
        }
        for v in idx.by_sha.values_mut().chain(idx.by_branch.values_mut()) {
            v.sort_by(|a, b| a.key.cmp(&b.key));
        }
        idx
    }

    /// The change a commit or branch names, as it was at `t`: among candidates, the latest to
    /// start at or before `t`, else the earliest.
    fn pick(cands: &[&'a Summary], t: Option<Time>) -> Option<GenRef> {
        let start = |s: &Summary| s.gens.first().and_then(|g| g.start);
        let before = cands
            .iter()
            .filter(|s| t.is_none_or(|t| start(s).is_none_or(|st| st <= t)))
            .max_by(|a, b| (start(a), &a.key).cmp(&(start(b), &b.key)));
        let s = before.or_else(|| {
            cands
                .iter()
                .min_by(|a, b| (start(a), &a.key).cmp(&(start(b), &b.key)))
        })?;
        Some(GenRef {
            key: s.key.clone(),
            gen: s.gen_at(t),
        })
    }

    /// A `Sha` or `Branch` candidate, resolved in this scope.
    pub fn resolve(&self, p: &ParentRef, t: Option<Time>) -> Option<GenRef> {
        match p {
            ParentRef::Sha { sha, .. } => {
                Self::pick(self.by_sha.get(sha.to_ascii_lowercase().as_str())?, t)
            }
            ParentRef::Branch { branch, .. } => Self::pick(self.by_branch.get(branch.as_str())?, t),
            ParentRef::Item(k) => {
                let s = self.items.get(k.as_str())?;
                Some(GenRef {
                    key: k.clone(),
                    gen: s.gen_at(t),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{at, change, gen, summary};
    use super::*;
    use crate::model::{Repo, WorkResult};

    /// A change on `branch` with head commit `sha`, opened at minute `opened`.
    fn on(key: &str, branch: &str, sha: &str, opened: i64) -> Summary {
        let mut c = change(key, opened + 60, "A", &[]);
        c.head_branch = Some(branch.into());
        c.head_shas = vec![sha.into()];
        c
    }

    #[test]
    fn a_branch_or_commit_names_the_change_that_was_open_then() {
        let items = vec![on("c1", "feat", "a1", 0), on("c2", "feat", "b2", 100)];
        let idx = Index::new(&items);
        let branch = ParentRef::Branch {
            repo: Repo::new("o/r"),
            branch: "feat".into(),
        };
        let key = |t: i64| idx.resolve(&branch, Some(at(t))).map(|g| g.key);
        // The latest to start at or before the time; before both, the earliest.
        assert_eq!(key(50).as_deref(), Some("c1"));
        assert_eq!(key(150).as_deref(), Some("c2"));
        assert_eq!(key(-10).as_deref(), Some("c1"));
        let sha = |s: &str| ParentRef::Sha {
            repo: Repo::new("o/r"),
            sha: s.into(),
        };
        assert_eq!(
            idx.resolve(&sha("B2"), None).map(|g| g.key).as_deref(),
            Some("c2")
        );
        assert_eq!(idx.resolve(&sha("zz"), None), None);
        let other = ParentRef::Branch {
            repo: Repo::new("o/r"),
            branch: "other".into(),
        };
        assert_eq!(idx.resolve(&other, None), None);
    }

    #[test]
    fn an_item_named_by_key_resolves_to_its_generation_at_the_time() {
        let mut first = gen(0, Some(10));
        first.result = Some(WorkResult::Closed);
        let mut s = summary("i1", Kind::Issue, first);
        s.gens.push(gen(20, None));
        let items = [s];
        let idx = Index::new(&items);
        let item = ParentRef::Item("i1".into());
        assert_eq!(idx.resolve(&item, Some(at(5))).map(|g| g.gen), Some(0));
        assert_eq!(idx.resolve(&item, Some(at(25))).map(|g| g.gen), Some(1));
        assert_eq!(idx.resolve(&ParentRef::Item("i9".into()), None), None);
    }
}
