#!/usr/bin/env python3
"""A Tasklane HTTP function in Python, standard library only.

Tasklane POSTs each task's CloudEvent in binary mode: the attributes are
ce-* headers (ce-id, ce-source, ce-type, ...), the data is the body, and
Tasklane adds Tasklane-Task-Id, Tasklane-Attempt (1-based) and
Tasklane-Deadline (RFC 3339; the attempt is cut off then). The answer
classifies the attempt: 2xx succeeds with the body as the task's result,
429 and 503 are throttled (retried after Retry-After), 408 and other 5xx
are retried with backoff, and other 4xx end the task.

This function prints one line per call and, with the Tasklane-Task-Token
header, posts the same line to the task's log (POST /v1/tasks/{id}/logs on
TASKLANE_URL, default http://127.0.0.1:8080, with the token as bearer:
`tasklane tasks logs ID` shows it). It answers
    {"runtime": "python", "event_id": ..., "type": ..., "data": <the event data>}
When the event data is a JSON object with "throttle": true, the first call
of each task is answered 429 with Retry-After: 1 instead (Tasklane retries
it without using up an attempt), and later calls succeed.

    HOST=127.0.0.1 PORT=8000 TASKLANE_URL=http://127.0.0.1:8080 python3 examples/functions/python/server.py

PORT=0 picks a free port; the "listening on" line names it.
"""

import json
import os
import sys
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY_BYTES = 1 << 20  # larger events are refused with 413
MAX_REMEMBERED = 10000  # task ids remembered for "throttle once"
TASKLANE_URL = os.environ.get("TASKLANE_URL", "http://127.0.0.1:8080").rstrip("/")
LOG_TIMEOUT_SECONDS = 5  # a log line is best effort: the answer does not wait longer

_throttled = OrderedDict()
_lock = threading.Lock()


def throttle_first_call(task_id):
    """True the first time task_id is seen (bounded memory)."""
    with _lock:
        if task_id in _throttled:
            return False
        _throttled[task_id] = True
        while len(_throttled) > MAX_REMEMBERED:
            _throttled.popitem(last=False)
        return True


def log(msg):
    print(msg, flush=True)


def post_task_log(task_id, token, line):
    """Append line to the task's log with the attempt's task token.

    Best effort: a failure is printed, and the attempt is answered anyway.
    """
    if not task_id or not token:
        return
    req = urllib.request.Request(
        "%s/v1/tasks/%s/logs" % (TASKLANE_URL, urllib.request.quote(task_id, safe="")),
        data=json.dumps({"lines": [line]}).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
        method="POST")
    try:
        with urllib.request.urlopen(req, timeout=LOG_TIMEOUT_SECONDS) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as e:
        log("task=%s posting the log line failed: %s" % (task_id, e))


class Handler(BaseHTTPRequestHandler):
    server_version = "tasklane-example-python"

    def do_POST(self):
        h = self.headers
        event_id, event_type = h.get("ce-id"), h.get("ce-type")
        if not h.get("ce-specversion") or not event_id or not event_type:
            return self.answer(400, {"error": "not a binary-mode CloudEvent: ce-specversion, ce-id and ce-type are required"})
        try:
            length = int(h.get("Content-Length") or 0)
        except ValueError:
            return self.answer(400, {"error": "bad Content-Length"})
        if length < 0 or length > MAX_BODY_BYTES:
            return self.answer(413, {"error": "event data over %d bytes" % MAX_BODY_BYTES})
        body = self.rfile.read(length)
        data = body.decode("utf-8", errors="replace")
        if "json" in (h.get("Content-Type") or "") and body:
            try:
                data = json.loads(body)
            except ValueError:
                return self.answer(400, {"error": "event data is not valid JSON"})

        task_id = h.get("Tasklane-Task-Id", "")
        line = "task=%s attempt=%s deadline=%s event=%s type=%s source=%s" % (
            task_id, h.get("Tasklane-Attempt", ""), h.get("Tasklane-Deadline", ""),
            event_id, event_type, h.get("ce-source", ""))
        token = h.get("Tasklane-Task-Token", "")
        if isinstance(data, dict) and data.get("throttle") is True and throttle_first_call(task_id):
            log(line + " answer=429")
            post_task_log(task_id, token, "python: throttled, try again in 1s")
            return self.answer(429, {"error": "throttled, try again in 1s"}, {"Retry-After": "1"})
        log(line + " answer=200")
        post_task_log(task_id, token, "python: handled event %s" % event_id)
        self.answer(200, {"runtime": "python", "event_id": event_id, "type": event_type, "data": data})

    def answer(self, status, obj, headers=None):
        b = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(b)

    def log_message(self, fmt, *args):  # one line per call is printed above
        pass


def main():
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    srv = ThreadingHTTPServer((host, port), Handler)
    srv.timeout = 30
    log("listening on %s:%d" % srv.server_address[:2])
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    sys.exit(main())
