//! Summaries for the rules' table-driven tests: one scope, one repository, times in minutes
//! from 2024-06-03 10:00 UTC.

use crate::engine::scope::{base_labels, GenSummary, Summary};
use crate::model::{Kind, Repo, RepoTraits, Time, WorkResult};
use chrono::TimeDelta;

pub fn at(min: i64) -> Time {
    "2024-06-03T10:00:00Z".parse::<Time>().unwrap() + TimeDelta::minutes(min)
}

pub fn gen(start: i64, end: Option<i64>) -> GenSummary {
    GenSummary {
        start: Some(at(start)),
        end: end.map(at),
        result: None,
        error: false,
        merge_sha: None,
        head_sha: None,
        environment: None,
        labels: base_labels("github", Some(&Repo::new("o/r")), &RepoTraits::default()),
        pipeline: None,
        title: None,
        change_labels: Vec::new(),
        steps: Vec::new(),
    }
}

pub fn summary(key: &str, kind: Kind, g: GenSummary) -> Summary {
    Summary {
        key: key.into(),
        source: "github".into(),
        kind,
        gens: vec![g],
        parents: Vec::new(),
        follows: Vec::new(),
        head_shas: Vec::new(),
        head_branch: None,
        touched: at(0),
        exported: Vec::new(),
        deploy_staged: Vec::new(),
        ledger: None,
        tally: None,
        sealed_trace: None,
    }
}

/// A deployment from `start` to `end`; `ok` false: it failed.
pub fn deploy(key: &str, env: &str, start: i64, end: i64, ok: bool) -> Summary {
    let mut g = gen(start, Some(end));
    g.environment = Some(env.into());
    g.result = Some(if ok {
        WorkResult::Success
    } else {
        WorkResult::Failure
    });
    g.error = !ok;
    summary(key, Kind::Deployment, g)
}

/// A change merged at `merged`, with its title and labels.
pub fn change(key: &str, merged: i64, title: &str, labels: &[&str]) -> Summary {
    let mut g = gen(merged - 60, Some(merged));
    g.result = Some(WorkResult::Merged);
    g.title = Some(title.into());
    g.change_labels = labels.iter().map(|l| l.to_string()).collect();
    summary(key, Kind::Change, g)
}

pub fn incident(key: &str, start: i64, end: Option<i64>) -> Summary {
    let mut g = gen(start, end);
    if end.is_some() {
        g.result = Some(WorkResult::Resolved);
    }
    summary(key, Kind::Incident, g)
}

/// The engine settings of `pairs` over the defaults.
pub fn settings(pairs: &[(&str, &str)]) -> crate::engine::EngineSettings {
    crate::engine::EngineSettings::from(crate::config::Config::from_pairs(pairs).unwrap())
}

/// What `owner` contributes to series `name`, summed over its label sets: (count, sum in ms).
pub fn observed(d: &super::Derived, owner: &str, name: &str) -> (i64, i64) {
    d.contributions
        .get(owner)
        .into_iter()
        .flatten()
        .filter(|t| t.name == name)
        .fold((0, 0), |(c, s), t| (c + t.count, s + t.sum_ms))
}

/// A push of `commits` (sha, minute) to `branch` at minute `time`.
pub fn push(
    branch: &str,
    to_default_branch: bool,
    time: i64,
    commits: &[(&str, i64)],
) -> crate::engine::scope::PushFact {
    use crate::engine::scope::{PushCommit, PushFact};
    PushFact {
        branch: branch.into(),
        to_default_branch,
        after: commits.last().map_or("0", |c| c.0).into(),
        time: at(time),
        commits: commits
            .iter()
            .map(|(sha, t)| PushCommit {
                sha: sha.to_string(),
                time: at(*t),
                merges: false,
            })
            .collect(),
        deliveries: Vec::new(),
        touched: None,
    }
}

/// [`change`], merged by commit `merge_sha`.
pub fn merged_by(key: &str, merged: i64, merge_sha: &str) -> Summary {
    let mut c = change(key, merged, "A change", &[]);
    c.gens[0].merge_sha = Some(merge_sha.into());
    c
}
