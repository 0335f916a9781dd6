"""Secrets the local stack makes for itself when none is configured: random, written once into
the stack's home (``<data_dir>/.styledrop/``, mode 0600), then read by every process of the
stack (the worker signs file links with the same secret the dashboard checks them with).

Never logged, never printed: callers get a SecretStr.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from flows.settings import Settings


def stack_secret(settings: Settings, name: str) -> SecretStr:
    """The secret in ``<stack home>/<name>``, made on first use. Two processes that start at
    once agree: the file appears complete or not at all (written aside, then hard-linked into
    place, which fails if another process got there first)."""
    path = settings.stack_home / name
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        with contextlib.suppress(FileExistsError):  # another process made it first: use it
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> SecretStr:
    value = path.read_text().strip()
    if not value:  # made only by hand: an empty key would sign for anyone
        raise ValueError(f"{path} is empty; delete it and styledrop makes a new secret")
    return SecretStr(value)
