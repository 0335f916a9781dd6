"""`styledrop dashboard`: the Streamlit dashboard, with previews and downloads served by the
same server (`dashboard/server.py`: Streamlit's `st.App` plus the read-only file route).

Streamlit runs as a child process (its own `streamlit run`, so its flags and signal handling
are the documented ones). Ctrl-C or SIGTERM stops it. Telemetry is off:
`--browser.gatherUsageStats=false`, DO_NOT_TRACK=1 and PREFECT_SERVER_ANALYTICS_ENABLED=false.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).resolve().parent.parent.parent / "dashboard" / "server.py"


def register(parser: argparse.ArgumentParser) -> None:
    from flows.settings import get_settings

    s = get_settings()
    parser.add_argument("--host", default=s.host, help=f"interface to bind ({s.host})")
    parser.add_argument(
        "--port", type=int, default=s.dashboard_port, help=f"dashboard port ({s.dashboard_port})"
    )


def streamlit_command(host: str, port: int, max_upload_mb: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(SERVER),
        "--browser.gatherUsageStats=false",
        "--server.headless=true",
        f"--server.address={host}",
        f"--server.port={port}",
        f"--server.maxUploadSize={max_upload_mb}",
        # A service, not a development session: no file watcher polling the whole tree.
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        # Users of the service get no Deploy/Rerun developer menu.
        "--client.toolbarMode=minimal",
    ]


def child_env(port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
        # The pages make preview links with settings.files_url, which names this port.
        STYLEDROP_DASHBOARD_PORT=str(port),
    )
    return env


def run(args: argparse.Namespace) -> int:
    from flows.settings import get_settings

    s = get_settings()
    print(f"dashboard: http://{args.host}:{args.port}", flush=True)
    if not s.storage_root.startswith(("s3://", "s3a://")):
        print(f"files: http://{args.host}:{args.port}/files/ -> {s.storage_root}", flush=True)
    proc = subprocess.Popen(
        streamlit_command(args.host, args.port, s.max_upload_mb), env=child_env(args.port)
    )

    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            forwarded.append(signum)
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        code = proc.wait()
        # Uvicorn (under st.App) shuts down cleanly, then re-raises the signal it was stopped
        # with: dying of the signal we sent is a clean stop, not a failure.
        return 0 if code < 0 and -code in forwarded else code
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
