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

    /// One finished deployment: its count, the lead times of what it shipped (changes landed
    /// after the last successful deployment, up to the deployed commit), its recovery time
    /// when it ends a failing streak, and whether it failed in production.
    fn deployment(&mut self, d: &Dep<'_>, timeline: &mut EnvTimeline, landings: &Landings<'_>) {
        let g = d.g;
        let environment = g.environment.clone().unwrap_or_else(|| "unknown".into());
        let production = self.config.is_production(&environment);
        let success = !g.error && g.result.is_none_or(|r| r == WorkResult::Success);
        let upper = landings.upper_bound(g.head_sha.as_deref(), g.start.unwrap_or(d.end));
        // Landed changes are in landing order: what this deployment shipped is one range,
        // found by two binary searches (not a scan of every change per deployment).
        let landed = &landings.landed;
        let from = timeline
            .shipped_bound
            .as_ref()
            .map_or(0, |b| landed.partition_point(|l| l.at <= *b));
        let to = landed.partition_point(|l| l.at <= upper).max(from);
        let shipped: Vec<&Landed> = landed[from..to].iter().collect();
        let mut labels = g.labels.clone();
        labels.insert(
            attr::DEPLOYMENT_ENVIRONMENT_NAME.into(),
            environment.clone(),
        );
        labels.insert(attr::PRODUCTION.into(), production.to_string());
        let mut counted = labels.clone();
        counted.insert(
            attr::RESULT.into(),
            g.result
                .map_or_else(|| UNKNOWN.into(), |r| r.as_str().into()),
        );
        let owner = d.s.key.as_str();
        let me = GenRef {
            key: d.s.key.clone(),
            gen: d.gen,
        };
        if production {
            self.prod_deploys.push(ProdDeploy {
                me: me.clone(),
                environment: environment.to_ascii_lowercase(),
                start: g.start.unwrap_or(d.end),
                counted: counted.clone(),
            });
        }
        self.contribute(owner, metrics::DEPLOYMENTS, counted, 1);
        if success && production {
            for l in &shipped {
                let lead = ms(d.end - l.start).max(0);
                self.contribute(owner, metrics::LEAD_TIME, labels.clone(), lead);
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
        let mut info = DeployInfo {
            production,
            success,
            shipped: shipped.iter().filter_map(|l| l.change.clone()).collect(),
            changes: shipped.len() as i64,
            recovery_s: None,
            rework: None,
        };
        if success {
            if let Some(failed) = timeline.failing_since.take() {
                timeline.failed.push((failed, Some(d.end)));
                info.recovery_s = Some(seconds(d.end - failed));
                let recovery = ms(d.end - failed).max(0);
                self.contribute(owner, metrics::RECOVERY_TIME, labels, recovery);
            }
            timeline.shipped_bound = Some(upper);
            if production {
                self.prod_successes
                    .push((d.end, me.clone(), environment.clone()));
            }
        } else if g.error {
            timeline.failing_since = timeline.failing_since.or(Some(d.end));
            if production {
                self.failure_labels.insert(
                    owner.to_string(),
                    change_failure_labels(d.s, g, &environment),
                );
            }
        }
        self.out.deploys.insert(me, info);
    }
}

pub(super) fn change_failure_labels(s: &Summary, g: &GenSummary, environment: &str) -> Labels {
    let mut labels = g.labels.clone();
    labels.insert(attr::SOURCE.into(), s.source.clone());
    labels.insert(
        attr::DEPLOYMENT_ENVIRONMENT_NAME.into(),
        environment.to_string(),
    );
    labels
}
