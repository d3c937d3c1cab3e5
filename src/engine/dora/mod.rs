//! What follows from a scope's records: the DORA definitions (README "How spans are linked",
//! docs/metrics.md), in code. [`derive`] is a pure function of the summaries and pushes: it
//! orders them by event time and decides, one rule per module, span durations
//! ([`durations`]), when changes landed ([`landings`]), what each deployment shipped, its lead
//! times and recoveries ([`deployments`]), change stages ([`change_stages`]), the deployment
//! each incident followed and its time to restore ([`incidents`]), rework ([`rework`]) and the
//! change failures. Because it is recomputed from the whole set at every settlement, whichever
//! side of a relation arrives second makes the link, and a late fact corrects what it changes.

mod change_stages;
mod deployments;
mod durations;
#[cfg(test)]
mod fixtures;
mod incidents;
mod index;
mod landings;
mod rework;

pub use deployments::DeployInfo;
pub use incidents::Cause;
pub use index::Index;
pub use rework::ReworkReason;

use deployments::ProdDeploy;
use landings::Landings;

use super::metrics::{self, Labels};
use super::scope::{GenRef, PushFact, Summary, Tally};
use super::settings::EngineSettings;
use super::stages::Stage;
use crate::model::Time;
use chrono::TimeDelta;
use std::collections::{BTreeMap, HashMap};

/// The result label of a finished item whose delivery named no result.
const UNKNOWN: &str = "unknown";

/// Everything [`derive`] concludes about a scope.
#[derive(Debug, Default)]
pub struct Derived {
    pub deploys: HashMap<GenRef, DeployInfo>,
    /// Incident key → the deployment it followed.
    pub causes: HashMap<String, Cause>,
    /// Merged change → the first commit time, when before its creation.
    pub first_commit: HashMap<GenRef, Time>,
    /// Each merged change generation's stages ([`stages::stages`]), in order.
    pub stages: HashMap<GenRef, Vec<Stage>>,
    /// The first successful production deployment that shipped each change generation.
    pub first_deploy: HashMap<GenRef, GenRef>,
    /// Merged change key → when it landed on the default branch (its last merged generation):
    /// what sealing ([`crate::engine::seal`]) orders changes by.
    pub landing: HashMap<String, Time>,
    /// Owner item key → its metric contributions, summed per series ([`tally`]).
    pub contributions: BTreeMap<String, Vec<Tally>>,
}

fn ms(d: TimeDelta) -> i64 {
    d.num_milliseconds()
}

fn seconds(d: TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// Everything that follows from a scope's facts. A pure function of the set, derived in stages:
/// span durations, when each change or direct commit landed, what each deployment shipped and
/// recovered, which deployment each incident followed, and the change failures.
pub fn derive(summaries: &[Summary], pushes: &[PushFact], config: &EngineSettings) -> Derived {
    let idx = Index::new(summaries);
    let mut sorted: Vec<&Summary> = summaries.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut d = Deriver {
        out: Derived::default(),
        contributions: BTreeMap::new(),
        failure_labels: BTreeMap::new(),
        prod_successes: Vec::new(),
        failed_states: BTreeMap::new(),
        incident_windows: BTreeMap::new(),
        prod_deploys: Vec::new(),
        shipped_first: HashMap::new(),
        config,
    };
    d.durations(&sorted);
    let landings = Landings::of(&sorted, pushes, &idx, &mut d.out.first_commit);
    for l in &landings.landed {
        if let Some(c) = &l.change {
            let at = d.out.landing.entry(c.key.clone()).or_insert(l.at.0);
            *at = (*at).max(l.at.0);
        }
    }
    d.deployments(&sorted, &landings);
    d.stages(&sorted);
    d.incidents(&sorted, &idx);
    d.rework(&idx);
    d.finish()
}

/// A time window, `[from, to)`; `to` is `None` while it lasts.
type Window = (Time, Option<Time>);

fn within(t: Time, (from, to): Window) -> bool {
    t >= from && to.is_none_or(|to| t < to)
}

/// The state [`derive`] builds up across its stages.
struct Deriver<'c> {
    out: Derived,
    /// Owner item key → its contributions summed per series as they come (a deployment that
    /// ships 5,000 changes holds one lead-time tally, not 5,000 entries), in series order once
    /// [`Deriver::finish`] sorts them.
    contributions: BTreeMap<String, Vec<Tally>>,
    /// Production deployments that led to a failure → the labels their failure counts under.
    failure_labels: BTreeMap<String, Labels>,
    /// Successful production deployments (end, deployment, environment), for incidents to find
    /// their cause.
    prod_successes: Vec<(Time, GenRef, String)>,
    /// Environment (lower case) → its failed states.
    failed_states: BTreeMap<String, Vec<Window>>,
    /// Environment (lower case) → the windows its incidents were open.
    incident_windows: BTreeMap<String, Vec<Window>>,
    prod_deploys: Vec<ProdDeploy>,
    /// Change generation → (end, deployment) of the first successful production deployment
    /// that shipped it.
    shipped_first: HashMap<GenRef, (Time, GenRef)>,
    config: &'c EngineSettings,
}

impl Deriver<'_> {
    fn contribute(&mut self, owner: &str, name: &str, labels: &Labels, value: i64) {
        let tallies = match self.contributions.get_mut(owner) {
            Some(t) => t,
            None => self.contributions.entry(owner.to_string()).or_default(),
        };
        match tallies
            .iter_mut()
            .find(|t| t.name == name && t.labels == *labels)
        {
            Some(t) => t.add(value),
            None => {
                let mut t = Tally::empty(name, labels);
                t.add(value);
                tallies.push(t);
            }
        }
    }

    /// A production deployment that led to a failure counts once, however many followed it;
    /// every item's contributions are summed per series.
    fn finish(mut self) -> Derived {
        for (owner, labels) in std::mem::take(&mut self.failure_labels) {
            self.contribute(&owner, metrics::CHANGE_FAILURES, &labels, 1);
        }
        for (owner, mut tallies) in std::mem::take(&mut self.contributions) {
            // Series order, as `scope::tally` gives it.
            tallies.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
            self.out.contributions.insert(owner, tallies);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{deploy, incident, merged_by, push, settings};
    use super::*;
    use crate::model::attr;

    /// Every label name the rules write, and the values they take from a fixed set (results,
    /// production), are static strings: a settlement's label sets allocate only for the values
    /// that vary. Read back from JSON, they are static again.
    #[test]
    fn the_label_names_and_fixed_values_the_rules_write_take_no_allocation() {
        let items = vec![
            merged_by("c1", 10, "abc"),
            deploy("d1", "production", 20, 25, true),
            deploy("d2", "production", 30, 35, false),
            incident("i1", 36, Some(50)),
            deploy("d3", "production", 55, 60, true),
        ];
        let pushes = vec![push("main", true, 10, &[("abc", 5)])];
        let d = derive(&items, &pushes, &settings(&[]));
        let tallies: Vec<&Tally> = d.contributions.values().flatten().collect();
        let names: std::collections::BTreeSet<&str> =
            tallies.iter().map(|t| t.name.as_str()).collect();
        for name in [
            metrics::DEPLOYMENTS,
            metrics::LEAD_TIME,
            metrics::CHANGE_FAILURES,
            metrics::TIME_TO_RESTORE,
            metrics::RECOVERY_TIME,
            metrics::DEPLOYMENT_DURATION,
        ] {
            assert!(names.contains(name), "{name} derived: {names:?}");
        }
        let fixed = [attr::RESULT, attr::PRODUCTION];
        for labels in tallies.iter().map(|t| &t.labels) {
            let json = serde_json::to_string(labels).unwrap();
            let read: Labels = serde_json::from_str(&json).unwrap();
            assert_eq!(&read, labels);
            for l in [labels, &read] {
                for (k, v) in l.iter() {
                    assert!(k.is_static(), "label name {k} allocates");
                    if fixed.contains(&k.as_str()) {
                        assert!(v.is_static(), "{k}={v} allocates");
                    }
                }
            }
        }
    }
}
