"""The delivery story that events/demo replays (scripts/make-events.py turns it into API Gateway
v2 events). One repository, Codertocat/Hello-World, on 2024-03-01 (UTC):

  09:00 issue #1 opened  ->  09:20 PR #2 on branch feature/vstrace-github-Hello-World-1 (first
  commit 08:30)  ->  CI run 09:21:30-09:26:30 with one job  ->  10:00 merged  ->  issue closed
  ->  10:30-10:35 production deployment 1001 succeeds  ->  11:00 direct commit d1  ->  PR #3
  (first commit 11:05, opened 11:10, merged 11:40)  ->  12:00-12:05 deployment 1002 fails  ->
  12:30-12:40 deployment 1003 succeeds  ->  12:45-12:50 staging deployment  ->  incident issue #4
  13:00-14:30.

Known answers: lead times 7500 s (PR #2), 6000 s (d1), 5700 s (PR #3); 2 successful and 1 failed
production deployments; 2 change failures (1002 failed, 1003 led to the incident); recovery time
2100 s; time to restore 5400 s. tests/scenario_github.rs checks the same story in Rust.
"""

import copy
import json
import os

FIX = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "github")


def _load(rel):
    with open(os.path.join(FIX, rel)) as f:
        return json.load(f)


def t(hm):
    return f"2024-03-01T{hm}:00Z"


REPO = _load("issues/opened.payload.json")["repository"]
FEATURE = "feature/vstrace-github-Hello-World-1"


def issue(action, number, title, created, closed=None, labels=()):
    v = _load("issues/opened.payload.json")
    v["action"] = action
    i = v["issue"]
    i.update(number=number, title=title, created_at=created, updated_at=closed or created, closed_at=closed,
             state="closed" if closed else "open", labels=[{"name": l} for l in labels])
    return v


def pull_request(action, number, branch, head, created, merged=None):
    v = _load("pull_request/opened.payload.json")
    v["action"] = action
    pr = v["pull_request"]
    pr.update(number=number, title=f"Change {number}", body="", created_at=created, updated_at=created)
    pr["head"]["ref"] = branch
    pr["head"]["sha"] = head
    if merged:
        at, sha = merged
        pr.update(state="closed", merged=True, merged_at=at, closed_at=at, merge_commit_sha=sha)
    return v


def push(branch, commits):
    v = _load("push/payload.json")
    v.update(ref=f"refs/heads/{branch}", deleted=False, created=False,
             before="0000000000000000000000000000000000000001", after=commits[-1][0])
    v["commits"] = [{"id": sha, "timestamp": at, "message": msg} for sha, at, msg in commits]
    v["head_commit"] = v["commits"][-1]
    return v


def workflow_run(action, head, branch, created, started, updated):
    v = _load("workflow_run/completed.payload.json")
    v["action"] = action
    v["repository"] = copy.deepcopy(REPO)
    v["workflow_run"].update(id=100, name="CI", head_sha=head, head_branch=branch, created_at=created,
                             run_started_at=started, updated_at=updated,
                             status="completed" if action == "completed" else "queued",
                             conclusion="success" if action == "completed" else None)
    return v


def workflow_job(head, created, started, completed):
    v = _load("workflow_job/completed.success.with-organization.payload.json")
    v["repository"] = copy.deepcopy(REPO)
    v["workflow_job"].update(id=500, run_id=100, run_attempt=1, name="test", head_sha=head,
                             created_at=created, started_at=started, completed_at=completed)
    return v


def deployment(dep_id, sha, env, created):
    v = _load("deployment/payload.json")
    v["deployment"].update(id=dep_id, sha=sha, environment=env, created_at=created, updated_at=created)
    return v


def deployment_status(dep_id, sha, env, created, state, at):
    v = _load("deployment_status/payload.json")
    v["deployment"].update(id=dep_id, sha=sha, environment=env, created_at=created)
    v["deployment_status"].update(state=state, environment=env, created_at=at, updated_at=at)
    return v


def story():
    """(file name, X-GitHub-Event, payload) in delivery order."""
    return [
        ("01-issue-opened", "issues", issue("opened", 1, "Checkout fails", t("09:00"), labels=["bug"])),
        ("02-push-feature-branch", "push", push(FEATURE, [("c1", t("08:30"), "Start"), ("c2", t("09:10"), "Finish")])),
        ("03-pr-opened", "pull_request", pull_request("opened", 2, FEATURE, "c2", t("09:20"))),
        ("04-run-requested", "workflow_run", workflow_run("requested", "c2", FEATURE, t("09:21"), "2024-03-01T09:21:30Z", t("09:21"))),
        ("05-job-completed", "workflow_job", workflow_job("c2", "2024-03-01T09:21:30Z", t("09:22"), t("09:25"))),
        ("06-run-completed", "workflow_run", workflow_run("completed", "c2", FEATURE, t("09:21"), "2024-03-01T09:21:30Z", "2024-03-01T09:26:30Z")),
        ("07-pr-merged", "pull_request", pull_request("closed", 2, FEATURE, "c2", t("09:20"), merged=(t("10:00"), "m1"))),
        ("08-push-master", "push", push("master", [("c1", t("08:30"), "Start"), ("c2", t("09:10"), "Finish"),
                                                 ("m1", t("10:00"), "Merge pull request #2 from Codertocat/feature")])),
        ("09-issue-closed", "issues", issue("closed", 1, "Checkout fails", t("09:00"), "2024-03-01T10:00:05Z", ["bug"])),
        ("10-deployment-1001", "deployment", deployment(1001, "m1", "production", t("10:30"))),
        ("11-deployment-1001-success", "deployment_status", deployment_status(1001, "m1", "production", t("10:30"), "success", t("10:35"))),
        ("12-push-direct-commit", "push", push("master", [("d1", t("11:00"), "Bump version")])),
        ("13-push-fix-typo", "push", push("fix-typo", [("c3", t("11:05"), "Fix typo")])),
        ("14-pr3-opened", "pull_request", pull_request("opened", 3, "fix-typo", "c3", t("11:10"))),
        ("15-pr3-merged", "pull_request", pull_request("closed", 3, "fix-typo", "c3", t("11:10"), merged=(t("11:40"), "m2"))),
        ("16-push-master", "push", push("master", [("c3", t("11:05"), "Fix typo"),
                                                 ("m2", t("11:40"), "Merge pull request #3 from Codertocat/fix-typo")])),
        ("17-deployment-1002", "deployment", deployment(1002, "m2", "production", t("12:00"))),
        ("18-deployment-1002-failure", "deployment_status", deployment_status(1002, "m2", "production", t("12:00"), "failure", t("12:05"))),
        ("19-deployment-1003-success", "deployment_status", deployment_status(1003, "m2", "production", t("12:30"), "success", t("12:40"))),
        ("20-deployment-1004-staging", "deployment_status", deployment_status(1004, "m2", "staging", t("12:45"), "success", t("12:50"))),
        ("21-incident-opened", "issues", issue("opened", 4, "Checkout is down", t("13:00"), labels=["incident"])),
        ("22-incident-closed", "issues", issue("closed", 4, "Checkout is down", t("13:00"), t("14:30"), ["incident"])),
    ]
