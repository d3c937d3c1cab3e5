//! The github payloads: the fields of the vendor's JSON that the mapping reads, as serde types.

use crate::model::Time;
use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct Repository {
    pub(super) full_name: String,
    pub(super) html_url: Option<String>,
    pub(super) default_branch: Option<String>,
    pub(super) language: Option<String>,
    #[serde(default)]
    pub(super) topics: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct Label {
    pub(super) name: String,
}

#[derive(Deserialize)]
pub(super) struct User {
    pub(super) login: String,
    /// `User`, `Bot` or `Organization`.
    #[serde(rename = "type", default)]
    pub(super) kind: Option<String>,
}

/// A `pull_request_review` delivery's review.
#[derive(Deserialize)]
pub(super) struct Review {
    pub(super) user: Option<User>,
    /// `approved`, `changes_requested`, `commented` or `dismissed` (webhooks write it in lower
    /// case, the REST API in upper case).
    pub(super) state: String,
    pub(super) submitted_at: Option<Time>,
}

#[derive(Deserialize)]
pub(super) struct IssuePayload {
    pub(super) number: u64,
    pub(super) title: String,
    pub(super) html_url: Option<String>,
    pub(super) created_at: Time,
    pub(super) closed_at: Option<Time>,
    pub(super) updated_at: Option<Time>,
    #[serde(default)]
    pub(super) labels: Vec<Label>,
    pub(super) user: Option<User>,
    pub(super) state_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct GitRef {
    #[serde(rename = "ref")]
    pub(super) name: String,
    pub(super) sha: String,
}

#[derive(Deserialize)]
pub(super) struct PullRequest {
    pub(super) number: u64,
    pub(super) title: String,
    pub(super) body: Option<String>,
    pub(super) html_url: Option<String>,
    pub(super) created_at: Time,
    pub(super) updated_at: Option<Time>,
    pub(super) closed_at: Option<Time>,
    pub(super) merged_at: Option<Time>,
    #[serde(default)]
    pub(super) merged: bool,
    #[serde(default)]
    pub(super) draft: bool,
    pub(super) merge_commit_sha: Option<String>,
    pub(super) head: GitRef,
    pub(super) base: GitRef,
    #[serde(default)]
    pub(super) labels: Vec<Label>,
    pub(super) user: Option<User>,
}

#[derive(Deserialize)]
pub(super) struct WorkflowRun {
    pub(super) id: u64,
    pub(super) name: Option<String>,
    pub(super) path: Option<String>,
    pub(super) html_url: Option<String>,
    pub(super) head_branch: Option<String>,
    pub(super) head_sha: String,
    pub(super) run_attempt: Option<u64>,
    pub(super) created_at: Time,
    pub(super) run_started_at: Option<Time>,
    pub(super) updated_at: Time,
    pub(super) conclusion: Option<String>,
    pub(super) event: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct WorkflowJob {
    pub(super) id: u64,
    pub(super) run_id: u64,
    pub(super) run_attempt: Option<u64>,
    pub(super) name: String,
    pub(super) html_url: Option<String>,
    pub(super) head_branch: Option<String>,
    pub(super) head_sha: Option<String>,
    pub(super) workflow_name: Option<String>,
    pub(super) created_at: Option<Time>,
    pub(super) started_at: Time,
    pub(super) completed_at: Option<Time>,
    pub(super) conclusion: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Deployment {
    pub(super) id: u64,
    pub(super) sha: String,
    #[serde(rename = "ref")]
    pub(super) git_ref: Option<String>,
    pub(super) environment: String,
    pub(super) created_at: Time,
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) payload: serde_json::Value,
}

#[derive(Deserialize)]
pub(super) struct DeploymentStatus {
    pub(super) state: String,
    pub(super) created_at: Time,
    pub(super) description: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct PushCommit {
    pub(super) id: String,
    pub(super) timestamp: Time,
    #[serde(default)]
    pub(super) message: String,
}

#[derive(Deserialize)]
pub(super) struct Workflow {
    pub(super) name: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Envelope {
    pub(super) action: Option<String>,
    pub(super) workflow: Option<Workflow>,
    pub(super) repository: Option<Repository>,
    pub(super) issue: Option<IssuePayload>,
    pub(super) pull_request: Option<PullRequest>,
    pub(super) review: Option<Review>,
    pub(super) workflow_run: Option<WorkflowRun>,
    pub(super) workflow_job: Option<WorkflowJob>,
    pub(super) deployment: Option<Deployment>,
    pub(super) deployment_status: Option<DeploymentStatus>,
    #[serde(rename = "ref")]
    pub(super) git_ref: Option<String>,
    pub(super) before: Option<String>,
    pub(super) after: Option<String>,
    #[serde(default)]
    pub(super) commits: Vec<PushCommit>,
    #[serde(default)]
    pub(super) deleted: bool,
}
