"""Test instrumentation, loaded by Python at start-up when this folder is on PYTHONPATH:
records the method and URL of every HTTP request the process makes with httpx (Prefect's
clients, the dashboard's, `up`'s probes) to the file in STYLEDROP_TEST_HTTP_LOG, one line each,
so tests/test_security_e2e.py can replay each endpoint styledrop used without credentials. It
changes nothing else; the headers (credentials) are not written."""

import os

_LOG = os.environ.get("STYLEDROP_TEST_HTTP_LOG")

if _LOG:
    import httpx

    def _record(request: "httpx.Request") -> None:
        with open(_LOG, "a") as f:  # one write per line: appends of processes do not mix
            f.write(f"{request.method} {request.url}\n")

    _send, _asend = httpx.Client.send, httpx.AsyncClient.send

    def _sync_send(self, request, *args, **kwargs):
        _record(request)
        return _send(self, request, *args, **kwargs)

    async def _async_send(self, request, *args, **kwargs):
        _record(request)
        return await _asend(self, request, *args, **kwargs)

    httpx.Client.send = _sync_send
    httpx.AsyncClient.send = _async_send
