"""`styledrop dashboard`: the Streamlit dashboard, with previews and downloads served by the
same server (`dashboard/server.py`: Streamlit's `st.App` plus the read-only file route).

Streamlit runs as a child process (its own `streamlit run`, so its flags and signal handling
are the documented ones). Ctrl-C or SIGTERM stops it. Telemetry is off (flows/__init__.py:
STREAMLIT_BROWSER_GATHER_USAGE_STATS=false, DO_NOT_TRACK=1 in its environment).

With sign-in configured (STYLEDROP_OIDC_*), Streamlit's `[auth]` secrets go to a file only its
owner reads, in the stack's home, passed with `--secrets.files` (never into the checkout, never
on a command line or in a log). Without sign-in it binds to loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.images import write_atomic
from flows import stack

if TYPE_CHECKING:
    from flows.settings import Settings

SERVER = Path(__file__).resolve().parent.parent.parent / "dashboard" / "server.py"


def register(parser: argparse.ArgumentParser) -> None:
    from flows.settings import get_settings

    s = get_settings()
    parser.add_argument("--host", default=s.host, help=f"interface to bind ({s.host})")
    parser.add_argument(
        "--port", type=int, default=s.dashboard_port, help=f"dashboard port ({s.dashboard_port})"
    )


# Streamlit's sign-in secrets, written for each start (settings may have changed).
SECRETS_FILE = "dashboard-secrets.toml"


def streamlit_command(
    host: str, port: int, max_upload_mb: int, secrets: Path | None = None
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(SERVER),
        "--server.headless=true",
        f"--server.address={host}",
        f"--server.port={port}",
        f"--server.maxUploadSize={max_upload_mb}",
        # A service, not a development session: no file watcher polling the whole tree.
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        # Users of the service get no Deploy/Rerun developer menu.
        "--client.toolbarMode=minimal",
        *([f"--secrets.files={secrets}"] if secrets else []),
    ]


def auth_secrets(settings: Settings) -> str:
    """Streamlit's `[auth]` section (TOML) for st.login from the settings."""
    from flows.stack_secrets import stack_secret

    cookie = settings.signin_cookie_secret or stack_secret(settings, "cookie-secret")
    assert settings.oidc_client_secret is not None  # the settings check it with the rest
    values = {
        "redirect_uri": f"{settings.dashboard_base_url}/oauth2callback",
        "cookie_secret": cookie.get_secret_value(),
        "client_id": settings.oidc_client_id,
        "client_secret": settings.oidc_client_secret.get_secret_value(),
        "server_metadata_url": settings.oidc_metadata_url,
    }
    # A JSON string is a TOML basic string (the same escapes).
    return "[auth]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def write_secrets(settings: Settings) -> Path | None:
    """The `[auth]` secrets file for this start (mode 0600, replaced atomically), or None
    without sign-in (an old file is removed: no secret lingers)."""
    path = settings.stack_home / SECRETS_FILE
    if not settings.sign_in:
        path.unlink(missing_ok=True)
        return None
    return write_atomic(path, auth_secrets(settings).encode(), mode=0o600)


def child_env(host: str, port: int) -> dict[str, str]:
    # The pages make preview links with settings.files_url, which names this address.
    return {**os.environ, "STYLEDROP_HOST": host, "STYLEDROP_DASHBOARD_PORT": str(port)}


def run(args: argparse.Namespace) -> int:
    from flows.network import exposure_problem
    from flows.settings import get_settings

    s = get_settings().model_copy(update={"host": args.host, "dashboard_port": args.port})
    problem = exposure_problem(s, api=False)
    if problem:
        print(f"styledrop dashboard: error: {problem}", file=sys.stderr, flush=True)
        return 2
    secrets = write_secrets(s)
    print(f"dashboard: {s.dashboard_base_url}", flush=True)
    if secrets:
        allowed = s.signin_allowed or "everyone the provider signs in"
        print(f"sign-in: {s.oidc_metadata_url} (allowed: {allowed})", flush=True)
    if not s.storage_root.startswith(("s3://", "s3a://")):
        print(f"files: {s.files_url}/ -> {s.storage_root} (signed links only)", flush=True)
    proc = subprocess.Popen(
        streamlit_command(args.host, args.port, s.max_upload_mb, secrets),
        env=child_env(args.host, args.port),
    )

    forwarded: list[int] = []

    def forward(signum: int, _count: int) -> None:
        if proc.poll() is None:
            forwarded.append(signum)
            proc.send_signal(signum)

    stack.Signals(forward)
    try:
        code = proc.wait()
        # Uvicorn (under st.App) shuts down cleanly, then re-raises the signal it was stopped
        # with: dying of the signal we sent is a clean stop, not a failure.
        return 0 if code < 0 and -code in forwarded else code
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
