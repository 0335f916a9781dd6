"""Signed file links: how the dashboard's ``/files/`` route knows a link was handed out by
styledrop, as S3's presigned URLs do for S3 storage.

A link carries ``?exp=<unix seconds>&sig=<HMAC-SHA256 over path and expiry>``; the route
serves the file only while ``exp`` lies ahead and the signature matches (compared in constant
time). The secret is ``STYLEDROP_LINK_SECRET``, or one made once in the stack's home
(``flows.stack_secrets``) and shared by the flow (which makes the links) and the dashboard
(which checks them). Lifetime: ``STYLEDROP_PRESIGN_EXPIRY_S``, as for S3.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlencode

from flows.settings import Settings
from flows.stack_secrets import stack_secret

# The file in the stack's home holding the generated secret.
SECRET_FILE = "link-secret"


def link_key(settings: Settings) -> bytes:
    """The signing key: the configured secret, else the stack's own."""
    secret = settings.link_secret or stack_secret(settings, SECRET_FILE)
    return secret.get_secret_value().encode()


def signature(key: bytes, path: str, expires: int) -> str:
    """The signature of ``path`` (as the route receives it: decoded, below /files/) until
    ``expires``."""
    mac = hmac.new(key, f"{path}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def signed_query(key: bytes, path: str, lifetime_s: int, now: float | None = None) -> str:
    """The query string that makes a link to ``path`` valid for ``lifetime_s`` seconds."""
    expires = int(now if now is not None else time.time()) + lifetime_s
    return urlencode({"exp": expires, "sig": signature(key, path, expires)})


def valid(
    key: bytes, path: str, expires: str | None, sig: str | None, now: float | None = None
) -> bool:
    """True when ``sig`` signs ``path`` until ``expires`` and that time is still ahead."""
    if not expires or not sig or not expires.isdigit() or len(expires) > 12:
        return False
    if int(expires) <= (now if now is not None else time.time()):
        return False
    return hmac.compare_digest(signature(key, path, int(expires)).encode(), sig.encode())
