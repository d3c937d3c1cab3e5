//! Deployments, per environment in finishing order: their count, what each shipped and the
//! lead times of it, recovery from a failing streak, and the failed states rework reads.

use super::landings::{Landed, Landings};
use super::rework::ReworkReason;
use super::{ms, seconds, Deriver, Window, UNKNOWN};
use crate::engine::metrics::{self, Labels};
use crate::engine::scope::{GenRef, GenSummary, Summary};
use crate::model::{attr, Kind, Time, WorkResult};
use std::collections::BTreeMap;

/// What follows for one finished deployment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeployInfo {
    pub production: bool,
    pub success: bool,
    /// The changes it shipped (merged changes; direct commits count but have no span).
    pub shipped: Vec<GenRef>,
    pub changes: i64,
    pub recovery_s: Option<f64>,
    /// Why a production deployment is rework; `None`: planned (or not in production).
    pub rework: Option<ReworkReason>,
    /// What the previous successful deployment of its environment shipped up to: it shipped
    /// what landed after this (`None`: everything, its environment's first).
    pub after: Option<Time>,
    /// What it shipped up to: the bound the next deployment of its environment ships after,
    /// when it succeeded.
    pub upper: Option<Time>,
}

/// A finished deployment generation, in its environment's timeline.
struct Dep<'a> {
    s: &'a Summary,
    gen: u32,
    g: &'a GenSummary,
    end: Time,
}

/// An environment's timeline as its deployments are walked in finishing order.
#[derive(Default)]
struct EnvTimeline {
    /// What the last successful deployment shipped up to.
    shipped_bound: Option<(Time, String)>,
    /// When the environment started failing (the first failed deployment since a success).
    failing_since: Option<Time>,
    /// The failed states so far: from the first failed deployment to the end of the successful
    /// one that recovered (`None`: not recovered).
    failed: Vec<Window>,
}

/// A finished production deployment, waiting for the rework rule.
pub(super) struct ProdDeploy {
    pub(super) me: GenRef,
    pub(super) environment: String,
    pub(super) start: Time,
    /// The labels its count carries in `valuestream.deployments`.
    pub(super) counted: Labels,
}

impl Deriver<'_> {
    /// Deployments, per environment, in finishing order.
    pub(super) fn deployments(&mut self, sorted: &[&Summary], landings: &Landings<'_>) {
        let mut by_env: BTreeMap<String, Vec<Dep>> = BTreeMap::new();
        for s in sorted.iter().filter(|s| s.kind == Kind::Deployment) {
            for (i, g) in s.gens.iter().enumerate() {
                if let Some(end) = g.end {
                    let env = g.environment.clone().unwrap_or_else(|| "unknown".into());
                    by_env
                        .entry(env.to_ascii_lowercase())
                        .or_default()
                        .push(Dep {
                            s,
                            gen: i as u32,
                            g,
                            end,
                        });
                }
            }
        }
        for (env, deps) in by_env.iter_mut() {
            deps.sort_by(|a, b| (a.end, &a.s.key, a.gen).cmp(&(b.end, &b.s.key, b.gen)));
            let mut timeline = EnvTimeline::default();
            for d in deps.iter() {
                self.deployment(d, &mut timeline, landings);
            }
            if let Some(since) = timeline.failing_since {
                timeline.failed.push((since, None));
            }
            self.failed_states.insert(env.clone(), timeline.failed);
        }
        self.prod_successes.sort();
    }

    /// One finished deployment: its count, the lead times of what it shipped, its recovery
    /// time when it ends a failing streak, and whether it failed in production.
    fn deployment(&mut self, d: &Dep<'_>, timeline: &mut EnvTimeline, landings: &Landings<'_>) {
        let g = d.g;
        let environment = g.environment.as_deref().unwrap_or(UNKNOWN);
        let production = self.config.is_production(environment);
        let success = !g.error && g.result.is_none_or(|r| r == WorkResult::Success);
        let upper = landings.upper_bound(g.head_sha.as_deref(), g.start.unwrap_or(d.end));
        let shipped = shipped_set(landings, timeline.shipped_bound.as_ref(), &upper);
        let labels = deployment_labels(g, environment, production);
        let mut counted = labels.with_room(1);
        counted.insert(
            attr::RESULT.into(),
            g.result
                .map_or_else(|| UNKNOWN.into(), |r| r.as_str().into()),
        );
        let me = d.me();
        self.contribute(&me.key, metrics::DEPLOYMENTS, &counted, 1);
        if production {
            self.prod_deploys.push(ProdDeploy {
                me: me.clone(),
                environment: environment.to_ascii_lowercase(),
                start: g.start.unwrap_or(d.end),
                counted,
            });
        }
        if success && production {
            self.lead_times(d, shipped, &labels);
        }
        let mut info = DeployInfo {
            production,
            success,
            shipped: shipped.iter().filter_map(|l| l.change.clone()).collect(),
            changes: shipped.len() as i64,
            recovery_s: None,
            rework: None,
            after: timeline.shipped_bound.as_ref().map(|b| b.0),
            upper: Some(upper.0),
        };
        if success {
            info.recovery_s = self.recovery(d, timeline, &labels);
            timeline.shipped_bound = Some(upper);
            if production {
                self.prod_successes
                    .push((d.end, me.clone(), environment.to_string()));
            }
        } else if g.error {
            timeline.failing_since = timeline.failing_since.or(Some(d.end));
            if production {
                self.failure_labels
                    .insert(me.key.clone(), change_failure_labels(d.s, g, environment));
            }
        }
        self.out.deploys.insert(me, info);
    }

    /// Lead time: one observation per change (or direct commit) a successful production
    /// deployment shipped, from its first commit to the deployment's end; the first such
    /// deployment of a change is where its deploy stage ends.
    fn lead_times(&mut self, d: &Dep<'_>, shipped: &[Landed], labels: &Labels) {
        let me = d.me();
        for l in shipped {
            let lead = ms(d.end - l.start).max(0);
            self.contribute(&me.key, metrics::LEAD_TIME, labels, lead);
            if let Some(c) = &l.change {
                let first = self
                    .shipped_first
                    .entry(c.clone())
                    .or_insert_with(|| (d.end, me.clone()));
                if (d.end, &me) < (first.0, &first.1) {
                    *first = (d.end, me.clone());
                }
            }
        }
    }

    /// Recovery: a successful deployment that ends a failing streak recovers it, from the first
    /// failed deployment of the streak to its own end. Returns the recovery in seconds.
    fn recovery(
        &mut self,
        d: &Dep<'_>,
        timeline: &mut EnvTimeline,
        labels: &Labels,
    ) -> Option<f64> {
        let failed = timeline.failing_since.take()?;
        timeline.failed.push((failed, Some(d.end)));
        let recovery = ms(d.end - failed).max(0);
        self.contribute(&d.s.key, metrics::RECOVERY_TIME, labels, recovery);
        Some(seconds(d.end - failed))
    }
}

impl Dep<'_> {
    fn me(&self) -> GenRef {
        GenRef {
            key: self.s.key.clone(),
            gen: self.gen,
        }
    }
}

/// What a deployment shipped: the changes and direct commits landed after what the last
/// successful deployment of its environment shipped (`bound`), up to the deployed commit
/// (`upper`). Landed changes are in landing order, so it is one range, found by two binary
/// searches (not a scan of every change per deployment).
fn shipped_set<'l>(
    landings: &'l Landings<'_>,
    bound: Option<&(Time, String)>,
    upper: &(Time, String),
) -> &'l [Landed] {
    let landed = &landings.landed;
    let from = bound.map_or(0, |b| landed.partition_point(|l| l.at <= *b));
    let to = landed.partition_point(|l| l.at <= *upper).max(from);
    &landed[from..to]
}

/// The labels a deployment's series carry: its own, its environment, and whether that is
/// production.
fn deployment_labels(g: &GenSummary, environment: &str, production: bool) -> Labels {
    let mut labels = g.labels.with_room(2);
    labels.insert(attr::DEPLOYMENT_ENVIRONMENT_NAME.into(), environment.into());
    let production = if production { "true" } else { "false" };
    labels.insert(attr::PRODUCTION.into(), production.into());
    labels
}

pub(super) fn change_failure_labels(s: &Summary, g: &GenSummary, environment: &str) -> Labels {
    let mut labels = g.labels.with_room(2);
    labels.insert(attr::SOURCE.into(), s.source.as_str().into());
    labels.insert(attr::DEPLOYMENT_ENVIRONMENT_NAME.into(), environment.into());
    labels
}

/// Each deployment rule alone: what a deployment shipped, the lead times it counts, recovery
/// from a failing streak, and production change failures. Times in minutes.
#[cfg(test)]
mod tests {
    use super::super::derive;
    use super::super::fixtures::{change, deploy, merged_by, observed, push, settings};
    use crate::engine::metrics;
    use crate::engine::scope::{PushFact, Summary};

    /// (key, shipped change keys, lead times (count, sum of minutes), recovery minutes,
    /// change failures counted).
    type Want = (
        &'static str,
        Vec<&'static str>,
        (i64, i64),
        Option<i64>,
        i64,
    );

    struct Case {
        name: &'static str,
        items: Vec<Summary>,
        pushes: Vec<PushFact>,
        /// Per deployment: (key, shipped change keys, lead times (count, sum of minutes),
        /// recovery minutes, change failures counted).
        want: Vec<Want>,
    }

    fn cases() -> Vec<Case> {
        let prod = "production";
        vec![
            Case {
                name: "each deployment ships the changes merged since the previous success",
                items: vec![
                    change("c1", 10, "A", &[]),
                    deploy("d1", prod, 15, 20, true),
                    change("c2", 30, "B", &[]),
                    change("c3", 32, "C", &[]),
                    deploy("d2", prod, 35, 40, true),
                ],
                pushes: vec![],
                // c1: opened at -50, shipped at 20 (70 min); c2, c3: 70 and 68 min.
                want: vec![
                    ("d1", vec!["c1"], (1, 70), None, 0),
                    ("d2", vec!["c2", "c3"], (2, 70 + 68), None, 0),
                ],
            },
            Case {
                name: "a change merged after the deployment started waits for the next one",
                items: vec![
                    change("c1", 16, "A", &[]),
                    deploy("d1", prod, 15, 20, true),
                    deploy("d2", prod, 30, 40, true),
                ],
                pushes: vec![],
                want: vec![
                    ("d1", vec![], (0, 0), None, 0),
                    ("d2", vec!["c1"], (1, 40 + 44), None, 0),
                ],
            },
            Case {
                name: "a failed deployment counts no lead time; the success after it ships all",
                items: vec![
                    change("c1", 10, "A", &[]),
                    deploy("d1", prod, 15, 20, false),
                    deploy("d2", prod, 30, 40, true),
                ],
                pushes: vec![],
                want: vec![
                    ("d1", vec!["c1"], (0, 0), None, 1),
                    ("d2", vec!["c1"], (1, 90), Some(20), 0),
                ],
            },
            Case {
                name: "recovery runs from the first failure of a streak to the success ending it",
                items: vec![
                    deploy("d1", prod, 0, 5, false),
                    deploy("d2", prod, 6, 8, false),
                    deploy("d3", prod, 10, 20, true),
                    deploy("d4", prod, 30, 40, true),
                ],
                pushes: vec![],
                want: vec![
                    ("d1", vec![], (0, 0), None, 1),
                    ("d2", vec![], (0, 0), None, 1),
                    ("d3", vec![], (0, 0), Some(15), 0),
                    ("d4", vec![], (0, 0), None, 0),
                ],
            },
            Case {
                name: "staging ships on its own timeline and counts neither lead time nor failure",
                items: vec![
                    change("c1", 10, "A", &[]),
                    deploy("s1", "staging", 12, 14, false),
                    deploy("s2", "staging", 15, 20, true),
                    deploy("d1", prod, 30, 40, true),
                ],
                pushes: vec![],
                want: vec![
                    ("s1", vec!["c1"], (0, 0), None, 0),
                    ("s2", vec!["c1"], (0, 0), Some(6), 0),
                    ("d1", vec!["c1"], (1, 90), None, 0),
                ],
            },
            Case {
                name: "a deployment of a commit ships what landed up to that commit",
                items: vec![
                    merged_by("c1", 10, "m1"),
                    merged_by("c2", 20, "m2"),
                    {
                        let mut d = deploy("d1", prod, 30, 40, true);
                        d.gens[0].head_sha = Some("m1".into());
                        d
                    },
                    deploy("d2", prod, 50, 60, true),
                ],
                // Both land when pushed to main: c1 at 12, c2 at 22.
                pushes: vec![
                    push("main", true, 12, &[("m1", 10)]),
                    push("main", true, 22, &[("m2", 20)]),
                ],
                want: vec![
                    ("d1", vec!["c1"], (1, 90), None, 0),
                    ("d2", vec!["c2"], (1, 100), None, 0),
                ],
            },
        ]
    }

    #[test]
    fn deployment_rules_known_answers() {
        let config = settings(&[]);
        for c in cases() {
            let d = derive(&c.items, &c.pushes, &config);
            let mut got = Vec::new();
            for (key, ..) in &c.want {
                let (gr, info) = d
                    .deploys
                    .iter()
                    .find(|(g, _)| g.key == *key)
                    .unwrap_or_else(|| panic!("{}: {key} not derived", c.name));
                let shipped: Vec<&str> = info.shipped.iter().map(|g| g.key.as_str()).collect();
                let (n, lead_ms) = observed(&d, &gr.key, metrics::LEAD_TIME);
                let (_, recovery_ms) = observed(&d, &gr.key, metrics::RECOVERY_TIME);
                let recovery = info.recovery_s.map(|_| recovery_ms / 60_000);
                let (failures, _) = observed(&d, &gr.key, metrics::CHANGE_FAILURES);
                got.push((*key, shipped, (n, lead_ms / 60_000), recovery, failures));
            }
            assert_eq!(got, c.want, "{}", c.name);
            // Every finished deployment is counted once.
            for (key, ..) in &c.want {
                assert_eq!(observed(&d, key, metrics::DEPLOYMENTS).0, 1, "{}", c.name);
            }
        }
    }

    #[test]
    fn deployment_rules_do_not_depend_on_the_order_of_the_records() {
        let config = settings(&[]);
        for c in cases() {
            let want = derive(&c.items, &c.pushes, &config).contributions;
            let (mut items, mut pushes) = (c.items.clone(), c.pushes.clone());
            items.reverse();
            pushes.reverse();
            assert_eq!(
                derive(&items, &pushes, &config).contributions,
                want,
                "{}",
                c.name
            );
        }
    }
}
