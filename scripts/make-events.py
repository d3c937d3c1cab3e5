#!/usr/bin/env python3
"""Generates events/: API Gateway HTTP API (payload format 2.0) events, one per payload file,
signed for the local secrets of the README's local example, for

    cargo lambda invoke valuestream --data-file events/github/issues-opened.json
    sam local invoke ValuestreamFunction -e events/github/issues-opened.json
    valuestream replay events/github

Each event's `body` is the payload file's text, byte for byte (the signature covers exactly those
bytes). Everything else is deterministic (delivery IDs are UUIDs derived from the payload's path),
so running the script again changes nothing unless a payload changed.

Usage:
    python3 scripts/make-events.py           # (re)write every event file
    python3 scripts/make-events.py --check   # exit 1 if an event file is missing or stale

To add events, append Entry(...) values to ENTRIES (see the end of this file); an entry may set
its own headers (e.g. another X-GitHub-Event) and any output path under events/.

events/scheduled/ is not generated: it holds the EventBridge scheduled event that makes the
Lambda function drain (template.yaml's Drain schedule), written by hand.

Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
EVENTS = REPO / "events"

# The local secrets (README's local example). Never real ones.
SECRETS = {
    "github": "local-github-secret",  # VALUESTREAM_GITHUB_SECRET
    "gitlab": "local-gitlab-token",  # VALUESTREAM_GITLAB_TOKEN
    "jenkins": "local-jenkins-token",  # VALUESTREAM_JENKINS_TOKEN
    "jira": "local-jira-secret",  # VALUESTREAM_JIRA_SECRET
    "pagerduty": "local-pagerduty-secret",  # VALUESTREAM_PAGERDUTY_SECRET
    "events": "local-events-token",  # VALUESTREAM_EVENTS_TOKEN
}

# Namespace of the deterministic IDs (delivery IDs, request IDs).
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/valuestream/events")

# GitLab's X-Gitlab-Event for each object_kind.
GITLAB_EVENTS = {
    "issue": "Issue Hook",
    "merge_request": "Merge Request Hook",
    "pipeline": "Pipeline Hook",
    "build": "Job Hook",
    "deployment": "Deployment Hook",
    "push": "Push Hook",
    "note": "Note Hook",
    "tag_push": "Tag Push Hook",
    "wiki_page": "Wiki Page Hook",
    "release": "Release Hook",
}

# A fixed request time: regenerating gives the same files.
REQUEST_TIME = "23/Nov/2026:12:00:00 +0000"
REQUEST_EPOCH_MS = 1795435200000


@dataclass
class Entry:
    """One event file: a payload delivered to /webhooks/<source>."""

    source: str  # route segment: github, gitlab, jenkins, jira, pagerduty, events
    payload: str  # body file, relative to the repository
    out: str  # event file to write, relative to the repository (under events/)
    headers: dict[str, str] = field(default_factory=dict)  # extra or overriding headers
    query: str = ""  # rawQueryString
    body: str | None = None  # the body itself, instead of reading `payload`

    def stable_id(self) -> str:
        return str(uuid.uuid5(ID_NAMESPACE, f"{self.source}:{self.payload}"))

    def read_body(self) -> bytes:
        return self.body.encode() if self.body is not None else (REPO / self.payload).read_bytes()


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def auth_headers(entry: Entry, body: bytes) -> dict[str, str]:
    """What the sender would add: signature or token, event name, delivery ID."""
    secret = SECRETS[entry.source]
    if entry.source == "github":
        # tests/fixtures/github/<event>/<action>.payload.json: the folder is X-GitHub-Event.
        event = Path(entry.payload).parent.name
        return {
            "user-agent": "GitHub-Hookshot/valuestream-local",
            "x-github-event": event,
            "x-github-delivery": entry.stable_id(),
            "x-hub-signature-256": "sha256=" + hmac_hex(secret, body),
        }
    if entry.source == "gitlab":
        kind = json.loads(body).get("object_kind", "")
        return {
            "user-agent": "GitLab/valuestream-local",
            # tests/fixtures/gitlab/system_hook/: sent by a system hook, whatever the body.
            "x-gitlab-event": "System Hook"
            if "/system_hook/" in entry.payload
            else GITLAB_EVENTS.get(kind, "System Hook"),
            "x-gitlab-event-uuid": entry.stable_id(),
            "x-gitlab-token": secret,
        }
    if entry.source == "jenkins":
        return {"authorization": f"Bearer {secret}"}
    if entry.source == "jira":
        return {
            "user-agent": "Atlassian Webhook HTTP Client",
            "x-atlassian-webhook-identifier": entry.stable_id(),
            "x-hub-signature": "sha256=" + hmac_hex(secret, body),
        }
    if entry.source == "pagerduty":
        return {
            "user-agent": "PagerDuty-Webhook/V3.0",
            "x-webhook-id": entry.stable_id(),
            "x-pagerduty-signature": "v1=" + hmac_hex(secret, body),
        }
    if entry.source == "events":
        return {"authorization": f"Bearer {secret}"}
    raise SystemExit(f"make-events: unknown source {entry.source!r} in {entry.out}")


def event_for(entry: Entry) -> dict:
    body = entry.read_body()
    text = body.decode("utf-8")  # API Gateway passes JSON bodies as text, not base64
    path = f"/webhooks/{entry.source}"
    headers = {
        "content-type": "application/json",
        "host": "valuestream.execute-api.us-east-1.amazonaws.com",
        "x-forwarded-for": "192.0.2.10",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    headers.update(auth_headers(entry, body))
    headers.update({k.lower(): v for k, v in entry.headers.items()})
    headers = dict(sorted(headers.items()))
    return {
        "version": "2.0",
        "routeKey": f"POST {path}",
        "rawPath": path,
        "rawQueryString": entry.query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "valuestream",
            "domainName": headers["host"],
            "domainPrefix": "valuestream",
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.10",
                "userAgent": headers.get("user-agent", "curl/8.5.0"),
            },
            "requestId": str(uuid.uuid5(ID_NAMESPACE, "request:" + entry.out)),
            "routeKey": f"POST {path}",
            "stage": "$default",
            "time": REQUEST_TIME,
            "timeEpoch": REQUEST_EPOCH_MS,
        },
        "body": text,
        "isBase64Encoded": False,
    }


def render(entry: Entry) -> str:
    return json.dumps(event_for(entry), indent=2, ensure_ascii=False) + "\n"


def is_payload(p: Path) -> bool:
    # Golden outputs (*.expected.json) live beside the payloads; they are not deliveries.
    return p.suffix == ".json" and not p.name.endswith(".expected.json")


def demo_entries() -> list[Entry]:
    """events/demo: the delivery story of scripts/demo_story.py, in order."""
    sys.path.insert(0, str(REPO / "scripts"))
    import demo_story

    return [
        Entry(
            source="github",
            payload=f"events/demo/{name}",
            out=f"events/demo/{name}.json",
            headers={"x-github-event": event},
            body=json.dumps(payload, separators=(",", ":")),
        )
        for name, event, payload in demo_story.story()
    ]


def fixture_entries(source: str) -> list[Entry]:
    """One entry per payload under tests/fixtures/<source>/ (recursively)."""
    out = []
    root = FIXTURES / source
    for p in sorted(root.rglob("*.json")):
        if not is_payload(p):
            continue
        rel = p.relative_to(root)
        # github/issues/opened.payload.json -> issues-opened; gitlab/issue.json -> issue
        stem = "-".join(rel.with_suffix("").parts).replace(".payload", "")
        if stem.endswith("-payload"):
            stem = stem[: -len("-payload")]
        out.append(
            Entry(
                source=source,
                payload=str(p.relative_to(REPO)),
                out=f"events/{source}/{stem}.json",
            )
        )
    return out


# ------------------------------------------------------------------------- the entries
# Extend here: append Entry(source=..., payload=..., out="events/<folder>/<name>.json", headers={...}).
ENTRIES: list[Entry] = [
    *fixture_entries("github"),
    *fixture_entries("gitlab"),
    *fixture_entries("jenkins"),
    *fixture_entries("jira"),
    *fixture_entries("pagerduty"),
    *fixture_entries("events"),
    *demo_entries(),
]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    seen: set[str] = set()
    stale = []
    for entry in ENTRIES:
        if entry.out in seen:
            raise SystemExit(f"make-events: two entries write {entry.out}")
        seen.add(entry.out)
        target = REPO / entry.out
        text = render(entry)
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        if check:
            stale.append(entry.out)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {entry.out}")
    if check and stale:
        print(
            "make-events: these event files are missing or stale; run python3 scripts/make-events.py:\n  "
            + "\n  ".join(stale),
            file=sys.stderr,
        )
        return 1
    if not check:
        print(f"{len(ENTRIES)} event files up to date under {EVENTS.relative_to(REPO)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
