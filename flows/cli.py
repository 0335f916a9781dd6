"""`styledrop` command line. Each subcommand lives in its own module, imported only when used,
so `styledrop stylize` does not pay for importing Prefect and `styledrop up` not for Streamlit."""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

from pydantic import ValidationError

# name -> (module, one-line help). Each module provides register(parser) and run(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "stylize": ("flows.commands.stylize", "stylise one image on this machine (no server needed)"),
    "watch": ("flows.commands.watch", "watch the inbox folder (or an S3 bucket) and submit jobs"),
    "dashboard": ("flows.commands.dashboard", "run the Streamlit dashboard and the file route"),
    "up": ("flows.commands.up", "start the local stack: server, worker, sensor, dashboard"),
    "worker": ("flows.commands.worker", "run warm workers (one per GPU) for stylize runs"),
    "health": ("flows.commands.health", "exit 0 if the part running here serves (containers)"),
}


def styledrop_version() -> str:
    try:
        return version("styledrop")
    except PackageNotFoundError:  # a checkout run without ./install.sh
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="styledrop", description="Neural style transfer service.")
    parser.add_argument("--version", action="version", version=f"styledrop {styledrop_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)

    # Parse the command name first so only the chosen module is imported.
    name = argv[0] if argv and argv[0] in COMMANDS else None
    if name is None:
        parser.parse_args(argv)  # prints usage / help and exits
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"styledrop {name}", description=COMMANDS[name][1])
    module.register(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except ValidationError as exc:  # STYLEDROP_* settings are checked when first loaded
        print(f"styledrop: error: bad settings:\n{settings_errors(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        from flows.api_auth import refusal

        sentence = refusal(exc)
        if sentence is None:
            raise
        # A missing or wrong PREFECT_API_AUTH_STRING, wherever it surfaced: one sentence.
        print(f"styledrop: error: {sentence}", file=sys.stderr)
        return 1


def settings_errors(exc: ValidationError) -> str:
    """One line per problem, naming the variable to change; no traceback, no values of
    secrets (pydantic's text quotes the input)."""
    lines = []
    for err in exc.errors():
        where = "STYLEDROP_" + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else ""
        why = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {why}" if where else f"  {why}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
