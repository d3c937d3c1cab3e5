//! The stage rule ([`crate::engine::stages`]) applied to a scope's merged changes: coding,
//! pickup and review counted for the change, deploy for the deployment that first shipped it.

use super::Deriver;
use crate::engine::metrics;
use crate::engine::scope::{GenRef, Summary};
use crate::engine::stages::{self, ChangeTimes, StageName};
use crate::model::{attr, Kind, WorkResult};

impl Deriver<'_> {
    /// Each merged change generation's stages ([`stages`]): coding, pickup and review counted
    /// for the change, deploy for the deployment that first shipped it (so that it moves with
    /// the shipped set), all with the change's labels.
    pub(super) fn stages(&mut self, sorted: &[&Summary]) {
        for s in sorted.iter().filter(|s| s.kind == Kind::Change) {
            for (i, g) in s.gens.iter().enumerate() {
                if g.result != Some(WorkResult::Merged) {
                    continue;
                }
                let (Some(opened), Some(merged)) = (g.start, g.end) else {
                    continue;
                };
                let me = GenRef {
                    key: s.key.clone(),
                    gen: i as u32,
                };
                let deploy = self.shipped_first.get(&me).cloned();
                let times = ChangeTimes {
                    opened,
                    merged,
                    first_commit: self.out.first_commit.get(&me).copied(),
                    steps: &g.steps,
                    deployed: deploy.as_ref().map(|(end, _)| *end),
                };
                let found = stages::stages(&times);
                for stage in &found {
                    let mut labels = g.labels.with_room(1);
                    labels.insert(attr::CHANGE_STAGE.into(), stage.name.as_str().into());
                    let owner = match (&deploy, stage.name) {
                        (Some((_, d)), StageName::Deploy) => d.key.clone(),
                        _ => s.key.clone(),
                    };
                    self.contribute(&owner, metrics::STAGE_DURATION, &labels, stage.millis());
                }
                if let Some((_, d)) = deploy {
                    self.out.first_deploy.insert(me.clone(), d);
                }
                if !found.is_empty() {
                    self.out.stages.insert(me, found);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::derive;
    use super::super::fixtures::{at, change, deploy, gen, summary};
    use crate::engine::metrics;
    use crate::engine::scope::GenRef;
    use crate::engine::settings::EngineSettings;
    use crate::model::{attr, Kind, Time, WorkResult};

    #[test]
    fn stages_are_counted_for_the_change_and_the_deployment_that_first_shipped_it() {
        use crate::model::{ChangeStep, ReviewState, ReviewerKind};
        let mut c = change("c1", 60, "Add the cache", &[]);
        c.gens[0].steps = vec![ChangeStep::review(
            at(20),
            ReviewState::Approved,
            ReviewerKind::Human,
        )];
        let items = vec![
            c,
            deploy("s1", "staging", 65, 68, true),
            deploy("d1", "production", 70, 90, true),
            deploy("d2", "production", 100, 120, true),
        ];
        let config = EngineSettings::from(crate::config::Config::from_pairs(&[]).unwrap());
        let d = derive(&items, &[], &config);
        let me = GenRef {
            key: "c1".into(),
            gen: 0,
        };
        let got: Vec<(&str, Time, Time)> = d.stages[&me]
            .iter()
            .map(|s| (s.name.as_str(), s.start, s.end))
            .collect();
        assert_eq!(
            got,
            [
                ("pickup", at(0), at(20)),
                ("review", at(20), at(60)),
                ("deploy", at(60), at(90)),
            ]
        );
        assert_eq!(d.first_deploy[&me].key, "d1", "staging does not count");
        let stage_tallies = |owner: &str| -> Vec<(String, i64, i64)> {
            d.contributions
                .get(owner)
                .into_iter()
                .flatten()
                .filter(|t| t.name == metrics::STAGE_DURATION)
                .map(|t| (t.labels[attr::CHANGE_STAGE].to_string(), t.count, t.sum_ms))
                .collect()
        };
        assert_eq!(
            stage_tallies("c1"),
            [
                ("pickup".to_string(), 1, 20 * 60_000),
                ("review".to_string(), 1, 40 * 60_000)
            ]
        );
        assert_eq!(
            stage_tallies("d1"),
            [("deploy".to_string(), 1, 30 * 60_000)]
        );
        assert!(stage_tallies("d2").is_empty() && stage_tallies("s1").is_empty());
    }

    #[test]
    fn a_reopened_change_has_the_stages_of_its_merged_generation() {
        use crate::model::{ChangeStep, ReviewState, ReviewerKind};
        let review = |m| ChangeStep::review(at(m), ReviewState::Commented, ReviewerKind::Human);
        // Opened at 0, closed unmerged at 30 (reviewed at 20), reopened at 60, reviewed at 70,
        // merged at 100.
        let mut first = gen(0, Some(30));
        first.result = Some(WorkResult::Closed);
        first.steps = vec![review(20)];
        let mut second = gen(60, Some(100));
        second.result = Some(WorkResult::Merged);
        second.steps = vec![review(70)];
        let mut c = summary("c1", Kind::Change, first);
        c.gens.push(second);
        let config = EngineSettings::from(crate::config::Config::from_pairs(&[]).unwrap());
        let d = derive(&[c], &[], &config);
        let of = |gen| {
            d.stages
                .get(&GenRef {
                    key: "c1".into(),
                    gen,
                })
                .map(|v| {
                    v.iter()
                        .map(|s| (s.name.as_str(), s.start, s.end))
                        .collect::<Vec<_>>()
                })
        };
        assert_eq!(of(0), None, "a generation closed unmerged has no stages");
        assert_eq!(
            of(1),
            Some(vec![
                ("pickup", at(60), at(70)),
                ("review", at(70), at(100))
            ])
        );
    }
}
