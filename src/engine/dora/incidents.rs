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
                let mut labels = g.labels.clone();
                if let Some(c) = self.out.causes.get(&s.key) {
                    labels.insert(
                        attr::DEPLOYMENT_ENVIRONMENT_NAME.into(),
                        c.environment.clone(),
                    );
                }
                let restore = ms(end - g.start.unwrap_or(end));
                self.contribute(&s.key, metrics::TIME_TO_RESTORE, labels, restore);
            }
        }
    }
}
