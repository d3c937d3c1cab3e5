//! The gitlab payloads: the fields of the vendor's JSON that the mapping reads, as serde types.

use crate::model::Time;
use serde::Deserialize;

/// GitLab's timestamps (`2016-08-12 15:23:28 UTC`, RFC 3339, …).
pub use crate::model::timestamp::de;

// ---------------------------------------------------------------- payload model

#[derive(Deserialize)]
pub(super) struct Project {
    pub(super) id: Option<u64>,
    pub(super) path_with_namespace: String,
    pub(super) web_url: Option<String>,
    pub(super) default_branch: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Label {
    pub(super) title: String,
}

/// What names the event in the body: `object_kind` (project hooks, and system-hook merge
/// requests), else `event_name` (system hooks: `push`, `tag_push`, `user_add_to_group`…).
#[derive(Deserialize)]
pub(super) struct ObjectKind {
    pub(super) object_kind: Option<String>,
    pub(super) event_name: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct IssueHook {
    pub(super) project: Project,
    pub(super) object_attributes: IssueAttrs,
    #[serde(default)]
    pub(super) labels: Vec<Label>,
}

#[derive(Deserialize)]
pub(super) struct IssueAttrs {
    pub(super) iid: u64,
    pub(super) title: String,
    pub(super) url: Option<String>,
    #[serde(deserialize_with = "de::time")]
    pub(super) created_at: Time,
    #[serde(default, deserialize_with = "de::opt_time")]
    pub(super) updated_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    pub(super) closed_at: Option<Time>,
    pub(super) action: Option<String>,
    pub(super) issue_type: Option<String>,
    #[serde(default)]
    pub(super) labels: Vec<Label>,
}

#[derive(Deserialize)]
pub(super) struct MergeRequestHook {
    pub(super) project: Project,
    pub(super) object_attributes: MergeRequestAttrs,
    #[serde(default)]
    pub(super) labels: Vec<Label>,
    /// Who did what the hook reports (the approver of an `approval`).
    pub(super) user: Option<HookUser>,
    /// What an `update` changed (GitLab's merge request events: `draft`, `reviewers`…).
    #[serde(default)]
    pub(super) changes: Option<MrChanges>,
}

#[derive(Deserialize)]
pub(super) struct HookUser {
    pub(super) id: Option<u64>,
    #[serde(default)]
    pub(super) username: String,
}

#[derive(Deserialize)]
pub(super) struct MrChanges {
    pub(super) draft: Option<Changed<bool>>,
    pub(super) reviewers: Option<Changed<Vec<serde_json::Value>>>,
}

#[derive(Deserialize)]
pub(super) struct Changed<T> {
    pub(super) previous: Option<T>,
    pub(super) current: Option<T>,
}

#[derive(Deserialize)]
pub(super) struct LastCommit {
    pub(super) id: String,
}

#[derive(Deserialize)]
pub(super) struct MergeRequestAttrs {
    pub(super) iid: u64,
    pub(super) title: String,
    pub(super) description: Option<String>,
    pub(super) url: Option<String>,
    #[serde(deserialize_with = "de::time")]
    pub(super) created_at: Time,
    #[serde(default, deserialize_with = "de::opt_time")]
    pub(super) updated_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    pub(super) merged_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    pub(super) closed_at: Option<Time>,
    pub(super) source_branch: String,
    pub(super) target_branch: String,
    pub(super) last_commit: Option<LastCommit>,
    pub(super) merge_commit_sha: Option<String>,
    pub(super) author_id: Option<u64>,
    #[serde(default)]
    pub(super) draft: bool,
    #[serde(default)]
    pub(super) work_in_progress: bool,
    pub(super) state: Option<String>,
    pub(super) action: Option<String>,
    #[serde(default)]
    pub(super) labels: Vec<Label>,
}

#[derive(Deserialize)]
pub(super) struct PipelineHook {
    pub(super) project: Project,
    pub(super) object_attributes: PipelineAttrs,
    pub(super) merge_request: Option<PipelineMergeRequest>,
    #[serde(default)]
    pub(super) builds: Vec<PipelineBuild>,
}

#[derive(Deserialize)]
pub(super) struct PipelineAttrs {
    pub(super) id: u64,
    pub(super) name: Option<String>,
    #[serde(rename = "ref")]
    pub(super) git_ref: Option<String>,
    #[serde(default)]
    pub(super) tag: bool,
    pub(super) sha: String,
    pub(super) source: Option<String>,
    pub(super) status: String,
    pub(super) url: Option<String>,
    #[serde(deserialize_with = "de::time")]
    pub(super) created_at: Time,
    #[serde(default, deserialize_with = "de::opt_time")]
    pub(super) finished_at: Option<Time>,
    pub(super) duration: Option<f64>,
    pub(super) queued_duration: Option<f64>,
}

#[derive(Deserialize)]
pub(super) struct PipelineMergeRequest {
    pub(super) iid: u64,
    pub(super) target_project_id: Option<u64>,
}

#[derive(Deserialize)]
pub(super) struct PipelineBuild {
    pub(super) id: u64,
    pub(super) stage: Option<String>,
    pub(super) name: String,
    pub(super) status: String,
    #[serde(default, deserialize_with = "de::opt_time")]
    pub(super) created_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    pub(super) started_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    pub(super) finished_at: Option<Time>,
    pub(super) duration: Option<f64>,
    pub(super) queued_duration: Option<f64>,
    #[serde(default)]
    pub(super) allow_failure: bool,
    pub(super) failure_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct JobHook {
    #[serde(rename = "ref")]
    pub(super) git_ref: Option<String>,
    #[serde(default)]
    pub(super) tag: bool,
    pub(super) sha: Option<String>,
    pub(super) build_id: u64,
    pub(super) build_name: String,
    pub(super) build_stage: Option<String>,
    pub(super) build_status: String,
    #[serde(default, deserialize_with = "de::opt_time")]
    pub(super) build_created_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    pub(super) build_started_at: Option<Time>,
    #[serde(default, deserialize_with = "de::opt_time")]
    pub(super) build_finished_at: Option<Time>,
    pub(super) build_duration: Option<f64>,
    pub(super) build_queued_duration: Option<f64>,
    #[serde(default)]
    pub(super) build_allow_failure: bool,
    pub(super) build_failure_reason: Option<String>,
    pub(super) pipeline_id: u64,
    /// Sent by recent GitLab versions only; older ones name the project by `repository`.
    pub(super) project: Option<Project>,
    pub(super) repository: Option<JobRepository>,
    /// In a Job Hook, `commit` describes the pipeline (`name` is the pipeline's name).
    pub(super) commit: Option<JobPipeline>,
}

#[derive(Deserialize)]
pub(super) struct JobRepository {
    pub(super) homepage: Option<String>,
    pub(super) git_http_url: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct JobPipeline {
    pub(super) name: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct DeploymentHook {
    pub(super) project: Project,
    pub(super) status: String,
    #[serde(deserialize_with = "de::time")]
    pub(super) status_changed_at: Time,
    pub(super) deployment_id: u64,
    pub(super) deployable_id: Option<u64>,
    pub(super) deployable_url: Option<String>,
    pub(super) environment: String,
    pub(super) environment_tier: Option<String>,
    pub(super) environment_external_url: Option<String>,
    pub(super) sha: Option<String>,
    pub(super) short_sha: Option<String>,
    pub(super) commit_url: Option<String>,
    #[serde(rename = "ref")]
    pub(super) git_ref: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct PushHook {
    pub(super) project: Project,
    #[serde(rename = "ref")]
    pub(super) git_ref: String,
    pub(super) before: Option<String>,
    pub(super) after: Option<String>,
    #[serde(default)]
    pub(super) commits: Vec<PushCommit>,
}

#[derive(Deserialize)]
pub(super) struct PushCommit {
    pub(super) id: String,
    #[serde(deserialize_with = "de::time")]
    pub(super) timestamp: Time,
    #[serde(default)]
    pub(super) message: String,
}

// ---------------------------------------------------------------- the source
