"""A capture server: the operator's webhook and ping URLs, as a small real HTTP server.

It records every request (method, path, JSON body) and answers 200, or what `fail_next` says.
"""

from __future__ import annotations

import json

from tests.fakes import _Server


class CaptureServer(_Server):
    def handle(self, method, path, headers, body):
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = body
        with self._lock:
            self.requests.append({"method": method, "path": path, "json": payload,
                                  "content_type": headers.get("Content-Type")})
        failure = self._take_failure()
        if failure:
            status, hdrs, fbody = failure
            return status, hdrs, fbody if fbody is not None else {"ok": False}
        return 200, {}, {"ok": True}

    def to(self, path: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
