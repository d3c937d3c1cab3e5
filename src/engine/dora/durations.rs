//! One duration observation per finished span, in the series of its kind.

use super::{ms, Deriver, UNKNOWN};
use crate::engine::metrics::{self, Labels};
use crate::engine::scope::{GenSummary, Summary};
use crate::model::{attr, Kind};

impl Deriver<'_> {
    /// One duration observation per finished span.
    pub(super) fn durations(&mut self, sorted: &[&Summary]) {
        for s in sorted {
            for g in s.gens.iter() {
                let Some(end) = g.end else { continue };
                let (name, labels) = duration_series(s, g);
                self.contribute(&s.key, name, labels, ms(end - g.start.unwrap_or(end)));
            }
        }
    }
}

/// The duration series of a finished span and its labels.
fn duration_series(s: &Summary, g: &GenSummary) -> (&'static str, Labels) {
    let mut labels = g.labels.clone();
    let result = g
        .result
        .map_or_else(|| UNKNOWN.to_string(), |r| r.as_str().to_string());
    let name = match s.kind {
        Kind::Issue => metrics::ISSUE_DURATION,
        Kind::Change => metrics::CHANGE_DURATION,
        Kind::PipelineRun => {
            if let Some(p) = &g.pipeline {
                labels.insert(attr::CICD_PIPELINE_NAME.into(), p.clone());
            }
            labels.insert(attr::CICD_PIPELINE_RESULT.into(), result.clone());
            metrics::RUN_DURATION
        }
        Kind::Task => {
            if let Some(p) = &g.pipeline {
                labels.insert(attr::CICD_PIPELINE_NAME.into(), p.clone());
            }
            metrics::TASK_DURATION
        }
        Kind::Deployment => {
            let env = g.environment.clone().unwrap_or_else(|| "unknown".into());
            labels.insert(attr::DEPLOYMENT_ENVIRONMENT_NAME.into(), env);
            metrics::DEPLOYMENT_DURATION
        }
        Kind::Incident => metrics::INCIDENT_DURATION,
    };
    labels.insert(attr::RESULT.into(), result);
    (name, labels)
}
