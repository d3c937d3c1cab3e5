//! When each merged change and each direct commit reached the default branch, and where a
//! change's lead time starts (its branch's first commit when that is before it was opened).

use super::index::Index;
use crate::engine::scope::{GenRef, PushFact, Summary};
use crate::model::{Kind, Time, WorkResult};
use std::collections::HashMap;

/// A change that landed on the default branch, waiting to be deployed.
pub(super) struct Landed {
    /// Landing time, then an identity: the order changes are shipped in.
    pub(super) at: (Time, String),
    pub(super) change: Option<GenRef>,
    pub(super) start: Time,
}

/// When changes and direct commits reached the default branch.
pub(super) struct Landings<'a> {
    /// Commit SHA → the first default-branch push that carried it.
    pub(super) landed_at: HashMap<&'a str, Time>,
    /// Merge commit SHA → when its change landed (and which).
    pub(super) merged_gen_of_sha: HashMap<&'a str, (Time, String)>,
    /// Landed changes and direct commits, in landing order.
    pub(super) landed: Vec<Landed>,
}

impl<'a> Landings<'a> {
    pub(super) fn of(
        sorted: &[&'a Summary],
        pushes: &'a [PushFact],
        idx: &Index<'_>,
        first_commit: &mut HashMap<GenRef, Time>,
    ) -> Self {
        let mut pushes_sorted: Vec<&PushFact> = pushes.iter().collect();
        pushes_sorted.sort_by(|a, b| (a.time, &a.after).cmp(&(b.time, &b.after)));
        let mut l = Landings {
            landed_at: HashMap::new(),
            merged_gen_of_sha: HashMap::new(),
            landed: Vec::new(),
        };
        // Each commit's first landing on the default branch.
        for p in pushes_sorted.iter().filter(|p| p.to_default_branch) {
            for c in &p.commits {
                l.landed_at.entry(c.sha.as_str()).or_insert(p.time);
            }
            l.landed_at.entry(p.after.as_str()).or_insert(p.time);
        }
        l.merged_changes(sorted, &branch_first_commits(pushes), first_commit);
        l.direct_commits(&pushes_sorted, idx);
        l.landed.sort_by(|a, b| a.at.cmp(&b.at));
        l
    }

    /// Merged changes land when their merge commit does (else when they merged); their lead
    /// time starts at the first commit of their branch when that is before they were opened.
    fn merged_changes(
        &mut self,
        sorted: &[&'a Summary],
        branch_first: &HashMap<&str, Time>,
        first_commit: &mut HashMap<GenRef, Time>,
    ) {
        for s in sorted.iter().filter(|s| s.kind == Kind::Change) {
            for (i, g) in s.gens.iter().enumerate() {
                if g.result != Some(WorkResult::Merged) {
                    continue;
                }
                let (Some(start), Some(end)) = (g.start, g.end) else {
                    continue;
                };
                let gr = GenRef {
                    key: s.key.clone(),
                    gen: i as u32,
                };
                let first = s
                    .head_branch
                    .as_deref()
                    .and_then(|b| branch_first.get(b))
                    .copied();
                let start_lt = first.map_or(start, |f| f.min(start));
                if start_lt < start {
                    first_commit.insert(gr.clone(), start_lt);
                }
                let at_time = g
                    .merge_sha
                    .as_deref()
                    .and_then(|m| self.landed_at.get(m))
                    .copied()
                    .unwrap_or(end);
                let at = (at_time, s.key.clone());
                if let Some(m) = &g.merge_sha {
                    self.merged_gen_of_sha.insert(m.as_str(), at.clone());
                }
                self.landed.push(Landed {
                    at,
                    change: Some(gr),
                    start: start_lt,
                });
            }
        }
    }

    /// Direct commits: default-branch pushes that no change brought.
    fn direct_commits(&mut self, pushes_sorted: &[&'a PushFact], idx: &Index<'_>) {
        for p in pushes_sorted.iter().filter(|p| p.to_default_branch) {
            let from_change = idx.by_sha.contains_key(p.after.as_str())
                || p.commits
                    .iter()
                    .any(|c| c.merges || idx.by_sha.contains_key(c.sha.as_str()));
            if from_change {
                continue;
            }
            for c in &p.commits {
                if self.landed_at.get(c.sha.as_str()) != Some(&p.time) {
                    continue; // landed by an earlier push
                }
                self.landed.push(Landed {
                    at: (p.time, format!("commit-{}", c.sha)),
                    change: None,
                    start: c.time,
                });
            }
        }
    }

    /// When the deployed commit landed: its change's landing, else its own, else `fallback`
    /// (a commit never seen landing ships what landed before the deployment started).
    pub(super) fn upper_bound(&self, head_sha: Option<&str>, fallback: Time) -> (Time, String) {
        let t = head_sha
            .and_then(|sha| {
                self.merged_gen_of_sha
                    .get(sha)
                    .map(|a| a.0)
                    .or_else(|| self.landed_at.get(sha).copied())
            })
            .unwrap_or(fallback);
        (t, char::MAX.to_string())
    }
}

/// The first commit pushed to each feature branch.
fn branch_first_commits(pushes: &[PushFact]) -> HashMap<&str, Time> {
    let mut branch_first: HashMap<&str, Time> = HashMap::new();
    for p in pushes.iter().filter(|p| !p.to_default_branch) {
        if let Some(first) = p.commits.iter().map(|c| c.time).min() {
            let e = branch_first.entry(p.branch.as_str()).or_insert(first);
            *e = (*e).min(first);
        }
    }
    branch_first
}

/// When changes and direct commits land, alone. Times in minutes.
#[cfg(test)]
mod tests {
    use super::super::fixtures::{at, change, merged_by, push};
    use super::*;

    /// (identity, landing minute, lead-time start minute) of every landed change or commit,
    /// and the first commits recorded.
    fn landed(items: &[Summary], pushes: &[PushFact]) -> (Vec<(String, Time, Time)>, usize) {
        let idx = Index::new(items);
        let sorted: Vec<&Summary> = items.iter().collect();
        let mut first_commit = HashMap::new();
        let l = Landings::of(&sorted, pushes, &idx, &mut first_commit);
        let out = l
            .landed
            .iter()
            .map(|x| (x.at.1.clone(), x.at.0, x.start))
            .collect();
        (out, first_commit.len())
    }

    #[test]
    fn a_change_lands_when_its_merge_commit_reaches_the_default_branch() {
        let items = [merged_by("c1", 10, "m1"), change("c2", 20, "B", &[])];
        let pushes = [push("main", true, 25, &[("m1", 10)])];
        let (got, _) = landed(&items, &pushes);
        // c1 when pushed (25), c2 (never seen pushed) when merged; both from their opening.
        assert_eq!(
            got,
            [
                ("c2".to_string(), at(20), at(-40)),
                ("c1".to_string(), at(25), at(-50)),
            ]
        );
    }

    #[test]
    fn a_default_branch_commit_no_change_brought_is_a_direct_commit() {
        let items = [merged_by("c1", 10, "m1")];
        let pushes = [
            push("main", true, 12, &[("m1", 10)]),
            push("main", true, 30, &[("x1", 5), ("x2", 6)]),
            // Pushed again later: it landed with the first push.
            push("release", true, 40, &[("x1", 5)]),
            // Not the default branch: nothing lands.
            push("feat", false, 50, &[("y1", 45)]),
        ];
        let (got, _) = landed(&items, &pushes);
        assert_eq!(
            got,
            [
                ("c1".to_string(), at(12), at(-50)),
                ("commit-x1".to_string(), at(30), at(5)),
                ("commit-x2".to_string(), at(30), at(6)),
            ]
        );
    }

    #[test]
    fn lead_time_starts_at_the_first_commit_of_the_branch_when_earlier() {
        let mut c = change("c1", 10, "A", &[]);
        c.head_branch = Some("feat".into());
        let mut later = change("c2", 10, "B", &[]);
        later.head_branch = Some("late".into());
        let pushes = [
            push("feat", false, -90, &[("a", -120), ("b", -100)]),
            push("late", false, 0, &[("c", -10)]),
        ];
        let (got, firsts) = landed(&[c, later], &pushes);
        assert_eq!(
            got,
            [
                ("c1".to_string(), at(10), at(-120)),
                ("c2".to_string(), at(10), at(-50)),
            ]
        );
        assert_eq!(firsts, 1, "only the commit before the opening is recorded");
    }
}
