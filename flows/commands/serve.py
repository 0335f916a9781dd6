"""`styledrop serve`: serve the `stylize/stylize` deployment from this process.

Prefect's runner (``flow.serve``) registers the deployment, polls for its runs and starts each
in a subprocess; cancelling a run from the UI/API stops it. This is what the local stack uses;
a fleet of GPU machines uses a work pool instead (``deployments/prefect.yaml``).
"""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    from flows.settings import get_settings

    s = get_settings()
    parser.add_argument(
        "--limit",
        type=int,
        default=s.serve_limit,
        help="flow runs this process starts at once; beyond the GPU slots they wait for one "
        f"(STYLEDROP_SERVE_LIMIT, {s.serve_limit})",
    )
    parser.add_argument(
        "--gpu-slots",
        type=int,
        default=s.gpu_slots,
        help=f"size of the GPU concurrency limit {s.gpu_limit!r} (STYLEDROP_GPU_SLOTS, "
        f"{s.gpu_slots})",
    )


def run(args: argparse.Namespace) -> int:
    from prefect.deployments.runner import EntrypointType

    from flows.gpu import ensure_gpu_limit
    from flows.settings import get_settings
    from flows.stylize import stylize

    settings = get_settings().model_copy(update={"gpu_slots": args.gpu_slots})
    slots = ensure_gpu_limit(settings, update=True)
    print(f"GPU concurrency limit {settings.gpu_limit!r}: {slots} slot(s)", flush=True)
    stylize.serve(
        name="stylize",
        tags=["styledrop"],
        description="Stylise one image (see flows/stylize.py).",
        limit=args.limit,
        # Nothing is scheduled; stopping the server must not leave the deployment paused.
        pause_on_shutdown=False,
        # Runs import `flows.stylize` by module name, wherever this process was started.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return 0
