"""A tiny HTTP endpoint for S3 event notifications (S3-compatible stores such as MinIO post
them to a webhook; AWS cannot: it sends to a queue, see sqs.py). POST an event message
(any form ``s3_events`` knows) to any path: 200 with ``{"accepted": n}``; 400 for a body that
is no S3 event. GET and HEAD answer 200 (health; MinIO probes its targets with HEAD).

With a token, a POST must carry ``Authorization: Bearer <token>`` (what MinIO sends for
MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN), else 401; without one it listens on loopback only. It only
hands the payload to ``handle`` (which notes keys and returns at once); the sensor's worker
thread does the rest, so a slow Prefect never makes the sender wait or retry.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import SecretStr

from flows.network import is_loopback

log = logging.getLogger("styledrop.sensor")

MAX_BODY = 1 << 20  # S3 notifications are small; refuse anything silly


class NotificationServer:
    def __init__(
        self, host: str, port: int, handle: Callable[[bytes], int], token: SecretStr | None = None
    ) -> None:
        secret = token.get_secret_value() if token is not None else ""
        if not secret and not is_loopback(host):
            raise ValueError(
                f"the S3 notification webhook would take unauthenticated posts on {host}: set "
                "STYLEDROP_S3_WEBHOOK_TOKEN (MinIO sends it as MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN), "
                "or STYLEDROP_S3_WEBHOOK_PORT=0 for no webhook"
            )
        handler = _handler_class(handle, f"Bearer {secret}".encode() if secret else None)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="styledrop-webhook", daemon=True
        )
        self._thread.start()
        log.info("S3 notification webhook listening on %s", self.url)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)


def _handler_class(
    handle: Callable[[bytes], int], authorization: bytes | None
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._reply(200, {"ok": True})

        def do_HEAD(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            if authorization is not None:
                given = (self.headers.get("Authorization") or "").strip().encode()
                if not hmac.compare_digest(given, authorization):
                    log.warning("webhook: refused a POST without the right bearer token")
                    self._reply(401, {"error": "missing or wrong bearer token"}, bearer=True)
                    return
            text = (self.headers.get("Content-Length") or "0").strip()
            length = int(text) if text.isdigit() else -1
            if length < 0:
                self._reply(400, {"error": "a POST needs a Content-Length"})
                return
            if length > MAX_BODY:
                self._reply(413, {"error": f"body over {MAX_BODY} bytes"})
                return
            body = self.rfile.read(length)
            try:
                accepted = handle(body)
            except ValueError as exc:
                log.warning("webhook: ignored a body that is no S3 event: %s", exc)
                self._reply(400, {"error": f"not an S3 notification: {exc}"})
                return
            self._reply(200, {"accepted": accepted})

        def _reply(self, code: int, body: dict[str, Any], bearer: bool = False) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            if bearer:
                self.send_header("WWW-Authenticate", "Bearer")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("webhook: " + format, *args)

    return Handler
