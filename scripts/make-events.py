#!/usr/bin/env python3
"""Generates events/: API Gateway HTTP API (payload format 2.0) events, one per payload file,
signed for the local secrets of the README's local example, for

    cargo lambda invoke valuestream --data-file events/github/issues-opened.json
    sam local invoke ValuestreamFunction -e events/github/issues-opened.json
    valuestream replay events/github

The sources are those of the registry (the `sources! { ... }` line of src/sources/mod.rs); the
events of a source are its fixtures under tests/fixtures/<source>/, sent with the headers of their
headers files (`<case>.headers`, else the folder's `headers`, as tests/golden.rs reads them) and
with the headers the source itself signs them with, which the binary computes
(`valuestream sources --sign`, a hidden sub-command; `$VALUESTREAM_BIN`, else `cargo run`). So a
new source needs nothing here.

Each event's `body` is the payload file's text, byte for byte (the signature covers exactly those
bytes). Everything else is deterministic (delivery IDs are UUIDs derived from the payload's path),
so running the script again changes nothing unless a payload changed.

It also writes sam-local/local-secrets.json, the secret of `sam local invoke` (README): one key
per registered source, `local-<source>-<secret|token>` (never real values).

Usage:
    python3 scripts/make-events.py           # (re)write every event file and the local secrets
    python3 scripts/make-events.py --check   # exit 1 if one is missing or stale

To add events of your own, append Entry(...) values in entries() (see the end of this file); an
entry may set its own headers (e.g. another X-GitHub-Event) and any output path under events/.

events/scheduled/ is not generated: it holds the EventBridge scheduled event that makes the
Lambda function drain (template.yaml's Drain schedule), written by hand.

Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
EVENTS = REPO / "events"

LOCAL_SECRETS = REPO / "sam-local" / "local-secrets.json"


def registered() -> list[str]:
    """The sources, in registry order: the names of the `sources! { ... }` line."""
    text = (REPO / "src" / "sources" / "mod.rs").read_text(encoding="utf-8")
    m = re.search(r"^sources! \{([^}]*)\}", text, re.M)
    if not m:
        raise SystemExit("make-events: no `sources! { ... }` line in src/sources/mod.rs")
    return [n.strip() for n in m.group(1).split(",") if n.strip()]


def valuestream(args: list[str], stdin: str = "") -> str:
    """Runs the binary ($VALUESTREAM_BIN, else `cargo run`) and returns its stdout."""
    binary = os.environ.get("VALUESTREAM_BIN")
    cmd = [binary] if binary else ["cargo", "run", "--quiet", "--locked", "--bin", "valuestream", "--"]
    out = subprocess.run(cmd + args, input=stdin, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"make-events: {' '.join(cmd + args)} failed:\n{out.stderr}")
    return out.stdout


def local_secrets(sources: list[dict]) -> dict[str, str]:
    """Each source's local secret: local-<name>-<last word of its variable> (local-github-secret,
    local-gitlab-token, ...)."""
    return {
        s["name"]: f"local-{s['name']}-{s['secret_var'].rsplit('_', 1)[-1].lower()}" for s in sources
    }


# Namespace of the deterministic IDs (delivery IDs, request IDs).
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/valuestream/events")

# A fixed request time: regenerating gives the same files.
REQUEST_TIME = "23/Nov/2026:12:00:00 +0000"
REQUEST_EPOCH_MS = 1795435200000


@dataclass
class Entry:
    """One event file: a payload delivered to /webhooks/<source>."""

    source: str  # route segment: a registered source's name
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


def fixture_headers(payload: Path) -> dict[str, str]:
    """A fixture's headers file: `<case>.headers`, else its folder's `headers`."""
    own = payload.with_name(payload.name.removesuffix(".json") + ".headers")
    for p in (own, payload.with_name("headers")):
        if p.exists():
            lines = [l.split(":", 1) for l in p.read_text(encoding="utf-8").splitlines() if ":" in l]
            return {k.strip().lower(): v.strip() for k, v in lines}
    return {}


def is_delivery_id(name: str) -> bool:
    """Whether a header carries the delivery's ID (x-github-delivery, x-gitlab-event-uuid, ...):
    each event gets its own, stable one."""
    return any(w in name for w in ("delivery", "uuid", "identifier", "-id"))


def sender_headers(entry: Entry) -> dict[str, str]:
    """What the sender would add besides its signature: the fixture's headers (event name, ...),
    with a delivery ID of the event's own."""
    headers = fixture_headers(REPO / entry.payload) if entry.body is None else {}
    headers.update({k.lower(): v for k, v in entry.headers.items()})
    return {k: entry.stable_id() if is_delivery_id(k) else v for k, v in headers.items()}


def signatures(entries: list[Entry], secrets: dict[str, str]) -> list[dict[str, str]]:
    """The headers each entry's source signs its body with under its local secret (one run of
    the binary for all)."""
    requests = [
        {"source": e.source, "secret": secrets[e.source], "body": e.read_body().decode("utf-8")}
        for e in entries
    ]
    signed = json.loads(valuestream(["sources", "--sign"], json.dumps(requests)))
    return [{k.lower(): v for k, v in pairs} for pairs in signed]


def event_for(entry: Entry, signature: dict[str, str]) -> dict:
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
    headers.update(sender_headers(entry))
    headers.update(signature)
    headers = dict(sorted(headers.items()))
    # template.yaml's one webhook route, whatever the source.
    route_key = "POST /webhooks/{source}"
    return {
        "version": "2.0",
        "routeKey": route_key,
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
            "routeKey": route_key,
            "stage": "$default",
            "time": REQUEST_TIME,
            "timeEpoch": REQUEST_EPOCH_MS,
        },
        "pathParameters": {"source": entry.source},
        "body": text,
        "isBase64Encoded": False,
    }


def render(entry: Entry, signature: dict[str, str]) -> str:
    return json.dumps(event_for(entry, signature), indent=2, ensure_ascii=False) + "\n"


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
            headers={"x-github-event": event, "x-github-delivery": ""},
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
# Every registered source's fixtures, then the demo. To add events of your own, append
# Entry(source=..., payload=..., out="events/<folder>/<name>.json", headers={...}) in entries().
def entries() -> list[Entry]:
    return [e for source in registered() for e in fixture_entries(source)] + demo_entries()


def main(argv: list[str]) -> int:
    check = "--check" in argv
    sources = json.loads(valuestream(["sources"]))
    if [s["name"] for s in sources] != registered():
        raise SystemExit("make-events: the binary's sources are not those of src/sources/mod.rs")
    secrets = local_secrets(sources)
    all_entries = entries()
    seen: set[str] = set()
    stale = []
    files = [
        (str(LOCAL_SECRETS.relative_to(REPO)), json.dumps(secrets, indent=2) + "\n"),
        *((e.out, render(e, s)) for e, s in zip(all_entries, signatures(all_entries, secrets))),
    ]
    for out, text in files:
        if out in seen:
            raise SystemExit(f"make-events: two entries write {out}")
        seen.add(out)
        target = REPO / out
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        if check:
            stale.append(out)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {out}")
    if check and stale:
        print(
            "make-events: these event files are missing or stale; run python3 scripts/make-events.py:\n  "
            + "\n  ".join(stale),
            file=sys.stderr,
        )
        return 1
    if not check:
        print(f"{len(all_entries)} event files up to date under {EVENTS.relative_to(REPO)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
