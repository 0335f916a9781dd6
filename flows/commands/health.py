"""`styledrop health`: exit 0 when the styledrop part running here serves, else 1 with one line
saying what does not. It is the container image's HEALTHCHECK, so one check fits every part.

The part (worker, watch, dashboard, up) is the argument, else the styledrop command with the
lowest process id on this machine (in a container: the one it was started with); that
command's own flags (--port, --pool, --name) are read from its command line with its own parser.

- worker: this machine's worker(s) are ONLINE in their pool (their heartbeats reach Prefect);
- watch: the Prefect API answers (the sensor can submit);
- dashboard: the dashboard answers on its port;
- up: all three, on the local stack.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

from flows.settings import Settings

PARTS = ("worker", "watch", "dashboard", "up")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "part",
        nargs="?",
        choices=PARTS,
        help="what to check; default: the styledrop command running here",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request (10)")


def styledrop_args(argv: list[str]) -> list[str] | None:
    """The arguments after `styledrop` (the script or `python -m flows.cli`) in a command
    line, or None when it is not a styledrop command."""
    for i, arg in enumerate(argv):
        if Path(arg).name == "styledrop" or (arg == "flows.cli" and argv[i - 1 : i] == ["-m"]):
            return argv[i + 1 :]
    return None


def running_command(proc: Path = Path("/proc")) -> list[str] | None:
    """``[part, flags...]`` of the styledrop command with the lowest pid here, or None."""
    found: list[tuple[int, list[str]]] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        rest = styledrop_args([a.decode(errors="replace") for a in raw.split(b"\0") if a])
        if rest and rest[0] in PARTS:
            found.append((int(entry.name), rest))
    return min(found)[1] if found else None


def command_args(part: str, flags: list[str]) -> argparse.Namespace:
    """``flags`` as the part's own parser reads them (its defaults for the rest)."""
    parser = argparse.ArgumentParser(add_help=False)
    importlib.import_module(f"flows.commands.{part}").register(parser)
    return parser.parse_known_args(flags)[0]


def api_problem(timeout: float) -> str | None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True, httpx_settings={"timeout": timeout}) as client:
        error = client.api_healthcheck()
    return None if error is None else f"the Prefect API does not answer: {error}"


def worker_problem(pool: str, name: str, timeout: float) -> str | None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True, httpx_settings={"timeout": timeout}) as client:
        workers = client.read_workers_for_work_pool(pool)
    ours = [w for w in workers if w.name == name or w.name.startswith(f"{name}-gpu")]
    if any(w.status == "ONLINE" for w in ours):
        return None
    return f"no worker {name!r} (or {name}-gpu<id>) is ONLINE in the work pool {pool!r}"


def dashboard_problem(host: str, port: int, timeout: float) -> str | None:
    import httpx

    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = f"http://{host}:{port}/_stcore/health"
    try:
        answer = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return f"the dashboard does not answer at {url}: {exc}"
    return None if answer.status_code == 200 else f"{url} answered {answer.status_code}"


def problems(part: str, args: argparse.Namespace, settings: Settings, timeout: float) -> list[str]:
    from flows.commands.worker import machine_name

    found: list[str | None] = []
    if part in ("watch", "worker", "up"):
        found.append(api_problem(timeout))
    if part in ("worker", "up") and not any(found):
        pool = getattr(args, "pool", settings.work_pool)
        name = machine_name(getattr(args, "name", None), settings)
        found.append(worker_problem(pool, name, timeout))
    if part in ("dashboard", "up"):
        host = getattr(args, "host", settings.host)
        port = getattr(args, "port", settings.dashboard_port)
        found.append(dashboard_problem(host, port, timeout))
    return [p for p in found if p]


def run(args: argparse.Namespace) -> int:
    from flows.prefect_api import connected
    from flows.settings import get_settings

    command = [args.part] if args.part else running_command()
    if not command:
        print("unhealthy: no styledrop worker, watch, dashboard or up runs here", flush=True)
        return 1
    part = command[0]
    settings = get_settings()
    try:
        with connected(settings):  # the Prefect API the parts themselves use
            found = problems(part, command_args(part, command[1:]), settings, args.timeout)
    except Exception as exc:  # noqa: BLE001 - one line for the health log, not a traceback
        from flows.api_auth import refusal

        found = [refusal(exc) or f"{type(exc).__name__}: {exc}"]
    if found:
        print(f"unhealthy ({part}): " + "; ".join(found), flush=True)
        return 1
    print(f"healthy ({part})", flush=True)
    return 0
