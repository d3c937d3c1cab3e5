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
                self.contribute(&s.key, name, &labels, ms(end - g.start.unwrap_or(end)));
            }
        }
    }
}

/// The duration series of a finished span and its labels.
fn duration_series(s: &Summary, g: &GenSummary) -> (&'static str, Labels) {
    let mut labels = g.labels.with_room(3);
    let result = g.result.map_or(UNKNOWN, |r| r.as_str());
    let name = match s.kind {
        Kind::Issue => metrics::ISSUE_DURATION,
        Kind::Change => metrics::CHANGE_DURATION,
        Kind::PipelineRun => {
            if let Some(p) = &g.pipeline {
                labels.insert(attr::CICD_PIPELINE_NAME.into(), p.as_str().into());
            }
            labels.insert(attr::CICD_PIPELINE_RESULT.into(), result.into());
            metrics::RUN_DURATION
        }
        Kind::Task => {
            if let Some(p) = &g.pipeline {
                labels.insert(attr::CICD_PIPELINE_NAME.into(), p.as_str().into());
            }
            metrics::TASK_DURATION
        }
        Kind::Deployment => {
            let env = g.environment.as_deref().unwrap_or(UNKNOWN);
            labels.insert(attr::DEPLOYMENT_ENVIRONMENT_NAME.into(), env.into());
            metrics::DEPLOYMENT_DURATION
        }
        Kind::Incident => metrics::INCIDENT_DURATION,
    };
    labels.insert(attr::RESULT.into(), result.into());
    (name, labels)
}

#[cfg(test)]
mod tests {
    use super::super::derive;
    use super::super::fixtures::{deploy, gen, settings, summary};
    use super::*;
    use crate::model::WorkResult;

    #[test]
    fn each_finished_span_is_one_observation_in_its_kinds_series() {
        let mut run = gen(0, Some(7));
        run.pipeline = Some("ci".into());
        run.result = Some(WorkResult::Failure);
        let items = vec![
            summary("i1", Kind::Issue, gen(0, Some(30))),
            summary("i2", Kind::Issue, gen(0, None)),
            summary("r1", Kind::PipelineRun, run),
            deploy("d1", "prod", 10, 25, true),
        ];
        let d = derive(&items, &[], &settings(&[]));
        let series = |owner: &str| -> Vec<(String, i64, i64, Labels)> {
            d.contributions
                .get(owner)
                .into_iter()
                .flatten()
                .filter(|t| t.name.ends_with(".duration"))
                .map(|t| (t.name.to_string(), t.count, t.sum_ms, t.labels.clone()))
                .collect()
        };
        let issue = series("i1");
        assert_eq!(
            (issue[0].0.as_str(), issue[0].1, issue[0].2),
            (metrics::ISSUE_DURATION, 1, 30 * 60_000)
        );
        assert_eq!(issue[0].3[attr::RESULT], "unknown");
        assert!(series("i2").is_empty(), "an open span has no duration yet");
        let run = &series("r1")[0];
        assert_eq!((run.0.as_str(), run.2), (metrics::RUN_DURATION, 7 * 60_000));
        assert_eq!(run.3[attr::CICD_PIPELINE_NAME], "ci");
        assert_eq!(run.3[attr::CICD_PIPELINE_RESULT], "failure");
        let dep = &series("d1")[0];
        assert_eq!(
            (dep.0.as_str(), dep.2),
            (metrics::DEPLOYMENT_DURATION, 15 * 60_000)
        );
        assert_eq!(dep.3[attr::DEPLOYMENT_ENVIRONMENT_NAME], "prod");
    }
}
