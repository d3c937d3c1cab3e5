//! The rework rule (docs/metrics.md "Deployment rework rate"): which production deployments were
//! unplanned, and why.

use super::index::Index;
use super::{within, Deriver, Window};
use crate::engine::metrics;
use crate::engine::scope::GenRef;
use crate::model::attr;
use std::collections::BTreeMap;

/// Why a production deployment is *rework* (unplanned), the first that holds, in this order
/// (docs/metrics.md "Deployment rework rate"):
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReworkReason {
    /// It started while its repository and environment were failed: after a failed deployment,
    /// before the next successful one finished.
    FailedState,
    /// It started while an incident that followed a production deployment of its repository
    /// and environment was open.
    Incident,
    /// It shipped a change whose title or a label matches `VALUESTREAM_REWORK_PATTERN` (a
    /// revert, a hotfix).
    FixChange,
}

impl ReworkReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReworkReason::FailedState => "failed_state",
            ReworkReason::Incident => "incident",
            ReworkReason::FixChange => "fix_change",
        }
    }
}

impl Deriver<'_> {
    /// The rework rule, once failed states and incidents are known: each finished production
    /// deployment is rework for the first [`ReworkReason`] that holds, counted in
    /// `valuestream.deployment.rework` with the labels of its `valuestream.deployments` count
    /// and the reason.
    pub(super) fn rework(&mut self, idx: &Index<'_>) {
        let config = self.config;
        let pattern = &config.rework_pattern;
        let fixes = |c: &GenRef| {
            idx.items
                .get(c.key.as_str())
                .and_then(|s| s.gens.get(c.gen as usize))
                .is_some_and(|g| {
                    g.title.as_deref().is_some_and(|t| pattern.is_match(t))
                        || g.change_labels.iter().any(|l| pattern.is_match(l))
                })
        };
        for p in std::mem::take(&mut self.prod_deploys) {
            let open_in = |windows: &BTreeMap<String, Vec<Window>>| {
                windows
                    .get(&p.environment)
                    .is_some_and(|ws| ws.iter().any(|w| within(p.start, *w)))
            };
            let reason = if open_in(&self.failed_states) {
                Some(ReworkReason::FailedState)
            } else if open_in(&self.incident_windows) {
                Some(ReworkReason::Incident)
            } else if self
                .out
                .deploys
                .get(&p.me)
                .is_some_and(|i| i.shipped.iter().any(fixes))
            {
                Some(ReworkReason::FixChange)
            } else {
                None
            };
            let Some(reason) = reason else { continue };
            if let Some(info) = self.out.deploys.get_mut(&p.me) {
                info.rework = Some(reason);
            }
            let mut labels = p.counted;
            labels.insert(
                attr::DEPLOYMENT_REWORK_REASON.into(),
                reason.as_str().into(),
            );
            self.contribute(&p.me.key, metrics::REWORK, &labels, 1);
        }
    }
}

/// The rework rule's known answers (docs/metrics.md "Deployment rework rate"): deployments to
/// `production` (and `staging`), times in minutes.
#[cfg(test)]
mod tests {
    use super::super::derive;
    use super::super::fixtures::{change, deploy, incident};
    use super::*;
    use crate::engine::metrics::Tally;
    use crate::engine::scope::Summary;
    use crate::engine::settings::EngineSettings;

    fn reasons(
        summaries: &[Summary],
        pairs: &[(&str, &str)],
    ) -> BTreeMap<String, Option<&'static str>> {
        let config = EngineSettings::from(crate::config::Config::from_pairs(pairs).unwrap());
        let d = derive(summaries, &[], &config);
        let mut out = BTreeMap::new();
        for (gr, info) in &d.deploys {
            let reason = info.rework.map(ReworkReason::as_str);
            // The counter holds exactly the rework deployments, once, under their reason.
            let counted: Vec<&Tally> = d
                .contributions
                .get(&gr.key)
                .into_iter()
                .flatten()
                .filter(|t| t.name == metrics::REWORK)
                .collect();
            match reason {
                Some(r) => {
                    assert_eq!(counted.len(), 1, "{gr:?}");
                    assert_eq!(counted[0].count, 1);
                    assert_eq!(counted[0].labels[attr::DEPLOYMENT_REWORK_REASON], r);
                    assert_eq!(counted[0].labels[attr::PRODUCTION], "true");
                }
                None => assert!(counted.is_empty(), "{gr:?}: {counted:?}"),
            }
            out.insert(gr.key.clone(), reason);
        }
        out
    }

    struct Case {
        name: &'static str,
        items: Vec<Summary>,
        config: Vec<(&'static str, &'static str)>,
        /// Deployment key → its rework reason.
        want: Vec<(&'static str, Option<&'static str>)>,
    }

    fn cases() -> Vec<Case> {
        let fs = Some("failed_state");
        let inc = Some("incident");
        let fix = Some("fix_change");
        vec![
            Case {
                name: "a planned deployment is not rework",
                items: vec![deploy("d1", "production", 0, 5, true)],
                config: vec![],
                want: vec![("d1", None)],
            },
            Case {
                name: "failed deploy, then the fixing deploy: the fixing one is rework",
                items: vec![
                    deploy("d1", "production", 0, 5, false),
                    deploy("d2", "production", 10, 20, true),
                    deploy("d3", "production", 30, 35, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", fs), ("d3", None)],
            },
            Case {
                name: "every deployment until the recovery is rework, failed ones too",
                items: vec![
                    deploy("d1", "production", 0, 5, false),
                    deploy("d2", "production", 6, 8, false),
                    deploy("d3", "production", 10, 20, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", fs), ("d3", fs)],
            },
            Case {
                name: "a deployment started before the failure is not rework",
                items: vec![
                    deploy("d1", "production", 0, 5, false),
                    deploy("d2", "production", 2, 20, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", None)],
            },
            Case {
                name: "a deployment started during a failed state that another recovered is rework",
                items: vec![
                    deploy("d1", "production", 0, 5, false),
                    deploy("d2", "production", 8, 30, true),
                    deploy("d3", "production", 6, 10, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", fs), ("d3", fs)],
            },
            Case {
                name: "staging failures and deployments are not production rework",
                items: vec![
                    deploy("s1", "staging", 0, 5, false),
                    deploy("s2", "staging", 10, 20, true),
                    deploy("d1", "production", 10, 20, true),
                ],
                config: vec![],
                want: vec![("s1", None), ("s2", None), ("d1", None)],
            },
            Case {
                name: "an incident, then a hotfix deploy while it is open",
                items: vec![
                    deploy("d1", "production", 0, 5, true),
                    incident("i1", 10, Some(60)),
                    deploy("d2", "production", 30, 40, true),
                    deploy("d3", "production", 70, 80, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", inc), ("d3", None)],
            },
            Case {
                name: "an incident still open makes every later deployment rework",
                items: vec![
                    deploy("d1", "production", 0, 5, true),
                    incident("i1", 10, None),
                    deploy("d2", "production", 300, 310, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", inc)],
            },
            Case {
                name: "an incident that followed no deployment makes nothing rework",
                items: vec![
                    incident("i1", 0, Some(60)),
                    deploy("d1", "production", 30, 40, true),
                ],
                config: vec![],
                want: vec![("d1", None)],
            },
            Case {
                name: "a revert, a hotfix title and a hotfix label are fix changes",
                items: vec![
                    change("c1", -30, "Revert \"Add the cache\"", &[]),
                    deploy("d1", "production", 0, 5, true),
                    change("c2", 10, "HOTFIX: null check", &[]),
                    deploy("d2", "production", 20, 25, true),
                    change("c3", 30, "Null check", &["bug", "hotfix"]),
                    deploy("d3", "production", 40, 45, true),
                    change("c4", 50, "Prevent reversed lists; hotfixes later", &[]),
                    deploy("d4", "production", 60, 65, true),
                ],
                config: vec![],
                want: vec![("d1", fix), ("d2", fix), ("d3", fix), ("d4", None)],
            },
            Case {
                name: "a failed state wins over a fix change",
                items: vec![
                    deploy("d1", "production", 0, 5, false),
                    change("c1", 6, "Revert \"Add the cache\"", &[]),
                    deploy("d2", "production", 10, 20, true),
                ],
                config: vec![],
                want: vec![("d1", None), ("d2", fs)],
            },
            Case {
                name: "the pattern is configurable",
                items: vec![
                    change("c1", -30, "Rollback the cache", &[]),
                    deploy("d1", "production", 0, 5, true),
                    change("c2", 10, "Hotfix the cache", &[]),
                    deploy("d2", "production", 20, 25, true),
                ],
                config: vec![("VALUESTREAM_REWORK_PATTERN", "^rollback")],
                want: vec![("d1", fix), ("d2", None)],
            },
        ]
    }

    #[test]
    fn rework_known_answers() {
        for c in cases() {
            let got = reasons(&c.items, &c.config);
            let want: BTreeMap<String, Option<&str>> =
                c.want.iter().map(|(k, r)| (k.to_string(), *r)).collect();
            assert_eq!(got, want, "{}", c.name);
        }
    }

    #[test]
    fn rework_is_the_same_whatever_the_order_of_the_summaries() {
        for c in cases() {
            let mut items = c.items.clone();
            let want = reasons(&items, &c.config);
            items.reverse();
            assert_eq!(reasons(&items, &c.config), want, "{}", c.name);
        }
    }
}
