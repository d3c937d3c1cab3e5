"""The floor peer of scripts/bench-load: a minimal webhook receiver (gunicorn, 2 workers) that
verifies the GitHub HMAC and appends the body to a file. PEER_SECRET and PEER_OUT configure it;
PEER_FSYNC=1 makes it durable before it answers, as `serve` is (an fsync after each append).

run: gunicorn -w 2 -b 127.0.0.1:PORT --chdir scripts/bench peer:app
"""
import hashlib
import hmac
import os

SECRET = os.environ["PEER_SECRET"].encode()
OUT = open(os.environ["PEER_OUT"], "ab")
FSYNC = os.environ.get("PEER_FSYNC") == "1"


def app(environ, start_response):
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size)
    want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    got = environ.get("HTTP_X_HUB_SIGNATURE_256", "")
    if not hmac.compare_digest(want, got):
        start_response("401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"bad signature\n"]
    OUT.write(body + b"\n")
    OUT.flush()
    if FSYNC:
        os.fsync(OUT.fileno())
    start_response("202 Accepted", [("Content-Type", "text/plain")])
    return [b"accepted\n"]
