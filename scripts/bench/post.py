#!/usr/bin/env python3
"""Posts every delivery of a deliveries.py file exactly once to a running serve, from C threads
(one keep-alive connection each), in file order or shuffled with a seed; prints how they were
answered as JSON ({"<HTTP status> <answer status>": count}) and exits 1 on any non-2xx answer.

usage: post.py FILE PORT C [SEED]
"""
import collections
import http.client
import json
import random
import sys
import threading


def main():
    path, port, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rows = [line.rstrip("\n").split("\t", 3) for line in open(path)]
    if len(sys.argv) > 4:
        random.Random(int(sys.argv[4])).shuffle(rows)
    lock = threading.Lock()
    next_row = [0]
    answers = collections.Counter()

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                i = next_row[0]
                next_row[0] += 1
            if i >= len(rows):
                return
            event, delivery, signature, body = rows[i]
            conn.request("POST", "/webhooks/github", body=body.encode(), headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": event,
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": signature,
            })
            resp = conn.getresponse()
            text = resp.read()
            try:
                status = json.loads(text).get("status", "?")
            except ValueError:
                status = "?"
            with lock:
                answers[f"{resp.status} {status}"] += 1

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(dict(sorted(answers.items()))))
    sys.exit(0 if all(k.startswith("2") for k in answers) else 1)


if __name__ == "__main__":
    main()
