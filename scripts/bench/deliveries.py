#!/usr/bin/env python3
"""Writes N distinct signed GitHub deliveries for scripts/bench-load, one per line:
event TAB delivery-id TAB sha256=signature TAB compact JSON body.

Each repository gets the sequence a team produces: issue opened, PR opened (its branch names the
issue), workflow run requested and completed, PR merged, deployment created, deployment
succeeded, issue closed. Bodies are the project's GitHub fixtures with the repository, numbers
and ids changed, so every delivery is a distinct fact and the store grows as in production.

usage: deliveries.py N SECRET OUT
"""
import hashlib
import hmac
import json
import pathlib
import sys

FIX = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "github"


def load(rel):
    return json.loads((FIX / rel).read_text())


TEMPLATES = [
    ("issues", load("issues/opened.payload.json")),
    ("pull_request", load("pull_request/opened.payload.json")),
    ("workflow_run", load("workflow_run/requested.payload.json")),
    ("workflow_run", load("workflow_run/completed.payload.json")),
    ("pull_request", load("pull_request/closed.payload.json")),
    ("deployment", load("deployment/payload.json")),
    ("deployment_status", load("deployment_status/payload.json")),
    ("issues", load("issues/closed.derived.payload.json")),
]


def delivery(repo, step):
    event, template = TEMPLATES[step]
    v = json.loads(json.dumps(template))
    name = f"bench-org/repo-{repo}"
    v["repository"]["full_name"] = name
    v["repository"]["name"] = f"repo-{repo}"
    v["repository"]["id"] = 10_000_000 + repo
    if event == "issues":
        v["issue"]["number"] = 1
        v["issue"]["id"] = 20_000_000 + repo
    elif event == "pull_request":
        pr = v["pull_request"]
        pr["number"] = 2
        pr["id"] = 30_000_000 + repo
        pr["head"]["ref"] = f"feature/issue-1-repo-{repo}"
        pr["body"] = "Fixes #1"
        if step == 4:
            pr["merged"] = True
            if pr.get("closed_at") is None:
                pr["closed_at"] = "2019-05-15T15:21:18Z"
            pr["merged_at"] = pr["closed_at"]
    elif event == "workflow_run":
        v["workflow_run"]["id"] = 40_000_000 + repo
        v["workflow_run"]["head_branch"] = f"feature/issue-1-repo-{repo}"
    elif event in ("deployment", "deployment_status"):
        v["deployment"]["id"] = 50_000_000 + repo
        if event == "deployment_status":
            v["deployment_status"]["id"] = 60_000_000 + repo
    return event, json.dumps(v, separators=(",", ":"))


def main():
    n, secret, out = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
    with open(out, "w") as f:
        for i in range(n):
            repo, step = divmod(i, len(TEMPLATES))
            event, body = delivery(repo, step)
            sig = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
            f.write(f"{event}\tbench-{i}\tsha256={sig}\t{body}\n")


if __name__ == "__main__":
    main()
