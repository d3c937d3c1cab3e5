//! Incidents: the deployment each followed (its cause, which makes that deployment a change
//! failure) and its time to restore.

use super::deployments::change_failure_labels;
use super::index::Index;
use super::{ms, Deriver};
use crate::engine::metrics;
use crate::engine::scope::{GenRef, Summary};
use crate::model::{attr, Kind, ParentRef};
use chrono::TimeDelta;

/// What follows for one incident.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    pub deployment: GenRef,
    pub environment: String,
}

impl Deriver<'_> {
    /// Incidents: each follows the latest successful production deployment before it began
    /// (within `VALUESTREAM_INCIDENT_WINDOW_SECS`) unless it names its parent; its time to
    /// restore is labelled with that deployment's environment.
    pub(super) fn incidents(&mut self, sorted: &[&Summary], idx: &Index<'_>) {
        let window = TimeDelta::seconds(self.config.incident_window_secs);
        for s in sorted.iter().filter(|s| s.kind == Kind::Incident) {
            let Some(g0) = s.gens.first() else { continue };
            let Some(start) = g0.start else { continue };
            let named = s.parents.iter().any(|p| match p {
                ParentRef::Item(_) => true,
                p => idx.resolve(p, Some(start)).is_some(),
            });
            let cause = if named {
                None
            } else {
                self.prod_successes
                    .iter()
                    .rev()
                    .find(|(end, _, _)| *end <= start && *end >= start - window)
                    .cloned()
            };
            if let Some((_, dep, env)) = cause {
                if let Some(ds) = idx.items.get(dep.key.as_str()) {
                    if let Some(dg) = ds.gens.get(dep.gen as usize) {
                        self.failure_labels
                            .entry(dep.key.clone())
                            .or_insert_with(|| change_failure_labels(ds, dg, &env));
                    }
                }
                let last_end = s.gens.last().and_then(|g| g.end);
                self.incident_windows
                    .entry(env.to_ascii_lowercase())
                    .or_default()
                    .push((start, last_end));
                self.out.causes.insert(
                    s.key.clone(),
                    Cause {
                        deployment: dep,
                        environment: env,
                    },
                );
            }
            for g in s.gens.iter() {
                let Some(end) = g.end else { continue };
                let mut labels = g.labels.with_room(1);
                if let Some(c) = self.out.causes.get(&s.key) {
                    labels.insert(
                        attr::DEPLOYMENT_ENVIRONMENT_NAME.into(),
                        c.environment.as_str().into(),
                    );
                }
                let restore = ms(end - g.start.unwrap_or(end));
                self.contribute(&s.key, metrics::TIME_TO_RESTORE, &labels, restore);
            }
        }
    }
}

/// The incident rules alone: which deployment an incident followed (and so made a change
/// failure), and its time to restore. Times in minutes.
#[cfg(test)]
mod tests {
    use super::super::derive;
    use super::super::fixtures::{deploy, incident, observed, settings};
    use crate::engine::metrics;
    use crate::engine::scope::Summary;
    use crate::model::{attr, ParentRef};

    struct Case {
        name: &'static str,
        items: Vec<Summary>,
        config: Vec<(&'static str, &'static str)>,
        /// The deployment the incident `i1` followed.
        cause: Option<&'static str>,
        /// Deployments counted as change failures.
        failures: Vec<&'static str>,
    }

    fn cases() -> Vec<Case> {
        let prod = "production";
        vec![
            Case {
                name: "the latest successful production deployment before it began",
                items: vec![
                    deploy("d1", prod, 0, 5, true),
                    deploy("d2", prod, 10, 20, true),
                    incident("i1", 30, Some(90)),
                    deploy("d3", prod, 40, 50, true),
                ],
                config: vec![],
                cause: Some("d2"),
                failures: vec!["d2"],
            },
            Case {
                name: "a deployment that ended after it began is not its cause",
                items: vec![
                    deploy("d1", prod, 0, 5, true),
                    deploy("d2", prod, 25, 35, true),
                    incident("i1", 30, Some(90)),
                ],
                config: vec![],
                cause: Some("d1"),
                failures: vec!["d1"],
            },
            Case {
                name: "outside the incident window: no cause",
                items: vec![
                    deploy("d1", prod, 0, 5, true),
                    incident("i1", 5 + 2 * 60 + 1, Some(200)),
                ],
                config: vec![("VALUESTREAM_INCIDENT_WINDOW_HOURS", "2")],
                cause: None,
                failures: vec![],
            },
            Case {
                name: "failed and staging deployments are not causes",
                items: vec![
                    deploy("d1", prod, 0, 5, true),
                    deploy("s1", "staging", 10, 15, true),
                    deploy("d2", prod, 16, 20, false),
                    incident("i1", 30, None),
                ],
                config: vec![],
                cause: Some("d1"),
                // d2 failed on its own: a change failure without the incident.
                failures: vec!["d1", "d2"],
            },
            Case {
                name: "an incident that names its parent has no derived cause",
                items: vec![deploy("d1", prod, 0, 5, true), {
                    let mut i = incident("i1", 30, Some(40));
                    i.parents = vec![ParentRef::Item("elsewhere".into())];
                    i
                }],
                config: vec![],
                cause: None,
                failures: vec![],
            },
            Case {
                name: "two incidents after one deployment make one change failure",
                items: vec![
                    deploy("d1", prod, 0, 5, true),
                    incident("i1", 30, Some(40)),
                    incident("i2", 50, Some(60)),
                ],
                config: vec![],
                cause: Some("d1"),
                failures: vec!["d1"],
            },
        ]
    }

    #[test]
    fn incident_rules_known_answers() {
        for c in cases() {
            let d = derive(&c.items, &[], &settings(&c.config));
            let cause = d.causes.get("i1").map(|x| x.deployment.key.as_str());
            assert_eq!(cause, c.cause, "{}", c.name);
            let failures: Vec<&str> = c
                .items
                .iter()
                .map(|s| s.key.as_str())
                .filter(|k| observed(&d, k, metrics::CHANGE_FAILURES).0 > 0)
                .collect();
            assert_eq!(failures, c.failures, "{}", c.name);
            for k in &c.failures {
                assert_eq!(observed(&d, k, metrics::CHANGE_FAILURES).0, 1, "{}", c.name);
            }
        }
    }

    #[test]
    fn time_to_restore_runs_from_start_to_resolution_in_the_causes_environment() {
        let items = vec![
            deploy("d1", "prod", 0, 5, true),
            incident("i1", 30, Some(90)),
            incident("i2", 100, None),
        ];
        let d = derive(&items, &[], &settings(&[]));
        assert_eq!(
            observed(&d, "i1", metrics::TIME_TO_RESTORE),
            (1, 60 * 60_000)
        );
        assert_eq!(
            observed(&d, "i2", metrics::TIME_TO_RESTORE),
            (0, 0),
            "still open"
        );
        let restore = &d.contributions["i1"]
            .iter()
            .find(|t| t.name == metrics::TIME_TO_RESTORE)
            .unwrap()
            .labels;
        assert_eq!(restore[attr::DEPLOYMENT_ENVIRONMENT_NAME], "prod");
    }
}
