"""What it takes to leave loopback: the one rule `styledrop up` and `styledrop dashboard` apply
before binding anything a network can reach (docs/security.md)."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from flows.api_auth import AUTH_VARIABLE, SERVER_AUTH_VARIABLE
from flows.settings import Settings

SIGN_IN_VARIABLES = (
    "STYLEDROP_OIDC_METADATA_URL, STYLEDROP_OIDC_CLIENT_ID and STYLEDROP_OIDC_CLIENT_SECRET"
)


def is_loopback(host: str | None) -> bool:
    """True for an interface only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    host = (host or "").strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that may resolve to anything


def reachable(settings: Settings, host: str | None = None) -> bool:
    """Whether browsers on other machines reach the stack: it binds a non-loopback interface
    (in a container: its ports are published on one, STYLEDROP_PUBLISHED_ON), or the
    dashboard's public address (behind a proxy) is not on this machine."""
    public = urlsplit(settings.dashboard_url).hostname if settings.dashboard_url else None
    bound_outside = not is_loopback(settings.published_on or host or settings.host)
    return bound_outside or (public is not None and not is_loopback(public))


def api_protected() -> bool:
    return bool(os.environ.get(AUTH_VARIABLE) or os.environ.get(SERVER_AUTH_VARIABLE))


def exposure_problem(settings: Settings, *, api: bool, host: str | None = None) -> str | None:
    """Why the stack (``api``: with its Prefect server) must not be reachable from the network
    as configured, naming what to set; None when it may."""
    if not reachable(settings, host):
        return None
    missing = []
    if api and not api_protected():
        missing.append(f"{AUTH_VARIABLE} (the Prefect API's password)")
    if not settings.sign_in:
        missing.append(f"the dashboard sign-in ({SIGN_IN_VARIABLES})")
    if not missing:
        return None
    where = host or settings.host
    return (
        f"{where} is reachable from other machines, which would open "
        f"{'the Prefect API and ' if api else ''}the dashboard to anyone there: set "
        f"{' and '.join(missing)}, or keep STYLEDROP_HOST=127.0.0.1 (docs/security.md)."
    )
