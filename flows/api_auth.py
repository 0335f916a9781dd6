"""Prefect's own API auth, as styledrop uses it: the server started with
PREFECT_SERVER_API_AUTH_STRING answers only clients that send the same string
(PREFECT_API_AUTH_STRING, as HTTP basic auth; Prefect's clients and events client send it).

Here: the one variable name, the one sentence a refused client says (never a traceback),
and the header for the few raw HTTP probes of `styledrop up`.
"""

from __future__ import annotations

import base64

import httpx

# What clients set; `styledrop up` passes it to its server as PREFECT_SERVER_API_AUTH_STRING.
AUTH_VARIABLE = "PREFECT_API_AUTH_STRING"
SERVER_AUTH_VARIABLE = "PREFECT_SERVER_API_AUTH_STRING"


def auth_headers(secret: str | None) -> dict[str, str]:
    """The header Prefect's client sends for ``secret`` (none without one)."""
    if not secret:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}


def refused_sentence(api_url: str) -> str:
    """What a client the server refused says: one sentence that names the variable."""
    return (
        f"The Prefect API at {api_url} refused this client's credentials: set "
        f"{AUTH_VARIABLE} to the auth string its server was started with."
    )


def refusal(exc: BaseException) -> str | None:
    """``refused_sentence`` when ``exc`` (or its cause, or one of a group) is the API's
    401/403, else None."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, httpx.HTTPStatusError) and e.response.status_code in (401, 403):
            url = e.request.url
            return refused_sentence(f"{url.scheme}://{url.netloc.decode()}")
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
        todo += list(getattr(e, "exceptions", ()))
    return None
