"""`styledrop up`: the whole service on this machine, nothing outside it needed.

    Prefect server (SQLite in <data_dir>/.styledrop/prefect)
      -> `styledrop worker`     the warm worker (model loaded once) for stylize/stylize
      -> `styledrop watch`      <data_dir>/inbox/ -> outputs/
      -> `styledrop dashboard`  Streamlit, previews and downloads on one port

Every port is checked and a lock taken before anything starts, so a second `up` or a taken
port gives one clear message instead of half a stack. Children log to
<data_dir>/.styledrop/logs/<name>.log; <data_dir>/.styledrop/up.json says what runs.

Decision: a child that dies after startup stops the whole stack (exit 1, with the tail of its
log) rather than being restarted: a half-working stack that hides a crash loop is worse than
a clear stop, and whatever supervises `up` (systemd, a container) restarts it whole.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from engine.images import write_atomic
from flows import stack
from flows.api_auth import AUTH_VARIABLE, SERVER_AUTH_VARIABLE, auth_headers
from flows.network import exposure_problem
from flows.prefect_api import local_api_url
from flows.samples import sample_outcome, seed_samples
from flows.settings import Settings, get_settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-samples",
        action="store_true",
        help="do not copy the demo images from samples/ into the inbox on the first start",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="exit (stopping everything) once the samples seeded by this start are done; "
        "exit code 1 if one failed. Without samples to wait for: once the stack is up",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="seconds each part may take to become ready before `up` gives up (180)",
    )


class Layout:
    """Where `up` keeps its state, all under <data_dir>/.styledrop/."""

    def __init__(self, settings: Settings) -> None:
        self.data_dir = settings.data_dir.resolve()
        self.state = settings.stack_home
        self.logs = self.state / "logs"
        self.lock = self.state / "up.lock"
        self.status = self.state / "up.json"
        self.prefect_home = (settings.prefect_home or self.state / "prefect").resolve()


def error(message: str) -> int:
    print(f"styledrop: error: {message}", file=sys.stderr, flush=True)
    return 1


def say(message: str) -> None:
    print(f"styledrop: {message}", flush=True)


# --- what to run ----------------------------------------------------------------------------


def child_env(settings: Settings, layout: Layout) -> dict[str, str]:
    api = local_api_url(settings)
    env = dict(os.environ)  # with styledrop's telemetry settings (flows/__init__.py)
    # From the environment only: the stack runs on a Prefect home of its own, so a profile
    # elsewhere does not apply to it. The server's variable alone protects the stack too.
    secret = os.environ.get(AUTH_VARIABLE) or os.environ.get(SERVER_AUTH_VARIABLE)
    if secret:
        env[AUTH_VARIABLE] = secret  # every child sends it
    env.update(
        PREFECT_API_URL=api,
        PREFECT_UI_API_URL=api,
        PREFECT_HOME=str(layout.prefect_home),
        # The worker's poll for new runs (a run that ends asks for the next one at once).
        PREFECT_WORKER_QUERY_SECONDS="1",
        # Children may start elsewhere (flow runs get a temporary working directory).
        STYLEDROP_DATA_DIR=str(layout.data_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


def plan(settings: Settings, layout: Layout) -> tuple[stack.ChildSpec, list[stack.ChildSpec]]:
    """The server, then what needs it."""
    import httpx

    env = child_env(settings, layout)
    api = env["PREFECT_API_URL"]
    headers = auth_headers(env.get(AUTH_VARIABLE))
    host = settings.host
    styledrop = [sys.executable, "-m", "flows.cli"]

    def ok(url: str, *, below: int = 300) -> bool:
        return httpx.get(url, headers=headers, timeout=2).status_code < below

    server_env = dict(env)
    server_env.pop("PREFECT_API_URL")  # the server is the API; it must not look for another
    # With an auth string the server answers only clients that send it (Prefect's basic auth).
    server_env.pop(SERVER_AUTH_VARIABLE, None)
    if env.get(AUTH_VARIABLE):
        server_env[SERVER_AUTH_VARIABLE] = env[AUTH_VARIABLE]
    server = stack.ChildSpec(
        "prefect-server",
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            host,
            "--port",
            str(settings.prefect_port),
        ],
        server_env,
        ready=lambda: ok(f"{api}/health"),
        stop_signal=signal.SIGINT,  # its documented stop ("Press CTRL+C to stop")
    )
    dashboard_url = f"http://{host}:{settings.dashboard_port}"

    def dashboard_ready() -> bool:
        return ok(f"{dashboard_url}/_stcore/health")

    others = [
        # It registers the deployment and the pool, then loads the model: ready once it polls.
        stack.ChildSpec(
            "worker",
            [*styledrop, "worker"],
            env,
            ready=lambda: worker_online(api, settings.work_pool, headers),
        ),
        # The sensor lists the inbox's backlog when it starts: being alive is enough.
        stack.ChildSpec("watch", [*styledrop, "watch"], env),
        stack.ChildSpec(
            "dashboard",
            [
                *styledrop,
                "dashboard",
                "--host",
                host,
                "--port",
                str(settings.dashboard_port),
            ],
            env,
            ready=dashboard_ready,
        ),
    ]
    return server, others


def worker_online(api: str, pool: str, headers: dict[str, str]) -> bool:
    import httpx

    url = f"{api}/work_pools/{pool}/workers/filter"
    workers = httpx.post(url, json={}, headers=headers, timeout=2)
    return workers.status_code == 200 and any(w["status"] == "ONLINE" for w in workers.json())


# --- before starting ------------------------------------------------------------------------


def preflight(settings: Settings, layout: Layout, lock: stack.StackLock) -> str | None:
    """Why `up` must not start, or None. Takes the lock when it may."""
    exposed = exposure_problem(settings, api=True)
    if exposed:
        return exposed
    holder = lock.acquire()
    if holder is not None:
        who = f"pid {holder}" if holder else "pid unknown"
        how = f"Ctrl-C in its terminal, or `kill {holder}`" if holder else "Ctrl-C in its terminal"
        return (
            f"another `styledrop up` ({who}) is running with this data folder "
            f"({layout.data_dir}). Stop it first ({how}), or use another STYLEDROP_DATA_DIR."
        )
    ports = {
        "STYLEDROP_PREFECT_PORT": settings.prefect_port,
        "STYLEDROP_DASHBOARD_PORT": settings.dashboard_port,
    }
    if len(set(ports.values())) < len(ports):
        return f"two services are set to the same port: {ports}"
    for variable, port in ports.items():
        why = stack.port_in_use(settings.host, port)
        if why:
            return (
                f"port {port} on {settings.host} is {why} (needed for {variable}). Is another "
                f"styledrop up running? Stop it, or set {variable} to a free port."
            )
    return None


def describe_backbone(settings: Settings) -> str:
    """Which features the engine will use, as the engine says (nothing loaded), before any job
    runs; a warning unless it is what was asked for."""
    from engine.backbone import VGG19_LABEL, plan_backbone

    label, reason = plan_backbone(settings.backbone, settings.weights)
    if label == VGG19_LABEL or (label and settings.backbone != "auto"):
        return f"backbone: {label}: {reason}"
    return f"WARNING: backbone {label or 'unavailable'}: {reason}"


# --- running --------------------------------------------------------------------------------


def on_stop(signum: int, count: int) -> None:
    if count == 1:
        print(f"\nstyledrop: {signal.Signals(signum).name}: stopping...", flush=True)


def start_all(
    specs: list[stack.ChildSpec],
    layout: Layout,
    children: list[stack.Child],
    stop: stack.Signals,
    timeout: float,
) -> None:
    """Start ``specs`` (recorded in ``children`` at once, so they are stopped whatever
    happens next) and wait until each is ready."""
    started = [stack.start_child(spec, layout.logs) for spec in specs]
    children.extend(started)
    stack.wait_ready(started, timeout, cancelled=lambda: bool(stop))


def set_up_server(settings: Settings, layout: Layout) -> None:
    """The lost-run automation (runs of a killed `up` are rescheduled and picked up by the next
    one) and the alerts on our server; the worker registers the pool and the deployment. Best
    effort: the stack works without them."""
    # This process talks to its own server only, like the children.
    env = child_env(settings, layout)
    for key in ("PREFECT_API_URL", AUTH_VARIABLE, "PREFECT_HOME"):
        if key in env:
            os.environ[key] = env[key]
    from flows.server_setup import set_up

    try:
        for done in set_up(settings, pool=None, update=False, alerts=True):
            say(done)
    except Exception as exc:  # noqa: BLE001
        say(f"could not set up the lost-run automation and the alerts: {exc}")


def write_status(layout: Layout, children: list[stack.Child], urls: dict[str, str]) -> None:
    status = {
        "pid": os.getpid(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "children": {
            c.name: {"pid": c.pid, "log": str(c.log), "argv": c.spec.argv} for c in children
        },
        "urls": urls,
    }
    write_atomic(layout.status, json.dumps(status, indent=2).encode())


def print_urls(settings: Settings, layout: Layout) -> dict[str, str]:
    urls = {
        "prefect_ui": settings.prefect_ui_url,
        "prefect_api": local_api_url(settings),
        "dashboard": f"http://{settings.host}:{settings.dashboard_port}",
        "inbox": str(layout.data_dir / "inbox"),
        "outputs": settings.storage_root,
    }
    if not settings.storage_root.startswith(("s3://", "s3a://")):
        urls["files"] = settings.files_url  # the dashboard's own file route
    width = max(len(k) for k in urls) + 1
    say("up. Ctrl-C stops everything.")
    for key, value in urls.items():
        print(f"  {key.replace('_', ' '):<{width}} {value}", flush=True)
    return urls


def died_message(child: stack.Child, when: str) -> str:
    code = child.proc.returncode
    tail = "\n".join(f"  | {line}" for line in child.tail().splitlines())
    return f"{child.name} {when} (exit code {code}). Last lines of {child.log}:\n{tail}"


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    layout = Layout(settings)
    lock = stack.StackLock(layout.lock)
    problem = preflight(settings, layout, lock)
    if problem:
        return error(problem)

    stop = stack.Signals(on_stop)
    children: list[stack.Child] = []
    code = 0
    try:
        layout.prefect_home.mkdir(parents=True, exist_ok=True)
        say(describe_backbone(settings))
        say(f"data: {layout.data_dir}  (logs: {layout.logs}; Prefect: {layout.prefect_home})")
        server, others = plan(settings, layout)
        say("starting the Prefect server...")
        start_all([server], layout, children, stop, args.timeout)
        set_up_server(settings, layout)
        say("starting the worker, watch and the dashboard...")
        start_all(others, layout, children, stop, args.timeout)
        urls = print_urls(settings, layout)
        write_status(layout, children, urls)
        seeded = [] if args.no_samples else seed_samples(layout.data_dir, layout.state)
        if seeded:
            say(f"stylising the samples {', '.join(seeded)} (copied into the inbox)")
        code = supervise(children, layout, seeded, stop, once=args.once)
    except stack.StartupCancelled:
        code = 0
    except stack.StartupError as exc:
        code = error(died_message(exc.child, exc.reason))
    finally:
        if children:
            say("stopping " + ", ".join(c.name for c in reversed(children)) + "...")
            # Everything but the server first, so their last words reach it; then the server.
            report = stack.stop_children(children[1:][::-1], settings.stop_timeout_s)
            report += stack.stop_children(children[:1], settings.stop_timeout_s)
            for line in report:
                print(f"  {line}", flush=True)
        layout.status.unlink(missing_ok=True)
        lock.release()
    return code


def supervise(
    children: list[stack.Child], layout: Layout, seeded: list[str], stop: stack.Signals, *,
    once: bool,
) -> int:
    """Watch the children until a signal, a death, or (``once``) the samples are done."""
    pending = list(seeded)
    failed: list[str] = []

    def samples_done() -> bool:
        for name in list(pending):
            outcome = sample_outcome(layout.data_dir, name)
            if outcome.done:
                pending.remove(name)
                failed.extend([] if outcome.ok else [name])
                verdict = "done -> " if outcome.ok else "FAILED: "
                say(f"sample {name}: {verdict}{outcome.detail}")
        if once and not pending:
            say("--once: done")
        return once and not pending

    died = stack.supervise(children, stop, samples_done)
    if died is not None:
        return error(died_message(died, "stopped unexpectedly"))
    return 0 if stop else int(bool(failed))
