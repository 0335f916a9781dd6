"""`styledrop dashboard`: the Streamlit dashboard plus the read-only file route for previews.

The file route runs on a thread of this process; Streamlit runs as a child process (its own
`streamlit run`, so its flags and signal handling are the documented ones). Ctrl-C or SIGTERM
stops both. Telemetry is off in both: `--browser.gatherUsageStats=false`, DO_NOT_TRACK=1 and
PREFECT_SERVER_ANALYTICS_ENABLED=false.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent.parent.parent / "dashboard" / "app.py"


def register(parser: argparse.ArgumentParser) -> None:
    from flows.settings import get_settings

    s = get_settings()
    parser.add_argument("--host", default=s.host, help=f"interface to bind ({s.host})")
    parser.add_argument(
        "--port", type=int, default=s.dashboard_port, help=f"dashboard port ({s.dashboard_port})"
    )
    parser.add_argument(
        "--files-port", type=int, default=s.files_port, help=f"file route port ({s.files_port})"
    )
    parser.add_argument(
        "--no-files",
        action="store_true",
        help="do not start the file route (another process, e.g. `styledrop up`, serves it)",
    )


def streamlit_command(host: str, port: int, max_upload_mb: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
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


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
    )
    return env


def run(args: argparse.Namespace) -> int:
    from flows.settings import get_settings

    s = get_settings()
    server = None
    if not args.no_files:
        if s.storage_root.startswith(("s3://", "s3a://")):
            print("storage is on S3: previews use presigned URLs, no file route started")
        else:
            from dashboard.files import serve_files

            server = serve_files(s.storage_root, args.host, args.files_port)
            print(f"file route: http://{args.host}:{server.server_address[1]} -> {s.storage_root}")

    print(f"dashboard: http://{args.host}:{args.port}", flush=True)
    proc = subprocess.Popen(
        streamlit_command(args.host, args.port, s.max_upload_mb), env=child_env()
    )

    def forward(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        if server is not None:
            server.shutdown()
            server.server_close()
