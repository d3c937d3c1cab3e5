//! Every attribute key that crosses the line between sources and the engine, in one place, so
//! that sources, the engine, the analysis and the tests spell them alike: the keys of the
//! OpenTelemetry semantic conventions (`vcs.*`, `cicd.*`, `deployment.*`, `url.*`, `error.*`),
//! the project's own `valuestream.*` keys, and the names of the metrics ([`metric`]). No module
//! of the engine writes a key as a string literal (tests/architecture.rs checks it).

// OpenTelemetry semantic conventions (VCS, CI/CD, deployment, URL, error).
pub const CICD_PIPELINE_NAME: &str = "cicd.pipeline.name";
pub const CICD_PIPELINE_RESULT: &str = "cicd.pipeline.result";
pub const CICD_PIPELINE_RUN_ID: &str = "cicd.pipeline.run.id";
pub const CICD_PIPELINE_RUN_URL_FULL: &str = "cicd.pipeline.run.url.full";
pub const CICD_PIPELINE_TASK_NAME: &str = "cicd.pipeline.task.name";
pub const CICD_PIPELINE_TASK_RUN_ID: &str = "cicd.pipeline.task.run.id";
pub const CICD_PIPELINE_TASK_RUN_RESULT: &str = "cicd.pipeline.task.run.result";
pub const CICD_PIPELINE_TASK_RUN_URL_FULL: &str = "cicd.pipeline.task.run.url.full";
pub const CICD_PIPELINE_TASK_TYPE: &str = "cicd.pipeline.task.type";
pub const DEPLOYMENT_ENVIRONMENT_NAME: &str = "deployment.environment.name";
pub const DEPLOYMENT_ID: &str = "deployment.id";
pub const DEPLOYMENT_STATUS: &str = "deployment.status";
pub const ERROR_TYPE: &str = "error.type";
pub const URL_FULL: &str = "url.full";
pub const VCS_CHANGE_ID: &str = "vcs.change.id";
pub const VCS_CHANGE_STATE: &str = "vcs.change.state";
pub const VCS_CHANGE_TITLE: &str = "vcs.change.title";
pub const VCS_OWNER_NAME: &str = "vcs.owner.name";
pub const VCS_PROVIDER_NAME: &str = "vcs.provider.name";
pub const VCS_REF_BASE_NAME: &str = "vcs.ref.base.name";
pub const VCS_REF_BASE_REVISION: &str = "vcs.ref.base.revision";
pub const VCS_REF_HEAD_NAME: &str = "vcs.ref.head.name";
pub const VCS_REF_HEAD_REVISION: &str = "vcs.ref.head.revision";
pub const VCS_REPOSITORY_NAME: &str = "vcs.repository.name";
pub const VCS_REPOSITORY_URL_FULL: &str = "vcs.repository.url.full";

// OpenTelemetry resource semantic conventions (the exporters' resources).
pub const SERVICE_NAME: &str = "service.name";
pub const SERVICE_NAMESPACE: &str = "service.namespace";
pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";

// The `valuestream.*` namespace.
/// The repository's main language (GitHub `repository.language`, or the repository attributes).
pub const LANGUAGE: &str = "valuestream.language";
/// How the repository is deployed: `container`, `mutable`, `image`, … (GitHub topic `deploy-x`,
/// or the repository attributes).
pub const DEPLOYMENT_TYPE: &str = "valuestream.deployment.type";
pub const AUTHOR: &str = "valuestream.author";
pub const CHANGE_FIRST_COMMIT_TIME: &str = "valuestream.change.first_commit_time";
pub const CHANGE_MERGE_REVISION: &str = "valuestream.change.merge_revision";
pub const DEPLOYMENT_CHANGES: &str = "valuestream.deployment.changes";
pub const DEPLOYMENT_RECOVERY_TIME_S: &str = "valuestream.deployment.recovery_time_s";
/// Whether a production deployment is rework (unplanned: docs/metrics.md "Deployment rework
/// rate"), on its span.
pub const DEPLOYMENT_REWORK: &str = "valuestream.deployment.rework";
/// Why a deployment is rework (`failed_state`, `incident`, `fix_change`): a span attribute and
/// a label of the rework counter.
pub const DEPLOYMENT_REWORK_REASON: &str = "valuestream.deployment.rework.reason";
pub const DEPLOYMENT_STATUS_DESCRIPTION: &str = "valuestream.deployment.status_description";
pub const ENVIRONMENT_TIER: &str = "valuestream.environment.tier";
pub const ENVIRONMENT_URL: &str = "valuestream.environment.url";
pub const GENERATION: &str = "valuestream.generation";
pub const INCIDENT_ACKNOWLEDGED_AT: &str = "valuestream.incident.acknowledged_at";
pub const INCIDENT_DEPLOYMENT: &str = "valuestream.incident.deployment";
pub const INCIDENT_ID: &str = "valuestream.incident.id";
pub const INCIDENT_NUMBER: &str = "valuestream.incident.number";
pub const INCIDENT_PRIORITY: &str = "valuestream.incident.priority";
pub const INCIDENT_SERVICE_ID: &str = "valuestream.incident.service.id";
pub const INCIDENT_SERVICE_NAME: &str = "valuestream.incident.service.name";
pub const INCIDENT_STATUS: &str = "valuestream.incident.status";
pub const INCIDENT_TITLE: &str = "valuestream.incident.title";
pub const INCIDENT_URGENCY: &str = "valuestream.incident.urgency";
pub const ISSUE_KEY: &str = "valuestream.issue.key";
pub const ISSUE_NUMBER: &str = "valuestream.issue.number";
pub const ISSUE_PRIORITY: &str = "valuestream.issue.priority";
pub const ISSUE_RESOLUTION: &str = "valuestream.issue.resolution";
pub const ISSUE_STATE_REASON: &str = "valuestream.issue.state_reason";
pub const ISSUE_STATUS: &str = "valuestream.issue.status";
pub const ISSUE_STATUS_FROM: &str = "valuestream.issue.status.from";
pub const ISSUE_STATUS_TO: &str = "valuestream.issue.status.to";
pub const ISSUE_STATUS_CATEGORY: &str = "valuestream.issue.status_category";
pub const ISSUE_TITLE: &str = "valuestream.issue.title";
pub const ISSUE_TYPE: &str = "valuestream.issue.type";
pub const JENKINS_STATUS: &str = "valuestream.jenkins.status";
pub const KEY: &str = "valuestream.key";
pub const KIND: &str = "valuestream.kind";
pub const LABELS: &str = "valuestream.labels";
pub const LINK: &str = "valuestream.link";
/// Whether a deployment's environment counts as production.
pub const PRODUCTION: &str = "valuestream.production";
pub const PROJECT_KEY: &str = "valuestream.project.key";
pub const PROJECT_NAME: &str = "valuestream.project.name";
pub const QUEUE_DURATION_S: &str = "valuestream.queue.duration_s";
/// The repository, lower-case `owner/name`.
pub const REPOSITORY: &str = "valuestream.repository";
/// How a work item ended (`merged`, `closed`, `success`, `failure`, …).
pub const RESULT: &str = "valuestream.result";
pub const RUN_ATTEMPT: &str = "valuestream.run.attempt";
/// The source system (`github`, `events`, …).
pub const SOURCE: &str = "valuestream.source";
pub const SOURCE_SYSTEM: &str = "valuestream.source_system";
pub const TASK_ALLOW_FAILURE: &str = "valuestream.task.allow_failure";
pub const TASK_STAGE: &str = "valuestream.task.stage";
/// A change's stage (`coding`, `pickup`, `review`, `deploy`): the stage child span's and the
/// stage-duration histogram's label (docs/metrics.md "Change stages").
pub const CHANGE_STAGE: &str = "valuestream.change.stage";
/// A review's state (`approved`, `changes_requested`, `commented`) on its span event.
pub const REVIEW_STATE: &str = "valuestream.review.state";
/// Who reviewed, as a kind (`human`, `bot`, `author`): never a name.
pub const REVIEWER_KIND: &str = "valuestream.reviewer.kind";
/// The team that owns the repository (payload label/topic, `VALUESTREAM_TEAMS`, or
/// `VALUESTREAM_REPOSITORY_ATTRIBUTES`).
pub const TEAM: &str = "valuestream.team";
pub const TEAMS: &str = "valuestream.teams";
pub const TRIGGER: &str = "valuestream.trigger";
/// Prefix of the user-defined repository attributes: `valuestream.attr.<key>`.
pub const ATTR_PREFIX: &str = "valuestream.attr.";
/// The instrumentation scope of valuestream's own health metrics (the DORA series' is
/// `valuestream`).
pub const HEALTH_SCOPE: &str = "valuestream.health";

/// Metric names (the catalogue with units and descriptions is `model::series::CATALOGUE`).
pub mod metric {
    pub const ISSUE_DURATION: &str = "valuestream.issue.duration";
    pub const CHANGE_DURATION: &str = "valuestream.change.duration";
    pub const RUN_DURATION: &str = "cicd.pipeline.run.duration";
    pub const TASK_DURATION: &str = "valuestream.task.duration";
    pub const DEPLOYMENT_DURATION: &str = "valuestream.deployment.duration";
    pub const INCIDENT_DURATION: &str = "valuestream.incident.duration";
    pub const DEPLOYMENTS: &str = "valuestream.deployments";
    pub const LEAD_TIME: &str = "valuestream.change.lead_time";
    pub const CHANGE_FAILURES: &str = "valuestream.change_failures";
    pub const TIME_TO_RESTORE: &str = "valuestream.time_to_restore";
    pub const RECOVERY_TIME: &str = "valuestream.deployment.recovery_time";
    pub const REWORK: &str = "valuestream.deployment.rework";
    pub const STAGE_DURATION: &str = "valuestream.change.stage.duration";
}
